//! Linking raw text: belink_link, belink_entities, and the batched belink_link over arrays.

use std::collections::HashMap;

use belink_core::linking::{mentions_to_link, MentionToLink};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;

use crate::api::candidates::{retrieve, Lexical, Query};
use crate::error::raise;
use crate::{catalog, dictionaries, gucs};

/// One linked entity.
pub struct Entity {
    pub start: usize,
    pub end: usize,
    pub mention: String,
    pub concept_id: String,
    pub name: String,
    pub ontology: String,
    pub score: f64,
    pub abbreviation_of: Option<String>,
}

impl Entity {
    fn to_json(&self) -> serde_json::Value {
        let mut value = json!({
            "start": self.start,
            "end": self.end,
            "mention": self.mention,
            "concept_id": self.concept_id,
            "name": self.name,
            "ontology": self.ontology,
            "score": self.score,
        });
        if let Some(long_form) = &self.abbreviation_of {
            value["abbreviation_of"] = json!(long_form);
        }
        value
    }
}

fn entities_json(entities: &[Entity]) -> JsonB {
    JsonB(serde_json::Value::Array(entities.iter().map(Entity::to_json).collect()))
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

/// Links every document; None for a NULL document.
pub fn link_documents(docs: &[Option<&str>], ontology: Option<&str>) -> Vec<Option<Vec<Entity>>> {
    let limit = gucs::MAX_DOCUMENT_CHARS.get() as usize;
    for doc in docs.iter().flatten() {
        // Bytes bound characters from above: count only when it could matter.
        if doc.len() > limit && doc.chars().count() > limit {
            raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!("a document of {} characters exceeds belink.max_document_chars ({limit})", doc.chars().count()),
            );
        }
    }
    Spi::connect(|client| {
        if let Some(ontology) = ontology {
            catalog::require_ontology(client, ontology);
        }
        let dictionaries = dictionaries::dictionaries(client, ontology);
        let refs: Vec<&belink_core::detect::Dictionary> =
            dictionaries.iter().map(|(_, d)| d.dictionary.as_ref()).collect();
        let plans: Vec<Option<Vec<MentionToLink>>> =
            docs.iter().map(|doc| doc.map(|text| mentions_to_link(text, &refs))).collect();
        let names: Vec<&str> = dictionaries.iter().map(|(name, _)| name.as_str()).collect();
        resolve(client, plans, &names)
    })
}

/// Retrieves the concept of every planned mention (each distinct lookup once) and builds the
/// entities.
fn resolve(
    client: &SpiClient<'_>,
    plans: Vec<Option<Vec<MentionToLink>>>,
    ontologies: &[&str],
) -> Vec<Option<Vec<Entity>>> {
    let mut slot: HashMap<(String, usize), usize> = HashMap::new();
    let mut lookups: Vec<(String, usize)> = Vec::new();
    for mention in plans.iter().flatten().flatten() {
        let key = (mention.lookup.clone(), mention.dictionary);
        slot.entry(key.clone()).or_insert_with(|| {
            lookups.push(key);
            lookups.len() - 1
        });
    }
    let queries: Vec<Query> =
        lookups.iter().map(|(text, d)| Query { text: text.as_str(), ontology: Some(ontologies[*d]) }).collect();
    // Detected mentions are exact dictionary matches: exact and dense retrieval rank them.
    let results = retrieve(client, &queries, 1, Lexical::ExactOnly);
    plans
        .into_iter()
        .map(|plan| {
            plan.map(|mentions| {
                mentions
                    .into_iter()
                    .filter_map(|m| {
                        let best = results[slot[&(m.lookup.clone(), m.dictionary)]].first()?;
                        Some(Entity {
                            start: m.start,
                            end: m.end,
                            mention: m.text,
                            concept_id: best.fused.concept_id.clone(),
                            name: best.preferred_name.clone(),
                            ontology: best.fused.ontology.clone(),
                            score: best.fused.score,
                            abbreviation_of: m.abbreviation_of,
                        })
                    })
                    .collect()
            })
        })
        .collect()
}

/// Builds (if needed) an ontology's mention dictionary and reports its size, for monitoring
/// and benchmarks.
#[pg_extern(volatile, parallel_restricted)]
fn belink_dictionary_stats(
    ontology: &str,
) -> TableIterator<
    'static,
    (name!(ontology, String), name!(names, i64), name!(patterns, i64), name!(memory_bytes, i64), name!(build_ms, f64)),
> {
    let rows = Spi::connect(|client: &SpiClient<'_>| {
        catalog::require_ontology(client, ontology);
        dictionaries::dictionaries(client, Some(ontology))
            .into_iter()
            .map(|(name, d)| {
                (
                    name,
                    d.names as i64,
                    d.dictionary.pattern_count() as i64,
                    d.dictionary.memory_usage() as i64,
                    d.build_ms,
                )
            })
            .collect::<Vec<_>>()
    });
    TableIterator::new(rows)
}
