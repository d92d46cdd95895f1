-- What a load stored, and the errors of bad loads.
SELECT name, format, concept_count, name_count FROM belink.ontologies ORDER BY name;
SELECT concept_id, name, kind, normalized FROM belink.names WHERE ontology = 'mini' ORDER BY concept_id, name_id;
SELECT belink_fold('Crohn''s disease, Type-2 (β)'), belink_fold(''), belink_fold(NULL);

SELECT belink_add_names('mini', 'MINI:0005', ARRAY['raised blood pressure', NULL]);
SELECT error_of($$SELECT belink_add_names('mini', 'MINI:9999', ARRAY['x'])$$);
SELECT error_of($$SELECT belink_add_names('nope', 'MINI:0005', ARRAY['x'])$$);

SELECT error_of($$SELECT * FROM belink_load_ontology_text('broken', 'format-version: 1.2

[Term]
name: no id here
', 'obo')$$);
SELECT error_of($$SELECT * FROM belink_load_ontology_text('bad name!', 'x', 'obo')$$);
SELECT error_of($$SELECT * FROM belink_load_ontology_text('x', 'x', 'nonsense')$$);
SELECT error_of($$SELECT * FROM belink_load_ontology('x', '/no/such/file.obo')$$);

-- Names: one rule for NULL and empty (a NULL element adds nothing; a name without a letter or
-- digit is refused), user names removed again, and every change renews the generation.
SELECT error_of($$SELECT belink_add_names('mini', 'MINI:0005', ARRAY['', 'ok'])$$);
SELECT error_of($$SELECT belink_add_names('mini', 'MINI:0005', ARRAY['--'])$$);
SELECT error_of($$SELECT belink_add_names('mini', 'MINI:0005', ARRAY[repeat('long ', 300)])$$);
CREATE TEMPORARY TABLE before AS SELECT generation, name_count FROM belink.ontologies WHERE name = 'mini';
SELECT belink_add_names('mini', 'MINI:0005', ARRAY['HTN', NULL]);
SELECT o.generation > b.generation AS renewed, o.name_count - b.name_count AS added FROM belink.ontologies o, before b WHERE o.name = 'mini';
SELECT belink_remove_names('mini', 'MINI:0005', ARRAY['HTN', 'Hypertension']);
SELECT count(*) FROM belink.names WHERE ontology = 'mini' AND name IN ('HTN', 'Hypertension');
TRUNCATE before;
INSERT INTO before SELECT generation, name_count FROM belink.ontologies WHERE name = 'mini';
DELETE FROM belink.names WHERE ontology = 'mini' AND name = 'raised blood pressure';
SELECT o.generation > b.generation AS renewed, b.name_count - o.name_count AS removed FROM belink.ontologies o, before b WHERE o.name = 'mini';
SELECT name_count = (SELECT count(*) FROM belink.names WHERE ontology = 'mini') AS name_count_true FROM belink.ontologies WHERE name = 'mini';

-- An over-long name in a file is left out with a warning, not a failed load.
SELECT concepts, names FROM belink_load_ontology_text('long', E'L:1\tShort name\nL:2\t' || repeat('very long name ', 300), 'tsv');
SELECT belink_drop_ontology('long');
