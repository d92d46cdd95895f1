//! Fusion weights chosen by measurement. Equal-weight reciprocal-rank fusion can rank below
//! its best source (NCBI-disease dev: dense alone 0.800 acc@1, fused 0.789), because a source
//! that is often wrong for an ontology's mentions (there, trigrams) outvotes one that is
//! usually right. The weights are searched on examples the caller may learn from (an annotated
//! training split): each example's candidates are retrieved once with every source, and every
//! weighting on a grid is scored by re-fusing those ranks in memory.
//!
//! The grid contains each source alone, so on the examples the chosen weights are never below
//! the best single source (the rule the evaluation checks on dev corpora).

use std::collections::HashMap;

use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::ports::{Models, NameStore};
use crate::retrieval::fuse::{order, Fused, FusionWeights, Source};
use crate::retrieval::{Lexical, Query, MAX_K};
use crate::settings::{Retrieval, Settings};

/// Relative weights tried for each source; the best source of a weighting has weight 1 (only
/// ratios change the order).
const GRID: [f64; 9] = [0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0];

/// Candidates kept per example, in multiples of belink.top_k: a concept that one source ranks
/// first may fall out of the top k under equal weights and come back under others.
const DEPTH: usize = 3;

/// One mention to learn from: its candidates found by every source (fused with any weights:
/// the ranks are what counts), and the concepts it names.
pub struct Example {
    pub candidates: Vec<Fused>,
    pub gold: Vec<String>,
}

/// What a tuning chose and measured, acc@1 counts over the examples.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    pub weights: FusionWeights,
    pub examples: usize,
    /// Examples whose gold concept any source found: the most any weighting can get right.
    pub reachable: usize,
    pub correct: usize,
    pub correct_with_equal_weights: usize,
    /// Correct with each source alone, in [`Source::ALL`] order.
    pub correct_alone: [usize; 3],
}

/// How many examples rank a gold concept first under `weights`.
fn correct_at_1(examples: &[Example], weights: &FusionWeights, rrf_k: f64) -> usize {
    examples
        .iter()
        .filter(|example| {
            let first = example
                .candidates
                .iter()
                .map(|c| (c, weights.score(&c.ranks, rrf_k)))
                .min_by(|(a, a_score), (b, b_score)| order(a, *a_score, b, *b_score));
            first.is_some_and(|(c, score)| score > 0.0 && example.gold.contains(&c.concept_id))
        })
        .count()
}

/// The weighting on the grid that ranks the most examples' gold concept first; ties go to the
/// weighting nearest equal weights (the least assumption).
pub fn tune_fusion(examples: &[Example], rrf_k: f64) -> Tuning {
    let mut best: Option<(usize, f64, FusionWeights)> = None;
    for &exact in &GRID {
        for &trigram in &GRID {
            for &dense in &GRID {
                if exact.max(trigram).max(dense) != 1.0 {
                    continue;
                }
                let weights = FusionWeights { exact, trigram, dense };
                let correct = correct_at_1(examples, &weights, rrf_k);
                let distance = 3.0 - (exact + trigram + dense);
                let better = best.is_none_or(|(c, d, _)| correct > c || (correct == c && distance < d));
                if better {
                    best = Some((correct, distance, weights));
                }
            }
        }
    }
    let (correct, _, weights) = best.expect("the grid is not empty");
    Tuning {
        weights,
        examples: examples.len(),
        reachable: examples.iter().filter(|e| e.candidates.iter().any(|c| e.gold.contains(&c.concept_id))).count(),
        correct,
        correct_with_equal_weights: correct_at_1(examples, &FusionWeights::default(), rrf_k),
        correct_alone: Source::ALL.map(|source| correct_at_1(examples, &FusionWeights::only(source), rrf_k)),
    }
}

impl<S: NameStore, M: Models> Pipeline<'_, S, M> {
    /// The examples of labelled mentions `(mention, gold concept id)` of `ontology`, each
    /// distinct mention retrieved once by every source.
    pub fn tuning_examples(&self, ontology: &str, labelled: &[(String, String)]) -> Result<Vec<Example>> {
        // Every source searched, whatever the settings and the weights stored so far.
        let every_source = Settings { retrieval: Retrieval::Hybrid, tuned_fusion: false, ..self.settings.clone() };
        let pipeline = Pipeline::new(self.store, self.models, &every_source, self.ontologies);
        let mut distinct: HashMap<&str, usize> = HashMap::new();
        let mut queries = Vec::new();
        for (mention, _) in labelled {
            distinct.entry(mention).or_insert_with(|| {
                queries.push(Query { text: mention, ontology: Some(ontology) });
                queries.len() - 1
            });
        }
        let k = (self.settings.top_k * DEPTH).min(MAX_K);
        let candidates = pipeline.retrieve(&queries, k, Lexical::ExactAndTrigram)?;
        Ok(labelled
            .iter()
            .map(|(mention, gold)| Example {
                candidates: candidates[distinct[mention.as_str()]].iter().map(|c| c.fused.clone()).collect(),
                gold: vec![gold.clone()],
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::fuse::Ranks;

    fn candidate(id: &str, exact: Option<usize>, trigram: Option<usize>, dense: Option<usize>) -> Fused {
        Fused {
            ontology: "o".into(),
            concept_id: id.into(),
            matched_name: id.into(),
            score: 0.0,
            similarity: 0.0,
            ranks: Ranks { exact, trigram, dense },
            best_source: Source::Dense,
        }
    }

    /// NCBI-disease's shape: in most examples trigrams put a wrong concept first and dense
    /// search the right one, close behind each other; in one, the other way round.
    fn examples() -> Vec<Example> {
        let gold = || vec!["gold".to_string()];
        let mut examples = Vec::new();
        for _ in 0..8 {
            examples.push(Example {
                candidates: vec![candidate("gold", None, Some(3), Some(1)), candidate("other", None, Some(1), Some(2))],
                gold: gold(),
            });
        }
        examples.push(Example {
            candidates: vec![candidate("gold", None, Some(1), Some(4)), candidate("other", None, Some(3), Some(1))],
            gold: gold(),
        });
        examples.push(Example { candidates: vec![candidate("other", Some(1), None, None)], gold: gold() });
        examples
    }

    #[test]
    fn weights_favour_the_source_that_is_right_and_never_fall_below_a_single_source() {
        let tuning = tune_fusion(&examples(), 60.0);
        assert_eq!((tuning.examples, tuning.reachable), (10, 9));
        assert_eq!(tuning.correct_alone, [0, 1, 8]);
        assert_eq!(tuning.correct_with_equal_weights, 0, "equal weights let trigrams outvote");
        assert_eq!(tuning.correct, 8);
        // Of the weightings that get 8 right, the nearest equal weights: trigrams at 0.45 still
        // break no dense ranking (1/61 + 0.45/63 > 0.45/61 + 1/62).
        assert_eq!(tuning.weights, FusionWeights { exact: 1.0, trigram: 0.45, dense: 1.0 });
    }

    #[test]
    fn no_examples_keep_equal_weights() {
        let tuning = tune_fusion(&[], 60.0);
        assert_eq!(tuning.weights, FusionWeights::default());
        assert_eq!((tuning.examples, tuning.correct), (0, 0));
    }
}
