//! The per-IP limiter's memory: a bounded table of clients that a flood of fresh addresses
//! cannot use to lock anyone out.
//!
//! Policy. Each client (an IPv4 address, or an IPv6 /64) has its own GCRA bucket
//! (governor's arithmetic; this is only its [`StateStore`]). A new address enters a
//! *probation* table; if it comes back while still there, it is promoted to the
//! *established* table. Both are LRU-bounded ([`PROBATION`], [`ESTABLISHED`] entries in
//! all), sharded 16 ways under short locks. When a table is full, its least recently seen
//! client is forgotten — and forgetting only ever gives a client a fresh, full bucket:
//! nothing is shared, so nothing a flood does can limit a client it does not own.
//!
//! What this means under a flood of ~1M one-shot addresses: memory stays at the bound
//! (about [`BYTES_PER_CLIENT`] × [`MAX_TRACKED_IPS`]); the flood churns through probation
//! and never displaces established clients, which keep their buckets (so a heavy client
//! cannot escape its limit by hiding in a flood); a client that arrives during the flood
//! gets its own bucket. What it cannot do: limit a flood of distinct addresses — no per-IP
//! limit can; the per-key limit and the connection cap are the defences there.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;

use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use hashlink::LinkedHashMap;

const SHARDS: usize = 16;
/// Clients remembered after one request, in all shards.
pub const PROBATION: usize = 50_000;
/// Clients remembered after two or more requests, in all shards.
pub const ESTABLISHED: usize = 100_000;
/// Clients tracked at most.
pub const MAX_TRACKED_IPS: usize = PROBATION + ESTABLISHED;
/// Upper bound of the table's heap bytes per tracked client (measured by
/// `tests/limiter_flood.rs`: key, state, LRU links, hash slot and allocator rounding).
pub const BYTES_PER_CLIENT: usize = 128;

/// One shard: two maps in least-recently-seen-first order.
#[derive(Default)]
struct Shard {
    probation: LinkedHashMap<IpAddr, Nanos>,
    established: LinkedHashMap<IpAddr, Nanos>,
}

/// Inserts at the most recent end, forgetting the least recent entry past `cap`.
fn insert_bounded(map: &mut LinkedHashMap<IpAddr, Nanos>, key: IpAddr, state: Nanos, cap: usize) {
    map.insert(key, state);
    while map.len() > cap {
        map.pop_front();
    }
}

/// The bounded client table (see the module docs).
pub struct ClientTable {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl Default for ClientTable {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher: RandomState::new() }
    }
}

impl ClientTable {
    fn shard(&self, key: &IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl StateStore for ClientTable {
    type Key = IpAddr;

    fn measure_and_replace<T, F, E>(&self, key: &IpAddr, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut s = self.shard(key);
        if let Some(state) = s.established.to_back(key) {
            let (t, next) = f(Some(*state))?;
            *state = next;
            return Ok(t);
        }
        if let Some(old) = s.probation.remove(key) {
            // A second visit: promoted, refused or not (its bucket comes along).
            let result = f(Some(old));
            let state = result.as_ref().map_or(old, |(_, next)| *next);
            insert_bounded(&mut s.established, *key, state, ESTABLISHED / SHARDS);
            return result.map(|(t, _)| t);
        }
        let (t, next) = f(None)?;
        insert_bounded(&mut s.probation, *key, next, PROBATION / SHARDS);
        Ok(t)
    }
}

impl ShrinkableKeyedStateStore<IpAddr> for ClientTable {
    /// Forgets clients whose bucket is full again (indistinguishable from a new client).
    fn retain_recent(&self, drop_below: Nanos) {
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            s.probation.retain(|_, v| *v >= drop_below);
            s.established.retain(|_, v| *v >= drop_below);
        }
    }

    fn shrink_to_fit(&self) {
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            s.probation.shrink_to_fit();
            s.established.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                s.probation.len() + s.established.len()
            })
            .sum()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
