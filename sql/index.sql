-- belink_index: embedding every name of an ontology and building its HNSW index, in
-- committed batches (included by src/api/embed.rs).
CREATE PROCEDURE belink_index(ontology text, batch_size integer DEFAULT 1024)
LANGUAGE plpgsql AS $procedure$
DECLARE
    remaining bigint;
    embedded bigint := 0;
    texts bigint;
    texts_embedded bigint;
    last_embedded bigint := 0;
    next_embedded bigint;
    started timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
    elapsed double precision;
BEGIN
    remaining := @extschema@.belink_index_prepare(ontology);
    COMMIT;
    SELECT texts_at_start INTO texts FROM belink.index_progress p WHERE p.ontology = belink_index.ontology;
    RAISE NOTICE 'belink_index(%): % names to embed, written as % texts', ontology, remaining, texts;
    LOOP
        next_embedded := @extschema@.belink_index_batch(ontology, batch_size, last_embedded);
        IF next_embedded IS NULL THEN
            EXIT WHEN last_embedded = 0;
            -- One more pass from the start, for names another session held while we passed.
            last_embedded := 0;
            CONTINUE;
        END IF;
        last_embedded := next_embedded;
        COMMIT;
        IF clock_timestamp() - last_notice > interval '5 seconds' THEN
            SELECT done - done_at_start, texts_done INTO embedded, texts_embedded
            FROM belink.index_progress p WHERE p.ontology = belink_index.ontology;
            elapsed := extract(epoch FROM clock_timestamp() - started);
            -- Texts, not names, measure the time left: names written alike come for free.
            RAISE NOTICE 'belink_index(%): % of % names embedded (% texts/s, about % s left)',
                ontology, embedded, remaining, round((texts_embedded / elapsed)::numeric, 1),
                round((greatest(texts - texts_embedded, 0) / greatest(texts_embedded / elapsed, 1e-9))::numeric);
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
