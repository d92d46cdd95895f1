//! Every `belink.*` setting, defined and read here only: the linking functions take them as
//! one [`Settings`] value per call, the supervisor as [`ServerOptions`].
//!
//! Model-server settings (`belink.encoder_model`, `belink.device`...) take effect on reload
//! (`SELECT pg_reload_conf()`): the supervisor restarts the server with them. The others are
//! per session. The `belink` prefix is reserved: setting an unknown `belink.*` name is an
//! error, not a silent placeholder.

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::time::Duration;

use belink_core::retrieval::fuse::Source;
use belink_core::settings::{MentionDetection, RerankMode, Retrieval, Settings, TrigramSearch};
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

type Text = GucSetting<Option<CString>>;

static ENCODER_MODEL: Text = Text::new(None);
static ENCODER_POOLING: Text = Text::new(Some(c"auto"));
static DEVICE: Text = Text::new(Some(c"auto"));
static SERVER_PATH: Text = Text::new(None);
static SERVER_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(32);
static SERVER_BATCH_WAIT_MS: GucSetting<i32> = GucSetting::<i32>::new(2);
static SERVER_THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
static SERVER_DICTIONARIES_MB: GucSetting<i32> = GucSetting::<i32>::new(0);
static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);

static MAX_DOCUMENT_CHARS: GucSetting<i32> = GucSetting::<i32>::new(10_000_000);
static MAX_DICTIONARY_MB: GucSetting<i32> = GucSetting::<i32>::new(1024);

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum RetrievalGuc {
    #[name = c"hybrid"]
    Hybrid,
    #[name = c"lexical"]
    Lexical,
    #[name = c"exact"]
    Exact,
    #[name = c"trigram"]
    Trigram,
    #[name = c"dense"]
    Dense,
}

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum TrigramSearchGuc {
    #[name = c"server"]
    Server,
    #[name = c"pg_trgm"]
    PgTrgm,
}

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum DetectionGuc {
    #[name = c"dictionary"]
    Dictionary,
    #[name = c"scored"]
    Scored,
}

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum RerankModeGuc {
    #[name = c"score"]
    Score,
    #[name = c"generate"]
    Generate,
}

static DETECTION: GucSetting<DetectionGuc> = GucSetting::<DetectionGuc>::new(DetectionGuc::Scored);
static RETRIEVAL: GucSetting<RetrievalGuc> = GucSetting::<RetrievalGuc>::new(RetrievalGuc::Hybrid);
static RRF_K: GucSetting<i32> = GucSetting::<i32>::new(60);
static TUNED_FUSION: GucSetting<bool> = GucSetting::<bool>::new(true);
static TRIGRAM_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.3);
static TRIGRAM_SEARCH: GucSetting<TrigramSearchGuc> = GucSetting::<TrigramSearchGuc>::new(TrigramSearchGuc::Server);
static RETRIEVAL_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(10_000);

static RERANKER_MODEL: Text = Text::new(None);
static RERANKER_ADAPTER: Text = Text::new(None);
static RERANK_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(8);
static RERANK: GucSetting<bool> = GucSetting::<bool>::new(false);
static RERANKER_BF16: GucSetting<bool> = GucSetting::<bool>::new(true);
static RERANK_MODE: GucSetting<RerankModeGuc> = GucSetting::<RerankModeGuc>::new(RerankModeGuc::Score);
static TOP_K: GucSetting<i32> = GucSetting::<i32>::new(10);
static NIL_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.0);
static OVERRIDE_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.5);
static NONE_OVERRIDE_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(1.0);
static RERANK_MARGIN: GucSetting<f64> = GucSetting::<f64>::new(0.05);
static MIN_SIMILARITY: GucSetting<f64> = GucSetting::<f64>::new(0.6);
static CONTEXT_CHARS: GucSetting<i32> = GucSetting::<i32>::new(200);

static UMLS_SOURCES: Text = Text::new(None);
static UMLS_LANGUAGES: Text = Text::new(Some(c"ENG"));

pub fn init() {
    text(&ENCODER_MODEL, c"belink.encoder_model", c"Directory of the sentence encoder (BERT family: config.json, tokenizer.json, model.safetensors); empty = the default all-MiniLM-L6-v2 installed with the extension.", GucContext::Sighup);
    text(
        &ENCODER_POOLING,
        c"belink.encoder_pooling",
        c"Sentence pooling of the encoder: auto (from its sentence-transformers configuration), mean or cls (SapBERT).",
        GucContext::Sighup,
    );
    text(&DEVICE, c"belink.device", c"Where the model server runs the models: auto (GPU when built with CUDA and one is present), cpu, cuda or cuda:N.", GucContext::Sighup);
    text(
        &SERVER_PATH,
        c"belink.server_path",
        c"The belink-server executable; empty = belink-server in PostgreSQL's bin directory.",
        GucContext::Sighup,
    );
    int(
        &SERVER_BATCH_SIZE,
        c"belink.server_batch_size",
        c"Most texts the model server encodes in one forward pass.",
        1,
        4096,
        GucContext::Sighup,
    );
    GucRegistry::define_int_guc(
        c"belink.server_batch_wait_ms",
        c"How long a request waits for others to join its batch.",
        c"",
        &SERVER_BATCH_WAIT_MS,
        0,
        1000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    int(
        &SERVER_THREADS,
        c"belink.server_threads",
        c"CPU threads of the model server; 0 = one per core.",
        0,
        1024,
        GucContext::Sighup,
    );
    int(
        &SERVER_DICTIONARIES_MB,
        c"belink.server_dictionaries_mb",
        c"Most memory (in MB) the model server's shared mention dictionaries may hold together; 0 = half the machine's memory, -1 = no limit.",
        -1,
        i32::MAX,
        GucContext::Sighup,
    );
    GucRegistry::define_int_guc(
        c"belink.request_timeout",
        c"How long a call waits for the model server before failing.",
        c"",
        &REQUEST_TIMEOUT_MS,
        100,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    int(
        &MAX_DOCUMENT_CHARS,
        c"belink.max_document_chars",
        c"Longest document (in characters) belink_link accepts; a resource limit: superusers and roles granted SET on it change it.",
        1,
        i32::MAX,
        GucContext::Suset,
    );
    int(
        &MAX_DICTIONARY_MB,
        c"belink.max_dictionary_mb",
        c"Largest mention dictionary (estimated, in MB) a session builds to link text against an ontology; -1 = no limit. A resource limit: superusers and roles granted SET on it change it.",
        -1,
        i32::MAX,
        GucContext::Suset,
    );
    text(
        &RERANKER_MODEL,
        c"belink.reranker_model",
        c"The re-ranking LLM: a GGUF file (llama, qwen2, gemma3) or a Hugging Face directory; empty = the default Gemma 3 270M installed with the extension, with its adapter.",
        GucContext::Sighup,
    );
    text(
        &RERANKER_ADAPTER,
        c"belink.reranker_adapter",
        c"A LoRA adapter (safetensors, from rerank-tune) merged into the re-ranking LLM at load; empty = the adapter tuned for the default model, installed with the extension, when belink.reranker_model is the default too; 'none' = the model as it is.",
        GucContext::Sighup,
    );
    GucRegistry::define_bool_guc(
        c"belink.reranker_bf16",
        c"Where the CPU has Intel AMX, the re-ranking LLM's matrix products run in bfloat16 (f32 sums): about twice as fast, option probabilities within about 0.015 of f32 products (rerank-bench --bf16). Off: f32 products everywhere.",
        c"",
        &RERANKER_BF16,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    int(
        &RERANK_BATCH_SIZE,
        c"belink.rerank_batch_size",
        c"Most mentions the re-ranker takes from its queue at once (each core scores one at a time).",
        1,
        256,
        GucContext::Sighup,
    );
    GucRegistry::define_bool_guc(
        c"belink.rerank",
        c"Whether an LLM re-ranks the retrieved candidates (off: retrieval's top candidate); it makes the model server load the LLM, so superusers and roles granted SET on it turn it on.",
        c"",
        &RERANK,
        GucContext::Suset,
        GucFlags::empty(),
    );
    GucRegistry::define_enum_guc(
        c"belink.detection",
        c"How mentions are found: dictionary (the mention dictionary alone, leftmost-longest) or scored (its detections and the spans around them chosen by the ontology's span scorer, see belink_set_span_scorer; the dictionary alone for ontologies without one).",
        c"",
        &DETECTION,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_enum_guc(
        c"belink.rerank_mode",
        c"How the re-ranker answers: score (one forward pass, label probabilities) or generate (greedy generation, the slower reference).",
        c"",
        &RERANK_MODE,
        GucContext::Userset,
        GucFlags::empty(),
    );
    int(
        &TOP_K,
        c"belink.top_k",
        c"Candidates retrieved and shown to the re-ranker per mention.",
        1,
        25,
        GucContext::Userset,
    );
    GucRegistry::define_float_guc(
        c"belink.nil_threshold",
        c"Least re-ranker probability for a concept to be chosen; below it the mention is left unlinked (NIL).",
        c"",
        &NIL_THRESHOLD,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_float_guc(
        c"belink.rerank_override_threshold",
        c"Least re-ranker probability for its answer to overrule retrieval's decision; below it, retrieval's decision stands.",
        c"",
        &OVERRIDE_THRESHOLD,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_float_guc(
        c"belink.rerank_none_threshold",
        c"Least probability of the re-ranker's \"none of these\" for it to overrule a concept retrieval chose (the mention is left unlinked); below it, retrieval's decision stands (1: only when certain).",
        c"",
        &NONE_OVERRIDE_THRESHOLD,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_float_guc(
        c"belink.rerank_margin",
        c"Re-rank a mention only when retrieval is unsure of it: its first candidate is less than this much more similar to the mention than its second; otherwise retrieval decides (1: every mention that no unique exact match decides).",
        c"",
        &RERANK_MARGIN,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_float_guc(
        c"belink.min_similarity",
        c"Without re-ranking: least similarity of a mention to its best candidate's name (1 exact, trigram similarity, or cosine) for the mention to be linked; below it, NIL.",
        c"",
        &MIN_SIMILARITY,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::empty(),
    );
    int(
        &CONTEXT_CHARS,
        c"belink.context_chars",
        c"Characters of text on each side of a mention shown to the re-ranker.",
        0,
        10_000,
        GucContext::Userset,
    );
    GucRegistry::define_enum_guc(
        c"belink.retrieval",
        c"Candidate retrieval: hybrid (exact + trigram + dense, fused), lexical (exact + trigram), or one source alone (exact, trigram, dense) to measure it.",
        c"",
        &RETRIEVAL,
        GucContext::Userset,
        GucFlags::empty(),
    );
    int(
        &RRF_K,
        c"belink.rrf_k",
        c"The constant k of reciprocal-rank fusion: score = sum of weight/(k + rank) over the retrieval sources.",
        1,
        10_000,
        GucContext::Userset,
    );
    GucRegistry::define_enum_guc(
        c"belink.trigram_search",
        c"Where the trigram source searches: server (the model server's shared in-memory index; pg_trgm when the server cannot answer) or pg_trgm (the GIN index on belink.names).",
        c"",
        &TRIGRAM_SEARCH,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_bool_guc(
        c"belink.tuned_fusion",
        c"Whether each ontology's candidates are fused with its own source weights (belink_tune_fusion); off: equal weights.",
        c"",
        &TUNED_FUSION,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_float_guc(
        c"belink.trigram_threshold",
        c"Minimum trigram similarity (pg_trgm) of a name to a mention for the name to be a candidate.",
        c"Lower finds more distant names, at the cost of speed.",
        &TRIGRAM_THRESHOLD,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::empty(),
    );
    int(
        &RETRIEVAL_CACHE_SIZE,
        c"belink.retrieval_cache_size",
        c"Mentions whose retrieved candidates a session keeps for later belink_link calls (emptied when full, and when an ontology, its embeddings or a retrieval setting changes); 0 = no cache.",
        0,
        10_000_000,
        GucContext::Userset,
    );
    text(
        &UMLS_SOURCES,
        c"belink.umls_sources",
        c"UMLS sources (SAB) kept when loading MRCONSO.RRF, comma-separated; empty keeps every source.",
        GucContext::Userset,
    );
    text(
        &UMLS_LANGUAGES,
        c"belink.umls_languages",
        c"UMLS languages (LAT) kept when loading MRCONSO.RRF, comma-separated; empty keeps every language.",
        GucContext::Userset,
    );
    // SAFETY: called from _PG_init with a static NUL-terminated name.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"belink".as_ptr()) };
}

fn text(setting: &'static Text, name: &'static CStr, description: &'static CStr, context: GucContext) {
    GucRegistry::define_string_guc(name, description, c"", setting, context, GucFlags::empty());
}

fn int(
    setting: &'static GucSetting<i32>,
    name: &'static CStr,
    description: &'static CStr,
    min: i32,
    max: i32,
    context: GucContext,
) {
    GucRegistry::define_int_guc(name, description, c"", setting, min, max, context, GucFlags::empty());
}

/// A text setting's value; None when unset or empty.
fn get(setting: &Text) -> Option<String> {
    setting.get().map(|s| s.to_string_lossy().trim().to_string()).filter(|s| !s.is_empty())
}

/// A comma-separated list setting as its items.
fn list(setting: &Text) -> Vec<String> {
    get(setting).unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// The session's settings for the linking pipeline.
pub fn settings() -> Settings {
    Settings {
        retrieval: match RETRIEVAL.get() {
            RetrievalGuc::Hybrid => Retrieval::Hybrid,
            RetrievalGuc::Lexical => Retrieval::Lexical,
            RetrievalGuc::Exact => Retrieval::Only(Source::Exact),
            RetrievalGuc::Trigram => Retrieval::Only(Source::Trigram),
            RetrievalGuc::Dense => Retrieval::Only(Source::Dense),
        },
        rrf_k: RRF_K.get() as f64,
        tuned_fusion: TUNED_FUSION.get(),
        trigram_threshold: TRIGRAM_THRESHOLD.get(),
        trigram_search: match TRIGRAM_SEARCH.get() {
            TrigramSearchGuc::Server => TrigramSearch::Server,
            TrigramSearchGuc::PgTrgm => TrigramSearch::PgTrgm,
        },
        retrieval_cache_size: RETRIEVAL_CACHE_SIZE.get().max(0) as usize,
        detection: match DETECTION.get() {
            DetectionGuc::Dictionary => MentionDetection::Dictionary,
            DetectionGuc::Scored => MentionDetection::Scored,
        },
        rerank: RERANK.get(),
        rerank_mode: match RERANK_MODE.get() {
            RerankModeGuc::Score => RerankMode::Score,
            RerankModeGuc::Generate => RerankMode::Generate,
        },
        top_k: TOP_K.get().max(1) as usize,
        nil_threshold: NIL_THRESHOLD.get(),
        override_threshold: OVERRIDE_THRESHOLD.get(),
        none_override_threshold: NONE_OVERRIDE_THRESHOLD.get(),
        rerank_margin: RERANK_MARGIN.get(),
        min_similarity: MIN_SIMILARITY.get(),
        context_chars: CONTEXT_CHARS.get().max(0) as usize,
        max_document_chars: MAX_DOCUMENT_CHARS.get().max(1) as usize,
    }
}

/// The largest mention dictionary a session may build, in MB (belink.max_dictionary_mb);
/// None: no limit.
pub fn max_dictionary_mb() -> Option<usize> {
    usize::try_from(MAX_DICTIONARY_MB.get()).ok()
}

/// How long a call waits for the model server (belink.request_timeout).
pub fn request_timeout() -> Duration {
    Duration::from_millis(REQUEST_TIMEOUT_MS.get().max(1) as u64)
}

/// UMLS sources and languages kept when loading MRCONSO.RRF.
pub fn umls_filter() -> (Vec<String>, Vec<String>) {
    (list(&UMLS_SOURCES), list(&UMLS_LANGUAGES))
}

/// What the supervisor starts the model server with; None where the setting is empty (the
/// installed default applies).
pub struct ServerOptions {
    pub program: Option<PathBuf>,
    pub encoder: Option<PathBuf>,
    pub reranker: Option<PathBuf>,
    pub reranker_adapter: Option<String>,
    pub reranker_bf16: bool,
    pub pooling: String,
    pub device: String,
    pub batch_size: i32,
    pub batch_wait_ms: i32,
    pub threads: i32,
    pub rerank_batch_size: i32,
    pub dictionaries_mb: i32,
}

pub fn server_options() -> ServerOptions {
    ServerOptions {
        program: get(&SERVER_PATH).map(PathBuf::from),
        encoder: get(&ENCODER_MODEL).map(PathBuf::from),
        reranker: get(&RERANKER_MODEL).map(PathBuf::from),
        reranker_adapter: get(&RERANKER_ADAPTER),
        reranker_bf16: RERANKER_BF16.get(),
        pooling: get(&ENCODER_POOLING).unwrap_or_else(|| "auto".into()),
        device: get(&DEVICE).unwrap_or_else(|| "auto".into()),
        batch_size: SERVER_BATCH_SIZE.get(),
        batch_wait_ms: SERVER_BATCH_WAIT_MS.get(),
        threads: SERVER_THREADS.get(),
        rerank_batch_size: RERANK_BATCH_SIZE.get(),
        dictionaries_mb: SERVER_DICTIONARIES_MB.get(),
    }
}
