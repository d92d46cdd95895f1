//! Reading and writing the belink catalog tables (sql/catalog.sql) through SPI.

use belink_core::catalog::{Embeddings, Ontologies, OntologyState};
use belink_core::fold::fold;
use belink_core::ontology::{Concept, Format, NameKind};
use belink_core::retrieval::fuse::FusionWeights;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiTupleTable};
use pgrx::{PgMemoryContexts, PgSqlErrorCode};

use crate::error::{raise, raise_with_hint, OrRaise, OrRaiseError};
use crate::plans;

/// Rows per INSERT statement: large enough to amortise planning, small enough for memory.
const INSERT_CHUNK: usize = 10_000;
/// Joins list elements inside one text value (SPI has no array-of-arrays parameters).
const LIST_SEPARATOR: char = '\u{1f}';

/// What a load did, returned to the caller as one row.
pub struct LoadSummary {
    pub concepts: i64,
    pub names: i64,
    pub obsolete: i64,
    pub user_names_kept: i64,
    pub user_names_dropped: i64,
}

/// Runs `query` through one cursor (one snapshot) and hands its rows to `each`, `part` rows at
/// a time, then once more with none left. Each part is freed once `each` has read it: SPI
/// would keep every fetched part until the call ends (10 million names: 800 MB).
pub fn read_in_parts<E>(
    client: &SpiClient<'_>,
    query: &str,
    args: &[DatumWithOid<'_>],
    part: usize,
    context: &str,
    mut each: impl FnMut(SpiTupleTable<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut cursor = client.open_cursor(query, args);
    loop {
        pgrx::pg_sys::check_for_interrupts!();
        let rows = cursor.fetch(part as libc::c_long).or_raise(context);
        // Safety: the table of this fetch, freed once `each` has consumed its rows.
        let table = unsafe { pgrx::pg_sys::SPI_tuptable };
        let fetched = rows.len();
        let read = each(rows);
        unsafe { pgrx::pg_sys::SPI_freetuptable(table) };
        read?;
        if fetched == 0 {
            return Ok(());
        }
    }
}

/// Ontology names become parts of index names later; keep them simple.
pub fn validate_ontology_name(name: &str) {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "invalid ontology name \"{name}\": use 1 to 63 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit"
            ),
        );
    }
}

/// The schema an extension is installed in, quoted: BeLink calls other extensions' functions
/// and operators schema-qualified so that the caller's search_path does not matter.
pub fn extension_schema(client: &SpiClient<'_>, extension: &str) -> String {
    client
        .select(
            "SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
             WHERE e.extname = $1",
            Some(1),
            &[extension.into()],
        )
        .or_raise("finding an extension")
        .first()
        .get_one::<String>()
        .or_raise("finding an extension")
        .unwrap_or_else(|| {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("extension {extension} is not installed"))
        })
}

/// Builds `ontology`'s HNSW index (cosine) over its names' embeddings, unless it exists
/// (see belink.create_embedding_index); returns its name.
pub fn build_embedding_index(client: &mut SpiClient<'_>, ontology: &str) -> String {
    client
        .update("SELECT belink.create_embedding_index($1)", None, &[ontology.into()])
        .or_raise("building the HNSW index")
        .first()
        .get_one::<String>()
        .or_raise("building the HNSW index")
        .unwrap_or_default()
}

/// Drops an ontology's HNSW index, if it has one (see belink.drop_embedding_index); returns
/// whether it had one.
pub fn drop_embedding_index(client: &mut SpiClient<'_>, ontology: &str) -> bool {
    client
        .update("SELECT belink.drop_embedding_index($1)", None, &[ontology.into()])
        .or_raise("dropping the HNSW index")
        .first()
        .get_one::<bool>()
        .or_raise("dropping the HNSW index")
        .unwrap_or(false)
}

/// Raises "permission denied" when the ontology `name` is loaded and the current role may not
/// change it (belink.may_change_ontology decides; row-level security would refuse the writes).
pub fn require_change_right(client: &SpiClient<'_>, name: &str) {
    let row = client
        .select(
            "SELECT owner::text, belink.may_change_ontology(name, current_user) FROM belink.ontologies WHERE name = $1",
            None,
            &[name.into()],
        )
        .or_raise("reading the ontology's owner");
    if row.is_empty() {
        return;
    }
    let row = row.first();
    let (owner, allowed): (Option<String>, Option<bool>) =
        (row.get(1).or_raise("reading the ontology's owner"), row.get(2).or_raise("reading the ontology's owner"));
    if allowed != Some(true) {
        raise_with_hint(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for ontology \"{name}\": it belongs to role {}", owner.unwrap_or_default()),
            "Members of an ontology's owner role (and superusers) may change it. Its owner can hand it to \
             another role it belongs to: UPDATE belink.ontologies SET owner = 'role' WHERE name = '...'.",
        );
    }
}

/// Raises unless the ontology `name` is loaded and the current role may change it.
pub fn require_owned_ontology(client: &SpiClient<'_>, name: &str) {
    require_ontology(client, name);
    require_change_right(client, name);
}

/// The loaded ontologies, read once per call: one statement answers whether an ontology
/// exists, whether caches are current and which ontologies have embeddings.
pub fn read_ontologies(client: &SpiClient<'_>) -> Ontologies {
    let rows = plans::select(
        client,
        "SELECT name, generation, embedding_generation, embedding_model, embedding_dim, embedding_ignores_case,
                fusion_exact, fusion_trigram, fusion_dense, embedding_model = adapted_encoder,
                (SELECT s.version FROM belink.span_scorers s WHERE s.ontology = o.name), detection_roots
         FROM belink.ontologies o ORDER BY name",
        &[],
        &[],
        "reading the ontologies",
    );
    let states = rows
        .filter_map(|row| {
            let embeddings = match (row.get::<String>(4).ok()?, row.get::<i32>(5).ok()?) {
                (Some(model), Some(dim)) => Some(Embeddings {
                    model,
                    dim: dim as usize,
                    ignores_case: row.get::<bool>(6).ok()?.unwrap_or(false),
                    adapted: row.get::<bool>(10).ok()?.unwrap_or(false),
                }),
                _ => None,
            };
            Some(OntologyState {
                name: row.get(1).ok()??,
                generation: row.get(2).ok()??,
                embedding_generation: row.get(3).ok()??,
                embeddings,
                fusion: FusionWeights {
                    exact: row.get(7).ok()??,
                    trigram: row.get(8).ok()??,
                    dense: row.get(9).ok()??,
                },
                span_scorer: row.get(11).ok()?,
                detection_roots: row.get(12).ok()??,
            })
        })
        .collect();
    Ontologies::new(states)
}

/// Raises "unknown ontology" (with the loaded ones as a hint) unless `name` is loaded.
pub fn require_ontology(client: &SpiClient<'_>, name: &str) {
    read_ontologies(client).require(Some(name)).or_raise_error();
}

/// Replaces the ontology `name` by the `concepts` read from `source` (or creates it). Runs
/// inside the caller's transaction, so a failure at any point (a bad row half-way through the
/// file included) leaves the previous version intact. Concepts are inserted as they are read,
/// a chunk at a time, so a UMLS-size load holds one chunk, not the file. Names users added
/// with belink_add_names are kept when their concept still exists and is active.
pub fn replace_ontology(
    name: &str,
    source: &str,
    format: Format,
    version: Option<&str>,
    concepts: impl Iterator<Item = Concept>,
) -> LoadSummary {
    Spi::connect_mut(|client| {
        require_change_right(client, name);
        // The upsert locks the ontology's row: concurrent loads of one name run one after another.
        client
            .update(
                "INSERT INTO belink.ontologies AS o (name, format, source, version) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET format = EXCLUDED.format, source = EXCLUDED.source,
                     version = EXCLUDED.version, loaded_at = now(), loaded_by = current_user,
                     generation = nextval('belink.generations')",
                None,
                &[name.into(), format.name().into(), source.into(), version.into()],
            )
            .or_raise("recording the ontology");

        let user_names: Vec<(String, String)> = client
            .select(
                "SELECT concept_id, name FROM belink.names WHERE ontology = $1 AND kind = 'user' ORDER BY name_id",
                None,
                &[name.into()],
            )
            .or_raise("reading user names")
            .filter_map(|row| Some((row.get::<String>(1).ok()??, row.get::<String>(2).ok()??)))
            .collect();
        // Embeddings of names that survive the reload are kept (same model: the ontology row
        // keeps its embedding_model); belink_index then embeds only what is new.
        client
            .update(
                "CREATE TEMP TABLE belink_kept_embeddings ON COMMIT DROP AS
                 SELECT DISTINCT ON (name) name, embedding FROM belink.names
                 WHERE ontology = $1 AND embedding IS NOT NULL",
                None,
                &[name.into()],
            )
            .or_raise("keeping embeddings");
        client
            .update("DELETE FROM belink.names WHERE ontology = $1", None, &[name.into()])
            .or_raise("removing the previous names");
        client
            .update("DELETE FROM belink.concepts WHERE ontology = $1", None, &[name.into()])
            .or_raise("removing the previous concepts");

        let mut memory = StatementMemory::new();
        let mut summary = LoadSummary { concepts: 0, names: 0, obsolete: 0, user_names_kept: 0, user_names_dropped: 0 };
        let mut chunk: Vec<Concept> = Vec::with_capacity(INSERT_CHUNK);
        let mut chunk_names = 0;
        let mut names = NameRows::default();
        for concept in concepts {
            chunk_names += concept.names().count();
            chunk.push(concept);
            if chunk.len() >= INSERT_CHUNK || chunk_names >= INSERT_CHUNK {
                insert_chunk(client, &mut memory, name, &chunk, &mut names, &mut summary);
                chunk.clear();
                chunk_names = 0;
            }
        }
        insert_chunk(client, &mut memory, name, &chunk, &mut names, &mut summary);

        let wanted: Vec<String> = user_names.iter().map(|(concept_id, _)| concept_id.clone()).collect();
        let active: std::collections::HashSet<String> = client
            .select(
                "SELECT concept_id FROM belink.concepts WHERE ontology = $1 AND concept_id = ANY($2) AND NOT obsolete",
                None,
                &[name.into(), wanted.into()],
            )
            .or_raise("reading user names' concepts")
            .filter_map(|row| row.get::<String>(1).ok().flatten())
            .collect();
        let (kept, dropped): (Vec<_>, Vec<_>) =
            user_names.iter().partition(|(concept_id, _)| active.contains(concept_id.as_str()));
        for (concept_id, text) in &kept {
            let _ = names.push(concept_id, text, NameKind::User);
        }
        summary.names += insert_queued(client, &mut memory, name, &mut names);
        names.warn_refused(name);
        summary.user_names_kept = kept.len() as i64;
        summary.user_names_dropped = dropped.len() as i64;
        // Restored one row at a time through the HNSW index, the kept vectors cost about 1.8 ms
        // each (MEDIC's reload: 138 s); the graph is built again over them in a fraction of
        // that (24 s for MEDIC).
        let had_index = drop_embedding_index(client, name);
        client
            .update(
                "UPDATE belink.names n SET embedding = k.embedding FROM belink_kept_embeddings k
                 WHERE n.ontology = $1 AND n.name = k.name",
                None,
                &[name.into()],
            )
            .or_raise("restoring embeddings");
        client.update("DROP TABLE belink_kept_embeddings", None, &[]).or_raise("keeping embeddings");
        if had_index {
            build_embedding_index(client, name);
        }

        client
            .update(
                // name_count follows the names themselves (the triggers on belink.names).
                "UPDATE belink.ontologies SET concept_count = $2, obsolete_count = $3 WHERE name = $1",
                None,
                &[name.into(), (summary.concepts as i32).into(), (summary.obsolete as i32).into()],
            )
            .or_raise("recording the counts");
        summary
    })
}

/// Inserts a chunk of concepts and the names of its active ones, and counts them.
fn insert_chunk(
    client: &mut SpiClient<'_>,
    memory: &mut StatementMemory,
    ontology: &str,
    chunk: &[Concept],
    names: &mut NameRows,
    summary: &mut LoadSummary,
) {
    insert_concepts(client, memory, ontology, chunk);
    let active: Vec<&Concept> = chunk.iter().filter(|c| !c.obsolete).collect();
    for concept in &active {
        for (text, kind) in concept.names() {
            let _ = names.push(&concept.id, text, kind); // refused names are counted in NameRows
        }
    }
    summary.concepts += active.len() as i64;
    summary.obsolete += (chunk.len() - active.len()) as i64;
    summary.names += insert_queued(client, memory, ontology, names);
}

/// Where a statement's argument arrays are built, emptied once it has run: SPI's own context
/// would keep every statement's arrays until the load ends (gigabytes at UMLS size).
struct StatementMemory(PgMemoryContexts);

impl StatementMemory {
    fn new() -> StatementMemory {
        StatementMemory(PgMemoryContexts::new("belink statement arguments"))
    }

    /// Runs `statement` with its allocations in this context, then frees them; it returns
    /// nothing PostgreSQL allocated.
    fn run<R>(&mut self, statement: impl FnOnce() -> R) -> R {
        // Safety: what `statement` allocated here is not used after it returns.
        unsafe {
            let result = self.0.switch_to(|_| statement());
            self.0.reset();
            result
        }
    }
}

fn joined(items: &[String], concept: &Concept) -> String {
    if let Some(bad) = items.iter().find(|item| item.contains(LIST_SEPARATOR)) {
        raise(
            PgSqlErrorCode::ERRCODE_BAD_COPY_FILE_FORMAT,
            format!("concept {}: value {bad:?} contains the control character U+001F", concept.id),
        );
    }
    items.join(&LIST_SEPARATOR.to_string())
}

fn insert_concepts(client: &mut SpiClient<'_>, memory: &mut StatementMemory, ontology: &str, concepts: &[Concept]) {
    const INSERT: &str = "
        INSERT INTO belink.concepts
            (ontology, concept_id, name, definition, alt_ids, parents, xrefs, semantic_types, obsolete, replaced_by)
        SELECT $1, id, name, definition, string_to_array(alt_ids, E'\\x1f'), string_to_array(parents, E'\\x1f'),
               string_to_array(xrefs, E'\\x1f'), string_to_array(semantic_types, E'\\x1f'), obsolete,
               string_to_array(replaced_by, E'\\x1f')
        FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                    $9::bool[], $10::text[])
             AS t(id, name, definition, alt_ids, parents, xrefs, semantic_types, obsolete, replaced_by)";
    for chunk in concepts.chunks(INSERT_CHUNK) {
        let column = |f: &dyn Fn(&Concept) -> String| -> Vec<String> { chunk.iter().map(f).collect() };
        memory.run(|| {
            let args: Vec<DatumWithOid> = vec![
                ontology.into(),
                column(&|c| c.id.clone()).into(),
                column(&|c| c.name.clone()).into(),
                chunk.iter().map(|c| c.definition.clone()).collect::<Vec<Option<String>>>().into(),
                column(&|c| joined(&c.alt_ids, c)).into(),
                column(&|c| joined(&c.parents, c)).into(),
                column(&|c| joined(&c.xrefs, c)).into(),
                column(&|c| joined(&c.semantic_types, c)).into(),
                chunk.iter().map(|c| c.obsolete).collect::<Vec<bool>>().into(),
                column(&|c| joined(&c.replaced_by, c)).into(),
            ];
            client.update(INSERT, None, &args).or_raise("inserting concepts");
        });
    }
}

/// Names waiting to be inserted, as columns.
#[derive(Default)]
pub struct NameRows {
    concept_ids: Vec<String>,
    names: Vec<String>,
    normalized: Vec<String>,
    kinds: Vec<String>,
    /// Names left out for their length, and the concept of the first.
    too_long: usize,
    first_too_long: Option<String>,
}

/// Longest name stored, in bytes: the B-tree on (ontology, normalized) takes index rows of at
/// most about 2,700 bytes, and no real name comes near this.
pub const MAX_NAME_BYTES: usize = 1000;

/// Why a name was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// It folds to nothing (only punctuation or blanks): it could never match.
    Unsearchable,
    TooLong,
}

impl NameRows {
    /// Queues a name, unless it could not be searched or stored.
    pub fn push(&mut self, concept_id: &str, name: &str, kind: NameKind) -> Result<(), Refused> {
        if name.len() > MAX_NAME_BYTES {
            self.too_long += 1;
            self.first_too_long.get_or_insert_with(|| concept_id.to_string());
            return Err(Refused::TooLong);
        }
        let normalized = fold(name);
        if normalized.is_empty() {
            return Err(Refused::Unsearchable);
        }
        self.concept_ids.push(concept_id.to_string());
        self.names.push(name.to_string());
        self.normalized.push(normalized);
        self.kinds.push(kind.as_str().to_string());
        Ok(())
    }

    /// Warns about the names left out for their length, if any.
    fn warn_refused(&self, ontology: &str) {
        if let Some(first) = &self.first_too_long {
            warning!(
                "belink: ontology \"{ontology}\": names longer than {MAX_NAME_BYTES} bytes left out: {} (the first of concept \"{first}\")",
                self.too_long
            );
        }
    }
}

/// Inserts the names and returns how many were inserted.
pub fn insert_names(client: &mut SpiClient<'_>, ontology: &str, mut rows: NameRows) -> i64 {
    let inserted = insert_queued(client, &mut StatementMemory::new(), ontology, &mut rows);
    rows.warn_refused(ontology);
    inserted
}

/// Inserts the names queued in `rows` and empties the queue (the refused names stay counted);
/// returns how many were inserted.
fn insert_queued(client: &mut SpiClient<'_>, memory: &mut StatementMemory, ontology: &str, rows: &mut NameRows) -> i64 {
    const INSERT: &str = "
        INSERT INTO belink.names (ontology, concept_id, name, normalized, kind)
        SELECT $1, concept_id, name, normalized, kind
        FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS t(concept_id, name, normalized, kind)";
    let total = rows.names.len();
    let mut start = 0;
    while start < total {
        let end = (start + INSERT_CHUNK).min(total);
        memory.run(|| {
            let args: Vec<DatumWithOid> = vec![
                ontology.into(),
                rows.concept_ids[start..end].to_vec().into(),
                rows.names[start..end].to_vec().into(),
                rows.normalized[start..end].to_vec().into(),
                rows.kinds[start..end].to_vec().into(),
            ];
            client.update(INSERT, None, &args).or_raise("inserting names");
        });
        start = end;
    }
    for column in [&mut rows.concept_ids, &mut rows.names, &mut rows.normalized, &mut rows.kinds] {
        column.clear();
    }
    total as i64
}
