//! A Hugging Face tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata (byte-level
//! BPE, "gpt2" in GGUF terms), for models shipped without tokenizer.json.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::ModelError;

/// llama.cpp's pre-tokenizer regexes (`tokenizer.ggml.pre`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types that are special tokens (control, user-defined).
const SPECIAL_TOKEN_TYPES: [i32; 2] = [3, 4];

pub fn from_gguf(content: &Content) -> Result<Tokenizer, ModelError> {
    let meta = |key: &str| content.metadata.get(key);
    let text = |key: &str| meta(key).and_then(|v| v.to_string().ok()).cloned();
    let model = text("tokenizer.ggml.model").unwrap_or_default();
    if model != "gpt2" {
        return Err(ModelError::Config(format!(
            "tokenizer.ggml.model '{model}' cannot be rebuilt (byte-level BPE 'gpt2' only): put the model's tokenizer.json next to the GGUF file"
        )));
    }
    let list = |key: &str| -> Result<&Vec<Value>, ModelError> {
        meta(key).and_then(|v| v.to_vec().ok()).ok_or_else(|| ModelError::Config(format!("{key} is missing")))
    };
    let tokens: Vec<String> = list("tokenizer.ggml.tokens")?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| ModelError::Config(format!("tokenizer.ggml.tokens: {e}"))))
        .collect::<Result<_, _>>()?;
    let merges: Vec<(String, String)> = list("tokenizer.ggml.merges")?
        .iter()
        .filter_map(|v| v.to_string().ok())
        .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect();
    let types: Vec<i32> = meta("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|values| values.iter().map(|v| v.to_i32().unwrap_or(1)).collect())
        .unwrap_or_default();
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| ModelError::Config(format!("rebuilding the BPE tokenizer: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    let split = |pattern: &str| -> Result<PreTokenizerWrapper, ModelError> {
        let split = Split::new(SplitPattern::Regex(pattern.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| ModelError::Config(format!("pre-tokenizer: {e}")))?;
        Ok(PreTokenizerWrapper::Split(split))
    };
    let pre = text("tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
    let pre_tokenizer = match pre.as_str() {
        "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level,
        ])),
        "default" | "gpt2" | "gpt-2" => byte_level,
        "llama-bpe" | "llama3" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(LLAMA3_PATTERN)?,
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
        ])),
        "qwen2" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(QWEN2_PATTERN)?,
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
        ])),
        other => {
            return Err(ModelError::Config(format!(
                "pre-tokenizer '{other}' is not known: put the model's tokenizer.json next to the GGUF file"
            )))
        }
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(types.iter().chain(std::iter::repeat(&1)))
        .filter(|(_, t)| SPECIAL_TOKEN_TYPES.contains(t))
        .map(|(token, _)| AddedToken::from(token.clone(), true))
        .collect();
    tokenizer.add_special_tokens(&special);
    Ok(tokenizer)
}
