//! Adapting the encoder to an ontology (belink_adapt_encoder): the server trains in slices of a
//! few seconds, one request each, so the calling procedure can report progress, commit and be
//! cancelled between them. The run stays in memory between slices; checkpoints (every minute,
//! and when the client goes away) let a new run resume after a cancel, a server kill or a
//! restart. Training runs on the connection's thread: embedding requests keep being served
//! by the encoder thread meanwhile (sharing the cores).

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use belink_core::wire::{ErrorCode, Message};
use belink_models::train::{StepReport, TrainConfig, Trainer};
use serde_json::json;

/// How often a run saves a checkpoint while it trains, unless the request's configuration
/// says otherwise (`checkpoint_seconds`).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// Whether `path` lies inside `root` (lexically: no `..`, absolute, below root).
pub fn is_inside(root: &Path, path: &Path) -> bool {
    path.is_absolute()
        && !path.components().any(|c| c == Component::ParentDir)
        && path.starts_with(root)
        && path != root
}

struct Run {
    ontology: String,
    trainer: Trainer,
    /// Training time and names in this process (for the rate and the ETA).
    trained: Duration,
    names: usize,
    last: Option<StepReport>,
    last_checkpoint: Instant,
    checkpoint_every: Duration,
}

impl Run {
    fn progress(&self, done: bool, model: Option<&Path>) -> serde_json::Value {
        let steps_total = self.trainer.steps_total();
        let step = self.trainer.steps_done();
        let seconds = self.trained.as_secs_f64();
        let steps_here = self.trainer.steps_done() - self.trainer.steps_at_start();
        let eta = (steps_here > 0).then(|| seconds / steps_here as f64 * (steps_total - step) as f64);
        json!({
            "ontology": self.ontology,
            "step": step,
            "steps_total": steps_total,
            "epoch": self.last.map(|r| r.epoch),
            "loss": self.last.map(|r| r.loss),
            "names_per_s": if seconds > 0.0 { self.names as f64 / seconds } else { 0.0 },
            "eta_s": eta,
            "done": done,
            "resumed_from": self.trainer.steps_at_start(),
            "model": model.map(|p| p.display().to_string()),
        })
    }
}

/// The training runs held in memory, by work directory.
pub struct Adaptations {
    root: Option<PathBuf>,
    device: String,
    runs: Mutex<HashMap<PathBuf, Slot>>,
}

/// What the server holds for a work directory.
enum Slot {
    /// A request is building the run's trainer (minutes for a large ontology): other
    /// requests for it are refused rather than building a second one.
    SettingUp,
    Ready(Arc<Held>),
}

/// A run in memory, locked for the whole of a slice, and its progress as of its last step
/// (what the status reads meanwhile).
struct Held {
    run: Mutex<Run>,
    progress: Mutex<serde_json::Value>,
}

pub struct AdaptRequest {
    pub ontology: String,
    pub base_model: String,
    pub work_dir: String,
    pub config: String,
    pub seconds: u32,
    pub examples: Vec<(String, String)>,
}

impl Adaptations {
    pub fn new(root: Option<PathBuf>, device: &str) -> Adaptations {
        Adaptations { root, device: device.to_string(), runs: Mutex::new(HashMap::new()) }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let runs = self.runs.lock().expect("runs lock");
        let progress = runs.values().filter_map(|slot| match slot {
            Slot::Ready(held) => Some(held.progress.lock().expect("progress lock").clone()),
            Slot::SettingUp => None,
        });
        serde_json::Value::Array(progress.collect())
    }

    /// Trains for at most `request.seconds` and replies the progress; stops at once (with a
    /// checkpoint) when the client goes away.
    pub fn adapt(&self, stream: &UnixStream, request: AdaptRequest) -> Message {
        let work_dir = PathBuf::from(&request.work_dir);
        let reply = match self.try_adapt(stream, request) {
            Ok(json) => Message::AdaptReply { json: json.to_string() },
            Err((code, message)) => Message::ErrorReply { code, message },
        };
        // A run that ended (done, abandoned, failed) has dropped its trainer by now: give
        // its memory back to the system.
        if !self.runs.lock().expect("runs lock").contains_key(&work_dir) {
            belink_models::release_freed_memory();
        }
        reply
    }

    fn try_adapt(&self, stream: &UnixStream, request: AdaptRequest) -> Result<serde_json::Value, (ErrorCode, String)> {
        let work_dir = PathBuf::from(&request.work_dir);
        let bad = |message: String| (ErrorCode::BadRequest, message);
        match &self.root {
            Some(root) if is_inside(root, &work_dir) => {}
            Some(root) => return Err(bad(format!("{} is not inside {}", work_dir.display(), root.display()))),
            None => return Err(bad("this server was started without a directory for adapted encoders".into())),
        }
        let held = self.run_for(&work_dir, &request)?;
        // Busy also right after a cancel: the abandoned slice notices at the end of its step.
        let mut run = held.run.try_lock().map_err(|_| {
            bad(format!(
                "{} is being trained by another request (after a cancel, call again in a few seconds)",
                work_dir.display()
            ))
        })?;
        let checkpoints = work_dir.join("checkpoint");
        let failed = |e: belink_models::ModelError| (ErrorCode::Inference, e.to_string());
        let started = Instant::now();
        let budget = Duration::from_secs(request.seconds.max(1) as u64);
        loop {
            if !crate::peer_connected(stream) {
                run.trainer.save_checkpoint(&checkpoints).map_err(failed)?;
                eprintln!(
                    "belink-server: adapting {}: the client went away at step {}; checkpoint saved",
                    run.ontology,
                    run.trainer.steps_done()
                );
                self.runs.lock().expect("runs lock").remove(&work_dir);
                return Err((ErrorCode::ShuttingDown, "the client went away".into()));
            }
            let step_started = Instant::now();
            let Some(report) = run.trainer.step().map_err(failed)? else {
                let model = work_dir.join("model");
                run.trainer.save_model(&model).map_err(failed)?;
                run.trainer.save_checkpoint(&checkpoints).map_err(failed)?;
                self.runs.lock().expect("runs lock").remove(&work_dir);
                eprintln!("belink-server: adapting {}: done, model in {}", run.ontology, model.display());
                return Ok(run.progress(true, Some(&model)));
            };
            run.trained += step_started.elapsed();
            run.names += report.names;
            run.last = Some(report);
            *held.progress.lock().expect("progress lock") = run.progress(false, None);
            if run.last_checkpoint.elapsed() >= run.checkpoint_every {
                run.trainer.save_checkpoint(&checkpoints).map_err(failed)?;
                run.last_checkpoint = Instant::now();
            }
            if started.elapsed() >= budget {
                return Ok(run.progress(false, None));
            }
        }
    }

    /// The run held for `work_dir`, or a new one when the request brings the examples.
    fn run_for(&self, work_dir: &Path, request: &AdaptRequest) -> Result<Arc<Held>, (ErrorCode, String)> {
        {
            let mut runs = self.runs.lock().expect("runs lock");
            match runs.get(work_dir) {
                Some(Slot::SettingUp) => {
                    return Err((
                        ErrorCode::BadRequest,
                        format!(
                            "{} is being set up by another request (another session is adapting this ontology)",
                            work_dir.display()
                        ),
                    ))
                }
                Some(Slot::Ready(held)) if request.examples.is_empty() || held.run.try_lock().is_err() => {
                    return Ok(held.clone())
                }
                _ if request.examples.is_empty() => {
                    return Err((
                        ErrorCode::TrainerMissing,
                        format!("no training run for {} in memory", work_dir.display()),
                    ))
                }
                _ => runs.insert(work_dir.to_path_buf(), Slot::SettingUp),
            };
        }
        let built = self.new_run(work_dir, request);
        let mut runs = self.runs.lock().expect("runs lock");
        match built {
            Ok(run) => {
                let progress = Mutex::new(run.progress(false, None));
                let held = Arc::new(Held { run: Mutex::new(run), progress });
                runs.insert(work_dir.to_path_buf(), Slot::Ready(held.clone()));
                Ok(held)
            }
            Err(e) => {
                runs.remove(work_dir);
                Err(e)
            }
        }
    }

    /// A new run for `work_dir`, resumed from its checkpoint when it has one for the same
    /// names and configuration.
    fn new_run(&self, work_dir: &Path, request: &AdaptRequest) -> Result<Run, (ErrorCode, String)> {
        let bad_config = |e: serde_json::Error| (ErrorCode::BadRequest, format!("bad training configuration: {e}"));
        let config: TrainConfig = serde_json::from_str(&request.config).map_err(bad_config)?;
        let checkpoint_every = serde_json::from_str::<serde_json::Value>(&request.config).map_err(bad_config)?
            ["checkpoint_seconds"]
            .as_f64()
            .map_or(CHECKPOINT_EVERY, |s| Duration::from_secs_f64(s.max(0.0)));
        let base = Path::new(&request.base_model);
        let device =
            belink_models::select_device(&self.device).map_err(|e| (ErrorCode::ModelUnavailable, e.to_string()))?;
        let checkpoints = work_dir.join("checkpoint");
        let started = Instant::now();
        let resumed = checkpoints
            .join("checkpoint.json")
            .is_file()
            .then(|| Trainer::resume(base, &checkpoints, &request.examples, &[], &device))
            .and_then(|resumed| match resumed {
                Ok(trainer) if *trainer.config() == config => Some(trainer),
                Ok(_) => {
                    eprintln!(
                        "belink-server: adapting {}: other settings than the checkpoint's; starting anew",
                        request.ontology
                    );
                    None
                }
                Err(e) => {
                    eprintln!("belink-server: adapting {}: not resuming ({e}); starting anew", request.ontology);
                    None
                }
            });
        let trainer = match resumed {
            Some(trainer) => trainer,
            None => {
                let _ = std::fs::remove_dir_all(&checkpoints);
                Trainer::new(base, &request.examples, &[], config, &device)
                    .map_err(|e| (ErrorCode::BadRequest, e.to_string()))?
            }
        };
        eprintln!(
            "belink-server: adapting {}: {} names, step {} of {}, ready in {:.1} s",
            request.ontology,
            request.examples.len(),
            trainer.steps_done(),
            trainer.steps_total(),
            started.elapsed().as_secs_f64()
        );
        Ok(Run {
            ontology: request.ontology.clone(),
            trainer,
            trained: Duration::ZERO,
            names: 0,
            last: None,
            last_checkpoint: Instant::now(),
            checkpoint_every,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{is_inside, AdaptRequest, Adaptations, Slot};
    use std::os::unix::net::UnixStream;
    use std::path::Path;

    #[test]
    fn a_run_being_set_up_is_not_set_up_a_second_time() {
        let root = std::env::temp_dir().join("belink-adapt-guard-test");
        let work_dir = root.join("medic-1");
        let adaptations = Adaptations::new(Some(root), "cpu");
        let (stream, _peer) = UnixStream::pair().unwrap();
        let request = || AdaptRequest {
            ontology: "medic".into(),
            base_model: "/nonexistent/encoder".into(),
            work_dir: work_dir.display().to_string(),
            config: "{}".into(),
            seconds: 1,
            examples: vec![("D1".into(), "heart attack".into()), ("D1".into(), "myocardial infarction".into())],
        };
        adaptations.runs.lock().unwrap().insert(work_dir.clone(), Slot::SettingUp);
        let (_, message) = adaptations.try_adapt(&stream, request()).unwrap_err();
        assert!(message.contains("being set up by another request"), "{message}");

        // Once that set-up is over, the request is tried (and fails here on the missing
        // model), and a failed set-up does not leave its work directory marked.
        adaptations.runs.lock().unwrap().clear();
        let (_, message) = adaptations.try_adapt(&stream, request()).unwrap_err();
        assert!(!message.contains("being set up"), "{message}");
        assert!(adaptations.runs.lock().unwrap().is_empty());
    }

    #[test]
    fn only_paths_below_the_root_are_inside() {
        let root = Path::new("/data/belink/encoders");
        assert!(is_inside(root, Path::new("/data/belink/encoders/medic-7")));
        assert!(!is_inside(root, Path::new("/data/belink/encoders")));
        assert!(!is_inside(root, Path::new("/data/belink/encoders/../../etc")));
        assert!(!is_inside(root, Path::new("/data/belink/encodersx/a")));
        assert!(!is_inside(root, Path::new("medic-7")));
    }
}
