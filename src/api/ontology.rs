//! Loading ontologies and extending them with user names.

use std::path::Path;
use std::time::Duration;

use belink_core::ontology::{self, ConceptStream, LoadOptions, UmlsFilter};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::{self, LoadSummary, NameRows, Refused, MAX_NAME_BYTES};
use crate::error::{raise, raise_ontology_error, raise_with_hint, OrRaise};
use crate::gucs;

/// Loads (or atomically replaces) an ontology from a file on the database server.
/// Reading server files takes superuser or membership in pg_read_server_files.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_load_ontology(
    name: Option<&str>,
    path: Option<&str>,
    format: default!(Option<&str>, "'auto'"),
    sources: default!(Option<Vec<String>>, "NULL"),
    languages: default!(Option<Vec<String>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ontology, String),
        name!(format, String),
        name!(version, Option<String>),
        name!(concepts, i64),
        name!(names, i64),
        name!(obsolete_skipped, i64),
        name!(user_names_kept, i64),
        name!(user_names_dropped, i64),
    ),
> {
    let name = required("name", name);
    let path = required("path", path);
    catalog::validate_ontology_name(name);
    require_server_file_access(path, "belink_load_ontology_text(name, content)");
    let options = load_options(format, sources, languages);
    let concepts = ontology::read_file(Path::new(path), &options).unwrap_or_else(|e| raise_ontology_error(path, e));
    store(name, path, path, concepts)
}

/// Loads (or atomically replaces) an ontology from content given as text, for clients that
/// cannot place files on the server.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_load_ontology_text(
    name: Option<&str>,
    content: Option<&str>,
    format: default!(Option<&str>, "'auto'"),
    sources: default!(Option<Vec<String>>, "NULL"),
    languages: default!(Option<Vec<String>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ontology, String),
        name!(format, String),
        name!(version, Option<String>),
        name!(concepts, i64),
        name!(names, i64),
        name!(obsolete_skipped, i64),
        name!(user_names_kept, i64),
        name!(user_names_dropped, i64),
    ),
> {
    let name = required("name", name);
    let content = required("content", content);
    catalog::validate_ontology_name(name);
    let options = load_options(format, sources, languages);
    let concepts = ontology::read_bytes(content.as_bytes(), &options)
        .unwrap_or_else(|e| raise_ontology_error("the given content", e));
    store(name, "(text)", "the given content", concepts)
}

/// Adds user names (synonyms) to a concept; they survive reloads of the ontology while the
/// concept exists. Returns how many names were new.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_add_names(ontology: Option<&str>, concept_id: Option<&str>, names: Option<Vec<Option<String>>>) -> i64 {
    let ontology = required("ontology", ontology);
    let concept_id = required("concept_id", concept_id);
    let names = names.unwrap_or_else(|| null_argument("names"));
    Spi::connect_mut(|client| {
        catalog::require_owned_ontology(client, ontology);
        let concept = client
            .select(
                "SELECT obsolete, replaced_by FROM belink.concepts WHERE ontology = $1 AND concept_id = $2",
                Some(1),
                &[ontology.into(), concept_id.into()],
            )
            .or_raise("looking up the concept");
        if concept.is_empty() {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("ontology \"{ontology}\" has no concept \"{concept_id}\""),
            );
        }
        let row = concept.first();
        if row.get::<bool>(1).or_raise("reading the concept") == Some(true) {
            let replaced_by: Vec<String> = row.get(2).or_raise("reading the concept").unwrap_or_default();
            raise_with_hint(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("concept \"{concept_id}\" of ontology \"{ontology}\" is obsolete"),
                format!(
                    "It is replaced by: {}.",
                    if replaced_by.is_empty() { "nothing".into() } else { replaced_by.join(", ") }
                ),
            );
        }
        let existing: Vec<String> = client
            .select(
                "SELECT name FROM belink.names WHERE ontology = $1 AND concept_id = $2",
                None,
                &[ontology.into(), concept_id.into()],
            )
            .or_raise("reading the concept's names")
            .filter_map(|row| row.get::<String>(1).ok().flatten())
            .collect();
        let mut rows = NameRows::default();
        let mut seen: std::collections::HashSet<String> = existing.into_iter().collect();
        // NULL elements add nothing; a name that could never match or be stored is an error.
        for name in names.into_iter().flatten() {
            let name = name.trim().to_string();
            if !seen.insert(name.clone()) {
                continue;
            }
            match rows.push(concept_id, &name, ontology::NameKind::User) {
                Ok(()) => {}
                Err(Refused::Unsearchable) => raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("name {name:?} has no letter or digit: it could never match"),
                ),
                Err(Refused::TooLong) => raise(
                    PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                    format!("a name of {} bytes is longer than {MAX_NAME_BYTES} bytes", name.len()),
                ),
            }
        }
        // The ontology's generation and name count follow (the trigger on belink.names).
        catalog::insert_names(client, ontology, rows)
    })
}

/// Removes user names (added with belink_add_names) from a concept. Returns how many were
/// removed.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_remove_names(ontology: Option<&str>, concept_id: Option<&str>, names: Option<Vec<Option<String>>>) -> i64 {
    let ontology = required("ontology", ontology);
    let concept_id = required("concept_id", concept_id);
    let names: Vec<String> =
        names.unwrap_or_else(|| null_argument("names")).into_iter().flatten().map(|n| n.trim().to_string()).collect();
    Spi::connect_mut(|client| {
        catalog::require_owned_ontology(client, ontology);
        client
            .update(
                "DELETE FROM belink.names WHERE ontology = $1 AND concept_id = $2 AND kind = 'user' AND name = ANY($3)",
                None,
                &[ontology.into(), concept_id.into(), names.into()],
            )
            .or_raise("removing names")
            .len() as i64
    })
}

/// Removes an ontology with its concepts and names. Returns false if it was not loaded.
#[pg_extern(volatile, parallel_unsafe)]
fn belink_drop_ontology(name: &str) -> bool {
    Spi::connect_mut(|client| {
        catalog::require_change_right(client, name);
        crate::api::adapt::remove_files_after_commit(client, name);
        let dropped = !client
            .update("DELETE FROM belink.ontologies WHERE name = $1", None, &[name.into()])
            .or_raise("dropping the ontology")
            .is_empty();
        // Its partial HNSW index too (complete or left by an interrupted belink_index).
        if dropped {
            catalog::drop_embedding_index(client, name);
            // And the model server's trigram indexes, now rather than at commit (no I/O that
            // could fail after commit): if this transaction rolls back, the next search
            // reloads the index, as after a server restart.
            if let Err(reason) = crate::client::drop_trigram_indexes(name, Duration::from_secs(2)) {
                debug1!("belink: the model server keeps the trigram indexes of {name}: {reason}");
            }
        }
        dropped
    })
}

/// Stores what `concepts` reads from `source` (`shown`: how errors name it) as ontology `name`.
fn store(
    name: &str,
    source: &str,
    shown: &str,
    concepts: ConceptStream,
) -> TableIterator<
    'static,
    (
        name!(ontology, String),
        name!(format, String),
        name!(version, Option<String>),
        name!(concepts, i64),
        name!(names, i64),
        name!(obsolete_skipped, i64),
        name!(user_names_kept, i64),
        name!(user_names_dropped, i64),
    ),
> {
    let (format, version) = (concepts.format, concepts.version.clone());
    // A row the reader cannot take, half-way through the file, ends the load (and rolls it back).
    let read = concepts.map(|concept| concept.unwrap_or_else(|e| raise_ontology_error(shown, e)));
    let LoadSummary { concepts, names, obsolete, user_names_kept, user_names_dropped } =
        catalog::replace_ontology(name, source, format, version.as_deref(), read);
    TableIterator::once((
        name.to_string(),
        format.name().to_string(),
        version,
        concepts,
        names,
        obsolete,
        user_names_kept,
        user_names_dropped,
    ))
}

fn load_options(format: Option<&str>, sources: Option<Vec<String>>, languages: Option<Vec<String>>) -> LoadOptions {
    let format = ontology::parse_format_argument(format.unwrap_or("auto"))
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string()));
    let (default_sources, default_languages) = gucs::umls_filter();
    LoadOptions {
        format,
        umls: UmlsFilter {
            sources: sources.unwrap_or(default_sources),
            languages: languages.unwrap_or(default_languages),
        },
    }
}

/// Reading server files is what COPY FROM a file allows: superusers and pg_read_server_files.
/// `instead`: the function that takes the content as text.
pub(super) fn require_server_file_access(path: &str, instead: &str) {
    let allowed = unsafe {
        pg_sys::superuser()
            || pg_sys::has_privs_of_role(pg_sys::GetUserId(), pg_sys::Oid::from(pg_sys::ROLE_PG_READ_SERVER_FILES))
    };
    if !allowed {
        raise_with_hint(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied to read server file \"{path}\""),
            format!(
                "Only superusers and members of pg_read_server_files may read server files; \
                 others can pass the content with {instead}."
            ),
        );
    }
}

pub(super) fn required<'a>(argument: &str, value: Option<&'a str>) -> &'a str {
    value.unwrap_or_else(|| null_argument(argument))
}

fn null_argument(argument: &str) -> ! {
    raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("argument {argument} must not be NULL"))
}
