//! Deadlines for the probes: a timeout is the proxy's fault only if our timer fired on
//! time. Below `http1`, `probe` and `judge`, which all use it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::reason::{Failure, Local, Reason};

/// A timer that fires this much after its deadline means our runtime is starved: the
/// timeout says nothing about the proxy.
pub const LATE_TIMER: Duration = Duration::from_millis(500);

/// Runs `fut` until `deadline`; on expiry fails with `on_timeout`, or with a local
/// failure if the timer fired late (an overloaded runtime, not a slow proxy).
///
/// A combinator, not an `async fn`: an `async fn` keeps its future argument in its own
/// state beside the timeout that runs it, so every probe that nests it would carry its
/// I/O future twice (19,000 checks wait at once).
pub fn within<T>(
    deadline: Instant,
    on_timeout: Reason,
    fut: impl Future<Output = Result<T, Failure>>,
) -> impl Future<Output = Result<T, Failure>> {
    use futures_util::FutureExt;
    tokio::time::timeout_at(deadline, fut).map(move |r| match r {
        Ok(r) => r,
        Err(_) => Err(expired(deadline, on_timeout)),
    })
}

/// The failure for a deadline that has passed: `reason`, unless we noticed it late.
pub fn expired(deadline: Instant, reason: Reason) -> Failure {
    let late = Instant::now().saturating_duration_since(deadline);
    if late > LATE_TIMER {
        Failure::Local(Local(std::io::Error::other(format!("timer fired {late:?} late: runtime overloaded"))))
    } else {
        Failure::Dead(reason)
    }
}
