//! The counters the engine keeps, and the metrics they are exported as.
//!
//! One source of truth: every counter is a [`Tally`], which holds the
//! count that [`Cache::stats`](crate::Cache::stats) reads and, with the
//! `metrics` feature, the handle of the metric that counts the same event.
//! A call site bumps the tally, and both move together; nothing else
//! increments the metric. The handles are registered when the cache is
//! built (see `observe/exported.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::observe::Outcome;
use crate::tiers::backend::TierStats;

/// One counter of [`CacheStats`], and the metric that counts the same
/// event.
pub(crate) struct Tally {
    count: AtomicU64,
    #[cfg(feature = "metrics")]
    exported: metrics::Counter,
}

impl Tally {
    /// A counter that is not exported.
    fn plain() -> Self {
        Tally {
            count: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            exported: metrics::Counter::noop(),
        }
    }

    /// A counter exported as `name{cache, label}`.
    fn exported(name: &'static str, cache: &str, label: Option<(&'static str, &'static str)>) -> Self {
        let _ = (name, cache, label);
        Tally {
            count: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            exported: crate::observe::cache_counter(name, cache, label),
        }
    }

    /// Counts one event.
    pub fn bump(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.exported.increment(1);
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

pub(crate) struct EngineCounters {
    /// By [`Outcome::index`].
    outcomes: [Tally; 7],
    pub stale_if_error_hits: Tally,
    pub loads: Tally,
    pub loads_succeeded: Tally,
    pub load_errors: Tally,
    pub joins: Tally,
    pub background_refreshes: Tally,
    pub stale_loads_discarded: Tally,
    pub key_invalidations: Tally,
    pub tag_invalidations: Tally,
    pub stores: Tally,
    pub unreadable_entries: Tally,
    tier_errors: Mutex<HashMap<String, u64>>,
}

impl EngineCounters {
    /// The counters of the cache named `cache`, with their metrics
    /// registered with the recorder installed now.
    pub fn new(cache: &str) -> Self {
        use crate::observe::names;
        let exported = |name, label| Tally::exported(name, cache, label);
        EngineCounters {
            outcomes: Outcome::ALL
                .map(|outcome| exported(names::CACHE_REQUESTS, Some(("outcome", outcome.as_str())))),
            stale_if_error_hits: Tally::plain(),
            loads: Tally::plain(),
            loads_succeeded: exported(names::LOADS, Some(("result", "ok"))),
            load_errors: exported(names::LOADS, Some(("result", "error"))),
            joins: exported(names::SINGLE_FLIGHT_JOINS, None),
            background_refreshes: exported(names::BACKGROUND_REFRESHES, None),
            stale_loads_discarded: exported(names::STALE_LOADS_DISCARDED, None),
            key_invalidations: exported(names::INVALIDATIONS, Some(("kind", "key"))),
            tag_invalidations: exported(names::INVALIDATIONS, Some(("kind", "tag"))),
            stores: exported(names::STORES, None),
            unreadable_entries: exported(names::UNREADABLE_ENTRIES, None),
            tier_errors: Mutex::default(),
        }
    }

    /// Counts the outcome of one request.
    pub fn outcome(&self, outcome: Outcome) {
        self.outcomes[outcome.index()].bump();
    }

    /// Counts the end of one load.
    pub fn load_finished(&self, ok: bool) {
        if ok {
            self.loads_succeeded.bump();
        } else {
            self.load_errors.bump();
        }
    }

    pub fn tier_error(&self, tier: &str) {
        let mut errors = self.tier_errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(tier.to_owned()).or_default() += 1;
    }

    pub fn snapshot(&self, tiers: Vec<TierStats>) -> CacheStats {
        let mut tier_errors: Vec<(String, u64)> = self
            .tier_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(tier, n)| (tier.clone(), *n))
            .collect();
        tier_errors.sort();
        let outcome = |outcome: Outcome| self.outcomes[outcome.index()].get();
        let tag_invalidations = self.tag_invalidations.get();
        CacheStats {
            hits: outcome(Outcome::Hit),
            misses: outcome(Outcome::Miss),
            stale_hits: outcome(Outcome::Stale),
            collapsed: outcome(Outcome::Collapsed),
            bypassed: outcome(Outcome::Bypass),
            uncacheable: outcome(Outcome::Uncacheable),
            request_errors: outcome(Outcome::Error),
            stale_if_error_hits: self.stale_if_error_hits.get(),
            loads: self.loads.get(),
            loads_succeeded: self.loads_succeeded.get(),
            load_errors: self.load_errors.get(),
            joins: self.joins.get(),
            background_refreshes: self.background_refreshes.get(),
            stale_loads_discarded: self.stale_loads_discarded.get(),
            invalidations: self.key_invalidations.get() + tag_invalidations,
            tag_invalidations,
            stores: self.stores.get(),
            unreadable_entries: self.unreadable_entries.get(),
            tier_errors,
            tiers,
        }
    }
}

/// A snapshot of the engine's counters; see [`Cache::stats`](crate::Cache::stats).
///
/// The first seven count requests by [`Outcome`]: each request the engine
/// answers (through [`Cache::get`](crate::Cache::get), the
/// `get_or_insert` family, [`Cache::get_many`](crate::Cache::get_many), a
/// load in place, the entity cache) and each one the HTTP layer reports
/// ([`Cache::record_outcome`](crate::Cache::record_outcome)) counts in
/// exactly one of them. With the `metrics` feature every counter but
/// `loads`, `stale_if_error_hits` and `tier_errors` is also exported, from
/// the same call site (the crate documentation, "Observability", maps
/// fields to metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered by a fresh entry ([`Outcome::Hit`]).
    pub hits: u64,
    /// Requests that found no servable entry and were answered by loading
    /// it, or by nothing for a read without a loader ([`Outcome::Miss`]).
    pub misses: u64,
    /// Requests answered by a stale entry ([`Outcome::Stale`]): inside its
    /// stale-while-revalidate window, or inside its stale-if-error window
    /// after a failed load (counted in
    /// [`stale_if_error_hits`](CacheStats::stale_if_error_hits) too).
    pub stale_hits: u64,
    /// Requests answered by a load another request ran
    /// ([`Outcome::Collapsed`]).
    pub collapsed: u64,
    /// Requests the cache did not handle ([`Outcome::Bypass`]).
    pub bypassed: u64,
    /// Requests answered with something that may not be stored
    /// ([`Outcome::Uncacheable`], reported by the HTTP layer).
    pub uncacheable: u64,
    /// Requests that ended in an error: a failed load with nothing stored
    /// to serve instead ([`Outcome::Error`]).
    pub request_errors: u64,
    /// Loads that failed and were answered by a stale entry inside its
    /// stale-if-error window (those requests are
    /// [`stale_hits`](CacheStats::stale_hits)).
    pub stale_if_error_hits: u64,
    /// Loader calls started (foreground and background).
    pub loads: u64,
    /// Loads that ended with a value.
    pub loads_succeeded: u64,
    /// Loads that ended without one: the loader failed or panicked, or the
    /// caller leading it gave up.
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
    /// The `invalidate_tag` calls among them.
    pub tag_invalidations: u64,
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

    /// The requests counted with `outcome`.
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Hit => self.hits,
            Outcome::Miss => self.misses,
            Outcome::Stale => self.stale_hits,
            Outcome::Collapsed => self.collapsed,
            Outcome::Bypass => self.bypassed,
            Outcome::Uncacheable => self.uncacheable,
            Outcome::Error => self.request_errors,
        }
    }

    /// Every request counted, whatever its outcome.
    pub fn requests(&self) -> u64 {
        Outcome::ALL.iter().map(|&outcome| self.outcome(outcome)).sum()
    }
}
