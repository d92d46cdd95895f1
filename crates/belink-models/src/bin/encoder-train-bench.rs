//! encoder-train-bench: training throughput of the sentence encoder (names per second of
//! forward + backward + AdamW step), for comparison with PyTorch on the same machine.
//!
//!   encoder-train-bench MODEL_DIR MEDIC_FILE [--steps N]
//!
//! Settings: batches of 64 and 256 names of exactly 13 tokens (MEDIC names of that length,
//! grouped 4 to a made-up concept), then batches of 256 real MEDIC names (max 25 tokens),
//! padded to the batch's longest name (as the PyTorch peer) and bucketed by length
//! (micro-batches of 64). Threads: RAYON_NUM_THREADS (default: the cores) for matrix products,
//! CANDLE_NUM_THREADS (default 1) for element-wise operations.

use std::path::Path;
use std::time::Instant;

use belink_models::encoder::SentenceEncoder;
use belink_models::train::{TrainConfig, Trainer};
use candle_core::Device;

fn main() -> Result<(), String> {
    belink_models::keep_freed_memory();
    // Matrix products on every core; element-wise operations inline (measured on 2 cores: on
    // candle's 2-thread pool, 46 instead of 76 names/s at batch 64).
    belink_models::prepare_candle_threads();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, medic, rest @ ..] = &args[..] else {
        return Err("usage: encoder-train-bench MODEL_DIR MEDIC_FILE [--steps N]".into());
    };
    let steps: usize = match rest {
        [flag, n] if flag == "--steps" => n.parse().map_err(|_| "bad --steps")?,
        _ => 5,
    };
    let model = Path::new(model);
    // MEDIC (BioSyn format): "ID[|ID...]||NAME[|NAME...]".
    let text = std::fs::read_to_string(medic).map_err(|e| format!("{medic}: {e}"))?;
    let medic_examples: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| line.split_once("||"))
        .flat_map(|(ids, names)| {
            let id = ids.split('|').next().unwrap_or(ids).to_string();
            names.split('|').map(move |name| (id.clone(), name.to_string()))
        })
        .collect();

    // Names of exactly 13 tokens ([CLS] and [SEP] included), 4 to a concept.
    let encoder = SentenceEncoder::load(model, &Device::Cpu, None).map_err(|e| e.to_string())?;
    let thirteen: Vec<(String, String)> = medic_examples
        .iter()
        .filter(|(_, name)| encoder.tokenizer().encode(name.as_str(), true).map(|e| e.len() == 13).unwrap_or(false))
        .enumerate()
        .map(|(i, (_, name))| (format!("C{}", i / 4), name.clone()))
        .collect();
    drop(encoder);

    // (label, examples, batch, micro-batch)
    type Setting<'a> = (&'a str, &'a [(String, String)], usize, usize);
    let settings: [Setting; 4] = [
        ("13 tokens", &thirteen, 64, 64),
        ("13 tokens", &thirteen, 256, 256),
        ("MEDIC, padded to longest", &medic_examples, 256, 256),
        ("MEDIC, bucketed by length", &medic_examples, 256, 64),
    ];
    let pytorch = [159.0, 181.0, 96.0, 96.0];
    for ((label, examples, batch, micro_batch), reference) in settings.into_iter().zip(pytorch) {
        let config = TrainConfig { batch_size: batch, micro_batch, ..TrainConfig::default() };
        let mut trainer = Trainer::new(model, examples, &[], config, &Device::Cpu).map_err(|e| e.to_string())?;
        trainer.step().map_err(|e| e.to_string())?; // warm-up: first touch of weights and buffers
        let started = Instant::now();
        let mut names = 0;
        for _ in 0..steps {
            let report = trainer.step().map_err(|e| e.to_string())?.ok_or("ran out of batches")?;
            names += report.names;
        }
        let seconds = started.elapsed().as_secs_f64();
        let rate = names as f64 / seconds;
        println!(
            "{{\"implementation\": \"belink (candle)\", \"names\": \"{label}\", \"batch\": {batch}, \"micro_batch\": {micro_batch}, \
             \"steps\": {steps}, \"seconds\": {seconds:.2}, \"names_per_s\": {rate:.1}, \"pytorch_names_per_s\": {reference}, \
             \"ratio\": {:.2}}}",
            rate / reference
        );
    }
    Ok(())
}
