//! belink_tune_fusion: an ontology's fusion weights chosen by measurement on labelled mentions
//! (see belink_core::retrieval::tune).

use belink_core::retrieval::tune::{tune_fusion, Tuning};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

use crate::catalog::require_owned_ontology;
use crate::error::{raise_with_hint, OrRaise};
use crate::{gucs, pipeline};

/// Labelled mentions retrieved per pipeline call: large enough to batch the encoder, small
/// enough to answer a cancel soon.
const EXAMPLES_PER_CALL: usize = 256;

/// Measures acc@1 of each retrieval source alone, of equal weights and of every weighting on a
/// grid over the labelled mentions in `examples` (a table or view: one row per mention, its
/// text and the id of the concept it names in `ontology`), and stores the best weighting for
/// `ontology`'s candidates from now on. Rows whose concept is not an active concept of the
/// ontology are skipped and counted. Learn from a training split, never from what you evaluate.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_tune_fusion(
    ontology: &str,
    examples: &str,
    mention_column: default!(&str, "'mention'"),
    concept_column: default!(&str, "'concept_id'"),
) -> TableIterator<
    'static,
    (
        name!(examples, i64),
        name!(skipped, i64),
        name!(reachable, f64),
        name!(exact_alone, f64),
        name!(trigram_alone, f64),
        name!(dense_alone, f64),
        name!(equal_weights, f64),
        name!(tuned, f64),
        name!(weight_exact, f64),
        name!(weight_trigram, f64),
        name!(weight_dense, f64),
    ),
> {
    Spi::connect(|client| require_owned_ontology(client, ontology));
    let (labelled, skipped) = read_labelled(ontology, examples, mention_column, concept_column);
    if labelled.is_empty() {
        raise_with_hint(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "{examples} has no mention labelled with a concept of ontology \"{ontology}\" ({skipped} rows skipped)"
            ),
            "each row needs a mention and the concept_id of an active concept in belink.concepts",
        );
    }
    let mut found = Vec::with_capacity(labelled.len());
    for chunk in labelled.chunks(EXAMPLES_PER_CALL) {
        pg_sys::check_for_interrupts!();
        found.extend(pipeline::run(Some(ontology), |p, _| p.tuning_examples(ontology, chunk)));
    }
    let tuning = tune_fusion(&found, gucs::settings().rrf_k);
    store(ontology, &tuning, skipped);
    let share = |count: usize| count as f64 / tuning.examples as f64;
    let [exact, trigram, dense] = tuning.correct_alone;
    TableIterator::once((
        tuning.examples as i64,
        skipped,
        share(tuning.reachable),
        share(exact),
        share(trigram),
        share(dense),
        share(tuning.correct_with_equal_weights),
        share(tuning.correct),
        tuning.weights.exact,
        tuning.weights.trigram,
        tuning.weights.dense,
    ))
}

/// The (mention, concept id) rows of `examples` whose concept is an active concept of
/// `ontology`, and how many rows were skipped.
fn read_labelled(ontology: &str, examples: &str, mention: &str, concept: &str) -> (Vec<(String, String)>, i64) {
    Spi::connect(|client| {
        let query = client
            .select(
                "SELECT format('SELECT %I::text, %I::text FROM %s', $2, $3, $1::regclass)",
                None,
                &[examples.into(), mention.into(), concept.into()],
            )
            .or_raise("reading the examples")
            .first()
            .get_one::<String>()
            .or_raise("reading the examples")
            .unwrap_or_default();
        let checked = format!(
            "SELECT e.m, e.c, EXISTS (SELECT 1 FROM belink.concepts c
                                      WHERE c.ontology = $1 AND c.concept_id = e.c AND NOT c.obsolete)
             FROM ({query}) AS e (m, c)"
        );
        let mut labelled = Vec::new();
        let mut skipped = 0;
        for row in client.select(&checked, None, &[ontology.into()]).or_raise("reading the examples") {
            let mention: Option<String> = row.get(1).or_raise("reading the examples");
            let concept: Option<String> = row.get(2).or_raise("reading the examples");
            let known: Option<bool> = row.get(3).or_raise("reading the examples");
            match (mention, concept, known) {
                (Some(m), Some(c), Some(true)) if !m.trim().is_empty() => labelled.push((m, c)),
                _ => skipped += 1,
            }
        }
        (labelled, skipped)
    })
}

/// Records the chosen weights and what was measured; from the next call on, retrieval fuses
/// the ontology's candidates with them.
fn store(ontology: &str, tuning: &Tuning, skipped: i64) {
    let [exact, trigram, dense] = tuning.correct_alone;
    let record = json!({
        "examples": tuning.examples,
        "skipped": skipped,
        "reachable": tuning.reachable,
        "correct": {
            "exact_alone": exact, "trigram_alone": trigram, "dense_alone": dense,
            "equal_weights": tuning.correct_with_equal_weights, "tuned": tuning.correct,
        },
    });
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE belink.ontologies SET fusion_exact = $2, fusion_trigram = $3, fusion_dense = $4,
                     fusion_tuning = $5 || jsonb_build_object('tuned_at', now()) WHERE name = $1",
                None,
                &[
                    ontology.into(),
                    tuning.weights.exact.into(),
                    tuning.weights.trigram.into(),
                    tuning.weights.dense.into(),
                    JsonB(record).into(),
                ],
            )
            .or_raise("storing the fusion weights");
    });
}
