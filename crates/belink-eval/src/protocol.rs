//! The two normalization protocols users compare linkers by.
//!
//! - **classic** (BioSyn, SapBERT): composite mentions ("breast and ovarian cancer", gold
//!   `D001943|D010051`) are split into one query per part ("breast cancer", "ovarian cancer");
//!   a prediction counts when it matches any of the mention's gold ids.
//! - **strict** (BELB): no splitting; the predicted concept must be exactly the gold concept,
//!   so a mention with several gold concepts can only be wrong for a one-concept predictor.
//!
//! In both, a concept's alternative ids count as the concept, and ids are compared without
//! the `MESH:`/`OMIM:` prefixes (see `ids`).

use belink_eval::corpus::GoldMention;

use belink_core::ids::canonical;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Classic,
    Strict,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Classic, Protocol::Strict];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Classic => "classic",
            Protocol::Strict => "strict",
        }
    }
}

/// One normalization query: the text to link and the gold ids it is judged against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub text: String,
    /// Canonical gold ids; the prediction must match one (classic) or be the only one (strict).
    pub gold: Vec<String>,
    /// True when this query is one part of a split composite mention.
    pub from_composite: bool,
}

/// The queries a gold mention yields under `protocol`. NIL mentions yield none.
pub fn queries(mention: &GoldMention, protocol: Protocol) -> Vec<Query> {
    let gold: Vec<String> = mention.concept_ids().iter().map(|id| canonical(id)).collect();
    if gold.is_empty() {
        return Vec::new();
    }
    let whole = Query { text: mention.text.clone(), gold: gold.clone(), from_composite: false };
    if protocol == Protocol::Strict {
        return vec![whole];
    }
    let composite_ids = mention.concept_field.split('|').filter(|s| !s.trim().is_empty()).count();
    if composite_ids < 2 {
        return vec![whole];
    }
    match split_composite(&mention.text, composite_ids) {
        Some(parts) => parts.into_iter().map(|text| Query { text, gold: gold.clone(), from_composite: true }).collect(),
        None => vec![whole],
    }
}

/// Whether `predicted` (a concept id with its alternative ids) is right for `query`.
pub fn is_correct(query: &Query, protocol: Protocol, predicted: &[String]) -> bool {
    let predicted: Vec<String> = predicted.iter().map(|id| canonical(id)).collect();
    match protocol {
        Protocol::Classic => query.gold.iter().any(|gold| predicted.contains(gold)),
        Protocol::Strict => query.gold.len() == 1 && predicted.contains(&query.gold[0]),
    }
}

/// Splits a coordinated mention into `expected` parts, sharing the head or the modifier:
/// "breast and ovarian cancer" → "breast cancer", "ovarian cancer";
/// "deficiency of factor VII and X" → "deficiency of factor VII", "deficiency of factor X".
/// `None` when the text does not coordinate exactly `expected` parts.
pub fn split_composite(text: &str, expected: usize) -> Option<Vec<String>> {
    let parts = coordinated_parts(text);
    if parts.len() != expected || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let words: Vec<Vec<&str>> = parts.iter().map(|p| p.split_whitespace().collect()).collect();
    let last = words.last()?;
    let first = &words[0];
    let shorter_before_last = words[..words.len() - 1].iter().all(|w| w.len() < last.len());
    let shorter_after_first = words[1..].iter().all(|w| w.len() < first.len());
    let joined = |w: &[&str]| w.join(" ");
    let split = if shorter_before_last && last.len() >= 2 {
        // Shared head at the end: the last part's words after its own modifier.
        let head = &last[1..];
        words[..words.len() - 1]
            .iter()
            .map(|w| format!("{} {}", joined(w), joined(head)))
            .chain(std::iter::once(joined(last)))
            .collect()
    } else if shorter_after_first && first.len() >= 2 {
        // Shared modifier at the start: the first part's words before its last one.
        let modifier = &first[..first.len() - 1];
        std::iter::once(joined(first))
            .chain(words[1..].iter().map(|w| format!("{} {}", joined(modifier), joined(w))))
            .collect()
    } else {
        parts.iter().map(|p| p.to_string()).collect()
    };
    Some(split)
}

/// The coordinated parts of "A, B, and C" / "A and B" / "A or B" / "A/B".
fn coordinated_parts(text: &str) -> Vec<String> {
    let mut normalized = format!(" {} ", text.replace('/', " , "));
    for conjunction in [" and/or ", " and ", " or ", " & "] {
        normalized = normalized.replace(conjunction, " , ");
    }
    normalized
        .split(',')
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mention(text: &str, field: &str) -> GoldMention {
        GoldMention {
            start: 0,
            end: text.chars().count(),
            text: text.into(),
            entity_type: None,
            concept_field: field.into(),
        }
    }

    #[test]
    fn shared_head_and_shared_modifier() {
        assert_eq!(split_composite("breast and ovarian cancer", 2).unwrap(), ["breast cancer", "ovarian cancer"]);
        assert_eq!(
            split_composite("colorectal, endometrial, and ovarian cancers", 3).unwrap(),
            ["colorectal cancers", "endometrial cancers", "ovarian cancers"]
        );
        assert_eq!(
            split_composite("deficiency of factor VII and X", 2).unwrap(),
            ["deficiency of factor VII", "deficiency of factor X"]
        );
        assert_eq!(split_composite("ataxia and deafness", 2).unwrap(), ["ataxia", "deafness"]);
        assert_eq!(split_composite("breast and ovarian cancer", 3), None, "part count must match the ids");
    }

    #[test]
    fn classic_splits_composites_strict_does_not() {
        let composite = mention("breast and ovarian cancer", "D001943|D010051");
        let classic = queries(&composite, Protocol::Classic);
        assert_eq!(classic.len(), 2);
        assert!(classic.iter().all(|q| q.from_composite && q.gold == ["D001943", "D010051"]));
        let strict = queries(&composite, Protocol::Strict);
        assert_eq!(strict.len(), 1);
        assert_eq!(strict[0].text, "breast and ovarian cancer");
        // A strict query with two gold concepts cannot be right for a one-concept prediction.
        assert!(!is_correct(&strict[0], Protocol::Strict, &["D001943".into()]));
        assert!(is_correct(&classic[0], Protocol::Classic, &["D001943".into()]));
    }

    #[test]
    fn combined_concepts_are_not_split() {
        let combined = mention("hereditary nonpolyposis colorectal cancer type 2", "D003123+D012345");
        assert_eq!(queries(&combined, Protocol::Classic).len(), 1);
    }

    #[test]
    fn alternative_ids_and_prefixes_count_as_the_concept() {
        let query = &queries(&mention("familial adenomatous polyposis", "OMIM:175100"), Protocol::Strict)[0];
        assert!(is_correct(query, Protocol::Strict, &["D011125".into(), "175100".into()]));
        assert!(is_correct(query, Protocol::Classic, &["MESH:D011125".into(), "OMIM:175100".into()]));
        assert!(!is_correct(query, Protocol::Strict, &["D011125".into()]));
    }

    #[test]
    fn nil_mentions_make_no_queries() {
        assert!(queries(&mention("something", "-1"), Protocol::Classic).is_empty());
    }
}
