-- HNSW against exact search over one ontology's name vectors (BENCHMARKS.md, "HNSW against
-- exact search, by ontology size"): for the mentions of a file of "gold concept id<TAB>mention" lines
-- (belink-eval mentions --corpus ...), the names dense retrieval asks for (LIMIT :limit, as
-- belink.top_k 10 does: 5 names per candidate), found by an HNSW index built with the given
-- m and ef_construction, at several hnsw.ef_search values, and by exact search (no index):
-- the index's build time, the recall of the first 1, 10 and :limit names, and the latency.
-- Needs an indexed ontology (CALL belink_index); measures on a copy of its vectors (the table
-- belink_hnsw_probe, dropped at the end), so belink's own index is left alone.
--
--   psql -v ontology=medic -v mentions=/path/dev.tsv -v limit=50 -v queries=300 \
--        [-v m=16 -v ef_construction=64] [-v maintenance_work_mem=4GB] -f scripts/hnsw-recall.sql
-- Without m and ef_construction: the ones belink_index builds with. maintenance_work_mem
-- (default 1GB) must hold the graph (about 1.6 kB a 384-dimension vector) for an in-memory build.
-- With -v in_place=on: belink's own index is measured, through a view of belink.names (no copy,
-- no build: at UMLS size a copy and a second graph would not fit beside the first on disk).
-- pgvector's schema must be on the search_path.
\set QUIET on
\pset tuples_only on
CREATE TEMP TABLE labelled (gold text, mention text);
\set copy_mentions '\\copy labelled FROM ' :'mentions'
:copy_mentions
CREATE TEMP TABLE queries AS
SELECT row_number() OVER (ORDER BY md5(mention)) AS i, mention
FROM (SELECT DISTINCT mention FROM labelled) m ORDER BY md5(mention) LIMIT :queries;
ALTER TABLE queries ADD COLUMN v real[];
UPDATE queries q SET v = e.v FROM (
    SELECT ordinality AS i, embedding AS v
    FROM belink_embed_many_real((SELECT array_agg(mention ORDER BY i) FROM queries))) e
WHERE e.i = q.i;

-- The ontology's vectors, and the index under test (built as belink.create_embedding_index
-- builds belink's, with the given parameters).
DROP TABLE IF EXISTS belink_hnsw_probe;
\if :{?in_place}
-- The view's expression and predicate are the index's, so the planner can use belink's index.
SELECT format('CREATE TEMP VIEW belink_hnsw_probe AS
                   SELECT name_id, embedding::vector(%s) AS v FROM belink.names WHERE ontology = %L',
              max(embedding_dim), :'ontology')
FROM belink.ontologies WHERE name = :'ontology' \gexec
SELECT p.m, p.ef_construction FROM belink.hnsw_build_parameters() p \gset
SELECT 'NaN' AS build_s \gset
SELECT ('belink.' || quote_ident(belink.embedding_index_name(:'ontology')))::regclass::oid AS index_oid \gset
\else
SELECT format('CREATE UNLOGGED TABLE belink_hnsw_probe AS
                   SELECT name_id, embedding::vector(%s) AS v FROM belink.names
                   WHERE ontology = %L AND embedding IS NOT NULL', max(vector_dims(embedding)), :'ontology')
FROM belink.names WHERE ontology = :'ontology' AND embedding IS NOT NULL \gexec
\if :{?m}
\else
SELECT p.m, p.ef_construction FROM belink.hnsw_build_parameters() p \gset
\endif
\if :{?maintenance_work_mem}
\else
\set maintenance_work_mem 1GB
\endif
SET maintenance_work_mem = :'maintenance_work_mem';
SELECT clock_timestamp() AS build_started \gset
CREATE INDEX ON belink_hnsw_probe USING hnsw (v vector_cosine_ops) WITH (m = :m, ef_construction = :ef_construction);
SELECT extract(epoch FROM clock_timestamp() - :'build_started'::timestamptz) AS build_s \gset
RESET maintenance_work_mem;
ANALYZE belink_hnsw_probe;
SELECT indexrelid AS index_oid FROM pg_index WHERE indrelid = 'belink_hnsw_probe'::regclass \gset
\endif

-- The names nearest to each query, with the time each search took.
CREATE FUNCTION pg_temp.nearest(query real[], k int, OUT ids bigint[], OUT distances float8[], OUT ms float8)
LANGUAGE plpgsql AS $$
DECLARE
    started timestamptz := clock_timestamp();
BEGIN
    -- EXECUTE: planned anew each time, so that exact search's settings never stick to a plan.
    EXECUTE 'SELECT array_agg(name_id ORDER BY distance), array_agg(distance ORDER BY distance)
             FROM (SELECT p.name_id, p.v <=> $1::vector AS distance FROM belink_hnsw_probe p
                   ORDER BY distance LIMIT $2) n'
        INTO ids, distances USING query, k;
    ms := extract(epoch FROM clock_timestamp() - started) * 1000;
END $$;

-- Exact search: the planner may not use the index.
SET enable_indexscan = off;
SET enable_bitmapscan = off;
CREATE TEMP TABLE exact AS SELECT q.i, r.ids, r.distances, r.ms FROM queries q, pg_temp.nearest(q.v, :limit) r;
RESET enable_indexscan;
RESET enable_bitmapscan;

CREATE TEMP TABLE approximate (ef int, i bigint, ids bigint[], distances float8[], ms float8);
CREATE FUNCTION pg_temp.search_all(ef int, k int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('hnsw.ef_search', ef::text, true);
    INSERT INTO approximate SELECT ef, q.i, r.ids, r.distances, r.ms FROM queries q, pg_temp.nearest(q.v, k) r;
END $$;
-- One pass to read the index into shared buffers, then the measured passes (retrieval asks
-- for ef_search = max(limit, 40), so 50 is what it uses today).
SELECT pg_temp.search_all(50, :limit);
TRUNCATE approximate;
SELECT pg_temp.search_all(ef, :limit) FROM unnest(ARRAY[50, 100, 200, 400]) ef;

-- Recall counts ties: names written alike in several concepts have one vector, and exact search
-- orders them arbitrarily. A name found is one of the true k nearest when it is no farther than
-- the k-th nearest (a float's rounding allowed).
CREATE FUNCTION pg_temp.recall(found float8[], truth float8[], k int) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT count(*) FILTER (WHERE d <= truth[least(k, cardinality(truth))] + 1e-6)::float8 / greatest(least(k, cardinality(truth)), 1)
    FROM unnest(found[1:k]) d
$$;
\set QUIET off
\pset tuples_only off
SELECT :'ontology' AS ontology, (SELECT count(*) FROM belink_hnsw_probe) AS vectors,
       (SELECT count(*) FROM queries) AS queries, :limit AS "limit", :m AS m, :ef_construction AS ef_construction,
       round(:'build_s'::numeric, 1) AS build_s,
       pg_size_pretty(pg_relation_size(:index_oid)) AS index_size;
SELECT 'exact' AS search,
       NULL::numeric AS recall_at_10, NULL::numeric AS recall_at_limit, NULL::numeric AS same_first,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p95_ms
FROM exact
UNION ALL
SELECT 'hnsw ef_search ' || a.ef,
       round(avg(pg_temp.recall(a.distances, e.distances, 10))::numeric, 4),
       round(avg(pg_temp.recall(a.distances, e.distances, :limit))::numeric, 4),
       round(avg(pg_temp.recall(a.distances, e.distances, 1))::numeric, 4),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY a.ms)::numeric, 2),
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY a.ms)::numeric, 2)
FROM approximate a JOIN exact e USING (i) GROUP BY a.ef;
\if :{?in_place}
DROP VIEW belink_hnsw_probe;
\else
DROP TABLE belink_hnsw_probe;
\endif
