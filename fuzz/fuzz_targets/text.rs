//! Normalization, abbreviation detection, mention detection and prompt building on
//! arbitrary text.
#![no_main]
use std::sync::OnceLock;

use belink_core::mentions::abbreviations::find_abbreviations;
use belink_core::mentions::dictionary::{MentionDictionary, DictionaryName};
use belink_core::mentions::scorer::{train, SpanScorer};
use belink_core::mentions::{detect_mentions, find_mentions, find_mentions_scored, Nesting};
use belink_core::fold::{fold, tokenize};
use belink_core::decision::context::context_window;
use belink_core::decision::prompt::{item_suffix, AnswerForm, ChatTemplate, PromptCandidate, RerankItem};
use libfuzzer_sys::fuzz_target;

fn dictionary() -> &'static MentionDictionary {
    static DICTIONARY: OnceLock<MentionDictionary> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut names: Vec<String> = ["Colorectal cancer", "FAP", "ALL", "β-thalassemia", "Crohn's disease", "a", "1 2 3", "Calcification of the falx cerebri"]
            .iter()
            .map(|n| n.to_string())
            .collect();
        // Enough "Familial X", "Severe X" and "Deficiency of X" names for the lexical variants'
        // modifiers, qualifiers and reordering (their words also match in any order); two names sharing a head for coordination.
        // "Hereditary X" and "X syndrome" make "hereditary" a modifier and "syndrome" an
        // ending (a coordination inside a name); "Renal X", named apart, a modifier that
        // specifies the concept.
        for base in ["Ataxia", "Tumor", "Nevus", "Metastasis", "Fistula"] {
            names.extend([
                base.to_string(),
                format!("Familial {base}"),
                format!("Severe {base}"),
                format!("Deficiency of {base}"),
                format!("Hereditary {base}"),
                format!("{base}, hereditary"),
                format!("{base} syndrome"),
                format!("Renal {base}"),
            ]);
        }
        // A coordination that is also a name; a short form whose long form is spelt in another
        // order ("myotonic dystrophy (DM)"); names read past a bracketed short form ("von
        // Hippel-Lindau (VHL) disease"); OMIM's included titles, one word and several.
        names.extend(
            [
                "Severe",
                "Breast cancer",
                "Ovarian cancer",
                "Prostate cancer",
                "Breast and ovarian cancer",
                "Hereditary breast and prostate cancer syndrome",
                "SJS",
                "Myotonic dystrophy",
                "DM",
                "von Hippel-Lindau disease",
                "Glucose-6-phosphate dehydrogenase deficiency",
                "ANALBUMINEMIA, INCLUDED",
                "MOTOR DELAY, INCLUDED",
            ]
                .map(String::from),
        );
        let names = names
            .iter()
            .enumerate()
            .map(|(i, n)| DictionaryName { concept_id: i.to_string(), name: n.clone(), normalized: fold(n) })
            .collect();
        MentionDictionary::build(names).unwrap()
    })
}

/// An untrained scorer whose threshold keeps every candidate: the most spans to settle.
fn keep_all() -> &'static SpanScorer {
    static SCORER: OnceLock<SpanScorer> = OnceLock::new();
    SCORER.get_or_init(|| train(&[], &Default::default(), 0.0))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let normalized = fold(text);
    assert_eq!(fold(&normalized), normalized, "normalization is idempotent");
    let length = text.chars().count();
    for token in tokenize(text) {
        assert!(token.start < token.end && token.end <= length);
    }
    for abbreviation in find_abbreviations(text) {
        assert!(abbreviation.uses.iter().all(|&(s, e)| s < e && e <= length));
    }
    let mentions = find_mentions(text, &[dictionary()]);
    for (i, mention) in mentions.iter().enumerate() {
        assert!(mention.start < mention.end && mention.end <= length);
        assert!(!mention.lookup.is_empty() && !mention.matched_concepts.is_empty());
        // Left to right, without overlaps (the conjuncts of a coordination share one span).
        if let Some(next) = mentions.get(i + 1) {
            let same_span = (next.start, next.end) == (mention.start, mention.end);
            assert!(next.start >= mention.end || same_span, "overlapping mentions");
        }
    }
    let scored = find_mentions_scored(text, &[dictionary()], &[Some(keep_all())]);
    for (i, mention) in scored.iter().enumerate() {
        assert!(mention.start < mention.end && mention.end <= length);
        assert!(!mention.lookup.is_empty());
        if let Some(next) = scored.get(i + 1) {
            let same_span = (next.start, next.end) == (mention.start, mention.end);
            assert!(next.start >= mention.end || same_span, "overlapping scored mentions");
        }
    }
    // With the mentions inside them: every outermost mention, then the inner ones inside one.
    let nested = detect_mentions(text, &[dictionary()], None, Nesting::Inner);
    assert!(mentions.iter().all(|m| nested.contains(m)), "an outermost mention is missing");
    for mention in nested.iter().filter(|m| !mentions.contains(m)) {
        assert!(mentions.iter().any(|o| o.start <= mention.start && mention.end <= o.end), "an inner mention outside");
    }
    assert!(nested.windows(2).all(|w| w[0].start <= w[1].start), "nested mentions out of order");
    let half = length / 2;
    let context = context_window(text, half, length, 50);
    let item = RerankItem {
        mention: text.chars().take(20).collect(),
        context: Some(context),
        candidates: vec![PromptCandidate { name: text.to_string(), synonyms: vec![text.to_string()], definition: Some(text.to_string()) }],
    };
    for form in [AnswerForm::Letter, AnswerForm::Name] {
        let _ = item_suffix(&item, ChatTemplate::ChatMl, form);
    }
});
