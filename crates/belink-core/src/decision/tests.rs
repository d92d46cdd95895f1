use super::*;
use crate::fakes::{FakeModels, FakeStore};
use crate::settings::Settings;

fn store() -> FakeStore {
    FakeStore::default().with(
        "hpo",
        &[
            ("HP:0001250", &["Seizure", "Epileptic seizure"]),
            ("HP:0002069", &["Bilateral tonic-clonic seizure", "Grand mal seizure"]),
            ("HP:0000822", &["Hypertension", "High blood pressure"]),
            ("HP:0100543", &["Cognitive impairment", "Dementia"]),
            ("HP:0000726", &["Dementia"]),
        ],
    )
}

/// Re-ranking on for every mention that no unique exact match decides, near tie or not.
fn reranking() -> Settings {
    Settings { rerank: true, rerank_margin: 1.0, ..Settings::default() }
}

fn request(mention: &str) -> Request<'_> {
    Request { mention, context: None, ontology: Some("hpo") }
}

#[test]
fn a_unique_exact_match_decides_with_certainty_even_when_reranking() {
    let store = store();
    let models = FakeModels::default();
    let settings = Settings { rerank: true, ..Settings::default() };
    let ontologies = store.ontologies(true);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let decisions = pipeline.decide(&[request("high blood pressure")], 5, Lexical::ExactAndTrigram).unwrap();
    let decision = &decisions[0];
    assert_eq!(decision.decided_by, DecidedBy::Exact);
    assert_eq!(decision.confidence, 1.0);
    assert_eq!(decision.concept().unwrap().fused.concept_id, "HP:0000822");
    assert!(models.reranked.borrow().is_empty(), "the re-ranker is not asked");
}

#[test]
fn without_reranking_the_top_candidate_wins_as_sure_as_its_name_is_similar() {
    let store = store();
    let models = FakeModels::default();
    let ontologies = store.ontologies(true);
    let decide = |settings: &Settings, mention: &str| {
        let pipeline = Pipeline::new(&store, &models, settings, &ontologies);
        pipeline.decide(&[request(mention)], 5, Lexical::ExactAndTrigram).unwrap().remove(0)
    };
    let settings = Settings::default();
    let close = decide(&settings, "seizures");
    assert_eq!((close.decided_by, close.chosen), (DecidedBy::Retrieval, Some(0)));
    let top = &close.candidates[0].fused;
    assert_eq!(top.concept_id, "HP:0001250");
    assert_eq!(close.confidence, top.similarity);
    assert!(close.confidence > 0.5 && close.confidence < 1.0, "{}", close.confidence);
    // A mention that only resembles a name is less sure; below belink.min_similarity it is NIL,
    // its candidates kept for inspection.
    let far = decide(&settings, "seizure of the left foot twice");
    assert!(far.confidence < close.confidence, "{} vs {}", far.confidence, close.confidence);
    let strict = Settings { min_similarity: (far.confidence + close.confidence) / 2.0, ..Settings::default() };
    assert_eq!(decide(&strict, "seizures").chosen, Some(0));
    let unlinked = decide(&strict, "seizure of the left foot twice");
    assert_eq!((unlinked.chosen, unlinked.confidence), (None, far.confidence));
    assert!(!unlinked.candidates.is_empty());
}

#[test]
fn nothing_retrieved_is_nil() {
    let store = store();
    let models = FakeModels::default();
    let settings = Settings { rerank: true, ..Settings::default() };
    let ontologies = store.ontologies(false);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let decision = pipeline.decide(&[request("xqzv")], 5, Lexical::ExactAndTrigram).unwrap().remove(0);
    assert_eq!((decision.chosen, decision.confidence, decision.decided_by), (None, 0.0, DecidedBy::Retrieval));
    assert!(models.reranked.borrow().is_empty());
}

#[test]
fn the_reranker_chooses_among_the_candidates_it_is_shown() {
    let store = store();
    let mut models = FakeModels::default();
    models.answers.insert("grand mal seizures".into(), vec![0.1, 0.8]);
    let settings = reranking();
    let ontologies = store.ontologies(false);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let mut with_context = request("grand mal seizures");
    with_context.context = Some("He had [grand mal seizures] twice.".into());
    let decision = pipeline.decide(&[with_context], 3, Lexical::ExactAndTrigram).unwrap().remove(0);
    assert_eq!(decision.decided_by, DecidedBy::Reranker);
    assert_eq!(decision.chosen, Some(1));
    assert_eq!(decision.confidence, 0.8f32 as f64);
    let shown = &models.reranked.borrow()[0];
    assert_eq!(shown.context.as_deref(), Some("He had [grand mal seizures] twice."));
    assert_eq!(shown.candidates.len(), decision.candidates.len());
    let second = &decision.candidates[1];
    assert_eq!(shown.candidates[1].name, second.preferred_name, "the prompt shows preferred names");
    let probabilities = decision.probabilities.as_ref().unwrap();
    assert_eq!(probabilities.len(), decision.candidates.len() + 1, "and a none-of-these option");
}

#[test]
fn the_reranker_can_say_none_of_these_and_the_nil_threshold_holds() {
    let store = store();
    let mut models = FakeModels::default();
    models.answers.insert("cognitive decline".into(), vec![0.4, 0.3]);
    let ontologies = store.ontologies(false);
    let unsure = Settings { nil_threshold: 0.5, ..reranking() };
    let pipeline = Pipeline::new(&store, &models, &unsure, &ontologies);
    let decisions = pipeline
        .decide(&[request("cognitive decline"), request("seizure disorder")], 3, Lexical::ExactAndTrigram)
        .unwrap();
    assert_eq!(decisions[0].chosen, None, "0.4 is below the threshold");
    assert_eq!(decisions[0].confidence, 0.4f32 as f64);
    assert_eq!(decisions[1].chosen, None, "unscripted: none of these");
    assert_eq!(models.reranked.borrow().len(), 2, "both in one request");
}

#[test]
fn the_reranker_overrules_retrieval_only_as_sure_as_the_override_threshold() {
    let store = store();
    let mut models = FakeModels::default();
    models.answers.insert("seizures".into(), vec![0.3, 0.6]);
    models.answers.insert("grand mal seizures".into(), vec![0.1, 0.8]);
    let ontologies = store.ontologies(false);
    let gated = Settings { override_threshold: 0.7, ..reranking() };
    let pipeline = Pipeline::new(&store, &models, &gated, &ontologies);
    let decisions =
        pipeline.decide(&[request("seizures"), request("grand mal seizures")], 3, Lexical::ExactAndTrigram).unwrap();
    // 0.6 against retrieval's first candidate: retrieval's decision stands, probabilities kept.
    let unsure = &decisions[0];
    assert_eq!((unsure.chosen, unsure.decided_by), (Some(0), DecidedBy::Retrieval));
    assert_eq!(unsure.confidence, unsure.candidates[0].fused.similarity);
    assert_eq!(unsure.probabilities.as_deref().map(|p| p[1]), Some(0.6));
    // 0.8 is sure enough to overrule it.
    let sure = &decisions[1];
    assert_eq!((sure.chosen, sure.decided_by, sure.confidence), (Some(1), DecidedBy::Reranker, 0.8f32 as f64));
    // Agreeing with retrieval needs no threshold.
    models.answers.insert("seizures".into(), vec![0.5, 0.4]);
    let pipeline = Pipeline::new(&store, &models, &gated, &ontologies);
    let agreed = pipeline.decide(&[request("seizures")], 3, Lexical::ExactAndTrigram).unwrap().remove(0);
    assert_eq!((agreed.chosen, agreed.decided_by), (Some(0), DecidedBy::Reranker));
}

#[test]
fn none_of_these_overrules_retrieval_only_as_sure_as_its_own_threshold() {
    let store = store();
    let ontologies = store.ontologies(false);
    let mut models = FakeModels::default();
    let retrieved = Pipeline::new(&store, &models, &Settings::default(), &ontologies)
        .decide(&[request("seizures")], 3, Lexical::ExactAndTrigram)
        .unwrap()
        .remove(0);
    assert_eq!(retrieved.chosen, Some(0));
    let none_at = |p: f32| {
        let mut probabilities = vec![0.0; retrieved.candidates.len() + 1];
        probabilities[0] = 1.0 - p;
        *probabilities.last_mut().unwrap() = p;
        probabilities
    };
    // A concept would overrule retrieval at 0.5; "none of these" needs 0.9.
    let settings = Settings { override_threshold: 0.5, none_override_threshold: 0.9, ..reranking() };
    models.answers.insert("seizures".into(), none_at(0.8));
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let unsure = pipeline.decide(&[request("seizures")], 3, Lexical::ExactAndTrigram).unwrap().remove(0);
    assert_eq!((unsure.chosen, unsure.decided_by), (Some(0), DecidedBy::Retrieval));
    assert_eq!(unsure.probabilities.as_deref().and_then(|p| p.last().copied()), Some(0.8));
    models.answers.insert("seizures".into(), none_at(0.95));
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let sure = pipeline.decide(&[request("seizures")], 3, Lexical::ExactAndTrigram).unwrap().remove(0);
    assert_eq!((sure.chosen, sure.decided_by, sure.confidence), (None, DecidedBy::Reranker, 0.95f32 as f64));
}

#[test]
fn a_name_shared_by_two_concepts_goes_to_the_reranker() {
    let store = store();
    let mut models = FakeModels::default();
    models.answers.insert("dementia".into(), vec![0.2, 0.7]);
    let settings = Settings { rerank: true, ..Settings::default() };
    let ontologies = store.ontologies(false);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let decision = pipeline.decide(&[request("dementia")], 3, Lexical::ExactAndTrigram).unwrap().remove(0);
    let exact: Vec<_> = decision.candidates.iter().filter(|c| c.fused.ranks.exact == Some(1)).collect();
    assert_eq!(exact.len(), 2);
    assert_eq!(decision.decided_by, DecidedBy::Reranker);
    assert_eq!(decision.chosen, Some(1));
}

#[test]
fn a_clear_first_candidate_is_decided_by_retrieval_at_the_default_margin() {
    let store = store();
    let models = FakeModels::default();
    let ontologies = store.ontologies(false);
    let decide = |settings: &Settings| {
        let pipeline = Pipeline::new(&store, &models, settings, &ontologies);
        pipeline.decide(&[request("seizures")], 3, Lexical::ExactAndTrigram).unwrap().remove(0)
    };
    // Seizure is far more like "seizures" than any other name (exact ties, margin 0, are
    // re-ranked: the test above).
    let defaults = Settings { rerank: true, ..Settings::default() };
    let clear = decide(&defaults);
    let margin = clear.candidates[0].fused.similarity - clear.candidates[1].fused.similarity;
    assert!(margin >= defaults.rerank_margin, "{margin}");
    assert_eq!((clear.decided_by, clear.probabilities.as_ref()), (DecidedBy::Retrieval, None));
    assert!(models.reranked.borrow().is_empty(), "the re-ranker is not asked");
    // A wider margin, or 1, re-ranks it.
    assert_eq!(decide(&Settings { rerank_margin: margin + 0.01, ..defaults }).decided_by, DecidedBy::Reranker);
    assert_eq!(decide(&reranking()).decided_by, DecidedBy::Reranker);
}

#[test]
fn many_mentions_go_to_the_reranker_in_requests_of_bounded_size() {
    let store = store();
    let mut models = FakeModels::default();
    let mentions: Vec<String> = (0..2 * RERANK_REQUEST_ITEMS + 3).map(|i| format!("seizure type {i}")).collect();
    // The last mention's answer: the second candidate, so its decision shows the answers stay
    // in order across requests.
    models.answers.insert(mentions.last().unwrap().clone(), vec![0.1, 0.8]);
    let ontologies = store.ontologies(false);
    let settings = reranking();
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let requests: Vec<Request> = mentions.iter().map(|m| request(m)).collect();
    let decisions = pipeline.decide(&requests, 3, Lexical::ExactAndTrigram).unwrap();
    assert_eq!(*models.rerank_requests.borrow(), [RERANK_REQUEST_ITEMS, RERANK_REQUEST_ITEMS, 3]);
    assert_eq!(decisions.last().unwrap().chosen, Some(1));
    assert!(decisions[..decisions.len() - 1].iter().all(|d| d.chosen.is_none()), "unscripted: none of these");
}
