//! The sentence encoder's thread: loads the model, then embeds batches of requests. Requests
//! may name an adapted encoder (belink_adapt_encoder's, under the adapted-encoder directory):
//! each is loaded at its first request and kept, one copy per server, until its directory is
//! removed (the ontology re-adapted or dropped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use belink_core::wire::ErrorCode;
use belink_models::encoder::{length_sorted_chunks, Pooling, SentenceEncoder};
use belink_models::streams::Streams;

use crate::queue::{Job, Queue};
use crate::stats::{ModelKind, Stats};
use crate::Queues;

/// A request: the encoder (empty: the configured one; else an adapted encoder's directory)
/// and the texts.
pub struct EmbedWork {
    pub model: String,
    pub texts: Vec<String>,
}

/// A request and its answer: flattened vectors and their dimension.
pub type EmbedJob = Job<EmbedWork, (u32, Vec<f32>)>;
pub type EmbedQueue = Queue<EmbedWork, (u32, Vec<f32>)>;

/// The adapted encoders loaded, by directory: their dimension and parameter memory, for the
/// status.
#[derive(Default)]
pub struct AdaptedEncoders {
    loaded: Mutex<HashMap<String, (usize, usize)>>,
}

impl AdaptedEncoders {
    pub fn to_json(&self) -> serde_json::Value {
        let loaded = self.loaded.lock().expect("adapted encoders lock");
        let mut list: Vec<_> = loaded
            .iter()
            .map(|(dir, (dim, bytes))| serde_json::json!({"model": dir, "dim": dim, "parameter_mb": *bytes as f64 / 1e6}))
            .collect();
        list.sort_by(|a, b| a["model"].as_str().cmp(&b["model"].as_str()));
        serde_json::Value::Array(list)
    }
}

pub struct Settings {
    pub encoder_dir: PathBuf,
    /// Where adapted encoders live: requests may name only directories inside it.
    pub adapted_dir: Option<PathBuf>,
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
    let mut adapted: HashMap<String, SentenceEncoder> = HashMap::new();
    loop {
        let (live, abandoned) =
            queue.next_live_batch(settings.max_batch * streams.threads(), queues.batch_wait(settings.batch_wait));
        stats.record_abandoned(ModelKind::Encoder, abandoned);
        forget_removed(&mut adapted, &queues.adapted_encoders);
        // One pass per encoder asked for.
        let mut by_model: Vec<(String, Vec<EmbedJob>)> = Vec::new();
        for job in live {
            match by_model.iter_mut().find(|(model, _)| *model == job.work.model) {
                Some((_, jobs)) => jobs.push(job),
                None => by_model.push((job.work.model.clone(), vec![job])),
            }
        }
        for (model, live) in by_model {
            let chosen = match model.as_str() {
                "" => encoder.as_ref().map_err(|message| (ErrorCode::ModelUnavailable, message.clone())),
                dir => load_adapted(&settings, &streams, &mut adapted, &queues.adapted_encoders, dir),
            };
            let encoder = match chosen {
                Ok(encoder) => encoder,
                Err(failure) => {
                    for job in live {
                        let _ = job.reply.send(Err(failure.clone()));
                    }
                    continue;
                }
            };
            serve(encoder, &streams, live, &settings, &stats);
        }
    }
}

fn serve(encoder: &SentenceEncoder, streams: &Streams, live: Vec<EmbedJob>, settings: &Settings, stats: &Stats) {
    let started = Instant::now();
    let texts: usize = live.iter().map(|j| j.work.texts.len()).sum();
    match embed_jobs(encoder, streams, &live, settings.max_batch) {
        Ok(results) => {
            stats.record_batch(ModelKind::Encoder, live.len(), texts, started.elapsed());
            for (job, vectors) in live.into_iter().zip(results) {
                if !job.is_alive() {
                    stats.record_abandoned(ModelKind::Encoder, 1);
                    continue;
                }
                stats.record_request(ModelKind::Encoder, job.work.texts.len(), job.enqueued.elapsed());
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

/// The adapted encoder in `dir`, loaded at its first request. Only directories inside the
/// adapted-encoder directory are served: a request cannot make the server read other files.
fn load_adapted<'a>(
    settings: &Settings,
    streams: &Streams,
    adapted: &'a mut HashMap<String, SentenceEncoder>,
    registry: &AdaptedEncoders,
    dir: &str,
) -> Result<&'a SentenceEncoder, (ErrorCode, String)> {
    if !adapted.contains_key(dir) {
        let path = Path::new(dir);
        if !settings.adapted_dir.as_deref().is_some_and(|root| crate::adapt::is_inside(root, path)) {
            return Err((ErrorCode::BadRequest, format!("{dir} is not an adapted encoder of this cluster")));
        }
        let started = Instant::now();
        let loaded = streams
            .install(|| {
                belink_models::select_device(&settings.device)
                    .and_then(|device| SentenceEncoder::load(path, &device, settings.pooling))
            })
            .map_err(|e| (ErrorCode::ModelUnavailable, format!("adapted encoder {dir} not loaded: {e}")))?;
        eprintln!("belink-server: adapted encoder {dir} loaded in {:.1} s", started.elapsed().as_secs_f64());
        registry
            .loaded
            .lock()
            .expect("adapted encoders lock")
            .insert(dir.to_string(), (loaded.dim(), loaded.parameter_bytes()));
        adapted.insert(dir.to_string(), loaded);
    }
    Ok(&adapted[dir])
}

/// Drops the adapted encoders whose directory is gone.
fn forget_removed(adapted: &mut HashMap<String, SentenceEncoder>, registry: &AdaptedEncoders) {
    adapted.retain(|dir, _| {
        let kept = Path::new(dir).join("model.safetensors").is_file();
        if !kept {
            registry.loaded.lock().expect("adapted encoders lock").remove(dir);
            eprintln!("belink-server: adapted encoder {dir} removed; unloaded");
        }
        kept
    });
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
        jobs.iter().enumerate().flat_map(|(j, job)| (0..job.work.texts.len()).map(move |t| (j, t))).collect();
    let texts: Vec<&str> = items.iter().map(|&(j, t)| jobs[j].work.texts[t].as_str()).collect();
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
    let mut results: Vec<Vec<f32>> = jobs.iter().map(|job| vec![0.0; job.work.texts.len() * dim]).collect();
    for (i, vector) in vectors.into_iter().flatten() {
        let (j, t) = items[i];
        results[j][t * dim..(t + 1) * dim].copy_from_slice(&vector);
    }
    Ok(results)
}
