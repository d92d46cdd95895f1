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

use crate::catalog::read_in_parts;
use crate::error::{raise, raise_with_hint, OrRaise};

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

/// Bytes a mention dictionary holds per name, about: 206 MB for 484k names, 28.2 MB for
/// MEDIC's 76k (BENCHMARKS.md, "Scale").
const DICTIONARY_BYTES_PER_NAME: usize = 450;
/// Names read from `belink.names` at a time while a dictionary is built.
const NAMES_PER_PART: usize = 50_000;

fn build(client: &SpiClient<'_>, ontology: &str, generation: i64, roots: &[String]) -> Cached {
    let started = Instant::now();
    let under = (!roots.is_empty()).then(|| concepts_under(client, ontology, roots));
    let under_ids: Option<Vec<String>> = under.as_ref().map(|under| under.iter().cloned().collect());
    let kinds = NameKind::texts(&NameKind::DETECTION);
    const NAMES: &str =
        "FROM belink.names WHERE ontology = $1 AND kind = ANY($2) AND ($3::text[] IS NULL OR concept_id = ANY($3))";
    refuse_oversized(client, ontology, &format!("SELECT count(*) {NAMES}"), &kinds, &under_ids);
    let mut names: Vec<DictionaryName> = Vec::new();
    let query = format!("SELECT concept_id, name, normalized {NAMES}");
    let args = [ontology.into(), kinds.into(), under_ids.into()];
    let read =
        read_in_parts(client, &query, &args, NAMES_PER_PART, "reading names for the mention dictionary", |rows| {
            names.extend(rows.filter_map(|row| {
                Some(DictionaryName {
                    concept_id: row.get(1).ok()??,
                    name: row.get(2).ok()??,
                    normalized: row.get(3).ok()??,
                })
            }));
            Ok::<(), std::convert::Infallible>(())
        });
    let Ok(()) = read;
    let count = names.len();
    let dictionary = MentionDictionary::build(names).unwrap_or_else(|e| {
        raise(PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, format!("ontology \"{ontology}\": {e}"))
    });
    let build_ms = started.elapsed().as_secs_f64() * 1000.0;
    debug1!("belink: mention dictionary of {ontology} built in {build_ms:.0} ms ({count} names)");
    Cached { generation, roots: roots.to_vec(), dictionary: Rc::new(dictionary), names: count, build_ms, scorer: None }
}

/// Every session that links text holds its own dictionary: one that would outgrow
/// `belink.max_dictionary_mb` (all of UMLS: about 4 GB) is refused before it is read, rather
/// than risking the out-of-memory killer, which restarts the whole cluster.
fn refuse_oversized(
    client: &SpiClient<'_>,
    ontology: &str,
    count_query: &str,
    kinds: &[String],
    under: &Option<Vec<String>>,
) {
    let Some(limit_mb) = crate::gucs::max_dictionary_mb() else { return };
    let names = client
        .select(count_query, Some(1), &[ontology.into(), kinds.to_vec().into(), under.clone().into()])
        .or_raise("counting names for the mention dictionary")
        .first()
        .get::<i64>(1)
        .or_raise("counting names for the mention dictionary")
        .unwrap_or(0) as usize;
    let estimate_mb = (names * DICTIONARY_BYTES_PER_NAME) as f64 / 1e6;
    if estimate_mb > limit_mb as f64 {
        raise_with_hint(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "ontology \"{ontology}\": its mention dictionary ({names} names) would take about {estimate_mb:.1} MB \
                 in every session that links text, above belink.max_dictionary_mb ({limit_mb})"
            ),
            "Restrict detection with belink_set_detection_roots, link against a smaller ontology, or raise \
             belink.max_dictionary_mb (superusers and roles granted SET on it). Retrieval of given mentions \
             (belink_normalize, belink_candidates) needs no dictionary."
                .to_string(),
        );
    }
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
