//! The learned span scorer, mention detection's second layer: which of the dictionary's
//! detections, and of the spans around them, are mentions as the training corpus writes them.
//!
//! The dictionary proposes spans; for each detection the scorer also considers the spans a few
//! words wider or narrower ("prostate carcinoma" around "carcinoma", "G6PD deficiency" inside
//! "severe G6PD deficiency"). A logistic regression over hashed features of the span and its
//! context (its words, their shapes and suffixes, the words around it, the punctuation on either
//! side, how the dictionary found it) gives each a probability of being a mention; the most
//! probable non-overlapping spans above the threshold are kept. Context is what the dictionary
//! lacks: "RB1" before "gene" is not the disease, "severe" is written outside NCBI's spans.
//!
//! The model is small (at most [`DIMENSIONS`] weights), trains in seconds on an annotated
//! corpus (see [`train`]) and scores a document in well under a millisecond.

use std::fmt::Write as _;

use crate::fold::Token;
use crate::mentions::variants::Gap;

/// Hashed feature space: 2^18 weights, 1 MB of f32 per backend.
pub const DIMENSIONS: usize = 1 << 18;

/// How far a reshaped span's edges move from the detection's: left edge from 3 words wider to 2
/// narrower, right edge up to 2 words wider.
const WIDEN_LEFT: usize = 3;
const NARROW_LEFT: usize = 2;
const WIDEN_RIGHT: usize = 2;

const FILE_MAGIC: &str = "belink-span-scorer 1";

/// How a candidate span came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A dictionary detection, as the dictionary found it.
    Detected {
        /// The short form of an abbreviation defined in the document.
        abbreviation: bool,
        /// A conjunct of a coordination ("breast and ovarian cancer").
        coordinated: bool,
        /// A variant of a name (plural, other word order, with modifiers or a subtype).
        variant: bool,
    },
    /// A detection's span with its edges moved by these many words (positive: wider).
    Reshaped { left: i8, right: i8 },
}

/// The spans a detection at tokens `first..=last` may really be: its edges moved within
/// bounds, never across a sentence end or bracket (`gaps[i]`: what precedes token `i`), each
/// with the edges' moves.
pub(crate) fn reshapings(first: usize, last: usize, gaps: &[Gap]) -> impl Iterator<Item = (usize, usize, Origin)> + '_ {
    let lefts = first.saturating_sub(WIDEN_LEFT)..=(first + NARROW_LEFT).min(last);
    let rights = last..=(last + WIDEN_RIGHT).min(gaps.len() - 1);
    lefts
        .flat_map(move |left| rights.clone().map(move |right| (left, right)))
        .filter(move |&span| span != (first, last))
        .filter(move |&(left, right)| gaps[left + 1..=right].iter().all(|&g| g != Gap::Break))
        .map(move |(left, right)| {
            // The moves are a few words, whatever the indices.
            let moved = |from: usize, to: usize| (to as isize - from as isize) as i8;
            let origin = Origin::Reshaped { left: moved(left, first), right: moved(last, right) };
            (left, right, origin)
        })
}

/// The text around a candidate span that its features read.
pub(crate) struct Context<'a> {
    pub chars: &'a [char],
    pub tokens: &'a [Token],
    pub gaps: &'a [Gap],
}

/// The hashed features of the span of tokens `first..=last`.
pub(crate) fn features(context: &Context, first: usize, last: usize, origin: Origin) -> Vec<u32> {
    let Context { chars, tokens, gaps } = *context;
    let mut out = Vec::with_capacity(48);
    let mut add = |parts: &[&str]| out.push(hash(parts));
    add(&["bias"]);
    match origin {
        Origin::Detected { abbreviation, coordinated, variant } => {
            add(&["origin", "detected"]);
            if abbreviation {
                add(&["origin", "abbreviation"]);
            }
            if coordinated {
                add(&["origin", "coordinated"]);
            }
            if variant {
                add(&["origin", "variant"]);
            }
        }
        Origin::Reshaped { left, right } => {
            add(&["left moved", &left.to_string()]);
            add(&["right moved", &right.to_string()]);
            // What the move took in or left out.
            let edge = if left > 0 { first } else { first - left.unsigned_abs() as usize };
            let moved = if left > 0 { "took" } else { "left" };
            if left != 0 {
                add(&["left edge word", moved, &tokens[edge].text]);
            }
            if right > 0 {
                add(&["right edge word", &tokens[last].text]);
            }
        }
    }
    let words = last - first + 1;
    add(&["words", &words.min(8).to_string()]);
    for token in &tokens[first..=last] {
        add(&["word", &token.text]);
    }
    let (first_word, last_word) = (&tokens[first].text, &tokens[last].text);
    add(&["first", first_word]);
    add(&["last", last_word]);
    add(&["last suffix", suffix(last_word, 3)]);
    add(&["last suffix", suffix(last_word, 4)]);
    add(&["first suffix", suffix(first_word, 3)]);
    let raw = |t: &Token| -> String { chars[t.start..t.end].iter().collect() };
    let (first_shape, last_shape) = (shape(&raw(&tokens[first])), shape(&raw(&tokens[last])));
    add(&["first shape", &first_shape]);
    add(&["last shape", &last_shape]);
    let span_chars = &chars[tokens[first].start..tokens[last].end];
    if span_chars.iter().any(|c| c.is_alphabetic()) && !span_chars.iter().any(|c| c.is_lowercase()) {
        add(&["all capitals"]);
    }
    for gap in &gaps[first + 1..=last] {
        add(&["inner gap", gap_name(*gap)]);
    }
    // The words around it, a sentence end or bracket standing for a word.
    let before = |k: usize| -> &str {
        let mut i = first;
        for _ in 0..k {
            if gaps[i] == Gap::Break {
                return "|";
            }
            i -= 1;
        }
        &tokens[i].text
    };
    let after = |k: usize| -> &str {
        let mut i = last;
        for _ in 0..k {
            if i + 1 >= tokens.len() || gaps[i + 1] == Gap::Break {
                return "|";
            }
            i += 1;
        }
        &tokens[i].text
    };
    let (left1, left2, right1, right2) = (before(1), before(2), after(1), after(2));
    add(&["left 1", left1]);
    add(&["left 2", left2]);
    add(&["right 1", right1]);
    add(&["right 2", right2]);
    add(&["left 1 + first", left1, first_word]);
    add(&["last + right 1", last_word, right1]);
    add(&["left 1 + right 1", left1, right1]);
    if right1 != "|" {
        add(&["right 1 shape", &shape(&raw(&tokens[last + 1]))]);
    }
    add(&["gap before", gap_name(gaps[first])]);
    add(&["gap after", tokens.get(last + 1).map_or("end", |_| gap_name(gaps[last + 1]))]);
    let char_before = tokens[first].start.checked_sub(1).and_then(|i| chars.get(i)).copied().unwrap_or('^');
    let char_after = chars.get(tokens[last].end).copied().unwrap_or('$');
    add(&["char before", char_before.encode_utf8(&mut [0; 4])]);
    add(&["char after", char_after.encode_utf8(&mut [0; 4])]);
    out
}

fn gap_name(gap: Gap) -> &'static str {
    match gap {
        Gap::Space => "space",
        Gap::Hyphen => "hyphen",
        Gap::Slash => "slash",
        Gap::Comma => "comma",
        Gap::Break => "break",
    }
}

/// The last `n` characters of `word` (all of it when shorter).
fn suffix(word: &str, n: usize) -> &str {
    let start = word.char_indices().rev().nth(n - 1).map_or(0, |(i, _)| i);
    &word[start..]
}

/// A word's shape, runs collapsed: "RB1" -> "X9", "Tumours" -> "Xx", "p53" -> "x9".
fn shape(word: &str) -> String {
    let mut out = String::new();
    for c in word.chars() {
        let class = if c.is_uppercase() {
            'X'
        } else if c.is_lowercase() {
            'x'
        } else if c.is_numeric() {
            '9'
        } else {
            '-'
        };
        if !out.ends_with(class) {
            out.push(class);
        }
        if out.len() >= 6 {
            break;
        }
    }
    out
}

/// FNV-1a over the parts, separated, into the feature space.
fn hash(parts: &[&str]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0x1f]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h % DIMENSIONS as u64) as u32
}

/// A trained scorer: the weights and the probability a span needs to be kept.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanScorer {
    weights: Vec<f32>,
    pub threshold: f32,
}

impl SpanScorer {
    /// The probability that the span with these features is a mention.
    pub fn probability(&self, features: &[u32]) -> f32 {
        sigmoid(features.iter().map(|&f| self.weights[f as usize]).sum())
    }

    /// The scorer as text: a header, the threshold, then one "index weight" line per non-zero
    /// weight.
    pub fn to_text(&self) -> String {
        let mut out = format!("{FILE_MAGIC}\nthreshold {}\n", self.threshold);
        for (i, w) in self.weights.iter().enumerate().filter(|(_, w)| **w != 0.0) {
            let _ = writeln!(out, "{i} {w}");
        }
        out
    }

    pub fn from_text(text: &str) -> Result<SpanScorer, String> {
        let mut lines = text.lines();
        if lines.next() != Some(FILE_MAGIC) {
            return Err(format!("not a span scorer (the first line should be \"{FILE_MAGIC}\")"));
        }
        let threshold = lines
            .next()
            .and_then(|l| l.strip_prefix("threshold "))
            .and_then(|t| t.parse::<f32>().ok())
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or("the second line should be \"threshold P\" with P between 0 and 1")?;
        let mut weights = vec![0.0f32; DIMENSIONS];
        for (n, line) in lines.enumerate() {
            let bad = || format!("line {}: expected \"index weight\" with index below {DIMENSIONS}", n + 3);
            let (index, weight) = line.split_once(' ').ok_or_else(bad)?;
            let index: usize = index.parse().map_err(|_| bad())?;
            let weight: f32 = weight.parse().map_err(|_| bad())?;
            if index >= DIMENSIONS || !weight.is_finite() {
                return Err(bad());
            }
            weights[index] = weight;
        }
        Ok(SpanScorer { weights, threshold })
    }

    /// How many of its weights are not zero.
    pub fn weights(&self) -> usize {
        self.weights.iter().filter(|w| **w != 0.0).count()
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One training example: a candidate span's features, and whether the corpus annotates it.
pub struct Example {
    pub features: Vec<u32>,
    pub mention: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Training {
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 penalty per step on the weights an example touches.
    pub l2: f32,
    /// Seeds the order examples are visited in.
    pub seed: u64,
}

impl Default for Training {
    fn default() -> Training {
        Training { epochs: 12, learning_rate: 0.2, l2: 1e-5, seed: 42 }
    }
}

/// Logistic regression by AdaGrad over the examples, visited in a seeded random order.
pub fn train(examples: &[Example], training: &Training, threshold: f32) -> SpanScorer {
    let mut weights = vec![0.0f32; DIMENSIONS];
    let mut squared = vec![0.0f32; DIMENSIONS];
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut state = training.seed.max(1);
    for _ in 0..training.epochs {
        // Fisher-Yates with xorshift: the same seed, the same model.
        for i in (1..order.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        for &e in &order {
            let example = &examples[e];
            let p = sigmoid(example.features.iter().map(|&f| weights[f as usize]).sum());
            let error = p - if example.mention { 1.0 } else { 0.0 };
            for &f in &example.features {
                let f = f as usize;
                let gradient = error + training.l2 * weights[f];
                squared[f] += gradient * gradient;
                weights[f] -= training.learning_rate * gradient / (squared[f].sqrt() + 1e-6);
            }
        }
    }
    SpanScorer { weights, threshold }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::tokenize;
    use crate::mentions::variants::gaps;

    fn context_features(text: &str, first: usize, last: usize, origin: Origin) -> Vec<u32> {
        let chars: Vec<char> = text.chars().collect();
        let tokens = tokenize(text);
        let gaps = gaps(&chars, &tokens);
        features(&Context { chars: &chars, tokens: &tokens, gaps: &gaps }, first, last, origin)
    }

    const DETECTED: Origin = Origin::Detected { abbreviation: false, coordinated: false, variant: false };

    #[test]
    fn shapes_and_suffixes() {
        assert_eq!(shape("RB1"), "X9");
        assert_eq!(shape("Tumours"), "Xx");
        assert_eq!(shape("p53"), "x9");
        assert_eq!(suffix("carcinoma", 3), "oma");
        assert_eq!(suffix("ab", 3), "ab");
        assert_eq!(suffix("anémie", 3), "mie");
    }

    #[test]
    fn reshapings_stay_inside_the_sentence() {
        let text = "Results. The severe G6PD deficiency was seen";
        let chars: Vec<char> = text.chars().collect();
        let tokens = tokenize(text);
        let gaps = gaps(&chars, &tokens);
        // "g 6 pd deficiency" is tokens 3..=6 ("the"=1, "severe"=2).
        let spans: Vec<(usize, usize)> = reshapings(3, 6, &gaps).map(|(l, r, _)| (l, r)).collect();
        assert!(spans.contains(&(2, 6)), "one word wider to the left: {spans:?}");
        assert!(spans.contains(&(1, 6)));
        assert!(spans.contains(&(3, 7)), "one word wider to the right");
        assert!(!spans.iter().any(|&(l, _)| l == 0), "never across the full stop");
        assert!(!spans.contains(&(3, 6)), "not the detection itself");
        assert!(spans.iter().all(|&(l, r)| l <= r));
        // Token indices past 127 (found by the fuzzer: an i8 overflow).
        let long = format!("{}The severe G6PD deficiency was seen", "word ".repeat(300));
        let chars: Vec<char> = long.chars().collect();
        let long_gaps = crate::mentions::variants::gaps(&chars, &tokenize(&long));
        let moves: Vec<Origin> = reshapings(303, 306, &long_gaps).map(|(.., origin)| origin).collect();
        assert!(moves.contains(&Origin::Reshaped { left: 1, right: 0 }));
        assert!(moves.contains(&Origin::Reshaped { left: -2, right: 1 }));
    }

    #[test]
    fn the_same_span_in_other_words_has_other_features() {
        let gene = context_features("Mutations of the RB1 gene were found", 3, 4, DETECTED);
        let disease = context_features("Patients with RB1 were found", 2, 3, DETECTED);
        assert_ne!(gene, disease);
        // Shared: the span's own words.
        assert!(gene.contains(&hash(&["word", "rb"])) && disease.contains(&hash(&["word", "rb"])));
        assert!(gene.contains(&hash(&["right 1", "gene"])));
    }

    #[test]
    fn training_learns_what_the_context_says_and_the_file_keeps_it() {
        // "RB1" is a mention except when "gene" follows it.
        let texts = [
            ("Patients with RB1 were found", 2, 3, true),
            ("Mutations of the RB1 gene were found", 3, 4, false),
            ("Children with RB1 were seen", 2, 3, true),
            ("The RB1 gene is mutated", 1, 2, false),
        ];
        let examples: Vec<Example> = texts
            .iter()
            .map(|&(text, first, last, mention)| Example {
                features: context_features(text, first, last, DETECTED),
                mention,
            })
            .collect();
        let scorer = train(&examples, &Training::default(), 0.5);
        let unseen_gene = context_features("Loss of the RB1 gene occurs", 3, 4, DETECTED);
        let unseen_disease = context_features("Families with RB1 occur", 2, 3, DETECTED);
        assert!(scorer.probability(&unseen_gene) < 0.5);
        assert!(scorer.probability(&unseen_disease) > 0.5);
        let reread = SpanScorer::from_text(&scorer.to_text()).unwrap();
        assert_eq!(reread, scorer);
    }

    #[test]
    fn malformed_scorer_files_are_refused_with_the_line() {
        assert!(SpanScorer::from_text("").is_err());
        assert!(SpanScorer::from_text("belink-span-scorer 1\nthreshold 2\n").is_err());
        let error = SpanScorer::from_text("belink-span-scorer 1\nthreshold 0.5\n1 0.25\n999999999 1\n").unwrap_err();
        assert!(error.starts_with("line 4"), "{error}");
        assert!(SpanScorer::from_text("belink-span-scorer 1\nthreshold 0.5\n1 NaN\n").is_err());
    }
}
