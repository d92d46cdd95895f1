//! BeLink: biomedical entity linking inside PostgreSQL. This crate is the pgrx glue; the logic
//! lives in crates/belink-core.

use pgrx::prelude::*;

mod api;
mod catalog;
mod client;
mod dictionaries;
mod error;
mod gucs;
mod plans;
mod retrieval_cache;
mod worker;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Runs in the postmaster when preloaded: settings and the supervisor's registration only
    // (no model, no thread, no CUDA here).
    gucs::init();
    worker::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
