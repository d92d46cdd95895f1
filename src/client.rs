//! The backend's side of the model server connection.
//!
//! One connection per backend, kept between calls. A waiting backend sleeps on its latch and
//! the socket together, so cancel requests, `statement_timeout` and postmaster death are
//! honoured while it waits; `belink.request_timeout` bounds every wait. A request interrupted
//! mid-flight leaves an unknown reply in the socket, so the next call starts a new connection
//! (the server sees the old one close and drops the abandoned request).

use std::cell::RefCell;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use belink_core::decision::prompt::RerankItem;
use belink_core::error::ModelServerError;
use belink_core::mentions::dictionary::DictionaryName;
use belink_core::mentions::shared::{DictionaryKey, PartReply, SharedDetection};
use belink_core::ports::{IndexPart, Models, Reranked};
use belink_core::wire::{read_frame, write_frame, ErrorCode, Message, WireError};
use pgrx::prelude::*;

use crate::{gucs, worker};
use belink_core::retrieval::trigram_index::ScoredNames;

struct Connection {
    stream: UnixStream,
    next_id: u64,
    /// A request was sent and its reply not read (the call was interrupted).
    in_flight: bool,
}

thread_local! {
    static CONNECTION: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

/// Sends `message` and returns the server's reply.
fn request(message: &Message) -> Result<Message, ModelServerError> {
    require_preloaded()?;
    let timeout = gucs::request_timeout();
    try_request(message, timeout).map_err(|failure| failure.error(timeout))
}

fn require_preloaded() -> Result<(), ModelServerError> {
    match worker::preloaded() {
        true => Ok(()),
        false => Err(ModelServerError::NotPreloaded),
    }
}

/// Like [`request`], but a server that is down, slow or gone is an `Err`, not an ERROR
/// (cancel and statement_timeout still raise theirs).
fn try_request(message: &Message, timeout: Duration) -> Result<Message, Failure> {
    let deadline = Instant::now() + timeout;
    CONNECTION.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_some_and(|c| c.in_flight) {
            *slot = None;
        }
        // A kept connection may lead to a server that has since been restarted: a request that
        // could not even be sent is sent again once on a fresh connection. (A server that dies
        // while answering is never asked again: the request may be what killed it.)
        let reused = slot.is_some();
        for attempt in 0..2 {
            if slot.is_none() {
                *slot = Some(connect(deadline)?);
            }
            let connection = slot.as_mut().expect("connected above");
            let id = connection.next_id;
            connection.next_id += 1;
            connection.in_flight = true;
            match exchange(connection, id, message, deadline) {
                Ok(reply) => {
                    connection.in_flight = false;
                    return Ok(reply);
                }
                Err(Failure::Unsent(_)) if reused && attempt == 0 => *slot = None,
                Err(failure) => {
                    *slot = None;
                    return Err(failure);
                }
            }
        }
        unreachable!("the second attempt returns")
    })
}

enum Failure {
    NotRunning,
    TimedOut,
    /// The request could not be written: the server behind the connection is gone.
    Unsent(String),
    Lost(String),
}

impl Failure {
    fn error(self, timeout: Duration) -> ModelServerError {
        let waited_ms = timeout.as_millis();
        match self {
            Failure::NotRunning => ModelServerError::NotRunning { waited_ms },
            Failure::TimedOut => ModelServerError::TimedOut { waited_ms },
            Failure::Unsent(reason) | Failure::Lost(reason) => ModelServerError::Lost(reason),
        }
    }
}

/// Connects, retrying while the server is (re)starting, until `deadline`.
fn connect(deadline: Instant) -> Result<Connection, Failure> {
    loop {
        match UnixStream::connect(worker::SOCKET_NAME) {
            Ok(stream) => return Ok(Connection { stream, next_id: 1, in_flight: false }),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                if Instant::now() >= deadline {
                    return Err(Failure::NotRunning);
                }
                wait_for(None, Duration::from_millis(100), deadline);
            }
            Err(e) => return Err(Failure::Lost(format!("cannot connect: {e}"))),
        }
    }
}

fn exchange(connection: &mut Connection, id: u64, message: &Message, deadline: Instant) -> Result<Message, Failure> {
    let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let _ = connection.stream.set_write_timeout(Some(remaining));
    write_frame(&mut connection.stream, id, message).map_err(|e| match e {
        WireError::Io(ref io) if matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Failure::TimedOut,
        other => Failure::Unsent(other.to_string()),
    })?;
    loop {
        if Instant::now() >= deadline {
            return Err(Failure::TimedOut);
        }
        if wait_for(Some(connection.stream.as_raw_fd()), Duration::from_millis(1000), deadline) {
            break;
        }
    }
    // The reply has started to arrive: the rest follows at once.
    let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1000));
    let _ = connection.stream.set_read_timeout(Some(remaining));
    match read_frame(&mut connection.stream) {
        Ok((reply_id, _)) if reply_id != id => Err(Failure::Lost(format!("reply {reply_id} to request {id}"))),
        Ok((_, reply)) => Ok(reply),
        Err(WireError::Closed) => Err(Failure::Lost("the server closed the connection".into())),
        Err(e) => Err(Failure::Lost(e.to_string())),
    }
}

/// Sleeps for `duration`, answering cancel and statement_timeout meanwhile.
pub fn pause(duration: Duration) {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        wait_for(None, duration, deadline);
    }
}

/// Sleeps on the latch (and the socket, if given) for at most `step`, never past `deadline`,
/// handling interrupts: a cancel or statement_timeout raises its ERROR from here. Returns
/// true when the socket is readable.
fn wait_for(socket: Option<i32>, step: Duration, deadline: Instant) -> bool {
    let timeout = step.min(deadline.saturating_duration_since(Instant::now())).as_millis().max(1) as std::ffi::c_long;
    let mut events = pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH;
    if socket.is_some() {
        events |= pg_sys::WL_SOCKET_READABLE;
    }
    let fired = unsafe {
        let fired = pg_sys::WaitLatchOrSocket(
            pg_sys::MyLatch,
            events as i32,
            socket.unwrap_or(-1),
            timeout,
            pg_sys::PG_WAIT_EXTENSION,
        );
        if fired & pg_sys::WL_LATCH_SET as i32 != 0 {
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        fired
    };
    pg_sys::check_for_interrupts!();
    fired & pg_sys::WL_SOCKET_READABLE as i32 != 0
}

/// Embeds texts with the server's sentence encoder (`model` ""), or the adapted encoder in
/// directory `model`: one vector per text, and the dimension.
pub fn embed(model: &str, texts: Vec<String>) -> Result<(usize, Vec<Vec<f32>>), ModelServerError> {
    let count = texts.len();
    if count == 0 {
        return Ok((0, Vec::new()));
    }
    match request(&Message::EmbedRequest { model: model.to_string(), texts })? {
        Message::EmbedReply { dim, vectors } if vectors.len() == count * dim as usize => {
            let dim = dim as usize;
            Ok((dim, vectors.chunks_exact(dim).map(<[f32]>::to_vec).collect()))
        }
        Message::EmbedReply { dim, vectors } => {
            Err(ModelServerError::BadReply(format!("{} floats of dimension {dim} for {count} texts", vectors.len())))
        }
        other => Err(reply_error(other)),
    }
}

/// Re-ranks items: per item, the probabilities of its candidates then "none of these", and
/// (when `generate`) the greedy answer.
pub fn rerank(items: Vec<RerankItem>, generate: bool) -> Result<Vec<Reranked>, ModelServerError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let count = items.len();
    match request(&Message::RerankRequest { generate, items })? {
        Message::RerankReply { probabilities, answers } if probabilities.len() == count => {
            let mut answers = answers.into_iter();
            Ok(probabilities
                .into_iter()
                .map(|probabilities| Reranked { probabilities, answer: answers.next().unwrap_or_default() })
                .collect())
        }
        Message::RerankReply { probabilities, .. } => {
            Err(ModelServerError::BadReply(format!("{} items for {count}", probabilities.len())))
        }
        other => Err(reply_error(other)),
    }
}

/// Searches the server's trigram index of `ontology` at `generation`; Ok(None) when it has none.
pub fn trigram_search(
    ontology: &str,
    generation: i64,
    queries: Vec<String>,
    limit: usize,
    threshold: f64,
) -> Result<Option<ScoredNames>, ModelServerError> {
    let count = queries.len();
    let limit = limit.min(u32::MAX as usize) as u32;
    let message = Message::TrigramSearchRequest { ontology: ontology.into(), generation, threshold, limit, queries };
    match request(&message)? {
        Message::TrigramSearchReply { hits } if hits.len() == count => Ok(Some(hits)),
        Message::ErrorReply { code: ErrorCode::IndexMissing, .. } => Ok(None),
        other => Err(reply_error(other)),
    }
}

/// Sends a part of an ontology's names for the server's trigram index.
pub fn load_trigram_part(ontology: &str, offset: u64, part: IndexPart) -> Result<(), ModelServerError> {
    let sent = offset + part.names.len() as u64;
    let message = Message::TrigramLoadRequest {
        ontology: ontology.into(),
        generation: part.generation,
        offset,
        last: part.last,
        names: part.names,
    };
    match request(&message)? {
        Message::TrigramLoadReply { names } if names == sent => Ok(()),
        Message::TrigramLoadReply { names } => {
            Err(ModelServerError::BadReply(format!("the server holds {names} names of the index, {sent} were sent")))
        }
        other => Err(reply_error(other)),
    }
}

/// The mentions of each text by the server's shared dictionaries, or which it lacks.
pub fn detect(keys: &[DictionaryKey], scored: bool, texts: &[&str]) -> Result<SharedDetection, ModelServerError> {
    let count = texts.len();
    let message =
        Message::DetectRequest { keys: keys.to_vec(), scored, texts: texts.iter().map(|t| t.to_string()).collect() };
    match request(&message)? {
        Message::DetectReply { mentions } if mentions.len() == count => Ok(SharedDetection::Mentions(mentions)),
        Message::DetectMissingReply { dictionaries, scorers } => Ok(SharedDetection::Missing { dictionaries, scorers }),
        other => Err(reply_error(other)),
    }
}

/// Sends a part of a shared dictionary's names. The last part waits for the dictionary to be
/// built, and the first for another session that sends the same dictionary (minutes for
/// millions of names; cancel still works).
pub fn load_dictionary_part(
    key: &DictionaryKey,
    offset: u64,
    last: bool,
    names: Vec<DictionaryName>,
) -> Result<PartReply, ModelServerError> {
    require_preloaded()?;
    let message = Message::DictionaryLoadRequest { key: key.clone(), offset, last, names };
    let waits = last || offset == 0;
    let timeout = if waits { gucs::request_timeout().max(DICTIONARY_BUILD_TIMEOUT) } else { gucs::request_timeout() };
    match try_request(&message, timeout).map_err(|failure| failure.error(timeout))? {
        Message::DictionaryLoadReply { names } => Ok(PartReply::Received(names)),
        Message::DictionaryHeldReply => Ok(PartReply::Held),
        other => Err(reply_error(other)),
    }
}

/// The longest a shared dictionary's build (or another session's sending) is waited for.
const DICTIONARY_BUILD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Sends an ontology's span scorer for the server's shared detection.
pub fn load_scorer(ontology: &str, version: i64, text: &str) -> Result<(), ModelServerError> {
    let message = Message::ScorerLoadRequest { ontology: ontology.into(), version, text: text.into() };
    match request(&message)? {
        Message::ScorerLoadReply => Ok(()),
        other => Err(reply_error(other)),
    }
}

/// Asks the server to forget the trigram indexes (and shared mention dictionaries) of a
/// dropped ontology. Best effort: a server that is not running holds none, and one that does
/// not answer within `timeout` keeps them until it restarts (an index is only ever searched by
/// its ontology's generation).
pub fn drop_trigram_indexes(ontology: &str, timeout: Duration) -> Result<u32, String> {
    require_preloaded().map_err(|e| e.to_string())?;
    match try_request(&Message::TrigramDropRequest { ontology: ontology.into() }, timeout) {
        Ok(Message::TrigramDropReply { indexes }) => Ok(indexes),
        Ok(other) => Err(format!("unexpected reply: {other:?}")),
        Err(failure) => Err(failure.error(timeout).to_string()),
    }
}

/// The model server as the pipeline's models port.
pub struct ServerModels;

impl Models for ServerModels {
    fn embed(&self, model: &str, texts: Vec<String>) -> belink_core::error::Result<Vec<Vec<f32>>> {
        Ok(embed(model, texts)?.1)
    }

    fn rerank(&self, items: Vec<RerankItem>, generate: bool) -> belink_core::error::Result<Vec<Reranked>> {
        Ok(rerank(items, generate)?)
    }

    fn trigram_search(
        &self,
        ontology: &str,
        generation: i64,
        queries: &[&str],
        limit: usize,
        threshold: f64,
    ) -> belink_core::error::Result<Option<ScoredNames>> {
        let queries = queries.iter().map(|q| q.to_string()).collect();
        Ok(trigram_search(ontology, generation, queries, limit, threshold)?)
    }

    fn load_trigram_part(&self, ontology: &str, offset: u64, part: IndexPart) -> belink_core::error::Result<()> {
        Ok(load_trigram_part(ontology, offset, part)?)
    }

    fn detect(
        &self,
        keys: &[DictionaryKey],
        scored: bool,
        texts: &[&str],
    ) -> belink_core::error::Result<SharedDetection> {
        Ok(detect(keys, scored, texts)?)
    }

    fn load_dictionary_part(
        &self,
        key: &DictionaryKey,
        offset: u64,
        last: bool,
        names: Vec<DictionaryName>,
    ) -> belink_core::error::Result<PartReply> {
        Ok(load_dictionary_part(key, offset, last, names)?)
    }

    fn load_scorer(&self, ontology: &str, version: i64, text: &str) -> belink_core::error::Result<()> {
        Ok(load_scorer(ontology, version, text)?)
    }
}

/// The server's state as JSON text, or why it could not be had within `timeout`.
pub fn status(timeout: Duration) -> Result<String, String> {
    require_preloaded().map_err(|e| e.to_string())?;
    match try_request(&Message::StatusRequest, timeout) {
        Ok(Message::StatusReply { json }) => Ok(json),
        Ok(other) => Err(format!("unexpected reply: {other:?}")),
        Err(Failure::NotRunning) => Err("not running".into()),
        Err(Failure::TimedOut) => Err(format!("no answer within {} ms", timeout.as_millis())),
        Err(Failure::Unsent(reason) | Failure::Lost(reason)) => Err(reason),
    }
}

/// One training slice of an encoder adaptation (see `Message::AdaptRequest`): the progress
/// JSON, or None when the server holds no run for `work_dir` and `examples` were not sent
/// (send them). The wait allows for the run's set-up (embedding the names once to build
/// batches: minutes for a large ontology) on top of the slice.
pub fn adapt(
    ontology: &str,
    base_model: &str,
    work_dir: &str,
    config: &str,
    seconds: u32,
    examples: Vec<(String, String)>,
) -> Result<Option<String>, ModelServerError> {
    require_preloaded()?;
    let message = Message::AdaptRequest {
        ontology: ontology.into(),
        base_model: base_model.into(),
        work_dir: work_dir.into(),
        config: config.into(),
        seconds,
        examples,
    };
    let timeout = gucs::request_timeout().max(Duration::from_secs(seconds as u64 + 3600));
    match try_request(&message, timeout).map_err(|failure| failure.error(timeout))? {
        Message::AdaptReply { json } => Ok(Some(json)),
        Message::ErrorReply { code: ErrorCode::TrainerMissing, .. } => Ok(None),
        other => Err(reply_error(other)),
    }
}

fn reply_error(reply: Message) -> ModelServerError {
    match reply {
        Message::ErrorReply { code: ErrorCode::ModelUnavailable, message } => {
            ModelServerError::ModelUnavailable(message)
        }
        Message::ErrorReply { code, message } => ModelServerError::Failed { code, message },
        other => ModelServerError::BadReply(format!("{other:?}")),
    }
}
