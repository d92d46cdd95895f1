//! belink_candidates: the retrieved candidates of a mention, with each source's rank.

use belink_core::retrieval::fuse::Source;
use belink_core::retrieval::{Lexical, Query, MAX_K};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::error::raise;
use crate::pipeline;

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
    if !(1..=MAX_K as i32).contains(&k) {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("k must be between 1 and {MAX_K}, not {k}"));
    }
    let query = Query { text: mention.unwrap_or(""), ontology };
    let mut found =
        pipeline::run(ontology, |pipeline, _| pipeline.retrieve(&[query], k as usize, Lexical::ExactAndTrigram));
    TableIterator::new(found.pop().unwrap_or_default().into_iter().map(|c| {
        let rank = |source: Source| c.fused.ranks.of(source).map(|r| r as i32);
        (
            c.fused.concept_id.clone(),
            c.preferred_name,
            c.fused.matched_name.clone(),
            c.fused.score,
            c.fused.best_source.name().to_string(),
            c.fused.ontology.clone(),
            rank(Source::Exact),
            rank(Source::Trigram),
            rank(Source::Dense),
        )
    }))
}
