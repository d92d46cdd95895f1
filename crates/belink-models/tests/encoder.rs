//! The sentence encoder against sentence-transformers' own output (tests/fixtures/
//! minilm_reference.json, made by scripts/encoder-reference.py) on the default model, which
//! `make models` fetches (BELINK_ENCODER_MODEL points elsewhere).

use std::path::{Path, PathBuf};

use belink_models::encoder::{Pooling, SentenceEncoder};
use belink_models::ModelError;
use candle_core::Device;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("BELINK_ENCODER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/models/all-MiniLM-L6-v2"));
    assert!(dir.join("model.safetensors").exists(), "no encoder model in {}: run `make models`", dir.display());
    dir
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn matches_sentence_transformers_within_1e4_cosine() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("tests/fixtures/minilm_reference.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = reference["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let expected: Vec<Vec<f32>> = reference["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    let encoder = SentenceEncoder::load(&model_dir(), &Device::Cpu, None).unwrap();
    assert_eq!(encoder.dim(), 384);
    assert_eq!(encoder.pooling(), Pooling::Mean, "read from 1_Pooling/config.json");
    let vectors = encoder.embed(&texts).unwrap();
    for ((text, got), want) in texts.iter().zip(&vectors).zip(&expected) {
        let similarity = cosine(got, want);
        assert!(similarity > 1.0 - 1e-4, "{text:?}: cosine {similarity}");
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalized");
    }
}

#[test]
fn a_text_gets_the_same_vector_alone_or_in_a_padded_batch() {
    let encoder = SentenceEncoder::load(&model_dir(), &Device::Cpu, None).unwrap();
    let alone = encoder.embed(&["G6PD deficiency"]).unwrap();
    let batch = encoder.embed(&["a much longer text that forces padding of the short one", "G6PD deficiency"]).unwrap();
    assert!(cosine(&alone[0], &batch[1]) > 1.0 - 1e-5);
    assert!(encoder.embed(&[]).unwrap().is_empty());
}

#[test]
fn an_uncased_model_ignores_case_and_a_cased_one_does_not() {
    let uncased = SentenceEncoder::load(&model_dir(), &Device::Cpu, None).unwrap();
    assert!(uncased.ignores_case(), "MiniLM's tokenizer lowercases first");
    let vectors = uncased.embed(&["Pelizaeus-Merzbacher Disease", "pelizaeus-merzbacher disease"]).unwrap();
    assert!(cosine(&vectors[0], &vectors[1]) > 1.0 - 1e-6);

    // The same model with a tokenizer that keeps case.
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::os::unix::fs::symlink(model_dir().join(file), dir.path().join(file)).unwrap();
    }
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir().join("tokenizer.json")).unwrap()).unwrap();
    tokenizer["normalizer"]["lowercase"] = serde_json::Value::Bool(false);
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let cased = SentenceEncoder::load(dir.path(), &Device::Cpu, None).unwrap();
    assert!(!cased.ignores_case());
    let vectors = cased.embed(&["Pelizaeus-Merzbacher Disease", "pelizaeus-merzbacher disease"]).unwrap();
    assert!(cosine(&vectors[0], &vectors[1]) < 0.999, "case changes the tokens");
}

#[test]
fn cls_pooling_can_be_chosen() {
    let mean = SentenceEncoder::load(&model_dir(), &Device::Cpu, None).unwrap();
    let cls = SentenceEncoder::load(&model_dir(), &Device::Cpu, Some(Pooling::Cls)).unwrap();
    let a = mean.embed(&["short stature"]).unwrap();
    let b = cls.embed(&["short stature"]).unwrap();
    assert!(cosine(&a[0], &b[0]) < 0.999, "CLS pooling gives another vector");
}

#[test]
fn missing_or_wrong_files_are_clear_errors() {
    let nowhere = SentenceEncoder::load(Path::new("/nonexistent/model"), &Device::Cpu, None).err().unwrap();
    assert!(matches!(nowhere, ModelError::Missing(ref m) if m.contains("/nonexistent/model")), "{nowhere}");

    let dir = std::env::temp_dir().join(format!("belink-encoder-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(model_dir().join(file), dir.join(file)).unwrap();
    }
    let no_weights = SentenceEncoder::load(&dir, &Device::Cpu, None).err().unwrap();
    assert!(no_weights.to_string().contains("model.safetensors does not exist"), "{no_weights}");

    std::fs::write(dir.join("model.safetensors"), b"this is not a safetensors file").unwrap();
    let junk = SentenceEncoder::load(&dir, &Device::Cpu, None).err().unwrap();
    assert!(matches!(junk, ModelError::Weights(ref m) if m.contains("model.safetensors")), "{junk}");

    let full = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &full[..full.len() / 3]).unwrap();
    let truncated = SentenceEncoder::load(&dir, &Device::Cpu, None).err().unwrap();
    assert!(matches!(truncated, ModelError::Weights(_)), "{truncated}");

    std::fs::write(dir.join("config.json"), b"{\"not\": \"bert\"}").unwrap();
    let config = SentenceEncoder::load(&dir, &Device::Cpu, None).err().unwrap();
    assert!(config.to_string().contains("not a BERT configuration"), "{config}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pooling_names() {
    assert_eq!(Pooling::parse("CLS").unwrap(), Some(Pooling::Cls));
    assert_eq!(Pooling::parse("auto").unwrap(), None);
    assert!(Pooling::parse("max").is_err());
}
