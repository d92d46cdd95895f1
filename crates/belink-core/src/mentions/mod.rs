//! From raw text to the mentions to link: dictionary detection in every ontology asked for,
//! abbreviations resolved to their long forms, overlaps settled. Retrieval and the choice of
//! the concept come next (see [`crate::link`]).

pub mod abbreviations;
pub mod dictionary;
pub mod scorer;
pub mod shared;
mod variants;
mod word_bags;

use std::collections::HashMap;

use crate::fold::{tokenize, Token};
use crate::interrupts::Ticker;
use crate::mentions::abbreviations::find_abbreviations;
use crate::mentions::dictionary::{resolve_overlaps, Detection, MentionDictionary};
use crate::mentions::scorer::{features, reshapings, Context, Origin, SpanScorer};
use crate::mentions::variants::{gaps, Gap};

/// Whether `chars[start..end]` is not part of a longer run of letters and digits.
pub(crate) fn whole_token(chars: &[char], start: usize, end: usize) -> bool {
    let outside = |i: Option<usize>| i.and_then(|i| chars.get(i)).is_none_or(|c| !c.is_alphanumeric());
    outside(start.checked_sub(1)) && outside(Some(end))
}

/// A mention found in a document, ready for candidate retrieval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// Character span in the document, end exclusive.
    pub start: usize,
    pub end: usize,
    /// The text as written.
    pub text: String,
    /// What retrieval searches for: the text, or the long form of an abbreviation.
    pub lookup: String,
    /// Index of the dictionary (ontology) that detected it.
    pub dictionary: usize,
    /// Concept ids whose names matched exactly.
    pub matched_concepts: Vec<String>,
    /// The long form, when the mention is an abbreviation defined in the document.
    pub abbreviation_of: Option<String>,
}

/// Whether a mention inside another is reported too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// Only the mentions left once overlaps are settled ("ulcerative colitis").
    Outermost,
    /// Also the dictionary's detections inside them that name other concepts ("colitis" in
    /// "ulcerative colitis"), as corpora annotated with every concept mentioned want (GSC+).
    Inner,
}

/// The mentions of `text` found by `dictionaries` (one per ontology), left to right, overlaps
/// settled leftmost-longest.
pub fn find_mentions(text: &str, dictionaries: &[&MentionDictionary]) -> Vec<Mention> {
    detect_mentions(text, dictionaries, None, Nesting::Outermost)
}

/// The mentions of `text`, chosen among the dictionary's detections and the spans around them
/// by each dictionary's scorer (`scorers[d]` for `dictionaries[d]`, see [`scorer`]), left to
/// right. A dictionary without a scorer keeps its leftmost-longest detections, and these win
/// over scored spans they overlap: without a scorer, this is [`find_mentions`].
pub fn find_mentions_scored(
    text: &str,
    dictionaries: &[&MentionDictionary],
    scorers: &[Option<&SpanScorer>],
) -> Vec<Mention> {
    detect_mentions(text, dictionaries, Some(scorers), Nesting::Outermost)
}

/// The mentions of `text`: settled by the scorers when `scorers` is given
/// ([`find_mentions_scored`]), else leftmost-longest ([`find_mentions`]), with the mentions
/// inside them when `nesting` asks for them; ordered by start, a mention before those inside it.
pub fn detect_mentions(
    text: &str,
    dictionaries: &[&MentionDictionary],
    scorers: Option<&[Option<&SpanScorer>]>,
    nesting: Nesting,
) -> Vec<Mention> {
    let detected = Detected::find(text, dictionaries);
    // Settling consumes the detections: the inner mentions are looked for in a copy.
    let every_detection = (nesting == Nesting::Inner).then(|| Detected {
        dictionaries,
        chars: detected.chars.clone(),
        tokens: Vec::new(),
        found: detected.found.clone(),
    });
    let outer = match scorers {
        Some(scorers) => detected.settle_by_score(scorers),
        None => detected.settle_by_position(),
    };
    match every_detection {
        Some(every_detection) => with_inner_mentions(outer, &every_detection),
        None => outer,
    }
}

/// `outer` and, for each of them, the detections strictly inside it whose concepts it does not
/// name (one per span): "colitis" in "ulcerative colitis", "cataract" in "cortical cataract".
fn with_inner_mentions(outer: Vec<Mention>, detected: &Detected) -> Vec<Mention> {
    // Outer mentions never overlap, but the conjuncts of a coordination share a span: one entry
    // per span, with every concept its mentions name, in order of start.
    let mut containers: Vec<(usize, usize, Vec<&str>)> = Vec::new();
    for m in &outer {
        match containers.last_mut() {
            Some((start, end, concepts)) if (*start, *end) == (m.start, m.end) => {
                concepts.extend(m.matched_concepts.iter().map(String::as_str))
            }
            _ => containers.push((m.start, m.end, m.matched_concepts.iter().map(String::as_str).collect())),
        }
    }
    containers.sort_by_key(|&(start, ..)| start);
    let mut ticker = Ticker::default();
    let mut inner: Vec<Mention> = Vec::new();
    let mut spans: std::collections::HashSet<(usize, usize)> = outer.iter().map(|m| (m.start, m.end)).collect();
    for (i, (detection, ..)) in detected.found.iter().enumerate() {
        ticker.step();
        let before = containers.partition_point(|&(start, ..)| start <= detection.start);
        let Some((_, end, concepts)) = before.checked_sub(1).map(|c| &containers[c]) else { continue };
        if detection.end > *end || spans.contains(&(detection.start, detection.end)) {
            continue;
        }
        let mention = detected.mention(i);
        if mention.matched_concepts.iter().any(|c| !concepts.contains(&c.as_str())) {
            spans.insert((mention.start, mention.end));
            inner.push(mention);
        }
    }
    let mut all = outer;
    all.extend(inner);
    all.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    all
}

/// Every span the scorer would weigh in `text`, with its features: what training reads.
pub fn span_candidates(text: &str, dictionaries: &[&MentionDictionary]) -> Vec<SpanCandidate> {
    let detected = Detected::find(text, dictionaries);
    let gaps = gaps(&detected.chars, &detected.tokens);
    let context = Context { chars: &detected.chars, tokens: &detected.tokens, gaps: &gaps };
    detected
        .candidates(&gaps, |_| true)
        .into_iter()
        .map(|c| SpanCandidate {
            start: detected.tokens[c.first].start,
            end: detected.tokens[c.last].end,
            features: features(&context, c.first, c.last, c.origin),
        })
        .collect()
}

/// A span the scorer weighs (characters, end exclusive).
pub struct SpanCandidate {
    pub start: usize,
    pub end: usize,
    pub features: Vec<u32>,
}

/// Every detection of a text in every dictionary, abbreviations resolved, overlaps not yet
/// settled.
struct Detected<'a> {
    dictionaries: &'a [&'a MentionDictionary],
    chars: Vec<char>,
    tokens: Vec<Token>,
    /// (detection, dictionary, long form)
    found: Vec<(Detection, usize, Option<String>)>,
}

/// A span to weigh, in tokens: a detection's, or one reshaped from it.
struct Candidate {
    first: usize,
    last: usize,
    dictionary: usize,
    /// The detections with exactly this span (none for a reshaped span).
    detections: Vec<usize>,
    origin: Origin,
}

impl<'a> Detected<'a> {
    fn find(text: &str, dictionaries: &'a [&'a MentionDictionary]) -> Detected<'a> {
        let chars: Vec<char> = text.chars().collect();
        let tokens = tokenize(text);
        let mut found: Vec<(Detection, usize, Option<String>)> = Vec::new();
        for (d, dictionary) in dictionaries.iter().enumerate() {
            found.extend(dictionary.find_all(&chars, &tokens).into_iter().map(|m| (m, d, None)));
        }

        // An abbreviation whose long form is a detected mention: every use of its short form is
        // that mention again (looked up by the long form), whatever the short form alone matches.
        // Detections are indexed by span and by end, so that this stays linear in the text.
        let abbreviations = find_abbreviations(text);
        let mut alive = vec![true; found.len()];
        let mut by_span: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
        let mut by_end: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut ticker = Ticker::default();
        if !abbreviations.is_empty() {
            for (i, (m, ..)) in found.iter().enumerate() {
                ticker.step();
                by_span.entry((m.start, m.end)).or_default().push(i);
                by_end.entry(m.end).or_default().push(i);
            }
        }
        for abbreviation in abbreviations {
            // The mention the long form is: the shortest detection that holds all of it and
            // starts with the short form's first letter ("Hereditary hyperparathyroidism-jaw
            // tumor syndrome (HPT-JT)", where Schwartz & Hearst's letters start at
            // "hyperparathyroidism"; not "deficiency of aspartoacylase (ASPA)"), else the
            // longest inside it.
            let (long_start, long_end) = abbreviation.long_span;
            let short_first = abbreviation.short_form.chars().find(|c| c.is_alphanumeric());
            let starts_like_the_short_form =
                |start: usize| short_first.is_some_and(|c| c.to_lowercase().eq(chars[start].to_lowercase()));
            let defining = by_end
                .get(&long_end)
                .into_iter()
                .flatten()
                .copied()
                .filter(|&i| {
                    alive[i] && (found[i].0.start >= long_start || starts_like_the_short_form(found[i].0.start))
                })
                .min_by_key(|&i| {
                    let start = found[i].0.start;
                    if start <= long_start {
                        (0, long_start - start)
                    } else {
                        (1, start)
                    }
                });
            let Some(defining) = defining else { continue };
            let (definition, dictionary) = (found[defining].0.clone(), found[defining].1);
            let lookup =
                definition.lookup.clone().unwrap_or_else(|| chars[definition.start..definition.end].iter().collect());
            for use_span in &abbreviation.uses {
                for &i in by_span.get(use_span).into_iter().flatten() {
                    alive[i] = false;
                }
            }
            for &(start, end) in &abbreviation.uses {
                ticker.step();
                let i = found.len();
                found.push((
                    Detection {
                        start,
                        end,
                        names: definition.names.clone(),
                        lookup: Some(lookup.clone()),
                        coordinated: false,
                    },
                    dictionary,
                    Some(abbreviation.long_form.clone()),
                ));
                alive.push(true);
                by_span.entry((start, end)).or_default().push(i);
                by_end.entry(end).or_default().push(i);
            }
        }
        let found = found.into_iter().zip(alive).filter_map(|(f, alive)| alive.then_some(f)).collect();
        Detected { dictionaries, chars, tokens, found }
    }

    /// Overlaps settled leftmost-longest, across dictionaries.
    fn settle_by_position(self) -> Vec<Mention> {
        let indexed: Vec<Detection> = self
            .found
            .iter()
            .enumerate()
            .map(|(i, (m, ..))| Detection {
                start: m.start,
                end: m.end,
                names: vec![i],
                lookup: m.lookup.clone(),
                coordinated: m.coordinated,
            })
            .collect();
        let mut ticker = Ticker::default();
        resolve_overlaps(indexed)
            .into_iter()
            .map(|kept| {
                ticker.step();
                self.mention(kept.names[0])
            })
            .collect()
    }

    /// The most probable non-overlapping candidates above their scorer's threshold; an
    /// unscored dictionary's leftmost-longest detections count as certain.
    fn settle_by_score(mut self, scorers: &[Option<&SpanScorer>]) -> Vec<Mention> {
        let unscored = |d: usize| scorers.get(d).copied().flatten().is_none();
        if (0..self.dictionaries.len()).any(unscored) {
            self.keep_leftmost_longest_of(unscored);
        }
        let gaps = gaps(&self.chars, &self.tokens);
        let context = Context { chars: &self.chars, tokens: &self.tokens, gaps: &gaps };
        let candidates = self.candidates(&gaps, |d| !unscored(d));
        let mut ticker = Ticker::default();
        let mut scored: Vec<(f32, &Candidate)> = candidates
            .iter()
            .filter_map(|c| {
                ticker.step();
                let Some(scorer) = scorers.get(c.dictionary).copied().flatten() else { return Some((1.0, c)) };
                let p = scorer.probability(&features(&context, c.first, c.last, c.origin));
                (p >= scorer.threshold).then_some((p, c))
            })
            .collect();
        scored.sort_by(|(p, a), (q, b)| q.total_cmp(p).then((b.last - b.first).cmp(&(a.last - a.first))));
        // Characters, not tokens, are what two mentions must not share: one character can
        // fold to several tokens ("¾" is "3", "4").
        let mut taken = vec![false; self.chars.len()];
        let mut kept: Vec<&Candidate> = Vec::new();
        for (_, candidate) in scored {
            ticker.step();
            let span = self.tokens[candidate.first].start..self.tokens[candidate.last].end;
            if taken[span.clone()].iter().any(|&t| t) {
                continue;
            }
            taken[span].iter_mut().for_each(|t| *t = true);
            kept.push(candidate);
        }
        kept.sort_by_key(|c| (c.first, c.dictionary));
        let mut mentions = Vec::with_capacity(kept.len());
        for candidate in kept {
            ticker.step();
            if candidate.detections.is_empty() {
                let (start, end) = (self.tokens[candidate.first].start, self.tokens[candidate.last].end);
                let text: String = self.chars[start..end].iter().collect();
                mentions.push(Mention {
                    start,
                    end,
                    lookup: text.clone(),
                    text,
                    dictionary: candidate.dictionary,
                    matched_concepts: Vec::new(),
                    abbreviation_of: None,
                });
            } else if candidate.detections.iter().any(|&d| self.found[d].0.coordinated) {
                // The conjuncts of a coordination all stay: they share its span.
                let conjuncts = candidate.detections.iter().filter(|&&d| self.found[d].0.coordinated);
                mentions.extend(conjuncts.map(|&d| self.mention(d)));
            } else {
                mentions.push(self.mention(candidate.detections[0]));
            }
        }
        mentions
    }

    /// Drops the detections of the dictionaries `chosen` picks that leftmost-longest among
    /// theirs would not keep.
    fn keep_leftmost_longest_of(&mut self, chosen: impl Fn(usize) -> bool) {
        let theirs: Vec<Detection> = self
            .found
            .iter()
            .enumerate()
            .filter(|(_, (_, d, _))| chosen(*d))
            .map(|(i, (m, ..))| Detection { names: vec![i], ..m.clone() })
            .collect();
        let mut keep: Vec<bool> = self.found.iter().map(|(_, d, _)| !chosen(*d)).collect();
        for kept in resolve_overlaps(theirs) {
            keep[kept.names[0]] = true;
        }
        let mut keep = keep.into_iter();
        self.found.retain(|_| keep.next().unwrap_or(false));
    }

    /// The detections' spans, one candidate per span and dictionary, and, for the dictionaries
    /// `reshape` picks, the spans reshaped from them that no detection has.
    fn candidates(&self, gaps: &[Gap], reshape: impl Fn(usize) -> bool) -> Vec<Candidate> {
        let token_at_start = |start: usize| self.tokens.binary_search_by_key(&start, |t| t.start).ok();
        let token_at_end = |end: usize| self.tokens.binary_search_by_key(&end, |t| t.end).ok();
        let mut ticker = Ticker::default();
        let mut index: HashMap<(usize, usize, usize), usize> = HashMap::new();
        let mut candidates: Vec<Candidate> = Vec::new();
        for (d, (detection, dictionary, long_form)) in self.found.iter().enumerate() {
            ticker.step();
            let (Some(first), Some(last)) = (token_at_start(detection.start), token_at_end(detection.end)) else {
                continue;
            };
            let slot = *index.entry((first, last, *dictionary)).or_insert_with(|| {
                candidates.push(Candidate {
                    first,
                    last,
                    dictionary: *dictionary,
                    detections: Vec::new(),
                    origin: Origin::Detected { abbreviation: false, coordinated: false, variant: false },
                });
                candidates.len() - 1
            });
            let candidate = &mut candidates[slot];
            candidate.detections.push(d);
            if let Origin::Detected { abbreviation, coordinated, variant } = &mut candidate.origin {
                *abbreviation |= long_form.is_some();
                *coordinated |= detection.coordinated;
                *variant |= detection.lookup.is_some() && long_form.is_none();
            }
        }
        let detected = candidates.len();
        for c in 0..detected {
            let (first, last, dictionary) = (candidates[c].first, candidates[c].last, candidates[c].dictionary);
            if !reshape(dictionary) {
                continue;
            }
            for (left, right, origin) in reshapings(first, last, gaps) {
                ticker.step();
                if let std::collections::hash_map::Entry::Vacant(slot) = index.entry((left, right, dictionary)) {
                    slot.insert(candidates.len());
                    candidates.push(Candidate { first: left, last: right, dictionary, detections: Vec::new(), origin });
                }
            }
        }
        candidates
    }

    fn mention(&self, index: usize) -> Mention {
        let (detection, dictionary, long_form) = &self.found[index];
        let text: String = self.chars[detection.start..detection.end].iter().collect();
        let mut matched: Vec<String> =
            detection.names.iter().map(|&n| self.dictionaries[*dictionary].name(n).concept_id.clone()).collect();
        matched.dedup();
        Mention {
            start: detection.start,
            end: detection.end,
            lookup: detection.lookup.clone().unwrap_or_else(|| text.clone()),
            text,
            dictionary: *dictionary,
            matched_concepts: matched,
            abbreviation_of: long_form.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::fold;
    use crate::mentions::dictionary::DictionaryName;

    fn dictionary(entries: &[(&str, &str)]) -> MentionDictionary {
        MentionDictionary::build(
            entries
                .iter()
                .map(|(id, name)| DictionaryName {
                    concept_id: id.to_string(),
                    name: name.to_string(),
                    normalized: fold(name),
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn inner_mentions_are_the_detections_inside_that_name_other_concepts() {
        let hpo = dictionary(&[
            ("HP:0002583", "Colitis"),
            ("HP:0100279", "Ulcerative colitis"),
            ("HP:0000518", "Cataract"),
            ("HP:0000518", "Cataracts"),
        ]);
        let text = "Ulcerative colitis and cataracts.";
        let spans = |nesting| -> Vec<(String, Vec<String>)> {
            detect_mentions(text, &[&hpo], None, nesting).into_iter().map(|m| (m.text, m.matched_concepts)).collect()
        };
        let outermost = [
            ("Ulcerative colitis".to_string(), vec!["HP:0100279".to_string()]),
            ("cataracts".to_string(), vec!["HP:0000518".to_string()]),
        ];
        assert_eq!(spans(Nesting::Outermost), outermost);
        assert_eq!(find_mentions(text, &[&hpo]).len(), 2);
        // "colitis" is another concept inside "ulcerative colitis": reported after it.
        assert_eq!(
            spans(Nesting::Inner),
            [outermost[0].clone(), ("colitis".to_string(), vec!["HP:0002583".to_string()]), outermost[1].clone()]
        );
    }

    #[test]
    fn abbreviations_take_the_long_forms_concept() {
        let medic = dictionary(&[
            ("D011125", "Familial adenomatous polyposis"),
            ("D003123", "Colorectal cancer"),
            ("OTHER", "FAP"), // an unrelated concept also named FAP
        ]);
        let text =
            "Patients with familial adenomatous polyposis (FAP) develop colorectal cancer. In FAP, screening helps.";
        let mentions = find_mentions(text, &[&medic]);
        let summary: Vec<(&str, &str, Option<&str>, Vec<String>)> = mentions
            .iter()
            .map(|m| (m.text.as_str(), m.lookup.as_str(), m.abbreviation_of.as_deref(), m.matched_concepts.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("familial adenomatous polyposis", "familial adenomatous polyposis", None, vec!["D011125".to_string()]),
                (
                    "FAP",
                    "familial adenomatous polyposis",
                    Some("familial adenomatous polyposis"),
                    vec!["D011125".to_string()]
                ),
                ("colorectal cancer", "colorectal cancer", None, vec!["D003123".to_string()]),
                (
                    "FAP",
                    "familial adenomatous polyposis",
                    Some("familial adenomatous polyposis"),
                    vec!["D011125".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn an_abbreviation_takes_the_mention_that_holds_its_long_form() {
        let medic = dictionary(&[
            ("C580182", "Hereditary Hyperparathyroidism-Jaw Tumor Syndrome"),
            ("D013577", "Syndrome"),
            ("D009223", "Myotonic Dystrophy"),
            ("160900", "DM"),
        ]);
        // The letters of HPT-JT start at "hyperparathyroidism", inside the detected name; the
        // initials of DM are those of "Myotonic dystrophy" in the Latin order.
        let text = "Hereditary hyperparathyroidism-jaw tumor syndrome (HPT-JT) is rare. HPT-JT and \
                    myotonic dystrophy (DM) differ; DM is common.";
        let linked: Vec<(String, Vec<String>)> =
            find_mentions(text, &[&medic]).into_iter().map(|m| (m.text, m.matched_concepts)).collect();
        let expected = [
            ("Hereditary hyperparathyroidism-jaw tumor syndrome", "C580182"),
            ("HPT-JT", "C580182"),
            ("HPT-JT", "C580182"),
            ("myotonic dystrophy", "D009223"),
            ("DM", "D009223"),
            ("DM", "D009223"),
        ];
        let expected: Vec<(String, Vec<String>)> =
            expected.iter().map(|(text, id)| (text.to_string(), vec![id.to_string()])).collect();
        assert_eq!(linked, expected);

        // A mention holding the long form but starting otherwise names something else: the
        // enzyme's abbreviation is not its deficiency.
        let medic = dictionary(&[("D017825", "Deficiency of aspartoacylase")]);
        let text = "It is caused by the deficiency of aspartoacylase (ASPA). ASPA is an enzyme.";
        let found: Vec<String> = find_mentions(text, &[&medic]).into_iter().map(|m| m.text).collect();
        assert_eq!(found, ["deficiency of aspartoacylase"]);
    }

    #[test]
    fn a_scored_coordination_that_is_itself_a_name_is_that_names_concept() {
        let medic = dictionary(&[("B", "Breast cancer"), ("O", "Ovarian cancer"), ("H", "Breast and ovarian cancer")]);
        let keep_all = crate::mentions::scorer::train(&[], &Default::default(), 0.0);
        let text = "Breast and ovarian cancer.";
        let concepts = |mentions: Vec<Mention>| -> Vec<(String, Vec<String>)> {
            mentions.into_iter().map(|m| (m.text, m.matched_concepts)).collect()
        };
        let expected = vec![(text[..text.len() - 1].to_string(), vec!["H".to_string()])];
        assert_eq!(concepts(find_mentions_scored(text, &[&medic], &[Some(&keep_all)])), expected);
        assert_eq!(concepts(find_mentions(text, &[&medic])), expected);
    }

    #[test]
    fn scored_mentions_never_share_a_character_that_folds_to_several_tokens() {
        // Found by the fuzz target `text`: "¾" folds to the tokens "3" and "4", one span each,
        // and two spans reshaped around them shared it.
        let medic = dictionary(&[("D1", "DM")]);
        let keep_all = crate::mentions::scorer::train(&[], &Default::default(), 0.0);
        let mentions = find_mentions_scored("e#DM#i\u{be}#DM", &[&medic], &[Some(&keep_all)]);
        assert!(mentions.windows(2).all(|pair| pair[1].start >= pair[0].end), "{mentions:?}");
    }

    #[test]
    fn an_abbreviation_of_something_unknown_stays_unlinked() {
        let medic = dictionary(&[("D003123", "Colorectal cancer")]);
        let text = "The adenomatous polyposis coli (APC) gene and colorectal cancer; APC again.";
        let mentions = find_mentions(text, &[&medic]);
        assert_eq!(mentions.len(), 1);
        assert_eq!(mentions[0].text, "colorectal cancer");
    }

    #[test]
    fn several_ontologies_and_overlaps_between_them() {
        let hpo = dictionary(&[("HP:0000822", "Hypertension"), ("HP:0001250", "Seizure")]);
        let medic = dictionary(&[("D006976", "Pulmonary hypertension")]);
        let mentions = find_mentions("Pulmonary hypertension and seizure.", &[&hpo, &medic]);
        let found: Vec<(&str, usize)> = mentions.iter().map(|m| (m.text.as_str(), m.dictionary)).collect();
        assert_eq!(found, [("Pulmonary hypertension", 1), ("seizure", 0)]);
    }

    #[test]
    fn every_detection_stage_answers_a_cancel() {
        use crate::interrupts::testing::is_cancelled_in;
        use crate::interrupts::STEPS_PER_CHECK;
        // Adversarial shapes: one long sentence of parenthesised short forms, and of names.
        let brackets = "(XY) ".repeat(2 * STEPS_PER_CHECK as usize);
        let names = "hypertension (HT) and HT; ".repeat(STEPS_PER_CHECK as usize);
        let hpo = dictionary(&[("HP:0000822", "Hypertension")]);
        // An untrained scorer (every span even odds) with a threshold that keeps them all.
        let keep_all = crate::mentions::scorer::train(&[], &Default::default(), 0.0);
        for text in [&brackets, &names] {
            let tokens = tokenize(text);
            assert!(is_cancelled_in(|| drop(tokenize(text))));
            assert!(is_cancelled_in(|| drop(find_abbreviations(text))));
            let chars: Vec<char> = text.chars().collect();
            assert!(is_cancelled_in(|| drop(hpo.find_all(&chars, &tokens))));
            assert!(is_cancelled_in(|| drop(find_mentions(text, &[&hpo]))));
            assert!(is_cancelled_in(|| drop(find_mentions_scored(text, &[&hpo], &[Some(&keep_all)]))));
            assert!(is_cancelled_in(|| drop(span_candidates(text, &[&hpo]))));
        }
        // With nothing to cancel, the same work runs to its end.
        assert_eq!(find_mentions(&names, &[&hpo]).len(), 3 * STEPS_PER_CHECK as usize);
    }

    /// A scorer trained on `corpus`: texts, each with its annotated mentions (each the first
    /// place its text occurs).
    fn scorer_trained_on(dictionary: &MentionDictionary, corpus: &[(&str, &[&str])]) -> SpanScorer {
        use crate::mentions::scorer::{train, Example, Training};
        let mut examples = Vec::new();
        for (text, mentions) in corpus {
            let gold: Vec<(usize, usize)> = mentions
                .iter()
                .map(|m| {
                    let start = text[..text.find(m).unwrap()].chars().count();
                    (start, start + m.chars().count())
                })
                .collect();
            for candidate in span_candidates(text, &[dictionary]) {
                let mention = gold.contains(&(candidate.start, candidate.end));
                examples.push(Example { features: candidate.features, mention });
            }
        }
        train(&examples, &Training::default(), 0.5)
    }

    #[test]
    fn a_trained_scorer_reshapes_spans_and_reads_the_context() {
        // "familial" starts five names and ends five others: a modifier (not a qualifier), so
        // the dictionary takes it into mentions.
        let mut entries = vec![("D1", "G6PD deficiency"), ("D2", "RB1"), ("D3", "Retinoblastoma")];
        let diseases = ["anemia", "asthma", "acne", "angina", "ataxia"];
        let familial: Vec<String> =
            diseases.iter().flat_map(|d| [format!("Familial {d}"), format!("{d}, familial")]).collect();
        entries.extend(diseases.iter().map(|d| ("D4", *d)));
        entries.extend(familial.iter().map(|d| ("D5", d.as_str())));
        let medic = dictionary(&entries);
        let corpus: &[(&str, &[&str])] = &[
            ("Familial G6PD deficiency was found.", &["G6PD deficiency"]),
            ("The RB1 gene was mutated in retinoblastoma.", &["retinoblastoma"]),
            ("Patients with RB1 were seen.", &["RB1"]),
            ("We saw a familial asthma and the RB1 gene.", &["asthma"]),
            ("Children with RB1 and retinoblastoma.", &["RB1", "retinoblastoma"]),
        ];
        let scorer = scorer_trained_on(&medic, corpus);
        let text = "A familial G6PD deficiency and the RB1 gene; families with RB1.";
        let by_dictionary: Vec<String> = find_mentions(text, &[&medic]).into_iter().map(|m| m.text).collect();
        assert_eq!(by_dictionary, ["familial G6PD deficiency", "RB1", "RB1"]);
        let scored: Vec<String> =
            find_mentions_scored(text, &[&medic], &[Some(&scorer)]).into_iter().map(|m| m.text).collect();
        assert_eq!(scored, ["G6PD deficiency", "RB1"]);
        let last = find_mentions_scored(text, &[&medic], &[Some(&scorer)]).pop().unwrap();
        assert_eq!((last.start, last.matched_concepts), (59, vec!["D2".to_string()]));
    }

    #[test]
    fn without_scorers_scored_detection_is_the_dictionarys() {
        let hpo = dictionary(&[("HP:0000822", "Hypertension"), ("HP:0001250", "Seizure")]);
        let medic =
            dictionary(&[("D006976", "Pulmonary hypertension"), ("D1", "Breast cancer"), ("D2", "Ovarian cancer")]);
        for text in ["Pulmonary hypertension and seizure.", "Breast and ovarian cancer; hypertension", ""] {
            let plain = find_mentions(text, &[&hpo, &medic]);
            assert_eq!(find_mentions_scored(text, &[&hpo, &medic], &[None, None]), plain);
            assert_eq!(find_mentions_scored(text, &[&hpo, &medic], &[]), plain);
        }
    }

    #[test]
    fn nothing_to_link() {
        let hpo = dictionary(&[("HP:0000822", "Hypertension")]);
        assert!(find_mentions("", &[&hpo]).is_empty());
        assert!(find_mentions("Nothing clinical here.", &[&hpo]).is_empty());
        assert!(find_mentions("Hypertension", &[]).is_empty());
    }
}
