//! Dynamic batching: embedding requests from every connection wait in one queue; the model
//! thread takes as many as fit in a batch (waiting briefly for more when the queue is short),
//! runs them together, and hands each request its own vectors.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use belink_core::wire::ErrorCode;
use belink_models::encoder::{length_sorted_chunks, Pooling, SentenceEncoder};
use belink_models::streams::Streams;

use crate::stats::Stats;

/// The answer to one request: flattened vectors and their dimension, or an error.
pub type EmbedResult = Result<(u32, Vec<f32>), (ErrorCode, String)>;

pub struct Job {
    pub texts: Vec<String>,
    pub reply: mpsc::Sender<EmbedResult>,
    /// Cleared by the connection when its client goes away: the job is then skipped.
    pub alive: Arc<AtomicBool>,
    pub enqueued: Instant,
}

pub struct Settings {
    pub encoder_dir: PathBuf,
    pub pooling: Option<Pooling>,
    pub device: String,
    /// Most texts per forward pass.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others to join it.
    pub batch_wait: Duration,
    /// CPU threads (0: every core).
    pub threads: usize,
}

#[derive(Default)]
pub struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

impl Queue {
    pub fn submit(&self, job: Job, stats: &Stats) {
        let mut jobs = self.jobs.lock().expect("queue lock");
        jobs.push_back(job);
        stats.set_queue_depth(jobs.len());
        self.ready.notify_one();
    }

    /// Blocks for the next batch of jobs: at most `max_texts` texts unless one job alone is
    /// larger, collected for at most `wait` after the first job is seen.
    fn next_batch(&self, max_texts: usize, wait: Duration, stats: &Stats) -> Vec<Job> {
        let mut jobs = self.jobs.lock().expect("queue lock");
        while jobs.is_empty() {
            jobs = self.ready.wait(jobs).expect("queue lock");
        }
        let deadline = Instant::now() + wait;
        loop {
            let queued: usize = jobs.iter().map(|j| j.texts.len()).sum();
            let now = Instant::now();
            if queued >= max_texts || now >= deadline {
                break;
            }
            jobs = self.ready.wait_timeout(jobs, deadline - now).expect("queue lock").0;
        }
        let mut batch = Vec::new();
        let mut texts = 0;
        while let Some(job) = jobs.front() {
            if !batch.is_empty() && texts + job.texts.len() > max_texts {
                break;
            }
            texts += job.texts.len();
            batch.push(jobs.pop_front().expect("front exists"));
        }
        stats.set_queue_depth(jobs.len());
        batch
    }
}

/// The model thread: loads the encoder, then serves batches forever.
pub fn run(settings: Settings, queue: Arc<Queue>, stats: Arc<Stats>) {
    let streams = Streams::new(settings.threads);
    let encoder = streams.install(|| load(&settings, &stats));
    loop {
        let batch = queue.next_batch(settings.max_batch * streams.threads(), settings.batch_wait, &stats);
        let (live, dead): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.alive.load(Ordering::Acquire));
        stats.record_abandoned(dead.len());
        if live.is_empty() {
            continue;
        }
        let encoder = match &encoder {
            Ok(encoder) => encoder,
            Err(message) => {
                for job in live {
                    let _ = job.reply.send(Err((ErrorCode::ModelUnavailable, message.clone())));
                }
                continue;
            }
        };
        let started = Instant::now();
        let texts: usize = live.iter().map(|j| j.texts.len()).sum();
        match embed_jobs(encoder, &streams, &live, settings.max_batch) {
            Ok(results) => {
                stats.record_batch(live.len(), texts, started.elapsed());
                for (job, vectors) in live.into_iter().zip(results) {
                    if !job.alive.load(Ordering::Acquire) {
                        stats.record_abandoned(1);
                        continue;
                    }
                    stats.record_request(job.texts.len(), job.enqueued.elapsed());
                    let _ = job.reply.send(Ok((encoder.dim() as u32, vectors)));
                }
            }
            Err(message) => {
                stats.record_error(&message);
                eprintln!("belink-server: encoder error: {message}");
                for job in live {
                    let _ = job.reply.send(Err((ErrorCode::Inference, message.clone())));
                }
            }
        }
    }
}

fn load(settings: &Settings, stats: &Stats) -> Result<SentenceEncoder, String> {
    let started = Instant::now();
    let loaded = belink_models::select_device(&settings.device)
        .and_then(|device| SentenceEncoder::load(&settings.encoder_dir, &device, settings.pooling))
        .map_err(|e| format!("sentence encoder not loaded: {e}"));
    match &loaded {
        Ok(encoder) => {
            eprintln!(
                "belink-server: sentence encoder {} loaded in {:.1} s (dimension {}, {} pooling, device {})",
                encoder.dir().display(),
                started.elapsed().as_secs_f64(),
                encoder.dim(),
                encoder.pooling().name(),
                settings.device
            );
            stats.set_encoder(encoder.dir(), encoder.dim(), encoder.pooling().name());
        }
        Err(message) => {
            eprintln!("belink-server: {message}");
            stats.record_error(message);
            stats.set_encoder_failed(message);
        }
    }
    loaded
}

/// Embeds every job's texts together: sorted by length (little padding), in chunks of
/// `max_batch` spread over the cores, then put back in each job's order. Returns each job's
/// flattened vectors.
fn embed_jobs(
    encoder: &SentenceEncoder,
    streams: &Streams,
    jobs: &[Job],
    max_batch: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let items: Vec<(usize, usize)> =
        jobs.iter().enumerate().flat_map(|(j, job)| (0..job.texts.len()).map(move |t| (j, t))).collect();
    let texts: Vec<&str> = items.iter().map(|&(j, t)| jobs[j].texts[t].as_str()).collect();
    let chunks = length_sorted_chunks(&texts, max_batch);
    let vectors = streams
        .run(&chunks, |chunk| {
            // A client that went away (cancel, timeout) stops costing compute at its next chunk.
            let live: Vec<usize> =
                chunk.iter().copied().filter(|&i| jobs[items[i].0].alive.load(Ordering::Acquire)).collect();
            let vectors = encoder.embed(&live.iter().map(|&i| texts[i]).collect::<Vec<_>>())?;
            Ok::<_, belink_models::ModelError>(live.into_iter().zip(vectors).collect::<Vec<_>>())
        })
        .map_err(|e| e.to_string())?;
    let dim = encoder.dim();
    let mut results: Vec<Vec<f32>> = jobs.iter().map(|job| vec![0.0; job.texts.len() * dim]).collect();
    for (i, vector) in vectors.into_iter().flatten() {
        let (j, t) = items[i];
        results[j][t * dim..(t + 1) * dim].copy_from_slice(&vector);
    }
    Ok(results)
}
