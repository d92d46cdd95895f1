//! The model server and its transport, through a real cluster that preloads belink:
//! payload sizes, cancel and timeouts, a killed server, batching across backends, socket
//! permissions, a missing model, belink_index and hybrid candidates, shared mention
//! dictionaries.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use belink_e2e::{cluster, in_two_sessions_at_once, parse_vector, status, wait_until, workspace};
use postgres::Client;

fn embed(client: &mut Client, text: &str) -> Vec<f32> {
    let row = client.query_one("SELECT belink_embed($1)::text", &[&text]).expect("belink_embed");
    parse_vector(&row.get::<_, String>(0))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// A statement running in another thread: its outcome and how long it took.
type Running = thread::JoinHandle<(Result<u64, postgres::Error>, Duration)>;

/// Runs a statement that keeps the model server busy for several seconds, on its own
/// connection in another thread; returns the backend pid and the statement's outcome.
fn long_request(extra_setup: &'static str) -> (i32, Running) {
    let mut client = cluster().connect();
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let handle = thread::spawn(move || {
        client.batch_execute(extra_setup).unwrap();
        let started = Instant::now();
        let outcome = client
            .execute("SELECT count(*) FROM belink_embed(array(SELECT 'sentence number ' || g || ' about colorectal adenomas' FROM generate_series(1, 60000) g))", &[]);
        (outcome, started.elapsed())
    });
    // Wait until the statement is running (waiting on the server).
    let mut observer = cluster().connect();
    wait_until(Duration::from_secs(10), || {
        observer
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", &[&pid])
            .map(|row| row.get::<_, i64>(0) == 1)
            .unwrap_or(false)
    });
    thread::sleep(Duration::from_millis(300));
    (pid, handle)
}

#[test]
fn embeddings_match_the_reference_and_big_payloads_pass() {
    let mut client = cluster().connect();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("tests/fixtures/minilm_reference.json")).unwrap(),
    )
    .unwrap();
    let text = reference["texts"][0].as_str().unwrap();
    let expected: Vec<f32> =
        reference["vectors"][0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let got = embed(&mut client, text);
    assert_eq!(got.len(), 384);
    assert!(cosine(&got, &expected) > 1.0 - 1e-4);

    // 1,000 texts in one request, in order.
    let rows = client
        .query("SELECT e::text FROM belink_embed(array(SELECT 'name ' || g FROM generate_series(1, 1000) g)) AS e", &[])
        .unwrap();
    assert_eq!(rows.len(), 1000);
    let seventh = parse_vector(&rows[6].get::<_, String>(0));
    assert!(cosine(&seventh, &embed(&mut client, "name 7")) > 1.0 - 1e-5);

    // A 1 MB document (the encoder reads its first tokens).
    let document = "colorectal adenoma ".repeat(55_000);
    assert!(document.len() > 1_000_000);
    assert_eq!(embed(&mut client, &document).len(), 384);

    // NULLs stay NULL and keep their place.
    let rows = client.query("SELECT e IS NULL FROM belink_embed(ARRAY['a', NULL, 'b']) AS e", &[]).unwrap();
    let nulls: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(nulls, [false, true, false]);
}

#[test]
fn a_waiting_backend_answers_cancel() {
    let (pid, running) = long_request("SELECT 1");
    let mut other = cluster().connect();
    let cancelled_at = Instant::now();
    other.execute("SELECT pg_cancel_backend($1)", &[&pid]).unwrap();
    let (outcome, _) = running.join().unwrap();
    let error = format!("{:?}", outcome.expect_err("the statement was cancelled"));
    assert!(error.contains("canceling statement due to user request"), "{error}");
    assert!(cancelled_at.elapsed() < Duration::from_secs(3), "cancel took {:?}", cancelled_at.elapsed());
    // The backend that was cancelled works again (on a new connection to the server).
    let mut again = cluster().connect();
    assert_eq!(embed(&mut again, "after a cancel").len(), 384);
}

#[test]
fn statement_timeout_and_request_timeout_bound_the_wait() {
    let (_, running) = long_request("SET statement_timeout = 700");
    let (outcome, took) = running.join().unwrap();
    let error = format!("{:?}", outcome.expect_err("statement_timeout fires"));
    assert!(error.contains("statement timeout"), "{error}");
    assert!(took < Duration::from_secs(4), "{took:?}");

    let (_, running) = long_request("SET belink.request_timeout = 700");
    let (outcome, took) = running.join().unwrap();
    let error = outcome.expect_err("belink.request_timeout fires");
    let message = format!("{error:?}");
    assert!(message.contains("did not answer within 700 ms"), "{message}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn concurrent_backends_are_batched_together() {
    let mut admin = cluster().connect();
    let before = status(&mut admin);
    let workers: Vec<_> = (0..8)
        .map(|i| {
            thread::spawn(move || {
                let mut client = cluster().connect();
                for j in 0..40 {
                    embed(&mut client, &format!("backend {i} mention {j}"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let after = status(&mut admin);
    assert!(after["requests"].as_u64().unwrap() >= before["requests"].as_u64().unwrap() + 320);
    assert!(
        after["max_requests_per_batch"].as_u64().unwrap() > 1,
        "requests from different backends shared a batch: {after}"
    );
}

#[test]
fn only_the_cluster_owner_can_reach_the_socket() {
    let data = cluster().data_dir();
    let socket = data.join("belink_server.sock");
    let meta = std::fs::metadata(&socket).expect("the server's socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    let owner = std::fs::metadata(&data).unwrap().uid();
    assert_eq!(meta.uid(), owner, "the socket belongs to the cluster's OS user");
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    // Another OS user cannot connect.
    let attempt = Command::new("runuser")
        .args(["-u", "nobody", "--", "python3", "-c"])
        .arg(format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect({:?})\nexcept OSError as e:\n print(e); sys.exit(3)\n",
            socket.display().to_string()
        ))
        .output()
        .expect("runuser");
    assert_eq!(attempt.status.code(), Some(3), "{}", String::from_utf8_lossy(&attempt.stdout));
}

#[test]
fn a_killed_server_costs_one_call_not_the_database() {
    let mut admin = cluster().connect();
    let postmaster_started: String = admin.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0);
    let before = status(&mut admin);
    let server_pid = before["server_pid"].as_i64().unwrap() as i32;
    assert!(server_pid > 0);
    let mut bystander = cluster().connect();

    let (_, running) = long_request("SET belink.request_timeout = 20000");
    let killed_at = Instant::now();
    assert!(Command::new("kill").args(["-9", &server_pid.to_string()]).status().unwrap().success());
    let (outcome, _) = running.join().unwrap();
    let error = format!("{:?}", outcome.expect_err("the call in flight fails"));
    assert!(error.contains("lost the connection to the belink model server"), "{error}");
    assert!(killed_at.elapsed() < Duration::from_secs(5), "the waiting call failed in {:?}", killed_at.elapsed());

    // PostgreSQL did not restart: the other session lives on, same postmaster start time.
    let one: i32 = bystander.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    let now: String = admin.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0);
    assert_eq!(now, postmaster_started);

    // The supervisor restarts the server; calls succeed again.
    wait_until(Duration::from_secs(30), || {
        cluster().connect().query_one("SELECT belink_embed('back')::text", &[]).is_ok()
    });
    let after = status(&mut admin);
    assert_ne!(after["server_pid"].as_i64().unwrap() as i32, server_pid);
    assert!(after["server_starts"].as_u64().unwrap() > before["server_starts"].as_u64().unwrap());
}

#[test]
fn a_missing_model_is_a_clear_error_and_the_server_keeps_running() {
    let mut admin = cluster().connect();
    admin.batch_execute("ALTER SYSTEM SET belink.encoder_model = '/nonexistent/encoder'").unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(Duration::from_secs(30), || {
        let s = status(&mut cluster().connect());
        s["encoder_state"].as_str().is_some_and(|state| state.starts_with("failed"))
    });
    let error = format!("{:?}", cluster().connect().query_one("SELECT belink_embed('x')::text", &[]).unwrap_err());
    assert!(error.contains("encoder model directory /nonexistent/encoder does not exist"), "{error}");
    assert_eq!(status(&mut admin)["state"], "running");
    admin.batch_execute("ALTER SYSTEM RESET belink.encoder_model").unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(Duration::from_secs(60), || {
        cluster().connect().query_one("SELECT belink_embed('x')::text", &[]).is_ok()
    });
}

#[test]
fn belink_index_resumes_and_makes_candidates_hybrid() {
    let mut client = cluster().connect();
    let hpo = std::fs::read_to_string(workspace().join("tests/fixtures/hp_excerpt.obo")).unwrap();
    client.query_one("SELECT concepts FROM belink_load_ontology_text('hpo_e2e', $1)", &[&hpo]).unwrap();
    let names: i64 =
        client.query_one("SELECT count(*) FROM belink.names WHERE ontology = 'hpo_e2e'", &[]).unwrap().get(0);

    client.batch_execute("CALL belink_index('hpo_e2e', batch_size => 7)").unwrap();
    assert_eq!(embedded(&mut client, "hpo_e2e"), names);
    let row = client
        .query_one("SELECT embedding_dim, total, done, finished_at IS NOT NULL FROM belink.ontologies o JOIN belink.index_status s ON s.ontology = o.name WHERE o.name = 'hpo_e2e'", &[])
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, i64>(1), row.get::<_, i64>(2), row.get::<_, bool>(3)),
        (384, names, names, true)
    );
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'belink' AND indexdef LIKE '%hnsw%hpo_e2e%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(indexes, 1);

    // Resume: only what lost its embedding is embedded again.
    client
        .batch_execute("UPDATE belink.names SET embedding = NULL WHERE ontology = 'hpo_e2e' AND kind <> 'preferred'")
        .unwrap();
    // MiniLM ignores case: names differing in case only are one text to embed.
    let missing_texts: i64 = client
        .query_one(
            "SELECT count(DISTINCT lower(name)) FROM belink.names WHERE ontology = 'hpo_e2e' AND embedding IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    let before = status(&mut client)["texts"].as_u64().unwrap();
    client.batch_execute("CALL belink_index('hpo_e2e')").unwrap();
    let after = status(&mut client)["texts"].as_u64().unwrap();
    assert_eq!(after - before, missing_texts as u64, "only the missing names were sent to the encoder");
    assert_eq!(embedded(&mut client, "hpo_e2e"), names);

    // Hybrid candidates: a paraphrase no name matches lexically is found by the dense source.
    let rows = client
        .query(
            "SELECT concept_id, dense_rank, source FROM belink_candidates('elevated arterial pressure', 'hpo_e2e', 3)",
            &[],
        )
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "HP:0000822", "hypertension");
    assert_eq!(rows[0].get::<_, Option<i32>>(1), Some(1));
    // The dense query can use the ontology's HNSW index (on so few names the planner would
    // rather sort; forbid that to see the index match the query's expression and predicate).
    client.batch_execute("SET enable_seqscan = off").unwrap();
    let query: Vec<f32> = client.query_one("SELECT belink_embed_real('x')", &[]).unwrap().get(0);
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT concept_id FROM belink.names n WHERE n.ontology = 'hpo_e2e' AND n.embedding IS NOT NULL
             ORDER BY (n.embedding::vector(384)) <=> ($1::real[]::vector(384)) LIMIT 5",
            &[&query],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("names_embedding_hpo_e2e")), "{plan:#?}");
    client.batch_execute("RESET enable_seqscan").unwrap();

    // Lexical only, on request.
    client.batch_execute("SET belink.retrieval = 'lexical'").unwrap();
    let lexical = client
        .query("SELECT dense_rank FROM belink_candidates('elevated arterial pressure', 'hpo_e2e', 3)", &[])
        .unwrap();
    assert!(lexical.iter().all(|r| r.get::<_, Option<i32>>(0).is_none()));
    client.batch_execute("RESET belink.retrieval; SELECT belink_drop_ontology('hpo_e2e')").unwrap();
}

#[test]
fn a_shared_mention_dictionary_is_sent_again_after_a_kill_and_goes_with_its_ontology() {
    let mut client = cluster().connect();
    let hpo = std::fs::read_to_string(workspace().join("tests/fixtures/hp_excerpt.obo")).unwrap();
    client.query_one("SELECT concepts FROM belink_load_ontology_text('hpo_shared', $1)", &[&hpo]).unwrap();
    let linked = |client: &mut Client| -> Vec<String> {
        client.batch_execute("SET belink.max_dictionary_mb = 0").unwrap();
        let text = "A girl with arterial hypertension presented with seizures.";
        let rows = client
            .query("SELECT e->>'concept_id' FROM jsonb_array_elements(belink_link($1, 'hpo_shared')) e", &[&text])
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    };
    let held = |client: &mut Client| -> Vec<String> {
        let status = status(client);
        let dictionaries = status["mention_dictionaries"].as_array().cloned().unwrap_or_default();
        dictionaries.iter().filter_map(|d| d["ontology"].as_str().map(String::from)).collect()
    };
    let first = linked(&mut client);
    assert_eq!(first, ["HP:0000822", "HP:0001250"]);
    assert!(held(&mut client).contains(&"hpo_shared".to_string()));

    // A killed server forgets it; the next session that links sends it again.
    let server_pid = status(&mut client)["server_pid"].as_i64().unwrap();
    assert!(Command::new("kill").args(["-9", &server_pid.to_string()]).status().unwrap().success());
    wait_until(Duration::from_secs(30), || {
        let mut fresh = cluster().connect();
        fresh.batch_execute("SET belink.max_dictionary_mb = 0").is_ok()
            && fresh.query_one("SELECT belink_link('seizures', 'hpo_shared')::text", &[]).is_ok()
    });
    assert_eq!(linked(&mut cluster().connect()), first);
    assert!(held(&mut client).contains(&"hpo_shared".to_string()));

    client.batch_execute("SELECT belink_drop_ontology('hpo_shared')").unwrap();
    assert!(!held(&mut client).contains(&"hpo_shared".to_string()), "dropped with its ontology");
}

#[test]
fn a_shared_dictionary_above_the_servers_limit_is_a_clear_error() {
    let mut admin = cluster().connect();
    // 3,000 names: about 1.35 MB by the server's estimate, above a limit of 1 MB.
    load_findings(&mut admin, "limited", "limited", 3000);
    let server_pid = status(&mut admin)["server_pid"].as_i64();
    admin.batch_execute("ALTER SYSTEM SET belink.server_dictionaries_mb = 1").unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    let link = || {
        let mut client = cluster().connect();
        client.batch_execute("SET belink.max_dictionary_mb = 0").unwrap();
        client.query_one("SELECT belink_link('limited finding number 7', 'limited')::text", &[])
    };
    wait_until(Duration::from_secs(60), || status(&mut cluster().connect())["server_pid"].as_i64() != server_pid);
    let error = link().unwrap_err().as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(error.contains("cannot hold the mention dictionary of \"limited\""), "{error}");
    assert!(error.contains("belink.server_dictionaries_mb is 1 MB"), "{error}");
    admin.batch_execute("ALTER SYSTEM RESET belink.server_dictionaries_mb").unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(Duration::from_secs(60), || link().is_ok());
    admin.batch_execute("SELECT belink_drop_ontology('limited')").unwrap();
}

/// The HPO excerpt as `ontology`, with a name two concepts share: "pressure trouble".
fn load_hpo_with_a_shared_name(client: &mut Client, ontology: &str) {
    let hpo = std::fs::read_to_string(workspace().join("tests/fixtures/hp_excerpt.obo")).unwrap();
    client.query_one("SELECT concepts FROM belink_load_ontology_text($1, $2)", &[&ontology, &hpo]).unwrap();
    for concept in ["HP:0000822", "HP:0001250"] {
        client.query_one("SELECT belink_add_names($1, $2, ARRAY['pressure trouble'])", &[&ontology, &concept]).unwrap();
    }
}

#[test]
fn linking_reuses_retrieval_until_the_embeddings_change() {
    let mut client = cluster().connect();
    // Once the ontology is indexed, linking the shared name takes the encoder (written with
    // a hyphen, the mention is not written like the name, whose stored vector would
    // otherwise stand in for it).
    load_hpo_with_a_shared_name(&mut client, "hpo_cache");
    let link = |client: &mut Client| {
        let row =
            client.query_one("SELECT belink_link('pressure-trouble', 'hpo_cache')->0->>'concept_id'", &[]).unwrap();
        assert!(row.get::<_, Option<String>>(0).is_some());
    };
    let texts = |client: &mut Client| status(client)["texts"].as_u64().unwrap();
    link(&mut client); // not indexed yet: lexical only
    client.batch_execute("CALL belink_index('hpo_cache')").unwrap();
    let before = texts(&mut client);
    link(&mut client);
    assert_eq!(texts(&mut client) - before, 1, "indexing invalidated the session's cache: the mention is embedded");
    link(&mut client);
    assert_eq!(texts(&mut client) - before, 1, "the second call reuses the first one's retrieval");
    client.batch_execute("SET belink.retrieval_cache_size = 0").unwrap();
    link(&mut client);
    assert_eq!(texts(&mut client) - before, 2, "without the cache every call embeds");
    client.batch_execute("RESET belink.retrieval_cache_size; SELECT belink_drop_ontology('hpo_cache')").unwrap();
}

#[test]
fn a_mention_written_like_a_name_takes_its_stored_vector() {
    let mut client = cluster().connect();
    load_hpo_with_a_shared_name(&mut client, "hpo_alike");
    // One statement per call: a CALL that commits cannot run in a multi-statement transaction.
    client.batch_execute("CALL belink_index('hpo_alike')").unwrap();
    client.batch_execute("SET belink.retrieval_cache_size = 0").unwrap();
    let ignores_case: bool = client
        .query_one("SELECT embedding_ignores_case FROM belink.ontologies WHERE name = 'hpo_alike'", &[])
        .unwrap()
        .get(0);
    assert!(ignores_case, "MiniLM is uncased: recorded by belink_index");
    let texts = |client: &mut Client| status(client)["texts"].as_u64().unwrap();
    let candidates = |client: &mut Client, mention: &str| -> Vec<(String, Option<i32>)> {
        client
            .query("SELECT concept_id, dense_rank FROM belink_candidates($1, 'hpo_alike', 5)", &[&mention])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    let before = texts(&mut client);
    // The name in other letter case: its stored vector, no encoder request.
    let stored = candidates(&mut client, "Pressure Trouble");
    let linked: String = client
        .query_one("SELECT belink_link('PRESSURE TROUBLE was noted', 'hpo_alike')->0->>'mention'", &[])
        .unwrap()
        .get(0);
    assert_eq!(linked, "PRESSURE TROUBLE");
    assert_eq!(texts(&mut client), before, "no mention was embedded");
    // Two spaces: not written like the name, so embedded, and the same vector comes back
    // (the tokenizer splits on any white space): the same candidates in the same order.
    let embedded = candidates(&mut client, "pressure  trouble");
    assert_eq!(texts(&mut client), before + 1);
    assert!(stored.iter().any(|(_, dense)| dense.is_some()), "{stored:?}");
    assert_eq!(stored, embedded);
    client.batch_execute("RESET belink.retrieval_cache_size; SELECT belink_drop_ontology('hpo_alike')").unwrap();
}

/// Loads `ontology` with `count` concepts named "<word> finding number <i>".
fn load_findings(client: &mut Client, ontology: &str, word: &str, count: usize) {
    let tsv: String = (0..count).map(|i| format!("Z:{i}\t{word} finding number {i}\n")).collect();
    client.query_one("SELECT concepts FROM belink_load_ontology_text($1, $2)", &[&ontology, &tsv]).unwrap();
}

/// How many of `ontology`'s names have an embedding.
fn embedded(client: &mut Client, ontology: &str) -> i64 {
    client.query_one("SELECT count(embedding) FROM belink.names WHERE ontology = $1", &[&ontology]).unwrap().get(0)
}

/// `CALL belink_index(ontology)` in two sessions at once; panics if either fails.
fn index_in_two_sessions(ontology: &str, batch_size: u32) {
    for outcome in in_two_sessions_at_once(&format!("CALL belink_index('{ontology}', batch_size => {batch_size})")) {
        outcome.unwrap();
    }
}

#[test]
fn two_sessions_indexing_one_ontology_embed_every_name_once() {
    let mut observer = cluster().connect();
    load_findings(&mut observer, "shared_index", "shared", 3000);
    let before = status(&mut observer)["texts"].as_u64().unwrap();
    // Each session takes the batches the other has not locked, and ends with a pass from the start.
    index_in_two_sessions("shared_index", 100);
    let after = status(&mut observer)["texts"].as_u64().unwrap();
    let done: i64 = embedded(&mut observer, "shared_index");
    assert_eq!(done, 3000);
    assert_eq!(after - before, 3000, "nothing embedded twice");
    observer.batch_execute("SELECT belink_drop_ontology('shared_index')").unwrap();
}

#[test]
fn names_held_by_another_session_while_indexing_passed_them_are_embedded_at_the_end() {
    let mut observer = cluster().connect();
    load_findings(&mut observer, "held_index", "held", 3000);
    let mut holder = cluster().connect();
    let mut held = holder.transaction().unwrap();
    held.execute("SELECT 1 FROM belink.names WHERE ontology = 'held_index' ORDER BY name_id LIMIT 10 FOR UPDATE", &[])
        .unwrap();
    let mut client = cluster().connect();
    let indexing = thread::spawn(move || client.batch_execute("CALL belink_index('held_index', batch_size => 100)"));
    // Released once the indexing session has passed the held names.
    wait_until(Duration::from_secs(60), || embedded(&mut observer, "held_index") >= 500);
    held.commit().unwrap();
    indexing.join().unwrap().unwrap();
    let done: i64 = embedded(&mut observer, "held_index");
    assert_eq!(done, 3000, "the held names were embedded by the last pass from the start");
    observer.batch_execute("SELECT belink_drop_ontology('held_index')").unwrap();
}

#[test]
fn names_written_alike_are_embedded_once_in_any_batch() {
    let mut client = cluster().connect();
    // 600 names, 200 texts: each written three ways, 200 names apart (never in one batch of 50).
    let tsv: String = (0..600)
        .map(|i| {
            let text = format!("alike finding {}", i % 200);
            let written = match i / 200 {
                0 => text,
                1 => text.to_uppercase(),
                _ => format!("A{}", &text[1..]),
            };
            format!("Z:{i}\t{written}\n")
        })
        .collect();
    client.query_one("SELECT concepts FROM belink_load_ontology_text('alike_index', $1)", &[&tsv]).unwrap();
    let before = status(&mut client)["texts"].as_u64().unwrap();
    client.batch_execute("CALL belink_index('alike_index', batch_size => 50)").unwrap();
    let after = status(&mut client)["texts"].as_u64().unwrap();
    assert_eq!(after - before, 200, "each text embedded once");
    assert_eq!(embedded(&mut client, "alike_index"), 600);
    // Progress counts the texts too, which the ETA is measured in.
    let texts = client
        .query_one("SELECT texts_at_start, texts_done FROM belink.index_progress WHERE ontology = 'alike_index'", &[])
        .unwrap();
    assert_eq!((texts.get::<_, i64>(0), texts.get::<_, i64>(1)), (200, 200));
    // The count agrees with the indexing where case is not set aside: names with special
    // tokens' brackets, capitals outside ASCII.
    let edges =
        "E:1\t[alike] edge\nE:2\t[ALIKE] edge\nE:3\tÄrger edge\nE:4\tärger edge\nE:5\tPlain edge\nE:6\tplain edge\n";
    client.query_one("SELECT concepts FROM belink_load_ontology_text('alike_edges', $1)", &[&edges]).unwrap();
    let before = status(&mut client)["texts"].as_u64().unwrap();
    client.batch_execute("CALL belink_index('alike_edges')").unwrap();
    let after = status(&mut client)["texts"].as_u64().unwrap();
    let counted: i64 = client
        .query_one("SELECT texts_at_start FROM belink.index_progress WHERE ontology = 'alike_edges'", &[])
        .unwrap()
        .get(0);
    assert_eq!((after - before, counted), (5, 5));
    client.batch_execute("SELECT belink_drop_ontology('alike_edges')").unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT done FROM belink.index_status WHERE ontology = 'alike_index'),
                    count(DISTINCT embedding::text), count(DISTINCT lower(name))
             FROM belink.names WHERE ontology = 'alike_index'",
            &[],
        )
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (600, 200, 200));
    let spread: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT lower(name) FROM belink.names WHERE ontology = 'alike_index'
             GROUP BY 1 HAVING count(DISTINCT embedding::text) > 1) AS differing",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(spread, 0, "names written alike have the same vector");

    // Two sessions at once: each leaves the rows the other holds to it (no deadlock), and
    // every name is embedded.
    client.batch_execute("UPDATE belink.names SET embedding = NULL WHERE ontology = 'alike_index'").unwrap();
    index_in_two_sessions("alike_index", 20);
    assert_eq!(embedded(&mut client, "alike_index"), 600);
    client.batch_execute("SELECT belink_drop_ontology('alike_index')").unwrap();
}

#[test]
fn sessions_ending_their_indexing_together_build_the_graph_once() {
    let mut client = cluster().connect();
    load_findings(&mut client, "finish_index", "finish", 3000);
    client.batch_execute("CALL belink_index('finish_index')").unwrap();
    client.batch_execute("SELECT belink.drop_embedding_index('finish_index')").unwrap();
    for outcome in in_two_sessions_at_once("SELECT belink_index_finish('finish_index')") {
        let index = outcome.expect("the second session waits for the first's graph, then finds it").unwrap();
        assert!(index.contains("finish_index"), "{index}");
    }
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'belink' AND indexdef LIKE '%hnsw%finish_index%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(indexes, 1);
    client.batch_execute("SELECT belink_drop_ontology('finish_index')").unwrap();
}

#[test]
fn belink_index_interrupted_then_resumed_embeds_every_name_once() {
    let mut client = cluster().connect();
    load_findings(&mut client, "synthetic", "synthetic", 4000);
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let indexing = thread::spawn(move || client.batch_execute("CALL belink_index('synthetic', batch_size => 100)"));
    let mut observer = cluster().connect();
    wait_until(Duration::from_secs(60), || embedded(&mut observer, "synthetic") >= 300);
    observer.execute("SELECT pg_cancel_backend($1)", &[&pid]).unwrap();
    assert!(indexing.join().unwrap().is_err(), "the CALL was cancelled");
    let partial: i64 = embedded(&mut observer, "synthetic");
    assert!(partial > 0 && partial < 4000, "committed batches stay: {partial}");
    // Let the server finish (or drop) the batch that was in flight before counting.
    thread::sleep(Duration::from_secs(2));
    let before = status(&mut observer)["texts"].as_u64().unwrap();
    observer.batch_execute("CALL belink_index('synthetic', batch_size => 500)").unwrap();
    let after = status(&mut observer)["texts"].as_u64().unwrap();
    let done: i64 = embedded(&mut observer, "synthetic");
    assert_eq!(done, 4000);
    assert_eq!(after - before, (4000 - partial) as u64, "nothing embedded twice");
    observer.batch_execute("SELECT belink_drop_ontology('synthetic')").unwrap();
}
