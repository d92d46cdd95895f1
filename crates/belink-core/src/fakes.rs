//! In-memory implementations of the two ports, for testing the pipeline without PostgreSQL or
//! models: names in a vector, trigram similarity from an index built per call, dense search by exact
//! cosine over vectors from a deterministic toy encoder, and a scripted re-ranker.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use crate::catalog::{Embeddings, Ontologies, OntologyState};
use crate::decision::prompt::RerankItem;
use crate::error::{ModelServerError, Result};
use crate::fold::fold;
use crate::mentions::dictionary::{DictionaryName, MentionDictionary};
use crate::mentions::shared::{DictionaryKey, DictionaryLoading, PartReply, SharedDetection, SharedDictionaries};
use crate::ports::{ConceptDetails, ConceptKey, DenseSearch, IndexPart, Models, NameStore, Reranked};
use crate::retrieval::fuse::Hit;
use crate::retrieval::trigram_index::{ScoredNames, TrigramIndex, TrigramIndexBuilder};
use crate::wire::ErrorCode;

/// A request the (fake) server refuses, as the real one replies.
fn refused(message: String) -> ModelServerError {
    ModelServerError::Failed { code: ErrorCode::BadRequest, message }
}

pub const TOY_MODEL: &str = "toy-encoder";

/// A toy sentence encoder: letter counts of the lowercased text, L2-normalized. Texts with
/// the same letters get the same vector; it ignores case.
pub fn toy_vector(text: &str) -> Vec<f32> {
    let mut v = [0f32; 26];
    for c in text.to_lowercase().chars().filter(char::is_ascii_lowercase) {
        v[(c as u8 - b'a') as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter().map(|x| x / norm).collect()
}

pub struct StoredName {
    pub ontology: String,
    pub concept_id: String,
    pub name: String,
    pub preferred: bool,
    pub vector: Option<Vec<f32>>,
}

#[derive(Default)]
pub struct FakeStore {
    pub names: Vec<StoredName>,
    pub definitions: HashMap<ConceptKey, String>,
    /// Calls of `exact`, to see what the retrieval cache saves.
    pub exact_calls: Cell<usize>,
    pub stored_vector_reads: Cell<usize>,
    /// Calls of `index_names`: trigram indexes loaded into the (fake) model server.
    pub index_loads: Cell<usize>,
    /// Span scorers' texts by ontology.
    pub span_scorers: HashMap<String, String>,
}

impl FakeStore {
    /// An ontology from (concept id, names): the first name is the preferred one; every name
    /// embedded with the toy encoder.
    pub fn with(mut self, ontology: &str, concepts: &[(&str, &[&str])]) -> Self {
        for (id, names) in concepts {
            for (i, name) in names.iter().enumerate() {
                self.names.push(StoredName {
                    ontology: ontology.into(),
                    concept_id: id.to_string(),
                    name: name.to_string(),
                    preferred: i == 0,
                    vector: Some(toy_vector(name)),
                });
            }
        }
        self
    }

    pub fn ontologies(&self, embedded: bool) -> Ontologies {
        let names: HashSet<&str> = self.names.iter().map(|n| n.ontology.as_str()).collect();
        Ontologies::new(
            names
                .into_iter()
                .map(|name| OntologyState {
                    span_scorer: None,
                    detection_roots: Vec::new(),
                    name: name.into(),
                    generation: 1,
                    embedding_generation: 1,
                    embeddings: embedded.then(|| Embeddings {
                        model: TOY_MODEL.into(),
                        dim: 26,
                        ignores_case: true,
                        adapted: false,
                    }),
                    fusion: Default::default(),
                })
                .collect(),
        )
    }

    pub fn dictionary(&self, ontology: &str) -> MentionDictionary {
        MentionDictionary::build(
            self.names
                .iter()
                .filter(|n| n.ontology == ontology)
                .map(|n| DictionaryName {
                    concept_id: n.concept_id.clone(),
                    name: n.name.clone(),
                    normalized: fold(&n.name),
                })
                .collect(),
        )
        .unwrap()
    }

    fn hit(name: &StoredName, similarity: f64) -> Hit {
        Hit {
            ontology: name.ontology.clone(),
            concept_id: name.concept_id.clone(),
            matched_name: name.name.clone(),
            similarity,
        }
    }

    fn in_ontology<'a>(&'a self, ontology: Option<&'a str>) -> impl Iterator<Item = &'a StoredName> + 'a {
        self.names.iter().filter(move |n| ontology.is_none_or(|o| o == n.ontology))
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl NameStore for FakeStore {
    fn exact(&self, queries: &[(&str, Option<&str>)]) -> Result<Vec<Vec<Hit>>> {
        self.exact_calls.set(self.exact_calls.get() + 1);
        Ok(queries
            .iter()
            .map(|(folded, ontology)| {
                let mut found: Vec<&StoredName> =
                    self.in_ontology(*ontology).filter(|n| !folded.is_empty() && fold(&n.name) == *folded).collect();
                found.sort_by_key(|n| !n.preferred);
                found.into_iter().map(|n| Self::hit(n, 1.0)).collect()
            })
            .collect())
    }

    /// pg_trgm's scores and order, from an index built for the call; name ids are positions.
    fn trigram(&self, folded: &str, ontology: Option<&str>, limit: usize, threshold: f64) -> Result<Vec<Hit>> {
        let mut builder = TrigramIndexBuilder::default();
        for (id, name) in self.names.iter().enumerate() {
            if ontology.is_none_or(|o| o == name.ontology) {
                builder.add(id as i64, &fold(&name.name));
            }
        }
        let found = builder.finish().search(folded, limit, threshold);
        Ok(found.into_iter().map(|(id, similarity)| Self::hit(&self.names[id as usize], similarity as f64)).collect())
    }

    fn index_names(&self, ontology: &str, part: usize, each: &mut dyn FnMut(IndexPart) -> Result<()>) -> Result<()> {
        self.index_loads.set(self.index_loads.get() + 1);
        let names: Vec<(i64, String)> = (self.names.iter().enumerate())
            .filter(|(_, n)| n.ontology == ontology)
            .map(|(id, n)| (id as i64, fold(&n.name)))
            .collect();
        let parts: Vec<&[(i64, String)]> = if names.is_empty() { vec![&[]] } else { names.chunks(part).collect() };
        for (i, chunk) in parts.iter().enumerate() {
            each(IndexPart { generation: 1, names: chunk.to_vec(), last: i + 1 == parts.len() })?;
        }
        Ok(())
    }

    /// Every name of the ontology, whatever its kind; detection roots are not modelled.
    fn detection_names(
        &self,
        ontology: &str,
        _roots: &[String],
        part: usize,
        each: &mut dyn FnMut(Vec<DictionaryName>, bool) -> Result<()>,
    ) -> Result<()> {
        let names: Vec<DictionaryName> = self
            .in_ontology(Some(ontology))
            .map(|n| DictionaryName {
                concept_id: n.concept_id.clone(),
                name: n.name.clone(),
                normalized: fold(&n.name),
            })
            .collect();
        let parts: Vec<&[DictionaryName]> = if names.is_empty() { vec![&[]] } else { names.chunks(part).collect() };
        for (i, chunk) in parts.iter().enumerate() {
            each(chunk.to_vec(), i + 1 == parts.len())?;
        }
        Ok(())
    }

    fn span_scorer(&self, ontology: &str) -> Result<Option<String>> {
        Ok(self.span_scorers.get(ontology).cloned())
    }

    fn names_by_id(&self, ids: &[i64]) -> Result<HashMap<i64, Hit>> {
        Ok(ids.iter().filter_map(|&id| self.names.get(id as usize).map(|n| (id, Self::hit(n, 0.0)))).collect())
    }

    fn dense(&self, searches: &[DenseSearch], limit: usize) -> Result<Vec<Vec<Hit>>> {
        Ok(searches
            .iter()
            .map(|search| {
                let mut all = Vec::new();
                for ontology in &search.ontologies {
                    let mut scored: Vec<(f32, &StoredName)> = self
                        .in_ontology(Some(&ontology.name))
                        .filter_map(|n| Some((cosine(n.vector.as_ref()?, &search.vector), n)))
                        .collect();
                    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                    all.extend(scored.into_iter().take(limit).map(|(cosine, n)| Self::hit(n, cosine as f64)));
                }
                all
            })
            .collect())
    }

    fn stored_vectors(&self, names: &[&Hit]) -> Result<Vec<Option<Vec<f32>>>> {
        self.stored_vector_reads.set(self.stored_vector_reads.get() + names.len());
        Ok(names
            .iter()
            .map(|hit| {
                self.names
                    .iter()
                    .find(|n| {
                        n.ontology == hit.ontology && n.concept_id == hit.concept_id && n.name == hit.matched_name
                    })
                    .and_then(|n| n.vector.clone())
            })
            .collect())
    }

    fn preferred_names(&self, concepts: &[ConceptKey]) -> Result<HashMap<ConceptKey, String>> {
        let wanted: HashSet<&ConceptKey> = concepts.iter().collect();
        Ok(self
            .names
            .iter()
            .filter(|n| n.preferred)
            .map(|n| ((n.ontology.clone(), n.concept_id.clone()), n.name.clone()))
            .filter(|(key, _)| wanted.contains(key))
            .collect())
    }

    fn concept_details(&self, concepts: &[ConceptKey]) -> Result<HashMap<ConceptKey, ConceptDetails>> {
        Ok(concepts
            .iter()
            .map(|key| {
                let synonyms = self
                    .names
                    .iter()
                    .filter(|n| !n.preferred && (&n.ontology, &n.concept_id) == (&key.0, &key.1))
                    .map(|n| n.name.clone())
                    .take(3)
                    .collect();
                (key.clone(), ConceptDetails { definition: self.definitions.get(key).cloned(), synonyms })
            })
            .collect())
    }
}

/// The toy encoder, and a re-ranker that answers from a script: for each item, the
/// probabilities given by `answer` (mention → probabilities), else "none of these".
#[derive(Default)]
pub struct FakeModels {
    pub answers: HashMap<String, Vec<f32>>,
    pub embedded: RefCell<Vec<String>>,
    /// The encoder each embed request asked for.
    pub encoders_asked: RefCell<Vec<String>>,
    pub reranked: RefCell<Vec<RerankItem>>,
    /// How many items each re-ranking request carried.
    pub rerank_requests: RefCell<Vec<usize>>,
    /// Trigram indexes as the server holds them, by (ontology, generation); None: the server
    /// is down for trigram searches.
    pub trigram_indexes: Option<RefCell<HashMap<(String, i64), TrigramIndex>>>,
    loading: RefCell<Option<(String, i64, TrigramIndexBuilder)>>,
    /// Mention dictionaries as the server shares them; None: the server is down for them.
    pub shared_dictionaries: Option<SharedDictionaries>,
    dictionary_loading: RefCell<Option<DictionaryLoading>>,
    /// Calls of `load_dictionary_part` and `load_scorer`.
    pub dictionary_parts_loaded: Cell<usize>,
    pub scorers_loaded: Cell<usize>,
}

impl FakeModels {
    /// With a model server that holds trigram indexes.
    pub fn serving_trigrams() -> FakeModels {
        FakeModels { trigram_indexes: Some(RefCell::default()), ..FakeModels::default() }
    }

    /// With a model server that shares mention dictionaries.
    pub fn sharing_dictionaries() -> FakeModels {
        FakeModels { shared_dictionaries: Some(SharedDictionaries::default()), ..FakeModels::default() }
    }

    fn shared(&self) -> Result<&SharedDictionaries> {
        Ok(self.shared_dictionaries.as_ref().ok_or(ModelServerError::NotRunning { waited_ms: 0 })?)
    }
}

impl Models for FakeModels {
    fn embed(&self, model: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        self.embedded.borrow_mut().extend(texts.iter().cloned());
        self.encoders_asked.borrow_mut().push(model.to_string());
        Ok(texts.iter().map(|t| toy_vector(t)).collect())
    }

    fn rerank(&self, items: Vec<RerankItem>, _generate: bool) -> Result<Vec<Reranked>> {
        let answers = items
            .iter()
            .map(|item| {
                let mut probabilities = vec![0.0; item.candidates.len() + 1];
                match self.answers.get(&item.mention) {
                    Some(scripted) => probabilities[..scripted.len()].copy_from_slice(scripted),
                    None => *probabilities.last_mut().unwrap() = 1.0,
                }
                Reranked { probabilities, answer: String::new() }
            })
            .collect();
        self.rerank_requests.borrow_mut().push(items.len());
        self.reranked.borrow_mut().extend(items);
        Ok(answers)
    }

    fn trigram_search(
        &self,
        ontology: &str,
        generation: i64,
        queries: &[&str],
        limit: usize,
        threshold: f64,
    ) -> Result<Option<ScoredNames>> {
        let indexes = self.trigram_indexes.as_ref().ok_or(ModelServerError::NotRunning { waited_ms: 0 })?.borrow();
        Ok(indexes
            .get(&(ontology.to_string(), generation))
            .map(|index| queries.iter().map(|q| index.search(q, limit, threshold)).collect()))
    }

    fn load_trigram_part(&self, ontology: &str, offset: u64, part: IndexPart) -> Result<()> {
        let indexes = self.trigram_indexes.as_ref().ok_or(ModelServerError::NotRunning { waited_ms: 0 })?;
        let mut loading = self.loading.borrow_mut();
        if offset == 0 {
            *loading = Some((ontology.to_string(), part.generation, TrigramIndexBuilder::default()));
        }
        let (_, _, builder) = loading.as_mut().expect("offset 0 first");
        for (id, folded) in &part.names {
            builder.add(*id, folded);
        }
        if part.last {
            let (ontology, generation, builder) = loading.take().expect("loading");
            indexes.borrow_mut().insert((ontology, generation), builder.finish());
        }
        Ok(())
    }

    fn detect(&self, keys: &[DictionaryKey], scored: bool, texts: &[&str]) -> Result<SharedDetection> {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        Ok(self.shared()?.detect(keys, scored, &texts))
    }

    fn load_dictionary_part(
        &self,
        key: &DictionaryKey,
        offset: u64,
        last: bool,
        names: Vec<DictionaryName>,
    ) -> Result<PartReply> {
        self.dictionary_parts_loaded.set(self.dictionary_parts_loaded.get() + 1);
        let mut loading = self.dictionary_loading.borrow_mut();
        Ok(self.shared()?.load_part(&mut loading, key, offset, last, names).map_err(refused)?)
    }

    fn load_scorer(&self, ontology: &str, version: i64, text: &str) -> Result<()> {
        self.scorers_loaded.set(self.scorers_loaded.get() + 1);
        Ok(self.shared()?.load_scorer(ontology, version, text).map_err(refused)?)
    }
}
