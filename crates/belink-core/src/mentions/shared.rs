//! Mention dictionaries shared by every session, held once in the model server. A session holds
//! its own dictionary of an ontology (about 0.45 kB a name: 28 MB for MEDIC) unless it would
//! outgrow `belink.max_dictionary_mb` (a UMLS of 10 million names: about 4 GB in every session);
//! then the model server builds it once from the names a session sends, like a trigram index,
//! and detects the mentions of the texts sessions send it. Detection there is the same code
//! as in a session ([`super::detect_mentions`]), with the ontology's span scorer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::mentions::dictionary::{DictionaryName, MentionDictionary, ESTIMATED_BYTES_PER_NAME};
use crate::mentions::scorer::SpanScorer;
use crate::mentions::{find_mentions, find_mentions_scored, Mention};

/// Generations kept per ontology, as for trigram indexes: a session whose snapshot still sees
/// the previous one keeps being served while the others move on.
const GENERATIONS_KEPT: usize = 2;

/// How long a connection that is sending a dictionary may go without sending a part before
/// another that waits for it sends it instead (its session was cancelled between two parts,
/// say). Parts come every fraction of a second; the build after the last is not counted.
const SENDER_SILENCE: Duration = Duration::from_secs(60);

/// How often a connection waiting for another's dictionary looks again.
const WAIT_STEP: Duration = Duration::from_millis(500);

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
    /// Bytes of heap the dictionary holds, counted once when it is built (a walk over every
    /// name: not for each status request or limit check).
    pub memory: usize,
    pub build_time: Duration,
    pub loaded_at: Instant,
}

/// What the server answers to a part of a dictionary's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartReply {
    /// The names received so far.
    Received(u64),
    /// The server holds that dictionary already: another session sent it, perhaps while this
    /// one waited at its first part. Send no more.
    Held,
}

/// The dictionary a connection is receiving.
pub struct DictionaryLoading {
    ontology: String,
    generation: i64,
    roots: Vec<String>,
    names: Vec<DictionaryName>,
    started: Instant,
    /// Given up when the load ends or is abandoned (the connection closes, say).
    claim: SendingClaim,
}

/// A dictionary as the registry of senders knows it: ontology, generation, detection roots.
type SendingKey = (String, i64, Vec<String>);

fn sending_key(key: &DictionaryKey) -> SendingKey {
    (key.ontology.clone(), key.generation, key.roots.clone())
}

/// The connection sending a dictionary: when it was last heard from, and whether it is building.
struct Sender {
    claim: u64,
    heard: Instant,
    building: bool,
}

/// The dictionaries connections are sending. A second session that finds a dictionary missing
/// waits for the first to send it instead of sending the same names too: at 10 million names,
/// 2 GB more held in the server while both arrive.
#[derive(Default)]
struct Senders {
    sending: Mutex<HashMap<SendingKey, Sender>>,
    changed: Condvar,
    next_claim: AtomicU64,
}

/// A connection's claim to send a dictionary, given up when its load ends or is abandoned.
struct SendingClaim {
    senders: Arc<Senders>,
    key: SendingKey,
    claim: u64,
}

impl SendingClaim {
    fn update(&self, building: bool) {
        let mut sending = self.senders.sending.lock().expect("dictionary senders lock");
        if let Some(sender) = sending.get_mut(&self.key).filter(|s| s.claim == self.claim) {
            sender.heard = Instant::now();
            sender.building = building;
        }
    }
}

impl Drop for SendingClaim {
    fn drop(&mut self) {
        let mut sending = self.senders.sending.lock().expect("dictionary senders lock");
        if sending.get(&self.key).is_some_and(|s| s.claim == self.claim) {
            sending.remove(&self.key);
        }
        self.senders.changed.notify_all();
    }
}

/// An ontology's span scorers by version, the newest first.
type ScorerVersions = Vec<(i64, Arc<SpanScorer>)>;

#[derive(Default)]
pub struct SharedDictionaries {
    dictionaries: RwLock<HashMap<String, Vec<Arc<LoadedDictionary>>>>,
    scorers: RwLock<HashMap<String, ScorerVersions>>,
    senders: Arc<Senders>,
    /// The most bytes the dictionaries may hold together (`belink.server_dictionaries_mb`).
    limit: Option<usize>,
}

impl SharedDictionaries {
    /// Dictionaries that together hold at most `limit` bytes (None: no limit).
    pub fn with_limit(limit: Option<usize>) -> SharedDictionaries {
        SharedDictionaries { limit, ..SharedDictionaries::default() }
    }

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
    /// 0 starts one); the last part builds it. A part out of order is refused: the session
    /// loads again. At offset 0 the connection claims the dictionary: while another connection
    /// sends it, this waits for it, and answers [`PartReply::Held`] once it is built (or
    /// takes over when that sender gave up or went silent).
    pub fn load_part(
        &self,
        loading: &mut Option<DictionaryLoading>,
        key: &DictionaryKey,
        offset: u64,
        last: bool,
        names: Vec<DictionaryName>,
    ) -> Result<PartReply, String> {
        if offset == 0 {
            // A connection that claimed it already (an empty first part, then the names from 0)
            // keeps its claim.
            let claim = match loading.take().map(|l| l.claim).filter(|c| c.key == sending_key(key)) {
                Some(claim) => claim,
                None => match self.claim(key) {
                    Some(claim) => claim,
                    None => return Ok(PartReply::Held),
                },
            };
            *loading = Some(DictionaryLoading {
                ontology: key.ontology.clone(),
                generation: key.generation,
                roots: key.roots.clone(),
                names: Vec::new(),
                started: Instant::now(),
                claim,
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
        current.claim.update(last);
        let received = current.names.len() as u64;
        if last {
            let done = loading.take().expect("checked above");
            // A sender that was taken over for its silence may still finish: built once.
            if self.dictionary(key).is_none() {
                self.install(done)?;
            }
        }
        Ok(PartReply::Received(received))
    }

    /// Claims the sending of a dictionary, waiting while another connection sends it. None
    /// when the dictionary is held (by then).
    fn claim(&self, key: &DictionaryKey) -> Option<SendingClaim> {
        let senders = &self.senders;
        let sending_key = sending_key(key);
        let mut sending = senders.sending.lock().expect("dictionary senders lock");
        loop {
            if self.dictionary(key).is_some() {
                return None;
            }
            let free = sending.get(&sending_key).is_none_or(|s| !s.building && s.heard.elapsed() > SENDER_SILENCE);
            if free {
                let claim = senders.next_claim.fetch_add(1, Ordering::Relaxed);
                sending.insert(sending_key.clone(), Sender { claim, heard: Instant::now(), building: false });
                return Some(SendingClaim { senders: senders.clone(), key: sending_key, claim });
            }
            sending = senders.changed.wait_timeout(sending, WAIT_STEP).expect("dictionary senders lock").0;
        }
    }

    fn install(&self, done: DictionaryLoading) -> Result<(), String> {
        let names = done.names.len();
        self.make_room(&done.ontology, done.generation, names * ESTIMATED_BYTES_PER_NAME)?;
        let dictionary =
            MentionDictionary::build(done.names).map_err(|e| format!("ontology \"{}\": {e}", done.ontology))?;
        let loaded = Arc::new(LoadedDictionary {
            generation: done.generation,
            roots: done.roots,
            memory: dictionary.memory_usage(),
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

    /// Makes sure a dictionary of about `needed` bytes, of `ontology` at `generation`, fits under
    /// the limit, forgetting for it the ontology's older generations that no detection is using.
    /// Another ontology's dictionary is never forgotten for it: a session would send it again.
    fn make_room(&self, ontology: &str, generation: i64, needed: usize) -> Result<(), String> {
        let Some(limit) = self.limit else { return Ok(()) };
        let mut all = self.dictionaries.write().expect("shared dictionary lock");
        let held = |all: &HashMap<String, Vec<Arc<LoadedDictionary>>>| -> usize {
            all.values().flatten().map(|d| d.memory).sum()
        };
        if held(&all) + needed > limit {
            if let Some(kept) = all.get_mut(ontology) {
                kept.retain(|d| d.generation >= generation || Arc::strong_count(d) > 1);
            }
        }
        let held = held(&all);
        if held + needed <= limit {
            return Ok(());
        }
        let mb = |bytes: usize| bytes.div_ceil(1_000_000);
        Err(format!(
            "the model server cannot hold the mention dictionary of \"{ontology}\" (about {} MB) besides the {} MB of \
             dictionaries it holds: belink.server_dictionaries_mb is {} MB. Raise it (the model server restarts), or \
             drop ontologies no one links against",
            mb(needed),
            mb(held),
            mb(limit)
        ))
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

    /// Two HPO names, the dictionary most tests load.
    fn seizure_and_vsd() -> Vec<DictionaryName> {
        names(&[("HP:1", "Seizure"), ("HP:2", "Ventricular septal defect")])
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
        assert_eq!(shared.load_part(&mut loading, &hpo, 0, false, all[..2].to_vec()), Ok(PartReply::Received(2)));
        assert_eq!(shared.detect(std::slice::from_ref(&hpo), false, &texts), missing, "not before the last part");
        assert!(shared.load_part(&mut None, &hpo, 2, true, all[2..].to_vec()).is_err(), "out of order");
        // Starting again on the same connection keeps its claim to send it.
        shared.load_part(&mut loading, &hpo, 0, false, all[..2].to_vec()).unwrap();
        assert_eq!(shared.load_part(&mut loading, &hpo, 2, true, all[2..].to_vec()), Ok(PartReply::Received(3)));
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
    fn a_second_sender_waits_for_the_first_and_sends_nothing() {
        let shared = Arc::new(SharedDictionaries::default());
        let hpo = key("hpo", 5);
        let all = seizure_and_vsd();
        let mut first = None;
        shared.load_part(&mut first, &hpo, 0, false, all[..1].to_vec()).unwrap();
        let second = {
            let (shared, hpo, part) = (shared.clone(), hpo.clone(), all[..1].to_vec());
            std::thread::spawn(move || shared.load_part(&mut None, &hpo, 0, false, part))
        };
        std::thread::sleep(WAIT_STEP * 2);
        assert!(!second.is_finished(), "the second sender waits while the first sends");
        shared.load_part(&mut first, &hpo, 1, true, all[1..].to_vec()).unwrap();
        assert_eq!(second.join().unwrap(), Ok(PartReply::Held));
        assert_eq!(shared.loaded().len(), 1);
        // Once it is held, a first part is answered at once.
        assert_eq!(shared.load_part(&mut None, &hpo, 0, false, all.clone()), Ok(PartReply::Held));
    }

    #[test]
    fn a_waiting_sender_takes_over_from_one_that_gave_up() {
        let shared = Arc::new(SharedDictionaries::default());
        let hpo = key("hpo", 6);
        let all = seizure_and_vsd();
        let mut first = None;
        shared.load_part(&mut first, &hpo, 0, false, all[..1].to_vec()).unwrap();
        let second = {
            let (shared, hpo, all) = (shared.clone(), hpo.clone(), all.clone());
            std::thread::spawn(move || {
                let mut loading = None;
                let claimed = shared.load_part(&mut loading, &hpo, 0, false, all[..1].to_vec());
                (claimed, shared.load_part(&mut loading, &hpo, 1, true, all[1..].to_vec()))
            })
        };
        std::thread::sleep(WAIT_STEP * 2);
        drop(first.take()); // its connection closed
        assert_eq!(second.join().unwrap(), (Ok(PartReply::Received(1)), Ok(PartReply::Received(2))));
        let texts = vec![TEXT.to_string()];
        assert!(matches!(shared.detect(&[hpo], false, &texts), SharedDetection::Mentions(_)));
    }

    #[test]
    fn under_a_limit_an_unused_older_generation_makes_room_and_what_does_not_fit_is_refused() {
        let two = seizure_and_vsd();
        let built = MentionDictionary::build(two.clone()).unwrap().memory_usage();
        let needed = two.len() * ESTIMATED_BYTES_PER_NAME;
        // Room for one dictionary and the estimate of the next, not for two.
        let shared = SharedDictionaries::with_limit(Some(needed + built / 2));
        shared.load_part(&mut None, &key("hpo", 1), 0, true, two.clone()).unwrap();
        shared.load_part(&mut None, &key("hpo", 2), 0, true, two.clone()).unwrap();
        let held: Vec<i64> = shared.loaded().iter().map(|(_, d)| d.generation).collect();
        assert_eq!(held, [2], "the older generation, unused, made room");

        let refused = shared.load_part(&mut None, &key("medic", 1), 0, true, two.clone()).unwrap_err();
        assert!(refused.contains("\"medic\"") && refused.contains("belink.server_dictionaries_mb"), "{refused}");
        let in_use = shared.dictionary(&key("hpo", 2)).unwrap(); // a detection running
        assert!(shared.load_part(&mut None, &key("hpo", 3), 0, true, two.clone()).is_err());
        drop(in_use);
        shared.load_part(&mut None, &key("hpo", 3), 0, true, two).unwrap();
        assert_eq!(shared.loaded().len(), 1);
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
