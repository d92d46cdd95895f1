//! belink_worker_status: the supervisor's and the model server's state, for monitoring.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::{client, gucs, worker};

/// The supervisor's and the model server's state, for monitoring.
#[pg_extern(volatile, parallel_restricted)]
fn belink_worker_status_json() -> JsonB {
    let mut status = serde_json::Map::new();
    status.insert("preloaded".into(), worker::preloaded().into());
    if !worker::preloaded() {
        status.insert("state".into(), "not preloaded (add belink to shared_preload_libraries)".into());
        return JsonB(serde_json::Value::Object(status));
    }
    let pid = worker::SERVER_PID.get().load(Ordering::Acquire);
    status.insert("server_pid".into(), pid.into());
    status.insert("server_starts".into(), worker::SERVER_STARTS.get().load(Ordering::Acquire).into());
    let timeout = gucs::request_timeout().min(Duration::from_secs(5));
    let state = match client::status(timeout) {
        Ok(json) => {
            if let Ok(serde_json::Value::Object(server)) = serde_json::from_str(&json) {
                status.extend(server);
            }
            "running".to_string()
        }
        Err(reason) if pid == 0 => format!("down ({reason}); restarting"),
        Err(reason) => format!("not answering ({reason})"),
    };
    status.insert("state".into(), state.into());
    JsonB(serde_json::Value::Object(status))
}

extension_sql_file!("../../sql/status.sql", name = "status_sql", requires = [belink_worker_status_json]);
