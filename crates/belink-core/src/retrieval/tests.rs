use super::*;
use crate::catalog::Ontologies;
use crate::error::Error;
use crate::fakes::{FakeModels, FakeStore};
use crate::retrieval::fuse::{Ranks, Source};
use crate::settings::Settings;

fn medic() -> FakeStore {
    FakeStore::default().with(
        "medic",
        &[
            ("D009203", &["Myocardial Infarction", "Heart attack"]),
            ("D006331", &["Heart Diseases", "Cardiac disease"]),
            ("D006327", &["Heart Block"]),
        ],
    )
}

fn query(text: &str) -> Query<'_> {
    Query { text, ontology: Some("medic") }
}

#[test]
fn every_source_contributes_and_ranks_are_read_by_source() {
    let store = medic();
    let models = FakeModels::default();
    let settings = Settings::default();
    let ontologies = store.ontologies(true);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let found = pipeline.retrieve(&[query("heart attack")], 3, Lexical::ExactAndTrigram).unwrap();
    let top = &found[0][0];
    assert_eq!(top.fused.concept_id, "D009203");
    assert_eq!(top.preferred_name, "Myocardial Infarction");
    assert_eq!(top.fused.ranks.exact, Some(1));
    assert!(top.fused.ranks.trigram.is_some() && top.fused.ranks.dense.is_some());
    assert_eq!(top.fused.best_source, Source::Exact);
    assert_eq!(top.fused.matched_name, "Heart attack");
    assert_eq!(found[0].len(), 3, "k candidates");
}

#[test]
fn lexical_retrieval_never_asks_the_encoder() {
    let store = medic();
    let models = FakeModels::default();
    let settings = Settings { retrieval: crate::settings::Retrieval::Lexical, ..Settings::default() };
    let ontologies = store.ontologies(true);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let found = pipeline.retrieve(&[query("heart diseas")], 5, Lexical::ExactAndTrigram).unwrap();
    assert_eq!(found[0][0].fused.concept_id, "D006331");
    assert!(found[0].iter().all(|c| c.fused.ranks.dense.is_none()));
    assert!(models.embedded.borrow().is_empty());
}

#[test]
fn a_mention_written_like_a_name_reuses_its_stored_vector() {
    let store = medic();
    let models = FakeModels::default();
    let settings = Settings::default();
    let ontologies = store.ontologies(true);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    // Same letters as the name, other case: the toy encoder ignores case.
    pipeline.retrieve(&[query("HEART BLOCK"), query("cardiac trouble")], 2, Lexical::ExactAndTrigram).unwrap();
    assert_eq!(*models.embedded.borrow(), ["cardiac trouble"], "only the mention unlike any name is embedded");
    assert_eq!(store.stored_vector_reads.get(), 1);
}

#[test]
fn linking_skips_dense_search_for_a_mention_one_concept_names() {
    let store = medic();
    let models = FakeModels::default();
    let settings = Settings::default();
    let ontologies = store.ontologies(true);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let found = pipeline.retrieve(&[query("heart block")], 1, Lexical::ExactOnly).unwrap();
    assert_eq!(found[0][0].fused.ranks, Ranks { exact: Some(1), trigram: None, dense: None });
    assert_eq!(store.stored_vector_reads.get(), 0);
    assert!(models.embedded.borrow().is_empty());
}

#[test]
fn an_empty_or_unknown_mention_retrieves_nothing() {
    let store = medic();
    let models = FakeModels::default();
    let settings = Settings::default();
    let ontologies = store.ontologies(false);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let found = pipeline.retrieve(&[query(""), query("!!"), query("zzzz qqqq")], 5, Lexical::ExactAndTrigram).unwrap();
    assert!(found.iter().all(Vec::is_empty));
}

#[test]
fn an_index_made_by_another_encoder_is_an_error_with_a_way_out() {
    let store = medic();
    let models = FakeModels::default();
    let settings = Settings::default();
    let mut states: Vec<_> = store.ontologies(true).selected(None).cloned().collect();
    states[0].embeddings.as_mut().unwrap().dim = 384;
    let ontologies = Ontologies::new(states);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let error = pipeline.retrieve(&[query("cardiac trouble")], 2, Lexical::ExactAndTrigram).unwrap_err();
    assert!(matches!(error, Error::EncoderMismatch { dim: 384, server_dim: 26, .. }), "{error:?}");
    assert!(error.hint().unwrap().contains("belink_index('medic')"));
}

#[test]
fn the_retrieval_cache_answers_repeated_linking_lookups_until_something_changes() {
    let store = medic();
    let models = FakeModels::default();
    let settings = Settings::default();
    let ontologies = store.ontologies(true);
    let queries = [query("heart attack"), query("heart block"), query("heart attack")];
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let first = pipeline.retrieve(&queries, 1, Lexical::ExactOnly).unwrap();
    assert_eq!(first[0], first[2]);
    let second = pipeline.retrieve(&queries, 1, Lexical::ExactOnly).unwrap();
    assert_eq!(first, second);
    assert_eq!(store.exact_calls.get(), 1, "the second call is answered from the cache");
    let cache = pipeline.into_cache();
    assert_eq!(cache.len(), 2, "each distinct lookup once");

    // A new generation of the ontology empties it.
    let mut states: Vec<_> = ontologies.selected(None).cloned().collect();
    states[0].generation += 1;
    let renewed = Ontologies::new(states);
    let pipeline = Pipeline::new(&store, &models, &settings, &renewed).with_cache(cache);
    pipeline.retrieve(&queries[..1], 1, Lexical::ExactOnly).unwrap();
    assert_eq!(store.exact_calls.get(), 2);
    assert_eq!(pipeline.into_cache().len(), 1);

    // Without a cache, every call searches; belink_candidates-style retrieval never caches.
    let no_cache = Settings { retrieval_cache_size: 0, ..Settings::default() };
    let pipeline = Pipeline::new(&store, &models, &no_cache, &ontologies);
    pipeline.retrieve(&queries, 1, Lexical::ExactOnly).unwrap();
    pipeline.retrieve(&queries, 1, Lexical::ExactAndTrigram).unwrap();
    assert_eq!(store.exact_calls.get(), 4);
    assert!(pipeline.into_cache().is_empty());
}

#[test]
fn each_source_alone() {
    let store = medic();
    let models = FakeModels::default();
    let ontologies = store.ontologies(true);
    let alone = |source: Source| -> Vec<Candidate> {
        let settings = Settings { retrieval: crate::settings::Retrieval::Only(source), ..Settings::default() };
        let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
        pipeline.retrieve(&[query("heart attack")], 5, Lexical::ExactAndTrigram).unwrap().remove(0)
    };
    let exact = alone(Source::Exact);
    assert_eq!(exact.len(), 1);
    assert_eq!(exact[0].fused.ranks, Ranks { exact: Some(1), trigram: None, dense: None });
    let trigram = alone(Source::Trigram);
    assert!(!trigram.is_empty() && trigram.iter().all(|c| c.fused.best_source == Source::Trigram));
    let dense = alone(Source::Dense);
    assert!(
        !dense.is_empty() && dense.iter().all(|c| c.fused.ranks.exact.is_none() && c.fused.ranks.trigram.is_none())
    );
}
