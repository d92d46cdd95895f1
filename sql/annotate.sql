-- belink_annotate: annotating a table's text column in batches, resumably (included by src/api/annotate.rs).
CREATE PROCEDURE belink_annotate(
    table_name regclass, text_column name, result_column name,
    batch_size integer DEFAULT 500, ontology text DEFAULT NULL, key_column name DEFAULT NULL)
LANGUAGE plpgsql AS $procedure$
#variable_conflict use_variable
DECLARE
    job_name text := format('%s.%s', table_name, result_column);
    key_name name := key_column;
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
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'belink_annotate: batch_size must be at least 1';
    END IF;
    IF key_name IS NULL THEN
        SELECT a.attname INTO key_name
        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = table_name AND i.indisprimary AND i.indnatts = 1;
        IF key_name IS NULL THEN
            RAISE EXCEPTION 'belink_annotate: % has no one-column primary key', table_name
                USING HINT = 'Name a unique column with key_column => ''id''.';
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = table_name AND attname = result_column
                   AND atttypid = 'jsonb'::regtype AND NOT attisdropped) THEN
        RAISE EXCEPTION 'belink_annotate: % has no jsonb column %', table_name, result_column
            USING HINT = format('ALTER TABLE %s ADD COLUMN %I jsonb;', table_name, result_column);
    END IF;
    EXECUTE format('SELECT count(*), count(%I) FROM %s', result_column, table_name) INTO total_rows, done_rows;
    INSERT INTO belink.annotation_jobs AS j
        VALUES (job_name, table_name, text_column, result_column, key_name, ontology, total_rows, done_rows, done_rows,
                (SELECT count(*) FROM belink.annotation_errors e WHERE e.job = job_name), now(), now(), NULL)
        ON CONFLICT (job) DO UPDATE SET text_column = excluded.text_column, key_column = excluded.key_column,
            ontology = excluded.ontology, total = excluded.total, done = excluded.done,
            done_at_start = excluded.done_at_start,
            failed = (SELECT count(*) FROM belink.annotation_errors e WHERE e.job = j.job),
            started_at = now(), updated_at = now(), finished_at = NULL;
    COMMIT;

    LOOP
        -- The next rows without a result that have not failed before, locked for this batch.
        EXECUTE format(
            'SELECT array_agg(k ORDER BY k), array_agg(t ORDER BY k) FROM (
                 SELECT %1$I::text AS k, %2$I AS t FROM %3$s
                 WHERE %4$I IS NULL AND %1$I::text NOT IN (SELECT row_key FROM belink.annotation_errors WHERE job = $1)
                 ORDER BY %1$I LIMIT $2 FOR UPDATE SKIP LOCKED) AS batch',
            key_name, text_column, table_name, result_column)
            INTO keys, texts USING job_name, batch_size;
        EXIT WHEN keys IS NULL;
        BEGIN
            -- The whole batch in one request to the model server.
            results := ARRAY(SELECT coalesce(r, '[]'::jsonb) FROM @extschema@.belink_link(texts, ontology) AS r);
        EXCEPTION
            WHEN sqlstate '08006' OR sqlstate '08000' THEN RAISE;  -- the model server is down: stop, resume later
            WHEN others THEN
                -- Some row breaks the batch: annotate one by one, recording the rows that fail.
                results := ARRAY[]::jsonb[];
                FOR i IN 1 .. array_length(keys, 1) LOOP
                    BEGIN
                        single := coalesce(@extschema@.belink_link(texts[i], ontology), '[]'::jsonb);
                    EXCEPTION
                        WHEN sqlstate '08006' OR sqlstate '08000' THEN RAISE;
                        WHEN others THEN
                            INSERT INTO belink.annotation_errors (job, row_key, error) VALUES (job_name, keys[i], SQLERRM)
                                ON CONFLICT ON CONSTRAINT annotation_errors_pkey
                                DO UPDATE SET error = excluded.error, failed_at = now();
                            single := NULL;
                    END;
                    results := results || single;
                END LOOP;
        END;
        -- Results, relational rows and progress commit together: exactly once per row.
        EXECUTE format('UPDATE %s AS t SET %I = r.e FROM unnest($1, $2) AS r(k, e) WHERE t.%I::text = r.k AND r.e IS NOT NULL',
                       table_name, result_column, key_name)
            USING keys, results;
        DELETE FROM belink.annotations a WHERE a.job = job_name AND a.row_key = ANY (keys);
        INSERT INTO belink.annotations
            SELECT job_name, r.k, (e->>'start')::integer, (e->>'end')::integer, e->>'mention',
                   e->>'concept_id', e->>'name', e->>'ontology', (e->>'score')::double precision, e->>'abbreviation_of'
            FROM unnest(keys, results) AS r(k, doc), jsonb_array_elements(r.doc) AS e
            WHERE r.doc IS NOT NULL
            ON CONFLICT DO NOTHING;
        processed := processed + (SELECT count(*) FROM unnest(results) AS x WHERE x IS NOT NULL);
        UPDATE belink.annotation_jobs j SET
            done = j.done + (SELECT count(*) FROM unnest(results) AS x WHERE x IS NOT NULL),
            failed = (SELECT count(*) FROM belink.annotation_errors e WHERE e.job = j.job),
            updated_at = now()
        WHERE j.job = job_name;
        COMMIT;
        IF clock_timestamp() - last_notice > interval '5 seconds' THEN
            elapsed := extract(epoch FROM clock_timestamp() - started);
            RAISE NOTICE 'belink_annotate(%): % rows annotated (% rows/s)', job_name, processed, round((processed / elapsed)::numeric, 1);
            last_notice := clock_timestamp();
        END IF;
    END LOOP;
    UPDATE belink.annotation_jobs SET finished_at = now(), updated_at = now() WHERE annotation_jobs.job = job_name;
    COMMIT;
    RAISE NOTICE 'belink_annotate(%): done, % rows annotated in % s (see belink.annotation_status, belink.annotation_errors)',
        job_name, processed, round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
END
$procedure$;
COMMENT ON PROCEDURE belink_annotate(regclass, name, name, integer, text, name) IS
    'Annotates a table''s text column into a jsonb column in batches, committing per batch; resumable, failing rows recorded in belink.annotation_errors, entities also in belink.annotations';
