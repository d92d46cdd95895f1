//! Talking to the cluster under evaluation.

/// The server's message for a failed statement.
pub fn db_message(error: &postgres::Error) -> String {
    error.as_db_error().map(|e| e.message().to_string()).unwrap_or_else(|| error.to_string())
}
