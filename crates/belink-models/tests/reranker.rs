//! The set-wise re-ranker. A tiny llama model written by the test itself (random weights, a
//! real GGUF file, SmolLM2's real tokenizer metadata) checks the mechanics; the real default
//! model (SmolLM2-135M-Instruct, `make models`) checks the tokenizer and label scoring.

use std::path::{Path, PathBuf};

use belink_core::decision::prompt::{PromptCandidate, RerankItem};
use belink_models::llm::{parse_answer, Reranker};
use belink_models::streams::Streams;
use candle_core::quantized::gguf_file;
use candle_core::Device;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn default_model() -> PathBuf {
    let path = std::env::var_os("BELINK_RERANKER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(path.is_file(), "no re-ranker model at {}: run `make models`", path.display());
    path
}

fn items() -> Vec<RerankItem> {
    let candidate = |name: &str, synonyms: &[&str], definition: Option<&str>| PromptCandidate {
        name: name.into(),
        synonyms: synonyms.iter().map(|s| s.to_string()).collect(),
        definition: definition.map(String::from),
    };
    vec![
        RerankItem {
            mention: "FAP".into(),
            context: Some("Patients with [FAP] develop hundreds of colorectal adenomas.".into()),
            candidates: vec![
                candidate(
                    "Adenomatous Polyposis Coli",
                    &["Familial adenomatous polyposis"],
                    Some("Polyposis of the colon."),
                ),
                candidate("Amyloid Neuropathies, Familial", &["Familial amyloid polyneuropathy"], None),
            ],
        },
        RerankItem {
            mention: "high blood pressure".into(),
            context: None,
            candidates: vec![
                candidate("Hypotension", &["Low blood pressure"], None),
                candidate("Hypertension", &["High blood pressure"], None),
                candidate("Tachycardia", &[], None),
                candidate("Fever", &[], None),
            ],
        },
        RerankItem {
            mention: "seizures".into(),
            context: Some("The boy had [seizures] since infancy.".into()),
            candidates: vec![candidate("Seizure", &["Epileptic seizure"], None), candidate("Ataxia", &[], None)],
        },
    ]
}

fn max_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn tiny_model_prefix_reuse_and_batching_give_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let reranker = Reranker::load(
        &belink_models::llm::testing::write_tiny_llama(&dir.path().join("tiny-llama.gguf"), &default_model()).unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    assert!(reranker.prefix_len() > 50, "the instruction prefix is cached");
    let items = items();
    let batched = reranker.label_logits(&items, true).unwrap();
    let whole = reranker.label_logits(&items, false).unwrap();
    assert!(
        max_difference(&batched, &whole) < 1e-4,
        "prefix reuse changes logits by {}",
        max_difference(&batched, &whole)
    );
    for (i, item) in items.iter().enumerate() {
        let alone = reranker.label_logits(std::slice::from_ref(item), true).unwrap();
        assert!(max_difference(&alone, &batched[i..i + 1]) < 1e-4, "padding in a batch changes item {i}");
    }
    // One probability per candidate plus "none of these", summing to one.
    let probabilities = reranker.score(&items).unwrap();
    for (item, p) in items.iter().zip(&probabilities) {
        assert_eq!(p.len(), item.candidates.len() + 1);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    // Spread over two streams (the server's way), in the items' order.
    let spread = reranker.score_on(&Streams::new(2), &items).unwrap();
    assert!(max_difference(&spread, &probabilities) < 1e-5, "streams change the scores");
    assert!(reranker.score_on(&Streams::new(2), &[]).unwrap().is_empty());
    assert!(reranker.generate(&items[0]).is_ok());
}

#[test]
fn missing_and_foreign_model_files_are_clear_errors() {
    let missing = Reranker::load(Path::new("/nonexistent/model.gguf"), &Device::Cpu).err().unwrap();
    assert!(missing.to_string().contains("/nonexistent/model.gguf does not exist"), "{missing}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let error = Reranker::load(&junk, &Device::Cpu).err().unwrap();
    assert!(error.to_string().contains("not a GGUF file"), "{error}");
    let full = std::fs::read(default_model()).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    assert!(Reranker::load(&truncated, &Device::Cpu).is_err());
}

#[test]
fn tokenizer_rebuilt_from_gguf_matches_llama_cpp() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace().join("tests/fixtures/smollm2_tokens.json")).unwrap())
            .unwrap();
    let mut file = std::fs::File::open(default_model()).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let tokenizer = belink_models::llm::gguf_tokenizer::from_gguf(&content).unwrap();
    for (text, ids) in reference["texts"].as_array().unwrap().iter().zip(reference["ids"].as_array().unwrap()) {
        let text = text.as_str().unwrap();
        let expected: Vec<u32> = ids.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
        let got = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, expected, "{text:?}");
    }
}

#[test]
fn label_scoring_agrees_with_greedy_generation_on_the_default_model() {
    let reranker = Reranker::load(&default_model(), &Device::Cpu).unwrap();
    let items = items();
    let scored = reranker.score(&items).unwrap();
    let mut comparable = 0;
    let mut agree = 0;
    for (item, probabilities) in items.iter().zip(&scored) {
        let answer = reranker.generate(item).unwrap();
        let Some(generated) = parse_answer(&answer, probabilities.len()) else { continue };
        comparable += 1;
        let best = probabilities.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        agree += usize::from(best == generated);
    }
    // Tolerance: greedy generation may answer with a word instead of a label; among the
    // answers that are labels, scoring must pick the same one.
    assert!(comparable >= 2, "greedy generation answered with labels for {comparable} of {} prompts", items.len());
    assert_eq!(agree, comparable, "scoring and generation disagree");
}
