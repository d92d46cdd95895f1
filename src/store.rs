//! The name store port over SPI: the catalog tables (sql/catalog.sql) searched by B-tree
//! (exact), pg_trgm GIN (trigram) and each ontology's pgvector HNSW index (dense).

use std::cell::OnceCell;
use std::collections::HashMap;

use belink_core::decision::prompt::SYNONYMS_READ;
use belink_core::error::Result;
use belink_core::mentions::dictionary::DictionaryName;
use belink_core::ontology::NameKind;
use belink_core::ports::{ConceptDetails, ConceptKey, DenseSearch, IndexPart, NameStore};
use belink_core::retrieval::fuse::Hit;
use pgrx::spi::SpiClient;
use pgrx::{PgBuiltInOids, PgOid};

use crate::catalog::{extension_schema, read_in_parts};
use crate::error::OrRaise;
use crate::mention_dictionary_cache;
use crate::plans;

const TEXT_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID);
const INT8_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8ARRAYOID);

pub struct SpiNameStore<'c, 'conn> {
    client: &'c SpiClient<'conn>,
    /// The schemas of pgvector and pg_trgm, quoted, looked up once per call.
    vector_schema: OnceCell<String>,
    trgm_schema: OnceCell<String>,
}

impl<'c, 'conn> SpiNameStore<'c, 'conn> {
    pub fn new(client: &'c SpiClient<'conn>) -> Self {
        SpiNameStore { client, vector_schema: OnceCell::new(), trgm_schema: OnceCell::new() }
    }

    /// Runs `f` with a setting changed for the current transaction, then restores the
    /// caller's value.
    fn with_setting<T>(&self, name: &str, value: &str, f: impl FnOnce() -> T) -> T {
        let text = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
        let set = |value: &str| {
            plans::select(
                self.client,
                "SELECT set_config($1, $2, true)",
                &[text, text],
                &[name.into(), value.into()],
                "changing a setting",
            );
        };
        let previous = plans::select(
            self.client,
            "SELECT current_setting($1, true)",
            &[text],
            &[name.into()],
            "reading a setting",
        )
        .first()
        .get_one::<String>()
        .or_raise("reading a setting");
        set(value);
        let result = f();
        // A setting that did not exist yet (hnsw.* before pgvector is loaded) keeps our value
        // until the end of the transaction: there is no caller's value to restore.
        if let Some(previous) = previous {
            set(&previous);
        }
        result
    }
}

fn hits(table: pgrx::spi::SpiTupleTable<'_>) -> Vec<Hit> {
    table
        .map(|row| {
            let text = |i| row.get::<String>(i).or_raise("reading a candidate").unwrap_or_default();
            let similarity = row.get::<f64>(4).or_raise("reading a candidate").unwrap_or_default();
            Hit { ontology: text(1), concept_id: text(2), matched_name: text(3), similarity }
        })
        .collect()
}

fn keys_columns(concepts: &[ConceptKey]) -> (Vec<String>, Vec<String>) {
    concepts.iter().cloned().unzip()
}

impl NameStore for SpiNameStore<'_, '_> {
    fn exact(&self, queries: &[(&str, Option<&str>)]) -> Result<Vec<Vec<Hit>>> {
        let folded: Vec<String> = queries.iter().map(|(f, _)| f.to_string()).collect();
        let ontologies: Vec<Option<String>> = queries.iter().map(|(_, o)| o.map(str::to_string)).collect();
        // Two branches so that queries naming their ontology use the (ontology, normalized) index.
        let rows = plans::select(
            self.client,
            "SELECT i, ontology, concept_id, name FROM (
                 SELECT q.i, n.ontology, n.concept_id, n.name, n.kind, n.name_id
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q(normalized, ontology, i)
                 JOIN belink.names n ON n.ontology = q.ontology AND n.normalized = q.normalized
                 WHERE q.normalized <> ''
                 UNION ALL
                 SELECT q.i, n.ontology, n.concept_id, n.name, n.kind, n.name_id
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q(normalized, ontology, i)
                 JOIN belink.names n ON q.ontology IS NULL AND n.normalized = q.normalized
                 WHERE q.normalized <> ''
             ) AS found
             ORDER BY i, kind = 'preferred' DESC, name_id",
            &[TEXT_ARRAY, TEXT_ARRAY],
            &[folded.into(), ontologies.into()],
            "exact matching",
        );
        let mut exact: Vec<Vec<Hit>> = vec![Vec::new(); queries.len()];
        for row in rows {
            let text = |i| row.get::<String>(i).or_raise("reading a candidate").unwrap_or_default();
            let query = row.get::<i64>(1).or_raise("reading a candidate").unwrap_or(0) as usize;
            if let Some(hits) = query.checked_sub(1).and_then(|q| exact.get_mut(q)) {
                hits.push(Hit { ontology: text(2), concept_id: text(3), matched_name: text(4), similarity: 1.0 });
            }
        }
        Ok(exact)
    }

    fn trigram(&self, folded: &str, ontology: Option<&str>, limit: usize, threshold: f64) -> Result<Vec<Hit>> {
        let trgm = self.trgm_schema.get_or_init(|| extension_schema(self.client, "pg_trgm"));
        let ontology_filter = if ontology.is_some() { "AND n.ontology = $2" } else { "AND $2::text IS NULL" };
        // pg_trgm's % uses the GIN index: names at least pg_trgm.similarity_threshold similar.
        let query = format!(
            "SELECT n.ontology, n.concept_id, n.name, {trgm}.similarity(n.normalized, $1)::float8 FROM belink.names n
             WHERE n.normalized OPERATOR({trgm}.%) $1 {ontology_filter}
             ORDER BY {trgm}.similarity(n.normalized, $1) DESC, n.name_id LIMIT $3"
        );
        Ok(self.with_setting("pg_trgm.similarity_threshold", &threshold.to_string(), || {
            hits(
                self.client
                    .select(&query, None, &[folded.into(), ontology.into(), (limit as i32).into()])
                    .or_raise("trigram matching"),
            )
        }))
    }

    fn index_names(&self, ontology: &str, part: usize, each: &mut dyn FnMut(IndexPart) -> Result<()>) -> Result<()> {
        // One cursor, one snapshot: the names and the generation they make up, read in parts so
        // that the backend never holds more than one part of a large ontology. The outer join
        // gives an ontology without names one row (no name), so that its empty index is built.
        let query = "SELECT o.generation, n.name_id, n.normalized FROM belink.ontologies o
             LEFT JOIN belink.names n ON n.ontology = o.name
             WHERE o.name = $1 ORDER BY n.name_id";
        let context = "reading names for the trigram index";
        let mut generation = 0;
        let mut pending: Option<Vec<(i64, String)>> = None;
        read_in_parts(self.client, query, &[ontology.into()], part, context, |rows| {
            let fetched = rows.len();
            let mut names = Vec::with_capacity(fetched);
            for row in rows {
                generation = row.get::<i64>(1).or_raise(context).unwrap_or(generation);
                if let (Some(name_id), Some(folded)) =
                    (row.get::<i64>(2).or_raise(context), row.get::<String>(3).or_raise(context))
                {
                    names.push((name_id, folded));
                }
            }
            // A part is sent once the next is read, so the last one can say it is the last.
            if let Some(previous) = pending.take() {
                each(IndexPart { generation, names: previous, last: fetched == 0 })?;
            }
            pending = (fetched > 0).then_some(names);
            Ok(())
        })
    }

    fn detection_names(
        &self,
        ontology: &str,
        roots: &[String],
        part: usize,
        each: &mut dyn FnMut(Vec<DictionaryName>, bool) -> Result<()>,
    ) -> Result<()> {
        mention_dictionary_cache::read_detection_names(self.client, ontology, roots, part, each)
    }

    fn span_scorer(&self, ontology: &str) -> Result<Option<String>> {
        Ok(mention_dictionary_cache::stored_scorer(self.client, ontology))
    }

    fn names_by_id(&self, ids: &[i64]) -> Result<HashMap<i64, Hit>> {
        let rows = plans::select(
            self.client,
            "SELECT n.name_id, n.ontology, n.concept_id, n.name FROM belink.names n WHERE n.name_id = ANY ($1)",
            &[INT8_ARRAY],
            &[ids.to_vec().into()],
            "reading trigram candidates",
        );
        Ok(rows
            .map(|row| {
                let text = |i| row.get::<String>(i).or_raise("reading a candidate").unwrap_or_default();
                let id = row.get::<i64>(1).or_raise("reading a candidate").unwrap_or_default();
                // The similarity comes with the trigram index's answer.
                (id, Hit { ontology: text(2), concept_id: text(3), matched_name: text(4), similarity: 0.0 })
            })
            .collect())
    }

    fn dense(&self, searches: &[DenseSearch], limit: usize) -> Result<Vec<Vec<Hit>>> {
        let vec_schema = self.vector_schema.get_or_init(|| extension_schema(self.client, "vector"));
        // Twice the names asked for: over MEDIC, the first name found is exact search's for
        // 99.3 % of 300 NCBI-disease dev mentions at ef_search 100 against 98.3 % at 50, for
        // half a millisecond more (eval/hnsw-recall.txt).
        let ef_search = (2 * limit).max(40).to_string();
        Ok(self.with_setting("hnsw.ef_search", &ef_search, || {
            searches
                .iter()
                .map(|search| {
                    let dim = search.vector.len();
                    let mut all = Vec::new();
                    for ontology in &search.ontologies {
                        // The ontology as a literal, so the planner can use its partial HNSW index.
                        // Names written alike share a vector: among them, the user's names
                        // (belink_add_names: an annotated corpus's mentions, say) come first,
                        // as the user's own reading of that text.
                        let query = format!(
                            "SELECT n.ontology, n.concept_id, n.name, 1 - distance FROM (
                                 SELECT n.ontology, n.concept_id, n.name, n.kind,
                                        (n.embedding::{vec_schema}.vector({dim})) OPERATOR({vec_schema}.<=>) ($1::{vec_schema}.vector({dim})) AS distance
                                 FROM belink.names n
                                 WHERE n.ontology = {} AND n.embedding IS NOT NULL
                                 ORDER BY distance LIMIT $2) n
                             ORDER BY distance, n.kind = 'user' DESC",
                            pgrx::spi::quote_literal(&ontology.name)
                        );
                        let types = [PgOid::BuiltIn(PgBuiltInOids::FLOAT4ARRAYOID), PgOid::BuiltIn(PgBuiltInOids::INT4OID)];
                        all.extend(hits(plans::select(
                            self.client,
                            &query,
                            &types,
                            &[search.vector.clone().into(), (limit as i32).into()],
                            "dense retrieval",
                        )));
                    }
                    all
                })
                .collect()
        }))
    }

    fn stored_vectors(&self, names: &[&Hit]) -> Result<Vec<Option<Vec<f32>>>> {
        let column = |f: fn(&Hit) -> &String| -> Vec<String> { names.iter().map(|h| f(h).clone()).collect() };
        let rows = plans::select(
            self.client,
            "SELECT q.i, (SELECT n.embedding::real[] FROM belink.names n
                          WHERE n.ontology = q.ontology AND n.concept_id = q.concept_id AND n.name = q.name
                            AND n.embedding IS NOT NULL LIMIT 1)
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS q(ontology, concept_id, name, i)",
            &[TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY],
            &[column(|h| &h.ontology).into(), column(|h| &h.concept_id).into(), column(|h| &h.matched_name).into()],
            "reading stored embeddings",
        );
        let mut vectors = vec![None; names.len()];
        for row in rows {
            let position = row.get::<i64>(1).or_raise("reading stored embeddings").unwrap_or(0) as usize;
            let vector = row.get::<Vec<f32>>(2).or_raise("reading stored embeddings");
            if let Some(slot) = position.checked_sub(1).and_then(|p| vectors.get_mut(p)) {
                *slot = vector;
            }
        }
        Ok(vectors)
    }

    fn preferred_names(&self, concepts: &[ConceptKey]) -> Result<HashMap<ConceptKey, String>> {
        let (ontologies, ids) = keys_columns(concepts);
        Ok(plans::select(
            self.client,
            "SELECT DISTINCT c.ontology, c.concept_id, c.name FROM belink.concepts c
             JOIN unnest($1::text[], $2::text[]) AS w(ontology, concept_id) USING (ontology, concept_id)",
            &[TEXT_ARRAY, TEXT_ARRAY],
            &[ontologies.into(), ids.into()],
            "reading preferred names",
        )
        .filter_map(|row| Some(((row.get(1).ok()??, row.get(2).ok()??), row.get(3).ok()??)))
        .collect())
    }

    fn concept_details(&self, concepts: &[ConceptKey]) -> Result<HashMap<ConceptKey, ConceptDetails>> {
        if concepts.is_empty() {
            return Ok(HashMap::new());
        }
        let (ontologies, ids) = keys_columns(concepts);
        Ok(plans::select(
            self.client,
            "SELECT c.ontology, c.concept_id, c.definition,
                    ARRAY(SELECT n.name FROM belink.names n
                          WHERE n.ontology = c.ontology AND n.concept_id = c.concept_id AND n.kind = ANY($3)
                          ORDER BY n.name_id LIMIT $4)
             FROM belink.concepts c
             JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS w(ontology, concept_id)) w
               USING (ontology, concept_id)",
            &[TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY, PgOid::BuiltIn(PgBuiltInOids::INT4OID)],
            &[
                ontologies.into(),
                ids.into(),
                NameKind::texts(&NameKind::PROMPT_SYNONYMS).into(),
                (SYNONYMS_READ as i32).into(),
            ],
            "reading candidate details",
        )
        .filter_map(|row| {
            let key = (row.get::<String>(1).ok()??, row.get::<String>(2).ok()??);
            let definition = row.get::<String>(3).ok()?;
            let synonyms = row.get::<Vec<String>>(4).ok()?.unwrap_or_default();
            Some((key, ConceptDetails { definition, synonyms }))
        })
        .collect())
    }
}
