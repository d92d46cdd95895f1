//! `belink-eval instructions`: set-wise instruction-tuning data for the re-ranker, from an
//! annotated corpus and an ontology loaded in BeLink. Each gold mention becomes one example:
//! the mention in its context and k candidates from BeLink's own retrieval (hard negatives),
//! the gold concept at a random position, or absent in a share of examples (answer: none).
//! With `synonyms`, concepts of the ontology add examples of their own: one of a concept's
//! synonyms plays the mention (without context, as `belink_normalize` sees one), and is not
//! shown among the gold candidate's synonyms.
//! With `uncertain_only`, mentions that retrieval decides alone (a unique exact match: the
//! re-ranker is never asked) are left out.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use belink_core::decision::context::context_window;
use belink_core::decision::prompt::{
    instruction, item_suffix, labels_for, option_names, shared_prefix, user_message, AnswerForm, ChatTemplate,
    PromptCandidate, RerankItem, SYNONYMS_READ,
};
use belink_core::ontology::NameKind;
use belink_eval::corpus::load_corpus;
use postgres::Client;
use serde_json::json;

use crate::db::db_message;
use belink_core::ids::canonical;
use belink_core::random::SeededRandom;

pub struct Options {
    pub k: usize,
    /// Share of examples whose gold concept is left out of the candidates.
    pub absent_share: f64,
    pub seed: u64,
    pub template: ChatTemplate,
    pub context_chars: usize,
    /// Examples drawn from the ontology's synonyms, beyond the corpus's.
    pub synonyms: usize,
    pub uncertain_only: bool,
    /// Where the gold concept of a corpus example goes.
    pub gold_position: GoldPosition,
    /// How the model is to answer: letters, or names (records then carry `option_names`).
    pub answer: AnswerForm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoldPosition {
    /// At a random letter, or left out in `absent_share` of the examples.
    Random,
    /// Where retrieval ranks it: the candidates are the top k in retrieval's order, exactly
    /// what the server shows, and the answer is "none of these" when the gold is not among
    /// them. The model can then learn retrieval's rank as evidence and correct it. Synonym
    /// examples keep random positions (their synonym is in the index: retrieval finds it first).
    Retrieval,
}

/// How many examples were written, and why others were not.
#[derive(Debug, Default)]
pub struct Counts {
    pub written: usize,
    pub from_corpus: usize,
    pub from_synonyms: usize,
    pub gold_absent: usize,
    pub decided_by_retrieval: usize,
}

struct Concept {
    id: String,
    name: String,
    definition: Option<String>,
    /// All its synonyms, in name_id order.
    synonyms: Vec<String>,
    ids: Vec<String>,
}

/// Writes the examples to `out` (JSON lines).
pub fn write_examples(
    client: &mut Client,
    corpus: Option<&Path>,
    ontology: &str,
    out: &Path,
    options: &Options,
) -> Result<Counts, String> {
    let documents = match corpus {
        Some(path) => load_corpus(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let concepts = concepts(client, ontology)?;
    let by_id: HashMap<&str, usize> =
        concepts.iter().enumerate().flat_map(|(i, c)| c.ids.iter().map(move |id| (id.as_str(), i))).collect();
    let mut random = SeededRandom::new(options.seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?);
    let mut counts = Counts::default();
    let mut writer = Writer { client, ontology, options, concepts: &concepts, by_id: &by_id, file: &mut file };
    for document in &documents {
        for mention in &document.mentions {
            let gold_ids: Vec<String> = mention.concept_ids().iter().map(|id| canonical(id)).collect();
            let [gold_id] = &gold_ids[..] else { continue }; // one concept per example
            let Some(&gold) = by_id.get(gold_id.as_str()) else { continue };
            let context = context_window(&document.text, mention.start, mention.end, options.context_chars);
            let example = Example { mention: &mention.text, context: Some(context), gold, hidden_synonym: None };
            writer.write(&example, &document.id, &mut random, &mut counts)?;
        }
    }
    counts.from_corpus = counts.written;
    // Synonym examples: concepts in a random order, one synonym each.
    let mut order: Vec<usize> = (0..concepts.len()).filter(|&c| !concepts[c].synonyms.is_empty()).collect();
    random.shuffle(&mut order);
    for &c in &order {
        if counts.written - counts.from_corpus >= options.synonyms {
            break;
        }
        let synonym = &concepts[c].synonyms[random.below(concepts[c].synonyms.len())];
        let example = Example { mention: synonym, context: None, gold: c, hidden_synonym: Some(synonym) };
        writer.write(&example, "synonyms", &mut random, &mut counts)?;
    }
    counts.from_synonyms = counts.written - counts.from_corpus;
    file.flush().map_err(|e| e.to_string())?;
    Ok(counts)
}

struct Example<'a> {
    mention: &'a str,
    context: Option<String>,
    gold: usize,
    /// A synonym of the gold concept not shown in its candidate (it plays the mention).
    hidden_synonym: Option<&'a str>,
}

struct Writer<'a, W: Write> {
    client: &'a mut Client,
    ontology: &'a str,
    options: &'a Options,
    concepts: &'a [Concept],
    by_id: &'a HashMap<&'a str, usize>,
    file: &'a mut W,
}

impl<W: Write> Writer<'_, W> {
    fn write(
        &mut self,
        example: &Example,
        source: &str,
        random: &mut SeededRandom,
        counts: &mut Counts,
    ) -> Result<(), String> {
        let (options, concepts) = (self.options, self.concepts);
        let rows = self
            .client
            .query(
                "SELECT concept_id, exact_rank FROM belink_candidates($1, $2, $3)",
                &[&example.mention, &self.ontology, &((options.k + 1) as i32)],
            )
            .map_err(|e| format!("belink_candidates({:?}): {}", example.mention, db_message(&e)))?;
        let exact = rows.iter().filter(|r| r.get::<_, Option<i32>>(1) == Some(1)).count();
        if options.uncertain_only && exact == 1 && example.hidden_synonym.is_none() {
            counts.decided_by_retrieval += 1;
            return Ok(());
        }
        let mut retrieved: Vec<usize> =
            rows.iter().filter_map(|r| self.by_id.get(canonical(&r.get::<_, String>(0)).as_str()).copied()).collect();
        retrieved.dedup();
        let (chosen, answer) = if options.gold_position == GoldPosition::Retrieval && example.hidden_synonym.is_none() {
            let chosen: Vec<usize> = retrieved.into_iter().take(options.k).collect();
            let answer = chosen.iter().position(|&c| c == example.gold).unwrap_or(chosen.len());
            (chosen, answer)
        } else {
            let negatives = retrieved.into_iter().filter(|&c| c != example.gold);
            let leave_out = random.chance(options.absent_share);
            let mut chosen: Vec<usize> = negatives.take(if leave_out { options.k } else { options.k - 1 }).collect();
            if leave_out {
                let none = chosen.len();
                (chosen, none)
            } else {
                let position = random.below(chosen.len() + 1);
                chosen.insert(position, example.gold);
                (chosen, position)
            }
        };
        let gold_present = answer < chosen.len();
        if !gold_present {
            counts.gold_absent += 1;
        }
        let item = RerankItem {
            mention: example.mention.to_string(),
            context: example.context.clone(),
            candidates: chosen
                .iter()
                .map(|&c| PromptCandidate {
                    name: concepts[c].name.clone(),
                    synonyms: concepts[c]
                        .synonyms
                        .iter()
                        .filter(|s| c != example.gold || Some(s.as_str()) != example.hidden_synonym)
                        .take(SYNONYMS_READ)
                        .cloned()
                        .collect(),
                    definition: concepts[c].definition.clone(),
                })
                .collect(),
        };
        let labels = labels_for(item.candidates.len());
        let form = options.answer;
        let names = option_names(&item);
        let reply = match form {
            AnswerForm::Letter => labels[answer],
            AnswerForm::Name => names[answer].as_str(),
        };
        let mut record = json!({
            "prompt": format!("{}{}", shared_prefix(options.template, form), item_suffix(&item, options.template, form)),
            "answer": labels[answer],
            "options": labels.len(),
            "messages": [
                {"role": "system", "content": instruction(form)},
                {"role": "user", "content": user_message(&item, form)},
                {"role": "assistant", "content": reply},
            ],
            "gold": concepts[example.gold].id,
            "gold_present": gold_present,
            "source": source,
        });
        if form == AnswerForm::Name {
            record["option_names"] = json!(names);
        }
        writeln!(self.file, "{record}").map_err(|e| e.to_string())?;
        counts.written += 1;
        Ok(())
    }
}

fn concepts(client: &mut Client, ontology: &str) -> Result<Vec<Concept>, String> {
    let rows = client
        .query(
            "SELECT c.concept_id, c.name, c.definition, c.alt_ids,
                    ARRAY(SELECT n.name FROM belink.names n WHERE n.ontology = c.ontology AND n.concept_id = c.concept_id
                          AND n.kind = ANY($2) ORDER BY n.name_id)
             FROM belink.concepts c WHERE c.ontology = $1 AND NOT c.obsolete",
            &[&ontology, &NameKind::texts(&NameKind::PROMPT_SYNONYMS)],
        )
        .map_err(|e| db_message(&e))?;
    Ok(rows
        .iter()
        .map(|row| {
            let id: String = row.get(0);
            let alt: Vec<String> = row.get(3);
            Concept {
                ids: std::iter::once(canonical(&id)).chain(alt.iter().map(|a| canonical(a))).collect(),
                id,
                name: row.get(1),
                definition: row.get(2),
                synonyms: row.get(4),
            }
        })
        .collect())
}
