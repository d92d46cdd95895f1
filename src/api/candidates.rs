//! Candidate retrieval: exact match of the normalized mention (B-tree), trigram similarity
//! (pg_trgm GIN) and, for ontologies indexed with belink_index, dense similarity of sentence
//! embeddings (pgvector HNSW), fused by reciprocal rank, one row per concept.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use belink_core::fusion::{fuse, Fused, Hit, SOURCES};
use belink_core::normalize::normalize;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::spi::SpiClient;
use pgrx::{PgBuiltInOids, PgOid, PgSqlErrorCode};

use crate::catalog::{self, extension_schema};
use crate::error::{raise, raise_with_hint, OrRaise};
use crate::{client, gucs, retrieval_cache};

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
        if let Some(ontology) = ontology {
            catalog::require_ontology(client, ontology);
        }
        let query = Query { text: mention, ontology };
        retrieve(client, &[query], k as usize, Lexical::ExactAndTrigram).pop().unwrap_or_default()
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
pub fn retrieve(client: &SpiClient<'_>, queries: &[Query], k: usize, lexical: Lexical) -> Vec<Vec<Candidate>> {
    match lexical {
        Lexical::ExactOnly => {
            retrieval_cache::retrieve_cached(client, queries, k, |missing| search(client, missing, k, lexical))
        }
        Lexical::ExactAndTrigram => search(client, queries, k, lexical),
    }
}

/// Retrieval itself. The mentions that need dense retrieval are embedded in one model-server
/// request.
fn search(client: &SpiClient<'_>, queries: &[Query], k: usize, lexical: Lexical) -> Vec<Vec<Candidate>> {
    if queries.is_empty() {
        return Vec::new();
    }
    let per_source = k as i32 * NAMES_PER_CANDIDATE;
    let indexed = if dense_wanted() { indexed_ontologies(client) } else { Vec::new() };
    let dense_for = |query: &Query| -> Vec<&IndexedOntology> {
        indexed.iter().filter(|o| query.ontology.is_none_or(|name| name == o.name)).collect()
    };
    let normalized: Vec<String> = queries.iter().map(|q| normalize(q.text)).collect();
    let exact = exact_matches(client, queries, &normalized);
    // Linking decides a mention whose name belongs to one concept by that exact match (see
    // normalize::decide), so it needs no embedding: most detected mentions are such.
    let needs_dense: Vec<bool> = queries
        .iter()
        .zip(&normalized)
        .zip(&exact)
        .map(|((q, n), hits)| {
            let decided_by_exact = lexical == Lexical::ExactOnly && one_concept(hits);
            !n.is_empty() && !dense_for(q).is_empty() && !decided_by_exact
        })
        .collect();
    let to_embed: Vec<String> =
        queries.iter().zip(&needs_dense).filter(|(_, &needed)| needed).map(|(q, _)| q.text.to_string()).collect();
    let (dim, vectors) = client::embed(to_embed);
    let dense: Vec<Vec<Hit>> = if vectors.is_empty() {
        vec![Vec::new(); queries.len()]
    } else {
        let ef_search = per_source.max(40).to_string();
        with_setting(client, "hnsw.ef_search", &ef_search, || {
            let mut vectors = vectors.iter();
            queries
                .iter()
                .zip(&needs_dense)
                .map(|(query, &needed)| match needed {
                    false => Vec::new(),
                    true => {
                        let vector = vectors.next().expect("one vector per mention embedded");
                        dense_matches(client, vector, dim, &dense_for(query), per_source)
                    }
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
    // Two branches so that queries naming their ontology use the (ontology, normalized) index.
    let rows = client
        .select(
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
            None,
            &[normalized.to_vec().into(), ontologies.into()],
        )
        .or_raise("exact matching");
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

/// An ontology whose names are embedded (belink_index).
struct IndexedOntology {
    name: String,
    dim: usize,
    model: String,
}

fn indexed_ontologies(client: &SpiClient<'_>) -> Vec<IndexedOntology> {
    client
        .select(
            "SELECT name, embedding_dim, embedding_model FROM belink.ontologies WHERE embedding_dim IS NOT NULL ORDER BY name",
            None,
            &[],
        )
        .or_raise("listing indexed ontologies")
        .filter_map(|row| {
            Some(IndexedOntology {
                name: row.get(1).ok()??,
                dim: row.get::<i32>(2).ok()?? as usize,
                model: row.get(3).ok()??,
            })
        })
        .collect()
}

/// Nearest names by cosine distance of embeddings, through each indexed ontology's HNSW index
/// (the caller sets hnsw.ef_search).
fn dense_matches(
    client: &SpiClient<'_>,
    vector: &[f32],
    dim: usize,
    targets: &[&IndexedOntology],
    limit: i32,
) -> Vec<Hit> {
    let mut all = Vec::new();
    for ontology in targets {
        if ontology.dim != dim {
            raise_with_hint(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "ontology \"{}\" was indexed with {} ({} dimensions) but the model server's encoder has {dim}",
                    ontology.name, ontology.model, ontology.dim
                ),
                format!(
                    "Run CALL belink_index('{}') to re-embed its names, or SET belink.retrieval = 'lexical'.",
                    ontology.name
                ),
            );
        }
        let plan = dense_plan(client, &ontology.name, dim);
        all.extend(hits(
            client.select(&*plan, None, &[vector.to_vec().into(), limit.into()]).or_raise("dense retrieval"),
        ));
    }
    all
}

thread_local! {
    /// Dense-query plans by query text, kept for the session: planning the query cost about
    /// as much as running it. PostgreSQL re-plans a kept plan itself when the index changes.
    static DENSE_PLANS: RefCell<HashMap<String, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

fn dense_plan(client: &SpiClient<'_>, ontology: &str, dim: usize) -> Rc<OwnedPreparedStatement> {
    let vec_schema = extension_schema(client, "vector");
    // The ontology as a literal, so the planner can use its partial HNSW index.
    let query = format!(
        "SELECT n.ontology, n.concept_id, n.name FROM belink.names n
         WHERE n.ontology = {} AND n.embedding IS NOT NULL
         ORDER BY (n.embedding::{vec_schema}.vector({dim})) OPERATOR({vec_schema}.<=>) ($1::{vec_schema}.vector({dim}))
         LIMIT $2",
        pgrx::spi::quote_literal(ontology)
    );
    if let Some(plan) = DENSE_PLANS.with(|plans| plans.borrow().get(&query).cloned()) {
        return plan;
    }
    let args = [PgOid::BuiltIn(PgBuiltInOids::FLOAT4ARRAYOID), PgOid::BuiltIn(PgBuiltInOids::INT4OID)];
    let plan = Rc::new(client.prepare(query.as_str(), &args).or_raise("planning dense retrieval").keep());
    DENSE_PLANS.with(|plans| plans.borrow_mut().insert(query, plan.clone()));
    plan
}

fn with_preferred_names(client: &SpiClient<'_>, lists: Vec<Vec<Fused>>) -> Vec<Vec<Candidate>> {
    let wanted: Vec<&Fused> = lists.iter().flatten().collect();
    let names: HashMap<(String, String), String> = if wanted.is_empty() {
        Default::default()
    } else {
        let ontologies: Vec<String> = wanted.iter().map(|f| f.ontology.clone()).collect();
        let ids: Vec<String> = wanted.iter().map(|f| f.concept_id.clone()).collect();
        client
            .select(
                "SELECT DISTINCT c.ontology, c.concept_id, c.name FROM belink.concepts c
                 JOIN unnest($1::text[], $2::text[]) AS w(ontology, concept_id) USING (ontology, concept_id)",
                None,
                &[ontologies.into(), ids.into()],
            )
            .or_raise("reading preferred names")
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
    let set = |value: &str| {
        client
            .select("SELECT set_config($1, $2, true)", None, &[name.into(), value.into()])
            .or_raise("changing a setting");
    };
    let previous = client
        .select("SELECT current_setting($1, true)", None, &[name.into()])
        .or_raise("reading a setting")
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
