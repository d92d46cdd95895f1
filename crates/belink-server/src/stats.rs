//! Counters the status request reports (belink_worker_status() in SQL).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counters {
    encoder_state: String,
    encoder_model: String,
    encoder_dim: usize,
    encoder_pooling: String,
    requests: u64,
    texts: u64,
    abandoned: u64,
    batches: u64,
    batch_requests_sum: u64,
    batch_requests_max: usize,
    batch_texts_max: usize,
    compute_time: Duration,
    latency_sum: Duration,
    latency_max: Duration,
    queue_depth: usize,
    errors: u64,
    last_error: Option<String>,
}

pub struct Stats {
    started: Instant,
    device: String,
    counters: Mutex<Counters>,
}

impl Stats {
    pub fn new(device: &str) -> Stats {
        let counters = Counters { encoder_state: "loading".into(), ..Counters::default() };
        Stats { started: Instant::now(), device: device.to_string(), counters: Mutex::new(counters) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        f(&mut self.counters.lock().expect("stats lock"))
    }

    pub fn set_encoder(&self, dir: &Path, dim: usize, pooling: &str) {
        self.with(|c| {
            c.encoder_state = "loaded".into();
            c.encoder_model = dir.display().to_string();
            c.encoder_dim = dim;
            c.encoder_pooling = pooling.into();
        });
    }

    pub fn set_encoder_failed(&self, message: &str) {
        self.with(|c| c.encoder_state = format!("failed: {message}"));
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.with(|c| c.queue_depth = depth);
    }

    /// One forward batch: how many requests (from how many backends) and texts it served.
    pub fn record_batch(&self, requests: usize, texts: usize, compute: Duration) {
        self.with(|c| {
            c.batches += 1;
            c.batch_requests_sum += requests as u64;
            c.batch_requests_max = c.batch_requests_max.max(requests);
            c.batch_texts_max = c.batch_texts_max.max(texts);
            c.compute_time += compute;
        });
    }

    pub fn record_request(&self, texts: usize, latency: Duration) {
        self.with(|c| {
            c.requests += 1;
            c.texts += texts as u64;
            c.latency_sum += latency;
            c.latency_max = c.latency_max.max(latency);
        });
    }

    /// Requests whose client went away before they ran: skipped, not computed.
    pub fn record_abandoned(&self, count: usize) {
        self.with(|c| c.abandoned += count as u64);
    }

    pub fn record_error(&self, message: &str) {
        self.with(|c| {
            c.errors += 1;
            c.last_error = Some(message.to_string());
        });
    }

    pub fn to_json(&self) -> String {
        let (rss_kb, peak_rss_kb) = memory_kb();
        self.with(|c| {
            let per_batch = if c.batches == 0 { 0.0 } else { c.batch_requests_sum as f64 / c.batches as f64 };
            let mean_latency =
                if c.requests == 0 { 0.0 } else { c.latency_sum.as_secs_f64() * 1000.0 / c.requests as f64 };
            serde_json::json!({
                "pid": std::process::id(),
                "uptime_s": self.started.elapsed().as_secs_f64(),
                "device": self.device,
                "encoder_state": c.encoder_state,
                "encoder_model": c.encoder_model,
                "encoder_dim": c.encoder_dim,
                "encoder_pooling": c.encoder_pooling,
                "requests": c.requests,
                "texts": c.texts,
                "abandoned_requests": c.abandoned,
                "batches": c.batches,
                "mean_requests_per_batch": per_batch,
                "max_requests_per_batch": c.batch_requests_max,
                "max_texts_per_batch": c.batch_texts_max,
                "compute_s": c.compute_time.as_secs_f64(),
                "mean_latency_ms": mean_latency,
                "max_latency_ms": c.latency_max.as_secs_f64() * 1000.0,
                "queue_depth": c.queue_depth,
                "errors": c.errors,
                "last_error": c.last_error,
                "rss_kb": rss_kb,
                "peak_rss_kb": peak_rss_kb,
            })
            .to_string()
        })
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
