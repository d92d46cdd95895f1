-- belink_annotate: jobs keyed by table and column, arguments checked first, failed rows
-- retried, and annotations visible only to the job's owner and the table's readers.
SET belink.retrieval = 'lexical';
SET client_min_messages = warning;  -- the NOTICEs report timings
CREATE SCHEMA s1;
CREATE SCHEMA s2;
CREATE TABLE s1.docs (id integer PRIMARY KEY, body text, entities jsonb);
CREATE TABLE s2.docs (id integer PRIMARY KEY, body text, entities jsonb);
INSERT INTO s1.docs VALUES (1, 'Hypertension and seizures.', NULL), (2, 'Colon cancer.', NULL);
INSERT INTO s2.docs VALUES (1, 'Febrile seizure.', NULL), (2, 'Hypertension, described at length.', NULL);

-- Two tables called docs are two jobs, whatever the search_path; a failing row is recorded.
SET search_path = s1, public;
CALL belink_annotate('docs', 'body', 'entities', ontology => 'mini');
SET search_path = s2, public;
SET belink.max_document_chars = 20;
CALL belink_annotate('docs', 'body', 'entities', ontology => 'mini');
RESET belink.max_document_chars;
RESET search_path;
SELECT job, total, done, failed, percent, eta, running, finished_at IS NOT NULL AS finished FROM belink.annotation_status ORDER BY job;
SELECT s.job, e.row_key, e.error FROM belink.annotation_errors e JOIN belink.annotation_status s USING (job_id);

-- The same table named another way resumes its job (no duplicates); a new run retries the
-- failed row.
CALL belink_annotate('s1.docs', 'body', 'entities', ontology => 'mini');
CALL belink_annotate('s2.docs', 'body', 'entities', ontology => 'mini');
SELECT job, total, done, failed FROM belink.annotation_status ORDER BY job;
SELECT count(*) FROM belink.annotation_errors;
SELECT s.job, a.row_key, a.start_char, a.mention, a.concept_id
FROM belink.annotations a JOIN belink.annotation_status s USING (job_id) ORDER BY 1, 2, 3;

-- A renamed table keeps its job.
ALTER TABLE s1.docs RENAME TO notes;
SELECT job, table_name, result_column FROM belink.annotation_status ORDER BY job;

-- Bad arguments are refused before a job exists.
CREATE TABLE s1.dup (k integer, body text, entities jsonb);
CREATE TABLE s1.no_result (id integer PRIMARY KEY, body text);
SELECT error_of($$CALL belink_annotate('s1.notes', 'body', 'entities', ontology => 'nope')$$);
SELECT error_of($$CALL belink_annotate('s1.notes', 'nobody', 'entities')$$);
SELECT error_of($$CALL belink_annotate('s1.notes', 'id', 'entities')$$);
SELECT error_of($$CALL belink_annotate('s1.no_result', 'body', 'entities')$$);
SELECT error_of($$CALL belink_annotate('s1.dup', 'body', 'entities')$$);
SELECT error_of($$CALL belink_annotate('s1.dup', 'body', 'entities', key_column => 'k')$$);
SELECT error_of($$CALL belink_annotate('s1.notes', 'body', 'entities', batch_size => 0)$$);
SELECT count(*) FROM belink.annotation_jobs;

-- Two roles with the grants of SECURITY.md: each sees the jobs it owns and those of tables it
-- may read; only the owner changes them.
CREATE ROLE belink_alice;
CREATE ROLE belink_bob;
GRANT USAGE, CREATE ON SCHEMA s1 TO belink_alice;
GRANT USAGE ON SCHEMA s1 TO belink_bob;
GRANT SELECT, INSERT, UPDATE, DELETE ON belink.annotation_jobs, belink.annotation_progress, belink.annotation_errors, belink.annotations
    TO belink_alice, belink_bob;
GRANT SELECT ON belink.annotation_status TO belink_alice, belink_bob;
SET ROLE belink_alice;
CREATE TABLE s1.alice_notes (id integer PRIMARY KEY, body text, entities jsonb);
INSERT INTO s1.alice_notes VALUES (1, 'Seizures, then high blood pressure.', NULL);
CALL belink_annotate('s1.alice_notes', 'body', 'entities', ontology => 'mini');
SELECT job, owner FROM belink.annotation_status;
SELECT row_key, mention FROM belink.annotations ORDER BY row_key, start_char;
RESET ROLE;
SET ROLE belink_bob;
SELECT count(*) FROM belink.annotation_status;
SELECT count(*) FROM belink.annotations;
WITH deleted AS (DELETE FROM belink.annotations RETURNING 1) SELECT count(*) AS deleted FROM deleted;
RESET ROLE;
SET ROLE belink_alice;
GRANT SELECT, UPDATE ON s1.alice_notes TO belink_bob;
RESET ROLE;
SET ROLE belink_bob;
SELECT job, owner FROM belink.annotation_status;
SELECT count(*) FROM belink.annotations;
WITH deleted AS (DELETE FROM belink.annotations RETURNING 1) SELECT count(*) AS deleted FROM deleted;
WITH changed AS (UPDATE belink.annotation_progress SET done = 0 RETURNING 1) SELECT count(*) AS changed FROM changed;
SELECT error_of($$CALL belink_annotate('s1.alice_notes', 'body', 'entities', ontology => 'mini')$$);
RESET ROLE;
SELECT count(*) FROM belink.annotations a JOIN belink.annotation_status s USING (job_id) WHERE s.job = 's1.alice_notes.entities';
