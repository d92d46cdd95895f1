//! Deciding a mention's concept: retrieval, then (belink.rerank) the set-wise re-ranker,
//! except where retrieval is already certain (an exact match to a single concept decides) or
//! sure enough (no near tie: belink.rerank_margin).

pub mod choose;
pub mod context;
pub mod prompt;
pub mod rank_prior;

use std::collections::HashMap;

use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::ports::{ConceptDetails, ConceptKey, Models, NameStore};
use crate::retrieval::{Candidate, Lexical, Query};
use crate::settings::RerankMode;
use choose::choose;
use prompt::{PromptCandidate, RerankItem};

/// Most mentions sent to the re-ranker in one request. Each request must be answered within
/// `belink.request_timeout`: a batch job's hundreds of mentions in one request would wait minutes
/// for the reply (100 NCBI-disease abstracts in one belink_annotate batch timed out at the
/// default 30 s). With the served prompts on 2 cores a mention takes about 0.9 s of wall time
/// at k = 10 and 2.6 to 4 s alone at k = 20 (BENCHMARKS.md): 8 keep both cores busy and take
/// about 7 s at k = 10, an estimated 12 to 16 s at k = 20.
pub const RERANK_REQUEST_ITEMS: usize = 8;

/// One mention to decide about.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub mention: &'a str,
    /// The text around the mention, the mention in [brackets].
    pub context: Option<String>,
    pub ontology: Option<&'a str>,
}

/// Who chose the concept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// An exact match to a single concept: no need to ask the re-ranker.
    Exact,
    /// Retrieval's top candidate (re-ranking off).
    Retrieval,
    Reranker,
}

impl DecidedBy {
    pub fn name(self) -> &'static str {
        match self {
            DecidedBy::Exact => "exact",
            DecidedBy::Retrieval => "retrieval",
            DecidedBy::Reranker => "reranker",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index into `candidates`; None is NIL (no concept fits, or nothing was retrieved).
    pub chosen: Option<usize>,
    pub confidence: f64,
    pub decided_by: DecidedBy,
    pub candidates: Vec<Candidate>,
    /// The re-ranker's probabilities: one per candidate, then "none of these".
    pub probabilities: Option<Vec<f32>>,
    /// The generated answer (rerank mode generate).
    pub answer: Option<String>,
}

impl Decision {
    pub fn concept(&self) -> Option<&Candidate> {
        self.chosen.map(|i| &self.candidates[i])
    }

    /// The decision retrieval alone makes: nothing retrieved is NIL; a unique exact match
    /// decides with certainty; otherwise the top candidate, as sure as its best name is similar
    /// to the mention, and NIL when that is below `min_similarity` (the candidates are kept).
    fn from_retrieval(candidates: Vec<Candidate>, min_similarity: f64) -> Decision {
        let exact: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i].fused.ranks.exact == Some(1)).collect();
        let (chosen, confidence, decided_by) = if candidates.is_empty() {
            (None, 0.0, DecidedBy::Retrieval)
        } else if exact.len() == 1 {
            // Linking relies on it: such mentions are not embedded (see retrieval::one_concept).
            (Some(exact[0]), 1.0, DecidedBy::Exact)
        } else {
            let similarity = candidates[0].fused.similarity.clamp(0.0, 1.0);
            (Some(0).filter(|_| similarity >= min_similarity), similarity, DecidedBy::Retrieval)
        };
        Decision { chosen, confidence, decided_by, candidates, probabilities: None, answer: None }
    }

    fn is_near_tie(&self, margin: f64) -> bool {
        let similarity = |i: usize| self.candidates.get(i).map_or(0.0, |c| c.fused.similarity);
        !self.candidates.is_empty() && near_tie(similarity(0), similarity(1), margin)
    }
}

/// Whether retrieval is unsure enough to ask the re-ranker (`belink.rerank_margin`): its first
/// candidate is less than `margin` more similar to the mention than its second (a lone
/// candidate's runner-up counts as similarity 0); a margin of 1 asks about every mention. On
/// dev, the re-ranker changed retrieval's answer for the better only on such near ties
/// (eval/REPORT.md); the others cost its time for nothing.
pub fn near_tie(first_similarity: f64, second_similarity: f64, margin: f64) -> bool {
    margin >= 1.0 || first_similarity - second_similarity < margin
}

impl<S: NameStore, M: Models> Pipeline<'_, S, M> {
    /// Decides the concept of every request (k candidates each), re-ranking the near ties in
    /// requests of at most [`RERANK_REQUEST_ITEMS`].
    pub fn decide(&self, requests: &[Request], k: usize, lexical: Lexical) -> Result<Vec<Decision>> {
        let queries: Vec<Query> = requests.iter().map(|r| Query { text: r.mention, ontology: r.ontology }).collect();
        let mut decisions: Vec<Decision> = self
            .retrieve(&queries, k, lexical)?
            .into_iter()
            .map(|candidates| Decision::from_retrieval(candidates, self.settings.min_similarity))
            .collect();
        if self.settings.rerank {
            let margin = self.settings.rerank_margin;
            let undecided: Vec<usize> = (0..decisions.len())
                .filter(|&i| decisions[i].decided_by == DecidedBy::Retrieval && decisions[i].is_near_tie(margin))
                .collect();
            if !undecided.is_empty() {
                self.rerank(requests, &mut decisions, &undecided)?;
            }
        }
        Ok(decisions)
    }

    fn rerank(&self, requests: &[Request], decisions: &mut [Decision], which: &[usize]) -> Result<()> {
        let concepts: Vec<ConceptKey> =
            which.iter().flat_map(|&i| decisions[i].candidates.iter().map(Candidate::key)).collect();
        let details: HashMap<ConceptKey, ConceptDetails> = self.store.concept_details(&concepts)?;
        let items: Vec<RerankItem> = which
            .iter()
            .map(|&i| RerankItem {
                mention: requests[i].mention.to_string(),
                context: requests[i].context.clone(),
                candidates: decisions[i]
                    .candidates
                    .iter()
                    .map(|c| {
                        let details = details.get(&c.key()).cloned().unwrap_or_default();
                        PromptCandidate {
                            name: c.preferred_name.clone(),
                            synonyms: details.synonyms,
                            definition: details.definition,
                        }
                    })
                    .collect(),
            })
            .collect();
        let mode = self.settings.rerank_mode;
        let mut answers = Vec::with_capacity(items.len());
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let request: Vec<RerankItem> = items.by_ref().take(RERANK_REQUEST_ITEMS).collect();
            answers.extend(self.models.rerank(request, mode == RerankMode::Generate)?);
        }
        for (&i, reranked) in which.iter().zip(answers) {
            let decision = &mut decisions[i];
            let choice = choose(&reranked, decision.candidates.len(), mode, self.settings.nil_threshold);
            decision.answer = Some(reranked.answer).filter(|a| !a.is_empty());
            decision.probabilities = Some(reranked.probabilities);
            // "None of these" against a concept retrieval chose has its own gate: a re-ranker
            // can be well calibrated on concepts and still say "none" too often (see settings).
            let gate = if choice.none_of_these && decision.chosen.is_some() {
                self.settings.none_override_threshold
            } else {
                self.settings.override_threshold
            };
            if choice.chosen != decision.chosen && choice.confidence < gate {
                // Not sure enough to overrule retrieval: its decision stands (the re-ranker's
                // probabilities are kept for the audit).
                continue;
            }
            decision.chosen = choice.chosen;
            decision.confidence = choice.confidence;
            decision.decided_by = DecidedBy::Reranker;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
