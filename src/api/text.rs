use pgrx::prelude::*;

/// The folded form of a text: what BeLink compares names and mentions by (stored in
/// belink.names.normalized).
#[pg_extern(immutable, strict, parallel_safe)]
fn belink_fold(text: &str) -> String {
    belink_core::fold::fold(text)
}
