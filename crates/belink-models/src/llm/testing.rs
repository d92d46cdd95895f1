//! A tiny llama model with random weights and a real model's tokenizer, written as a real
//! GGUF file: for tests that need the whole re-ranking path without a real model's cost.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

/// Writes a two-layer llama (hidden size 32) to `path`, with random weights and the tokenizer
/// metadata of the GGUF model at `tokenizer_source`.
pub fn write_tiny_llama(path: &Path, tokenizer_source: &Path) -> candle_core::Result<PathBuf> {
    let mut source = std::fs::File::open(tokenizer_source)?;
    let real = gguf_file::Content::read(&mut source)?;
    let (hidden, heads, kv_heads, head_dim, ffn, layers) = (32usize, 4usize, 2usize, 8usize, 64usize, 2usize);
    let vocab = real.metadata["tokenizer.ggml.tokens"].to_vec()?.len();
    let mut metadata: Vec<(String, Value)> = real
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.extend([
        ("general.architecture".to_string(), Value::String("llama".into())),
        ("llama.block_count".into(), Value::U32(layers as u32)),
        ("llama.embedding_length".into(), Value::U32(hidden as u32)),
        ("llama.feed_forward_length".into(), Value::U32(ffn as u32)),
        ("llama.attention.head_count".into(), Value::U32(heads as u32)),
        ("llama.attention.head_count_kv".into(), Value::U32(kv_heads as u32)),
        ("llama.rope.dimension_count".into(), Value::U32(head_dim as u32)),
        ("llama.rope.freq_base".into(), Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon".into(), Value::F32(1e-5)),
    ]);
    let random = |dims: &[usize]| QTensor::quantize(&Tensor::randn(0f32, 0.5, dims, &Device::Cpu)?, GgmlDType::F32);
    let ones = |n: usize| QTensor::quantize(&Tensor::ones(n, DType::F32, &Device::Cpu)?, GgmlDType::F32);
    let mut tensors: Vec<(String, QTensor)> =
        vec![("token_embd.weight".into(), random(&[vocab, hidden])?), ("output_norm.weight".into(), ones(hidden)?)];
    for i in 0..layers {
        tensors.extend([
            (format!("blk.{i}.attn_norm.weight"), ones(hidden)?),
            (format!("blk.{i}.attn_q.weight"), random(&[heads * head_dim, hidden])?),
            (format!("blk.{i}.attn_k.weight"), random(&[kv_heads * head_dim, hidden])?),
            (format!("blk.{i}.attn_v.weight"), random(&[kv_heads * head_dim, hidden])?),
            (format!("blk.{i}.attn_output.weight"), random(&[hidden, heads * head_dim])?),
            (format!("blk.{i}.ffn_norm.weight"), ones(hidden)?),
            (format!("blk.{i}.ffn_gate.weight"), random(&[ffn, hidden])?),
            (format!("blk.{i}.ffn_up.weight"), random(&[ffn, hidden])?),
            (format!("blk.{i}.ffn_down.weight"), random(&[hidden, ffn])?),
        ]);
    }
    let mut file = std::fs::File::create(path)?;
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &metadata, &tensors)?;
    Ok(path.to_path_buf())
}
