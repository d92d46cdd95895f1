-- End-to-end linking: detection, abbreviations, decisions.
SET belink.retrieval = 'lexical';

SELECT jsonb_pretty(belink_link('Familial adenomatous polyposis (FAP) leads to colon cancer. In FAP, seizures are rare.', 'mini'));
SELECT * FROM belink_entities('High blood pressure and a febrile seizure; hypertension again.', 'mini');
SELECT belink_link('Nothing to find here.', 'mini'), belink_link('', 'mini'), belink_link(NULL, 'mini');
SELECT ordinality, jsonb_array_length(l) FROM belink_link(ARRAY['Hypertension.', NULL, 'Colon cancer and seizures.'], 'mini') WITH ORDINALITY AS t(l, ordinality);
-- "FAP" alone names two concepts: without re-ranking, retrieval's first.
SELECT start_char, end_char, mention, concept_id FROM belink_entities('FAP was suspected.', 'mini');

-- Limits and bad arguments.
SET belink.max_document_chars = 10;
SELECT error_of($$SELECT belink_link('Hypertension again', 'mini')$$);
RESET belink.max_document_chars;
SELECT error_of($$SELECT belink_link('x', 'nope')$$);
SELECT ontology, names, patterns FROM belink_dictionary_stats('mini');
