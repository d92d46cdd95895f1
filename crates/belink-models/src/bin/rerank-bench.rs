//! rerank-bench: milliseconds per mention of set-wise re-ranking with a model, for k = 5, 10,
//! 20 candidates: one-pass label scoring (batched, batch 1, without prefix reuse) and greedy
//! generation. Prompts are built from NCBI-disease-like mentions with MEDIC-like candidates
//! read from a TSV file (mention<TAB>name|name|...), the way belink_normalize builds them.
//!
//!   rerank-bench MODEL PROMPTS_TSV [--items N] [--ks 5,10,20] [--dump-prompts DIR] [--adapter FILE]
//!                [--bf16]
//! Prints one JSON line per measurement. --dump-prompts writes the full prompts (one JSON
//! list per k) for the llama.cpp peer, scripts/rerank-bench-llamacpp.py. --adapter merges an
//! adapter; one that answers with names is measured the server's way and by generation only
//! (the label-logit modes measure the letter form). --bf16: products in bfloat16 on AMX (the
//! server's `belink.reranker_bf16`), with the largest difference of an option's probability
//! from f32 products and how often the chosen option differs.

use std::path::Path;
use std::time::Instant;

use belink_core::decision::prompt::{AnswerForm, PromptCandidate, RerankItem};
use belink_models::llm::{parse_answer, Reranker};
use belink_models::streams::Streams;
use candle_core::Device;

fn main() -> Result<(), String> {
    belink_models::prepare_candle_threads();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, prompts, rest @ ..] = &args[..] else {
        return Err("usage: rerank-bench MODEL PROMPTS_TSV [--items N] [--ks 5,10,20] [--adapter FILE]".into());
    };
    let flag = |name: &str| rest.iter().position(|a| a == name).and_then(|i| rest.get(i + 1)).cloned();
    let count: usize = flag("--items").map(|n| n.parse().unwrap_or(16)).unwrap_or(16);
    let ks: Vec<usize> =
        flag("--ks").unwrap_or_else(|| "5,10,20".into()).split(',').filter_map(|k| k.parse().ok()).collect();
    let rows: Vec<(String, Vec<String>)> = std::fs::read_to_string(prompts)
        .map_err(|e| format!("{prompts}: {e}"))?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(m, names)| (m.to_string(), names.split('|').map(String::from).collect()))
        .take(count)
        .collect();
    let streams = Streams::new(0);
    let adapter = flag("--adapter");
    let reranker = streams
        .install(|| Reranker::load(Path::new(model), &Device::Cpu, adapter.as_deref().map(Path::new)))
        .map_err(|e| e.to_string())?;
    // The same model with bfloat16 products, beside it (--bf16).
    let bf16 = match rest.iter().any(|a| a == "--bf16") {
        true => {
            let mut bf16 = streams
                .install(|| Reranker::load(Path::new(model), &Device::Cpu, adapter.as_deref().map(Path::new)))
                .map_err(|e| e.to_string())?;
            // make bench asks on every machine: without AMX there is nothing to compare.
            match bf16.use_bf16_products().map_err(|e| e.to_string())? {
                true => Some(bf16),
                false => {
                    eprintln!("rerank-bench: --bf16 skipped: this CPU or kernel has no AMX");
                    None
                }
            }
        }
        false => None,
    };
    let by_letter = reranker.answer_form() == AnswerForm::Letter;
    let report = |mode: &str, k: usize, batch: usize, seconds: f64, items: usize, extra: &str| {
        println!(
            "{{\"mode\": \"{mode}\", \"k\": {k}, \"batch\": {batch}, \"ms_per_mention\": {:.1}{extra}}}",
            seconds * 1000.0 / items as f64
        );
    };
    for &k in &ks {
        let items: Vec<RerankItem> = rows
            .iter()
            .map(|(mention, names)| RerankItem {
                mention: mention.clone(),
                context: Some(format!("Patients with [{mention}] were studied in this family.")),
                candidates: names
                    .iter()
                    .cycle()
                    .take(k)
                    .map(|n| PromptCandidate { name: n.clone(), synonyms: vec![], definition: None })
                    .collect(),
            })
            .collect();
        if let Some(dir) = flag("--dump-prompts") {
            let template = reranker.template();
            let prompts: Vec<String> = items
                .iter()
                .map(|i| {
                    format!(
                        "{}{}",
                        belink_core::decision::prompt::shared_prefix(template, reranker.answer_form()),
                        belink_core::decision::prompt::item_suffix(i, template, reranker.answer_form())
                    )
                })
                .collect();
            let labels: Vec<Vec<&str>> =
                items.iter().map(|i| belink_core::decision::prompt::labels_for(i.candidates.len()).to_vec()).collect();
            let json = serde_json::json!({"k": k, "prompts": prompts, "labels": labels});
            std::fs::write(Path::new(&dir).join(format!("prompts-k{k}.json")), json.to_string())
                .map_err(|e| e.to_string())?;
        }
        let tokens: usize = items.iter().map(|i| reranker.suffix_tokens(i).map(|t| t.len()).unwrap_or(0)).sum();
        let prompt =
            format!(", \"prefix_tokens\": {}, \"mean_item_tokens\": {}", reranker.prefix_len(), tokens / items.len());
        let time = |f: &dyn Fn() -> Result<(), String>| -> Result<f64, String> {
            let started = Instant::now();
            f()?;
            Ok(started.elapsed().as_secs_f64())
        };
        let scores = std::cell::RefCell::new(Vec::new());
        let score = |reranker: &Reranker| -> Result<f64, String> {
            time(&|| {
                *scores.borrow_mut() = reranker.score_on(&streams, &items).map_err(|e| e.to_string())?;
                Ok(())
            })
        };
        let seconds = score(&reranker)?;
        let form = format!("{prompt}, \"answer\": \"{}\"", if by_letter { "letter" } else { "name" });
        report("score, items spread over the cores, prefix reused", k, items.len(), seconds, items.len(), &form);
        if let Some(bf16) = &bf16 {
            let f32_scores = scores.borrow().clone();
            let seconds = score(bf16)?;
            let choice = |row: &Vec<f32>| (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b]));
            let (mut largest, mut differing) = (0f32, 0);
            for (exact, rounded) in f32_scores.iter().zip(scores.borrow().iter()) {
                largest = exact.iter().zip(rounded).map(|(a, b)| (a - b).abs()).fold(largest, f32::max);
                differing += usize::from(choice(exact) != choice(rounded));
            }
            let extra =
                format!("{form}, \"largest_probability_difference\": {largest:.4}, \"choices_differing\": {differing}");
            report("score, bfloat16 on AMX, items spread over the cores", k, items.len(), seconds, items.len(), &extra);
        }
        // The label-logit modes measure the letter form only.
        if by_letter {
            let seconds = time(&|| {
                streams.install(|| reranker.label_logits(&items, true)).map(|_| ()).map_err(|e| e.to_string())
            })?;
            report("score, one batch, prefix reused", k, items.len(), seconds, items.len(), "");
            for (reuse_prefix, mode) in
                [(true, "score, batch 1, prefix reused"), (false, "score, batch 1, whole prompt")]
            {
                let seconds = time(&|| {
                    for item in &items {
                        streams
                            .install(|| reranker.label_logits(std::slice::from_ref(item), reuse_prefix))
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })?;
                report(mode, k, 1, seconds, items.len(), "");
            }
        }
        let answers = std::cell::RefCell::new(Vec::new());
        let seconds = time(&|| {
            for item in &items {
                let answer = streams.install(|| reranker.generate(item)).map_err(|e| e.to_string())?;
                answers.borrow_mut().push(answer);
            }
            Ok(())
        })?;
        let answered = answers.borrow().iter().filter(|a| parse_answer(a, k + 1).is_some()).count();
        report(
            "greedy generation, batch 1, prefix reused",
            k,
            1,
            seconds,
            items.len(),
            &format!(", \"answers_that_are_labels\": {answered}"),
        );
    }
    Ok(())
}
