//! The sentence encoder: any BERT-family model directory (config.json, tokenizer.json,
//! model.safetensors), pooled as its sentence-transformers configuration says (mean for
//! MiniLM; CLS selectable for SapBERT), L2-normalized.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use candle_transformers::models::bert::Config;
use serde::Deserialize;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::bert::{pool, read_hf, Bert, NormKernel, Params};
use crate::ModelError;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the token vectors (attention-masked): sentence-transformers' default.
    Mean,
    /// The first token's vector ([CLS]): SapBERT.
    Cls,
}

impl Pooling {
    pub fn parse(text: &str) -> Result<Option<Pooling>, ModelError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(None),
            "mean" => Ok(Some(Pooling::Mean)),
            "cls" => Ok(Some(Pooling::Cls)),
            other => Err(ModelError::Config(format!("unknown pooling '{other}': use auto, mean or cls"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }
}

/// sentence-transformers' `1_Pooling/config.json`.
#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

/// sentence-transformers' `sentence_bert_config.json`.
#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

pub struct SentenceEncoder {
    model: Bert,
    config: Config,
    tokenizer: Tokenizer,
    pooling: Pooling,
    dim: usize,
    max_tokens: usize,
    ignores_case: bool,
    device: Device,
    dir: PathBuf,
    parameter_bytes: usize,
}

impl SentenceEncoder {
    /// Loads the model in `dir`. `pooling` None reads it from the sentence-transformers
    /// configuration (mean when there is none).
    pub fn load(dir: &Path, device: &Device, pooling: Option<Pooling>) -> Result<SentenceEncoder, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Missing(format!("encoder model directory {} does not exist", dir.display())));
        }
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_str(&read(&config_path)?)
            .map_err(|e| ModelError::Config(format!("{}: not a BERT configuration: {e}", config_path.display())))?;
        let tokenizer_path = dir.join("tokenizer.json");
        require(&tokenizer_path)?;
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| ModelError::Config(format!("{}: {e}", tokenizer_path.display())))?;

        let pooling = match pooling {
            Some(pooling) => pooling,
            None => pooling_from_config(dir)?,
        };
        let max_tokens = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<SentenceBertConfig>(&text).ok())
            .and_then(|c| c.max_seq_length)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        // The shipped tokenizer.json may pad every input to a fixed length; pad to the longest
        // input of the batch instead, and truncate at the model's limit.
        let pad_id = tokenizer.get_padding().map(|p| p.pad_id).unwrap_or(0);
        let pad_token = tokenizer.get_padding().map(|p| p.pad_token.clone()).unwrap_or_else(|| "[PAD]".into());
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..TruncationParams::default() }))
            .map_err(|e| ModelError::Config(format!("{}: {e}", tokenizer_path.display())))?;

        let params = read_params(dir, &config, device)?;
        let parameter_bytes = params.values().map(|t| t.elem_count() * t.dtype().size_in_bytes()).sum();
        let model = Bert::new(&params, &config, NormKernel::Fast)
            .map_err(|e| ModelError::Weights(format!("{}: {e}", dir.join("model.safetensors").display())))?;
        let ignores_case = lowercases_first(tokenizer.get_normalizer());
        Ok(SentenceEncoder {
            model,
            tokenizer,
            pooling,
            dim: config.hidden_size,
            max_tokens,
            ignores_case,
            device: device.clone(),
            dir: dir.to_path_buf(),
            config,
            parameter_bytes,
        })
    }

    /// Memory taken by the model's parameters.
    pub fn parameter_bytes(&self) -> usize {
        self.parameter_bytes
    }

    /// The model's BERT configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The tokenizer as served: padding to the longest text, truncation at [`Self::max_tokens`].
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Texts that differ only in the case of ASCII letters get the same vector (uncased
    /// models), except around special tokens written out in a text ("[CLS]"), which the
    /// tokenizer matches before it lowercases.
    pub fn ignores_case(&self) -> bool {
        self.ignores_case
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// L2-normalized sentence vectors, one per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Inference(format!("tokenizing: {e}")))?;
        let rows = encodings.len();
        let width = encodings[0].get_ids().len();
        let column = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let tensor = |data: Vec<u32>| Tensor::from_vec(data, (rows, width), &self.device);
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = tensor(column(&|e| e.get_ids()))?;
            let type_ids = tensor(column(&|e| e.get_type_ids()))?;
            let mask = tensor(column(&|e| e.get_attention_mask()))?;
            let hidden = self.model.forward(&ids, &type_ids, &mask)?; // (rows, width, dim)
            pool(&hidden, &mask, self.pooling == Pooling::Mean)?.to_vec2::<f32>()
        };
        run().map_err(|e| ModelError::Inference(e.to_string()))
    }
}

impl SentenceEncoder {
    /// Vectors of many texts, row after row in one flat buffer (`texts.len() * dim`), embedded
    /// in length-sorted batches of 256 (for offline work: training set-up, probes).
    pub fn embed_all(&self, texts: &[&str]) -> Result<Vec<f32>, ModelError> {
        let dim = self.dim();
        let mut flat = vec![0f32; texts.len() * dim];
        for chunk in length_sorted_chunks(texts, 256, 1) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            for (i, vector) in chunk.into_iter().zip(self.embed(&batch)?) {
                flat[i * dim..(i + 1) * dim].copy_from_slice(&vector);
            }
        }
        Ok(flat)
    }
}

/// The parameters of `dir/model.safetensors`, in [`Bert`]'s layout.
pub(crate) fn read_params(dir: &Path, config: &Config, device: &Device) -> Result<Params, ModelError> {
    let weights = dir.join("model.safetensors");
    require(&weights)?;
    // Safety: the file is memory-mapped read-only; BeLink never writes a model file in place
    // (a trained model is written to a new directory).
    let tensors = unsafe { MmapedSafetensors::new(&weights) }
        .map_err(|e| ModelError::Weights(format!("{}: {e}", weights.display())))?;
    read_hf(&tensors, config, device)
        .map_err(|e| ModelError::Weights(format!("{}: does not hold a BERT model: {e}", weights.display())))
}

/// Indices of `texts` grouped into chunks of at most `max_batch`, longest texts first: texts
/// of similar length share a chunk, so little compute goes to padding. A request too small to
/// fill a chunk per core is still spread over the `cores`: whole forward passes in parallel
/// beat one pass split across cores (on 2 cores, requests of 32 names: 226 names/s as one
/// pass, 360 as two), and its cuts balance the passes, whose cost is about their number of
/// texts times their longest (every text is padded to it).
pub fn length_sorted_chunks<S: AsRef<str>>(texts: &[S], max_batch: usize, cores: usize) -> Vec<Vec<usize>> {
    let (max_batch, cores) = (max_batch.max(1), cores.max(1));
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(texts[i].as_ref().len()));
    if order.is_empty() || order.len() > max_batch * cores {
        // Enough for every core: full chunks, taken by the cores as they finish.
        return order.chunks(max_batch).map(<[usize]>::to_vec).collect();
    }
    // Padded length in bytes, plus about two tokens ([CLS], [SEP]).
    let lengths: Vec<usize> = order.iter().map(|&i| texts[i].as_ref().len() + 8).collect();
    // Where chunks start when none may cost more than `budget`, filled greedily.
    let starts = |budget: usize| -> Vec<usize> {
        let mut starts = Vec::new();
        let mut i = 0;
        while i < lengths.len() {
            starts.push(i);
            let fits = |count: usize| count <= max_batch && count * lengths[i] <= budget;
            let mut count = 1;
            while i + count < lengths.len() && fits(count + 1) {
                count += 1;
            }
            i += count;
        }
        starts
    };
    // The smallest budget that needs no more chunks than cores.
    let (mut low, mut high) = (lengths[0], max_batch.min(lengths.len()) * lengths[0]);
    while low < high {
        let middle = (low + high) / 2;
        if starts(middle).len() <= cores {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let starts = starts(low);
    let ends = starts.iter().skip(1).copied().chain([order.len()]);
    starts.iter().zip(ends).map(|(&start, end)| order[start..end].to_vec()).collect()
}

/// Whether the tokenizer's normalization starts by lowercasing. BERT's normalizer cleans
/// control characters, splits CJK characters and strips accents before it lowercases; none of
/// these treats an ASCII letter differently by its case.
fn lowercases_first(normalizer: Option<&NormalizerWrapper>) -> bool {
    match normalizer {
        Some(NormalizerWrapper::BertNormalizer(bert)) => bert.lowercase,
        Some(NormalizerWrapper::Lowercase(_)) => true,
        Some(NormalizerWrapper::Sequence(sequence)) => lowercases_first(sequence.as_ref().first()),
        _ => false,
    }
}

fn pooling_from_config(dir: &Path) -> Result<Pooling, ModelError> {
    let path = dir.join("1_Pooling").join("config.json");
    if !path.exists() {
        return Ok(Pooling::Mean);
    }
    let config: PoolingConfig =
        serde_json::from_str(&read(&path)?).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
    Ok(match (config.pooling_mode_cls_token, config.pooling_mode_mean_tokens) {
        (true, false) => Pooling::Cls,
        _ => Pooling::Mean,
    })
}

fn require(path: &Path) -> Result<(), ModelError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ModelError::Missing(format!("{} does not exist", path.display())))
    }
}

fn read(path: &Path) -> Result<String, ModelError> {
    require(path)?;
    std::fs::read_to_string(path).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::length_sorted_chunks;

    #[test]
    fn chunks_group_similar_lengths_and_use_every_core() {
        let texts = ["a", "abcd", "ab", "abcdef", "abc"];
        assert_eq!(length_sorted_chunks(&texts, 32, 1), [vec![3, 1, 4, 2, 0]]);
        // Two passes: 2 texts padded to 6 bytes and 3 padded to 3 cost less than 3 + 2.
        assert_eq!(length_sorted_chunks(&texts, 32, 2), [vec![3, 1], vec![4, 2, 0]]);
        assert_eq!(length_sorted_chunks(&texts, 32, 8), [vec![3], vec![1], vec![4], vec![2], vec![0]]);
        assert_eq!(length_sorted_chunks(&texts, 2, 1), [vec![3, 1], vec![4, 2], vec![0]]);
        assert_eq!(length_sorted_chunks(&texts[..1], 32, 4), [vec![0]]);
        assert!(length_sorted_chunks(&[] as &[&str], 32, 2).is_empty());
    }

    #[test]
    fn chunks_cover_every_text_once_within_the_limits() {
        let mut seed = 7u64;
        let mut next = |bound: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % bound
        };
        for _ in 0..500 {
            let texts: Vec<String> = (0..next(80)).map(|_| "x".repeat(next(60) as usize)).collect();
            let (max_batch, cores) = (1 + next(32) as usize, 1 + next(4) as usize);
            let chunks = length_sorted_chunks(&texts, max_batch, cores);
            let mut seen: Vec<usize> = chunks.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..texts.len()).collect::<Vec<_>>());
            assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= max_batch));
            if texts.len() <= max_batch * cores {
                assert!(chunks.len() <= cores, "{} chunks for {cores} cores", chunks.len());
            }
        }
    }
}
