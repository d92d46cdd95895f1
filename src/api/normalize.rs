//! belink_normalize: the concept a mention refers to, and everything behind the decision.

use belink_core::decision::context::{defined_long_form, marked_context};
use belink_core::decision::prompt::MAX_CANDIDATES;
use belink_core::decision::{Decision, Request};
use belink_core::error::{Error, Result};
use belink_core::retrieval::fuse::Source;
use belink_core::retrieval::Lexical;
use belink_core::settings::Settings;
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;

use crate::error::raise;
use crate::pipeline;

fn candidates_json(decision: &Decision) -> serde_json::Value {
    let rows = decision.candidates.iter().enumerate().map(|(i, c)| {
        json!({
            "concept_id": c.fused.concept_id,
            "name": c.preferred_name,
            "ontology": c.fused.ontology,
            "retrieval_rank": i + 1,
            "score": c.fused.score,
            "similarity": c.fused.similarity,
            "source": c.fused.best_source.name(),
            "exact_rank": c.fused.ranks.of(Source::Exact),
            "trigram_rank": c.fused.ranks.of(Source::Trigram),
            "dense_rank": c.fused.ranks.of(Source::Dense),
            "probability": decision.probabilities.as_ref().map(|p| p[i]),
        })
    });
    serde_json::Value::Array(rows.collect())
}

type NormalizeRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<String>,
    Option<f64>,
    Option<JsonB>,
    Option<String>,
);

/// A NULL mention's row: no decision at all (an empty mention is decided: NIL).
const NULL_ROW: NormalizeRow = (None, None, None, None, None, None, None, None);

fn row(decision: &Decision, abbreviation_of: Option<String>) -> NormalizeRow {
    let chosen = decision.concept();
    let mut candidates = candidates_json(decision);
    if let Some(answer) = &decision.answer {
        candidates = json!({"answer": answer, "candidates": candidates});
    }
    (
        chosen.map(|c| c.fused.concept_id.clone()),
        chosen.map(|c| c.preferred_name.clone()),
        chosen.map(|c| c.fused.ontology.clone()),
        Some(decision.confidence),
        Some(decision.decided_by.name().to_string()),
        decision.probabilities.as_ref().and_then(|p| p.last()).map(|p| *p as f64),
        Some(JsonB(candidates)),
        abbreviation_of,
    )
}

/// The candidates to retrieve: the argument, else belink.top_k.
fn top_k(k: Option<i32>, settings: &Settings) -> Result<usize> {
    let k = k.unwrap_or(settings.top_k as i32);
    match (1..=MAX_CANDIDATES as i32).contains(&k) {
        true => Ok(k as usize),
        false => Err(Error::InvalidArgument(format!("k must be between 1 and {MAX_CANDIDATES}, not {k}"))),
    }
}

/// The concept a mention refers to (classic normalization: the mention is given), how sure
/// BeLink is, who decided (exact match, retrieval or the re-ranker), and every candidate with
/// its retrieval ranks and re-ranker probability (`nil_probability`: the re-ranker's
/// probability of "none of these"). No concept (NIL) gives NULL concept columns; a NULL
/// mention gives a row of NULLs. A mention that the context defines as an abbreviation is
/// looked up by its long form (`abbreviation_of`), as belink_link does.
#[pg_extern(volatile, parallel_restricted)]
fn belink_normalize(
    mention: Option<&str>,
    context: default!(Option<&str>, "NULL"),
    ontology: default!(Option<&str>, "NULL"),
    k: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(concept_id, Option<String>),
        name!(name, Option<String>),
        name!(ontology, Option<String>),
        name!(confidence, Option<f64>),
        name!(decided_by, Option<String>),
        name!(nil_probability, Option<f64>),
        name!(candidates, Option<JsonB>),
        name!(abbreviation_of, Option<String>),
    ),
> {
    let Some(mention) = mention else { return TableIterator::new(vec![NULL_ROW]) };
    // A mention its context defines as an abbreviation is looked up by the long form, as
    // linking does.
    let abbreviation_of = context.and_then(|c| defined_long_form(mention, c));
    let looked_up = abbreviation_of.as_deref().unwrap_or(mention);
    let decisions = pipeline::run(ontology, |pipeline, _| {
        let k = top_k(k, pipeline.settings)?;
        let context = context.map(|c| marked_context(c, mention, pipeline.settings.context_chars));
        pipeline.decide(&[Request { mention: looked_up, context, ontology }], k, Lexical::ExactAndTrigram)
    });
    TableIterator::new(decisions.iter().map(|d| row(d, abbreviation_of.clone())).collect::<Vec<_>>())
}

/// belink_normalize over arrays of mentions (and their contexts), in one model-server request:
/// one row per element, in order (a row of NULLs for a NULL element).
#[pg_extern(name = "belink_normalize", volatile, parallel_restricted)]
fn belink_normalize_many(
    mentions: Option<Vec<Option<String>>>,
    contexts: default!(Option<Vec<Option<String>>>, "NULL"),
    ontology: default!(Option<&str>, "NULL"),
    k: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ordinality, i32),
        name!(concept_id, Option<String>),
        name!(name, Option<String>),
        name!(ontology, Option<String>),
        name!(confidence, Option<f64>),
        name!(decided_by, Option<String>),
        name!(nil_probability, Option<f64>),
        name!(candidates, Option<JsonB>),
        name!(abbreviation_of, Option<String>),
    ),
> {
    let mentions = mentions.unwrap_or_default();
    let contexts = contexts.unwrap_or_default();
    if !contexts.is_empty() && contexts.len() != mentions.len() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{} mentions but {} contexts", mentions.len(), contexts.len()),
        );
    }
    let present: Vec<usize> = (0..mentions.len()).filter(|&i| mentions[i].is_some()).collect();
    let context_of = |i: usize| contexts.get(i).and_then(Option::as_deref);
    let long_forms: Vec<Option<String>> = present
        .iter()
        .map(|&i| context_of(i).and_then(|c| defined_long_form(mentions[i].as_deref().unwrap_or_default(), c)))
        .collect();
    let decisions = pipeline::run(ontology, |pipeline, _| {
        let k = top_k(k, pipeline.settings)?;
        let window = pipeline.settings.context_chars;
        let requests: Vec<Request> = present
            .iter()
            .zip(&long_forms)
            .map(|(&i, long_form)| {
                let mention = mentions[i].as_deref().unwrap_or_default();
                let context = context_of(i).map(|c| marked_context(c, mention, window));
                Request { mention: long_form.as_deref().unwrap_or(mention), context, ontology }
            })
            .collect();
        pipeline.decide(&requests, k, Lexical::ExactAndTrigram)
    });
    let mut decided = present
        .iter()
        .zip(decisions.iter().zip(long_forms))
        .map(|(&i, (d, long_form))| (i, row(d, long_form)))
        .peekable();
    let rows: Vec<_> = (0..mentions.len())
        .map(|i| {
            let row = match decided.peek() {
                Some((j, _)) if *j == i => decided.next().map(|(_, row)| row).unwrap_or(NULL_ROW),
                _ => NULL_ROW,
            };
            let (concept_id, name, ontology, confidence, decided_by, nil, candidates, abbreviation_of) = row;
            (i as i32 + 1, concept_id, name, ontology, confidence, decided_by, nil, candidates, abbreviation_of)
        })
        .collect();
    TableIterator::new(rows)
}
