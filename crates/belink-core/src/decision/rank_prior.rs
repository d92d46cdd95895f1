//! Retrieval's rank as evidence for the re-ranker: how often the right concept sits at each
//! position of retrieval's list (or is not in it), counted on a training split, added to the
//! re-ranker's calibrated option scores (Bayes' rule). A re-ranker trained with the gold at a
//! uniformly random position cannot know that retrieval's first candidate is right half the
//! time; this tells it. The prior is counted when an adapter is trained
//! (`scripts/train-reranker-torch.py --rank-prior`) and stored in it.

/// Adds `log_prior` to one item's option scores (log-probabilities or calibrated logits): the
/// options are the candidates in retrieval's order, then "none of these". `log_prior` holds one
/// entry per position, then one for "none"; positions beyond it take its last position's entry.
/// An empty prior changes nothing.
pub fn add_rank_prior(scores: &mut [f32], log_prior: &[f32]) {
    let (Some((&none, positions)), Some((last_score, candidates))) = (log_prior.split_last(), scores.split_last_mut())
    else {
        return;
    };
    *last_score += none;
    if let Some(&deepest) = positions.last() {
        for (i, score) in candidates.iter_mut().enumerate() {
            *score += positions.get(i).copied().unwrap_or(deepest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prior_breaks_a_tie_in_favour_of_retrievals_first_candidate() {
        // Counted from 5 answers, each count plus one: position 0 three times, 1 once, 2 never,
        // "none" once.
        let prior: Vec<f32> = [4.0f32, 2.0, 1.0, 2.0].iter().map(|c| (c / 9.0).ln()).collect();
        let mut scores = vec![-2.0, -2.0, -2.0, -2.0];
        add_rank_prior(&mut scores, &prior);
        let best = (0..4).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
        assert_eq!(best, 0);
        // "none" (index 3) was the answer once, like position 1: the same prior.
        assert_eq!(scores[1], scores[3]);
        // Position 2 was never the answer, but is not ruled out.
        assert!(scores[2].is_finite() && scores[2] < scores[1]);
    }

    #[test]
    fn a_strong_model_score_outweighs_the_prior() {
        let prior: Vec<f32> = [0.96f32, 0.02, 0.02].iter().map(|p| p.ln()).collect();
        let mut scores = vec![-8.0, -0.1, -9.0];
        add_rank_prior(&mut scores, &prior);
        assert!(scores[1] > scores[0], "{scores:?}");
    }

    #[test]
    fn fewer_candidates_than_the_prior_keep_none_on_the_none_entry() {
        let prior = vec![-0.5, -1.0, -2.0, -3.0, -1.5];
        let mut scores = vec![0.0, 0.0, 0.0];
        add_rank_prior(&mut scores, &prior);
        assert_eq!(scores, vec![-0.5, -1.0, -1.5]);
    }

    #[test]
    fn more_candidates_than_the_prior_take_its_deepest_position() {
        let prior = vec![-0.5, -1.0, -1.5];
        let mut scores = vec![0.0; 5];
        add_rank_prior(&mut scores, &prior);
        assert_eq!(scores, vec![-0.5, -1.0, -1.0, -1.0, -1.5]);
    }

    #[test]
    fn an_empty_prior_or_no_options_change_nothing() {
        let mut scores = vec![1.0, 2.0];
        add_rank_prior(&mut scores, &[]);
        assert_eq!(scores, vec![1.0, 2.0]);
        add_rank_prior(&mut [], &[-1.0, -2.0]);
    }
}
