#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

    #[pg_test]
    fn functions_run_with_the_callers_rights() {
        // Two exceptions, the builder and dropper of an ontology's HNSW index (an index takes
        // the table's owner), each with a fixed search_path and its own check of the caller.
        let definers = Spi::get_one::<Vec<String>>(
            "SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p
             JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'belink'
             WHERE p.prosecdef AND p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp']",
        )
        .unwrap()
        .unwrap_or_default();
        assert_eq!(definers, ["belink.create_embedding_index(text)", "belink.drop_embedding_index(text)"]);
        assert_eq!(
            count(
                "SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
                 JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'belink' WHERE p.prosecdef"
            ),
            2,
            "no other SECURITY DEFINER function"
        );
        assert!(count("SELECT count(*) FROM pg_proc WHERE proname = 'belink_link'") > 0);
    }

    #[pg_test]
    fn ontologies_are_readable_by_everyone_annotations_by_no_one_by_default() {
        for table in ["belink.ontologies", "belink.concepts", "belink.names", "belink.encoder_adaptations"] {
            let read =
                Spi::get_one_with_args::<bool>("SELECT has_table_privilege('public', $1, 'SELECT')", &[table.into()]);
            let write = Spi::get_one_with_args::<bool>(
                "SELECT has_table_privilege('public', $1, 'INSERT') OR has_table_privilege('public', $1, 'UPDATE') OR has_table_privilege('public', $1, 'DELETE')",
                &[table.into()],
            );
            assert_eq!((read.unwrap(), write.unwrap()), (Some(true), Some(false)), "{table}");
        }
        // Annotation results hold excerpts of users' documents.
        for table in
            ["belink.annotations", "belink.annotation_errors", "belink.annotation_jobs", "belink.annotation_progress"]
        {
            let read =
                Spi::get_one_with_args::<bool>("SELECT has_table_privilege('public', $1, 'SELECT')", &[table.into()]);
            assert_eq!(read.unwrap(), Some(false), "{table}");
        }
    }

    #[pg_test]
    fn hostile_names_never_become_sql() {
        // Ontology names are checked before use; every other value travels as a parameter.
        for name in ["x'; DROP TABLE belink.names; --", "x\" OR 1=1", "../../etc/passwd", "a b"] {
            let sql = format!("SELECT * FROM belink_load_ontology_text({}, 'A\tAlpha')", literal(name));
            assert_error(&sql, "22023", "invalid ontology name");
        }
        let hostile = "Robert'); DROP TABLE belink.concepts; --";
        let content = format!("X:1\t{hostile}\t{hostile}|\"quoted\" name\n");
        Spi::run(&format!("SELECT * FROM belink_load_ontology_text('hostile', {})", literal(&content))).unwrap();
        assert_eq!(count("SELECT count(*) FROM belink.concepts WHERE ontology = 'hostile'"), 1);
        let found = Spi::get_one_with_args::<String>(
            "SELECT concept_id FROM belink_candidates($1, 'hostile', 1)",
            &[hostile.into()],
        )
        .unwrap();
        assert_eq!(found.as_deref(), Some("X:1"));
        assert!(Spi::get_one::<String>(
            "SELECT belink_link('Robert''); DROP TABLE belink.concepts; --', 'hostile')::text"
        )
        .is_ok());
        assert_error(
            "SELECT belink_candidates('x', 'hostile''; DROP TABLE belink.names; --')",
            "42704",
            "unknown ontology",
        );
        assert!(count("SELECT count(*) FROM belink.names") > 0, "the catalog is still there");
    }
}
