//! The wire protocol between PostgreSQL backends and the model server.
//!
//! A frame is `u32 length | u8 kind | u64 request id | body`, little-endian, `length` counting
//! everything after itself. Strings are `u32 byte length | UTF-8`. Decoding checks every
//! length against what is left, so a malformed or hostile frame is an error, never a panic
//! or an unbounded allocation.

use std::io::{self, Read, Write};

use crate::decision::prompt::{PromptCandidate, RerankItem};
use crate::mentions::dictionary::DictionaryName;
use crate::mentions::shared::DictionaryKey;
use crate::mentions::Mention;

/// The largest frame either side accepts (a batch of thousands of texts or a long document
/// fits comfortably).
pub const MAX_FRAME_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request could not be decoded or is not allowed.
    BadRequest = 1,
    /// The model is not loaded (missing or broken file); the message says which.
    ModelUnavailable = 2,
    /// The model failed on this input.
    Inference = 3,
    /// The server is stopping.
    ShuttingDown = 4,
    /// The server holds no trigram index of that ontology generation: load it, then ask again.
    IndexMissing = 5,
    /// The server holds no training run for that directory: send the examples, then go on.
    TrainerMissing = 6,
}

impl ErrorCode {
    fn from_byte(byte: u8) -> Option<ErrorCode> {
        Some(match byte {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::ModelUnavailable,
            3 => ErrorCode::Inference,
            4 => ErrorCode::ShuttingDown,
            5 => ErrorCode::IndexMissing,
            6 => ErrorCode::TrainerMissing,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Embed these texts with the sentence encoder: the server's configured one when `model`
    /// is empty, else the adapted encoder in directory `model` (see [`Message::AdaptRequest`]).
    EmbedRequest {
        model: String,
        texts: Vec<String>,
    },
    /// The server's state, as a JSON object.
    StatusRequest,
    /// One L2-normalized vector of `dim` floats per text, in order.
    EmbedReply {
        dim: u32,
        vectors: Vec<f32>,
    },
    StatusReply {
        json: String,
    },
    ErrorReply {
        code: ErrorCode,
        message: String,
    },
    /// Re-rank these items: label probabilities (one pass), or greedy answers (`generate`).
    RerankRequest {
        generate: bool,
        items: Vec<RerankItem>,
    },
    /// Per item: the probabilities of its candidates then "none of these"; with `generate`,
    /// the generated answer too (empty otherwise).
    RerankReply {
        probabilities: Vec<Vec<f32>>,
        answers: Vec<String>,
    },
    /// The names of `ontology` at `generation` at least `threshold` similar to each folded
    /// query by character trigrams, at most `limit` each (see retrieval::trigram).
    TrigramSearchRequest {
        ontology: String,
        generation: i64,
        threshold: f64,
        limit: u32,
        queries: Vec<String>,
    },
    /// Per query: `(name_id, similarity)`, most similar first.
    TrigramSearchReply {
        hits: Vec<Vec<(i64, f32)>>,
    },
    /// Part of the names `(name_id, folded name)` of `ontology` at `generation`, sent in order
    /// on one connection, `offset` names sent before it (0 starts anew); `last` builds the
    /// index and replaces older generations.
    TrigramLoadRequest {
        ontology: String,
        generation: i64,
        offset: u64,
        last: bool,
        names: Vec<(i64, String)>,
    },
    /// Names received so far for the index being loaded.
    TrigramLoadReply {
        names: u64,
    },
    /// Forget every trigram index, shared mention dictionary and span scorer of `ontology` (it
    /// was dropped).
    TrigramDropRequest {
        ontology: String,
    },
    /// How many generations' indexes, dictionaries and scorers were forgotten.
    TrigramDropReply {
        indexes: u32,
    },
    /// Part of the detection names of the dictionary `key` (its scorer left aside), sent in
    /// order on one connection like a trigram index's; `last` builds the shared mention
    /// dictionary (see [`crate::mentions::shared`]).
    DictionaryLoadRequest {
        key: DictionaryKey,
        offset: u64,
        last: bool,
        names: Vec<DictionaryName>,
    },
    /// Names received so far for the dictionary being loaded.
    DictionaryLoadReply {
        names: u64,
    },
    /// The server holds the dictionary of the first part already (another session sent it,
    /// perhaps while this one waited): send no more of it.
    DictionaryHeldReply,
    /// The span scorer of `ontology` at `version`, as stored (`belink.span_scorers`).
    ScorerLoadRequest {
        ontology: String,
        version: i64,
        text: String,
    },
    ScorerLoadReply,
    /// The mentions of each text by the shared dictionaries of `keys` (each its own ontology,
    /// in this order), chosen by their span scorers when `scored`.
    DetectRequest {
        keys: Vec<DictionaryKey>,
        scored: bool,
        texts: Vec<String>,
    },
    /// Per text, its mentions (`Mention::dictionary` indexes the request's keys).
    DetectReply {
        mentions: Vec<Vec<Mention>>,
    },
    /// The dictionaries and scorers (indices into the request's keys) the server lacks: send
    /// them, then ask again.
    DetectMissingReply {
        dictionaries: Vec<u32>,
        scorers: Vec<u32>,
    },
    /// Train the encoder in `base_model` on `examples` ((concept id, name) pairs) for at most
    /// `seconds`, in `work_dir` (checkpoints; the adapted model in `work_dir/model` when done);
    /// `config` is the training configuration as JSON. Empty `examples` go on with the run the
    /// server holds for `work_dir` (TrainerMissing when it holds none: send them again).
    AdaptRequest {
        ontology: String,
        base_model: String,
        work_dir: String,
        config: String,
        seconds: u32,
        examples: Vec<(String, String)>,
    },
    /// The run's progress as a JSON object.
    AdaptReply {
        json: String,
    },
}

const KIND_EMBED_REQUEST: u8 = 1;
const KIND_STATUS_REQUEST: u8 = 2;
const KIND_EMBED_REPLY: u8 = 3;
const KIND_STATUS_REPLY: u8 = 4;
const KIND_ERROR_REPLY: u8 = 5;
const KIND_RERANK_REQUEST: u8 = 6;
const KIND_RERANK_REPLY: u8 = 7;
const KIND_TRIGRAM_SEARCH_REQUEST: u8 = 8;
const KIND_TRIGRAM_SEARCH_REPLY: u8 = 9;
const KIND_TRIGRAM_LOAD_REQUEST: u8 = 10;
const KIND_TRIGRAM_LOAD_REPLY: u8 = 11;
const KIND_ADAPT_REQUEST: u8 = 12;
const KIND_ADAPT_REPLY: u8 = 13;
const KIND_TRIGRAM_DROP_REQUEST: u8 = 14;
const KIND_TRIGRAM_DROP_REPLY: u8 = 15;
const KIND_DICTIONARY_LOAD_REQUEST: u8 = 16;
const KIND_DICTIONARY_LOAD_REPLY: u8 = 17;
const KIND_SCORER_LOAD_REQUEST: u8 = 18;
const KIND_SCORER_LOAD_REPLY: u8 = 19;
const KIND_DETECT_REQUEST: u8 = 20;
const KIND_DETECT_REPLY: u8 = 21;
const KIND_DETECT_MISSING_REPLY: u8 = 22;
const KIND_DICTIONARY_HELD_REPLY: u8 = 23;
const HEADER_BYTES: usize = 1 + 8;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

fn malformed(message: impl Into<String>) -> WireError {
    WireError::Malformed(message.into())
}

impl Message {
    /// The frame carrying this message, ready to write.
    pub fn encode(&self, request_id: u64) -> Vec<u8> {
        let mut body = Vec::new();
        let kind = match self {
            Message::EmbedRequest { model, texts } => {
                put_str(&mut body, model);
                put_u32(&mut body, texts.len() as u32);
                for text in texts {
                    put_str(&mut body, text);
                }
                KIND_EMBED_REQUEST
            }
            Message::StatusRequest => KIND_STATUS_REQUEST,
            Message::EmbedReply { dim, vectors } => {
                put_u32(&mut body, *dim);
                put_u32(&mut body, vectors.len() as u32);
                body.reserve(vectors.len() * 4);
                for value in vectors {
                    body.extend_from_slice(&value.to_le_bytes());
                }
                KIND_EMBED_REPLY
            }
            Message::StatusReply { json } => {
                put_str(&mut body, json);
                KIND_STATUS_REPLY
            }
            Message::ErrorReply { code, message } => {
                body.push(*code as u8);
                put_str(&mut body, message);
                KIND_ERROR_REPLY
            }
            Message::RerankRequest { generate, items } => {
                body.push(u8::from(*generate));
                put_u32(&mut body, items.len() as u32);
                for item in items {
                    put_str(&mut body, &item.mention);
                    put_optional_str(&mut body, item.context.as_deref());
                    put_u32(&mut body, item.candidates.len() as u32);
                    for candidate in &item.candidates {
                        put_str(&mut body, &candidate.name);
                        put_optional_str(&mut body, candidate.definition.as_deref());
                        put_u32(&mut body, candidate.synonyms.len() as u32);
                        for synonym in &candidate.synonyms {
                            put_str(&mut body, synonym);
                        }
                    }
                }
                KIND_RERANK_REQUEST
            }
            Message::RerankReply { probabilities, answers } => {
                put_u32(&mut body, probabilities.len() as u32);
                for row in probabilities {
                    put_u32(&mut body, row.len() as u32);
                    for p in row {
                        body.extend_from_slice(&p.to_le_bytes());
                    }
                }
                put_u32(&mut body, answers.len() as u32);
                for answer in answers {
                    put_str(&mut body, answer);
                }
                KIND_RERANK_REPLY
            }
            Message::TrigramSearchRequest { ontology, generation, threshold, limit, queries } => {
                put_str(&mut body, ontology);
                body.extend_from_slice(&generation.to_le_bytes());
                body.extend_from_slice(&threshold.to_le_bytes());
                put_u32(&mut body, *limit);
                put_u32(&mut body, queries.len() as u32);
                for query in queries {
                    put_str(&mut body, query);
                }
                KIND_TRIGRAM_SEARCH_REQUEST
            }
            Message::TrigramSearchReply { hits } => {
                put_u32(&mut body, hits.len() as u32);
                for list in hits {
                    put_u32(&mut body, list.len() as u32);
                    for (name_id, score) in list {
                        body.extend_from_slice(&name_id.to_le_bytes());
                        body.extend_from_slice(&score.to_le_bytes());
                    }
                }
                KIND_TRIGRAM_SEARCH_REPLY
            }
            Message::TrigramLoadRequest { ontology, generation, offset, last, names } => {
                put_str(&mut body, ontology);
                body.extend_from_slice(&generation.to_le_bytes());
                body.extend_from_slice(&offset.to_le_bytes());
                body.push(u8::from(*last));
                put_u32(&mut body, names.len() as u32);
                for (name_id, folded) in names {
                    body.extend_from_slice(&name_id.to_le_bytes());
                    put_str(&mut body, folded);
                }
                KIND_TRIGRAM_LOAD_REQUEST
            }
            Message::TrigramLoadReply { names } => {
                body.extend_from_slice(&names.to_le_bytes());
                KIND_TRIGRAM_LOAD_REPLY
            }
            Message::TrigramDropRequest { ontology } => {
                put_str(&mut body, ontology);
                KIND_TRIGRAM_DROP_REQUEST
            }
            Message::TrigramDropReply { indexes } => {
                put_u32(&mut body, *indexes);
                KIND_TRIGRAM_DROP_REPLY
            }
            Message::AdaptRequest { ontology, base_model, work_dir, config, seconds, examples } => {
                for text in [ontology, base_model, work_dir, config] {
                    put_str(&mut body, text);
                }
                put_u32(&mut body, *seconds);
                put_u32(&mut body, examples.len() as u32);
                for (concept, name) in examples {
                    put_str(&mut body, concept);
                    put_str(&mut body, name);
                }
                KIND_ADAPT_REQUEST
            }
            Message::AdaptReply { json } => {
                put_str(&mut body, json);
                KIND_ADAPT_REPLY
            }
            Message::DictionaryLoadRequest { key, offset, last, names } => {
                put_key(&mut body, key);
                body.extend_from_slice(&offset.to_le_bytes());
                body.push(u8::from(*last));
                put_u32(&mut body, names.len() as u32);
                for name in names {
                    put_str(&mut body, &name.concept_id);
                    put_str(&mut body, &name.name);
                    put_str(&mut body, &name.normalized);
                }
                KIND_DICTIONARY_LOAD_REQUEST
            }
            Message::DictionaryLoadReply { names } => {
                body.extend_from_slice(&names.to_le_bytes());
                KIND_DICTIONARY_LOAD_REPLY
            }
            Message::ScorerLoadRequest { ontology, version, text } => {
                put_str(&mut body, ontology);
                body.extend_from_slice(&version.to_le_bytes());
                put_str(&mut body, text);
                KIND_SCORER_LOAD_REQUEST
            }
            Message::DictionaryHeldReply => KIND_DICTIONARY_HELD_REPLY,
            Message::ScorerLoadReply => KIND_SCORER_LOAD_REPLY,
            Message::DetectRequest { keys, scored, texts } => {
                put_u32(&mut body, keys.len() as u32);
                for key in keys {
                    put_key(&mut body, key);
                }
                body.push(u8::from(*scored));
                put_u32(&mut body, texts.len() as u32);
                for text in texts {
                    put_str(&mut body, text);
                }
                KIND_DETECT_REQUEST
            }
            Message::DetectReply { mentions } => {
                put_u32(&mut body, mentions.len() as u32);
                for list in mentions {
                    put_u32(&mut body, list.len() as u32);
                    for mention in list {
                        put_mention(&mut body, mention);
                    }
                }
                KIND_DETECT_REPLY
            }
            Message::DetectMissingReply { dictionaries, scorers } => {
                for list in [dictionaries, scorers] {
                    put_u32(&mut body, list.len() as u32);
                    for index in list {
                        put_u32(&mut body, *index);
                    }
                }
                KIND_DETECT_MISSING_REPLY
            }
        };
        let mut frame = Vec::with_capacity(4 + HEADER_BYTES + body.len());
        put_u32(&mut frame, (HEADER_BYTES + body.len()) as u32);
        frame.push(kind);
        frame.extend_from_slice(&request_id.to_le_bytes());
        frame.extend_from_slice(&body);
        frame
    }

    /// Decodes a frame's content (everything after the length).
    pub fn decode(frame: &[u8]) -> Result<(u64, Message), WireError> {
        let mut input = Input { bytes: frame };
        let kind = input.u8()?;
        let request_id = input.u64()?;
        let message = match kind {
            KIND_EMBED_REQUEST => {
                let model = input.string()?;
                let count = input.u32()? as usize;
                // Each text takes at least its 4-byte length: bound the allocation by the input.
                if count > input.bytes.len() / 4 {
                    return Err(malformed(format!("{count} texts announced, frame too short")));
                }
                let mut texts = Vec::with_capacity(count);
                for _ in 0..count {
                    texts.push(input.string()?);
                }
                Message::EmbedRequest { model, texts }
            }
            KIND_STATUS_REQUEST => Message::StatusRequest,
            KIND_EMBED_REPLY => {
                let dim = input.u32()?;
                let count = input.u32()? as usize;
                let bytes = input.take(count.checked_mul(4).ok_or_else(|| malformed("vector length overflows"))?)?;
                if dim == 0 || !count.is_multiple_of(dim as usize) {
                    return Err(malformed(format!("{count} floats are not whole vectors of {dim}")));
                }
                let vectors = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                Message::EmbedReply { dim, vectors }
            }
            KIND_STATUS_REPLY => Message::StatusReply { json: input.string()? },
            KIND_ERROR_REPLY => {
                let code = input.u8()?;
                let code = ErrorCode::from_byte(code).ok_or_else(|| malformed(format!("unknown error code {code}")))?;
                Message::ErrorReply { code, message: input.string()? }
            }
            KIND_RERANK_REQUEST => {
                let generate = input.u8()? != 0;
                let count = input.count(4)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    let mention = input.string()?;
                    let context = input.optional_string()?;
                    let candidates_count = input.count(4)?;
                    let mut candidates = Vec::with_capacity(candidates_count);
                    for _ in 0..candidates_count {
                        let name = input.string()?;
                        let definition = input.optional_string()?;
                        let synonyms_count = input.count(4)?;
                        let synonyms = (0..synonyms_count).map(|_| input.string()).collect::<Result<_, _>>()?;
                        candidates.push(PromptCandidate { name, synonyms, definition });
                    }
                    items.push(RerankItem { mention, context, candidates });
                }
                Message::RerankRequest { generate, items }
            }
            KIND_RERANK_REPLY => {
                let count = input.count(4)?;
                let mut probabilities = Vec::with_capacity(count);
                for _ in 0..count {
                    let n = input.count(4)?;
                    let bytes = input.take(n * 4)?;
                    probabilities
                        .push(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect());
                }
                let answers_count = input.count(4)?;
                let answers = (0..answers_count).map(|_| input.string()).collect::<Result<_, _>>()?;
                Message::RerankReply { probabilities, answers }
            }
            KIND_TRIGRAM_SEARCH_REQUEST => {
                let ontology = input.string()?;
                let generation = input.u64()? as i64;
                let threshold = f64::from_bits(input.u64()?);
                let limit = input.u32()?;
                let count = input.count(4)?;
                let queries = (0..count).map(|_| input.string()).collect::<Result<_, _>>()?;
                Message::TrigramSearchRequest { ontology, generation, threshold, limit, queries }
            }
            KIND_TRIGRAM_SEARCH_REPLY => {
                let count = input.count(4)?;
                let mut hits = Vec::with_capacity(count);
                for _ in 0..count {
                    let n = input.count(12)?;
                    let mut list = Vec::with_capacity(n);
                    for _ in 0..n {
                        let name_id = input.u64()? as i64;
                        list.push((name_id, f32::from_bits(input.u32()?)));
                    }
                    hits.push(list);
                }
                Message::TrigramSearchReply { hits }
            }
            KIND_TRIGRAM_LOAD_REQUEST => {
                let ontology = input.string()?;
                let generation = input.u64()? as i64;
                let offset = input.u64()?;
                let last = input.u8()? != 0;
                let count = input.count(12)?;
                let mut names = Vec::with_capacity(count);
                for _ in 0..count {
                    let name_id = input.u64()? as i64;
                    names.push((name_id, input.string()?));
                }
                Message::TrigramLoadRequest { ontology, generation, offset, last, names }
            }
            KIND_TRIGRAM_LOAD_REPLY => Message::TrigramLoadReply { names: input.u64()? },
            KIND_TRIGRAM_DROP_REQUEST => Message::TrigramDropRequest { ontology: input.string()? },
            KIND_TRIGRAM_DROP_REPLY => Message::TrigramDropReply { indexes: input.u32()? },
            KIND_ADAPT_REQUEST => {
                let (ontology, base_model, work_dir, config) =
                    (input.string()?, input.string()?, input.string()?, input.string()?);
                let seconds = input.u32()?;
                let count = input.count(8)?;
                let examples = (0..count)
                    .map(|_| Ok::<_, WireError>((input.string()?, input.string()?)))
                    .collect::<Result<_, _>>()?;
                Message::AdaptRequest { ontology, base_model, work_dir, config, seconds, examples }
            }
            KIND_ADAPT_REPLY => Message::AdaptReply { json: input.string()? },
            KIND_DICTIONARY_LOAD_REQUEST => {
                let key = input.key()?;
                let offset = input.u64()?;
                let last = input.u8()? != 0;
                let count = input.count(12)?;
                let mut names = Vec::with_capacity(count);
                for _ in 0..count {
                    let (concept_id, name, normalized) = (input.string()?, input.string()?, input.string()?);
                    names.push(DictionaryName { concept_id, name, normalized });
                }
                Message::DictionaryLoadRequest { key, offset, last, names }
            }
            KIND_DICTIONARY_LOAD_REPLY => Message::DictionaryLoadReply { names: input.u64()? },
            KIND_DICTIONARY_HELD_REPLY => Message::DictionaryHeldReply,
            KIND_SCORER_LOAD_REQUEST => {
                let ontology = input.string()?;
                let version = input.u64()? as i64;
                Message::ScorerLoadRequest { ontology, version, text: input.string()? }
            }
            KIND_SCORER_LOAD_REPLY => Message::ScorerLoadReply,
            KIND_DETECT_REQUEST => {
                let count = input.count(4 + 8 + 4 + 1)?;
                let keys = (0..count).map(|_| input.key()).collect::<Result<_, _>>()?;
                let scored = input.u8()? != 0;
                let count = input.count(4)?;
                let texts = (0..count).map(|_| input.string()).collect::<Result<_, _>>()?;
                Message::DetectRequest { keys, scored, texts }
            }
            KIND_DETECT_REPLY => {
                let count = input.count(4)?;
                let mut mentions = Vec::with_capacity(count);
                for _ in 0..count {
                    let n = input.count(8 + 8 + 4 + 4 + 4 + 4 + 1)?;
                    mentions.push((0..n).map(|_| input.mention()).collect::<Result<_, _>>()?);
                }
                Message::DetectReply { mentions }
            }
            KIND_DETECT_MISSING_REPLY => {
                let mut lists = [Vec::new(), Vec::new()];
                for list in &mut lists {
                    let count = input.count(4)?;
                    *list = (0..count).map(|_| input.u32()).collect::<Result<_, _>>()?;
                }
                let [dictionaries, scorers] = lists;
                Message::DetectMissingReply { dictionaries, scorers }
            }
            other => return Err(malformed(format!("unknown message kind {other}"))),
        };
        if !input.bytes.is_empty() {
            return Err(malformed(format!("{} bytes left after the message", input.bytes.len())));
        }
        Ok((request_id, message))
    }
}

/// Reads one frame; `WireError::Closed` when the peer closed the connection between frames.
pub fn read_frame(reader: &mut impl Read) -> Result<(u64, Message), WireError> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let length = u32::from_le_bytes(length) as usize;
    if !(HEADER_BYTES..=MAX_FRAME_BYTES).contains(&length) {
        return Err(malformed(format!("frame length {length} outside {HEADER_BYTES}..={MAX_FRAME_BYTES}")));
    }
    let mut frame = vec![0u8; length];
    reader.read_exact(&mut frame).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => malformed("connection closed inside a frame"),
        _ => WireError::Io(e),
    })?;
    Message::decode(&frame)
}

pub fn write_frame(writer: &mut impl Write, request_id: u64, message: &Message) -> Result<(), WireError> {
    let frame = message.encode(request_id);
    if frame.len() - 4 > MAX_FRAME_BYTES {
        return Err(malformed(format!("message of {} bytes exceeds the {MAX_FRAME_BYTES}-byte limit", frame.len())));
    }
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_u32(out, text.len() as u32);
    out.extend_from_slice(text.as_bytes());
}

fn put_optional_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            out.push(1);
            put_str(out, text);
        }
        None => out.push(0),
    }
}

fn put_key(out: &mut Vec<u8>, key: &DictionaryKey) {
    put_str(out, &key.ontology);
    out.extend_from_slice(&key.generation.to_le_bytes());
    put_u32(out, key.roots.len() as u32);
    for root in &key.roots {
        put_str(out, root);
    }
    match key.scorer {
        Some(version) => {
            out.push(1);
            out.extend_from_slice(&version.to_le_bytes());
        }
        None => out.push(0),
    }
}

fn put_mention(out: &mut Vec<u8>, mention: &Mention) {
    out.extend_from_slice(&(mention.start as u64).to_le_bytes());
    out.extend_from_slice(&(mention.end as u64).to_le_bytes());
    put_str(out, &mention.text);
    put_str(out, &mention.lookup);
    put_u32(out, mention.dictionary as u32);
    put_u32(out, mention.matched_concepts.len() as u32);
    for concept in &mention.matched_concepts {
        put_str(out, concept);
    }
    put_optional_str(out, mention.abbreviation_of.as_deref());
}

struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], WireError> {
        if count > self.bytes.len() {
            return Err(malformed(format!("needs {count} more bytes, {} left", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A count of elements each at least `min_bytes` long: bounded by what is left.
    fn count(&mut self, min_bytes: usize) -> Result<usize, WireError> {
        let count = self.u32()? as usize;
        if count > self.bytes.len() / min_bytes.max(1) {
            return Err(malformed(format!("{count} elements announced, frame too short")));
        }
        Ok(count)
    }

    fn optional_string(&mut self) -> Result<Option<String>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            other => Err(malformed(format!("bad optional marker {other}"))),
        }
    }

    fn string(&mut self) -> Result<String, WireError> {
        let length = self.u32()? as usize;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string is not UTF-8"))
    }

    fn key(&mut self) -> Result<DictionaryKey, WireError> {
        let ontology = self.string()?;
        let generation = self.u64()? as i64;
        let count = self.count(4)?;
        let roots = (0..count).map(|_| self.string()).collect::<Result<_, _>>()?;
        let scorer = match self.u8()? {
            0 => None,
            1 => Some(self.u64()? as i64),
            other => return Err(malformed(format!("bad optional marker {other}"))),
        };
        Ok(DictionaryKey { ontology, generation, roots, scorer })
    }

    fn mention(&mut self) -> Result<Mention, WireError> {
        let start = self.u64()? as usize;
        let end = self.u64()? as usize;
        let (text, lookup) = (self.string()?, self.string()?);
        let dictionary = self.u32()? as usize;
        let count = self.count(4)?;
        let matched_concepts = (0..count).map(|_| self.string()).collect::<Result<_, _>>()?;
        let abbreviation_of = self.optional_string()?;
        Ok(Mention { start, end, text, lookup, dictionary, matched_concepts, abbreviation_of })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: Message) {
        let frame = message.encode(42);
        let (id, decoded) = read_frame(&mut &frame[..]).unwrap();
        assert_eq!((id, decoded), (42, message));
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::EmbedRequest {
            model: String::new(),
            texts: vec!["colorectal adenoma".into(), "".into(), "β-thalassämie".into()],
        });
        round_trip(Message::AdaptRequest {
            ontology: "medic".into(),
            base_model: "/models/all-MiniLM-L6-v2".into(),
            work_dir: "/data/belink/encoders/medic-7".into(),
            config: "{\"epochs\": 1}".into(),
            seconds: 10,
            examples: vec![("D003920".into(), "diabetes".into()), ("D003920".into(), "".into())],
        });
        round_trip(Message::AdaptRequest {
            ontology: "".into(),
            base_model: "".into(),
            work_dir: "".into(),
            config: "".into(),
            seconds: 0,
            examples: vec![],
        });
        round_trip(Message::AdaptReply { json: "{\"step\": 3}".into() });
        let key =
            DictionaryKey { ontology: "umls".into(), generation: 9, roots: vec!["C0012634".into()], scorer: Some(4) };
        let plain = DictionaryKey { ontology: "hpo".into(), generation: -1, roots: vec![], scorer: None };
        let name =
            DictionaryName { concept_id: "C1".into(), name: "Heart attack".into(), normalized: "heart attack".into() };
        round_trip(Message::DictionaryLoadRequest { key: key.clone(), offset: 50_000, last: true, names: vec![name] });
        round_trip(Message::DictionaryLoadRequest { key: plain.clone(), offset: 0, last: false, names: vec![] });
        round_trip(Message::DictionaryLoadReply { names: 10_000_000 });
        round_trip(Message::DictionaryHeldReply);
        round_trip(Message::ScorerLoadRequest {
            ontology: "medic".into(),
            version: 3,
            text: "belink-span-scorer 1".into(),
        });
        round_trip(Message::ScorerLoadReply);
        round_trip(Message::DetectRequest {
            keys: vec![key, plain],
            scored: true,
            texts: vec!["".into(), "MI".into()],
        });
        let mention = Mention {
            start: 3,
            end: 5,
            text: "MI".into(),
            lookup: "myocardial infarction".into(),
            dictionary: 1,
            matched_concepts: vec!["D009203".into()],
            abbreviation_of: Some("myocardial infarction".into()),
        };
        let bare = Mention { matched_concepts: vec![], abbreviation_of: None, ..mention.clone() };
        round_trip(Message::DetectReply { mentions: vec![vec![mention, bare], vec![]] });
        round_trip(Message::DetectMissingReply { dictionaries: vec![0, 2], scorers: vec![] });
        round_trip(Message::ErrorReply { code: ErrorCode::TrainerMissing, message: "send the examples".into() });
        round_trip(Message::StatusRequest);
        round_trip(Message::EmbedReply { dim: 3, vectors: vec![0.5, -1.0, 2.25, 0.0, 1e-9, f32::MAX] });
        round_trip(Message::StatusReply { json: "{\"requests\":3}".into() });
        round_trip(Message::ErrorReply { code: ErrorCode::ModelUnavailable, message: "no model.safetensors".into() });
        let candidate = |name: &str| PromptCandidate {
            name: name.into(),
            synonyms: vec!["a synonym".into()],
            definition: Some("a definition".into()),
        };
        round_trip(Message::RerankRequest {
            generate: true,
            items: vec![
                RerankItem {
                    mention: "FAP".into(),
                    context: Some("with [FAP]".into()),
                    candidates: vec![candidate("x"), candidate("y")],
                },
                RerankItem { mention: "DM".into(), context: None, candidates: vec![] },
            ],
        });
        round_trip(Message::RerankReply {
            probabilities: vec![vec![0.5, 0.25, 0.25], vec![1.0]],
            answers: vec!["A".into(), "".into()],
        });
        round_trip(Message::ErrorReply { code: ErrorCode::IndexMissing, message: "medic@12".into() });
        round_trip(Message::TrigramSearchRequest {
            ontology: "medic".into(),
            generation: -3,
            threshold: 0.3,
            limit: 50,
            queries: vec!["g6pd deficiency".into(), "".into()],
        });
        round_trip(Message::TrigramSearchReply { hits: vec![vec![(7, 0.5), (i64::MAX, 1.0)], vec![]] });
        round_trip(Message::TrigramLoadRequest {
            ontology: "hpo".into(),
            generation: 9,
            offset: 50_000,
            last: true,
            names: vec![(1, "seizure".into()), (2, "".into())],
        });
        round_trip(Message::TrigramLoadReply { names: 76_237 });
        round_trip(Message::TrigramDropRequest { ontology: "umls".into() });
        round_trip(Message::TrigramDropReply { indexes: 2 });
    }

    #[test]
    fn large_payloads() {
        let texts: Vec<String> = (0..1000).map(|i| format!("name number {i}")).collect();
        round_trip(Message::EmbedRequest { model: String::new(), texts });
        round_trip(Message::EmbedRequest {
            model: "/data/belink/encoders/medic".into(),
            texts: vec!["x".repeat(1 << 20)],
        });
        round_trip(Message::EmbedReply { dim: 384, vectors: vec![0.25; 384 * 1000] });
    }

    #[test]
    fn consecutive_frames_on_one_stream() {
        let mut stream = Message::StatusRequest.encode(1);
        stream.extend(Message::EmbedRequest { model: String::new(), texts: vec!["a".into()] }.encode(2));
        let mut reader = &stream[..];
        assert_eq!(read_frame(&mut reader).unwrap().0, 1);
        assert_eq!(read_frame(&mut reader).unwrap().0, 2);
        assert!(matches!(read_frame(&mut reader), Err(WireError::Closed)));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let good = Message::EmbedRequest { model: String::new(), texts: vec!["abc".into()] }.encode(7);
        // Truncated at every length: never a panic.
        for cut in 0..good.len() {
            assert!(read_frame(&mut &good[..cut]).is_err(), "cut at {cut}");
        }
        // A length beyond the limit is refused before allocating.
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_frame(&mut &huge[..]), Err(WireError::Malformed(_))));
        // An absurd text count in a short frame.
        let mut lying = good.clone();
        lying[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_frame(&mut &lying[..]), Err(WireError::Malformed(_))));
        // Invalid UTF-8, unknown kind, trailing bytes.
        let mut bad_utf8 = good.clone();
        *bad_utf8.last_mut().unwrap() = 0xff;
        assert!(read_frame(&mut &bad_utf8[..]).is_err());
        let mut unknown = good.clone();
        unknown[4] = 99;
        assert!(read_frame(&mut &unknown[..]).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        let length = (trailing.len() - 4) as u32;
        trailing[..4].copy_from_slice(&length.to_le_bytes());
        assert!(read_frame(&mut &trailing[..]).is_err());
        let reply = Message::EmbedReply { dim: 0, vectors: vec![] }.encode(1);
        assert!(read_frame(&mut &reply[..]).is_err(), "dimension 0");
        let rerank = Message::RerankRequest {
            generate: false,
            items: vec![RerankItem { mention: "m".into(), context: None, candidates: vec![] }],
        }
        .encode(3);
        for cut in 0..rerank.len() {
            assert!(read_frame(&mut &rerank[..cut]).is_err(), "rerank cut at {cut}");
        }
    }
}
