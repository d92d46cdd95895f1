//! The configurations evaluated: retrieval and re-ranking settings, applied as GUCs.

/// A retrieval configuration, set through the session's GUCs.
pub struct Config {
    pub name: &'static str,
    pub settings: &'static [&'static str],
    /// Dense retrieval: the ontology's names must be embedded first (belink_index).
    pub needs_index: bool,
}

/// The configurations this build can run. Hybrid retrieval and re-ranking join this list as
/// they are built.
pub const CONFIGS: &[Config] = &[
    Config {
        name: "lexical",
        settings: &["SET belink.retrieval = 'lexical'", "SET belink.rerank = off"],
        needs_index: false,
    },
    Config {
        name: "hybrid",
        settings: &["SET belink.retrieval = 'hybrid'", "SET belink.rerank = off"],
        needs_index: true,
    },
    Config {
        name: "hybrid + re-ranking",
        settings: &["SET belink.retrieval = 'hybrid'", "SET belink.rerank = on"],
        needs_index: true,
    },
];
