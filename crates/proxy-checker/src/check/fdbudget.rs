//! The file-descriptor budget: raise the soft `RLIMIT_NOFILE` to the hard limit, keep a
//! reserve for everything that is not a check, and clamp concurrency to the rest.

/// The outcome of sizing concurrency against the fd limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdBudget {
    /// Soft limit after raising it.
    pub soft: u64,
    pub hard: u64,
    /// Descriptors kept for the API, storage, source fetches, logs and stdio.
    pub reserve: u64,
    /// Checks that may be in flight (one socket each).
    pub checks: usize,
    /// What was asked for.
    pub requested: usize,
}

impl FdBudget {
    pub fn clamped(&self) -> bool {
        self.checks < self.requested
    }
}

/// The reserve for a soft limit: 5%, at least 64 and at most 1024, never more than half.
pub fn reserve_for(soft: u64, configured: Option<u64>) -> u64 {
    configured.unwrap_or_else(|| (soft / 20).clamp(64, 1024)).min(soft / 2)
}

/// Pure arithmetic of the budget, for tests and docs.
pub fn compute(soft: u64, hard: u64, requested: usize, reserve: Option<u64>) -> FdBudget {
    let reserve = reserve_for(soft, reserve);
    let room = usize::try_from(soft.saturating_sub(reserve)).unwrap_or(usize::MAX).max(1);
    FdBudget { soft, hard, reserve, checks: requested.min(room).max(1), requested }
}

/// Raises the soft limit to the hard one and computes the budget.
pub fn raise_and_compute(requested: usize, reserve: Option<u64>) -> std::io::Result<FdBudget> {
    let soft = rlimit::increase_nofile_limit(u64::MAX)?;
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    let b = compute(soft, hard, requested, reserve);
    if b.clamped() {
        tracing::warn!(
            requested = b.requested,
            effective = b.checks,
            soft_limit = b.soft,
            hard_limit = b.hard,
            reserve = b.reserve,
            "concurrency clamped to the file-descriptor budget (raise the hard RLIMIT_NOFILE to allow more)"
        );
    } else {
        tracing::info!(effective = b.checks, soft_limit = b.soft, reserve = b.reserve, "file-descriptor budget");
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_table() {
        // (soft, requested, configured reserve) -> (reserve, checks)
        for (soft, req, res, want) in [
            (20_000, 25_000, None, (1000, 19_000)),
            (20_000, 10_000, None, (1000, 10_000)),
            (65_535, 25_000, None, (1024, 25_000)),
            (1024, 5000, None, (64, 960)),
            (256, 5000, None, (64, 192)),
            (100, 5000, None, (50, 50)),
            (256, 5000, Some(0), (0, 256)),
            (256, 5000, Some(10_000), (128, 128)),
        ] {
            let b = compute(soft, soft, req, res);
            assert_eq!((b.reserve, b.checks), want, "soft {soft} req {req} reserve {res:?}");
        }
        assert!(compute(20_000, 20_000, 25_000, None).clamped());
    }
}
