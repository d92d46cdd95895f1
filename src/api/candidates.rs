//! Lexical candidate retrieval: exact match of the normalized mention, then trigram
//! similarity (pg_trgm), one row per concept.

use belink_core::normalize::normalize;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use crate::catalog;
use crate::error::{raise, OrRaise};
use crate::gucs;

/// The most candidates one call may ask for.
const MAX_K: i32 = 1000;
/// Names fetched by trigram distance per candidate wanted: a concept has several names.
const NAMES_PER_CANDIDATE: i32 = 5;

/// Candidate concepts for a mention, best first: exact normalized matches (score 1), then the
/// most similar names by trigram similarity. `ontology` NULL searches every ontology.
#[pg_extern(stable, parallel_safe)]
fn belink_candidates(
    mention: Option<&str>,
    ontology: default!(Option<&str>, "NULL"),
    k: default!(Option<i32>, 10),
) -> TableIterator<
    'static,
    (
        name!(concept_id, String),
        name!(name, String),
        name!(matched_name, String),
        name!(score, f32),
        name!(source, String),
        name!(ontology, String),
    ),
> {
    let k = k.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "argument k must not be NULL",
        )
    });
    if !(1..=MAX_K).contains(&k) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("k must be between 1 and {MAX_K}, not {k}"),
        );
    }
    let normalized = mention.map(normalize).unwrap_or_default();
    let rows = Spi::connect(|client| {
        if let Some(ontology) = ontology {
            catalog::require_ontology(client, ontology);
        }
        if normalized.is_empty() {
            return Vec::new();
        }
        lexical_candidates(client, &normalized, ontology, k)
    });
    TableIterator::new(rows)
}

type CandidateRow = (String, String, String, f32, String, String);

fn lexical_candidates(
    client: &SpiClient<'_>,
    normalized: &str,
    ontology: Option<&str>,
    k: i32,
) -> Vec<CandidateRow> {
    let trgm = trgm_schema(client);
    let in_ontology = if ontology.is_some() {
        "AND n.ontology = $2"
    } else {
        "AND $2::text IS NULL"
    };
    // The exact branch uses the B-tree on (ontology, normalized); the trigram branch the GIN
    // index, through pg_trgm's % operator (similarity at least pg_trgm.similarity_threshold).
    let query = format!(
        "WITH matches AS (
             SELECT n.ontology, n.concept_id, n.name AS matched, 1.0::real AS score, 'exact' AS source
             FROM belink.names n WHERE n.normalized = $1 {in_ontology}
             UNION ALL
             (SELECT n.ontology, n.concept_id, n.name, {trgm}.similarity(n.normalized, $1) AS score, 'trigram'
              FROM belink.names n WHERE n.normalized OPERATOR({trgm}.%) $1 {in_ontology}
              ORDER BY score DESC, n.name_id
              LIMIT $3 * {NAMES_PER_CANDIDATE})
         ), best AS (
             SELECT DISTINCT ON (ontology, concept_id) *
             FROM matches
             ORDER BY ontology, concept_id, score DESC, source = 'exact' DESC, matched
         )
         SELECT b.concept_id, c.name, b.matched, b.score, b.source, b.ontology
         FROM best b JOIN belink.concepts c USING (ontology, concept_id)
         ORDER BY b.score DESC, b.source = 'exact' DESC, b.ontology, b.concept_id
         LIMIT $3"
    );
    with_trigram_threshold(client, gucs::TRIGRAM_THRESHOLD.get(), || {
        client
            .select(
                &query,
                None,
                &[normalized.into(), ontology.into(), k.into()],
            )
            .or_raise("retrieving candidates")
            .map(|row| {
                let text = |i| {
                    row.get::<String>(i)
                        .or_raise("reading a candidate")
                        .unwrap_or_default()
                };
                let score = row
                    .get::<f32>(4)
                    .or_raise("reading a candidate")
                    .unwrap_or_default();
                (text(1), text(2), text(3), score, text(5), text(6))
            })
            .collect()
    })
}

/// Runs `f` with pg_trgm's similarity threshold (what `%` compares against) set to
/// `threshold`, then restores the caller's value.
fn with_trigram_threshold<T>(client: &SpiClient<'_>, threshold: f64, f: impl FnOnce() -> T) -> T {
    let set = |value: &str| {
        client
            .select(
                "SELECT set_config('pg_trgm.similarity_threshold', $1, true)",
                None,
                &[value.into()],
            )
            .or_raise("setting pg_trgm.similarity_threshold");
    };
    let previous = client
        .select(
            "SELECT current_setting('pg_trgm.similarity_threshold', true)",
            None,
            &[],
        )
        .or_raise("reading pg_trgm.similarity_threshold")
        .first()
        .get_one::<String>()
        .or_raise("reading pg_trgm.similarity_threshold")
        .unwrap_or_else(|| "0.3".to_string());
    set(&threshold.to_string());
    let result = f();
    set(&previous);
    result
}

/// The schema pg_trgm is installed in, quoted: its functions and operators are called
/// schema-qualified so that the caller's search_path does not matter.
fn trgm_schema(client: &SpiClient<'_>) -> String {
    client
        .select(
            "SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
             WHERE e.extname = 'pg_trgm'",
            Some(1),
            &[],
        )
        .or_raise("finding pg_trgm")
        .first()
        .get_one::<String>()
        .or_raise("finding pg_trgm")
        .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, "extension pg_trgm is not installed"))
}
