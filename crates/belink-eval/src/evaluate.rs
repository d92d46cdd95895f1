//! `belink-eval evaluate`: loads ontologies and corpora into a real cluster, runs BeLink
//! through SQL as a user would, and measures it under both normalization protocols.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use belink_eval::corpus::{load_corpus, Document};
use postgres::Client;

use crate::configs::{CONFIGS, SWEEP_RERANKING};
use crate::db::db_message;
use crate::protocol::{is_correct, queries, Protocol, Query};
use belink_core::ids::canonical;
use belink_core::mentions::Nesting;

/// Candidates fetched per query: accuracy@k is reported up to this k.
pub const MAX_K: usize = 10;

/// One evaluation dataset: a corpus and the ontology its gold ids come from.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub name: String,
    pub corpus: PathBuf,
    pub ontology: String,
    /// A path the server can read; None when the ontology is already loaded.
    pub ontology_file: Option<String>,
    pub format: String,
    /// Training corpus whose mentions may be added to the dictionary (the classic setting).
    pub train: Option<PathBuf>,
    /// Adapt the encoder to the ontology (belink_adapt_encoder) and measure again
    /// (`adapt=off` skips it: it takes about half an hour per ontology on 2 cores).
    pub adapt: bool,
    /// A span scorer file (readable by the server) set for the ontology with
    /// belink_set_span_scorer: end-to-end linking and detection are measured with it too.
    pub span_scorer: Option<String>,
    /// The concepts (ids, `+`-separated in the spec) whose branches detection is restricted to
    /// (belink_set_detection_roots); empty: the whole ontology.
    pub detection_roots: Vec<String>,
}

impl DatasetSpec {
    /// Parses `name=N,corpus=PATH,ontology=NAME[,ontology_file=PATH][,format=F][,train=PATH]
    /// [,adapt=off][,span_scorer=PATH]`.
    pub fn parse(spec: &str) -> Result<DatasetSpec, String> {
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for part in spec.split(',') {
            let (key, value) =
                part.split_once('=').ok_or_else(|| format!("dataset spec: expected key=value, got '{part}'"))?;
            fields.insert(key.trim(), value.trim());
        }
        let get = |key: &str| fields.get(key).map(|v| v.to_string());
        let need = |key: &str| get(key).ok_or_else(|| format!("dataset spec '{spec}' has no {key}="));
        Ok(DatasetSpec {
            name: need("name")?,
            corpus: PathBuf::from(need("corpus")?),
            ontology: need("ontology")?,
            ontology_file: get("ontology_file"),
            format: get("format").unwrap_or_else(|| "auto".into()),
            train: get("train").map(PathBuf::from),
            adapt: get("adapt").map_or(Ok(true), |v| match v.as_str() {
                "on" => Ok(true),
                "off" => Ok(false),
                other => Err(format!("dataset spec: adapt=on or adapt=off, not '{other}'")),
            })?,
            span_scorer: get("span_scorer"),
            detection_roots: get("detection_roots")
                .map(|r| r.split('+').map(|id| id.trim().to_string()).collect())
                .unwrap_or_default(),
        })
    }
}

/// What BeLink returned for one query.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub concept_id: String,
    pub name: String,
    /// The concept id followed by its alternative ids.
    pub ids: Vec<String>,
}

/// Why a query's top-1 was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCause {
    /// The gold concept is not among the candidates.
    NotRetrieved,
    /// The gold concept was retrieved, below rank 1, and retrieval decided.
    RankedBelow,
    /// The gold concept was retrieved and the re-ranker chose another.
    RerankerWrong,
    /// BeLink answered "no concept" (nothing retrieved, or the re-ranker chose none).
    NilAnswer,
}

impl ErrorCause {
    pub fn label(self) -> &'static str {
        match self {
            ErrorCause::NotRetrieved => "not retrieved",
            ErrorCause::RankedBelow => "ranked below",
            ErrorCause::RerankerWrong => "re-ranker chose wrong",
            ErrorCause::NilAnswer => "NIL answer",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ErrorCase {
    pub document: String,
    pub query: Query,
    pub cause: ErrorCause,
    /// 1-based rank of the first right candidate, when retrieved.
    pub gold_rank: Option<usize>,
    pub predicted: Option<(String, String)>,
}

/// Results of one dataset × dictionary × configuration × protocol.
#[derive(Debug, Clone)]
pub struct NormalizationRun {
    pub dataset: String,
    pub dictionary: String,
    pub config: String,
    pub protocol: Protocol,
    pub queries: usize,
    /// `hits_at[k - 1]`: queries whose first right candidate is within the first k.
    pub hits_at: Vec<usize>,
    /// Wall time of each query, milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Peak resident memory of the model server after the run (MB), when it runs.
    pub server_peak_mb: Option<f64>,
    pub errors: Vec<ErrorCase>,
    /// Every answer the re-ranker gave (its reliability, and what gating it would change).
    pub reranked: Vec<RerankedAnswer>,
}

/// One answer of the re-ranker, against what retrieval alone would have decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RerankedAnswer {
    /// Its probability of the option it chose ("none of these" included).
    pub confidence: f64,
    pub nil: bool,
    pub right: bool,
    /// Retrieval's own decision was right.
    pub retrieval_right: bool,
    /// A right concept was among the candidates (when not, "none of these" was the right answer).
    pub gold_retrieved: bool,
    /// Retrieval's first and second candidates' similarity to the mention (the second 0 when
    /// there is none): which `belink.rerank_margin` would have re-ranked it.
    pub similarities: (f64, f64),
    /// Wall time of its belink_normalize call.
    pub latency_ms: f64,
}

impl NormalizationRun {
    fn new(dataset: &str, dictionary: &str, config: &str, protocol: Protocol) -> NormalizationRun {
        NormalizationRun {
            dataset: dataset.to_string(),
            dictionary: dictionary.to_string(),
            config: config.to_string(),
            protocol,
            queries: 0,
            hits_at: vec![0; MAX_K],
            latencies_ms: Vec::new(),
            server_peak_mb: None,
            errors: Vec::new(),
            reranked: Vec::new(),
        }
    }

    pub fn accuracy_at(&self, k: usize) -> f64 {
        self.hits_at[k - 1] as f64 / self.queries.max(1) as f64
    }
}

pub struct DatasetResult {
    pub spec: DatasetSpec,
    pub documents: usize,
    pub mentions: usize,
    pub load_seconds: Option<f64>,
    /// Wall time of belink_index on the ontology (every name embedded).
    pub index_seconds: Option<f64>,
    pub concept_names: HashMap<String, String>,
    pub runs: Vec<NormalizationRun>,
    pub linking: Vec<crate::linking::LinkingRun>,
    /// Mention detection alone (spans, no cluster), when the ontology file is given: the
    /// dictionary's, and the span scorer's when the dataset has one, each with its label.
    pub detection: Vec<(String, crate::detection::DetectionRun)>,
    pub training_names_added: Option<i64>,
    /// What belink_tune_fusion chose and measured on the training split, when there is one.
    pub fusion: Option<FusionTuning>,
    /// The weights tuned again with the adapted encoder.
    pub adapted_fusion: Option<FusionTuning>,
    /// The encoder adaptations run (belink_adapt_encoder), by dictionary.
    pub adaptations: Vec<Adaptation>,
}

/// One belink_adapt_encoder run, as belink.encoder_adaptations recorded it.
pub struct Adaptation {
    pub dictionary: String,
    pub names: i64,
    pub steps: i64,
    pub loss: f64,
    pub names_per_s: f64,
    /// Wall time of the CALL: training, re-embedding the names, the switch.
    pub seconds: f64,
}

/// The configurations measured again with the adapted encoder.
const ADAPTED_CONFIGS: [&str; 3] = ["dense only (HNSW)", "dense only (exact search)", "hybrid"];

/// One row of belink_tune_fusion: acc@1 on the training mentions of each source alone, of
/// equal weights and of the chosen weights.
pub struct FusionTuning {
    pub examples: i64,
    pub reachable: f64,
    pub exact: f64,
    pub trigram: f64,
    pub dense: f64,
    pub equal_weights: f64,
    pub tuned: f64,
    pub weights: [f64; 3],
}

pub fn evaluate_dataset(client: &mut Client, spec: &DatasetSpec) -> Result<DatasetResult, String> {
    let documents = load_corpus(&spec.corpus).map_err(|e| format!("{}: {e}", spec.corpus.display()))?;
    let load_seconds = match &spec.ontology_file {
        Some(file) => Some(load_ontology(client, &spec.ontology, file, &spec.format)?),
        None => None,
    };
    store_corpus(client, &spec.name, &documents)?;
    if !spec.detection_roots.is_empty() {
        client
            .query_one("SELECT belink_set_detection_roots($1, $2)", &[&spec.ontology, &spec.detection_roots])
            .map_err(|e| format!("belink_set_detection_roots({}): {}", spec.ontology, db_message(&e)))?;
    }
    if let Some(scorer) = &spec.span_scorer {
        client
            .query_one("SELECT weights FROM belink_set_span_scorer($1, $2)", &[&spec.ontology, scorer])
            .map_err(|e| format!("belink_set_span_scorer({}, {scorer}): {}", spec.ontology, db_message(&e)))?;
    }
    let concept_names = concept_names(client, &spec.ontology)?;

    let mut runs = Vec::new();
    remove_user_names(client, &spec.ontology)?;
    let index_seconds = if CONFIGS.iter().any(|c| c.needs_index) { Some(index(client, &spec.ontology)?) } else { None };
    // The training split's mentions labelled with concepts of the ontology, read once: the
    // fusion weights are tuned on them, then they are added as names.
    let labels = match &spec.train {
        Some(train) => {
            let training = load_corpus(train).map_err(|e| format!("{}: {e}", train.display()))?;
            Some(training_labels(client, &spec.ontology, &training)?)
        }
        None => None,
    };
    let fusion = match &labels {
        Some(labels) => Some(tune_fusion(client, &spec.ontology, labels)?),
        None => None,
    };
    run_configs(client, spec, &documents, "ontology", None, &mut runs)?;
    let mut linking = crate::linking::evaluate_linking(client, &spec.name, &spec.ontology, "ontology", &documents)?;
    let mut detection = Vec::new();
    if let Some(file) = &spec.ontology_file {
        let names =
            crate::detection::dictionary_names(std::path::Path::new(file), &spec.format, &spec.detection_roots)?;
        detection.push((
            "dictionary".to_string(),
            crate::detection::evaluate(names.clone(), &documents, 1, None, Nesting::Outermost)?,
        ));
        if let Some(path) = &spec.span_scorer {
            let scorer = crate::detection::read_scorer(path)?;
            detection.push((
                "span scorer".to_string(),
                crate::detection::evaluate(names, &documents, 1, Some(&scorer), Nesting::Outermost)?,
            ));
        }
    }
    let mut training_names_added = None;
    if let Some(labels) = &labels {
        training_names_added = Some(add_training_names(client, &spec.ontology, labels)?);
        if index_seconds.is_some() {
            index(client, &spec.ontology)?;
        }
        let dictionary = "ontology + training mentions";
        run_configs(client, spec, &documents, dictionary, None, &mut runs)?;
        // End to end too: the setting of systems trained on the training split (TaggerOne).
        linking.extend(crate::linking::evaluate_linking(client, &spec.name, &spec.ontology, dictionary, &documents)?);
        remove_user_names(client, &spec.ontology)?;
    }
    // The encoder adapted to the ontology's synonyms, then (with the training mentions added as
    // names, which it learns from too) to both: BioSyn's setting.
    let mut adaptations = Vec::new();
    let mut adapted_fusion = None;
    if spec.adapt && index_seconds.is_some() {
        let dictionary = "ontology, adapted encoder";
        adaptations.push(adapt_encoder(client, &spec.ontology, dictionary)?);
        if let Some(labels) = &labels {
            adapted_fusion = Some(tune_fusion(client, &spec.ontology, labels)?);
        }
        run_configs(client, spec, &documents, dictionary, Some(&ADAPTED_CONFIGS), &mut runs)?;
        if let Some(labels) = &labels {
            add_training_names(client, &spec.ontology, labels)?;
            let dictionary = "ontology + training mentions, adapted encoder";
            adaptations.push(adapt_encoder(client, &spec.ontology, dictionary)?);
            run_configs(client, spec, &documents, dictionary, Some(&ADAPTED_CONFIGS), &mut runs)?;
            remove_user_names(client, &spec.ontology)?;
        }
    }
    Ok(DatasetResult {
        spec: spec.clone(),
        documents: documents.len(),
        mentions: documents.iter().map(|d| d.mentions.len()).sum(),
        load_seconds,
        index_seconds,
        concept_names,
        runs,
        linking,
        detection,
        training_names_added,
        fusion,
        adapted_fusion,
        adaptations,
    })
}

/// CALL belink_adapt_encoder on the ontology's names (user names included) and what it
/// recorded.
fn adapt_encoder(client: &mut Client, ontology: &str, dictionary: &str) -> Result<Adaptation, String> {
    let started = Instant::now();
    client
        .batch_execute(&format!("RESET ALL; CALL belink_adapt_encoder({}, max_minutes => 240)", literal(ontology)))
        .map_err(|e| format!("belink_adapt_encoder({ontology}): {}", db_message(&e)))?;
    let row = client
        .query_one(
            "SELECT names, step, loss::float8, names_per_s::float8, state FROM belink.encoder_adaptations
             WHERE ontology = $1",
            &[&ontology],
        )
        .map_err(|e| e.to_string())?;
    if row.get::<_, String>(4) != "done" {
        return Err(format!(
            "belink_adapt_encoder({ontology}) stopped before the end (state {})",
            row.get::<_, String>(4)
        ));
    }
    Ok(Adaptation {
        dictionary: dictionary.to_string(),
        names: row.get(0),
        steps: row.get(1),
        loss: row.get::<_, Option<f64>>(2).unwrap_or(f64::NAN),
        names_per_s: row.get::<_, Option<f64>>(3).unwrap_or(f64::NAN),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn load_ontology(client: &mut Client, name: &str, file: &str, format: &str) -> Result<f64, String> {
    let started = Instant::now();
    client
        .query_one("SELECT concepts FROM belink_load_ontology($1, $2, $3)", &[&name, &file, &format])
        .map_err(|e| format!("loading ontology {name} from {file}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    client.batch_execute("ANALYZE belink.concepts, belink.names").map_err(|e| e.to_string())?;
    Ok(seconds)
}

/// The corpus goes into tables too, where SQL users (and end-to-end linking) find it.
pub fn store_corpus(client: &mut Client, corpus: &str, documents: &[Document]) -> Result<(), String> {
    let mut tx = client.transaction().map_err(|e| e.to_string())?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS belink_eval;
         CREATE TABLE IF NOT EXISTS belink_eval.documents (
             corpus text, doc_id text, body text NOT NULL, PRIMARY KEY (corpus, doc_id));
         CREATE TABLE IF NOT EXISTS belink_eval.mentions (
             corpus text, doc_id text, start_char integer, end_char integer, mention text,
             entity_type text, concept_ids text,
             FOREIGN KEY (corpus, doc_id) REFERENCES belink_eval.documents ON DELETE CASCADE);",
    )
    .map_err(|e| format!("creating the evaluation tables: {e}"))?;
    tx.execute("DELETE FROM belink_eval.documents WHERE corpus = $1", &[&corpus]).map_err(|e| e.to_string())?;
    let insert_document = tx
        .prepare("INSERT INTO belink_eval.documents VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .map_err(|e| e.to_string())?;
    let insert_mention = tx
        .prepare("INSERT INTO belink_eval.mentions VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .map_err(|e| e.to_string())?;
    for document in documents {
        // NCBI-disease holds one abstract twice (PMID 8528200); the first copy is kept.
        let inserted =
            tx.execute(&insert_document, &[&corpus, &document.id, &document.text]).map_err(|e| e.to_string())?;
        if inserted == 0 {
            continue;
        }
        for m in &document.mentions {
            let (start, end) = (m.start as i32, m.end as i32);
            tx.execute(
                &insert_mention,
                &[&corpus, &document.id, &start, &end, &m.text, &m.entity_type, &m.concept_field],
            )
            .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

fn concept_names(client: &mut Client, ontology: &str) -> Result<HashMap<String, String>, String> {
    let rows = client
        .query("SELECT concept_id, name, alt_ids FROM belink.concepts WHERE ontology = $1", &[&ontology])
        .map_err(|e| e.to_string())?;
    let mut names = HashMap::new();
    for row in rows {
        let (id, name, alt_ids): (String, String, Vec<String>) = (row.get(0), row.get(1), row.get(2));
        for alt in alt_ids {
            names.entry(canonical(&alt)).or_insert_with(|| name.clone());
        }
        names.insert(canonical(&id), name);
    }
    Ok(names)
}

fn run_configs(
    client: &mut Client,
    spec: &DatasetSpec,
    documents: &[Document],
    dictionary: &str,
    only: Option<&[&str]>,
    runs: &mut Vec<NormalizationRun>,
) -> Result<(), String> {
    let aliases = &crate::linking::concept_aliases(client, &spec.ontology)?;
    for config in CONFIGS.iter().filter(|c| only.is_none_or(|names| names.contains(&c.name))) {
        config.apply(client)?;
        let mut cache = HashMap::new();
        for protocol in Protocol::ALL {
            let mut run = NormalizationRun::new(&spec.name, dictionary, config.name, protocol);
            measure(client, documents, &spec.ontology, aliases, MAX_K, &mut run, &mut cache)?;
            runs.push(run);
        }
    }
    Ok(())
}

/// Normalizes every query of the run's protocol in the documents (k candidates each) and
/// scores the answers; a (query, context) the cache holds is not asked again.
fn measure(
    client: &mut Client,
    documents: &[Document],
    ontology: &str,
    aliases: &HashMap<String, Vec<String>>,
    k: usize,
    run: &mut NormalizationRun,
    cache: &mut HashMap<(String, String), (Answer, f64)>,
) -> Result<(), String> {
    for document in documents {
        for mention in &document.mentions {
            for query in queries(mention, run.protocol) {
                let context = context_window(&document.text, mention.start, mention.end);
                let key = (query.text.clone(), context);
                if !cache.contains_key(&key) {
                    let answer = normalize(client, &query.text, &key.1, ontology, k, aliases)?;
                    cache.insert(key.clone(), answer);
                }
                let (answer, latency) = &cache[&key];
                score(run, &document.id, query, answer, *latency);
            }
        }
    }
    run.server_peak_mb = server_peak_mb(client);
    Ok(())
}

/// The re-ranker a run measures: a GGUF file (None: the default model) and the adapter tuned
/// for it (None: the one installed for the default model).
pub struct RerankerChoice {
    pub model: Option<String>,
    pub adapter: Option<String>,
}

impl RerankerChoice {
    /// The default model with its installed adapter: belink.reranker_model and
    /// belink.reranker_adapter reset.
    pub const DEFAULT: RerankerChoice = RerankerChoice { model: None, adapter: None };

    /// The choice given by --reranker-model and --adapter; another model needs its own adapter,
    /// since the installed one was tuned for the default model only.
    pub fn new(model: Option<&str>, adapter: Option<&str>) -> Result<RerankerChoice, String> {
        if model.is_some() && adapter.is_none() {
            return Err("another re-ranker model (--reranker-model) needs the adapter tuned for it (--adapter)".into());
        }
        Ok(RerankerChoice { model: model.map(str::to_string), adapter: adapter.map(str::to_string) })
    }

    /// What a report says of it.
    pub fn describe(&self) -> String {
        format!(
            "{}; tuned with {}",
            self.model.as_deref().unwrap_or("the default model"),
            self.adapter.as_deref().unwrap_or("the adapter installed for it")
        )
    }

    /// Sets the re-ranker's settings and waits for the model server to run with them.
    pub fn serve(&self, client: &mut Client) -> Result<(), String> {
        use_reranker(client, self.model.as_deref(), self.adapter.as_deref())
    }
}

/// One model at one k on one dataset: re-ranking ungated at the default margin, classic
/// protocol, ontology names only (as `make eval` leaves the cluster).
pub struct SweepRun {
    pub model: &'static str,
    pub k: usize,
    pub run: NormalizationRun,
}

/// Zero-shot against tuned at each k (`belink-eval rerank-sweep`): the model server is
/// restarted with the re-ranker as it is (`belink.reranker_adapter = 'none'`), then with its
/// adapter; the settings are reset at the end.
pub fn rerank_sweep(
    client: &mut Client,
    specs: &[DatasetSpec],
    ks: &[usize],
    reranker: &RerankerChoice,
) -> Result<Vec<SweepRun>, String> {
    // Each corpus and its concepts' aliases, read once for both models.
    let mut datasets = Vec::new();
    for spec in specs {
        let documents = load_corpus(&spec.corpus).map_err(|e| format!("{}: {e}", spec.corpus.display()))?;
        datasets.push((spec, documents, crate::linking::concept_aliases(client, &spec.ontology)?));
    }
    let mut sweep = Vec::new();
    for (model, adapter) in [("zero-shot", Some("none")), ("tuned", reranker.adapter.as_deref())] {
        use_reranker(client, reranker.model.as_deref(), adapter)?;
        for (spec, documents, aliases) in &datasets {
            for &k in ks {
                SWEEP_RERANKING.apply(client)?;
                let mut run = NormalizationRun::new(&spec.name, "ontology", SWEEP_RERANKING.name, Protocol::Classic);
                eprintln!("belink-eval: {} re-ranked {model} at k = {k}", spec.name);
                measure(client, documents, &spec.ontology, aliases, k, &mut run, &mut HashMap::new())?;
                sweep.push(SweepRun { model, k, run });
            }
        }
    }
    RerankerChoice::DEFAULT.serve(client)?;
    Ok(sweep)
}

/// Sets belink.reranker_model and belink.reranker_adapter (None: resets them) and waits for
/// the model server to run with them.
fn use_reranker(client: &mut Client, model: Option<&str>, adapter: Option<&str>) -> Result<(), String> {
    for (setting, value) in [("belink.reranker_model", model), ("belink.reranker_adapter", adapter)] {
        let statement = match value {
            Some(value) => format!("ALTER SYSTEM SET {setting} = {}", literal(value)),
            None => format!("ALTER SYSTEM RESET {setting}"),
        };
        client.batch_execute(&statement).map_err(|e| db_message(&e))?;
    }
    client.batch_execute("SELECT pg_reload_conf()").map_err(|e| db_message(&e))?;
    // The server reports the files it loads, "" for no adapter: the installed one when both
    // settings are reset, none when the adapter is 'none'.
    let serves_adapter = |serving: &str| match adapter {
        Some("none") => serving.is_empty(),
        Some(path) => serving == path,
        None => !serving.is_empty(),
    };
    let started = Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let status: Option<serde_json::Value> = client
            .query_one("SELECT belink_worker_status_json()", &[])
            .ok()
            .and_then(|row| row.get::<_, Option<serde_json::Value>>(0));
        let serving = |key: &str| status.as_ref().and_then(|s| s[key].as_str()).unwrap_or_default().to_string();
        let running = status.as_ref().is_some_and(|s| s["state"] == "running");
        if running
            && serves_adapter(&serving("reranker_adapter"))
            && model.is_none_or(|m| serving("reranker_model") == m)
        {
            return Ok(());
        }
        if started.elapsed().as_secs() > 120 {
            return Err(format!(
                "the model server did not restart with belink.reranker_model = {model:?}, belink.reranker_adapter = {adapter:?}"
            ));
        }
    }
}

/// Peak resident memory of the model server so far, in MB (None without a server).
fn server_peak_mb(client: &mut Client) -> Option<f64> {
    let row = client.query_one("SELECT peak_rss_mb FROM belink_worker_status()", &[]).ok()?;
    row.get::<_, Option<f64>>(0)
}

/// Embeds the ontology's names not embedded yet (belink_index) and returns the wall time.
fn index(client: &mut Client, ontology: &str) -> Result<f64, String> {
    let started = Instant::now();
    client
        .batch_execute(&format!("CALL belink_index({})", literal(ontology)))
        .map_err(|e| format!("belink_index({ontology}): {}", db_message(&e)))?;
    Ok(started.elapsed().as_secs_f64())
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn score(run: &mut NormalizationRun, document: &str, query: Query, answer: &Answer, latency_ms: f64) {
    run.queries += 1;
    run.latencies_ms.push(latency_ms);
    let candidates = &answer.candidates;
    let rank = candidates.iter().position(|c| is_correct(&query, run.protocol, &c.ids));
    if let Some(rank) = rank {
        // A NIL answer has no first answer: its candidates count from k = 2 on.
        let first = rank + usize::from(answer.nil);
        for hits in run.hits_at.iter_mut().skip(first) {
            *hits += 1;
        }
    }
    if answer.decided_by == "reranker" {
        run.reranked.push(RerankedAnswer {
            confidence: answer.confidence,
            nil: answer.nil,
            right: rank == Some(0) && !answer.nil,
            retrieval_right: answer.retrieval_choice.as_ref().is_some_and(|c| is_correct(&query, run.protocol, &c.ids)),
            gold_retrieved: rank.is_some(),
            similarities: answer.retrieval_similarities,
            latency_ms,
        });
    }
    if rank == Some(0) && !answer.nil {
        return;
    }
    let cause = match rank {
        _ if answer.nil => ErrorCause::NilAnswer,
        None => ErrorCause::NotRetrieved,
        Some(_) if answer.decided_by == "reranker" => ErrorCause::RerankerWrong,
        Some(_) => ErrorCause::RankedBelow,
    };
    run.errors.push(ErrorCase {
        document: document.to_string(),
        query,
        cause,
        gold_rank: rank.map(|r| r + 1),
        predicted: if answer.nil { None } else { candidates.first().map(|c| (c.concept_id.clone(), c.name.clone())) },
    });
}

/// Up to 200 characters of the document on each side of the mention: what the re-ranker reads.
fn context_window(text: &str, start: usize, end: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let from = start.saturating_sub(200);
    let to = (end + 200).min(chars.len());
    chars[from..to].iter().collect()
}

/// BeLink's answer for one mention: its candidates best first (the chosen one first), who
/// decided, and whether it answered "no concept".
#[derive(Debug, Clone)]
pub struct Answer {
    pub candidates: Vec<Candidate>,
    pub decided_by: String,
    pub nil: bool,
    pub confidence: f64,
    /// What retrieval alone decides: its first candidate, unless less similar to the mention
    /// than belink.min_similarity.
    pub retrieval_choice: Option<Candidate>,
    /// The similarity to the mention of retrieval's first and second candidates (0 for none).
    pub retrieval_similarities: (f64, f64),
}

/// belink_normalize for one mention in its context, and its wall time in milliseconds.
fn normalize(
    client: &mut Client,
    text: &str,
    context: &str,
    ontology: &str,
    k: usize,
    aliases: &HashMap<String, Vec<String>>,
) -> Result<(Answer, f64), String> {
    let started = Instant::now();
    let row = client
        .query_one(
            "SELECT concept_id, decided_by, candidates, confidence, current_setting('belink.min_similarity')::float8 \
             FROM belink_normalize($1, $2, $3, $4)",
            &[&text, &context, &ontology, &(k as i32)],
        )
        .map_err(|e| format!("belink_normalize({text:?}): {}", db_message(&e)))?;
    let latency = started.elapsed().as_secs_f64() * 1000.0;
    let chosen: Option<String> = row.get(0);
    let decided_by: String = row.get(1);
    let listed: serde_json::Value = row.get(2);
    let confidence: f64 = row.get::<_, Option<f64>>(3).unwrap_or(0.0);
    let min_similarity: f64 = row.get(4);
    let listed = listed.get("candidates").cloned().unwrap_or(listed);
    let mut candidates: Vec<(f64, Candidate)> = listed
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let concept_id = c["concept_id"].as_str().unwrap_or_default().to_string();
            let canonical_id = canonical(&concept_id);
            let candidate = Candidate {
                ids: aliases.get(&canonical_id).cloned().unwrap_or_else(|| vec![canonical_id]),
                name: c["name"].as_str().unwrap_or_default().to_string(),
                concept_id,
            };
            (c["probability"].as_f64().unwrap_or(0.0), candidate)
        })
        .collect();
    // Listed in retrieval's order; the rule of belink_core's Decision::from_retrieval for a
    // mention no unique exact match decides (the only ones the re-ranker sees).
    let similarity = |i: usize| listed.get(i).and_then(|c| c["similarity"].as_f64()).unwrap_or(0.0);
    let retrieval_similarities = (similarity(0), similarity(1));
    let retrieval_choice =
        candidates.first().filter(|_| retrieval_similarities.0 >= min_similarity).map(|(_, c)| c.clone());
    // The re-ranker's order is its probabilities; the chosen concept always comes first.
    if decided_by == "reranker" {
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    }
    if let Some(chosen) = &chosen {
        if let Some(position) = candidates.iter().position(|(_, c)| &c.concept_id == chosen) {
            let first = candidates.remove(position);
            candidates.insert(0, first);
        }
    }
    let answer = Answer {
        candidates: candidates.into_iter().map(|(_, c)| c).collect(),
        decided_by,
        nil: chosen.is_none(),
        confidence,
        retrieval_choice,
        retrieval_similarities,
    };
    Ok((answer, latency))
}

/// The training corpus' mentions with one gold id known to the ontology, as (concept id in the
/// ontology, mention text); the others are skipped.
fn training_labels(
    client: &mut Client,
    ontology: &str,
    training: &[Document],
) -> Result<Vec<(String, String)>, String> {
    let rows = client
        .query("SELECT concept_id, alt_ids FROM belink.concepts WHERE ontology = $1 AND NOT obsolete", &[&ontology])
        .map_err(|e| e.to_string())?;
    let mut concept_of: HashMap<String, String> = HashMap::new();
    for row in rows {
        let (id, alt_ids): (String, Vec<String>) = (row.get(0), row.get(1));
        for alt in alt_ids {
            concept_of.entry(canonical(&alt)).or_insert_with(|| id.clone());
        }
        concept_of.insert(canonical(&id), id);
    }
    let mut labels = Vec::new();
    for mention in training.iter().flat_map(|d| &d.mentions) {
        if let [only] = mention.concept_ids()[..] {
            if let Some(concept) = concept_of.get(&canonical(only)) {
                labels.push((concept.clone(), mention.text.clone()));
            }
        }
    }
    Ok(labels)
}

/// Adds the training mentions (see [`training_labels`]) as names of their gold concept
/// (BioSyn's dictionary setting).
fn add_training_names(client: &mut Client, ontology: &str, labels: &[(String, String)]) -> Result<i64, String> {
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    for (concept, text) in labels {
        names.entry(concept.clone()).or_default().push(text.clone());
    }
    let mut added = 0i64;
    for (concept, texts) in names {
        let row = client
            .query_one("SELECT belink_add_names($1, $2, $3)", &[&ontology, &concept, &texts])
            .map_err(|e| format!("belink_add_names({concept}): {e}"))?;
        added += row.get::<_, i64>(0);
    }
    Ok(added)
}

/// The fusion weights `make eval` gives the ontology, tuned on a training corpus' mentions
/// (belink_tune_fusion stores them): what `belink-eval tune-fusion` runs so that other jobs
/// (make train-reranker) see retrieval's order as the evaluation does.
pub fn tune_fusion_on_corpus(client: &mut Client, ontology: &str, corpus: &Path) -> Result<FusionTuning, String> {
    let training = load_corpus(corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let labels = training_labels(client, ontology, &training)?;
    tune_fusion(client, ontology, &labels)
}

/// Chooses the ontology's fusion weights on the training mentions (belink_tune_fusion), before
/// any of them is added as a name: the weights of the ontology-only setting.
fn tune_fusion(client: &mut Client, ontology: &str, labels: &[(String, String)]) -> Result<FusionTuning, String> {
    client
        .batch_execute(
            "RESET ALL;
             CREATE SCHEMA IF NOT EXISTS belink_eval;
             DROP TABLE IF EXISTS belink_eval.fusion_examples;
             CREATE TABLE belink_eval.fusion_examples (mention text, concept_id text);",
        )
        .map_err(|e| format!("creating the fusion examples: {e}"))?;
    for (concept, text) in labels {
        client
            .execute("INSERT INTO belink_eval.fusion_examples VALUES ($1, $2)", &[text, concept])
            .map_err(|e| e.to_string())?;
    }
    let row = client
        .query_one(
            "SELECT examples, reachable, exact_alone, trigram_alone, dense_alone, equal_weights, tuned,
                    weight_exact, weight_trigram, weight_dense
             FROM belink_tune_fusion($1, 'belink_eval.fusion_examples')",
            &[&ontology],
        )
        .map_err(|e| format!("belink_tune_fusion({ontology}): {}", db_message(&e)))?;
    Ok(FusionTuning {
        examples: row.get(0),
        reachable: row.get(1),
        exact: row.get(2),
        trigram: row.get(3),
        dense: row.get(4),
        equal_weights: row.get(5),
        tuned: row.get(6),
        weights: [row.get(7), row.get(8), row.get(9)],
    })
}

fn remove_user_names(client: &mut Client, ontology: &str) -> Result<(), String> {
    client
        .execute("DELETE FROM belink.names WHERE ontology = $1 AND kind = 'user'", &[&ontology])
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Median and 95th percentile of a list of latencies.
pub fn percentiles(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.95))
}

pub fn file_name(path: &Path) -> String {
    path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_spec() {
        let spec = DatasetSpec::parse("name=ncbi-dev,corpus=/d/dev.txt,ontology=medic,ontology_file=/s/medic.txt,format=biosyn,train=/d/train.txt").unwrap();
        assert_eq!(spec.ontology, "medic");
        assert_eq!(spec.format, "biosyn");
        assert_eq!(spec.train, Some(PathBuf::from("/d/train.txt")));
        assert!(DatasetSpec::parse("name=x,corpus=/c").unwrap_err().contains("no ontology="));
    }

    #[test]
    fn another_reranker_model_needs_its_own_adapter() {
        // The installed adapter was tuned for the default model: merged into another it would
        // measure neither.
        let refused = RerankerChoice::new(Some("/m/other.gguf"), None).err().unwrap();
        assert!(refused.contains("--adapter"), "{refused}");
        let other = RerankerChoice::new(Some("/m/other.gguf"), Some("/a/other.safetensors")).unwrap();
        assert_eq!(other.describe(), "/m/other.gguf; tuned with /a/other.safetensors");
        let default = RerankerChoice::new(None, None).unwrap();
        assert_eq!(default.describe(), RerankerChoice::DEFAULT.describe());
    }

    #[test]
    fn percentiles_of_latencies() {
        assert_eq!(percentiles(&[5.0, 1.0, 3.0, 2.0, 4.0]), (3.0, 5.0));
        assert_eq!(percentiles(&[]), (0.0, 0.0));
    }

    #[test]
    fn scoring_counts_ranks_and_causes() {
        let mut run = NormalizationRun {
            dataset: "d".into(),
            dictionary: "ontology".into(),
            config: "lexical".into(),
            protocol: Protocol::Classic,
            queries: 0,
            hits_at: vec![0; MAX_K],
            latencies_ms: vec![],
            server_peak_mb: None,
            errors: vec![],
            reranked: vec![],
        };
        let query = |gold: &str| Query { text: "x".into(), gold: vec![gold.into()], from_composite: false };
        let candidate = |id: &str| Candidate { concept_id: id.into(), name: id.into(), ids: vec![id.into()] };
        let answer = |ids: &[&str], decided_by: &str, nil: bool| Answer {
            candidates: ids.iter().map(|id| candidate(id)).collect(),
            decided_by: decided_by.into(),
            nil,
            confidence: 0.75,
            retrieval_choice: ids.first().map(|id| candidate(id)),
            retrieval_similarities: (0.9, 0.8),
        };
        score(&mut run, "doc", query("A"), &answer(&["A", "B"], "retrieval", false), 1.0);
        score(&mut run, "doc", query("B"), &answer(&["A", "B"], "retrieval", false), 1.0);
        score(&mut run, "doc", query("C"), &answer(&["A"], "retrieval", false), 1.0);
        score(&mut run, "doc", query("B"), &answer(&["A", "B"], "reranker", false), 1.0);
        score(&mut run, "doc", query("A"), &answer(&["A", "B"], "reranker", true), 1.0);
        assert_eq!(run.queries, 5);
        assert_eq!(run.hits_at[0], 1, "a NIL answer is never right at k = 1");
        assert_eq!(run.hits_at[1], 4);
        let causes: Vec<ErrorCause> = run.errors.iter().map(|e| e.cause).collect();
        assert_eq!(
            causes,
            [ErrorCause::RankedBelow, ErrorCause::NotRetrieved, ErrorCause::RerankerWrong, ErrorCause::NilAnswer]
        );
        assert_eq!(run.errors[0].gold_rank, Some(2));
        let reranked = |nil, retrieval_right| RerankedAnswer {
            confidence: 0.75,
            nil,
            right: false,
            retrieval_right,
            gold_retrieved: true,
            similarities: (0.9, 0.8),
            latency_ms: 1.0,
        };
        assert_eq!(run.reranked, [reranked(false, false), reranked(true, true)]);
    }
}
