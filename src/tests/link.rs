#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

    const PARAGRAPH: &str = "A 6-year-old girl with multicystic kidney dysplasia (MCKD) and arterial hypertension \
presented with seizures. MCKD had been seen prenatally. Fundoscopy showed retinal haemorrhages.";

    fn load_hpo() {
        Spi::run(&format!("SELECT * FROM belink_load_ontology_text('hpo', {})", literal(HPO))).unwrap();
    }

    /// (mention, concept_id, abbreviation_of) of belink_link's output, checking each offset.
    fn linked(text: &str) -> Vec<(String, String, Option<String>)> {
        let json = Spi::get_one_with_args::<pgrx::JsonB>("SELECT belink_link($1, 'hpo')", &[text.into()])
            .unwrap()
            .expect("a jsonb array");
        let chars: Vec<char> = text.chars().collect();
        json.0
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let (start, end) = (e["start"].as_u64().unwrap() as usize, e["end"].as_u64().unwrap() as usize);
                let mention = e["mention"].as_str().unwrap().to_string();
                assert_eq!(chars[start..end].iter().collect::<String>(), mention, "offsets are characters");
                (
                    mention,
                    e["concept_id"].as_str().unwrap().to_string(),
                    e["abbreviation_of"].as_str().map(String::from),
                )
            })
            .collect()
    }

    #[pg_test]
    fn a_dictionary_above_the_memory_limit_is_shared_in_the_model_server() {
        load_hpo();
        let names =
            count("SELECT count(*) FROM belink.names WHERE ontology = 'hpo' AND kind <> 'broad' AND kind <> 'narrow'");
        let stats =
            || Spi::get_two::<i64, i64>("SELECT names, memory_bytes FROM belink_dictionary_stats('hpo')").unwrap();
        Spi::run("SET belink.max_dictionary_mb = 0").unwrap();
        // The session builds none: the model server detects the mentions, as the session would.
        assert_eq!(stats(), (Some(names), Some(0)));
        let shared = linked(PARAGRAPH);
        assert_eq!(shared.len(), 6);
        let server = Spi::get_one::<pgrx::JsonB>("SELECT belink_worker_status_json()").unwrap().unwrap().0;
        let held = &server["mention_dictionaries"][0];
        assert_eq!((held["ontology"].as_str(), held["names"].as_i64()), (Some("hpo"), Some(names)), "{server}");
        // Within the limit (a new generation), the session builds its own: the same entities.
        Spi::run("SELECT belink_add_names('hpo', 'HP:0000822', ARRAY['raised BP'])").unwrap();
        Spi::run("SET belink.max_dictionary_mb = -1").unwrap();
        assert_eq!(linked(PARAGRAPH), shared);
        let (own_names, own_bytes) = stats();
        assert_eq!(own_names, Some(names + 1));
        assert!(own_bytes.unwrap() > 0);
    }

    #[pg_test]
    fn links_a_clinical_paragraph() {
        load_hpo();
        let long = Some("multicystic kidney dysplasia".to_string());
        assert_eq!(
            linked(PARAGRAPH),
            [
                ("multicystic kidney dysplasia".to_string(), "HP:0000003".to_string(), None),
                ("MCKD".to_string(), "HP:0000003".to_string(), long.clone()),
                ("arterial hypertension".to_string(), "HP:0000822".to_string(), None),
                ("seizures".to_string(), "HP:0001250".to_string(), None),
                ("MCKD".to_string(), "HP:0000003".to_string(), long),
                ("retinal haemorrhages".to_string(), "HP:0000573".to_string(), None),
            ]
        );
    }

    #[pg_test]
    fn lexical_variants_link_through_sql() {
        load_hpo();
        // A coordination gives one entity per conjunct, both over the coordination's span.
        let both = "arterial and systemic hypertension";
        assert_eq!(linked(both), [(both.into(), "HP:0000822".into(), None), (both.into(), "HP:0000822".into(), None)]);
        // A plural that no name writes.
        let plural = "multicystic kidney dysplasias";
        assert_eq!(linked(plural), [(plural.into(), "HP:0000003".into(), None)]);
    }

    /// A span scorer trained on PARAGRAPH, with the loaded HPO's dictionary, to take every
    /// detection but "seizures": what the SQL surface must then apply.
    fn scorer_without_seizures() -> String {
        use belink_core::mentions::dictionary::{DictionaryName, MentionDictionary};
        use belink_core::mentions::scorer::{train, Example, Training};
        use belink_core::mentions::span_candidates;
        use belink_core::ontology::NameKind;
        let names: Vec<DictionaryName> = Spi::connect(|client| {
            client
                .select(
                    "SELECT concept_id, name, normalized FROM belink.names WHERE ontology = 'hpo' AND kind = ANY($1)",
                    None,
                    &[NameKind::texts(&NameKind::DETECTION).into()],
                )
                .unwrap()
                .map(|row| DictionaryName {
                    concept_id: row.get(1).unwrap().unwrap(),
                    name: row.get(2).unwrap().unwrap(),
                    normalized: row.get(3).unwrap().unwrap(),
                })
                .collect()
        });
        let dictionary = MentionDictionary::build(names).unwrap();
        let detected: Vec<(usize, usize)> = belink_core::mentions::find_mentions(PARAGRAPH, &[&dictionary])
            .iter()
            .filter(|m| m.text != "seizures")
            .map(|m| (m.start, m.end))
            .collect();
        let examples: Vec<Example> = span_candidates(PARAGRAPH, &[&dictionary])
            .into_iter()
            .map(|c| Example { mention: detected.contains(&(c.start, c.end)), features: c.features })
            .collect();
        train(&examples, &Training::default(), 0.5).to_text()
    }

    #[pg_test]
    fn a_span_scorer_chooses_the_mentions_until_removed() {
        load_hpo();
        let by_dictionary = linked(PARAGRAPH);
        assert!(by_dictionary.iter().any(|(mention, ..)| mention == "seizures"));
        let scorer = scorer_without_seizures();
        let set = Spi::get_two_with_args::<i64, f64>(
            "SELECT weights, threshold FROM belink_set_span_scorer_text('hpo', $1)",
            &[scorer.as_str().into()],
        )
        .unwrap();
        assert!(set.0.unwrap() > 10 && set.1 == Some(0.5), "{set:?}");
        let scored = linked(PARAGRAPH);
        let without: Vec<_> = by_dictionary.iter().filter(|(mention, ..)| mention != "seizures").cloned().collect();
        assert_eq!(scored, without);
        // The dictionary alone when asked, and once the scorer is removed.
        Spi::run("SET belink.detection = 'dictionary'").unwrap();
        assert_eq!(linked(PARAGRAPH), by_dictionary);
        Spi::run("RESET belink.detection").unwrap();
        // The scorer outlives a reload of the ontology.
        load_hpo();
        assert_eq!(linked(PARAGRAPH), without);
        assert_eq!(Spi::get_one::<bool>("SELECT belink_remove_span_scorer('hpo')").unwrap(), Some(true));
        assert_eq!(Spi::get_one::<bool>("SELECT belink_remove_span_scorer('hpo')").unwrap(), Some(false));
        assert_eq!(linked(PARAGRAPH), by_dictionary);
    }

    #[pg_test]
    fn span_scorers_refuse_bad_input() {
        load_hpo();
        assert_error("SELECT * FROM belink_set_span_scorer_text('hpo', 'weights')", "22023", "not a span scorer");
        assert_error(
            "SELECT * FROM belink_set_span_scorer_text('hpo', E'belink-span-scorer 1\\nthreshold 0.5\\n7 x')",
            "22023",
            "line 3",
        );
        assert_error(
            "SELECT * FROM belink_set_span_scorer_text('nothing', E'belink-span-scorer 1\\nthreshold 0.5\\n')",
            "42704",
            "nothing",
        );
        assert_error(
            "SELECT * FROM belink_set_span_scorer('hpo', '/nonexistent/scorer.txt')",
            "58P01",
            "could not read",
        );
        assert_error("SELECT * FROM belink_set_span_scorer_text('hpo', NULL)", "22004", "content");
        assert_eq!(count("SELECT count(*) FROM belink.span_scorers"), 0);
        // A scorer file on the server.
        let path = server_file("scorer.txt", scorer_without_seizures().as_bytes());
        assert_eq!(count(&format!("SELECT count(*) FROM belink_set_span_scorer('hpo', {})", literal(&path))), 1);
    }

    #[pg_test]
    fn detection_roots_restrict_the_branches_detected() {
        load_hpo();
        let all = linked(PARAGRAPH);
        let covered =
            Spi::get_one::<i64>("SELECT belink_set_detection_roots('hpo', ARRAY['HP:0000003', 'HP:0000822'])");
        assert_eq!(covered.unwrap(), Some(2));
        let kept: Vec<_> = all.iter().filter(|(_, id, _)| id == "HP:0000003" || id == "HP:0000822").cloned().collect();
        assert!(kept.len() >= 3 && kept.len() < all.len(), "{all:?}");
        assert_eq!(linked(PARAGRAPH), kept);
        // Kept when the ontology is reloaded.
        load_hpo();
        assert_eq!(linked(PARAGRAPH), kept);
        assert_error("SELECT belink_set_detection_roots('hpo', ARRAY['HP:9999999'])", "22023", "HP:9999999");
        assert_error("SELECT belink_set_detection_roots('hpo', NULL)", "22004", "roots");
        let concepts = count("SELECT concept_count FROM belink.ontologies WHERE name = 'hpo'");
        assert_eq!(count("SELECT belink_set_detection_roots('hpo', '{}')"), concepts);
        assert_eq!(linked(PARAGRAPH), all);
    }

    #[pg_test]
    fn multibyte_text_empty_text_and_null() {
        load_hpo();
        assert_eq!(linked("Ménière’s — « hypertension » ✓"), [("hypertension".into(), "HP:0000822".into(), None)]);
        assert!(linked("").is_empty());
        assert!(linked("Nothing to see here.").is_empty());
        assert_eq!(Spi::get_one::<pgrx::JsonB>("SELECT belink_link(NULL::text, 'hpo')").unwrap().map(|j| j.0), None);
    }

    #[pg_test]
    fn entities_rows_and_the_batched_form_agree() {
        load_hpo();
        let rows = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM belink_entities($1, 'hpo') WHERE concept_id IS NOT NULL AND end_char > start_char",
            &[PARAGRAPH.into()],
        )
        .unwrap();
        assert_eq!(rows, Some(6));
        let same = Spi::get_one_with_args::<bool>(
            "SELECT (SELECT array_agg(e ORDER BY n) FROM belink_link(ARRAY[$1, NULL, 'seizure'], 'hpo') WITH ORDINALITY AS t(e, n))
                    IS NOT DISTINCT FROM ARRAY[belink_link($1, 'hpo'), NULL, belink_link('seizure', 'hpo')]",
            &[PARAGRAPH.into()],
        )
        .unwrap();
        assert_eq!(same, Some(true));
    }

    #[pg_test]
    fn update_a_table_of_a_thousand_documents() {
        load_hpo();
        Spi::run(
            "CREATE TEMP TABLE docs AS
             SELECT g AS id, CASE g % 3 WHEN 0 THEN 'Seizures since birth.' WHEN 1 THEN 'No finding ' || g ELSE NULL END AS body,
                    NULL::jsonb AS entities
             FROM generate_series(1, 1000) g",
        )
        .unwrap();
        Spi::run("UPDATE docs SET entities = belink_link(body, 'hpo')").unwrap();
        assert_eq!(count("SELECT count(*) FROM docs WHERE jsonb_array_length(entities) = 1"), 333);
        assert_eq!(count("SELECT count(*) FROM docs WHERE entities = '[]'::jsonb"), 334);
        assert_eq!(count("SELECT count(*) FROM docs WHERE entities IS NULL"), 333, "NULL body, NULL entities");
    }

    #[pg_test]
    fn the_dictionary_follows_changes_to_the_ontology() {
        load_hpo();
        assert!(linked("raised BP again").is_empty());
        Spi::run("SELECT belink_add_names('hpo', 'HP:0000822', ARRAY['raised BP'])").unwrap();
        assert_eq!(linked("raised BP again"), [("raised BP".into(), "HP:0000822".into(), None)]);
        let stats = Spi::get_two::<i64, i64>("SELECT names, patterns FROM belink_dictionary_stats('hpo')").unwrap();
        assert!(stats.0.unwrap() > 0 && stats.1.unwrap() > 0);
    }

    #[pg_test]
    fn no_cache_outlives_a_rolled_back_reload() {
        let reload = |id: &str| format!("SELECT * FROM belink_load_ontology_text('mine', E'{id}\\tFoo syndrome\\n')");
        let linked_to =
            || Spi::get_one::<String>("SELECT belink_link('Foo syndrome again', 'mine')->0->>'concept_id'").unwrap();
        Spi::run(&reload("X:1")).unwrap();
        assert_eq!(linked_to().as_deref(), Some("X:1"));
        // A reload that rolls back (after this session linked with it), then another one: the
        // second must not be mistaken for the first (the mention dictionary and the retrieval
        // cache both key on the ontology's generation).
        Spi::run(
            "CREATE FUNCTION pg_temp.linked_then_rolled_back(reload text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN
                 BEGIN
                     EXECUTE reload;
                     RAISE EXCEPTION USING MESSAGE = belink_link('Foo syndrome again', 'mine')->0->>'concept_id';
                 EXCEPTION WHEN raise_exception THEN
                     RETURN SQLERRM;
                 END;
             END $$",
        )
        .unwrap();
        let seen =
            Spi::get_one_with_args::<String>("SELECT pg_temp.linked_then_rolled_back($1)", &[reload("X:2").into()]);
        assert_eq!(seen.unwrap().as_deref(), Some("X:2"));
        assert_eq!(count("SELECT count(*) FROM belink.concepts WHERE ontology = 'mine' AND concept_id = 'X:2'"), 0);
        Spi::run(&reload("X:3")).unwrap();
        assert_eq!(linked_to().as_deref(), Some("X:3"));
    }

    #[pg_test]
    fn cached_and_fresh_retrieval_agree() {
        load_hpo();
        Spi::run("SET LOCAL belink.retrieval_cache_size = 0").unwrap();
        let fresh = Spi::get_one_with_args::<pgrx::JsonB>("SELECT belink_link($1, 'hpo')", &[PARAGRAPH.into()])
            .unwrap()
            .unwrap();
        Spi::run("SET LOCAL belink.retrieval_cache_size = 10000").unwrap();
        for _ in 0..2 {
            let cached =
                Spi::get_one_with_args::<pgrx::JsonB>("SELECT belink_link($1, 'hpo')", &[PARAGRAPH.into()]).unwrap();
            assert_eq!(cached.map(|j| j.0), Some(fresh.0.clone()));
        }
    }

    #[pg_test]
    fn limits_and_volatility() {
        load_hpo();
        Spi::run("SET LOCAL belink.max_document_chars = 10").unwrap();
        assert_error("SELECT belink_link(repeat('x', 11), 'hpo')", "54000", "exceeds belink.max_document_chars (10)");
        assert_error("SELECT belink_link('x', 'nope')", "42704", "unknown ontology \"nope\"");
        let volatile = count(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('belink_link', 'belink_entities', 'belink_candidates') AND provolatile = 'v'",
        );
        assert_eq!(volatile, 4, "model-backed functions are never IMMUTABLE or STABLE");
    }
}
