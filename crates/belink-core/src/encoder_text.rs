//! When two texts are sure to get the same sentence vector, so that a name's stored embedding
//! can stand in for a mention's: linking then needs no encoder request for a mention written
//! like a name of the ontology.

/// Whether the sentence encoder gives `a` and `b` the same vector: the same text, or, for an
/// encoder that ignores case (its tokenizer lowercases first, as uncased BERT models do), texts
/// that differ only in the case of ASCII letters. Special tokens written out in a text
/// ("[CLS]", "<s>") are matched by tokenizers before they lowercase, so texts with `[` or `<`
/// count as alike only when equal.
pub fn embed_alike(a: &str, b: &str, encoder_ignores_case: bool) -> bool {
    a == b || (encoder_ignores_case && a.eq_ignore_ascii_case(b) && !a.contains(['[', '<']))
}

#[cfg(test)]
mod tests {
    use super::embed_alike;

    #[test]
    fn equal_texts_always_and_other_cases_only_for_an_uncased_encoder() {
        assert!(embed_alike("Aniridia", "Aniridia", false));
        assert!(!embed_alike("Aniridia", "aniridia", false));
        assert!(embed_alike("Aniridia", "aniridia", true));
        assert!(embed_alike("Pelizaeus-Merzbacher disease", "pelizaeus-merzbacher Disease", true));
    }

    #[test]
    fn other_characters_and_special_tokens_are_not_alike() {
        // Hyphens, spaces and accents reach the tokenizer as they are.
        assert!(!embed_alike("Pelizaeus Merzbacher disease", "Pelizaeus-Merzbacher disease", true));
        assert!(!embed_alike("Sjögren syndrome", "Sjogren syndrome", true));
        assert!(!embed_alike("ÉCLAMPSIA", "éclampsia", true), "only ASCII letters fold");
        assert!(!embed_alike("a [MASK] b", "a [mask] b", true));
        assert!(!embed_alike("<s> x", "<S> x", true));
        assert!(embed_alike("a [MASK] b", "a [MASK] b", true));
    }
}
