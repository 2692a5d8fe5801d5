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
pub async fn within<T>(
    deadline: Instant,
    on_timeout: Reason,
    fut: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(expired(deadline, on_timeout)),
    }
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
