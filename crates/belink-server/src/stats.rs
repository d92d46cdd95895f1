//! Counters the status request reports (belink_worker_status() in SQL), per model.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Encoder,
    Reranker,
}

#[derive(Default)]
struct Counters {
    state: String,
    model: String,
    /// The re-ranker's LoRA adapter, merged into its weights ("" without one).
    adapter: String,
    /// How the re-ranker's matrix products run ("f32", "bfloat16 on AMX"; "" until loaded).
    products: String,
    requests: u64,
    /// Texts (encoder) or items (re-ranker).
    units: u64,
    abandoned: u64,
    batches: u64,
    batch_requests_sum: u64,
    batch_requests_max: usize,
    batch_units_max: usize,
    compute_time: Duration,
    latency_sum: Duration,
    latency_max: Duration,
}

impl Counters {
    fn new(state: &str) -> Counters {
        Counters { state: state.into(), ..Counters::default() }
    }
}

struct All {
    encoder: Counters,
    reranker: Counters,
    encoder_dim: usize,
    encoder_pooling: String,
    encoder_ignores_case: bool,
    errors: u64,
    last_error: Option<String>,
}

pub struct Stats {
    started: Instant,
    device: String,
    all: Mutex<All>,
}

impl Stats {
    pub fn new(device: &str, reranker_configured: bool) -> Stats {
        let all = All {
            encoder: Counters::new("loading"),
            reranker: Counters::new(if reranker_configured { "loading" } else { "not configured" }),
            encoder_dim: 0,
            encoder_pooling: String::new(),
            encoder_ignores_case: false,
            errors: 0,
            last_error: None,
        };
        Stats { started: Instant::now(), device: device.to_string(), all: Mutex::new(all) }
    }

    fn with<T>(&self, kind: ModelKind, f: impl FnOnce(&mut Counters) -> T) -> T {
        let mut all = self.all.lock().expect("stats lock");
        match kind {
            ModelKind::Encoder => f(&mut all.encoder),
            ModelKind::Reranker => f(&mut all.reranker),
        }
    }

    pub fn set_adapter(&self, kind: ModelKind, adapter: &str) {
        self.with(kind, |c| c.adapter = adapter.to_string());
    }

    pub fn set_reranker_products(&self, products: &str) {
        self.with(ModelKind::Reranker, |c| c.products = products.to_string());
    }

    pub fn set_model(&self, kind: ModelKind, model: &str, state: &str) {
        self.with(kind, |c| {
            c.model = model.to_string();
            c.state = state.to_string();
        });
    }

    pub fn set_encoder(&self, dim: usize, pooling: &str, ignores_case: bool) {
        let mut all = self.all.lock().expect("stats lock");
        all.encoder_dim = dim;
        all.encoder_pooling = pooling.to_string();
        all.encoder_ignores_case = ignores_case;
    }

    /// One batch: how many requests (from how many backends) and texts or items it served.
    pub fn record_batch(&self, kind: ModelKind, requests: usize, units: usize, compute: Duration) {
        self.with(kind, |c| {
            c.batches += 1;
            c.batch_requests_sum += requests as u64;
            c.batch_requests_max = c.batch_requests_max.max(requests);
            c.batch_units_max = c.batch_units_max.max(units);
            c.compute_time += compute;
        });
    }

    pub fn record_request(&self, kind: ModelKind, units: usize, latency: Duration) {
        self.with(kind, |c| {
            c.requests += 1;
            c.units += units as u64;
            c.latency_sum += latency;
            c.latency_max = c.latency_max.max(latency);
        });
    }

    /// Requests whose client went away before they ran: skipped, not computed.
    pub fn record_abandoned(&self, kind: ModelKind, count: usize) {
        self.with(kind, |c| c.abandoned += count as u64);
    }

    pub fn record_error(&self, message: &str) {
        let mut all = self.all.lock().expect("stats lock");
        all.errors += 1;
        all.last_error = Some(message.to_string());
    }

    /// The status; `more`'s fields (a JSON object) are added to it.
    pub fn to_json(&self, queue_depths: (usize, usize), more: serde_json::Value) -> String {
        let (rss_kb, peak_rss_kb) = memory_kb();
        let all = self.all.lock().expect("stats lock");
        let (e, r) = (&all.encoder, &all.reranker);
        let mean = |sum: f64, n: u64| if n == 0 { 0.0 } else { sum / n as f64 };
        let mut status = json!({
            "pid": std::process::id(),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "device": self.device,
            "encoder_state": e.state,
            "encoder_model": e.model,
            "encoder_dim": all.encoder_dim,
            "encoder_pooling": all.encoder_pooling,
            "encoder_ignores_case": all.encoder_ignores_case,
            "requests": e.requests,
            "texts": e.units,
            "abandoned_requests": e.abandoned + r.abandoned,
            "batches": e.batches,
            "mean_requests_per_batch": mean(e.batch_requests_sum as f64, e.batches),
            "max_requests_per_batch": e.batch_requests_max,
            "max_texts_per_batch": e.batch_units_max,
            "compute_s": e.compute_time.as_secs_f64(),
            "mean_latency_ms": mean(e.latency_sum.as_secs_f64() * 1000.0, e.requests),
            "max_latency_ms": e.latency_max.as_secs_f64() * 1000.0,
            "queue_depth": queue_depths.0 + queue_depths.1,
            "reranker_state": r.state,
            "reranker_model": r.model,
            "reranker_adapter": r.adapter,
            "reranker_products": r.products,
            "rerank_requests": r.requests,
            "rerank_items": r.units,
            "rerank_batches": r.batches,
            "rerank_max_items_per_batch": r.batch_units_max,
            "rerank_mean_latency_ms": mean(r.latency_sum.as_secs_f64() * 1000.0, r.requests),
            "errors": all.errors,
            "last_error": all.last_error,
            "rss_kb": rss_kb,
            "peak_rss_kb": peak_rss_kb,
        });
        if let (Some(status), serde_json::Value::Object(more)) = (status.as_object_mut(), more) {
            status.extend(more);
        }
        status.to_string()
    }
}

/// Resident and peak resident memory of this process (Linux /proc).
fn memory_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
