//! belink-eval: evaluation and benchmarks of BeLink, run through SQL on a real cluster, the
//! way users call it. Prints Markdown tables.
//!
//!   belink-eval load --dsn DSN NAME=PATH[:FORMAT]...
//!       loads each file with belink_load_ontology and reports counts and wall time
//!   belink-eval retrieval --dsn DSN --corpus PATH --ontology NAME [--k 1,5,10] [--retrieval lexical|hybrid]
//!       candidate recall@k of belink_candidates on the corpus' gold mentions
//!   belink-eval index --dsn DSN --ontology NAME
//!       CALL belink_index: wall time, names per second, the model server's peak memory
//!   belink-eval tune-fusion --dsn DSN --corpus PATH --ontology NAME
//!       tunes and stores the ontology's fusion weights on the corpus' mentions (those naming
//!       one of its concepts) as make eval does, and prints them
//!   belink-eval throughput --dsn DSN --corpus PATH --ontology NAME [--repeat N] [--runs N]
//!                          [--rerank on]
//!       documents per second of belink_link (lexical, hybrid; hybrid + re-ranking with
//!       --rerank on) in one UPDATE, and of belink_annotate (hybrid; hybrid + re-ranking with
//!       --rerank on), over the corpus' documents
//!       (repeated N times, default 1: copies share mentions, which batched calls look up once)
//!       in table bench_docs; the median of --runs runs (default 1; one with re-ranking), each
//!       in a new session
//!   belink-eval annotate-scale --dsn DSN --ontology NAME [--rows 1000000] [--batch 1000]
//!       belink_annotate over a synthetic table of short clinical sentences: rows per second
//!       overall and in the first and last progress windows (flat = no per-batch slowdown)
//!   belink-eval normalize --dsn DSN --corpus PATH [--ontology NAME] [--retrieval MODE] [--batch 100]
//!                         [--limit N]
//!       belink_normalize over the corpus' gold mentions from one client: p50 / p95 per call,
//!       mentions per second one call each and in arrays of --batch, and the growth of the
//!       backend's private memory (no --ontology: every loaded ontology; --limit: the first N
//!       mentions only)
//!   belink-eval memory --dsn DSN [--connections 16]
//!       resident memory of the model server, and of backends before and after belink_embed
//!   belink-eval instructions --dsn DSN [--corpus PATH] --ontology NAME --out FILE.jsonl
//!                            [--k 10] [--absent 0.15] [--seed 42] [--template chatml|llama3|plain]
//!                            [--synonyms N] [--mentions all|uncertain] [--gold-position random|retrieval]
//!                            [--answer letter|name]
//!       set-wise instruction-tuning examples for the re-ranker (see README)
//!   belink-eval stress --dsn DSN --corpus PATH --ontology NAME [--clients 16] [--seconds 300]
//!                      [--kill-server N] [--cancel N] [--annotate-interrupts N]
//!       load with faults injected (see stress.rs)
//!   belink-eval evaluate --dsn DSN --out DIR --dataset SPEC [--dataset SPEC]...
//!                        [--reranker-model GGUF --adapter FILE]
//!       the evaluation report: SPEC is
//!       name=N,corpus=PATH,ontology=NAME[,ontology_file=PATH][,format=F][,train=PATH];
//!       --reranker-model: re-ranking with another model and the adapter tuned for it (the
//!       settings are reset at the end)
//!   belink-eval rerank-sweep --dsn DSN --out FILE --dataset SPEC... [--ks 5,10,20]
//!                            [--reranker-model GGUF --adapter FILE]
//!       the re-ranker zero-shot against tuned at each k, over datasets already loaded (the
//!       cluster make eval leaves); restarts the model server with each adapter setting. By
//!       default the default model and its installed adapter; --reranker-model another model,
//!       with --adapter the adapter tuned for it. A REPORT.md beside FILE gets the table too
//!
//!   belink-eval mentions --corpus PATH
//!       the corpus' mentions with one gold id as TSV lines "id<TAB>text" (training names for
//!       encoder-train --names)
//!   belink-eval link --dsn DSN --corpus PATH --ontology NAME
//!       end-to-end linking alone (the report's table) over an ontology already loaded and
//!       indexed: belink_link over every document in each configuration, (span, concept) scores
//!   belink-eval detect --ontology FILE [--format F] --corpus PATH [--errors FILE.md] [--passes N]
//!                      [--scorer FILE] [--nesting outermost|inner]
//!       mention detection alone without a cluster: the dictionary over the ontology file's
//!       names, span precision / recall / F1 (strict and overlap) on the corpus, documents
//!       per second (over N passes, default 1), and (--errors) every missed, partial and
//!       spurious span
//!   belink-eval train-span-scorer --ontology FILE [--format F] [--roots ID,ID] --out FILE
//!                                 (--corpus PATH | --distant FOLDS [--text PATH]...) [--dev PATH]
//!                                 [--threshold P] [--seed N] [--epochs N] [--manifest FILE.json]
//!       a span scorer trained on the corpus' annotated spans, or (--distant) without
//!       annotations from the ontology's names over its definitions and the texts given (a
//!       share of the concepts held out of the proposing dictionary in each fold); with --dev,
//!       detection on it with and without the scorer
//!   belink-eval dense-probe --model DIR --ontology FILE --corpus PATH [--names TSV]
//!       dense retrieval alone without a cluster: exact cosine search of the corpus' gold
//!       mentions over the ontology file's names (and the TSV's), recall@1/5/10
//!   belink-eval trigram-probe --ontology FILE [--format F] --corpus PATH [--limit 50] [--threshold 0.3]
//!       the model server's trigram index alone without a cluster: built from the ontology
//!       file's names (read one concept at a time), then searched for every corpus mention;
//!       build time, memory, and p50 / p95 / mean ms per search with belink's policy and with
//!       the threshold alone
//!
//! DSN is a libpq-style string, e.g. "host=/path/to/socket/dir port=54330 user=postgres".

mod configs;
mod db;
mod evaluate;
use belink_core::ids;
mod dense_probe;
mod detection;
mod instructions;
mod linking;
mod plots;
mod protocol;
mod report;
mod stress;
mod trigram_probe;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use belink_core::mentions::dictionary::DictionaryName;
use belink_core::mentions::scorer::{SpanScorer, Training};
use belink_core::mentions::Nesting;
use belink_eval::corpus::{load_corpus, Document};
use postgres::{Client, NoTls};

use belink_models::cli::Args;

fn main() -> ExitCode {
    let args = match Args::from_env() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("belink-eval: {message}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command.as_deref() {
        Some("load") => load(&args),
        Some("retrieval") => retrieval(&args),
        Some("evaluate") => evaluate(&args),
        Some("rerank-sweep") => rerank_sweep(&args),
        Some("index") => index(&args),
        Some("tune-fusion") => tune_fusion(&args),
        Some("memory") => memory(&args),
        Some("normalize") => normalize(&args),
        Some("throughput") => throughput(&args),
        Some("annotate-scale") => annotate_scale(&args),
        Some("instructions") => instructions(&args),
        Some("stress") => stress(&args),
        Some("mentions") => mentions(&args),
        Some("dense-probe") => dense_probe(&args),
        Some("trigram-probe") => trigram_probe(&args),
        Some("detect") => detect(&args),
        Some("train-span-scorer") => train_span_scorer(&args),
        Some("link") => link(&args),
        _ => Err(format!("usage: belink-eval load|retrieval|evaluate --dsn DSN ... (see {})", file!())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("belink-eval: {message}");
            ExitCode::FAILURE
        }
    }
}

fn connect(args: &Args) -> Result<Client, String> {
    let dsn = args.required("dsn")?;
    Client::connect(dsn, NoTls).map_err(|e| format!("cannot connect to {dsn}: {e}"))
}

fn load(args: &Args) -> Result<(), String> {
    let mut client = connect(args)?;
    println!("| ontology | file | format | version | concepts | names | obsolete | seconds |");
    println!("|---|---|---|---|---:|---:|---:|---:|");
    for spec in &args.positional {
        let (name, rest) = spec.split_once('=').ok_or_else(|| format!("expected NAME=PATH[:FORMAT], got {spec}"))?;
        let (path, format) = rest.rsplit_once(':').unwrap_or((rest, "auto"));
        let started = Instant::now();
        let row = client
            .query_one(
                "SELECT format, version, concepts, names, obsolete_skipped FROM belink_load_ontology($1, $2, $3)",
                &[&name, &path, &format],
            )
            .map_err(|e| format!("loading {path}: {e}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let file = Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        println!(
            "| {name} | {file} | {} | {} | {} | {} | {} | {seconds:.2} |",
            row.get::<_, String>(0),
            row.get::<_, Option<String>>(1).unwrap_or_default(),
            row.get::<_, i64>(2),
            row.get::<_, i64>(3),
            row.get::<_, i64>(4),
        );
    }
    // Fresh planner statistics, as a DBA would take after a bulk load.
    client.batch_execute("ANALYZE belink.concepts, belink.names").map_err(|e| e.to_string())?;
    Ok(())
}

fn retrieval(args: &Args) -> Result<(), String> {
    let corpus_path = args.required("corpus")?;
    let ontology = args.required("ontology")?;
    let ks = args.list_of_numbers("k", &[1, 5, 10])?;
    let max_k = *ks.iter().max().expect("at least one k");
    let documents = load_corpus(Path::new(corpus_path)).map_err(|e| format!("{corpus_path}: {e}"))?;
    let mut client = connect(args)?;
    let mode = args.get("retrieval").unwrap_or("hybrid");
    client.execute("SELECT set_config('belink.retrieval', $1, false)", &[&mode]).map_err(|e| db::db_message(&e))?;
    let statement = client
        .prepare(
            "SELECT k.concept_id, k.alt_ids
             FROM belink_candidates($1, $2, $3) WITH ORDINALITY AS c
             JOIN belink.concepts k ON k.ontology = c.ontology AND k.concept_id = c.concept_id
             ORDER BY c.ordinality",
        )
        .map_err(|e| e.to_string())?;

    let mut hits = vec![0usize; ks.len()];
    let mut mentions = 0usize;
    let started = Instant::now();
    for document in &documents {
        for mention in &document.mentions {
            if mention.is_nil() {
                continue;
            }
            mentions += 1;
            let gold: Vec<String> = mention.concept_ids().iter().map(|id| ids::canonical(id)).collect();
            let rows = client
                .query(&statement, &[&mention.text, &ontology, &(max_k as i32)])
                .map_err(|e| format!("belink_candidates({:?}): {e}", mention.text))?;
            let first_hit = rows.iter().position(|row| {
                let id: String = row.get(0);
                let alt_ids: Vec<String> = row.get(1);
                std::iter::once(id).chain(alt_ids).any(|candidate| gold.contains(&ids::canonical(&candidate)))
            });
            if let Some(rank) = first_hit {
                for (hit, k) in hits.iter_mut().zip(&ks) {
                    if rank < *k {
                        *hit += 1;
                    }
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let corpus = Path::new(corpus_path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let header: Vec<String> = ks.iter().map(|k| format!("recall@{k}")).collect();
    println!("| corpus | ontology | retrieval | mentions | {} | mentions/s |", header.join(" | "));
    println!("|---|---|---|---:|{}---:|", "---:|".repeat(ks.len()));
    let recalls: Vec<String> = hits.iter().map(|h| format!("{:.3}", *h as f64 / mentions.max(1) as f64)).collect();
    println!(
        "| {corpus} | {ontology} | {mode} | {mentions} | {} | {:.0} |",
        recalls.join(" | "),
        mentions as f64 / seconds
    );
    Ok(())
}

fn evaluate(args: &Args) -> Result<(), String> {
    let out = Path::new(args.required("out")?);
    let specs = args.all("dataset").iter().map(|s| evaluate::DatasetSpec::parse(s)).collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        return Err("no --dataset given".into());
    }
    let reranker = evaluate::RerankerChoice::new(args.get("reranker-model"), args.get("adapter"))?;
    plots::register_fonts()?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut client = connect(args)?;
    // Always set: an earlier run that stopped half-way may have left another model configured.
    reranker.serve(&mut client)?;
    let mut results = Vec::new();
    for spec in &specs {
        eprintln!("belink-eval: {} ({} with {})", spec.name, spec.corpus.display(), spec.ontology);
        results.push(evaluate::evaluate_dataset(&mut client, spec)?);
    }
    evaluate::RerankerChoice::DEFAULT.serve(&mut client)?;
    let info = run_info(args, &mut client, "belink-eval evaluate")?;
    let runs: Vec<&evaluate::NormalizationRun> = results.iter().flat_map(|r| &r.runs).collect();
    plots::accuracy_at_k(&runs, &out.join("accuracy_at_k.png"))?;
    let classic: Vec<&evaluate::NormalizationRun> =
        runs.iter().copied().filter(|r| r.protocol == protocol::Protocol::Classic).collect();
    plots::latency(&classic, &out.join("latency.png"))?;
    let write = |name: &str, text: String| std::fs::write(out.join(name), text).map_err(|e| format!("{name}: {e}"));
    let sweep = std::fs::read_to_string(out.join("rerank-sweep.md")).ok();
    write("REPORT.md", report::with_sweep(&report::report(&info, &reranker, &results), sweep.as_deref()))?;
    write("errors.md", report::error_analysis(&results))?;
    eprintln!("belink-eval: report written to {}", out.join("REPORT.md").display());
    Ok(())
}

fn rerank_sweep(args: &Args) -> Result<(), String> {
    let out = Path::new(args.required("out")?);
    let specs = args.all("dataset").iter().map(|s| evaluate::DatasetSpec::parse(s)).collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        return Err("no --dataset given".into());
    }
    let ks: Vec<usize> = args
        .get("ks")
        .unwrap_or("5,10,20")
        .split(',')
        .map(|k| k.parse().ok().filter(|k| (1..=25).contains(k)).ok_or(format!("--ks: {k} is not 1..25")))
        .collect::<Result<_, _>>()?;
    let reranker = evaluate::RerankerChoice::new(args.get("reranker-model"), args.get("adapter"))?;
    let mut client = connect(args)?;
    let sweep = evaluate::rerank_sweep(&mut client, &specs, &ks, &reranker)?;
    let info = run_info(args, &mut client, "belink-eval rerank-sweep")?;
    let sweep = report::rerank_sweep(&info, &reranker, &sweep);
    std::fs::write(out, &sweep).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("belink-eval: written to {}", out.display());
    // The evaluation report beside it carries the sweep's table.
    let report_path = out.with_file_name("REPORT.md");
    if let Ok(report) = std::fs::read_to_string(&report_path) {
        std::fs::write(&report_path, report::with_sweep(&report, Some(&sweep)))
            .map_err(|e| format!("{}: {e}", report_path.display()))?;
        eprintln!("belink-eval: its table copied into {}", report_path.display());
    }
    Ok(())
}

/// What a report says about its run: the command, machine, server, date and commit.
fn run_info(args: &Args, client: &mut Client, command: &str) -> Result<report::RunInfo, String> {
    Ok(report::RunInfo {
        command: args.get("command-line").unwrap_or(command).to_string(),
        machine: args.get("machine").unwrap_or("(not given)").to_string(),
        server: client
            .query_one("SELECT version()", &[])
            .map(|row| row.get::<_, String>(0))
            .map_err(|e| e.to_string())?,
        date: args.get("date").unwrap_or("(not given)").to_string(),
        commit: args.get("commit").unwrap_or("(not given)").to_string(),
    })
}

fn tune_fusion(args: &Args) -> Result<(), String> {
    let ontology = args.required("ontology")?;
    let corpus = Path::new(args.required("corpus")?);
    let mut client = connect(args)?;
    let tuning = evaluate::tune_fusion_on_corpus(&mut client, ontology, corpus)?;
    let [exact, trigram, dense] = tuning.weights;
    println!("| ontology | mentions | equal weights acc@1 | tuned acc@1 | weights (exact, trigram, dense) |");
    println!("|---|---:|---:|---:|---|");
    println!(
        "| {ontology} | {} | {:.3} | {:.3} | {exact}, {trigram}, {dense} |",
        tuning.examples, tuning.equal_weights, tuning.tuned
    );
    Ok(())
}

fn index(args: &Args) -> Result<(), String> {
    let ontology = args.required("ontology")?;
    let mut client = connect(args)?;
    let names: i64 = client
        .query_one("SELECT count(*) FROM belink.names WHERE ontology = $1", &[&ontology])
        .map_err(|e| db::db_message(&e))?
        .get(0);
    let started = Instant::now();
    client
        .execute("CALL belink_index($1)", &[&ontology])
        .map_err(|e| format!("belink_index({ontology}): {}", db::db_message(&e)))?;
    let seconds = started.elapsed().as_secs_f64();
    let row = client
        .query_one("SELECT rss_mb, peak_rss_mb FROM belink_worker_status()", &[])
        .map_err(|e| db::db_message(&e))?;
    println!("| ontology | names | seconds | names/s | server RSS MB | server peak RSS MB |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| {ontology} | {names} | {seconds:.1} | {:.0} | {:.0} | {:.0} |",
        names as f64 / seconds,
        row.get::<_, f64>(0),
        row.get::<_, f64>(1)
    );
    Ok(())
}

/// Resident memory (MB) of a process, from /proc (the bench runs on the database host).
pub(crate) fn rss_mb(pid: i32) -> Option<f64> {
    status_mb(pid, "VmRSS:")
}

/// Private (anonymous) resident memory: unlike VmRSS, not the shared buffers a backend touched.
fn private_mb(pid: i32) -> Option<f64> {
    status_mb(pid, "RssAnon:")
}

fn status_mb(pid: i32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix(field))?.split_whitespace().next()?.parse().ok()?;
    Some(kb / 1024.0)
}

fn normalize(args: &Args) -> Result<(), String> {
    let corpus_path = args.required("corpus")?;
    let ontology = args.get("ontology");
    let batch: usize = args.get("batch").unwrap_or("100").parse().ok().filter(|&n| n > 0).ok_or("bad --batch")?;
    let documents = load_corpus(Path::new(corpus_path)).map_err(|e| format!("{corpus_path}: {e}"))?;
    let limit: usize = args.get("limit").map_or(Ok(usize::MAX), str::parse).map_err(|_| "bad --limit")?;
    let mentions: Vec<&str> = (documents.iter().flat_map(|d| &d.mentions))
        .filter(|m| !m.is_nil())
        .map(|m| m.text.as_str())
        .take(limit)
        .collect();
    let mut client = connect(args)?;
    let mode = args.get("retrieval").unwrap_or("hybrid");
    client.execute("SELECT set_config('belink.retrieval', $1, false)", &[&mode]).map_err(|e| db::db_message(&e))?;
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).map_err(|e| e.to_string())?.get(0);
    client.query_one("SELECT count(*) FROM belink.ontologies", &[]).map_err(|e| e.to_string())?;
    let private_before = private_mb(pid).unwrap_or_default();
    let one = client.prepare("SELECT count(*) FROM belink_normalize($1::text, NULL, $2)").map_err(|e| e.to_string())?;
    // Warm-up (the trigram index is loaded by the first call that needs it): not timed.
    client.query_one(&one, &[&mentions[0], &ontology]).map_err(|e| db::db_message(&e))?;
    let mut latencies = Vec::with_capacity(mentions.len());
    let started = Instant::now();
    for mention in &mentions {
        let call = Instant::now();
        client.query_one(&one, &[mention, &ontology]).map_err(|e| db::db_message(&e))?;
        latencies.push(call.elapsed().as_secs_f64() * 1000.0);
    }
    let single_rate = mentions.len() as f64 / started.elapsed().as_secs_f64();
    let many =
        client.prepare("SELECT count(*) FROM belink_normalize($1::text[], NULL, $2)").map_err(|e| e.to_string())?;
    let started = Instant::now();
    for chunk in mentions.chunks(batch) {
        client.query_one(&many, &[&chunk, &ontology]).map_err(|e| db::db_message(&e))?;
    }
    let array_rate = mentions.len() as f64 / started.elapsed().as_secs_f64();
    let private_after = private_mb(pid).unwrap_or_default();
    let (p50, p95) = evaluate::percentiles(&latencies);
    println!("| ontology | retrieval | mentions | p50 ms | p95 ms | mentions/s (one per call) | mentions/s (arrays of {batch}) | backend private memory growth (MB) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {mode} | {} | {p50:.1} | {p95:.1} | {single_rate:.0} | {array_rate:.0} | {:.1} |",
        ontology.unwrap_or("(all)"),
        mentions.len(),
        private_after - private_before
    );
    Ok(())
}

fn memory(args: &Args) -> Result<(), String> {
    let connections =
        args.get("connections").map(|n| n.parse::<usize>()).transpose().map_err(|e| e.to_string())?.unwrap_or(16);
    let mut clients = (0..connections).map(|_| connect(args)).collect::<Result<Vec<_>, _>>()?;
    let mut before = Vec::new();
    let mut pids = Vec::new();
    for client in &mut clients {
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).map_err(|e| e.to_string())?.get(0);
        // Same warm-up for both measurements: the extension is loaded, the catalog read.
        client.query_one("SELECT count(*) FROM belink.ontologies", &[]).map_err(|e| e.to_string())?;
        pids.push(pid);
        before.push(rss_mb(pid).ok_or(format!("no resident memory for backend {pid}"))?);
    }
    for client in &mut clients {
        client.query_one("SELECT belink_embed('colorectal adenoma')::text", &[]).map_err(|e| db::db_message(&e))?;
    }
    let after: Vec<f64> = pids
        .iter()
        .map(|&pid| rss_mb(pid).ok_or(format!("no resident memory for backend {pid}")))
        .collect::<Result<_, _>>()?;
    let deltas: Vec<f64> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
    let mean = deltas.iter().sum::<f64>() / deltas.len() as f64;
    let max = deltas.iter().cloned().fold(f64::MIN, f64::max);
    let row = clients[0]
        .query_one("SELECT server_pid, rss_mb, peak_rss_mb FROM belink_worker_status()", &[])
        .map_err(|e| db::db_message(&e))?;
    println!("| connections | backend RSS before (MB, mean) | extra RSS after belink_embed (MB, mean / max) | model server RSS (MB) | server peak (MB) |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {connections} | {:.1} | {mean:.2} / {max:.2} | {:.0} | {:.0} |",
        before.iter().sum::<f64>() / before.len() as f64,
        row.get::<_, f64>(1),
        row.get::<_, f64>(2)
    );
    Ok(())
}

fn throughput(args: &Args) -> Result<(), String> {
    let corpus_path = args.required("corpus")?;
    let ontology = args.required("ontology")?;
    let repeat: usize = args.get("repeat").unwrap_or("1").parse().map_err(|_| "bad --repeat")?;
    let runs: usize = args.get("runs").unwrap_or("1").parse().ok().filter(|&n| n > 0).ok_or("bad --runs")?;
    let documents = load_corpus(Path::new(corpus_path)).map_err(|e| format!("{corpus_path}: {e}"))?;
    let mut client = connect(args)?;
    let sql = |client: &mut Client, statement: &str| client.batch_execute(statement).map_err(|e| db::db_message(&e));
    sql(
        &mut client,
        "DROP TABLE IF EXISTS bench_docs; CREATE TABLE bench_docs (id bigint PRIMARY KEY, body text, entities jsonb)",
    )?;
    let insert = client.prepare("INSERT INTO bench_docs VALUES ($1, $2, NULL)").map_err(|e| e.to_string())?;
    let mut id = 0i64;
    for _ in 0..repeat {
        for document in &documents {
            id += 1;
            client.execute(&insert, &[&id, &document.text]).map_err(|e| e.to_string())?;
        }
    }
    let characters: usize = documents.iter().map(|d| d.text.chars().count()).sum::<usize>() * repeat;
    println!("{id} documents ({} characters on average)\n", characters / id.max(1) as usize);
    // Texts the model server embedded during the last run (every run embeds the same): the
    // mentions linking could not take a stored name vector for.
    println!("| how | retrieval | documents | seconds | documents/s | texts embedded |");
    println!("|---|---|---:|---:|---:|---:|");
    let embedded_so_far = |client: &mut Client| -> Result<i64, String> {
        client
            .query_one("SELECT (belink_worker_status_json()->>'texts')::bigint", &[])
            .map(|row| row.get::<_, Option<i64>>(0).unwrap_or(0))
            .map_err(|e| db::db_message(&e))
    };
    // Each run in a new session: what one run retrieves (the session's retrieval cache) must
    // not speed up the next. The session's mention dictionary is built before timing. The
    // median of the runs is reported.
    let time = |how: &str, mode: &str, rerank: bool, statement: &str| -> Result<(), String> {
        // Re-ranking takes seconds per run, where the variation between runs matters little.
        let runs = if rerank { 1 } else { runs };
        let mut times = Vec::with_capacity(runs);
        let mut embedded = 0;
        for _ in 0..runs {
            let mut client = connect(args)?;
            sql(&mut client, "UPDATE bench_docs SET entities = NULL; DELETE FROM belink.annotation_jobs WHERE table_oid = 'bench_docs'::regclass")?;
            sql(&mut client, "VACUUM ANALYZE bench_docs")?;
            sql(&mut client, &format!("SET belink.retrieval = '{mode}'; SET belink.rerank = {rerank}"))?;
            sql(&mut client, &format!("SELECT belink_link('warm-up', '{ontology}')"))?;
            let texts_before = embedded_so_far(&mut client)?;
            let started = Instant::now();
            sql(&mut client, statement)?;
            times.push(started.elapsed().as_secs_f64());
            embedded = embedded_so_far(&mut client)? - texts_before;
        }
        times.sort_by(f64::total_cmp);
        let seconds = times[times.len() / 2];
        let configuration = if rerank { format!("{mode} + re-ranking") } else { mode.to_string() };
        let rate = id as f64 / seconds;
        let rate = if rate < 100.0 { format!("{rate:.1}") } else { format!("{rate:.0}") };
        println!("| {how} | {configuration} | {id} | {seconds:.3} | {rate} | {embedded} |");
        Ok(())
    };
    let update = format!("UPDATE bench_docs SET entities = belink_link(body, '{ontology}')");
    let annotate =
        format!("CALL belink_annotate('bench_docs', 'body', 'entities', batch_size => 500, ontology => '{ontology}')");
    time("UPDATE ... SET entities = belink_link(body)", "lexical", false, &update)?;
    time("UPDATE ... SET entities = belink_link(body)", "hybrid", false, &update)?;
    time("CALL belink_annotate(...)", "hybrid", false, &annotate)?;
    if args.get("rerank") == Some("on") {
        time("UPDATE ... SET entities = belink_link(body)", "hybrid", true, &update)?;
        time("CALL belink_annotate(...)", "hybrid", true, &annotate)?;
    }
    sql(&mut client, "UPDATE bench_docs SET entities = NULL")?;
    Ok(())
}

/// belink_annotate over `--rows` rows; its progress NOTICEs (every 5 s) give the rate in each
/// window, so a job that slows down as it goes shows it.
fn annotate_scale(args: &Args) -> Result<(), String> {
    let ontology = args.required("ontology")?.replace('\'', "''");
    let rows: i64 = args.get("rows").unwrap_or("1000000").parse().map_err(|_| "bad --rows")?;
    let batch: i64 = args.get("batch").unwrap_or("1000").parse().map_err(|_| "bad --batch")?;
    let mut setup = connect(args)?;
    setup
        .batch_execute(&format!(
            "DELETE FROM belink.annotation_jobs WHERE table_oid = to_regclass('bench_scale');
             DROP TABLE IF EXISTS bench_scale;
             CREATE TABLE bench_scale (id bigint PRIMARY KEY, body text, entities jsonb);
             INSERT INTO bench_scale
             SELECT g, format('Patient %s: breast cancer at %s, then colorectal cancer and diabetes.', g, g % 90), NULL
             FROM generate_series(1, {rows}) g;"
        ))
        .map_err(|e| db::db_message(&e))?;
    setup.batch_execute("VACUUM ANALYZE bench_scale").map_err(|e| db::db_message(&e))?;
    let progress: std::sync::Arc<std::sync::Mutex<Vec<(Instant, i64)>>> = Default::default();
    let seen = progress.clone();
    let mut config: postgres::Config = args.required("dsn")?.parse().map_err(|e| format!("--dsn: {e}"))?;
    config.notice_callback(move |notice| {
        // "belink_annotate(bench_scale.entities): N rows annotated (R rows/s)"
        let done = notice.message().split("): ").nth(1).and_then(|rest| rest.split(' ').next()?.parse().ok());
        if let Some(done) = done {
            seen.lock().unwrap().push((Instant::now(), done));
        }
    });
    let mut client = config.connect(NoTls).map_err(|e| e.to_string())?;
    client.batch_execute("SET belink.retrieval = 'lexical'").map_err(|e| db::db_message(&e))?;
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "CALL belink_annotate('bench_scale', 'body', 'entities', batch_size => {batch}, ontology => '{ontology}')"
        ))
        .map_err(|e| db::db_message(&e))?;
    let seconds = started.elapsed().as_secs_f64();
    let windows: Vec<f64> = {
        let progress = progress.lock().unwrap();
        let points: Vec<(Instant, i64)> = std::iter::once((started, 0)).chain(progress.iter().copied()).collect();
        points.windows(2).map(|w| (w[1].1 - w[0].1) as f64 / (w[1].0 - w[0].0).as_secs_f64()).collect()
    };
    let (first, last) = (windows.first().copied().unwrap_or(f64::NAN), windows.last().copied().unwrap_or(f64::NAN));
    let slowest = windows.iter().copied().fold(f64::NAN, f64::min);
    println!("| rows | batch | seconds | rows/s | first 5 s | last 5 s | slowest 5 s | windows |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {rows} | {batch} | {seconds:.1} | {:.0} | {first:.0} | {last:.0} | {slowest:.0} | {} |",
        rows as f64 / seconds,
        windows.len()
    );
    setup.batch_execute("DROP TABLE bench_scale").map_err(|e| db::db_message(&e))?;
    Ok(())
}

fn instructions(args: &Args) -> Result<(), String> {
    use belink_core::decision::prompt::ChatTemplate;
    let corpus = args.get("corpus").map(Path::new);
    let ontology = args.required("ontology")?;
    let out = Path::new(args.required("out")?);
    let number = |flag: &str, default: &str| args.get(flag).unwrap_or(default).to_string();
    let options = instructions::Options {
        k: number("k", "10").parse().map_err(|_| "bad --k")?,
        absent_share: number("absent", "0.15").parse().map_err(|_| "bad --absent")?,
        seed: number("seed", "42").parse().map_err(|_| "bad --seed")?,
        template: match args.get("template").unwrap_or("chatml") {
            "chatml" => ChatTemplate::ChatMl,
            "llama3" => ChatTemplate::Llama3,
            "gemma" => ChatTemplate::Gemma,
            "plain" => ChatTemplate::Plain,
            other => return Err(format!("unknown --template {other}: chatml, llama3, gemma or plain")),
        },
        context_chars: 200,
        synonyms: number("synonyms", "0").parse().map_err(|_| "bad --synonyms")?,
        gold_position: match args.get("gold-position").unwrap_or("random") {
            "random" => instructions::GoldPosition::Random,
            "retrieval" => instructions::GoldPosition::Retrieval,
            other => return Err(format!("unknown --gold-position {other}: random or retrieval")),
        },
        answer: match args.get("answer").unwrap_or("letter") {
            "letter" => belink_core::decision::prompt::AnswerForm::Letter,
            "name" => belink_core::decision::prompt::AnswerForm::Name,
            other => return Err(format!("unknown --answer {other}: letter or name")),
        },
        uncertain_only: match args.get("mentions").unwrap_or("all") {
            "all" => false,
            "uncertain" => true,
            other => return Err(format!("unknown --mentions {other}: all or uncertain")),
        },
    };
    if !(1..=belink_core::decision::prompt::MAX_CANDIDATES).contains(&options.k)
        || !(0.0..=1.0).contains(&options.absent_share)
    {
        return Err("--k must be 1..25 and --absent between 0 and 1".into());
    }
    let mut client = connect(args)?;
    let counts = instructions::write_examples(&mut client, corpus, ontology, out, &options)?;
    eprintln!(
        "belink-eval: {} examples ({} from the corpus, {} from synonyms; {} without their gold concept) written to {}; \
         {} mentions left out because retrieval decides them alone",
        counts.written,
        counts.from_corpus,
        counts.from_synonyms,
        counts.gold_absent,
        out.display(),
        counts.decided_by_retrieval
    );
    Ok(())
}

fn stress(args: &Args) -> Result<(), String> {
    let corpus = args.required("corpus")?;
    let documents = load_corpus(Path::new(corpus)).map_err(|e| format!("{corpus}: {e}"))?;
    let number = |flag: &str, default: usize| -> Result<usize, String> {
        args.get(flag).map(|v| v.parse().map_err(|_| format!("bad --{flag}"))).transpose().map(|v| v.unwrap_or(default))
    };
    let options = stress::Options {
        dsn: args.required("dsn")?.to_string(),
        ontology: args.required("ontology")?.to_string(),
        clients: number("clients", 16)?,
        duration: Duration::from_secs(number("seconds", 300)? as u64),
        server_kills: number("kill-server", 0)?,
        cancels: number("cancel", 0)?,
        annotate_interrupts: number("annotate-interrupts", 0)?,
    };
    println!("{}", stress::run(&options, &documents)?);
    Ok(())
}

fn mentions(args: &Args) -> Result<(), String> {
    let path = args.required("corpus")?;
    let documents = load_corpus(Path::new(path)).map_err(|e| format!("{path}: {e}"))?;
    for (id, text) in dense_probe::single_id_mentions(&documents) {
        println!("{id}\t{}", text.replace(['\t', '\n'], " "));
    }
    Ok(())
}

fn link(args: &Args) -> Result<(), String> {
    let mut client = connect(args)?;
    let corpus_path = args.required("corpus")?;
    let documents = load_corpus(Path::new(corpus_path)).map_err(|e| format!("{corpus_path}: {e}"))?;
    let ontology = args.required("ontology")?;
    let name = Path::new(corpus_path).file_stem().map_or("corpus".into(), |s| s.to_string_lossy().into_owned());
    evaluate::store_corpus(&mut client, &name, &documents)?;
    let runs = linking::evaluate_linking(&mut client, &name, ontology, "as loaded", &documents)?;
    println!("| configuration | {} | documents/s |", linking::SCORE_HEADER);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        println!(
            "| {} | {} | {:.1} |",
            run.config,
            linking::score_cells(&run.strict, &run.overlap),
            run.documents_per_second
        );
    }
    Ok(())
}

fn detect(args: &Args) -> Result<(), String> {
    let (_, documents, names) = corpus_and_dictionary_names(args)?;
    let passes = args.get("passes").map_or(Ok(1), |p| p.parse::<usize>().map_err(|e| format!("--passes: {e}")))?;
    let scorer = match args.get("scorer") {
        Some(path) => Some(read_scorer(path, args.get("threshold"))?),
        None => None,
    };
    let nesting = match args.get("nesting").unwrap_or("outermost") {
        "outermost" => Nesting::Outermost,
        "inner" => Nesting::Inner,
        other => return Err(format!("--nesting: {other} is neither outermost nor inner")),
    };
    let run = detection::evaluate(names, &documents, passes, scorer.as_ref(), nesting)?;
    if let Some(path) = args.get("errors") {
        std::fs::write(path, run.errors()).map_err(|e| format!("{path}: {e}"))?;
    }
    println!("| {} | documents/s | dictionary build s | dictionary MB |", linking::SCORE_HEADER);
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} | {:.1} | {:.1} |",
        linking::score_cells(&run.strict, &run.overlap),
        run.documents_per_second,
        run.dictionary_build_seconds,
        run.dictionary_bytes as f64 / 1e6
    );
    let causes: Vec<String> =
        detection::CAUSES.iter().zip(run.cause_counts()).map(|(cause, n)| format!("{cause} {n}")).collect();
    println!("\nerrors by cause: {}", causes.join(" · "));
    Ok(())
}

/// `--corpus`'s path and documents, and the detection names of `--ontology` (`--format`,
/// `--roots`).
fn corpus_and_dictionary_names(args: &Args) -> Result<(&str, Vec<Document>, Vec<DictionaryName>), String> {
    let corpus_path = args.required("corpus")?;
    let documents = load_corpus(Path::new(corpus_path)).map_err(|e| format!("{corpus_path}: {e}"))?;
    let names = detection::dictionary_names(
        Path::new(args.required("ontology")?),
        args.get("format").unwrap_or("auto"),
        &roots_argument(args),
    )?;
    Ok((corpus_path, documents, names))
}

/// `--roots ID,ID`: the branches of the ontology detection is restricted to.
fn roots_argument(args: &Args) -> Vec<String> {
    let roots = args.get("roots").unwrap_or_default().split(',');
    roots.map(str::trim).filter(|id| !id.is_empty()).map(String::from).collect()
}

fn read_scorer(path: &str, threshold: Option<&str>) -> Result<SpanScorer, String> {
    let mut scorer = detection::read_scorer(path)?;
    if let Some(threshold) = threshold {
        scorer.threshold = threshold.parse().map_err(|e| format!("--threshold: {e}"))?;
    }
    Ok(scorer)
}

fn train_span_scorer(args: &Args) -> Result<(), String> {
    let ontology = args.required("ontology")?;
    let format = args.get("format").unwrap_or("auto");
    let parsed = detection::read_ontology(Path::new(ontology), format)?;
    let names = detection::detection_names(&parsed, &roots_argument(args));
    let mut training = Training::default();
    if let Some(seed) = args.get("seed") {
        training.seed = seed.parse().map_err(|e| format!("--seed: {e}"))?;
    }
    if let Some(epochs) = args.get("epochs") {
        training.epochs = epochs.parse().map_err(|e| format!("--epochs: {e}"))?;
    }
    let name_count = names.len();
    let started = std::time::Instant::now();
    // Trained on an annotated corpus, or by distant supervision from the ontology's names
    // over its definitions and any unannotated text.
    let (mut scorer, training_data) = match args.optional_number("distant")? {
        None => {
            let corpus_path = args.required("corpus")?;
            let documents = load_corpus(Path::new(corpus_path)).map_err(|e| format!("{corpus_path}: {e}"))?;
            let (scorer, [candidates, mentions, unreachable]) =
                detection::train_scorer(names.clone(), &documents, &training)?;
            println!(
                "{} documents, {candidates} candidate spans, {mentions} of them gold mentions, {unreachable} gold \
                 mentions no candidate has",
                documents.len()
            );
            let record = serde_json::json!({
                "file": file_record(corpus_path)?,
                "documents": documents.len(),
                "candidate_spans": candidates,
                "gold_mentions_among_candidates": mentions,
                "gold_mentions_no_candidate_has": unreachable,
            });
            (scorer, serde_json::json!({ "training_corpus": record }))
        }
        Some(folds) => {
            let mut texts = detection::ontology_definitions(&parsed);
            let definitions = texts.len();
            let mut text_files = Vec::new();
            for path in args.all("text") {
                let documents = load_corpus(Path::new(path)).map_err(|e| format!("{path}: {e}"))?;
                text_files.push(serde_json::json!({ "file": file_record(path)?, "documents": documents.len() }));
                texts.extend(documents.into_iter().map(|d| d.text));
            }
            let (scorer, counts) =
                detection::train_scorer_distant(names.clone(), &texts, folds as usize, training.seed, &training)?;
            println!(
                "distant supervision: {definitions} definitions and {} other texts, {} silver mentions; {folds} folds, \
                 {} candidate spans, {} of them silver mentions; held-out concepts' mentions: {} among the \
                 candidates, {} not",
                texts.len() - definitions,
                counts.silver_mentions,
                counts.candidates,
                counts.positives,
                counts.held_out_found,
                counts.held_out_missed,
            );
            let record = serde_json::json!({
                "folds": folds,
                "ontology_definitions": definitions,
                "unannotated_texts": text_files,
                "silver_mentions": counts.silver_mentions,
                "candidate_spans": counts.candidates,
                "silver_mentions_among_candidates": counts.positives,
                "held_out_mentions_among_candidates": counts.held_out_found,
                "held_out_mentions_no_candidate_has": counts.held_out_missed,
            });
            (scorer, serde_json::json!({ "distant_supervision": record }))
        }
    };
    let training_seconds = started.elapsed().as_secs_f64();
    scorer.threshold = match args.get("threshold") {
        Some(t) => t.parse().map_err(|e| format!("--threshold: {e}"))?,
        None => 0.5,
    };
    let out = args.required("out")?;
    std::fs::write(out, scorer.to_text()).map_err(|e| format!("{out}: {e}"))?;
    println!("trained in {training_seconds:.1} s ({training:?}); written to {out}");
    // Dev figures, dictionary alone and with the scorer, for the manifest.
    let mut dev = serde_json::Map::new();
    if let Some(dev_path) = args.get("dev") {
        let dev_documents = load_corpus(Path::new(dev_path)).map_err(|e| format!("{dev_path}: {e}"))?;
        for (label, scorer) in [("dictionary", None), ("span scorer", Some(&scorer))] {
            let run = detection::evaluate(names.clone(), &dev_documents, 1, scorer, Nesting::Outermost)?;
            println!("dev, {label}: {}", linking::score_cells(&run.strict, &run.overlap));
            dev.insert(label.to_string(), detection::figures(&run));
        }
        dev.insert("corpus".into(), file_record(dev_path)?);
    }
    if let Some(manifest) = args.get("manifest") {
        let mut record = serde_json::json!({
            "what": "BeLink span scorer (belink_core::mentions::scorer): logistic regression over hashed span and context features",
            "scorer": file_record(out)?,
            "weights": scorer.weights(),
            "threshold": scorer.threshold,
            "ontology": { "file": file_record(ontology)?, "detection_names": name_count },
            "training": {
                "epochs": training.epochs,
                "learning_rate": round(training.learning_rate),
                "l2": round(training.l2),
                "seed": training.seed,
                "seconds": training_seconds,
            },
            "dev": dev,
            "commit": git_commit(),
            "command": args.get("command").unwrap_or("belink-eval train-span-scorer"),
            "date": args.get("date"),
        });
        if let (Some(record), serde_json::Value::Object(data)) = (record.as_object_mut(), training_data) {
            record.extend(data);
        }
        let text = serde_json::to_string_pretty(&record).map_err(|e| e.to_string())? + "\n";
        std::fs::write(manifest, text).map_err(|e| format!("{manifest}: {e}"))?;
    }
    Ok(())
}

/// An f32 setting as written ("0.2", not "0.20000000298023224").
fn round(value: f32) -> serde_json::Value {
    value.to_string().parse::<f64>().map_or(serde_json::Value::Null, serde_json::Value::from)
}

/// A file's name (as given) and the sha256 of its content.
fn file_record(path: &str) -> Result<serde_json::Value, String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let name = Path::new(path).file_name().map_or(path.into(), |n| n.to_string_lossy().into_owned());
    Ok(serde_json::json!({ "name": name, "bytes": bytes.len(), "sha256": digest }))
}

fn git_commit() -> Option<String> {
    let output = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn trigram_probe(args: &Args) -> Result<(), String> {
    let corpus_path = args.required("corpus")?;
    let corpus = load_corpus(Path::new(corpus_path)).map_err(|e| format!("{corpus_path}: {e}"))?;
    let format = belink_core::ontology::parse_format_argument(args.get("format").unwrap_or("auto"))
        .map_err(|e| e.to_string())?;
    let limit = args.number("limit", 50.0)? as usize;
    let threshold = args.number("threshold", 0.3)?;
    let probe = trigram_probe::probe(Path::new(args.required("ontology")?), format, &corpus, limit, threshold)?;
    println!(
        "{} names, index built in {:.1} s, {:.0} MB; {} mentions, {limit} names each at threshold {threshold}\n",
        probe.names, probe.build_seconds, probe.memory_mb, probe.mentions
    );
    println!("| search | p50 ms | p95 ms | mean ms |\n|---|---:|---:|---:|");
    for (label, p50, p95, mean) in probe.latencies {
        println!("| {label} | {p50:.2} | {p95:.2} | {mean:.2} |");
    }
    Ok(())
}

fn dense_probe(args: &Args) -> Result<(), String> {
    let corpus_path = args.required("corpus")?;
    let corpus = load_corpus(Path::new(corpus_path)).map_err(|e| format!("{corpus_path}: {e}"))?;
    let mut extra = Vec::new();
    for path in args.all("names") {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (id, name) = line.split_once('\t').ok_or_else(|| format!("{path}: expected 'id<TAB>name' lines"))?;
            extra.push((ids::canonical(id), name.to_string()));
        }
    }
    let model = args.required("model")?;
    let result = dense_probe::probe(Path::new(model), Path::new(args.required("ontology")?), &extra, &corpus)?;
    let recall: Vec<String> = result.recall_at.iter().map(|(k, r)| format!("\"recall@{k}\": {r:.4}")).collect();
    println!(
        "{{\"model\": \"{model}\", \"mentions\": {}, \"names\": {}, {}, \"seconds\": {:.0}}}",
        result.mentions,
        result.names,
        recall.join(", "),
        result.seconds
    );
    Ok(())
}
