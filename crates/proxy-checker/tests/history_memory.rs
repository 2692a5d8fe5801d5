//! The history under 1M distinct dead proxies arriving over ten rounds (100,000 per
//! round, a thousand live proxies in every round): its heap stays under the stated bound
//! (`History::bound_bytes`), the live proxies keep their records through every eviction,
//! and retention forgets the dead once they are older than `history.retention_hours`.
//! Heap is measured by a counting allocator (its own test binary).
#![allow(unsafe_code)]

use std::net::IpAddr;

use proxy_checker::history::{BYTES_PER_ENTRY, History, Key, Limits, Observation};
use proxy_checker::proxy::Host;

#[path = "shared/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

fn key(i: u32) -> Key {
    Key::new(Host::Ip(IpAddr::from(i.to_be_bytes())), 3128)
}

#[test]
fn a_million_dead_proxies_over_ten_rounds_stay_within_the_bound() {
    const ROUNDS: u64 = 10;
    const DEAD_PER_ROUND: u32 = 100_000;
    const LIVE: u32 = 1_000;
    let limits = Limits { max_entries: 100_000, retention_ms: 24 * 3_600_000 };
    let bound = History::bound_bytes(limits);
    let base = counting_alloc::reset_peak();
    let mut h = History::new(limits);
    let hour = 3_600_000u64;
    for round in 0..ROUNDS {
        // Rounds five minutes apart; within a round verdicts arrive a millisecond apart.
        let start = 1_000_000 + round * 300_000;
        for i in 0..LIVE {
            h.observe(key(i), &Observation { at: start + u64::from(i), ok: Some(50), found: None });
        }
        for i in 0..DEAD_PER_ROUND {
            let id = 1_000_000 + round as u32 * DEAD_PER_ROUND + i;
            h.observe(key(id), &Observation { at: start + u64::from(LIVE + i), ok: None, found: None });
        }
        h.prune(start + 300_000);
        assert!(h.len() <= limits.max_entries, "round {round}: {} records", h.len());
    }
    let peak = counting_alloc::peak() - base;
    let now = counting_alloc::now() - base;
    eprintln!(
        "1M dead proxies over {ROUNDS} rounds: {} records kept, {} evicted; heap now {:.1} MB, peak {:.1} MB \
         (bound {:.1} MB, {BYTES_PER_ENTRY} B per record)",
        h.len(),
        h.evicted,
        now as f64 / 1e6,
        peak as f64 / 1e6,
        bound as f64 / 1e6
    );
    assert!(peak <= bound, "peak {peak} B over the stated bound {bound} B");
    assert!(h.evicted >= u64::from(DEAD_PER_ROUND) * ROUNDS - limits.max_entries as u64);
    for i in 0..LIVE {
        let r = h.get(&key(i)).unwrap_or_else(|| panic!("live proxy {i} was evicted"));
        assert_eq!((r.checks, r.successes), (ROUNDS as u32, ROUNDS as u32));
    }

    // A day later, with only the live ones still checked, the dead are forgotten.
    let later = 1_000_000 + ROUNDS * 300_000 + 25 * hour;
    for i in 0..LIVE {
        h.observe(key(i), &Observation { at: later, ok: Some(40), found: None });
    }
    h.prune(later);
    assert_eq!(h.len(), LIVE as usize, "only the live proxies outlive retention");
}
