//! Linking documents: the mentions found in each, each distinct lookup decided once, and the
//! entities built from the decisions. Mentions left unlinked (NIL) are dropped.

use std::collections::HashMap;

use crate::decision::context::context_window;
use crate::decision::Request;
use crate::error::{Error, ModelServerError, Result};
use crate::interrupts::Ticker;
use crate::mentions::dictionary::MentionDictionary;
use crate::mentions::scorer::SpanScorer;
use crate::mentions::shared::{DictionaryKey, PartReply, SharedDetection};
use crate::mentions::{find_mentions, find_mentions_scored, Mention};
use crate::pipeline::Pipeline;
use crate::ports::{Models, NameStore};
use crate::retrieval::Lexical;
use crate::settings::MentionDetection;

/// One linked entity. Offsets are 0-based characters, end exclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub start: usize,
    pub end: usize,
    pub mention: String,
    pub concept_id: String,
    pub name: String,
    pub ontology: String,
    pub score: f64,
    /// The long form, when the mention is an abbreviation defined in the document.
    pub abbreviation_of: Option<String>,
}

/// Names per part sent to build a shared dictionary: bounds the session's memory while loading.
const SHARED_NAMES_PER_PART: usize = 10_000;
/// Text per detection request to the model server, about (a document goes whole).
const SHARED_DETECTION_BYTES: usize = 4 << 20;

/// An ontology's mention dictionary and span scorer (if it has one).
pub struct OntologyDictionary<'a> {
    pub ontology: &'a str,
    pub dictionary: &'a MentionDictionary,
    pub scorer: Option<&'a SpanScorer>,
}

impl<S: NameStore, M: Models> Pipeline<'_, S, M> {
    /// The entities of every document (None for a None document), found with `dictionaries`.
    pub fn link(&self, docs: &[Option<&str>], dictionaries: &[OntologyDictionary]) -> Result<Vec<Option<Vec<Entity>>>> {
        self.check_lengths(docs)?;
        let automata: Vec<&MentionDictionary> = dictionaries.iter().map(|d| d.dictionary).collect();
        let scorers: Vec<Option<&SpanScorer>> = dictionaries.iter().map(|d| d.scorer).collect();
        let detect = |text: &str| match self.settings.detection {
            MentionDetection::Dictionary => find_mentions(text, &automata),
            MentionDetection::Scored => find_mentions_scored(text, &automata, &scorers),
        };
        let found: Vec<Option<Vec<Mention>>> = docs.iter().map(|doc| doc.map(detect)).collect();
        let ontologies: Vec<&str> = dictionaries.iter().map(|d| d.ontology).collect();
        self.resolve(docs, found, &ontologies)
    }

    /// As [`Self::link`], the mentions detected by the model server's shared dictionaries of
    /// `keys` (see [`crate::mentions::shared`]): those it lacks are sent to it first, from the
    /// store. `too_large` names the ontologies whose dictionary made the call use the server
    /// (the others of the call go with them), for errors.
    pub fn link_shared(
        &self,
        docs: &[Option<&str>],
        keys: &[DictionaryKey],
        too_large: &[&str],
    ) -> Result<Vec<Option<Vec<Entity>>>> {
        self.check_lengths(docs)?;
        let scored = self.settings.detection == MentionDetection::Scored;
        let mut found: Vec<Option<Vec<Mention>>> = docs.iter().map(|d| d.map(|_| Vec::new())).collect();
        let mut batch: Vec<usize> = Vec::new();
        let mut bytes = 0;
        let present: Vec<usize> = (0..docs.len()).filter(|&i| docs[i].is_some()).collect();
        for (n, &i) in present.iter().enumerate() {
            batch.push(i);
            bytes += docs[i].map_or(0, str::len);
            if bytes >= SHARED_DETECTION_BYTES || n + 1 == present.len() {
                let texts: Vec<&str> = batch.iter().filter_map(|&i| docs[i]).collect();
                let detected = self.detect_shared(keys, scored, &texts).map_err(|e| match e {
                    Error::ModelServer(error) => {
                        let names: Vec<String> = too_large.iter().map(|o| format!("\"{o}\"")).collect();
                        Error::SharedDictionary { ontologies: names.join(", "), error }
                    }
                    other => other,
                })?;
                for (&i, mentions) in batch.iter().zip(detected) {
                    found[i] = Some(mentions);
                }
                batch.clear();
                bytes = 0;
            }
        }
        let ontologies: Vec<&str> = keys.iter().map(|k| k.ontology.as_str()).collect();
        self.resolve(docs, found, &ontologies)
    }

    fn check_lengths(&self, docs: &[Option<&str>]) -> Result<()> {
        let limit = self.settings.max_document_chars;
        for doc in docs.iter().flatten() {
            // Bytes bound characters from above: count only when it could matter.
            if doc.len() > limit && doc.chars().count() > limit {
                return Err(Error::LimitExceeded(format!(
                    "a document of {} characters exceeds belink.max_document_chars ({limit})",
                    doc.chars().count()
                )));
            }
        }
        Ok(())
    }

    /// The mentions of `texts` by the server's shared dictionaries, sending it first what it
    /// lacks.
    fn detect_shared(&self, keys: &[DictionaryKey], scored: bool, texts: &[&str]) -> Result<Vec<Vec<Mention>>> {
        let bad_reply = |what: &str| Error::from(ModelServerError::BadReply(what.to_string()));
        let key = |i: u32| keys.get(i as usize).ok_or_else(|| bad_reply("a missing dictionary out of range"));
        for attempt in 0..2 {
            match self.models.detect(keys, scored, texts)? {
                SharedDetection::Mentions(mentions) => {
                    // Spans inside their text and dictionaries of the request: what the entities
                    // and the re-ranker's context windows index with.
                    let inside = |(list, text): (&Vec<Mention>, &&str)| {
                        let chars = || text.chars().count(); // counted only for a text with mentions
                        list.iter().all(|m| m.dictionary < keys.len() && m.start <= m.end)
                            && list.iter().map(|m| m.end).max().is_none_or(|end| end <= chars())
                    };
                    let well_formed = mentions.len() == texts.len() && mentions.iter().zip(texts).all(inside);
                    return if well_formed { Ok(mentions) } else { Err(bad_reply("mentions that match no request")) };
                }
                SharedDetection::Missing { dictionaries, scorers } if attempt == 0 => {
                    for i in dictionaries {
                        self.load_shared_dictionary(key(i)?)?;
                    }
                    for i in scorers {
                        let key = key(i)?;
                        let version = key.scorer.ok_or_else(|| bad_reply("a scorer asked for that has none"))?;
                        let Some(text) = self.store.span_scorer(&key.ontology)? else {
                            return Err(Error::InvalidArgument(format!(
                                "the span scorer of ontology \"{}\" was removed while linking: link again",
                                key.ontology
                            )));
                        };
                        self.models.load_scorer(&key.ontology, version, &text)?;
                    }
                }
                SharedDetection::Missing { .. } => break,
            }
        }
        Err(bad_reply("it still lacks the mention dictionaries it was just sent"))
    }

    fn load_shared_dictionary(&self, key: &DictionaryKey) -> Result<()> {
        // Claimed with an empty part before any name is read: if another session is sending
        // the same dictionary, the server answers once it holds it, and nothing is sent twice.
        if self.models.load_dictionary_part(key, 0, false, Vec::new())? == PartReply::Held {
            return Ok(());
        }
        let (mut offset, mut held) = (0u64, false);
        self.store.detection_names(&key.ontology, &key.roots, SHARED_NAMES_PER_PART, &mut |names, last| {
            if held {
                return Ok(());
            }
            let count = names.len() as u64;
            match self.models.load_dictionary_part(key, offset, last, names)? {
                PartReply::Received(received) if received == offset + count => offset += count,
                PartReply::Received(received) => {
                    return Err(ModelServerError::BadReply(format!(
                        "the server holds {received} names of the dictionary, {} were sent",
                        offset + count
                    ))
                    .into())
                }
                // Its connection lost the claim (a new one after an interrupted request) and
                // another session's dictionary was built meanwhile: nothing more to send.
                PartReply::Held => held = true,
            }
            Ok(())
        })
    }

    /// Decides every mention (each distinct lookup once without re-ranking; with it, once per
    /// document, in the context of its first occurrence) and builds the entities.
    fn resolve(
        &self,
        docs: &[Option<&str>],
        found: Vec<Option<Vec<Mention>>>,
        ontologies: &[&str],
    ) -> Result<Vec<Option<Vec<Entity>>>> {
        let rerank = self.settings.rerank;
        // One sense per discourse: within a document the same words name the same concept
        // (in NCBI-disease's gold, 3 of its 3,329 (abstract, mention text) pairs have two), so
        // the re-ranker is asked once per document, not once per occurrence.
        let mut slot: HashMap<(&str, usize, Option<usize>), usize> = HashMap::new();
        let mut requests: Vec<Request> = Vec::new();
        let mut slots: Vec<Vec<usize>> = Vec::with_capacity(found.len());
        let mut ticker = Ticker::default();
        for (position, (doc, mentions)) in docs.iter().zip(&found).enumerate() {
            let mut mine = Vec::new();
            for mention in mentions.iter().flatten() {
                ticker.step();
                let key = (mention.lookup.as_str(), mention.dictionary, rerank.then_some(position));
                let index = *slot.entry(key).or_insert_with(|| {
                    let context = match (rerank, doc) {
                        (true, Some(text)) => {
                            Some(context_window(text, mention.start, mention.end, self.settings.context_chars))
                        }
                        _ => None,
                    };
                    requests.push(Request {
                        mention: &mention.lookup,
                        context,
                        ontology: Some(ontologies[mention.dictionary]),
                    });
                    requests.len() - 1
                });
                mine.push(index);
            }
            slots.push(mine);
        }
        // Detected mentions are dictionary matches, or spans a few words around one (the span
        // scorer's): exact and dense retrieval rank them.
        let k = if rerank { self.settings.top_k.max(1) } else { 1 };
        let decisions = self.decide(&requests, k, Lexical::ExactOnly)?;
        Ok(found
            .into_iter()
            .zip(slots)
            .map(|(mentions, mine)| {
                mentions.map(|mentions| {
                    mentions
                        .into_iter()
                        .zip(mine)
                        .filter_map(|(m, index)| {
                            ticker.step();
                            let decision = &decisions[index];
                            let best = decision.concept()?;
                            Some(Entity {
                                start: m.start,
                                end: m.end,
                                mention: m.text,
                                concept_id: best.fused.concept_id.clone(),
                                name: best.preferred_name.clone(),
                                ontology: best.fused.ontology.clone(),
                                score: decision.confidence,
                                abbreviation_of: m.abbreviation_of,
                            })
                        })
                        .collect()
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{FakeModels, FakeStore};
    use crate::mentions::scorer::{train, Example, Training};
    use crate::settings::Settings;

    fn medic() -> FakeStore {
        FakeStore::default().with(
            "medic",
            &[
                ("D011125", &["Adenomatous Polyposis Coli", "Familial adenomatous polyposis"]),
                ("D003110", &["Colonic Neoplasms", "Colon cancer"]),
                ("OTHER", &["FAP"]),
            ],
        )
    }

    #[test]
    fn abbreviations_defined_in_the_text_link_to_their_long_forms_concept() {
        let store = medic();
        let models = FakeModels::default();
        let settings = Settings::default();
        let ontologies = store.ontologies(true);
        let dictionary = store.dictionary("medic");
        let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
        let text = "Familial adenomatous polyposis (FAP) leads to colon cancer. FAP is inherited.";
        let linked = pipeline
            .link(
                &[Some(text), None],
                &[OntologyDictionary { ontology: "medic", dictionary: &dictionary, scorer: None }],
            )
            .unwrap();
        assert_eq!(linked[1], None);
        let entities = linked[0].as_ref().unwrap();
        let summary: Vec<(&str, &str, Option<&str>)> = entities
            .iter()
            .map(|e| (e.mention.as_str(), e.concept_id.as_str(), e.abbreviation_of.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("Familial adenomatous polyposis", "D011125", None),
                ("FAP", "D011125", Some("Familial adenomatous polyposis")),
                ("colon cancer", "D003110", None),
                ("FAP", "D011125", Some("Familial adenomatous polyposis")),
            ]
        );
        let first = &entities[0];
        assert_eq!(
            (first.start, first.end, first.name.as_str(), first.score),
            (0, 30, "Adenomatous Polyposis Coli", 1.0)
        );
        assert!(models.embedded.borrow().is_empty(), "mentions decided by exact matches are not embedded");
        assert_eq!(store.exact_calls.get(), 1, "one batch for every distinct lookup");
    }

    fn medic_key(scorer: Option<i64>) -> DictionaryKey {
        DictionaryKey { ontology: "medic".into(), generation: 1, roots: Vec::new(), scorer }
    }

    #[test]
    fn a_shared_dictionary_links_as_the_sessions_own_and_is_sent_once() {
        let store = medic();
        let models = FakeModels::sharing_dictionaries();
        let settings = Settings::default();
        let ontologies = store.ontologies(true);
        let dictionary = store.dictionary("medic");
        let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
        let docs =
            [Some("Familial adenomatous polyposis (FAP) leads to colon cancer. FAP is inherited."), None, Some("")];
        let own = pipeline
            .link(&docs, &[OntologyDictionary { ontology: "medic", dictionary: &dictionary, scorer: None }])
            .unwrap();
        assert_eq!(own[0].as_ref().map(Vec::len), Some(4));
        assert_eq!(pipeline.link_shared(&docs, &[medic_key(None)], &["medic"]).unwrap(), own);
        assert_eq!(models.dictionary_parts_loaded.get(), 2, "the empty claim, then the names in one part");
        assert_eq!(pipeline.link_shared(&docs, &[medic_key(None)], &["medic"]).unwrap(), own);
        assert_eq!(models.dictionary_parts_loaded.get(), 2, "the server keeps it for every session");
        assert_eq!(models.scorers_loaded.get(), 0, "no scorer: none sent");
    }

    #[test]
    fn a_shared_dictionary_detects_with_the_ontologys_scorer() {
        // A scorer that rejects every span.
        let never = train(&[Example { mention: false, features: vec![1, 2, 3] }], &Training::default(), 0.99);
        let mut store = medic();
        store.span_scorers.insert("medic".into(), never.to_text());
        let models = FakeModels::sharing_dictionaries();
        let ontologies = store.ontologies(true);
        let docs = [Some("Colon cancer runs in families.")];
        for (detection, entities) in [(MentionDetection::Dictionary, 1), (MentionDetection::Scored, 0)] {
            let settings = Settings { detection, ..Settings::default() };
            let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
            let linked = pipeline.link_shared(&docs, &[medic_key(Some(3))], &["medic"]).unwrap();
            assert_eq!(linked[0].as_ref().map(Vec::len), Some(entities), "{detection:?}");
        }
        assert_eq!((models.dictionary_parts_loaded.get(), models.scorers_loaded.get()), (2, 1));
    }

    #[test]
    fn without_the_model_server_a_shared_dictionary_is_a_clear_error() {
        let store = medic();
        let models = FakeModels::default();
        let settings = Settings::default();
        let ontologies = store.ontologies(true);
        let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
        // MEDIC's dictionary is too large for a session, HPO's is not but goes with it: the
        // error names the one that is above the limit.
        let hpo = DictionaryKey { ontology: "hpo".into(), ..medic_key(None) };
        let error = pipeline.link_shared(&[Some("colon cancer")], &[medic_key(None), hpo], &["medic"]).unwrap_err();
        assert!(
            matches!(&error, Error::SharedDictionary { error: ModelServerError::NotRunning { .. }, .. }),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("the mention dictionary of \"medic\" is above belink.max_dictionary_mb"),
            "{error}"
        );
        assert!(error.hint().unwrap().contains("raise belink.max_dictionary_mb"));
        assert_eq!(
            pipeline.link_shared(&[None], &[medic_key(None)], &["medic"]).unwrap(),
            [None],
            "no text: nothing asked"
        );
    }

    #[test]
    fn a_document_over_the_limit_is_refused() {
        let store = medic();
        let models = FakeModels::default();
        let settings = Settings { max_document_chars: 10, ..Settings::default() };
        let ontologies = store.ontologies(false);
        let dictionary = store.dictionary("medic");
        let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
        let error = pipeline
            .link(
                &[Some("colon cancer!")],
                &[OntologyDictionary { ontology: "medic", dictionary: &dictionary, scorer: None }],
            )
            .unwrap_err();
        assert_eq!(error.to_string(), "a document of 13 characters exceeds belink.max_document_chars (10)");
        assert!(
            pipeline
                .link(
                    &[Some("ççççççççç")],
                    &[OntologyDictionary { ontology: "medic", dictionary: &dictionary, scorer: None }]
                )
                .is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn reranking_sees_a_mention_once_per_document_in_its_first_context() {
        let store = FakeStore::default().with(
            "medic",
            &[("A", &["Amyloid Neuropathies, Familial", "FAP"]), ("B", &["Adenomatous Polyposis Coli", "FAP"])],
        );
        let mut models = FakeModels::default();
        // "FAP" names two concepts: the re-ranker decides, for its second candidate.
        models.answers.insert("FAP".into(), vec![0.1, 0.9]);
        let settings = Settings { rerank: true, context_chars: 12, ..Settings::default() };
        let ontologies = store.ontologies(false);
        let dictionary = store.dictionary("medic");
        let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
        let linked = pipeline
            .link(
                &[Some("We saw FAP here. And FAP there."), Some("Then FAP again.")],
                &[OntologyDictionary { ontology: "medic", dictionary: &dictionary, scorer: None }],
            )
            .unwrap();
        let linked: Vec<Vec<(usize, &str)>> = linked
            .iter()
            .map(|entities| entities.as_ref().unwrap().iter().map(|e| (e.start, e.concept_id.as_str())).collect())
            .collect();
        let chosen = linked[1][0].1;
        assert_eq!(linked, [vec![(7, chosen), (21, chosen)], vec![(5, chosen)]]);
        let contexts: Vec<Option<String>> = models.reranked.borrow().iter().map(|i| i.context.clone()).collect();
        assert_eq!(contexts, [Some("We saw [FAP] here. And ...".to_string()), Some("Then [FAP] again.".to_string())]);
    }
}
