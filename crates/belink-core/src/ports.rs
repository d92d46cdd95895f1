//! The pipeline's two ports: where names are looked up (the catalog tables, through SPI, in
//! the extension) and where models run (the model server). The core's tests implement both in
//! memory.

use std::collections::HashMap;

use crate::catalog::OntologyState;
use crate::decision::prompt::RerankItem;
use crate::error::Result;
use crate::mentions::dictionary::DictionaryName;
use crate::mentions::shared::{DictionaryKey, PartReply, SharedDetection};
use crate::retrieval::fuse::Hit;
use crate::retrieval::trigram_index::ScoredNames;

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

/// A part of an ontology's names sent to build its trigram index.
pub struct IndexPart {
    pub generation: i64,
    pub names: Vec<(i64, String)>,
    pub last: bool,
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
    /// The names of `ontology` for its trigram index, `(name_id, folded name)` in name id order,
    /// read in one snapshot and handed to `each` in parts of at most `part` names with the
    /// ontology's generation in that snapshot, the last part flagged.
    fn index_names(&self, ontology: &str, part: usize, each: &mut dyn FnMut(IndexPart) -> Result<()>) -> Result<()>;
    /// The names with these ids, as hits.
    fn names_by_id(&self, ids: &[i64]) -> Result<HashMap<i64, Hit>>;
    /// The names mention detection uses of `ontology` (of the concepts under `roots` when some
    /// are given), handed to `each` in parts of at most `part` names, the last part flagged.
    fn detection_names(
        &self,
        ontology: &str,
        roots: &[String],
        part: usize,
        each: &mut dyn FnMut(Vec<DictionaryName>, bool) -> Result<()>,
    ) -> Result<()>;
    /// The stored text of the ontology's span scorer, if it has one.
    fn span_scorer(&self, ontology: &str) -> Result<Option<String>>;
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
    /// Vectors of `texts` by the encoder `model` ("" for the server's configured one; see
    /// [`crate::catalog::Embeddings::request_model`]).
    fn embed(&self, model: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>>;
    fn rerank(&self, items: Vec<RerankItem>, generate: bool) -> Result<Vec<Reranked>>;
    /// The names of `ontology` at `generation` most similar to each folded query by character
    /// trigrams, `(name_id, similarity)` best first, from the shared in-memory index (see
    /// [`crate::retrieval::trigram_index`]); `Ok(None)` when no index of that generation is
    /// loaded yet.
    fn trigram_search(
        &self,
        ontology: &str,
        generation: i64,
        queries: &[&str],
        limit: usize,
        threshold: f64,
    ) -> Result<Option<ScoredNames>>;
    /// Sends a part of an ontology's names for its index; `offset` counts the names sent
    /// before it (0 starts a new index); the last part builds it.
    fn load_trigram_part(&self, ontology: &str, offset: u64, part: IndexPart) -> Result<()>;
    /// The mentions of each text by the model server's shared dictionaries (see
    /// [`crate::mentions::shared`]), or which of them it lacks.
    fn detect(&self, keys: &[DictionaryKey], scored: bool, texts: &[&str]) -> Result<SharedDetection>;
    /// Sends a part of a shared dictionary's names; `offset` counts the names sent before it
    /// (0 starts anew, waiting while another session sends the same dictionary); the last part
    /// builds it.
    fn load_dictionary_part(
        &self,
        key: &DictionaryKey,
        offset: u64,
        last: bool,
        names: Vec<DictionaryName>,
    ) -> Result<PartReply>;
    /// Sends the span scorer of `ontology` at `version` (its stored text).
    fn load_scorer(&self, ontology: &str, version: i64, text: &str) -> Result<()>;
}
