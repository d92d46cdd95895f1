#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

    type Row = (String, String, String, f64, String, String, Option<i32>, Option<i32>);

    fn candidates(sql: &str) -> Vec<Row> {
        Spi::connect(|client| {
            client
                .select(sql, None, &[])
                .unwrap()
                .map(|row| {
                    (
                        row.get::<String>(1).unwrap().unwrap(),
                        row.get::<String>(2).unwrap().unwrap(),
                        row.get::<String>(3).unwrap().unwrap(),
                        row.get::<f64>(4).unwrap().unwrap(),
                        row.get::<String>(5).unwrap().unwrap(),
                        row.get::<String>(6).unwrap().unwrap(),
                        row.get::<i32>(7).unwrap(),
                        row.get::<i32>(8).unwrap(),
                    )
                })
                .collect()
        })
    }

    fn load_fixtures() {
        for (name, content) in [("medic", MEDIC), ("ctd", CTD), ("hpo", HPO)] {
            Spi::run(&format!("SELECT * FROM belink_load_ontology_text({}, {})", literal(name), literal(content)))
                .unwrap();
        }
    }

    #[pg_test]
    fn exact_match_comes_first() {
        load_fixtures();
        let rows = candidates("SELECT * FROM belink_candidates('BREAST CANCER', 'medic', 5)");
        let first = &rows[0];
        assert_eq!((first.0.as_str(), first.1.as_str()), ("114480", "Breast Neoplasms"));
        assert_eq!((first.4.as_str(), first.5.as_str(), first.6), ("exact", "medic", Some(1)));
        assert!(rows.iter().skip(1).all(|r| r.3 < first.3 && r.6.is_none()));
    }

    #[pg_test]
    fn scores_are_reciprocal_rank_fusion() {
        load_fixtures();
        Spi::run("SET LOCAL belink.rrf_k = 10").unwrap();
        let rows = candidates("SELECT * FROM belink_candidates('BREAST CANCER', 'medic', 5)");
        for r in &rows {
            let expected: f64 = [r.6, r.7].iter().flatten().map(|rank| 1.0 / (10.0 + *rank as f64)).sum();
            assert!((r.3 - expected).abs() < 1e-9, "{r:?}");
        }
    }

    #[pg_test]
    fn trigram_finds_near_misses_one_row_per_concept() {
        load_fixtures();
        let rows = candidates("SELECT * FROM belink_candidates('colorectal cancr', 'medic', 10)");
        assert_eq!(rows[0].0, "114500", "{rows:?}");
        assert_eq!((rows[0].4.as_str(), rows[0].6, rows[0].7), ("trigram", None, Some(1)));
        let mut ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let before = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), before, "one row per concept");
        let scores: Vec<f64> = rows.iter().map(|r| r.3).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    }

    #[pg_test]
    fn trigram_threshold_setting_and_caller_setting_preserved() {
        load_fixtures();
        Spi::run("SET LOCAL pg_trgm.similarity_threshold = 0.42").unwrap();
        Spi::run("SET LOCAL belink.trigram_threshold = 0.95").unwrap();
        assert!(candidates("SELECT * FROM belink_candidates('colorectal cancr', 'medic', 10)").is_empty());
        Spi::run("SET LOCAL belink.trigram_threshold = 0.3").unwrap();
        assert!(!candidates("SELECT * FROM belink_candidates('colorectal cancr', 'medic', 10)").is_empty());
        assert_eq!(
            Spi::get_one::<String>("SELECT current_setting('pg_trgm.similarity_threshold')").unwrap().as_deref(),
            Some("0.42")
        );
    }

    #[pg_test]
    fn british_spelling_and_plural_reach_the_hpo_term() {
        load_fixtures();
        let rows = candidates("SELECT * FROM belink_candidates('retinal haemorrhages', 'hpo', 3)");
        assert_eq!((rows[0].0.as_str(), rows[0].4.as_str()), ("HP:0000573", "exact"));
    }

    #[pg_test]
    fn k_limits_and_null_ontology_searches_all() {
        load_fixtures();
        assert_eq!(candidates("SELECT * FROM belink_candidates('adenomatous polyposis coli', 'medic', 1)").len(), 1);
        let everywhere = candidates("SELECT * FROM belink_candidates('adenomatous polyposis coli', k => 20)");
        let ontologies: std::collections::BTreeSet<&str> = everywhere.iter().map(|r| r.5.as_str()).collect();
        assert!(ontologies.contains("medic") && ontologies.contains("ctd"), "{ontologies:?}");
        assert!(everywhere.iter().take(2).all(|r| r.4 == "exact"));
    }

    #[pg_test]
    fn obsolete_concepts_are_never_candidates() {
        load_fixtures();
        let rows = candidates("SELECT * FROM belink_candidates('Clitoromegaly', 'hpo', 10)");
        assert!(rows.iter().all(|r| r.0 != "HP:0000057"), "{rows:?}");
    }

    #[pg_test]
    fn user_names_are_searched() {
        load_fixtures();
        Spi::run("SELECT belink_add_names('hpo', 'HP:0000822', ARRAY['HTN'])").unwrap();
        let rows = candidates("SELECT * FROM belink_candidates('htn', 'hpo', 1)");
        assert_eq!((rows[0].0.as_str(), rows[0].2.as_str(), rows[0].4.as_str()), ("HP:0000822", "HTN", "exact"));
    }

    #[pg_test]
    fn works_whatever_the_search_path() {
        load_fixtures();
        Spi::run("SET LOCAL search_path = pg_catalog").unwrap();
        assert!(!candidates("SELECT * FROM public.belink_candidates('colorectal cancer', 'medic')").is_empty());
    }

    #[pg_test]
    fn empty_null_and_bad_arguments() {
        load_fixtures();
        assert!(candidates("SELECT * FROM belink_candidates(NULL, 'medic')").is_empty());
        assert!(candidates("SELECT * FROM belink_candidates(' -- ', 'medic')").is_empty());
        assert_error("SELECT * FROM belink_candidates('x', 'nope')", "42704", "unknown ontology \"nope\"");
        assert_error("SELECT * FROM belink_candidates('x', 'medic', 0)", "22023", "k must be between 1 and 1000");
        assert_error("SELECT * FROM belink_candidates('x', 'medic', NULL)", "22004", "argument k must not be NULL");
    }

    #[pg_test]
    fn dense_retrieval_through_the_preloaded_model_server() {
        // The test cluster preloads belink: the supervisor runs the model server.
        let state = Spi::get_one::<pgrx::JsonB>("SELECT belink_worker_status_json()").unwrap().unwrap();
        assert_eq!(state.0["preloaded"], true);
        load_fixtures();
        index_hpo();
        let dense_ranks = |sql: &str| -> Vec<Option<i32>> {
            Spi::connect(|client| {
                client.select(sql, None, &[]).unwrap().map(|row| row.get::<i32>(9).unwrap()).collect()
            })
        };
        let hybrid = dense_ranks("SELECT * FROM belink_candidates('raised blood pressure', 'hpo', 5)");
        assert!(hybrid.contains(&Some(1)), "{hybrid:?}");

        // A reload keeps the vectors of the names it keeps, and the HNSW index, built again
        // over them rather than updated a row at a time.
        let index_oid = "SELECT to_regclass(format('belink.%I', belink.embedding_index_name('hpo')))::oid::bigint";
        let before = Spi::get_one::<i64>(index_oid).unwrap().expect("an HNSW index after belink_index");
        Spi::run(&format!("SELECT * FROM belink_load_ontology_text('hpo', {})", literal(HPO))).unwrap();
        let after = Spi::get_one::<i64>(index_oid).unwrap().expect("an HNSW index after the reload");
        assert_ne!(before, after, "the index was built again");
        let unembedded = "SELECT count(*) FROM belink.names WHERE ontology = 'hpo' AND embedding IS NULL";
        assert_eq!(Spi::get_one::<i64>(unembedded).unwrap(), Some(0));
        assert_eq!(dense_ranks("SELECT * FROM belink_candidates('raised blood pressure', 'hpo', 5)"), hybrid);
        Spi::run("SET LOCAL belink.retrieval = 'lexical'").unwrap();
        let lexical = dense_ranks("SELECT * FROM belink_candidates('raised blood pressure', 'hpo', 5)");
        assert!(lexical.iter().all(Option::is_none), "{lexical:?}");
    }

    #[pg_test]
    fn among_names_written_alike_the_users_name_comes_first() {
        load_fixtures();
        // HP:0000822's name, added by a user to Seizure: written alike, one vector for both.
        Spi::run("SELECT belink_add_names('hpo', 'HP:0001250', ARRAY['HYPERTENSION'])").unwrap();
        index_hpo();
        let first = Spi::get_one::<String>("SELECT concept_id FROM belink_candidates('hypertension', 'hpo', 2)");
        assert_eq!(first.unwrap().as_deref(), Some("HP:0001250"));
    }

    /// Embeds every name of the fixtures' HPO through the model server and builds its index,
    /// a step at a time (belink_index itself commits, which a test cannot).
    fn index_hpo() {
        Spi::run("SELECT belink_index_prepare('hpo')").unwrap();
        // Each batch starts after the last name the one before embedded.
        let mut last_embedded = 0;
        while let Some(last) =
            Spi::get_one_with_args::<i64>("SELECT belink_index_batch('hpo', 512, $1)", &[last_embedded.into()]).unwrap()
        {
            assert!(last > last_embedded, "batches move forward: {last} after {last_embedded}");
            last_embedded = last;
        }
        Spi::run("SELECT belink_index_finish('hpo')").unwrap();
    }
}
