//! Running the core's pipeline inside a SQL call: the session's settings (read once), the
//! loaded ontologies, the SPI name store, the model server, and the session's retrieval cache,
//! which lives on between calls (see belink_core::retrieval::cache).

use std::cell::RefCell;

use belink_core::error::Result;
use belink_core::pipeline::Pipeline;
use belink_core::retrieval::cache::RetrievalCache;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::catalog::read_ontologies;
use crate::client::ServerModels;
use crate::error::OrRaiseError;
use crate::gucs;
use crate::store::SpiNameStore;

thread_local! {
    static RETRIEVAL_CACHE: RefCell<RetrievalCache> = RefCell::new(RetrievalCache::default());
}

pub type SqlPipeline<'a, 'c, 'conn> = Pipeline<'a, SpiNameStore<'c, 'conn>, ServerModels>;

/// Runs `f` on the pipeline, after checking that `ontology` (when given) is loaded; a core
/// error is raised as its SQLSTATE.
pub fn run<R>(ontology: Option<&str>, f: impl FnOnce(&SqlPipeline<'_, '_, '_>, &SpiClient<'_>) -> Result<R>) -> R {
    let settings = gucs::settings();
    Spi::connect(|client| {
        let ontologies = read_ontologies(client);
        ontologies.require(ontology).or_raise_error();
        let store = SpiNameStore::new(client);
        // Taken out for the call: an ERROR on the way leaves the session with an empty cache,
        // never a half-updated one.
        let cache = RETRIEVAL_CACHE.take();
        let pipeline = Pipeline::new(&store, &ServerModels, &settings, &ontologies).with_cache(cache);
        let result = f(&pipeline, client);
        RETRIEVAL_CACHE.set(pipeline.into_cache());
        result.or_raise_error()
    })
}
