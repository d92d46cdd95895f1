//! A BERT encoder of our own, for serving and for training: the model that is fine-tuned is
//! the model that serves. candle-transformers' `BertModel` cannot be trained (its layer norm
//! has no backward), and its layout is PyTorch's; ours keeps every parameter in the layout the
//! CPU multiplies fastest and can run its layer norms through a differentiable kernel.
//!
//! Parameters are a map from our own names to tensors ([`Params`]): linear weights stored
//! input-major, (in, out) contiguous, so `x.matmul(w)` reads both operands by row; query, key
//! and value fused into one (in, 3 * out) matrix, one product instead of three. They are read
//! from and written back to Hugging Face's names and layouts ([`read_hf`], [`to_hf`]).

use std::collections::BTreeMap;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Result, Tensor, D};
use candle_transformers::models::bert::{Config, HiddenAct};

use crate::{kernels, norm};

/// Parameters by our names, in a stable order (the optimizer and checkpoints rely on it).
pub type Params = BTreeMap<String, Tensor>;

/// How layer norms run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKernel {
    /// candle's fused kernel (every device); no gradient flows through it. For serving.
    Fast,
    /// A kernel with a backward pass: our fused CPU op, composed operations elsewhere.
    Differentiable,
}

struct Linear {
    weight: Tensor, // (in, out), contiguous
    bias: Tensor,   // (out)
}

impl Linear {
    fn new(params: &Params, name: &str) -> Result<Linear> {
        Ok(Linear { weight: get(params, &format!("{name}.weight"))?, bias: get(params, &format!("{name}.bias"))? })
    }

    /// `x` is (rows, in).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight)?.broadcast_add(&self.bias)
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
    kernel: NormKernel,
}

impl LayerNorm {
    fn new(params: &Params, name: &str, eps: f64, kernel: NormKernel) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: get(params, &format!("{name}.weight"))?,
            bias: get(params, &format!("{name}.bias"))?,
            eps: eps as f32,
            kernel,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.kernel {
            NormKernel::Fast => candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps),
            NormKernel::Differentiable => norm::layer_norm(x, &self.weight, &self.bias, self.eps),
        }
    }
}

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

pub struct Bert {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    kernel: NormKernel,
}

impl Bert {
    /// The model over `params` (shared, not copied: `Var`s' tensors make a trainable model).
    pub fn new(params: &Params, config: &Config, kernel: NormKernel) -> Result<Bert> {
        check_config(config)?;
        let eps = config.layer_norm_eps;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = |part: &str| format!("layer.{i}.{part}");
                Ok(Layer {
                    qkv: Linear::new(params, &p("qkv"))?,
                    attention_out: Linear::new(params, &p("attention_out"))?,
                    attention_norm: LayerNorm::new(params, &p("attention_norm"), eps, kernel)?,
                    up: Linear::new(params, &p("up"))?,
                    down: Linear::new(params, &p("down"))?,
                    out_norm: LayerNorm::new(params, &p("out_norm"), eps, kernel)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Bert {
            word: get(params, "embeddings.word")?,
            position: get(params, "embeddings.position")?,
            token_type: get(params, "embeddings.token_type")?,
            embedding_norm: LayerNorm::new(params, "embeddings.norm", eps, kernel)?,
            layers,
            heads: config.num_attention_heads,
            hidden: config.hidden_size,
            kernel,
        })
    }

    /// Token vectors (batch, seq, hidden) for token ids, type ids and attention mask, each
    /// (batch, seq) u32.
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let (hidden, heads) = (self.hidden, self.heads);
        let head_dim = hidden / heads;
        let rows = batch * seq;
        // Embeddings, kept as (rows, hidden) so every linear layer is one plain matrix product.
        let words = self.word.index_select(&ids.flatten_all()?, 0)?;
        let types = self.token_type.index_select(&type_ids.flatten_all()?, 0)?;
        let embedded =
            (words + types)?.reshape((batch, seq, hidden))?.broadcast_add(&self.position.narrow(0, 0, seq)?)?;
        let mut x = self.embedding_norm.forward(&embedded.reshape((rows, hidden))?)?;
        // Padding gets a large negative score, as in Hugging Face's BERT (finfo.min).
        let mask = mask.to_dtype(DType::F32)?.reshape((batch, 1, 1, seq))?;
        let mask = ((1.0 - mask)? * f32::MIN as f64)?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        for layer in &self.layers {
            // (rows, 3 * hidden) -> (3, batch, heads, seq, head_dim)
            let qkv = layer.qkv.forward(&x)?.reshape((batch, seq, 3, heads, head_dim))?.permute((2, 0, 3, 1, 4))?;
            let q = (qkv.get(0)? * scale)?.contiguous()?;
            let k = qkv.get(1)?.contiguous()?;
            let v = qkv.get(2)?.contiguous()?;
            let scores = q.matmul(&k.t()?)?.broadcast_add(&mask)?;
            // Serving takes candle's softmax (vectorized, no backward); training ours.
            let probs = match self.kernel {
                NormKernel::Fast => candle_nn::ops::softmax_last_dim(&scores)?,
                NormKernel::Differentiable => norm::softmax_last_dim(&scores)?,
            };
            let context = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((rows, hidden))?;
            let attended = layer.attention_norm.forward(&(layer.attention_out.forward(&context)? + &x)?)?;
            let up = layer.up.forward(&attended)?;
            // Serving takes our vectorisable GELU (candle's calls a scalar erf per value).
            let inner = match self.kernel {
                NormKernel::Fast => kernels::gelu_erf(&up)?,
                NormKernel::Differentiable => up.gelu_erf()?,
            };
            x = layer.out_norm.forward(&(layer.down.forward(&inner)? + &attended)?)?;
        }
        x.reshape((batch, seq, hidden))
    }
}

/// What our forward pass supports of a BERT configuration.
fn check_config(config: &Config) -> Result<()> {
    if config.hidden_act != HiddenAct::Gelu {
        candle_core::bail!("hidden_act {:?} is not supported (gelu only)", config.hidden_act);
    }
    if !config.hidden_size.is_multiple_of(config.num_attention_heads) {
        candle_core::bail!("hidden_size is not a multiple of num_attention_heads");
    }
    Ok(())
}

fn get(params: &Params, name: &str) -> Result<Tensor> {
    params.get(name).cloned().ok_or_else(|| candle_core::Error::Msg(format!("missing parameter {name}")))
}

/// One of our parameters and the Hugging Face tensors it is made of (concatenated along the
/// output dimension; linear weights transposed to input-major).
struct Mapping {
    ours: String,
    hf: Vec<String>,
    linear_weight: bool,
}

/// Our parameters and their Hugging Face names (without prefix, canonical weight/bias).
fn mappings(config: &Config) -> Vec<Mapping> {
    let one = |ours: String, hf: String| Mapping { ours, hf: vec![hf], linear_weight: false };
    let mut all = vec![
        one("embeddings.word".into(), "embeddings.word_embeddings.weight".into()),
        one("embeddings.position".into(), "embeddings.position_embeddings.weight".into()),
        one("embeddings.token_type".into(), "embeddings.token_type_embeddings.weight".into()),
    ];
    let norm = |all: &mut Vec<Mapping>, ours: String, hf: String| {
        all.push(one(format!("{ours}.weight"), format!("{hf}.weight")));
        all.push(one(format!("{ours}.bias"), format!("{hf}.bias")));
    };
    norm(&mut all, "embeddings.norm".into(), "embeddings.LayerNorm".into());
    for i in 0..config.num_hidden_layers {
        let (ours, hf) = (format!("layer.{i}"), format!("encoder.layer.{i}"));
        let linear = |all: &mut Vec<Mapping>, name: &str, parts: &[&str]| {
            for (suffix, linear_weight) in [("weight", true), ("bias", false)] {
                all.push(Mapping {
                    ours: format!("{ours}.{name}.{suffix}"),
                    hf: parts.iter().map(|p| format!("{hf}.{p}.{suffix}")).collect(),
                    linear_weight,
                });
            }
        };
        linear(&mut all, "qkv", &["attention.self.query", "attention.self.key", "attention.self.value"]);
        linear(&mut all, "attention_out", &["attention.output.dense"]);
        norm(&mut all, format!("{ours}.attention_norm"), format!("{hf}.attention.output.LayerNorm"));
        linear(&mut all, "up", &["intermediate.dense"]);
        linear(&mut all, "down", &["output.dense"]);
        norm(&mut all, format!("{ours}.out_norm"), format!("{hf}.output.LayerNorm"));
    }
    all
}

/// Our parameters from a Hugging Face BERT checkpoint, on `device`. Accepts what
/// candle-transformers accepts: names with or without a `bert.` (or `<model_type>.`) prefix,
/// layer norms as weight/bias or gamma/beta.
pub fn read_hf(tensors: &MmapedSafetensors, config: &Config, device: &Device) -> Result<Params> {
    let has = |name: &str| tensors.get(name).is_ok();
    let mut prefixes = vec![String::new(), "bert.".to_string()];
    if let Some(model_type) = &config.model_type {
        prefixes.push(format!("{model_type}."));
    }
    let Some(prefix) = prefixes.into_iter().find(|p| has(&format!("{p}embeddings.word_embeddings.weight"))) else {
        candle_core::bail!("no BERT embeddings (embeddings.word_embeddings.weight) in the checkpoint");
    };
    let load = |name: &str| -> Result<Tensor> {
        let full = format!("{prefix}{name}");
        // Old checkpoints name layer-norm parameters gamma and beta.
        let alias = full.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta");
        let found = if has(&full) { full } else { alias };
        tensors.load(&found, device)?.to_dtype(DType::F32)
    };
    let mut params = Params::new();
    for m in mappings(config) {
        let parts = m.hf.iter().map(|name| load(name)).collect::<Result<Vec<_>>>()?;
        let joined = Tensor::cat(&parts, 0)?;
        let tensor = if m.linear_weight { joined.t()?.contiguous()? } else { joined };
        params.insert(m.ours, tensor);
    }
    Ok(params)
}

/// The parameters under Hugging Face's names and layouts, ready for `model.safetensors`.
pub fn to_hf(params: &Params, config: &Config) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for m in mappings(config) {
        let ours = get(params, &m.ours)?;
        let ours = if m.linear_weight { ours.t()?.contiguous()? } else { ours };
        let size = ours.dim(0)? / m.hf.len();
        for (i, name) in m.hf.into_iter().enumerate() {
            out.push((name, ours.narrow(0, i * size, size)?.contiguous()?));
        }
    }
    Ok(out)
}

/// Sentence vectors: the mean of the unmasked token vectors (or the first token's), L2-normalized.
/// `hidden` is (batch, seq, dim), `mask` (batch, seq) u32.
pub fn pool(hidden: &Tensor, mask: &Tensor, mean: bool) -> Result<Tensor> {
    let pooled = if mean {
        let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?; // (batch, seq, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        summed.broadcast_div(&counts)?
    } else {
        hidden.narrow(1, 0, 1)?.squeeze(1)?
    };
    let norms = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    pooled.broadcast_div(&norms)
}
