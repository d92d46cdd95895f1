//! Plain TSV: `concept_id<TAB>name[<TAB>synonym|synonym...]`, one concept per line.
//! Lines starting with `#` are comments; a first line `concept_id<TAB>name...` (or `id<TAB>...`)
//! is a header. Lines repeating an id add their names to it.

use super::{clip, split_list, Concept, ConceptList, Lines, NameKind, Ontology, ReadError, Result};

pub(crate) fn parse(lines: &mut Lines) -> Result<Ontology> {
    let mut concepts = ConceptList::default();
    let mut seen_data = false;
    while let Some(line) = lines.next_line()? {
        let number = lines.line_number();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        if !seen_data && matches!(fields[0].to_ascii_lowercase().as_str(), "concept_id" | "id") {
            seen_data = true;
            continue;
        }
        seen_data = true;
        if !(2..=3).contains(&fields.len()) {
            return Err(ReadError::syntax(
                number,
                format!(
                    "expected 2 or 3 tab-separated columns (concept_id, name, synonyms), found {}: '{}'",
                    fields.len(),
                    clip(&line)
                ),
            ));
        }
        if fields[0].is_empty() || fields[1].is_empty() {
            return Err(ReadError::syntax(number, format!("empty concept id or name: '{}'", clip(&line))));
        }
        let mut concept = Concept::new(fields[0], fields[1]);
        for synonym in split_list(fields.get(2).copied().unwrap_or("")) {
            concept.add_synonym(synonym, NameKind::Exact);
        }
        concepts.merge(concept);
    }
    Ok(Ontology { format: super::Format::Tsv, version: None, concepts: concepts.into_vec() })
}
