//! BeLink: biomedical entity linking inside PostgreSQL. This crate is the pgrx glue; the logic
//! lives in crates/belink-core.

use pgrx::prelude::*;

mod api;
mod catalog;
mod client;
mod error;
mod gucs;
mod mention_dictionary_cache;
mod pipeline;
mod plans;
mod store;
mod worker;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Runs in the postmaster when preloaded: settings and the supervisor's registration only
    // (no model, no thread, no CUDA here).
    gucs::init();
    worker::init();
    // The core's long loops answer a cancel or statement_timeout: this raises its ERROR.
    belink_core::interrupts::install(check_for_interrupts);
}

fn check_for_interrupts() {
    pgrx::check_for_interrupts!();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// The test cluster preloads belink, as a real deployment does, so the supervisor, the
    /// model server and dense retrieval are covered here too: the server binary from
    /// `cargo build --release -p belink-server`, the encoder `make models` fetched and, as the
    /// re-ranker, the smaller SmolLM2 of `make smollm2-model`, quicker to load than the default
    /// (the Makefile's test-pg target does all three first).
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        let checkout = env!("CARGO_MANIFEST_DIR");
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        vec![
            "shared_preload_libraries = 'belink'",
            leak(format!("belink.server_path = '{checkout}/target/release/belink-server'")),
            leak(format!("belink.encoder_model = '{checkout}/.cache/models/all-MiniLM-L6-v2'")),
            leak(format!("belink.reranker_model = '{checkout}/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf'")),
        ]
    }
}
