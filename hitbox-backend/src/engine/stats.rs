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
use crate::tiers::purge::{PurgeMode, PurgeTarget};

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

    /// A counter exported as `name{cache, labels...}`.
    fn exported(name: &'static str, cache: &str, labels: &[(&'static str, &'static str)]) -> Self {
        let _ = (name, cache, labels);
        Tally {
            count: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            exported: crate::observe::cache_counter(name, cache, labels),
        }
    }

    /// Counts one event.
    pub fn bump(&self) {
        self.add(1);
    }

    /// Counts `n` events (or `n` things of one event).
    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.exported.increment(n);
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
    /// Purges by [`PurgeTarget::kind_index`], [`PurgeMode::index`] and
    /// result (`ok`, `error`).
    purges: [[[Tally; 2]; 2]; 3],
    /// Entries purged, by kind and mode.
    purged_entries: [[Tally; 2]; 3],
    tier_errors: Mutex<HashMap<String, u64>>,
}

impl EngineCounters {
    /// The counters of the cache named `cache`, with their metrics
    /// registered with the recorder installed now.
    pub fn new(cache: &str) -> Self {
        use crate::observe::names;
        let exported = |name, labels: &[(&'static str, &'static str)]| Tally::exported(name, cache, labels);
        EngineCounters {
            outcomes: Outcome::ALL
                .map(|outcome| exported(names::CACHE_REQUESTS, &[("outcome", outcome.as_str())])),
            stale_if_error_hits: Tally::plain(),
            loads: Tally::plain(),
            loads_succeeded: exported(names::LOADS, &[("result", "ok")]),
            load_errors: exported(names::LOADS, &[("result", "error")]),
            joins: exported(names::SINGLE_FLIGHT_JOINS, &[]),
            background_refreshes: exported(names::BACKGROUND_REFRESHES, &[]),
            stale_loads_discarded: exported(names::STALE_LOADS_DISCARDED, &[]),
            key_invalidations: exported(names::INVALIDATIONS, &[("kind", "key")]),
            tag_invalidations: exported(names::INVALIDATIONS, &[("kind", "tag")]),
            stores: exported(names::STORES, &[]),
            unreadable_entries: exported(names::UNREADABLE_ENTRIES, &[]),
            purges: PurgeTarget::KINDS.map(|kind| {
                PurgeMode::ALL.map(|mode| {
                    ["ok", "error"].map(|result| {
                        exported(
                            names::PURGES,
                            &[("kind", kind), ("mode", mode.as_str()), ("result", result)],
                        )
                    })
                })
            }),
            purged_entries: PurgeTarget::KINDS.map(|kind| {
                PurgeMode::ALL
                    .map(|mode| exported(names::PURGED_ENTRIES, &[("kind", kind), ("mode", mode.as_str())]))
            }),
            tier_errors: Mutex::default(),
        }
    }

    /// Counts one purge of `target` in `mode` that ended with `result`:
    /// the purge, and on success the entries it purged.
    pub fn purge_finished<E>(&self, target: &PurgeTarget, mode: PurgeMode, result: &Result<u64, E>) {
        let (kind, mode) = (target.kind_index(), mode.index());
        match result {
            Ok(purged) => {
                self.purges[kind][mode][0].bump();
                self.purged_entries[kind][mode].add(*purged);
            }
            Err(_) => self.purges[kind][mode][1].bump(),
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
        // Sums of the purge counters whose kind, mode and result pass.
        let purges = |pass: &dyn Fn(&str, PurgeMode, bool) -> bool| -> u64 {
            let mut sum = 0;
            for (kind, modes) in PurgeTarget::KINDS.iter().zip(&self.purges) {
                for (mode, results) in PurgeMode::ALL.iter().zip(modes) {
                    for (failed, tally) in [false, true].iter().zip(results) {
                        if pass(kind, *mode, *failed) {
                            sum += tally.get();
                        }
                    }
                }
            }
            sum
        };
        let purged = |pass: &dyn Fn(PurgeMode) -> bool| -> u64 {
            let mut sum = 0;
            for modes in &self.purged_entries {
                for (mode, tally) in PurgeMode::ALL.iter().zip(modes) {
                    if pass(*mode) {
                        sum += tally.get();
                    }
                }
            }
            sum
        };
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
            purges: purges(&|_, _, _| true),
            purge_errors: purges(&|_, _, failed| failed),
            soft_purges: purges(&|_, mode, _| mode == PurgeMode::Soft),
            key_purges: purges(&|kind, _, _| kind == "key"),
            prefix_purges: purges(&|kind, _, _| kind == "prefix"),
            tag_purges: purges(&|kind, _, _| kind == "tag"),
            purged_entries: purged(&|_| true),
            soft_purged_entries: purged(&|mode| mode == PurgeMode::Soft),
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
///
/// Non-exhaustive: counters are added as the engine learns to count more.
/// Read its fields; outside this crate, make one with `Default` and set
/// the fields a test needs.
///
/// ```
/// use hitbox_backend::{Cache, MemoryBackend, PurgeMode};
/// use hitbox_core::CacheKey;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(MemoryBackend::new());
/// let users = CacheKey::builder("users").part("tenant", "acme");
/// for id in ["1", "2"] {
///     cache.set(&users.clone().part("id", id).build(), &id.to_string()).await.unwrap();
/// }
/// cache.purge_prefix(&users.key_prefix(), PurgeMode::Hard).await.unwrap();
/// let stats = cache.stats();
/// assert_eq!((stats.purges, stats.prefix_purges, stats.purged_entries), (1, 1, 2));
/// # });
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
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
    /// `delete` and `invalidate_tag` calls. Purges are not among them:
    /// they are counted in [`purges`](CacheStats::purges).
    pub invalidations: u64,
    /// The `invalidate_tag` calls among them.
    pub tag_invalidations: u64,
    /// Values written to the backend successfully (by `set` and by loads).
    pub stores: u64,
    /// Stored entries that could not be read (corrupt, foreign, other
    /// format) and were treated as misses.
    pub unreadable_entries: u64,
    /// [`Cache::purge`](crate::Cache::purge) calls (its shorthands
    /// included), of every kind and mode, each counted once when it ends,
    /// whether it succeeded or failed (failed ones are
    /// [`purge_errors`](CacheStats::purge_errors) too). The kinds add up to
    /// it: `key_purges + prefix_purges + tag_purges == purges`.
    pub purges: u64,
    /// The purges that failed: refused (an empty prefix), or a tier that
    /// failed or cannot purge that way. The tier failures are also in
    /// [`tier_errors`](CacheStats::tier_errors).
    pub purge_errors: u64,
    /// The soft purges (entries marked stale) among
    /// [`purges`](CacheStats::purges); the others are hard.
    pub soft_purges: u64,
    /// The purges by key ([`PurgeTarget::Key`](crate::PurgeTarget::Key))
    /// among [`purges`](CacheStats::purges).
    pub key_purges: u64,
    /// The purges by key prefix
    /// ([`PurgeTarget::Prefix`](crate::PurgeTarget::Prefix)) among
    /// [`purges`](CacheStats::purges).
    pub prefix_purges: u64,
    /// The purges by tag ([`PurgeTarget::Tag`](crate::PurgeTarget::Tag))
    /// among [`purges`](CacheStats::purges).
    pub tag_purges: u64,
    /// Entries the successful purges purged, as
    /// [`Cache::purge`](crate::Cache::purge) returned them (per tier the
    /// larger count): removed by hard purges, marked stale by soft ones.
    pub purged_entries: u64,
    /// The entries among [`purged_entries`](CacheStats::purged_entries)
    /// that soft purges marked stale.
    pub soft_purged_entries: u64,
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
