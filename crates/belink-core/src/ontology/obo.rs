//! OBO 1.2/1.4 flat files: `[Term]` stanzas of `tag: value` lines.
//!
//! Read: id, name, def, synonym (scope and type; also the OBO 1.2 `exact_synonym:` family),
//! alt_id, is_a, xref, is_obsolete, replaced_by, and the header's data-version (or date).
//! `[Typedef]` and `[Instance]` stanzas are skipped; any other stanza type is an error.

use super::{clip, Concept, ConceptList, Lines, NameKind, Ontology, ReadError, Result};

pub(crate) fn parse(lines: &mut Lines) -> Result<Ontology> {
    let mut concepts = ConceptList::default();
    let mut version = None;
    let mut date = None;
    let mut stanza = Stanza::Header;
    let mut term: Option<TermBuilder> = None;

    while let Some(line) = lines.next_line()? {
        let number = lines.line_number();
        let line = line.trim();
        if line.is_empty() || line.starts_with('!') {
            continue;
        }
        if line.starts_with('[') {
            if let Some(done) = term.take() {
                concepts.insert_unique(done.finish()?, done.line)?;
            }
            let Some(kind) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
                return Err(ReadError::syntax(number, format!("malformed stanza header '{line}'")));
            };
            stanza = match kind.trim() {
                "Term" => {
                    term = Some(TermBuilder::new(number));
                    Stanza::Term
                }
                "Typedef" | "Instance" => Stanza::Skipped,
                other => {
                    return Err(ReadError::syntax(
                        number,
                        format!("unknown stanza type [{other}] (expected [Term], [Typedef] or [Instance])"),
                    ))
                }
            };
            continue;
        }
        let Some((tag, value)) = line.split_once(':') else {
            return Err(ReadError::syntax(number, format!("expected 'tag: value', found '{}'", clip(line))));
        };
        let (tag, value) = (tag.trim(), value.trim());
        match stanza {
            Stanza::Header => match tag {
                "data-version" => version = Some(unquoted(value, number)?),
                "date" => date = Some(unquoted(value, number)?),
                _ => {}
            },
            Stanza::Term => {
                let builder = term.as_mut().expect("a [Term] stanza has a builder");
                builder.tag(tag, value, number)?;
            }
            Stanza::Skipped => {}
        }
    }
    if let Some(done) = term.take() {
        concepts.insert_unique(done.finish()?, done.line)?;
    }
    Ok(Ontology { format: super::Format::Obo, version: version.or(date), concepts: concepts.into_vec() })
}

#[derive(Clone, Copy)]
enum Stanza {
    Header,
    Term,
    Skipped,
}

struct TermBuilder {
    line: usize,
    concept: Concept,
    has_id: bool,
    has_name: bool,
}

impl TermBuilder {
    fn new(line: usize) -> TermBuilder {
        TermBuilder { line, concept: Concept::default(), has_id: false, has_name: false }
    }

    fn tag(&mut self, tag: &str, value: &str, line: usize) -> Result<()> {
        let concept = &mut self.concept;
        match tag {
            "id" => {
                if self.has_id {
                    return Err(ReadError::syntax(line, "a [Term] has two id tags"));
                }
                concept.id = first_word(&unquoted(value, line)?);
                if concept.id.is_empty() {
                    return Err(ReadError::syntax(line, "empty id"));
                }
                self.has_id = true;
            }
            "name" => {
                concept.name = unquoted(value, line)?;
                self.has_name = true;
            }
            "def" => concept.definition = Some(quoted(value, line)?.0),
            "synonym" => {
                let (text, rest) = quoted(value, line)?;
                if let Some(kind) = synonym_kind(rest, line)? {
                    self.add_synonym(text, kind);
                }
            }
            "exact_synonym" | "related_synonym" | "narrow_synonym" | "broad_synonym" => {
                let (text, _) = quoted(value, line)?;
                let kind = match tag {
                    "exact_synonym" => NameKind::Exact,
                    "narrow_synonym" => NameKind::Narrow,
                    "broad_synonym" => NameKind::Broad,
                    _ => NameKind::Related,
                };
                self.add_synonym(text, kind);
            }
            "alt_id" => concept.alt_ids.push(first_word(&unquoted(value, line)?)),
            "is_a" => concept.parents.push(first_word(&unquoted(value, line)?)),
            "xref" => concept.xrefs.push(first_word(&unquoted(value, line)?)),
            "replaced_by" => concept.replaced_by.push(first_word(&unquoted(value, line)?)),
            "is_obsolete" => concept.obsolete = unquoted(value, line)? == "true",
            _ => {}
        }
        Ok(())
    }

    fn add_synonym(&mut self, text: String, kind: NameKind) {
        // Synonyms may come before the name tag; keep them apart until the stanza ends.
        self.concept.synonyms.push(super::Synonym { text, kind });
    }

    fn finish(&self) -> Result<Concept> {
        if !self.has_id {
            return Err(ReadError::syntax(self.line, "[Term] stanza without an id"));
        }
        let mut concept = self.concept.clone();
        let synonyms = std::mem::take(&mut concept.synonyms);
        if !self.has_name {
            // Rare, but legal: fall back to the first exact synonym, else the id.
            concept.name = synonyms
                .iter()
                .find(|s| s.kind == NameKind::Exact)
                .map(|s| s.text.clone())
                .unwrap_or_else(|| concept.id.clone());
        }
        for synonym in synonyms {
            concept.add_synonym(&synonym.text, synonym.kind);
        }
        Ok(concept)
    }
}

/// The kind of a synonym from what follows its quoted text: `SCOPE [TYPE] [xrefs]`.
/// Synonyms typed as obsolete (HPO's `obsolete_synonym`) are dropped (`None`).
fn synonym_kind(rest: &str, line: usize) -> Result<Option<NameKind>> {
    let before_xrefs = rest.split('[').next().unwrap_or("");
    let mut words = before_xrefs.split_whitespace();
    let scope = words.next().unwrap_or("RELATED");
    let synonym_type = words.next().unwrap_or("").to_ascii_lowercase();
    if synonym_type.contains("obsolete") {
        return Ok(None);
    }
    let kind = match scope {
        "EXACT" if synonym_type.contains("abbrev") || synonym_type.contains("acronym") => NameKind::Abbreviation,
        "EXACT" => NameKind::Exact,
        "RELATED" => NameKind::Related,
        "NARROW" => NameKind::Narrow,
        "BROAD" => NameKind::Broad,
        other => {
            return Err(ReadError::syntax(
                line,
                format!("unknown synonym scope '{other}' (expected EXACT, RELATED, NARROW or BROAD)"),
            ))
        }
    };
    Ok(Some(kind))
}

/// Parses `"text" rest`: the quoted string (escapes resolved) and what follows it.
fn quoted(value: &str, line: usize) -> Result<(String, &str)> {
    let Some(body) = value.strip_prefix('"') else {
        return Err(ReadError::syntax(line, format!("expected a quoted string, found '{}'", clip(value))));
    };
    let mut text = String::with_capacity(body.len());
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((text.trim().to_string(), body[i + 1..].trim())),
            '\\' => text.push(escaped(chars.next().map(|(_, e)| e), line)?),
            _ => text.push(c),
        }
    }
    Err(ReadError::syntax(line, "unterminated quoted string (no closing \")"))
}

/// An unquoted value: escapes resolved, trailing `! comment` and `{qualifiers}` removed.
fn unquoted(value: &str, line: usize) -> Result<String> {
    let mut text = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '!' => break,
            '\\' => text.push(escaped(chars.next(), line)?),
            _ => text.push(c),
        }
    }
    let mut text = text.trim_end();
    if text.ends_with('}') {
        if let Some(open) = text.rfind('{') {
            text = text[..open].trim_end();
        }
    }
    Ok(text.to_string())
}

/// The character an OBO escape sequence `\c` stands for.
fn escaped(next: Option<char>, line: usize) -> Result<char> {
    match next {
        Some('n' | 't' | 'W') => Ok(' '),
        Some(c @ ('"' | '\\' | ':' | ',' | '(' | ')' | '[' | ']' | '{' | '}' | '!' | '\'' | '/')) => Ok(c),
        Some(c) => Err(ReadError::syntax(line, format!("bad escape sequence '\\{c}'"))),
        None => Err(ReadError::syntax(line, "bad escape: a backslash ends the line")),
    }
}

fn first_word(value: &str) -> String {
    value.split_whitespace().next().unwrap_or("").to_string()
}
