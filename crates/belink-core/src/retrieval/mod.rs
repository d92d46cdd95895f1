//! Candidate retrieval: the names equal to the folded mention (exact), similar to it by
//! character trigrams, and, for ontologies indexed with belink_index, near it by sentence
//! embedding (dense), fused by reciprocal rank into one list of concepts.

pub mod cache;
pub mod dense;
pub mod fuse;
pub mod query;
pub mod trigram_index;
mod trigram_source;
pub mod tune;

use std::collections::HashMap;

use crate::catalog::OntologyState;
use crate::error::Result;
use crate::fold::fold;
use crate::interrupts::Ticker;
use crate::pipeline::Pipeline;
use crate::ports::{ConceptKey, DenseSearch, Models, NameStore};
use crate::settings::Retrieval;
use fuse::{fuse, Fused, FusionWeights, Hit, Source, SourceLists};
pub use query::{Candidate, Query};

/// The most candidates one call may ask for.
pub const MAX_K: usize = 1000;
/// Names fetched per source and per candidate wanted: a concept has several names.
const NAMES_PER_CANDIDATE: usize = 5;

/// Which lexical sources to use. Linking detected mentions (already exact dictionary matches)
/// skips the trigram source, by far the slowest (unless belink.retrieval asks for it alone),
/// and keeps its results in the retrieval cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lexical {
    ExactAndTrigram,
    ExactOnly,
}

/// Whether the exact matches all name one concept: such a mention is decided by its exact
/// match (see [`crate::decision`]) and needs no dense retrieval when linking.
pub(crate) fn one_concept(hits: &[Hit]) -> bool {
    hits.first()
        .is_some_and(|first| hits.iter().all(|h| h.ontology == first.ontology && h.concept_id == first.concept_id))
}

impl<S: NameStore, M: Models> Pipeline<'_, S, M> {
    /// The fused candidates of every query, at most `k` each, in order.
    pub fn retrieve(&self, queries: &[Query], k: usize, lexical: Lexical) -> Result<Vec<Vec<Candidate>>> {
        match lexical {
            Lexical::ExactOnly => {
                let epoch = cache::epoch(self.ontologies, self.settings, k);
                let capacity = self.settings.retrieval_cache_size;
                self.cache
                    .borrow_mut()
                    .get_or_fetch(epoch, capacity, queries, |missing| self.search(missing, k, lexical))
            }
            Lexical::ExactAndTrigram => self.search(queries, k, lexical),
        }
    }

    fn search(&self, queries: &[Query], k: usize, lexical: Lexical) -> Result<Vec<Vec<Candidate>>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let per_source = k * NAMES_PER_CANDIDATE;
        let folded: Vec<String> = queries.iter().map(|q| fold(q.text)).collect();
        let lookups: Vec<(&str, Option<&str>)> =
            folded.iter().zip(queries).map(|(f, q)| (f.as_str(), q.ontology)).collect();
        let exact = self.store.exact(&lookups)?;
        let retrieval = self.settings.retrieval;
        let targets: Vec<Vec<&OntologyState>> = queries
            .iter()
            .zip(&folded)
            .zip(&exact)
            .map(|((query, folded), hits)| {
                let decided_by_exact =
                    lexical == Lexical::ExactOnly && retrieval.uses(Source::Exact) && one_concept(hits);
                match folded.is_empty() || decided_by_exact {
                    true => Vec::new(),
                    false => self.dense_targets(query.ontology),
                }
            })
            .collect();
        // Linking skips the trigram source, unless it is the only one asked for.
        let trigram_wanted = lexical == Lexical::ExactAndTrigram || retrieval == Retrieval::Only(Source::Trigram);
        // One dense search per query and encoder of its targets.
        let searches: Vec<(usize, Vec<&OntologyState>)> = targets
            .into_iter()
            .enumerate()
            .flat_map(|(i, targets)| dense::by_encoder(targets).into_iter().map(move |part| (i, part)))
            .collect();
        let vectors = self.query_vectors(queries, &exact, &searches)?;
        let dense = self.dense_matches(queries.len(), vectors, searches, per_source)?;
        let trigram_queries: Vec<(Option<&str>, Option<&str>)> = queries
            .iter()
            .zip(&folded)
            .map(|(query, folded)| {
                let wanted = trigram_wanted && !folded.is_empty() && self.searches(Source::Trigram, query.ontology);
                (wanted.then_some(folded.as_str()), query.ontology)
            })
            .collect();
        let trigram = self.trigram_matches(&trigram_queries, per_source)?;
        let mut all = Vec::with_capacity(queries.len());
        let mut ticker = Ticker::default();
        for (((folded, exact), dense), trigram) in folded.iter().zip(&exact).zip(&dense).zip(&trigram) {
            ticker.step();
            if folded.is_empty() {
                all.push(Vec::new());
                continue;
            }
            // The exact matches are always looked up (dense retrieval may reuse their vectors),
            // and fused only when the exact source is used.
            let exact: &[Hit] = if retrieval.uses(Source::Exact) { exact } else { &[] };
            let weights_of = |ontology: &str| self.fusion_weights(ontology);
            let mut fused = fuse(SourceLists { exact, trigram, dense }, self.settings.rrf_k, weights_of);
            fused.truncate(k);
            all.push(fused);
        }
        self.with_preferred_names(all)
    }

    /// How `ontology`'s candidates are fused: its own weights (belink_tune_fusion, which
    /// tunes them for hybrid retrieval) when belink.tuned_fusion is on and retrieval is
    /// hybrid, else equal weights.
    fn fusion_weights(&self, ontology: &str) -> FusionWeights {
        match self.settings.tuned_fusion && self.settings.retrieval == Retrieval::Hybrid {
            true => self.ontologies.get(ontology).map(|o| o.fusion).unwrap_or_default(),
            false => FusionWeights::default(),
        }
    }

    /// Whether `source` is searched for a query in `ontology` (None: every ontology): used by
    /// the settings and weighed above 0 for at least one of the ontologies searched (a source
    /// weighed 0 cannot change the order, so it is not searched).
    fn searches(&self, source: Source, ontology: Option<&str>) -> bool {
        self.settings.retrieval.uses(source)
            && self.ontologies.selected(ontology).any(|o| self.fusion_weights(&o.name).of(source) > 0.0)
    }

    /// The ontologies a query searches densely: those selected that have embeddings and weigh
    /// dense search above 0.
    fn dense_targets(&self, ontology: Option<&str>) -> Vec<&OntologyState> {
        match self.settings.retrieval.uses(Source::Dense) {
            true => (self.ontologies.selected(ontology))
                .filter(|o| o.embeddings.is_some() && self.fusion_weights(&o.name).dense > 0.0)
                .collect(),
            false => Vec::new(),
        }
    }

    /// The dense hits of each query, in one store call; a query searched with several encoders
    /// (ontologies adapted apart) takes their lists' hits in turn, rank by rank.
    fn dense_matches(
        &self,
        query_count: usize,
        vectors: Vec<Option<Vec<f32>>>,
        searches: Vec<(usize, Vec<&OntologyState>)>,
        limit: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        let mut lists: Vec<Vec<Vec<Hit>>> = vec![Vec::new(); query_count];
        let mut store_searches = Vec::new();
        let mut positions = Vec::new();
        for (vector, (query, ontologies)) in vectors.into_iter().zip(searches) {
            if let Some(vector) = vector {
                dense::check_dimensions(&vector, &ontologies)?;
                store_searches.push(DenseSearch { vector, ontologies });
                positions.push(query);
            }
        }
        if !store_searches.is_empty() {
            for (query, hits) in positions.into_iter().zip(self.store.dense(&store_searches, limit)?) {
                lists[query].push(hits);
            }
        }
        Ok(lists.into_iter().map(interleave).collect())
    }

    fn with_preferred_names(&self, lists: Vec<Vec<Fused>>) -> Result<Vec<Vec<Candidate>>> {
        let wanted: Vec<ConceptKey> =
            lists.iter().flatten().map(|f| (f.ontology.clone(), f.concept_id.clone())).collect();
        let names: HashMap<ConceptKey, String> =
            if wanted.is_empty() { HashMap::new() } else { self.store.preferred_names(&wanted)? };
        Ok(lists
            .into_iter()
            .map(|fused| {
                fused
                    .into_iter()
                    .map(|f| {
                        let key = (f.ontology.clone(), f.concept_id.clone());
                        let preferred_name = names.get(&key).cloned().unwrap_or_default();
                        Candidate { fused: f, preferred_name }
                    })
                    .collect()
            })
            .collect())
    }
}

/// The hits of several ranked lists, rank by rank (the first list's first, the second's
/// first...).
fn interleave(mut lists: Vec<Vec<Hit>>) -> Vec<Hit> {
    if lists.len() <= 1 {
        return lists.pop().unwrap_or_default();
    }
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    let mut iters: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    let mut merged = Vec::new();
    for _ in 0..longest {
        merged.extend(iters.iter_mut().filter_map(Iterator::next));
    }
    merged
}

#[cfg(test)]
mod tests;
