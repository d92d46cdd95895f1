//! Sentence embeddings through the model server: belink_embed, and belink_index (embedding
//! every name of an ontology into a per-ontology HNSW index).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use belink_core::catalog::Embeddings;
use belink_core::retrieval::dense::AlikeTexts;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use crate::catalog::{self, extension_schema};
use crate::error::{raise, raise_with_hint, OrRaise, OrRaiseError};
use crate::{client, gucs};

/// The embedding of one text as real[] (belink_embed(text) casts it to vector).
#[pg_extern(volatile, strict, parallel_restricted)]
fn belink_embed_real(text: &str) -> Vec<f32> {
    let (_, mut vectors) = client::embed("", vec![text.to_string()]).or_raise_error();
    vectors.pop().expect("one vector per text")
}

/// Embeddings of many texts in one request, as (ordinality, real[]) rows.
#[pg_extern(volatile, strict, parallel_restricted)]
fn belink_embed_many_real(
    texts: Vec<Option<String>>,
) -> TableIterator<'static, (name!(ordinality, i64), name!(embedding, Option<Vec<f32>>))> {
    let present: Vec<String> = texts.iter().flatten().cloned().collect();
    let (_, vectors) = client::embed("", present).or_raise_error();
    let mut vectors = vectors.into_iter();
    let rows: Vec<(i64, Option<Vec<f32>>)> =
        texts.iter().enumerate().map(|(i, text)| (i as i64 + 1, text.as_ref().and_then(|_| vectors.next()))).collect();
    TableIterator::new(rows)
}

extension_sql_file!("../../sql/embed.sql", name = "embed_sql", requires = [belink_embed_real, belink_embed_many_real]);

/// The encoder the server runs, or an ERROR saying why not. A server that is still loading
/// it (just started or restarted) is waited for, up to belink.request_timeout.
pub(crate) fn server_encoder() -> Embeddings {
    let deadline = Instant::now() + gucs::request_timeout();
    let status = loop {
        let json = client::status(gucs::request_timeout()).unwrap_or_else(|reason| {
            raise_with_hint(
                PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
                format!("the belink model server is not available: {reason}"),
                "See belink_worker_status() and the PostgreSQL log.",
            )
        });
        let status: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        if status["encoder_state"] != "loading" || Instant::now() >= deadline {
            break status;
        }
        client::pause(Duration::from_millis(100));
    };
    let state = status["encoder_state"].as_str().unwrap_or("unknown");
    if state != "loaded" {
        raise_with_hint(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("the model server's sentence encoder is not ready ({state})"),
            "Check belink.encoder_model, then SELECT pg_reload_conf().",
        );
    }
    Embeddings {
        model: status["encoder_model"].as_str().unwrap_or_default().to_string(),
        dim: status["encoder_dim"].as_u64().unwrap_or(0) as usize,
        ignores_case: status["encoder_ignores_case"].as_bool().unwrap_or(false),
        adapted: false,
    }
}

/// The encoder that embeds `ontology`'s names: its adapted encoder (belink_adapt_encoder) when
/// it has one, else the server's.
fn ontology_encoder(client: &SpiClient<'_>, ontology: &str) -> Embeddings {
    let adapted: Option<String> = client
        .select("SELECT adapted_encoder FROM belink.ontologies WHERE name = $1", None, &[ontology.into()])
        .or_raise("reading the ontology")
        .first()
        .get_one::<String>()
        .or_raise("reading the ontology");
    match adapted {
        Some(dir) => adapted_encoder(&dir),
        None => server_encoder(),
    }
}

thread_local! {
    /// Each adapted encoder's dimension and whether it ignores case, by directory: a trained
    /// run's directory never holds another model (each run gets a new number), so the backend
    /// asks the server once, not for every batch of an adaptation's names.
    static ADAPTED_ENCODERS: RefCell<HashMap<String, (usize, bool)>> = RefCell::new(HashMap::new());
}

/// An adapted encoder's dimension, and whether it ignores case, asked of the encoder itself.
pub(crate) fn adapted_encoder(dir: &str) -> Embeddings {
    let known = ADAPTED_ENCODERS.with(|known| known.borrow().get(dir).copied());
    let (dim, ignores_case) = known.unwrap_or_else(|| {
        let (dim, vectors) = client::embed(dir, vec!["Ab".into(), "ab".into()]).or_raise_error();
        let answer = (dim, vectors[0] == vectors[1]);
        ADAPTED_ENCODERS.with(|known| known.borrow_mut().insert(dir.to_string(), answer));
        answer
    });
    Embeddings { model: dir.to_string(), dim, ignores_case, adapted: true }
}

/// The encoder to ask the server for when embedding `ontology`'s names ("" for its own), and
/// whether it ignores case (as recorded by belink_index_prepare).
fn request_model(client: &SpiClient<'_>, ontology: &str) -> (String, bool) {
    let rows = client
        .select(
            "SELECT CASE WHEN embedding_model = adapted_encoder THEN adapted_encoder ELSE '' END,
                    coalesce(embedding_ignores_case, false)
             FROM belink.ontologies WHERE name = $1",
            None,
            &[ontology.into()],
        )
        .or_raise("reading the ontology");
    let row = rows.first();
    (
        row.get::<String>(1).or_raise("reading the ontology").unwrap_or_default(),
        row.get::<bool>(2).or_raise("reading the ontology").unwrap_or(false),
    )
}

/// First step of belink_index: checks the ontology and the encoder, forgets embeddings made by
/// another model, and records the job. Returns how many names are left to embed.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_index_prepare(ontology: &str) -> i64 {
    Spi::connect_mut(|client| {
        catalog::require_owned_ontology(client, ontology);
        let encoder = ontology_encoder(client, ontology);
        let (model, dim) = (encoder.model.as_str(), encoder.dim as i32);
        let row = client
            .update(
                "SELECT embedding_model, embedding_dim, embedding_ignores_case FROM belink.ontologies
                 WHERE name = $1 FOR UPDATE",
                None,
                &[ontology.into()],
            )
            .or_raise("reading the ontology");
        let row = row.first();
        let (previous_model, previous_dim, previous_ignores_case): (Option<String>, Option<i32>, Option<bool>) = (
            row.get(1).or_raise("reading the ontology"),
            row.get(2).or_raise("reading the ontology"),
            row.get(3).or_raise("reading the ontology"),
        );
        let encoder_changed = (previous_model.as_deref(), previous_dim) != (Some(model), Some(dim));
        if encoder_changed {
            if let Some(previous_model) = &previous_model {
                notice!("belink_index({ontology}): the encoder changed ({previous_model} → {model}); embedding every name again");
            }
            catalog::drop_embedding_index(client, ontology);
            client
                .update(
                    "UPDATE belink.names SET embedding = NULL WHERE ontology = $1 AND embedding IS NOT NULL",
                    None,
                    &[ontology.into()],
                )
                .or_raise("forgetting old embeddings");
        }
        if encoder_changed || previous_ignores_case != Some(encoder.ignores_case) {
            // Linking's cached retrieval and its reuse of stored vectors depend on all three.
            client
                .update(
                    "UPDATE belink.ontologies SET embedding_model = $2, embedding_dim = $3, embedding_ignores_case = $4,
                         embedding_generation = nextval('belink.generations') WHERE name = $1",
                    None,
                    &[ontology.into(), model.into(), dim.into(), encoder.ignores_case.into()],
                )
                .or_raise("recording the encoder");
        }
        let (total, done) = counts(client, ontology);
        client
            .update(
                "INSERT INTO belink.index_progress AS p
                     (ontology, total, done, done_at_start, started_at, updated_at, texts_at_start, texts_done)
                 VALUES ($1, $2, $3, $3, now(), now(), 0, 0)
                 ON CONFLICT (ontology) DO UPDATE SET total = $2, done = $3, done_at_start = $3,
                     started_at = now(), updated_at = now(), finished_at = NULL, texts_at_start = 0, texts_done = 0",
                None,
                &[ontology.into(), total.into(), done.into()],
            )
            .or_raise("recording progress");
        total - done
    })
}

fn counts(client: &SpiClient<'_>, ontology: &str) -> (i64, i64) {
    let row = client
        .select("SELECT count(*), count(embedding) FROM belink.names WHERE ontology = $1", None, &[ontology.into()])
        .or_raise("counting names");
    let row = row.first();
    (
        row.get::<i64>(1).or_raise("counting names").unwrap_or(0),
        row.get::<i64>(2).or_raise("counting names").unwrap_or(0),
    )
}

/// The next names of a job that embeds an ontology's names, each text once.
pub(crate) struct NamesToEmbed<'a> {
    pub ontology: &'a str,
    /// The encoder to ask the server for ("" for its own), and whether it ignores case.
    pub model: &'a str,
    pub ignores_case: bool,
    /// SQL condition on a name `n` that has no vector from this job yet.
    pub without_vector: &'a str,
    /// Whether sessions share the job: its names are then locked as they are taken, and rows
    /// another session holds are skipped (waiting for them could deadlock).
    pub shared: bool,
}

/// Names embedded by [`embed_next_names`]: each name's vector is the text's at its index.
pub(crate) struct EmbeddedNames {
    pub name_ids: Vec<i64>,
    pub text_indices: Vec<i32>,
    pub dim: i32,
    /// The texts' vectors, one after the other.
    pub vectors: Vec<f32>,
    pub last_name_id: i64,
}

impl EmbeddedNames {
    /// The names' rows `(name_id, embedding real[])`, as a FROM item over [`Self::arguments`]
    /// ($1 to $4; a statement's own parameters follow).
    pub const ROWS: &'static str = "(SELECT stored.name_id, ($2::real[])[t * $3 + 1 : (t + 1) * $3] AS embedding
         FROM unnest($1::bigint[], $4::integer[]) AS stored(name_id, t))";

    /// How many texts were embedded.
    pub fn texts(&self) -> i64 {
        (self.vectors.len() / self.dim.max(1) as usize) as i64
    }

    pub fn arguments(self) -> Vec<DatumWithOid<'static>> {
        vec![self.name_ids.into(), self.vectors.into(), self.dim.into(), self.text_indices.into()]
    }
}

/// Embeds the next `batch_size` names of the job after name `after_name_id`, in name_id order,
/// and the job's other names written alike (as the encoder sees them) with them: a text is
/// embedded once however many names share it (a UMLS-size vocabulary writes about half of its
/// names like another). None when no name is left after `after_name_id`. Starting where the
/// last batch ended, instead of walking every name embedded before it, keeps a batch's cost
/// flat (241 ms a batch once 93,000 names of a 10-million-name ontology were embedded, and
/// growing with each).
pub(crate) fn embed_next_names(
    client: &mut SpiClient<'_>,
    job: &NamesToEmbed<'_>,
    batch_size: i32,
    after_name_id: i64,
) -> Option<EmbeddedNames> {
    let lock = if job.shared { "FOR UPDATE OF n SKIP LOCKED" } else { "" };
    let batch: Vec<(i64, String, String)> = client
        .update(
            &format!(
                "SELECT n.name_id, n.name, n.normalized FROM belink.names n
                 WHERE n.ontology = $1 AND n.name_id > $3 AND {}
                 ORDER BY n.name_id LIMIT $2 {lock}",
                job.without_vector
            ),
            None,
            &[job.ontology.into(), (batch_size as i64).into(), after_name_id.into()],
        )
        .or_raise("reading names to embed")
        .filter_map(|row| Some((row.get(1).ok()??, row.get(2).ok()??, row.get(3).ok()??)))
        .collect();
    let last_name_id = batch.last()?.0;
    let mut texts = AlikeTexts::new(job.ignores_case);
    let mut names: Vec<(i64, usize)> = batch.iter().map(|(id, name, _)| (*id, texts.add(name))).collect();
    // Names written alike fold alike, so the normalized index finds them.
    let in_batch: HashSet<i64> = names.iter().map(|(id, _)| *id).collect();
    let normalized: Vec<String> = batch.into_iter().map(|(_, _, normalized)| normalized).collect();
    let alike = client
        .update(
            &format!(
                "SELECT n.name_id, n.name FROM belink.names n
                 WHERE n.ontology = $1 AND n.normalized = ANY($2) AND {} {lock}",
                job.without_vector
            ),
            None,
            &[job.ontology.into(), normalized.into()],
        )
        .or_raise("reading names written alike");
    for row in alike {
        let (Some(id), Some(name)) = (
            row.get::<i64>(1).or_raise("reading names written alike"),
            row.get::<String>(2).or_raise("reading names written alike"),
        ) else {
            continue;
        };
        if let Some(text) = texts.find(&name).filter(|_| !in_batch.contains(&id)) {
            names.push((id, text));
        }
    }
    let (dim, vectors) = client::embed(job.model, texts.into_texts()).or_raise_error();
    let (name_ids, text_indices) = names.iter().map(|&(id, text)| (id, text as i32)).unzip();
    Some(EmbeddedNames {
        name_ids,
        text_indices,
        dim: dim as i32,
        vectors: vectors.into_iter().flatten().collect(),
        last_name_id,
    })
}

/// Embeds the next `batch_size` names without an embedding after name `after_name_id` (see
/// [`embed_next_names`]) and stores their vectors. Returns the last name_id of the batch, NULL
/// when no name is left after `after_name_id`; the caller passes it back.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_index_batch(ontology: &str, batch_size: i32, after_name_id: default!(i64, 0)) -> Option<i64> {
    if !(1..=100_000).contains(&batch_size) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("batch_size must be between 1 and 100000, not {batch_size}"),
        );
    }
    Spi::connect_mut(|client| {
        catalog::require_change_right(client, ontology);
        let (model, ignores_case) = request_model(client, ontology);
        let job =
            NamesToEmbed { ontology, model: &model, ignores_case, without_vector: "n.embedding IS NULL", shared: true };
        let embedded = embed_next_names(client, &job, batch_size, after_name_id)?;
        let (names, texts, last_name_id) = (embedded.name_ids.len() as i64, embedded.texts(), embedded.last_name_id);
        let vec_schema = extension_schema(client, "vector");
        client
            .update(
                &format!(
                    "UPDATE belink.names n SET embedding = stored.embedding::{vec_schema}.vector
                     FROM {} AS stored WHERE n.name_id = stored.name_id",
                    EmbeddedNames::ROWS
                ),
                None,
                &embedded.arguments(),
            )
            .or_raise("storing embeddings");
        client
            .update(
                "UPDATE belink.index_progress SET done = done + $2, texts_done = texts_done + $3, updated_at = now()
                 WHERE ontology = $1",
                None,
                &[ontology.into(), names.into(), texts.into()],
            )
            .or_raise("recording progress");
        embeddings_changed(client, ontology);
        Some(last_name_id)
    })
}

/// Last step of belink_index: the ontology's HNSW index (cosine), built once.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_index_finish(ontology: &str) -> String {
    Spi::connect_mut(|client| {
        catalog::require_owned_ontology(client, ontology);
        let index = catalog::build_embedding_index(client, ontology);
        client
            .update(
                "UPDATE belink.index_progress SET finished_at = now(), updated_at = now() WHERE ontology = $1",
                None,
                &[ontology.into()],
            )
            .or_raise("recording progress");
        // Dense retrieval now goes through the (approximate) index.
        embeddings_changed(client, ontology);
        index
    })
}

/// Tells the per-backend retrieval caches that dense results of `ontology` may differ now.
pub(crate) fn embeddings_changed(client: &mut SpiClient<'_>, ontology: &str) {
    client
        .update(
            "UPDATE belink.ontologies SET embedding_generation = nextval('belink.generations') WHERE name = $1",
            None,
            &[ontology.into()],
        )
        .or_raise("recording the new embeddings");
}

extension_sql_file!(
    "../../sql/index.sql",
    name = "index_sql",
    requires = [belink_index_prepare, belink_index_batch, belink_index_finish]
);
