//! The dictionary format of BioSyn and SapBERT: one concept per line,
//! `ID[|ALT_ID...]||preferred name[|synonym...]` (e.g. `medic_06Jul2012.txt`).
//! Lines repeating an id add their names to it.

use super::{clip, split_list, Concept, ConceptList, Lines, NameKind, Ontology, ReadError, Result};

pub(crate) fn parse(lines: &mut Lines) -> Result<Ontology> {
    let mut concepts = ConceptList::default();
    while let Some(line) = lines.next_line()? {
        let number = lines.line_number();
        if line.trim().is_empty() {
            continue;
        }
        let Some((ids, names)) = line.split_once("||") else {
            return Err(ReadError::syntax(
                number,
                format!("expected 'ID||name|synonym...' (no '||' separator): '{}'", clip(&line)),
            ));
        };
        let mut ids = split_list(ids);
        let mut names = split_list(names);
        let (Some(id), Some(name)) = (ids.next(), names.next()) else {
            return Err(ReadError::syntax(number, format!("empty concept id or name: '{}'", clip(&line))));
        };
        let mut concept = Concept::new(id, name);
        concept.alt_ids = ids.map(String::from).collect();
        for synonym in names {
            concept.add_synonym(synonym, NameKind::Exact);
        }
        concepts.merge(concept);
    }
    Ok(Ontology { format: super::Format::Biosyn, version: None, concepts: concepts.into_vec() })
}
