//! belink_adapt_encoder: adapting the sentence encoder to an ontology's synonyms in the model
//! server, re-embedding the ontology's names with it, then switching the ontology to it in one
//! transaction (sql/adapt.sql drives the steps, committing between them).
//!
//! Files: `<data directory>/belink/encoders/<ontology>-<run>/` holds a run's checkpoints
//! (`checkpoint/`) and, when training ends, the adapted encoder (`model/`). The ontology row
//! records the encoder in use (`adapted_encoder`); a run's directory is removed after the
//! transaction that replaces or drops its encoder commits.

use std::path::{Path, PathBuf};

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode};

use crate::api::embed::{
    adapted_encoder, embed_next_names, embeddings_changed, server_encoder, EmbeddedNames, NamesToEmbed,
};
use crate::catalog::{self, extension_schema};
use crate::client;
use crate::error::{raise, raise_with_hint, OrRaise, OrRaiseError};

/// Seconds of training per request: progress is reported and committed this often.
const SLICE_SECONDS: u32 = 10;

/// Where adapted encoders live: under the data directory, so they survive restarts and
/// belong to the cluster (the model server is told the same directory by the worker).
pub fn adapted_root() -> PathBuf {
    // Safety: DataDir is set once at start-up and never freed.
    let data_dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) };
    let data_dir = PathBuf::from(data_dir.to_string_lossy().into_owned());
    let data_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
    data_dir.join("belink").join("encoders")
}

struct Run {
    work_dir: String,
    base_model: String,
    settings: String,
    state: String,
}

fn current_run(client: &SpiClient<'_>, ontology: &str) -> Option<Run> {
    let rows = client
        .select(
            "SELECT work_dir, base_model, settings::text, state FROM belink.encoder_adaptations WHERE ontology = $1",
            None,
            &[ontology.into()],
        )
        .or_raise("reading the adaptation");
    rows.into_iter().next().map(|row| Run {
        work_dir: row.get(1).or_raise("reading the adaptation").unwrap_or_default(),
        base_model: row.get(2).or_raise("reading the adaptation").unwrap_or_default(),
        settings: row.get(3).or_raise("reading the adaptation").unwrap_or_default(),
        state: row.get(4).or_raise("reading the adaptation").unwrap_or_default(),
    })
}

/// First step: checks the ontology and its synonyms, and records the run (or keeps the
/// unfinished one with the same names and settings, to resume it). Returns the run's state.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_adapt_prepare(ontology: &str, epochs: i32, seed: i64) -> String {
    if !(1..=100).contains(&epochs) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("epochs must be between 1 and 100, not {epochs}"),
        );
    }
    Spi::connect_mut(|client| {
        catalog::require_owned_ontology(client, ontology);
        let generation: i64 = client
            .update("SELECT generation FROM belink.ontologies WHERE name = $1 FOR UPDATE", None, &[ontology.into()])
            .or_raise("reading the ontology")
            .first()
            .get_one()
            .or_raise("reading the ontology")
            .unwrap_or_default();
        let synonyms: i64 = client
            .select(
                "SELECT count(*) FROM (SELECT concept_id FROM belink.names WHERE ontology = $1
                 GROUP BY concept_id HAVING count(DISTINCT name) > 1) c",
                None,
                &[ontology.into()],
            )
            .or_raise("counting synonyms")
            .first()
            .get_one()
            .or_raise("counting synonyms")
            .unwrap_or(0);
        if synonyms == 0 {
            raise_with_hint(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("ontology \"{ontology}\" has no concept with two names: there are no synonyms to learn from"),
                "Add synonyms with belink_add_names (for example the mentions of an annotated corpus).",
            );
        }
        let settings = serde_json::json!({"epochs": epochs, "seed": seed, "ontology_generation": generation});
        if let Some(run) = current_run(client, ontology) {
            let same: serde_json::Value = serde_json::from_str(&run.settings).unwrap_or_default();
            if run.state != "done" && same == settings && Path::new(&run.base_model).is_dir() {
                notice!("belink_adapt_encoder({ontology}): resuming the run in {}", run.work_dir);
                return run.state;
            }
            if run.state != "done" {
                notice!("belink_adapt_encoder({ontology}): the names or settings changed; starting a new run");
                remove_after_commit(PathBuf::from(&run.work_dir));
            }
        }
        let base = server_encoder();
        let run_id: i64 = client
            .select("SELECT nextval('belink.generations')", None, &[])
            .or_raise("numbering the run")
            .first()
            .get_one()
            .or_raise("numbering the run")
            .unwrap_or_default();
        let work_dir = adapted_root().join(format!("{ontology}-{run_id}"));
        if let Err(e) = std::fs::create_dir_all(&work_dir) {
            raise_with_hint(
                PgSqlErrorCode::ERRCODE_IO_ERROR,
                format!("cannot create {}: {e}", work_dir.display()),
                "The adapted encoder is stored under the data directory; the ontology keeps its encoder.",
            );
        }
        client
            .update(
                "INSERT INTO belink.encoder_adaptations AS a (ontology, state, work_dir, base_model, settings, names)
                 VALUES ($1, 'training', $2, $3, $4::jsonb,
                         (SELECT count(*) FROM belink.names WHERE ontology = $1))
                 ON CONFLICT (ontology) DO UPDATE SET state = 'training', work_dir = $2, base_model = $3,
                     settings = $4::jsonb, names = excluded.names, step = 0, steps_total = NULL, loss = NULL,
                     names_per_s = NULL, eta_s = NULL, resumed_from = NULL, embedded = 0, started_at = now(), updated_at = now(),
                     finished_at = NULL",
                None,
                &[
                    ontology.into(),
                    work_dir.display().to_string().into(),
                    base.model.clone().into(),
                    settings.to_string().into(),
                ],
            )
            .or_raise("recording the adaptation");
        client
            .update("DELETE FROM belink.adapted_embeddings WHERE ontology = $1", None, &[ontology.into()])
            .or_raise("clearing staged embeddings");
        "training".to_string()
    })
}

/// Trains for about SLICE_SECONDS; returns the progress (`done` once the adapted encoder is
/// saved) and records it in belink.encoder_adaptations.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_adapt_train(ontology: &str, checkpoint_seconds: i32) -> JsonB {
    Spi::connect_mut(|client| {
        catalog::require_change_right(client, ontology);
        let run = current_run(client, ontology).unwrap_or_else(|| {
            raise(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "run belink_adapt_prepare first")
        });
        let settings: serde_json::Value = serde_json::from_str(&run.settings).unwrap_or_default();
        let config = serde_json::json!({
            "epochs": settings["epochs"],
            "seed": settings["seed"],
            "checkpoint_seconds": checkpoint_seconds.max(1),
        })
        .to_string();
        let slice = |examples| {
            client::adapt(ontology, &run.base_model, &run.work_dir, &config, SLICE_SECONDS, examples).or_raise_error()
        };
        let json = match slice(Vec::new()) {
            Some(json) => json,
            // The server holds no run (first call, or it restarted): send the names; it resumes
            // from the run's checkpoint when there is one.
            None => slice(training_examples(client, ontology)).expect("a run was started with the examples"),
        };
        let progress: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let done = progress["done"].as_bool().unwrap_or(false);
        client
            .update(
                "UPDATE belink.encoder_adaptations SET step = $2, steps_total = $3, loss = $4, names_per_s = $5,
                     eta_s = $6, state = CASE WHEN $7 THEN 'embedding' ELSE state END, resumed_from = $8,
                     updated_at = now()
                 WHERE ontology = $1",
                None,
                &[
                    ontology.into(),
                    progress["step"].as_i64().into(),
                    progress["steps_total"].as_i64().into(),
                    progress["loss"].as_f64().map(|l| l as f32).into(),
                    progress["names_per_s"].as_f64().map(|r| r as f32).into(),
                    progress["eta_s"].as_f64().map(|e| e as f32).into(),
                    done.into(),
                    progress["resumed_from"].as_i64().into(),
                ],
            )
            .or_raise("recording progress");
        JsonB(progress)
    })
}

/// The (concept id, name) pairs the encoder learns from: every name of the ontology, user
/// names (belink_add_names) included.
fn training_examples(client: &SpiClient<'_>, ontology: &str) -> Vec<(String, String)> {
    client
        .select(
            "SELECT concept_id, name FROM belink.names WHERE ontology = $1 ORDER BY name_id",
            None,
            &[ontology.into()],
        )
        .or_raise("reading the names")
        .filter_map(|row| Some((row.get(1).ok()??, row.get(2).ok()??)))
        .collect()
}

/// The run whose adapted encoder embeds the names, None when another session has switched the
/// ontology to it already. Sessions adapting one ontology at once take turns at each batch and
/// at the switch (the lock lasts until the transaction ends): none stores a vector another
/// just stored, or switches on staged vectors another switch has cleared.
fn embedding_run(client: &mut SpiClient<'_>, ontology: &str) -> Option<Run> {
    client
        .update(
            "SELECT pg_advisory_xact_lock(hashtextextended('belink_adapt_encoder embedding ' || $1, 0))",
            None,
            &[ontology.into()],
        )
        .or_raise("waiting for another session adapting the ontology");
    match current_run(client, ontology) {
        Some(run) if run.state == "embedding" => Some(run),
        Some(run) if run.state == "done" => None,
        _ => raise(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "the adapted encoder is not trained yet"),
    }
}

/// Embeds the next `batch_size` names after name `after_name_id` with the adapted encoder into
/// belink.adapted_embeddings (retrieval keeps using the names' current vectors), each text once
/// (see [`embed_next_names`]). Returns the last name_id of the batch, NULL when no name is left
/// after `after_name_id`; the caller passes it back.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_adapt_embed_batch(ontology: &str, batch_size: i32, after_name_id: default!(i64, 0)) -> Option<i64> {
    Spi::connect_mut(|client| {
        catalog::require_change_right(client, ontology);
        let run = embedding_run(client, ontology)?;
        let model = model_dir(&run.work_dir);
        let job = NamesToEmbed {
            ontology,
            model: &model,
            ignores_case: adapted_encoder(&model).ignores_case,
            without_vector: "NOT EXISTS (SELECT 1 FROM belink.adapted_embeddings a WHERE a.name_id = n.name_id)",
            shared: false,
        };
        let embedded = embed_next_names(client, &job, batch_size.clamp(1, 100_000), after_name_id)?;
        let (names, last_name_id) = (embedded.name_ids.len() as i64, embedded.last_name_id);
        let mut arguments = embedded.arguments();
        arguments.push(ontology.into());
        client
            .update(
                &format!(
                    "INSERT INTO belink.adapted_embeddings (name_id, ontology, embedding)
                     SELECT stored.name_id, $5, stored.embedding FROM {} AS stored",
                    EmbeddedNames::ROWS
                ),
                None,
                &arguments,
            )
            .or_raise("storing embeddings");
        client
            .update(
                "UPDATE belink.encoder_adaptations SET embedded = embedded + $2, updated_at = now() WHERE ontology = $1",
                None,
                &[ontology.into(), names.into()],
            )
            .or_raise("recording progress");
        Some(last_name_id)
    })
}

fn model_dir(work_dir: &str) -> String {
    Path::new(work_dir).join("model").display().to_string()
}

/// Last step, in one transaction: the names take their adapted vectors, the HNSW index is
/// rebuilt and the ontology records its encoder. Until this commits, retrieval sees the
/// previous encoder's vectors only; after, the adapted encoder's only. Returns the new HNSW
/// index, NULL when another session switched the ontology first.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_adapt_switch(ontology: &str) -> Option<String> {
    Spi::connect_mut(|client| {
        catalog::require_change_right(client, ontology);
        let Some(run) = embedding_run(client, ontology) else {
            notice!("belink_adapt_encoder({ontology}): another session switched the ontology to the adapted encoder");
            return None;
        };
        let model = model_dir(&run.work_dir);
        let encoder = adapted_encoder(&model);
        let previous: Option<String> = client
            .update(
                "SELECT adapted_encoder FROM belink.ontologies WHERE name = $1 FOR UPDATE",
                None,
                &[ontology.into()],
            )
            .or_raise("reading the ontology")
            .first()
            .get_one::<String>()
            .or_raise("reading the ontology");
        catalog::drop_embedding_index(client, ontology);
        let vec_schema = extension_schema(client, "vector");
        // Names added since their staging get no vector: belink_index embeds them with the
        // adapted encoder.
        client
            .update(
                &format!(
                    "UPDATE belink.names n SET embedding =
                         (SELECT a.embedding::{vec_schema}.vector FROM belink.adapted_embeddings a
                          WHERE a.name_id = n.name_id)
                     WHERE n.ontology = $1"
                ),
                None,
                &[ontology.into()],
            )
            .or_raise("switching the embeddings");
        client
            .update(
                "UPDATE belink.ontologies o SET embedding_model = $2, embedding_dim = $3, embedding_ignores_case = $4,
                     adapted_encoder = $2, adapted_from_generation = (a.settings->>'ontology_generation')::bigint,
                     adapted_at = now(), adapted_loss = a.loss
                 FROM belink.encoder_adaptations a WHERE o.name = $1 AND a.ontology = o.name",
                None,
                &[ontology.into(), model.clone().into(), (encoder.dim as i32).into(), encoder.ignores_case.into()],
            )
            .or_raise("recording the encoder");
        let index = catalog::build_embedding_index(client, ontology);
        embeddings_changed(client, ontology);
        client
            .update("DELETE FROM belink.adapted_embeddings WHERE ontology = $1", None, &[ontology.into()])
            .or_raise("clearing staged embeddings");
        client
            .update(
                "UPDATE belink.encoder_adaptations SET state = 'done', finished_at = now(), updated_at = now()
                 WHERE ontology = $1",
                None,
                &[ontology.into()],
            )
            .or_raise("recording the adaptation");
        // The training checkpoints served the run; its model is what stays.
        remove_after_commit(Path::new(&run.work_dir).join("checkpoint"));
        if let Some(previous) = previous.filter(|p| *p != model) {
            if let Some(run_dir) = Path::new(&previous).parent() {
                remove_after_commit(run_dir.to_path_buf());
            }
        }
        Some(index)
    })
}

/// Removes `ontology`'s adapted encoder and runs once the transaction commits (it is being
/// dropped).
pub fn remove_files_after_commit(client: &SpiClient<'_>, ontology: &str) {
    let dirs: Vec<String> = client
        .select(
            "SELECT work_dir FROM belink.encoder_adaptations WHERE ontology = $1
             UNION SELECT adapted_encoder FROM belink.ontologies WHERE name = $1 AND adapted_encoder IS NOT NULL",
            None,
            &[ontology.into()],
        )
        .or_raise("reading the adapted encoders")
        .filter_map(|row| row.get::<String>(1).ok().flatten())
        .collect();
    for dir in dirs {
        let dir = PathBuf::from(dir);
        // An encoder directory is `<run>/model`: the whole run goes.
        let run = if dir.ends_with("model") { dir.parent().map(Path::to_path_buf).unwrap_or(dir) } else { dir };
        remove_after_commit(run);
    }
}

/// Removes `dir` (inside the adapted-encoder directory only) when the transaction commits;
/// nothing when it aborts.
fn remove_after_commit(dir: PathBuf) {
    if !dir.starts_with(adapted_root()) {
        return;
    }
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warning!("belink: cannot remove {}: {e}", dir.display());
            }
        }
    });
}

extension_sql_file!(
    "../../sql/adapt.sql",
    name = "adapt_sql",
    requires = [belink_adapt_prepare, belink_adapt_train, belink_adapt_embed_batch, belink_adapt_switch, "index_sql"]
);
