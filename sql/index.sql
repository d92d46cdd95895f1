-- belink_index: embedding every name of an ontology and building its HNSW index, in
-- committed batches (included by src/api/embed.rs).
CREATE PROCEDURE belink_index(ontology text, batch_size integer DEFAULT 1024)
LANGUAGE plpgsql AS $procedure$
DECLARE
    remaining bigint;
    embedded bigint;
    texts bigint;
    after_name_id bigint := 0;
    last_name_id bigint;
    started timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
    progress record;
BEGIN
    -- A NULL batch would end the loop at once, as if every name were embedded.
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be positive, not %', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    remaining := @extschema@.belink_index_prepare(ontology);
    COMMIT;
    -- The texts those names are written as, which the time left is reckoned in: AlikeTexts'
    -- key (crates/belink-core/src/retrieval/dense.rs), ASCII case set aside for an encoder
    -- that ignores it unless the name has '[' or '<'. Counted after prepare's lock on the
    -- ontology is released: it takes about a minute at UMLS size.
    UPDATE belink.index_progress p SET texts_at_start = (
        SELECT count(DISTINCT CASE WHEN o.embedding_ignores_case AND strpos(n.name, '[') = 0 AND strpos(n.name, '<') = 0
                                   THEN translate(n.name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')
                                   ELSE n.name END)
        FROM belink.names n JOIN belink.ontologies o ON o.name = n.ontology
        WHERE n.ontology = belink_index.ontology AND n.embedding IS NULL)
    WHERE p.ontology = belink_index.ontology
    RETURNING p.texts_at_start INTO texts;
    COMMIT;
    RAISE NOTICE 'belink_index(%): % names to embed, written as % texts', ontology, remaining, texts;
    LOOP
        last_name_id := @extschema@.belink_index_batch(ontology, batch_size, after_name_id);
        IF last_name_id IS NULL THEN
            EXIT WHEN after_name_id = 0;
            -- One more pass from the start, for names another session held while we passed.
            after_name_id := 0;
            CONTINUE;
        END IF;
        after_name_id := last_name_id;
        COMMIT;
        IF clock_timestamp() - last_notice > interval '5 seconds' THEN
            SELECT s.done, s.total, s.texts_per_second, coalesce(round(extract(epoch FROM s.eta))::text, '?') AS seconds_left
            INTO progress FROM belink.index_status s WHERE s.ontology = belink_index.ontology;
            RAISE NOTICE 'belink_index(%): % of % names embedded (% texts/s, about % s left)',
                ontology, progress.done, progress.total, progress.texts_per_second, progress.seconds_left;
            last_notice := clock_timestamp();
        END IF;
    END LOOP;
    SELECT done - done_at_start INTO embedded FROM belink.index_progress p WHERE p.ontology = belink_index.ontology;
    RAISE NOTICE 'belink_index(%): % names embedded in % s; building the HNSW index', ontology, embedded,
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
    PERFORM @extschema@.belink_index_finish(ontology);
    COMMIT;
END
$procedure$;
COMMENT ON PROCEDURE belink_index(text, integer) IS
    'Embeds every name of an ontology through the model server (committing per batch: interrupt and call again to resume) and builds its HNSW index';
