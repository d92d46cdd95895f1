//! The sentence encoder's thread: loads the model, then embeds batches of requests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use belink_core::wire::ErrorCode;
use belink_models::encoder::{length_sorted_chunks, Pooling, SentenceEncoder};
use belink_models::streams::Streams;

use crate::queue::{Job, Queue};
use crate::stats::{ModelKind, Stats};
use crate::Queues;

/// A request's texts, and its answer: flattened vectors and their dimension.
pub type EmbedJob = Job<Vec<String>, (u32, Vec<f32>)>;
pub type EmbedQueue = Queue<Vec<String>, (u32, Vec<f32>)>;

pub struct Settings {
    pub encoder_dir: PathBuf,
    pub pooling: Option<Pooling>,
    pub device: String,
    /// Most texts per forward pass.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others to join it.
    pub batch_wait: Duration,
}

/// The model thread: loads the encoder, then serves batches forever.
pub fn run(settings: Settings, streams: Arc<Streams>, queues: Arc<Queues>, stats: Arc<Stats>) {
    let queue = &queues.embed;
    let encoder = streams.install(|| load(&settings, &stats));
    loop {
        let (live, abandoned) =
            queue.next_live_batch(settings.max_batch * streams.threads(), queues.batch_wait(settings.batch_wait));
        stats.record_abandoned(ModelKind::Encoder, abandoned);
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
        let texts: usize = live.iter().map(|j| j.work.len()).sum();
        match embed_jobs(encoder, &streams, &live, settings.max_batch) {
            Ok(results) => {
                stats.record_batch(ModelKind::Encoder, live.len(), texts, started.elapsed());
                for (job, vectors) in live.into_iter().zip(results) {
                    if !job.is_alive() {
                        stats.record_abandoned(ModelKind::Encoder, 1);
                        continue;
                    }
                    stats.record_request(ModelKind::Encoder, job.work.len(), job.enqueued.elapsed());
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
            stats.set_encoder(encoder.dim(), encoder.pooling().name(), encoder.ignores_case());
            stats.set_model(ModelKind::Encoder, &encoder.dir().display().to_string(), "loaded");
        }
        Err(message) => {
            eprintln!("belink-server: {message}");
            stats.record_error(message);
            stats.set_model(
                ModelKind::Encoder,
                &settings.encoder_dir.display().to_string(),
                &format!("failed: {message}"),
            );
        }
    }
    loaded
}

/// Embeds every job's texts together: sorted by length (little padding), in chunks of at
/// most `max_batch` spread over the cores, then put back in each job's order. Returns each job's
/// flattened vectors.
fn embed_jobs(
    encoder: &SentenceEncoder,
    streams: &Streams,
    jobs: &[EmbedJob],
    max_batch: usize,
) -> Result<Vec<Vec<f32>>, String> {
    let items: Vec<(usize, usize)> =
        jobs.iter().enumerate().flat_map(|(j, job)| (0..job.work.len()).map(move |t| (j, t))).collect();
    let texts: Vec<&str> = items.iter().map(|&(j, t)| jobs[j].work[t].as_str()).collect();
    let chunks = length_sorted_chunks(&texts, max_batch, streams.threads());
    let vectors = streams
        .run(&chunks, |chunk| {
            // A client that went away (cancel, timeout) stops costing compute at its next chunk.
            let live: Vec<usize> = chunk.iter().copied().filter(|&i| jobs[items[i].0].is_alive()).collect();
            let vectors = encoder.embed(&live.iter().map(|&i| texts[i]).collect::<Vec<_>>())?;
            Ok::<_, belink_models::ModelError>(live.into_iter().zip(vectors).collect::<Vec<_>>())
        })
        .map_err(|e| e.to_string())?;
    let dim = encoder.dim();
    let mut results: Vec<Vec<f32>> = jobs.iter().map(|job| vec![0.0; job.work.len() * dim]).collect();
    for (i, vector) in vectors.into_iter().flatten() {
        let (j, t) = items[i];
        results[j][t * dim..(t + 1) * dim].copy_from_slice(&vector);
    }
    Ok(results)
}
