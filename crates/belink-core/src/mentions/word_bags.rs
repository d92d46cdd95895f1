//! Names matched by their content words in any order (FastHPOCR's idea): "calcification of the
//! falx cerebri" is HPO's "Calcification of falx cerebri", "neoplasms of the breast" is MeSH's
//! "Neoplasms, Breast", whatever rule would have had to foresee that word order.
//!
//! A name's *bag* is the multiset of its content words' keys (singular folds, see
//! [`super::variants`]), "of" and "the" left out. A text window matches a name when its bag is
//! the name's: it starts and ends on a content word, holds only content words and fillers, and
//! crosses no comma, slash or sentence break ("hearing loss, speech delay" is not "speech
//! loss"). Any other word ends a window, connectors and negations included: "cataract and
//! cortical opacities" is not "cortical cataract".

use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashSet as HashSet};

use super::dictionary::Hit;
use super::variants::Gap;
use crate::interrupts::Ticker;

/// Words a window may hold between content words; they are not part of a bag. Adding "in",
/// "to", "on", "an", "at", "for" and "by" changed no F1 on GSC+ dev, NCBI-disease dev or train
/// by more than 0.002 and found "deficient in repair of DNA" (BENCHMARKS.md); "a" would make
/// "deficiency of vitamin" vitamin A deficiency.
const FILLERS: &[&str] = &["of", "the"];
/// Bags of more content words are not indexed: longer names rarely come in another order, and
/// the bound keeps the scan linear.
const MAX_BAG_WORDS: usize = 5;
/// Longest window looked at, in tokens (content words and fillers).
const MAX_WINDOW_TOKENS: usize = 8;

fn is_filler(key: &str) -> bool {
    FILLERS.contains(&key)
}

/// Numbers and subtype codes give a name its order: "GD II" is not "type II GD"'s "II GD".
fn has_order(word: &str) -> bool {
    word.bytes().any(|b| b.is_ascii_digit()) || super::dictionary::is_subtype_code(word)
}

/// The ontology's names by bag, for the names of at least two content words.
#[derive(Default)]
pub(crate) struct WordBags {
    /// Hash of every content word that is in some bag: a window stops at any other word.
    words: HashSet<u64>,
    /// Hash of every bag (the wrapping sum of its words' hashes, so that order does not count).
    bag_hashes: HashSet<u64>,
    /// (bag hash, the bag's words sorted and joined by spaces, pattern), by hash.
    bags: Vec<(u64, Box<str>, usize)>,
}

/// What a text's token is to a window: a word of some bag (with its hash), a filler, or a word
/// that ends the window.
#[derive(Clone, Copy)]
enum Role {
    Content(u64),
    Filler,
    Other,
}

fn bag_hash(words: &[&str]) -> u64 {
    words.iter().fold(0u64, |sum, w| sum.wrapping_add(word_hash(w)))
}

fn word_hash(key: &str) -> u64 {
    // Spread the bits: the bag hash is a sum of these.
    let mut x = FxBuildHasher.hash_one(key);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// The content words of a key form ("calcification of falx cerebri"), or None when it has
/// fewer than two or more than [`MAX_BAG_WORDS`], or a word that ends a window.
fn content_words(form: &str) -> Option<Vec<&str>> {
    let mut words = Vec::new();
    for word in form.split(' ') {
        if is_filler(word) {
            continue;
        }
        if super::dictionary::is_stop_word(word) || has_order(word) {
            return None;
        }
        words.push(word);
    }
    (2..=MAX_BAG_WORDS).contains(&words.len()).then_some(words)
}

impl WordBags {
    /// Indexes `forms` (a pattern's key form and its index); a form whose bag another form
    /// already has adds its pattern beside it.
    pub fn new<'a>(forms: impl Iterator<Item = (&'a str, usize)>) -> WordBags {
        let mut index = WordBags::default();
        for (form, pattern) in forms {
            let Some(mut words) = content_words(form) else { continue };
            words.sort_unstable();
            let hash = bag_hash(&words);
            index.words.extend(words.iter().map(|w| word_hash(w)));
            index.bag_hashes.insert(hash);
            index.bags.push((hash, Box::from(words.join(" ")), pattern));
        }
        index.bags.sort_unstable_by_key(|&(hash, _, pattern)| (hash, pattern));
        index.bags.shrink_to_fit();
        index
    }

    /// Every window of `keys` whose bag is a name's, as a hit of each name of that bag
    /// (`gaps[i]`: what separates token i from the one before it).
    pub fn find(&self, keys: &[impl AsRef<str>], gaps: &[Gap], ticker: &mut Ticker) -> Vec<Hit> {
        let mut hits = Vec::new();
        if self.bags.is_empty() {
            return hits;
        }
        let roles: Vec<Role> = keys
            .iter()
            .map(|key| {
                let key = key.as_ref();
                if is_filler(key) {
                    return Role::Filler;
                }
                let hash = word_hash(key);
                if self.words.contains(&hash) {
                    Role::Content(hash)
                } else {
                    Role::Other
                }
            })
            .collect();
        for first in 0..keys.len() {
            ticker.step();
            if !matches!(roles[first], Role::Content(_)) {
                continue;
            }
            let mut sum = 0u64;
            let mut content = 0;
            for last in first..keys.len().min(first + MAX_WINDOW_TOKENS) {
                if last > first && !matches!(gaps[last], Gap::Space | Gap::Hyphen) {
                    break;
                }
                match roles[last] {
                    Role::Content(hash) => {
                        sum = sum.wrapping_add(hash);
                        content += 1;
                    }
                    Role::Filler => continue,
                    Role::Other => break,
                }
                if content > MAX_BAG_WORDS {
                    break;
                }
                if content < 2 || !self.bag_hashes.contains(&sum) {
                    continue;
                }
                let mut window: Vec<&str> = (first..=last)
                    .filter(|&i| matches!(roles[i], Role::Content(_)))
                    .map(|i| keys[i].as_ref())
                    .collect();
                window.sort_unstable();
                let window = window.join(" ");
                let same_hash = &self.bags[self.bags.partition_point(|entry| entry.0 < sum)..];
                for (_, bag, pattern) in same_hash.iter().take_while(|entry| entry.0 == sum) {
                    if **bag == *window {
                        hits.push(Hit { first, last, pattern: *pattern, coordinated: false });
                    }
                }
            }
        }
        hits
    }

    /// Bytes held: the two hash sets, the bags and their words.
    pub fn memory_usage(&self) -> usize {
        let set = |s: &HashSet<u64>| s.capacity() * (std::mem::size_of::<u64>() + 1);
        set(&self.words)
            + set(&self.bag_hashes)
            + self.bags.capacity() * std::mem::size_of::<(u64, Box<str>, usize)>()
            + self.bags.iter().map(|(_, bag, _)| bag.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> (Vec<&str>, Vec<Gap>) {
        // Test texts separate words by spaces, with ", " for a comma.
        let mut keys = Vec::new();
        let mut gaps = Vec::new();
        for (i, part) in text.split(", ").enumerate() {
            for (j, word) in part.split(' ').enumerate() {
                keys.push(word);
                gaps.push(if i > 0 && j == 0 {
                    Gap::Comma
                } else if keys.len() == 1 {
                    Gap::Break
                } else {
                    Gap::Space
                });
            }
        }
        (keys, gaps)
    }

    fn find(bags: &WordBags, text: &str) -> Vec<(usize, usize, usize)> {
        let (keys, gaps) = keys(text);
        bags.find(&keys, &gaps, &mut Ticker::default()).into_iter().map(|h| (h.first, h.last, h.pattern)).collect()
    }

    #[test]
    fn a_names_content_words_match_in_any_order_with_or_without_fillers() {
        let bags = WordBags::new(
            [("calcification of falx cerebri", 0), ("stool blood", 1), ("skin hypopigmentation", 2), ("tumor", 3)]
                .into_iter(),
        );
        assert_eq!(find(&bags, "calcification of the falx cerebri was seen"), [(0, 4, 0)]);
        assert_eq!(find(&bags, "with blood stool"), [(1, 2, 1)]);
        assert_eq!(find(&bags, "hypopigmentation of skin"), [(0, 2, 2)]);
        // The written order is found too (the automaton finds it first; the caller dedups).
        assert_eq!(find(&bags, "stool blood"), [(0, 1, 1)]);
        // One-word names are the automaton's alone.
        assert!(find(&bags, "tumor").is_empty());
    }

    #[test]
    fn windows_stop_at_connectors_negations_commas_and_other_words() {
        let bags = WordBags::new([("cortical cataract", 0), ("speech loss", 1), ("stool blood", 2)].into_iter());
        assert!(find(&bags, "cataract and cortical").is_empty());
        assert!(find(&bags, "loss, speech").is_empty());
        assert!(find(&bags, "blood not stool").is_empty());
        assert!(find(&bags, "blood red stool").is_empty());
        // Fillers at a window's edge are not part of it.
        assert_eq!(find(&bags, "the blood of the stool of"), [(1, 4, 2)]);
    }

    #[test]
    fn bags_are_multisets_and_bounded() {
        let bags = WordBags::new(
            [("cell k cell", 0), ("g h j k l m", 1), ("no pain", 2), ("lymphoma t cell", 3), ("t cell lymphoma", 4)]
                .into_iter(),
        );
        assert!(find(&bags, "k cell").is_empty());
        assert_eq!(find(&bags, "cell cell k"), [(0, 2, 0)]);
        // Six content words: not indexed. A stop word in the name: not indexed.
        assert!(find(&bags, "m l k j h g").is_empty());
        assert!(find(&bags, "pain no").is_empty());
        let ordered =
            WordBags::new([("vitamin a deficiency", 0), ("gd ii", 1), ("chromosome 3p deletion", 2)].into_iter());
        for text in ["deficiency of vitamin", "ii gd", "deletion of chromosome 3p"] {
            assert!(find(&ordered, text).is_empty(), "{text}");
        }
        // Two names with one bag: both patterns.
        assert_eq!(find(&bags, "cell lymphoma t"), [(0, 2, 3), (0, 2, 4)]);
        // The three bags indexed ("cell cell k", "cell lymphoma t" twice) are counted.
        let entries = 3 * std::mem::size_of::<(u64, Box<str>, usize)>();
        assert!(bags.memory_usage() >= entries + "cell cell k".len() + 2 * "cell lymphoma t".len());
    }
}
