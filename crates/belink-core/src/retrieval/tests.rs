use super::*;
use crate::catalog::{Ontologies, OntologyState};
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

#[test]
fn tuning_examples_retrieve_each_distinct_mention_once_with_every_source() {
    let store = medic();
    let models = FakeModels::default();
    let settings = Settings::default();
    let ontologies = store.ontologies(true);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let labelled = [("heart attacks", "D009203"), ("cardiac diseases", "D006331"), ("heart attacks", "D009203")]
        .map(|(m, c)| (m.to_string(), c.to_string()));
    let examples = pipeline.tuning_examples("medic", &labelled).unwrap();
    assert_eq!(examples.len(), 3);
    assert_eq!(models.embedded.borrow().len(), 2, "two distinct mentions embedded, once each");
    assert_eq!(examples[0].gold, ["D009203"]);
    assert_eq!(examples[0].candidates, examples[2].candidates);
    let found = &examples[1].candidates;
    assert!(found.iter().any(|c| c.concept_id == "D006331" && c.ranks.trigram.is_some() && c.ranks.dense.is_some()));

    // Every source, whatever the settings and the weights stored so far.
    let lexical = Settings { retrieval: crate::settings::Retrieval::Lexical, ..Settings::default() };
    let no_trigrams = crate::retrieval::fuse::FusionWeights { exact: 1.0, trigram: 0.0, dense: 1.0 };
    let ontologies = Ontologies::new(
        ontologies.selected(None).map(|o| OntologyState { fusion: no_trigrams, ..o.clone() }).collect(),
    );
    let pipeline = Pipeline::new(&store, &models, &lexical, &ontologies);
    let again = pipeline.tuning_examples("medic", &labelled).unwrap();
    assert_eq!(again[1].candidates, examples[1].candidates);
}

#[test]
fn the_servers_trigram_index_is_loaded_once_and_answers_as_pg_trgm_does() {
    let store = medic().with("hpo", &[("HP:1", &["Heart block", "Atrioventricular block"])]);
    let ontologies = store.ontologies(false);
    let lexical = Settings { retrieval: crate::settings::Retrieval::Lexical, ..Settings::default() };
    let by_sql = Settings { trigram_search: crate::settings::TrigramSearch::PgTrgm, ..lexical.clone() };
    let texts = ["heart blocks", "cardiac diseases", "zzzz", "heart"];
    let queries: Vec<Query> = texts.iter().map(|t| Query { text: t, ontology: None }).collect();

    let reference = Pipeline::new(&store, &FakeModels::default(), &by_sql, &ontologies)
        .retrieve(&queries, 5, Lexical::ExactAndTrigram)
        .unwrap();
    assert!(
        reference[0].iter().any(|c| c.fused.ontology == "hpo")
            && reference[0].iter().any(|c| c.fused.ontology == "medic")
    );

    let server = FakeModels::serving_trigrams();
    let pipeline = Pipeline::new(&store, &server, &lexical, &ontologies);
    assert_eq!(pipeline.retrieve(&queries, 5, Lexical::ExactAndTrigram).unwrap(), reference);
    assert_eq!(store.index_loads.get(), 2, "one index per ontology, loaded on first use");
    assert_eq!(pipeline.retrieve(&queries, 5, Lexical::ExactAndTrigram).unwrap(), reference);
    assert_eq!(store.index_loads.get(), 2, "and kept");

    // A server that cannot answer: pg_trgm answers the same.
    let down = FakeModels::default();
    let pipeline = Pipeline::new(&store, &down, &lexical, &ontologies);
    assert_eq!(pipeline.retrieve(&queries, 5, Lexical::ExactAndTrigram).unwrap(), reference);
}

#[test]
fn a_source_weighed_zero_is_not_searched_and_only_hybrid_retrieval_uses_weights() {
    let store = medic();
    let models = FakeModels::default();
    let mut ontologies = store.ontologies(true);
    let settings = Settings::default();
    let dense_only_weights = crate::retrieval::fuse::FusionWeights { exact: 1.0, trigram: 0.0, dense: 1.0 };
    ontologies = Ontologies::new(
        ontologies.selected(None).map(|o| OntologyState { fusion: dense_only_weights, ..o.clone() }).collect(),
    );
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let found = pipeline.retrieve(&[query("heart diseas")], 5, Lexical::ExactAndTrigram).unwrap();
    assert!(!found[0].is_empty() && found[0].iter().all(|c| c.fused.ranks.trigram.is_none()));

    // The weights are tuned for hybrid retrieval: other modes fuse with equal weights.
    for retrieval in [crate::settings::Retrieval::Only(Source::Trigram), crate::settings::Retrieval::Lexical] {
        let settings = Settings { retrieval, ..Settings::default() };
        let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
        let found = pipeline.retrieve(&[query("heart diseas")], 5, Lexical::ExactAndTrigram).unwrap();
        assert_eq!(found[0][0].fused.ranks.trigram, Some(1), "{retrieval:?}");
        assert!(found[0][0].fused.score > 0.0, "{retrieval:?}");
    }
}

#[test]
fn ontologies_with_their_own_encoders_are_searched_with_their_own_query_vectors() {
    let store = medic().with("hpo", &[("HP:0001658", &["Myocardial infarction", "Heart attack"])]);
    let models = FakeModels::default();
    let settings = Settings { retrieval: crate::settings::Retrieval::Only(Source::Dense), ..Settings::default() };
    // hpo's names were embedded by an encoder adapted to it; medic's by the server's.
    let states: Vec<OntologyState> = store
        .ontologies(true)
        .selected(None)
        .cloned()
        .map(|mut o| {
            if o.name == "hpo" {
                let embeddings = o.embeddings.as_mut().unwrap();
                embeddings.model = "/data/belink/encoders/hpo-7/model".into();
                embeddings.adapted = true;
            }
            o
        })
        .collect();
    let ontologies = Ontologies::new(states);
    let pipeline = Pipeline::new(&store, &models, &settings, &ontologies);
    let all = Query { text: "cardiac infarct", ontology: None };
    let found = pipeline.retrieve(&[all, query("cardiac infarct")], 5, Lexical::ExactAndTrigram).unwrap();
    // One request per encoder; the medic-only query shares the server encoder's request.
    assert_eq!(*models.encoders_asked.borrow(), ["", "/data/belink/encoders/hpo-7/model"]);
    assert_eq!(*models.embedded.borrow(), ["cardiac infarct", "cardiac infarct", "cardiac infarct"]);
    // Both ontologies' hits come back for the query over every ontology, taken in turn.
    let ontologies_found: Vec<&str> = found[0].iter().map(|c| c.fused.ontology.as_str()).collect();
    assert!(ontologies_found.contains(&"hpo") && ontologies_found.contains(&"medic"), "{ontologies_found:?}");
    assert!(found[1].iter().all(|c| c.fused.ontology == "medic"));
}
