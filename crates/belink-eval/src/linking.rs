//! End-to-end linking from raw text: precision, recall and F1 of (span, concept) pairs, with
//! spans matched exactly (strict) or by overlap.

use std::collections::HashMap;
use std::time::Instant;

use belink_eval::corpus::Document;
use postgres::Client;

use crate::configs::CONFIGS;
use crate::db::db_message;
use belink_core::ids::canonical;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub predicted: usize,
    pub correct_predictions: usize,
    pub gold: usize,
    pub found_gold: usize,
}

impl Counts {
    pub fn precision(&self) -> f64 {
        self.correct_predictions as f64 / self.predicted.max(1) as f64
    }

    pub fn recall(&self) -> f64 {
        self.found_gold as f64 / self.gold.max(1) as f64
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

#[derive(Debug, Clone)]
pub struct LinkingRun {
    pub dataset: String,
    /// The names linking matched against: "ontology", or with the training mentions added.
    pub dictionary: String,
    pub config: String,
    pub strict: Counts,
    pub overlap: Counts,
    pub documents_per_second: f64,
}

/// The header cells that [`score_cells`] fills: gold, predicted, then P, R, F1 strict and overlap.
pub const SCORE_HEADER: &str =
    "gold | predicted | strict P | strict R | strict F1 | overlap P | overlap R | overlap F1";

/// One Markdown table's cells (without the outer bars) for a strict and an overlap score.
pub fn score_cells(strict: &Counts, overlap: &Counts) -> String {
    format!(
        "{} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3}",
        strict.gold,
        strict.predicted,
        strict.precision(),
        strict.recall(),
        strict.f1(),
        overlap.precision(),
        overlap.recall(),
        overlap.f1()
    )
}

/// A predicted entity: span and the ids of its concept (alternative ids included, canonical).
#[derive(Debug, Clone)]
pub struct Predicted {
    pub start: usize,
    pub end: usize,
    pub ids: Vec<String>,
}

/// A gold mention: span and its canonical gold ids (NIL mentions are left out).
#[derive(Debug, Clone)]
pub struct Gold {
    pub start: usize,
    pub end: usize,
    pub ids: Vec<String>,
}

/// Scores one document's predictions; `strict` wants equal spans, otherwise overlap suffices.
pub fn score(predicted: &[Predicted], gold: &[Gold], strict: bool, counts: &mut Counts) {
    let spans_match = |p: &Predicted, g: &Gold| {
        if strict {
            p.start == g.start && p.end == g.end
        } else {
            p.start < g.end && g.start < p.end
        }
    };
    let matches = |p: &Predicted, g: &Gold| spans_match(p, g) && g.ids.iter().any(|id| p.ids.contains(id));
    counts.predicted += predicted.len();
    counts.gold += gold.len();
    counts.correct_predictions += predicted.iter().filter(|p| gold.iter().any(|g| matches(p, g))).count();
    counts.found_gold += gold.iter().filter(|g| predicted.iter().any(|p| matches(p, g))).count();
}

/// Runs belink_link over the corpus' documents (stored in belink_eval.documents) in every
/// configuration and scores the entities; when the ontology has a span scorer, each
/// configuration with the dictionary's detection and with the scorer's.
pub fn evaluate_linking(
    client: &mut Client,
    dataset: &str,
    ontology: &str,
    dictionary: &str,
    documents: &[Document],
) -> Result<Vec<LinkingRun>, String> {
    let aliases = concept_aliases(client, ontology)?;
    let gold: HashMap<&str, Vec<Gold>> = documents
        .iter()
        .map(|d| {
            let mentions = d
                .mentions
                .iter()
                .filter(|m| !m.is_nil())
                .map(|m| Gold {
                    start: m.start,
                    end: m.end,
                    ids: m.concept_ids().iter().map(|id| canonical(id)).collect(),
                })
                .collect();
            (d.id.as_str(), mentions)
        })
        .collect();
    // The session's mention dictionary is built once, before any run is timed.
    client
        .query_one("SELECT belink_link('warm-up', $1)::text", &[&ontology])
        .map_err(|e| format!("belink_link over {dataset}: {}", db_message(&e)))?;
    let has_scorer: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM belink.span_scorers WHERE ontology = $1)", &[&ontology])
        .map_err(|e| db_message(&e))?
        .get(0);
    let detections: &[(&str, &str)] =
        if has_scorer { &[("dictionary", "dictionary"), ("span scorer", "scored")] } else { &[("", "dictionary")] };
    let mut runs = Vec::new();
    for (config, &(label, detection)) in
        CONFIGS.iter().filter(|c| !c.single_source).flat_map(|c| detections.iter().map(move |d| (c, d)))
    {
        config.apply(client)?;
        client.batch_execute(&format!("SET belink.detection = '{detection}'")).map_err(|e| db_message(&e))?;
        let started = Instant::now();
        let rows = client
            .query(
                "SELECT doc_id, belink_link(body, $2)::text FROM belink_eval.documents WHERE corpus = $1",
                &[&dataset, &ontology],
            )
            .map_err(|e| format!("belink_link over {dataset}: {}", db_message(&e)))?;
        let seconds = started.elapsed().as_secs_f64();
        let (mut strict, mut overlap) = (Counts::default(), Counts::default());
        for row in &rows {
            let doc_id: String = row.get(0);
            let entities: serde_json::Value =
                serde_json::from_str(&row.get::<_, String>(1)).map_err(|e| e.to_string())?;
            let predicted: Vec<Predicted> = entities
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    let id = canonical(e["concept_id"].as_str().unwrap_or_default());
                    Predicted {
                        start: e["start"].as_u64().unwrap_or(0) as usize,
                        end: e["end"].as_u64().unwrap_or(0) as usize,
                        ids: aliases.get(&id).cloned().unwrap_or_else(|| vec![id]),
                    }
                })
                .collect();
            let gold = gold.get(doc_id.as_str()).map(Vec::as_slice).unwrap_or_default();
            score(&predicted, gold, true, &mut strict);
            score(&predicted, gold, false, &mut overlap);
        }
        runs.push(LinkingRun {
            dataset: dataset.to_string(),
            dictionary: dictionary.to_string(),
            config: if label.is_empty() { config.name.to_string() } else { format!("{}, {label}", config.name) },
            strict,
            overlap,
            documents_per_second: rows.len() as f64 / seconds.max(1e-9),
        });
    }
    Ok(runs)
}

/// Each concept's id and alternative ids, canonical, keyed by its canonical id.
pub fn concept_aliases(client: &mut Client, ontology: &str) -> Result<HashMap<String, Vec<String>>, String> {
    let rows = client
        .query("SELECT concept_id, alt_ids FROM belink.concepts WHERE ontology = $1", &[&ontology])
        .map_err(|e| db_message(&e))?;
    Ok(rows
        .iter()
        .map(|row| {
            let id = canonical(&row.get::<_, String>(0));
            let alt: Vec<String> = row.get(1);
            let ids = std::iter::once(id.clone()).chain(alt.iter().map(|a| canonical(a))).collect();
            (id, ids)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_and_overlapping_matches() {
        let gold = [
            Gold { start: 0, end: 10, ids: vec!["A".into()] },
            Gold { start: 20, end: 30, ids: vec!["B".into(), "C".into()] },
            Gold { start: 40, end: 45, ids: vec!["D".into()] },
        ];
        let predicted = [
            Predicted { start: 0, end: 10, ids: vec!["A".into()] },  // exact
            Predicted { start: 22, end: 30, ids: vec!["C".into()] }, // overlapping, composite id
            Predicted { start: 40, end: 45, ids: vec!["X".into()] }, // wrong concept
            Predicted { start: 50, end: 55, ids: vec!["A".into()] }, // no gold there
        ];
        let (mut strict, mut overlap) = (Counts::default(), Counts::default());
        score(&predicted, &gold, true, &mut strict);
        score(&predicted, &gold, false, &mut overlap);
        assert_eq!((strict.correct_predictions, strict.found_gold), (1, 1));
        assert_eq!((overlap.correct_predictions, overlap.found_gold), (2, 2));
        assert_eq!((strict.predicted, strict.gold), (4, 3));
        assert!((overlap.precision() - 0.5).abs() < 1e-12);
        assert!((overlap.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((overlap.f1() - 4.0 / 7.0).abs() < 1e-12);
    }
}
