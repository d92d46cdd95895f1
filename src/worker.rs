//! The supervisor: a static background worker that runs the model server (belink-server) as
//! a separate OS process, restarts it when it dies (with back-off), forwards its log lines to
//! the PostgreSQL log, and stops it with the cluster.
//!
//! Why a separate process: PostgreSQL restarts the whole cluster when one of its own
//! processes dies of a signal. A model that segfaults or is OOM-killed inside belink-server
//! costs the requests in flight, never the database.
//!
//! This worker never loads a model, never touches CUDA, and runs no threads: everything
//! happens in its latch loop.

use std::ffi::CStr;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};

use crate::gucs;

/// The socket, relative to the data directory (every backend's working directory): short,
/// whatever the data directory's path, and reachable only through the 0700 data directory.
pub const SOCKET_NAME: &str = "belink_server.sock";

/// Pid of the running model server, 0 when none.
pub static SERVER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"belink_server_pid") };
/// Times the supervisor has started the server since the cluster started.
pub static SERVER_STARTS: PgAtomic<AtomicU32> = unsafe { PgAtomic::new(c"belink_server_starts") };

/// Set in `_PG_init` when loaded through shared_preload_libraries (inherited by backends).
static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init`: registers the supervisor and its shared state when preloaded.
pub fn init() {
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    PRELOADED.store(true, Ordering::Release);
    pg_shmem_init!(SERVER_PID);
    pg_shmem_init!(SERVER_STARTS);
    BackgroundWorkerBuilder::new("belink model server supervisor")
        .set_type("belink supervisor")
        .set_library("belink")
        .set_function("belink_supervisor_main")
        .enable_shmem_access(None)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// True when belink is in shared_preload_libraries (so a supervisor and server exist).
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Acquire)
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn belink_supervisor_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let mut supervisor = Supervisor::new();
    log!("belink supervisor started (pid {})", std::process::id());
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(100))) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            let command = ServerCommand::from_settings();
            if command != supervisor.command {
                log!("belink: model server settings changed; restarting the server");
                supervisor.stop();
                supervisor.command = command;
                supervisor.backoff = Duration::ZERO;
            }
        }
        supervisor.tick();
    }
    supervisor.stop();
    log!("belink supervisor stopped");
}

/// How the server is started: rebuilt from the settings on every reload.
#[derive(Clone, PartialEq, Eq, Debug)]
struct ServerCommand {
    program: PathBuf,
    args: Vec<String>,
}

impl ServerCommand {
    fn from_settings() -> ServerCommand {
        let options = gucs::server_options();
        let program = options.program.unwrap_or_else(default_server_path);
        let encoder = options.encoder.unwrap_or_else(default_encoder_dir);
        // The default adapter was tuned for the default model only.
        let adapter = match (options.reranker_adapter.as_deref(), &options.reranker) {
            (Some("none"), _) | (None, Some(_)) => String::new(),
            (Some(path), _) => path.to_string(),
            (None, None) => default_reranker_adapter_path().display().to_string(),
        };
        let reranker = options.reranker.unwrap_or_else(default_reranker_path);
        let args = vec![
            "--socket".into(),
            SOCKET_NAME.into(),
            "--encoder-model".into(),
            encoder.display().to_string(),
            "--pooling".into(),
            options.pooling,
            "--device".into(),
            options.device,
            "--max-batch".into(),
            options.batch_size.to_string(),
            "--batch-wait-ms".into(),
            options.batch_wait_ms.to_string(),
            "--threads".into(),
            options.threads.to_string(),
            "--reranker-model".into(),
            reranker.display().to_string(),
            "--reranker-adapter".into(),
            adapter,
            "--rerank-batch".into(),
            options.rerank_batch_size.to_string(),
            "--reranker-bf16".into(),
            if options.reranker_bf16 { "on" } else { "off" }.into(),
            "--max-dictionaries-mb".into(),
            options.dictionaries_mb.to_string(),
            "--parent-pid".into(),
            std::process::id().to_string(),
            "--adapted-dir".into(),
            crate::api::adapted_root().display().to_string(),
        ];
        ServerCommand { program, args }
    }
}

/// PostgreSQL's bin directory (the one `make install` puts belink-server in).
fn default_server_path() -> PathBuf {
    let exec = unsafe { CStr::from_ptr(std::ptr::addr_of!(pg_sys::my_exec_path).cast()) };
    let exec = PathBuf::from(exec.to_string_lossy().into_owned());
    exec.parent().map(|dir| dir.join("belink-server")).unwrap_or_else(|| PathBuf::from("belink-server"))
}

/// `<share>/extension/belink`, where `make install` puts the default models.
fn models_dir() -> PathBuf {
    let mut share = [0 as std::ffi::c_char; pg_sys::MAXPGPATH as usize];
    unsafe { pg_sys::get_share_path(std::ptr::addr_of!(pg_sys::my_exec_path).cast(), share.as_mut_ptr()) };
    let share = unsafe { CStr::from_ptr(share.as_ptr()) }.to_string_lossy().into_owned();
    PathBuf::from(share).join("extension/belink")
}

fn default_encoder_dir() -> PathBuf {
    models_dir().join("all-MiniLM-L6-v2")
}

fn default_reranker_path() -> PathBuf {
    models_dir().join("gemma-3-270m-q4_k_m.gguf")
}

/// The adapter `make train-reranker` tunes for the default model (models/rerankers).
fn default_reranker_adapter_path() -> PathBuf {
    models_dir().join(DEFAULT_RERANKER_ADAPTER)
}

const DEFAULT_RERANKER_ADAPTER: &str = "gemma3-270m-belink-names-lora.safetensors";

struct Supervisor {
    command: ServerCommand,
    child: Option<Running>,
    /// Wait before the next start; doubles after each quick death.
    backoff: Duration,
    next_start: Instant,
}

struct Running {
    child: Child,
    stderr: ChildStderr,
    pending: Vec<u8>,
    started: Instant,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A server that ran this long before dying had started fine: restart it at once (a server
/// dying sooner, at every start, is restarted ever more slowly).
const HEALTHY_RUN: Duration = Duration::from_secs(5);

impl Supervisor {
    fn new() -> Supervisor {
        Supervisor {
            command: ServerCommand::from_settings(),
            child: None,
            backoff: Duration::ZERO,
            next_start: Instant::now(),
        }
    }

    fn tick(&mut self) {
        if let Some(running) = &mut self.child {
            forward_log(running);
            match running.child.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) => {
                    forward_log(running);
                    let ran = running.started.elapsed();
                    SERVER_PID.get().store(0, Ordering::Release);
                    self.backoff = if ran >= HEALTHY_RUN {
                        Duration::ZERO
                    } else {
                        (self.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF)
                    };
                    warning!(
                        "belink: model server (pid {}) exited after {:.1} s: {status}; restarting in {:.1} s",
                        running.child.id(),
                        ran.as_secs_f64(),
                        self.backoff.as_secs_f64()
                    );
                    self.next_start = Instant::now() + self.backoff;
                    self.child = None;
                }
                Err(e) => warning!("belink: cannot check the model server: {e}"),
            }
        }
        if self.child.is_none() && Instant::now() >= self.next_start {
            self.start();
        }
    }

    fn start(&mut self) {
        let mut command = Command::new(&self.command.program);
        command.args(&self.command.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // Safety: only async-signal-safe calls between fork and exec. The server dies with
        // its supervisor, and starts with no signal blocked.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            });
        }
        match command.spawn() {
            Ok(mut child) => {
                let stderr = child.stderr.take().expect("stderr is piped");
                unsafe {
                    let fd = stderr.as_raw_fd();
                    libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
                }
                SERVER_PID.get().store(child.id() as i32, Ordering::Release);
                SERVER_STARTS.get().fetch_add(1, Ordering::AcqRel);
                log!("belink: started model server {} (pid {})", self.command.program.display(), child.id());
                self.child = Some(Running { child, stderr, pending: Vec::new(), started: Instant::now() });
            }
            Err(e) => {
                self.backoff = (self.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                self.next_start = Instant::now() + self.backoff;
                warning!(
                    "belink: cannot start the model server {}: {e} (set belink.server_path; retrying in {} s)",
                    self.command.program.display(),
                    self.backoff.as_secs()
                );
            }
        }
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited within 5 seconds.
    fn stop(&mut self) {
        let Some(mut running) = self.child.take() else { return };
        let pid = running.child.id() as i32;
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = running.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = running.child.try_wait() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
        forward_log(&mut running);
        SERVER_PID.get().store(0, Ordering::Release);
    }
}

/// Copies the complete lines the server has written to stderr into the PostgreSQL log.
fn forward_log(running: &mut Running) {
    let mut buffer = [0u8; 8192];
    loop {
        match running.stderr.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => running.pending.extend_from_slice(&buffer[..n]),
            Err(_) => break, // WouldBlock: nothing more for now
        }
    }
    while let Some(end) = running.pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = running.pending.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        log!("{line}");
    }
}
