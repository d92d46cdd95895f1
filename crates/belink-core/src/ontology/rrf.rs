//! UMLS Metathesaurus: `MRCONSO.RRF` (concept names) and `MRSTY.RRF` (semantic types).
//!
//! MRCONSO columns: CUI|LAT|TS|LUI|STT|SUI|ISPREF|AUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF|
//! Rows are kept when their language is wanted, their source is wanted (all when no list is
//! given) and they are not suppressed (SUPPRESS = N). The preferred name of a concept is its
//! first atom with TS = P, STT = PF and ISPREF = Y; abbreviations and acronyms (TTY AB, ACR)
//! are kept as kind `abbreviation`.

use std::path::{Path, PathBuf};

use super::{clip, Concept, ConceptList, Lines, NameKind, Ontology, ReadError, Result};

const MRCONSO_COLUMNS: usize = 18;

/// Which MRCONSO rows to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmlsFilter {
    /// LAT values to keep, e.g. `ENG`. Empty keeps every language.
    pub languages: Vec<String>,
    /// SAB values to keep, e.g. `MSH`, `SNOMEDCT_US`. Empty keeps every source.
    pub sources: Vec<String>,
}

impl Default for UmlsFilter {
    fn default() -> Self {
        UmlsFilter { languages: vec!["ENG".to_string()], sources: Vec::new() }
    }
}

impl UmlsFilter {
    fn keeps(&self, language: &str, source: &str) -> bool {
        (self.languages.is_empty() || self.languages.iter().any(|l| l == language))
            && (self.sources.is_empty() || self.sources.iter().any(|s| s == source))
    }
}

fn is_cui(field: &str) -> bool {
    field.len() == 8 && field.starts_with('C') && field[1..].bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn is_mrconso_line(line: &str) -> bool {
    let fields: Vec<&str> = line.split('|').collect();
    fields.len() >= MRCONSO_COLUMNS && is_cui(fields[0]) && fields[1].len() == 3
}

pub(crate) fn is_mrsty_line(line: &str) -> bool {
    let fields: Vec<&str> = line.split('|').collect();
    (6..=7).contains(&fields.len()) && is_cui(fields[0]) && fields[1].starts_with('T')
}

pub(crate) fn parse(lines: &mut Lines, filter: &UmlsFilter) -> Result<Ontology> {
    let mut concepts = ConceptList::default();
    let mut has_preferred = std::collections::HashSet::new();
    while let Some(line) = lines.next_line()? {
        let number = lines.line_number();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() < MRCONSO_COLUMNS || !is_cui(fields[0]) {
            return Err(ReadError::syntax(
                number,
                format!(
                    "expected an MRCONSO row of {MRCONSO_COLUMNS} '|'-separated fields starting with a CUI, found {} fields: '{}'",
                    fields.len(),
                    clip(&line)
                ),
            ));
        }
        let [cui, language, term_status, _, string_type, _, is_preferred, _, _, _, _, source, term_type, _, text, _, suppress, ..] =
            fields[..]
        else {
            unreachable!("length checked above")
        };
        if suppress != "N" || !filter.keeps(language, source) || text.trim().is_empty() {
            continue;
        }
        let preferred = term_status == "P" && string_type == "PF" && is_preferred == "Y";
        let kind = if matches!(term_type, "AB" | "ACR") { NameKind::Abbreviation } else { NameKind::Exact };
        match concepts.get_mut(cui) {
            None => {
                concepts.merge(Concept::new(cui, text.trim()));
                if preferred {
                    has_preferred.insert(cui.to_string());
                }
            }
            Some(concept) => {
                if preferred && !has_preferred.contains(cui) {
                    // A better preferred name than the first atom seen: swap them.
                    let previous = std::mem::replace(&mut concept.name, text.trim().to_string());
                    concept.synonyms.retain(|s| s.text != concept.name);
                    concept.add_synonym(&previous, NameKind::Exact);
                    has_preferred.insert(cui.to_string());
                } else {
                    concept.add_synonym(text, kind);
                }
            }
        }
    }
    Ok(Ontology { format: super::Format::Rrf, version: None, concepts: concepts.into_vec() })
}

/// `MRSTY.RRF` (or `.gz`) in the directory of `mrconso`, if present.
pub(crate) fn sibling_mrsty(mrconso: &Path) -> Option<PathBuf> {
    let dir = mrconso.parent()?;
    ["MRSTY.RRF", "MRSTY.RRF.gz", "mrsty.rrf", "mrsty.rrf.gz"]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// Adds semantic type ids (TUIs, e.g. `T047`) from MRSTY rows `CUI|TUI|STN|STY|ATUI|CVF|`.
pub(crate) fn add_semantic_types(ontology: &mut Ontology, lines: &mut Lines) -> Result<()> {
    let positions: std::collections::HashMap<String, usize> =
        ontology.concepts.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
    while let Some(line) = lines.next_line()? {
        let number = lines.line_number();
        if line.is_empty() {
            continue;
        }
        if !is_mrsty_line(&line) {
            return Err(ReadError::syntax(
                number,
                format!("expected an MRSTY row 'CUI|TUI|STN|STY|ATUI|CVF|', found '{}'", clip(&line)),
            ));
        }
        let mut fields = line.split('|');
        let (cui, tui) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        if let Some(&i) = positions.get(cui) {
            let types = &mut ontology.concepts[i].semantic_types;
            if !types.iter().any(|t| t == tui) {
                types.push(tui.to_string());
            }
        }
    }
    Ok(())
}
