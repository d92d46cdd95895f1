//! The in-memory trigram index alone, outside the database: built from an ontology file's
//! names as the model server builds it from `belink.names`, then searched for a corpus'
//! mentions as lexical retrieval searches it. It measures the index at sizes a cluster takes
//! long to load (a synthetic UMLS from `scripts/synthetic-umls.py`), with the search policy
//! belink uses and with the threshold alone (the higher threshold never tried first).

use std::path::Path;
use std::time::Instant;

use belink_core::fold::fold;
use belink_core::ontology::{read_file, Format, LoadOptions};
use belink_core::retrieval::trigram_index::{TrigramIndex, TrigramIndexBuilder};

use belink_eval::corpus::Document;

use crate::evaluate::percentiles;

pub struct Probe {
    pub names: usize,
    pub build_seconds: f64,
    pub memory_mb: f64,
    pub mentions: usize,
    /// Per policy: its label, p50, p95 and mean milliseconds per search.
    pub latencies: Vec<(&'static str, f64, f64, f64)>,
}

/// `limit` and `threshold` as lexical retrieval asks (50 names = k 10 × 5, threshold 0.3 by
/// default: `belink.trigram_threshold`).
pub fn probe(
    ontology: &Path,
    format: Option<Format>,
    corpus: &[Document],
    limit: usize,
    threshold: f64,
) -> Result<Probe, String> {
    let started = Instant::now();
    let shown = |e: belink_core::ontology::ReadError| format!("{}: {e}", ontology.display());
    let mut builder = TrigramIndexBuilder::default();
    let mut names = 0;
    // Read one concept at a time: a 10-million-name file is never held whole.
    for concept in read_file(ontology, &LoadOptions { format, ..LoadOptions::default() }).map_err(shown)? {
        let concept = concept.map_err(shown)?;
        if concept.obsolete {
            continue;
        }
        for (name, _) in concept.names() {
            let folded = fold(name);
            if !folded.is_empty() {
                builder.add(names as i64, &folded);
                names += 1;
            }
        }
    }
    let index = builder.finish();
    let build_seconds = started.elapsed().as_secs_f64();
    let queries: Vec<String> =
        corpus.iter().flat_map(|d| &d.mentions).map(|m| fold(&m.text)).filter(|q| !q.is_empty()).collect();
    let policies: [(&'static str, usize); 2] = [("belink's", 0), ("threshold alone", usize::MAX)];
    let latencies = policies
        .iter()
        .map(|&(label, min_postings)| {
            let times = timed(&index, &queries, limit, threshold, min_postings);
            let (p50, p95) = percentiles(&times);
            (label, p50, p95, times.iter().sum::<f64>() / times.len().max(1) as f64)
        })
        .collect();
    Ok(Probe { names, build_seconds, memory_mb: index.memory_bytes() as f64 / 1e6, mentions: queries.len(), latencies })
}

/// Milliseconds per search; `min_postings` 0 stands for belink's own policy.
fn timed(index: &TrigramIndex, queries: &[String], limit: usize, threshold: f64, min_postings: usize) -> Vec<f64> {
    queries
        .iter()
        .map(|query| {
            let started = Instant::now();
            let found = if min_postings == 0 {
                index.search(query, limit, threshold)
            } else {
                index.search_trying_higher(query, limit, threshold, min_postings)
            };
            std::hint::black_box(found);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}
