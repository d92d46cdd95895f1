//! A Hugging Face tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata, for models
//! shipped without tokenizer.json: byte-level BPE ("gpt2" in GGUF terms: SmolLM2, Llama 3,
//! Qwen2) or SentencePiece BPE with byte fallback ("llama", as Gemma's: checked on Gemma 3;
//! Llama 2's tokenizer would also want a space in front of the text, which is not added).

use candle_core::quantized::gguf_file::{Content, Value};
use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::NormalizerWrapper;
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

/// GGUF token type of an ordinary piece (SentencePiece's "normal").
const NORMAL_TOKEN_TYPE: i32 = 1;

pub fn from_gguf(content: &Content) -> Result<Tokenizer, ModelError> {
    let meta = |key: &str| content.metadata.get(key);
    let text = |key: &str| meta(key).and_then(|v| v.to_string().ok()).cloned();
    let list = |key: &str| -> Result<&Vec<Value>, ModelError> {
        meta(key).and_then(|v| v.to_vec().ok()).ok_or_else(|| ModelError::Config(format!("{key} is missing")))
    };
    let tokens: Vec<String> = list("tokenizer.ggml.tokens")?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| ModelError::Config(format!("tokenizer.ggml.tokens: {e}"))))
        .collect::<Result<_, _>>()?;
    let types: Vec<i32> = meta("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|values| values.iter().map(|v| v.to_i32().unwrap_or(NORMAL_TOKEN_TYPE)).collect())
        .unwrap_or_default();
    let type_of = |id: usize| types.get(id).copied().unwrap_or(NORMAL_TOKEN_TYPE);
    let model = text("tokenizer.ggml.model").unwrap_or_default();
    let mut tokenizer = match model.as_str() {
        "gpt2" => byte_level_bpe(&tokens, list("tokenizer.ggml.merges")?, text("tokenizer.ggml.pre"))?,
        "llama" => {
            let scores: Vec<f32> =
                list("tokenizer.ggml.scores")?.iter().map(|v| v.to_f32().unwrap_or(f32::NEG_INFINITY)).collect();
            sentencepiece_bpe(&tokens, &scores, &type_of)?
        }
        other => {
            return Err(ModelError::Config(format!(
                "tokenizer.ggml.model '{other}' cannot be rebuilt (byte-level BPE 'gpt2' or SentencePiece 'llama'): put the model's tokenizer.json next to the GGUF file"
            )))
        }
    };
    let special: Vec<AddedToken> = tokens
        .iter()
        .enumerate()
        .filter(|&(id, _)| SPECIAL_TOKEN_TYPES.contains(&type_of(id)))
        .map(|(_, token)| AddedToken::from(token.clone(), true))
        .collect();
    tokenizer.add_special_tokens(&special);
    Ok(tokenizer)
}

/// Byte-level BPE from the vocabulary and merges, with llama.cpp's pre-tokenizer `pre`.
fn byte_level_bpe(tokens: &[String], merges: &[Value], pre: Option<String>) -> Result<Tokenizer, ModelError> {
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|v| v.to_string().ok())
        .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect();
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
    let pre = pre.unwrap_or_else(|| "default".into());
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
    Ok(tokenizer)
}

/// SentencePiece BPE (Gemma): spaces are written "▁", adjacent pieces merge while their
/// concatenation is a piece, the highest-scoring first, and a character no piece covers is
/// spelled with byte pieces ("<0xE2>"). Written as Hugging Face BPE merges the way its
/// SentencePiece converter writes them: every split of an ordinary piece into two pieces, ranked
/// by the whole piece's score. No space is put in front of the text: Hugging Face's Gemma
/// tokenizers add none (our prompts start with special tokens anyway).
fn sentencepiece_bpe(
    tokens: &[String],
    scores: &[f32],
    type_of: &dyn Fn(usize) -> i32,
) -> Result<Tokenizer, ModelError> {
    if scores.len() != tokens.len() {
        return Err(ModelError::Config(format!(
            "tokenizer.ggml.scores has {} entries for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    let ids: HashMap<&str, u32> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i as u32)).collect();
    // (score of the merged piece, left id, right id): the order merges are ranked in.
    let mut ranked: Vec<(f32, u32, u32)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate().filter(|&(id, _)| type_of(id) == NORMAL_TOKEN_TYPE) {
        for (split, _) in piece.char_indices().skip(1) {
            if let (Some(&left), Some(&right)) = (ids.get(&piece[..split]), ids.get(&piece[split..])) {
                ranked.push((scores[id], left, right));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<(String, String)> =
        ranked.into_iter().map(|(_, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone())).collect();
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .build()
        .map_err(|e| ModelError::Config(format!("rebuilding the SentencePiece tokenizer: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let spaces = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| ModelError::Config(format!("SentencePiece spaces: {e}")))
    };
    tokenizer.with_normalizer(Some(NormalizerWrapper::Replace(spaces(" ", "\u{2581}")?)));
    tokenizer.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(vec![
        DecoderWrapper::Replace(spaces("\u{2581}", " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ]))));
    Ok(tokenizer)
}
