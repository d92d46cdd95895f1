//! Parser tests on small real excerpts (tests/fixtures, see its README) and on malformed input.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn load(name: &str) -> Ontology {
    load_file(&fixture(name), &LoadOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn load_text(content: &str) -> Result<Ontology> {
    load_bytes(content.as_bytes(), &LoadOptions::default())
}

fn concept<'a>(ontology: &'a Ontology, id: &str) -> &'a Concept {
    ontology.concepts.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no concept {id}"))
}

fn names(concept: &Concept) -> Vec<(&str, NameKind)> {
    concept.names().collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn write_temp(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn syntax_line(error: ReadError) -> usize {
    match error {
        ReadError::Syntax { line, .. } => line,
        other => panic!("expected a syntax error with a line, got {other:?}"),
    }
}

#[test]
fn obo_hpo_excerpt() {
    let hpo = load("hp_excerpt.obo");
    assert_eq!(hpo.format, Format::Obo);
    assert_eq!(hpo.version.as_deref(), Some("hp/releases/2025-01-16"));
    assert_eq!(hpo.concepts.len(), 9, "[Typedef] stanzas are not concepts");
    assert_eq!(hpo.obsolete_count(), 1);

    let kidney = concept(&hpo, "HP:0000003");
    assert_eq!(kidney.name, "Multicystic kidney dysplasia");
    assert_eq!(kidney.alt_ids, ["HP:0004715"]);
    assert_eq!(kidney.parents, ["HP:0000107"], "is_a comments are stripped");
    assert_eq!(kidney.xrefs, ["SNOMEDCT_US:204962002", "SNOMEDCT_US:82525005", "UMLS:C3714581"]);
    assert!(kidney.definition.as_deref().unwrap().starts_with("Multicystic dysplasia of the kidney"));
    assert_eq!(
        names(kidney),
        [
            ("Multicystic kidney dysplasia", NameKind::Preferred),
            ("Multicystic dysplastic kidney", NameKind::Exact),
            ("Multicystic kidneys", NameKind::Exact),
            ("Multicystic renal dysplasia", NameKind::Exact),
        ]
    );

    // A synonym equal to the name is not a second name.
    assert_eq!(names(concept(&hpo, "HP:0000002")), [("Abnormality of body height", NameKind::Preferred)]);

    let infections = concept(&hpo, "HP:0000010");
    assert!(infections.names().any(|n| n == ("Recurrent UTIs", NameKind::Abbreviation)));

    let hypertension = concept(&hpo, "HP:0000822");
    assert!(hypertension.names().any(|n| n == ("High blood pressure", NameKind::Related)));

    // Synonyms typed obsolete_synonym are discarded names.
    let stature = concept(&hpo, "HP:0008845");
    assert!(!stature.names().any(|(name, _)| name == "Mesomelic dwarfism"));
    assert_eq!(stature.alt_ids.len(), 3);

    let obsolete = concept(&hpo, "HP:0000057");
    assert!(obsolete.obsolete);
    assert_eq!(obsolete.replaced_by, ["HP:0008665"]);
    assert_eq!(hpo.active_concepts().count(), 8);
}

#[test]
fn obo_escapes_and_header_date() {
    let doid = load("doid_excerpt.obo");
    assert_eq!(doid.version.as_deref(), Some("releases/2016-09-01"));
    let tinea = concept(&doid, "DOID:0050108");
    assert!(tinea.obsolete);
    assert!(tinea.definition.as_deref().unwrap().ends_with("looks like \"black dots\"."));
    let fap = doid.concepts.iter().find(|c| c.name == "familial adenomatous polyposis").unwrap();
    assert!(!fap.obsolete);
    assert!(fap.names().count() > 1);
}

#[test]
fn obo_synonym_scopes_and_old_style_tags() {
    let obo = "format-version: 1.2\n\n[Term]\nid: X:1\nsynonym: \"early\" EXACT []\nname: Thing\n\
               synonym: \"wide\" BROAD []\nsynonym: \"tight\" NARROW []\nsynonym: \"near\" RELATED []\n\
               synonym: \"no scope\" []\nexact_synonym: \"old style\" []\nsynonym: \"T1\" EXACT ABBREVIATION []\n\
               is_a: X:0 {source=\"x\"} ! root\n";
    let ontology = load_text(obo).unwrap();
    let thing = concept(&ontology, "X:1");
    assert_eq!(thing.parents, ["X:0"]);
    assert_eq!(
        names(thing),
        [
            ("Thing", NameKind::Preferred),
            ("early", NameKind::Exact),
            ("wide", NameKind::Broad),
            ("tight", NameKind::Narrow),
            ("near", NameKind::Related),
            ("no scope", NameKind::Related),
            ("old style", NameKind::Exact),
            ("T1", NameKind::Abbreviation),
        ]
    );
}

#[test]
fn ctd_diseases_excerpt() {
    let ctd = load("CTD_diseases_excerpt.tsv");
    assert_eq!(ctd.format, Format::Ctd);
    assert_eq!(ctd.version.as_deref(), Some("Tue Jun 06 11:31:46 EDT 2017"));
    assert_eq!(ctd.concepts.len(), 5);
    let deficiency = concept(&ctd, "MESH:C537806");
    assert_eq!(deficiency.name, "18-Hydroxylase deficiency");
    assert_eq!(deficiency.alt_ids, ["OMIM:203400", "OMIM:610600"]);
    assert_eq!(deficiency.parents, ["MESH:D006994"]);
    assert!(deficiency.names().any(|n| n == ("18-Oxidase Deficiency", NameKind::Exact)));
    let deletion = concept(&ctd, "MESH:D058165");
    assert!(deletion.definition.as_deref().unwrap().starts_with("Condition with a variable constellation"));
    assert!(concept(&ctd, "MESH:D015179").semantic_types.iter().any(|s| s == "Cancer"));
}

#[test]
fn dictionary_medic_excerpt() {
    let medic = load("medic_excerpt.txt");
    assert_eq!(medic.format, Format::Biosyn);
    let polyposis = concept(&medic, "D011125");
    assert_eq!(polyposis.name, "Adenomatous Polyposis Coli");
    assert_eq!(polyposis.alt_ids, ["175100"]);
    assert!(polyposis.names().any(|(n, _)| n == "Adenomatous Intestinal Polyposis"));
    let tooth = concept(&medic, "C567755");
    assert_eq!(names(tooth), [("Tooth Agenesis, Selective, 6", NameKind::Preferred), ("STHAG6", NameKind::Exact)]);
}

#[test]
fn rrf_filters_languages_sources_and_suppressed_rows() {
    let umls = load("MRCONSO.RRF");
    assert_eq!(umls.format, Format::Rrf);
    assert_eq!(umls.concepts.len(), 3);
    let diabetes = concept(&umls, "C0011849");
    assert_eq!(diabetes.name, "Diabetes Mellitus");
    assert!(!diabetes.names().any(|(n, _)| n == "Diabète"), "French rows are filtered");
    assert!(!diabetes.names().any(|(n, _)| n.contains("Obsolete")), "suppressed rows are filtered");
    assert!(diabetes.names().any(|n| n == ("DM", NameKind::Abbreviation)));
    // The preferred atom wins even when another atom of the concept comes first.
    let hypertension = concept(&umls, "C0020538");
    assert_eq!(hypertension.name, "Hypertension");
    assert!(hypertension.names().any(|n| n == ("Hypertensive disorder", NameKind::Exact)));
    assert!(hypertension.names().any(|n| n == ("HTN", NameKind::Abbreviation)));
    // Semantic types come from MRSTY.RRF next to MRCONSO.RRF.
    assert_eq!(concept(&umls, "C0027051").semantic_types, ["T047", "T046"]);

    let only_snomed = LoadOptions {
        format: None,
        umls: UmlsFilter { languages: vec!["ENG".into()], sources: vec!["SNOMEDCT_US".into()] },
    };
    let snomed = load_file(&fixture("MRCONSO.RRF"), &only_snomed).unwrap();
    assert_eq!(snomed.concepts.len(), 2);
    assert_eq!(concept(&snomed, "C0011849").name, "Diabetes mellitus (disorder)");

    let french =
        LoadOptions { format: Some(Format::Rrf), umls: UmlsFilter { languages: vec!["FRE".into()], sources: vec![] } };
    assert_eq!(
        names(concept(&load_file(&fixture("MRCONSO.RRF"), &french).unwrap(), "C0011849")),
        [("Diabète", NameKind::Preferred)]
    );
}

/// An English, unsuppressed MRCONSO row.
fn mrconso_row(cui: &str, preferred: bool, text: &str) -> String {
    let (term_status, string_type, is_preferred) = if preferred { ("P", "PF", "Y") } else { ("S", "VO", "N") };
    format!("{cui}|ENG|{term_status}|L1|{string_type}|S1|{is_preferred}|A1||||MSH|PT|D1|{text}|0|N|256|\n")
}

#[test]
fn rrf_is_read_one_concept_at_a_time() {
    let options = LoadOptions { format: Some(Format::Rrf), ..LoadOptions::default() };
    let content = [
        mrconso_row("C0000001", false, "alpha variant"),
        mrconso_row("C0000001", true, "Alpha"),
        mrconso_row("C0000002", true, "Beta"),
        mrconso_row("C0000003", true, "Gamma"),
        "C0000003|ENG|cut short\n".to_string(),
        mrconso_row("C0000004", true, "Delta"),
    ]
    .concat();
    let mut stream = read_bytes(content.as_bytes(), &options).unwrap();
    // Each concept comes out once the next one starts, before the bad row further on is read.
    let first = stream.next().unwrap().unwrap();
    assert_eq!(names(&first), [("Alpha", NameKind::Preferred), ("alpha variant", NameKind::Exact)]);
    assert_eq!(stream.next().unwrap().unwrap().id, "C0000002");
    assert!(matches!(stream.next(), Some(Err(ReadError::Syntax { line: 5, .. }))));
    assert!(stream.next().is_none(), "nothing after an error");
}

#[test]
fn rrf_rows_of_a_concept_must_be_together() {
    let options = LoadOptions { format: Some(Format::Rrf), ..LoadOptions::default() };
    let content = [
        mrconso_row("C0000001", true, "Alpha"),
        mrconso_row("C0000002", true, "Beta"),
        mrconso_row("C0000001", false, "alpha variant"),
    ]
    .concat();
    let error = load_bytes(content.as_bytes(), &options).unwrap_err();
    assert!(matches!(error, ReadError::Syntax { line: 3, .. }), "{error:?}");
    assert!(error.to_string().contains("the rows of concept C0000001 are not together"), "{error}");
    assert!(error.to_string().contains("sort -s -t'|' -k1,1"), "{error}");
    // Rows that the filter leaves out do not count.
    let french = mrconso_row("C0000001", false, "alpha").replace("|ENG|", "|FRE|");
    let content = [mrconso_row("C0000001", true, "Alpha"), mrconso_row("C0000002", true, "Beta"), french].concat();
    assert_eq!(load_bytes(content.as_bytes(), &options).unwrap().concepts.len(), 2);
}

#[test]
fn semantic_types_in_any_row_order() {
    let dir = tempfile::tempdir().unwrap();
    let content = [mrconso_row("C0000001", true, "Alpha"), mrconso_row("C0000002", true, "Beta")].concat();
    let mrconso = write_temp(&dir, "MRCONSO.RRF", content.as_bytes());
    write_temp(
        &dir,
        "MRSTY.RRF",
        b"C0000002|T047|B|Disease or Syndrome|AT1|256|\nC0000001|T046|B|Pathologic Function|AT2|256|\n\
          C0000002|T033|A|Finding|AT3|256|\nC0000002|T047|B|Disease or Syndrome|AT4|256|\n",
    );
    let umls = load_file(&mrconso, &LoadOptions::default()).unwrap();
    assert_eq!(concept(&umls, "C0000001").semantic_types, ["T046"]);
    assert_eq!(concept(&umls, "C0000002").semantic_types, ["T047", "T033"]);
}

#[test]
fn tsv_user_dictionary() {
    let tsv = load("user_dictionary.tsv");
    assert_eq!(tsv.format, Format::Tsv);
    assert_eq!(tsv.concepts.len(), 3, "the header and comments are not concepts");
    let fap = concept(&tsv, "X:2");
    assert_eq!(
        names(fap),
        [
            ("Familial adenomatous polyposis", NameKind::Preferred),
            ("FAP", NameKind::Exact),
            ("Adenomatous polyposis coli", NameKind::Exact),
        ],
        "lines repeating an id add names to it"
    );
}

#[test]
fn format_is_detected_from_content_plain_or_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("hp_excerpt.obo", Format::Obo),
        ("doid_excerpt.obo", Format::Obo),
        ("CTD_diseases_excerpt.tsv", Format::Ctd),
        ("medic_excerpt.txt", Format::Biosyn),
        ("MRCONSO.RRF", Format::Rrf),
        ("user_dictionary.tsv", Format::Tsv),
    ];
    for (name, format) in cases {
        let content = std::fs::read(fixture(name)).unwrap();
        // A misleading name: detection must look at the content.
        let plain = write_temp(&dir, "ontology.data", &content);
        let zipped = write_temp(&dir, "ontology.gz", &gzip(&content));
        let from_plain = load_file(&plain, &LoadOptions::default()).unwrap();
        let from_gzip = load_file(&zipped, &LoadOptions::default()).unwrap();
        assert_eq!(from_plain.format, format, "{name}");
        assert_eq!(from_gzip.concepts, from_plain.concepts, "{name} gzip");
    }
}

#[test]
fn format_argument() {
    assert_eq!(parse_format_argument("auto").unwrap(), None);
    assert_eq!(parse_format_argument("OBO").unwrap(), Some(Format::Obo));
    assert_eq!(parse_format_argument("umls").unwrap(), Some(Format::Rrf));
    let error = parse_format_argument("owl").unwrap_err().to_string();
    assert!(error.contains("unknown ontology format 'owl'") && error.contains("obo"), "{error}");
}

#[test]
fn explicit_format_overrides_detection() {
    let options = LoadOptions { format: Some(Format::Tsv), ..LoadOptions::default() };
    let tsv = load_bytes(b"A\tAlpha\nB\tBeta\n", &options).unwrap();
    assert_eq!(tsv.concepts.len(), 2);
    let options = LoadOptions { format: Some(Format::Obo), ..LoadOptions::default() };
    assert!(load_bytes(b"A\tAlpha\n", &options).is_err());
}

#[test]
fn name_counts_cover_active_concepts_only() {
    let hpo = load("hp_excerpt.obo");
    let expected: usize = hpo.concepts.iter().filter(|c| !c.obsolete).map(|c| c.names().count()).sum();
    assert_eq!(hpo.name_count(), expected);
    assert!(hpo.name_count() > hpo.active_concepts().count());
}

// ---- malformed input: a clear error, with the line where there is one ----

#[test]
fn empty_input() {
    for content in ["", "\n\n  \n"] {
        let error = load_text(content).unwrap_err().to_string();
        assert!(error.contains("empty"), "{error}");
    }
}

#[test]
fn obo_unknown_stanza() {
    let error = load_text("format-version: 1.2\n\n[Term]\nid: X:1\nname: a\n\n[Frobnicate]\nid: Y\n").unwrap_err();
    assert!(error.to_string().contains("unknown stanza type [Frobnicate]"), "{error}");
    assert_eq!(syntax_line(error), 7);
}

#[test]
fn obo_bad_escape_and_unterminated_quote() {
    let error = load_text("format-version: 1.2\n[Term]\nid: X:1\nname: a\ndef: \"bad \\q escape\" []\n").unwrap_err();
    assert!(error.to_string().contains("bad escape sequence '\\q'"), "{error}");
    assert_eq!(syntax_line(error), 5);
    let error =
        load_text("format-version: 1.2\n[Term]\nid: X:1\nname: a\nsynonym: \"truncated EXACT []\n").unwrap_err();
    assert!(error.to_string().contains("unterminated quoted string"), "{error}");
    assert_eq!(syntax_line(error), 5);
    let error = load_text("format-version: 1.2\n[Term]\nid: X:1\nname: trailing \\\n").unwrap_err();
    assert!(error.to_string().contains("backslash ends the line"), "{error}");
}

#[test]
fn obo_structure_errors() {
    let error = load_text("format-version: 1.2\n[Term]\nname: no id\n").unwrap_err();
    assert!(error.to_string().contains("without an id"), "{error}");
    assert_eq!(syntax_line(error), 2);
    let error = load_text("format-version: 1.2\n[Term]\nid: X:1\nname: a\n[Term]\nid: X:1\nname: b\n").unwrap_err();
    assert!(error.to_string().contains("duplicate concept id 'X:1'"), "{error}");
    let error = load_text("format-version: 1.2\n[Term]\nid: X:1\nthis line has no colon\n").unwrap_err();
    assert!(error.to_string().contains("expected 'tag: value'"), "{error}");
    assert_eq!(syntax_line(error), 4);
    let error = load_text("format-version: 1.2\n[Term\nid: X:1\n").unwrap_err();
    assert!(error.to_string().contains("malformed stanza header"), "{error}");
    let error = load_text("format-version: 1.2\n[Term]\nid: X:1\nname: a\nsynonym: \"b\" SOMETIMES []\n").unwrap_err();
    assert!(error.to_string().contains("unknown synonym scope 'SOMETIMES'"), "{error}");
}

#[test]
fn ctd_truncated_line_names_its_line() {
    let mut content = std::fs::read_to_string(fixture("CTD_diseases_excerpt.tsv")).unwrap();
    content.push_str("Truncated Disease\tMESH:D999999\tonly three columns\n");
    let lines = content.lines().count();
    let error = load_text(&content).unwrap_err();
    assert!(error.to_string().contains("expected 9 tab-separated columns"), "{error}");
    assert_eq!(syntax_line(error), lines);
}

#[test]
fn tsv_wrong_column_count_and_empty_fields() {
    let error = load_text("A\tAlpha\nB\tBeta\tb1|b2\tfourth column\n").unwrap_err();
    assert!(error.to_string().contains("expected 2 or 3 tab-separated columns"), "{error}");
    assert_eq!(syntax_line(error), 2);
    let options = LoadOptions { format: Some(Format::Tsv), ..LoadOptions::default() };
    let error = load_bytes(b"A\tAlpha\n\tnameless id\n", &options).unwrap_err();
    assert_eq!(syntax_line(error), 2);
}

#[test]
fn dictionary_line_without_separator() {
    let error = load_text("D000001||Alpha\nD000002|Beta\n").unwrap_err();
    let options = LoadOptions { format: Some(Format::Biosyn), ..LoadOptions::default() };
    let explicit = load_bytes(b"D000001||Alpha\nD000002|Beta\n", &options).unwrap_err();
    assert!(explicit.to_string().contains("no '||' separator"), "{explicit}");
    assert_eq!(syntax_line(explicit), 2);
    assert!(matches!(error, ReadError::Syntax { line: 2, .. }), "{error:?}");
}

#[test]
fn rrf_short_row() {
    let options = LoadOptions { format: Some(Format::Rrf), ..LoadOptions::default() };
    let error = load_bytes(b"C0000001|ENG|P|L1|PF|S1|Y|A1\n", &options).unwrap_err();
    assert!(error.to_string().contains("expected an MRCONSO row"), "{error}");
    let error = load_text("C0011849|T047|B2.2.1.2.1|Disease or Syndrome|AT17683839|256|\n").unwrap_err();
    assert!(error.to_string().contains("MRSTY"), "{error}");
}

#[test]
fn binary_junk_is_rejected() {
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let error = load_bytes(&junk, &LoadOptions::default()).unwrap_err().to_string();
    assert!(error.contains("binary data") || error.contains("not valid UTF-8"), "{error}");
    let options = LoadOptions { format: Some(Format::Tsv), ..LoadOptions::default() };
    let error = load_bytes(b"A\tAlpha\nB\tB\xffeta\n", &options).unwrap_err();
    assert!(error.to_string().contains("not valid UTF-8"), "{error}");
    assert_eq!(syntax_line(error), 2);
}

#[test]
fn undetectable_format() {
    let error = load_text("just some prose\nwithout any structure\n").unwrap_err().to_string();
    assert!(error.contains("cannot detect the format"), "{error}");
}

#[test]
fn gzip_problems() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write_temp(&dir, "names.tsv.gz", b"A\tAlpha\n");
    let error = load_file(&plain, &LoadOptions::default()).unwrap_err().to_string();
    assert!(error.contains("is named .gz but is not gzip data"), "{error}");

    let content = std::fs::read(fixture("CTD_diseases_excerpt.tsv")).unwrap();
    let compressed = gzip(&content);
    let truncated = write_temp(&dir, "truncated.tsv.gz", &compressed[..compressed.len() / 2]);
    let error = load_file(&truncated, &LoadOptions::default()).unwrap_err().to_string();
    assert!(error.contains("gzip data is corrupt or truncated"), "{error}");
}

#[test]
fn missing_unreadable_and_directory_paths() {
    let error = load_file(Path::new("/nonexistent/hp.obo"), &LoadOptions::default()).unwrap_err().to_string();
    assert_eq!(error, "cannot open /nonexistent/hp.obo: no such file");
    let dir = tempfile::tempdir().unwrap();
    let error = load_file(dir.path(), &LoadOptions::default()).unwrap_err().to_string();
    assert!(error.contains("is a directory"), "{error}");
}

#[test]
fn no_concepts_is_an_error() {
    let error = load_text("format-version: 1.2\n\n[Typedef]\nid: part_of\n").unwrap_err().to_string();
    assert!(error.contains("no concepts found"), "{error}");
}

#[test]
fn the_catalog_checks_exactly_the_name_kinds() {
    let catalog = include_str!("../../../../sql/catalog.sql");
    let check = catalog.split("CHECK (kind IN (").nth(1).unwrap().split("))").next().unwrap();
    let listed: Vec<&str> = check.split(',').map(|k| k.trim().trim_matches('\'')).collect();
    let kinds: Vec<&str> = NameKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(listed, kinds);
}

#[test]
fn descendants_of_roots_follow_parents_through_cycles() {
    let edges: Vec<(&str, Vec<String>)> = vec![
        ("HP:0000118", vec!["HP:0000001".into()]),
        ("HP:0000005", vec!["HP:0000001".into()]),
        ("HP:0001250", vec!["HP:0000118".into()]),
        ("HP:0002069", vec!["HP:0001250".into(), "HP:0000005".into()]),
        ("HP:0003745", vec!["HP:0000005".into()]),
        // A cycle under the root does not loop.
        ("A", vec!["B".into(), "HP:0001250".into()]),
        ("B", vec!["A".into()]),
    ];
    let under = descendants(edges.iter().map(|(id, p)| (*id, p.as_slice())), &["HP:0000118".to_string()]);
    let mut under: Vec<&str> = under.iter().map(String::as_str).collect();
    under.sort();
    assert_eq!(under, ["A", "B", "HP:0000118", "HP:0001250", "HP:0002069"]);
    assert!(descendants(edges.iter().map(|(id, p)| (*id, p.as_slice())), &[]).is_empty());
}
