//! The candidates retrieved for linked mentions, kept per backend between calls. An UPDATE
//! over a table of documents meets the same mentions again and again ("aniridia" 56 times in
//! the 593 NCBI-disease training abstracts), and each mention whose name belongs to several
//! concepts would otherwise cost an encoder request and an HNSW search every time.
//!
//! Entries are the results retrieval returned, reused as they are. The whole cache is emptied
//! when anything they depend on changes: an ontology's concepts or names (`generation`), its
//! embeddings or their index (`embedding_generation`; both are never reused, see
//! sql/catalog.sql), belink.retrieval, belink.rrf_k and the number of candidates asked for.
//! It is also emptied when full (belink.retrieval_cache_size entries): simple, and a refill
//! costs one batch.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use crate::api::candidates::{Candidate, Query};
use crate::catalog::Ontologies;
use crate::gucs;

/// A mention's lookup text and the ontology searched (None: every ontology).
type Key = (String, Option<String>);

#[derive(Default)]
struct Cache {
    /// What the entries were computed under (see [`epoch`]).
    epoch: String,
    entries: HashMap<Key, Vec<Candidate>>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

fn key(query: &Query) -> Key {
    (query.text.to_string(), query.ontology.map(str::to_string))
}

/// The candidates of every query, in order: cached ones copied, the others from `fetch`
/// (called once, with each missing query once) and then cached.
pub fn retrieve_cached(
    ontologies: &Ontologies,
    queries: &[Query],
    k: usize,
    fetch: impl FnOnce(&[Query]) -> Vec<Vec<Candidate>>,
) -> Vec<Vec<Candidate>> {
    let capacity = gucs::RETRIEVAL_CACHE_SIZE.get().max(0) as usize;
    if capacity == 0 {
        return fetch(queries);
    }
    let epoch = epoch(ontologies, k);
    let missing: Vec<Query> = CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.epoch != epoch {
            cache.entries.clear();
            cache.epoch = epoch;
        }
        let mut seen = HashSet::new();
        queries.iter().filter(|q| !cache.entries.contains_key(&key(q)) && seen.insert(key(q))).copied().collect()
    });
    // No borrow is held here: fetching runs SQL and may raise an ERROR.
    let fetched: HashMap<Key, Vec<Candidate>> = missing.iter().map(key).zip(fetch(&missing)).collect();
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let results = queries
            .iter()
            .map(|q| {
                let key = key(q);
                fetched.get(&key).or_else(|| cache.entries.get(&key)).cloned().unwrap_or_default()
            })
            .collect();
        if cache.entries.len() + fetched.len() > capacity {
            cache.entries.clear();
        }
        cache.entries.extend(fetched.into_iter().take(capacity));
        results
    })
}

/// Everything cached candidates depend on, as one comparable string.
fn epoch(ontologies: &Ontologies, k: usize) -> String {
    let generations: Vec<String> =
        ontologies.selected(None).map(|o| format!("{}:{}:{}", o.name, o.generation, o.embedding_generation)).collect();
    let retrieval = gucs::get(&gucs::RETRIEVAL).unwrap_or_default();
    format!("{}|{retrieval}|{}|{k}", generations.join(","), gucs::RRF_K.get())
}
