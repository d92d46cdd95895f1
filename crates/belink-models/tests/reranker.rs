//! The set-wise re-ranker. A tiny llama model written by the test itself (random weights, a
//! real GGUF file, SmolLM2's real tokenizer metadata) checks the mechanics; the real
//! SmolLM2-135M-Instruct (`make smollm2-model`) checks the tokenizer and label scoring, and
//! Gemma 3 270M, the default re-ranker (`make models`), its own forward pass and tokenizer.

use std::path::{Path, PathBuf};

use belink_core::decision::prompt::{PromptCandidate, RerankItem};
use belink_models::llm::{parse_answer, Reranker};
use belink_models::streams::Streams;
use candle_core::quantized::gguf_file;
use candle_core::Device;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// SmolLM2-135M-Instruct, or the llama-family GGUF that BELINK_RERANKER_MODEL names.
fn smollm2_model() -> PathBuf {
    let path = std::env::var_os("BELINK_RERANKER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(path.is_file(), "no re-ranker model at {}: run `make smollm2-model`", path.display());
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
        &belink_models::llm::testing::write_tiny_llama(&dir.path().join("tiny-llama.gguf"), &smollm2_model()).unwrap(),
        &Device::Cpu,
        None,
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
    let missing = Reranker::load(Path::new("/nonexistent/model.gguf"), &Device::Cpu, None).err().unwrap();
    assert!(missing.to_string().contains("/nonexistent/model.gguf does not exist"), "{missing}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let error = Reranker::load(&junk, &Device::Cpu, None).err().unwrap();
    assert!(error.to_string().contains("not a GGUF file"), "{error}");
    let full = std::fs::read(smollm2_model()).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    assert!(Reranker::load(&truncated, &Device::Cpu, None).is_err());
}

#[test]
fn tokenizer_rebuilt_from_gguf_matches_llama_cpp() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace().join("tests/fixtures/smollm2_tokens.json")).unwrap())
            .unwrap();
    let mut file = std::fs::File::open(smollm2_model()).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let tokenizer = belink_models::llm::gguf_tokenizer::from_gguf(&content).unwrap();
    for (text, ids) in reference["texts"].as_array().unwrap().iter().zip(reference["ids"].as_array().unwrap()) {
        let text = text.as_str().unwrap();
        let expected = token_ids(ids);
        let got = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, expected, "{text:?}");
    }
}

#[test]
fn label_scoring_agrees_with_greedy_generation_on_smollm2() {
    let reranker = Reranker::load(&smollm2_model(), &Device::Cpu, None).unwrap();
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

// ---- instruction tuning (LoRA) ----------------------------------------------------------

use belink_core::decision::prompt::{item_suffix, labels_for, option_names, AnswerForm, ChatTemplate};
use belink_core::decision::rank_prior::add_rank_prior;
use belink_models::llm::tune::{load_adapter, prompt_tokens, save_adapter, RerankerTuner, TuneConfig, TuneExample};

/// The items as training examples, each answered with `answers[i]`.
fn examples(answers: &[usize]) -> Vec<TuneExample> {
    items()
        .iter()
        .zip(answers)
        .map(|(item, &answer)| TuneExample {
            suffix: item_suffix(item, ChatTemplate::ChatMl, AnswerForm::Letter),
            answer,
            options: labels_for(item.candidates.len()).len(),
            form: AnswerForm::Letter,
            option_names: Vec::new(),
        })
        .collect()
}

fn tiny_model(dir: &Path) -> PathBuf {
    belink_models::llm::testing::write_tiny_llama(&dir.join("tiny-llama.gguf"), &smollm2_model()).unwrap()
}

fn tiny_config() -> TuneConfig {
    TuneConfig { rank: 4, alpha: 8.0, learning_rate: 1e-2, batch_size: 3, epochs: 40, ..TuneConfig::default() }
}

#[test]
fn tuning_learns_the_answers_and_the_merged_model_serves_what_was_trained() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // Answers the random model does not already give: candidate B, A, then "none of these".
    let examples = examples(&[1, 0, 2]);
    let mut tuner = RerankerTuner::new(&model, &examples, tiny_config(), &Device::Cpu).unwrap();
    let first = tuner.step().unwrap().unwrap();
    let mut last = first;
    while let Some(step) = tuner.step().unwrap() {
        last = step;
    }
    assert_eq!(last.step, 40);
    assert!(last.loss < first.loss * 0.2, "loss {} -> {}", first.loss, last.loss);
    assert_eq!(last.right, 3, "every answer ranks first after training");

    let adapter = dir.path().join("adapter.safetensors");
    save_adapter(tuner.adapters(), &adapter).unwrap();
    let served = Reranker::load(&model, &Device::Cpu, Some(&adapter)).unwrap();
    let logits = served.label_logits(&items(), true).unwrap();
    for (i, row) in logits.iter().enumerate() {
        let trained = tuner.example_logits(i).unwrap();
        assert!(max_difference(&[trained], std::slice::from_ref(row)) < 1e-4, "item {i}: merged != adapted");
    }
    let choices: Vec<usize> = served
        .score(&items())
        .unwrap()
        .iter()
        .map(|p| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap())
        .collect();
    assert_eq!(choices, [1, 0, 2]);
    let base = Reranker::load(&model, &Device::Cpu, None).unwrap().label_logits(&items(), true).unwrap();
    assert!(max_difference(&base, &logits) > 0.1, "the adapter changes the model");
}

/// The name form scores each option by its name's probability: the prompt once, then every
/// name as one token tree after its cache. Each name's score must be the sum of its tokens'
/// log-probabilities computed one token at a time over the whole prompt.
#[test]
fn name_answers_are_scored_by_the_probability_of_each_name() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let tuner =
        RerankerTuner::new(&model, &examples(&[0, 0, 0]), TuneConfig { epochs: 1, ..tiny_config() }, &Device::Cpu)
            .unwrap();
    let mut lora = tuner.adapters().clone();
    lora.answer = AnswerForm::Name;
    lora.temperature = 2.0;
    // Two positions, then "none": items with more candidates give the rest the second's prior.
    lora.rank_prior = vec![-0.4, -1.3, -2.2];
    let adapter = dir.path().join("names.safetensors");
    save_adapter(&lora, &adapter).unwrap();
    let served = Reranker::load(&model, &Device::Cpu, Some(&adapter)).unwrap();
    assert_eq!(served.answer_form(), AnswerForm::Name);
    let prefix = Reranker::load(&model, &Device::Cpu, None).unwrap().prefix_len();
    assert!(served.prefix_len() > prefix, "the name instruction is longer than the letter one");

    let items = items();
    let probabilities = served.score(&items).unwrap();
    let mut lengths_differ = false;
    for (item, probabilities) in items.iter().zip(&probabilities) {
        let suffix = served.suffix_tokens(item).unwrap();
        let answers = served.option_answer_tokens(item).unwrap();
        assert_eq!(answers.len(), item.candidates.len() + 1);
        lengths_differ |= answers.iter().any(|a| a.len() != answers[0].len());
        let cached = served.answer_log_probs(&suffix, &answers, true).unwrap();
        // The whole prompt without the prefix cache, as training tokenizes it (`--dump-tokens`):
        // the same tokens as the server's.
        let example = TuneExample {
            suffix: item_suffix(item, ChatTemplate::ChatMl, AnswerForm::Name),
            answer: 0,
            options: answers.len(),
            form: AnswerForm::Name,
            option_names: option_names(item),
        };
        let (_, mut dumped) = prompt_tokens(&model, &[example]).unwrap();
        let dumped = dumped.remove(0);
        assert_eq!(dumped.prompt[served.prefix_len()..], suffix[..]);
        assert_eq!(dumped.answers, answers);
        let whole_prompt = dumped.prompt;
        let one_at_a_time = |answer: &[u32]| -> f32 {
            (0..answer.len())
                .map(|j| {
                    let context = [whole_prompt.as_slice(), &answer[..j]].concat();
                    served.answer_log_probs(&context, &[answer[j..=j].to_vec()], false).unwrap()[0]
                })
                .sum()
        };
        for (i, answer) in answers.iter().enumerate() {
            let alone = one_at_a_time(answer);
            assert!((cached[i] - alone).abs() < 1e-3, "option {i}: {} vs {alone}", cached[i]);
        }
        // Answers that begin alike share tree nodes; each still gets its own sequence's score.
        let [a, b, c, d] = [suffix[0], suffix[1], suffix[2], suffix[3]];
        let alike = [vec![a, b, c], vec![a, b, d], vec![a, d], vec![b], vec![a, b, c, a]];
        let shared = served.answer_log_probs(&suffix, &alike, true).unwrap();
        for (answer, score) in alike.iter().zip(&shared) {
            let alone = one_at_a_time(answer);
            assert!((score - alone).abs() < 1e-3, "{answer:?}: {score} vs {alone}");
        }
        let mut calibrated: Vec<f32> = cached.iter().map(|l| l / 2.0).collect();
        add_rank_prior(&mut calibrated, &[-0.4, -1.3, -2.2]);
        let expected = softmax_of(&calibrated);
        assert!(max_difference(&[expected], std::slice::from_ref(probabilities)) < 1e-5);
    }
    assert!(lengths_differ, "names of different lengths are tested");
}

fn softmax_of(values: &[f32]) -> Vec<f32> {
    log_softmax(values).iter().map(|l| l.exp()).collect()
}

#[test]
fn only_the_top_layers_may_be_adapted() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let config = TuneConfig { top_layers: 1, epochs: 5, ..tiny_config() };
    let mut tuner = RerankerTuner::new(&model, &examples(&[1, 0, 2]), config, &Device::Cpu).unwrap();
    while tuner.step().unwrap().is_some() {}
    let adapters = tuner.adapters();
    assert!(adapters.layers[0].is_none() && adapters.layers[1].is_some());
    let adapter = dir.path().join("top.safetensors");
    save_adapter(adapters, &adapter).unwrap();
    let loaded = load_adapter(&adapter, &Device::Cpu).unwrap();
    assert!(loaded.layers[0].is_none() && loaded.layers[1].is_some() && loaded.rank == 4);
    let served = Reranker::load(&model, &Device::Cpu, Some(&adapter)).unwrap();
    let logits = served.label_logits(&items()[..1], true).unwrap();
    assert!(max_difference(&[tuner.example_logits(0).unwrap()], &logits) < 1e-4);
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let examples = examples(&[1, 0, 2]);
    let config = TuneConfig { batch_size: 1, epochs: 2, ..tiny_config() };
    let mut whole = RerankerTuner::new(&model, &examples, config.clone(), &Device::Cpu).unwrap();
    while whole.step().unwrap().is_some() {}

    let checkpoints = dir.path().join("checkpoints");
    let mut first = RerankerTuner::new(&model, &examples, config, &Device::Cpu).unwrap();
    for _ in 0..4 {
        first.step().unwrap();
    }
    first.save_checkpoint(&checkpoints).unwrap();
    drop(first);
    let mut resumed = RerankerTuner::resume(&model, &checkpoints, &examples, &Device::Cpu).unwrap();
    assert_eq!((resumed.steps_done(), resumed.steps_total()), (4, 6));
    while resumed.step().unwrap().is_some() {}
    for i in 0..examples.len() {
        let (a, b) = (whole.example_logits(i).unwrap(), resumed.example_logits(i).unwrap());
        assert!(max_difference(&[a], &[b]) < 1e-5, "example {i}");
    }
    let other = with_another_answer(&examples);
    let error = RerankerTuner::resume(&model, &checkpoints, &other, &Device::Cpu).err().unwrap();
    assert!(error.to_string().contains("examples changed"), "{error}");
}

fn with_another_answer(examples: &[TuneExample]) -> Vec<TuneExample> {
    let mut other = examples.to_vec();
    other[0].answer = 0;
    other
}

#[test]
fn adapter_files_that_do_not_fit_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = load_adapter(&dir.path().join("none.safetensors"), &Device::Cpu).err().unwrap();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    assert!(load_adapter(&junk, &Device::Cpu).is_err());
    // An adapter of the tiny model does not fit SmolLM2.
    let model = tiny_model(dir.path());
    let tuner =
        RerankerTuner::new(&model, &examples(&[0, 0, 0]), TuneConfig { epochs: 1, ..tiny_config() }, &Device::Cpu)
            .unwrap();
    let adapter = dir.path().join("tiny.safetensors");
    save_adapter(tuner.adapters(), &adapter).unwrap();
    let error = Reranker::load(&smollm2_model(), &Device::Cpu, Some(&adapter)).err().unwrap();
    assert!(error.to_string().contains("tiny.safetensors"), "{error}");
    // A rank prior that is not log-probabilities of a position and "none".
    for prior in [vec![-1.0], vec![-1.0, f32::NAN]] {
        let mut lora = tuner.adapters().clone();
        lora.rank_prior = prior;
        save_adapter(&lora, &adapter).unwrap();
        let error = load_adapter(&adapter, &Device::Cpu).err().unwrap();
        assert!(error.to_string().contains("lora.rank_prior"), "{error}");
    }
}

/// SmolLM2's shipped adapter (or the one BELINK_RERANKER_ADAPTER names), and beside it the
/// label logits that Hugging Face transformers' llama (PyTorch) gives for a few training
/// prompts with that adapter, written by `scripts/train-reranker-torch.py` (`--reference` after
/// training there, `--reference-for` for an adapter trained by `rerank-tune`).
fn smollm2_adapter() -> PathBuf {
    std::env::var_os("BELINK_RERANKER_ADAPTER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("models/rerankers/smollm2-135m-belink-names-lora.safetensors"))
}

/// The model the server runs (our llama forward, base GGUF + adapter merged) and the one
/// PyTorch trains are the same model: no train/serve skew whichever framework trains. For an
/// adapter answering with names, the options' log-probabilities are compared instead.
#[test]
fn the_served_model_gives_the_label_logits_of_the_pytorch_model() {
    assert_served_model_is_the_pytorch_model(&smollm2_model(), &smollm2_adapter());
}

/// The same for Gemma 3 270M and the adapter tuned for it (trained on transformers' Gemma 3).
#[test]
fn the_served_gemma_model_gives_the_option_scores_of_the_pytorch_model() {
    let adapter = workspace().join("models/rerankers/gemma3-270m-belink-names-lora.safetensors");
    assert_served_model_is_the_pytorch_model(&gemma_model(), &adapter);
}

/// Served with bfloat16 products (AMX; the server's default where the CPU has it), the Gemma
/// re-ranker with its adapter still chooses what PyTorch's f32 model chooses on the reference
/// prompts, with each option's probability within 0.02 of PyTorch's.
#[test]
fn bfloat16_products_keep_the_gemma_adapter_s_choices_and_probabilities() {
    if !belink_models::llm::amx::available() {
        eprintln!("skipped: this CPU or kernel has no AMX");
        return;
    }
    let adapter = workspace().join("models/rerankers/gemma3-270m-belink-names-lora.safetensors");
    let mut served = Reranker::load(&gemma_model(), &Device::Cpu, Some(&adapter)).unwrap();
    assert!(served.use_bf16_products().unwrap());
    let examples = reference_examples(&adapter);
    let (mut largest, mut rounded_differently) = (0f32, false);
    for (i, example) in examples.iter().enumerate() {
        let answers: Vec<Vec<u32>> = example["answers"].as_array().unwrap().iter().map(token_ids).collect();
        let pytorch = softmax(&floats(&example["option_log_probs"]));
        let served = softmax(&served.answer_log_probs(&token_ids(&example["tokens"]), &answers, false).unwrap());
        let choice = |p: &[f32]| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(choice(&served), choice(&pytorch), "prompt {i}: {served:?} against PyTorch's {pytorch:?}");
        for (p, s) in pytorch.iter().zip(&served) {
            largest = largest.max((p - s).abs());
            rounded_differently |= (p - s).abs() > 1e-5;
        }
    }
    eprintln!("bfloat16 products: options' probabilities within {largest} of PyTorch's");
    assert!(largest <= 0.02, "an option's probability moved by {largest}");
    assert!(rounded_differently, "the products ran in f32: nothing was rounded");
}

/// The examples of the reference beside `adapter` (`ADAPTER.reference.json`, at least one).
fn reference_examples(adapter: &Path) -> Vec<serde_json::Value> {
    let path = PathBuf::from(format!("{}.reference.json", adapter.display()));
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let examples = reference["examples"].as_array().unwrap().clone();
    assert!(!examples.is_empty());
    examples
}

fn softmax(scores: &[f32]) -> Vec<f32> {
    log_softmax(scores).iter().map(|l| l.exp()).collect()
}

/// The reference beside the adapter (`ADAPTER.reference.json`, written by train-reranker.sh)
/// holds transformers' scores with the adapter for a few training prompts: label logits
/// (letter form) or each option's summed log-probability (name form).
fn assert_served_model_is_the_pytorch_model(model: &Path, adapter: &Path) {
    let served = Reranker::load(model, &Device::Cpu, Some(adapter)).unwrap();
    let base = Reranker::load(model, &Device::Cpu, None).unwrap();
    let examples = reference_examples(adapter);
    for (i, example) in examples.iter().enumerate() {
        let tokens = token_ids(&example["tokens"]);
        if let Some(answers) = example["answers"].as_array() {
            // An adapter answering with names: each option's summed log-probability.
            assert_eq!(served.answer_form(), AnswerForm::Name);
            let answers: Vec<Vec<u32>> = answers.iter().map(token_ids).collect();
            let pytorch = floats(&example["option_log_probs"]);
            let scores = served.answer_log_probs(&tokens, &answers, false).unwrap();
            for (p, s) in pytorch.iter().zip(&scores) {
                assert!((p - s).abs() <= 1e-4 * p.abs().max(1.0), "prompt {i}: served {s}, PyTorch {p}");
            }
            let untuned = base.answer_log_probs(&tokens, &answers, false).unwrap();
            assert!(max_difference(&[pytorch], &[untuned]) > 1e-2, "prompt {i}: the adapter changes the scores");
            continue;
        }
        let pytorch = floats(&example["label_logits"]);
        let logits = served.prompt_label_logits(&tokens).unwrap();
        // Logits near 10 agree to about 1e-5 of their size (f32 summed in another order over
        // 30 layers); the log-probabilities the server derives from them, to 1e-4.
        for (p, s) in pytorch.iter().zip(&logits) {
            assert!((p - s).abs() <= 1e-4 * p.abs().max(1.0), "prompt {i}: served logit {s}, PyTorch {p}");
        }
        let options = example["options"].as_u64().unwrap() as usize;
        let difference = max_difference(&[log_softmax(&pytorch[..options])], &[log_softmax(&logits[..options])]);
        assert!(difference < 1e-4, "prompt {i}: served log-probabilities differ from PyTorch's by {difference}");
        let untuned = base.prompt_label_logits(&tokens).unwrap();
        assert!(max_difference(&[pytorch], &[untuned]) > 1e-2, "prompt {i}: the adapter changes the logits");
    }
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max;
    logits.iter().map(|l| l - log_sum).collect()
}

// Gemma 3 270M (`make models`), checked against Hugging Face transformers reading the same
// GGUF file (tests/fixtures/gemma3_reference.json, written by scripts/gemma-reference.py).

fn gemma_model() -> PathBuf {
    let path = workspace().join(".cache/models/gemma-3-270m-q4_k_m.gguf");
    assert!(path.is_file(), "no Gemma 3 model at {}: run `make models`", path.display());
    path
}

fn gemma_reference() -> serde_json::Value {
    let text = std::fs::read_to_string(workspace().join("tests/fixtures/gemma3_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn numbers<T>(value: &serde_json::Value, convert: impl Fn(&serde_json::Value) -> T) -> Vec<T> {
    value.as_array().unwrap().iter().map(convert).collect()
}

fn token_ids(value: &serde_json::Value) -> Vec<u32> {
    numbers(value, |v| v.as_u64().unwrap() as u32)
}

fn floats(value: &serde_json::Value) -> Vec<f32> {
    numbers(value, |v| v.as_f64().unwrap() as f32)
}

#[test]
fn gemma3_tokenizer_rebuilt_from_gguf_matches_transformers() {
    let reference = gemma_reference();
    let mut file = std::fs::File::open(gemma_model()).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let tokenizer = belink_models::llm::gguf_tokenizer::from_gguf(&content).unwrap();
    for (text, ids) in reference["texts"].as_array().unwrap().iter().zip(reference["ids"].as_array().unwrap()) {
        let text = text.as_str().unwrap();
        let expected = token_ids(ids);
        assert_eq!(tokenizer.encode(text, false).unwrap().get_ids(), expected, "{text:?}");
    }
}

#[test]
fn gemma3_forward_gives_the_logits_of_transformers() {
    use belink_models::llm::llama::Llama;
    let reference = gemma_reference();
    let path = gemma_model();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let model = Llama::from_gguf(&path, &content, &Device::Cpu).unwrap();
    let mut worst = 0f32;
    for (i, ids) in reference["ids"].as_array().unwrap().iter().enumerate() {
        let ids = token_ids(ids);
        let tokens = candle_core::Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let (hidden, _) = model.forward(&tokens, None).unwrap();
        let positions = numbers(&reference["positions"][i], |v| v.as_u64().unwrap() as usize);
        for (row, &position) in positions.iter().enumerate() {
            let logit_ids = token_ids(&reference["logit_ids"][i][row]);
            let expected = floats(&reference["logits"][i][row]);
            let normed =
                model.final_norm(&hidden.get(0).unwrap().get(position).unwrap().unsqueeze(0).unwrap()).unwrap();
            let got = model.logits_for(&normed, &logit_ids).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
            for (g, e) in got.iter().zip(&expected) {
                worst = worst.max((g - e).abs());
            }
            assert!(
                got.iter().zip(&expected).all(|(g, e)| (g - e).abs() < 1e-3 * e.abs().max(1.0)),
                "text {i}, position {position} of {}: {got:?} against {expected:?}",
                ids.len()
            );
        }
    }
    eprintln!("largest difference from transformers: {worst:e}");
}
