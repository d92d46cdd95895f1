//! What mention detection finds in an ontology: the branches it covers, and the span scorer,
//! the learned model that chooses its mentions (belink.detection = scored; see
//! belink_core::mentions::scorer).

use belink_core::mentions::scorer::SpanScorer;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::api::ontology::{require_server_file_access, required};
use crate::catalog;
use crate::error::{raise, OrRaise};

/// Sets the span scorer of an ontology from a scorer file on the database server (as
/// `make train-span-scorer` writes it). Reading server files takes superuser or membership in
/// pg_read_server_files.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_set_span_scorer(
    ontology: Option<&str>,
    path: Option<&str>,
) -> TableIterator<'static, (name!(ontology, String), name!(weights, i64), name!(threshold, f64))> {
    let ontology = required("ontology", ontology);
    let path = required("path", path);
    require_server_file_access(path, "belink_set_span_scorer_text(ontology, content)");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        raise(PgSqlErrorCode::ERRCODE_UNDEFINED_FILE, format!("could not read span scorer file \"{path}\": {e}"))
    });
    set(ontology, &text, path)
}

/// Sets the span scorer of an ontology from the scorer file's content, for clients that cannot
/// place files on the server.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_set_span_scorer_text(
    ontology: Option<&str>,
    content: Option<&str>,
) -> TableIterator<'static, (name!(ontology, String), name!(weights, i64), name!(threshold, f64))> {
    set(required("ontology", ontology), required("content", content), "(text)")
}

/// Removes the span scorer of an ontology (its mentions are then the dictionary's alone).
/// Returns false if it had none.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_remove_span_scorer(ontology: &str) -> bool {
    Spi::connect_mut(|client| {
        catalog::require_owned_ontology(client, ontology);
        !client
            .update("DELETE FROM belink.span_scorers WHERE ontology = $1", None, &[ontology.into()])
            .or_raise("removing the span scorer")
            .is_empty()
    })
}

/// Restricts mention detection in an ontology to the concepts at or under `roots` (concept ids;
/// an empty array: every concept). HPO's "Phenotypic abnormality" (HP:0000118) leaves out its
/// modes of inheritance, onsets, frequencies and clinical modifiers ("sporadic", "autosomal
/// dominant"), which texts mostly write as no phenotype. Returns how many concepts detection
/// then covers. Retrieval and normalization still search the whole ontology.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_set_detection_roots(ontology: Option<&str>, roots: Option<Vec<Option<String>>>) -> i64 {
    let ontology = required("ontology", ontology);
    let roots: Vec<String> = roots
        .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "argument roots must not be NULL"))
        .into_iter()
        .flatten()
        .map(|root| root.trim().to_string())
        .collect();
    Spi::connect_mut(|client| {
        catalog::require_owned_ontology(client, ontology);
        let unknown: Vec<String> = client
            .select(
                "SELECT r FROM unnest($2::text[]) r WHERE NOT EXISTS (
                     SELECT 1 FROM belink.concepts c WHERE c.ontology = $1 AND c.concept_id = r AND NOT c.obsolete)",
                None,
                &[ontology.into(), roots.clone().into()],
            )
            .or_raise("checking the roots")
            .filter_map(|row| row.get::<String>(1).ok().flatten())
            .collect();
        if !unknown.is_empty() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("ontology \"{ontology}\" has no active concept {}", unknown.join(", ")),
            );
        }
        client
            .update(
                "UPDATE belink.ontologies SET detection_roots = $2 WHERE name = $1",
                None,
                &[ontology.into(), roots.clone().into()],
            )
            .or_raise("storing the detection roots");
        if roots.is_empty() {
            client
                .select("SELECT concept_count::bigint FROM belink.ontologies WHERE name = $1", None, &[ontology.into()])
                .or_raise("counting the concepts")
                .first()
                .get::<i64>(1)
                .or_raise("counting the concepts")
                .unwrap_or(0)
        } else {
            crate::mention_dictionary_cache::concepts_under(client, ontology, &roots).len() as i64
        }
    })
}

fn set(
    ontology: &str,
    text: &str,
    source: &str,
) -> TableIterator<'static, (name!(ontology, String), name!(weights, i64), name!(threshold, f64))> {
    let scorer = SpanScorer::from_text(text).unwrap_or_else(|e| {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("invalid span scorer \"{source}\": {e}"))
    });
    Spi::connect_mut(|client| {
        catalog::require_owned_ontology(client, ontology);
        client
            .update(
                "INSERT INTO belink.span_scorers (ontology, scorer, source) VALUES ($1, $2, $3)
                 ON CONFLICT (ontology) DO UPDATE
                 SET scorer = excluded.scorer, source = excluded.source,
                     version = nextval('belink.generations'), set_at = now(), set_by = current_user",
                None,
                &[ontology.into(), text.into(), source.into()],
            )
            .or_raise("storing the span scorer");
    });
    TableIterator::once((ontology.to_string(), scorer.weights() as i64, f64::from(scorer.threshold)))
}
