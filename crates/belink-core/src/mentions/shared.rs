//! Mention dictionaries shared by every session, held once in the model server. A session holds
//! its own dictionary of an ontology (about 0.45 kB a name: 28 MB for MEDIC) unless it would
//! outgrow `belink.max_dictionary_mb` (a UMLS of 10 million names: about 4 GB in every session);
//! then the model server builds it once from the names a session sends, like a trigram index,
//! and detects the mentions of the texts sessions send it. Detection there is the same code
//! as in a session ([`super::detect_mentions`]), with the ontology's span scorer.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::mentions::dictionary::{DictionaryName, MentionDictionary};
use crate::mentions::scorer::SpanScorer;
use crate::mentions::{find_mentions, find_mentions_scored, Mention};

/// Generations kept per ontology, as for trigram indexes: a session whose snapshot still sees
/// the previous one keeps being served while the others move on.
const GENERATIONS_KEPT: usize = 2;

/// Which dictionary a detection uses: the ontology's names at `generation`, of the concepts
/// under `roots` only when some are given (`belink_set_detection_roots`), and its span scorer
/// at version `scorer` when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictionaryKey {
    pub ontology: String,
    pub generation: i64,
    pub roots: Vec<String>,
    pub scorer: Option<i64>,
}

/// The answer to a detection: the mentions of each text, or what the server must be sent first
/// (indices into the request's keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedDetection {
    Mentions(Vec<Vec<Mention>>),
    Missing { dictionaries: Vec<u32>, scorers: Vec<u32> },
}

pub struct LoadedDictionary {
    pub generation: i64,
    pub roots: Vec<String>,
    pub dictionary: MentionDictionary,
    pub names: usize,
    pub build_time: Duration,
    pub loaded_at: Instant,
}

/// The dictionary a connection is receiving.
pub struct DictionaryLoading {
    ontology: String,
    generation: i64,
    roots: Vec<String>,
    names: Vec<DictionaryName>,
    started: Instant,
}

/// An ontology's span scorers by version, the newest first.
type ScorerVersions = Vec<(i64, Arc<SpanScorer>)>;

#[derive(Default)]
pub struct SharedDictionaries {
    dictionaries: RwLock<HashMap<String, Vec<Arc<LoadedDictionary>>>>,
    scorers: RwLock<HashMap<String, ScorerVersions>>,
}

impl SharedDictionaries {
    fn dictionary(&self, key: &DictionaryKey) -> Option<Arc<LoadedDictionary>> {
        let all = self.dictionaries.read().expect("shared dictionary lock");
        all.get(&key.ontology)?.iter().find(|d| d.generation == key.generation && d.roots == key.roots).cloned()
    }

    fn scorer(&self, ontology: &str, version: i64) -> Option<Arc<SpanScorer>> {
        let all = self.scorers.read().expect("shared scorer lock");
        all.get(ontology)?.iter().find(|(v, _)| *v == version).map(|(_, scorer)| scorer.clone())
    }

    /// The mentions of each text by the dictionaries of `keys` (with their scorers when `scored`),
    /// or which dictionaries and scorers are missing.
    pub fn detect(&self, keys: &[DictionaryKey], scored: bool, texts: &[String]) -> SharedDetection {
        let dictionaries: Vec<Option<Arc<LoadedDictionary>>> = keys.iter().map(|k| self.dictionary(k)).collect();
        let scorers: Vec<Option<Arc<SpanScorer>>> = keys
            .iter()
            .map(|k| k.scorer.filter(|_| scored).and_then(|version| self.scorer(&k.ontology, version)))
            .collect();
        let missing_dictionaries: Vec<u32> =
            (0..keys.len()).filter(|&i| dictionaries[i].is_none()).map(|i| i as u32).collect();
        let missing_scorers: Vec<u32> = (0..keys.len())
            .filter(|&i| scored && keys[i].scorer.is_some() && scorers[i].is_none())
            .map(|i| i as u32)
            .collect();
        if !missing_dictionaries.is_empty() || !missing_scorers.is_empty() {
            return SharedDetection::Missing { dictionaries: missing_dictionaries, scorers: missing_scorers };
        }
        let automata: Vec<&MentionDictionary> = dictionaries.iter().flatten().map(|d| &d.dictionary).collect();
        let scorers: Vec<Option<&SpanScorer>> = scorers.iter().map(|s| s.as_deref()).collect();
        SharedDetection::Mentions(
            texts
                .iter()
                .map(|text| match scored {
                    true => find_mentions_scored(text, &automata, &scorers),
                    false => find_mentions(text, &automata),
                })
                .collect(),
        )
    }

    /// Adds a part of a dictionary's names to the connection's dictionary being loaded (`offset`
    /// 0 starts one); the last part builds it. Returns the names received so far. A part out of
    /// order is refused: the session loads again.
    pub fn load_part(
        &self,
        loading: &mut Option<DictionaryLoading>,
        key: &DictionaryKey,
        offset: u64,
        last: bool,
        names: Vec<DictionaryName>,
    ) -> Result<u64, String> {
        if offset == 0 {
            *loading = Some(DictionaryLoading {
                ontology: key.ontology.clone(),
                generation: key.generation,
                roots: key.roots.clone(),
                names: Vec::new(),
                started: Instant::now(),
            });
        }
        let in_order = loading.as_ref().is_some_and(|l| {
            l.ontology == key.ontology
                && l.generation == key.generation
                && l.roots == key.roots
                && l.names.len() as u64 == offset
        });
        if !in_order {
            *loading = None;
            return Err(format!("mention dictionary part at offset {offset} of {} out of order", key.ontology));
        }
        let current = loading.as_mut().expect("checked above");
        current.names.extend(names);
        let received = current.names.len() as u64;
        if last {
            let done = loading.take().expect("checked above");
            // Two sessions that found it missing at once both send it: the second build is
            // skipped (the names were held twice meanwhile, the dictionary is built once).
            if self.dictionary(key).is_none() {
                self.install(done)?;
            }
        }
        Ok(received)
    }

    fn install(&self, done: DictionaryLoading) -> Result<(), String> {
        let names = done.names.len();
        let dictionary =
            MentionDictionary::build(done.names).map_err(|e| format!("ontology \"{}\": {e}", done.ontology))?;
        let loaded = Arc::new(LoadedDictionary {
            generation: done.generation,
            roots: done.roots,
            dictionary,
            names,
            build_time: done.started.elapsed(),
            loaded_at: Instant::now(),
        });
        let mut all = self.dictionaries.write().expect("shared dictionary lock");
        let kept = all.entry(done.ontology).or_default();
        kept.retain(|d| (d.generation, &d.roots) != (loaded.generation, &loaded.roots));
        kept.push(loaded);
        kept.sort_by_key(|d| std::cmp::Reverse(d.generation));
        kept.truncate(GENERATIONS_KEPT);
        Ok(())
    }

    /// Keeps the span scorer of `ontology` at `version` (its stored text).
    pub fn load_scorer(&self, ontology: &str, version: i64, text: &str) -> Result<(), String> {
        let scorer =
            Arc::new(SpanScorer::from_text(text).map_err(|e| format!("the span scorer of \"{ontology}\": {e}"))?);
        let mut all = self.scorers.write().expect("shared scorer lock");
        let kept = all.entry(ontology.to_string()).or_default();
        kept.retain(|(v, _)| *v != version);
        kept.push((version, scorer));
        kept.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
        kept.truncate(GENERATIONS_KEPT);
        Ok(())
    }

    /// Forgets the dictionaries and scorers of `ontology` (dropped): returns how many it held.
    pub fn drop_ontology(&self, ontology: &str) -> u32 {
        let dictionaries = self.dictionaries.write().expect("shared dictionary lock").remove(ontology);
        let scorers = self.scorers.write().expect("shared scorer lock").remove(ontology);
        (dictionaries.map_or(0, |d| d.len()) + scorers.map_or(0, |s| s.len())) as u32
    }

    /// Every dictionary held, with its ontology, for status reports.
    pub fn loaded(&self) -> Vec<(String, Arc<LoadedDictionary>)> {
        let all = self.dictionaries.read().expect("shared dictionary lock");
        let mut out: Vec<(String, Arc<LoadedDictionary>)> =
            all.iter().flat_map(|(o, kept)| kept.iter().map(move |d| (o.clone(), d.clone()))).collect();
        out.sort_by(|a, b| (&a.0, a.1.generation).cmp(&(&b.0, b.1.generation)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::fold;
    use crate::mentions::scorer::{train, Example, Training};

    fn names(list: &[(&str, &str)]) -> Vec<DictionaryName> {
        list.iter()
            .map(|(concept, name)| DictionaryName {
                concept_id: concept.to_string(),
                name: name.to_string(),
                normalized: fold(name),
            })
            .collect()
    }

    fn key(ontology: &str, generation: i64) -> DictionaryKey {
        DictionaryKey { ontology: ontology.into(), generation, roots: Vec::new(), scorer: None }
    }

    const TEXT: &str = "She had seizures and a ventricular septal defect.";

    #[test]
    fn a_dictionary_loaded_in_parts_detects_as_a_sessions_own_would() {
        let shared = SharedDictionaries::default();
        let hpo = key("hpo", 3);
        let texts = vec![TEXT.to_string(), String::new()];
        let missing = SharedDetection::Missing { dictionaries: vec![0], scorers: vec![] };
        assert_eq!(shared.detect(std::slice::from_ref(&hpo), false, &texts), missing);

        let all = names(&[("HP:1", "Seizure"), ("HP:2", "Ventricular septal defect"), ("HP:3", "Septal defect")]);
        let mut loading = None;
        assert_eq!(shared.load_part(&mut loading, &hpo, 0, false, all[..2].to_vec()), Ok(2));
        assert_eq!(shared.detect(std::slice::from_ref(&hpo), false, &texts), missing, "not before the last part");
        assert!(shared.load_part(&mut None, &hpo, 2, true, all[2..].to_vec()).is_err(), "out of order");
        let mut loading = None;
        shared.load_part(&mut loading, &hpo, 0, false, all[..2].to_vec()).unwrap();
        assert_eq!(shared.load_part(&mut loading, &hpo, 2, true, all[2..].to_vec()), Ok(3));
        assert!(loading.is_none());

        let own = MentionDictionary::build(all).unwrap();
        let expected = vec![find_mentions(TEXT, &[&own]), Vec::new()];
        assert_eq!(expected[0].len(), 2);
        assert_eq!(shared.detect(std::slice::from_ref(&hpo), false, &texts), SharedDetection::Mentions(expected));
        // Another generation, or other detection roots, is another dictionary.
        assert!(matches!(shared.detect(&[key("hpo", 4)], false, &texts), SharedDetection::Missing { .. }));
        let rooted = DictionaryKey { roots: vec!["HP:0000118".into()], ..hpo };
        assert!(matches!(shared.detect(&[rooted], false, &texts), SharedDetection::Missing { .. }));
    }

    #[test]
    fn scored_detection_asks_for_the_scorer_version_it_lacks() {
        let shared = SharedDictionaries::default();
        let all = names(&[("HP:1", "Seizure")]);
        let plain = key("hpo", 1);
        shared.load_part(&mut None, &plain, 0, true, all.clone()).unwrap();
        let with_scorer = DictionaryKey { scorer: Some(7), ..plain.clone() };
        let texts = vec![TEXT.to_string()];
        assert_eq!(
            shared.detect(std::slice::from_ref(&with_scorer), true, &texts),
            SharedDetection::Missing { dictionaries: vec![], scorers: vec![0] }
        );
        // Unscored detection does not need it.
        assert!(matches!(
            shared.detect(std::slice::from_ref(&with_scorer), false, &texts),
            SharedDetection::Mentions(_)
        ));
        // A scorer that rejects every span: scored detection through it finds nothing.
        let never = train(&[Example { mention: false, features: vec![1, 2, 3] }], &Training::default(), 0.99);
        assert!(shared.load_scorer("hpo", 7, "not a scorer").is_err());
        shared.load_scorer("hpo", 7, &never.to_text()).unwrap();
        let own = MentionDictionary::build(all).unwrap();
        let expected = vec![find_mentions_scored(TEXT, &[&own], &[Some(&never)])];
        assert!(expected[0].is_empty(), "the scorer rejects what the dictionary finds");
        assert_eq!(shared.detect(&[with_scorer], true, &texts), SharedDetection::Mentions(expected));
        assert_eq!(shared.drop_ontology("hpo"), 2);
        assert!(matches!(shared.detect(&[plain], false, &texts), SharedDetection::Missing { .. }));
    }

    #[test]
    fn a_dictionary_sent_by_two_sessions_at_once_is_built_once() {
        let shared = SharedDictionaries::default();
        let hpo = key("hpo", 5);
        let all = names(&[("HP:1", "Seizure"), ("HP:2", "Ventricular septal defect")]);
        let (mut first, mut second) = (None, None);
        shared.load_part(&mut first, &hpo, 0, false, all[..1].to_vec()).unwrap();
        shared.load_part(&mut second, &hpo, 0, false, all[..1].to_vec()).unwrap();
        shared.load_part(&mut first, &hpo, 1, true, all[1..].to_vec()).unwrap();
        let built = shared.loaded()[0].1.clone();
        assert_eq!(shared.load_part(&mut second, &hpo, 1, true, all[1..].to_vec()), Ok(2));
        assert_eq!(shared.loaded().len(), 1);
        assert!(Arc::ptr_eq(&shared.loaded()[0].1, &built), "the first build serves both");
    }

    #[test]
    fn two_generations_are_kept_per_ontology() {
        let shared = SharedDictionaries::default();
        for generation in [1, 2, 3] {
            shared.load_part(&mut None, &key("hpo", generation), 0, true, names(&[("HP:1", "Seizure")])).unwrap();
        }
        let texts = vec![TEXT.to_string()];
        assert!(matches!(shared.detect(&[key("hpo", 1)], false, &texts), SharedDetection::Missing { .. }));
        assert!(matches!(shared.detect(&[key("hpo", 3)], false, &texts), SharedDetection::Mentions(_)));
        assert_eq!(shared.loaded().len(), 2);
    }
}
