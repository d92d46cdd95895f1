//! Choosing among the candidates from the re-ranker's answer: the option it gives the highest
//! probability (score mode) or the one its generated answer names (generate mode), unless that
//! is "none of these" or less probable than the NIL threshold.

use crate::decision::prompt::{labels_for, parse_answer};
use crate::ports::Reranked;
use crate::settings::RerankMode;

/// The re-ranker's choice: a candidate (None: NIL) and its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub chosen: Option<usize>,
    pub confidence: f64,
    /// The re-ranker answered "none of these" (not a concept below the NIL threshold).
    pub none_of_these: bool,
}

pub fn choose(reranked: &Reranked, candidates: usize, mode: RerankMode, nil_threshold: f64) -> Choice {
    let options = labels_for(candidates).len();
    let choice = match mode {
        RerankMode::Score => argmax(&reranked.probabilities),
        // An answer that names no option counts as "none of these".
        RerankMode::Generate => parse_answer(&reranked.answer, options).unwrap_or(options - 1),
    };
    let confidence = reranked.probabilities.get(choice).copied().unwrap_or(0.0) as f64;
    let none = choice + 1 == options || choice >= candidates;
    Choice { chosen: (!none && confidence >= nil_threshold).then_some(choice), confidence, none_of_these: none }
}

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reranked(probabilities: &[f32], answer: &str) -> Reranked {
        Reranked { probabilities: probabilities.to_vec(), answer: answer.to_string() }
    }

    #[test]
    fn score_mode_takes_the_most_probable_option() {
        let choice = choose(&reranked(&[0.2, 0.7, 0.1], ""), 2, RerankMode::Score, 0.0);
        assert_eq!(choice, Choice { chosen: Some(1), confidence: 0.7f32 as f64, none_of_these: false });
    }

    #[test]
    fn none_of_these_is_nil_with_its_probability() {
        let choice = choose(&reranked(&[0.2, 0.1, 0.7], ""), 2, RerankMode::Score, 0.0);
        assert_eq!(choice, Choice { chosen: None, confidence: 0.7f32 as f64, none_of_these: true });
    }

    #[test]
    fn below_the_nil_threshold_is_nil() {
        let probabilities = [0.45, 0.35, 0.2];
        let unsure = choose(&reranked(&probabilities, ""), 2, RerankMode::Score, 0.5);
        assert_eq!((unsure.chosen, unsure.none_of_these), (None, false));
        assert_eq!(choose(&reranked(&probabilities, ""), 2, RerankMode::Score, 0.4).chosen, Some(0));
    }

    #[test]
    fn generate_mode_follows_the_answer_and_an_unreadable_one_is_nil() {
        let probabilities = [0.6, 0.3, 0.1];
        let b = choose(&reranked(&probabilities, "B) the second"), 2, RerankMode::Generate, 0.0);
        assert_eq!(b, Choice { chosen: Some(1), confidence: 0.3f32 as f64, none_of_these: false });
        let none = choose(&reranked(&probabilities, "I cannot tell"), 2, RerankMode::Generate, 0.0);
        assert_eq!(none, Choice { chosen: None, confidence: 0.1f32 as f64, none_of_these: true });
        // A label beyond the candidates shown is not a candidate.
        assert_eq!(choose(&reranked(&probabilities, "Z"), 2, RerankMode::Generate, 0.0).chosen, None);
    }
}
