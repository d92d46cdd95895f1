//! Linking raw text: belink_link, belink_entities, and the batched belink_link over arrays.

use belink_core::interrupts::Ticker;
use belink_core::link::{Entity, OntologyDictionary};
use belink_core::mentions::shared::DictionaryKey;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::json;

use crate::catalog::read_ontologies;
use crate::error::OrRaiseError;
use crate::{mention_dictionary_cache, pipeline};

fn entity_json(entity: &Entity) -> serde_json::Value {
    let mut value = json!({
        "start": entity.start,
        "end": entity.end,
        "mention": entity.mention,
        "concept_id": entity.concept_id,
        "name": entity.name,
        "ontology": entity.ontology,
        "score": entity.score,
    });
    if let Some(long_form) = &entity.abbreviation_of {
        value["abbreviation_of"] = json!(long_form);
    }
    value
}

fn entities_json(entities: &[Entity]) -> JsonB {
    let mut ticker = Ticker::default();
    JsonB(serde_json::Value::Array(
        entities
            .iter()
            .map(|entity| {
                ticker.step();
                entity_json(entity)
            })
            .collect(),
    ))
}

/// The entities of a text: mentions detected with the ontology's dictionary (every ontology
/// when NULL), abbreviations resolved, each linked to its best candidate. A jsonb array of
/// {start, end, mention, concept_id, name, ontology, score, abbreviation_of?}; offsets are
/// 0-based characters, end exclusive.
#[pg_extern(volatile, parallel_restricted)]
fn belink_link(doc: Option<&str>, ontology: default!(Option<&str>, "NULL")) -> Option<JsonB> {
    let doc = doc?;
    let mut linked = link_documents(&[Some(doc)], ontology);
    linked.pop().flatten().map(|entities| entities_json(&entities))
}

/// belink_link over many documents at once: every document's mentions go to the model server
/// in one request. One jsonb per document, in order (NULL for a NULL document).
#[pg_extern(name = "belink_link", volatile, parallel_restricted)]
fn belink_link_many(
    docs: Option<Vec<Option<String>>>,
    ontology: default!(Option<&str>, "NULL"),
) -> SetOfIterator<'static, Option<JsonB>> {
    let docs = docs.unwrap_or_default();
    let refs: Vec<Option<&str>> = docs.iter().map(|d| d.as_deref()).collect();
    let linked = link_documents(&refs, ontology);
    SetOfIterator::new(linked.into_iter().map(|entities| entities.map(|e| entities_json(&e))))
}

/// belink_link as rows, for joins, views and BI tools.
#[pg_extern(volatile, parallel_restricted)]
fn belink_entities(
    doc: Option<&str>,
    ontology: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(start_char, i32),
        name!(end_char, i32),
        name!(mention, String),
        name!(concept_id, String),
        name!(name, String),
        name!(ontology, String),
        name!(score, f64),
        name!(abbreviation_of, Option<String>),
    ),
> {
    let entities = match doc {
        Some(doc) => link_documents(&[Some(doc)], ontology).pop().flatten().unwrap_or_default(),
        None => Vec::new(),
    };
    TableIterator::new(entities.into_iter().map(|e| {
        (e.start as i32, e.end as i32, e.mention, e.concept_id, e.name, e.ontology, e.score, e.abbreviation_of)
    }))
}

/// Links every document; None for a NULL document. With the session's own dictionaries, or,
/// when one of the ontologies' is too large for a session, with the model server's shared ones.
fn link_documents(docs: &[Option<&str>], ontology: Option<&str>) -> Vec<Option<Vec<Entity>>> {
    pipeline::run(ontology, |pipeline, client| {
        let cached = mention_dictionary_cache::dictionaries(client, pipeline.ontologies, ontology);
        let own: Option<Vec<OntologyDictionary>> = cached
            .iter()
            .map(|(name, d)| {
                Some(OntologyDictionary {
                    ontology: name,
                    dictionary: d.dictionary.as_deref()?,
                    scorer: d.scorer.as_ref().map(|(_, scorer)| scorer.as_ref()),
                })
            })
            .collect();
        match own {
            Some(dictionaries) => pipeline.link(docs, &dictionaries),
            None => {
                let keys: Vec<DictionaryKey> = cached
                    .iter()
                    .map(|(name, d)| DictionaryKey {
                        ontology: name.clone(),
                        generation: d.generation,
                        roots: d.roots.clone(),
                        scorer: d.scorer.as_ref().map(|(version, _)| *version),
                    })
                    .collect();
                let too_large: Vec<&str> =
                    cached.iter().filter(|(_, d)| d.dictionary.is_none()).map(|(name, _)| name.as_str()).collect();
                pipeline.link_shared(docs, &keys, &too_large)
            }
        }
    })
}

/// Builds (if needed) an ontology's mention dictionary and reports its size, for monitoring
/// and benchmarks. A dictionary shared in the model server (above belink.max_dictionary_mb)
/// takes no memory in the session: 0 patterns and bytes (the server's status reports it).
#[pg_extern(volatile, parallel_restricted)]
fn belink_dictionary_stats(
    ontology: &str,
) -> TableIterator<
    'static,
    (name!(ontology, String), name!(names, i64), name!(patterns, i64), name!(memory_bytes, i64), name!(build_ms, f64)),
> {
    let rows = Spi::connect(|client: &SpiClient<'_>| {
        let ontologies = read_ontologies(client);
        ontologies.require(Some(ontology)).or_raise_error();
        mention_dictionary_cache::dictionaries(client, &ontologies, Some(ontology))
            .into_iter()
            .map(|(name, d)| {
                (
                    name,
                    d.names as i64,
                    d.dictionary.as_ref().map_or(0, |d| d.pattern_count()) as i64,
                    d.dictionary.as_ref().map_or(0, |d| d.memory_usage()) as i64,
                    d.build_ms,
                )
            })
            .collect::<Vec<_>>()
    });
    TableIterator::new(rows)
}

extension_sql_file!("../../sql/annotate.sql", name = "annotate_sql", requires = [belink_link_many]);

extension_sql_file!("../../sql/planner.sql", name = "planner_sql", finalize);
