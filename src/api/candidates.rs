//! Candidate retrieval: exact match of the normalized mention (B-tree), trigram similarity
//! (pg_trgm GIN) and, for ontologies indexed with belink_index, dense similarity of sentence
//! embeddings (pgvector HNSW), fused by reciprocal rank, one row per concept.

use std::collections::HashMap;

use belink_core::encoder_text::embed_alike;
use belink_core::fusion::{fuse, Fused, Hit, SOURCES};
use belink_core::normalize::normalize;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{PgBuiltInOids, PgOid, PgSqlErrorCode};

use crate::catalog::{extension_schema, Ontologies, OntologyState};
use crate::error::{raise, raise_with_hint, OrRaise};
use crate::{client, gucs, plans, retrieval_cache};

/// The most candidates one call may ask for.
const MAX_K: i32 = 1000;
/// Names fetched per source and per candidate wanted: a concept has several names.
const NAMES_PER_CANDIDATE: i32 = 5;

/// Candidate concepts for a mention, best first. `ontology` NULL searches every ontology.
#[pg_extern(volatile, parallel_restricted)]
fn belink_candidates(
    mention: Option<&str>,
    ontology: default!(Option<&str>, "NULL"),
    k: default!(Option<i32>, 10),
) -> TableIterator<
    'static,
    (
        name!(concept_id, String),
        name!(name, String),
        name!(matched_name, String),
        name!(score, f64),
        name!(source, String),
        name!(ontology, String),
        name!(exact_rank, Option<i32>),
        name!(trigram_rank, Option<i32>),
        name!(dense_rank, Option<i32>),
    ),
> {
    let k = k.unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument k must not be NULL"));
    if !(1..=MAX_K).contains(&k) {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("k must be between 1 and {MAX_K}, not {k}"));
    }
    let mention = mention.unwrap_or("");
    let rows = Spi::connect(|client| {
        let ontologies = Ontologies::read(client);
        if let Some(ontology) = ontology {
            ontologies.require(ontology);
        }
        let query = Query { text: mention, ontology };
        retrieve(client, &ontologies, &[query], k as usize, Lexical::ExactAndTrigram).pop().unwrap_or_default()
    });
    TableIterator::new(rows.into_iter().map(|c| {
        let rank = |source: usize| c.fused.ranks[source].map(|r| r as i32);
        (
            c.fused.concept_id.clone(),
            c.preferred_name,
            c.fused.matched_name.clone(),
            c.fused.score,
            SOURCES[c.fused.best_source].to_string(),
            c.fused.ontology.clone(),
            rank(0),
            rank(1),
            rank(2),
        )
    }))
}

#[derive(Clone)]
pub struct Candidate {
    pub fused: Fused,
    pub preferred_name: String,
}

/// Which retrieval `belink.retrieval` asks for.
fn dense_wanted() -> bool {
    match gucs::get(&gucs::RETRIEVAL).as_deref().unwrap_or("hybrid") {
        "hybrid" => true,
        "lexical" => false,
        other => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid belink.retrieval '{other}': use hybrid or lexical"),
        ),
    }
}

/// One retrieval: a mention and the ontology to search (None: every ontology).
#[derive(Clone, Copy)]
pub struct Query<'a> {
    pub text: &'a str,
    pub ontology: Option<&'a str>,
}

/// Which lexical sources to use. Linking detected mentions (already exact dictionary matches)
/// skips the trigram source, by far the slowest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lexical {
    ExactAndTrigram,
    ExactOnly,
}

/// The fused candidates of every query, in order: the shared core of belink_candidates and
/// linking. Linking (exact matches only) reuses what this session retrieved before for the
/// same mention (see retrieval_cache); belink_candidates always searches.
pub fn retrieve(
    client: &SpiClient<'_>,
    ontologies: &Ontologies,
    queries: &[Query],
    k: usize,
    lexical: Lexical,
) -> Vec<Vec<Candidate>> {
    match lexical {
        Lexical::ExactOnly => retrieval_cache::retrieve_cached(ontologies, queries, k, |missing| {
            search(client, ontologies, missing, k, lexical)
        }),
        Lexical::ExactAndTrigram => search(client, ontologies, queries, k, lexical),
    }
}

/// Retrieval itself. The mentions that need dense retrieval and are not written like a name
/// whose embedding is stored are embedded in one model-server request.
fn search(
    client: &SpiClient<'_>,
    ontologies: &Ontologies,
    queries: &[Query],
    k: usize,
    lexical: Lexical,
) -> Vec<Vec<Candidate>> {
    if queries.is_empty() {
        return Vec::new();
    }
    let per_source = k as i32 * NAMES_PER_CANDIDATE;
    let dense = dense_wanted();
    let dense_for = |query: &Query<'_>| -> Vec<&OntologyState> {
        match dense {
            true => ontologies.selected(query.ontology).filter(|o| o.embeddings.is_some()).collect(),
            false => Vec::new(),
        }
    };
    let normalized: Vec<String> = queries.iter().map(|q| normalize(q.text)).collect();
    let exact = exact_matches(client, queries, &normalized);
    // Linking decides a mention whose name belongs to one concept by that exact match (see
    // normalize::decide), so it needs no embedding: most detected mentions are such.
    let targets: Vec<Vec<&OntologyState>> = queries
        .iter()
        .zip(&normalized)
        .zip(&exact)
        .map(|((q, n), hits)| {
            let decided_by_exact = lexical == Lexical::ExactOnly && one_concept(hits);
            match n.is_empty() || decided_by_exact {
                true => Vec::new(),
                false => dense_for(q),
            }
        })
        .collect();
    let vectors = query_vectors(client, ontologies, queries, &exact, &targets);
    let dense: Vec<Vec<Hit>> = if vectors.iter().all(Option::is_none) {
        vec![Vec::new(); queries.len()]
    } else {
        let ef_search = per_source.max(40).to_string();
        let vec_schema = extension_schema(client, "vector");
        with_setting(client, "hnsw.ef_search", &ef_search, || {
            vectors
                .iter()
                .zip(&targets)
                .map(|(vector, targets)| match vector {
                    Some(vector) => dense_matches(client, &vec_schema, vector, targets, per_source),
                    None => Vec::new(),
                })
                .collect()
        })
    };
    let mut all = Vec::with_capacity(queries.len());
    for (((query, normalized), exact), dense) in queries.iter().zip(&normalized).zip(exact).zip(dense) {
        if normalized.is_empty() {
            all.push(Vec::new());
            continue;
        }
        let trigram = match lexical {
            Lexical::ExactAndTrigram => trigram_matches(client, normalized, query.ontology, per_source),
            Lexical::ExactOnly => Vec::new(),
        };
        let mut fused = fuse([&exact, &trigram, &dense], gucs::RRF_K.get() as f64);
        fused.truncate(k);
        all.push(fused);
    }
    with_preferred_names(client, all)
}

/// The vector each query is searched with in `targets` (None: no dense search). A mention
/// written like one of its exact matches (see belink_core::encoder_text) takes that name's
/// stored embedding, made by the same encoder as every target's: most detected mentions are
/// such, and the model server is asked only for the others, in one request.
fn query_vectors(
    client: &SpiClient<'_>,
    ontologies: &Ontologies,
    queries: &[Query],
    exact: &[Vec<Hit>],
    targets: &[Vec<&OntologyState>],
) -> Vec<Option<Vec<f32>>> {
    let stored_alike = |query: &Query, hits: &[Hit], targets: &[&OntologyState]| -> Option<Hit> {
        hits.iter()
            .find(|hit| {
                let Some(embeddings) = ontologies.get(&hit.ontology).and_then(|o| o.embeddings.as_ref()) else {
                    return false;
                };
                let same_model =
                    |t: &&OntologyState| t.embeddings.as_ref().is_some_and(|e| e.model == embeddings.model);
                embed_alike(query.text, &hit.matched_name, embeddings.ignores_case) && targets.iter().all(same_model)
            })
            .cloned()
    };
    let alike: Vec<Option<Hit>> = queries
        .iter()
        .zip(exact)
        .zip(targets)
        .map(|((q, hits), targets)| if targets.is_empty() { None } else { stored_alike(q, hits, targets) })
        .collect();
    let mut vectors = stored_vectors(client, &alike);
    // The others are embedded, with those whose name was added after the last belink_index
    // (it has no stored embedding yet).
    let to_embed: Vec<usize> = (0..queries.len()).filter(|&i| !targets[i].is_empty() && vectors[i].is_none()).collect();
    let (_, embedded) = client::embed(to_embed.iter().map(|&i| queries[i].text.to_string()).collect());
    for (i, vector) in to_embed.into_iter().zip(embedded) {
        vectors[i] = Some(vector);
    }
    vectors
}

/// The stored embedding of each name given (None when absent or not embedded), in one
/// statement.
fn stored_vectors(client: &SpiClient<'_>, names: &[Option<Hit>]) -> Vec<Option<Vec<f32>>> {
    let wanted: Vec<(usize, &Hit)> = names.iter().enumerate().filter_map(|(i, h)| Some((i, h.as_ref()?))).collect();
    let mut vectors = vec![None; names.len()];
    if wanted.is_empty() {
        return vectors;
    }
    let column = |f: fn(&Hit) -> &String| -> Vec<String> { wanted.iter().map(|(_, h)| f(h).clone()).collect() };
    let text_array = PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID);
    let rows = plans::select(
        client,
        "SELECT q.i, (SELECT n.embedding::real[] FROM belink.names n
                      WHERE n.ontology = q.ontology AND n.concept_id = q.concept_id AND n.name = q.name
                        AND n.embedding IS NOT NULL LIMIT 1)
         FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS q(ontology, concept_id, name, i)",
        &[text_array, text_array, text_array],
        &[column(|h| &h.ontology).into(), column(|h| &h.concept_id).into(), column(|h| &h.matched_name).into()],
        "reading stored embeddings",
    );
    for row in rows {
        let position = row.get::<i64>(1).or_raise("reading stored embeddings").unwrap_or(0) as usize;
        let vector = row.get::<Vec<f32>>(2).or_raise("reading stored embeddings");
        if let Some(&(i, _)) = position.checked_sub(1).and_then(|p| wanted.get(p)) {
            vectors[i] = vector;
        }
    }
    vectors
}

fn one_concept(hits: &[Hit]) -> bool {
    hits.first()
        .is_some_and(|first| hits.iter().all(|h| h.ontology == first.ontology && h.concept_id == first.concept_id))
}

fn hits(table: pgrx::spi::SpiTupleTable<'_>) -> Vec<Hit> {
    table
        .map(|row| {
            let text = |i| row.get::<String>(i).or_raise("reading a candidate").unwrap_or_default();
            Hit { ontology: text(1), concept_id: text(2), matched_name: text(3) }
        })
        .collect()
}

/// Condition on the ontology for a query whose ontology parameter is $2.
fn ontology_filter(ontology: Option<&str>) -> &'static str {
    if ontology.is_some() {
        "AND n.ontology = $2"
    } else {
        "AND $2::text IS NULL"
    }
}

/// The names equal to each query's normalized text, in one statement: preferred names first,
/// then in load order. An empty text matches nothing.
fn exact_matches(client: &SpiClient<'_>, queries: &[Query], normalized: &[String]) -> Vec<Vec<Hit>> {
    let ontologies: Vec<Option<String>> = queries.iter().map(|q| q.ontology.map(str::to_string)).collect();
    let text_array = PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID);
    // Two branches so that queries naming their ontology use the (ontology, normalized) index.
    let rows = plans::select(
        client,
        "SELECT i, ontology, concept_id, name FROM (
             SELECT q.i, n.ontology, n.concept_id, n.name, n.kind, n.name_id
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q(normalized, ontology, i)
             JOIN belink.names n ON n.ontology = q.ontology AND n.normalized = q.normalized
             WHERE q.normalized <> ''
             UNION ALL
             SELECT q.i, n.ontology, n.concept_id, n.name, n.kind, n.name_id
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q(normalized, ontology, i)
             JOIN belink.names n ON q.ontology IS NULL AND n.normalized = q.normalized
             WHERE q.normalized <> ''
         ) AS found
         ORDER BY i, kind = 'preferred' DESC, name_id",
        &[text_array, text_array],
        &[normalized.to_vec().into(), ontologies.into()],
        "exact matching",
    );
    let mut exact: Vec<Vec<Hit>> = vec![Vec::new(); queries.len()];
    for row in rows {
        let text = |i| row.get::<String>(i).or_raise("reading a candidate").unwrap_or_default();
        let query = row.get::<i64>(1).or_raise("reading a candidate").unwrap_or(0) as usize;
        if let Some(hits) = query.checked_sub(1).and_then(|q| exact.get_mut(q)) {
            hits.push(Hit { ontology: text(2), concept_id: text(3), matched_name: text(4) });
        }
    }
    exact
}

fn trigram_matches(client: &SpiClient<'_>, normalized: &str, ontology: Option<&str>, limit: i32) -> Vec<Hit> {
    let trgm = extension_schema(client, "pg_trgm");
    // pg_trgm's % uses the GIN index: names at least pg_trgm.similarity_threshold similar.
    let query = format!(
        "SELECT n.ontology, n.concept_id, n.name FROM belink.names n
         WHERE n.normalized OPERATOR({trgm}.%) $1 {}
         ORDER BY {trgm}.similarity(n.normalized, $1) DESC, n.name_id LIMIT $3",
        ontology_filter(ontology)
    );
    let threshold = gucs::TRIGRAM_THRESHOLD.get().to_string();
    with_setting(client, "pg_trgm.similarity_threshold", &threshold, || {
        hits(
            client
                .select(&query, None, &[normalized.into(), ontology.into(), limit.into()])
                .or_raise("trigram matching"),
        )
    })
}

/// Nearest names by cosine distance of embeddings, through each target ontology's HNSW index
/// (the caller sets hnsw.ef_search and finds pgvector's schema).
fn dense_matches(
    client: &SpiClient<'_>,
    vec_schema: &str,
    vector: &[f32],
    targets: &[&OntologyState],
    limit: i32,
) -> Vec<Hit> {
    let dim = vector.len();
    let mut all = Vec::new();
    for ontology in targets {
        let Some(embeddings) = &ontology.embeddings else { continue };
        if embeddings.dim != dim {
            raise_with_hint(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "ontology \"{}\" was indexed with {} ({} dimensions) but the model server's encoder has {dim}",
                    ontology.name, embeddings.model, embeddings.dim
                ),
                format!(
                    "Run CALL belink_index('{}') to re-embed its names, or SET belink.retrieval = 'lexical'.",
                    ontology.name
                ),
            );
        }
        // The ontology as a literal, so the planner can use its partial HNSW index.
        let query = format!(
            "SELECT n.ontology, n.concept_id, n.name FROM belink.names n
             WHERE n.ontology = {} AND n.embedding IS NOT NULL
             ORDER BY (n.embedding::{vec_schema}.vector({dim})) OPERATOR({vec_schema}.<=>) ($1::{vec_schema}.vector({dim}))
             LIMIT $2",
            pgrx::spi::quote_literal(&ontology.name)
        );
        let types = [PgOid::BuiltIn(PgBuiltInOids::FLOAT4ARRAYOID), PgOid::BuiltIn(PgBuiltInOids::INT4OID)];
        all.extend(hits(plans::select(
            client,
            &query,
            &types,
            &[vector.to_vec().into(), limit.into()],
            "dense retrieval",
        )));
    }
    all
}

fn with_preferred_names(client: &SpiClient<'_>, lists: Vec<Vec<Fused>>) -> Vec<Vec<Candidate>> {
    let wanted: Vec<&Fused> = lists.iter().flatten().collect();
    let names: HashMap<(String, String), String> = if wanted.is_empty() {
        Default::default()
    } else {
        let ontologies: Vec<String> = wanted.iter().map(|f| f.ontology.clone()).collect();
        let ids: Vec<String> = wanted.iter().map(|f| f.concept_id.clone()).collect();
        let text_array = PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID);
        plans::select(
            client,
            "SELECT DISTINCT c.ontology, c.concept_id, c.name FROM belink.concepts c
             JOIN unnest($1::text[], $2::text[]) AS w(ontology, concept_id) USING (ontology, concept_id)",
            &[text_array, text_array],
            &[ontologies.into(), ids.into()],
            "reading preferred names",
        )
        .filter_map(|row| Some(((row.get(1).ok()??, row.get(2).ok()??), row.get(3).ok()??)))
        .collect()
    };
    lists
        .into_iter()
        .map(|fused| {
            fused
                .into_iter()
                .map(|f| {
                    let preferred_name =
                        names.get(&(f.ontology.clone(), f.concept_id.clone())).cloned().unwrap_or_default();
                    Candidate { fused: f, preferred_name }
                })
                .collect()
        })
        .collect()
}

/// Runs `f` with a setting changed for the current transaction, then restores the caller's
/// value.
fn with_setting<T>(client: &SpiClient<'_>, name: &str, value: &str, f: impl FnOnce() -> T) -> T {
    let text = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
    let set = |value: &str| {
        plans::select(
            client,
            "SELECT set_config($1, $2, true)",
            &[text, text],
            &[name.into(), value.into()],
            "changing a setting",
        );
    };
    let previous =
        plans::select(client, "SELECT current_setting($1, true)", &[text], &[name.into()], "reading a setting")
            .first()
            .get_one::<String>()
            .or_raise("reading a setting");
    set(value);
    let result = f();
    // A setting that did not exist yet (hnsw.* before pgvector is loaded) keeps our value
    // until the end of the transaction: there is no caller's value to restore.
    if let Some(previous) = previous {
        set(&previous);
    }
    result
}
