//! The configurations evaluated: retrieval and re-ranking settings, applied as GUCs.

use postgres::Client;

/// A retrieval configuration, set through the session's GUCs.
pub struct Config {
    pub name: &'static str,
    pub settings: &'static [&'static str],
    /// Dense retrieval: the ontology's names must be embedded first (belink_index).
    pub needs_index: bool,
    /// One retrieval source alone (or another reference point): measured for normalization,
    /// not for end-to-end linking.
    pub single_source: bool,
}

impl Config {
    /// Sets the session up for this configuration (from the defaults: RESET ALL first). The
    /// session's kept plans are discarded too: a generic plan made under the previous
    /// configuration would ignore this one's planner settings (exact search's
    /// enable_indexscan = off would still search the HNSW index).
    pub fn apply(&self, client: &mut Client) -> Result<(), String> {
        for setting in ["RESET ALL", "DISCARD PLANS"].iter().chain(self.settings) {
            client.batch_execute(setting).map_err(|e| format!("{setting}: {e}"))?;
        }
        Ok(())
    }
}

/// The configuration whose re-ranker answers the report reads through other gates and margins.
pub const UNGATED_RERANKING: &str = "hybrid + re-ranking";

/// The re-ranker sweep's configuration (belink-eval rerank-sweep): ungated, at the default margin.
pub const SWEEP_RERANKING: Config = Config {
    name: "hybrid + re-ranking, ungated at the default margin",
    settings: &[
        "SET belink.retrieval = 'hybrid'",
        "SET belink.rerank = on",
        "SET belink.rerank_override_threshold = 0",
        "SET belink.rerank_none_threshold = 0",
    ],
    needs_index: true,
    single_source: true,
};

/// The configurations evaluated: each retrieval source alone (trigram both through the model
/// server's index and through pg_trgm; dense both through the HNSW index and by exact search,
/// the index turned off), then the combinations users run.
pub const CONFIGS: &[Config] = &[
    Config {
        name: "exact only",
        settings: &["SET belink.retrieval = 'exact'", "SET belink.rerank = off"],
        needs_index: false,
        single_source: true,
    },
    Config {
        name: "trigram only",
        settings: &["SET belink.retrieval = 'trigram'", "SET belink.rerank = off"],
        needs_index: false,
        single_source: true,
    },
    Config {
        name: "trigram only (pg_trgm)",
        settings: &[
            "SET belink.retrieval = 'trigram'",
            "SET belink.rerank = off",
            "SET belink.trigram_search = 'pg_trgm'",
        ],
        needs_index: false,
        single_source: true,
    },
    Config {
        name: "dense only (HNSW)",
        settings: &["SET belink.retrieval = 'dense'", "SET belink.rerank = off"],
        needs_index: true,
        single_source: true,
    },
    Config {
        name: "dense only (exact search)",
        settings: &["SET belink.retrieval = 'dense'", "SET belink.rerank = off", "SET enable_indexscan = off"],
        needs_index: true,
        single_source: true,
    },
    Config {
        name: "lexical",
        settings: &["SET belink.retrieval = 'lexical'", "SET belink.rerank = off"],
        needs_index: false,
        single_source: false,
    },
    Config {
        name: "hybrid, equal weights",
        settings: &["SET belink.retrieval = 'hybrid'", "SET belink.rerank = off", "SET belink.tuned_fusion = off"],
        needs_index: true,
        single_source: true,
    },
    Config {
        name: "hybrid",
        settings: &["SET belink.retrieval = 'hybrid'", "SET belink.rerank = off"],
        needs_index: true,
        single_source: false,
    },
    Config {
        name: UNGATED_RERANKING,
        // Ungated, near ties or not: the report computes what each gate and margin would give
        // from these answers.
        settings: &[
            "SET belink.retrieval = 'hybrid'",
            "SET belink.rerank = on",
            "SET belink.rerank_override_threshold = 0",
            "SET belink.rerank_none_threshold = 0",
            "SET belink.rerank_margin = 1",
        ],
        needs_index: true,
        single_source: true,
    },
    Config {
        name: "hybrid + re-ranking, defaults",
        // What a user who turns re-ranking on gets.
        settings: &["SET belink.retrieval = 'hybrid'", "SET belink.rerank = on"],
        needs_index: true,
        single_source: false,
    },
];
