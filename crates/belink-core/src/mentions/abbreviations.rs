//! Abbreviation definitions in running text, after Schwartz & Hearst (PSB 2003), the algorithm
//! behind scispaCy's AbbreviationDetector: "long form (SF)" and "SF (long form)".
//!
//! Offsets are 0-based character offsets into the text, end exclusive.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use super::whole_token;
use crate::interrupts::Ticker;

/// One definition found in the text, and every use of its short form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abbreviation {
    pub short_form: String,
    pub long_form: String,
    /// The long form's span in the definition.
    pub long_span: (usize, usize),
    /// Every occurrence of the short form as a whole token, the definition's included.
    pub uses: Vec<(usize, usize)>,
}

pub(crate) const MAX_SHORT_FORM_CHARS: usize = 10;
/// How far before "(" a long form is looked for: far more than its at most 15 words need, and
/// a bound, so that text without sentence ends (adversarial or not) stays linear.
const MAX_LONG_FORM_CHARS: usize = 300;

/// Finds abbreviation definitions and the later (and earlier) uses of their short forms, in
/// time linear in the text: each "(" looks at a bounded stretch on either side, and the uses
/// of every short form are found in one pass.
pub fn find_abbreviations(text: &str) -> Vec<Abbreviation> {
    let chars: Vec<char> = text.chars().collect();
    let mut found: Vec<Abbreviation> = Vec::new();
    let mut defined: HashSet<String> = HashSet::new();
    let mut i = 0;
    let mut ticker = Ticker::default();
    while i < chars.len() {
        ticker.step();
        if chars[i] != '(' {
            i += 1;
            continue;
        }
        let Some(close) = (i + 1..chars.len().min(i + 200)).find(|&j| chars[j] == ')' || chars[j] == '(') else {
            i += 1;
            continue;
        };
        if chars[close] != ')' {
            i = close;
            continue;
        }
        let inside: String = chars[i + 1..close].iter().collect();
        // "LF (SF)", or "SF (LF)" when the parenthesis holds more than a short form; a
        // semicolon or comma inside keeps only its first part ("(FAP; OMIM 175100)").
        let inside_trimmed = inside.split([';', ',']).next().unwrap_or("").trim();
        let inside_start = i + 1 + inside.find(inside_trimmed).unwrap_or(0);
        let definition = if is_short_form_candidate(inside_trimmed) {
            let words = words_before(&chars, i, inside_trimmed.chars().count());
            best_long_form(inside_trimmed, &words)
                .or_else(|| initials_in_another_order(inside_trimmed, &words))
                .map(|(long, span)| (inside_trimmed.to_string(), long, span))
        } else {
            word_before(&chars, i).and_then(|(short, _)| {
                if !is_short_form_candidate(&short) {
                    return None;
                }
                let words = tokens_in(&chars, inside_start, inside_start + inside_trimmed.chars().count());
                best_long_form(&short, &words).map(|(long, span)| (short, long, span))
            })
        };
        if let Some((short, long, span)) = definition {
            if defined.insert(short.clone()) {
                found.push(Abbreviation { short_form: short, long_form: long, long_span: span, uses: Vec::new() });
            }
        }
        i = close + 1;
    }
    let shorts: Vec<String> = found.iter().map(|a| a.short_form.clone()).collect();
    for (abbreviation, uses) in found.iter_mut().zip(token_occurrences(text, &chars, &shorts)) {
        abbreviation.uses = uses;
    }
    found
}

/// Schwartz & Hearst's short form: 2 to 10 characters, at most two words, a letter among
/// them, starting with a letter or digit.
pub(crate) fn is_short_form_candidate(text: &str) -> bool {
    let length = text.chars().count();
    (2..=MAX_SHORT_FORM_CHARS).contains(&length)
        && text.split_whitespace().count() <= 2
        && text.chars().any(char::is_alphabetic)
        && text.chars().next().is_some_and(char::is_alphanumeric)
}

/// A word with its character span.
type Word = (String, (usize, usize));

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '[' | ']' | ',' | ';' | '.' | ':' | '"')
}

/// The words of `chars[start..end]`.
fn tokens_in(chars: &[char], start: usize, end: usize) -> Vec<Word> {
    let mut words = Vec::new();
    let mut i = start;
    while i < end {
        if !is_word_char(chars[i]) {
            i += 1;
            continue;
        }
        let begin = i;
        while i < end && is_word_char(chars[i]) {
            i += 1;
        }
        words.push((chars[begin..i].iter().collect(), (begin, i)));
    }
    words
}

/// Up to min(|SF| + 5, 2|SF|) words before position `end`, within the sentence and the last
/// MAX_LONG_FORM_CHARS characters (a word cut by that bound is left out). Walks back only as
/// far as those words reach.
fn words_before(chars: &[char], end: usize, short_length: usize) -> Vec<Word> {
    let max_words = (short_length + 5).min(short_length * 2);
    let floor = end.saturating_sub(MAX_LONG_FORM_CHARS);
    let is_sentence_end =
        |j: usize| matches!(chars[j], '.' | '!' | '?' | ';') && chars.get(j + 1).is_some_and(|c| c.is_whitespace());
    let mut words = Vec::with_capacity(max_words);
    let mut i = end;
    while words.len() < max_words && i > floor {
        if !is_word_char(chars[i - 1]) {
            if is_sentence_end(i - 1) {
                break;
            }
            i -= 1;
            continue;
        }
        let word_end = i;
        while i > floor && is_word_char(chars[i - 1]) {
            i -= 1;
        }
        if i == floor && floor > 0 && is_word_char(chars[floor - 1]) {
            break;
        }
        words.push((chars[i..word_end].iter().collect(), (i, word_end)));
    }
    words.reverse();
    words
}

fn word_before(chars: &[char], end: usize) -> Option<Word> {
    tokens_in(chars, end.saturating_sub(MAX_SHORT_FORM_CHARS + 2), end).pop()
}

/// Schwartz & Hearst's best long form: match the short form's letters and digits from the
/// end, right to left, in the words before it; the first one must start a word. The long form
/// runs from that word to the end.
fn best_long_form(short: &str, words: &[Word]) -> Option<(String, (usize, usize))> {
    let short: Vec<char> = short.chars().flat_map(char::to_lowercase).collect();
    // The window as characters, each with the index of its word (spaces belong to none).
    let mut long: Vec<(char, Option<usize>)> = Vec::new();
    for (w, word) in words.iter().enumerate() {
        if w > 0 {
            long.push((' ', None));
        }
        long.extend(word.0.chars().flat_map(char::to_lowercase).map(|c| (c, Some(w))));
    }
    let mut l = long.len() as isize - 1;
    for s in (0..short.len()).rev() {
        let wanted = short[s];
        if !wanted.is_alphanumeric() {
            continue;
        }
        // The first character must also start a word.
        while l >= 0 && (long[l as usize].0 != wanted || (s == 0 && l > 0 && long[l as usize - 1].0.is_alphanumeric()))
        {
            l -= 1;
        }
        if l < 0 {
            return None;
        }
        l -= 1;
    }
    let first_word = long[(l + 1) as usize].1?;
    let chosen = &words[first_word..];
    let text: Vec<&str> = chosen.iter().map(|w| w.0.as_str()).collect();
    let long_form = text.join(" ");
    // A long form no longer than its short form defines nothing.
    let letters = |t: &str| t.chars().filter(|c| c.is_alphanumeric()).count();
    if letters(&long_form) <= letters(&short.iter().collect::<String>()) {
        return None;
    }
    Some((long_form, (chosen[0].1 .0, chosen[chosen.len() - 1].1 .1)))
}

/// The long form of a short form made of the initials of as many words just before it, in
/// another order: "myotonic dystrophy (DM)", DM being the Latin "dystrophia myotonica". Schwartz
/// & Hearst need the letters in order; only letters and at most 5 of them are accepted here.
fn initials_in_another_order(short: &str, words: &[Word]) -> Option<(String, (usize, usize))> {
    let length = short.chars().count();
    if length > 5 || !short.chars().all(char::is_alphabetic) || words.len() < length {
        return None;
    }
    let chosen = &words[words.len() - length..];
    let sorted_lowercase = |letters: &mut dyn Iterator<Item = char>| {
        let mut letters: Vec<char> = letters.flat_map(char::to_lowercase).collect();
        letters.sort_unstable();
        letters
    };
    let initials = sorted_lowercase(&mut chosen.iter().filter_map(|w| w.0.chars().next()));
    if initials != sorted_lowercase(&mut short.chars()) || chosen.iter().any(|w| w.0.chars().count() < 3) {
        return None;
    }
    let long_form = chosen.iter().map(|w| w.0.as_str()).collect::<Vec<_>>().join(" ");
    Some((long_form, (chosen[0].1 .0, chosen[length - 1].1 .1)))
}

/// Up to this many short forms, each is looked for by its own scan of the text.
const FEW_SHORT_FORMS: usize = 8;

/// The occurrences of each short form as a whole token (case-sensitive), in one pass over the
/// text per short form when there are few, in one pass for all of them otherwise.
fn token_occurrences(text: &str, chars: &[char], shorts: &[String]) -> Vec<Vec<(usize, usize)>> {
    // A few short forms (as in nearly every abstract): one scan each, cheaper than building an
    // automaton and still linear.
    if shorts.len() <= FEW_SHORT_FORMS {
        return shorts.iter().map(|short| scan_occurrences(chars, short)).collect();
    }
    let mut uses = vec![Vec::new(); shorts.len()];
    // A noncontiguous NFA: the cheapest to build, for a handful of short patterns.
    let automaton = AhoCorasick::builder()
        .kind(Some(AhoCorasickKind::NoncontiguousNFA))
        .build(shorts)
        .expect("short forms are at most 10 characters");
    let lengths: Vec<usize> = shorts.iter().map(|s| s.chars().count()).collect();
    // Matches come in the order of their ends: byte offsets become character offsets as we go.
    let mut bytes = text.char_indices().map(|(byte, _)| byte).chain([text.len()]);
    let (mut end, mut end_byte) = (0, bytes.next().unwrap_or(0));
    let mut next_free = vec![0usize; shorts.len()];
    let mut ticker = Ticker::default();
    for found in automaton.find_overlapping_iter(text) {
        ticker.step();
        while end_byte < found.end() {
            end += 1;
            end_byte = bytes.next().expect("a match ends on a char boundary");
        }
        let pattern = found.pattern().as_usize();
        let start = end - lengths[pattern];
        // As a scan per short form would: whole tokens only, none overlapping another.
        if start >= next_free[pattern] && whole_token(chars, start, end) {
            uses[pattern].push((start, end));
            next_free[pattern] = end;
        }
    }
    uses
}

/// Occurrences of `short` as a whole token (case-sensitive), none overlapping another.
fn scan_occurrences(chars: &[char], short: &str) -> Vec<(usize, usize)> {
    let needle: Vec<char> = short.chars().collect();
    let mut uses = Vec::new();
    let mut i = 0;
    let mut ticker = Ticker::default();
    while i + needle.len() <= chars.len() {
        ticker.step();
        if chars[i..i + needle.len()] == needle[..] && whole_token(chars, i, i + needle.len()) {
            uses.push((i, i + needle.len()));
            i += needle.len();
        } else {
            i += 1;
        }
    }
    uses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definitions(text: &str) -> Vec<(String, String)> {
        find_abbreviations(text).into_iter().map(|a| (a.short_form, a.long_form)).collect()
    }

    #[test]
    fn long_form_then_short_form() {
        let text = "Patients with familial adenomatous polyposis (FAP) develop adenomas. FAP is inherited.";
        let found = find_abbreviations(text);
        assert_eq!(found.len(), 1);
        let fap = &found[0];
        assert_eq!((fap.short_form.as_str(), fap.long_form.as_str()), ("FAP", "familial adenomatous polyposis"));
        let chars: Vec<char> = text.chars().collect();
        let span = |s: (usize, usize)| chars[s.0..s.1].iter().collect::<String>();
        assert_eq!(span(fap.long_span), "familial adenomatous polyposis");
        assert_eq!(fap.uses.len(), 2);
        assert!(fap.uses.iter().all(|&u| span(u) == "FAP"));
    }

    #[test]
    fn classic_examples() {
        assert_eq!(
            definitions("hereditary nonpolyposis colorectal cancer (HNPCC)"),
            [("HNPCC".into(), "hereditary nonpolyposis colorectal cancer".into())]
        );
        assert_eq!(
            definitions("The ataxia-telangiectasia (A-T) gene"),
            [("A-T".into(), "ataxia-telangiectasia".into())]
        );
        assert_eq!(
            definitions("glucose-6-phosphate dehydrogenase (G6PD) deficiency"),
            [("G6PD".into(), "glucose-6-phosphate dehydrogenase".into())]
        );
        assert_eq!(
            definitions("dystrophia myotonica (DM; OMIM 160900)"),
            [("DM".into(), "dystrophia myotonica".into())]
        );
        // The initials of as many words in another order: DM for the Latin dystrophia myotonica.
        assert_eq!(definitions("Myotonic dystrophy (DM) is"), [("DM".into(), "Myotonic dystrophy".into())]);
        assert_eq!(definitions("in X-linked mental retardation (RMX)")[0].1, "X-linked mental retardation");
    }

    #[test]
    fn initials_in_another_order_need_as_many_words_of_three_letters_or_more() {
        assert!(definitions("of myotonic dystrophy (DMX)").is_empty(), "three letters, two words");
        assert!(definitions("a dose (DA)").is_empty(), "words of one or two letters");
        assert!(definitions("myotonic dystrophy (D2)").is_empty(), "a digit");
    }

    #[test]
    fn the_long_form_is_looked_for_within_the_sentence_and_a_bounded_window() {
        // The sentence before holds the letters; this one does not.
        assert!(definitions("Familial adenomatous. Polyposis (FAP)").is_empty());
        assert_eq!(definitions("Fever. Familial adenomatous polyposis (FAP)")[0].1, "Familial adenomatous polyposis");
        // At most min(|SF| + 5, 2|SF|) words: 4 for "FA".
        assert!(definitions("fatal one two three four (FA)").is_empty());
        assert_eq!(definitions("fatal one two three (FA)")[0].1, "fatal one two three");
        // Nothing from more than 300 characters back, not even the end of a word cut there.
        let word = "f".repeat(MAX_LONG_FORM_CHARS - " anemia ".len());
        assert_eq!(definitions(&format!("{word} anemia (FA)"))[0].1, format!("{word} anemia"));
        assert!(definitions(&format!("{word}f anemia (FA)")).is_empty());
    }

    #[test]
    fn short_form_then_long_form() {
        assert_eq!(
            definitions("mutations in APC (adenomatous polyposis coli) cause"),
            [("APC".into(), "adenomatous polyposis coli".into())]
        );
    }

    #[test]
    fn not_definitions() {
        assert!(definitions("the dose (10 mg) was").is_empty());
        assert!(definitions("cancer (see above) and").is_empty(), "more than two words, no short form before");
        assert!(definitions("a rare disease (p < 0.05)").is_empty());
        assert!(definitions("unclosed (FAP and more").is_empty());
        assert!(definitions("").is_empty());
    }

    #[test]
    fn uses_are_whole_tokens_case_sensitive_and_multibyte_safe() {
        let text = "β-thalassemia major (TM): TM patients, not TMs or tm; ✓ TM.";
        let found = find_abbreviations(text);
        // As Schwartz & Hearst: the long form starts at the white-space word holding the match.
        assert_eq!(found[0].long_form, "β-thalassemia major");
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(found[0].uses.len(), 3);
        for &(s, e) in &found[0].uses {
            assert_eq!(chars[s..e].iter().collect::<String>(), "TM");
        }
    }
}
