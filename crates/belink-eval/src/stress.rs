//! `belink-eval stress`: many clients calling belink_link and belink_normalize for a while,
//! with faults injected (the model server killed, queries cancelled, an annotation job
//! interrupted), checking that PostgreSQL never restarts, every failed call fails fast with
//! a clear error, service comes back, and memory stays flat.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use belink_eval::corpus::Document;
use postgres::{Client, NoTls};

use crate::db::db_message;
use crate::rss_mb;

pub struct Options {
    pub dsn: String,
    pub ontology: String,
    pub clients: usize,
    pub duration: Duration,
    pub server_kills: usize,
    pub cancels: usize,
    pub annotate_interrupts: usize,
}

#[derive(Default)]
struct Calls {
    latencies_ms: Vec<f64>,
    errors: BTreeMap<String, usize>,
    /// Longest time a failing call took before its error.
    slowest_error_ms: f64,
}

fn connect(dsn: &str) -> Result<Client, String> {
    Client::connect(dsn, NoTls).map_err(|e| format!("cannot connect: {e}"))
}

fn server_pid(client: &mut Client) -> Option<i32> {
    client.query_one("SELECT server_pid FROM belink_worker_status()", &[]).ok()?.get::<_, Option<i32>>(0)
}

/// Least time between the service coming back and the next kill: the supervisor treats a
/// server that dies within 5 s of its start as failing to start and backs off (0.5 s doubling
/// up to 30 s), which is right for a crash loop but is not what this test measures.
const MIN_UPTIME: Duration = Duration::from_millis(5_500);

/// Short label of an error, for counting them by kind.
fn kind_of(error: &postgres::Error) -> String {
    let message = db_message(error);
    let cut = message.find(':').map(|i| &message[..i]).unwrap_or(&message);
    cut.chars().take(80).collect()
}

pub fn run(options: &Options, documents: &[Document]) -> Result<String, String> {
    let mut admin = connect(&options.dsn)?;
    let postmaster_started: String =
        admin.query_one("SELECT pg_postmaster_start_time()::text", &[]).map_err(|e| e.to_string())?.get(0);
    if documents.iter().all(|d| d.mentions.is_empty()) {
        return Err("stress: the corpus has no annotated mentions to send".into());
    }
    let docs: Arc<Vec<String>> = Arc::new(documents.iter().map(|d| d.text.clone()).collect());
    let mentions: Arc<Vec<(String, String)>> = Arc::new(
        documents.iter().flat_map(|d| d.mentions.iter().map(move |m| (m.text.clone(), d.text.clone()))).collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Mutex::new(Calls::default()));
    let pids = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();

    let mut workers = Vec::new();
    for worker in 0..options.clients {
        let (dsn, ontology) = (options.dsn.clone(), options.ontology.clone());
        let (stop, calls, pids, docs, mentions) =
            (stop.clone(), calls.clone(), pids.clone(), docs.clone(), mentions.clone());
        workers.push(thread::spawn(move || -> Result<(), String> {
            let mut client = connect(&dsn)?;
            let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).map_err(|e| e.to_string())?.get(0);
            pids.lock().unwrap().push(pid);
            let mut random = fastrand::Rng::with_seed(worker as u64 * 7919 + 1);
            while !stop.load(Ordering::Relaxed) {
                let call_started = Instant::now();
                let outcome = if worker % 2 == 0 {
                    let doc = &docs[random.usize(..docs.len())];
                    client.query_one("SELECT belink_link($1, $2)::text", &[doc, &ontology]).map(|_| ())
                } else {
                    let (mention, context) = &mentions[random.usize(..mentions.len())];
                    client
                        .query("SELECT concept_id FROM belink_normalize($1, $2, $3)", &[mention, context, &ontology])
                        .map(|_| ())
                };
                let ms = call_started.elapsed().as_secs_f64() * 1000.0;
                let mut calls = calls.lock().unwrap();
                match outcome {
                    Ok(()) => calls.latencies_ms.push(ms),
                    Err(e) => {
                        *calls.errors.entry(kind_of(&e)).or_insert(0) += 1;
                        calls.slowest_error_ms = calls.slowest_error_ms.max(ms);
                    }
                }
            }
            Ok(())
        }));
    }

    // Memory samples: the model server and the clients' backends, every 10 seconds.
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    let mut random = fastrand::Rng::with_seed(4242);
    // Kills spread over the run at random offsets, each at least MIN_UPTIME after the service
    // came back; the load goes on until the last kill has been recovered from.
    let kill_times: Vec<Duration> = (0..options.server_kills)
        .map(|i| options.duration.mul_f64(0.05 + 0.9 * (i as f64 + random.f64()) / options.server_kills as f64))
        .collect();
    let mut kills = 0;
    let mut service_back = Instant::now();
    let mut recoveries: Vec<f64> = Vec::new();
    let cancels_done = Arc::new(AtomicUsize::new(0));
    let canceller = (options.cancels > 0).then(|| {
        let (dsn, pids, stop, cancels_done, total) =
            (options.dsn.clone(), pids.clone(), stop.clone(), cancels_done.clone(), options.cancels);
        let period = options.duration / (total as u32 + 1);
        thread::spawn(move || {
            let Ok(mut client) = connect(&dsn) else { return };
            let mut random = fastrand::Rng::with_seed(99);
            while !stop.load(Ordering::Relaxed) && cancels_done.load(Ordering::Relaxed) < total {
                thread::sleep(period);
                let pid = {
                    let pids = pids.lock().unwrap();
                    pids.get(random.usize(..pids.len().max(1))).copied()
                };
                if let Some(pid) = pid {
                    if client.execute("SELECT pg_cancel_backend($1)", &[&pid]).is_ok() {
                        cancels_done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    });
    let mut last_sample = Instant::now() - Duration::from_secs(10);
    while started.elapsed() < options.duration || kills < kill_times.len() {
        if kills < kill_times.len() && started.elapsed() >= kill_times[kills] && service_back.elapsed() >= MIN_UPTIME {
            if let Some(pid) = server_pid(&mut admin) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                kills += 1;
                let killed = Instant::now();
                // Service is back when a call succeeds again.
                loop {
                    if let Ok(mut probe) = connect(&options.dsn) {
                        if probe.query_one("SELECT belink_embed('probe')::text", &[]).is_ok() {
                            break;
                        }
                    }
                    if killed.elapsed() > Duration::from_secs(120) {
                        return Err(format!("service did not come back within 120 s after kill {kills}"));
                    }
                    thread::sleep(Duration::from_millis(200));
                }
                recoveries.push(killed.elapsed().as_secs_f64());
                service_back = Instant::now();
            }
        }
        if last_sample.elapsed() >= Duration::from_secs(10) {
            last_sample = Instant::now();
            let server = server_pid(&mut admin).and_then(rss_mb).unwrap_or(0.0);
            let backends: Vec<f64> = pids.lock().unwrap().iter().filter_map(|&p| rss_mb(p)).collect();
            let mean = backends.iter().sum::<f64>() / backends.len().max(1) as f64;
            samples.push((started.elapsed().as_secs_f64(), server, mean));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let ran = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().map_err(|_| "a client thread panicked")??;
    }
    if let Some(canceller) = canceller {
        let _ = canceller.join();
    }
    let status: serde_json::Value =
        admin.query_one("SELECT belink_worker_status_json()", &[]).map_err(|e| e.to_string())?.get(0);
    let now: String =
        admin.query_one("SELECT pg_postmaster_start_time()::text", &[]).map_err(|e| e.to_string())?.get(0);

    let interrupts = if options.annotate_interrupts > 0 { Some(annotate_interrupted(options)?) } else { None };

    let calls = calls.lock().unwrap();
    let mut sorted = calls.latencies_ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| sorted.get(((sorted.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or(0.0);
    let errors: usize = calls.errors.values().sum();
    let mut out = String::new();
    out.push_str(&format!(
        "| clients | seconds | calls ok | calls failed | calls/s | p50 ms | p99 ms | slowest failure ms | server kills | recovery s (max) | cancels | PostgreSQL restarted |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n| {} | {:.0} | {} | {errors} | {:.1} | {:.0} | {:.0} | {:.0} | {kills} | {:.1} | {} | {} |\n\n",
        options.clients,
        ran.as_secs_f64(),
        sorted.len(),
        sorted.len() as f64 / ran.as_secs_f64(),
        at(0.5),
        at(0.99),
        calls.slowest_error_ms,
        recoveries.iter().cloned().fold(0.0, f64::max),
        cancels_done.load(Ordering::Relaxed),
        if now == postmaster_started { "no" } else { "YES" },
    ));
    if !calls.errors.is_empty() {
        out.push_str("Failed calls by error:\n\n| error | calls |\n|---|---:|\n");
        for (kind, n) in &calls.errors {
            out.push_str(&format!("| {kind} | {n} |\n"));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "Batching: {} embedding requests in {} batches (mean {:.2}, max {} requests per batch); abandoned requests {}; queue depth at the end {}.\n\n",
        status["requests"], status["batches"], status["mean_requests_per_batch"].as_f64().unwrap_or(0.0),
        status["max_requests_per_batch"], status["abandoned_requests"], status["queue_depth"]
    ));
    out.push_str("Memory (MB) over time: seconds, model server RSS, mean backend RSS\n\n| s | server | backend |\n|---:|---:|---:|\n");
    for (t, server, backend) in &samples {
        out.push_str(&format!("| {t:.0} | {server:.0} | {backend:.1} |\n"));
    }
    if let Some(report) = interrupts {
        out.push('\n');
        out.push_str(&report);
    }
    Ok(out)
}

/// belink_annotate cancelled `annotate_interrupts` times at random moments, then finished:
/// every row must be annotated exactly once.
fn annotate_interrupted(options: &Options) -> Result<String, String> {
    let mut client = connect(&options.dsn)?;
    let rows = 20_000;
    client
        .batch_execute(&format!(
            "DELETE FROM belink.annotation_jobs WHERE table_oid = to_regclass('stress_notes');
             DROP TABLE IF EXISTS stress_notes;
             CREATE TABLE stress_notes (id bigint PRIMARY KEY, body text, entities jsonb);
             INSERT INTO stress_notes SELECT g, 'Case ' || g || ': breast cancer and colorectal cancer.', NULL
             FROM generate_series(1, {rows}) g;"
        ))
        .map_err(|e| db_message(&e))?;
    let call = format!(
        "CALL belink_annotate('stress_notes', 'body', 'entities', batch_size => 200, ontology => '{}')",
        options.ontology.replace('\'', "''")
    );
    let mut random = fastrand::Rng::with_seed(7);
    let mut interrupted = 0;
    for _ in 0..options.annotate_interrupts {
        let mut worker = connect(&options.dsn)?;
        let pid: i32 = worker.query_one("SELECT pg_backend_pid()", &[]).map_err(|e| e.to_string())?.get(0);
        let statement = call.clone();
        let handle = thread::spawn(move || worker.batch_execute(&statement));
        thread::sleep(Duration::from_millis(50 + random.usize(..400) as u64));
        client.execute("SELECT pg_cancel_backend($1)", &[&pid]).map_err(|e| e.to_string())?;
        if handle.join().map_err(|_| "annotation thread panicked")?.is_err() {
            interrupted += 1;
        }
    }
    client.batch_execute(&call).map_err(|e| db_message(&e))?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM stress_notes WHERE entities IS NULL),
                    (SELECT count(*) FROM belink.annotations a JOIN belink.annotation_jobs j USING (job_id)
                     WHERE j.table_oid = 'stress_notes'::regclass),
                    (SELECT count(DISTINCT (row_key, start_char)) FROM belink.annotations a JOIN belink.annotation_jobs j USING (job_id)
                     WHERE j.table_oid = 'stress_notes'::regclass),
                    (SELECT sum(jsonb_array_length(entities)) FROM stress_notes)::bigint",
            &[],
        )
        .map_err(|e| e.to_string())?;
    let (missing, annotations, distinct, in_rows): (i64, i64, i64, Option<i64>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let exact = missing == 0 && annotations == distinct && Some(annotations) == in_rows;
    Ok(format!(
        "belink_annotate over {rows} rows, cancelled {interrupted} times at random then finished: rows left unannotated {missing}, \
         entity rows {annotations} (distinct {distinct}, in the jsonb column {}): {}.\n",
        in_rows.unwrap_or(0),
        if exact { "every row annotated exactly once" } else { "MISMATCH" }
    ))
}
