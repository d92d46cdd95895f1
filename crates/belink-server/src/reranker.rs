//! The re-ranker's thread: loads the LLM on the first request, then scores the queued items
//! (one forward pass per item after the cached instruction prefix, the cores taking items in
//! turn) or generates answers (reference mode).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use belink_core::decision::prompt::RerankItem;
use belink_core::wire::ErrorCode;
use belink_models::llm::Reranker;
use belink_models::streams::Streams;

use crate::queue::{Job, Queue};
use crate::stats::{ModelKind, Stats};
use crate::Queues;

/// A request: its items and whether to generate; the answer: probabilities and answers.
pub struct RerankWork {
    pub generate: bool,
    pub items: Vec<RerankItem>,
}
pub type RerankAnswer = (Vec<Vec<f32>>, Vec<String>);
pub type RerankJob = Job<RerankWork, RerankAnswer>;
pub type RerankQueue = Queue<RerankWork, RerankAnswer>;

/// The re-ranker's state in belink_worker_status() until the first request loads it.
const NOT_LOADED_YET: &str = "not loaded yet (loads on the first re-ranking request)";

pub struct Settings {
    pub model: Option<PathBuf>,
    /// LoRA adapter merged into the model at load.
    pub adapter: Option<PathBuf>,
    pub device: String,
    /// Most items taken from the queue at once.
    pub max_batch: usize,
    pub batch_wait: Duration,
    /// Matrix products in bfloat16 on AMX where the CPU has it (belink.reranker_bf16).
    pub bf16: bool,
}

pub fn run(settings: Settings, streams: Arc<Streams>, queues: Arc<Queues>, stats: Arc<Stats>) {
    let queue = &queues.rerank;
    // Loaded on the first request: re-ranking is off by default, and the default model takes
    // about 600 MB once its weights are expanded to f32.
    if let Some(path) = &settings.model {
        stats.set_model(ModelKind::Reranker, &path.display().to_string(), NOT_LOADED_YET);
        stats.set_adapter(
            ModelKind::Reranker,
            &settings.adapter.as_ref().map(|a| a.display().to_string()).unwrap_or_default(),
        );
    }
    let mut reranker: Option<Result<Reranker, String>> = None;
    loop {
        let (live, abandoned) = queue.next_live_batch(settings.max_batch, queues.batch_wait(settings.batch_wait));
        stats.record_abandoned(ModelKind::Reranker, abandoned);
        let reranker = match reranker.get_or_insert_with(|| streams.install(|| load(&settings, &stats))) {
            Ok(reranker) => &*reranker,
            Err(message) => {
                for job in live {
                    let _ = job.reply.send(Err((ErrorCode::ModelUnavailable, message.clone())));
                }
                continue;
            }
        };
        let started = Instant::now();
        let (jobs, items) = (live.len(), live.iter().map(|j| j.work.items.len()).sum());
        let (scoring, generating): (Vec<RerankJob>, Vec<RerankJob>) = live.into_iter().partition(|j| !j.work.generate);
        // Scoring: every item of every job, each on the next free core.
        let all: Vec<RerankItem> = scoring.iter().flat_map(|j| j.work.items.iter().cloned()).collect();
        match reranker.score_on(&streams, &all) {
            Ok(probabilities) => {
                let mut probabilities = probabilities.into_iter();
                for job in scoring {
                    let mine: Vec<Vec<f32>> = probabilities.by_ref().take(job.work.items.len()).collect();
                    stats.record_request(ModelKind::Reranker, job.work.items.len(), job.enqueued.elapsed());
                    let _ = job.reply.send(Ok((mine, Vec::new())));
                }
            }
            Err(e) => fail(scoring, &e.to_string(), &stats),
        }
        // Generation, the reference mode: one item at a time.
        for job in generating {
            let answered: Result<RerankAnswer, String> = streams.install(|| {
                let probabilities = reranker.score(&job.work.items).map_err(|e| e.to_string())?;
                let answers = job
                    .work
                    .items
                    .iter()
                    .map(|item| reranker.generate(item))
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
                Ok((probabilities, answers))
            });
            match answered {
                Ok(answer) => {
                    stats.record_request(ModelKind::Reranker, job.work.items.len(), job.enqueued.elapsed());
                    let _ = job.reply.send(Ok(answer));
                }
                Err(message) => fail(vec![job], &message, &stats),
            }
        }
        stats.record_batch(ModelKind::Reranker, jobs, items, started.elapsed());
    }
}

fn fail(jobs: Vec<RerankJob>, message: &str, stats: &Stats) {
    stats.record_error(message);
    eprintln!("belink-server: re-ranker error: {message}");
    for job in jobs {
        let _ = job.reply.send(Err((ErrorCode::Inference, message.to_string())));
    }
}

fn load(settings: &Settings, stats: &Stats) -> Result<Reranker, String> {
    let Some(path) = &settings.model else {
        return Err("no re-ranker model is configured (belink.reranker_model)".into());
    };
    let started = Instant::now();
    let loaded = belink_models::select_device(&settings.device)
        .and_then(|device| {
            let mut reranker = Reranker::load(path, &device, settings.adapter.as_deref())?;
            let bf16 = settings.bf16 && reranker.use_bf16_products()?;
            Ok((reranker, bf16))
        })
        .map_err(|e| format!("re-ranker not loaded: {e}"));
    match &loaded {
        Ok((reranker, bf16)) => {
            let products = if *bf16 { "bfloat16 on AMX" } else { "f32" };
            eprintln!(
                "belink-server: re-ranker {}{} loaded in {:.1} s ({:?} chat template, {}-token instruction prefix cached, products: {products})",
                path.display(),
                settings.adapter.as_ref().map(|a| format!(" with adapter {}", a.display())).unwrap_or_default(),
                started.elapsed().as_secs_f64(),
                reranker.template(),
                reranker.prefix_len()
            );
            stats.set_model(ModelKind::Reranker, &path.display().to_string(), "loaded");
            stats.set_reranker_products(products);
        }
        Err(message) => {
            eprintln!("belink-server: {message}");
            stats.record_error(message);
            stats.set_model(ModelKind::Reranker, &path.display().to_string(), &format!("failed: {message}"));
        }
    }
    loaded.map(|(reranker, _)| reranker)
}
