-- Ontologies belong to roles: two curators with the grants of SECURITY.md each change only
-- their own ontology (functions, direct writes, belink_index), read every ontology, and hand an
-- ontology over only to a role they belong to. SET SESSION AUTHORIZATION, not SET ROLE: the
-- index functions act for the session's user.
CREATE ROLE belink_carol;
CREATE ROLE belink_dave;
CREATE ROLE belink_curators;
GRANT INSERT, UPDATE, DELETE ON belink.ontologies, belink.concepts, belink.names, belink.index_progress
    TO belink_carol, belink_dave;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA belink TO belink_carol, belink_dave;
GRANT belink_curators TO belink_dave;

SET SESSION AUTHORIZATION belink_carol;
SELECT ontology, concepts, names FROM belink_load_ontology_text('carols', E'C:1\tMigraine\nC:2\tAsthma|Bronchial asthma', 'tsv');
SELECT name, owner, loaded_by FROM belink.ontologies WHERE name = 'carols';
SET client_min_messages = warning;  -- the NOTICEs report timings
CALL belink_index('carols');
RESET client_min_messages;
SELECT indexrelid::regclass AS hnsw_index FROM pg_index WHERE indrelid = 'belink.names'::regclass
    AND indexrelid::regclass::text LIKE 'belink.names_embedding_carols%';
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION belink_dave;
-- Reading and linking with another's ontology: allowed.
SELECT concept_id FROM belink_candidates('migraine', 'carols', 1);
-- Changing it through the functions: refused, with whose it is.
SELECT error_of($$SELECT * FROM belink_load_ontology_text('carols', E'C:1\tHeadache', 'tsv')$$);
SELECT error_of($$SELECT belink_add_names('carols', 'C:1', ARRAY['hemicrania'])$$);
SELECT error_of($$SELECT belink_remove_names('carols', 'C:2', ARRAY['Bronchial asthma'])$$);
SELECT error_of($$SELECT belink_drop_ontology('carols')$$);
SELECT error_of($$CALL belink_index('carols')$$);
SELECT error_of($$CALL belink_adapt_encoder('carols')$$);
SELECT error_of($$SELECT * FROM belink_tune_fusion('carols', 'belink.names', 'name', 'concept_id')$$);
SELECT error_of($$SELECT belink.drop_embedding_index('carols')$$);
SELECT error_of($$SELECT belink.create_embedding_index('carols')$$);
-- Changing it by hand: row-level security changes nothing and adds nothing.
WITH changed AS (UPDATE belink.ontologies SET fusion_dense = 5 WHERE name = 'carols' RETURNING 1) SELECT count(*) AS changed FROM changed;
WITH changed AS (UPDATE belink.ontologies SET owner = 'belink_dave' WHERE name = 'carols' RETURNING 1) SELECT count(*) AS taken FROM changed;
WITH deleted AS (DELETE FROM belink.names WHERE ontology = 'carols' RETURNING 1) SELECT count(*) AS deleted FROM deleted;
WITH deleted AS (DELETE FROM belink.concepts WHERE ontology = 'carols' RETURNING 1) SELECT count(*) AS deleted FROM deleted;
WITH deleted AS (DELETE FROM belink.ontologies WHERE name = 'carols' RETURNING 1) SELECT count(*) AS deleted FROM deleted;
SELECT error_of($$INSERT INTO belink.names (ontology, concept_id, name, normalized, kind) VALUES ('carols', 'C:1', 'x', 'x', 'user')$$);
-- A new ontology is its loader's; it cannot be given to a role its loader is not in.
SELECT ontology FROM belink_load_ontology_text('daves', E'D:1\tGout', 'tsv');
SELECT error_of($$INSERT INTO belink.ontologies (name, format, source, owner) VALUES ('stolen', 'tsv', '(text)', 'belink_carol')$$);
WITH changed AS (UPDATE belink.ontologies SET owner = 'belink_curators' WHERE name = 'daves' RETURNING owner) SELECT owner FROM changed;
SELECT error_of($$UPDATE belink.ontologies SET owner = 'belink_carol' WHERE name = 'daves'$$);
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION belink_carol;
SELECT count(*) AS carols_names, (SELECT fusion_dense FROM belink.ontologies WHERE name = 'carols') AS fusion_dense
FROM belink.names WHERE ontology = 'carols';
SELECT belink_add_names('carols', 'C:1', ARRAY['hemicrania']);
SELECT error_of($$SELECT belink_add_names('daves', 'D:1', ARRAY['podagra'])$$);
-- Its owner drops it, and its HNSW index with it.
SELECT belink_drop_ontology('carols');
SELECT count(*) AS hnsw_left FROM pg_class WHERE relname LIKE 'names_embedding_carols%';
RESET SESSION AUTHORIZATION;

-- A superuser may change every ontology; members of the owner role may too.
SELECT belink_add_names('daves', 'D:1', ARRAY['podagra']);
SET SESSION AUTHORIZATION belink_dave;
SELECT belink_drop_ontology('daves');
RESET SESSION AUTHORIZATION;
SELECT count(*) FROM belink.ontologies WHERE name IN ('carols', 'daves', 'stolen');
REVOKE ALL ON ALL TABLES IN SCHEMA belink FROM belink_carol, belink_dave;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA belink FROM belink_carol, belink_dave;
DROP ROLE belink_carol, belink_dave, belink_curators;
