-- belink_adapt_encoder: the encoder adapted to an ontology's synonyms (included by
-- src/api/adapt.rs). Each step commits, so progress is visible to every session, a cancel
-- loses at most a slice, and calling again resumes.

-- One row per ontology: its last or current adaptation (the progress view).
CREATE TABLE belink.encoder_adaptations (
    ontology    text PRIMARY KEY REFERENCES belink.ontologies (name) ON DELETE CASCADE,
    -- training -> embedding (the names, with the adapted encoder, into adapted_embeddings)
    -- -> done (the ontology switched to it)
    state       text NOT NULL CHECK (state IN ('training', 'embedding', 'done')),
    work_dir    text NOT NULL,
    base_model  text NOT NULL,
    -- epochs, seed, and the ontology generation whose names it learns from
    settings    jsonb NOT NULL,
    names       bigint NOT NULL,
    step        bigint NOT NULL DEFAULT 0,
    steps_total bigint,
    loss        real,
    names_per_s real,
    eta_s       real,
    -- the step the model server's run started from (0, or a checkpoint's after an interruption)
    resumed_from bigint,
    embedded    bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
COMMENT ON TABLE belink.encoder_adaptations IS
    'Progress of belink_adapt_encoder per ontology: state, training step, loss, names/s, ETA, names re-embedded';

-- The adapted encoder's vectors of an ontology's names, until the switch takes them.
CREATE TABLE belink.adapted_embeddings (
    name_id   bigint PRIMARY KEY REFERENCES belink.names (name_id) ON DELETE CASCADE,
    ontology  text NOT NULL,
    embedding real[] NOT NULL
);
CREATE INDEX adapted_embeddings_ontology ON belink.adapted_embeddings (ontology);

-- Only a role that may change the ontology adapts its encoder (see belink.may_change_ontology).
ALTER TABLE belink.encoder_adaptations ENABLE ROW LEVEL SECURITY;
ALTER TABLE belink.adapted_embeddings ENABLE ROW LEVEL SECURITY;
CREATE POLICY readers ON belink.encoder_adaptations FOR SELECT USING (true);
CREATE POLICY owners ON belink.encoder_adaptations FOR ALL
    USING (belink.may_change_ontology(ontology, current_user)) WITH CHECK (belink.may_change_ontology(ontology, current_user));
CREATE POLICY readers ON belink.adapted_embeddings FOR SELECT USING (true);
-- Progress, like belink_index's, is readable by everyone (dropping an ontology reads it to
-- find the adapted encoder's files).
GRANT SELECT ON belink.encoder_adaptations TO PUBLIC;
CREATE POLICY owners ON belink.adapted_embeddings FOR ALL
    USING (belink.may_change_ontology(ontology, current_user)) WITH CHECK (belink.may_change_ontology(ontology, current_user));

CREATE PROCEDURE belink_adapt_encoder(
    ontology text,
    max_minutes double precision DEFAULT 60,
    epochs integer DEFAULT 1,
    seed bigint DEFAULT 42,
    checkpoint_seconds integer DEFAULT 60,
    batch_size integer DEFAULT 1024
)
LANGUAGE plpgsql AS $procedure$
DECLARE
    state text;
    progress jsonb;
    started timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
    after_name_id bigint := 0;
    last_name_id bigint;
    embedded bigint;
    names bigint;
BEGIN
    IF max_minutes IS NULL OR max_minutes <= 0 THEN
        RAISE EXCEPTION 'max_minutes must be positive, not %', coalesce(max_minutes::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A NULL batch would end the embedding at once and switch on names never embedded.
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be positive, not %', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    state := @extschema@.belink_adapt_prepare(ontology, epochs, seed);
    COMMIT;
    IF state = 'training' THEN
        LOOP
            progress := @extschema@.belink_adapt_train(ontology, checkpoint_seconds);
            COMMIT;
            EXIT WHEN (progress->>'done')::boolean;
            IF clock_timestamp() - last_notice > interval '30 seconds' THEN
                RAISE NOTICE 'belink_adapt_encoder(%): step % of %, loss %, % names/s, about % s left',
                    ontology, progress->>'step', progress->>'steps_total',
                    round((progress->>'loss')::numeric, 4), round((progress->>'names_per_s')::numeric, 1),
                    round((progress->>'eta_s')::numeric);
                last_notice := clock_timestamp();
            END IF;
            IF clock_timestamp() - started > make_interval(secs => max_minutes * 60) THEN
                RAISE NOTICE 'belink_adapt_encoder(%): stopped after % minutes at step % of %; CALL it again to resume',
                    ontology, max_minutes, progress->>'step', progress->>'steps_total';
                RETURN;
            END IF;
        END LOOP;
        RAISE NOTICE 'belink_adapt_encoder(%): trained in % s; embedding the names with the adapted encoder',
            ontology, round(extract(epoch FROM clock_timestamp() - started)::numeric);
    END IF;
    -- max_minutes bounds the whole call: the names staged so far stay for the next call.
    LOOP
        last_name_id := @extschema@.belink_adapt_embed_batch(ontology, batch_size, after_name_id);
        EXIT WHEN last_name_id IS NULL;
        after_name_id := last_name_id;
        COMMIT;
        SELECT a.embedded, a.names INTO embedded, names
        FROM belink.encoder_adaptations a WHERE a.ontology = belink_adapt_encoder.ontology;
        IF clock_timestamp() - started > make_interval(secs => max_minutes * 60) THEN
            RAISE NOTICE 'belink_adapt_encoder(%): stopped after % minutes with % of % names embedded; CALL it again to resume',
                ontology, max_minutes, embedded, names;
            RETURN;
        END IF;
        IF clock_timestamp() - last_notice > interval '30 seconds' THEN
            RAISE NOTICE 'belink_adapt_encoder(%): % of % names embedded with the adapted encoder',
                ontology, embedded, names;
            last_notice := clock_timestamp();
        END IF;
    END LOOP;
    SELECT a.embedded, a.names INTO embedded, names
    FROM belink.encoder_adaptations a WHERE a.ontology = belink_adapt_encoder.ontology;
    RAISE NOTICE 'belink_adapt_encoder(%): % of % names embedded; switching the ontology to the adapted encoder',
        ontology, embedded, names;
    PERFORM @extschema@.belink_adapt_switch(ontology);
    COMMIT;
END
$procedure$;
COMMENT ON PROCEDURE belink_adapt_encoder(text, double precision, integer, bigint, integer, integer) IS
    'Adapts the sentence encoder to the ontology''s synonyms in the model server (progress: belink.encoder_adaptations; cancel and call again to resume), re-embeds its names, then switches the ontology to it in one transaction';
