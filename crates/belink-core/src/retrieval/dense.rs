//! The dense source's query side. A mention written like one of its exact matches takes that
//! name's stored embedding, made by the same encoder as every target's: linking then needs no
//! encoder request for a mention written like a name of the ontology. The model server embeds
//! the others, in one request. Indexing uses the same notion of alike: a text is embedded once
//! for every name written like it.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::catalog::OntologyState;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::ports::{Models, NameStore};
use crate::retrieval::fuse::Hit;
use crate::retrieval::Query;

/// Whether the sentence encoder gives `a` and `b` the same vector: the same text, or, for an
/// encoder that ignores case (its tokenizer lowercases first, as uncased BERT models do), texts
/// that differ only in the case of ASCII letters. Special tokens written out in a text
/// ("[CLS]", "<s>") are matched by tokenizers before they lowercase, so texts with `[` or `<`
/// count as alike only when equal.
pub fn embed_alike(a: &str, b: &str, encoder_ignores_case: bool) -> bool {
    // Compared in place: linking asks this of every exact match of a mention.
    a == b || (encoder_ignores_case && a.eq_ignore_ascii_case(b) && !a.contains(['[', '<']))
}

/// The form of `text` that texts [embedded alike](embed_alike) share, as a key to group them by
/// (sql/index.sql counts the texts to embed with the same key).
fn embedding_key(text: &str, encoder_ignores_case: bool) -> Cow<'_, str> {
    if encoder_ignores_case && text.bytes().any(|b| b.is_ascii_uppercase()) && !text.contains(['[', '<']) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// Texts to embed, each written once however many names share it (alike, as the encoder sees
/// them): a UMLS-size vocabulary writes about half of its names the same as another.
#[derive(Debug, Default)]
pub struct AlikeTexts {
    encoder_ignores_case: bool,
    texts: Vec<String>,
    index_of: HashMap<String, usize>,
}

impl AlikeTexts {
    pub fn new(encoder_ignores_case: bool) -> Self {
        AlikeTexts { encoder_ignores_case, ..AlikeTexts::default() }
    }

    /// The index of the text `text` is embedded as, added to the texts if none is alike.
    pub fn add(&mut self, text: &str) -> usize {
        let key = embedding_key(text, self.encoder_ignores_case).into_owned();
        let next = self.texts.len();
        let index = *self.index_of.entry(key).or_insert(next);
        if index == next {
            self.texts.push(text.to_string());
        }
        index
    }

    /// The index of the text alike `text`, if one was added.
    pub fn find(&self, text: &str) -> Option<usize> {
        self.index_of.get(embedding_key(text, self.encoder_ignores_case).as_ref()).copied()
    }

    /// The texts in the order of their indices.
    pub fn into_texts(self) -> Vec<String> {
        self.texts
    }
}

/// A vector can only search ontologies embedded with an encoder of its dimension.
pub(crate) fn check_dimensions(vector: &[f32], targets: &[&OntologyState]) -> Result<()> {
    for ontology in targets {
        let Some(embeddings) = &ontology.embeddings else { continue };
        if embeddings.dim != vector.len() {
            return Err(Error::EncoderMismatch {
                ontology: ontology.name.clone(),
                model: embeddings.model.clone(),
                dim: embeddings.dim,
                server_dim: vector.len(),
            });
        }
    }
    Ok(())
}

/// A query's dense targets split by the encoder they were embedded with: each part is searched
/// with the query's vector by that encoder.
pub(crate) fn by_encoder(targets: Vec<&OntologyState>) -> Vec<Vec<&OntologyState>> {
    let mut parts: Vec<Vec<&OntologyState>> = Vec::new();
    for target in targets {
        let model = target.embeddings.as_ref().map(|e| e.request_model());
        match parts.iter_mut().find(|p| p[0].embeddings.as_ref().map(|e| e.request_model()) == model) {
            Some(part) => part.push(target),
            None => parts.push(vec![target]),
        }
    }
    parts
}

impl<S: NameStore, M: Models> Pipeline<'_, S, M> {
    /// The vector of each (query index, targets of one encoder) search.
    pub(crate) fn query_vectors(
        &self,
        queries: &[Query],
        exact: &[Vec<Hit>],
        searches: &[(usize, Vec<&OntologyState>)],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let alike: Vec<Option<&Hit>> =
            searches.iter().map(|(i, targets)| self.stored_alike(&queries[*i], &exact[*i], targets)).collect();
        let wanted: Vec<&Hit> = alike.iter().flatten().copied().collect();
        let mut stored = match wanted.is_empty() {
            true => Vec::new(),
            false => self.store.stored_vectors(&wanted)?,
        }
        .into_iter();
        let mut vectors: Vec<Option<Vec<f32>>> =
            alike.iter().map(|hit| hit.and_then(|_| stored.next().flatten())).collect();
        // The others are embedded, one request per encoder, with those whose name was added
        // after the last belink_index (it has no stored embedding yet).
        let model_of = |s: usize| searches[s].1[0].embeddings.as_ref().map_or("", |e| e.request_model());
        let mut models: Vec<&str> = (0..searches.len()).filter(|&s| vectors[s].is_none()).map(model_of).collect();
        models.sort_unstable();
        models.dedup();
        for model in models {
            let to_embed: Vec<usize> =
                (0..searches.len()).filter(|&s| vectors[s].is_none() && model_of(s) == model).collect();
            let texts = to_embed.iter().map(|&s| queries[searches[s].0].text.to_string()).collect();
            for (s, vector) in to_embed.into_iter().zip(self.models.embed(model, texts)?) {
                vectors[s] = Some(vector);
            }
        }
        Ok(vectors)
    }

    /// An exact match written like the query whose ontology was embedded by the same encoder
    /// as every target.
    fn stored_alike<'h>(&self, query: &Query, hits: &'h [Hit], targets: &[&OntologyState]) -> Option<&'h Hit> {
        hits.iter().find(|hit| {
            let Some(embeddings) = self.ontologies.get(&hit.ontology).and_then(|o| o.embeddings.as_ref()) else {
                return false;
            };
            let same_model = |t: &&OntologyState| t.embeddings.as_ref().is_some_and(|e| e.model == embeddings.model);
            embed_alike(query.text, &hit.matched_name, embeddings.ignores_case) && targets.iter().all(same_model)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{embed_alike, embedding_key, AlikeTexts};

    #[test]
    fn alike_texts_are_embedded_once_and_found_by_any_of_their_forms() {
        let mut texts = AlikeTexts::new(true);
        let indices: Vec<usize> =
            ["Lipoma", "LIPOMA", "lipomas", "lipoma", "a [MASK]", "a [mask]"].iter().map(|t| texts.add(t)).collect();
        assert_eq!(indices, [0, 0, 1, 0, 2, 3]);
        assert_eq!(texts.find("LiPoMa"), Some(0));
        assert_eq!(texts.find("lipomatosis"), None);
        assert_eq!(texts.into_texts(), ["Lipoma", "lipomas", "a [MASK]", "a [mask]"]);
        // A cased encoder: only equal texts.
        let mut texts = AlikeTexts::new(false);
        assert_eq!((texts.add("Lipoma"), texts.add("LIPOMA"), texts.add("Lipoma")), (0, 1, 0));
        assert_eq!(texts.find("lipoma"), None);
    }

    #[test]
    fn texts_share_a_key_exactly_when_they_are_embedded_alike() {
        let texts = [
            "Lipoma",
            "LIPOMA",
            "lipoma",
            "Lipomas",
            "a [MASK]",
            "a [mask]",
            "A [MASK]",
            "<s> x",
            "ÉCLAMPSIA",
            "éclampsia",
        ];
        for ignores_case in [false, true] {
            for a in texts {
                for b in texts {
                    let same_key = embedding_key(a, ignores_case) == embedding_key(b, ignores_case);
                    assert_eq!(same_key, embed_alike(a, b, ignores_case), "{a} / {b}, ignores case: {ignores_case}");
                }
            }
        }
    }

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
