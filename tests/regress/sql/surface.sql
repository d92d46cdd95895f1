-- The SQL surface: every function and procedure of the extension, with its signature.
SELECT p.oid::regprocedure AS signature, pg_get_function_result(p.oid) AS result
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'belink'
ORDER BY p.proname, pg_get_function_identity_arguments(p.oid);

-- The catalog tables and views.
SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'belink' AND c.relkind IN ('r', 'v') ORDER BY c.relname;
