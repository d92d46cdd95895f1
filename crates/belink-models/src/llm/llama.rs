//! A llama-family decoder (Llama 2/3, SmolLM2, Qwen2, and Gemma 3's variant of it) written on
//! candle-core ops for what set-wise scoring needs and candle-transformers' quantized model
//! code lacks: a prefix KV cache shared by a whole batch, right-padded batches, logits computed
//! for a few label tokens only. Weights come from GGUF (quantized blocks expanded to f32 at
//! load: candle has no fast CPU kernel for Q4_1) or from safetensors checkpoints (llama, qwen2).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_nn::{Linear, Module};

use belink_core::decision::prompt::AnswerForm;

use super::amx::{self, PackedWeight};
use crate::ModelError;

/// The shape of the network.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
    pub vocab: usize,
    /// GGUF files from llama.cpp rotate interleaved pairs (their Q and K rows are permuted);
    /// Hugging Face checkpoints rotate the two halves.
    pub interleaved_rope: bool,
    /// Gemma 3's differences from llama; None for the llama family.
    pub gemma: Option<GemmaConfig>,
}

/// What Gemma 3 does differently (Gemma Team 2025; llama.cpp's and Hugging Face's gemma3): the
/// embeddings scaled by sqrt(hidden), RMS norms of each head's queries and keys, norms after
/// attention and after the MLP as well as before, GELU (tanh) in the MLP, and local layers that
/// see only the last `sliding_window` positions with their own RoPE base, every
/// `global_every`-th layer global. (GGUF norm weights already hold Gemma's "1 + weight".)
#[derive(Debug, Clone, PartialEq)]
pub struct GemmaConfig {
    pub sliding_window: usize,
    pub global_every: usize,
    pub local_rope_theta: f32,
}

impl LlamaConfig {
    /// Whether layer `i` attends to the last `sliding_window` positions only.
    fn is_local(&self, i: usize) -> bool {
        self.gemma.as_ref().is_some_and(|g| !(i + 1).is_multiple_of(g.global_every))
    }
}

/// The projections of a layer, in the order [`Layer::projection`] and adapters use.
pub const PROJECTIONS: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

struct Layer {
    attention_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    mlp_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// Gemma 3's extra norms (None for llama).
    extra_norms: Option<GemmaNorms>,
    /// The projections' weights in bfloat16 for AMX, in [`PROJECTIONS`] order, when serving
    /// uses them ([`Llama::use_bf16_products`]); empty otherwise.
    packed: Vec<Option<PackedWeight>>,
}

/// Gemma 3's norms of each head's queries and keys, and of the attention's and MLP's outputs.
struct GemmaNorms {
    q: Tensor,
    k: Tensor,
    after_attention: Tensor,
    after_mlp: Tensor,
}

impl Layer {
    fn projection(&self, which: usize) -> &Linear {
        [&self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down][which]
    }

    fn projection_mut(&mut self, which: usize) -> &mut Linear {
        [&mut self.q, &mut self.k, &mut self.v, &mut self.o, &mut self.gate, &mut self.up, &mut self.down][which]
    }

    /// Projection `which` for serving: on AMX in bfloat16 when packed, else candle's f32 product.
    fn serve_projection(&self, which: usize, x: &Tensor) -> candle_core::Result<Tensor> {
        let linear = self.projection(which);
        match self.packed.get(which).and_then(Option::as_ref) {
            Some(packed) => {
                let y = amx::linear(x, packed)?;
                match linear.bias() {
                    Some(bias) => y.broadcast_add(bias),
                    None => Ok(y),
                }
            }
            None => linear.forward(x),
        }
    }
}

/// Low-rank adapters (LoRA, Hu et al. 2021) of every projection of every layer: the adapted
/// projection is `W x + scale * B (A x)`, with A [rank, in] and B [out, rank].
#[derive(Clone)]
pub struct LoraWeights {
    pub rank: usize,
    pub scale: f64,
    /// The softmax temperature of the adapted model's label logits (see
    /// [`super::tune::fit_temperature`]).
    pub temperature: f64,
    /// How the adapted model answers: the prompt it was trained on.
    pub answer: AnswerForm,
    /// Log-prior of the gold's position in retrieval's list, then of "none of these", added to
    /// the calibrated option scores ([`belink_core::decision::rank_prior`]); empty: none.
    pub rank_prior: Vec<f32>,
    /// Per layer, per projection of [`PROJECTIONS`]: (A, B); None for a layer not adapted.
    pub layers: Vec<Option<Vec<(Tensor, Tensor)>>>,
}

impl LoraWeights {
    /// The first adapted layer: training needs no gradients below it.
    pub fn first_adapted(&self) -> usize {
        self.layers.iter().position(Option::is_some).unwrap_or(self.layers.len())
    }

    fn project(&self, layer: usize, which: usize, base: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.layers[layer] {
            Some(adapters) => {
                let (a, b) = &adapters[which];
                let low = x.broadcast_matmul(&a.t()?)?.broadcast_matmul(&b.t()?)?;
                base.forward(x)? + (low * self.scale)?
            }
            None => base.forward(x),
        }
    }
}

/// How a forward pass runs.
#[derive(Clone, Copy)]
pub enum Pass<'a> {
    /// Fused kernels, no gradients: serving.
    Serve,
    /// Plain tensor operations that gradients flow through, with these adapters added to the
    /// projections: training. (candle's fused RMS norm, softmax and rotary kernels have no
    /// backward pass.) Layers below the first adapted one run as [`Pass::Serve`]: nothing
    /// below it needs a gradient.
    Train(&'a LoraWeights),
}

pub struct Llama {
    pub config: LlamaConfig,
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// Output projection, [vocab, hidden] (the embeddings when tied).
    lm_head: Tensor,
    /// The output projection in bfloat16 for AMX, when serving uses it.
    lm_head_packed: Option<PackedWeight>,
    device: Device,
}

/// Keys and values of every layer for the tokens seen so far: [batch, kv_heads, tokens, head_dim].
#[derive(Clone)]
pub struct KvCache {
    pub keys: Vec<Tensor>,
    pub values: Vec<Tensor>,
    pub len: usize,
}

/// Where the weights of one layer live, per file format.
struct Names {
    embeddings: String,
    norm: String,
    lm_head: String,
    layer: fn(usize, &str) -> String,
}

const GGUF_NAMES: fn() -> Names = || Names {
    embeddings: "token_embd.weight".into(),
    norm: "output_norm.weight".into(),
    lm_head: "output.weight".into(),
    layer: |i, part| {
        let name = match part {
            "attention_norm" => "attn_norm",
            "q" => "attn_q",
            "k" => "attn_k",
            "v" => "attn_v",
            "o" => "attn_output",
            "mlp_norm" => "ffn_norm",
            "gate" => "ffn_gate",
            "up" => "ffn_up",
            "q_norm" => "attn_q_norm",
            "k_norm" => "attn_k_norm",
            "after_attention_norm" => "post_attention_norm",
            "after_mlp_norm" => "post_ffw_norm",
            _ => "ffn_down",
        };
        format!("blk.{i}.{name}")
    },
};

const HF_NAMES: fn() -> Names = || Names {
    embeddings: "model.embed_tokens.weight".into(),
    norm: "model.norm.weight".into(),
    lm_head: "lm_head.weight".into(),
    layer: |i, part| {
        let name = match part {
            "attention_norm" => "input_layernorm",
            "q" => "self_attn.q_proj",
            "k" => "self_attn.k_proj",
            "v" => "self_attn.v_proj",
            "o" => "self_attn.o_proj",
            "mlp_norm" => "post_attention_layernorm",
            "gate" => "mlp.gate_proj",
            "up" => "mlp.up_proj",
            _ => "mlp.down_proj",
        };
        format!("model.layers.{i}.{name}")
    },
};

impl Llama {
    /// Builds the model from named f32 tensors; `.bias` tensors are used where present (Qwen2).
    fn from_tensors(
        config: LlamaConfig,
        mut tensors: HashMap<String, Tensor>,
        names: Names,
        device: &Device,
    ) -> Result<Llama, ModelError> {
        let mut take =
            |name: &str| tensors.remove(name).ok_or_else(|| ModelError::Weights(format!("tensor {name} is missing")));
        let embeddings = take(&names.embeddings)?;
        let norm = take(&names.norm)?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let part = |p: &str| (names.layer)(i, p);
            let extra_norms = match config.gemma {
                Some(_) => Some(GemmaNorms {
                    q: take(&format!("{}.weight", part("q_norm")))?,
                    k: take(&format!("{}.weight", part("k_norm")))?,
                    after_attention: take(&format!("{}.weight", part("after_attention_norm")))?,
                    after_mlp: take(&format!("{}.weight", part("after_mlp_norm")))?,
                }),
                None => None,
            };
            let mut linear = |p: &str| -> Result<Linear, ModelError> {
                let weight = take(&format!("{}.weight", part(p)))?;
                let bias = take(&format!("{}.bias", part(p))).ok();
                Ok(Linear::new(weight, bias))
            };
            let layer = Layer {
                extra_norms,
                q: linear("q")?,
                k: linear("k")?,
                v: linear("v")?,
                o: linear("o")?,
                gate: linear("gate")?,
                up: linear("up")?,
                down: linear("down")?,
                attention_norm: take(&format!("{}.weight", part("attention_norm")))?,
                mlp_norm: take(&format!("{}.weight", part("mlp_norm")))?,
                packed: Vec::new(),
            };
            layers.push(layer);
        }
        let lm_head = take(&names.lm_head).unwrap_or_else(|_| embeddings.clone());
        Ok(Llama { config, embeddings, layers, norm, lm_head, lm_head_packed: None, device: device.clone() })
    }

    /// Loads a GGUF file of architecture `llama`, `qwen2` or `gemma3`.
    pub fn from_gguf(path: &Path, content: &gguf_file::Content, device: &Device) -> Result<Llama, ModelError> {
        let shown = path.display();
        let meta = |key: &str| content.metadata.get(key);
        let arch = meta("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| ModelError::Config(format!("{shown}: no general.architecture")))?;
        if !matches!(arch.as_str(), "llama" | "qwen2" | "gemma3") {
            return Err(ModelError::Config(format!(
                "{shown}: architecture '{arch}' is not supported (llama family: llama, qwen2, gemma3)"
            )));
        }
        let number = |key: &str| -> Result<usize, ModelError> {
            meta(&format!("{arch}.{key}"))
                .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
                .map(|v| v as usize)
                .ok_or_else(|| ModelError::Config(format!("{shown}: {arch}.{key} is missing")))
        };
        let heads = number("attention.head_count")?;
        let hidden = number("embedding_length")?;
        let gemma = match arch.as_str() {
            // llama.cpp's gemma3: every sixth layer global, local layers' RoPE base 10,000.
            "gemma3" => Some(GemmaConfig {
                sliding_window: number("attention.sliding_window")?,
                global_every: 6,
                local_rope_theta: 10_000.0,
            }),
            _ => None,
        };
        let config = LlamaConfig {
            layers: number("block_count")?,
            hidden,
            heads,
            kv_heads: number("attention.head_count_kv").unwrap_or(heads),
            head_dim: number("attention.key_length")
                .or_else(|_| number("rope.dimension_count"))
                .unwrap_or(hidden / heads),
            rope_theta: meta(&format!("{arch}.rope.freq_base")).and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0),
            rms_eps: meta(&format!("{arch}.attention.layer_norm_rms_epsilon"))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(1e-5) as f64,
            vocab: 0,
            // llama.cpp permutes llama's Q and K rows for interleaved rotation; Qwen2 and Gemma 3
            // rotate the two halves (its NEOX rope type), as Hugging Face does.
            interleaved_rope: arch == "llama",
            gemma,
        };
        let mut file = std::fs::File::open(path).map_err(|e| ModelError::Missing(format!("{shown}: {e}")))?;
        let mut tensors = HashMap::new();
        for name in content.tensor_infos.keys() {
            let tensor = content
                .tensor(&mut file, name, device)
                .and_then(|q| q.dequantize(device))
                .map_err(|e| ModelError::Weights(format!("{shown}: tensor {name}: {e}")))?;
            tensors.insert(name.clone(), tensor);
        }
        let mut model = Llama::from_tensors(config, tensors, GGUF_NAMES(), device)
            .map_err(|e| ModelError::Weights(format!("{shown}: {e}")))?;
        model.config.vocab = model.lm_head.dim(0).map_err(|e| ModelError::Weights(e.to_string()))?;
        model.check_shapes().map_err(|e| ModelError::Weights(format!("{shown}: {e}")))?;
        Ok(model)
    }

    /// Loads a Hugging Face checkpoint directory (config.json, *.safetensors).
    pub fn from_safetensors(dir: &Path, device: &Device) -> Result<Llama, ModelError> {
        #[derive(serde::Deserialize)]
        struct HfConfig {
            num_hidden_layers: usize,
            hidden_size: usize,
            num_attention_heads: usize,
            num_key_value_heads: Option<usize>,
            head_dim: Option<usize>,
            rope_theta: Option<f32>,
            rms_norm_eps: Option<f64>,
            vocab_size: usize,
            model_type: Option<String>,
        }
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| ModelError::Missing(format!("{}: {e}", config_path.display())))?;
        let hf: HfConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::Config(format!("{}: {e}", config_path.display())))?;
        if let Some(kind) = hf.model_type.as_deref().filter(|k| !matches!(*k, "llama" | "qwen2")) {
            return Err(ModelError::Config(format!(
                "{}: model_type '{kind}' is not supported (llama, qwen2)",
                config_path.display()
            )));
        }
        let config = LlamaConfig {
            layers: hf.num_hidden_layers,
            hidden: hf.hidden_size,
            heads: hf.num_attention_heads,
            kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: hf.head_dim.unwrap_or(hf.hidden_size / hf.num_attention_heads),
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rms_eps: hf.rms_norm_eps.unwrap_or(1e-5),
            vocab: hf.vocab_size,
            interleaved_rope: false,
            gemma: None,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::Missing(format!("{}: {e}", dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ModelError::Missing(format!("{}: no .safetensors file", dir.display())));
        }
        let mut tensors = HashMap::new();
        for file in &files {
            let loaded = candle_core::safetensors::load(file, device)
                .map_err(|e| ModelError::Weights(format!("{}: {e}", file.display())))?;
            for (name, tensor) in loaded {
                let tensor = tensor.to_dtype(DType::F32).map_err(|e| ModelError::Weights(e.to_string()))?;
                tensors.insert(name, tensor);
            }
        }
        let model = Llama::from_tensors(config, tensors, HF_NAMES(), device)
            .map_err(|e| ModelError::Weights(format!("{}: {e}", dir.display())))?;
        model.check_shapes().map_err(|e| ModelError::Weights(format!("{}: {e}", dir.display())))?;
        Ok(model)
    }

    fn check_shapes(&self) -> Result<(), String> {
        let c = &self.config;
        let expect = |what: &str, tensor: &Tensor, dims: &[usize]| {
            if tensor.dims() == dims {
                Ok(())
            } else {
                Err(format!("{what} has shape {:?}, expected {dims:?}", tensor.dims()))
            }
        };
        expect("the embeddings", &self.embeddings, &[self.lm_head.dims()[0], c.hidden])?;
        for (i, layer) in self.layers.iter().enumerate() {
            expect(&format!("layer {i} q"), layer.q.weight(), &[c.heads * c.head_dim, c.hidden])?;
            expect(&format!("layer {i} k"), layer.k.weight(), &[c.kv_heads * c.head_dim, c.hidden])?;
        }
        if c.kv_heads == 0 || !c.heads.is_multiple_of(c.kv_heads) || !c.head_dim.is_multiple_of(2) {
            return Err(format!("{} heads do not share {} key/value heads", c.heads, c.kv_heads));
        }
        Ok(())
    }

    /// Rotary embedding tables for the tokens at `positions`: ([len, d/2], [len, d/2]).
    fn rope_tables(&self, positions: &[usize], theta: f32) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.config.head_dim / 2;
        let inverse: Vec<f32> =
            (0..half).map(|i| 1.0 / theta.powf(2.0 * i as f32 / self.config.head_dim as f32)).collect();
        let inverse = Tensor::from_vec(inverse, (1, half), &self.device)?;
        let len = positions.len();
        let positions: Vec<f32> = positions.iter().map(|&p| p as f32).collect();
        let positions = Tensor::from_vec(positions, (len, 1), &self.device)?;
        let angles = positions.broadcast_mul(&inverse)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// Runs `tokens` ([batch, len], right-padded) after the cached `prefix` (batch 1, shared
    /// by every row, or none). Returns the last layer's hidden states [batch, len, hidden]
    /// and the cache extended by these tokens.
    pub fn forward(&self, tokens: &Tensor, prefix: Option<&KvCache>) -> candle_core::Result<(Tensor, KvCache)> {
        self.forward_pass(tokens, prefix, Pass::Serve)
    }

    /// [`Llama::forward`], for serving or for training with adapters.
    pub fn forward_pass(
        &self,
        tokens: &Tensor,
        prefix: Option<&KvCache>,
        pass: Pass,
    ) -> candle_core::Result<(Tensor, KvCache)> {
        let (_, len) = tokens.dims2()?;
        let start = prefix.map(|p| p.len).unwrap_or(0);
        let positions: Vec<usize> = (start..start + len).collect();
        self.run_layers(tokens, prefix, pass, &positions, &causal_mask(len, start, &self.device)?)
    }

    /// Runs a tree of tokens after `prefix` in one pass (batch 1): token i continues token
    /// `parents[i]` (None: the prefix's end; a parent comes before its children). Each token
    /// sees the prefix and its own ancestors only, at the position it would have alone, so
    /// every branch computes what it would as a sequence of its own, and branches that begin
    /// alike share those tokens. Returns the hidden states [tokens, hidden].
    pub fn forward_tree(
        &self,
        tokens: &[u32],
        parents: &[Option<usize>],
        prefix: &KvCache,
    ) -> candle_core::Result<Tensor> {
        let len = tokens.len();
        let start = prefix.len;
        let mut depths: Vec<usize> = Vec::with_capacity(len);
        let mut mask = vec![f32::NEG_INFINITY; len * (start + len)];
        for (i, parent) in parents.iter().enumerate() {
            if parent.is_some_and(|p| p >= i) {
                candle_core::bail!("token {i} of the tree comes before its parent");
            }
            depths.push(parent.map_or(0, |p| depths[p] + 1));
            let row = &mut mask[i * (start + len)..(i + 1) * (start + len)];
            row[..start].fill(0.0);
            let mut node = Some(i);
            while let Some(n) = node {
                row[start + n] = 0.0;
                node = parents[n];
            }
        }
        let positions: Vec<usize> = depths.iter().map(|d| start + d).collect();
        let mask = Tensor::from_vec(mask, (len, start + len), &self.device)?;
        let tokens = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let (hidden, _) = self.run_layers(&tokens, Some(prefix), Pass::Serve, &positions, &mask)?;
        hidden.squeeze(0)
    }

    /// The layers over `tokens` [batch, len] at `positions`, each query seeing the keys its
    /// row of `mask` [len, prefix + len] leaves at 0.
    fn run_layers(
        &self,
        tokens: &Tensor,
        prefix: Option<&KvCache>,
        pass: Pass,
        positions: &[usize],
        mask: &Tensor,
    ) -> candle_core::Result<(Tensor, KvCache)> {
        let (batch, len) = tokens.dims2()?;
        let c = &self.config;
        let start = prefix.map(|p| p.len).unwrap_or(0);
        let global_rope = self.rope_tables(positions, c.rope_theta)?;
        let mut x = self.embeddings.index_select(&tokens.flatten_all()?, 0)?.reshape((batch, len, c.hidden))?;
        // Gemma's local layers: their own RoPE base, and keys more than the window back hidden.
        let local = match &c.gemma {
            Some(g) => {
                x = (x * (c.hidden as f64).sqrt())?;
                let rope = self.rope_tables(positions, g.local_rope_theta)?;
                Some((rope, sliding_window_mask(mask, positions, start, g.sliding_window)?))
            }
            None => None,
        };
        let mut cache = KvCache { keys: Vec::new(), values: Vec::new(), len: start + len };
        for (i, layer) in self.layers.iter().enumerate() {
            let pass = match pass {
                Pass::Train(lora) if i < lora.first_adapted() => Pass::Serve,
                other => other,
            };
            let norm = |x: &Tensor, weight: &Tensor| match pass {
                Pass::Serve => candle_nn::ops::rms_norm(x, weight, c.rms_eps as f32),
                Pass::Train(_) => candle_nn::ops::rms_norm_slow(x, weight, c.rms_eps as f32),
            };
            let ((cos, sin), mask) = match &local {
                Some((rope, sliding)) if c.is_local(i) => (rope, sliding),
                _ => (&global_rope, mask),
            };
            let rotate = |t: &Tensor| match (pass, c.interleaved_rope) {
                (Pass::Serve, true) => candle_nn::rotary_emb::rope_i(t, cos, sin),
                (Pass::Serve, false) => candle_nn::rotary_emb::rope(t, cos, sin),
                (Pass::Train(_), true) => candle_nn::rotary_emb::rope_i_slow(t, cos, sin),
                (Pass::Train(_), false) => candle_nn::rotary_emb::rope_slow(t, cos, sin),
            };
            let project = |which: usize, x: &Tensor| match pass {
                Pass::Serve => layer.serve_projection(which, x),
                Pass::Train(lora) => lora.project(i, which, layer.projection(which), x),
            };
            let residual = x.clone();
            let h = norm(&x, &layer.attention_norm)?;
            let heads = |t: Tensor, n: usize| t.reshape((batch, len, n, c.head_dim))?.transpose(1, 2)?.contiguous();
            let mut q = heads(project(0, &h)?, c.heads)?;
            let mut k = heads(project(1, &h)?, c.kv_heads)?;
            let v = heads(project(2, &h)?, c.kv_heads)?;
            if let Some(extra) = &layer.extra_norms {
                (q, k) = (norm(&q, &extra.q)?, norm(&k, &extra.k)?);
            }
            let (q, k) = (rotate(&q)?, rotate(&k)?);
            let (k, v) = match prefix {
                Some(p) => {
                    let shared = |t: &Tensor| t.broadcast_as((batch, c.kv_heads, p.len, c.head_dim))?.contiguous();
                    (Tensor::cat(&[&shared(&p.keys[i])?, &k], 2)?, Tensor::cat(&[&shared(&p.values[i])?, &v], 2)?)
                }
                None => (k, v),
            };
            cache.keys.push(k.clone());
            cache.values.push(v.clone());
            let repeat = c.heads / c.kv_heads;
            let k = candle_transformers::utils::repeat_kv(k, repeat)?.contiguous()?;
            let v = candle_transformers::utils::repeat_kv(v, repeat)?.contiguous()?;
            let scores = (q.matmul(&k.t()?)? / (c.head_dim as f64).sqrt())?.broadcast_add(mask)?;
            let weights = match pass {
                Pass::Serve => candle_nn::ops::softmax_last_dim(&scores)?,
                Pass::Train(_) => candle_nn::ops::softmax(&scores, D::Minus1)?,
            };
            let attended = weights.matmul(&v)?.transpose(1, 2)?.reshape((batch, len, c.heads * c.head_dim))?;
            let mut attended = project(3, &attended)?;
            if let Some(extra) = &layer.extra_norms {
                attended = norm(&attended, &extra.after_attention)?;
            }
            x = (residual + attended)?;
            let residual = x.clone();
            let h = norm(&x, &layer.mlp_norm)?;
            let gate = project(4, &h)?;
            // Gemma: the tanh approximation, as its gelu_pytorch_tanh.
            let gate = match (c.gemma.is_some(), pass) {
                (true, Pass::Serve) => crate::kernels::gelu_tanh(&gate)?,
                (true, Pass::Train(_)) => gate.gelu()?,
                (false, _) => candle_nn::ops::silu(&gate)?,
            };
            let mut mlp = project(6, &(gate * project(5, &h)?)?)?;
            if let Some(extra) = &layer.extra_norms {
                mlp = norm(&mlp, &extra.after_mlp)?;
            }
            x = (residual + mlp)?;
        }
        Ok((x, cache))
    }

    /// The final norm of hidden states [rows, hidden].
    pub fn final_norm(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(hidden, &self.norm, self.config.rms_eps as f32)
    }

    /// [`Llama::final_norm`] that gradients flow through.
    pub fn final_norm_differentiable(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm_slow(hidden, &self.norm, self.config.rms_eps as f32)
    }

    /// (input, output) width of projection `which` of [`PROJECTIONS`] (the same in every layer).
    pub fn projection_shape(&self, which: usize) -> (usize, usize) {
        let (out, input) = self.layers[0].projection(which).weight().dims2().unwrap_or((0, 0));
        (input, out)
    }

    /// Adds the adapters into the projection weights: the merged model serves what the adapted
    /// one computes, at the cost of the base model.
    pub fn merge(&mut self, lora: &LoraWeights) -> Result<(), ModelError> {
        if lora.layers.len() != self.layers.len() {
            return Err(ModelError::Weights(format!(
                "the adapter has {} layers, the model {}",
                lora.layers.len(),
                self.layers.len()
            )));
        }
        for (layer, adapters) in self.layers.iter_mut().zip(&lora.layers) {
            for (which, (a, b)) in adapters.iter().flatten().enumerate() {
                let linear = layer.projection_mut(which);
                let merge = || -> candle_core::Result<Tensor> {
                    let delta = (b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)? * lora.scale)?;
                    linear.weight() + delta
                };
                let weight = merge()
                    .map_err(|e| ModelError::Weights(format!("adapter of projection {}: {e}", PROJECTIONS[which])))?;
                *linear = Linear::new(weight, linear.bias().cloned());
            }
            layer.packed.clear();
        }
        Ok(())
    }

    /// Logits of the given tokens only, for normed hidden states [rows, hidden] → [rows, ids].
    pub fn logits_for(&self, normed: &Tensor, token_ids: &[u32]) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(token_ids, &self.device)?;
        let rows = self.lm_head.index_select(&ids, 0)?;
        normed.matmul(&rows.t()?)
    }

    /// Logits over the whole vocabulary, for normed hidden states [rows, hidden].
    pub fn logits(&self, normed: &Tensor) -> candle_core::Result<Tensor> {
        match &self.lm_head_packed {
            Some(packed) => amx::linear(normed, packed),
            None => normed.matmul(&self.lm_head.t()?),
        }
    }

    /// Serves the projections and the output projection on AMX in bfloat16 from now on
    /// (weights rounded once here; f32 accumulation), where this CPU has AMX and the model is on
    /// the CPU; the weights stay in f32 beside them for training. Returns whether it does. The
    /// adapters must be merged first: a later [`Llama::merge`] drops the bfloat16 copies.
    pub fn use_bf16_products(&mut self) -> Result<bool, ModelError> {
        if !self.device.is_cpu() || !amx::available() {
            return Ok(false);
        }
        let pack = |weight: &Tensor| -> Result<Option<PackedWeight>, ModelError> {
            let (outputs, inputs) = weight.dims2().map_err(|e| ModelError::Weights(e.to_string()))?;
            if !PackedWeight::fits(outputs, inputs) {
                return Ok(None);
            }
            let values = weight
                .flatten_all()
                .and_then(|w| w.to_vec1::<f32>())
                .map_err(|e| ModelError::Weights(e.to_string()))?;
            Ok(PackedWeight::pack(&values, outputs, inputs))
        };
        for layer in &mut self.layers {
            layer.packed =
                (0..PROJECTIONS.len()).map(|which| pack(layer.projection(which).weight())).collect::<Result<_, _>>()?;
        }
        self.lm_head_packed = pack(&self.lm_head)?;
        Ok(true)
    }

    /// The hidden state of each row at its last real token: [batch, hidden].
    pub fn last_positions(hidden: &Tensor, lengths: &[usize]) -> candle_core::Result<Tensor> {
        let rows: Vec<Tensor> =
            lengths.iter().enumerate().map(|(b, &l)| hidden.i((b, l - 1))).collect::<Result<_, _>>()?;
        Tensor::stack(&rows, 0)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// Additive mask [len, start + len]: query i (at position start + i) sees keys up to its own
/// position. Keys of right-padding come after every real query, so it hides them too.
fn causal_mask(len: usize, start: usize, device: &Device) -> candle_core::Result<Tensor> {
    let total = start + len;
    let mask: Vec<f32> =
        (0..len).flat_map(|i| (0..total).map(move |j| if j > start + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(mask, (len, total), device)
}

/// `mask` [len, start + len] with the keys hidden that lie `window` or more positions before
/// their query (keys: the prefix at 0..start, then the queries' own `positions`).
fn sliding_window_mask(mask: &Tensor, positions: &[usize], start: usize, window: usize) -> candle_core::Result<Tensor> {
    if positions.iter().all(|&p| p < window) {
        return Ok(mask.clone());
    }
    let keys: Vec<usize> = (0..start).chain(positions.iter().copied()).collect();
    let far: Vec<f32> = positions
        .iter()
        .flat_map(|&query| keys.iter().map(move |&key| if query >= key + window { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    mask + Tensor::from_vec(far, (positions.len(), keys.len()), mask.device())?
}

/// Softmax of one row of logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The index of the largest value in the last dimension of a [vocab] tensor.
pub fn argmax(logits: &Tensor) -> candle_core::Result<u32> {
    logits.argmax(D::Minus1)?.to_scalar::<u32>()
}
