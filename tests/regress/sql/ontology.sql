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
