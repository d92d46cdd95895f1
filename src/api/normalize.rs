//! Choosing a mention's concept: retrieval, then (belink.rerank) the set-wise LLM re-ranker,
//! except where retrieval is already certain (an exact match to a single concept).
//! belink_normalize exposes the decision and everything behind it; belink_link uses it too.

use std::collections::HashMap;

use belink_core::fusion::SOURCES;
use belink_core::prompt::{context_window, labels_for, parse_answer, PromptCandidate, RerankItem};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;

use crate::api::candidates::{retrieve, Candidate, Lexical, Query};
use crate::catalog::Ontologies;
use crate::error::{raise, OrRaise};
use crate::{client, gucs};

/// One mention to decide about.
pub struct Request<'a> {
    pub mention: &'a str,
    /// The text around the mention, the mention in [brackets].
    pub context: Option<String>,
    pub ontology: Option<&'a str>,
}

/// Who chose the concept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// An exact match to a single concept: no need to ask the LLM.
    Exact,
    /// Retrieval's top candidate (re-ranking off, or no re-ranker).
    Retrieval,
    Reranker,
}

impl DecidedBy {
    fn name(self) -> &'static str {
        match self {
            DecidedBy::Exact => "exact",
            DecidedBy::Retrieval => "retrieval",
            DecidedBy::Reranker => "reranker",
        }
    }
}

pub struct Decision {
    /// Index into `candidates`; None is NIL (no concept fits, or nothing was retrieved).
    pub chosen: Option<usize>,
    pub confidence: f64,
    pub decided_by: DecidedBy,
    pub candidates: Vec<Candidate>,
    /// The re-ranker's probabilities: one per candidate, then "none of these".
    pub probabilities: Option<Vec<f32>>,
    /// The generated answer (belink.rerank_mode = generate).
    pub answer: Option<String>,
}

impl Decision {
    pub fn concept(&self) -> Option<&Candidate> {
        self.chosen.map(|i| &self.candidates[i])
    }

    fn candidates_json(&self) -> serde_json::Value {
        let rows = self.candidates.iter().enumerate().map(|(i, c)| {
            let rank = |s: usize| c.fused.ranks[s];
            json!({
                "concept_id": c.fused.concept_id,
                "name": c.preferred_name,
                "ontology": c.fused.ontology,
                "retrieval_rank": i + 1,
                "score": c.fused.score,
                "source": SOURCES[c.fused.best_source],
                "exact_rank": rank(0),
                "trigram_rank": rank(1),
                "dense_rank": rank(2),
                "probability": self.probabilities.as_ref().map(|p| p[i]),
            })
        });
        serde_json::Value::Array(rows.collect())
    }
}

enum Mode {
    Score,
    Generate,
}

fn rerank_mode() -> Mode {
    match gucs::get(&gucs::RERANK_MODE).as_deref().unwrap_or("score") {
        "score" => Mode::Score,
        "generate" => Mode::Generate,
        other => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid belink.rerank_mode '{other}': use score or generate"),
        ),
    }
}

/// Decides the concept of every request (k candidates each), re-ranking in one request.
pub fn decide(
    client: &SpiClient<'_>,
    ontologies: &Ontologies,
    requests: &[Request],
    k: usize,
    lexical: Lexical,
) -> Vec<Decision> {
    let queries: Vec<Query> = requests.iter().map(|r| Query { text: r.mention, ontology: r.ontology }).collect();
    let retrieved = retrieve(client, ontologies, &queries, k, lexical);
    let rerank = gucs::RERANK.get();
    let mut decisions = Vec::with_capacity(requests.len());
    let mut to_rerank: Vec<usize> = Vec::new();
    for candidates in retrieved {
        let exact: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i].fused.ranks[0] == Some(1)).collect();
        let decision = if candidates.is_empty() {
            Decision {
                chosen: None,
                confidence: 0.0,
                decided_by: DecidedBy::Retrieval,
                candidates,
                probabilities: None,
                answer: None,
            }
        } else if exact.len() == 1 {
            // A unique exact match decides (candidates::retrieve relies on it when linking:
            // such mentions are not embedded).
            Decision {
                chosen: Some(exact[0]),
                confidence: 1.0,
                decided_by: DecidedBy::Exact,
                candidates,
                probabilities: None,
                answer: None,
            }
        } else {
            if rerank {
                to_rerank.push(decisions.len());
            }
            let total: f64 = candidates.iter().map(|c| c.fused.score).sum();
            let confidence = candidates[0].fused.score / total.max(f64::MIN_POSITIVE);
            Decision {
                chosen: Some(0),
                confidence,
                decided_by: DecidedBy::Retrieval,
                candidates,
                probabilities: None,
                answer: None,
            }
        };
        decisions.push(decision);
    }
    if !to_rerank.is_empty() {
        rerank_decisions(client, requests, &mut decisions, &to_rerank);
    }
    decisions
}

fn rerank_decisions(client: &SpiClient<'_>, requests: &[Request], decisions: &mut [Decision], which: &[usize]) {
    let details = candidate_details(client, which.iter().flat_map(|&i| &decisions[i].candidates));
    let items: Vec<RerankItem> = which
        .iter()
        .map(|&i| RerankItem {
            mention: requests[i].mention.to_string(),
            context: requests[i].context.clone(),
            candidates: decisions[i]
                .candidates
                .iter()
                .map(|c| {
                    let (definition, synonyms) = details
                        .get(&(c.fused.ontology.clone(), c.fused.concept_id.clone()))
                        .cloned()
                        .unwrap_or_default();
                    PromptCandidate { name: c.preferred_name.clone(), synonyms, definition }
                })
                .collect(),
        })
        .collect();
    let mode = rerank_mode();
    let (probabilities, answers) = client::rerank(items, matches!(mode, Mode::Generate));
    let threshold = gucs::NIL_THRESHOLD.get();
    for (position, &i) in which.iter().enumerate() {
        let decision = &mut decisions[i];
        let probabilities = probabilities[position].clone();
        let options = labels_for(decision.candidates.len()).len();
        let choice = match mode {
            Mode::Score => argmax(&probabilities),
            // An answer that names no option counts as "none of these".
            Mode::Generate => parse_answer(&answers[position], options).unwrap_or(options - 1),
        };
        let confidence = probabilities.get(choice).copied().unwrap_or(0.0) as f64;
        let none = choice + 1 == options || choice >= decision.candidates.len();
        decision.chosen = (!none && confidence >= threshold).then_some(choice);
        decision.confidence = confidence;
        decision.decided_by = DecidedBy::Reranker;
        decision.answer = answers.get(position).cloned().filter(|a| !a.is_empty());
        decision.probabilities = Some(probabilities);
    }
}

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0)
}

/// Definition and a few synonyms of each candidate concept, for the prompt.
fn candidate_details<'a>(
    client: &SpiClient<'_>,
    candidates: impl Iterator<Item = &'a Candidate>,
) -> HashMap<(String, String), (Option<String>, Vec<String>)> {
    let (ontologies, ids): (Vec<String>, Vec<String>) =
        candidates.map(|c| (c.fused.ontology.clone(), c.fused.concept_id.clone())).unzip();
    if ids.is_empty() {
        return HashMap::new();
    }
    client
        .select(
            "SELECT c.ontology, c.concept_id, c.definition,
                    ARRAY(SELECT n.name FROM belink.names n
                          WHERE n.ontology = c.ontology AND n.concept_id = c.concept_id
                            AND n.kind IN ('exact', 'related', 'abbreviation', 'user')
                          ORDER BY n.name_id LIMIT 3)
             FROM belink.concepts c
             JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS w(ontology, concept_id)) w
               USING (ontology, concept_id)",
            None,
            &[ontologies.into(), ids.into()],
        )
        .or_raise("reading candidate details")
        .filter_map(|row| {
            let key = (row.get::<String>(1).ok()??, row.get::<String>(2).ok()??);
            let definition = row.get::<String>(3).ok()?;
            let synonyms = row.get::<Vec<String>>(4).ok()?.unwrap_or_default();
            Some((key, (definition, synonyms)))
        })
        .collect()
}

/// The mention marked with [brackets] in its context (first exact, then case-insensitive
/// occurrence), cut to belink.context_chars on each side.
pub fn marked_context(context: &str, mention: &str) -> String {
    let window = gucs::CONTEXT_CHARS.get().max(0) as usize;
    let chars: Vec<char> = context.chars().collect();
    let needle: Vec<char> = mention.chars().collect();
    let lower = |c: &char| c.to_lowercase().collect::<String>();
    let found =
        (0..chars.len().saturating_sub(needle.len()) + 1).find(|&i| chars[i..].starts_with(&needle)).or_else(|| {
            (0..chars.len().saturating_sub(needle.len()) + 1).find(|&i| {
                chars[i..i + needle.len().min(chars.len() - i)].iter().map(lower).eq(needle.iter().map(lower))
            })
        });
    match found {
        Some(start) if !needle.is_empty() && start + needle.len() <= chars.len() => {
            context_window(context, start, start + needle.len(), window)
        }
        _ => context_window(context, 0, 0, window).trim_start_matches("[]").trim().to_string(),
    }
}

type NormalizeRow = (Option<String>, Option<String>, Option<String>, f64, String, Option<f64>, JsonB);

fn row(decision: &Decision) -> NormalizeRow {
    let chosen = decision.concept();
    let mut candidates = decision.candidates_json();
    if let Some(answer) = &decision.answer {
        candidates = json!({"answer": answer, "candidates": candidates});
    }
    (
        chosen.map(|c| c.fused.concept_id.clone()),
        chosen.map(|c| c.preferred_name.clone()),
        chosen.map(|c| c.fused.ontology.clone()),
        decision.confidence,
        decision.decided_by.name().to_string(),
        decision.probabilities.as_ref().and_then(|p| p.last()).map(|p| *p as f64),
        JsonB(candidates),
    )
}

fn top_k(k: Option<i32>) -> usize {
    let k = k.unwrap_or_else(|| gucs::TOP_K.get());
    if !(1..=belink_core::prompt::MAX_CANDIDATES as i32).contains(&k) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("k must be between 1 and {}, not {k}", belink_core::prompt::MAX_CANDIDATES),
        );
    }
    k as usize
}

/// The concept a mention refers to (classic normalization: the mention is given), how sure
/// BeLink is, who decided (exact match, retrieval or the re-ranker), and every candidate with
/// its retrieval ranks and re-ranker probability (`nil_probability`: the re-ranker's
/// probability of "none of these"). No concept (NIL) gives NULLs.
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
        name!(confidence, f64),
        name!(decided_by, String),
        name!(nil_probability, Option<f64>),
        name!(candidates, JsonB),
    ),
> {
    let Some(mention) = mention else { return TableIterator::new(Vec::new()) };
    let k = top_k(k);
    let rows = Spi::connect(|client| {
        let ontologies = Ontologies::read(client);
        if let Some(ontology) = ontology {
            ontologies.require(ontology);
        }
        let request = Request { mention, context: context.map(|c| marked_context(c, mention)), ontology };
        decide(client, &ontologies, &[request], k, Lexical::ExactAndTrigram).iter().map(row).collect::<Vec<_>>()
    });
    TableIterator::new(rows)
}

/// belink_normalize over arrays of mentions (and their contexts), in one model-server request.
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
        name!(confidence, f64),
        name!(decided_by, String),
        name!(nil_probability, Option<f64>),
        name!(candidates, JsonB),
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
    let k = top_k(k);
    let rows = Spi::connect(|client| {
        let ontologies = Ontologies::read(client);
        if let Some(ontology) = ontology {
            ontologies.require(ontology);
        }
        let present: Vec<usize> = (0..mentions.len()).filter(|&i| mentions[i].is_some()).collect();
        let requests: Vec<Request> = present
            .iter()
            .map(|&i| {
                let mention = mentions[i].as_deref().unwrap_or_default();
                let context = contexts.get(i).cloned().flatten().map(|c| marked_context(&c, mention));
                Request { mention, context, ontology }
            })
            .collect();
        let decisions = decide(client, &ontologies, &requests, k, Lexical::ExactAndTrigram);
        present
            .iter()
            .zip(decisions.iter())
            .map(|(&i, d)| {
                let (concept_id, name, ontology, confidence, decided_by, nil, candidates) = row(d);
                (i as i32 + 1, concept_id, name, ontology, confidence, decided_by, nil, candidates)
            })
            .collect::<Vec<_>>()
    });
    TableIterator::new(rows)
}
