-- Through the model server (the cluster preloads belink): the encoder's output shape.
SELECT vector_dims(belink_embed('familial adenomatous polyposis'));
SELECT round(vector_norm(belink_embed('colon cancer'))::numeric, 3);
SELECT count(*) FROM belink_embed(ARRAY['a', NULL, 'b']);
SELECT state, encoder_state, encoder_dim FROM belink_worker_status();

-- Hybrid retrieval once the ontology is indexed: a paraphrase no name shares a word with.
SET client_min_messages = warning;
CALL belink_index('mini');
RESET client_min_messages;
SELECT embedding_model LIKE '%/all-MiniLM-L6-v2' AS default_encoder, embedding_dim FROM belink.ontologies WHERE name = 'mini';
SELECT concept_id, name, source, exact_rank, dense_rank FROM belink_candidates('elevated arterial tension', 'mini', 1);
SELECT concept_id, decided_by FROM belink_normalize('elevated arterial tension', ontology => 'mini');

-- Dropping an ontology drops its HNSW index too.
SELECT concepts FROM belink_load_ontology_text('throwaway', E'T:1\tTransient ischemic attack', 'tsv');
SET client_min_messages = warning;
CALL belink_index('throwaway');
RESET client_min_messages;
SELECT count(*) FROM pg_indexes WHERE schemaname = 'belink' AND indexname LIKE 'names_embedding_throwaway%';
SELECT belink_drop_ontology('throwaway');
SELECT count(*) FROM pg_indexes WHERE schemaname = 'belink' AND indexname LIKE 'names_embedding_throwaway%';
