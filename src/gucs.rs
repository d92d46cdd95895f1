//! Every `belink.*` setting, in one place.
//!
//! Model-server settings (`belink.encoder_model`, `belink.device`...) take effect on reload
//! (`SELECT pg_reload_conf()`): the supervisor restarts the server with them. The others are
//! per session.

use std::ffi::{CStr, CString};

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

type Text = GucSetting<Option<CString>>;

pub static ENCODER_MODEL: Text = Text::new(None);
pub static ENCODER_POOLING: Text = Text::new(Some(c"auto"));
pub static DEVICE: Text = Text::new(Some(c"auto"));
pub static SERVER_PATH: Text = Text::new(None);
pub static SERVER_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(32);
pub static SERVER_BATCH_WAIT_MS: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static SERVER_THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);

pub static MAX_DOCUMENT_CHARS: GucSetting<i32> = GucSetting::<i32>::new(10_000_000);

pub static RETRIEVAL: Text = Text::new(Some(c"hybrid"));
pub static RRF_K: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static TRIGRAM_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.3);
pub static RETRIEVAL_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(10_000);

pub static RERANKER_MODEL: Text = Text::new(None);
pub static RERANK_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(8);
pub static RERANK: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static RERANK_MODE: Text = Text::new(Some(c"score"));
pub static TOP_K: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static NIL_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.0);
pub static CONTEXT_CHARS: GucSetting<i32> = GucSetting::<i32>::new(200);

pub static UMLS_SOURCES: Text = Text::new(None);
pub static UMLS_LANGUAGES: Text = Text::new(Some(c"ENG"));

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
    int(
        &SERVER_BATCH_WAIT_MS,
        c"belink.server_batch_wait_ms",
        c"How long (ms) a request waits for others to join its batch.",
        0,
        1000,
        GucContext::Sighup,
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
        &REQUEST_TIMEOUT_MS,
        c"belink.request_timeout",
        c"How long (ms) a call waits for the model server before failing.",
        100,
        i32::MAX,
        GucContext::Userset,
    );
    int(
        &MAX_DOCUMENT_CHARS,
        c"belink.max_document_chars",
        c"Longest document (in characters) belink_link accepts.",
        1,
        i32::MAX,
        GucContext::Userset,
    );
    text(
        &RERANKER_MODEL,
        c"belink.reranker_model",
        c"The re-ranking LLM: a GGUF file (llama, qwen2) or a Hugging Face directory; empty = the default SmolLM2-135M-Instruct installed with the extension.",
        GucContext::Sighup,
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
        c"Whether an LLM re-ranks the retrieved candidates (off: retrieval's top candidate).",
        c"",
        &RERANK,
        GucContext::Userset,
        GucFlags::empty(),
    );
    text(
        &RERANK_MODE,
        c"belink.rerank_mode",
        c"How the re-ranker answers: score (one forward pass, label probabilities) or generate (greedy generation, the slower reference).",
        GucContext::Userset,
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
    int(
        &CONTEXT_CHARS,
        c"belink.context_chars",
        c"Characters of text on each side of a mention shown to the re-ranker.",
        0,
        10_000,
        GucContext::Userset,
    );
    text(
        &RETRIEVAL,
        c"belink.retrieval",
        c"Candidate retrieval: hybrid (exact + trigram + dense, fused) or lexical (exact + trigram).",
        GucContext::Userset,
    );
    int(
        &RRF_K,
        c"belink.rrf_k",
        c"The constant k of reciprocal-rank fusion: score = sum of 1/(k + rank) over the retrieval sources.",
        1,
        10_000,
        GucContext::Userset,
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
pub fn get(setting: &Text) -> Option<String> {
    setting.get().map(|s| s.to_string_lossy().trim().to_string()).filter(|s| !s.is_empty())
}

/// A comma-separated list setting as its items.
pub fn list(setting: &Text) -> Vec<String> {
    get(setting).unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}
