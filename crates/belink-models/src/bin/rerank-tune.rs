//! rerank-tune: instruction-tunes the set-wise re-ranker with LoRA on examples written by
//! `belink-eval instructions`, on the model server's own forward pass. Checkpoints every few
//! minutes and resumes from them when run again; writes the adapter file the server loads
//! (`belink.reranker_adapter`).
//!
//!   rerank-tune --model GGUF|DIR --examples FILE.jsonl [--examples FILE.jsonl]... --out FILE
//!               [--checkpoints DIR] [--rank 8] [--top-layers N (0: all)] [--alpha 16] [--lr 2e-4] [--batch 4]
//!               [--epochs 1] [--max-steps N] [--seed 42] [--max-minutes M] [--max-examples N]
//!
//! `--max-examples N`: the first N examples only (for a throughput probe).
//! `--calibrate N` (default 200): after training, the softmax temperature is fitted on up to N
//! examples no step trained on, and stored in the adapter.
//! `--max-minutes M`: stop after this long with a checkpoint (run again to go on).
//! Prints one JSON line per progress report and a summary at the end.
//!
//!   rerank-tune --model GGUF|DIR --examples FILE.jsonl... --dump-tokens FILE.jsonl
//!
//! writes the examples as the server tokenizes them instead of training: a first line with the
//! label token ids, then one line per example (`tokens`, `answer`, `options`, and for prompts
//! of the name form `answers`: each option's answer tokens), for
//! `scripts/train-reranker-torch.py`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use belink_core::decision::prompt::{shared_prefix, AnswerForm, ChatTemplate};
use belink_models::cli::Args;
use belink_models::llm::tune::{prompt_tokens, save_adapter, RerankerTuner, TuneConfig, TuneExample};
use candle_core::Device;

/// What a run writes: the trained adapter, or (no training) the examples as tokens.
enum Output {
    Adapter(PathBuf),
    Tokens(PathBuf),
}

struct Options {
    model: PathBuf,
    examples: Vec<PathBuf>,
    output: Output,
    checkpoints: Option<PathBuf>,
    max_time: Option<Duration>,
    max_examples: Option<usize>,
    calibrate: usize,
    config: TuneConfig,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let flags = Args::parse_flags(args.iter().cloned())?;
    let defaults = TuneConfig::default();
    let config = TuneConfig {
        rank: flags.number("rank", defaults.rank as f64)? as usize,
        top_layers: flags.number("top-layers", defaults.top_layers as f64)? as usize,
        alpha: flags.number("alpha", defaults.alpha)?,
        learning_rate: flags.number("lr", defaults.learning_rate)?,
        weight_decay: flags.number("weight-decay", defaults.weight_decay)?,
        batch_size: flags.number("batch", defaults.batch_size as f64)? as usize,
        epochs: flags.number("epochs", defaults.epochs as f64)? as usize,
        max_steps: flags.number("max-steps", defaults.max_steps as f64)? as u64,
        seed: flags.number("seed", defaults.seed as f64)? as u64,
    };
    Ok(Options {
        model: flags.required("model")?.into(),
        examples: flags.paths("examples"),
        output: match flags.get("dump-tokens") {
            Some(path) => Output::Tokens(path.into()),
            None => Output::Adapter(flags.required("out")?.into()),
        },
        checkpoints: flags.get("checkpoints").map(PathBuf::from),
        max_time: flags.max_time()?,
        max_examples: flags.optional_number("max-examples")?.map(|n| n as usize),
        calibrate: flags.number("calibrate", 200.0)? as usize,
        config,
    })
}

/// The examples of every file, in order; each prompt begins with the instruction prefix of a
/// template and an answer form.
fn read_examples(options: &Options) -> Result<Vec<TuneExample>, String> {
    if options.examples.is_empty() {
        return Err("at least one --examples file is required".into());
    }
    let prefixes: Vec<(String, AnswerForm)> = ChatTemplate::ALL
        .into_iter()
        .flat_map(|t| [AnswerForm::Letter, AnswerForm::Name].map(|form| (shared_prefix(t, form), form)))
        .collect();
    let mut examples = Vec::new();
    for path in &options.examples {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let at = || format!("{}:{}", path.display(), number + 1);
            let record: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
            let prompt = record["prompt"].as_str().unwrap_or_default();
            let (prefix, form) = prefixes
                .iter()
                .find(|(p, _)| prompt.starts_with(p.as_str()))
                .map_or(("", AnswerForm::Letter), |(p, form)| (p.as_str(), *form));
            examples.push(TuneExample::from_record(&record, prefix, form).map_err(|e| format!("{}: {e}", at()))?);
        }
    }
    if let Some(limit) = options.max_examples {
        examples.truncate(limit);
    }
    Ok(examples)
}

fn main() -> Result<(), String> {
    belink_models::keep_freed_memory();
    // Matrix products on every core, element-wise operations inline.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        std::env::set_var("CANDLE_NUM_THREADS", cores.to_string());
    }
    belink_models::prepare_candle_threads();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = parse(&args)?;
    let examples = read_examples(&options)?;
    let out = match &options.output {
        Output::Tokens(path) => return dump_tokens(&options.model, &examples, path),
        Output::Adapter(out) => out,
    };
    let started = Instant::now();
    let device = Device::Cpu;
    let resumable = options.checkpoints.as_ref().filter(|dir| RerankerTuner::has_checkpoint(dir));
    let mut tuner = match resumable {
        Some(dir) => RerankerTuner::resume(&options.model, dir, &examples, &device),
        None => RerankerTuner::new(&options.model, &examples, options.config.clone(), &device),
    }
    .map_err(|e| e.to_string())?;
    eprintln!(
        "{} examples; {} steps, {} done; set-up {:.0} s",
        examples.len(),
        tuner.steps_total(),
        tuner.steps_done(),
        started.elapsed().as_secs_f64()
    );
    const CHECKPOINT_EVERY: Duration = Duration::from_secs(300);
    let mut last_checkpoint = Instant::now();
    let (mut window_examples, mut window_tokens, mut window_right, mut window_start) = (0, 0, 0, Instant::now());
    let mut losses = Vec::new();
    let finished = loop {
        let Some(report) = tuner.step().map_err(|e| e.to_string())? else { break true };
        window_examples += report.examples;
        window_tokens += report.tokens;
        window_right += report.right;
        losses.push(report.loss);
        if report.step % 10 == 0 || report.step == report.steps_total {
            let seconds = window_start.elapsed().as_secs_f64();
            let recent = &losses[losses.len().saturating_sub(10)..];
            println!(
                "{{\"step\": {}, \"steps_total\": {}, \"loss\": {:.4}, \"right\": {:.3}, \"examples_per_s\": {:.2}, \"tokens_per_s\": {:.0}, \"elapsed_s\": {:.0}}}",
                report.step,
                report.steps_total,
                recent.iter().sum::<f32>() / recent.len() as f32,
                window_right as f64 / window_examples as f64,
                window_examples as f64 / seconds,
                window_tokens as f64 / seconds,
                started.elapsed().as_secs_f64()
            );
            (window_examples, window_tokens, window_right, window_start) = (0, 0, 0, Instant::now());
        }
        let out_of_time = options.max_time.is_some_and(|limit| started.elapsed() >= limit);
        if let Some(dir) = &options.checkpoints {
            if out_of_time || last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                tuner.save_checkpoint(dir).map_err(|e| e.to_string())?;
                last_checkpoint = Instant::now();
            }
        }
        if out_of_time {
            break false;
        }
    };
    if !finished {
        eprintln!(
            "stopped after {:.1} min at step {} of {}; run again to resume",
            started.elapsed().as_secs_f64() / 60.0,
            tuner.steps_done(),
            tuner.steps_total()
        );
        return Ok(());
    }
    if let Some(dir) = &options.checkpoints {
        tuner.save_checkpoint(dir).map_err(|e| e.to_string())?;
    }
    let held_out: Vec<usize> = tuner.unseen_examples().into_iter().take(options.calibrate).collect();
    if held_out.is_empty() {
        eprintln!("no example was left unseen: the temperature stays 1 (not calibrated)");
    } else {
        let (temperature, before, after) = tuner.calibrate(&held_out).map_err(|e| e.to_string())?;
        println!(
            "{{\"calibration_examples\": {}, \"temperature\": {temperature:.4}, \"nll_before\": {before:.4}, \"nll_after\": {after:.4}}}",
            held_out.len()
        );
    }
    save_adapter(tuner.adapters(), out).map_err(|e| e.to_string())?;
    eprintln!(
        "adapter written to {} after {} steps ({:.1} min this run)",
        out.display(),
        tuner.steps_done(),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

fn dump_tokens(model: &Path, examples: &[TuneExample], path: &Path) -> Result<(), String> {
    let (label_ids, tokens) = prompt_tokens(model, examples).map_err(|e| e.to_string())?;
    let mut lines = vec![serde_json::json!({ "label_ids": label_ids }).to_string()];
    for (example, tokens) in examples.iter().zip(tokens) {
        let mut line =
            serde_json::json!({ "tokens": tokens.prompt, "answer": example.answer, "options": example.options });
        if example.form == AnswerForm::Name {
            line["answers"] = serde_json::json!(tokens.answers);
        }
        lines.push(line.to_string());
    }
    std::fs::write(path, lines.join("\n") + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("{} examples written to {}", examples.len(), path.display());
    Ok(())
}
