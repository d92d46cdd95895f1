//! The generative set-wise re-ranker: an instruction-following LLM reads the mention, its
//! context and the candidates, and the probability of each option's answer gives the choice
//! and a confidence: the next-token probabilities of the candidates' labels, in one forward
//! pass per mention, or (an adapter trained to answer with names) the probability of each
//! option's name, in one more short pass over the options after the prompt's cache. The
//! instruction prefix shared by every prompt is computed once; its KV cache is reused.

pub mod amx;
mod gguf_check;
pub mod gguf_tokenizer;
pub mod llama;
pub mod testing;
pub mod tune;

use std::path::{Path, PathBuf};

pub use belink_core::decision::prompt::parse_answer;
use belink_core::decision::prompt::{
    answer_end, item_suffix, labels_for, option_names, parse_name_answer, shared_prefix, AnswerForm, ChatTemplate,
    RerankItem, LABELS,
};
use belink_core::decision::rank_prior::add_rank_prior;
use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use crate::kernels::picked_log_probs;
use crate::streams::Streams;
use crate::ModelError;
pub use gguf_check::read_gguf_header;
use llama::{argmax, softmax, KvCache, Llama};

/// Most tokens a greedy answer may take (reference mode): a letter, or a name (names are
/// clipped to 120 characters in the prompt).
fn max_answer_tokens(form: AnswerForm) -> usize {
    match form {
        AnswerForm::Letter => 8,
        AnswerForm::Name => 64,
    }
}

pub struct Reranker {
    model: Llama,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    /// How the model answers: letters without an adapter, or what its adapter was trained for.
    answer: AnswerForm,
    /// Token id of each label in [`LABELS`].
    label_ids: Vec<u32>,
    prefix_tokens: Vec<u32>,
    prefix: KvCache,
    pad_id: u32,
    stop_ids: Vec<u32>,
    path: PathBuf,
    /// Label logits are divided by it before the softmax (temperature scaling, fitted when the
    /// adapter was trained, so that probabilities are calibrated); 1 without an adapter.
    temperature: f32,
    /// Retrieval's rank prior, added after the temperature (empty: none; see [`add_rank_prior`]).
    rank_prior: Vec<f32>,
}

impl Reranker {
    /// Loads a GGUF file (llama, qwen2 or gemma3 architecture; tokenizer.json beside it if present,
    /// else rebuilt from the GGUF metadata) or a Hugging Face directory (config.json,
    /// *.safetensors, tokenizer.json, optionally tokenizer_config.json for the chat template).
    ///
    /// `adapter`: LoRA adapters (see [`tune`]) merged into the weights before anything runs.
    pub fn load(path: &Path, device: &Device, adapter: Option<&Path>) -> Result<Reranker, ModelError> {
        let shown = path.display();
        let (mut model, tokenizer, chat_template) = if path.is_dir() {
            let model = Llama::from_safetensors(path, device)?;
            let tokenizer = load_tokenizer_json(&path.join("tokenizer.json"))?;
            let template = std::fs::read_to_string(path.join("tokenizer_config.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["chat_template"].as_str().map(String::from));
            (model, tokenizer, template)
        } else if path.is_file() {
            let mut file = std::fs::File::open(path).map_err(|e| ModelError::Missing(format!("{shown}: {e}")))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let content =
                read_gguf_header(&mut file, size).map_err(|e| ModelError::Weights(format!("{shown}: {e}")))?;
            let model = Llama::from_gguf(path, &content, device)?;
            let beside = path.with_file_name("tokenizer.json");
            let tokenizer = if beside.is_file() {
                load_tokenizer_json(&beside)?
            } else {
                gguf_tokenizer::from_gguf(&content).map_err(|e| ModelError::Config(format!("{shown}: {e}")))?
            };
            let template = content.metadata.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
            (model, tokenizer, template)
        } else {
            return Err(ModelError::Missing(format!("re-ranker model {shown} does not exist")));
        };
        let (mut temperature, mut answer, mut rank_prior) = (1.0, AnswerForm::Letter, Vec::new());
        if let Some(adapter) = adapter {
            let lora = tune::load_adapter(adapter, device)?;
            model.merge(&lora).map_err(|e| ModelError::Weights(format!("{}: {e}", adapter.display())))?;
            temperature = lora.temperature as f32;
            answer = lora.answer;
            rank_prior = lora.rank_prior;
        }
        let template = ChatTemplate::detect(chat_template.as_deref(), |token| tokenizer.token_to_id(token).is_some());
        let single = |text: &str| -> Result<u32, ModelError> {
            let ids = encode(&tokenizer, text)?;
            match ids[..] {
                [id] => Ok(id),
                _ => Err(ModelError::Config(format!("{shown}: the label {text:?} is not one token ({ids:?})"))),
            }
        };
        let label_ids = LABELS.iter().map(|l| single(l)).collect::<Result<Vec<_>, _>>()?;
        let stop_ids: Vec<u32> = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "</s>", "\n"]
            .iter()
            .filter_map(|t| {
                tokenizer.token_to_id(t).or_else(|| encode(&tokenizer, t).ok().filter(|i| i.len() == 1).map(|i| i[0]))
            })
            .collect();
        let pad_id = stop_ids.first().copied().unwrap_or(0);
        let prefix_tokens = encode(&tokenizer, &shared_prefix(template, answer))?;
        let prefix =
            prefix_cache(&model, &prefix_tokens).map_err(|e| ModelError::Inference(format!("{shown}: {e}")))?;
        Ok(Reranker {
            model,
            tokenizer,
            template,
            answer,
            label_ids,
            prefix_tokens,
            prefix,
            pad_id,
            stop_ids,
            path: path.into(),
            temperature,
            rank_prior,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves from now on with bfloat16 products on AMX where this CPU has it
    /// ([`Llama::use_bf16_products`]), the instruction prefix's cache recomputed with them.
    /// Returns whether it does.
    pub fn use_bf16_products(&mut self) -> Result<bool, ModelError> {
        if !self.model.use_bf16_products()? {
            return Ok(false);
        }
        self.prefix = prefix_cache(&self.model, &self.prefix_tokens)
            .map_err(|e| ModelError::Inference(format!("{}: {e}", self.path.display())))?;
        Ok(true)
    }

    pub fn template(&self) -> ChatTemplate {
        self.template
    }

    pub fn answer_form(&self) -> AnswerForm {
        self.answer
    }

    pub fn prefix_len(&self) -> usize {
        self.prefix_tokens.len()
    }

    /// Tokens of an item's part of the prompt.
    pub fn suffix_tokens(&self, item: &RerankItem) -> Result<Vec<u32>, ModelError> {
        encode(&self.tokenizer, &item_suffix(item, self.template, self.answer))
    }

    /// Tokens of each option's answer in the name form: its name, then the end of the turn.
    pub fn option_answer_tokens(&self, item: &RerankItem) -> Result<Vec<Vec<u32>>, ModelError> {
        self.answer_tokens(&option_names(item))
    }

    /// Tokens of name answers, each name then the end of the turn: what serving and training
    /// score.
    fn answer_tokens(&self, names: &[String]) -> Result<Vec<Vec<u32>>, ModelError> {
        let end = answer_end(self.template);
        names.iter().map(|name| encode(&self.tokenizer, &format!("{name}{end}"))).collect()
    }

    /// Raw next-token logits of every label, one row per item, in one batched forward pass
    /// after the cached instruction prefix (or, with `reuse_prefix` false, over whole prompts
    /// one at a time: the reference the cache is checked against).
    pub fn label_logits(&self, items: &[RerankItem], reuse_prefix: bool) -> Result<Vec<Vec<f32>>, ModelError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let suffixes: Vec<Vec<u32>> = items
                .iter()
                .map(|item| self.suffix_tokens(item))
                .collect::<Result<_, _>>()
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            if !reuse_prefix {
                return suffixes
                    .iter()
                    .map(|suffix| {
                        let whole: Vec<u32> = self.prefix_tokens.iter().chain(suffix).copied().collect();
                        self.whole_prompt_label_logits(&whole)
                    })
                    .collect();
            }
            let width = suffixes.iter().map(Vec::len).max().unwrap_or(1);
            let lengths: Vec<usize> = suffixes.iter().map(Vec::len).collect();
            let padded: Vec<u32> = suffixes
                .iter()
                .flat_map(|s| s.iter().copied().chain(std::iter::repeat_n(self.pad_id, width - s.len())))
                .collect();
            let tokens = Tensor::from_vec(padded, (suffixes.len(), width), self.model.device())?;
            let (hidden, _) = self.model.forward(&tokens, Some(&self.prefix))?;
            let last = Llama::last_positions(&hidden, &lengths)?;
            self.model.logits_for(&self.model.final_norm(&last)?, &self.label_ids)?.to_vec2::<f32>()
        };
        run().map_err(|e| ModelError::Inference(e.to_string()))
    }

    /// Raw next-token logits of every label after a whole tokenized prompt (instruction prefix
    /// included), without the prefix cache: what another framework's forward pass is compared
    /// with.
    pub fn prompt_label_logits(&self, prompt: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.whole_prompt_label_logits(prompt).map_err(|e| ModelError::Inference(e.to_string()))
    }

    fn whole_prompt_label_logits(&self, prompt: &[u32]) -> candle_core::Result<Vec<f32>> {
        let tokens = Tensor::new(prompt, self.model.device())?.unsqueeze(0)?;
        let (hidden, _) = self.model.forward(&tokens, None)?;
        let last = Llama::last_positions(&hidden, &[prompt.len()])?;
        self.model.logits_for(&self.model.final_norm(&last)?, &self.label_ids)?.squeeze(0)?.to_vec1::<f32>()
    }

    /// Log-probability of each answer (token ids) after a prompt: the prompt's suffix after
    /// the cached instruction prefix, or (`reuse_prefix` false) a whole tokenized prompt,
    /// the reference the cache is checked against and what another framework's forward pass
    /// is compared with. The prompt runs once; the answers run together after its cache.
    pub fn answer_log_probs(
        &self,
        prompt: &[u32],
        answers: &[Vec<u32>],
        reuse_prefix: bool,
    ) -> Result<Vec<f32>, ModelError> {
        let run = || -> candle_core::Result<Vec<f32>> {
            let device = self.model.device();
            let tokens = Tensor::new(prompt, device)?.unsqueeze(0)?;
            let (hidden, cache) = self.model.forward(&tokens, reuse_prefix.then_some(&self.prefix))?;
            let last = Llama::last_positions(&hidden, &[prompt.len()])?;
            // Each answer's later tokens, predicted from the answer's tokens before them: the
            // answers run as one tree after the prompt's cache (no copy of the cache per answer,
            // no padding, and answers that begin alike share those tokens).
            let tree = AnswerTree::of(answers);
            let rows = if tree.tokens.is_empty() {
                last
            } else {
                Tensor::cat(&[&last, &self.model.forward_tree(&tree.tokens, &tree.parents, &cache)?], 0)?
            };
            // Row 0 (the prompt's last position) predicts each answer's first token, row 1 + n
            // (tree node n) the tokens after it: one vocabulary projection per row, however many
            // answers continue it.
            let firsts =
                answers.iter().enumerate().filter_map(|(answer, a)| a.first().map(|&token| (answer, 0, token)));
            let later = tree.predicted.iter().map(|&(answer, node, token)| (answer, node + 1, token));
            let (owners, picks): (Vec<usize>, Vec<(usize, u32)>) =
                firsts.chain(later).map(|(answer, row, token)| (answer, (row, token))).unzip();
            let log_probs = picked_log_probs(&self.model.logits(&self.model.final_norm(&rows)?)?, &picks)?;
            let mut scores = vec![0.0; answers.len()];
            for (answer, log_prob) in owners.into_iter().zip(log_probs) {
                scores[answer] += log_prob;
            }
            Ok(scores)
        };
        run().map_err(|e| ModelError::Inference(e.to_string()))
    }

    /// Probabilities of each item's options (its candidates, then "none of these"): the
    /// model's scores over the temperature, plus the adapter's rank prior when it has one.
    pub fn score(&self, items: &[RerankItem]) -> Result<Vec<Vec<f32>>, ModelError> {
        let rows = match self.answer {
            AnswerForm::Letter => self
                .label_logits(items, true)?
                .into_iter()
                .zip(items)
                .map(|(row, item)| row[..labels_for(item.candidates.len()).len()].to_vec())
                .collect(),
            AnswerForm::Name => items
                .iter()
                .map(|item| self.answer_log_probs(&self.suffix_tokens(item)?, &self.option_answer_tokens(item)?, true))
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut calibrated: Vec<f32> = row.iter().map(|l| l / self.temperature).collect();
                add_rank_prior(&mut calibrated, &self.rank_prior);
                softmax(&calibrated)
            })
            .collect())
    }

    /// [`Reranker::score`] spread over the cores, the model server's way: each core takes the
    /// next item and scores it alone on its own stream. Measured on 2 cores (make bench):
    /// padded batches of 8 items per core lose to this (padding, and attention over the
    /// longest prompt); pairs win a little at k = 5 and lose at k = 10.
    pub fn score_on(&self, streams: &Streams, items: &[RerankItem]) -> Result<Vec<Vec<f32>>, ModelError> {
        let chunks: Vec<Vec<usize>> = (0..items.len()).map(|i| vec![i]).collect();
        let scored = streams.run(&chunks, |chunk| self.score(std::slice::from_ref(&items[chunk[0]])))?;
        Ok(scored.into_iter().flatten().collect())
    }

    /// Greedy generation of the answer (at most [`max_answer_tokens`] tokens): the reference
    /// mode scoring is compared with. A name answer that names an option is returned as that
    /// option's label, so that every answer is read the same way.
    pub fn generate(&self, item: &RerankItem) -> Result<String, ModelError> {
        let answer = self.generate_text(item)?;
        Ok(match self.answer {
            AnswerForm::Name => parse_name_answer(&answer, item).map_or(answer, |i| LABELS[i].to_string()),
            AnswerForm::Letter => answer,
        })
    }

    fn generate_text(&self, item: &RerankItem) -> Result<String, ModelError> {
        let max_tokens = max_answer_tokens(self.answer);
        let run = || -> candle_core::Result<String> {
            let suffix = self.suffix_tokens(item).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let tokens = Tensor::new(suffix.as_slice(), self.model.device())?.unsqueeze(0)?;
            let (hidden, mut cache) = self.model.forward(&tokens, Some(&self.prefix))?;
            let mut last = Llama::last_positions(&hidden, &[suffix.len()])?;
            let mut answer = Vec::new();
            for _ in 0..max_tokens {
                let logits = self.model.logits(&self.model.final_norm(&last)?)?.squeeze(0)?;
                let next = argmax(&logits)?;
                if self.stop_ids.contains(&next) {
                    break;
                }
                answer.push(next);
                let token = Tensor::new(&[next], self.model.device())?.unsqueeze(0)?;
                let (hidden, extended) = self.model.forward(&token, Some(&cache))?;
                cache = extended;
                last = Llama::last_positions(&hidden, &[1])?;
            }
            self.tokenizer.decode(&answer, true).map_err(|e| candle_core::Error::Msg(e.to_string()))
        };
        run().map_err(|e| ModelError::Inference(e.to_string()))
    }
}

/// Name answers as a token tree for [`Llama::forward_tree`]: the tokens that predict a later
/// token of some answer (every token but each answer's last), shared by answers that begin
/// alike.
struct AnswerTree {
    tokens: Vec<u32>,
    parents: Vec<Option<usize>>,
    /// (answer, tree node, token): the node whose output predicts that answer's next token.
    predicted: Vec<(usize, usize, u32)>,
}

impl AnswerTree {
    fn of(answers: &[Vec<u32>]) -> AnswerTree {
        let mut tree = AnswerTree { tokens: Vec::new(), parents: Vec::new(), predicted: Vec::new() };
        let mut nodes: std::collections::HashMap<(Option<usize>, u32), usize> = std::collections::HashMap::new();
        for (a, answer) in answers.iter().enumerate() {
            let mut parent = None;
            for pair in answer.windows(2) {
                let node = *nodes.entry((parent, pair[0])).or_insert_with(|| {
                    tree.tokens.push(pair[0]);
                    tree.parents.push(parent);
                    tree.tokens.len() - 1
                });
                tree.predicted.push((a, node, pair[1]));
                parent = Some(node);
            }
        }
        tree
    }
}

/// The KV cache of the instruction prefix every prompt begins with.
fn prefix_cache(model: &Llama, prefix_tokens: &[u32]) -> candle_core::Result<KvCache> {
    let tokens = Tensor::new(prefix_tokens, model.device())?.unsqueeze(0)?;
    Ok(model.forward(&tokens, None)?.1)
}

fn load_tokenizer_json(path: &Path) -> Result<Tokenizer, ModelError> {
    if !path.is_file() {
        return Err(ModelError::Missing(format!("{} does not exist", path.display())));
    }
    Tokenizer::from_file(path).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, ModelError> {
    tokenizer
        .encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| ModelError::Inference(format!("tokenizing: {e}")))
}

#[cfg(test)]
mod tests {
    use super::AnswerTree;

    #[test]
    fn answers_that_begin_alike_share_their_first_tokens() {
        let tree = AnswerTree::of(&[vec![1, 2, 3], vec![1, 2, 4], vec![1, 5], vec![6], vec![]]);
        // 1 and 1-2 are shared; a one-token answer predicts nothing after its first token.
        assert_eq!(tree.tokens, [1, 2]);
        assert_eq!(tree.parents, [None, Some(0)]);
        assert_eq!(tree.predicted, [(0, 0, 2), (0, 1, 3), (1, 0, 2), (1, 1, 4), (2, 0, 5)]);
    }
}
