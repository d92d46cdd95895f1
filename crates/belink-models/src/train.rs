//! Fine-tuning the sentence encoder on an ontology's synonyms (SapBERT's self-alignment):
//! names of the same concept are pulled together, names of different concepts pushed apart,
//! on the vectors the encoder serves (mean pooling or CLS, L2-normalized).
//!
//! - Batches: each concept's names are shuffled and cut into groups of
//!   `names_per_concept`, so every batch holds several names of each of its concepts.
//!   Concepts with one name are left out: they have no synonym to align. The groups are
//!   packed into batches at random ([`Batching::Random`]) or by neighbourhood
//!   ([`Batching::Neighbours`]: a concept's group with groups of the concepts the base encoder
//!   places nearest to it, so that a batch's negatives are the confusable ones; random
//!   in-batch negatives are too easy to teach anything in one epoch). The order is a function
//!   of the seed, the epoch and the base encoder only, and the neighbours are saved in
//!   checkpoints, so a resumed run sees the same batches as one never interrupted.
//! - Anchors (BioSyn's setting): names given apart, such as the mentions of an annotated
//!   corpus, each put in a batch with other names of its concept and with the names of other
//!   concepts that the base encoder places nearest to it ([`Batching::Anchored`]): the model
//!   learns the way people write a concept, against the candidates retrieval would offer.
//!   Measured on NCBI-disease, it did not beat the stock encoder (BENCHMARKS.md).
//! - Loss: SapBERT's multi-similarity loss with online hard-pair mining, InfoNCE with
//!   in-batch negatives, or BioSyn's synonym marginalization with the anchors as queries.
//! - Optimizer: AdamW of our own (its moments are saved in checkpoints), constant learning
//!   rate, as SapBERT.
//! - Padding: a batch's names are sorted by length and run in micro-batches, each padded to
//!   its own longest name; the loss is computed over the whole batch.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var, D};
use candle_nn::VarMap;
use candle_transformers::models::bert::Config;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::bert::{pool, to_hf, Bert, NormKernel, Params};
use crate::encoder::{read_params, Pooling, SentenceEncoder};
use crate::ModelError;

/// The training loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Loss {
    /// Multi-similarity loss (Wang et al. 2019) as SapBERT uses it: alpha 2, beta 50, base
    /// (lambda) 0.5; pairs mined online with margin `epsilon` 0.1 (a negative is kept when it is
    /// closer than the hardest positive plus epsilon, a positive when it is farther than the
    /// hardest negative minus epsilon).
    MultiSimilarity { alpha: f64, beta: f64, base: f64, epsilon: f64 },
    /// InfoNCE with in-batch negatives: each name's synonyms in the batch against every other
    /// name of the batch, at `temperature`.
    InfoNce { temperature: f64 },
    /// BioSyn's synonym marginalization, over a batch: for each anchor name (see
    /// [`Batching::Anchored`]) as the query, -log of the probability (softmax of the cosines
    /// at `temperature` over every other name of the batch) that the answer is one of its
    /// concept's names. Only the anchors' ranking is trained: the ontology's names are
    /// candidates, not queries.
    SynonymMarginal { temperature: f64 },
}

/// How the groups of names are packed into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Batching {
    /// Groups shuffled at random (SapBERT's batches, drawn from all of UMLS).
    Random,
    /// Each batch gathers one group of a seed concept and one of each of its nearest concepts
    /// (cosine of the mean of their names' vectors by the base encoder), in turn for seeds
    /// taken in random order until every group is used.
    Neighbours,
    /// One cluster per anchor name: the anchor, `names_per_concept - 1` other names of its
    /// concept, and the `negative_names` names of other concepts nearest to the anchor by the
    /// base encoder (the candidates dense retrieval would wrongly offer). An epoch is one
    /// pass over the anchors.
    Anchored,
}

impl Loss {
    pub const SAPBERT: Loss = Loss::MultiSimilarity { alpha: 2.0, beta: 50.0, base: 0.5, epsilon: 0.1 };
}

/// Fields missing from a serialized configuration take their [`Default`] value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Names per optimizer step.
    pub batch_size: usize,
    /// Names of one concept put together in a batch.
    pub names_per_concept: usize,
    /// Names are truncated to this many tokens (SapBERT: 25).
    pub max_tokens: usize,
    /// Names per forward pass inside a batch (each padded to its own longest).
    pub micro_batch: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub epochs: usize,
    pub seed: u64,
    pub loss: Loss,
    pub batching: Batching,
    /// With [`Batching::Anchored`]: the confusable names put beside each anchor.
    pub negative_names: usize,
}

impl Default for TrainConfig {
    /// SapBERT's settings (batch 256, max length 25, AdamW at 2e-5 with weight decay 0.01,
    /// one epoch, multi-similarity loss, random batches). Random batches were measured better
    /// than neighbour batches on NCBI-disease dev over MEDIC (dense acc@1 0.776 against 0.759
    /// and 0.760 for two seeds; BENCHMARKS.md) and need no set-up pass.
    fn default() -> Self {
        TrainConfig {
            batch_size: 256,
            names_per_concept: 4,
            max_tokens: 25,
            micro_batch: 64,
            learning_rate: 2e-5,
            weight_decay: 0.01,
            epochs: 1,
            seed: 42,
            loss: Loss::SAPBERT,
            batching: Batching::Random,
            negative_names: 12,
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Steps done so far, this one included.
    pub step: u64,
    pub steps_total: u64,
    pub epoch: usize,
    pub loss: f32,
    pub names: usize,
}

/// A checkpoint's small JSON part; the tensors are in `weights_file`.
#[derive(Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    /// Steps done (the next step's batch follows from it).
    step: u64,
    /// A hash of the training names: a resume on other names is refused.
    fingerprint: u64,
    weights_file: String,
}

pub(crate) const CHECKPOINT_JSON: &str = "checkpoint.json";
/// The checkpoint tensor holding [`Trainer::neighbours`], rows padded with [`NO_NEIGHBOUR`].
const NEIGHBOURS_KEY: &str = "batching.neighbours";
const NO_NEIGHBOUR: u32 = u32::MAX;

/// Each parameter and its AdamW moments as tensors (`name`, `adam.m.name`, `adam.v.name`).
pub(crate) fn optimizer_tensors(vars: &[(String, Var, Moments)]) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut tensors = HashMap::new();
    for (name, var, moments) in vars {
        let state = |data: &[f32]| Tensor::from_slice(data, var.shape(), &Device::Cpu).map_err(inference);
        tensors.insert(name.clone(), var.as_tensor().to_device(&Device::Cpu).map_err(inference)?);
        tensors.insert(format!("adam.m.{name}"), state(&moments.m)?);
        tensors.insert(format!("adam.v.{name}"), state(&moments.v)?);
    }
    Ok(tensors)
}

/// Sets each parameter and its moments from the tensors [`optimizer_tensors`] saved in `path`.
pub(crate) fn restore_optimizer(
    vars: &mut [(String, Var, Moments)],
    saved: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), ModelError> {
    let weights_error = |e: candle_core::Error| ModelError::Weights(format!("{}: {e}", path.display()));
    let take = |key: &str| saved.get(key).ok_or_else(|| ModelError::Weights(format!("{}: no {key}", path.display())));
    let values = |key: &str| take(key)?.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(weights_error);
    for (name, var, moments) in vars {
        var.set(take(name)?).map_err(weights_error)?;
        moments.m = values(&format!("adam.m.{name}"))?;
        moments.v = values(&format!("adam.v.{name}"))?;
    }
    Ok(())
}

/// Writes a checkpoint in `dir` (created if needed): the tensors to
/// `checkpoint-{step}.safetensors`, then the JSON state naming that file, renamed into place
/// last, which commits it (a crash while saving leaves the previous checkpoint whole); then
/// removes the older tensor files.
pub(crate) fn write_checkpoint<S: Serialize>(
    dir: &Path,
    step: u64,
    tensors: &HashMap<String, Tensor>,
    state: impl FnOnce(String) -> S,
) -> Result<(), ModelError> {
    let io = |e: std::io::Error| ModelError::Weights(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let weights_file = format!("checkpoint-{step}.safetensors");
    let partial = dir.join(format!("{weights_file}.partial"));
    candle_core::safetensors::save(tensors, &partial)
        .map_err(|e| ModelError::Weights(format!("{}: {e}", partial.display())))?;
    std::fs::rename(&partial, dir.join(&weights_file)).map_err(io)?;
    let json = dir.join(format!("{CHECKPOINT_JSON}.partial"));
    std::fs::write(&json, serde_json::to_string_pretty(&state(weights_file.clone())).map_err(inference)?)
        .map_err(io)?;
    std::fs::rename(&json, dir.join(CHECKPOINT_JSON)).map_err(io)?;
    for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("checkpoint-") && name != weights_file {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// AdamW's moments of one parameter.
pub(crate) struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

pub struct Trainer {
    config: TrainConfig,
    bert_config: Config,
    base_dir: PathBuf,
    device: Device,
    model: Bert,
    mean_pooling: bool,
    varmap: VarMap,
    /// The trainable parameters by our names, with their AdamW moments.
    vars: Vec<(String, Var, Moments)>,
    /// Token ids of each distinct training name, [CLS] and [SEP] included.
    tokens: Vec<Vec<u32>>,
    pad_id: u32,
    /// The names of each concept that has at least two.
    concepts: Vec<Vec<usize>>,
    /// The anchor names, (name, concept) (empty unless the batching is anchored).
    anchors: Vec<(usize, usize)>,
    /// With [`Batching::Neighbours`]: each concept's nearest concepts, nearest first; with
    /// [`Batching::Anchored`]: each anchor's nearest names of other concepts.
    neighbours: Vec<Vec<u32>>,
    fingerprint: u64,
    step: u64,
    /// The step this trainer started from (0, or the checkpoint's).
    steps_at_start: u64,
    steps_per_epoch: u64,
    /// The batches of the current epoch: (name, concept) pairs.
    plan: Vec<Vec<(usize, usize)>>,
    plan_epoch: usize,
    tokenizer: Tokenizer,
}

fn inference(e: impl std::fmt::Display) -> ModelError {
    ModelError::Inference(e.to_string())
}

impl Trainer {
    /// A trainer starting from the encoder in `base_dir` on `examples`, (concept id, name)
    /// pairs. `anchors`, more such pairs, anchor the batches when the batching is
    /// [`Batching::Anchored`] (which needs some); otherwise they are names like the others.
    pub fn new(
        base_dir: &Path,
        examples: &[(String, String)],
        anchors: &[(String, String)],
        config: TrainConfig,
        device: &Device,
    ) -> Result<Trainer, ModelError> {
        Trainer::build(base_dir, examples, anchors, config, device, None)
    }

    /// `neighbours`: those of a checkpoint, or None to compute them (when the batching needs
    /// them).
    fn build(
        base_dir: &Path,
        examples: &[(String, String)],
        anchors: &[(String, String)],
        config: TrainConfig,
        device: &Device,
        neighbours: Option<Vec<Vec<u32>>>,
    ) -> Result<Trainer, ModelError> {
        if config.batch_size < 2 || config.names_per_concept < 2 || config.micro_batch == 0 || config.epochs == 0 {
            return Err(ModelError::Config(
                "training needs batch_size >= 2, names_per_concept >= 2, micro_batch >= 1, epochs >= 1".into(),
            ));
        }
        let anchored = config.batching == Batching::Anchored;
        if matches!(config.loss, Loss::SynonymMarginal { .. }) && !anchored {
            // Its queries are the anchors: without them every batch's loss would be 0.
            return Err(ModelError::Config("the synonym-marginal loss needs anchored batching".into()));
        }
        let encoder = SentenceEncoder::load(base_dir, device, None)?;
        let bert_config = encoder.config().clone();
        let mut tokenizer = encoder.tokenizer().clone();
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: config.max_tokens.min(encoder.max_tokens()),
                ..Default::default()
            }))
            .map_err(inference)?;
        let pad_id = encoder.tokenizer().get_padding().map(|p| p.pad_id).unwrap_or(0);

        // Distinct names per concept, in a stable order.
        let mut by_concept: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (concept, name) in examples.iter().chain(anchors) {
            let names = by_concept.entry(concept).or_default();
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        let mut texts = Vec::new();
        let mut concepts = Vec::new();
        // (concept, name) -> (name, concept) indices, to find the anchors.
        let mut index: HashMap<(&str, &str), (usize, usize)> = HashMap::new();
        for (concept, names) in by_concept.iter().filter(|(_, names)| names.len() >= 2) {
            if anchored {
                for (i, name) in names.iter().enumerate() {
                    index.insert((concept, name), (texts.len() + i, concepts.len()));
                }
            }
            concepts.push((texts.len()..texts.len() + names.len()).collect());
            texts.extend(names.iter().copied());
        }
        if concepts.is_empty() {
            return Err(ModelError::Config("no concept has two names: there are no synonyms to learn from".into()));
        }
        let mut anchor_names: Vec<(usize, usize)> = Vec::new();
        if anchored {
            // An anchor that is its concept's only name has nothing to be aligned with.
            anchor_names = anchors.iter().filter_map(|(c, n)| index.get(&(c.as_str(), n.as_str())).copied()).collect();
            anchor_names.sort_unstable();
            anchor_names.dedup();
            if anchor_names.is_empty() {
                return Err(ModelError::Config(
                    "anchored batching needs anchor names of concepts that have other names".into(),
                ));
            }
        }
        let tokens = tokenizer
            .encode_batch(texts.clone(), true)
            .map_err(inference)?
            .iter()
            .map(|e| e.get_ids().to_vec())
            .collect();
        let neighbours = match (config.batching, neighbours) {
            (Batching::Random, _) => Vec::new(),
            (_, Some(saved)) => saved,
            (Batching::Neighbours, None) => {
                let per_concept = config.batch_size.div_ceil(config.names_per_concept);
                nearest_concepts(&encoder, &texts, &concepts, per_concept)?
            }
            (Batching::Anchored, None) => {
                confusable_names(&encoder, &texts, &concepts, &anchor_names, config.negative_names)?
            }
        };
        let expected = match config.batching {
            Batching::Random => 0,
            Batching::Neighbours => concepts.len(),
            Batching::Anchored => anchor_names.len(),
        };
        if neighbours.len() != expected {
            return Err(ModelError::Config("the saved neighbours do not match the training names".into()));
        }
        let mean_pooling = encoder.pooling() == Pooling::Mean;
        drop(encoder); // its weights: the trainer has its own copy

        let params = read_params(base_dir, &bert_config, device)?;
        let varmap = VarMap::new();
        let mut vars = Vec::new();
        let mut var_params = Params::new();
        for (name, tensor) in params {
            let var = Var::from_tensor(&tensor).map_err(inference)?;
            let n = tensor.elem_count();
            varmap.data().lock().unwrap().insert(name.clone(), var.clone());
            var_params.insert(name.clone(), var.as_tensor().clone());
            vars.push((name, var, Moments { m: vec![0.0; n], v: vec![0.0; n] }));
        }
        let model = Bert::new(&var_params, &bert_config, NormKernel::Differentiable).map_err(inference)?;
        let mut trainer = Trainer {
            fingerprint: fingerprint(examples.iter().chain(anchors)),
            config,
            bert_config,
            base_dir: base_dir.to_path_buf(),
            device: device.clone(),
            model,
            mean_pooling,
            varmap,
            vars,
            tokens,
            pad_id,
            concepts,
            anchors: anchor_names,
            neighbours,
            step: 0,
            steps_at_start: 0,
            steps_per_epoch: 0,
            plan: Vec::new(),
            plan_epoch: 0,
            tokenizer,
        };
        trainer.plan = trainer.epoch_plan(0);
        trainer.steps_per_epoch = trainer.plan.len() as u64;
        Ok(trainer)
    }

    /// A trainer continuing the run saved in `checkpoint_dir` (by [`Trainer::save_checkpoint`])
    /// on the same examples: same weights, optimizer moments, step and batch order.
    pub fn resume(
        base_dir: &Path,
        checkpoint_dir: &Path,
        examples: &[(String, String)],
        anchors: &[(String, String)],
        device: &Device,
    ) -> Result<Trainer, ModelError> {
        let json_path = checkpoint_dir.join(CHECKPOINT_JSON);
        let text = std::fs::read_to_string(&json_path)
            .map_err(|e| ModelError::Missing(format!("{}: {e}", json_path.display())))?;
        let state: CheckpointState =
            serde_json::from_str(&text).map_err(|e| ModelError::Config(format!("{}: {e}", json_path.display())))?;
        let weights_path = checkpoint_dir.join(&state.weights_file);
        let weights_error = |e: candle_core::Error| ModelError::Weights(format!("{}: {e}", weights_path.display()));
        let saved = candle_core::safetensors::load(&weights_path, device).map_err(weights_error)?;
        let neighbours = match saved.get(NEIGHBOURS_KEY) {
            Some(table) => Some(
                table
                    .to_vec2::<u32>()
                    .map_err(weights_error)?
                    .into_iter()
                    .map(|row| row.into_iter().filter(|&c| c != NO_NEIGHBOUR).collect())
                    .collect(),
            ),
            None => None,
        };
        if fingerprint(examples.iter().chain(anchors)) != state.fingerprint {
            return Err(ModelError::Config(format!(
                "{}: the training names changed since this checkpoint was written",
                checkpoint_dir.display()
            )));
        }
        let mut trainer = Trainer::build(base_dir, examples, anchors, state.config, device, neighbours)?;
        restore_optimizer(&mut trainer.vars, &saved, &weights_path)?;
        trainer.step = state.step;
        trainer.steps_at_start = state.step;
        trainer.plan_epoch = usize::MAX; // rebuilt for the current epoch at the next step
        Ok(trainer)
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// The step this trainer started from: 0, or its checkpoint's.
    pub fn steps_at_start(&self) -> u64 {
        self.steps_at_start
    }

    /// The anchors that batches are built around: those given, less duplicates and those
    /// that are their concept's only name (0 unless the batching is anchored).
    pub fn anchors_used(&self) -> usize {
        self.anchors.len()
    }

    pub fn steps_total(&self) -> u64 {
        self.steps_per_epoch * self.config.epochs as u64
    }

    /// The parameters being trained, by name (in [`Bert`]'s layout).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn epoch_plan(&self, epoch: usize) -> Vec<Vec<(usize, usize)>> {
        epoch_plan(&self.config, &self.concepts, &self.anchors, &self.neighbours, epoch)
    }

    /// The batch the next step trains on, with its epoch; None when training is done.
    fn next_batch(&mut self) -> Option<(usize, Vec<(usize, usize)>)> {
        let epoch = (self.step / self.steps_per_epoch) as usize;
        if epoch >= self.config.epochs {
            return None;
        }
        if self.plan_epoch != epoch {
            self.plan = self.epoch_plan(epoch);
            self.plan_epoch = epoch;
        }
        Some((epoch, self.plan[(self.step % self.steps_per_epoch) as usize].clone()))
    }

    /// One optimizer step on the next batch; None when every epoch is done.
    pub fn step(&mut self) -> Result<Option<StepReport>, ModelError> {
        let Some((epoch, batch)) = self.next_batch() else {
            return Ok(None);
        };
        let loss = self.batch_loss(&batch).map_err(inference)?;
        let grads = loss.backward().map_err(inference)?;
        self.step += 1;
        let t = self.step as i32;
        let config = &self.config;
        let hyper = AdamW {
            lr: config.learning_rate as f32,
            weight_decay: config.weight_decay as f32,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            correction1: 1.0 - 0.9f32.powi(t),
            correction2: 1.0 - 0.999f32.powi(t),
        };
        for (_, var, moments) in &mut self.vars {
            if let Some(grad) = grads.get(var) {
                hyper.update(var, grad, moments).map_err(inference)?;
            }
        }
        Ok(Some(StepReport {
            step: self.step,
            steps_total: self.steps_total(),
            epoch,
            loss: loss.to_scalar::<f32>().map_err(inference)?,
            names: batch.len(),
        }))
    }

    /// The loss of a batch of (name, concept) pairs, differentiable.
    fn batch_loss(&self, batch: &[(usize, usize)]) -> candle_core::Result<Tensor> {
        let names: Vec<usize> = batch.iter().map(|&(n, _)| n).collect();
        let (vectors, order) = self.embed_tokens(&names)?;
        let labels: Vec<usize> = order.iter().map(|&i| batch[i].1).collect();
        match self.config.loss {
            Loss::MultiSimilarity { alpha, beta, base, epsilon } => {
                multi_similarity(&vectors, &labels, alpha, beta, base, epsilon)
            }
            Loss::InfoNce { temperature } => info_nce(&vectors, &labels, temperature),
            Loss::SynonymMarginal { temperature } => {
                let queries: Vec<bool> = order
                    .iter()
                    .map(|&i| self.anchors.binary_search_by_key(&batch[i].0, |&(name, _)| name).is_ok())
                    .collect();
                synonym_marginal(&vectors, &labels, &queries, temperature)
            }
        }
    }

    /// The loss on the next batch without training (for reports and tests).
    pub fn next_batch_loss(&mut self) -> Result<Option<f32>, ModelError> {
        let Some((_, batch)) = self.next_batch() else {
            return Ok(None);
        };
        let loss = self.batch_loss(&batch).and_then(|l| l.to_scalar::<f32>()).map_err(inference)?;
        Ok(Some(loss))
    }

    /// Sentence vectors of training names (indices into `tokens`), in micro-batches of names of
    /// similar length; returns the vectors and, for each row, the index in `names` it embeds.
    fn embed_tokens(&self, names: &[usize]) -> candle_core::Result<(Tensor, Vec<usize>)> {
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.tokens[names[i]].len()));
        let mut parts = Vec::new();
        for chunk in order.chunks(self.config.micro_batch) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| self.tokens[names[i]].as_slice()).collect();
            parts.push(self.embed_rows(&rows)?);
        }
        Ok((Tensor::cat(&parts, 0)?, order))
    }

    /// Pooled, normalized vectors of token-id rows, padded to the longest.
    fn embed_rows(&self, rows: &[&[u32]]) -> candle_core::Result<Tensor> {
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * width);
        let mut mask = Vec::with_capacity(rows.len() * width);
        for row in rows {
            ids.extend(row.iter().copied().chain(std::iter::repeat(self.pad_id)).take(width));
            mask.extend((0..width).map(|i| u32::from(i < row.len())));
        }
        let ids = Tensor::from_vec(ids, (rows.len(), width), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows.len(), width), &self.device)?;
        let hidden = self.model.forward(&ids, &ids.zeros_like()?, &mask)?;
        pool(&hidden, &mask, self.mean_pooling)
    }

    /// Vectors of arbitrary texts by the model being trained (as it would serve them).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(inference)?;
        let rows: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        self.embed_rows(&rows).and_then(|t| t.detach().to_vec2()).map_err(inference)
    }

    /// Saves weights, optimizer moments and progress in `dir` (created if needed). The JSON
    /// file, renamed into place last, commits the checkpoint: a crash while saving leaves the
    /// previous checkpoint whole.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<(), ModelError> {
        let mut tensors = optimizer_tensors(&self.vars)?;
        if !self.neighbours.is_empty() {
            // Rows padded to the longest (an anchor may have fewer confusable names).
            let width = self.neighbours.iter().map(Vec::len).max().unwrap_or(0);
            let flat: Vec<u32> = self
                .neighbours
                .iter()
                .flat_map(|row| row.iter().copied().chain(std::iter::repeat(NO_NEIGHBOUR)).take(width))
                .collect();
            let table = Tensor::from_vec(flat, (self.neighbours.len(), width), &Device::Cpu).map_err(inference)?;
            tensors.insert(NEIGHBOURS_KEY.to_string(), table);
        }
        write_checkpoint(dir, self.step, &tensors, |weights_file| CheckpointState {
            config: self.config.clone(),
            step: self.step,
            fingerprint: self.fingerprint,
            weights_file,
        })
    }

    /// Writes the trained encoder as a model directory that [`SentenceEncoder::load`] reads:
    /// the base model's configuration and tokenizer files, and the trained `model.safetensors`
    /// under Hugging Face's names.
    pub fn save_model(&self, out_dir: &Path) -> Result<(), ModelError> {
        save_model_files(&self.base_dir, out_dir, &self.params(), &self.bert_config)
    }

    fn params(&self) -> Params {
        self.vars.iter().map(|(name, var, _)| (name.clone(), var.as_tensor().clone())).collect()
    }
}

/// The small files of a sentence-transformers model directory, copied from the base.
const MODEL_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentence_bert_config.json",
    "modules.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// Writes `params` as a model directory `out_dir` with `base_dir`'s configuration files.
pub fn save_model_files(base_dir: &Path, out_dir: &Path, params: &Params, config: &Config) -> Result<(), ModelError> {
    let io = |path: &Path, e: std::io::Error| ModelError::Weights(format!("{}: {e}", path.display()));
    for file in MODEL_FILES {
        let from = base_dir.join(file);
        if from.is_file() {
            let to = out_dir.join(file);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            std::fs::copy(&from, &to).map_err(|e| io(&to, e))?;
        }
    }
    let tensors: HashMap<String, Tensor> = to_hf(params, config)
        .and_then(|all| all.into_iter().map(|(name, t)| Ok((name, t.to_device(&Device::Cpu)?))).collect())
        .map_err(inference)?;
    // Written beside, then renamed: a reader never sees half a model.
    let partial = out_dir.join("model.safetensors.partial");
    candle_core::safetensors::save(&tensors, &partial)
        .map_err(|e| ModelError::Weights(format!("{}: {e}", partial.display())))?;
    let path = out_dir.join("model.safetensors");
    std::fs::rename(&partial, &path).map_err(|e| io(&path, e))
}

/// The batches of `epoch`, (name, concept) pairs: a function of the configuration, the
/// concepts' names and neighbours, and the epoch only.
fn epoch_plan(
    config: &TrainConfig,
    concepts: &[Vec<usize>],
    anchors: &[(usize, usize)],
    neighbours: &[Vec<u32>],
    epoch: usize,
) -> Vec<Vec<(usize, usize)>> {
    let mut rng = SplitMix64(config.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let k = config.names_per_concept;
    if config.batching == Batching::Anchored {
        return pack(anchored_clusters(config, concepts, anchors, neighbours, &mut rng), config.batch_size);
    }
    // Each concept's groups of names, shuffled.
    let mut groups: Vec<Vec<Vec<(usize, usize)>>> = Vec::with_capacity(concepts.len());
    for (concept, names) in concepts.iter().enumerate() {
        let mut names = names.clone();
        rng.shuffle(&mut names);
        let mut own = Vec::new();
        for chunk in names.chunks(k) {
            let mut group: Vec<(usize, usize)> = chunk.iter().map(|&n| (n, concept)).collect();
            if group.len() == 1 {
                // A name alone has no positive: pair it with another name of its concept.
                let other = names[rng.below(names.len() - 1)];
                group.push((other, concept));
            }
            own.push(group);
        }
        groups.push(own);
    }
    // Clusters of groups, each at most a batch, packed in order.
    let clusters: Vec<Vec<(usize, usize)>> = match config.batching {
        Batching::Random => {
            let mut all: Vec<_> = groups.into_iter().flatten().collect();
            rng.shuffle(&mut all);
            all
        }
        Batching::Neighbours => {
            let mut seeds: Vec<usize> = (0..groups.len()).collect();
            rng.shuffle(&mut seeds);
            let mut clusters = Vec::new();
            let mut left: usize = groups.iter().map(Vec::len).sum();
            while left > 0 {
                for &seed in &seeds {
                    let Some(mut cluster) = groups[seed].pop() else { continue };
                    left -= 1;
                    for &near in &neighbours[seed] {
                        if cluster.len() + 2 > config.batch_size {
                            break;
                        }
                        let near = near as usize;
                        if groups[near].last().is_some_and(|g| cluster.len() + g.len() <= config.batch_size) {
                            cluster.extend(groups[near].pop().expect("checked above"));
                            left -= 1;
                        }
                    }
                    clusters.push(cluster);
                }
            }
            clusters
        }
        Batching::Anchored => unreachable!("planned above"),
    };
    pack(clusters, config.batch_size)
}

/// [`Batching::Anchored`]'s clusters, anchors in random order.
fn anchored_clusters(
    config: &TrainConfig,
    concepts: &[Vec<usize>],
    anchors: &[(usize, usize)],
    neighbours: &[Vec<u32>],
    rng: &mut SplitMix64,
) -> Vec<Vec<(usize, usize)>> {
    let mut concept_of = vec![0; concepts.iter().map(Vec::len).sum()];
    for (c, names) in concepts.iter().enumerate() {
        names.iter().for_each(|&n| concept_of[n] = c);
    }
    let mut order: Vec<usize> = (0..anchors.len()).collect();
    rng.shuffle(&mut order);
    order
        .into_iter()
        .map(|a| {
            let (anchor, concept) = anchors[a];
            let mut synonyms: Vec<usize> = concepts[concept].iter().copied().filter(|&n| n != anchor).collect();
            rng.shuffle(&mut synonyms);
            synonyms.truncate(config.names_per_concept - 1);
            let confusable = neighbours[a].iter().take(config.negative_names).map(|&n| n as usize);
            std::iter::once(anchor).chain(synonyms).chain(confusable).map(|n| (n, concept_of[n])).collect()
        })
        .collect()
}

/// Clusters packed in order into batches of at most `batch_size` names (a larger cluster is a
/// batch of its own).
fn pack(clusters: Vec<Vec<(usize, usize)>>, batch_size: usize) -> Vec<Vec<(usize, usize)>> {
    let mut batches: Vec<Vec<(usize, usize)>> = vec![Vec::new()];
    for cluster in clusters {
        let current = batches.last_mut().expect("one batch at least");
        if current.len() + cluster.len() > batch_size && !current.is_empty() {
            batches.push(cluster);
        } else {
            current.extend(cluster);
        }
    }
    batches
}

/// For each concept (the names of `texts` at `concepts`' indices), the `count` concepts whose
/// mean name vector by `encoder` is nearest by cosine, nearest first (fewer when there are
/// fewer concepts). Exact search: quadratic in the concepts, a few seconds for MEDIC's 9,000
/// concepts with synonyms.
fn nearest_concepts(
    encoder: &SentenceEncoder,
    texts: &[&str],
    concepts: &[Vec<usize>],
    count: usize,
) -> Result<Vec<Vec<u32>>, ModelError> {
    let dim = encoder.dim();
    let vectors = encoder.embed_all(texts)?;
    let mut centroids = vec![0f32; concepts.len() * dim];
    for (c, names) in concepts.iter().enumerate() {
        let centroid = &mut centroids[c * dim..(c + 1) * dim];
        for &n in names {
            centroid.iter_mut().zip(&vectors[n * dim..(n + 1) * dim]).for_each(|(a, b)| *a += b);
        }
        let norm = centroid.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        centroid.iter_mut().for_each(|x| *x /= norm);
    }
    let count = count.min(concepts.len() - 1);
    let all = Tensor::from_vec(centroids, (concepts.len(), dim), &Device::Cpu).map_err(inference)?;
    let mut neighbours = Vec::with_capacity(concepts.len());
    const ROWS: usize = 1024;
    for start in (0..concepts.len()).step_by(ROWS) {
        let rows = ROWS.min(concepts.len() - start);
        let sims: Vec<Vec<f32>> = all
            .narrow(0, start, rows)
            .and_then(|q| q.matmul(&all.t()?))
            .and_then(|s| s.to_vec2())
            .map_err(inference)?;
        for (r, row) in sims.into_iter().enumerate() {
            let others = (0..concepts.len() as u32).filter(|&j| j as usize != start + r).collect();
            neighbours.push(most_similar(others, &row, count));
        }
    }
    Ok(neighbours)
}

/// For each anchor (name, concept), the `count` names of other concepts that `encoder` places
/// nearest to the anchor, nearest first. Exact search over every training name.
fn confusable_names(
    encoder: &SentenceEncoder,
    texts: &[&str],
    concepts: &[Vec<usize>],
    anchors: &[(usize, usize)],
    count: usize,
) -> Result<Vec<Vec<u32>>, ModelError> {
    let dim = encoder.dim();
    let all = Tensor::from_vec(encoder.embed_all(texts)?, (texts.len(), dim), &Device::Cpu).map_err(inference)?;
    let mut confusable = Vec::with_capacity(anchors.len());
    const ROWS: usize = 256;
    for chunk in anchors.chunks(ROWS) {
        let rows: Vec<u32> = chunk.iter().map(|&(n, _)| n as u32).collect();
        let rows = Tensor::from_vec(rows, chunk.len(), &Device::Cpu).map_err(inference)?;
        let sims: Vec<Vec<f32>> = all
            .index_select(&rows, 0)
            .and_then(|q| q.matmul(&all.t()?))
            .and_then(|s| s.to_vec2())
            .map_err(inference)?;
        for (&(_, concept), row) in chunk.iter().zip(sims) {
            let own = &concepts[concept];
            let others = (0..texts.len() as u32).filter(|n| !own.contains(&(*n as usize))).collect();
            confusable.push(most_similar(others, &row, count));
        }
    }
    Ok(confusable)
}

/// The `count` of `candidates` (indices into `similarities`) most similar, most similar first.
fn most_similar(mut candidates: Vec<u32>, similarities: &[f32], count: usize) -> Vec<u32> {
    let key = |j: &u32| std::cmp::Reverse(ordered(similarities[*j as usize]));
    if count < candidates.len() {
        candidates.select_nth_unstable_by_key(count, key);
        candidates.truncate(count);
    }
    candidates.sort_by_key(key);
    candidates
}

/// An f32 as a totally ordered integer key (for sorting similarities without NaN handling).
fn ordered(x: f32) -> i32 {
    let bits = x.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// Multi-similarity loss with online pair mining over a batch of L2-normalized `vectors`.
/// Mining reads the similarities as numbers (no gradient); the loss is the mean over anchors
/// of (1/alpha) log(1 + sum_pos exp(-alpha (s - base))) + (1/beta) log(1 + sum_neg exp(beta (s - base))).
fn multi_similarity(
    vectors: &Tensor,
    labels: &[usize],
    alpha: f64,
    beta: f64,
    base: f64,
    epsilon: f64,
) -> candle_core::Result<Tensor> {
    let n = labels.len();
    let sim = vectors.matmul(&vectors.t()?)?;
    let values = sim.detach().to_vec2::<f32>()?;
    let (mut positive, mut negative) = (vec![0f32; n * n], vec![0f32; n * n]);
    for i in 0..n {
        let others = || (0..n).filter(move |&j| j != i);
        let pos = || others().filter(|&j| labels[j] == labels[i]);
        let neg = || others().filter(|&j| labels[j] != labels[i]);
        let hardest_pos = pos().map(|j| values[i][j] as f64).fold(f64::INFINITY, f64::min);
        let hardest_neg = neg().map(|j| values[i][j] as f64).fold(f64::NEG_INFINITY, f64::max);
        if hardest_pos.is_infinite() || hardest_neg.is_infinite() {
            continue; // no positive or no negative: nothing to mine
        }
        for j in neg().filter(|&j| values[i][j] as f64 + epsilon > hardest_pos) {
            negative[i * n + j] = 1.0;
        }
        for j in pos().filter(|&j| (values[i][j] as f64) - epsilon < hardest_neg) {
            positive[i * n + j] = 1.0;
        }
    }
    let device = vectors.device();
    let positive = Tensor::from_vec(positive, (n, n), device)?;
    let negative = Tensor::from_vec(negative, (n, n), device)?;
    // Similarities lie in [-1, 1], so these exponentials stay finite (at most e^75 in f32).
    let pos_term = ((((&sim - base)? * -alpha)?.exp()? * positive)?.sum(1)? + 1.0)?.log()? / alpha;
    let neg_term = ((((&sim - base)? * beta)?.exp()? * negative)?.sum(1)? + 1.0)?.log()? / beta;
    (pos_term? + neg_term?)?.mean_all()
}

/// [`Loss::SynonymMarginal`] over L2-normalized `vectors` with their concept `labels`; the rows
/// with `queries` set are the anchors.
fn synonym_marginal(
    vectors: &Tensor,
    labels: &[usize],
    queries: &[bool],
    temperature: f64,
) -> candle_core::Result<Tensor> {
    let n = labels.len();
    let mut not_self = vec![0f32; n * n];
    let mut not_positive = vec![0f32; n * n];
    let mut weight = vec![0f32; n];
    for i in 0..n {
        let mut synonyms = 0;
        for j in 0..n {
            if j == i {
                not_self[i * n + j] = -1e4; // exp underflows to 0: a name is not its own candidate
                not_positive[i * n + j] = -1e4;
            } else if labels[j] == labels[i] {
                synonyms += 1;
            } else {
                not_positive[i * n + j] = -1e4;
            }
        }
        weight[i] = f32::from(queries[i] && synonyms > 0);
        if synonyms == 0 {
            // No answer to score: the row's two sums are made equal (its term is 0, not NaN).
            not_positive[i * n..(i + 1) * n].copy_from_slice(&not_self[i * n..(i + 1) * n]);
        }
    }
    let queries = weight.iter().sum::<f32>();
    let device = vectors.device();
    let logits = (vectors.matmul(&vectors.t()?)? / temperature)?;
    // log sum exp over a masked row, stable (the row maximum is a constant shift).
    let max = logits.detach().max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let log_sum = |mask: Vec<f32>| -> candle_core::Result<Tensor> {
        (&shifted + Tensor::from_vec(mask, (n, n), device)?)?.exp()?.sum_keepdim(D::Minus1)?.log()
    };
    let per_row = (log_sum(not_self)? - log_sum(not_positive)?)?.squeeze(1)?;
    (per_row * Tensor::from_vec(weight, n, device)?)?.sum_all()?.affine(1.0 / queries.max(1.0) as f64, 0.0)
}

/// InfoNCE with in-batch negatives: for each name, the mean over its synonyms in the batch of
/// -log softmax(sim / temperature), the softmax over every other name of the batch.
fn info_nce(vectors: &Tensor, labels: &[usize], temperature: f64) -> candle_core::Result<Tensor> {
    let n = labels.len();
    let mut not_self = vec![0f32; n * n];
    let mut positive = vec![0f32; n * n];
    let mut anchors = 0usize;
    for i in 0..n {
        let synonyms = (0..n).filter(|&j| j != i && labels[j] == labels[i]).count();
        for j in 0..n {
            if j == i {
                not_self[i * n + j] = -1e4; // exp underflows to 0: a name is not its own candidate
            } else if labels[j] == labels[i] {
                positive[i * n + j] = 1.0 / synonyms as f32;
            }
        }
        anchors += usize::from(synonyms > 0);
    }
    let device = vectors.device();
    let logits = ((vectors.matmul(&vectors.t()?)? / temperature)? + Tensor::from_vec(not_self, (n, n), device)?)?;
    // Stable log-softmax: the row maximum is a constant shift.
    let max = logits.detach().max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let log_probs = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
    let picked = (log_probs * Tensor::from_vec(positive, (n, n), device)?)?.sum_all()?;
    picked.affine(-1.0 / anchors.max(1) as f64, 0.0)
}

/// AdamW (decoupled weight decay, bias-corrected moments), as PyTorch's.
pub(crate) struct AdamW {
    pub lr: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub correction1: f32,
    pub correction2: f32,
}

impl AdamW {
    pub fn update(&self, var: &Var, grad: &Tensor, moments: &mut Moments) -> candle_core::Result<()> {
        let grad = grad.contiguous()?;
        if var.device().is_cpu() && var.dtype() == DType::F32 && var.is_contiguous() {
            // One fused pass, in place, over the parameter, its gradient and its moments.
            var.as_tensor().inplace_op2(&grad, &InPlace { adam: self, moments: RefCell::new(moments) })
        } else {
            let mut param = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let grad = grad.flatten_all()?.to_vec1::<f32>()?;
            self.apply(&mut param, &grad, moments);
            var.set(&Tensor::from_vec(param, var.shape(), var.device())?)
        }
    }

    fn apply(&self, param: &mut [f32], grad: &[f32], moments: &mut Moments) {
        let (b1, b2) = (self.beta1, self.beta2);
        let decay = 1.0 - self.lr * self.weight_decay;
        for (((p, g), m), v) in param.iter_mut().zip(grad).zip(&mut moments.m).zip(&mut moments.v) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let update = (*m / self.correction1) / ((*v / self.correction2).sqrt() + self.eps);
            *p = *p * decay - self.lr * update;
        }
    }
}

struct InPlace<'a> {
    adam: &'a AdamW,
    moments: RefCell<&'a mut Moments>,
}

impl InplaceOp2 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "belink-adamw"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let (Some((a, b)), Some((c, d))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("adamw needs contiguous tensors");
        };
        let CpuStorage::F32(param) = s1 else {
            candle_core::bail!("adamw needs f32 parameters");
        };
        self.adam.apply(&mut param[a..b], &s2.as_slice::<f32>()?[c..d], &mut self.moments.borrow_mut());
        Ok(())
    }
}

/// A hash of the training examples (FNV-1a), to recognize them on resume.
fn fingerprint<'a>(examples: impl Iterator<Item = &'a (String, String)>) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for (concept, name) in examples {
        for byte in concept.bytes().chain([0]).chain(name.bytes()).chain([0]) {
            hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// A small seeded generator (SplitMix64): the batch order must not depend on a library's
/// version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..bound (bound > 0).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap();
        crate::bert::pool(
            &t.unsqueeze(1).unwrap(),
            &Tensor::ones((rows.len(), 1), DType::U32, &Device::Cpu).unwrap(),
            true,
        )
        .unwrap()
    }

    #[test]
    fn multi_similarity_matches_a_hand_computation() {
        // Two concepts, two names each, on the unit circle.
        let v = unit_rows(&[[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]);
        let labels = [0, 0, 1, 1];
        let got = multi_similarity(&v, &labels, 2.0, 50.0, 0.5, 0.1).unwrap().to_scalar::<f32>().unwrap() as f64;
        // Similarities: s01 = 0.8, s23 = 0.8, s02 = 0, s03 = -0.6, s12 = 0.6, s13 = 0.
        // Anchor 0: hardest positive 0.8, negatives {0, -0.6}: none above 0.7; positive kept
        // only if 0.8 - 0.1 < max neg 0: no. Loss 0. Anchor 3 likewise (negatives -0.6, 0).
        // Anchor 1: negatives {0.6, 0}: 0.6 > 0.7? no; positive 0.8 - 0.1 < 0.6? no. Loss 0.
        // Anchor 2: negatives {0, 0.6} likewise: loss 0.
        assert!(got.abs() < 1e-7, "{got}");
        // Move name 1 next to concept 1: mined pairs appear.
        let v = unit_rows(&[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-0.6, 0.8]]);
        let got = multi_similarity(&v, &labels, 2.0, 50.0, 0.5, 0.1).unwrap().to_scalar::<f32>().unwrap() as f64;
        let term = |pos: &[f64], neg: &[f64]| {
            (1.0 + pos.iter().map(|s| (-2.0 * (s - 0.5)).exp()).sum::<f64>()).ln() / 2.0
                + (1.0 + neg.iter().map(|s| (50.0 * (s - 0.5)).exp()).sum::<f64>()).ln() / 50.0
        };
        // Anchor 0: pos s01 = 0, negs {0, -0.6}: hardest pos 0, negs above -0.1: s02 = 0;
        //   pos kept if 0 - 0.1 < max neg 0: yes.
        // Anchor 1: pos s10 = 0, negs {s12 = 1, s13 = 0.8}: both above -0.1; pos kept (0 - 0.1 < 1).
        // Anchor 2: pos s23 = 0.8, negs {s20 = 0, s21 = 1}: kept if > 0.7: s21; pos 0.7 < 1: kept.
        // Anchor 3: pos s32 = 0.8, negs {s30 = -0.6, s31 = 0.8}: s31 kept; pos 0.7 < 0.8: kept.
        let want =
            (term(&[0.0], &[0.0]) + term(&[0.0], &[1.0, 0.8]) + term(&[0.8], &[1.0]) + term(&[0.8], &[0.8])) / 4.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn info_nce_matches_a_hand_computation() {
        let v = unit_rows(&[[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]);
        let got = info_nce(&v, &[0, 0, 1], 0.5).unwrap().to_scalar::<f32>().unwrap() as f64;
        // Anchors 0 and 1 have a synonym; anchor 2 has none and does not count.
        let lse = |xs: &[f64]| xs.iter().map(|x| (x / 0.5).exp()).sum::<f64>().ln();
        let want = ((lse(&[0.8, 0.0]) - 0.8 / 0.5) + (lse(&[0.8, 0.6]) - 0.8 / 0.5)) / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn synonym_marginal_matches_a_hand_computation() {
        // Name 0 is the anchor, names 1 and 3 its synonyms, name 2 another concept's; name 1
        // is not a query (an ontology name), and name 2 has no synonym.
        let v = unit_rows(&[[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, -0.8]]);
        let labels = [0, 0, 1, 0];
        let got =
            synonym_marginal(&v, &labels, &[true, false, true, false], 0.5).unwrap().to_scalar::<f32>().unwrap() as f64;
        // Similarities of name 0: s01 = 0.8, s02 = 0, s03 = 0.6.
        let e = |s: f64| (s / 0.5).exp();
        let want = -((e(0.8) + e(0.6)) / (e(0.8) + e(0.0) + e(0.6))).ln();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn adamw_matches_pytorch_formula() {
        let adam = AdamW {
            lr: 0.1,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            correction1: 0.1,
            correction2: 1.0 - 0.999,
        };
        let mut moments = Moments { m: vec![0.0], v: vec![0.0] };
        let mut p = [1.0f32];
        adam.apply(&mut p, &[0.5], &mut moments);
        // Step 1: m_hat = g, v_hat = g^2, so the update is lr * sign(g) after decay.
        assert!((p[0] - (1.0 * (1.0 - 0.1 * 0.01) - 0.1)).abs() < 1e-6, "{}", p[0]);
        // The fused in-place path gives the same.
        let var = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut moments = Moments { m: vec![0.0], v: vec![0.0] };
        adam.update(&var, &Tensor::new(&[0.5f32], &Device::Cpu).unwrap(), &mut moments).unwrap();
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), p);
    }

    #[test]
    fn neighbour_batches_use_every_name_once_and_gather_neighbours() {
        // Six concepts of four names; concepts 0-2 are each other's nearest, as are 3-5.
        let concepts: Vec<Vec<usize>> = (0..6).map(|c| (c * 4..c * 4 + 4).collect()).collect();
        let neighbours: Vec<Vec<u32>> = (0..6u32)
            .map(|c| {
                let (own, other) = if c < 3 { (0..3, 3..6) } else { (3..6, 0..3) };
                own.filter(|&o| o != c).chain(other).collect()
            })
            .collect();
        let config = TrainConfig {
            batch_size: 12,
            names_per_concept: 4,
            batching: Batching::Neighbours,
            ..TrainConfig::default()
        };
        for epoch in 0..3 {
            let plan = epoch_plan(&config, &concepts, &[], &neighbours, epoch);
            let mut names: Vec<usize> = plan.iter().flatten().map(|&(n, _)| n).collect();
            names.sort_unstable();
            assert_eq!(names, (0..24).collect::<Vec<_>>(), "epoch {epoch}: every name once");
            assert_eq!(plan.len(), 2);
            for batch in &plan {
                let mut sides: Vec<bool> = batch.iter().map(|&(_, c)| c < 3).collect();
                sides.dedup();
                assert_eq!(sides.len(), 1, "a batch holds one neighbourhood: {batch:?}");
            }
        }
        // Random batching mixes them (in some epoch).
        let random = TrainConfig { batching: Batching::Random, ..config };
        let mixed = (0..5).any(|epoch| {
            epoch_plan(&random, &concepts, &[], &[], epoch)
                .iter()
                .any(|batch| batch.iter().any(|&(_, c)| c < 3) && batch.iter().any(|&(_, c)| c >= 3))
        });
        assert!(mixed);
    }

    #[test]
    fn anchored_batches_put_each_anchor_with_its_synonyms_and_confusable_names() {
        // Five concepts of four names; anchors are name 0 (concept 0) and name 5 (concept 1).
        let concepts: Vec<Vec<usize>> = (0..5).map(|c| (c * 4..c * 4 + 4).collect()).collect();
        let anchors = [(0, 0), (5, 1)];
        let confusable: Vec<Vec<u32>> = vec![vec![12, 4, 17], vec![9, 1]];
        let config = TrainConfig {
            batch_size: 6,
            names_per_concept: 3,
            negative_names: 2,
            batching: Batching::Anchored,
            ..TrainConfig::default()
        };
        for epoch in 0..3 {
            let plan = epoch_plan(&config, &concepts, &anchors, &confusable, epoch);
            // Clusters of 3 + 2 names: one per batch of 6.
            assert_eq!(plan.len(), 2, "epoch {epoch}: {plan:?}");
            let mut seen = Vec::new();
            for batch in &plan {
                assert_eq!(batch.len(), 5);
                let (anchor, concept) = batch[0];
                let a = anchors.iter().position(|&x| x == (anchor, concept)).expect("a cluster starts with its anchor");
                seen.push(a);
                let own: Vec<usize> = batch.iter().filter(|&&(_, c)| c == concept).map(|&(n, _)| n).collect();
                assert_eq!(own.len(), 3);
                assert_eq!(own.iter().filter(|&&n| n == anchor).count(), 1, "the anchor once: {batch:?}");
                let others: Vec<u32> = batch.iter().filter(|&&(_, c)| c != concept).map(|&(n, _)| n as u32).collect();
                assert_eq!(others, confusable[a][..2], "the nearest confusable names, in order");
                assert!(batch.iter().all(|&(n, c)| concepts[c].contains(&n)), "labels: {batch:?}");
            }
            seen.sort_unstable();
            assert_eq!(seen, [0, 1], "every anchor once an epoch");
        }
        // The anchors' order is shuffled by epoch.
        let firsts: Vec<usize> =
            (0..8).map(|epoch| epoch_plan(&config, &concepts, &anchors, &confusable, epoch)[0][0].0).collect();
        assert!(firsts.contains(&0) && firsts.contains(&5), "{firsts:?}");
    }

    #[test]
    fn the_synonym_marginal_loss_needs_anchored_batching() {
        let config = TrainConfig { loss: Loss::SynonymMarginal { temperature: 0.05 }, ..TrainConfig::default() };
        // Refused before any model is read.
        let error = Trainer::new(Path::new("/nonexistent"), &[], &[], config, &Device::Cpu).err().unwrap();
        assert!(error.to_string().contains("needs anchored batching"), "{error}");
    }

    #[test]
    fn the_batch_order_is_seeded_and_shuffles() {
        let mut a = SplitMix64(7);
        let mut b = SplitMix64(7);
        let mut x: Vec<usize> = (0..50).collect();
        let mut y = x.clone();
        a.shuffle(&mut x);
        b.shuffle(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, (0..50).collect::<Vec<_>>());
    }
}
