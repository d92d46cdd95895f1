-- belink_annotate: annotating a table's text column in batches, resumably (included by
-- src/api/link.rs). Every argument is checked before the job row is written; a job is keyed
-- by the table's OID and the result column; rows are read in key order through the key's
-- unique index (keyset pagination), so each batch costs the same from the first to the last.
CREATE PROCEDURE belink_annotate(
    table_name regclass, text_column name, result_column name,
    batch_size integer DEFAULT 500, ontology text DEFAULT NULL, key_column name DEFAULT NULL)
LANGUAGE plpgsql AS $procedure$
#variable_conflict use_variable
DECLARE
    label text;
    key_name name := key_column;
    text_attnum smallint;
    result_attnum smallint;
    key_attnum smallint;
    key_type text;
    job bigint;
    job_owner regrole;
    last_key text;
    keys text[];
    texts text[];
    results jsonb[];
    single jsonb;
    total_rows bigint;
    done_rows bigint;
    processed bigint := 0;
    started timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
    elapsed double precision;
BEGIN
    -- The arguments, all checked before anything is written.
    IF table_name IS NULL OR text_column IS NULL OR result_column IS NULL THEN
        RAISE EXCEPTION 'belink_annotate: table_name, text_column and result_column must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'belink_annotate: batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ontology IS NOT NULL AND NOT EXISTS (SELECT 1 FROM belink.ontologies o WHERE o.name = ontology) THEN
        RAISE EXCEPTION 'belink_annotate: unknown ontology "%"', ontology USING ERRCODE = 'undefined_object',
            HINT = (SELECT 'Loaded ontologies: ' || coalesce(string_agg(o.name, ', ' ORDER BY o.name), 'none') || '.'
                    FROM belink.ontologies o);
    END IF;
    SELECT a.attnum INTO text_attnum FROM pg_attribute a
    WHERE a.attrelid = table_name AND a.attname = text_column AND a.attnum > 0 AND NOT a.attisdropped
      AND a.atttypid IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype);
    IF text_attnum IS NULL THEN
        RAISE EXCEPTION 'belink_annotate: % has no text column %', table_name, quote_ident(text_column)
            USING ERRCODE = 'undefined_column';
    END IF;
    SELECT a.attnum INTO result_attnum FROM pg_attribute a
    WHERE a.attrelid = table_name AND a.attname = result_column AND a.attnum > 0 AND NOT a.attisdropped
      AND a.atttypid = 'jsonb'::regtype;
    IF result_attnum IS NULL THEN
        RAISE EXCEPTION 'belink_annotate: % has no jsonb column %', table_name, quote_ident(result_column)
            USING ERRCODE = 'undefined_column',
                  HINT = format('ALTER TABLE %s ADD COLUMN %I jsonb;', table_name, result_column);
    END IF;
    IF key_name IS NULL THEN
        SELECT a.attname INTO key_name
        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = table_name AND i.indisprimary AND i.indnatts = 1;
        IF key_name IS NULL THEN
            RAISE EXCEPTION 'belink_annotate: % has no one-column primary key', table_name
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Name a unique, not-null column with key_column => ''id''.';
        END IF;
    END IF;
    -- The key must identify rows: NOT NULL and alone in a unique index without a predicate.
    SELECT a.attnum, format_type(a.atttypid, a.atttypmod) INTO key_attnum, key_type FROM pg_attribute a
    WHERE a.attrelid = table_name AND a.attname = key_name AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull
      AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = table_name AND i.indisunique AND i.indnatts = 1
                  AND i.indkey[0] = a.attnum AND i.indpred IS NULL);
    IF key_attnum IS NULL THEN
        RAISE EXCEPTION 'belink_annotate: key column % of % is not a unique, not-null column', quote_ident(key_name), table_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name a column with a one-column unique index and NOT NULL (the primary key by default).';
    END IF;
    label := format('%s.%I', table_name, result_column);

    -- Jobs of tables dropped since are forgotten (the caller's own: row-level security).
    DELETE FROM belink.annotation_jobs j WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = j.table_oid);
    -- The job: new, or resumed by its owner (a member of the owning role). Rows that failed in
    -- an earlier run are tried again.
    SELECT j.job_id, j.owner INTO job, job_owner FROM belink.annotation_jobs j
    WHERE j.table_oid = table_name AND j.result_attnum = result_attnum;
    IF job IS NOT NULL AND NOT pg_has_role(job_owner, 'MEMBER') THEN
        RAISE EXCEPTION 'belink_annotate: the annotation job of % belongs to role %', label, job_owner
            USING ERRCODE = 'insufficient_privilege', HINT = 'Its owner (or a member of that role) can resume it.';
    END IF;
    EXECUTE format('SELECT count(*), count(%I) FROM %s', result_column, table_name) INTO total_rows, done_rows;
    IF job IS NULL THEN
        INSERT INTO belink.annotation_jobs (table_oid, result_attnum, text_attnum, key_attnum, ontology)
            VALUES (table_name, result_attnum, text_attnum, key_attnum, ontology)
            RETURNING job_id INTO job;
    ELSE
        DELETE FROM belink.annotation_errors e WHERE e.job_id = job;
        UPDATE belink.annotation_jobs j SET text_attnum = text_attnum, key_attnum = key_attnum, ontology = ontology
        WHERE j.job_id = job;
    END IF;
    INSERT INTO belink.annotation_progress AS p (job_id, total, done, done_at_start, backend_pid, started_at, updated_at)
        VALUES (job, total_rows, done_rows, done_rows, pg_backend_pid(), now(), now())
        ON CONFLICT (job_id) DO UPDATE SET total = excluded.total, done = excluded.done,
            done_at_start = excluded.done_at_start, failed = 0, backend_pid = excluded.backend_pid,
            started_at = excluded.started_at, updated_at = excluded.updated_at, finished_at = NULL;
    COMMIT;

    LOOP
        -- The next rows without a result, after the last batch in key order (through the key's
        -- index), locked for this batch.
        -- (Two forms: "key > $1 OR $1 IS NULL" would hide the range from the index.)
        EXECUTE format(
            'SELECT array_agg(k::text ORDER BY k), array_agg(t ORDER BY k) FROM (
                 SELECT %1$I AS k, %2$I AS t FROM %3$s
                 WHERE %4$I IS NULL %5$s
                 ORDER BY %1$I LIMIT $2 FOR UPDATE SKIP LOCKED) AS batch',
            key_name, text_column, table_name, result_column,
            CASE WHEN last_key IS NULL THEN '' ELSE format('AND %I > $1::%s', key_name, key_type) END)
            INTO keys, texts USING last_key, batch_size;
        EXIT WHEN keys IS NULL;
        last_key := keys[array_length(keys, 1)];
        BEGIN
            -- The whole batch in one request to the model server.
            results := ARRAY(SELECT coalesce(r, '[]'::jsonb) FROM @extschema@.belink_link(texts, ontology) AS r);
        EXCEPTION
            WHEN sqlstate '08006' OR sqlstate '08000' OR sqlstate '42704' THEN RAISE;  -- server down, ontology gone: stop, resume later
            WHEN others THEN
                -- Some row breaks the batch: annotate one by one, recording the rows that fail.
                results := ARRAY[]::jsonb[];
                FOR i IN 1 .. array_length(keys, 1) LOOP
                    BEGIN
                        single := coalesce(@extschema@.belink_link(texts[i], ontology), '[]'::jsonb);
                    EXCEPTION
                        WHEN sqlstate '08006' OR sqlstate '08000' OR sqlstate '42704' THEN RAISE;
                        WHEN others THEN
                            INSERT INTO belink.annotation_errors (job_id, row_key, error) VALUES (job, keys[i], SQLERRM)
                                ON CONFLICT ON CONSTRAINT annotation_errors_pkey
                                DO UPDATE SET error = excluded.error, failed_at = now();
                            single := NULL;
                    END;
                    results := results || single;
                END LOOP;
        END;
        -- Results, relational rows and progress commit together: exactly once per row.
        EXECUTE format('UPDATE %s AS t SET %I = r.e FROM unnest($1, $2) AS r(k, e) WHERE t.%I = r.k::%s AND r.e IS NOT NULL',
                       table_name, result_column, key_name, key_type)
            USING keys, results;
        -- Entities of an earlier annotation of these rows (their result was reset). Planned per
        -- batch: a plan kept for the session can filter the batch's keys over every entity of
        -- the job instead of looking them up (quadratic in the job's size).
        EXECUTE 'DELETE FROM belink.annotations a WHERE a.job_id = $1 AND a.row_key = ANY ($2)' USING job, keys;
        INSERT INTO belink.annotations
            SELECT job, r.k, (e->>'start')::integer, (e->>'end')::integer, e->>'mention',
                   e->>'concept_id', e->>'name', e->>'ontology', (e->>'score')::double precision, e->>'abbreviation_of'
            FROM unnest(keys, results) AS r(k, doc), jsonb_array_elements(r.doc) AS e
            WHERE r.doc IS NOT NULL
            ON CONFLICT DO NOTHING;
        processed := processed + (SELECT count(*) FROM unnest(results) AS x WHERE x IS NOT NULL);
        UPDATE belink.annotation_progress p SET
            done = p.done + (SELECT count(*) FROM unnest(results) AS x WHERE x IS NOT NULL),
            failed = (SELECT count(*) FROM belink.annotation_errors e WHERE e.job_id = p.job_id),
            updated_at = now()
        WHERE p.job_id = job;
        COMMIT;
        IF clock_timestamp() - last_notice > interval '5 seconds' THEN
            elapsed := extract(epoch FROM clock_timestamp() - started);
            RAISE NOTICE 'belink_annotate(%): % rows annotated (% rows/s)', label, processed, round((processed / elapsed)::numeric, 1);
            last_notice := clock_timestamp();
        END IF;
    END LOOP;
    UPDATE belink.annotation_progress p SET finished_at = now(), updated_at = now(), backend_pid = NULL WHERE p.job_id = job;
    COMMIT;
    RAISE NOTICE 'belink_annotate(%): done, % rows annotated in % s (see belink.annotation_status, belink.annotation_errors)',
        label, processed, round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
END
$procedure$;
COMMENT ON PROCEDURE belink_annotate(regclass, name, name, integer, text, name) IS
    'Annotates a table''s text column into a jsonb column in batches, committing per batch; resumable, failing rows recorded in belink.annotation_errors (retried by the next run), entities also in belink.annotations';
