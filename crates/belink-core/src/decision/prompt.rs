//! The set-wise re-ranking prompt: an instruction, the mention in its context, and the
//! candidate concepts, each with a one-token label, plus a "none of these" option. The
//! instruction prefix is the same for every request, so the model server computes it once.

/// One candidate concept as the prompt shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptCandidate {
    pub name: String,
    pub synonyms: Vec<String>,
    pub definition: Option<String>,
}

/// What the re-ranker decides about: a mention, the text around it, and its candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerankItem {
    pub mention: String,
    /// The text around the mention, the mention marked with [brackets]; None without context.
    pub context: Option<String>,
    pub candidates: Vec<PromptCandidate>,
}

/// The chat format a model was instruction-tuned with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role ... <|im_end|>` (SmolLM2, Qwen2).
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|> ... <|eot_id|>` (Llama 3).
    Llama3,
    /// No chat markup (base models).
    Plain,
}

impl ChatTemplate {
    /// The template a GGUF file's `tokenizer.chat_template` describes.
    pub fn detect(chat_template: Option<&str>) -> ChatTemplate {
        match chat_template {
            Some(t) if t.contains("<|im_start|>") => ChatTemplate::ChatMl,
            Some(t) if t.contains("<|start_header_id|>") => ChatTemplate::Llama3,
            _ => ChatTemplate::Plain,
        }
    }
}

/// Labels, in order: candidates take the first ones, "none of these" the next.
pub const LABELS: [&str; 26] = [
    "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P", "Q", "R", "S", "T", "U", "V", "W",
    "X", "Y", "Z",
];
/// Most candidates one prompt can hold (one label stays for "none of these").
pub const MAX_CANDIDATES: usize = LABELS.len() - 1;

const MAX_NAME_CHARS: usize = 120;
const MAX_SYNONYMS: usize = 3;
/// Synonyms read per candidate (the first by name_id), for the prompt to choose
/// [`MAX_SYNONYMS`] that say something the name and each other do not.
pub const SYNONYMS_READ: usize = 12;
const MAX_SYNONYM_CHARS: usize = 60;
const MAX_DEFINITION_CHARS: usize = 200;

/// The system instruction of every prompt.
pub const INSTRUCTION: &str = "You link biomedical mentions to ontology concepts. You are given a text in which the \
mention is marked with [brackets], the mention, and candidate concepts, each with a letter. Answer with the \
letter of the concept the mention refers to, or with the letter of \"none of these\" when no candidate fits. \
Answer with the letter only.";

/// The part of every prompt that comes before the item: computed once, its KV cache reused.
pub fn shared_prefix(template: ChatTemplate) -> String {
    match template {
        ChatTemplate::ChatMl => {
            format!("<|im_start|>system\n{INSTRUCTION}<|im_end|>\n<|im_start|>user\n")
        }
        ChatTemplate::Llama3 => format!(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{INSTRUCTION}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        ),
        ChatTemplate::Plain => format!("{INSTRUCTION}\n\n"),
    }
}

/// The user turn of an item: context, mention, labelled candidates, "none of these".
pub fn user_message(item: &RerankItem) -> String {
    let mut text = String::new();
    if let Some(context) = &item.context {
        text.push_str(&format!("Text: {}\n", clip(context, 1200)));
    }
    text.push_str(&format!("Mention: {}\nCandidates:\n", clip(&item.mention, MAX_NAME_CHARS)));
    let count = item.candidates.len().min(MAX_CANDIDATES);
    for (label, candidate) in LABELS.iter().zip(&item.candidates[..count]) {
        text.push_str(&format!("{label}. {}", clip(&candidate.name, MAX_NAME_CHARS)));
        let synonyms: Vec<String> =
            telling_synonyms(&candidate.name, &candidate.synonyms).map(|s| clip(s, MAX_SYNONYM_CHARS)).collect();
        if !synonyms.is_empty() {
            text.push_str(&format!(" (also: {})", synonyms.join("; ")));
        }
        if let Some(definition) = candidate.definition.as_deref().filter(|d| !d.trim().is_empty()) {
            text.push_str(&format!(" - {}", clip(definition, MAX_DEFINITION_CHARS)));
        }
        text.push('\n');
    }
    text.push_str(&format!("{}. none of these\nAnswer:", LABELS[count]));
    text
}

/// Up to [`MAX_SYNONYMS`] synonyms, leaving out those made of the same words as the name or an
/// earlier synonym, up to case, order, punctuation and a plural s ("Carcinoma, Skin
/// Appendage" and "Appendage Carcinomas, Skin"): MeSH lists many such permutations, which cost
/// prompt tokens and tell the model nothing.
fn telling_synonyms<'a>(name: &str, synonyms: &'a [String]) -> impl Iterator<Item = &'a String> {
    fn words(text: &str) -> Vec<String> {
        let mut words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| {
                let w = w.to_lowercase();
                match w.strip_suffix('s') {
                    Some(stem) if stem.len() >= 3 && !stem.ends_with('s') => stem.to_string(),
                    _ => w,
                }
            })
            .collect();
        words.sort();
        words
    }
    let mut seen = vec![words(name)];
    synonyms
        .iter()
        .filter(move |s| {
            let bag = words(s);
            let new = !seen.contains(&bag);
            if new {
                seen.push(bag);
            }
            new
        })
        .take(MAX_SYNONYMS)
}

/// The item's part of the prompt, ending where the model writes its answer.
pub fn item_suffix(item: &RerankItem, template: ChatTemplate) -> String {
    let text = user_message(item);
    match template {
        ChatTemplate::ChatMl => format!("{text}<|im_end|>\n<|im_start|>assistant\n"),
        ChatTemplate::Llama3 => format!("{text}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        ChatTemplate::Plain => text,
    }
}

/// The labels of an item's options: one per candidate, then "none of these".
pub fn labels_for(candidates: usize) -> &'static [&'static str] {
    &LABELS[..candidates.min(MAX_CANDIDATES) + 1]
}

/// The option a generated answer names (its first word, when it is one of the `options`
/// labels), or None.
pub fn parse_answer(answer: &str, options: usize) -> Option<usize> {
    let word = answer.trim().trim_start_matches(['(', '[', '*']).split(|c: char| !c.is_ascii_alphabetic()).next()?;
    labels_for(options.saturating_sub(1)).iter().position(|l| *l == word)
}

fn clip(text: &str, max_chars: usize) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}...", text[..i].trim_end()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> RerankItem {
        RerankItem {
            mention: "FAP".into(),
            context: Some("Patients with [FAP] develop adenomas.".into()),
            candidates: vec![
                PromptCandidate {
                    name: "Adenomatous Polyposis Coli".into(),
                    synonyms: vec![
                        "FAP".into(),
                        "Familial adenomatous polyposis".into(),
                        "Adenomatous polyposis coli".into(),
                    ],
                    definition: Some(
                        "A polyposis syndrome due to an autosomal dominant mutation of the APC genes.".into(),
                    ),
                },
                PromptCandidate { name: "Familial Amyloid Polyneuropathy".into(), synonyms: vec![], definition: None },
            ],
        }
    }

    #[test]
    fn chatml_prompt_ends_where_the_answer_starts() {
        let prefix = shared_prefix(ChatTemplate::ChatMl);
        let suffix = item_suffix(&item(), ChatTemplate::ChatMl);
        assert!(prefix.starts_with("<|im_start|>system\n") && prefix.ends_with("<|im_start|>user\n"));
        assert!(suffix.ends_with("<|im_start|>assistant\n"));
        assert!(suffix.contains("Text: Patients with [FAP] develop adenomas.\nMention: FAP\n"));
        assert!(suffix.contains(
            "A. Adenomatous Polyposis Coli (also: FAP; Familial adenomatous polyposis) - A polyposis syndrome"
        ));
        assert!(suffix.contains("\nB. Familial Amyloid Polyneuropathy\nC. none of these\n"));
        assert_eq!(labels_for(2), ["A", "B", "C"]);
    }

    #[test]
    fn the_prefix_does_not_depend_on_the_item() {
        let mut other = item();
        other.mention = "colorectal cancer".into();
        other.candidates.truncate(1);
        for template in [ChatTemplate::ChatMl, ChatTemplate::Llama3, ChatTemplate::Plain] {
            let full_a = format!("{}{}", shared_prefix(template), item_suffix(&item(), template));
            let full_b = format!("{}{}", shared_prefix(template), item_suffix(&other, template));
            assert!(full_a.starts_with(&shared_prefix(template)) && full_b.starts_with(&shared_prefix(template)));
        }
    }

    #[test]
    fn lengths_are_bounded() {
        let mut long = item();
        long.candidates[0].definition = Some("word ".repeat(500));
        long.candidates[0].synonyms = (0..50).map(|i| format!("synonym {i}")).collect();
        long.candidates.extend((0..40).map(|i| PromptCandidate {
            name: format!("c{i}"),
            synonyms: vec![],
            definition: None,
        }));
        let suffix = item_suffix(&long, ChatTemplate::Plain);
        assert!(suffix.contains("Y. c22\nZ. none of these"), "25 candidates at most, then none");
        assert!(suffix.len() < 3000);
        assert!(!suffix.contains("synonym 3"));
    }

    #[test]
    fn synonyms_that_only_reorder_the_name_are_not_shown() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let synonyms = names(&[
            "Appendage Carcinoma, Skin",
            "Carcinomas, Skin Appendage",
            "Sweat gland carcinoma",
            "sweat-gland carcinomas",
            "Adnexal carcinoma",
            "Skin adnexal neoplasm",
            "Adnexal tumor",
        ]);
        let shown: Vec<&String> = telling_synonyms("Carcinoma, Skin Appendage", &synonyms).collect();
        assert_eq!(shown, ["Sweat gland carcinoma", "Adnexal carcinoma", "Skin adnexal neoplasm"]);
        assert_eq!(telling_synonyms("Cystic Fibrosis", &names(&["CF", "cf"])).count(), 1);
        assert_eq!(telling_synonyms("Stress", &names(&["stress"])).count(), 0, "no stem below three letters");
    }

    #[test]
    fn answers_name_an_option() {
        assert_eq!(parse_answer("B", 4), Some(1));
        assert_eq!(parse_answer(" (C) because", 4), Some(2));
        assert_eq!(parse_answer("D. none of these", 4), Some(3));
        assert_eq!(parse_answer("E", 4), None, "beyond the options");
        assert_eq!(parse_answer("The answer", 4), None);
    }

    #[test]
    fn templates_are_recognized() {
        assert_eq!(ChatTemplate::detect(Some("{% for m in messages %}<|im_start|>{{m.role}}")), ChatTemplate::ChatMl);
        assert_eq!(ChatTemplate::detect(Some("<|start_header_id|>")), ChatTemplate::Llama3);
        assert_eq!(ChatTemplate::detect(None), ChatTemplate::Plain);
    }
}
