//! Text folding: the one definition of "the same name", used for ontology names at load time
//! and for mentions at query time (stored as `belink.names.normalized`).
//!
//! Steps, per character: Unicode compatibility decomposition (NFKD, so ligatures, full-width
//! forms and superscripts fold to plain letters and digits), diacritics removed, lower case,
//! Greek letters spelled out (`α` → `alpha`), invisible format characters (soft hyphen,
//! zero-width space) dropped, every other non-alphanumeric character (hyphen variants,
//! punctuation, symbols, white space) a token boundary. Then per token: a boundary between
//! letters and digits (`type2` → `type 2`), the possessive `'s` dropped (`Crohn's` →
//! `crohn`), and a few British spellings folded into American ones (`tumour` → `tumor`,
//! `anaemia` → `anemia`). The folded text is the tokens joined by single spaces.
//!
//! Every token keeps the character span of the original text it came from, so a match found in
//! normalized text maps back to 0-based character offsets of the original.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

use crate::interrupts::Ticker;

/// One normalized token and the character span `[start, end)` of the original text it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// The folded form of `text`: its tokens joined by single spaces.
pub fn fold(text: &str) -> String {
    let tokens = tokenize(text);
    let mut out = String::with_capacity(text.len());
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&token.text);
    }
    out
}

/// Splits `text` into normalized tokens with their character spans in `text`.
pub fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut builder = TokenBuilder::default();
    let mut pieces: Vec<char> = Vec::with_capacity(4);
    let mut ticker = Ticker::default();
    for (index, &c) in chars.iter().enumerate() {
        ticker.step();
        // ASCII is its own decomposition, and neither invisible nor Greek.
        if c.is_ascii() {
            if c.is_ascii_alphanumeric() {
                builder.push_char(c, index);
            } else {
                builder.flush();
            }
            continue;
        }
        if is_invisible(c) {
            continue;
        }
        if let Some(name) = greek_letter_name(c) {
            builder.flush();
            builder.push_token(name, index);
            continue;
        }
        pieces.clear();
        decompose_compatible(c, |d| pieces.push(d));
        for &d in &pieces {
            if is_combining_mark(d) {
                continue;
            }
            if let Some(name) = greek_letter_name(d) {
                // µ (micro sign) decomposes to the Greek letter mu.
                builder.flush();
                builder.push_token(name, index);
            } else if d.is_alphanumeric() {
                builder.push_char(d, index);
            } else {
                builder.flush();
            }
        }
    }
    builder.flush();
    let mut tokens = builder.tokens;
    drop_possessive_s(&mut tokens, &chars);
    for token in &mut tokens {
        ticker.step();
        fold_spelling(&mut token.text);
    }
    tokens
}

#[derive(Default)]
struct TokenBuilder {
    tokens: Vec<Token>,
    current: Option<Token>,
    /// Whether the current token's last character is a digit: letters and digits split.
    current_is_numeric: bool,
}

impl TokenBuilder {
    fn push_char(&mut self, c: char, index: usize) {
        let numeric = c.is_numeric();
        if self.current.is_some() && self.current_is_numeric != numeric {
            self.flush();
        }
        self.current_is_numeric = numeric;
        let token =
            self.current.get_or_insert_with(|| Token { text: String::with_capacity(16), start: index, end: index + 1 });
        if c.is_ascii() {
            token.text.push(c.to_ascii_lowercase());
        } else {
            // ß and capital ẞ (which lowercases to ß) fold to "ss", as German spelling allows.
            for lower in c.to_lowercase() {
                if lower == 'ß' {
                    token.text.push_str("ss");
                } else {
                    token.text.push(lower);
                }
            }
        }
        token.end = index + 1;
    }

    fn push_token(&mut self, text: &str, index: usize) {
        self.tokens.push(Token { text: text.to_string(), start: index, end: index + 1 });
    }

    fn flush(&mut self) {
        if let Some(token) = self.current.take() {
            self.tokens.push(token);
        }
    }
}

/// Characters that carry no content and must not split a word (soft hyphen, zero-width
/// space and joiners, word joiner, byte-order mark).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{02BC}' | '\u{2032}')
}

/// Removes the `s` of a possessive (`Crohn's`, `Alzheimer’s`): a token `s` that follows an
/// apostrophe glued to the previous token.
fn drop_possessive_s(tokens: &mut Vec<Token>, chars: &[char]) {
    let mut kept: Vec<Token> = Vec::with_capacity(tokens.len());
    for token in tokens.drain(..) {
        let is_possessive = token.text == "s"
            && token.start >= 2
            && is_apostrophe(chars[token.start - 1])
            && kept.last().is_some_and(|previous| previous.end == token.start - 1);
        if !is_possessive {
            kept.push(token);
        }
    }
    *tokens = kept;
}

/// British spellings common in clinical text, folded to the American ones MeSH and HPO use.
/// Substring rewrites, applied in order to every token.
const SPELLING_FOLDS: &[(&str, &str)] = &[
    ("aem", "em"),       // anaemia, haemorrhage, ischaemic, leukaemia
    ("oedem", "edem"),   // oedema
    ("oesoph", "esoph"), // oesophagus
    ("oestr", "estr"),   // oestrogen
    ("foet", "fet"),     // foetal
    ("coeli", "celi"),   // coeliac
    ("gynaec", "gynec"), // gynaecological
    ("paed", "ped"),     // paediatric, orthopaedic
    ("rrhoea", "rrhea"), // diarrhoea, amenorrhoea
    ("pnoea", "pnea"),   // dyspnoea, apnoea
    ("phaeo", "pheo"),   // phaeochromocytoma
    ("anaes", "anes"),   // anaesthesia
    ("aetio", "etio"),   // aetiology
    ("caec", "cec"),     // caecum
    ("faec", "fec"),     // faeces
    ("leucocyt", "leukocyt"),
    ("fibre", "fiber"),
    ("centre", "center"),
    ("tumour", "tumor"),
    ("behaviour", "behavior"),
    ("colour", "color"),
    ("sulph", "sulf"),
    ("isation", "ization"),
];

fn fold_spelling(token: &mut String) {
    // One scan for all folds: most tokens have none.
    static ANY_FOLD: OnceLock<AhoCorasick> = OnceLock::new();
    let any_fold = ANY_FOLD.get_or_init(|| {
        AhoCorasick::new(SPELLING_FOLDS.iter().map(|(british, _)| british)).expect("spelling folds compile")
    });
    if !token.is_ascii() || !any_fold.is_match(token.as_str()) {
        return;
    }
    // Until nothing changes: a fold can make a new match ("aaem" -> "aem" -> "em"). It ends:
    // every fold either shortens the token or keeps its length (isation, leucocyt, fibre,
    // centre) and removes a pattern that no fold writes anew.
    let mut changed = true;
    while changed {
        changed = false;
        for (british, american) in SPELLING_FOLDS {
            if token.contains(british) {
                *token = token.replace(british, american);
                changed = true;
            }
        }
    }
}

fn greek_letter_name(c: char) -> Option<&'static str> {
    let name = match c {
        'α' | 'Α' => "alpha",
        'β' | 'Β' | 'ϐ' => "beta",
        'γ' | 'Γ' => "gamma",
        'δ' | 'Δ' => "delta",
        'ε' | 'Ε' | 'ϵ' => "epsilon",
        'ζ' | 'Ζ' => "zeta",
        'η' | 'Η' => "eta",
        'θ' | 'Θ' | 'ϑ' => "theta",
        'ι' | 'Ι' => "iota",
        'κ' | 'Κ' | 'ϰ' => "kappa",
        'λ' | 'Λ' => "lambda",
        'μ' | 'Μ' => "mu",
        'ν' | 'Ν' => "nu",
        'ξ' | 'Ξ' => "xi",
        'ο' | 'Ο' => "omicron",
        'π' | 'Π' | 'ϖ' => "pi",
        'ρ' | 'Ρ' | 'ϱ' => "rho",
        'σ' | 'ς' | 'Σ' => "sigma",
        'τ' | 'Τ' => "tau",
        'υ' | 'Υ' => "upsilon",
        'φ' | 'Φ' | 'ϕ' => "phi",
        'χ' | 'Χ' => "chi",
        'ψ' | 'Ψ' => "psi",
        'ω' | 'Ω' => "omega",
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_punctuation_and_whitespace() {
        assert_eq!(fold("  Colorectal   ADENOMAS. "), "colorectal adenomas");
        assert_eq!(fold("Breast-Ovarian Cancer, Familial"), "breast ovarian cancer familial");
        assert_eq!(fold("a\tb\nc"), "a b c");
    }

    #[test]
    fn hyphen_and_dash_variants_are_equivalent() {
        let expected = "non small cell";
        for text in ["non-small cell", "non‐small cell", "non–small cell", "non—small cell", "non−small cell"] {
            assert_eq!(fold(text), expected, "{text}");
        }
    }

    #[test]
    fn soft_hyphen_and_zero_width_space_do_not_split_words() {
        assert_eq!(fold("hyper\u{AD}tension"), "hypertension");
        assert_eq!(fold("hyper\u{200B}tension"), "hypertension");
    }

    #[test]
    fn compatibility_forms_and_diacritics() {
        assert_eq!(fold("Sjögren syndrome"), "sjogren syndrome");
        assert_eq!(fold("Ménière’s disease"), "meniere disease");
        assert_eq!(fold("ﬁbrosis"), "fibrosis");
        assert_eq!(fold("ＣＯＶＩＤ１９"), "covid 19");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("STRAẞE"), "strasse");
    }

    #[test]
    fn spelling_folds_reach_a_fixed_point() {
        // Found by cargo fuzz: each fold here makes a new match for the next one.
        assert_eq!(fold("aaaeme"), "eme");
        assert_eq!(fold(&fold("aaaeme")), "eme");
    }

    #[test]
    fn greek_letters_are_spelled_out() {
        assert_eq!(fold("α-thalassemia"), "alpha thalassemia");
        assert_eq!(fold("Alpha thalassemia"), "alpha thalassemia");
        assert_eq!(fold("TNFα"), "tnf alpha");
        assert_eq!(fold("β2-microglobulin"), "beta 2 microglobulin");
        assert_eq!(fold("5 µm"), "5 mu m");
    }

    #[test]
    fn letters_and_digits_are_split() {
        assert_eq!(fold("type2 diabetes"), fold("Type 2 diabetes"));
        assert_eq!(fold("IL-6"), fold("IL6"));
        assert_eq!(fold("16p11.2"), "16 p 11 2");
    }

    #[test]
    fn possessive_s_is_dropped() {
        assert_eq!(fold("Alzheimer's disease"), "alzheimer disease");
        assert_eq!(fold("Alzheimer’s disease"), "alzheimer disease");
        assert_eq!(fold("Alzheimer disease"), "alzheimer disease");
        // A quoted single letter is not a possessive.
        assert_eq!(fold("vitamin 's'"), "vitamin s");
    }

    #[test]
    fn british_spellings_fold_to_american() {
        assert_eq!(fold("Anaemia"), "anemia");
        assert_eq!(fold("haemorrhage"), "hemorrhage");
        assert_eq!(fold("ischaemic stroke"), "ischemic stroke");
        assert_eq!(fold("Oesophageal tumours"), "esophageal tumors");
        assert_eq!(fold("Phaeochromocytoma, muscle fibres"), "pheochromocytoma muscle fibers");
        assert_eq!(fold("diarrhoea"), "diarrhea");
        assert_eq!(fold("paediatric"), "pediatric");
    }

    #[test]
    fn empty_and_symbol_only_text() {
        assert_eq!(fold(""), "");
        assert_eq!(fold(" -- ,; "), "");
        assert!(tokenize("").is_empty());
    }

    #[test]
    fn token_spans_are_character_offsets_into_the_original() {
        let text = "Ménière’s disease (MD) — ﬁbrosis";
        let tokens = tokenize(text);
        let chars: Vec<char> = text.chars().collect();
        let spans: Vec<(String, String)> =
            tokens.iter().map(|t| (t.text.clone(), chars[t.start..t.end].iter().collect())).collect();
        assert_eq!(
            spans,
            vec![
                ("meniere".to_string(), "Ménière".to_string()),
                ("disease".to_string(), "disease".to_string()),
                ("md".to_string(), "MD".to_string()),
                ("fibrosis".to_string(), "ﬁbrosis".to_string()),
            ]
        );
    }

    #[test]
    fn normalization_is_idempotent() {
        for text in ["Ménière’s disease", "TNFα-induced Anaemia", "16p11.2 deletion", "Crohn's"] {
            let once = fold(text);
            assert_eq!(fold(&once), once, "{text}");
        }
    }
}
