//! Ontology files: the data model every loader produces, format detection, and reading plain
//! or gzip input line by line with clear errors.
//!
//! Each format has its own module; all of them produce an [`Ontology`]: a list of concepts,
//! each with its preferred name, synonyms (with their kind), definition, alternative ids,
//! parents and semantic types.

mod biosyn;
mod ctd;
mod obo;
mod rrf;
mod tsv;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub(crate) use crate::input::clip;
pub use crate::input::{open_file, Lines, ReadError, Result};
pub use rrf::UmlsFilter;

/// The file formats BeLink reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OBO 1.2/1.4 flat files (HPO, Disease Ontology, MONDO, ChEBI...).
    Obo,
    /// CTD's disease or chemical vocabulary (`CTD_diseases.tsv`, `CTD_chemicals.tsv`).
    Ctd,
    /// `ID[|ALT...]||name|synonym|...`, the dictionary files of BioSyn and SapBERT.
    Biosyn,
    /// UMLS `MRCONSO.RRF`, with `MRSTY.RRF` read from the same directory when present.
    Rrf,
    /// `concept_id<TAB>name[<TAB>synonym|synonym...]`.
    Tsv,
}

impl Format {
    pub const ALL: [Format; 5] = [Format::Obo, Format::Ctd, Format::Biosyn, Format::Rrf, Format::Tsv];

    pub fn name(self) -> &'static str {
        match self {
            Format::Obo => "obo",
            Format::Ctd => "ctd",
            Format::Biosyn => "biosyn",
            Format::Rrf => "rrf",
            Format::Tsv => "tsv",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `format` argument of the loaders: a format name, or `auto` (`None`) to detect it.
pub fn parse_format_argument(text: &str) -> Result<Option<Format>> {
    let text = text.trim().to_ascii_lowercase();
    if text == "auto" || text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some)
}

impl FromStr for Format {
    type Err = ReadError;

    fn from_str(text: &str) -> Result<Format> {
        let lower = text.trim().to_ascii_lowercase();
        let format = match lower.as_str() {
            "obo" => Format::Obo,
            "ctd" | "medic" => Format::Ctd,
            "biosyn" | "dictionary" | "dict" => Format::Biosyn,
            "rrf" | "umls" | "mrconso" => Format::Rrf,
            "tsv" => Format::Tsv,
            _ => {
                let known: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                return Err(ReadError::Invalid(format!(
                    "unknown ontology format '{text}': use one of auto, {}",
                    known.join(", ")
                )));
            }
        };
        Ok(format)
    }
}

/// How a name relates to its concept. Stored as text in `belink.names.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NameKind {
    Preferred,
    Exact,
    Abbreviation,
    Related,
    Narrow,
    Broad,
    User,
}

impl NameKind {
    /// Every kind: `belink.names.kind`'s CHECK in sql/catalog.sql lists the same (tested).
    pub const ALL: [NameKind; 7] = [
        NameKind::Preferred,
        NameKind::Exact,
        NameKind::Abbreviation,
        NameKind::Related,
        NameKind::Narrow,
        NameKind::Broad,
        NameKind::User,
    ];
    /// The kinds mention detection uses: broad and narrow synonyms name other concepts too
    /// often.
    pub const DETECTION: [NameKind; 5] =
        [NameKind::Preferred, NameKind::Exact, NameKind::Abbreviation, NameKind::Related, NameKind::User];
    /// The kinds the re-ranking prompt shows as a candidate's synonyms.
    pub const PROMPT_SYNONYMS: [NameKind; 4] =
        [NameKind::Exact, NameKind::Related, NameKind::Abbreviation, NameKind::User];

    /// Kinds as text, for a `kind = ANY($n)` parameter.
    pub fn texts(kinds: &[NameKind]) -> Vec<String> {
        kinds.iter().map(|k| k.as_str().to_string()).collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Preferred => "preferred",
            NameKind::Exact => "exact",
            NameKind::Abbreviation => "abbreviation",
            NameKind::Related => "related",
            NameKind::Narrow => "narrow",
            NameKind::Broad => "broad",
            NameKind::User => "user",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    pub text: String,
    pub kind: NameKind,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Concept {
    pub id: String,
    /// The preferred name.
    pub name: String,
    pub definition: Option<String>,
    pub alt_ids: Vec<String>,
    pub parents: Vec<String>,
    pub xrefs: Vec<String>,
    pub semantic_types: Vec<String>,
    pub obsolete: bool,
    pub replaced_by: Vec<String>,
    pub synonyms: Vec<Synonym>,
}

impl Concept {
    pub(crate) fn new(id: impl Into<String>, name: impl Into<String>) -> Concept {
        Concept { id: id.into(), name: name.into(), ..Concept::default() }
    }

    /// Adds a synonym unless the concept already has this exact name.
    pub(crate) fn add_synonym(&mut self, text: &str, kind: NameKind) {
        let text = text.trim();
        if text.is_empty() || text == self.name || self.synonyms.iter().any(|s| s.text == text) {
            return;
        }
        self.synonyms.push(Synonym { text: text.to_string(), kind });
    }

    /// Every distinct name of the concept, the preferred name first.
    pub fn names(&self) -> impl Iterator<Item = (&str, NameKind)> {
        let preferred = (!self.name.is_empty()).then_some((self.name.as_str(), NameKind::Preferred));
        preferred.into_iter().chain(self.synonyms.iter().map(|s| (s.text.as_str(), s.kind)))
    }
}

/// The concepts at or under `roots` (ids), given each concept's parents: the branches of an
/// ontology that detection is restricted to (HPO's "Phenotypic abnormality" leaves out its modes
/// of inheritance and frequencies). Cycles are harmless.
pub fn descendants<'a>(
    parents: impl IntoIterator<Item = (&'a str, &'a [String])>,
    roots: &[String],
) -> std::collections::HashSet<String> {
    let mut children: std::collections::HashMap<&str, Vec<&str>> = std::collections::HashMap::new();
    for (id, parents) in parents {
        for parent in parents {
            children.entry(parent.as_str()).or_default().push(id);
        }
    }
    let mut found: std::collections::HashSet<String> = roots.iter().cloned().collect();
    let mut stack: Vec<&str> = roots.iter().map(String::as_str).collect();
    while let Some(id) = stack.pop() {
        for &child in children.get(id).into_iter().flatten() {
            if found.insert(child.to_string()) {
                stack.push(child);
            }
        }
    }
    found
}

/// A parsed ontology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ontology {
    pub format: Format,
    /// Version or date found in the file's header, if any.
    pub version: Option<String>,
    pub concepts: Vec<Concept>,
}

impl Ontology {
    pub fn active_concepts(&self) -> impl Iterator<Item = &Concept> {
        self.concepts.iter().filter(|c| !c.obsolete)
    }

    pub fn obsolete_count(&self) -> usize {
        self.concepts.iter().filter(|c| c.obsolete).count()
    }

    /// Names of active concepts: what retrieval and detection search.
    pub fn name_count(&self) -> usize {
        self.active_concepts().map(|c| c.names().count()).sum()
    }
}

/// Everything a loader may need besides the input itself.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `None` detects the format from the content.
    pub format: Option<Format>,
    pub umls: UmlsFilter,
}

/// An ontology read concept by concept, for loading: a UMLS Metathesaurus is read one concept's
/// rows at a time, never whole (10 million names would take gigabytes); the other formats,
/// whose files are small, are parsed whole first.
pub struct ConceptStream {
    pub format: Format,
    /// Version or date found in the file's header, if any.
    pub version: Option<String>,
    concepts: Concepts,
}

enum Concepts {
    Parsed(std::vec::IntoIter<Concept>),
    Umls(Box<rrf::Concepts>),
}

impl Iterator for ConceptStream {
    /// A concept, or the error that ends the input.
    type Item = Result<Concept>;

    fn next(&mut self) -> Option<Result<Concept>> {
        match &mut self.concepts {
            Concepts::Parsed(concepts) => concepts.next().map(Ok),
            Concepts::Umls(concepts) => concepts.next(),
        }
    }
}

impl ConceptStream {
    /// Every concept, read to the end.
    pub fn into_ontology(self) -> Result<Ontology> {
        let (format, version) = (self.format, self.version.clone());
        let concepts = self.collect::<Result<Vec<Concept>>>()?;
        Ok(Ontology { format, version, concepts })
    }
}

/// Reads an ontology from a file (plain or gzip, detected by content).
/// For UMLS, `MRSTY.RRF[.gz]` next to `MRCONSO.RRF` supplies semantic types when present.
pub fn read_file(path: &Path, options: &LoadOptions) -> Result<ConceptStream> {
    let mut lines = Lines::new(open_file(path)?);
    let format = match options.format {
        Some(format) => format,
        None => detect_format(&mut lines)?,
    };
    let mut semantic_types = rrf::SemanticTypes::default();
    if format == Format::Rrf {
        if let Some(mrsty) = rrf::sibling_mrsty(path) {
            let mut sty_lines = Lines::new(open_file(&mrsty)?);
            semantic_types = rrf::SemanticTypes::read(&mut sty_lines)
                .map_err(|e| ReadError::Invalid(format!("{}: {e}", mrsty.display())))?;
        }
    }
    read(format, lines, options, semantic_types)
}

/// Reads an ontology from in-memory content (for clients that cannot place files on the
/// server). Gzip content is accepted too.
pub fn read_bytes(content: &[u8], options: &LoadOptions) -> Result<ConceptStream> {
    let mut lines = Lines::new(crate::input::open_bytes(content.to_vec())?);
    let format = match options.format {
        Some(format) => format,
        None => detect_format(&mut lines)?,
    };
    read(format, lines, options, rrf::SemanticTypes::default())
}

/// [`read_file`], every concept at once.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<Ontology> {
    read_file(path, options)?.into_ontology()
}

/// [`read_bytes`], every concept at once.
pub fn load_bytes(content: &[u8], options: &LoadOptions) -> Result<Ontology> {
    read_bytes(content, options)?.into_ontology()
}

fn read(
    format: Format,
    mut lines: Lines,
    options: &LoadOptions,
    semantic_types: rrf::SemanticTypes,
) -> Result<ConceptStream> {
    let ontology = match format {
        Format::Rrf => {
            let concepts = Concepts::Umls(Box::new(rrf::Concepts::new(lines, &options.umls, semantic_types)));
            return Ok(ConceptStream { format, version: None, concepts });
        }
        Format::Obo => obo::parse(&mut lines)?,
        Format::Ctd => ctd::parse(&mut lines)?,
        Format::Biosyn => biosyn::parse(&mut lines)?,
        Format::Tsv => tsv::parse(&mut lines)?,
    };
    if ontology.concepts.is_empty() {
        return Err(ReadError::Invalid(format!("no concepts found (read {} lines as {format})", lines.line_number())));
    }
    Ok(ConceptStream { format, version: ontology.version, concepts: Concepts::Parsed(ontology.concepts.into_iter()) })
}

/// Detects the format from the first lines of the content (not from the file name).
pub fn detect_format(lines: &mut Lines) -> Result<Format> {
    let head = lines.peek_lines(200)?;
    let mut meaningful = head.iter().map(|l| l.as_str()).filter(|l| !l.trim().is_empty()).peekable();
    if meaningful.peek().is_none() {
        return Err(ReadError::Invalid("the input is empty".into()));
    }
    for line in head.iter() {
        if line.starts_with("# The Comparative Toxicogenomics Database") || line.starts_with("# Fields:") {
            return Ok(Format::Ctd);
        }
        let trimmed = line.trim_end();
        if trimmed == "[Term]" || trimmed == "[Typedef]" || line.starts_with("format-version:") {
            return Ok(Format::Obo);
        }
    }
    let first_data =
        head.iter().find(|l| !l.trim().is_empty() && !l.starts_with('#')).map(String::as_str).unwrap_or("");
    if rrf::is_mrconso_line(first_data) {
        return Ok(Format::Rrf);
    }
    if rrf::is_mrsty_line(first_data) {
        return Err(ReadError::Invalid(
            "this is UMLS MRSTY.RRF (semantic types): load MRCONSO.RRF instead; MRSTY.RRF next to it is read automatically"
                .into(),
        ));
    }
    if first_data.contains("||") {
        return Ok(Format::Biosyn);
    }
    let columns = first_data.split('\t').count();
    if columns >= 8 && first_data.split('\t').nth(1).is_some_and(|id| id.starts_with("MESH:")) {
        return Ok(Format::Ctd);
    }
    if (2..=3).contains(&columns) {
        return Ok(Format::Tsv);
    }
    if head.iter().any(|l| l.contains(": ")) && head.iter().any(|l| l.starts_with('[')) {
        return Ok(Format::Obo);
    }
    Err(ReadError::Invalid(format!(
        "cannot detect the format from the first lines; pass it explicitly (one of {})",
        Format::ALL.map(|f| f.name()).join(", ")
    )))
}

/// Splits a `|`-separated field into its non-empty, trimmed parts.
pub(crate) fn split_list(field: &str) -> impl Iterator<Item = &str> {
    field.split('|').map(str::trim).filter(|s| !s.is_empty())
}

/// Collects concepts in file order, merging repeated ids where a format allows it (one line
/// per name in TSV and dictionary files) or rejecting them where it does not.
#[derive(Default)]
pub(crate) struct ConceptList {
    concepts: Vec<Concept>,
    index: std::collections::HashMap<String, usize>,
}

impl ConceptList {
    /// Adds a concept; if the id is already present, its names and ids are merged in.
    pub(crate) fn merge(&mut self, concept: Concept) {
        match self.index.get(&concept.id) {
            Some(&i) => {
                let existing = &mut self.concepts[i];
                let kind = NameKind::Exact;
                existing.add_synonym(&concept.name, kind);
                for synonym in concept.synonyms {
                    existing.add_synonym(&synonym.text, synonym.kind);
                }
                for alt in concept.alt_ids {
                    if !existing.alt_ids.contains(&alt) {
                        existing.alt_ids.push(alt);
                    }
                }
            }
            None => {
                self.index.insert(concept.id.clone(), self.concepts.len());
                self.concepts.push(concept);
            }
        }
    }

    /// Adds a concept whose id must be new.
    pub(crate) fn insert_unique(&mut self, concept: Concept, line: usize) -> Result<()> {
        if self.index.contains_key(&concept.id) {
            return Err(ReadError::syntax(line, format!("duplicate concept id '{}'", concept.id)));
        }
        self.merge(concept);
        Ok(())
    }

    pub(crate) fn into_vec(self) -> Vec<Concept> {
        self.concepts
    }
}

#[cfg(test)]
mod tests;
