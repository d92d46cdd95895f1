-- Candidates and decisions with lexical retrieval (exact + trigram): no model involved.
SET belink.retrieval = 'lexical';

SELECT concept_id, name, matched_name, round(score::numeric, 4) AS score, source, exact_rank, trigram_rank, dense_rank
FROM belink_candidates('colon cancer', 'mini', 3);
SELECT concept_id, name, matched_name, source, exact_rank, trigram_rank FROM belink_candidates('seizures', 'mini', 5);
SELECT concept_id, matched_name, exact_rank, trigram_rank FROM belink_candidates('FAP', 'mini', 5);
SELECT count(*) FROM belink_candidates('zzzz qqqq', 'mini');
SELECT count(*) FROM belink_candidates('', 'mini');
SELECT count(*) FROM belink_candidates(NULL, 'mini');

-- A unique exact match decides; otherwise retrieval's top candidate with its share of the scores.
SELECT concept_id, name, ontology, confidence, decided_by, nil_probability FROM belink_normalize('high blood pressure', ontology => 'mini');
SELECT concept_id, name, round(confidence::numeric, 4) AS confidence, decided_by FROM belink_normalize('seizure epileptic', ontology => 'mini');
SELECT concept_id, name, confidence, decided_by, candidates FROM belink_normalize('zzzz qqqq', ontology => 'mini');
SELECT ordinality, concept_id, decided_by FROM belink_normalize(ARRAY['colon cancer', NULL, 'hypertension'], ontology => 'mini');
SELECT jsonb_pretty(candidates) FROM belink_normalize('colon cancers', ontology => 'mini', k => 2);

-- Each source alone (belink.retrieval = exact, trigram, dense), to measure what it contributes.
SET belink.retrieval = 'exact';
SELECT concept_id, source, exact_rank, trigram_rank FROM belink_candidates('seizures', 'mini', 5);
SELECT count(*) FROM belink_candidates('colon cancers', 'mini', 5);
SET belink.retrieval = 'trigram';
SELECT concept_id, source, exact_rank, trigram_rank FROM belink_candidates('seizures', 'mini', 5);
SET belink.retrieval = 'lexical';

-- An abbreviation defined in the context is looked up by its long form, as linking does.
SELECT concept_id, decided_by, abbreviation_of FROM belink_normalize('FAP', ontology => 'mini');
SELECT concept_id, decided_by, abbreviation_of
FROM belink_normalize('FAP', 'Familial amyloid polyneuropathy (FAP) affects nerves.', 'mini');
SELECT ordinality, concept_id, abbreviation_of
FROM belink_normalize(ARRAY['FAP', 'FAP'], ARRAY['Familial adenomatous polyposis (FAP).', 'No definition of FAP.'], 'mini');

-- Bad arguments.
SELECT error_of($$SELECT * FROM belink_candidates('x', 'nope')$$);
SELECT error_of($$SELECT * FROM belink_candidates('x', 'mini', 0)$$);
SELECT error_of($$SELECT * FROM belink_candidates('x', 'mini', NULL)$$);
SELECT error_of($$SELECT * FROM belink_normalize('x', k => 30)$$);
SELECT error_of($$SELECT * FROM belink_normalize(ARRAY['a', 'b'], ARRAY['only one context'])$$);
