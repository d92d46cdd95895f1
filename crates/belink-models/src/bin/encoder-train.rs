//! encoder-train: adapts a sentence encoder to ontologies' synonyms from the command line
//! (the model server's `belink_adapt_encoder` runs the same trainer on the names in the
//! database). Checkpoints every few minutes and resumes from them when run again.
//!
//!   encoder-train --base DIR --out DIR --ontology FILE [--ontology FILE]... [--names TSV]...
//!                 [--anchors TSV]... [--checkpoints DIR] [--loss ms|infonce|marginal]
//!                 [--batching random|neighbours|anchored] [--negative-names N]
//!                 [--epochs N] [--batch N] [--names-per-concept N] [--lr X] [--seed N]
//!                 [--max-minutes M]
//!
//! `--names TSV`: more (concept id, name) pairs, one per line, tab-separated (the training
//! mentions of an annotated corpus, as `belink_add_names` adds them). Concept ids are compared
//! without MeSH/OMIM prefixes (`MESH:D005955` = `D005955`), as the evaluation does.
//! `--anchors TSV`: the same format; with `--batching anchored` each anchor gets a cluster of
//! its concept's names and the names of other concepts nearest to it (BioSyn's setting: the
//! training mentions).
//! `--max-minutes`: stop after this long with a checkpoint (run again to go on).
//! Prints one JSON line per progress report and a summary at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use belink_core::ids::canonical;
use belink_core::ontology::{load_file, LoadOptions};
use belink_models::cli::Args;
use belink_models::train::{Batching, Loss, TrainConfig, Trainer};
use candle_core::Device;

struct Options {
    base: PathBuf,
    out: PathBuf,
    ontologies: Vec<PathBuf>,
    names: Vec<PathBuf>,
    anchors: Vec<PathBuf>,
    checkpoints: Option<PathBuf>,
    max_time: Option<Duration>,
    config: TrainConfig,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let flags = Args::parse_flags(args.iter().cloned())?;
    let mut config = TrainConfig::default();
    config.loss = match flags.get("loss").unwrap_or("ms") {
        "ms" => Loss::SAPBERT,
        "infonce" => Loss::InfoNce { temperature: flags.number("temperature", 0.05)? },
        "marginal" => Loss::SynonymMarginal { temperature: flags.number("temperature", 0.05)? },
        other => return Err(format!("--loss: ms, infonce or marginal, not '{other}'")),
    };
    config.batching = match flags.get("batching").unwrap_or("random") {
        "neighbours" => Batching::Neighbours,
        "random" => Batching::Random,
        "anchored" => Batching::Anchored,
        other => return Err(format!("--batching: random, neighbours or anchored, not '{other}'")),
    };
    config.epochs = flags.number("epochs", config.epochs as f64)? as usize;
    config.batch_size = flags.number("batch", config.batch_size as f64)? as usize;
    config.names_per_concept = flags.number("names-per-concept", config.names_per_concept as f64)? as usize;
    config.learning_rate = flags.number("lr", config.learning_rate)?;
    config.seed = flags.number("seed", config.seed as f64)? as u64;
    config.negative_names = flags.number("negative-names", config.negative_names as f64)? as usize;
    let options = Options {
        base: flags.required("base")?.into(),
        out: flags.required("out")?.into(),
        ontologies: flags.paths("ontology"),
        names: flags.paths("names"),
        anchors: flags.paths("anchors"),
        checkpoints: flags.get("checkpoints").map(PathBuf::from),
        max_time: flags.max_time()?,
        config,
    };
    if options.ontologies.is_empty() {
        return Err("at least one --ontology is required".into());
    }
    Ok(options)
}

fn examples(options: &Options) -> Result<Vec<(String, String)>, String> {
    let mut examples = Vec::new();
    for path in &options.ontologies {
        let ontology = load_file(path, &LoadOptions::default()).map_err(|e| format!("{}: {e}", path.display()))?;
        for concept in ontology.active_concepts() {
            examples.extend(concept.names().map(|(name, _)| (canonical(&concept.id), name.to_string())));
        }
    }
    examples.extend(read_pairs(&options.names)?);
    Ok(examples)
}

/// (concept id, name) lines of tab-separated files.
fn read_pairs(paths: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let mut examples = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let (concept, name) = line
                .split_once('\t')
                .ok_or_else(|| format!("{}:{}: expected 'concept<TAB>name'", path.display(), number + 1))?;
            examples.push((canonical(concept), name.trim().to_string()));
        }
    }
    Ok(examples)
}

fn main() -> Result<(), String> {
    belink_models::keep_freed_memory();
    // As encoder-train-bench: matrix products on every core, element-wise operations inline.
    belink_models::prepare_candle_threads();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = parse(&args)?;
    let examples = examples(&options)?;
    let anchors = read_pairs(&options.anchors)?;
    let started = Instant::now();
    let device = Device::Cpu;
    let resumable = options.checkpoints.as_ref().filter(|dir| dir.join("checkpoint.json").is_file());
    let mut trainer = match resumable {
        Some(dir) => Trainer::resume(&options.base, dir, &examples, &anchors, &device),
        None => Trainer::new(&options.base, &examples, &anchors, options.config.clone(), &device),
    }
    .map_err(|e| e.to_string())?;
    eprintln!(
        "{} (concept, name) pairs, {} anchors used of {}; {} steps, {} done; set-up {:.0} s",
        examples.len(),
        trainer.anchors_used(),
        anchors.len(),
        trainer.steps_total(),
        trainer.steps_done(),
        started.elapsed().as_secs_f64()
    );
    const CHECKPOINT_EVERY: Duration = Duration::from_secs(300);
    let (mut last_checkpoint, mut window_names, mut window_start) = (Instant::now(), 0usize, Instant::now());
    let mut losses = Vec::new();
    let finished = loop {
        let Some(report) = trainer.step().map_err(|e| e.to_string())? else { break true };
        window_names += report.names;
        losses.push(report.loss);
        if report.step % 10 == 0 || report.step == report.steps_total {
            let rate = window_names as f64 / window_start.elapsed().as_secs_f64();
            let recent = &losses[losses.len().saturating_sub(10)..];
            println!(
                "{{\"step\": {}, \"steps_total\": {}, \"epoch\": {}, \"loss\": {:.4}, \"names_per_s\": {rate:.1}, \"elapsed_s\": {:.0}}}",
                report.step,
                report.steps_total,
                report.epoch,
                recent.iter().sum::<f32>() / recent.len() as f32,
                started.elapsed().as_secs_f64()
            );
            (window_names, window_start) = (0, Instant::now());
        }
        let out_of_time = options.max_time.is_some_and(|limit| started.elapsed() >= limit);
        if let Some(dir) = &options.checkpoints {
            if out_of_time || last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                trainer.save_checkpoint(dir).map_err(|e| e.to_string())?;
                last_checkpoint = Instant::now();
            }
        }
        if out_of_time {
            break false;
        }
    };
    if !finished {
        eprintln!(
            "stopped after {:.0} s at step {}: run again to resume",
            started.elapsed().as_secs_f64(),
            trainer.steps_done()
        );
        return Ok(());
    }
    trainer.save_model(&options.out).map_err(|e| e.to_string())?;
    if let Some(dir) = &options.checkpoints {
        trainer.save_checkpoint(dir).map_err(|e| e.to_string())?;
    }
    println!(
        "{{\"done\": true, \"steps\": {}, \"seconds\": {:.0}, \"out\": \"{}\"}}",
        trainer.steps_done(),
        started.elapsed().as_secs_f64(),
        options.out.display()
    );
    Ok(())
}
