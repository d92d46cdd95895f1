//! The pipeline's two ports: where names are looked up (the catalog tables, through SPI, in
//! the extension) and where models run (the model server). The core's tests implement both in
//! memory.

use std::collections::HashMap;

use crate::catalog::OntologyState;
use crate::decision::prompt::RerankItem;
use crate::error::Result;
use crate::retrieval::fuse::Hit;

/// A concept, as (ontology, concept id).
pub type ConceptKey = (String, String);

/// What the re-ranking prompt shows of a concept besides its preferred name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConceptDetails {
    pub definition: Option<String>,
    pub synonyms: Vec<String>,
}

/// One dense search: the query vector and the ontologies to search, all embedded with the
/// vector's encoder.
pub struct DenseSearch<'a> {
    pub vector: Vec<f32>,
    pub ontologies: Vec<&'a OntologyState>,
}

/// The names of the loaded ontologies.
pub trait NameStore {
    /// The names whose folded form equals each query's (an empty one matches nothing), in
    /// `ontology` or every ontology when None: preferred names first, then in load order.
    fn exact(&self, queries: &[(&str, Option<&str>)]) -> Result<Vec<Vec<Hit>>>;
    /// The names most similar to a folded text by character trigrams, best first, at most
    /// `limit`, at least `threshold` similar.
    fn trigram(&self, folded: &str, ontology: Option<&str>, limit: usize, threshold: f64) -> Result<Vec<Hit>>;
    /// For each search, the names nearest its vector (cosine), best first, at most `limit`
    /// per ontology searched.
    fn dense(&self, searches: &[DenseSearch], limit: usize) -> Result<Vec<Vec<Hit>>>;
    /// The stored embedding of each name (None when it has none yet).
    fn stored_vectors(&self, names: &[&Hit]) -> Result<Vec<Option<Vec<f32>>>>;
    fn preferred_names(&self, concepts: &[ConceptKey]) -> Result<HashMap<ConceptKey, String>>;
    fn concept_details(&self, concepts: &[ConceptKey]) -> Result<HashMap<ConceptKey, ConceptDetails>>;
}

/// The re-ranker's answer for one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Reranked {
    /// One probability per candidate, then "none of these".
    pub probabilities: Vec<f32>,
    /// The generated answer (generate mode), else empty.
    pub answer: String,
}

/// The models: the sentence encoder and the set-wise re-ranker.
pub trait Models {
    /// One vector per text, in order.
    fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>>;
    fn rerank(&self, items: Vec<RerankItem>, generate: bool) -> Result<Vec<Reranked>>;
}
