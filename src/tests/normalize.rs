#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

    fn load_medic() {
        Spi::run(&format!("SELECT * FROM belink_load_ontology_text('medic', {})", literal(MEDIC))).unwrap();
    }

    #[pg_test]
    fn exact_matches_decide_without_the_llm() {
        load_medic();
        let row = Spi::get_three::<String, String, f64>(
            "SELECT concept_id, decided_by, confidence FROM belink_normalize('breast cancer', 'In women, [breast cancer] ...', 'medic')",
        )
        .unwrap();
        assert_eq!(row, (Some("114480".into()), Some("exact".into()), Some(1.0)));
    }

    #[pg_test]
    fn retrieval_decides_when_reranking_is_off_and_shows_its_candidates() {
        load_medic();
        let row = Spi::get_three::<String, String, pgrx::JsonB>(
            "SELECT concept_id, decided_by, candidates FROM belink_normalize('colorectal cancr', ontology => 'medic', k => 3)",
        )
        .unwrap();
        assert_eq!(row.0.as_deref(), Some("114500"));
        assert_eq!(row.1.as_deref(), Some("retrieval"));
        let candidates = row.2.unwrap().0;
        let list = candidates.as_array().unwrap();
        assert!(!list.is_empty() && list.len() <= 3);
        assert_eq!(list[0]["concept_id"], "114500");
        assert_eq!(list[0]["retrieval_rank"], 1);
        assert!(list[0]["probability"].is_null(), "no re-ranker probability when re-ranking is off");
    }

    #[pg_test]
    fn nothing_retrieved_is_nil_and_null_is_a_row_of_nulls() {
        load_medic();
        let row = Spi::get_two::<String, String>(
            "SELECT concept_id, decided_by FROM belink_normalize('zzzz qqqq', ontology => 'medic')",
        )
        .unwrap();
        assert_eq!(row, (None, Some("retrieval".into())));
        let null =
            Spi::get_two::<String, f64>("SELECT decided_by, confidence FROM belink_normalize(NULL::text)").unwrap();
        assert_eq!(null, (None, None));
        let empty = Spi::get_two::<String, f64>("SELECT decided_by, confidence FROM belink_normalize('')").unwrap();
        assert_eq!(empty, (Some("retrieval".into()), Some(0.0)), "an empty mention is decided: NIL");
    }

    #[pg_test]
    fn the_batched_form_keeps_order_and_nulls() {
        load_medic();
        let rows = Spi::connect(|client| {
            client
                .select(
                    "SELECT ordinality, concept_id FROM belink_normalize(ARRAY['breast cancer', NULL, 'colorectal cancer'], ontology => 'medic') ORDER BY 1",
                    None,
                    &[],
                )
                .unwrap()
                .map(|r| (r.get::<i32>(1).unwrap().unwrap(), r.get::<String>(2).unwrap()))
                .collect::<Vec<_>>()
        });
        assert_eq!(rows, [(1, Some("114480".to_string())), (2, None), (3, Some("114500".to_string()))]);
        assert_error(
            "SELECT * FROM belink_normalize(ARRAY['a', 'b'], ARRAY['only one context'])",
            "22023",
            "2 mentions but 1 contexts",
        );
    }

    #[pg_test]
    fn the_cores_default_settings_are_the_gucs_defaults() {
        // The core's tests run with Settings::default(): it must be what a fresh session gets.
        assert_eq!(crate::gucs::settings(), belink_core::settings::Settings::default());
    }

    #[pg_test]
    fn rerank_settings_are_checked() {
        assert_error("SELECT * FROM belink_normalize('x', k => 30)", "22023", "k must be between 1 and 25");
        assert_error(
            "SET LOCAL belink.rerank_mode = 'guess'",
            "22023",
            "invalid value for parameter \"belink.rerank_mode\"",
        );
        assert_error(
            "SET LOCAL belink.rerankk = on",
            "42602",
            "invalid configuration parameter name \"belink.rerankk\"",
        );
    }
}
