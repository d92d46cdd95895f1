//! The dictionary format of BioSyn and SapBERT: one concept per line,
//! `ID[|ALT_ID...]||preferred name[|synonym...]` (e.g. `medic_06Jul2012.txt`).
//! Lines repeating an id add their names to it. Names carry the XML character references of
//! the CTD export they come from ("Lyell&apos;s Syndrome", "Sj&#246;gren"): they are decoded.

use std::borrow::Cow;

use super::{clip, split_list, Concept, ConceptList, Lines, NameKind, Ontology, ReadError, Result};

pub(crate) fn parse(lines: &mut Lines) -> Result<Ontology> {
    let mut concepts = ConceptList::default();
    while let Some(line) = lines.next_line()? {
        let number = lines.line_number();
        if line.trim().is_empty() {
            continue;
        }
        let Some((ids, names)) = line.split_once("||") else {
            return Err(ReadError::syntax(
                number,
                format!("expected 'ID||name|synonym...' (no '||' separator): '{}'", clip(&line)),
            ));
        };
        let mut ids = split_list(ids);
        let mut names = split_list(names);
        let (Some(id), Some(name)) = (ids.next(), names.next()) else {
            return Err(ReadError::syntax(number, format!("empty concept id or name: '{}'", clip(&line))));
        };
        let mut concept = Concept::new(id, decode_character_references(name));
        concept.alt_ids = ids.map(String::from).collect();
        for synonym in names {
            concept.add_synonym(&decode_character_references(synonym), NameKind::Exact);
        }
        concepts.merge(concept);
    }
    Ok(Ontology { format: super::Format::Biosyn, version: None, concepts: concepts.into_vec() })
}

/// `text` with XML's five named references and numeric ones (`&#246;`, `&#xF6;`) replaced by
/// their characters; anything else that starts with '&' is kept as written.
fn decode_character_references(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut decoded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        decoded.push_str(&rest[..at]);
        rest = &rest[at..];
        let character = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let character = match &rest[1..end] {
                "apos" => Some('\''),
                "quot" => Some('"'),
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                reference => match reference.strip_prefix("#x").or_else(|| reference.strip_prefix("#X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok().and_then(char::from_u32),
                    None => reference.strip_prefix('#').and_then(|n| n.parse().ok()).and_then(char::from_u32),
                },
            };
            character.map(|c| (c, end))
        });
        match character {
            Some((c, end)) => {
                decoded.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                decoded.push('&');
                rest = &rest[1..];
            }
        }
    }
    decoded.push_str(rest);
    Cow::Owned(decoded)
}

#[cfg(test)]
mod tests {
    use super::decode_character_references;

    #[test]
    fn character_references_are_decoded_and_other_ampersands_kept() {
        assert_eq!(decode_character_references("Lyell&apos;s Syndrome"), "Lyell's Syndrome");
        assert_eq!(decode_character_references("Marinesco-Sj&#246;gren"), "Marinesco-Sjögren");
        assert_eq!(decode_character_references("Sj&#xF6;gren &amp; &lt;b&gt; &quot;x&quot;"), "Sjögren & <b> \"x\"");
        assert_eq!(decode_character_references("R&D; AT&T &#xZZ; &#1114112; & &;"), "R&D; AT&T &#xZZ; &#1114112; & &;");
        assert_eq!(decode_character_references("trailing &amp"), "trailing &amp");
    }
}
