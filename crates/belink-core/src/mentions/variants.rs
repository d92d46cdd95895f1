//! Lexical variants: how a mention may differ from the ontology's name and still be that name.
//!
//! Every rule is derived from the loaded ontology's own names, so it holds for any ontology
//! and invents no words:
//! - **Plurals** fold to their singular (`tumors`, `abnormalities`, `nevi`, `metastases`,
//!   `deficient`) when the singular is a word of the ontology's names, or failing that is
//!   implied by a plural-only name ("Nevi" implies "nevus"). Names and text fold the same way;
//!   acronyms do not fold.
//! - **Word order**: a head that the names write "H of X" at least [`MIN_MODIFIER_NAMES`]
//!   times ("abnormality", "deficiency") makes "X H" and "H of (the) X" the same name.
//! - **Modifiers**: words the ontology itself puts in front of its names to make other names
//!   (`familial`, `congenital`, `severe`, `bilateral`: "Familial X" and "X" both names) belong to
//!   the mention they precede ("sporadic renal cell carcinoma"). The ones that are mostly such a
//!   prefix and rarely a name's last word (`severe`, `bilateral`) are qualifiers, not mentions:
//!   they are not detected alone.
//! - **Coordination**: "breast and ovarian cancer", "breast/ovarian cancer", "brain, breast, and
//!   prostate cancer" name one concept per conjunct when each conjunct with the shared head is a
//!   name ("breast cancer").
//! - **Sentence ends and brackets** end a name: "myopathy. Myotonic dystrophy" is not the name
//!   "myopathy myotonic".
//!
//! The dictionary ([`super::dictionary`]) applies them, and also takes a subtype ("type II")
//! into the name next to it.

use std::borrow::Cow;
use std::collections::HashMap;

// A fast hash for the lookups made for most words of every text (SipHash's resistance to
// crafted keys is not needed: the keys are the ontology's words).
use rustc_hash::FxHashSet as HashSet;

use super::dictionary::is_stop_word;

/// A word counts as a modifier when it makes at least this many names out of other names.
const MIN_MODIFIER_NAMES: usize = 5;
/// Shorter words are never plurals ("gas", "ras").
const MIN_PLURAL_CHARS: usize = 4;
/// (suffix, replacement) from plural to singular, tried in order; the first singular that is a
/// word of the names wins.
const PLURALS: &[(&str, &str)] = &[
    ("ies", "y"),    // abnormalities
    ("ices", "ex"),  // indices
    ("ices", "ix"),  // appendices
    ("ses", "sis"),  // metastases
    ("ae", "a"),     // fistulae
    ("i", "us"),     // nevi
    ("a", "um"),     // bacteria
    ("a", "on"),     // ganglia
    ("s", ""),       // tumors
    ("es", ""),      // abscesses
    ("ent", "ency"), // deficient
    ("ent", "ence"), // incontinent
];
/// The rules whose singular is the only one possible: they may imply a singular no name writes.
const UNAMBIGUOUS_PLURALS: &[(&str, &str)] = &[("ies", "y"), ("ae", "a"), ("i", "us"), ("s", "")];

/// Writes the singular of `word` by one rule into `out`; false when the rule does not apply.
fn singular_into(word: &str, suffix: &str, replacement: &str, out: &mut String) -> bool {
    let Some(stem) = word.strip_suffix(suffix) else { return false };
    // "virus", "sepsis", "glass" are not plurals.
    if suffix == "s" && stem.ends_with(['s', 'u', 'i']) {
        return false;
    }
    out.clear();
    out.push_str(stem);
    out.push_str(replacement);
    true
}

/// Names are reordered ("X H" and "H of X") when X has at most this many words.
const MAX_REORDERED_WORDS: usize = 3;
/// At most this many modifiers are taken in front of a mention ("bilateral sporadic aniridia").
pub(crate) const MAX_MODIFIERS: usize = 2;

/// The ontology's vocabulary and modifier words.
pub(crate) struct Lexicon {
    /// Every token of the dictionary's names.
    vocabulary: HashSet<Box<str>>,
    /// Singulars of the names' plural-looking tokens that no name writes ("nevus" when the
    /// ontology only says "Nevi"): a fallback, so that a real word always wins.
    implied_singulars: HashSet<Box<str>>,
    /// Folded modifier words.
    modifiers: HashSet<Box<str>>,
    /// Modifiers that are qualifiers rather than names of their own ("severe").
    qualifiers: HashSet<Box<str>>,
    /// Words that head "H of X" names ("abnormality", "deficiency"): their names are also
    /// written "X H", and the other way round.
    heads: HashSet<Box<str>>,
    /// Words the ontology puts after at least [`MIN_MODIFIER_NAMES`] of its names to make other
    /// names ("X syndrome", "X disease").
    endings: HashSet<Box<str>>,
}

impl Lexicon {
    /// Learns the vocabulary from `forms` (normalized names: tokens joined by single spaces),
    /// then the modifiers from the forms' singular keys.
    pub fn new<'a>(forms: impl Iterator<Item = &'a str> + Clone) -> Lexicon {
        let vocabulary: HashSet<Box<str>> = forms.clone().flat_map(|form| form.split(' ')).map(Box::from).collect();
        let implied_singulars = vocabulary
            .iter()
            .filter(|word| word.len() >= MIN_PLURAL_CHARS)
            .flat_map(|word| {
                UNAMBIGUOUS_PLURALS.iter().filter_map(|(suffix, replacement)| {
                    let mut singular = String::new();
                    singular_into(word, suffix, replacement, &mut singular).then_some(singular)
                })
            })
            .filter(|singular| !vocabulary.contains(singular.as_str()))
            .map(Box::from)
            .collect();
        let mut lexicon = Lexicon {
            vocabulary,
            implied_singulars,
            modifiers: HashSet::default(),
            qualifiers: HashSet::default(),
            heads: HashSet::default(),
            endings: HashSet::default(),
        };
        let keyed: HashSet<String> = forms.map(|form| lexicon.key_form(form)).collect();
        // How often each word prefixes a name to make another name, and ends a longer name.
        let mut prefixes: HashMap<&str, usize> = HashMap::new();
        let mut last_words: HashMap<&str, usize> = HashMap::new();
        let mut heads: HashMap<&str, usize> = HashMap::new();
        let mut endings: HashMap<&str, usize> = HashMap::new();
        for form in &keyed {
            if let Some((rest, last)) = form.rsplit_once(' ') {
                if keyed.contains(rest) {
                    *endings.entry(last).or_default() += 1;
                }
            }
            if let Some((head, _)) = form.split_once(" of ") {
                if !head.contains(' ') {
                    *heads.entry(head).or_default() += 1;
                }
            }
            if let Some((first, rest)) = form.split_once(' ') {
                if keyed.contains(rest) {
                    *prefixes.entry(first).or_default() += 1;
                }
                *last_words.entry(form.rsplit(' ').next().unwrap_or(form)).or_default() += 1;
            }
        }
        lexicon.heads = heads
            .into_iter()
            .filter(|&(head, count)| count >= MIN_MODIFIER_NAMES && !is_stop_word(head))
            .map(|(head, _)| Box::from(head))
            .collect();
        lexicon.endings = endings
            .into_iter()
            // General words are endings ("syndrome", "disease"); numbers and short words are not.
            .filter(|&(word, count)| {
                count >= MIN_MODIFIER_NAMES && word.len() >= MIN_PLURAL_CHARS && word.chars().all(char::is_alphabetic)
            })
            .map(|(word, _)| Box::from(word))
            .collect();
        for (word, count) in prefixes {
            // "Disease X", "Human X": general words are no modifiers.
            if count < MIN_MODIFIER_NAMES || word.chars().all(|c| c.is_numeric()) || is_stop_word(word) {
                continue;
            }
            if count > 2 * last_words.get(word).copied().unwrap_or(0) {
                lexicon.qualifiers.insert(Box::from(word));
            }
            lexicon.modifiers.insert(Box::from(word));
        }
        lexicon
    }

    /// The token's matching key: its singular when that is a word of the names (or, failing
    /// that, implied by them), else itself.
    pub fn key<'t>(&self, token: &'t str) -> Cow<'t, str> {
        // Every rule's suffix ends in one of these letters.
        if token.len() < MIN_PLURAL_CHARS || !token.ends_with(['s', 'i', 'a', 'e', 't']) {
            return Cow::Borrowed(token);
        }
        // This runs for most words of every text: one buffer, allocated only when a rule applies.
        let mut candidate = String::new();
        let mut implied = None;
        for (suffix, replacement) in PLURALS {
            if !token.ends_with(suffix) || !singular_into(token, suffix, replacement, &mut candidate) {
                continue;
            }
            if self.vocabulary.contains(candidate.as_str()) {
                return Cow::Owned(candidate);
            }
            if implied.is_none() && self.implied_singulars.contains(candidate.as_str()) {
                implied = Some(candidate.clone());
            }
        }
        implied.map_or(Cow::Borrowed(token), Cow::Owned)
    }

    /// A normalized form's key: the key of each token.
    pub fn key_form(&self, form: &str) -> String {
        let keys: Vec<Cow<str>> = form.split(' ').map(|token| self.key(token)).collect();
        keys.join(" ")
    }

    /// The other word orders of a name's key form: "abnormality of the eye" is also written
    /// "eye abnormality"; "aspa deficiency" also "deficiency of aspa" and "deficiency of the aspa".
    pub fn reorderings(&self, form: &str) -> Vec<String> {
        let words: Vec<&str> = form.split(' ').collect();
        match words.as_slice() {
            [head, "of", rest @ ..] if self.heads.contains(*head) => {
                let rest = rest.strip_prefix(&["the"]).unwrap_or(rest);
                if (1..=MAX_REORDERED_WORDS).contains(&rest.len()) {
                    return vec![format!("{} {head}", rest.join(" "))];
                }
            }
            [rest @ .., head] if self.heads.contains(*head) && (1..=MAX_REORDERED_WORDS).contains(&rest.len()) => {
                let rest = rest.join(" ");
                return vec![format!("{head} of {rest}"), format!("{head} of the {rest}")];
            }
            _ => {}
        }
        Vec::new()
    }

    /// A word that makes names of other names when written after them ("syndrome").
    pub fn is_ending(&self, key: &str) -> bool {
        self.endings.contains(key)
    }

    pub fn is_modifier(&self, key: &str) -> bool {
        self.modifiers.contains(key)
    }

    /// A one-word name that only qualifies others ("severe", "bilateral").
    pub fn is_qualifier(&self, form: &str) -> bool {
        self.qualifiers.contains(form)
    }

    pub fn memory_usage(&self) -> usize {
        let set = word_set_memory;
        set(&self.vocabulary)
            + set(&self.implied_singulars)
            + set(&self.modifiers)
            + set(&self.qualifiers)
            + set(&self.heads)
            + set(&self.endings)
    }
}

/// Bytes held by a set of words: its table and the words.
pub(crate) fn word_set_memory<S>(words: &std::collections::HashSet<Box<str>, S>) -> usize {
    words.capacity() * (std::mem::size_of::<Box<str>>() + 1) + words.iter().map(|w| w.len()).sum::<usize>()
}

/// What separates a token from the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gap {
    /// White space only (or nothing).
    Space,
    /// A hyphen: "breast-ovarian".
    Hyphen,
    Slash,
    Comma,
    /// A sentence end, a bracket, a semicolon or colon: no name goes across it.
    Break,
}

/// The gap before each token (the first token's is a [`Gap::Break`]).
pub(crate) fn gaps(chars: &[char], tokens: &[crate::fold::Token]) -> Vec<Gap> {
    let mut gaps = Vec::with_capacity(tokens.len());
    let mut previous_end = None;
    for token in tokens {
        gaps.push(match previous_end {
            None => Gap::Break,
            // One character may fold to two tokens ("½" to "1" and "2"): nothing between them.
            Some(end) => chars.get(end..token.start).map_or(Gap::Space, classify),
        });
        previous_end = Some(token.end);
    }
    gaps
}

fn classify(gap: &[char]) -> Gap {
    let mut class = Gap::Space;
    for (i, &c) in gap.iter().enumerate() {
        match c {
            '(' | ')' | '[' | ']' | '{' | '}' | ';' | ':' | '!' | '?' => return Gap::Break,
            // A full stop ends a sentence when white space follows ("1.5" and "p.R12" go on).
            '.' if gap[i + 1..].iter().any(|c| c.is_whitespace()) => return Gap::Break,
            ',' => class = Gap::Comma,
            '/' if class != Gap::Comma => class = Gap::Slash,
            '-' | '‐' | '‑' | '–' if class == Gap::Space => class = Gap::Hyphen,
            _ => {}
        }
    }
    class
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::{fold, tokenize};

    fn lexicon(names: &[&str]) -> Lexicon {
        let forms: Vec<String> = names.iter().map(|n| fold(n)).collect();
        Lexicon::new(forms.iter().map(String::as_str))
    }

    #[test]
    fn plurals_fold_to_singulars_the_names_use() {
        let lexicon = lexicon(&[
            "Tumor",
            "Abnormality of the eye",
            "Nevus",
            "Metastasis",
            "Fistula",
            "Abscess",
            "Ganglion cyst",
            "Virus diseases",
            "Lyme disease",
            "Sepsis",
        ]);
        for (plural, singular) in [
            ("tumors", "tumor"),
            ("abnormalities", "abnormality"),
            ("nevi", "nevus"),
            ("metastases", "metastasis"),
            ("fistulae", "fistula"),
            ("abscesses", "abscess"),
            ("ganglia", "ganglion"),
            ("diseases", "disease"),
        ] {
            assert_eq!(lexicon.key(plural), singular, "{plural}");
        }
        // Not plurals, or no such singular among the names: unchanged.
        for word in ["virus", "sepsis", "lens", "tumor", "ras"] {
            assert_eq!(lexicon.key(word), word);
        }
        // A singular that only a name's plural implies: "Nevi" alone still matches "nevus".
        let nevi_only = self::lexicon(&["Nevi"]);
        assert_eq!((nevi_only.key("nevi"), nevi_only.key("nevus")), ("nevus".into(), "nevus".into()));
        assert_eq!(lexicon.key_form("abnormalities of the eye"), "abnormality of the eye");
    }

    #[test]
    fn modifiers_come_from_the_ontologys_own_names() {
        let mut names = vec!["Ataxia", "Seizure", "Cataract", "Deafness", "Myopathy", "Anemia"];
        let severe = ["Severe ataxia", "Severe seizure", "Severe cataract", "Severe deafness", "Severe myopathy"];
        let familial =
            ["Familial ataxia", "Familial seizure", "Familial cataract", "Familial deafness", "Familial myopathy"];
        names.extend(severe);
        names.extend(familial);
        names.extend(["Severe", "Familial"]);
        // "familial" also ends names often enough to be a word of its own; "severe" does not.
        names.extend(["Anemia familial", "Ataxia familial", "Cataract familial"]);
        let lexicon = lexicon(&names);
        assert!(lexicon.is_modifier("severe") && lexicon.is_modifier("familial"));
        assert!(lexicon.is_qualifier("severe"));
        assert!(!lexicon.is_qualifier("familial"));
        // Four names are not enough.
        assert!(!lexicon.is_modifier("ataxia"));
    }

    #[test]
    fn gaps_tell_sentence_ends_and_brackets_from_connectors() {
        let text = "myopathy. Myotonic dystrophy, breast/ovarian and breast-ovarian (1.5) e.g.x";
        let tokens = tokenize(text);
        let chars: Vec<char> = text.chars().collect();
        let words: Vec<(&str, Gap)> = tokens.iter().map(|t| t.text.as_str()).zip(gaps(&chars, &tokens)).collect();
        assert_eq!(
            words,
            [
                ("myopathy", Gap::Break),
                ("myotonic", Gap::Break),
                ("dystrophy", Gap::Space),
                ("breast", Gap::Comma),
                ("ovarian", Gap::Slash),
                ("and", Gap::Space),
                ("breast", Gap::Space),
                ("ovarian", Gap::Hyphen),
                ("1", Gap::Break),
                ("5", Gap::Space),
                ("e", Gap::Break),
                ("g", Gap::Space),
                ("x", Gap::Space),
            ]
        );
    }
}
