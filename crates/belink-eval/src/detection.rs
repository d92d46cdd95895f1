//! Mention detection alone, without a cluster: the core's `find_mentions` over an ontology
//! file's names (the kinds `belink_link` detects with), scored on the corpus' gold spans.
//! This is what the dictionary rules are measured with; `evaluate` measures the same spans
//! with their concepts through SQL.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use belink_core::fold::fold;
use belink_core::mentions::dictionary::{DictionaryName, MentionDictionary};
use belink_core::mentions::scorer::{train, Example, SpanScorer, Training};
use belink_core::mentions::{detect_mentions, find_mentions, span_candidates, Nesting};
use belink_core::ontology::{descendants, load_file, parse_format_argument, LoadOptions, NameKind, Ontology};
use belink_eval::corpus::Document;

use crate::linking::Counts;
use crate::report::escape;

pub struct DetectionRun {
    pub strict: Counts,
    pub overlap: Counts,
    pub documents_per_second: f64,
    pub dictionary_build_seconds: f64,
    pub dictionary_bytes: usize,
    /// Gold mentions no detection overlaps: (document, mention).
    pub missed: Vec<(String, String)>,
    /// Gold mentions overlapped by detections of other spans: (document, mention, detected,
    /// how the spans differ: see [`boundary_cause`]).
    pub boundary: Vec<(String, String, String, &'static str)>,
    /// Detections that overlap no gold mention: (document, detected).
    pub spurious: Vec<(String, String)>,
}

/// The error classes the report counts, in its column order.
pub const CAUSES: [&str; 9] = [
    "missed: capitals",
    "missed: one word",
    "missed: several words",
    "other span: wider",
    "other span: narrower",
    "other span: crossing",
    "false positive: capitals",
    "false positive: one word",
    "false positive: several words",
];

/// How detections overlapping a gold mention differ from its span: all contain it (a
/// modifier or a neighbour taken in), all lie inside it (words of the mention left out), or
/// otherwise.
fn boundary_cause(gold: (usize, usize), detected: &[(usize, usize)]) -> &'static str {
    if detected.iter().all(|&(start, end)| start <= gold.0 && end >= gold.1) {
        "wider"
    } else if detected.iter().all(|&(start, end)| start >= gold.0 && end <= gold.1) {
        "narrower"
    } else {
        "crossing"
    }
}

/// A span's shape, for missed mentions and false positives: written in capitals (an acronym or
/// a gene symbol: "RB1", "DM"), one word, or several.
fn text_cause(text: &str) -> &'static str {
    if !text.chars().any(char::is_lowercase) {
        "capitals"
    } else if !text.contains(|c: char| c.is_whitespace()) {
        "one word"
    } else {
        "several words"
    }
}

impl DetectionRun {
    /// How many errors of each of [`CAUSES`].
    pub fn cause_counts(&self) -> Vec<usize> {
        let mut labels: Vec<String> = Vec::new();
        labels.extend(self.missed.iter().map(|(_, m)| format!("missed: {}", text_cause(m))));
        labels.extend(self.boundary.iter().map(|(.., cause)| format!("other span: {cause}")));
        labels.extend(self.spurious.iter().map(|(_, d)| format!("false positive: {}", text_cause(d))));
        CAUSES.iter().map(|cause| labels.iter().filter(|l| l == cause).count()).collect()
    }

    /// Markdown: every missed gold mention, boundary error and false positive.
    pub fn errors(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### Missed ({})\n\n| document | gold mention |\n|---|---|", self.missed.len());
        for (document, mention) in &self.missed {
            let _ = writeln!(out, "| {document} | {} |", escape(mention));
        }
        let _ = writeln!(
            out,
            "\n### Other span ({})\n\n| document | gold mention | detected |\n|---|---|---|",
            self.boundary.len()
        );
        for (document, mention, detected, _) in &self.boundary {
            let _ = writeln!(out, "| {document} | {} | {} |", escape(mention), escape(detected));
        }
        let _ = writeln!(out, "\n### False positives ({})\n\n| document | detected |\n|---|---|", self.spurious.len());
        for (document, detected) in &self.spurious {
            let _ = writeln!(out, "| {document} | {} |", escape(detected));
        }
        out
    }
}

/// An ontology file, parsed as the loader parses it (`format`: as `belink_load_ontology` takes
/// it, `auto` to detect it).
pub fn read_ontology(ontology: &Path, format: &str) -> Result<Ontology, String> {
    let format = parse_format_argument(format).map_err(|e| e.to_string())?;
    let options = LoadOptions { format, ..LoadOptions::default() };
    load_file(ontology, &options).map_err(|e| format!("{}: {e}", ontology.display()))
}

/// The ontology file's names that mention detection uses (see [`detection_names`]).
pub fn dictionary_names(ontology: &Path, format: &str, roots: &[String]) -> Result<Vec<DictionaryName>, String> {
    Ok(detection_names(&read_ontology(ontology, format)?, roots))
}

/// The ontology's names that mention detection uses, as the loader stores them, of the
/// concepts under `roots` only when some are given (as `belink_set_detection_roots`).
pub fn detection_names(parsed: &Ontology, roots: &[String]) -> Vec<DictionaryName> {
    let under = (!roots.is_empty())
        .then(|| descendants(parsed.active_concepts().map(|c| (c.id.as_str(), c.parents.as_slice())), roots));
    let mut names = Vec::new();
    for concept in parsed.active_concepts().filter(|c| under.as_ref().is_none_or(|u| u.contains(&c.id))) {
        for (name, kind) in concept.names() {
            if NameKind::DETECTION.contains(&kind) {
                names.push(DictionaryName {
                    concept_id: concept.id.clone(),
                    name: name.to_string(),
                    normalized: fold(name),
                });
            }
        }
    }
    names
}

/// The definitions of the ontology's active concepts: text written in the ontology's own
/// words, for distant supervision.
pub fn ontology_definitions(parsed: &Ontology) -> Vec<String> {
    parsed.active_concepts().filter_map(|c| c.definition.clone()).collect()
}

/// Detects the mentions of every document and scores their spans (NIL gold mentions count:
/// detection does not know concepts).
/// `passes`: how many times detection runs over the documents, for a steadier speed.
/// `scorer`: settle the spans with it instead of leftmost-longest; `nesting`: also report the
/// detections inside them.
pub fn evaluate(
    names: Vec<DictionaryName>,
    documents: &[Document],
    passes: usize,
    scorer: Option<&SpanScorer>,
    nesting: Nesting,
) -> Result<DetectionRun, String> {
    let started = Instant::now();
    let dictionary = MentionDictionary::build(names)?;
    let dictionary_build_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let detect = || -> Vec<Vec<(usize, usize)>> {
        documents
            .iter()
            .map(|d| {
                let scorers = [scorer];
                let mentions = detect_mentions(&d.text, &[&dictionary], scorer.map(|_| &scorers[..]), nesting);
                let mut spans: Vec<(usize, usize)> = mentions.iter().map(|m| (m.start, m.end)).collect();
                // The conjuncts of a coordination are one span.
                spans.sort_unstable();
                spans.dedup();
                spans
            })
            .collect()
    };
    let mut detected = detect();
    for _ in 1..passes {
        detected = detect();
    }
    let documents_per_second = (documents.len() * passes.max(1)) as f64 / started.elapsed().as_secs_f64().max(1e-9);

    let (mut strict, mut overlap) = (Counts::default(), Counts::default());
    let (mut missed, mut boundary, mut spurious) = (Vec::new(), Vec::new(), Vec::new());
    for (document, predicted) in documents.iter().zip(&detected) {
        let gold: Vec<(usize, usize)> = document.mentions.iter().map(|m| (m.start, m.end)).collect();
        score_spans(predicted, &gold, true, &mut strict);
        score_spans(predicted, &gold, false, &mut overlap);
        let chars: Vec<char> = document.text.chars().collect();
        let text = |(start, end): (usize, usize)| chars[start..end].iter().collect::<String>();
        for &g in &gold {
            let mut overlapping: Vec<(usize, usize)> = predicted.iter().copied().filter(|&p| overlaps(p, g)).collect();
            overlapping.dedup();
            if overlapping.is_empty() {
                missed.push((document.id.clone(), text(g)));
            } else if !overlapping.contains(&g) {
                let cause = boundary_cause(g, &overlapping);
                let found: Vec<String> = overlapping.into_iter().map(text).collect();
                boundary.push((document.id.clone(), text(g), found.join("; "), cause));
            }
        }
        for &p in predicted.iter().filter(|&&p| !gold.iter().any(|&g| overlaps(p, g))) {
            spurious.push((document.id.clone(), text(p)));
        }
    }
    Ok(DetectionRun {
        strict,
        overlap,
        documents_per_second,
        dictionary_build_seconds,
        dictionary_bytes: dictionary.memory_usage(),
        missed,
        boundary,
        spurious,
    })
}

/// A span scorer trained on the corpus' annotated spans: every candidate span the dictionary
/// proposes (see `belink_core::mentions::scorer`) is an example, a mention when a gold mention
/// has exactly its span. Returns the scorer and the counts of (candidates, mentions among them,
/// gold mentions no candidate has).
pub fn train_scorer(
    names: Vec<DictionaryName>,
    documents: &[Document],
    training: &Training,
) -> Result<(SpanScorer, [usize; 3]), String> {
    let dictionary = MentionDictionary::build(names)?;
    let mut examples = Vec::new();
    let mut unreachable = 0;
    for document in documents {
        let candidates = span_candidates(&document.text, &[&dictionary]);
        let gold: Vec<(usize, usize)> = document.mentions.iter().map(|m| (m.start, m.end)).collect();
        unreachable += gold.iter().filter(|&&g| !candidates.iter().any(|c| (c.start, c.end) == g)).count();
        examples.extend(
            candidates.into_iter().map(|c| Example { mention: gold.contains(&(c.start, c.end)), features: c.features }),
        );
    }
    let mentions = examples.iter().filter(|e| e.mention).count();
    let scorer = train(&examples, training, 0.5);
    Ok((scorer, [examples.len(), mentions, unreachable]))
}

/// What distant supervision trained on (see [`train_scorer_distant`]).
#[derive(Debug, Default)]
pub struct DistantCounts {
    /// Spans the whole dictionary detects in the texts: the silver mentions.
    pub silver_mentions: usize,
    /// Candidate spans over all folds, and the silver mentions among them.
    pub candidates: usize,
    pub positives: usize,
    /// Silver mentions of held-out concepts that a fold's candidates have: what teaches the
    /// scorer spans its dictionary does not name.
    pub held_out_found: usize,
    pub held_out_missed: usize,
}

/// The fold in which distant supervision holds `concept` out of the dictionary.
fn held_out_fold(concept: &str, seed: u64, folds: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (seed, concept).hash(&mut hasher);
    (hasher.finish() % folds as u64) as usize
}

/// A span scorer trained without annotations, from the ontology itself (distant supervision):
/// the silver mentions of each text are what the whole dictionary detects; in each of `folds`
/// rounds a share of the concepts is held out of the dictionary that proposes the candidate
/// spans, so that the scorer also learns what a mention looks like when the dictionary only
/// finds part of it, or a neighbour ("hypopigmentation" for "hypopigmentation of skin"). The
/// texts are the ontology's definitions and any unannotated text given.
pub fn train_scorer_distant(
    names: Vec<DictionaryName>,
    texts: &[String],
    folds: usize,
    seed: u64,
    training: &Training,
) -> Result<(SpanScorer, DistantCounts), String> {
    if folds < 2 {
        return Err("distant supervision needs at least 2 folds".into());
    }
    let fold_of = |concept: &str| held_out_fold(concept, seed, folds);
    let whole = MentionDictionary::build(names.clone())?;
    let mut counts = DistantCounts::default();
    // Each text's silver mentions, with the folds of the concepts each one names.
    type SilverMention = ((usize, usize), Vec<usize>);
    let silver: Vec<Vec<SilverMention>> = texts
        .iter()
        .map(|text| {
            let mut spans: Vec<SilverMention> = Vec::new();
            for mention in find_mentions(text, &[&whole]) {
                let folds: Vec<usize> = mention.matched_concepts.iter().map(|c| fold_of(c)).collect();
                match spans.iter_mut().find(|(span, _)| *span == (mention.start, mention.end)) {
                    Some((_, known)) => known.extend(folds),
                    None => spans.push(((mention.start, mention.end), folds)),
                }
            }
            spans
        })
        .collect();
    drop(whole);
    counts.silver_mentions = silver.iter().map(Vec::len).sum();
    let mut examples = Vec::new();
    for fold in 0..folds {
        let kept: Vec<DictionaryName> = names.iter().filter(|n| fold_of(&n.concept_id) != fold).cloned().collect();
        let dictionary = MentionDictionary::build(kept)?;
        for (text, silver) in texts.iter().zip(&silver) {
            let candidates = span_candidates(text, &[&dictionary]);
            for (span, concept_folds) in silver {
                if concept_folds.iter().all(|&f| f == fold) {
                    if candidates.iter().any(|c| (c.start, c.end) == *span) {
                        counts.held_out_found += 1;
                    } else {
                        counts.held_out_missed += 1;
                    }
                }
            }
            examples.extend(candidates.into_iter().map(|c| Example {
                mention: silver.iter().any(|(span, _)| *span == (c.start, c.end)),
                features: c.features,
            }));
        }
    }
    counts.candidates = examples.len();
    counts.positives = examples.iter().filter(|e| e.mention).count();
    Ok((train(&examples, training, 0.5), counts))
}

/// A span scorer file.
pub fn read_scorer(path: &str) -> Result<SpanScorer, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    SpanScorer::from_text(&text).map_err(|e| format!("{path}: {e}"))
}

/// A run's span figures as JSON (for manifests).
pub fn figures(run: &DetectionRun) -> serde_json::Value {
    serde_json::json!({
        "strict": { "precision": run.strict.precision(), "recall": run.strict.recall(), "f1": run.strict.f1() },
        "overlap": { "precision": run.overlap.precision(), "recall": run.overlap.recall(), "f1": run.overlap.f1() },
        "missed": run.missed.len(),
        "other_span": run.boundary.len(),
        "false_positives": run.spurious.len(),
    })
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Span-only precision and recall counts; `strict` wants equal spans, otherwise overlap.
fn score_spans(predicted: &[(usize, usize)], gold: &[(usize, usize)], strict: bool, counts: &mut Counts) {
    let matches = |p: (usize, usize), g: (usize, usize)| if strict { p == g } else { overlaps(p, g) };
    counts.predicted += predicted.len();
    counts.gold += gold.len();
    counts.correct_predictions += predicted.iter().filter(|&&p| gold.iter().any(|&g| matches(p, g))).count();
    counts.found_gold += gold.iter().filter(|&&g| predicted.iter().any(|&p| matches(p, g))).count();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distant_supervision_learns_a_held_out_name_from_the_name_inside_it() {
        let name = |concept: &str, name: &str| DictionaryName {
            concept_id: concept.into(),
            name: name.into(),
            normalized: fold(name),
        };
        let names = vec![name("A", "hypopigmentation"), name("B", "hypopigmentation of skin")];
        // A seed that holds the two concepts out in different folds.
        let seed = (0..).find(|&s| held_out_fold("A", s, 2) != held_out_fold("B", s, 2)).unwrap();
        let text = "The girl had hypopigmentation of skin. Her brother had hypopigmentation of skin too.";
        let texts = vec![text.to_string(); 20];
        let (scorer, counts) = train_scorer_distant(names, &texts, 2, seed, &Training::default()).unwrap();
        assert_eq!(counts.silver_mentions, 40, "the whole dictionary finds the longer name");
        // With B held out, the fold's dictionary finds "hypopigmentation" and the span two words
        // wider is B's silver mention; with A held out, the silver mentions are B's, not held out.
        assert_eq!((counts.held_out_found, counts.held_out_missed), (40, 0));
        let a_only = MentionDictionary::build(vec![name("A", "hypopigmentation")]).unwrap();
        let candidates = span_candidates(text, &[&a_only]);
        let probability = |span: &str| {
            let start = text.find(span).unwrap();
            let candidate = candidates.iter().find(|c| (c.start, c.end) == (start, start + span.len())).unwrap();
            scorer.probability(&candidate.features)
        };
        assert!(probability("hypopigmentation of skin") > 0.5);
        assert!(probability("hypopigmentation") < 0.5);
    }

    #[test]
    fn spans_score_strictly_or_by_overlap() {
        let gold = [(0, 10), (20, 30), (40, 45)];
        let predicted = [(0, 10), (22, 30), (50, 55)];
        let (mut strict, mut overlap) = (Counts::default(), Counts::default());
        score_spans(&predicted, &gold, true, &mut strict);
        score_spans(&predicted, &gold, false, &mut overlap);
        assert_eq!((strict.correct_predictions, strict.found_gold), (1, 1));
        assert_eq!((overlap.correct_predictions, overlap.found_gold), (2, 2));
        assert_eq!((overlap.predicted, overlap.gold), (3, 3));
    }

    #[test]
    fn errors_are_classed_by_shape_and_by_how_spans_differ() {
        assert_eq!(boundary_cause((10, 20), &[(5, 20)]), "wider");
        assert_eq!(boundary_cause((10, 20), &[(12, 20), (10, 15)]), "narrower");
        assert_eq!(boundary_cause((10, 20), &[(5, 15)]), "crossing");
        assert_eq!(boundary_cause((10, 20), &[(5, 20), (12, 18)]), "crossing");
        assert_eq!(text_cause("RB1"), "capitals");
        assert_eq!(text_cause("tumours"), "one word");
        assert_eq!(text_cause("genetic disease"), "several words");
        let run = DetectionRun {
            strict: Counts::default(),
            overlap: Counts::default(),
            documents_per_second: 0.0,
            dictionary_build_seconds: 0.0,
            dictionary_bytes: 0,
            missed: vec![("d".into(), "DM".into()), ("d".into(), "short stature".into())],
            boundary: vec![("d".into(), "tumor".into(), "solid tumor".into(), "wider")],
            spurious: vec![("d".into(), "VHL".into())],
        };
        assert_eq!(run.cause_counts(), [1, 0, 1, 1, 0, 0, 1, 0, 0]);
    }
}
