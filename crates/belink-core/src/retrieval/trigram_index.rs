//! An in-memory character-trigram index over an ontology's folded names, scored as pg_trgm
//! scores (the SQL fallback): each word padded with two spaces before and one after, the set
//! of its 3-character windows, similarity = shared / (|query| + |name| - shared). Built once
//! per ontology generation in the model server and shared by every backend; pg_trgm's GIN
//! index rechecks thousands of names for a mention with common words ("G6PD deficiency"),
//! while this index counts shared trigrams through posting lists, with no recheck.
//!
//! Names are folded text (lowercase letters and digits, single spaces: see [`crate::fold`]),
//! so pg_trgm's word split and lowercasing change nothing. Trigrams are 3 characters packed
//! into a u64 (21 bits each); pg_trgm hashes non-ASCII trigrams into 3 bytes, so the two can
//! differ only where that hash collides.

use std::cell::RefCell;
use std::collections::HashMap;

type Trigram = u64;

/// Per query: the similar names as `(name_id, similarity)`, most similar first.
pub type ScoredNames = Vec<Vec<(i64, f32)>>;

/// The distinct trigrams of a folded text, sorted.
pub fn trigrams(folded: &str) -> Vec<Trigram> {
    let mut all = Vec::new();
    for word in folded.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let padded: Vec<char> = [' ', ' '].into_iter().chain(word.chars()).chain([' ']).collect();
        all.extend(padded.windows(3).map(|w| ((w[0] as u64) << 42) | ((w[1] as u64) << 21) | w[2] as u64));
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// pg_trgm's similarity from the counts, in float4 as pg_trgm computes it.
fn similarity(shared: u32, query: usize, name: usize) -> f32 {
    shared as f32 / (query + name - shared as usize) as f32
}

/// How many of a query's `trigrams` a name at least `threshold` similar shares, at least
/// (similarity ≤ shared / trigrams).
fn needed_lists(threshold: f64, trigrams: usize) -> usize {
    // The small margin keeps rounding from ever walking too few lists.
    ((threshold * trigrams as f64 - 1e-9).ceil() as usize).clamp(1, trigrams.max(1))
}

/// The higher threshold tried first on a large index: this share of the way from the
/// threshold asked for to 1 (0.3 → 0.475). Chosen with the gate below on NCBI-disease dev
/// mentions over 76k, 484k and 9.7 million names (BENCHMARKS.md, "Scale").
const HIGHER_THRESHOLD_SHARE: f64 = 0.25;
/// The index entries a search must walk before the higher threshold is tried first: at
/// 500,000 names, a gate of 200,000 already made p95 worse.
const MIN_POSTINGS_FOR_HIGHER_THRESHOLD: usize = 1_000_000;

/// One indexed name: its id in belink.names (the caller's key, and the tie-break: pg_trgm's
/// query orders equal similarities by name_id) and its number of trigrams.
#[derive(Debug, Clone, Copy)]
struct Entry {
    name_id: i64,
    trigrams: u32,
}

#[derive(Debug, Default)]
pub struct TrigramIndex {
    entries: Vec<Entry>,
    /// Trigram → the entries holding it, ascending.
    postings: HashMap<Trigram, Vec<u32>>,
}

/// Builds an index from names added in any order.
#[derive(Default)]
pub struct TrigramIndexBuilder {
    index: TrigramIndex,
}

impl TrigramIndexBuilder {
    pub fn add(&mut self, name_id: i64, folded: &str) {
        let entry = self.index.entries.len() as u32;
        let grams = trigrams(folded);
        self.index.entries.push(Entry { name_id, trigrams: grams.len() as u32 });
        for gram in grams {
            self.index.postings.entry(gram).or_default().push(entry);
        }
    }

    pub fn finish(mut self) -> TrigramIndex {
        for list in self.index.postings.values_mut() {
            list.shrink_to_fit();
        }
        self.index.entries.shrink_to_fit();
        self.index
    }
}

thread_local! {
    /// Shared-trigram counts per entry, reused between searches (only touched slots are reset).
    static COUNTS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl TrigramIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        let postings: usize = self.postings.values().map(|p| p.capacity() * 4 + 48).sum();
        self.entries.capacity() * std::mem::size_of::<Entry>() + postings
    }

    /// The names at least `threshold` similar to the folded query, most similar first (equal
    /// similarities by name id), at most `limit`: `(name_id, similarity)`.
    ///
    /// A name that similar shares at least ⌈threshold × |query|⌉ of the query's trigrams
    /// (similarity ≤ shared / |query|), so it holds one of the |query| − that + 1 rarest: only
    /// their posting lists are walked to find candidates, and the most common trigrams' lists
    /// (" di", "ase": tens of thousands of names) are only probed for those candidates.
    pub fn search(&self, folded: &str, limit: usize, threshold: f64) -> Vec<(i64, f32)> {
        self.search_trying_higher(folded, limit, threshold, MIN_POSTINGS_FOR_HIGHER_THRESHOLD)
    }

    /// [`TrigramIndex::search`], a higher threshold tried first when the lists to walk hold at
    /// least `min_postings` entries (`usize::MAX`: never; the tests and `belink-eval
    /// trigram-probe` compare the two). A search at a higher threshold walks fewer lists, the
    /// rarest; when it finds `limit` names, they are the `limit` best at the lower one too.
    /// Only worth it when the lists are long (a large ontology): otherwise it mostly finds too
    /// few and the search runs twice.
    pub fn search_trying_higher(
        &self,
        folded: &str,
        limit: usize,
        threshold: f64,
        min_postings: usize,
    ) -> Vec<(i64, f32)> {
        let query = trigrams(folded);
        if query.is_empty() || limit == 0 || threshold > 1.0 {
            return Vec::new();
        }
        // The query's posting lists, rarest first: what either search walks and probes.
        let mut lists: Vec<&[u32]> =
            query.iter().map(|g| self.postings.get(g).map(Vec::as_slice).unwrap_or_default()).collect();
        lists.sort_by_key(|list| list.len());
        let walked_at = |threshold: f64| lists.len() + 1 - needed_lists(threshold, lists.len());
        let postings_walked: usize = lists[..walked_at(threshold)].iter().map(|list| list.len()).sum();
        if postings_walked >= min_postings {
            let higher = threshold + (1.0 - threshold) * HIGHER_THRESHOLD_SHARE;
            let found = self.search_at(&lists, walked_at(higher), limit, higher);
            if found.len() >= limit {
                return found;
            }
        }
        self.search_at(&lists, walked_at(threshold), limit, threshold)
    }

    /// The search at `threshold` (see [`TrigramIndex::search`]) over the query's posting
    /// `lists` (rarest first), walking the first `walked` of them and probing the others.
    fn search_at(&self, lists: &[&[u32]], walked: usize, limit: usize, threshold: f64) -> Vec<(i64, f32)> {
        let query_trigrams = lists.len();
        let (walked, probed) = lists.split_at(walked);
        COUNTS.with(|counts| {
            let mut counts = counts.borrow_mut();
            if counts.len() < self.entries.len() {
                counts.resize(self.entries.len(), 0);
            }
            let mut touched = Vec::new();
            for list in walked {
                for &entry in *list {
                    let count = &mut counts[entry as usize];
                    if *count == 0 {
                        touched.push(entry);
                    }
                    *count += 1;
                }
            }
            for list in probed {
                // Lists are in entry order: a candidate is found by binary search when that is
                // cheaper than reading the whole list.
                let search_cost = touched.len() * (usize::BITS - list.len().leading_zeros()) as usize;
                if search_cost < list.len() {
                    for &entry in &touched {
                        if list.binary_search(&entry).is_ok() {
                            counts[entry as usize] += 1;
                        }
                    }
                } else {
                    for &entry in *list {
                        let count = &mut counts[entry as usize];
                        if *count > 0 {
                            *count += 1;
                        }
                    }
                }
            }
            let mut found: Vec<(i64, f32)> = Vec::new();
            for &entry in &touched {
                let shared = std::mem::take(&mut counts[entry as usize]);
                let Entry { name_id, trigrams } = self.entries[entry as usize];
                let score = similarity(shared, query_trigrams, trigrams as usize);
                if score as f64 >= threshold {
                    found.push((name_id, score));
                }
            }
            found.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            found.truncate(limit);
            found
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(names: &[&str]) -> TrigramIndex {
        let mut builder = TrigramIndexBuilder::default();
        for (i, name) in names.iter().enumerate() {
            builder.add(100 + i as i64, name);
        }
        builder.finish()
    }

    #[test]
    fn trigrams_are_pg_trgms() {
        // SELECT show_trgm('cat 1'): {"  1","  c"," 1 "," ca","at ",cat}
        let expected: Vec<Trigram> = {
            let mut t: Vec<Trigram> = ["  1", "  c", " 1 ", " ca", "at ", "cat"]
                .iter()
                .map(|s| {
                    let c: Vec<char> = s.chars().collect();
                    ((c[0] as u64) << 42) | ((c[1] as u64) << 21) | c[2] as u64
                })
                .collect();
            t.sort_unstable();
            t
        };
        assert_eq!(trigrams("cat 1"), expected);
        assert_eq!(trigrams("cat cat"), trigrams("cat"), "a set: repeated words count once");
        assert!(trigrams("").is_empty() && trigrams("  ").is_empty());
    }

    #[test]
    fn similarity_and_order_are_pg_trgms() {
        let index = index(&["heart attack", "heart", "heart block", "attack", "myocardial infarction"]);
        let found = index.search("heart attack", 10, 0.3);
        // pg_trgm 1.6: similarity('heart attack', x) for attack, heart, heart block.
        let expected: Vec<(i64, f32)> = vec![(100, 1.0), (103, 0.53846157), (101, 0.46153846), (102, 0.3888889)];
        assert_eq!(found, expected);
        assert_eq!(index.search("heart attack", 2, 0.3).len(), 2);
        assert!(index.search("heart attack", 10, 0.3).iter().all(|(id, _)| *id != 104));
    }

    #[test]
    fn ties_go_to_the_smaller_name_id_and_counts_reset_between_searches() {
        let index = index(&["seizures", "seizure", "seizure"]);
        let first = index.search("seizure", 10, 0.1);
        assert_eq!(first.iter().map(|h| h.0).collect::<Vec<_>>(), [101, 102, 100]);
        assert_eq!(index.search("seizure", 10, 0.1), first, "the same answer twice");
        assert!(index.search("", 10, 0.0).is_empty());
        assert!(index.search("zzz", 10, 0.3).is_empty());
    }

    /// Every name scored directly, as pg_trgm's similarity() would.
    fn brute_force(names: &[String], query: &str, limit: usize, threshold: f64) -> Vec<(i64, f32)> {
        let q = trigrams(query);
        let mut found: Vec<(i64, f32)> = names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let n = trigrams(name);
                let shared = q.iter().filter(|g| n.binary_search(g).is_ok()).count() as u32;
                let score = if q.is_empty() { 0.0 } else { similarity(shared, q.len(), n.len()) };
                (shared > 0 && score as f64 >= threshold).then_some((100 + i as i64, score))
            })
            .collect();
        found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        found.truncate(limit);
        found
    }

    #[test]
    fn skipping_common_trigrams_finds_exactly_what_scoring_every_name_finds() {
        // Names built from a few words, so that some trigrams are in most names.
        let words = ["disease", "deficiency", "g6pd", "heart", "cancer", "of", "the", "type", "2", "syndrome", "a"];
        let mut state = 12345u64;
        let mut next = |n: usize| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as usize % n
        };
        let names: Vec<String> = (0..400)
            .map(|_| (0..1 + next(4)).map(|_| words[next(words.len())]).collect::<Vec<_>>().join(" "))
            .collect();
        let index = index(&names.iter().map(String::as_str).collect::<Vec<_>>());
        for query in
            ["g6pd deficiency", "disease", "heart cancer syndrome", "type 2", "a", "zzz of", "the disease of the heart"]
        {
            for threshold in [0.0, 0.1, 0.3, 0.5, 0.9, 1.0] {
                for limit in [1, 5, 50, 1000] {
                    let expected = brute_force(&names, query, limit, threshold);
                    // Threshold first, the higher one never or always tried first.
                    for min_postings in [usize::MAX, 0] {
                        assert_eq!(
                            index.search_trying_higher(query, limit, threshold, min_postings),
                            expected,
                            "{query:?} at {threshold}, limit {limit}, min_postings {min_postings}"
                        );
                    }
                }
            }
        }
    }
}
