//! From raw text to the mentions to link: dictionary detection in every ontology asked for,
//! abbreviations resolved to their long forms, overlaps settled. Retrieval and the choice of
//! the concept come next (see [`crate::link`]).

pub mod abbreviations;
pub mod dictionary;
mod variants;

use std::collections::HashMap;

use crate::fold::tokenize;
use crate::interrupts::Ticker;
use crate::mentions::abbreviations::find_abbreviations;
use crate::mentions::dictionary::{resolve_overlaps, Detection, MentionDictionary};

/// Whether `chars[start..end]` is not part of a longer run of letters and digits.
pub(crate) fn whole_token(chars: &[char], start: usize, end: usize) -> bool {
    let outside = |i: Option<usize>| i.and_then(|i| chars.get(i)).is_none_or(|c| !c.is_alphanumeric());
    outside(start.checked_sub(1)) && outside(Some(end))
}

/// A mention found in a document, ready for candidate retrieval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// Character span in the document, end exclusive.
    pub start: usize,
    pub end: usize,
    /// The text as written.
    pub text: String,
    /// What retrieval searches for: the text, or the long form of an abbreviation.
    pub lookup: String,
    /// Index of the dictionary (ontology) that detected it.
    pub dictionary: usize,
    /// Concept ids whose names matched exactly.
    pub matched_concepts: Vec<String>,
    /// The long form, when the mention is an abbreviation defined in the document.
    pub abbreviation_of: Option<String>,
}

/// The mentions of `text` found by `dictionaries` (one per ontology), left to right.
pub fn find_mentions(text: &str, dictionaries: &[&MentionDictionary]) -> Vec<Mention> {
    let chars: Vec<char> = text.chars().collect();
    let span_text = |start: usize, end: usize| -> String { chars[start..end].iter().collect() };
    let tokens = tokenize(text);

    // (detection, dictionary, long form)
    let mut found: Vec<(Detection, usize, Option<String>)> = Vec::new();
    for (d, dictionary) in dictionaries.iter().enumerate() {
        found.extend(dictionary.find_all(&chars, &tokens).into_iter().map(|m| (m, d, None)));
    }

    // An abbreviation whose long form is a detected mention: every use of its short form is
    // that mention again (looked up by the long form), whatever the short form alone matches.
    // Detections are indexed by span and by end, so that this stays linear in the text.
    let abbreviations = find_abbreviations(text);
    let mut alive = vec![true; found.len()];
    let mut by_span: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    let mut by_end: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut ticker = Ticker::default();
    if !abbreviations.is_empty() {
        for (i, (m, ..)) in found.iter().enumerate() {
            ticker.step();
            by_span.entry((m.start, m.end)).or_default().push(i);
            by_end.entry(m.end).or_default().push(i);
        }
    }
    for abbreviation in abbreviations {
        let (long_start, long_end) = abbreviation.long_span;
        let defining = by_end
            .get(&long_end)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| alive[i] && found[i].0.start >= long_start)
            .min_by_key(|&i| found[i].0.start);
        let Some(defining) = defining else { continue };
        let (definition, dictionary) = (found[defining].0.clone(), found[defining].1);
        let lookup = definition.lookup.clone().unwrap_or_else(|| span_text(definition.start, definition.end));
        for use_span in &abbreviation.uses {
            for &i in by_span.get(use_span).into_iter().flatten() {
                alive[i] = false;
            }
        }
        for &(start, end) in &abbreviation.uses {
            ticker.step();
            let i = found.len();
            found.push((
                Detection {
                    start,
                    end,
                    names: definition.names.clone(),
                    lookup: Some(lookup.clone()),
                    coordinated: false,
                },
                dictionary,
                Some(abbreviation.long_form.clone()),
            ));
            alive.push(true);
            by_span.entry((start, end)).or_default().push(i);
            by_end.entry(end).or_default().push(i);
        }
    }

    // Settle overlaps across dictionaries, remembering where each kept detection came from.
    let indexed: Vec<Detection> = found
        .iter()
        .enumerate()
        .filter(|&(i, _)| alive[i])
        .map(|(i, (m, ..))| Detection {
            start: m.start,
            end: m.end,
            names: vec![i],
            lookup: m.lookup.clone(),
            coordinated: m.coordinated,
        })
        .collect();
    resolve_overlaps(indexed)
        .into_iter()
        .map(|kept| {
            ticker.step();
            let (detection, dictionary, long_form) = &found[kept.names[0]];
            let text = span_text(detection.start, detection.end);
            let mut matched: Vec<String> =
                detection.names.iter().map(|&n| dictionaries[*dictionary].name(n).concept_id.clone()).collect();
            matched.dedup();
            Mention {
                start: detection.start,
                end: detection.end,
                lookup: detection.lookup.clone().unwrap_or_else(|| text.clone()),
                text,
                dictionary: *dictionary,
                matched_concepts: matched,
                abbreviation_of: long_form.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::fold;
    use crate::mentions::dictionary::DictionaryName;

    fn dictionary(entries: &[(&str, &str)]) -> MentionDictionary {
        MentionDictionary::build(
            entries
                .iter()
                .map(|(id, name)| DictionaryName {
                    concept_id: id.to_string(),
                    name: name.to_string(),
                    normalized: fold(name),
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn abbreviations_take_the_long_forms_concept() {
        let medic = dictionary(&[
            ("D011125", "Familial adenomatous polyposis"),
            ("D003123", "Colorectal cancer"),
            ("OTHER", "FAP"), // an unrelated concept also named FAP
        ]);
        let text =
            "Patients with familial adenomatous polyposis (FAP) develop colorectal cancer. In FAP, screening helps.";
        let mentions = find_mentions(text, &[&medic]);
        let summary: Vec<(&str, &str, Option<&str>, Vec<String>)> = mentions
            .iter()
            .map(|m| (m.text.as_str(), m.lookup.as_str(), m.abbreviation_of.as_deref(), m.matched_concepts.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("familial adenomatous polyposis", "familial adenomatous polyposis", None, vec!["D011125".to_string()]),
                (
                    "FAP",
                    "familial adenomatous polyposis",
                    Some("familial adenomatous polyposis"),
                    vec!["D011125".to_string()]
                ),
                ("colorectal cancer", "colorectal cancer", None, vec!["D003123".to_string()]),
                (
                    "FAP",
                    "familial adenomatous polyposis",
                    Some("familial adenomatous polyposis"),
                    vec!["D011125".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn an_abbreviation_of_something_unknown_stays_unlinked() {
        let medic = dictionary(&[("D003123", "Colorectal cancer")]);
        let text = "The adenomatous polyposis coli (APC) gene and colorectal cancer; APC again.";
        let mentions = find_mentions(text, &[&medic]);
        assert_eq!(mentions.len(), 1);
        assert_eq!(mentions[0].text, "colorectal cancer");
    }

    #[test]
    fn several_ontologies_and_overlaps_between_them() {
        let hpo = dictionary(&[("HP:0000822", "Hypertension"), ("HP:0001250", "Seizure")]);
        let medic = dictionary(&[("D006976", "Pulmonary hypertension")]);
        let mentions = find_mentions("Pulmonary hypertension and seizure.", &[&hpo, &medic]);
        let found: Vec<(&str, usize)> = mentions.iter().map(|m| (m.text.as_str(), m.dictionary)).collect();
        assert_eq!(found, [("Pulmonary hypertension", 1), ("seizure", 0)]);
    }

    #[test]
    fn every_detection_stage_answers_a_cancel() {
        use crate::interrupts::testing::is_cancelled_in;
        use crate::interrupts::STEPS_PER_CHECK;
        // Adversarial shapes: one long sentence of parenthesised short forms, and of names.
        let brackets = "(XY) ".repeat(2 * STEPS_PER_CHECK as usize);
        let names = "hypertension (HT) and HT; ".repeat(STEPS_PER_CHECK as usize);
        let hpo = dictionary(&[("HP:0000822", "Hypertension")]);
        for text in [&brackets, &names] {
            let tokens = tokenize(text);
            assert!(is_cancelled_in(|| drop(tokenize(text))));
            assert!(is_cancelled_in(|| drop(find_abbreviations(text))));
            let chars: Vec<char> = text.chars().collect();
            assert!(is_cancelled_in(|| drop(hpo.find_all(&chars, &tokens))));
            assert!(is_cancelled_in(|| drop(find_mentions(text, &[&hpo]))));
        }
        // With nothing to cancel, the same work runs to its end.
        assert_eq!(find_mentions(&names, &[&hpo]).len(), 3 * STEPS_PER_CHECK as usize);
    }

    #[test]
    fn nothing_to_link() {
        let hpo = dictionary(&[("HP:0000822", "Hypertension")]);
        assert!(find_mentions("", &[&hpo]).is_empty());
        assert!(find_mentions("Nothing clinical here.", &[&hpo]).is_empty());
        assert!(find_mentions("Hypertension", &[]).is_empty());
    }
}
