//! Normalization, abbreviation detection, mention detection and prompt building on
//! arbitrary text.
#![no_main]
use std::sync::OnceLock;

use belink_core::abbreviation::find_abbreviations;
use belink_core::detect::{Dictionary, DictionaryName};
use belink_core::linking::mentions_to_link;
use belink_core::normalize::{normalize, tokenize};
use belink_core::prompt::{context_window, item_suffix, ChatTemplate, PromptCandidate, RerankItem};
use libfuzzer_sys::fuzz_target;

fn dictionary() -> &'static Dictionary {
    static DICTIONARY: OnceLock<Dictionary> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let names = ["Colorectal cancer", "FAP", "ALL", "β-thalassemia", "Crohn's disease", "a", "1 2 3"]
            .iter()
            .enumerate()
            .map(|(i, n)| DictionaryName { concept_id: i.to_string(), name: n.to_string(), normalized: normalize(n) })
            .collect();
        Dictionary::build(names).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let normalized = normalize(text);
    assert_eq!(normalize(&normalized), normalized, "normalization is idempotent");
    let length = text.chars().count();
    for token in tokenize(text) {
        assert!(token.start < token.end && token.end <= length);
    }
    for abbreviation in find_abbreviations(text) {
        assert!(abbreviation.uses.iter().all(|&(s, e)| s < e && e <= length));
    }
    for mention in mentions_to_link(text, &[dictionary()]) {
        assert!(mention.start < mention.end && mention.end <= length);
    }
    let half = length / 2;
    let context = context_window(text, half, length, 50);
    let item = RerankItem {
        mention: text.chars().take(20).collect(),
        context: Some(context),
        candidates: vec![PromptCandidate { name: text.to_string(), synonyms: vec![text.to_string()], definition: Some(text.to_string()) }],
    };
    let _ = item_suffix(&item, ChatTemplate::ChatMl);
});
