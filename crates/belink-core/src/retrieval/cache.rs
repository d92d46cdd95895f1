//! The candidates retrieved for linked mentions, kept between calls. An UPDATE over a table of
//! documents meets the same mentions again and again ("aniridia" 56 times in the 593
//! NCBI-disease training abstracts), and each mention whose name belongs to several concepts
//! would otherwise cost an encoder request and an HNSW search every time.
//!
//! Entries are the results retrieval returned, reused as they are. The whole cache is emptied
//! when anything they depend on changes (see [`epoch`]): an ontology's concepts or names, its
//! embeddings or their index, its fusion weights, the retrieval settings and the number of
//! candidates asked for.
//! It is also emptied when full: simple, and a refill costs one batch.

use std::collections::{HashMap, HashSet};

use crate::catalog::Ontologies;
use crate::error::Result;
use crate::retrieval::query::{Candidate, Query};
use crate::settings::Settings;

/// A mention's lookup text and the ontology searched (None: every ontology).
type Key = (String, Option<String>);

#[derive(Default)]
pub struct RetrievalCache {
    /// What the entries were computed under.
    epoch: String,
    entries: HashMap<Key, Vec<Candidate>>,
}

fn key(query: &Query) -> Key {
    (query.text.to_string(), query.ontology.map(str::to_string))
}

/// Everything cached candidates depend on, as one comparable string.
pub fn epoch(ontologies: &Ontologies, settings: &Settings, k: usize) -> String {
    let generations: Vec<String> = ontologies
        .selected(None)
        .map(|o| format!("{}:{}:{}:{:?}", o.name, o.generation, o.embedding_generation, o.fusion))
        .collect();
    format!("{}|{:?}|{}|{}|{k}", generations.join(","), settings.retrieval, settings.rrf_k, settings.tuned_fusion)
}

impl RetrievalCache {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The candidates of every query, in order: cached ones copied, the others from `fetch`
    /// (called once, with each missing query once) and then kept, at most `capacity` entries.
    pub fn get_or_fetch(
        &mut self,
        epoch: String,
        capacity: usize,
        queries: &[Query],
        fetch: impl FnOnce(&[Query]) -> Result<Vec<Vec<Candidate>>>,
    ) -> Result<Vec<Vec<Candidate>>> {
        if capacity == 0 {
            return fetch(queries);
        }
        if self.epoch != epoch {
            self.entries.clear();
            self.epoch = epoch;
        }
        let mut seen = HashSet::new();
        let missing: Vec<Query> =
            queries.iter().filter(|q| !self.entries.contains_key(&key(q)) && seen.insert(key(q))).copied().collect();
        let fetched: HashMap<Key, Vec<Candidate>> = missing.iter().map(key).zip(fetch(&missing)?).collect();
        let results = queries
            .iter()
            .map(|q| {
                let key = key(q);
                fetched.get(&key).or_else(|| self.entries.get(&key)).cloned().unwrap_or_default()
            })
            .collect();
        if self.entries.len() + fetched.len() > capacity {
            self.entries.clear();
        }
        self.entries.extend(fetched.into_iter().take(capacity));
        Ok(results)
    }
}
