//! The session's cache of mention dictionaries: each built once per backend and ontology from
//! `belink.names`, and rebuilt when the ontology's generation changes (a reload, new user
//! names); with each, the ontology's span scorer, reread when its version changes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use belink_core::catalog::Ontologies;
use belink_core::mentions::dictionary::{DictionaryName, MentionDictionary};
use belink_core::mentions::scorer::SpanScorer;
use belink_core::ontology::NameKind;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use crate::error::{raise, OrRaise};

pub struct Cached {
    pub generation: i64,
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
            let (name, generation) = (&state.name, state.generation);
            let cached = CACHE.with(|cache| cache.borrow().get(name).cloned());
            let scorer_version = |cached: &Cached| cached.scorer.as_ref().map(|(version, _)| *version);
            let fresh = match cached {
                Some(cached) if cached.generation == generation && scorer_version(&cached) == state.span_scorer => {
                    cached
                }
                cached => {
                    let rebuilt = match cached {
                        // Only the scorer changed: the dictionary stays.
                        Some(cached) if cached.generation == generation => {
                            Cached { dictionary: cached.dictionary.clone(), scorer: None, ..*cached }
                        }
                        _ => build(client, name, generation),
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

fn build(client: &SpiClient<'_>, ontology: &str, generation: i64) -> Cached {
    let started = Instant::now();
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
        .collect();
    let count = names.len();
    let dictionary = MentionDictionary::build(names).unwrap_or_else(|e| {
        raise(PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, format!("ontology \"{ontology}\": {e}"))
    });
    let build_ms = started.elapsed().as_secs_f64() * 1000.0;
    debug1!("belink: mention dictionary of {ontology} built in {build_ms:.0} ms ({count} names)");
    Cached { generation, dictionary: Rc::new(dictionary), names: count, build_ms, scorer: None }
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
