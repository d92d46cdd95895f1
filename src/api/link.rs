//! Linking raw text: belink_link, belink_entities, and the batched belink_link over arrays.

use std::collections::HashMap;

use belink_core::linking::{mentions_to_link, MentionToLink};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;

use belink_core::prompt::context_window;

use crate::api::candidates::Lexical;
use crate::api::normalize::{decide, Request};
use crate::catalog::Ontologies;
use crate::error::raise;
use crate::{dictionaries, gucs};

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
        let ontologies = Ontologies::read(client);
        if let Some(ontology) = ontology {
            ontologies.require(ontology);
        }
        let dictionaries = dictionaries::dictionaries(client, &ontologies, ontology);
        let refs: Vec<&belink_core::detect::Dictionary> =
            dictionaries.iter().map(|(_, d)| d.dictionary.as_ref()).collect();
        let plans: Vec<Option<Vec<MentionToLink>>> =
            docs.iter().map(|doc| doc.map(|text| mentions_to_link(text, &refs))).collect();
        let names: Vec<&str> = dictionaries.iter().map(|(name, _)| name.as_str()).collect();
        resolve(client, &ontologies, docs, plans, &names)
    })
}

/// Decides the concept of every planned mention (each distinct lookup once without
/// re-ranking; with it, each mention in its own context) and builds the entities. Mentions
/// left unlinked (NIL) are dropped.
fn resolve(
    client: &SpiClient<'_>,
    ontologies: &Ontologies,
    docs: &[Option<&str>],
    plans: Vec<Option<Vec<MentionToLink>>>,
    dictionary_ontologies: &[&str],
) -> Vec<Option<Vec<Entity>>> {
    let rerank = gucs::RERANK.get();
    let window = gucs::CONTEXT_CHARS.get().max(0) as usize;
    let mut slot: HashMap<(String, usize, Option<String>), usize> = HashMap::new();
    let mut requests: Vec<Request> = Vec::new();
    let mut slots: Vec<Vec<usize>> = Vec::with_capacity(plans.len());
    for (doc, plan) in docs.iter().zip(&plans) {
        let mut mine = Vec::new();
        for mention in plan.iter().flatten() {
            let context = match (rerank, doc) {
                (true, Some(text)) => Some(context_window(text, mention.start, mention.end, window)),
                _ => None,
            };
            let key = (mention.lookup.clone(), mention.dictionary, context.clone());
            let index = *slot.entry(key).or_insert_with(|| {
                requests.push(Request {
                    mention: &mention.lookup,
                    context,
                    ontology: Some(dictionary_ontologies[mention.dictionary]),
                });
                requests.len() - 1
            });
            mine.push(index);
        }
        slots.push(mine);
    }
    // Detected mentions are exact dictionary matches: exact and dense retrieval rank them.
    let k = if rerank { gucs::TOP_K.get().max(1) as usize } else { 1 };
    let decisions = decide(client, ontologies, &requests, k, Lexical::ExactOnly);
    plans
        .into_iter()
        .zip(slots)
        .map(|(plan, mine)| {
            plan.map(|mentions| {
                mentions
                    .into_iter()
                    .zip(mine)
                    .filter_map(|(m, index)| {
                        let decision = &decisions[index];
                        let best = decision.concept()?;
                        Some(Entity {
                            start: m.start,
                            end: m.end,
                            mention: m.text,
                            concept_id: best.fused.concept_id.clone(),
                            name: best.preferred_name.clone(),
                            ontology: best.fused.ontology.clone(),
                            score: decision.confidence,
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
        let ontologies = Ontologies::read(client);
        ontologies.require(ontology);
        dictionaries::dictionaries(client, &ontologies, Some(ontology))
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

extension_sql!(
    r#"
CREATE PROCEDURE belink_annotate(
    table_name regclass, text_column name, result_column name,
    batch_size integer DEFAULT 500, ontology text DEFAULT NULL, key_column name DEFAULT NULL)
LANGUAGE plpgsql AS $procedure$
#variable_conflict use_variable
DECLARE
    job_name text := format('%s.%s', table_name, result_column);
    key_name name := key_column;
    keys text[];
    texts text[];
    results jsonb[];
    single jsonb;
    total_rows bigint;
    done_rows bigint;
    processed bigint := 0;
    started timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
    elapsed double precision;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'belink_annotate: batch_size must be at least 1';
    END IF;
    IF key_name IS NULL THEN
        SELECT a.attname INTO key_name
        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = table_name AND i.indisprimary AND i.indnatts = 1;
        IF key_name IS NULL THEN
            RAISE EXCEPTION 'belink_annotate: % has no one-column primary key', table_name
                USING HINT = 'Name a unique column with key_column => ''id''.';
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = table_name AND attname = result_column
                   AND atttypid = 'jsonb'::regtype AND NOT attisdropped) THEN
        RAISE EXCEPTION 'belink_annotate: % has no jsonb column %', table_name, result_column
            USING HINT = format('ALTER TABLE %s ADD COLUMN %I jsonb;', table_name, result_column);
    END IF;
    EXECUTE format('SELECT count(*), count(%I) FROM %s', result_column, table_name) INTO total_rows, done_rows;
    INSERT INTO belink.annotation_jobs AS j
        VALUES (job_name, table_name, text_column, result_column, key_name, ontology, total_rows, done_rows, done_rows,
                (SELECT count(*) FROM belink.annotation_errors e WHERE e.job = job_name), now(), now(), NULL)
        ON CONFLICT (job) DO UPDATE SET text_column = excluded.text_column, key_column = excluded.key_column,
            ontology = excluded.ontology, total = excluded.total, done = excluded.done,
            done_at_start = excluded.done_at_start,
            failed = (SELECT count(*) FROM belink.annotation_errors e WHERE e.job = j.job),
            started_at = now(), updated_at = now(), finished_at = NULL;
    COMMIT;

    LOOP
        -- The next rows without a result that have not failed before, locked for this batch.
        EXECUTE format(
            'SELECT array_agg(k ORDER BY k), array_agg(t ORDER BY k) FROM (
                 SELECT %1$I::text AS k, %2$I AS t FROM %3$s
                 WHERE %4$I IS NULL AND %1$I::text NOT IN (SELECT row_key FROM belink.annotation_errors WHERE job = $1)
                 ORDER BY %1$I LIMIT $2 FOR UPDATE SKIP LOCKED) AS batch',
            key_name, text_column, table_name, result_column)
            INTO keys, texts USING job_name, batch_size;
        EXIT WHEN keys IS NULL;
        BEGIN
            -- The whole batch in one request to the model server.
            results := ARRAY(SELECT coalesce(r, '[]'::jsonb) FROM @extschema@.belink_link(texts, ontology) AS r);
        EXCEPTION
            WHEN sqlstate '08006' OR sqlstate '08000' THEN RAISE;  -- the model server is down: stop, resume later
            WHEN others THEN
                -- Some row breaks the batch: annotate one by one, recording the rows that fail.
                results := ARRAY[]::jsonb[];
                FOR i IN 1 .. array_length(keys, 1) LOOP
                    BEGIN
                        single := coalesce(@extschema@.belink_link(texts[i], ontology), '[]'::jsonb);
                    EXCEPTION
                        WHEN sqlstate '08006' OR sqlstate '08000' THEN RAISE;
                        WHEN others THEN
                            INSERT INTO belink.annotation_errors (job, row_key, error) VALUES (job_name, keys[i], SQLERRM)
                                ON CONFLICT ON CONSTRAINT annotation_errors_pkey
                                DO UPDATE SET error = excluded.error, failed_at = now();
                            single := NULL;
                    END;
                    results := results || single;
                END LOOP;
        END;
        -- Results, relational rows and progress commit together: exactly once per row.
        EXECUTE format('UPDATE %s AS t SET %I = r.e FROM unnest($1, $2) AS r(k, e) WHERE t.%I::text = r.k AND r.e IS NOT NULL',
                       table_name, result_column, key_name)
            USING keys, results;
        DELETE FROM belink.annotations a WHERE a.job = job_name AND a.row_key = ANY (keys);
        INSERT INTO belink.annotations
            SELECT job_name, r.k, (e->>'start')::integer, (e->>'end')::integer, e->>'mention',
                   e->>'concept_id', e->>'name', e->>'ontology', (e->>'score')::double precision, e->>'abbreviation_of'
            FROM unnest(keys, results) AS r(k, doc), jsonb_array_elements(r.doc) AS e
            WHERE r.doc IS NOT NULL
            ON CONFLICT DO NOTHING;
        processed := processed + (SELECT count(*) FROM unnest(results) AS x WHERE x IS NOT NULL);
        UPDATE belink.annotation_jobs j SET
            done = j.done + (SELECT count(*) FROM unnest(results) AS x WHERE x IS NOT NULL),
            failed = (SELECT count(*) FROM belink.annotation_errors e WHERE e.job = j.job),
            updated_at = now()
        WHERE j.job = job_name;
        COMMIT;
        IF clock_timestamp() - last_notice > interval '5 seconds' THEN
            elapsed := extract(epoch FROM clock_timestamp() - started);
            RAISE NOTICE 'belink_annotate(%): % rows annotated (% rows/s)', job_name, processed, round((processed / elapsed)::numeric, 1);
            last_notice := clock_timestamp();
        END IF;
    END LOOP;
    UPDATE belink.annotation_jobs SET finished_at = now(), updated_at = now() WHERE annotation_jobs.job = job_name;
    COMMIT;
    RAISE NOTICE 'belink_annotate(%): done, % rows annotated in % s (see belink.annotation_status, belink.annotation_errors)',
        job_name, processed, round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
END
$procedure$;
COMMENT ON PROCEDURE belink_annotate(regclass, name, name, integer, text, name) IS
    'Annotates a table''s text column into a jsonb column in batches, committing per batch; resumable, failing rows recorded in belink.annotation_errors, entities also in belink.annotations';
"#,
    name = "annotate_sql",
    requires = [belink_link_many]
);
