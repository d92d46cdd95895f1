//! Dense retrieval alone, outside the database: exact cosine search of a corpus' gold mentions
//! over an ontology file's names with an encoder directory. A quick measure of an encoder (a
//! trained one against its base) without a cluster, an index or fusion; `make eval` gives the
//! figures that count.

use std::path::Path;

use belink_core::ids::canonical;
use belink_core::ontology::{load_file, LoadOptions};
use belink_models::encoder::SentenceEncoder;
use candle_core::{Device, Tensor};

use belink_eval::corpus::Document;

/// The mentions of `documents` with exactly one gold id, as (canonical id, text): what a
/// training split teaches (composite and NIL mentions are left out).
pub fn single_id_mentions(documents: &[Document]) -> Vec<(String, String)> {
    documents
        .iter()
        .flat_map(|d| &d.mentions)
        .filter_map(|m| match m.concept_ids()[..] {
            [only] => Some((canonical(only), m.text.clone())),
            _ => None,
        })
        .collect()
}

pub struct ProbeResult {
    pub mentions: usize,
    pub names: usize,
    /// Share of mentions whose k nearest names' concepts include a gold one, for k = 1, 5, 10.
    pub recall_at: [(usize, f64); 3],
    pub seconds: f64,
}

/// `extra_names`: (canonical id, name) pairs indexed with the ontology's names.
pub fn probe(
    model: &Path,
    ontology: &Path,
    extra_names: &[(String, String)],
    corpus: &[Document],
) -> Result<ProbeResult, String> {
    let started = std::time::Instant::now();
    let encoder = SentenceEncoder::load(model, &Device::Cpu, None).map_err(|e| e.to_string())?;
    let parsed = load_file(ontology, &LoadOptions::default()).map_err(|e| format!("{}: {e}", ontology.display()))?;
    let mut names: Vec<(String, String)> = Vec::new();
    for concept in parsed.active_concepts() {
        let ids: Vec<String> = std::iter::once(&concept.id).chain(&concept.alt_ids).map(|id| canonical(id)).collect();
        let key = ids.join("|");
        names.extend(concept.names().map(|(name, _)| (key.clone(), name.to_string())));
    }
    names.extend(extra_names.iter().cloned());
    let texts: Vec<&str> = names.iter().map(|(_, n)| n.as_str()).collect();
    let name_vectors = embed_all(&encoder, &texts)?;

    let mentions: Vec<(Vec<String>, &str)> = corpus
        .iter()
        .flat_map(|d| &d.mentions)
        .filter(|m| !m.is_nil())
        .map(|m| (m.concept_ids().iter().map(|id| canonical(id)).collect(), m.text.as_str()))
        .collect();
    let mention_texts: Vec<&str> = mentions.iter().map(|(_, t)| *t).collect();
    let mention_vectors = embed_all(&encoder, &mention_texts)?;

    let similarities =
        mention_vectors.matmul(&name_vectors.t().map_err(err)?).and_then(|s| s.to_vec2::<f32>()).map_err(err)?;
    let ks = [1usize, 5, 10];
    let mut hits = [0usize; 3];
    for ((gold, _), row) in mentions.iter().zip(similarities) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        // Ranks over concepts: a concept's best name stands for it.
        let mut concepts: Vec<&str> = Vec::new();
        for &i in &order {
            let key = names[i].0.as_str();
            if !concepts.contains(&key) {
                concepts.push(key);
                if concepts.len() == 10 {
                    break;
                }
            }
        }
        let first_hit = concepts.iter().position(|key| key.split('|').any(|id| gold.iter().any(|g| g == id)));
        for (hit, k) in hits.iter_mut().zip(ks) {
            *hit += usize::from(first_hit.is_some_and(|rank| rank < k));
        }
    }
    let share = |h: usize| h as f64 / mentions.len().max(1) as f64;
    Ok(ProbeResult {
        mentions: mentions.len(),
        names: names.len(),
        recall_at: [(1, share(hits[0])), (5, share(hits[1])), (10, share(hits[2]))],
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn err(e: candle_core::Error) -> String {
    e.to_string()
}

/// Rows of L2-normalized vectors, one per text, in order.
fn embed_all(encoder: &SentenceEncoder, texts: &[&str]) -> Result<Tensor, String> {
    let flat = encoder.embed_all(texts).map_err(|e| e.to_string())?;
    Tensor::from_vec(flat, (texts.len(), encoder.dim()), &Device::Cpu).map_err(err)
}
