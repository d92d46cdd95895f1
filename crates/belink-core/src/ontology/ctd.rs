//! CTD vocabularies: `CTD_diseases.tsv` (MEDIC) and `CTD_chemicals.tsv`.
//!
//! A commented header (`# ...`) holds the report date (`# Report created: ...`) and, after
//! `# Fields:`, the tab-separated column names; columns are found by those names. Without that
//! header the nine columns of the disease file are assumed. Lists inside a column are
//! `|`-separated.

use super::{clip, split_list, Concept, ConceptList, Lines, NameKind, Ontology, ReadError, Result};

/// The disease file's columns, used when the file has no `# Fields:` header.
const DISEASE_COLUMNS: [&str; 9] = [
    "DiseaseName",
    "DiseaseID",
    "AltDiseaseIDs",
    "Definition",
    "ParentIDs",
    "TreeNumbers",
    "ParentTreeNumbers",
    "Synonyms",
    "SlimMappings",
];

struct Columns {
    names: Vec<String>,
    name: usize,
    id: usize,
    alt_ids: Option<usize>,
    definition: Option<usize>,
    parents: Option<usize>,
    synonyms: Option<usize>,
    slim: Option<usize>,
}

impl Columns {
    fn from_names(names: Vec<String>, line: usize) -> Result<Columns> {
        let find = |wanted: &[&str]| names.iter().position(|n| wanted.contains(&n.as_str()));
        let (Some(name), Some(id)) = (find(&["DiseaseName", "ChemicalName"]), find(&["DiseaseID", "ChemicalID"]))
        else {
            return Err(ReadError::syntax(
                line,
                format!(
                    "the '# Fields:' header has no DiseaseName/DiseaseID (or ChemicalName/ChemicalID) columns: {}",
                    names.join(", ")
                ),
            ));
        };
        Ok(Columns {
            name,
            id,
            alt_ids: find(&["AltDiseaseIDs", "AltChemicalIDs"]),
            definition: find(&["Definition"]),
            parents: find(&["ParentIDs"]),
            synonyms: find(&["Synonyms"]),
            slim: find(&["SlimMappings"]),
            names,
        })
    }
}

pub(crate) fn parse(lines: &mut Lines) -> Result<Ontology> {
    let mut concepts = ConceptList::default();
    let mut version = None;
    let mut columns: Option<Columns> = None;
    let mut fields_header_next = false;

    while let Some(line) = lines.next_line()? {
        let number = lines.line_number();
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if fields_header_next && !comment.is_empty() {
                let names = comment.split('\t').map(|n| n.trim().to_string()).collect();
                columns = Some(Columns::from_names(names, number)?);
                fields_header_next = false;
            } else if comment == "Fields:" {
                fields_header_next = true;
            } else if let Some(date) = comment.strip_prefix("Report created:") {
                version = Some(date.trim().to_string());
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let columns = match &columns {
            Some(columns) => columns,
            None => columns.insert(Columns::from_names(DISEASE_COLUMNS.map(String::from).to_vec(), number)?),
        };
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != columns.names.len() {
            return Err(ReadError::syntax(
                number,
                format!(
                    "expected {} tab-separated columns ({}), found {}: '{}'",
                    columns.names.len(),
                    columns.names.join(", "),
                    fields.len(),
                    clip(&line)
                ),
            ));
        }
        let field = |i: Option<usize>| i.map(|i| fields[i].trim()).unwrap_or("");
        let id = fields[columns.id].trim();
        let name = fields[columns.name].trim();
        if id.is_empty() || name.is_empty() {
            return Err(ReadError::syntax(number, "empty concept id or name"));
        }
        let mut concept = Concept::new(id, name);
        let definition = field(columns.definition);
        concept.definition = (!definition.is_empty()).then(|| definition.to_string());
        concept.alt_ids = split_list(field(columns.alt_ids)).map(String::from).collect();
        concept.parents = split_list(field(columns.parents)).map(String::from).collect();
        concept.semantic_types = split_list(field(columns.slim)).map(String::from).collect();
        for synonym in split_list(field(columns.synonyms)) {
            concept.add_synonym(synonym, NameKind::Exact);
        }
        concepts.insert_unique(concept, number)?;
    }
    Ok(Ontology { format: super::Format::Ctd, version, concepts: concepts.into_vec() })
}
