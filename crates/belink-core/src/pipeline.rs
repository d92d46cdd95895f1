//! The linking pipeline: what one SQL call works with. The stages add their steps as methods:
//! retrieval ([`crate::retrieval`]), decision ([`crate::decision`]) and linking
//! ([`crate::link`]).

use std::cell::RefCell;

use crate::catalog::Ontologies;
use crate::ports::{Models, NameStore};
use crate::retrieval::cache::RetrievalCache;
use crate::settings::Settings;

pub struct Pipeline<'a, S: NameStore, M: Models> {
    pub store: &'a S,
    pub models: &'a M,
    pub settings: &'a Settings,
    pub ontologies: &'a Ontologies,
    /// Candidates of linked mentions kept between calls (the caller keeps it between them).
    pub(crate) cache: RefCell<RetrievalCache>,
}

impl<'a, S: NameStore, M: Models> Pipeline<'a, S, M> {
    pub fn new(store: &'a S, models: &'a M, settings: &'a Settings, ontologies: &'a Ontologies) -> Self {
        Pipeline { store, models, settings, ontologies, cache: RefCell::default() }
    }

    /// The pipeline, with the retrieval cache of earlier calls.
    pub fn with_cache(self, cache: RetrievalCache) -> Self {
        Pipeline { cache: RefCell::new(cache), ..self }
    }

    /// The retrieval cache, to keep for the next call.
    pub fn into_cache(self) -> RetrievalCache {
        self.cache.into_inner()
    }
}
