//! Instruction-tuning the set-wise re-ranker with LoRA, on the model server's own forward pass
//! (the model that is trained is the model that serves): for each example, the instruction
//! prefix and the item's prompt run through the adapted model, and the loss is the cross-entropy
//! of the answer among the item's option labels, the distribution [`Reranker::score`] serves.
//!
//! - Adapters: LoRA on every projection (q, k, v, o, gate, up, down) of every layer or of the
//!   top layers only (the layers below run without gradients, much cheaper), A drawn
//!   uniformly in ±1/sqrt(in) from the seed, B zero, so training starts at the base model.
//! - A step: the instruction prefix once (batch 1, with gradients: the adapters change its keys
//!   and values), then the batch's items right-padded after it.
//! - Optimizer: AdamW (the encoder trainer's), constant learning rate; moments, step and the
//!   example order (a function of the seed and the epoch) are in checkpoints, so a resumed run
//!   continues the one interrupted.
//! - The adapter file is safetensors: `layers.{i}.{projection}.lora_a` / `.lora_b`, the
//!   scale in `lora.scale`, the temperature in `lora.temperature`, and `lora.answer_names`
//!   (1) when the adapter answers with names ([`AnswerForm::Name`]; this trainer trains
//!   letters, `scripts/train-reranker-torch.py` either), and optionally `lora.rank_prior`
//!   (retrieval's rank prior, [`belink_core::decision::rank_prior`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use belink_core::decision::prompt::{shared_prefix, AnswerForm, LABELS};
use belink_core::random::SeededRandom;
use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use super::llama::{Llama, LoraWeights, Pass, PROJECTIONS};
use super::{encode, Reranker};
use crate::train::{optimizer_tensors, restore_optimizer, write_checkpoint, AdamW, Moments, CHECKPOINT_JSON};
use crate::ModelError;

const SCALE_KEY: &str = "lora.scale";
const TEMPERATURE_KEY: &str = "lora.temperature";
const ANSWER_NAMES_KEY: &str = "lora.answer_names";
const RANK_PRIOR_KEY: &str = "lora.rank_prior";

fn weights_error(path: &Path) -> impl Fn(candle_core::Error) -> ModelError + '_ {
    move |e| ModelError::Weights(format!("{}: {e}", path.display()))
}

fn adapter_key(layer: usize, which: usize, part: &str) -> String {
    format!("layers.{layer}.{}.lora_{part}", PROJECTIONS[which])
}

/// Reads an adapter file written by [`save_adapter`].
pub fn load_adapter(path: &Path, device: &Device) -> Result<LoraWeights, ModelError> {
    if !path.is_file() {
        return Err(ModelError::Missing(format!("re-ranker adapter {} does not exist", path.display())));
    }
    let mut tensors = candle_core::safetensors::load(path, device).map_err(weights_error(path))?;
    let mut scalar = |key: &str| -> Result<Option<f64>, ModelError> {
        tensors
            .remove(key)
            .map(|t| {
                t.to_dtype(DType::F64).and_then(|t| t.flatten_all()?.to_vec1::<f64>()).map_err(weights_error(path))
            })
            .transpose()
            .map(|v| v.and_then(|v| v.first().copied()))
    };
    let scale = scalar(SCALE_KEY)?.ok_or_else(|| ModelError::Weights(format!("{}: no {SCALE_KEY}", path.display())))?;
    let temperature = scalar(TEMPERATURE_KEY)?.unwrap_or(1.0);
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(ModelError::Weights(format!("{}: temperature {temperature} is not positive", path.display())));
    }
    let answer = match scalar(ANSWER_NAMES_KEY)? {
        None | Some(0.0) => AnswerForm::Letter,
        Some(1.0) => AnswerForm::Name,
        Some(other) => {
            return Err(ModelError::Weights(format!("{}: {ANSWER_NAMES_KEY} is {other}, not 0 or 1", path.display())))
        }
    };
    let rank_prior = match tensors.remove(RANK_PRIOR_KEY) {
        None => Vec::new(),
        Some(prior) => {
            let prior = prior
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
                .map_err(weights_error(path))?;
            if prior.len() < 2 || prior.iter().any(|p| !p.is_finite()) {
                return Err(ModelError::Weights(format!(
                    "{}: {RANK_PRIOR_KEY} must hold finite log-probabilities of at least one position and none",
                    path.display()
                )));
            }
            prior
        }
    };
    let layer_count: usize = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("layers.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |last| last + 1);
    let mut layers = Vec::with_capacity(layer_count);
    let mut rank = 0;
    for i in 0..layer_count {
        if !tensors.contains_key(&adapter_key(i, 0, "a")) {
            layers.push(None);
            continue;
        }
        let mut projections = Vec::new();
        for which in 0..PROJECTIONS.len() {
            let mut take = |part: &str| {
                let key = adapter_key(i, which, part);
                tensors.remove(&key).ok_or_else(|| ModelError::Weights(format!("{}: no {key}", path.display())))
            };
            let (a, b) = (take("a")?, take("b")?);
            rank = a.dim(0).map_err(weights_error(path))?;
            projections.push((a, b));
        }
        layers.push(Some(projections));
    }
    if layers.iter().all(Option::is_none) || !tensors.is_empty() {
        return Err(ModelError::Weights(format!("{}: not a BeLink re-ranker adapter", path.display())));
    }
    Ok(LoraWeights { rank, scale, temperature, answer, rank_prior, layers })
}

/// Writes adapters in f32 (what was trained is what is served), atomically.
pub fn save_adapter(lora: &LoraWeights, path: &Path) -> Result<(), ModelError> {
    let mut tensors = HashMap::new();
    for (i, projections) in lora.layers.iter().enumerate() {
        for (which, (a, b)) in projections.iter().flatten().enumerate() {
            tensors.insert(adapter_key(i, which, "a"), a.detach());
            tensors.insert(adapter_key(i, which, "b"), b.detach());
        }
    }
    let answer_names = if lora.answer == AnswerForm::Name { 1.0 } else { 0.0 };
    for (key, value) in [(SCALE_KEY, lora.scale), (TEMPERATURE_KEY, lora.temperature), (ANSWER_NAMES_KEY, answer_names)]
    {
        tensors.insert(key.to_string(), Tensor::new(&[value as f32], &Device::Cpu).map_err(weights_error(path))?);
    }
    if !lora.rank_prior.is_empty() {
        let prior = Tensor::new(lora.rank_prior.as_slice(), &Device::Cpu).map_err(weights_error(path))?;
        tensors.insert(RANK_PRIOR_KEY.to_string(), prior);
    }
    let partial = path.with_extension("partial");
    candle_core::safetensors::save(&tensors, &partial).map_err(weights_error(&partial))?;
    std::fs::rename(&partial, path).map_err(|e| ModelError::Weights(format!("{}: {e}", path.display())))
}

/// One training example: the item's part of the prompt (after the shared instruction prefix)
/// and the index of the right option among `options` (candidates, then "none of these"); in
/// the name form, each option's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneExample {
    pub suffix: String,
    pub answer: usize,
    pub options: usize,
    pub form: AnswerForm,
    /// The name form's answer of each option (empty in the letter form).
    pub option_names: Vec<String>,
}

impl TuneExample {
    /// An example from a line of `belink-eval instructions` output: its `prompt` must begin with
    /// the shared prefix of `template` in `form`, byte for byte (the prompt the server builds).
    pub fn from_record(record: &serde_json::Value, prefix: &str, form: AnswerForm) -> Result<TuneExample, String> {
        let prompt = record["prompt"].as_str().ok_or("no prompt")?;
        let suffix =
            prompt.strip_prefix(prefix).ok_or("the prompt does not begin with this model's instruction prefix")?;
        let answer = record["answer"].as_str().ok_or("no answer")?;
        let answer =
            LABELS.iter().position(|l| *l == answer).ok_or_else(|| format!("answer {answer:?} is no label"))?;
        let options = record["options"].as_u64().ok_or("no options")? as usize;
        if answer >= options || options > LABELS.len() {
            return Err(format!("answer {} outside {options} options", LABELS[answer]));
        }
        let option_names: Vec<String> = match form {
            AnswerForm::Letter => Vec::new(),
            AnswerForm::Name => record["option_names"]
                .as_array()
                .ok_or("a name-form example without option_names")?
                .iter()
                .map(|n| n.as_str().map(String::from).ok_or("option_names holds a non-string"))
                .collect::<Result<_, _>>()?,
        };
        if form == AnswerForm::Name && option_names.len() != options {
            return Err(format!("{} option_names for {options} options", option_names.len()));
        }
        Ok(TuneExample { suffix: suffix.to_string(), answer, options, form, option_names })
    }
}

/// One example as the server tokenizes it, for training on another framework: the whole
/// prompt (the instruction prefix of its form and its suffix, tokenized apart as [`Reranker`]
/// does) and, in the name form, each option's answer tokens (name and end of turn).
pub struct ExampleTokens {
    pub prompt: Vec<u32>,
    pub answers: Vec<Vec<u32>>,
}

/// The label token ids, then each example's tokens.
pub fn prompt_tokens(
    model_path: &Path,
    examples: &[TuneExample],
) -> Result<(Vec<u32>, Vec<ExampleTokens>), ModelError> {
    let reranker = Reranker::load(model_path, &Device::Cpu, None)?;
    let prefix = |form| encode(&reranker.tokenizer, &shared_prefix(reranker.template, form));
    let (letter_prefix, name_prefix) = (prefix(AnswerForm::Letter)?, prefix(AnswerForm::Name)?);
    let tokens = examples
        .iter()
        .map(|e| {
            let prefix = if e.form == AnswerForm::Name { &name_prefix } else { &letter_prefix };
            Ok(ExampleTokens {
                prompt: [prefix.clone(), encode(&reranker.tokenizer, &e.suffix)?].concat(),
                answers: reranker.answer_tokens(&e.option_names)?,
            })
        })
        .collect::<Result<_, ModelError>>()?;
    Ok((reranker.label_ids.clone(), tokens))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TuneConfig {
    pub rank: usize,
    /// Layers adapted, counted from the top (0: every layer). Gradients flow only through
    /// the adapted layers, so fewer cost less.
    pub top_layers: usize,
    /// LoRA's alpha: the adapters are scaled by alpha / rank.
    pub alpha: f64,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Examples per optimizer step.
    pub batch_size: usize,
    pub epochs: usize,
    /// Stop after this many steps (0: after every epoch); the order being random, the
    /// examples seen are a random subset.
    pub max_steps: u64,
    pub seed: u64,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            rank: 8,
            top_layers: 0,
            alpha: 16.0,
            learning_rate: 2e-4,
            weight_decay: 0.0,
            batch_size: 4,
            epochs: 1,
            max_steps: 0,
            seed: 42,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fit_temperature;

    #[test]
    fn temperature_scaling_softens_overconfident_logits() {
        // Logits that put the answer first with p = 0.99 but are right only half the time.
        let rows: Vec<(Vec<f32>, usize)> =
            (0..100).map(|i| (vec![5.0, 0.4, 0.0], if i % 2 == 0 { 0 } else { 1 })).collect();
        let (temperature, before, after) = fit_temperature(&rows);
        assert!(temperature > 3.0, "{temperature}");
        assert!(after < before);
        // Right 80 % of the time with a softmax probability of 0.8: already calibrated.
        let calibrated: Vec<(Vec<f32>, usize)> =
            (0..100).map(|i| (vec![(8f32).ln(), 0.0, 0.0], if i % 10 < 8 { 0 } else { 1 + i % 2 })).collect();
        let (temperature, _, _) = fit_temperature(&calibrated);
        assert!((temperature - 1.0).abs() < 0.05, "{temperature}");
    }
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    config: TuneConfig,
    step: u64,
    fingerprint: u64,
    weights_file: String,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TuneStep {
    pub step: u64,
    pub steps_total: u64,
    pub loss: f32,
    /// Examples of the batch whose answer had the highest probability before the step.
    pub right: usize,
    pub examples: usize,
    pub tokens: usize,
}

pub struct RerankerTuner {
    reranker: Reranker,
    config: TuneConfig,
    vars: Vec<(String, Var, Moments)>,
    lora: LoraWeights,
    /// Token ids of each example's suffix, with its answer and option count.
    examples: Vec<(Vec<u32>, usize, usize)>,
    fingerprint: u64,
    step: u64,
    steps_at_start: u64,
}

fn inference(e: impl std::fmt::Display) -> ModelError {
    ModelError::Inference(e.to_string())
}

impl RerankerTuner {
    /// A tuner of the base model at `model_path` (a GGUF file or Hugging Face directory) on
    /// `examples`, starting from fresh adapters.
    pub fn new(
        model_path: &Path,
        examples: &[TuneExample],
        config: TuneConfig,
        device: &Device,
    ) -> Result<RerankerTuner, ModelError> {
        if config.rank == 0 || config.batch_size == 0 || config.epochs == 0 || examples.is_empty() {
            return Err(ModelError::Config("tuning needs rank, batch_size, epochs and examples".into()));
        }
        if examples.iter().any(|e| e.form == AnswerForm::Name) {
            return Err(ModelError::Config(
                "this trainer trains letter answers; train name answers with scripts/train-reranker-torch.py".into(),
            ));
        }
        let reranker = Reranker::load(model_path, device, None)?;
        let tokens = examples
            .iter()
            .map(|e| Ok((encode(&reranker.tokenizer, &e.suffix)?, e.answer, e.options)))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let model = &reranker.model;
        let mut random = SeededRandom::new(config.seed);
        let mut vars = Vec::new();
        let mut layers = Vec::new();
        let layer_count = model.config.layers;
        let first_adapted = match config.top_layers {
            0 => 0,
            top => layer_count.saturating_sub(top),
        };
        for i in 0..layer_count {
            if i < first_adapted {
                layers.push(None);
                continue;
            }
            let mut projections = Vec::new();
            for which in 0..PROJECTIONS.len() {
                let (input, output) = model.projection_shape(which);
                let bound = 1.0 / (input as f32).sqrt();
                let a: Vec<f32> = (0..config.rank * input).map(|_| (2.0 * random.unit() - 1.0) * bound).collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (config.rank, input), device).map_err(inference)?)
                    .map_err(inference)?;
                let b = Var::zeros((output, config.rank), DType::F32, device).map_err(inference)?;
                projections.push((a.as_tensor().clone(), b.as_tensor().clone()));
                for (part, var) in [("a", a), ("b", b)] {
                    let n = var.elem_count();
                    vars.push((adapter_key(i, which, part), var, Moments { m: vec![0.0; n], v: vec![0.0; n] }));
                }
            }
            layers.push(Some(projections));
        }
        let lora = LoraWeights {
            rank: config.rank,
            scale: config.alpha / config.rank as f64,
            temperature: 1.0,
            answer: AnswerForm::Letter,
            rank_prior: Vec::new(),
            layers,
        };
        Ok(RerankerTuner {
            reranker,
            fingerprint: fingerprint(examples),
            config,
            vars,
            lora,
            examples: tokens,
            step: 0,
            steps_at_start: 0,
        })
    }

    /// A tuner continuing the run saved in `checkpoint_dir`, on the same examples.
    pub fn resume(
        model_path: &Path,
        checkpoint_dir: &Path,
        examples: &[TuneExample],
        device: &Device,
    ) -> Result<RerankerTuner, ModelError> {
        let json_path = checkpoint_dir.join(CHECKPOINT_JSON);
        let text = std::fs::read_to_string(&json_path)
            .map_err(|e| ModelError::Missing(format!("{}: {e}", json_path.display())))?;
        let state: CheckpointState =
            serde_json::from_str(&text).map_err(|e| ModelError::Config(format!("{}: {e}", json_path.display())))?;
        if fingerprint(examples) != state.fingerprint {
            return Err(ModelError::Config(format!(
                "{}: the training examples changed since this checkpoint was written",
                checkpoint_dir.display()
            )));
        }
        let weights_path = checkpoint_dir.join(&state.weights_file);
        let saved = candle_core::safetensors::load(&weights_path, device).map_err(weights_error(&weights_path))?;
        let mut tuner = RerankerTuner::new(model_path, examples, state.config, device)?;
        restore_optimizer(&mut tuner.vars, &saved, &weights_path)?;
        tuner.step = state.step;
        tuner.steps_at_start = state.step;
        Ok(tuner)
    }

    pub fn config(&self) -> &TuneConfig {
        &self.config
    }

    pub fn steps_done(&self) -> u64 {
        self.step
    }

    pub fn steps_at_start(&self) -> u64 {
        self.steps_at_start
    }

    pub fn steps_per_epoch(&self) -> u64 {
        self.examples.len().div_ceil(self.config.batch_size) as u64
    }

    pub fn steps_total(&self) -> u64 {
        let all = self.steps_per_epoch() * self.config.epochs as u64;
        match self.config.max_steps {
            0 => all,
            limit => all.min(limit),
        }
    }

    /// The adapters as trained so far.
    pub fn adapters(&self) -> &LoraWeights {
        &self.lora
    }

    /// The examples of the step `step` (a permutation of all examples per epoch, from the seed).
    fn batch(&self, step: u64) -> Vec<usize> {
        let per_epoch = self.steps_per_epoch();
        let epoch = step / per_epoch;
        let mut order: Vec<usize> = (0..self.examples.len()).collect();
        SeededRandom::new(self.config.seed ^ (epoch + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).shuffle(&mut order);
        let start = (step % per_epoch) as usize * self.config.batch_size;
        order[start..(start + self.config.batch_size).min(order.len())].to_vec()
    }

    /// Label logits [examples, labels] of examples by index, through the adapted model.
    fn adapted_logits(&self, batch: &[usize]) -> candle_core::Result<Tensor> {
        let model: &Llama = &self.reranker.model;
        let device = model.device();
        let pass = Pass::Train(&self.lora);
        let prefix = Tensor::new(self.reranker.prefix_tokens.as_slice(), device)?.unsqueeze(0)?;
        let (_, prefix) = model.forward_pass(&prefix, None, pass)?;
        let width = batch.iter().map(|&i| self.examples[i].0.len()).max().unwrap_or(1);
        let pad = self.reranker.pad_id;
        let padded: Vec<u32> = batch
            .iter()
            .flat_map(|&i| {
                let tokens = &self.examples[i].0;
                tokens.iter().copied().chain(std::iter::repeat_n(pad, width - tokens.len()))
            })
            .collect();
        let tokens = Tensor::from_vec(padded, (batch.len(), width), device)?;
        let (hidden, _) = model.forward_pass(&tokens, Some(&prefix), pass)?;
        let lengths: Vec<usize> = batch.iter().map(|&i| self.examples[i].0.len()).collect();
        let last = Llama::last_positions(&hidden, &lengths)?;
        model.logits_for(&model.final_norm_differentiable(&last)?, &self.reranker.label_ids)
    }

    /// The label logits of the training example `index` through the adapted model, as
    /// [`Reranker::label_logits`] gives them (for checking that the merged model serves them).
    pub fn example_logits(&self, index: usize) -> Result<Vec<f32>, ModelError> {
        let logits = self.adapted_logits(&[index]).and_then(|l| l.squeeze(0)?.to_vec1::<f32>()).map_err(inference)?;
        Ok(logits)
    }

    /// The mean loss of `batch` and how many answers ranked first, differentiable.
    fn batch_loss(&self, batch: &[usize]) -> candle_core::Result<(Tensor, usize)> {
        let device = self.reranker.model.device();
        let logits = self.adapted_logits(batch)?;
        // Labels beyond an item's options are masked out; the answer's log-probability is picked
        // by a one-hot row.
        let labels = self.reranker.label_ids.len();
        let mut mask = Vec::with_capacity(batch.len() * labels);
        let mut one_hot = vec![0f32; batch.len() * labels];
        for (row, &i) in batch.iter().enumerate() {
            let (_, answer, options) = self.examples[i];
            mask.extend((0..labels).map(|l| if l < options { 0f32 } else { -1e9 }));
            one_hot[row * labels + answer] = 1.0;
        }
        let masked = logits.broadcast_add(&Tensor::from_vec(mask, (batch.len(), labels), device)?)?;
        let log_probs = candle_nn::ops::log_softmax(&masked, D::Minus1)?;
        let one_hot = Tensor::from_vec(one_hot, (batch.len(), labels), device)?;
        let answer_log_probs = (log_probs.clone() * &one_hot)?.sum(D::Minus1)?;
        let best = log_probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let right = batch.iter().zip(best).filter(|(&i, b)| self.examples[i].1 == *b as usize).count();
        Ok((answer_log_probs.mean_all()?.neg()?, right))
    }

    /// One optimizer step; None when every epoch is done.
    pub fn step(&mut self) -> Result<Option<TuneStep>, ModelError> {
        if self.step >= self.steps_total() {
            return Ok(None);
        }
        // One example at a time, gradients summed: on a CPU, a padded batch is no faster
        // (measured: 0.30 examples/s at batch 4 against 0.33 one by one) and takes 3x the memory.
        let batch = self.batch(self.step);
        let (mut loss_sum, mut right) = (0f32, 0);
        let mut summed: Vec<Option<Tensor>> = vec![None; self.vars.len()];
        for &example in &batch {
            let (loss, is_right) = self.batch_loss(&[example]).map_err(inference)?;
            let grads = (loss.clone() / batch.len() as f64).and_then(|l| l.backward()).map_err(inference)?;
            loss_sum += loss.to_scalar::<f32>().map_err(inference)?;
            right += is_right;
            for ((_, var, _), total) in self.vars.iter().zip(&mut summed) {
                if let Some(grad) = grads.get(var) {
                    *total = Some(match total.take() {
                        Some(t) => (t + grad).map_err(inference)?,
                        None => grad.clone(),
                    });
                }
            }
        }
        self.step += 1;
        let t = self.step as i32;
        let hyper = AdamW {
            lr: self.config.learning_rate as f32,
            weight_decay: self.config.weight_decay as f32,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            correction1: 1.0 - 0.9f32.powi(t),
            correction2: 1.0 - 0.999f32.powi(t),
        };
        for ((_, var, moments), grad) in self.vars.iter_mut().zip(&summed) {
            if let Some(grad) = grad {
                hyper.update(var, grad, moments).map_err(inference)?;
            }
        }
        Ok(Some(TuneStep {
            step: self.step,
            steps_total: self.steps_total(),
            loss: loss_sum / batch.len() as f32,
            right,
            examples: batch.len(),
            tokens: batch.iter().map(|&i| self.examples[i].0.len()).sum::<usize>() + self.reranker.prefix_len(),
        }))
    }

    /// Saves adapters, moments and the step in `dir` (atomically: a crash leaves the previous
    /// checkpoint whole).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), ModelError> {
        write_checkpoint(dir, self.step, &optimizer_tensors(&self.vars)?, |weights_file| CheckpointState {
            config: self.config.clone(),
            step: self.step,
            fingerprint: self.fingerprint,
            weights_file,
        })
    }

    /// Examples no step of the run trains on (those after the last step in the first epoch's
    /// order), in order: held out for calibration.
    pub fn unseen_examples(&self) -> Vec<usize> {
        if self.steps_total() >= self.steps_per_epoch() {
            return Vec::new();
        }
        let seen: std::collections::HashSet<usize> = (0..self.steps_total()).flat_map(|s| self.batch(s)).collect();
        (0..self.examples.len()).filter(|i| !seen.contains(i)).collect()
    }

    /// Fits the adapters' softmax temperature on `examples` (by index) and stores it with them;
    /// returns (temperature, negative log-likelihood before, after).
    pub fn calibrate(&mut self, examples: &[usize]) -> Result<(f64, f64, f64), ModelError> {
        let mut rows = Vec::with_capacity(examples.len());
        for &i in examples {
            let (_, answer, options) = self.examples[i];
            let logits = self.example_logits(i)?;
            rows.push((logits[..options].to_vec(), answer));
        }
        let (temperature, before, after) = fit_temperature(&rows);
        self.lora.temperature = temperature;
        Ok((temperature, before, after))
    }

    /// The checkpoint directory's state, if a run was saved there.
    pub fn has_checkpoint(dir: &Path) -> bool {
        dir.join(CHECKPOINT_JSON).is_file()
    }

    pub fn model_path(&self) -> PathBuf {
        self.reranker.path().to_path_buf()
    }
}

/// The temperature T minimizing the mean negative log-likelihood of the answers under
/// softmax(logits / T) (Guo et al. 2017), by golden-section search over log T in [1/20, 20];
/// returns (T, NLL at T = 1, NLL at T).
pub fn fit_temperature(rows: &[(Vec<f32>, usize)]) -> (f64, f64, f64) {
    let nll = |temperature: f64| -> f64 {
        let total: f64 = rows
            .iter()
            .map(|(logits, answer)| {
                let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / temperature).collect();
                let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let log_sum = scaled.iter().map(|s| (s - max).exp()).sum::<f64>().ln() + max;
                log_sum - scaled[*answer]
            })
            .sum();
        total / rows.len().max(1) as f64
    };
    if rows.is_empty() {
        return (1.0, 0.0, 0.0);
    }
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut low, mut high) = (20f64.recip().ln(), 20f64.ln());
    for _ in 0..60 {
        let a = high - ratio * (high - low);
        let b = low + ratio * (high - low);
        if nll(a.exp()) < nll(b.exp()) {
            high = b;
        } else {
            low = a;
        }
    }
    let temperature = ((low + high) / 2.0).exp();
    (temperature, nll(1.0), nll(temperature))
}

/// FNV-1a over the examples, to recognize them on resume.
fn fingerprint(examples: &[TuneExample]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for e in examples {
        for byte in e.suffix.bytes().chain([e.answer as u8, e.options as u8, 0xff]) {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x100_0000_01b3);
        }
    }
    hash
}
