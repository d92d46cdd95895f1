//! Fusing ranked candidate lists from several retrieval sources (exact, trigram, dense) into
//! one list of concepts: reciprocal-rank fusion, score = Σ 1 / (k + rank) over the sources
//! that found the concept.

use std::collections::HashMap;

/// The retrieval sources, in the order their lists are given to [`fuse`].
pub const SOURCES: [&str; 3] = ["exact", "trigram", "dense"];

/// One retrieved name: which concept it belongs to, and how the source scored it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub ontology: String,
    pub concept_id: String,
    pub matched_name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub ontology: String,
    pub concept_id: String,
    /// The name through which the best-ranking source found the concept.
    pub matched_name: String,
    pub score: f64,
    /// 1-based rank of the concept in each source's list, None when the source missed it.
    pub ranks: [Option<usize>; 3],
    /// Index into [`SOURCES`] of the source that ranked the concept best.
    pub best_source: usize,
}

/// Fuses `lists` (exact, trigram, dense: each best first, several names per concept allowed)
/// into concepts, best first. Ranks count concepts, not names; all exact matches share rank 1.
pub fn fuse(lists: [&[Hit]; 3], rrf_k: f64) -> Vec<Fused> {
    let mut fused: Vec<Fused> = Vec::new();
    let mut position: HashMap<(String, String), usize> = HashMap::new();
    for (source, hits) in lists.iter().enumerate() {
        let mut rank = 0;
        let mut seen = std::collections::HashSet::new();
        for hit in hits.iter() {
            let key = (hit.ontology.clone(), hit.concept_id.clone());
            if !seen.insert(key.clone()) {
                continue;
            }
            rank = if source == 0 { 1 } else { rank + 1 };
            let index = *position.entry(key).or_insert_with(|| {
                fused.push(Fused {
                    ontology: hit.ontology.clone(),
                    concept_id: hit.concept_id.clone(),
                    matched_name: hit.matched_name.clone(),
                    score: 0.0,
                    ranks: [None; 3],
                    best_source: source,
                });
                fused.len() - 1
            });
            let entry = &mut fused[index];
            entry.ranks[source] = Some(rank);
            entry.score += 1.0 / (rrf_k + rank as f64);
            let best_rank = entry.ranks[entry.best_source].unwrap_or(usize::MAX);
            if rank < best_rank {
                entry.best_source = source;
                entry.matched_name = hit.matched_name.clone();
            }
        }
    }
    fused.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| best_rank(a).cmp(&best_rank(b)))
            .then_with(|| a.best_source.cmp(&b.best_source))
            .then_with(|| (&a.ontology, &a.concept_id).cmp(&(&b.ontology, &b.concept_id)))
    });
    fused
}

fn best_rank(f: &Fused) -> usize {
    f.ranks.iter().flatten().copied().min().unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(concepts: &[&str]) -> Vec<Hit> {
        concepts
            .iter()
            .map(|c| Hit { ontology: "o".into(), concept_id: c.to_string(), matched_name: format!("name of {c}") })
            .collect()
    }

    #[test]
    fn concepts_found_by_more_sources_rank_higher() {
        let exact = hits(&[]);
        let trigram = hits(&["A", "B", "C"]);
        let dense = hits(&["B", "D", "A"]);
        let fused = fuse([&exact, &trigram, &dense], 60.0);
        let order: Vec<&str> = fused.iter().map(|f| f.concept_id.as_str()).collect();
        assert_eq!(order, ["B", "A", "D", "C"]);
        assert_eq!(fused[0].ranks, [None, Some(2), Some(1)]);
        assert_eq!(fused[0].best_source, 2, "dense ranked B first");
        let expected = 1.0 / 62.0 + 1.0 / 61.0;
        assert!((fused[0].score - expected).abs() < 1e-12);
    }

    #[test]
    fn several_names_of_one_concept_count_once_and_exact_matches_share_rank_one() {
        let exact = hits(&["X", "Y"]);
        let trigram = hits(&["X", "X", "Z"]);
        let fused = fuse([&exact, &trigram, &[]], 60.0);
        assert_eq!(fused[0].concept_id, "X");
        assert_eq!(fused[0].ranks, [Some(1), Some(1), None]);
        let y = fused.iter().find(|f| f.concept_id == "Y").unwrap();
        assert_eq!(y.ranks[0], Some(1));
        let z = fused.iter().find(|f| f.concept_id == "Z").unwrap();
        assert_eq!(z.ranks[1], Some(2), "ranks count concepts, not names");
        assert_eq!(fused[0].best_source, 0);
    }

    #[test]
    fn same_concept_id_in_two_ontologies_stays_apart() {
        let a = Hit { ontology: "a".into(), concept_id: "1".into(), matched_name: "n".into() };
        let b = Hit { ontology: "b".into(), concept_id: "1".into(), matched_name: "n".into() };
        assert_eq!(fuse([&[], &[a, b], &[]], 60.0).len(), 2);
    }
}
