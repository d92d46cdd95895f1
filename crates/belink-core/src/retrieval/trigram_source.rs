//! The trigram source: names similar to the mention by character trigrams. Searched in the
//! model server's shared in-memory index (loaded from the store the first time an ontology
//! generation is searched), with pg_trgm in SQL as the fallback when the server cannot answer
//! and as the reference: both score and order names the same way.

use std::collections::HashMap;

use crate::catalog::OntologyState;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::ports::{Models, NameStore};
use crate::retrieval::fuse::Hit;
use crate::retrieval::trigram_index::ScoredNames;
use crate::settings::TrigramSearch;

/// Names per part sent to build an index: bounds the backend's memory while loading.
const NAMES_PER_PART: usize = 50_000;

impl<S: NameStore, M: Models> Pipeline<'_, S, M> {
    /// The trigram hits of each folded query (`None`: not searched), at most `limit` names each.
    pub(super) fn trigram_matches(
        &self,
        queries: &[(Option<&str>, Option<&str>)],
        limit: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        let threshold = self.settings.trigram_threshold;
        if self.settings.trigram_search == TrigramSearch::Server {
            if let Some(found) = self.server_trigram_matches(queries, limit, threshold)? {
                return Ok(found);
            }
        }
        queries
            .iter()
            .map(|(folded, ontology)| match folded {
                Some(folded) => self.store.trigram(folded, *ontology, limit, threshold),
                None => Ok(Vec::new()),
            })
            .collect()
    }

    /// Through the server's indexes, one request per ontology searched; None when the server
    /// cannot answer (down, restarting, or a generation newer than the names just read).
    fn server_trigram_matches(
        &self,
        queries: &[(Option<&str>, Option<&str>)],
        limit: usize,
        threshold: f64,
    ) -> Result<Option<Vec<Vec<Hit>>>> {
        let mut scored: Vec<Vec<(f32, i64)>> = vec![Vec::new(); queries.len()];
        for ontology in self.ontologies.selected(None) {
            let asking: Vec<usize> = (0..queries.len())
                .filter(|&i| queries[i].0.is_some() && queries[i].1.is_none_or(|o| o == ontology.name))
                .collect();
            if asking.is_empty() {
                continue;
            }
            let texts: Vec<&str> = asking.iter().filter_map(|&i| queries[i].0).collect();
            let Some(hits) = self.search_index(ontology, &texts, limit, threshold)? else { return Ok(None) };
            for (&i, hits) in asking.iter().zip(hits) {
                scored[i].extend(hits.into_iter().map(|(id, score)| (score, id)));
            }
        }
        // Several ontologies: merged as one pg_trgm query orders them (similarity, name id).
        for list in &mut scored {
            list.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            list.truncate(limit);
        }
        let ids: Vec<i64> = scored.iter().flatten().map(|(_, id)| *id).collect();
        let names = if ids.is_empty() { HashMap::new() } else { self.store.names_by_id(&ids)? };
        // A name deleted since the index was built is left out.
        Ok(Some(
            scored
                .into_iter()
                .map(|list| {
                    list.iter()
                        .filter_map(|(similarity, id)| {
                            names.get(id).map(|hit| Hit { similarity: *similarity as f64, ..hit.clone() })
                        })
                        .collect()
                })
                .collect(),
        ))
    }

    /// One ontology's index searched, loaded first when the server has none of its generation.
    fn search_index(
        &self,
        ontology: &OntologyState,
        texts: &[&str],
        limit: usize,
        threshold: f64,
    ) -> Result<Option<ScoredNames>> {
        let search = || self.models.trigram_search(&ontology.name, ontology.generation, texts, limit, threshold);
        if let Some(found) = unless_server_failed(search())?.flatten() {
            return Ok(Some(found));
        }
        if unless_server_failed(self.load_index(&ontology.name))?.is_none() {
            return Ok(None);
        }
        Ok(unless_server_failed(search())?.flatten())
    }

    /// Sends the ontology's names to the server, which builds its index.
    fn load_index(&self, ontology: &str) -> Result<()> {
        let mut offset = 0u64;
        self.store.index_names(ontology, NAMES_PER_PART, &mut |part| {
            let count = part.names.len() as u64;
            self.models.load_trigram_part(ontology, offset, part)?;
            offset += count;
            Ok(())
        })
    }
}

/// A model-server failure as None (the caller falls back to pg_trgm); other errors stay.
fn unless_server_failed<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::ModelServer(_)) => Ok(None),
        Err(other) => Err(other),
    }
}
