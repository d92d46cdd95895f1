//! belink-server: the model server. One process per cluster, started and supervised by the
//! belink background worker; it holds the models once and batches the requests of every
//! backend. It runs outside PostgreSQL's process tree of children on purpose: if a model
//! crashes or is killed for memory, one request fails, not the database.
//!
//!   belink-server --socket PATH --encoder-model DIR [--pooling auto|mean|cls] [--device auto|cpu|cuda]
//!                 [--reranker-model FILE|DIR] [--reranker-adapter FILE] [--reranker-bf16 on|off]
//!                 [--rerank-batch N] [--max-dictionaries-mb N]
//!                 [--max-batch N] [--batch-wait-ms N] [--threads N] [--parent-pid PID]
//!                 [--adapted-dir DIR]
//!
//! `--adapted-dir`: where belink_adapt_encoder's encoders are trained and stored (under the
//! cluster's data directory); requests may name only directories inside it.
//!
//! Logs go to stderr, which the supervisor forwards to the PostgreSQL log.

mod adapt;
mod encoder;
mod queue;
mod reranker;
mod stats;
mod trigrams;

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use belink_core::wire::{read_frame, write_frame, ErrorCode, Message, WireError};
use belink_models::encoder::Pooling;
use belink_models::streams::Streams;

use adapt::{AdaptRequest, Adaptations};
use belink_core::mentions::shared::{PartReply, SharedDetection, SharedDictionaries};
use encoder::{AdaptedEncoders, EmbedQueue, EmbedWork};
use queue::{Failure, Job, Queue};
use reranker::{RerankQueue, RerankWork};
use stats::Stats;
use trigrams::TrigramIndexes;

struct Options {
    socket: PathBuf,
    encoder: encoder::Settings,
    reranker: reranker::Settings,
    threads: usize,
    parent_pid: Option<i32>,
    /// Most bytes the shared mention dictionaries may hold together.
    dictionaries_limit: Option<usize>,
}

fn parse_options() -> Result<Options, String> {
    let mut socket = None;
    let mut settings = encoder::Settings {
        encoder_dir: PathBuf::new(),
        adapted_dir: None,
        pooling: None,
        device: "auto".into(),
        max_batch: 32,
        batch_wait: Duration::from_millis(2),
    };
    let mut reranker_model = None;
    let mut reranker_adapter = None;
    let mut rerank_batch = 8;
    let mut reranker_bf16 = true;
    let mut threads = 0;
    let mut parent_pid = None;
    let mut dictionaries_mb: i64 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--encoder-model" => settings.encoder_dir = PathBuf::from(value()?),
            "--adapted-dir" => {
                settings.adapted_dir = Some(PathBuf::from(value()?)).filter(|p| !p.as_os_str().is_empty())
            }
            "--pooling" => settings.pooling = Pooling::parse(&value()?).map_err(|e| e.to_string())?,
            "--device" => settings.device = value()?,
            "--max-batch" => settings.max_batch = number(&flag, &value()?)?.max(1),
            "--batch-wait-ms" => settings.batch_wait = Duration::from_millis(number(&flag, &value()?)? as u64),
            "--threads" => threads = number(&flag, &value()?)?,
            "--reranker-model" => reranker_model = Some(PathBuf::from(value()?)).filter(|p| !p.as_os_str().is_empty()),
            "--reranker-adapter" => {
                reranker_adapter = Some(PathBuf::from(value()?)).filter(|p| !p.as_os_str().is_empty())
            }
            "--rerank-batch" => rerank_batch = number(&flag, &value()?)?.max(1),
            "--reranker-bf16" => {
                reranker_bf16 = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("{flag} is on or off, not {other}")),
                }
            }
            "--parent-pid" => parent_pid = Some(number(&flag, &value()?)? as i32),
            "--max-dictionaries-mb" => {
                dictionaries_mb = value()?.parse().map_err(|_| format!("{flag} needs a number of MB, 0 or -1"))?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    let reranker = reranker::Settings {
        model: reranker_model,
        adapter: reranker_adapter,
        device: settings.device.clone(),
        max_batch: rerank_batch,
        batch_wait: settings.batch_wait,
        bf16: reranker_bf16,
    };
    let dictionaries_limit = match dictionaries_mb {
        -1 => None,
        0 => physical_memory().map(|bytes| bytes / 2),
        mb if mb > 0 => Some(mb as usize * 1_000_000),
        other => {
            return Err(format!("--max-dictionaries-mb {other}: a number of MB, 0 (half the memory) or -1 (no limit)"))
        }
    };
    Ok(Options {
        socket: socket.ok_or("--socket is required")?,
        encoder: settings,
        reranker,
        threads,
        parent_pid,
        dictionaries_limit,
    })
}

/// The machine's memory in bytes (MemTotal of /proc/meminfo); None, said in the log, where
/// it cannot be read (the shared dictionaries then have no limit).
fn physical_memory() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let total = meminfo.as_deref().and_then(|m| {
        m.lines()
            .find_map(|line| line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<usize>().ok())
    });
    if total.is_none() {
        eprintln!("belink-server: no MemTotal in /proc/meminfo: the shared mention dictionaries have no memory limit");
    }
    total.map(|kb| kb * 1024)
}

fn number(flag: &str, text: &str) -> Result<usize, String> {
    text.parse().map_err(|_| format!("{flag}: '{text}' is not a number"))
}

fn main() -> ExitCode {
    belink_models::prepare_candle_threads();
    // Training (belink_adapt_encoder) frees and allocates megabytes at every step: measured
    // in the server, MEDIC trained at 52 names/s with half the time in the kernel clearing
    // fresh pages. The memory goes back to the system when a run ends (adapt.rs).
    belink_models::keep_freed_memory();
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("belink-server: {message}");
            return ExitCode::from(2);
        }
    };
    if let Some(parent) = options.parent_pid {
        watch_parent(parent);
    }
    let listener = match listen(&options.socket) {
        Ok(listener) => listener,
        Err(message) => {
            eprintln!("belink-server: {message}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("belink-server: pid {} listening on {}", std::process::id(), options.socket.display());

    let stats = Arc::new(Stats::new(&options.encoder.device, options.reranker.model.is_some()));
    let streams = Arc::new(Streams::new(options.threads));
    let queues = Arc::new(Queues {
        embed: Queue::new(|work: &EmbedWork| work.texts.len()),
        rerank: Queue::new(|work: &RerankWork| work.items.len()),
        trigrams: TrigramIndexes::default(),
        dictionaries: SharedDictionaries::with_limit(options.dictionaries_limit),
        adapted_encoders: AdaptedEncoders::default(),
        adaptations: Adaptations::new(options.encoder.adapted_dir.clone(), &options.encoder.device),
        connections: AtomicUsize::new(0),
    });
    let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(name.into()).spawn(run).expect("starting a model thread");
    };
    {
        let (streams, queues, stats) = (streams.clone(), queues.clone(), stats.clone());
        let settings = options.encoder;
        spawn("encoder", Box::new(move || encoder::run(settings, streams, queues, stats)));
    }
    {
        let (streams, queues, stats) = (streams.clone(), queues.clone(), stats.clone());
        let settings = options.reranker;
        spawn("reranker", Box::new(move || reranker::run(settings, streams, queues, stats)));
    }
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let (queues, stats) = (queues.clone(), stats.clone());
                let spawned = std::thread::Builder::new()
                    .name("connection".into())
                    .spawn(move || serve_connection(stream, &queues, &stats));
                if let Err(e) = spawned {
                    eprintln!("belink-server: cannot start a connection thread: {e}");
                }
            }
            Err(e) => eprintln!("belink-server: accept failed: {e}"),
        }
    }
    ExitCode::SUCCESS
}

/// Listens on `path`, readable and writable by this OS user only.
fn listen(path: &Path) -> Result<UnixListener, String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove the stale socket {}: {e}", path.display())),
    }
    // Safety: umask only changes this process's file-creation mask. No other user may ever
    // connect: the mask makes the socket 0600 from its creation on.
    let previous = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()));
    unsafe { libc::umask(previous) };
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    Ok(listener)
}

/// Exits when the supervisor is gone (its pid is no longer our parent), so a server never
/// outlives its cluster.
fn watch_parent(parent: i32) {
    std::thread::spawn(move || loop {
        // Safety: getppid has no preconditions.
        if unsafe { libc::getppid() } != parent {
            eprintln!("belink-server: supervisor {parent} is gone; exiting");
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(500));
    });
}

/// The models' queues.
pub struct Queues {
    pub embed: EmbedQueue,
    pub rerank: RerankQueue,
    /// Not a queue: searched on the connection's thread.
    pub trigrams: TrigramIndexes,
    /// Mention dictionaries too large for a session's memory; detection runs on the
    /// connection's thread.
    pub dictionaries: SharedDictionaries,
    /// The adapted encoders the encoder thread holds (for the status).
    pub adapted_encoders: AdaptedEncoders,
    /// Training runs, on the connections' threads.
    pub adaptations: Adaptations,
    /// Open client connections (one per backend that has called the server).
    pub connections: AtomicUsize,
}

impl Queues {
    /// How long a model thread waits for more requests to batch with the first: not at all
    /// when only one backend is connected (nobody else can send one; a single session's
    /// UPDATE would pay the wait on every row).
    pub fn batch_wait(&self, configured: Duration) -> Duration {
        if self.connections.load(Ordering::Relaxed) > 1 {
            configured
        } else {
            Duration::ZERO
        }
    }
}

/// Counts a connection while it is open.
struct Connected<'a>(&'a AtomicUsize);

impl<'a> Connected<'a> {
    fn new(count: &'a AtomicUsize) -> Connected<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Connected(count)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn serve_connection(mut stream: UnixStream, queues: &Queues, stats: &Stats) {
    let _connected = Connected::new(&queues.connections);
    let mut loading = None;
    let mut dictionary_loading = None;
    loop {
        let (id, message) = match read_frame(&mut stream) {
            Ok(frame) => frame,
            Err(WireError::Closed) => return,
            Err(WireError::Malformed(reason)) => {
                let reply = Message::ErrorReply { code: ErrorCode::BadRequest, message: reason };
                let _ = write_frame(&mut stream, 0, &reply);
                return;
            }
            Err(WireError::Io(_)) => return,
        };
        let reply = match message {
            Message::StatusRequest => Message::StatusReply {
                json: stats.to_json(
                    (queues.embed.depth(), queues.rerank.depth()),
                    serde_json::json!({
                        "trigram_indexes": queues.trigrams.to_json(),
                        "mention_dictionaries": dictionaries_json(&queues.dictionaries),
                        "adapted_encoders": queues.adapted_encoders.to_json(),
                        "adaptations": queues.adaptations.to_json(),
                    }),
                ),
            },
            Message::TrigramSearchRequest { ontology, generation, threshold, limit, queries } => {
                queues.trigrams.search(&ontology, generation, threshold, limit, &queries)
            }
            Message::TrigramLoadRequest { ontology, generation, offset, last, names } => {
                queues.trigrams.load(&mut loading, ontology, generation, offset, last, names)
            }
            Message::TrigramDropRequest { ontology } => Message::TrigramDropReply {
                indexes: queues.trigrams.drop_ontology(&ontology) + queues.dictionaries.drop_ontology(&ontology),
            },
            Message::DictionaryLoadRequest { key, offset, last, names } => {
                let started = Instant::now();
                match queues.dictionaries.load_part(&mut dictionary_loading, &key, offset, last, names) {
                    Ok(PartReply::Held) => Message::DictionaryHeldReply,
                    Ok(PartReply::Received(names)) => {
                        if last {
                            eprintln!(
                                "belink-server: mention dictionary of {} (generation {}) ready: {names} names, {:.1} s after its last part",
                                key.ontology,
                                key.generation,
                                started.elapsed().as_secs_f64()
                            );
                        }
                        Message::DictionaryLoadReply { names }
                    }
                    Err(message) => Message::ErrorReply { code: ErrorCode::BadRequest, message },
                }
            }
            Message::ScorerLoadRequest { ontology, version, text } => {
                match queues.dictionaries.load_scorer(&ontology, version, &text) {
                    Ok(()) => Message::ScorerLoadReply,
                    Err(message) => Message::ErrorReply { code: ErrorCode::BadRequest, message },
                }
            }
            Message::DetectRequest { keys, scored, texts } => match queues.dictionaries.detect(&keys, scored, &texts) {
                SharedDetection::Mentions(mentions) => Message::DetectReply { mentions },
                SharedDetection::Missing { dictionaries, scorers } => {
                    Message::DetectMissingReply { dictionaries, scorers }
                }
            },
            Message::AdaptRequest { ontology, base_model, work_dir, config, seconds, examples } => {
                let request = AdaptRequest { ontology, base_model, work_dir, config, seconds, examples };
                queues.adaptations.adapt(&stream, request)
            }
            Message::EmbedRequest { model, texts } => {
                match wait_for(&stream, &queues.embed, EmbedWork { model, texts }) {
                    Some(Ok((dim, vectors))) => Message::EmbedReply { dim, vectors },
                    Some(Err((code, message))) => Message::ErrorReply { code, message },
                    None => return, // the client went away
                }
            }
            Message::RerankRequest { generate, items } => {
                match wait_for(&stream, &queues.rerank, RerankWork { generate, items }) {
                    Some(Ok((probabilities, answers))) => Message::RerankReply { probabilities, answers },
                    Some(Err((code, message))) => Message::ErrorReply { code, message },
                    None => return,
                }
            }
            other => Message::ErrorReply {
                code: ErrorCode::BadRequest,
                message: format!("not a request: {}", kind_name(&other)),
            },
        };
        if write_frame(&mut stream, id, &reply).is_err() {
            return;
        }
    }
}

fn kind_name(message: &Message) -> &'static str {
    match message {
        Message::EmbedRequest { .. } => "embed request",
        Message::StatusRequest => "status request",
        Message::EmbedReply { .. } => "embed reply",
        Message::StatusReply { .. } => "status reply",
        Message::ErrorReply { .. } => "error reply",
        Message::RerankRequest { .. } => "rerank request",
        Message::RerankReply { .. } => "rerank reply",
        Message::TrigramSearchRequest { .. } => "trigram search request",
        Message::TrigramSearchReply { .. } => "trigram search reply",
        Message::TrigramLoadRequest { .. } => "trigram load request",
        Message::TrigramLoadReply { .. } => "trigram load reply",
        Message::TrigramDropRequest { .. } => "trigram drop request",
        Message::TrigramDropReply { .. } => "trigram drop reply",
        Message::AdaptRequest { .. } => "adapt request",
        Message::AdaptReply { .. } => "adapt reply",
        Message::DictionaryLoadRequest { .. } => "dictionary load request",
        Message::DictionaryLoadReply { .. } => "dictionary load reply",
        Message::ScorerLoadRequest { .. } => "scorer load request",
        Message::ScorerLoadReply => "scorer load reply",
        Message::DictionaryHeldReply => "dictionary held reply",
        Message::DetectRequest { .. } => "detect request",
        Message::DetectReply { .. } => "detect reply",
        Message::DetectMissingReply { .. } => "detect missing reply",
    }
}

/// The shared mention dictionaries, for the status reply.
fn dictionaries_json(dictionaries: &SharedDictionaries) -> serde_json::Value {
    dictionaries
        .loaded()
        .into_iter()
        .map(|(ontology, d)| {
            serde_json::json!({
                "ontology": ontology,
                "generation": d.generation,
                "detection_roots": d.roots,
                "names": d.names,
                "memory_mb": d.memory as f64 / 1e6,
                "load_s": d.build_time.as_secs_f64(),
                "age_s": d.loaded_at.elapsed().as_secs_f64(),
            })
        })
        .collect()
}

/// Queues the work and waits for its answer; None when the client disconnects first (the
/// queued job is then marked dead and skipped).
fn wait_for<W, R>(stream: &UnixStream, queue: &Queue<W, R>, work: W) -> Option<Result<R, Failure>> {
    let (reply, answer) = mpsc::channel();
    let alive = Arc::new(AtomicBool::new(true));
    queue.submit(Job { work, reply, alive: alive.clone(), enqueued: Instant::now() });
    loop {
        match answer.recv_timeout(Duration::from_millis(100)) {
            Ok(result) => return Some(result),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Some(Err((ErrorCode::ShuttingDown, "the model thread stopped".into())))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !peer_connected(stream) {
                    alive.store(false, Ordering::Release);
                    return None;
                }
            }
        }
    }
}

/// False once the peer has closed its end (a cancelled or terminated backend).
pub(crate) fn peer_connected(stream: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // Safety: a one-byte peek into a local buffer on a socket this function borrows.
    let read = unsafe {
        libc::recv(stream.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    match read {
        0 => false,
        n if n > 0 => true,
        _ => std::io::Error::last_os_error().kind() == ErrorKind::WouldBlock,
    }
}
