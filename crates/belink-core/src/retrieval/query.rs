//! What retrieval is asked and what it answers.

use crate::ports::ConceptKey;
use crate::retrieval::fuse::Fused;

/// One retrieval: a mention and the ontology to search (None: every ontology).
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub text: &'a str,
    pub ontology: Option<&'a str>,
}

/// A retrieved concept.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub fused: Fused,
    pub preferred_name: String,
}

impl Candidate {
    pub fn key(&self) -> ConceptKey {
        (self.fused.ontology.clone(), self.fused.concept_id.clone())
    }
}
