//! The character-trigram indexes of ontologies' names (belink_core::retrieval::trigram), held
//! once for the whole cluster and searched by every backend. A backend that finds no index of
//! its ontology generation sends the names (TrigramLoadRequest, in parts, on its connection);
//! the last part builds the index, which then serves everyone.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use belink_core::retrieval::trigram_index::{TrigramIndex, TrigramIndexBuilder};
use belink_core::wire::{ErrorCode, Message};
use serde_json::json;

/// Generations kept per ontology: a backend whose snapshot still sees the previous one keeps
/// being served while the others move on (no reload ping-pong between two generations).
const GENERATIONS_KEPT: usize = 2;

/// The most names one search returns per query (retrieval asks for at most MAX_K × 5).
const MAX_LIMIT: u32 = 10_000;

struct Loaded {
    generation: i64,
    index: TrigramIndex,
    build_time: Duration,
    loaded_at: Instant,
}

#[derive(Default)]
pub struct TrigramIndexes {
    by_ontology: RwLock<HashMap<String, Vec<Arc<Loaded>>>>,
}

/// The index a connection is receiving.
pub struct Loading {
    ontology: String,
    generation: i64,
    builder: TrigramIndexBuilder,
    names: u64,
    started: Instant,
}

impl TrigramIndexes {
    fn find(&self, ontology: &str, generation: i64) -> Option<Arc<Loaded>> {
        let all = self.by_ontology.read().expect("trigram index lock");
        all.get(ontology)?.iter().find(|l| l.generation == generation).cloned()
    }

    pub fn search(&self, ontology: &str, generation: i64, threshold: f64, limit: u32, queries: &[String]) -> Message {
        let Some(loaded) = self.find(ontology, generation) else {
            return Message::ErrorReply {
                code: ErrorCode::IndexMissing,
                message: format!("no trigram index of {ontology} at generation {generation}"),
            };
        };
        let limit = limit.min(MAX_LIMIT) as usize;
        let hits = queries.iter().map(|q| loaded.index.search(q, limit, threshold)).collect();
        Message::TrigramSearchReply { hits }
    }

    /// Adds a part of the names to the connection's index being loaded (`offset` 0 starts
    /// one); the last part installs it. A part out of order is refused: the backend loads again.
    pub fn load(
        &self,
        loading: &mut Option<Loading>,
        ontology: String,
        generation: i64,
        offset: u64,
        last: bool,
        names: Vec<(i64, String)>,
    ) -> Message {
        if offset == 0 {
            *loading = Some(Loading {
                ontology,
                generation,
                builder: TrigramIndexBuilder::default(),
                names: 0,
                started: Instant::now(),
            });
        } else if !loading
            .as_ref()
            .is_some_and(|l| l.ontology == ontology && l.generation == generation && l.names == offset)
        {
            *loading = None;
            return Message::ErrorReply {
                code: ErrorCode::BadRequest,
                message: format!("trigram index part at offset {offset} of {ontology} out of order"),
            };
        }
        let current = loading.as_mut().expect("set above");
        for (name_id, folded) in &names {
            current.builder.add(*name_id, folded);
        }
        current.names += names.len() as u64;
        let received = current.names;
        if last {
            let done = loading.take().expect("set above");
            self.install(done);
        }
        Message::TrigramLoadReply { names: received }
    }

    fn install(&self, done: Loading) {
        let loaded = Arc::new(Loaded {
            generation: done.generation,
            index: done.builder.finish(),
            build_time: done.started.elapsed(),
            loaded_at: Instant::now(),
        });
        eprintln!(
            "belink-server: trigram index of {} (generation {}): {} names, {:.1} MB, loaded in {:.2} s",
            done.ontology,
            done.generation,
            loaded.index.len(),
            loaded.index.memory_bytes() as f64 / 1e6,
            loaded.build_time.as_secs_f64()
        );
        let mut all = self.by_ontology.write().expect("trigram index lock");
        let kept = all.entry(done.ontology).or_default();
        kept.retain(|l| l.generation != loaded.generation);
        kept.push(loaded);
        kept.sort_by_key(|l| std::cmp::Reverse(l.generation));
        kept.truncate(GENERATIONS_KEPT);
    }

    /// Forgets every index of `ontology` (dropped): returns how many generations it held.
    pub fn drop_ontology(&self, ontology: &str) -> u32 {
        let dropped = self.by_ontology.write().expect("trigram index lock").remove(ontology);
        let count = dropped.map_or(0, |kept| kept.len() as u32);
        if count > 0 {
            eprintln!("belink-server: trigram indexes of {ontology} forgotten ({count} generations)");
        }
        count
    }

    /// The loaded indexes, for the status reply.
    pub fn to_json(&self) -> serde_json::Value {
        let all = self.by_ontology.read().expect("trigram index lock");
        let mut rows: Vec<serde_json::Value> = all
            .iter()
            .flat_map(|(ontology, kept)| {
                kept.iter().map(move |l| {
                    json!({
                        "ontology": ontology,
                        "generation": l.generation,
                        "names": l.index.len(),
                        "memory_mb": l.index.memory_bytes() as f64 / 1e6,
                        "load_s": l.build_time.as_secs_f64(),
                        "age_s": l.loaded_at.elapsed().as_secs_f64(),
                    })
                })
            })
            .collect();
        rows.sort_by_key(|r| (r["ontology"].as_str().unwrap_or_default().to_string(), r["generation"].as_i64()));
        serde_json::Value::Array(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[(i64, &str)]) -> Vec<(i64, String)> {
        list.iter().map(|(id, n)| (*id, n.to_string())).collect()
    }

    fn hits(reply: Message) -> Vec<Vec<(i64, f32)>> {
        match reply {
            Message::TrigramSearchReply { hits } => hits,
            other => panic!("not hits: {other:?}"),
        }
    }

    #[test]
    fn an_index_loaded_in_parts_serves_its_generation_only() {
        let indexes = TrigramIndexes::default();
        let query = vec!["heart attack".to_string()];
        let missing = indexes.search("medic", 7, 0.3, 10, &query);
        assert!(matches!(missing, Message::ErrorReply { code: ErrorCode::IndexMissing, .. }));

        let mut loading = None;
        let reply = indexes.load(&mut loading, "medic".into(), 7, 0, false, names(&[(1, "heart attack")]));
        assert_eq!(reply, Message::TrigramLoadReply { names: 1 });
        assert!(
            matches!(indexes.search("medic", 7, 0.3, 10, &query), Message::ErrorReply { .. }),
            "not before the last part"
        );
        let out_of_order = indexes.load(&mut None, "medic".into(), 7, 1, true, names(&[(2, "heart block")]));
        assert!(matches!(out_of_order, Message::ErrorReply { code: ErrorCode::BadRequest, .. }));
        indexes.load(&mut loading, "medic".into(), 7, 1, true, names(&[(2, "heart block")]));
        assert!(loading.is_none());
        assert_eq!(hits(indexes.search("medic", 7, 0.3, 10, &query)), [vec![(1, 1.0), (2, 0.3888889)]]);
        assert!(matches!(indexes.search("medic", 8, 0.3, 10, &query), Message::ErrorReply { .. }));
    }

    #[test]
    fn two_generations_are_kept_per_ontology() {
        let indexes = TrigramIndexes::default();
        for generation in [1, 2, 3] {
            indexes.load(&mut None, "hpo".into(), generation, 0, true, names(&[(generation, "seizure")]));
        }
        let query = vec!["seizure".to_string()];
        assert!(matches!(indexes.search("hpo", 1, 0.3, 10, &query), Message::ErrorReply { .. }));
        assert_eq!(hits(indexes.search("hpo", 2, 0.3, 10, &query)), [vec![(2, 1.0)]]);
        assert_eq!(hits(indexes.search("hpo", 3, 0.3, 10, &query)), [vec![(3, 1.0)]]);
        assert_eq!(indexes.to_json().as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_dropped_ontology_loses_every_generation_and_only_its_own() {
        let indexes = TrigramIndexes::default();
        for (ontology, generation) in [("hpo", 1), ("hpo", 2), ("medic", 1)] {
            indexes.load(&mut None, ontology.into(), generation, 0, true, names(&[(generation, "seizure")]));
        }
        assert_eq!(indexes.drop_ontology("hpo"), 2);
        assert_eq!(indexes.drop_ontology("hpo"), 0);
        let query = vec!["seizure".to_string()];
        assert!(matches!(indexes.search("hpo", 2, 0.3, 10, &query), Message::ErrorReply { .. }));
        assert_eq!(hits(indexes.search("medic", 1, 0.3, 10, &query)), [vec![(1, 1.0)]]);
    }
}
