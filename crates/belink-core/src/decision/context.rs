//! The mention in its context, as the re-ranker is shown it: marked with [brackets], cut to a
//! window of characters on each side.

use crate::mentions::abbreviations::find_abbreviations;

/// Up to `window` characters of `text` on each side of the mention `[start, end)`, the mention
/// in [brackets], cut at word boundaries.
pub fn context_window(text: &str, start: usize, end: usize, window: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let (start, end) = (start.min(chars.len()), end.min(chars.len()).max(start.min(chars.len())));
    let mut from = start.saturating_sub(window);
    while from > 0 && from < start && !chars[from - 1].is_whitespace() {
        from += 1;
    }
    let mut to = (end + window).min(chars.len());
    while to < chars.len() && to > end && !chars[to].is_whitespace() {
        to -= 1;
    }
    let piece = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    let before = if from > 0 { "... " } else { "" };
    let after = if to < chars.len() { " ..." } else { "" };
    format!("{before}{}[{}]{}{after}", piece(from, start), piece(start, end), piece(end, to))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The mention marked in `context` (its first exact, then case-insensitive occurrence), cut
/// to `window` characters on each side; the context's start when the mention is not in it.
pub fn marked_context(context: &str, mention: &str, window: usize) -> String {
    let chars: Vec<char> = context.chars().collect();
    let needle: Vec<char> = mention.chars().collect();
    let lower = |c: &char| c.to_lowercase().collect::<String>();
    let starts = 0..chars.len().saturating_sub(needle.len()) + 1;
    let found = starts.clone().find(|&i| chars[i..].starts_with(&needle)).or_else(|| {
        starts
            .clone()
            .find(|&i| chars[i..i + needle.len().min(chars.len() - i)].iter().map(lower).eq(needle.iter().map(lower)))
    });
    match found {
        Some(start) if !needle.is_empty() && start + needle.len() <= chars.len() => {
            context_window(context, start, start + needle.len(), window)
        }
        _ => context_window(context, 0, 0, window).trim_start_matches("[]").trim().to_string(),
    }
}

/// The long form of `mention` when `context` defines it as an abbreviation ("familial
/// adenomatous polyposis (FAP)"): what linking looks such a mention up by, and so does
/// belink_normalize when given the context.
pub fn defined_long_form(mention: &str, context: &str) -> Option<String> {
    let mention = mention.trim();
    find_abbreviations(context).into_iter().find(|a| a.short_form == mention).map(|a| a.long_form)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_windows_mark_the_mention() {
        let text = "In this family, five members had familial adenomatous polyposis and two had colon cancer early.";
        let start = text.find("familial").unwrap();
        let end = start + "familial adenomatous polyposis".len();
        assert_eq!(
            context_window(text, start, end, 20),
            "... five members had [familial adenomatous polyposis] and two had colon ..."
        );
        assert_eq!(context_window("FAP", 0, 3, 50), "[FAP]");
        let multibyte = "Ménière’s — FAP ✓";
        assert_eq!(context_window(multibyte, 12, 15, 100), "Ménière’s — [FAP] ✓");
    }

    #[test]
    fn a_given_context_is_marked_where_the_mention_occurs() {
        let context = "Two had Colon Cancer early; colon cancer ran in the family.";
        assert_eq!(
            marked_context(context, "colon cancer", 100),
            "Two had Colon Cancer early; [colon cancer] ran in the family."
        );
        assert_eq!(
            marked_context(context, "COLON CANCER", 100),
            "Two had [Colon Cancer] early; colon cancer ran in the family."
        );
        assert_eq!(marked_context(context, "aniridia", 10), "Two had ...");
        assert_eq!(marked_context("", "aniridia", 10), "");
    }

    #[test]
    fn an_abbreviation_defined_in_the_context_gives_its_long_form() {
        let context = "Patients with familial adenomatous polyposis (FAP) develop adenomas.";
        assert_eq!(defined_long_form("FAP", context).as_deref(), Some("familial adenomatous polyposis"));
        assert_eq!(defined_long_form(" FAP ", context).as_deref(), Some("familial adenomatous polyposis"));
        assert_eq!(defined_long_form("fap", context), None, "short forms are case-sensitive");
        assert_eq!(defined_long_form("adenomas", context), None);
        assert_eq!(defined_long_form("FAP", "FAP was suspected."), None);
    }
}
