-- How well retrieval's confidence (the best candidate's similarity to the mention) separates
-- right from wrong answers and from gibberish, for choosing belink.min_similarity
-- (BENCHMARKS.md, "No match without the re-ranker"). Needs an indexed ontology and two files
-- of "gold concept id<TAB>mention" lines: labelled mentions (belink-eval mentions --corpus ...)
-- and NIL mentions (gold "NIL").
--
--   psql -v ontology=medic -v mentions=/path/dev.tsv -v nil=/path/gibberish.tsv -f scripts/min-similarity.sql
SET belink.min_similarity = 0;
CREATE TEMP TABLE labelled (gold text, mention text);
\set copy_mentions '\\copy labelled FROM ' :'mentions'
:copy_mentions
\set copy_nil '\\copy labelled FROM ' :'nil'
:copy_nil
CREATE TEMP TABLE numbered AS SELECT row_number() OVER () AS i, * FROM labelled;
CREATE TEMP TABLE answers AS
SELECT q.i, q.gold, r.confidence, r.decided_by,
       (r.concept_id = q.gold OR EXISTS (SELECT 1 FROM belink.concepts c
            WHERE c.ontology = :'ontology' AND c.concept_id = r.concept_id AND q.gold = ANY (c.alt_ids))) AS correct
FROM numbered q
JOIN belink_normalize((SELECT array_agg(mention ORDER BY i) FROM numbered), ontology => :'ontology') r ON r.ordinality = q.i;
-- The confidence of right and wrong answers decided by retrieval (exact matches are 1).
SELECT gold = 'NIL' AS nil_set, decided_by, correct, count(*),
       round(percentile_cont(0.1) WITHIN GROUP (ORDER BY confidence)::numeric, 3) AS p10,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY confidence)::numeric, 3) AS p50,
       round(percentile_cont(0.9) WITHIN GROUP (ORDER BY confidence)::numeric, 3) AS p90
FROM answers GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
-- Each threshold: acc@1 (NIL is wrong), the share linked, and the share of NIL mentions linked.
SELECT t AS threshold,
       round(avg(((confidence >= t) AND correct)::int) FILTER (WHERE gold <> 'NIL'), 3) AS acc_at_1,
       round(avg((confidence >= t)::int) FILTER (WHERE gold <> 'NIL'), 3) AS linked,
       round(avg((confidence >= t)::int) FILTER (WHERE gold = 'NIL'), 3) AS nil_linked
FROM answers, unnest(ARRAY[0, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]) AS t
GROUP BY t ORDER BY t;
