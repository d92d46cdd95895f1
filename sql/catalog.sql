-- BeLink catalog: ontologies, their concepts, and the names retrieval and detection search.
-- Ordinary tables in schema belink: users query, join and extend them.
-- Readable by everyone (ontologies are reference data); writing them takes explicit grants
-- (see README, "Privileges").

CREATE SCHEMA belink;
COMMENT ON SCHEMA belink IS 'BeLink catalog: ontologies, concepts, names';
GRANT USAGE ON SCHEMA belink TO PUBLIC;

-- Values of belink.ontologies.generation and embedding_generation. A sequence never hands a
-- value out twice, even to a transaction that rolls back: a cache can't mistake a rolled-back
-- change for a later one.
CREATE SEQUENCE belink.generations;

CREATE TABLE belink.ontologies (
    name           text PRIMARY KEY
                   CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    format         text NOT NULL,
    source         text NOT NULL,
    version        text,
    loaded_at      timestamptz NOT NULL DEFAULT now(),
    loaded_by      name NOT NULL DEFAULT current_user,
    -- The role whose members may change or drop the ontology (see belink.may_change_ontology):
    -- whoever loaded it first. It can be handed to another role the owner belongs to.
    owner          regrole NOT NULL DEFAULT current_user::regrole,
    concept_count  integer NOT NULL DEFAULT 0,
    name_count     integer NOT NULL DEFAULT 0,
    obsolete_count integer NOT NULL DEFAULT 0,
    -- Renewed (from belink.generations) by every change to the ontology's concepts or names;
    -- per-backend caches (the mention dictionary, retrieval results) compare it.
    generation     bigint NOT NULL DEFAULT nextval('belink.generations'),
    -- The sentence encoder the names' embeddings come from (belink_index), and its dimension.
    embedding_model text,
    embedding_dim   integer,
    -- That encoder gives texts that differ only in the case of ASCII letters the same vector
    -- (its tokenizer lowercases first): linking then reuses a name's stored vector for a
    -- mention written like the name in another case, instead of embedding the mention.
    embedding_ignores_case boolean,
    -- Renewed by belink_index whenever embeddings or their index change: per-backend caches
    -- of retrieval results (belink.retrieval_cache_size) compare it, with generation.
    embedding_generation bigint NOT NULL DEFAULT nextval('belink.generations'),
    -- How much each retrieval source's reciprocal rank counts in the fused score of this
    -- ontology's candidates: equal until belink_tune_fusion measures better ones on labelled
    -- mentions. Kept when the ontology is reloaded.
    fusion_exact   float8 NOT NULL DEFAULT 1 CHECK (fusion_exact BETWEEN 0 AND 1000),
    fusion_trigram float8 NOT NULL DEFAULT 1 CHECK (fusion_trigram BETWEEN 0 AND 1000),
    fusion_dense   float8 NOT NULL DEFAULT 1 CHECK (fusion_dense BETWEEN 0 AND 1000),
    -- What the last belink_tune_fusion measured (examples, acc@1 of each source alone, of equal
    -- and of the chosen weights), NULL when the weights were never tuned.
    fusion_tuning  jsonb,
    -- The encoder belink_adapt_encoder adapted to this ontology (a directory under the data
    -- directory), the generation of the names it learned from, when, and its final training
    -- loss (on the ontology's synonyms: it says nothing of accuracy). Kept when the ontology
    -- is reloaded; NULL: the configured encoder.
    adapted_encoder         text,
    adapted_from_generation bigint,
    adapted_at              timestamptz,
    adapted_loss            real,
    -- The concepts whose branches mention detection is restricted to (belink_set_detection_roots):
    -- HPO's "Phenotypic abnormality" leaves out its modes of inheritance, onsets and frequencies.
    -- Empty: every concept. Kept when the ontology is reloaded.
    detection_roots text[] NOT NULL DEFAULT '{}',
    CHECK (fusion_exact + fusion_trigram + fusion_dense > 0)
);
COMMENT ON TABLE belink.ontologies IS 'One row per loaded ontology';
COMMENT ON COLUMN belink.ontologies.source IS 'Server path the ontology was read from, or ''(text)'' for content given as text';
COMMENT ON COLUMN belink.ontologies.version IS 'Version or date found in the file header, if any';
COMMENT ON COLUMN belink.ontologies.concept_count IS 'Active (non-obsolete) concepts';
COMMENT ON COLUMN belink.ontologies.name_count IS 'Names of active concepts, user names included';
COMMENT ON COLUMN belink.ontologies.obsolete_count IS 'Obsolete concepts: kept in belink.concepts for look-up, never retrieved';

CREATE TABLE belink.concepts (
    ontology       text NOT NULL REFERENCES belink.ontologies (name) ON DELETE CASCADE,
    concept_id     text NOT NULL,
    name           text NOT NULL,
    definition     text,
    alt_ids        text[] NOT NULL DEFAULT '{}',
    parents        text[] NOT NULL DEFAULT '{}',
    xrefs          text[] NOT NULL DEFAULT '{}',
    semantic_types text[] NOT NULL DEFAULT '{}',
    obsolete       boolean NOT NULL DEFAULT false,
    replaced_by    text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (ontology, concept_id)
);
COMMENT ON TABLE belink.concepts IS 'Concepts of every loaded ontology, obsolete ones included (flagged)';
CREATE INDEX concepts_alt_ids ON belink.concepts USING gin (alt_ids);

CREATE TABLE belink.names (
    name_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ontology   text NOT NULL,
    concept_id text NOT NULL,
    name       text NOT NULL,
    normalized text NOT NULL,
    kind       text NOT NULL
               CHECK (kind IN ('preferred', 'exact', 'abbreviation', 'related', 'narrow', 'broad', 'user')),
    -- Filled by the sentence encoder (belink_index); the dimension depends on the model.
    embedding  vector,
    FOREIGN KEY (ontology, concept_id) REFERENCES belink.concepts (ontology, concept_id) ON DELETE CASCADE
);
COMMENT ON TABLE belink.names IS 'Names (preferred names and synonyms) of active concepts; kind user = added with belink_add_names';
COMMENT ON COLUMN belink.names.normalized IS 'belink_fold(name): what exact and trigram matching compare';
CREATE INDEX names_normalized ON belink.names (ontology, normalized);
CREATE INDEX names_normalized_trgm ON belink.names USING gin (normalized gin_trgm_ops);
CREATE INDEX names_concept ON belink.names (ontology, concept_id);

-- Any change to names (a load, belink_add_names, belink_remove_names, a DELETE by hand) renews
-- the ontology's generation, so sessions rebuild their mention dictionaries and retrieval
-- caches, and keeps name_count true, counted from the rows the statement changed. Storing
-- embeddings (belink_index, batch by batch) changes no name and fires nothing.
CREATE FUNCTION belink.names_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE belink.ontologies o SET generation = nextval('belink.generations'), name_count = o.name_count + c.n
        FROM (SELECT ontology, count(*) AS n FROM new_names GROUP BY ontology) c WHERE o.name = c.ontology;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE belink.ontologies o SET generation = nextval('belink.generations'), name_count = o.name_count - c.n
        FROM (SELECT ontology, count(*) AS n FROM old_names GROUP BY ontology) c WHERE o.name = c.ontology;
    ELSE  -- a name edited in place, one row at a time (see names_edited)
        UPDATE belink.ontologies o SET generation = nextval('belink.generations'),
            name_count = o.name_count + (o.name = NEW.ontology)::integer - (o.name = OLD.ontology)::integer
        WHERE o.name IN (OLD.ontology, NEW.ontology);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER names_inserted AFTER INSERT ON belink.names REFERENCING NEW TABLE AS new_names
    FOR EACH STATEMENT EXECUTE FUNCTION belink.names_changed();
CREATE TRIGGER names_deleted AFTER DELETE ON belink.names REFERENCING OLD TABLE AS old_names
    FOR EACH STATEMENT EXECUTE FUNCTION belink.names_changed();
CREATE TRIGGER names_edited AFTER UPDATE OF ontology, concept_id, name, normalized, kind ON belink.names
    FOR EACH ROW EXECUTE FUNCTION belink.names_changed();

-- Progress of belink_index, committed per batch so that other sessions see it.
-- Each ontology's span scorer (belink_set_span_scorer): the learned model that chooses, with
-- belink.detection = scored, which of the mention dictionary's detections and of the spans
-- around them are mentions. Kept when the ontology is reloaded; version renews with every
-- change, so sessions reload it.
CREATE TABLE belink.span_scorers (
    ontology   text PRIMARY KEY REFERENCES belink.ontologies (name) ON DELETE CASCADE,
    scorer     text NOT NULL,
    source     text NOT NULL,
    version    bigint NOT NULL DEFAULT nextval('belink.generations'),
    set_at     timestamptz NOT NULL DEFAULT now(),
    set_by     name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE belink.span_scorers IS 'Span scorers of mention detection (belink_set_span_scorer), one per ontology at most';
COMMENT ON COLUMN belink.span_scorers.scorer IS 'The scorer file''s text: a header, the threshold, then "index weight" lines';
COMMENT ON COLUMN belink.span_scorers.source IS 'Server path the scorer was read from, or ''(text)''';

CREATE TABLE belink.index_progress (
    ontology      text PRIMARY KEY REFERENCES belink.ontologies (name) ON DELETE CASCADE,
    total         bigint NOT NULL,
    done          bigint NOT NULL,
    done_at_start bigint NOT NULL,
    started_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    -- The texts the call had to embed when it started (names written alike share one) and
    -- those embedded since: the ETA counts texts, as a batch stores the vectors of many names
    -- written alike ahead of their turn (names/s is 5 to 8 times texts/s early in a UMLS-size run).
    texts_at_start bigint NOT NULL DEFAULT 0,
    texts_done     bigint NOT NULL DEFAULT 0
);
CREATE VIEW belink.index_status AS
SELECT ontology, total, done,
       round(100.0 * done / nullif(total, 0), 1) AS percent,
       round(((done - done_at_start) / nullif(extract(epoch FROM updated_at - started_at), 0))::numeric, 1) AS names_per_second,
       round((texts_done / nullif(extract(epoch FROM updated_at - started_at), 0))::numeric, 1) AS texts_per_second,
       CASE WHEN finished_at IS NULL AND texts_done > 0
            THEN greatest(texts_at_start - texts_done, 0) * (updated_at - started_at) / texts_done END AS eta,
       started_at, updated_at, finished_at
FROM belink.index_progress;
COMMENT ON VIEW belink.index_status IS 'Progress of belink_index per ontology: names done/total, names and texts a second, ETA';

-- belink_annotate: one row per job (a table's text column annotated into a jsonb column),
-- the rows that failed, and the entities in relational form for BI tools. A job is keyed by
-- the table's OID and the result column's number, so it survives renames and a search_path
-- never mixes two tables up. Jobs belong to the role that started them (and its members);
-- their rows are readable by it and by whoever may read the annotated table (row-level
-- security below).
CREATE TABLE belink.annotation_jobs (
    job_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_oid     oid NOT NULL,
    result_attnum smallint NOT NULL,
    text_attnum   smallint NOT NULL,
    key_attnum    smallint NOT NULL,
    owner         regrole NOT NULL DEFAULT current_user::regrole,
    ontology      text,
    UNIQUE (table_oid, result_attnum)
);
-- Progress, updated with every batch. Apart from the jobs: each entity row's foreign key is
-- checked against its job, and a job row updated per batch would leave a growing chain of
-- dead versions for every check to walk (a million-row job slowed down 16-fold).
CREATE TABLE belink.annotation_progress (
    job_id        bigint PRIMARY KEY REFERENCES belink.annotation_jobs ON DELETE CASCADE,
    total         bigint NOT NULL,
    done          bigint NOT NULL,
    done_at_start bigint NOT NULL,
    failed        bigint NOT NULL DEFAULT 0,
    -- The backend running the job, while it runs (an ETA only means something then).
    backend_pid   integer,
    started_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    finished_at   timestamptz
);
CREATE VIEW belink.annotation_status WITH (security_invoker = true) AS
SELECT j.job_id,
       CASE WHEN c.oid IS NULL THEN format('(dropped table %s)', j.table_oid)
            ELSE format('%s.%I', c.oid::regclass, a.attname) END AS job,
       c.oid::regclass AS table_name, a.attname AS result_column, j.owner, j.ontology,
       p.total, p.done, p.failed,
       round(100.0 * p.done / nullif(p.total, 0), 1) AS percent,
       round(((p.done - p.done_at_start) / nullif(extract(epoch FROM p.updated_at - p.started_at), 0))::numeric, 1) AS rows_per_second,
       CASE WHEN p.finished_at IS NULL AND p.done > p.done_at_start AND running.pid IS NOT NULL
            THEN (p.total - p.done - p.failed) * (p.updated_at - p.started_at) / (p.done - p.done_at_start) END AS eta,
       running.pid IS NOT NULL AS running,
       p.started_at, p.updated_at, p.finished_at
FROM belink.annotation_jobs j
JOIN belink.annotation_progress p USING (job_id)
LEFT JOIN pg_class c ON c.oid = j.table_oid
LEFT JOIN pg_attribute a ON a.attrelid = j.table_oid AND a.attnum = j.result_attnum
LEFT JOIN LATERAL (SELECT s.pid FROM pg_stat_activity s
                   WHERE s.pid = p.backend_pid AND s.backend_start <= p.started_at AND p.finished_at IS NULL) running ON true;
COMMENT ON VIEW belink.annotation_status IS 'Progress of belink_annotate jobs: done/total, failures, rate, and an ETA while the job runs';

CREATE TABLE belink.annotation_errors (
    job_id    bigint NOT NULL REFERENCES belink.annotation_jobs ON DELETE CASCADE,
    row_key   text NOT NULL,
    error     text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, row_key)
);
COMMENT ON TABLE belink.annotation_errors IS 'Rows the last run of belink_annotate could not annotate, with the reason; the next run retries them';

CREATE TABLE belink.annotations (
    job_id          bigint NOT NULL REFERENCES belink.annotation_jobs ON DELETE CASCADE,
    row_key         text NOT NULL,
    start_char      integer NOT NULL,
    end_char        integer NOT NULL,
    mention         text NOT NULL,
    concept_id      text NOT NULL,
    name            text,
    ontology        text NOT NULL,
    score           double precision,
    abbreviation_of text,
    PRIMARY KEY (job_id, row_key, start_char)
);
COMMENT ON TABLE belink.annotations IS 'Entities found by belink_annotate, one row each (doc key, span, concept): for joins and BI tools';

-- Row-level security: a job and its rows (progress, errors, entities) are visible to the job's owner (and members of that
-- role) and to whoever may SELECT the annotated table; only the owner may change them.
ALTER TABLE belink.annotation_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE belink.annotation_progress ENABLE ROW LEVEL SECURITY;
ALTER TABLE belink.annotation_errors ENABLE ROW LEVEL SECURITY;
ALTER TABLE belink.annotations ENABLE ROW LEVEL SECURITY;
CREATE POLICY readers ON belink.annotation_jobs FOR SELECT
    USING (coalesce(pg_has_role(owner, 'MEMBER'), false) OR coalesce(has_table_privilege(table_oid, 'SELECT'), false));
CREATE POLICY owners ON belink.annotation_jobs FOR ALL
    USING (coalesce(pg_has_role(owner, 'MEMBER'), false)) WITH CHECK (coalesce(pg_has_role(owner, 'MEMBER'), false));
CREATE POLICY readers ON belink.annotation_progress FOR SELECT
    USING (EXISTS (SELECT 1 FROM belink.annotation_jobs j WHERE j.job_id = annotation_progress.job_id));
CREATE POLICY owners ON belink.annotation_progress FOR ALL
    USING (EXISTS (SELECT 1 FROM belink.annotation_jobs j WHERE j.job_id = annotation_progress.job_id AND pg_has_role(j.owner, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT 1 FROM belink.annotation_jobs j WHERE j.job_id = annotation_progress.job_id AND pg_has_role(j.owner, 'MEMBER')));
CREATE POLICY readers ON belink.annotation_errors FOR SELECT
    USING (EXISTS (SELECT 1 FROM belink.annotation_jobs j WHERE j.job_id = annotation_errors.job_id));
CREATE POLICY owners ON belink.annotation_errors FOR ALL
    USING (EXISTS (SELECT 1 FROM belink.annotation_jobs j WHERE j.job_id = annotation_errors.job_id AND pg_has_role(j.owner, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT 1 FROM belink.annotation_jobs j WHERE j.job_id = annotation_errors.job_id AND pg_has_role(j.owner, 'MEMBER')));
CREATE POLICY readers ON belink.annotations FOR SELECT
    USING (EXISTS (SELECT 1 FROM belink.annotation_jobs j WHERE j.job_id = annotations.job_id));
CREATE POLICY owners ON belink.annotations FOR ALL
    USING (EXISTS (SELECT 1 FROM belink.annotation_jobs j WHERE j.job_id = annotations.job_id AND pg_has_role(j.owner, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT 1 FROM belink.annotation_jobs j WHERE j.job_id = annotations.job_id AND pg_has_role(j.owner, 'MEMBER')));

-- Ontologies belong to roles, as tables do: everyone reads them, and only members of an
-- ontology's owner role (superusers are members of every role) change it, its concepts, its
-- names and embeddings, its fusion weights, or drop it. This function is the one place that
-- decides; row-level security enforces it on every write (the functions check it first for a
-- clear error). `role` is the role acting: current_user, or session_user in the two SECURITY
-- DEFINER functions below (whose current_user is their owner; a session may always act as
-- its session user).
CREATE FUNCTION belink.may_change_ontology(ontology text, role name) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT pg_has_role(role, o.owner, 'MEMBER') FROM belink.ontologies o WHERE o.name = ontology), false)
$$;
ALTER TABLE belink.ontologies ENABLE ROW LEVEL SECURITY;
CREATE POLICY readers ON belink.ontologies FOR SELECT USING (true);
CREATE POLICY loaders ON belink.ontologies FOR INSERT WITH CHECK (pg_has_role(owner, 'MEMBER'));
CREATE POLICY owners ON belink.ontologies FOR UPDATE
    USING (pg_has_role(owner, 'MEMBER')) WITH CHECK (pg_has_role(owner, 'MEMBER'));
CREATE POLICY droppers ON belink.ontologies FOR DELETE USING (pg_has_role(owner, 'MEMBER'));
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['concepts', 'names', 'index_progress', 'span_scorers'] LOOP
        EXECUTE format('ALTER TABLE belink.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY readers ON belink.%I FOR SELECT USING (true)', t);
        EXECUTE format('CREATE POLICY owners ON belink.%I FOR ALL
                            USING (belink.may_change_ontology(ontology, current_user))
                            WITH CHECK (belink.may_change_ontology(ontology, current_user))', t);
    END LOOP;
END $$;

-- Each ontology's HNSW index on belink.names. Creating or dropping an index takes the
-- table's owner, so these two functions run as the extension's owner (SECURITY DEFINER, with
-- a fixed search_path), and do only this, for a role that may change the ontology.
-- 96 bits of md5 in the name: nobody can craft an ontology name whose index name is another
-- ontology's (and so make these functions create or drop the other's index).
CREATE FUNCTION belink.embedding_index_name(ontology text) RETURNS name
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('names_embedding_' || left(ontology, 20) || '_' || left(md5(ontology), 24))::name
$$;
-- The HNSW graph's parameters, chosen by measuring recall against exact search at 41k, 76k
-- and 484k names: the same choice at each size, so it takes no size (scripts/hnsw-recall.sql;
-- BENCHMARKS.md, "HNSW against exact search, by ontology size").
CREATE FUNCTION belink.hnsw_build_parameters(OUT m integer, OUT ef_construction integer)
LANGUAGE sql IMMUTABLE AS $$
    SELECT 16, 200
$$;
CREATE FUNCTION belink.create_embedding_index(ontology text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    index_name name := belink.embedding_index_name(ontology);
    dim integer := (SELECT o.embedding_dim FROM belink.ontologies o WHERE o.name = ontology);
    vector_schema name := (SELECT e.extnamespace::regnamespace::name FROM pg_extension e WHERE e.extname = 'vector');
    m integer;
    ef_construction integer;
BEGIN
    IF NOT belink.may_change_ontology(ontology, session_user) THEN
        RAISE EXCEPTION 'permission denied to index ontology "%"', ontology USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF dim IS NULL THEN
        RAISE EXCEPTION 'ontology "%" has no embeddings yet: run belink_index first', ontology
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- HNSW builds much faster when its graph fits in maintenance_work_mem (about 1.6 kB a
    -- vector of 384 at m = 16): at least 1 GB, more when the session asks for more.
    IF pg_size_bytes(current_setting('maintenance_work_mem')) < pg_size_bytes('1GB') THEN
        PERFORM set_config('maintenance_work_mem', '1GB', true);
    END IF;
    SELECT p.m, p.ef_construction INTO m, ef_construction FROM belink.hnsw_build_parameters() p;
    -- Sessions indexing one ontology together each end here: the first builds the graph, the
    -- others wait for it and find it built (two builds at once would each take the memory and
    -- hours of a large graph, and the second would fail on the name).
    PERFORM pg_advisory_xact_lock(hashtextextended('belink.create_embedding_index ' || ontology, 0));
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON belink.names USING hnsw
                        ((embedding::%I.vector(%s)) %I.vector_cosine_ops) WITH (m = %s, ef_construction = %s)
                        WHERE ontology = %L',
                   index_name, vector_schema, dim, vector_schema, m, ef_construction, ontology);
    RETURN format('belink.%I', index_name);
END $$;
-- Returns whether there was an index to drop.
CREATE FUNCTION belink.drop_embedding_index(ontology text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    index_name text := format('belink.%I', belink.embedding_index_name(ontology));
BEGIN
    -- The index of an ontology dropped (in this transaction or before) serves nobody.
    IF EXISTS (SELECT 1 FROM belink.ontologies o WHERE o.name = ontology)
       AND NOT belink.may_change_ontology(ontology, session_user) THEN
        RAISE EXCEPTION 'permission denied to drop the index of ontology "%"', ontology
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF to_regclass(index_name) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP INDEX %s', index_name);
    RETURN true;
END $$;

-- Ontologies are reference data: readable by everyone. Annotation jobs and results hold
-- excerpts of users' documents: readable only by the roles granted them (see SECURITY.md).
GRANT SELECT ON belink.ontologies, belink.concepts, belink.names, belink.index_progress, belink.index_status,
    belink.span_scorers TO PUBLIC;
