//! Span scorers: setting and removing the learned model that chooses an ontology's mentions
//! (belink.detection = scored; see belink_core::mentions::scorer).

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
