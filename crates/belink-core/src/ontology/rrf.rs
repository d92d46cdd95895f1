//! UMLS Metathesaurus: `MRCONSO.RRF` (concept names) and `MRSTY.RRF` (semantic types).
//!
//! MRCONSO columns: CUI|LAT|TS|LUI|STT|SUI|ISPREF|AUI|SAUI|SCUI|SDUI|SAB|TTY|CODE|STR|SRL|SUPPRESS|CVF|
//! Rows are kept when their language is wanted, their source is wanted (all when no list is
//! given) and they are not suppressed (SUPPRESS = N). The preferred name of a concept is its
//! first atom with TS = P, STT = PF and ISPREF = Y; abbreviations and acronyms (TTY AB, ACR)
//! are kept as kind `abbreviation`.

use std::path::{Path, PathBuf};

use super::{clip, Concept, Lines, NameKind, ReadError, Result};

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

/// MRCONSO's concepts one at a time, each built from its run of rows: UMLS ships MRCONSO sorted
/// by CUI, so a concept is complete when the next CUI starts, and a 10-million-name file is
/// never held whole. Rows of a CUI that come apart are an error (checked in a bit set of CUI
/// numbers, 1.25 MB), not a silently split concept.
pub(crate) struct Concepts {
    lines: Lines,
    filter: UmlsFilter,
    semantic_types: SemanticTypes,
    /// The concept whose rows are being read.
    current: Option<Building>,
    finished: CuiSet,
    emitted: usize,
    done: bool,
}

struct Building {
    concept: Concept,
    number: u32,
    /// Whether the name is the preferred atom's (else it is the first atom's, until one comes).
    has_preferred: bool,
}

impl Concepts {
    pub(crate) fn new(lines: Lines, filter: &UmlsFilter, semantic_types: SemanticTypes) -> Concepts {
        Concepts {
            lines,
            filter: filter.clone(),
            semantic_types,
            current: None,
            finished: CuiSet::default(),
            emitted: 0,
            done: false,
        }
    }

    fn finish(&mut self, building: Building) -> Concept {
        let Building { mut concept, number, .. } = building;
        self.finished.insert(number);
        self.emitted += 1;
        concept.semantic_types = self.semantic_types.of(number);
        concept
    }

    /// The next concept, or `None` at the end of the input.
    fn read(&mut self) -> Result<Option<Concept>> {
        while let Some(line) = self.lines.next_line()? {
            let number = self.lines.line_number();
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
            if suppress != "N" || !self.filter.keeps(language, source) || text.trim().is_empty() {
                continue;
            }
            let preferred = term_status == "P" && string_type == "PF" && is_preferred == "Y";
            let kind = if matches!(term_type, "AB" | "ACR") { NameKind::Abbreviation } else { NameKind::Exact };
            if let Some(building) = self.current.as_mut().filter(|b| b.concept.id == cui) {
                let concept = &mut building.concept;
                if preferred && !building.has_preferred {
                    // A better preferred name than the first atom seen: swap them.
                    let previous = std::mem::replace(&mut concept.name, text.trim().to_string());
                    concept.synonyms.retain(|s| s.text != concept.name);
                    concept.add_synonym(&previous, NameKind::Exact);
                    building.has_preferred = true;
                } else {
                    concept.add_synonym(text, kind);
                }
                continue;
            }
            let cui_number = cui_number(cui);
            if self.finished.contains(cui_number) {
                return Err(ReadError::syntax(
                    number,
                    format!(
                        "the rows of concept {cui} are not together: MRCONSO.RRF must be sorted by CUI, as UMLS ships it \
                         (sort -s -t'|' -k1,1 MRCONSO.RRF)"
                    ),
                ));
            }
            let next =
                Building { concept: Concept::new(cui, text.trim()), number: cui_number, has_preferred: preferred };
            if let Some(previous) = self.current.replace(next) {
                return Ok(Some(self.finish(previous)));
            }
        }
        match self.current.take() {
            Some(last) => Ok(Some(self.finish(last))),
            None if self.emitted == 0 => Err(ReadError::Invalid(format!(
                "no concepts found (read {} lines as {})",
                self.lines.line_number(),
                super::Format::Rrf
            ))),
            None => Ok(None),
        }
    }
}

impl Iterator for Concepts {
    type Item = Result<Concept>;

    fn next(&mut self) -> Option<Result<Concept>> {
        if self.done {
            return None;
        }
        let read = self.read().transpose();
        // After an error or the last concept, nothing more.
        self.done = !matches!(read, Some(Ok(_)));
        read
    }
}

/// The number of a CUI ("C0011849": 11849); `cui` has passed [`is_cui`].
fn cui_number(cui: &str) -> u32 {
    cui[1..].bytes().fold(0, |n, digit| n * 10 + u32::from(digit - b'0'))
}

/// A set of CUI numbers (below 10^7): one bit each.
#[derive(Default)]
struct CuiSet {
    words: Vec<u64>,
}

impl CuiSet {
    fn insert(&mut self, number: u32) {
        let (word, bit) = (number as usize / 64, number % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    fn contains(&self, number: u32) -> bool {
        self.words.get(number as usize / 64).is_some_and(|word| word & (1 << (number % 64)) != 0)
    }
}

/// Semantic types by CUI, from MRSTY, compact (6 bytes a row) because the concepts they belong
/// to are read after them: all of UMLS's 3.5 million rows take about 21 MB.
#[derive(Default)]
pub(crate) struct SemanticTypes {
    /// Sorted by CUI number (stably: each concept's types in file order).
    cuis: Vec<u32>,
    types: Vec<u16>,
    /// The distinct TUIs, indexed by `types`.
    tuis: Vec<String>,
}

impl SemanticTypes {
    /// Reads MRSTY rows `CUI|TUI|STN|STY|ATUI|CVF|`.
    pub(crate) fn read(lines: &mut Lines) -> Result<SemanticTypes> {
        let (mut cuis, mut types): (Vec<u32>, Vec<u16>) = (Vec::new(), Vec::new());
        let mut tuis: Vec<String> = Vec::new();
        let mut tui_index: std::collections::HashMap<String, u16> = std::collections::HashMap::new();
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
            let index = match tui_index.get(tui) {
                Some(&index) => index,
                None => {
                    let index = u16::try_from(tuis.len())
                        .map_err(|_| ReadError::syntax(number, "more than 65,536 distinct semantic types"))?;
                    tuis.push(tui.to_string());
                    tui_index.insert(tui.to_string(), index);
                    index
                }
            };
            cuis.push(cui_number(cui));
            types.push(index);
        }
        // UMLS ships MRSTY sorted by CUI too; any other order is sorted here, stably.
        if !cuis.is_sorted() {
            let mut order: Vec<usize> = (0..cuis.len()).collect();
            order.sort_by_key(|&i| cuis[i]);
            (cuis, types) = order.into_iter().map(|i| (cuis[i], types[i])).unzip();
        }
        Ok(SemanticTypes { cuis, types, tuis })
    }

    /// The TUIs of a concept, in file order, each once.
    fn of(&self, cui: u32) -> Vec<String> {
        let first = self.cuis.partition_point(|&c| c < cui);
        let count = self.cuis[first..].partition_point(|&c| c == cui);
        let mut found: Vec<String> = Vec::new();
        for &index in &self.types[first..first + count] {
            let tui = &self.tuis[usize::from(index)];
            if !found.contains(tui) {
                found.push(tui.clone());
            }
        }
        found
    }
}

/// `MRSTY.RRF` (or `.gz`) in the directory of `mrconso`, if present.
pub(crate) fn sibling_mrsty(mrconso: &Path) -> Option<PathBuf> {
    let dir = mrconso.parent()?;
    ["MRSTY.RRF", "MRSTY.RRF.gz", "mrsty.rrf", "mrsty.rrf.gz"]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}
