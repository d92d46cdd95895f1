//! Cancellation inside long loops. In a PostgreSQL backend a cancel or `statement_timeout` is
//! acted on only where code checks for it, so every loop of the core that grows with its input
//! calls [`Ticker::step`]. The extension installs the check (it raises the cancel's ERROR,
//! which unwinds through the core to the SQL function's boundary); elsewhere (the model server,
//! tools) none is installed and a step costs a counter.

use std::cell::Cell;

thread_local! {
    static CHECK: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// Installs `check` for this thread: a backend runs its SQL functions on one thread.
pub fn install(check: fn()) {
    CHECK.set(Some(check));
}

/// Runs the installed check, if any.
fn check() {
    if let Some(check) = CHECK.get() {
        check();
    }
}

/// Steps of a loop between two checks: a check costs about as much as a few steps (a function
/// call and a flag read), and 2^14 steps of the slowest loop take well under a millisecond.
pub const STEPS_PER_CHECK: u32 = 1 << 14;

/// Counts a loop's steps and checks once every [`STEPS_PER_CHECK`].
#[derive(Default)]
pub struct Ticker(u32);

impl Ticker {
    #[inline]
    pub fn step(&mut self) {
        self.0 += 1;
        if self.0 == STEPS_PER_CHECK {
            self.0 = 0;
            check();
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn cancel() {
        panic!("cancelled");
    }

    /// Whether `work` is stopped by a cancel that arrives before it starts: it is when one of
    /// its loops checks.
    pub fn is_cancelled_in(work: impl FnOnce()) -> bool {
        super::install(cancel);
        let outcome = catch_unwind(AssertUnwindSafe(work));
        super::CHECK.set(None);
        outcome.is_err()
    }
}
