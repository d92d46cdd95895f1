//! Concept id equivalence across sources: corpora, CTD and BioSyn's MEDIC write the same MeSH
//! and OMIM ids with and without prefixes (`MESH:D005955` = `D005955`, `OMIM:607374` = `607374`).

const EQUIVALENT_PREFIXES: [&str; 2] = ["MESH:", "OMIM:"];

pub fn canonical(id: &str) -> String {
    let id = id.trim();
    EQUIVALENT_PREFIXES.iter().find_map(|prefix| id.strip_prefix(prefix)).unwrap_or(id).to_string()
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn prefixes_that_name_the_same_id() {
        assert_eq!(canonical("MESH:D005955"), "D005955");
        assert_eq!(canonical("D005955"), "D005955");
        assert_eq!(canonical("OMIM:607374"), "607374");
        assert_eq!(canonical("HP:0000822"), "HP:0000822");
    }
}
