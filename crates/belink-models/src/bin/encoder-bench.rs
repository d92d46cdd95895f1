//! encoder-bench: sentence-encoder throughput (names per second) for requests of several
//! batch sizes, served the way the model server serves them (texts sorted by length, chunks
//! of at most BELINK_MICRO_BATCH (32) texts spread over BELINK_THREADS cores (all)). Its peer is
//! scripts/encoder-bench.py (sentence-transformers on the same texts); `make bench` runs both.
//!
//!   encoder-bench MODEL_DIR TEXTS_FILE BATCH[,BATCH...] [--limit N]

use std::path::Path;
use std::time::Instant;

use belink_models::encoder::{length_sorted_chunks, SentenceEncoder};
use belink_models::streams::Streams;
use candle_core::Device;

fn main() -> Result<(), String> {
    belink_models::prepare_candle_threads();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, texts_file, batches, rest @ ..] = &args[..] else {
        return Err("usage: encoder-bench MODEL_DIR TEXTS_FILE BATCH[,BATCH...] [--limit N]".into());
    };
    let limit = match rest {
        [flag, n] if flag == "--limit" => n.parse().map_err(|_| "bad --limit")?,
        _ => usize::MAX,
    };
    let texts: Vec<String> = std::fs::read_to_string(texts_file)
        .map_err(|e| format!("{texts_file}: {e}"))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(limit)
        .map(String::from)
        .collect();
    let encoder = SentenceEncoder::load(Path::new(model), &Device::Cpu, None).map_err(|e| e.to_string())?;
    let threads: usize = std::env::var("BELINK_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(0);
    let micro_batch: usize = std::env::var("BELINK_MICRO_BATCH").ok().and_then(|t| t.parse().ok()).unwrap_or(32);
    let streams = Streams::new(threads);
    let threads = streams.threads();
    // Warm-up (first-touch of weights and allocator).
    encoder.embed(&texts.iter().take(8).map(String::as_str).collect::<Vec<_>>()).map_err(|e| e.to_string())?;
    for batch in batches.split(',') {
        let batch: usize = batch.parse().map_err(|_| format!("bad batch size {batch}"))?;
        let started = Instant::now();
        // A request of `batch` texts, served as the server does: chunks of at most
        // `micro_batch`, spread over the cores.
        for request in texts.chunks(batch) {
            let chunks = length_sorted_chunks(request, micro_batch, threads);
            streams
                .run(&chunks, |chunk| {
                    let chunk: Vec<&str> = chunk.iter().map(|&i| request[i].as_str()).collect();
                    encoder.embed(&chunk)
                })
                .map_err(|e| e.to_string())?;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{{\"implementation\": \"belink (candle)\", \"threads\": {threads}, \"micro_batch\": {micro_batch}, \"batch\": {batch}, \"texts\": {}, \"seconds\": {seconds:.3}, \"names_per_s\": {:.1}}}",
            texts.len(),
            texts.len() as f64 / seconds
        );
    }
    Ok(())
}
