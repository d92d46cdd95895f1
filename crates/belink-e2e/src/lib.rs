//! A throw-away cluster that preloads belink (started once per test binary through
//! scripts/cluster.sh), and helpers for tests that talk to it as clients do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

pub const PORT: u16 = 54332;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace")
}

pub struct Cluster {
    /// The directory holding the socket and data/ (as scripts/cluster.sh resolved it).
    pub dir: PathBuf,
}

impl Cluster {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Stops and starts the cluster (data kept); waits for the model server.
    pub fn restart(&self) {
        let script = workspace().join("scripts/cluster.sh");
        let dir = self.dir.to_string_lossy().into_owned();
        for args in [vec!["stop", dir.as_str()], vec!["start", dir.as_str(), &PORT.to_string()]] {
            let output = Command::new(&script).args(&args).output().expect("running scripts/cluster.sh");
            assert!(output.status.success(), "cluster.sh {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        wait_until(Duration::from_secs(60), || {
            self.connect().query_one("SELECT belink_embed('warm-up')::text", &[]).is_ok()
        });
    }

    pub fn connect(&self) -> Client {
        let dsn = format!("host={} port={PORT} user=postgres dbname=postgres", self.dir.display());
        Client::connect(&dsn, NoTls).unwrap_or_else(|e| panic!("connecting to {dsn}: {e}"))
    }
}

/// The shared cluster: started fresh on first use, with the extension created and the model
/// server answering.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let requested = workspace().join("target/e2e-cluster");
        let script = workspace().join("scripts/cluster.sh");
        let run = |args: &[&str]| {
            let output = Command::new(&script).args(args).output().expect("running scripts/cluster.sh");
            assert!(output.status.success(), "cluster.sh {args:?}: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        };
        let requested = requested.to_string_lossy().into_owned();
        run(&["stop", &requested]);
        let dir = PathBuf::from(run(&["dir", &requested]));
        let _ = std::fs::remove_dir_all(dir.join("data"));
        run(&["start", &requested, &PORT.to_string()]);
        let cluster = Cluster { dir };
        let mut client = cluster.connect();
        client.batch_execute("CREATE EXTENSION belink CASCADE").expect("CREATE EXTENSION belink");
        wait_until(Duration::from_secs(60), || {
            cluster.connect().query_one("SELECT belink_embed('warm-up')::text", &[]).is_ok()
        });
        cluster
    })
}

/// Polls `ready` until it holds; panics after `limit`.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "condition not met within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `statement` (simple protocol: a CALL may commit) in two new sessions that start it
/// together; for each, the first value it returned, if any.
pub fn in_two_sessions_at_once(statement: &str) -> Vec<Result<Option<String>, postgres::Error>> {
    let start = Arc::new(Barrier::new(2));
    let sessions: Vec<_> = (0..2)
        .map(|_| {
            let (mut session, start, statement) = (cluster().connect(), Arc::clone(&start), statement.to_string());
            std::thread::spawn(move || {
                start.wait();
                let messages = session.simple_query(&statement)?;
                Ok(messages.iter().find_map(|message| match message {
                    postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                    _ => None,
                }))
            })
        })
        .collect();
    sessions.into_iter().map(|session| session.join().expect("a session's thread")).collect()
}

/// belink_worker_status() as JSON.
pub fn status(client: &mut Client) -> serde_json::Value {
    let row = client.query_one("SELECT belink_worker_status_json()::text", &[]).expect("belink_worker_status_json");
    serde_json::from_str(&row.get::<_, String>(0)).expect("status JSON")
}

/// Parses pgvector's text form `[1,2,3]`.
pub fn parse_vector(text: &str) -> Vec<f32> {
    text.trim_matches(|c| c == '[' || c == ']').split(',').map(|x| x.trim().parse().expect("a float")).collect()
}
