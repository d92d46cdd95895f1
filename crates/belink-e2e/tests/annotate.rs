//! belink_annotate through a real cluster: interrupted by a cancel and by a killed model
//! server, resumed, every row annotated exactly once; failing rows recorded, not fatal.

use std::process::Command;
use std::thread;
use std::time::Duration;

use belink_e2e::{cluster, status, wait_until, workspace};
use postgres::Client;

const ROWS: i64 = 6000;

/// A table of clinical sentences, and HPO (the fixture excerpt) indexed for hybrid linking.
fn prepare(client: &mut Client, table: &str) {
    let hpo = std::fs::read_to_string(workspace().join("tests/fixtures/hp_excerpt.obo")).unwrap();
    client.query_one("SELECT concepts FROM belink_load_ontology_text('hpo_annotate', $1)", &[&hpo]).unwrap();
    client.batch_execute("CALL belink_index('hpo_annotate')").unwrap();
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id bigint PRIMARY KEY, body text, entities jsonb);
             INSERT INTO {table}
             SELECT g, format('Patient %s had seizures and arterial hypertension; retinal haemorrhages in %s.', g, g), NULL
             FROM generate_series(1, {ROWS}) g;"
        ))
        .unwrap();
}

/// Every row annotated, each exactly once in the relational results.
fn assert_exactly_once(client: &mut Client, table: &str) {
    let missing: i64 =
        client.query_one(&format!("SELECT count(*) FROM {table} WHERE entities IS NULL"), &[]).unwrap().get(0);
    assert_eq!(missing, 0);
    let job = format!("{table}.entities");
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT row_key) FROM belink.annotations a
             JOIN belink.annotation_status s USING (job_id) WHERE s.job = $1",
            &[&job],
        )
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (3 * ROWS, ROWS), "three entities per row, no row twice");
    let per_row: i64 = client
        .query_one(&format!("SELECT sum(jsonb_array_length(entities)) FROM {table}"), &[])
        .unwrap()
        .get::<_, Option<i64>>(0)
        .unwrap();
    assert_eq!(per_row, 3 * ROWS);
    let done: i64 =
        client.query_one("SELECT done FROM belink.annotation_status WHERE job = $1", &[&job]).unwrap().get(0);
    assert_eq!(done, ROWS);
}

fn annotated(client: &mut Client, table: &str) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM {table} WHERE entities IS NOT NULL"), &[]).unwrap().get(0)
}

fn start_annotation(table: &'static str) -> (i32, thread::JoinHandle<Result<(), postgres::Error>>) {
    let mut client = cluster().connect();
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let handle = thread::spawn(move || {
        client.batch_execute(&format!(
            "CALL belink_annotate('{table}', 'body', 'entities', batch_size => 100, ontology => 'hpo_annotate')"
        ))
    });
    (pid, handle)
}

#[test]
fn cancelled_then_resumed_annotates_every_row_once() {
    let mut client = cluster().connect();
    prepare(&mut client, "notes_cancel");
    let (pid, running) = start_annotation("notes_cancel");
    wait_until(Duration::from_secs(60), || annotated(&mut cluster().connect(), "notes_cancel") >= 500);
    client.execute("SELECT pg_cancel_backend($1)", &[&pid]).unwrap();
    let error = format!("{:?}", running.join().unwrap().expect_err("cancelled"));
    assert!(error.contains("canceling statement"), "{error}");
    let partial = annotated(&mut client, "notes_cancel");
    assert!(partial > 0 && partial < ROWS, "{partial}");

    client
        .batch_execute(
            "CALL belink_annotate('notes_cancel', 'body', 'entities', batch_size => 500, ontology => 'hpo_annotate')",
        )
        .unwrap();
    assert_exactly_once(&mut client, "notes_cancel");
    let finished: bool = client
        .query_one(
            "SELECT finished_at IS NOT NULL FROM belink.annotation_status WHERE job = 'notes_cancel.entities'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(finished);
}

#[test]
fn a_killed_model_server_stops_the_job_and_a_new_call_finishes_it() {
    let mut client = cluster().connect();
    prepare(&mut client, "notes_kill");
    let server_pid = status(&mut client)["server_pid"].as_i64().unwrap();
    let (_, running) = start_annotation("notes_kill");
    wait_until(Duration::from_secs(60), || annotated(&mut cluster().connect(), "notes_kill") >= 500);
    assert!(Command::new("kill").args(["-9", &server_pid.to_string()]).status().unwrap().success());
    let outcome = running.join().unwrap();
    // The job either failed on the dead server or had just finished; nothing is lost either way.
    if let Err(error) = outcome {
        let error = format!("{error:?}");
        assert!(error.contains("model server"), "{error}");
    }
    wait_until(Duration::from_secs(30), || {
        cluster().connect().query_one("SELECT belink_embed('back')::text", &[]).is_ok()
    });
    client.batch_execute("CALL belink_annotate('notes_kill', 'body', 'entities', ontology => 'hpo_annotate')").unwrap();
    assert_exactly_once(&mut client, "notes_kill");
}

#[test]
fn rows_that_fail_are_recorded_and_skipped() {
    let mut client = cluster().connect();
    let hpo = std::fs::read_to_string(workspace().join("tests/fixtures/hp_excerpt.obo")).unwrap();
    client.query_one("SELECT concepts FROM belink_load_ontology_text('hpo_annotate', $1)", &[&hpo]).unwrap();
    client
        .batch_execute(
            "DROP TABLE IF EXISTS notes_bad;
             CREATE TABLE notes_bad (note_id text PRIMARY KEY, body text, entities jsonb);
             INSERT INTO notes_bad VALUES ('a', 'Seizures.', NULL), ('b', repeat('seizure ', 500), NULL),
                                          ('c', NULL, NULL), ('d', 'Hypertension.', NULL);",
        )
        .unwrap();
    // One statement per call: a CALL that commits cannot run in a multi-statement transaction.
    client.batch_execute("SET belink.max_document_chars = 1000").unwrap();
    client.batch_execute("CALL belink_annotate('notes_bad', 'body', 'entities', ontology => 'hpo_annotate')").unwrap();
    client.batch_execute("RESET belink.max_document_chars").unwrap();
    let rows: Vec<(String, Option<i64>)> = client
        .query("SELECT note_id, jsonb_array_length(entities)::bigint FROM notes_bad ORDER BY note_id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [("a".into(), Some(1)), ("b".into(), None), ("c".into(), Some(0)), ("d".into(), Some(1))]);
    let error: String = client
        .query_one(
            "SELECT error FROM belink.annotation_errors e JOIN belink.annotation_status s USING (job_id)
             WHERE s.job = 'notes_bad.entities' AND e.row_key = 'b'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(error.contains("belink.max_document_chars"), "{error}");
    let failed: i64 = client
        .query_one("SELECT failed FROM belink.annotation_status WHERE job = 'notes_bad.entities'", &[])
        .unwrap()
        .get(0);
    assert_eq!(failed, 1);
}

#[test]
fn clear_errors_for_unusable_tables() {
    let mut client = cluster().connect();
    client.batch_execute("DROP TABLE IF EXISTS no_key; CREATE TABLE no_key (body text, entities jsonb)").unwrap();
    let error =
        format!("{:?}", client.batch_execute("CALL belink_annotate('no_key', 'body', 'entities')").unwrap_err());
    assert!(error.contains("has no one-column primary key"), "{error}");
    client
        .batch_execute("DROP TABLE IF EXISTS no_result; CREATE TABLE no_result (id int PRIMARY KEY, body text)")
        .unwrap();
    let error =
        format!("{:?}", client.batch_execute("CALL belink_annotate('no_result', 'body', 'entities')").unwrap_err());
    assert!(error.contains("has no jsonb column entities"), "{error}");
}
