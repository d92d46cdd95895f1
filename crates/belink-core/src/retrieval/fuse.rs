//! Fusing ranked candidate lists from the retrieval sources (exact, trigram, dense) into
//! one list of concepts: reciprocal-rank fusion, score = Σ 1 / (k + rank) over the sources
//! that found the concept.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

/// A retrieval source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The folded mention equals a name.
    Exact,
    /// Character trigram similarity of folded texts.
    Trigram,
    /// Cosine similarity of sentence embeddings.
    Dense,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Exact, Source::Trigram, Source::Dense];

    pub fn name(self) -> &'static str {
        match self {
            Source::Exact => "exact",
            Source::Trigram => "trigram",
            Source::Dense => "dense",
        }
    }
}

/// One retrieved name: which concept it belongs to, and the name itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub ontology: String,
    pub concept_id: String,
    pub matched_name: String,
    /// How similar the name is to the query by its source's own measure: 1 for an exact
    /// match, pg_trgm's similarity of the folded texts, the cosine similarity of the vectors.
    pub similarity: f64,
}

/// 1-based rank of a concept in each source's list, None where the source missed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ranks {
    pub exact: Option<usize>,
    pub trigram: Option<usize>,
    pub dense: Option<usize>,
}

impl Ranks {
    pub fn of(&self, source: Source) -> Option<usize> {
        match source {
            Source::Exact => self.exact,
            Source::Trigram => self.trigram,
            Source::Dense => self.dense,
        }
    }

    fn set(&mut self, source: Source, rank: usize) {
        match source {
            Source::Exact => self.exact = Some(rank),
            Source::Trigram => self.trigram = Some(rank),
            Source::Dense => self.dense = Some(rank),
        }
    }

    fn best(&self) -> usize {
        [self.exact, self.trigram, self.dense].into_iter().flatten().min().unwrap_or(usize::MAX)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub ontology: String,
    pub concept_id: String,
    /// The name through which the best-ranking source found the concept.
    pub matched_name: String,
    pub score: f64,
    pub ranks: Ranks,
    /// The highest similarity of any of the concept's names found by any source (see
    /// [`Hit::similarity`]): how well the concept's best name matches the query.
    pub similarity: f64,
    /// The source that ranked the concept best.
    pub best_source: Source,
}

/// Each source's hits, best first; several names per concept allowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceLists<'a> {
    pub exact: &'a [Hit],
    pub trigram: &'a [Hit],
    pub dense: &'a [Hit],
}

/// How much each source's reciprocal rank counts in an ontology's fused score. Stored per
/// ontology (belink.ontologies.fusion_*), chosen by measurement ([`crate::retrieval::tune`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusionWeights {
    pub exact: f64,
    pub trigram: f64,
    pub dense: f64,
}

impl Default for FusionWeights {
    /// Plain reciprocal-rank fusion.
    fn default() -> Self {
        FusionWeights { exact: 1.0, trigram: 1.0, dense: 1.0 }
    }
}

impl FusionWeights {
    /// Only `source` counts.
    pub fn only(source: Source) -> FusionWeights {
        let mut weights = FusionWeights { exact: 0.0, trigram: 0.0, dense: 0.0 };
        *weights.of_mut(source) = 1.0;
        weights
    }

    pub fn of(&self, source: Source) -> f64 {
        match source {
            Source::Exact => self.exact,
            Source::Trigram => self.trigram,
            Source::Dense => self.dense,
        }
    }

    fn of_mut(&mut self, source: Source) -> &mut f64 {
        match source {
            Source::Exact => &mut self.exact,
            Source::Trigram => &mut self.trigram,
            Source::Dense => &mut self.dense,
        }
    }

    /// Σ weight / (k + rank) over the sources that found the concept.
    pub fn score(&self, ranks: &Ranks, rrf_k: f64) -> f64 {
        Source::ALL.iter().filter_map(|&s| ranks.of(s).map(|rank| self.of(s) / (rrf_k + rank as f64))).sum()
    }
}

/// Fuses the sources' lists into concepts, best first, each ontology's concepts scored with its
/// weights. Ranks count concepts, not names; all exact matches share rank 1.
pub fn fuse(lists: SourceLists, rrf_k: f64, weights_of: impl Fn(&str) -> FusionWeights) -> Vec<Fused> {
    let mut fused: Vec<Fused> = Vec::new();
    let mut position: HashMap<(&str, &str), usize> = HashMap::new();
    let sources = [(Source::Exact, lists.exact), (Source::Trigram, lists.trigram), (Source::Dense, lists.dense)];
    for (source, hits) in sources {
        let mut rank = 0;
        let mut seen = HashSet::new();
        for hit in hits {
            let key = (hit.ontology.as_str(), hit.concept_id.as_str());
            if !seen.insert(key) {
                // A further name of a concept already ranked: only its similarity counts.
                if let Some(&index) = position.get(&key) {
                    fused[index].similarity = fused[index].similarity.max(hit.similarity);
                }
                continue;
            }
            rank = if source == Source::Exact { 1 } else { rank + 1 };
            let index = *position.entry(key).or_insert_with(|| {
                fused.push(Fused {
                    ontology: hit.ontology.clone(),
                    concept_id: hit.concept_id.clone(),
                    matched_name: hit.matched_name.clone(),
                    score: 0.0,
                    ranks: Ranks::default(),
                    similarity: 0.0,
                    best_source: source,
                });
                fused.len() - 1
            });
            let entry = &mut fused[index];
            entry.similarity = entry.similarity.max(hit.similarity);
            entry.ranks.set(source, rank);
            let best_rank = entry.ranks.of(entry.best_source).unwrap_or(usize::MAX);
            if rank < best_rank {
                entry.best_source = source;
                entry.matched_name = hit.matched_name.clone();
            }
        }
    }
    rescore(&mut fused, rrf_k, weights_of);
    fused
}

/// Scores fused concepts with the given weights and sorts them, best first.
pub fn rescore(fused: &mut [Fused], rrf_k: f64, weights_of: impl Fn(&str) -> FusionWeights) {
    for entry in fused.iter_mut() {
        entry.score = weights_of(&entry.ontology).score(&entry.ranks, rrf_k);
    }
    fused.sort_by(|a, b| order(a, a.score, b, b.score));
}

/// The order of fused concepts given their scores: the higher score first, then the better
/// best rank, the earlier source, and the ids (so that the order never depends on the input's).
pub(crate) fn order(a: &Fused, a_score: f64, b: &Fused, b_score: f64) -> Ordering {
    b_score
        .total_cmp(&a_score)
        .then_with(|| a.ranks.best().cmp(&b.ranks.best()))
        .then_with(|| a.best_source.cmp(&b.best_source))
        .then_with(|| (&a.ontology, &a.concept_id).cmp(&(&b.ontology, &b.concept_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(_: &str) -> FusionWeights {
        FusionWeights::default()
    }

    fn hits(concepts: &[&str]) -> Vec<Hit> {
        concepts
            .iter()
            .map(|c| Hit {
                ontology: "o".into(),
                concept_id: c.to_string(),
                similarity: 0.5,
                matched_name: format!("name of {c}"),
            })
            .collect()
    }

    #[test]
    fn concepts_found_by_more_sources_rank_higher() {
        let exact = hits(&[]);
        let trigram = hits(&["A", "B", "C"]);
        let dense = hits(&["B", "D", "A"]);
        let fused = fuse(SourceLists { exact: &exact, trigram: &trigram, dense: &dense }, 60.0, unit);
        let order: Vec<&str> = fused.iter().map(|f| f.concept_id.as_str()).collect();
        assert_eq!(order, ["B", "A", "D", "C"]);
        assert_eq!(fused[0].ranks, Ranks { exact: None, trigram: Some(2), dense: Some(1) });
        assert_eq!(fused[0].best_source, Source::Dense, "dense ranked B first");
        let expected = 1.0 / 62.0 + 1.0 / 61.0;
        assert!((fused[0].score - expected).abs() < 1e-12);
    }

    #[test]
    fn several_names_of_one_concept_count_once_and_exact_matches_share_rank_one() {
        let exact = hits(&["X", "Y"]);
        let trigram = hits(&["X", "X", "Z"]);
        let fused = fuse(SourceLists { exact: &exact, trigram: &trigram, dense: &[] }, 60.0, unit);
        assert_eq!(fused[0].concept_id, "X");
        assert_eq!(fused[0].ranks, Ranks { exact: Some(1), trigram: Some(1), dense: None });
        let y = fused.iter().find(|f| f.concept_id == "Y").unwrap();
        assert_eq!(y.ranks.exact, Some(1));
        let z = fused.iter().find(|f| f.concept_id == "Z").unwrap();
        assert_eq!(z.ranks.trigram, Some(2), "ranks count concepts, not names");
        assert_eq!(fused[0].best_source, Source::Exact);
    }

    #[test]
    fn same_concept_id_in_two_ontologies_stays_apart() {
        let a = Hit { ontology: "a".into(), concept_id: "1".into(), matched_name: "n".into(), similarity: 1.0 };
        let b = Hit { ontology: "b".into(), concept_id: "1".into(), matched_name: "n".into(), similarity: 1.0 };
        assert_eq!(fuse(SourceLists { trigram: &[a, b], ..Default::default() }, 60.0, unit).len(), 2);
    }

    #[test]
    fn each_ontology_weighs_its_sources() {
        let trigram = hits(&["A", "B"]);
        let dense = hits(&["B", "A"]);
        let lists = SourceLists { trigram: &trigram, dense: &dense, ..Default::default() };
        let dense_heavy = |_: &str| FusionWeights { exact: 1.0, trigram: 0.5, dense: 1.0 };
        let order = |fused: Vec<Fused>| fused.into_iter().map(|f| f.concept_id).collect::<Vec<_>>();
        assert_eq!(order(fuse(lists, 60.0, dense_heavy)), ["B", "A"]);
        let trigram_heavy = |_: &str| FusionWeights { exact: 1.0, trigram: 1.0, dense: 0.5 };
        let fused = fuse(lists, 60.0, trigram_heavy);
        assert!((fused[0].score - (1.0 / 61.0 + 0.5 / 62.0)).abs() < 1e-12);
        assert_eq!(order(fused), ["A", "B"]);
    }

    #[test]
    fn a_concepts_similarity_is_that_of_its_most_similar_name_in_any_source() {
        let hit = |concept: &str, name: &str, similarity: f64| Hit {
            ontology: "o".into(),
            concept_id: concept.into(),
            matched_name: name.into(),
            similarity,
        };
        let trigram = [hit("1", "a", 0.4), hit("2", "b", 0.6), hit("1", "c", 0.7)];
        let dense = [hit("1", "a", 0.55), hit("2", "b", 0.9)];
        let fused = fuse(SourceLists { exact: &[], trigram: &trigram, dense: &dense }, 60.0, unit);
        let similarity = |concept: &str| fused.iter().find(|f| f.concept_id == concept).unwrap().similarity;
        assert_eq!((similarity("1"), similarity("2")), (0.7, 0.9));
    }
}
