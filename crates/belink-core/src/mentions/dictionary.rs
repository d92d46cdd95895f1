//! Mention detection: dictionary matching of normalized ontology names in normalized text.
//!
//! Names and text go through the same normalization ([`crate::fold`]), so a name matches
//! whatever its spelling variants in the text. Matching is Aho-Corasick over the normalized
//! tokens joined by spaces, on token boundaries only, keeping the leftmost-longest match where
//! matches overlap. Filters keep out names that are too short or are common words, and short
//! acronyms (`FAP`, `DM`, `ALL`) match only when written in capitals in the text.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::fold::{tokenize, Token};
use crate::interrupts::Ticker;

/// A name the dictionary can match, as stored in `belink.names`.
#[derive(Debug, Clone)]
pub struct DictionaryName {
    pub concept_id: String,
    pub name: String,
    pub normalized: String,
}

/// Common English words that some ontologies carry as names or synonyms ("All", "Can", "Was").
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "him",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "just",
    "may",
    "me",
    "might",
    "more",
    "most",
    "must",
    "my",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "our",
    "out",
    "over",
    "own",
    "per",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "two",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "type",
    "patient",
    "patients",
    "case",
    "cases",
    "disease",
    "diseases",
    "syndrome",
    "disorder",
    "disorders",
    "normal",
    "other",
    "unknown",
    "finding",
    "findings",
    "sign",
    "signs",
    "symptom",
    "symptoms",
];

/// Names shorter than this (normalized, in characters) are left out unless they are
/// acronyms written in capitals.
const MIN_NAME_CHARS: usize = 3;
/// Acronyms up to this length match only when the text writes them in capitals too.
const MAX_ACRONYM_CHARS: usize = 6;

/// One pattern of the automaton: a distinct normalized name and the names behind it.
struct Pattern {
    names: Vec<usize>,
    /// Match only spans written in capitals (short acronyms).
    capitals_only: bool,
}

/// A compiled dictionary for one ontology.
pub struct MentionDictionary {
    automaton: AhoCorasick,
    patterns: Vec<Pattern>,
    names: Vec<DictionaryName>,
}

/// A detected mention: the character span in the original text and the dictionary names it
/// matched (several when concepts share the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub start: usize,
    pub end: usize,
    /// Indices into [`MentionDictionary::name`].
    pub names: Vec<usize>,
}

impl MentionDictionary {
    pub fn build(names: Vec<DictionaryName>) -> Result<MentionDictionary, String> {
        let mut by_form: HashMap<String, usize> = HashMap::new();
        let mut forms: Vec<String> = Vec::new();
        let mut patterns: Vec<Pattern> = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let Some(capitals_only) = admission(name) else { continue };
            let form = name.normalized.clone();
            let slot = *by_form.entry(form.clone()).or_insert_with(|| {
                forms.push(format!(" {form} "));
                patterns.push(Pattern { names: Vec::new(), capitals_only });
                patterns.len() - 1
            });
            let pattern = &mut patterns[slot];
            pattern.names.push(index);
            // A form that is also a plain (non-acronym) name matches in any case.
            pattern.capitals_only &= capitals_only;
        }
        let automaton = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .match_kind(MatchKind::Standard)
            .build(&forms)
            .map_err(|e| format!("building the mention dictionary: {e}"))?;
        Ok(MentionDictionary { automaton, patterns, names })
    }

    pub fn name(&self, index: usize) -> &DictionaryName {
        &self.names[index]
    }

    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    /// Bytes of heap the dictionary holds: the automaton, its patterns and the names.
    pub fn memory_usage(&self) -> usize {
        let patterns: usize = self
            .patterns
            .iter()
            .map(|p| std::mem::size_of::<Pattern>() + p.names.capacity() * std::mem::size_of::<usize>())
            .sum();
        let names: usize = self
            .names
            .iter()
            .map(|n| {
                std::mem::size_of::<DictionaryName>()
                    + n.concept_id.capacity()
                    + n.name.capacity()
                    + n.normalized.capacity()
            })
            .sum();
        self.automaton.memory_usage() + patterns + names
    }

    /// Every match on token boundaries (overlaps included), in the text's tokens.
    pub fn find_all(&self, text: &str, tokens: &[Token]) -> Vec<Detection> {
        // " tok1 tok2 ... " and where each token starts in it (ascending), so patterns
        // " name " can only match whole tokens.
        let mut haystack = String::with_capacity(text.len() + 2);
        let mut token_starts: Vec<usize> = Vec::with_capacity(tokens.len());
        haystack.push(' ');
        let mut ticker = Ticker::default();
        for token in tokens {
            ticker.step();
            token_starts.push(haystack.len());
            haystack.push_str(&token.text);
            haystack.push(' ');
        }
        // The text as characters, for the capitals rule only (short acronyms are rare).
        let mut chars: Option<Vec<char>> = None;
        let mut found = Vec::new();
        for m in self.automaton.find_overlapping_iter(&haystack) {
            ticker.step();
            let pattern = &self.patterns[m.pattern().as_usize()];
            let Ok(first) = token_starts.binary_search(&(m.start() + 1)) else { continue };
            // The match ends with the space before the next token, or at the end.
            let last = token_starts.binary_search(&m.end()).map_or(tokens.len() - 1, |next| next - 1);
            let (start, end) = (tokens[first].start, tokens[last].end);
            if pattern.capitals_only {
                let chars = chars.get_or_insert_with(|| text.chars().collect());
                if !written_in_capitals(&chars[start..end]) {
                    continue;
                }
            }
            found.push(Detection { start, end, names: pattern.names.clone() });
        }
        found
    }

    /// Non-overlapping mentions: leftmost first, the longest where several start together.
    pub fn detect(&self, text: &str) -> Vec<Detection> {
        let tokens = tokenize(text);
        resolve_overlaps(self.find_all(text, &tokens))
    }
}

/// Keeps, scanning left to right, the longest detection at each start that does not overlap
/// one already kept.
pub fn resolve_overlaps(mut detections: Vec<Detection>) -> Vec<Detection> {
    detections.sort_by(|a, b| a.start.cmp(&b.start).then((b.end - b.start).cmp(&(a.end - a.start))));
    let mut kept: Vec<Detection> = Vec::new();
    let mut ticker = Ticker::default();
    for detection in detections {
        ticker.step();
        if kept.last().is_none_or(|last| detection.start >= last.end) {
            kept.push(detection);
        }
    }
    kept
}

/// Whether a name goes into the dictionary, and if so whether it must be written in capitals.
fn admission(name: &DictionaryName) -> Option<bool> {
    let compact: String = name.normalized.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() || compact.chars().all(|c| c.is_numeric()) {
        return None;
    }
    let acronym = is_acronym(&name.name);
    if acronym && compact.chars().count() <= MAX_ACRONYM_CHARS {
        // Capitals required: "ALL" (the leukemia) is not "all".
        return Some(true);
    }
    if compact.chars().count() < MIN_NAME_CHARS || STOP_WORDS.contains(&name.normalized.as_str()) {
        return None;
    }
    Some(false)
}

/// A name written mostly in capitals, like an acronym: "FAP", "DM1", "G6PD", "A-T".
fn is_acronym(name: &str) -> bool {
    let letters: Vec<char> = name.chars().filter(|c| c.is_alphabetic()).collect();
    !letters.is_empty() && letters.iter().all(|c| c.is_uppercase()) && !name.contains(' ')
}

fn written_in_capitals(span: &[char]) -> bool {
    span.iter().filter(|c| c.is_alphabetic()).all(|c| c.is_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::fold;

    fn dictionary(entries: &[(&str, &str)]) -> MentionDictionary {
        let names = entries
            .iter()
            .map(|(id, name)| DictionaryName {
                concept_id: id.to_string(),
                name: name.to_string(),
                normalized: fold(name),
            })
            .collect();
        MentionDictionary::build(names).unwrap()
    }

    fn mentions(dictionary: &MentionDictionary, text: &str) -> Vec<(String, Vec<String>)> {
        let chars: Vec<char> = text.chars().collect();
        dictionary
            .detect(text)
            .into_iter()
            .map(|d| {
                let mut ids: Vec<String> = d.names.iter().map(|&n| dictionary.name(n).concept_id.clone()).collect();
                ids.dedup();
                (chars[d.start..d.end].iter().collect(), ids)
            })
            .collect()
    }

    fn medic() -> MentionDictionary {
        dictionary(&[
            ("D003123", "Colorectal Neoplasms"),
            ("D003123", "Colorectal Cancer"),
            ("D011125", "Adenomatous Polyposis Coli"),
            ("D011125", "Familial adenomatous polyposis"),
            ("D011125", "FAP"),
            ("D000236", "Adenoma"),
            ("D000236", "Adenomas"),
            ("D001943", "Breast Cancer"),
            ("D009369", "Cancer"),
            ("D054198", "ALL"),
            ("D009223", "DM"),
            ("D009223", "Myotonic dystrophy"),
            ("D006973", "Hypertension"),
            ("X", "All"),
            ("Y", "Was"),
            ("Z", "ab"),
        ])
    }

    #[test]
    fn leftmost_longest_on_token_boundaries() {
        let found = mentions(&medic(), "Patients with familial adenomatous polyposis develop colorectal cancer.");
        assert_eq!(
            found,
            [
                ("familial adenomatous polyposis".to_string(), vec!["D011125".to_string()]),
                ("colorectal cancer".to_string(), vec!["D003123".to_string()]),
            ],
            "the longer 'colorectal cancer' wins over 'cancer'"
        );
        // Inside a word is not a match.
        assert!(mentions(&medic(), "Hypertensions and prehypertension").is_empty());
    }

    #[test]
    fn normalization_makes_variants_match() {
        let found = mentions(&medic(), "COLORECTAL-CANCER, breast  cancer and Adenomas");
        let texts: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(texts, ["COLORECTAL-CANCER", "breast  cancer", "Adenomas"]);
    }

    #[test]
    fn acronyms_need_capitals_and_short_or_common_words_are_ignored() {
        let found = mentions(&medic(), "All patients with ALL or FAP, as was shown; fap and dm are lowercase. DM too.");
        let texts: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(texts, ["ALL", "FAP", "DM"]);
    }

    #[test]
    fn offsets_are_characters_in_multibyte_text() {
        let text = "Ménière’s patients — with hypertension — and β-cell colorectal cancer";
        let found = medic().detect(text);
        let chars: Vec<char> = text.chars().collect();
        let spans: Vec<String> = found.iter().map(|d| chars[d.start..d.end].iter().collect()).collect();
        assert_eq!(spans, ["hypertension", "colorectal cancer"]);
    }

    #[test]
    fn empty_text_and_text_without_entities() {
        assert!(medic().detect("").is_empty());
        assert!(medic().detect("The weather was fine and nothing happened.").is_empty());
    }

    #[test]
    fn a_name_shared_by_two_concepts_keeps_both() {
        let dictionary = dictionary(&[("A", "Cold"), ("B", "cold")]);
        let found = mentions(&dictionary, "a common cold");
        assert_eq!(found[0].1, ["A", "B"]);
    }

    #[test]
    fn a_megabyte_of_text() {
        let paragraph = "Familial adenomatous polyposis (FAP) leads to colorectal cancer in most patients. ";
        let text = paragraph.repeat(1_000_000 / paragraph.len() + 1);
        assert!(text.len() > 1_000_000);
        let found = medic().detect(&text);
        let repeats = text.len() / paragraph.len();
        assert_eq!(found.len(), repeats * 3, "FAP, the long form and colorectal cancer in every paragraph");
    }

    #[test]
    fn overlaps_resolve_leftmost_then_longest() {
        let d = |start, end| Detection { start, end, names: vec![] };
        let kept = resolve_overlaps(vec![d(5, 9), d(0, 4), d(0, 7), d(8, 12), d(12, 14)]);
        assert_eq!(kept.iter().map(|d| (d.start, d.end)).collect::<Vec<_>>(), [(0, 7), (8, 12), (12, 14)]);
    }
}
