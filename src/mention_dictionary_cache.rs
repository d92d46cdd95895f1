//! The session's cache of mention dictionaries: each built once per backend and ontology from
//! `belink.names`, and rebuilt when the ontology's generation changes (a reload, new user
//! names); with each, the ontology's span scorer, reread when its version changes.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use belink_core::catalog::Ontologies;
use belink_core::mentions::dictionary::{DictionaryName, MentionDictionary};
use belink_core::mentions::scorer::SpanScorer;
use belink_core::ontology::{descendants, NameKind};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use crate::error::{raise, OrRaise};

pub struct Cached {
    pub generation: i64,
    /// The detection roots it was built with.
    pub roots: Vec<String>,
    pub dictionary: Rc<MentionDictionary>,
    pub names: usize,
    pub build_ms: f64,
    /// The span scorer and its version (see belink.span_scorers).
    pub scorer: Option<(i64, Rc<SpanScorer>)>,
}

thread_local! {
    static CACHE: RefCell<HashMap<String, Rc<Cached>>> = RefCell::new(HashMap::new());
}

/// The dictionaries of `ontology` (every ontology when None), up to date, in name order.
pub fn dictionaries(
    client: &SpiClient<'_>,
    ontologies: &Ontologies,
    ontology: Option<&str>,
) -> Vec<(String, Rc<Cached>)> {
    ontologies
        .selected(ontology)
        .map(|state| {
            let (name, generation, roots) = (&state.name, state.generation, &state.detection_roots);
            let cached = CACHE.with(|cache| cache.borrow().get(name).cloned());
            let current_dictionary = |cached: &Cached| cached.generation == generation && &cached.roots == roots;
            let scorer_version = |cached: &Cached| cached.scorer.as_ref().map(|(version, _)| *version);
            let fresh = match cached {
                Some(cached) if current_dictionary(&cached) && scorer_version(&cached) == state.span_scorer => cached,
                cached => {
                    let rebuilt = match cached {
                        // Only the scorer changed: the dictionary stays.
                        Some(cached) if current_dictionary(&cached) => Cached {
                            dictionary: cached.dictionary.clone(),
                            roots: roots.clone(),
                            scorer: None,
                            ..*cached
                        },
                        _ => build(client, name, generation, roots),
                    };
                    let scorer = state.span_scorer.map(|version| (version, Rc::new(read_scorer(client, name))));
                    let fresh = Rc::new(Cached { scorer, ..rebuilt });
                    CACHE.with(|cache| cache.borrow_mut().insert(name.clone(), fresh.clone()));
                    fresh
                }
            };
            (name.clone(), fresh)
        })
        .collect()
}

fn build(client: &SpiClient<'_>, ontology: &str, generation: i64, roots: &[String]) -> Cached {
    let started = Instant::now();
    let under = (!roots.is_empty()).then(|| concepts_under(client, ontology, roots));
    let names: Vec<DictionaryName> = client
        .select(
            "SELECT concept_id, name, normalized FROM belink.names WHERE ontology = $1 AND kind = ANY($2)",
            None,
            &[ontology.into(), NameKind::texts(&NameKind::DETECTION).into()],
        )
        .or_raise("reading names for the mention dictionary")
        .filter_map(|row| {
            Some(DictionaryName {
                concept_id: row.get(1).ok()??,
                name: row.get(2).ok()??,
                normalized: row.get(3).ok()??,
            })
        })
        .filter(|name| under.as_ref().is_none_or(|under| under.contains(&name.concept_id)))
        .collect();
    let count = names.len();
    let dictionary = MentionDictionary::build(names).unwrap_or_else(|e| {
        raise(PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, format!("ontology \"{ontology}\": {e}"))
    });
    let build_ms = started.elapsed().as_secs_f64() * 1000.0;
    debug1!("belink: mention dictionary of {ontology} built in {build_ms:.0} ms ({count} names)");
    Cached { generation, roots: roots.to_vec(), dictionary: Rc::new(dictionary), names: count, build_ms, scorer: None }
}

/// The ontology's concepts at or under `roots`.
pub fn concepts_under(client: &SpiClient<'_>, ontology: &str, roots: &[String]) -> HashSet<String> {
    let edges: Vec<(String, Vec<String>)> = client
        .select(
            "SELECT concept_id, parents FROM belink.concepts WHERE ontology = $1 AND NOT obsolete",
            None,
            &[ontology.into()],
        )
        .or_raise("reading the ontology's hierarchy")
        .filter_map(|row| Some((row.get(1).ok()??, row.get(2).ok()??)))
        .collect();
    descendants(edges.iter().map(|(id, parents)| (id.as_str(), parents.as_slice())), roots)
}

fn read_scorer(client: &SpiClient<'_>, ontology: &str) -> SpanScorer {
    let text: Option<String> = client
        .select("SELECT scorer FROM belink.span_scorers WHERE ontology = $1", None, &[ontology.into()])
        .or_raise("reading the span scorer")
        .first()
        .get(1)
        .or_raise("reading the span scorer");
    // Checked when it was set: an error here means the table was edited by hand.
    SpanScorer::from_text(text.as_deref().unwrap_or_default()).unwrap_or_else(|e| {
        raise(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, format!("the span scorer of ontology \"{ontology}\": {e}"))
    })
}
