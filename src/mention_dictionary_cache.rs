//! The session's cache of mention dictionaries: each built once per backend and ontology from
//! `belink.names`, and rebuilt when the ontology's generation changes (a reload, new user
//! names); with each, the ontology's span scorer, reread when its version changes. A
//! dictionary that would outgrow `belink.max_dictionary_mb` is not built in the session: the
//! model server holds it once for every session (`belink_core::mentions::shared`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use belink_core::catalog::Ontologies;
use belink_core::mentions::dictionary::{DictionaryName, MentionDictionary, ESTIMATED_BYTES_PER_NAME};
use belink_core::mentions::scorer::SpanScorer;
use belink_core::ontology::{descendants, NameKind};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use crate::catalog::read_in_parts;
use crate::error::{raise, OrRaise};

pub struct Cached {
    pub generation: i64,
    /// The detection roots it was built with.
    pub roots: Vec<String>,
    /// None: too large for a session, shared in the model server.
    pub dictionary: Option<Rc<MentionDictionary>>,
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

/// Names read from `belink.names` at a time while a dictionary is built.
const NAMES_PER_PART: usize = 50_000;

fn build(client: &SpiClient<'_>, ontology: &str, generation: i64, roots: &[String]) -> Cached {
    let started = Instant::now();
    let cached = |dictionary, names| Cached {
        generation,
        roots: roots.to_vec(),
        dictionary,
        names,
        build_ms: started.elapsed().as_secs_f64() * 1000.0,
        scorer: None,
    };
    // The hierarchy is read once for both the count and the names.
    let under_ids = under_roots(client, ontology, roots);
    if let Some(names) = above_session_limit(client, ontology, &under_ids) {
        debug1!("belink: mention dictionary of {ontology} ({names} names) shared in the model server");
        return cached(None, names);
    }
    let mut names: Vec<DictionaryName> = Vec::new();
    let Ok(()) = read_names_under(client, ontology, under_ids, NAMES_PER_PART, &mut |part, _| {
        names.extend(part);
        Ok::<(), std::convert::Infallible>(())
    });
    let count = names.len();
    let dictionary = MentionDictionary::build(names).unwrap_or_else(|e| {
        raise(PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, format!("ontology \"{ontology}\": {e}"))
    });
    let built = cached(Some(Rc::new(dictionary)), count);
    debug1!("belink: mention dictionary of {ontology} built in {:.0} ms ({count} names)", built.build_ms);
    built
}

/// The names detection uses of `ontology` (of the concepts under `roots` when some are given),
/// read through one cursor and handed to `each` in parts of at most `part`, the last one flagged
/// (an empty last part when there are none).
pub fn read_detection_names<E>(
    client: &SpiClient<'_>,
    ontology: &str,
    roots: &[String],
    part: usize,
    each: &mut dyn FnMut(Vec<DictionaryName>, bool) -> Result<(), E>,
) -> Result<(), E> {
    read_names_under(client, ontology, under_roots(client, ontology, roots), part, each)
}

/// [`read_detection_names`] of the concepts `under_ids` (None: every concept).
fn read_names_under<E>(
    client: &SpiClient<'_>,
    ontology: &str,
    under_ids: Option<Vec<String>>,
    part: usize,
    each: &mut dyn FnMut(Vec<DictionaryName>, bool) -> Result<(), E>,
) -> Result<(), E> {
    let query = format!("SELECT concept_id, name, normalized {DETECTION_NAMES}");
    let args = [ontology.into(), NameKind::texts(&NameKind::DETECTION).into(), under_ids.into()];
    let mut pending: Option<Vec<DictionaryName>> = None;
    read_in_parts(client, &query, &args, part, "reading names for the mention dictionary", |rows| {
        let fetched = rows.len();
        let names: Vec<DictionaryName> = rows
            .filter_map(|row| {
                Some(DictionaryName {
                    concept_id: row.get(1).ok()??,
                    name: row.get(2).ok()??,
                    normalized: row.get(3).ok()??,
                })
            })
            .collect();
        // A part is handed on once the next is read, so the last one can say it is the last.
        if let Some(previous) = pending.take() {
            each(previous, fetched == 0)?;
        } else if fetched == 0 {
            each(Vec::new(), true)?;
        }
        pending = (fetched > 0).then_some(names);
        Ok(())
    })
}

/// The names detection reads: $1 the ontology, $2 the kinds, $3 the concepts under the
/// detection roots (NULL: every concept).
const DETECTION_NAMES: &str =
    "FROM belink.names WHERE ontology = $1 AND kind = ANY($2) AND ($3::text[] IS NULL OR concept_id = ANY($3))";

/// The ids of the ontology's concepts under `roots`, None when there are no roots.
fn under_roots(client: &SpiClient<'_>, ontology: &str, roots: &[String]) -> Option<Vec<String>> {
    (!roots.is_empty()).then(|| concepts_under(client, ontology, roots).into_iter().collect())
}

/// Every session that links text would hold its own dictionary: one that would outgrow
/// `belink.max_dictionary_mb` (all of UMLS: about 4 GB) is left to the model server, which
/// holds it once for all sessions. Returns its number of names when it is.
fn above_session_limit(client: &SpiClient<'_>, ontology: &str, under_ids: &Option<Vec<String>>) -> Option<usize> {
    let limit_mb = crate::gucs::max_dictionary_mb()?;
    let kinds = NameKind::texts(&NameKind::DETECTION);
    let names = client
        .select(
            &format!("SELECT count(*) {DETECTION_NAMES}"),
            Some(1),
            &[ontology.into(), kinds.into(), under_ids.clone().into()],
        )
        .or_raise("counting names for the mention dictionary")
        .first()
        .get::<i64>(1)
        .or_raise("counting names for the mention dictionary")
        .unwrap_or(0) as usize;
    let estimate_mb = (names * ESTIMATED_BYTES_PER_NAME) as f64 / 1e6;
    (estimate_mb > limit_mb as f64).then_some(names)
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
    let text = stored_scorer(client, ontology);
    // Checked when it was set: an error here means the table was edited by hand.
    SpanScorer::from_text(text.as_deref().unwrap_or_default()).unwrap_or_else(|e| {
        raise(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, format!("the span scorer of ontology \"{ontology}\": {e}"))
    })
}

/// The stored text of the ontology's span scorer, if it has one.
pub fn stored_scorer(client: &SpiClient<'_>, ontology: &str) -> Option<String> {
    client
        .select("SELECT scorer FROM belink.span_scorers WHERE ontology = $1", None, &[ontology.into()])
        .or_raise("reading the span scorer")
        .first()
        .get(1)
        .or_raise("reading the span scorer")
}
