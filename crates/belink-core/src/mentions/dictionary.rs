//! Mention detection: dictionary matching of normalized ontology names in normalized text.
//!
//! Names and text go through the same normalization ([`crate::fold`]), so a name matches
//! whatever its spelling variants in the text. Matching is Aho-Corasick over the normalized
//! tokens joined by spaces, on token boundaries only, keeping the leftmost-longest match where
//! matches overlap. Filters keep out names that are too short or are common words, and short
//! acronyms (`FAP`, `DM`, `ALL`) match only when written in capitals in the text.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::abbreviations::{is_short_form_candidate, MAX_SHORT_FORM_CHARS};
use super::variants::{gaps, word_set_memory, Gap, Lexicon, MAX_MODIFIERS};
use super::whole_token;
use super::word_bags::WordBags;
use crate::fold::{tokenize, Token};
use crate::interrupts::Ticker;

/// A name the dictionary can match, as stored in `belink.names`.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    // MEDIC (BioSyn's file) carries OMIM's ", INCLUDED" marker as a synonym of its own.
    "included",
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
    "human",
    "humans",
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

/// One pattern of the automaton: a distinct name key and the names behind it.
struct Pattern {
    names: Vec<usize>,
    /// Match only spans written in capitals (short acronyms).
    capitals_only: bool,
}

/// Bytes a mention dictionary holds per name, about, to decide before building one: 206 MB for
/// 484k names, 28.2 MB for MEDIC's 76k, 3.6 GB for a synthetic UMLS's 9.67 M (BENCHMARKS.md,
/// "Scale"); matching names in any word order added 25 to 50 bytes a name (MEDIC 29.9 MB).
pub const ESTIMATED_BYTES_PER_NAME: usize = 450;

/// A compiled dictionary for one ontology.
pub struct MentionDictionary {
    automaton: AhoCorasick,
    patterns: Vec<Pattern>,
    /// Each pattern's key form, to look up a conjunct's name ("breast cancer").
    pattern_of: HashMap<Box<str>, usize>,
    /// The coordinations inside names, without their connectors ("breast ovarian cancer" for
    /// "Hereditary Breast and Ovarian Cancer Syndrome"), each of one pattern only.
    coordinations_named: HashMap<Box<str>, usize>,
    /// Modifiers that make a name of another concept more often than not: "ovarian tumor" is
    /// not a tumor's synonym, while "familial X" often names X's concept.
    specifying_modifiers: HashSet<Box<str>>,
    /// The patterns whose names the ontology subdivides by modifiers ("tumor": "ovarian
    /// tumor", "brain tumor" are other concepts); a specifying modifier is searched only with
    /// these ("renal hamartomas" is a hamartoma when no renal one is named).
    subdivided: HashSet<usize>,
    lexicon: Lexicon,
    /// The names by their content words, matched in any order.
    word_bags: WordBags,
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
    /// What retrieval should search for when it is not the span's text: the name under a
    /// modifier ("breast cancer" in "hereditary breast cancer"), the name a variant stands for
    /// ("Tumor" for "tumours", "ASPA deficiency" for "deficiency of ASPA"), or one conjunct of
    /// a coordination ("Breast cancer" in "breast and ovarian cancer").
    pub lookup: Option<String>,
    /// One of the concepts of a coordination: its span is shared with the other conjuncts.
    pub coordinated: bool,
}

/// A match in token indices, before it becomes a [`Detection`].
pub(super) struct Hit {
    pub first: usize,
    pub last: usize,
    pub pattern: usize,
    pub coordinated: bool,
}

impl MentionDictionary {
    pub fn build(names: Vec<DictionaryName>) -> Result<MentionDictionary, String> {
        let admitted: Vec<(usize, bool)> =
            names.iter().enumerate().filter_map(|(index, name)| Some((index, admission(name)?))).collect();
        let lexicon = Lexicon::new(admitted.iter().map(|&(index, _)| names[index].normalized.as_str()));
        let mut pattern_of: HashMap<Box<str>, usize> = HashMap::new();
        let mut forms: Vec<String> = Vec::new();
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut reordered: Vec<(String, usize)> = Vec::new();
        // How many names (without the marker) write each one-word included title.
        let mut one_word_titles: HashMap<&str, usize> =
            admitted.iter().filter_map(|&(index, _)| one_word_title(&names[index])).map(|word| (word, 0)).collect();
        if !one_word_titles.is_empty() {
            for &(index, _) in admitted.iter().filter(|&&(index, _)| !names[index].name.ends_with(INCLUDED_MARKER)) {
                for word in names[index].normalized.split(' ') {
                    if let Some(count) = one_word_titles.get_mut(word) {
                        *count += 1;
                    }
                }
            }
        }
        for (index, capitals_only) in admitted {
            // Acronyms are not plurals: "HDLS" is not "HDL".
            let form = if capitals_only {
                names[index].normalized.clone()
            } else {
                lexicon.key_form(&names[index].normalized)
            };
            if !capitals_only && lexicon.is_qualifier(&form) {
                continue;
            }
            if !capitals_only {
                reordered.extend(lexicon.reorderings(&form).into_iter().map(|variant| (variant, index)));
                if let Some(title) = included_title(&names[index], &form, &one_word_titles) {
                    reordered.extend(lexicon.reorderings(&title).into_iter().map(|variant| (variant, index)));
                    reordered.push((title, index));
                }
            }
            let slot = *pattern_of.entry(Box::from(form.as_str())).or_insert_with(|| {
                forms.push(format!(" {form} "));
                patterns.push(Pattern { names: Vec::new(), capitals_only });
                patterns.len() - 1
            });
            let pattern = &mut patterns[slot];
            pattern.names.push(index);
            // A form that is also a plain (non-acronym) name matches in any case.
            pattern.capitals_only &= capitals_only;
        }
        // Another word order of a name, or an included title, never hides a name written that way.
        let names_as_written = patterns.len();
        for (variant, index) in reordered {
            let slot = *pattern_of.entry(Box::from(variant.as_str())).or_insert_with(|| {
                forms.push(format!(" {variant} "));
                patterns.push(Pattern { names: Vec::new(), capitals_only: false });
                patterns.len() - 1
            });
            if slot >= names_as_written {
                patterns[slot].names.push(index);
            }
        }
        let mut coordinations_named: HashMap<Box<str>, usize> = HashMap::new();
        for (slot, form) in forms.iter().enumerate().take(names_as_written) {
            if patterns[slot].capitals_only {
                continue;
            }
            for core in coordination_cores(form.trim(), &lexicon) {
                let pattern = coordinations_named.entry(core.into_boxed_str()).or_insert(slot);
                if *pattern != slot {
                    *pattern = AMBIGUOUS;
                }
            }
        }
        coordinations_named.retain(|_, pattern| *pattern != AMBIGUOUS);
        let (specifying_modifiers, subdivided) = specifying_modifiers(&pattern_of, &patterns, &names, &lexicon);
        let word_bags = WordBags::new(
            forms
                .iter()
                .enumerate()
                .take(names_as_written)
                .filter(|&(slot, _)| !patterns[slot].capitals_only)
                .map(|(slot, form)| (form.trim(), slot)),
        );
        let automaton = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .match_kind(MatchKind::Standard)
            .build(&forms)
            .map_err(|e| format!("building the mention dictionary: {e}"))?;
        Ok(MentionDictionary {
            automaton,
            patterns,
            pattern_of,
            coordinations_named,
            specifying_modifiers,
            subdivided,
            lexicon,
            word_bags,
            names,
        })
    }

    pub fn name(&self, index: usize) -> &DictionaryName {
        &self.names[index]
    }

    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    /// Bytes of heap the dictionary holds: the automaton, its patterns, the names and the
    /// lexicon.
    pub fn memory_usage(&self) -> usize {
        let patterns: usize = self
            .patterns
            .iter()
            .map(|p| std::mem::size_of::<Pattern>() + p.names.capacity() * std::mem::size_of::<usize>())
            .sum();
        let map = |m: &HashMap<Box<str>, usize>| {
            m.capacity() * (std::mem::size_of::<(Box<str>, usize)>() + 1) + m.keys().map(|k| k.len()).sum::<usize>()
        };
        let pattern_of = map(&self.pattern_of) + map(&self.coordinations_named);
        let specifying = word_set_memory(&self.specifying_modifiers)
            + self.subdivided.capacity() * (std::mem::size_of::<usize>() + 1);
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
        self.automaton.memory_usage()
            + patterns
            + pattern_of
            + specifying
            + names
            + self.lexicon.memory_usage()
            + self.word_bags.memory_usage()
    }

    /// Every match on token boundaries (overlaps included), in the text's tokens (`chars`: the
    /// text as characters, which the tokens' spans index), with
    /// coordinations expanded and modifiers taken in (see [`super::variants`]).
    pub fn find_all(&self, chars: &[char], tokens: &[Token]) -> Vec<Detection> {
        if tokens.is_empty() {
            return Vec::new();
        }
        let gaps = gaps(chars, tokens);
        let mut ticker = Ticker::default();
        let keys: Vec<Cow<str>> = tokens
            .iter()
            .map(|token| {
                ticker.step();
                if token.end - token.start <= MAX_ACRONYM_CHARS && written_in_capitals(&chars[token.start..token.end]) {
                    Cow::Borrowed(token.text.as_str())
                } else {
                    self.lexicon.key(&token.text)
                }
            })
            .collect();
        let mut hits = Vec::new();
        let order = (0..tokens.len()).map(|i| (i, gaps[i] == Gap::Break));
        let whole_text = Haystack::of(&keys, order, chars.len(), &mut ticker);
        for hit in self.hits_in(&whole_text, chars, tokens, &mut ticker) {
            if let Some(conjuncts) = self.coordination(&hit, &keys, &gaps) {
                hits.extend(conjuncts);
            }
            hits.push(hit);
        }
        hits.extend(self.hits_across_short_forms(chars, tokens, &keys, &gaps, &mut ticker));
        // A name's words in another order, where no name was found over the same words.
        let reordered = self.word_bags.find(&keys, &gaps, &mut ticker);
        if !reordered.is_empty() {
            let found: HashSet<(usize, usize)> = hits.iter().map(|h| (h.first, h.last)).collect();
            hits.extend(reordered.into_iter().filter(|bag| !found.contains(&(bag.first, bag.last))));
        }
        // Words that read as a coordination but are themselves a name ("breast and ovarian
        // cancer" added as a name of the hereditary syndrome) are that name: the ontology says
        // what they mean together.
        // Most texts have no coordination: nothing to look up.
        // So are words that read as a coordination inside a name, once the name's modifiers
        // and ending are set aside: "breast and ovarian cancer" in "Hereditary Breast and
        // Ovarian Cancer Syndrome".
        if hits.iter().any(|h| h.coordinated) {
            let mut named: HashSet<(usize, usize)> =
                hits.iter().filter(|h| !h.coordinated).map(|h| (h.first, h.last)).collect();
            let coordinations: HashSet<(usize, usize)> =
                hits.iter().filter(|h| h.coordinated).map(|h| (h.first, h.last)).collect();
            for (first, last) in coordinations {
                if named.contains(&(first, last)) {
                    continue;
                }
                let words = keys[first..=last].iter().map(|k| k.as_ref()).filter(|k| !is_connector(k));
                if let Some(&pattern) = self.coordinations_named.get(words.collect::<Vec<_>>().join(" ").as_str()) {
                    hits.push(Hit { first, last, pattern, coordinated: false });
                    named.insert((first, last));
                }
            }
            hits.retain(|h| !h.coordinated || !named.contains(&(h.first, h.last)));
        }
        let span_text =
            |first: usize, last: usize| -> String { chars[tokens[first].start..tokens[last].end].iter().collect() };
        hits.into_iter()
            .map(|hit| {
                ticker.step();
                let (core_first, last) = take_designators(hit.first, hit.last, &keys, &gaps);
                let first = self.extend_over_modifiers(core_first, &keys, &gaps);
                let names = &self.patterns[hit.pattern].names;
                // What retrieval searches: the name when the text writes a variant of it, so
                // that the exact match finds it; the subtype with the name; the modifiers that
                // specify the concept ("pancreatic tumors": "pancreatic Tumor") but not those
                // that rarely do ("familial", "congenital").
                let variant = hit.coordinated || !self.written_as_a_name(&tokens[hit.first..=hit.last], names);
                let name = || if variant { self.names[names[0]].name.clone() } else { span_text(core_first, last) };
                // A specifying modifier counts where the ontology subdivides the name, outside
                // coordinations, and not before an acronym, which is specific enough
                // ("cerebral ALD" is ALD). Most hits have no modifier: nothing to test.
                let specifying = (first..core_first)
                    .find(|&m| self.specifying_modifiers.contains(keys[m].as_ref()))
                    .filter(|_| self.subdivided.contains(&hit.pattern) && !hit.coordinated)
                    .filter(|_| !written_in_capitals(&chars[tokens[hit.first].start..tokens[hit.last].end]));
                let lookup = match specifying {
                    Some(modifier) => Some(format!("{} {}", span_text(modifier, core_first - 1), name())),
                    None if variant || (first, last) != (hit.first, hit.last) => Some(name()),
                    None => None,
                };
                Detection {
                    start: tokens[first].start,
                    end: tokens[last].end,
                    names: names.clone(),
                    lookup,
                    coordinated: hit.coordinated,
                }
            })
            .collect()
    }

    /// The dictionary's matches in `haystack`, on whole tokens, short acronyms only where the
    /// text writes them in capitals.
    fn hits_in(&self, haystack: &Haystack, chars: &[char], tokens: &[Token], ticker: &mut Ticker) -> Vec<Hit> {
        let mut hits = Vec::new();
        for m in self.automaton.find_overlapping_iter(&haystack.text) {
            ticker.step();
            let pattern = m.pattern().as_usize();
            let Ok(first) = haystack.starts.binary_search(&(m.start() + 1)) else { continue };
            let Ok(last) = haystack.ends.binary_search(&(m.end() - 1)) else { continue };
            let (first, last) = (haystack.tokens[first], haystack.tokens[last]);
            if self.patterns[pattern].capitals_only
                && !written_in_capitals_alone(chars, tokens[first].start, tokens[last].end)
            {
                continue;
            }
            hits.push(Hit { first, last, pattern, coordinated: false });
        }
        hits
    }

    /// Names written around the short form they define: "glucose-6-phosphate dehydrogenase
    /// (G6PD) deficiency" is the name "glucose-6-phosphate dehydrogenase deficiency", "von
    /// Hippel-Lindau (VHL) disease" is "von Hippel-Lindau disease". A short form in brackets
    /// inside a sentence is read past, in a window of the sentence around it, and only the
    /// names that span it are kept: alone, the short form and the words on either side are
    /// found as before ("colorectal cancer (CRC) is").
    fn hits_across_short_forms(
        &self,
        chars: &[char],
        tokens: &[Token],
        keys: &[Cow<str>],
        gaps: &[Gap],
        ticker: &mut Ticker,
    ) -> Vec<Hit> {
        let mut hits = Vec::new();
        for short in 1..tokens.len().saturating_sub(1) {
            ticker.step();
            // A bracket makes the gap before it a break.
            if gaps[short] != Gap::Break {
                continue;
            }
            let Some(short_last) = bracketed_short_form(chars, tokens, short) else { continue };
            // The sentence's words on either side, as many as a name may take.
            let mut first = short - 1;
            while first > 0 && short - first < MAX_WORDS_BEFORE_SHORT_FORM && gaps[first] != Gap::Break {
                first -= 1;
            }
            let mut last = short_last + 1;
            while last + 1 < tokens.len()
                && last - short_last < MAX_WORDS_AFTER_SHORT_FORM
                && gaps[last + 1] != Gap::Break
            {
                last += 1;
            }
            let around = (first..short).chain(short_last + 1..=last).map(|i| (i, false));
            let haystack = Haystack::of(keys, around, tokens[last].end - tokens[first].start, ticker);
            let spanning = |hit: &Hit| hit.first < short && hit.last > short_last;
            hits.extend(self.hits_in(&haystack, chars, tokens, ticker).into_iter().filter(spanning));
        }
        hits
    }

    /// Whether `tokens` are, normalized, one of `names` as written (not a variant of it).
    fn written_as_a_name(&self, tokens: &[Token], names: &[usize]) -> bool {
        names.iter().any(|&n| {
            let normalized = &self.names[n].normalized;
            normalized.split(' ').eq(tokens.iter().map(|t| t.text.as_str()))
        })
    }

    /// The other conjuncts of a coordination that ends with `hit` ("breast and ovarian cancer",
    /// "brain, breast, and prostate cancer"), each with the shared head a name; with them, `hit`
    /// becomes a conjunct too, all sharing the coordination's span.
    fn coordination(&self, hit: &Hit, keys: &[Cow<str>], gaps: &[Gap]) -> Option<Vec<Hit>> {
        // Most hits have no connector before them: nothing to build.
        if self.patterns[hit.pattern].capitals_only || conjunct_end(hit.first, keys, gaps).is_none() {
            return None;
        }
        // The shared head: the hit's last words, the longest first.
        for head_first in hit.first + 1..=hit.last {
            let head = keys[head_first..=hit.last].join(" ");
            let mut conjuncts: Vec<usize> = Vec::new();
            let mut left = hit.first;
            for _ in 0..MAX_CONJUNCTS {
                let Some(last) = conjunct_end(left, keys, gaps) else { break };
                // A conjunct of one or two words: "breast", "renal pelvis".
                let conjunct = (1..=2).rev().find_map(|words| {
                    let first = (last + 1).checked_sub(words)?;
                    if words == 2 && !matches!(gaps[last], Gap::Space | Gap::Hyphen) {
                        return None;
                    }
                    let form = format!("{} {head}", keys[first..=last].join(" "));
                    let &pattern = self.pattern_of.get(form.as_str())?;
                    (!self.patterns[pattern].capitals_only).then_some((first, pattern))
                });
                let Some((first, pattern)) = conjunct else { break };
                // "breast, breast and ovarian cancer": each concept once.
                if pattern != hit.pattern && !conjuncts.contains(&pattern) {
                    conjuncts.push(pattern);
                }
                left = first;
            }
            if conjuncts.is_empty() {
                continue;
            }
            let mut hits: Vec<Hit> = conjuncts
                .into_iter()
                .map(|pattern| Hit { first: left, last: hit.last, pattern, coordinated: true })
                .collect();
            hits.push(Hit { first: left, last: hit.last, pattern: hit.pattern, coordinated: true });
            return Some(hits);
        }
        None
    }

    /// The first token of a mention starting at `first` once the modifiers in front of it
    /// are taken in ("sporadic renal cell carcinoma"). A qualifier written apart ("severe
    /// scoliosis") is left out, and stops the walk: annotated corpora leave it before the
    /// mention (NCBI-disease train: "severe" 44 times just before a mention, 6 times inside one;
    /// GSC+ annotates "scoliosis"). Hyphenated, it is part of the words ("non-papillary").
    fn extend_over_modifiers(&self, mut first: usize, keys: &[Cow<str>], gaps: &[Gap]) -> usize {
        for _ in 0..MAX_MODIFIERS {
            if first == 0
                || !matches!(gaps[first], Gap::Space | Gap::Hyphen)
                || !self.lexicon.is_modifier(&keys[first - 1])
                || (gaps[first] == Gap::Space && self.lexicon.is_qualifier(&keys[first - 1]))
            {
                break;
            }
            first -= 1;
        }
        first
    }

    /// Non-overlapping mentions: leftmost first, the longest where several start together.
    pub fn detect(&self, text: &str) -> Vec<Detection> {
        let chars: Vec<char> = text.chars().collect();
        resolve_overlaps(self.find_all(&chars, &tokenize(text)))
    }
}

/// A coordination is looked for at most this many conjuncts before its last one: a longer list
/// is not one, and the bound keeps a text of a million commas linear.
const MAX_CONJUNCTS: usize = 8;

/// The mention's tokens with a subtype designator taken in, before ("type II C2 deficiency") or
/// after ("SJS type 2"): names write subtypes as "type" and a number, a Roman numeral or a
/// letter, thousands of times in MEDIC.
fn take_designators(mut first: usize, mut last: usize, keys: &[Cow<str>], gaps: &[Gap]) -> (usize, usize) {
    let joined = |i: usize| matches!(gaps[i], Gap::Space | Gap::Hyphen);
    if first >= 2
        && keys[first - 2] == "type"
        && is_subtype_code(&keys[first - 1])
        && joined(first)
        && joined(first - 1)
    {
        first -= 2;
    } else if last + 2 < keys.len()
        && keys[last + 1] == "type"
        && is_subtype_code(&keys[last + 2])
        && joined(last + 1)
        && joined(last + 2)
    {
        last += 2;
        // "type 1A" folds to "type 1 a".
        if last + 1 < keys.len()
            && keys[last + 1].len() == 1
            && is_subtype_code(&keys[last + 1])
            && gaps[last + 1] == Gap::Space
            && keys[last].bytes().all(|b| b.is_ascii_digit())
        {
            last += 1;
        }
    }
    (first, last)
}

/// "2", "12", "ii", "iv", "iid", "a": a number, a Roman numeral (with a letter), or a letter a-d.
pub(crate) fn is_subtype_code(key: &str) -> bool {
    let roman = key.trim_end_matches(['a', 'b', 'c', 'd']);
    (key.len() <= 2 && key.bytes().all(|b| b.is_ascii_digit()))
        || (!roman.is_empty() && roman.len() <= 4 && roman.bytes().all(|b| matches!(b, b'i' | b'v' | b'x')))
        || (key.len() == 1 && matches!(key, "a" | "b" | "c" | "d"))
}

/// The last token of the conjunct before the one starting at `left`, when a connector
/// separates them: a comma, a slash, a hyphen, "and", "or", "and/or", ", and".
fn conjunct_end(left: usize, keys: &[Cow<str>], gaps: &[Gap]) -> Option<usize> {
    if left == 0 {
        return None;
    }
    match gaps[left] {
        Gap::Comma | Gap::Slash | Gap::Hyphen => Some(left - 1),
        Gap::Space => {
            let word = &keys[left - 1];
            if !is_connector(word) {
                return None;
            }
            let mut connector = left - 1;
            if word == "or" && gaps[connector] == Gap::Slash && connector > 0 && keys[connector - 1] == "and" {
                connector -= 1;
            }
            (connector > 0 && gaps[connector] != Gap::Break).then(|| connector - 1)
        }
        Gap::Break => None,
    }
}

/// A modifier specifies the concept when fewer than this share of the names it makes of other
/// names are names of the same concept.
const MAX_SAME_CONCEPT_SHARE: f64 = 0.4;
/// A name is subdivided by modifiers when at least this many "w X" names name other concepts.
const MIN_SUBDIVISIONS: usize = 2;

/// The modifiers whose names ("w X", X a name too) are mostly names of another concept than
/// X's (see [`MAX_SAME_CONCEPT_SHARE`]): "ovarian", "hepatic", "autoimmune"; not "familial",
/// "congenital", "primary". With them, the patterns X that at least [`MIN_SUBDIVISIONS`] such
/// names of another concept subdivide.
fn specifying_modifiers(
    pattern_of: &HashMap<Box<str>, usize>,
    patterns: &[Pattern],
    names: &[DictionaryName],
    lexicon: &Lexicon,
) -> (HashSet<Box<str>>, HashSet<usize>) {
    let concepts = |pattern: usize| patterns[pattern].names.iter().map(|&n| names[n].concept_id.as_str());
    // (names made, of them names of the same concept)
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut subdivisions: HashMap<usize, usize> = HashMap::new();
    for (form, &pattern) in pattern_of {
        let Some((word, rest)) = form.split_once(' ') else { continue };
        let Some(&base) = pattern_of.get(rest) else { continue };
        if !lexicon.is_modifier(word) {
            continue;
        }
        let same = concepts(pattern).any(|c| concepts(base).any(|b| b == c));
        let count = counts.entry(word).or_default();
        count.0 += 1;
        count.1 += usize::from(same);
        if !same {
            *subdivisions.entry(base).or_default() += 1;
        }
    }
    let modifiers = counts
        .into_iter()
        .filter(|&(_, (made, same))| (same as f64) < MAX_SAME_CONCEPT_SHARE * made as f64)
        .map(|(word, _)| Box::from(word))
        .collect();
    let subdivided = subdivisions.into_iter().filter(|&(_, n)| n >= MIN_SUBDIVISIONS).map(|(base, _)| base).collect();
    (modifiers, subdivided)
}

/// A pattern index standing for "several patterns".
const AMBIGUOUS: usize = usize::MAX;
/// Longest coordination inside a name that is looked for, in words (connectors included).
const MAX_COORDINATION_WORDS: usize = 8;

fn is_connector(word: &str) -> bool {
    word == "and" || word == "or"
}

/// The coordinations a name's key form holds once up to [`MAX_MODIFIERS`] modifiers in front
/// and one ending after are set aside, without their connectors: "hereditary breast and
/// ovarian cancer syndrome" holds "breast ovarian cancer" (and "breast ovarian cancer
/// syndrome", ...). Nothing for a name without "and" or "or" between two words.
fn coordination_cores(form: &str, lexicon: &Lexicon) -> Vec<String> {
    let words: Vec<&str> = form.split(' ').collect();
    let inner_connector = |core: &[&str]| core.len() >= 3 && core[1..core.len() - 1].iter().any(|w| is_connector(w));
    if !inner_connector(&words) {
        return Vec::new();
    }
    let mut cores = Vec::new();
    for lead in 0..=MAX_MODIFIERS.min(words.len()) {
        if lead > 0 && !lexicon.is_modifier(words[lead - 1]) {
            break;
        }
        for trail in 0..=1 {
            if trail == 1 && !lexicon.is_ending(words[words.len() - 1]) {
                continue;
            }
            let Some(core) = words.get(lead..words.len() - trail) else { continue };
            if inner_connector(core) && core.len() <= MAX_COORDINATION_WORDS {
                cores.push(core.iter().filter(|w| !is_connector(w)).copied().collect::<Vec<_>>().join(" "));
            }
        }
    }
    cores
}

/// Keeps, scanning left to right, the longest detection at each start that does not overlap
/// one already kept; the conjuncts of a coordination all stay (they share its span).
pub fn resolve_overlaps(mut detections: Vec<Detection>) -> Vec<Detection> {
    detections.sort_by(|a, b| a.start.cmp(&b.start).then((b.end - b.start).cmp(&(a.end - a.start))));
    let mut kept: Vec<Detection> = Vec::new();
    let mut ticker = Ticker::default();
    for detection in detections {
        ticker.step();
        let keep = match kept.last() {
            None => true,
            Some(last) => {
                detection.start >= last.end
                    // The conjuncts of one coordination share its span.
                    || (detection.coordinated
                        && last.coordinated
                        && (detection.start, detection.end) == (last.start, last.end))
            }
        };
        if keep {
            kept.push(detection);
        }
    }
    kept
}

/// How many words a name may have before a bracketed short form it holds ("very long chain
/// acyl-CoA dehydrogenase (VLCAD) deficiency") and after it.
const MAX_WORDS_BEFORE_SHORT_FORM: usize = 6;
const MAX_WORDS_AFTER_SHORT_FORM: usize = 3;

/// The last token of a short form that starts at token `i`: one word alone in brackets
/// between words of one sentence, a short form as the abbreviations see one and written in
/// capitals ("(G6PD)", tokens "g", "6", "pd"; "(VHL)").
fn bracketed_short_form(chars: &[char], tokens: &[Token], i: usize) -> Option<usize> {
    // One character may fold to two tokens ("½" to "1" and "2"): nothing between them.
    let between = |a: &Token, b: &Token| chars.get(a.end..b.start).unwrap_or_default();
    let mut last = i;
    while last + 1 < tokens.len()
        && tokens[last + 1].end - tokens[i].start <= MAX_SHORT_FORM_CHARS
        && matches!(between(&tokens[last], &tokens[last + 1]), [] | ['-'])
    {
        last += 1;
    }
    let after = tokens.get(last + 1)?;
    let opening = between(&tokens[i - 1], &tokens[i]);
    let closing = between(&tokens[last], after);
    let only = |gap: &[char], bracket: char| {
        gap.iter().filter(|&&c| c == bracket).count() == 1 && gap.iter().all(|&c| c == bracket || c.is_whitespace())
    };
    let word = &chars[tokens[i].start..tokens[last].end];
    let bracketed = only(opening, '(') && only(closing, ')');
    // Checked last: every sentence end is a break too, and this one allocates.
    (bracketed && written_in_capitals(word) && is_short_form_candidate(&word.iter().collect::<String>()))
        .then_some(last)
}

/// " key1 key2 | key3 ... ": tokens' keys, with where each starts and ends in the text
/// (ascending) and which token it is, so that patterns " name " only match whole tokens, and
/// never across a break.
struct Haystack {
    text: String,
    starts: Vec<usize>,
    ends: Vec<usize>,
    tokens: Vec<usize>,
}

impl Haystack {
    /// The keys of `order`'s tokens, each with whether a break comes before it; `text_chars`:
    /// how long the text they come from is, to size the haystack once.
    fn of(
        keys: &[Cow<str>],
        order: impl Iterator<Item = (usize, bool)>,
        text_chars: usize,
        ticker: &mut Ticker,
    ) -> Haystack {
        let mut text = String::with_capacity(text_chars + 2);
        text.push(' ');
        let tokens = order.size_hint().0;
        let mut haystack = Haystack {
            text,
            starts: Vec::with_capacity(tokens),
            ends: Vec::with_capacity(tokens),
            tokens: Vec::with_capacity(tokens),
        };
        for (token, break_before) in order {
            ticker.step();
            if break_before && !haystack.tokens.is_empty() {
                haystack.text.push_str("| ");
            }
            haystack.starts.push(haystack.text.len());
            haystack.text.push_str(&keys[token]);
            haystack.ends.push(haystack.text.len());
            haystack.tokens.push(token);
            haystack.text.push(' ');
        }
        haystack
    }
}

/// How OMIM's titles mark a disorder an entry includes (see [`included_title`]).
const INCLUDED_MARKER: &str = ", INCLUDED";
/// The shortest one-word included title kept (see [`included_title`]).
const MIN_ONE_WORD_TITLE_CHARS: usize = 6;

/// OMIM's titles (in MEDIC, CTD diseases, UMLS) mark a disorder that an entry includes with
/// ", INCLUDED": "ANALBUMINEMIA, INCLUDED" is a name of analbuminemia. The key form without
/// the marker, for a name that has it. A one-word title is mostly a symbol ("CG1", "PWCR") or
/// a general word ("activator", "retardation"): it is kept only when it has at least
/// [`MIN_ONE_WORD_TITLE_CHARS`] letters and no other name writes it (`one_word_titles`: how
/// many names without the marker write each, see [`one_word_title`]).
fn included_title(name: &DictionaryName, form: &str, one_word_titles: &HashMap<&str, usize>) -> Option<String> {
    let written = name.name.strip_suffix(INCLUDED_MARKER)?;
    let title = form.strip_suffix(" included")?;
    let kept = if written.contains(char::is_whitespace) {
        !is_stop_word(title)
    } else {
        one_word_title(name).is_some_and(|word| one_word_titles.get(word) == Some(&0))
    };
    kept.then(|| title.to_string())
}

/// The normalized word of a one-word included title that may be kept ("analbuminemia" for
/// "ANALBUMINEMIA, INCLUDED"), before counting the other names that write it.
fn one_word_title(name: &DictionaryName) -> Option<&str> {
    let written = name.name.strip_suffix(INCLUDED_MARKER)?;
    let long_enough_letters =
        written.chars().count() >= MIN_ONE_WORD_TITLE_CHARS && written.chars().all(char::is_alphabetic);
    long_enough_letters.then(|| name.normalized.strip_suffix(" included")).flatten()
}

pub(crate) fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(&word)
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
    if compact.chars().count() < MIN_NAME_CHARS || is_stop_word(&name.normalized) {
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

/// The span is written in capitals and is not part of a longer word: "PD" is not in "G6PD".
fn written_in_capitals_alone(chars: &[char], start: usize, end: usize) -> bool {
    whole_token(chars, start, end) && written_in_capitals(&chars[start..end])
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
            ("W", "INCLUDED"),
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
        assert!(mentions(&medic(), "Hypertensive and prehypertension").is_empty());
    }

    #[test]
    fn normalization_makes_variants_match() {
        let found = mentions(&medic(), "COLORECTAL-CANCER, breast  cancer and Adenomas");
        let texts: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(texts, ["COLORECTAL-CANCER", "breast  cancer", "Adenomas"]);
    }

    #[test]
    fn acronyms_need_capitals_and_short_or_common_words_are_ignored() {
        let found = mentions(
            &medic(),
            "All patients with ALL or FAP, as was shown; fap and dm are lowercase. DM too. INCLUDED: all included.",
        );
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

    fn spans(dictionary: &MentionDictionary, text: &str) -> Vec<(String, Option<String>)> {
        let chars: Vec<char> = text.chars().collect();
        dictionary.detect(text).into_iter().map(|d| (chars[d.start..d.end].iter().collect(), d.lookup)).collect()
    }

    fn owned(expected: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        expected.iter().map(|(span, lookup)| (span.to_string(), lookup.map(str::to_string))).collect()
    }

    /// Enough "Familial X" and "Severe X" names to make "familial" a modifier and "severe" a
    /// qualifier (see variants.rs), and "deficiency" a head of "deficiency of X" names.
    fn with_modifiers(entries: &[(&str, &str)]) -> MentionDictionary {
        let bases = ["Ataxia", "Seizure", "Cataract", "Deafness", "Myopathy"];
        let mut names: Vec<(String, String)> = entries.iter().map(|(id, n)| (id.to_string(), n.to_string())).collect();
        for (i, base) in bases.iter().enumerate() {
            names.push((format!("B{i}"), base.to_string()));
            // "Familial X", "Severe X" and "Sporadic X" name X's concept (the modifiers do not
            // specify it); "Renal X" and "Hepatic X" are other concepts (the ontology subdivides
            // X).
            names.push((format!("B{i}"), format!("Familial {base}")));
            names.push((format!("B{i}"), format!("Severe {base}")));
            names.push((format!("B{i}"), format!("Sporadic {base}")));
            names.push((format!("K{i}"), format!("Renal {base}")));
            names.push((format!("K{i}"), format!("{base}, renal")));
            names.push((format!("H{i}"), format!("Hepatic {base}")));
            // Also the last word of names: modifiers, not qualifiers.
            names.push((format!("L{i}"), format!("{base}, familial")));
            names.push((format!("R{i}"), format!("{base}, sporadic")));
            names.push((format!("D{i}"), format!("Deficiency of {base}")));
        }
        names.push(("Q".into(), "Severe".into()));
        let borrowed: Vec<(&str, &str)> = names.iter().map(|(id, n)| (id.as_str(), n.as_str())).collect();
        dictionary(&borrowed)
    }

    #[test]
    fn plural_forms_match_singular_names_and_the_other_way_round() {
        let dictionary =
            dictionary(&[("T", "Tumor"), ("E", "Abnormality of the eye"), ("N", "Nevi"), ("F", "Fistula")]);
        let found = mentions(&dictionary, "Tumors, abnormalities of the eye, a nevus and fistulae.");
        let ids: Vec<&str> = found.iter().map(|(_, ids)| ids[0].as_str()).collect();
        assert_eq!(ids, ["T", "E", "N", "F"]);
        // Retrieval looks the variant up by the name it stands for; a name as written, by itself.
        let lookups: Vec<Option<String>> = spans(&dictionary, "tumours and Nevi").into_iter().map(|(_, l)| l).collect();
        assert_eq!(lookups, [Some("Tumor".to_string()), None]);
    }

    #[test]
    fn acronyms_match_whole_words_and_are_not_plurals() {
        let dictionary = dictionary(&[("PD", "PD"), ("HDLS", "HDLS"), ("X", "familial hdl deficiency")]);
        assert!(mentions(&dictionary, "G6PD and HDL levels").is_empty(), "PD inside G6PD, HDL is not HDLS");
        assert_eq!(mentions(&dictionary, "PD and HDLS.").len(), 2);
    }

    #[test]
    fn names_do_not_run_across_sentence_ends_or_brackets() {
        let dictionary = dictionary(&[("M", "Myopathy"), ("C", "Adenomatous polyposis coli familial"), ("A", "APC")]);
        let found = spans(&dictionary, "a myopathy. Adenomatous polyposis coli. Familial (APC) cases");
        assert_eq!(found, owned(&[("myopathy", None), ("APC", None)]));
    }

    #[test]
    fn coordinated_names_give_one_mention_per_conjunct_over_the_whole_span() {
        let dictionary = dictionary(&[
            ("B", "Breast cancer"),
            ("O", "Ovarian cancer"),
            ("P", "Prostate cancer"),
            ("R", "Renal pelvis cancer"),
        ]);
        for text in [
            "breast and ovarian cancer",
            "breast/ovarian cancer",
            "breast-ovarian cancer",
            "breast and/or ovarian cancer",
        ] {
            let found = spans(&dictionary, text);
            assert_eq!(found, owned(&[(text, Some("Breast cancer")), (text, Some("Ovarian cancer"))]), "{text}");
        }
        let text = "breast, renal pelvis, and prostate cancer";
        let lookups: Vec<Option<String>> = spans(&dictionary, text).into_iter().map(|(_, l)| l).collect();
        assert_eq!(
            lookups,
            [Some("Renal pelvis cancer".into()), Some("Breast cancer".into()), Some("Prostate cancer".into())]
        );
        // No conjunct when the head does not make a name with the word before.
        let found = spans(&dictionary, "fever and ovarian cancer");
        assert_eq!(found, owned(&[("ovarian cancer", None)]));
        // A concept counts once; a list longer than a coordination can be is cut after
        // MAX_CONJUNCTS conjuncts.
        let list = format!("{}ovarian cancer", "breast, ".repeat(20));
        let cut = format!("{}ovarian cancer", "breast, ".repeat(MAX_CONJUNCTS));
        assert_eq!(
            spans(&dictionary, &list),
            owned(&[(cut.as_str(), Some("Breast cancer")), (cut.as_str(), Some("Ovarian cancer"))])
        );
    }

    #[test]
    fn a_coordination_that_is_itself_a_name_is_that_names_concept() {
        let dictionary = dictionary(&[
            ("B", "Breast cancer"),
            ("O", "Ovarian cancer"),
            ("H", "Hereditary breast and ovarian cancer syndrome"),
            ("H", "breast and ovarian cancer"),
        ]);
        assert_eq!(spans(&dictionary, "breast and ovarian cancer"), owned(&[("breast and ovarian cancer", None)]));
        assert_eq!(
            spans(&dictionary, "breast and ovarian cancers"),
            owned(&[("breast and ovarian cancers", Some("breast and ovarian cancer"))])
        );
        // Written with other connectors, the same words in the same order: the name still.
        let text = "breast/ovarian cancer";
        assert_eq!(spans(&dictionary, text), owned(&[(text, Some("breast and ovarian cancer"))]));
        let text = "breast and prostate cancer";
        let dictionary = self::dictionary(&[("B", "Breast cancer"), ("P", "Prostate cancer")]);
        assert_eq!(spans(&dictionary, text), owned(&[(text, Some("Breast cancer")), (text, Some("Prostate cancer"))]));
    }

    #[test]
    fn a_coordination_inside_a_name_under_its_modifiers_and_ending_is_that_names_concept() {
        // "hereditary" a modifier and "syndrome" an ending: each makes names of other names.
        let mut entries: Vec<(String, String)> = ["Ataxia", "Myopathy", "Deafness", "Neuropathy", "Cataract"]
            .iter()
            .flat_map(|base| {
                [
                    (format!("B-{base}"), base.to_string()),
                    // Names of the same concept (a modifier that does not specify it), also
                    // written after it (a modifier, not a qualifier left out of mentions).
                    (format!("B-{base}"), format!("Hereditary {base}")),
                    (format!("B-{base}"), format!("{base}, hereditary")),
                    (format!("S-{base}"), format!("{base} syndrome")),
                ]
            })
            .collect();
        for (id, name) in [
            ("B", "Breast cancer"),
            ("O", "Ovarian cancer"),
            ("P", "Prostate cancer"),
            ("HBOC", "Hereditary Breast and Ovarian Cancer Syndrome"),
        ] {
            entries.push((id.to_string(), name.to_string()));
        }
        let borrowed: Vec<(&str, &str)> = entries.iter().map(|(id, n)| (id.as_str(), n.as_str())).collect();
        let dictionary = self::dictionary(&borrowed);
        let syndrome = Some("Hereditary Breast and Ovarian Cancer Syndrome");
        for text in ["breast and ovarian cancer", "breast-ovarian cancer", "hereditary breast/ovarian cancer"] {
            assert_eq!(spans(&dictionary, text), owned(&[(text, syndrome)]), "{text}");
        }
        // No name holds this one.
        let text = "breast and prostate cancer";
        assert_eq!(spans(&dictionary, text), owned(&[(text, Some("Breast cancer")), (text, Some("Prostate cancer"))]));
    }

    #[test]
    fn modifiers_and_subtypes_belong_to_the_mention() {
        let dictionary = with_modifiers(&[("C2", "C2 deficiency"), ("SJS", "SJS"), ("AN", "Anemia")]);
        assert_eq!(
            spans(&dictionary, "familial sporadic anemia"),
            owned(&[("familial sporadic anemia", Some("anemia"))]),
            "two modifiers, and the name under them is what retrieval searches"
        );
        assert_eq!(
            spans(&dictionary, "familial severe anemia"),
            owned(&[("anemia", None)]),
            "a qualifier is left out of the mention, and what is before it too"
        );
        assert_eq!(spans(&dictionary, "severe-anemia"), owned(&[("severe-anemia", Some("anemia"))]));
        // "Renal X" names other concepts than X: the modifier is searched with a name that the
        // ontology subdivides so, and only with such a name.
        assert_eq!(
            spans(&dictionary, "familial renal anemias"),
            owned(&[("familial renal anemias", Some("Anemia"))]),
            "no anemia of another concept is named: an anemia"
        );
        let subdivided = with_modifiers(&[("AN", "Anemia"), ("HA", "Hepatic anemia"), ("SA", "Sporadic anemia")]);
        assert_eq!(
            spans(&subdivided, "familial renal anemias"),
            owned(&[("familial renal anemias", Some("renal Anemia"))]),
            "retrieval searches the name with the modifiers from the one that specifies the concept"
        );
        assert_eq!(
            spans(&dictionary, "Type II C2 deficiency"),
            owned(&[("Type II C2 deficiency", Some("Type II C2 deficiency"))])
        );
        assert_eq!(spans(&dictionary, "SJS type 1A"), owned(&[("SJS type 1A", Some("SJS type 1A"))]));
        // A qualifier alone is not a mention; a modifier across a sentence end is not taken.
        assert!(spans(&dictionary, "The disease was severe.").is_empty());
        assert_eq!(spans(&dictionary, "It was familial. Myopathy"), owned(&[("Myopathy", None)]));
    }

    #[test]
    fn names_headed_by_a_relational_word_match_in_either_order() {
        let dictionary =
            with_modifiers(&[("A", "ASPA deficiency"), ("E", "Abnormality of the eye"), ("C", "Abnormality of C2")]);
        assert_eq!(mentions(&dictionary, "deficiency of ASPA")[0].1, ["A"]);
        assert_eq!(mentions(&dictionary, "deficiency of the ASPA")[0].1, ["A"]);
        assert_eq!(mentions(&dictionary, "a deafness deficiency")[0].1, ["D3"]);
        // "abnormality" heads two names only here: not enough to reorder a name with a number,
        // which keeps its order (see word_bags.rs); without one, its words match in any order.
        assert!(mentions(&dictionary, "C2 abnormality").is_empty());
        assert_eq!(mentions(&dictionary, "eye abnormality")[0].1, ["E"]);
    }

    #[test]
    fn a_names_words_in_another_order_are_that_name() {
        let dictionary = dictionary(&[
            ("F", "Calcification of falx cerebri"),
            ("B", "Stools, Blood"),
            ("E", "Abnormality of the eye lens"),
            ("G", "GD II"),
        ]);
        assert_eq!(
            spans(&dictionary, "Calcification of the falx cerebri and blood stools."),
            owned(&[
                ("Calcification of the falx cerebri", Some("Calcification of falx cerebri")),
                ("blood stools", Some("Stools, Blood"))
            ])
        );
        assert_eq!(
            spans(&dictionary, "abnormalities of the lens of the eye"),
            owned(&[("abnormalities of the lens of the eye", Some("Abnormality of the eye lens"))])
        );
        // Numbers and subtype codes keep a name's order; connectors and commas end the words.
        assert!(spans(&dictionary, "II GD").is_empty());
        assert!(spans(&dictionary, "blood and stools; stools, calcification").is_empty());
    }

    #[test]
    fn a_name_is_read_past_the_short_form_it_defines() {
        let dictionary = dictionary(&[
            ("D1", "Glucose-6-Phosphate Dehydrogenase Deficiency"),
            ("D2", "von Hippel-Lindau Disease"),
            ("D3", "VHL"),
            ("D4", "Colorectal cancer"),
            ("D5", "CRC"),
        ]);
        let text = "Glucose-6-phosphate dehydrogenase (G6PD) deficiency and von Hippel-Lindau (VHL) disease. \
                    Colorectal cancer (CRC) is common; VHL (von Hippel-Lindau) disease is not read past.";
        assert_eq!(
            spans(&dictionary, text),
            owned(&[
                (
                    "Glucose-6-phosphate dehydrogenase (G6PD) deficiency",
                    Some("Glucose-6-Phosphate Dehydrogenase Deficiency")
                ),
                ("von Hippel-Lindau (VHL) disease", Some("von Hippel-Lindau Disease")),
                // Alone, the short form and the name before it are found as before.
                ("Colorectal cancer", None),
                ("CRC", None),
                ("VHL", None),
            ])
        );
    }

    #[test]
    fn omim_included_titles_are_names_unless_symbols_or_general_words() {
        let dictionary = dictionary(&[
            ("OMIM:1", "ANALBUMINEMIA, INCLUDED"),
            ("OMIM:2", "CG1, INCLUDED"),
            ("OMIM:3", "RETARDATION, INCLUDED"),
            ("D1", "Mental retardation"),
            ("OMIM:4", "MOTOR DELAY, INCLUDED"),
            ("D2", "Hearing loss"),
            ("OMIM:5", "HEARING LOSS, INCLUDED"),
        ]);
        let text = "Analbuminemia, CG1 and retardation; motor delay with hearing loss.";
        let found: Vec<(String, Vec<String>)> = mentions(&dictionary, text);
        let expected = [("Analbuminemia", "OMIM:1"), ("motor delay", "OMIM:4"), ("hearing loss", "D2")];
        assert_eq!(found, expected.map(|(span, id)| (span.to_string(), vec![id.to_string()])));
        // Looked up by the name as the ontology writes it.
        assert_eq!(spans(&dictionary, "analbuminemia")[0].1.as_deref(), Some("ANALBUMINEMIA, INCLUDED"));
    }

    #[test]
    fn overlaps_resolve_leftmost_then_longest() {
        let d = |start, end| Detection { start, end, names: vec![], lookup: None, coordinated: false };
        let kept = resolve_overlaps(vec![d(5, 9), d(0, 4), d(0, 7), d(8, 12), d(12, 14)]);
        assert_eq!(kept.iter().map(|d| (d.start, d.end)).collect::<Vec<_>>(), [(0, 7), (8, 12), (12, 14)]);
    }
}
