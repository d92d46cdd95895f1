use pgrx::prelude::*;

/// The normalized form of a text: what BeLink compares names and mentions by.
#[pg_extern(immutable, strict, parallel_safe)]
fn belink_normalize_text(text: &str) -> String {
    belink_core::normalize::normalize(text)
}
