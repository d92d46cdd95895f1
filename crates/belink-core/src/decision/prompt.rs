//! The set-wise re-ranking prompt: an instruction, the mention in its context, and the
//! candidate concepts, plus a "none of these" option. The instruction prefix is the same for
//! every request, so the model server computes it once.
//!
//! Two answer forms. With letters, each option has a one-token label and one forward pass
//! scores them all. With names, the model answers with the option's name, and each option is
//! scored by the probability of its name (one more short pass over the options): SmolLM2-135M
//! learns to answer with names from a few hundred examples, where it stayed at chance with
//! letters after thousands (BENCHMARKS.md).

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
    /// `<start_of_turn>role ... <end_of_turn>`, no system turn (Gemma; its base models know
    /// the markup's tokens, which a tuned adapter learns to use).
    Gemma,
    /// No chat markup (base models).
    Plain,
}

impl ChatTemplate {
    /// Every template (training tools recognize a prompt's by its prefix).
    pub const ALL: [ChatTemplate; 4] =
        [ChatTemplate::ChatMl, ChatTemplate::Llama3, ChatTemplate::Gemma, ChatTemplate::Plain];

    /// The template a GGUF file's `tokenizer.chat_template` describes; without one, Gemma's
    /// when the vocabulary has its turn token (`has_token`), else none.
    pub fn detect(chat_template: Option<&str>, has_token: impl Fn(&str) -> bool) -> ChatTemplate {
        match chat_template {
            Some(t) if t.contains("<|im_start|>") => ChatTemplate::ChatMl,
            Some(t) if t.contains("<|start_header_id|>") => ChatTemplate::Llama3,
            Some(t) if t.contains("<start_of_turn>") => ChatTemplate::Gemma,
            None if has_token("<start_of_turn>") => ChatTemplate::Gemma,
            _ => ChatTemplate::Plain,
        }
    }
}

/// How the re-ranker answers (a property of the adapter it was trained as).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerForm {
    /// The option's letter: one token, scored in the prompt's own pass.
    Letter,
    /// The option's name as its line shows it, or "none of these".
    Name,
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
pub fn instruction(form: AnswerForm) -> &'static str {
    match form {
        AnswerForm::Letter => {
            "You link biomedical mentions to ontology concepts. You are given a text in which the mention is \
             marked with [brackets], the mention, and candidate concepts, each with a letter. Answer with the \
             letter of the concept the mention refers to, or with the letter of \"none of these\" when no \
             candidate fits. Answer with the letter only."
        }
        AnswerForm::Name => {
            "You link biomedical mentions to ontology concepts. You are given a text in which the mention is \
             marked with [brackets], the mention, and candidate concepts, one per line. Answer with the name of \
             the concept the mention refers to, as written first on its line, or with \"none of these\" when \
             no candidate fits. Answer with the name only."
        }
    }
}

/// The answer of the "none of these" option in the name form.
pub const NONE_OF_THESE: &str = "none of these";

/// The part of every prompt that comes before the item: computed once, its KV cache reused.
pub fn shared_prefix(template: ChatTemplate, form: AnswerForm) -> String {
    let instruction = instruction(form);
    match template {
        ChatTemplate::ChatMl => {
            format!("<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n")
        }
        ChatTemplate::Llama3 => format!(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{instruction}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        ),
        ChatTemplate::Gemma => format!("<bos><start_of_turn>user\n{instruction}\n\n"),
        ChatTemplate::Plain => format!("{instruction}\n\n"),
    }
}

/// The user turn of an item: context, mention, the candidates (labelled in the letter form,
/// one per line after "- " in the name form), "none of these".
pub fn user_message(item: &RerankItem, form: AnswerForm) -> String {
    let mut text = String::new();
    if let Some(context) = &item.context {
        text.push_str(&format!("Text: {}\n", clip(context, 1200)));
    }
    text.push_str(&format!("Mention: {}\nCandidates:\n", clip(&item.mention, MAX_NAME_CHARS)));
    let count = item.candidates.len().min(MAX_CANDIDATES);
    let bullet = |index: usize| match form {
        AnswerForm::Letter => format!("{}. ", LABELS[index]),
        AnswerForm::Name => "- ".to_string(),
    };
    for (index, candidate) in item.candidates[..count].iter().enumerate() {
        text.push_str(&format!("{}{}", bullet(index), clip(&candidate.name, MAX_NAME_CHARS)));
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
    text.push_str(&format!("{}{NONE_OF_THESE}\nAnswer:", bullet(count)));
    text
}

/// The name form's answer of each option, as the prompt shows it: each candidate's name,
/// then "none of these".
pub fn option_names(item: &RerankItem) -> Vec<String> {
    let count = item.candidates.len().min(MAX_CANDIDATES);
    item.candidates[..count].iter().map(|c| clip(&c.name, MAX_NAME_CHARS)).chain([NONE_OF_THESE.to_string()]).collect()
}

/// What ends the assistant's answer in a template: an option's name is scored up to it, so
/// that a name is not taken for the beginning of a longer one.
pub fn answer_end(template: ChatTemplate) -> &'static str {
    match template {
        ChatTemplate::ChatMl => "<|im_end|>",
        ChatTemplate::Llama3 => "<|eot_id|>",
        ChatTemplate::Gemma => "<end_of_turn>",
        ChatTemplate::Plain => "\n",
    }
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
pub fn item_suffix(item: &RerankItem, template: ChatTemplate, form: AnswerForm) -> String {
    let text = user_message(item, form);
    match template {
        ChatTemplate::ChatMl => format!("{text}<|im_end|>\n<|im_start|>assistant\n"),
        ChatTemplate::Llama3 => format!("{text}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        ChatTemplate::Gemma => format!("{text}<end_of_turn>\n<start_of_turn>model\n"),
        ChatTemplate::Plain => text,
    }
}

/// The labels of an item's options: one per candidate, then "none of these".
pub fn labels_for(candidates: usize) -> &'static [&'static str] {
    &LABELS[..candidates.min(MAX_CANDIDATES) + 1]
}

/// The option a generated letter answer names (its first word, when it is one of the
/// `options` labels), or None.
pub fn parse_answer(answer: &str, options: usize) -> Option<usize> {
    let word = answer.trim().trim_start_matches(['(', '[', '*']).split(|c: char| !c.is_ascii_alphabetic()).next()?;
    labels_for(options.saturating_sub(1)).iter().position(|l| *l == word)
}

/// The option a generated name answer names (an option's name, up to case and surrounding
/// blanks), or None.
pub fn parse_name_answer(answer: &str, item: &RerankItem) -> Option<usize> {
    let answer = answer.trim();
    option_names(item).iter().position(|name| name.eq_ignore_ascii_case(answer))
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
        let prefix = shared_prefix(ChatTemplate::ChatMl, AnswerForm::Letter);
        let suffix = item_suffix(&item(), ChatTemplate::ChatMl, AnswerForm::Letter);
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
    fn gemma_prompt_is_one_user_turn_then_the_model_turn() {
        // Gemma has no system turn: the instruction opens the user's, after the <bos> it needs.
        let prefix = shared_prefix(ChatTemplate::Gemma, AnswerForm::Name);
        let suffix = item_suffix(&item(), ChatTemplate::Gemma, AnswerForm::Name);
        assert_eq!(prefix, format!("<bos><start_of_turn>user\n{}\n\n", instruction(AnswerForm::Name)));
        assert!(suffix.starts_with("Text: Patients with [FAP] develop adenomas.\nMention: FAP\n"));
        assert!(suffix.ends_with("- none of these\nAnswer:<end_of_turn>\n<start_of_turn>model\n"));
        assert_eq!(answer_end(ChatTemplate::Gemma), "<end_of_turn>");
    }

    #[test]
    fn the_prefix_does_not_depend_on_the_item() {
        let mut other = item();
        other.mention = "colorectal cancer".into();
        other.candidates.truncate(1);
        for template in ChatTemplate::ALL {
            for form in [AnswerForm::Letter, AnswerForm::Name] {
                let prefix = shared_prefix(template, form);
                let full_a = format!("{prefix}{}", item_suffix(&item(), template, form));
                let full_b = format!("{prefix}{}", item_suffix(&other, template, form));
                assert!(full_a.starts_with(&prefix) && full_b.starts_with(&prefix));
            }
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
        let suffix = item_suffix(&long, ChatTemplate::Plain, AnswerForm::Letter);
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
    fn the_name_form_lists_names_and_scores_them_up_to_the_end_of_the_turn() {
        let prefix = shared_prefix(ChatTemplate::ChatMl, AnswerForm::Name);
        assert!(prefix.contains(
            "candidate concepts, one per line. Answer with the name of the concept the mention \
                                 refers to, as written first on its line, or with \"none of these\" when no \
                                 candidate fits. Answer with the name only.<|im_end|>"
        ));
        let suffix = item_suffix(&item(), ChatTemplate::ChatMl, AnswerForm::Name);
        assert!(suffix
            .contains("Candidates:\n- Adenomatous Polyposis Coli (also: FAP; Familial adenomatous polyposis) - A"));
        assert!(suffix.ends_with(
            "\n- Familial Amyloid Polyneuropathy\n- none of these\nAnswer:<|im_end|>\n<|im_start|>assistant\n"
        ));
        assert_eq!(
            option_names(&item()),
            ["Adenomatous Polyposis Coli", "Familial Amyloid Polyneuropathy", "none of these"]
        );
        assert_eq!(answer_end(ChatTemplate::ChatMl), "<|im_end|>");
        assert_eq!(parse_name_answer(" familial amyloid polyneuropathy\n", &item()), Some(1));
        assert_eq!(parse_name_answer("None of these", &item()), Some(2));
        assert_eq!(parse_name_answer("Polyposis", &item()), None, "a part of a name is no answer");
    }

    #[test]
    fn the_instructions_are_the_ones_the_adapters_were_trained_with() {
        // The shipped adapter (make train-reranker) answers with names; a changed instruction
        // needs a new adapter.
        assert_eq!(
            instruction(AnswerForm::Name),
            "You link biomedical mentions to ontology concepts. You are given a text in which the mention is marked \
             with [brackets], the mention, and candidate concepts, one per line. Answer with the name of the concept \
             the mention refers to, as written first on its line, or with \"none of these\" when no candidate fits. \
             Answer with the name only."
        );
        assert_eq!(
            instruction(AnswerForm::Letter),
            "You link biomedical mentions to ontology concepts. You are given a text in which the mention is marked \
             with [brackets], the mention, and candidate concepts, each with a letter. Answer with the letter of the \
             concept the mention refers to, or with the letter of \"none of these\" when no candidate fits. Answer \
             with the letter only."
        );
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
        let none = |_: &str| false;
        let gemma_vocabulary = |token: &str| token == "<start_of_turn>";
        assert_eq!(
            ChatTemplate::detect(Some("{% for m in messages %}<|im_start|>{{m.role}}"), none),
            ChatTemplate::ChatMl
        );
        assert_eq!(ChatTemplate::detect(Some("<|start_header_id|>"), none), ChatTemplate::Llama3);
        assert_eq!(ChatTemplate::detect(Some("{{ '<start_of_turn>' + role }}"), none), ChatTemplate::Gemma);
        assert_eq!(ChatTemplate::detect(None, gemma_vocabulary), ChatTemplate::Gemma, "a Gemma base model");
        assert_eq!(ChatTemplate::detect(None, none), ChatTemplate::Plain);
        // A template of its own wins over the vocabulary.
        assert_eq!(ChatTemplate::detect(Some("{{ messages }}"), gemma_vocabulary), ChatTemplate::Plain);
    }
}
