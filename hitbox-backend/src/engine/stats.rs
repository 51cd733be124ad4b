//! EngineCounters the engine keeps.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::tiers::backend::TierStats;

#[derive(Default)]
pub(crate) struct EngineCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale_hits: AtomicU64,
    pub stale_if_error_hits: AtomicU64,
    pub loads: AtomicU64,
    pub load_errors: AtomicU64,
    pub joins: AtomicU64,
    pub background_refreshes: AtomicU64,
    pub stale_loads_discarded: AtomicU64,
    pub invalidations: AtomicU64,
    pub stores: AtomicU64,
    pub unreadable_entries: AtomicU64,
    tier_errors: Mutex<HashMap<String, u64>>,
}

impl EngineCounters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tier_error(&self, tier: &str) {
        let mut errors = self.tier_errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(tier.to_owned()).or_default() += 1;
    }

    pub fn snapshot(&self, tiers: Vec<TierStats>) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut tier_errors: Vec<(String, u64)> = self
            .tier_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(tier, n)| (tier.clone(), *n))
            .collect();
        tier_errors.sort();
        CacheStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            stale_hits: get(&self.stale_hits),
            stale_if_error_hits: get(&self.stale_if_error_hits),
            loads: get(&self.loads),
            load_errors: get(&self.load_errors),
            joins: get(&self.joins),
            background_refreshes: get(&self.background_refreshes),
            stale_loads_discarded: get(&self.stale_loads_discarded),
            invalidations: get(&self.invalidations),
            stores: get(&self.stores),
            unreadable_entries: get(&self.unreadable_entries),
            tier_errors,
            tiers,
        }
    }
}

/// A snapshot of the engine's counters; see [`Cache::stats`](crate::Cache::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered by a fresh entry.
    pub hits: u64,
    /// Reads that found no servable entry.
    pub misses: u64,
    /// Reads answered by a stale entry inside its stale-while-revalidate
    /// window.
    pub stale_hits: u64,
    /// Loads that failed and were answered by a stale entry inside its
    /// stale-if-error window.
    pub stale_if_error_hits: u64,
    /// Loader calls started (foreground and background).
    pub loads: u64,
    /// Loader calls that failed or panicked.
    pub load_errors: u64,
    /// Callers that joined a load already running for their key instead of
    /// starting one (single-flight).
    pub joins: u64,
    /// Background refreshes of stale entries started.
    pub background_refreshes: u64,
    /// Loads whose result was not stored because their key or one of their
    /// tags was invalidated while they ran.
    pub stale_loads_discarded: u64,
    /// `delete` and `invalidate_tag` calls.
    pub invalidations: u64,
    /// Values written to the backend successfully (by `set` and by loads).
    pub stores: u64,
    /// Stored entries that could not be read (corrupt, foreign, other
    /// format) and were treated as misses.
    pub unreadable_entries: u64,
    /// Failed tier operations, by tier label.
    pub tier_errors: Vec<(String, u64)>,
    /// What the tiers report about themselves.
    pub tiers: Vec<TierStats>,
}

impl CacheStats {
    /// Failed operations of the tier labelled `tier`.
    pub fn errors_of(&self, tier: &str) -> u64 {
        self.tier_errors
            .iter()
            .find(|(label, _)| label == tier)
            .map_or(0, |(_, n)| *n)
    }
}
