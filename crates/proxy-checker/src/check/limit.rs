//! The adaptive concurrency limit (AIMD) over a semaphore.
//!
//! Every check holds one permit, and a permit stands for one socket. When a check fails
//! for a local reason (EMFILE, ENOBUFS, EADDRNOTAVAIL, a starved runtime) the limit is
//! cut multiplicatively — at most once per cool-down, since one shortage hits many
//! checks at once — and it grows back additively as checks complete cleanly.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

const COOL_DOWN: Duration = Duration::from_millis(200);

/// See the module docs.
#[derive(Debug)]
pub struct AdaptiveLimit {
    sem: Arc<Semaphore>,
    max: usize,
    min: usize,
    adaptive: bool,
    limit: AtomicUsize,
    /// Permits still to be retired as checks finish, after a cut larger than the idle ones.
    debt: AtomicUsize,
    clean: AtomicUsize,
    last_cut: Mutex<Option<Instant>>,
}

/// A slot for one check; returned (or retired, if the limit was cut) on drop.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    owner: Arc<AdaptiveLimit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            let paid = self.owner.debt.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1)).is_ok();
            if paid {
                p.forget();
            }
        }
    }
}

impl AdaptiveLimit {
    pub fn new(max: usize, adaptive: bool) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            sem: Arc::new(Semaphore::new(max)),
            max,
            min: (max / 64).clamp(1, 16),
            adaptive,
            limit: AtomicUsize::new(max),
            debt: AtomicUsize::new(0),
            clean: AtomicUsize::new(0),
            last_cut: Mutex::new(None),
        })
    }

    /// Waits for a slot.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        let permit = self.sem.clone().acquire_owned().await.expect("semaphore is never closed");
        Slot { permit: Some(permit), owner: self.clone() }
    }

    /// The current limit.
    pub fn current(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Checks that may start right now without waiting.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// A local failure: cut the limit to 3/4, at most once per cool-down. Returns the new
    /// limit if it changed.
    pub fn on_local_failure(&self) -> Option<usize> {
        if !self.adaptive {
            return None;
        }
        let now = Instant::now();
        {
            let mut last = self.last_cut.lock().expect("limit lock");
            if last.is_some_and(|t| now.duration_since(t) < COOL_DOWN) {
                return None;
            }
            *last = Some(now);
        }
        let cur = self.limit.load(Ordering::Relaxed);
        let new = (cur * 3 / 4).max(self.min);
        if new >= cur {
            return None;
        }
        self.limit.store(new, Ordering::Relaxed);
        self.clean.store(0, Ordering::Relaxed);
        let cut = cur - new;
        let retired = self.sem.forget_permits(cut);
        self.debt.fetch_add(cut - retired, Ordering::AcqRel);
        Some(new)
    }

    /// A check finished without a local failure: grow by one slot every `limit / 16`
    /// clean completions (so the limit can double in about 16 turns of the pool).
    pub fn on_clean(&self) {
        let cur = self.limit.load(Ordering::Relaxed);
        if !self.adaptive || cur >= self.max {
            return;
        }
        if self.last_cut.lock().expect("limit lock").is_some_and(|t| t.elapsed() < COOL_DOWN) {
            return;
        }
        let step = (cur / 16).max(1);
        if self.clean.fetch_add(1, Ordering::AcqRel) + 1 < step {
            return;
        }
        self.clean.store(0, Ordering::Relaxed);
        let grow = (cur / 16).max(1).min(self.max - cur);
        self.limit.store(cur + grow, Ordering::Relaxed);
        let mut add = grow;
        while add > 0 {
            match self.debt.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1)) {
                Ok(_) => add -= 1,
                Err(_) => break,
            }
        }
        self.sem.add_permits(add);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cut_and_recover() {
        let l = AdaptiveLimit::new(100, true);
        let held: Vec<_> = futures_util::future::join_all((0..100).map(|_| l.acquire())).await;
        assert_eq!(l.available(), 0);
        assert_eq!(l.on_local_failure(), Some(75));
        assert_eq!(l.on_local_failure(), None, "cool-down");
        drop(held);
        // 25 of the 100 returned permits were retired.
        assert_eq!(l.available(), 75);
        tokio::time::advance(COOL_DOWN * 2).await;
        assert_eq!(l.on_local_failure(), Some(56));
        assert_eq!(l.available(), 56);
        tokio::time::advance(COOL_DOWN * 2).await;
        for _ in 0..10_000 {
            l.on_clean();
        }
        assert_eq!(l.current(), 100);
        assert_eq!(l.available(), 100);
    }

    #[tokio::test]
    async fn fixed_when_not_adaptive() {
        let l = AdaptiveLimit::new(10, false);
        assert_eq!(l.on_local_failure(), None);
        assert_eq!(l.current(), 10);
    }
}
