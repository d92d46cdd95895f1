//! Malformed and extreme input through every parser and decoder, in `cargo test` (the deeper,
//! time-bounded search is `make fuzz`): deterministic mutations of real fixtures (bit flips,
//! truncations, duplicated and deleted spans, binary junk) must give results or errors,
//! never a panic; extreme texts must give correct results in bounded time.

use std::path::Path;

use belink_core::fold::{fold, tokenize};
use belink_core::mentions::abbreviations::find_abbreviations;
use belink_core::mentions::dictionary::{DictionaryName, MentionDictionary};
use belink_core::mentions::shared::DictionaryKey;
use belink_core::mentions::{find_mentions, Mention};
use belink_core::ontology::{load_bytes, Format, LoadOptions};
use belink_core::wire::{read_frame, Message};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)).unwrap()
}

fn mutate(random: &mut fastrand::Rng, input: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + random.usize(..4) {
        if data.is_empty() {
            data.push(random.u8(..));
            continue;
        }
        let at = random.usize(..data.len());
        match random.usize(..6) {
            0 => data[at] ^= 1 << random.usize(..8),
            1 => data.truncate(at),
            2 => {
                let end = (at + random.usize(..64)).min(data.len());
                let copy = data[at..end].to_vec();
                let to = random.usize(..data.len());
                data.splice(to..to, copy);
            }
            3 => {
                let end = (at + random.usize(..64)).min(data.len());
                data.drain(at..end);
            }
            4 => data[at] = [b'\t', b'|', b'"', b'\\', b'\n', b'[', b']', 0, 0xff][random.usize(..9)],
            _ => {
                let junk: Vec<u8> = (0..random.usize(..16)).map(|_| random.u8(..)).collect();
                data.splice(at..at, junk);
            }
        }
    }
    data
}

const FIXTURES: [&str; 8] = [
    "hp_excerpt.obo",
    "doid_excerpt.obo",
    "CTD_diseases_excerpt.tsv",
    "medic_excerpt.txt",
    "MRCONSO.RRF",
    "user_dictionary.tsv",
    "ncbi_dev_excerpt.txt",
    "gscplus_dev_excerpt.tsv",
];

#[test]
fn mutated_files_never_panic_any_parser() {
    let mut random = fastrand::Rng::with_seed(0x5eed);
    let formats =
        [None, Some(Format::Obo), Some(Format::Ctd), Some(Format::Biosyn), Some(Format::Rrf), Some(Format::Tsv)];
    for name in FIXTURES {
        let original = fixture(name);
        for _ in 0..300 {
            let data = mutate(&mut random, &original);
            for format in formats {
                let _ = load_bytes(&data, &LoadOptions { format, ..LoadOptions::default() });
            }
            if let Ok(text) = std::str::from_utf8(&data) {
                let _ = fold(text);
                let _ = find_abbreviations(text);
            }
        }
    }
}

#[test]
fn mutated_frames_never_panic_the_decoder() {
    let mut random = fastrand::Rng::with_seed(42);
    let frames = [
        Message::EmbedRequest { model: String::new(), texts: vec!["colorectal adenoma".into(), "β".into()] }.encode(1),
        Message::EmbedReply { dim: 2, vectors: vec![0.5, 0.25, 1.0, -1.0] }.encode(2),
        Message::StatusReply { json: "{}".into() }.encode(3),
        Message::DetectRequest {
            keys: vec![DictionaryKey {
                ontology: "hpo".into(),
                generation: 3,
                roots: vec!["HP:1".into()],
                scorer: Some(2),
            }],
            scored: true,
            texts: vec!["She had seizures.".into()],
        }
        .encode(4),
        Message::DetectReply {
            mentions: vec![vec![Mention {
                start: 8,
                end: 16,
                text: "seizures".into(),
                lookup: "Seizure".into(),
                dictionary: 0,
                matched_concepts: vec!["HP:0001250".into()],
                abbreviation_of: None,
            }]],
        }
        .encode(5),
        Message::DictionaryLoadRequest {
            key: DictionaryKey { ontology: "hpo".into(), generation: 3, roots: vec![], scorer: None },
            offset: 0,
            last: true,
            names: vec![DictionaryName {
                concept_id: "HP:1".into(),
                name: "Seizure".into(),
                normalized: "seizure".into(),
            }],
        }
        .encode(6),
    ];
    for frame in frames {
        for _ in 0..2000 {
            let data = mutate(&mut random, &frame);
            let mut reader = &data[..];
            while read_frame(&mut reader).is_ok() {}
            if data.len() > 4 {
                let _ = Message::decode(&data[4..]);
            }
        }
    }
}

fn dictionary() -> MentionDictionary {
    let names = ["Familial adenomatous polyposis", "FAP", "Colorectal cancer", "β-thalassemia"]
        .iter()
        .enumerate()
        .map(|(i, n)| DictionaryName { concept_id: i.to_string(), name: n.to_string(), normalized: fold(n) })
        .collect();
    MentionDictionary::build(names).unwrap()
}

#[test]
fn a_million_mentions_in_one_text() {
    let text = "FAP ".repeat(1_000_000);
    let mentions = find_mentions(&text, &[&dictionary()]);
    assert_eq!(mentions.len(), 1_000_000);
    assert_eq!((mentions[999_999].start, mentions[999_999].end), (3_999_996, 3_999_999));
}

#[test]
fn repeated_junk_and_extreme_unicode() {
    let dictionary = dictionary();
    let cases = [
        "(".repeat(100_000),
        "((((FAP))))".repeat(10_000),
        "a (b (c (d (e".repeat(10_000),
        "\u{200B}\u{FEFF}\u{00AD}".repeat(50_000),
        "🧬".repeat(100_000),
        "e\u{0301}\u{0301}\u{0301}".repeat(50_000),
        "ﷺ".repeat(20_000), // expands to 18 characters under NFKD
        "Ⅻ⑳㍱".repeat(20_000),
        (0u32..0x3000).filter_map(char::from_u32).collect::<String>().repeat(20),
        "x".repeat(1_000_000),
    ];
    for text in &cases {
        let length = text.chars().count();
        let tokens = tokenize(text);
        assert!(tokens.iter().all(|t| t.start < t.end && t.end <= length));
        let normalized = fold(text);
        // Normalizing twice changes nothing (names and mentions meet in the same form).
        // Compared without assert_eq: the texts are megabytes long.
        assert!(
            fold(&normalized) == normalized,
            "fold is not idempotent on case {:?}",
            text.chars().take(20).collect::<String>()
        );
        for mention in find_mentions(text, &[&dictionary]) {
            assert!(mention.end <= length);
        }
        let _ = find_abbreviations(text);
    }
}

/// The worst shapes for abbreviation detection, at a size where quadratic work would take
/// minutes (make bench times them): one sentence of "(XY)" tokens, an abbreviation defined and
/// used throughout one sentence, and thousands of distinct short forms.
#[test]
fn adversarial_abbreviation_shapes_stay_linear() {
    let dictionary = dictionary();
    let no_definitions = "(XY) ".repeat(200_000);
    assert!(find_abbreviations(&no_definitions).is_empty());

    let defined_everywhere = format!("familial adenomatous polyposis (FAP) {}", "and FAP (FAP) ".repeat(100_000));
    let found = find_abbreviations(&defined_everywhere);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].uses.len(), 200_001);
    let mentions = find_mentions(&defined_everywhere, &[&dictionary]);
    assert_eq!(mentions.len(), 200_002, "the long form and every use");
    assert!(mentions[1..].iter().all(|m| m.abbreviation_of.as_deref() == Some("familial adenomatous polyposis")));

    let letters = |i: usize| -> String {
        [(i / 676) % 26, (i / 26) % 26, i % 26].iter().map(|&c| (b'a' + c as u8) as char).collect()
    };
    let distinct: String = (0..17_576)
        .map(|i| {
            let short = letters(i).to_uppercase();
            let long: Vec<String> = short.chars().map(|c| format!("{c}{}", letters(i + 1))).collect();
            format!("{} ({short}) ", long.join(" "))
        })
        .collect();
    let found = find_abbreviations(&distinct);
    assert_eq!(found.len(), 17_576);
    assert!(found.iter().all(|a| a.uses.len() == 1));
}
