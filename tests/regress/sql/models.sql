-- Through the model server (the cluster preloads belink): the encoder's output shape.
SELECT vector_dims(belink_embed('familial adenomatous polyposis'));
SELECT round(vector_norm(belink_embed('colon cancer'))::numeric, 3);
SELECT count(*) FROM belink_embed(ARRAY['a', NULL, 'b']);
SELECT state, encoder_state, encoder_dim FROM belink_worker_status();

-- Hybrid retrieval once the ontology is indexed: a paraphrase no name shares a word with.
SET client_min_messages = warning;
CALL belink_index('mini');
RESET client_min_messages;
-- A batch of no names is refused before anything changes.
SELECT error_of($$CALL belink_index('mini', 0)$$);
SELECT error_of($$CALL belink_index('mini', NULL)$$);
SELECT error_of($$CALL belink_adapt_encoder('mini', batch_size => NULL)$$);
SELECT embedding_model LIKE '%/all-MiniLM-L6-v2' AS default_encoder, embedding_dim FROM belink.ontologies WHERE name = 'mini';
SELECT concept_id, name, source, exact_rank, dense_rank FROM belink_candidates('elevated arterial tension', 'mini', 1);
-- Without re-ranking, the confidence is how similar the best candidate's name is to the
-- mention (here the cosine of the vectors); below belink.min_similarity (0.6 by default) the
-- mention is NIL, its candidates still shown. The paraphrase is as close as 0.56:
SELECT concept_id, decided_by, round(confidence::numeric, 2) AS confidence FROM belink_normalize('elevated arterial tension', ontology => 'mini');
SET belink.min_similarity = 0.5;
SELECT concept_id, decided_by FROM belink_normalize('elevated arterial tension', ontology => 'mini');
RESET belink.min_similarity;
SELECT concept_id, decided_by, confidence < 0.6 AS below, jsonb_array_length(candidates) > 0 AS has_candidates
FROM belink_normalize('gibberishxyz', ontology => 'mini');
SET belink.min_similarity = 0;
SELECT concept_id IS NOT NULL AS linked FROM belink_normalize('gibberishxyz', ontology => 'mini');
RESET belink.min_similarity;

-- Dropping an ontology drops its HNSW index too, and the model server's trigram index.
SELECT concepts FROM belink_load_ontology_text('throwaway', E'T:1\tTransient ischemic attack', 'tsv');
SET client_min_messages = warning;
CALL belink_index('throwaway');
RESET client_min_messages;
-- Built with the graph parameters chosen for its size (belink.hnsw_build_parameters).
SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'belink' AND c.relname LIKE 'names_embedding_throwaway%';
SELECT concept_id FROM belink_candidates('transient ischaemic attacks', 'throwaway', 1);
SELECT count(*) AS server_trigram_indexes
FROM jsonb_array_elements(belink_worker_status_json()->'trigram_indexes') i WHERE i->>'ontology' = 'throwaway';
SELECT belink_drop_ontology('throwaway');
SELECT count(*) FROM pg_indexes WHERE schemaname = 'belink' AND indexname LIKE 'names_embedding_throwaway%';
SELECT count(*) AS server_trigram_indexes
FROM jsonb_array_elements(belink_worker_status_json()->'trigram_indexes') i WHERE i->>'ontology' = 'throwaway';

-- Fusion weights chosen by measurement on labelled mentions (a training split's stand-in):
-- rows naming no active concept of the ontology are skipped and counted.
CREATE TABLE fusion_examples (mention text, concept_id text);
INSERT INTO fusion_examples VALUES
    ('elevated arterial tension', 'MINI:0005'), ('colon tumour', 'MINI:0002'), ('fits with fever', 'MINI:0004'),
    ('seizure attacks', 'MINI:0003'), ('adenomatous polyps of the colon', 'MINI:0001'),
    ('unknown', 'NOPE:1'), ('old', 'MINI:0007'), (NULL, 'MINI:0001'), ('  ', 'MINI:0001');
SELECT examples, skipped, reachable, exact_alone, trigram_alone, dense_alone, equal_weights, tuned,
       tuned >= greatest(exact_alone, trigram_alone, dense_alone) AS never_below_a_source,
       weight_exact, weight_trigram, weight_dense
FROM belink_tune_fusion('mini', 'fusion_examples');
SELECT fusion_exact, fusion_trigram, fusion_dense, fusion_tuning->'examples' AS examples, fusion_tuning->'correct' AS correct
FROM belink.ontologies WHERE name = 'mini';
-- On this small ontology equal weights are already right for every example, and a tie keeps
-- them. Retrieval fuses with the stored weights; belink.tuned_fusion = off uses equal weights.
UPDATE belink.ontologies SET fusion_dense = 0.1 WHERE name = 'mini';
SELECT concept_id, round(score::numeric, 5) AS score, trigram_rank, dense_rank FROM belink_candidates('colon tumour', 'mini', 2);
SET belink.tuned_fusion = off;
SELECT concept_id, round(score::numeric, 5) AS score, trigram_rank, dense_rank FROM belink_candidates('colon tumour', 'mini', 2);
RESET belink.tuned_fusion;
SELECT error_of($$SELECT * FROM belink_tune_fusion('nope', 'fusion_examples')$$);
SELECT error_of($$SELECT * FROM belink_tune_fusion('mini', 'no_such_table')$$);
SELECT error_of($$SELECT * FROM belink_tune_fusion('mini', 'fusion_examples', 'no_column')$$);
SELECT error_of($$SELECT * FROM belink_tune_fusion('mini', '(SELECT 1) AS injected')$$);
DELETE FROM fusion_examples WHERE concept_id LIKE 'MINI%';
SELECT error_of($$SELECT * FROM belink_tune_fusion('mini', 'fusion_examples')$$);
SELECT error_of($$UPDATE belink.ontologies SET fusion_exact = 0, fusion_trigram = 0, fusion_dense = 0 WHERE name = 'mini'$$);
UPDATE belink.ontologies SET fusion_exact = 1, fusion_trigram = 1, fusion_dense = 1, fusion_tuning = NULL WHERE name = 'mini';

-- The trigram source searches the model server's in-memory index (loaded on first use) and
-- answers exactly as pg_trgm does.
SET belink.retrieval = 'trigram';
CREATE TEMP TABLE trigram_probes AS
SELECT m FROM unnest(ARRAY['colon cancers', 'seizure', 'familial polyposis', 'hypertensive', 'zzzz', 'fever fits']) m;
CREATE TEMP TABLE by_server AS
SELECT p.m, c.concept_id, c.matched_name, c.trigram_rank FROM trigram_probes p, LATERAL belink_candidates(p.m, 'mini', 5) c;
SET belink.trigram_search = 'pg_trgm';
CREATE TEMP TABLE by_pg_trgm AS
SELECT p.m, c.concept_id, c.matched_name, c.trigram_rank FROM trigram_probes p, LATERAL belink_candidates(p.m, 'mini', 5) c;
RESET belink.trigram_search;
RESET belink.retrieval;
SELECT count(*) AS candidates, (SELECT count(*) FROM (TABLE by_server EXCEPT ALL TABLE by_pg_trgm) d) AS differences FROM by_server;
SELECT i->>'ontology' AS ontology, (i->>'names')::int AS names
FROM jsonb_array_elements(belink_worker_status_json()->'trigram_indexes') i WHERE i->>'ontology' = 'mini';
-- A new generation (a name added) is loaded anew.
SELECT belink_add_names('mini', 'MINI:0003', ARRAY['Convulsive fits']);
SELECT concept_id, matched_name, trigram_rank FROM belink_candidates('convulsive fit', 'mini', 1);
SELECT count(*) AS generations_of_mini
FROM jsonb_array_elements(belink_worker_status_json()->'trigram_indexes') i WHERE i->>'ontology' = 'mini';
SELECT belink_remove_names('mini', 'MINI:0003', ARRAY['Convulsive fits']);

-- Bad input through hybrid retrieval (exact, the server's trigram index, dense): sensible
-- candidates or none, never an error.
SELECT length(m) AS length, count(c.concept_id) AS candidates
FROM unnest(ARRAY['', 'x', repeat('seizure ', 1250), '?!..;--', 'of the and with', '12345 678', 'αβγ']) WITH ORDINALITY AS u(m, i)
LEFT JOIN LATERAL belink_candidates(m, 'mini', 3) c ON true
GROUP BY i, m ORDER BY i;
