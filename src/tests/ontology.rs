#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

    fn load_text(name: &str, content: &str) -> (i64, i64, i64) {
        let sql = format!(
            "SELECT concepts, names, obsolete_skipped FROM belink_load_ontology_text({}, {})",
            literal(name),
            literal(content)
        );
        let row = Spi::get_three::<i64, i64, i64>(&sql).unwrap();
        (row.0.unwrap(), row.1.unwrap(), row.2.unwrap())
    }

    #[pg_test]
    fn load_obo_file_fills_the_catalog() {
        let path = server_file("hp.obo", HPO.as_bytes());
        let (format, version, concepts, names, obsolete) = Spi::connect(|client| {
            let table = client
                .select(
                    "SELECT format, version, concepts, names, obsolete_skipped FROM belink_load_ontology('hpo', $1)",
                    None,
                    &[path.as_str().into()],
                )
                .unwrap();
            let row = table.first();
            (
                row.get::<String>(1).unwrap().unwrap(),
                row.get::<String>(2).unwrap(),
                row.get::<i64>(3).unwrap().unwrap(),
                row.get::<i64>(4).unwrap().unwrap(),
                row.get::<i64>(5).unwrap().unwrap(),
            )
        });
        assert_eq!(format, "obo");
        assert_eq!(version.as_deref(), Some("hp/releases/2025-01-16"));
        assert_eq!((concepts, obsolete), (8, 1));
        assert_eq!(names, count("SELECT count(*) FROM belink.names WHERE ontology = 'hpo'"));

        assert_eq!(
            count("SELECT count(*) FROM belink.concepts WHERE ontology = 'hpo'"),
            9,
            "obsolete concepts are kept"
        );
        assert_eq!(
            count("SELECT count(*) FROM belink.names n JOIN belink.concepts c USING (ontology, concept_id) WHERE c.obsolete"),
            0,
            "obsolete concepts have no searchable names"
        );
        let row = Spi::get_three::<String, i32, String>(
            "SELECT source, concept_count, version FROM belink.ontologies WHERE name = 'hpo'",
        )
        .unwrap();
        assert_eq!(row, (Some(path.clone()), Some(8), Some("hp/releases/2025-01-16".into())));
        assert_eq!(
            Spi::get_one::<Vec<String>>("SELECT alt_ids FROM belink.concepts WHERE concept_id = 'HP:0000003'").unwrap(),
            Some(vec!["HP:0004715".to_string()])
        );
        assert_eq!(
            Spi::get_one::<Vec<String>>("SELECT replaced_by FROM belink.concepts WHERE concept_id = 'HP:0000057'")
                .unwrap(),
            Some(vec!["HP:0008665".to_string()])
        );
        assert_eq!(
            Spi::get_two::<String, String>("SELECT kind, normalized FROM belink.names WHERE name = 'Recurrent UTIs'")
                .unwrap(),
            (Some("abbreviation".into()), Some("recurrent utis".into()))
        );
    }

    #[pg_test]
    fn every_format_loads_from_text_and_files() {
        assert_eq!(load_text("ctd", CTD).0, 5);
        assert_eq!(load_text("medic", MEDIC).0, 6);
        assert_eq!(load_text("mine", USER_TSV), (3, 7, 0));
        assert_eq!(load_text("umls", MRCONSO).0, 3);

        // UMLS from a directory: semantic types come from MRSTY.RRF beside MRCONSO.RRF.
        let mrconso = server_file("MRCONSO.RRF", MRCONSO.as_bytes());
        server_file("MRSTY.RRF", MRSTY.as_bytes());
        Spi::run_with_args("SELECT * FROM belink_load_ontology('umls', $1)", &[mrconso.as_str().into()]).unwrap();
        assert_eq!(
            Spi::get_one::<Vec<String>>(
                "SELECT semantic_types FROM belink.concepts WHERE ontology = 'umls' AND concept_id = 'C0027051'"
            )
            .unwrap(),
            Some(vec!["T047".to_string(), "T046".to_string()])
        );
        // The sources filter, as an argument and as a setting.
        let only_msh = format!(
            "SELECT concepts FROM belink_load_ontology('umls', {}, sources => ARRAY['MSH'])",
            literal(&mrconso)
        );
        assert_eq!(count(&only_msh), 3);
        assert_eq!(count("SELECT count(*) FROM belink.names WHERE ontology = 'umls' AND name = 'HTN'"), 0);
        Spi::run("SET LOCAL belink.umls_sources = 'SNOMEDCT_US'").unwrap();
        assert_eq!(count(&format!("SELECT concepts FROM belink_load_ontology('umls', {})", literal(&mrconso))), 2);

        // gzip, detected by content.
        let gz = server_file("names.tsv.gz", USER_TSV_GZ);
        assert_eq!(count(&format!("SELECT concepts FROM belink_load_ontology('zipped', {})", literal(&gz))), 3);
        let hidden_gz = server_file("names.data", USER_TSV_GZ);
        assert_eq!(
            count(&format!("SELECT names FROM belink_load_ontology('zipped', {}, 'tsv')", literal(&hidden_gz))),
            7
        );
    }

    #[pg_test]
    fn reload_replaces_atomically_and_keeps_user_names() {
        load_text("mine", USER_TSV);
        let generation = count("SELECT generation FROM belink.ontologies WHERE name = 'mine'");
        assert_eq!(count("SELECT belink_add_names('mine', 'X:3', ARRAY['HNPCC', 'hereditary nonpolyposis colorectal cancer', 'HNPCC', NULL])"), 2);
        assert_eq!(count("SELECT belink_add_names('mine', 'X:1', ARRAY['colon adenoma'])"), 1);
        assert_eq!(
            count("SELECT belink_add_names('mine', 'X:3', ARRAY['hnpcc'])"),
            1,
            "a different spelling is a new name"
        );
        assert_eq!(
            count("SELECT belink_add_names('mine', 'X:3', ARRAY['HNPCC'])"),
            0,
            "names already present are skipped"
        );
        assert_eq!(count("SELECT name_count FROM belink.ontologies WHERE name = 'mine'"), 11);

        // Version 2 drops X:1 and renames X:3.
        let v2 = "X:2\tFamilial adenomatous polyposis\tFAP\nX:3\tLynch syndrome I\n";
        let sql = format!(
            "SELECT user_names_kept, user_names_dropped FROM belink_load_ontology_text('mine', {})",
            literal(v2)
        );
        assert_eq!(Spi::get_two::<i64, i64>(&sql).unwrap(), (Some(3), Some(1)));
        assert_eq!(count("SELECT count(*) FROM belink.concepts WHERE ontology = 'mine'"), 2);
        assert_eq!(
            count("SELECT count(*) FROM belink.names WHERE ontology = 'mine' AND kind = 'user' AND concept_id = 'X:3'"),
            3
        );
        assert_eq!(count("SELECT name_count FROM belink.ontologies WHERE name = 'mine'"), 6);
        assert!(count("SELECT generation FROM belink.ontologies WHERE name = 'mine'") > generation);
    }

    #[pg_test]
    fn failed_reload_leaves_the_previous_version() {
        load_text("mine", USER_TSV);
        let before = count("SELECT count(*) FROM belink.names WHERE ontology = 'mine'");
        let broken = "X:9\tNew concept\nX:10\ttoo\tmany\tcolumns\n";
        assert_error(
            &format!("SELECT * FROM belink_load_ontology_text('mine', {})", literal(broken)),
            "22P04",
            "line 2: expected 2 or 3 tab-separated columns",
        );
        assert_eq!(count("SELECT count(*) FROM belink.names WHERE ontology = 'mine'"), before);
        assert_eq!(count("SELECT count(*) FROM belink.concepts WHERE concept_id = 'X:9'"), 0);
    }

    /// A Metathesaurus of `concepts` concepts with two English names each, sorted by CUI.
    fn mrconso(concepts: usize) -> String {
        (1..=concepts)
            .flat_map(|i| {
                [(("P", "PF", "Y"), format!("Concept {i}")), (("S", "VO", "N"), format!("concept {i} synonym"))].map(
                    |((term_status, string_type, preferred), text)| {
                        format!("C{i:07}|ENG|{term_status}|L{i}|{string_type}|S|{preferred}|A{i}|||D{i}|MSH|PT|D{i}|{text}|0|N|256|\n")
                    },
                )
            })
            .collect()
    }

    #[pg_test]
    fn umls_loads_in_chunks_and_a_bad_row_late_in_the_file_changes_nothing() {
        // More concepts than one insert chunk holds: they are inserted while the file is read.
        let first = server_file("MRCONSO-first.RRF", mrconso(25_000).as_bytes());
        let sql = format!("SELECT concepts, names FROM belink_load_ontology('umls', {})", literal(&first));
        assert_eq!(Spi::get_two::<i64, i64>(&sql).unwrap(), (Some(25_000), Some(50_000)));
        assert_eq!(count("SELECT belink_add_names('umls', 'C0024999', ARRAY['my own name'])"), 1);
        assert_eq!(count("SELECT name_count FROM belink.ontologies WHERE name = 'umls'"), 50_001);

        // The reload fails on its last row, after two chunks went in: the previous version stays.
        let broken = format!("{}C0030000|ENG|cut short\n", mrconso(29_999));
        let broken = server_file("MRCONSO-broken.RRF", broken.as_bytes());
        assert_error(
            &format!("SELECT * FROM belink_load_ontology('umls', {})", literal(&broken)),
            "22P04",
            "line 59999: expected an MRCONSO row",
        );
        assert_eq!(count("SELECT count(*) FROM belink.concepts WHERE ontology = 'umls'"), 25_000);
        assert_eq!(count("SELECT count(*) FROM belink.names WHERE ontology = 'umls'"), 50_001);

        // Rows of one concept apart: a clear error, nothing changed.
        let unsorted = format!("{}{}", mrconso(3), mrconso(1));
        let unsorted = server_file("MRCONSO-unsorted.RRF", unsorted.as_bytes());
        assert_error(
            &format!("SELECT * FROM belink_load_ontology('umls', {})", literal(&unsorted)),
            "22P04",
            "the rows of concept C0000001 are not together",
        );
        assert_eq!(count("SELECT name_count FROM belink.ontologies WHERE name = 'umls'"), 50_001);

        // A reload that keeps the concept keeps the user's name, after every chunk.
        let sql = format!(
            "SELECT names, user_names_kept FROM belink_load_ontology('umls', {})",
            literal(&server_file("MRCONSO-second.RRF", mrconso(25_001).as_bytes()))
        );
        assert_eq!(Spi::get_two::<i64, i64>(&sql).unwrap(), (Some(50_003), Some(1)));
        assert_eq!(
            count("SELECT count(*) FROM belink.names WHERE name = 'my own name' AND concept_id = 'C0024999'"),
            1
        );
    }

    #[pg_test]
    fn bad_input_gets_clear_errors_and_changes_nothing() {
        let load = |path: &str| format!("SELECT * FROM belink_load_ontology('x', {})", literal(path));
        let bad_escape = server_file("bad.obo", b"format-version: 1.2\n[Term]\nid: X:1\nname: a \\q\n");
        assert_error(&load(&bad_escape), "22P04", &format!("cannot load {bad_escape}: line 4: bad escape sequence"));
        let unknown_stanza = server_file("stanza.obo", b"format-version: 1.2\n[Term]\nid: X:1\nname: a\n[Axiom]\n");
        assert_error(&load(&unknown_stanza), "22P04", "line 5: unknown stanza type [Axiom]");
        // The last row cut short, as by an interrupted download.
        let header: Vec<&str> = CTD.lines().take_while(|line| line.starts_with('#')).collect();
        let cut = format!("{}\n10p Deletion Syndrome (Partial)\tMESH:C538288\t\n", header.join("\n"));
        let line = header.len() + 1;
        assert_error(
            &load(&server_file("cut.tsv", cut.as_bytes())),
            "22P04",
            &format!("line {line}: expected 9 tab-separated columns"),
        );
        let not_gzip = server_file("plain.tsv.gz", USER_TSV.as_bytes());
        assert_error(&load(&not_gzip), "22P04", "is named .gz but is not gzip data");
        let cut_gzip = server_file("cut.tsv.gz", &USER_TSV_GZ[..USER_TSV_GZ.len() - 20]);
        assert_error(&load(&cut_gzip), "22P04", "gzip data is corrupt or truncated");
        let junk: Vec<u8> = (0..2048u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
        assert_error(&load(&server_file("junk.bin", &junk)), "22P04", "not a text ontology file");
        assert_error(&load(&server_file("empty.obo", b"")), "22P04", "the input is empty");
        assert_error(&load("/nonexistent/hp.obo"), "58P01", "cannot open /nonexistent/hp.obo: no such file");
        assert_error(&load(&std::env::temp_dir().to_string_lossy()), "58030", "is a directory");
        assert_error(
            &format!("SELECT * FROM belink_load_ontology('x', {}, 'owl')", literal(&bad_escape)),
            "22023",
            "unknown ontology format 'owl'",
        );
        assert_error("SELECT * FROM belink_load_ontology(NULL, '/tmp/x')", "22004", "argument name must not be NULL");
        assert_error("SELECT * FROM belink_load_ontology('x', NULL)", "22004", "argument path must not be NULL");
        assert_error(
            "SELECT * FROM belink_load_ontology_text('x', NULL)",
            "22004",
            "argument content must not be NULL",
        );
        assert_error("SELECT * FROM belink_load_ontology_text('bad name!', 'A\tB')", "22023", "invalid ontology name");
        assert_eq!(count("SELECT count(*) FROM belink.ontologies"), 0, "nothing was stored");
    }

    #[pg_test]
    fn add_names_errors() {
        load_text("hpo", HPO);
        assert_error("SELECT belink_add_names('nope', 'X', ARRAY['a'])", "42704", "unknown ontology \"nope\"");
        assert_error(
            "SELECT belink_add_names('hpo', 'HP:9999999', ARRAY['a'])",
            "42704",
            "has no concept \"HP:9999999\"",
        );
        assert_error("SELECT belink_add_names('hpo', 'HP:0000057', ARRAY['a'])", "22023", "is obsolete");
        assert_error(
            "SELECT belink_add_names('hpo', NULL, ARRAY['a'])",
            "22004",
            "argument concept_id must not be NULL",
        );
    }

    #[pg_test]
    fn reading_server_files_needs_the_privilege() {
        let path = server_file("mine.tsv", USER_TSV.as_bytes());
        Spi::run("CREATE ROLE belink_test_reader").unwrap();
        Spi::run("GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA belink TO belink_test_reader").unwrap();
        Spi::run("GRANT USAGE ON ALL SEQUENCES IN SCHEMA belink TO belink_test_reader").unwrap();
        Spi::run("SET LOCAL ROLE belink_test_reader").unwrap();
        assert_error(
            &format!("SELECT * FROM belink_load_ontology('mine', {})", literal(&path)),
            "42501",
            "permission denied to read server file",
        );
        // Content given as text needs no file access.
        assert_eq!(load_text("mine", USER_TSV).0, 3);
        Spi::run("RESET ROLE").unwrap();
        Spi::run("GRANT pg_read_server_files TO belink_test_reader").unwrap();
        Spi::run("SET LOCAL ROLE belink_test_reader").unwrap();
        assert_eq!(count(&format!("SELECT concepts FROM belink_load_ontology('mine', {})", literal(&path))), 3);
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn drop_ontology_removes_everything() {
        load_text("mine", USER_TSV);
        assert_eq!(Spi::get_one::<bool>("SELECT belink_drop_ontology('mine')").unwrap(), Some(true));
        assert_eq!(count("SELECT count(*) FROM belink.names"), 0);
        assert_eq!(count("SELECT count(*) FROM belink.concepts"), 0);
        assert_eq!(Spi::get_one::<bool>("SELECT belink_drop_ontology('mine')").unwrap(), Some(false));
    }

    #[pg_test]
    fn normalize_text() {
        let normalized = Spi::get_one::<String>("SELECT belink_fold('Alzheimer''s Disease, Type-2 (β)')").unwrap();
        assert_eq!(normalized.as_deref(), Some("alzheimer disease type 2 beta"));
        assert_eq!(Spi::get_one::<String>("SELECT belink_fold(NULL)").unwrap(), None);
    }
}
