-- The SQL surface: every function and procedure of the extension, with its signature.
SELECT p.oid::regprocedure AS signature, pg_get_function_result(p.oid) AS result
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'belink'
ORDER BY p.proname, pg_get_function_identity_arguments(p.oid);

-- The catalog tables and views.
SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'belink' AND c.relkind IN ('r', 'v') ORDER BY c.relname;

-- Planner estimates: the linking functions are expensive, so conditions on them come last.
SELECT p.oid::regprocedure AS signature, p.procost, p.prorows FROM pg_proc p
WHERE p.proname IN ('belink_link', 'belink_normalize', 'belink_candidates', 'belink_entities') ORDER BY p.oid::regprocedure::text;
CREATE TEMPORARY TABLE docs (id integer, body text);
EXPLAIN (COSTS OFF) SELECT id FROM docs WHERE belink_link(body) IS NOT NULL AND id < 10;
