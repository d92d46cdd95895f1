//! The loaded ontologies as the pipeline sees them: what exists, which generation of names and
//! embeddings each is at (for caches), and which encoder embedded its names.

use crate::error::Error;
use crate::retrieval::fuse::FusionWeights;

/// The names' embeddings of an ontology indexed with belink_index.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// The sentence encoder that made them, and its dimension.
    pub model: String,
    pub dim: usize,
    /// That encoder gives texts differing only in the case of ASCII letters the same vector
    /// (its tokenizer lowercases first, as uncased BERT models do).
    pub ignores_case: bool,
    /// `model` is an encoder adapted to the ontology (belink_adapt_encoder), which the model
    /// server is asked for by its directory; otherwise the server's configured encoder.
    pub adapted: bool,
}

impl Embeddings {
    /// The encoder to ask the model server for: "" for its configured one.
    pub fn request_model(&self) -> &str {
        if self.adapted {
            &self.model
        } else {
            ""
        }
    }
}

/// One loaded ontology.
#[derive(Clone, Debug)]
pub struct OntologyState {
    pub name: String,
    /// Renewed whenever its concepts or names change.
    pub generation: i64,
    /// Renewed whenever its embeddings or their index change.
    pub embedding_generation: i64,
    pub embeddings: Option<Embeddings>,
    /// How its candidates' sources are weighed in fusion.
    pub fusion: FusionWeights,
    /// The version of its span scorer (renewed with every change), if it has one.
    pub span_scorer: Option<i64>,
    /// The concepts whose branches mention detection is restricted to; empty: all.
    pub detection_roots: Vec<String>,
}

/// The loaded ontologies, in name order, read once per call.
#[derive(Clone, Debug, Default)]
pub struct Ontologies(Vec<OntologyState>);

impl Ontologies {
    pub fn new(mut states: Vec<OntologyState>) -> Ontologies {
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ontologies(states)
    }

    pub fn get(&self, name: &str) -> Option<&OntologyState> {
        self.0.iter().find(|o| o.name == name)
    }

    /// `name`'s ontology, or every ontology when None, in name order.
    pub fn selected<'a, 'n>(&'a self, name: Option<&'n str>) -> impl Iterator<Item = &'a OntologyState> + use<'a, 'n> {
        self.0.iter().filter(move |o| name.is_none_or(|name| name == o.name))
    }

    /// The ontology `name` (when given) must be loaded.
    pub fn require(&self, name: Option<&str>) -> Result<(), Error> {
        match name {
            Some(name) if self.get(name).is_none() => Err(Error::UnknownOntology {
                name: name.to_string(),
                loaded: self.0.iter().map(|o| o.name.clone()).collect(),
            }),
            _ => Ok(()),
        }
    }
}
