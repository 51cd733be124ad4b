//! What the cache tells an operator: request outcomes, per-tier counters
//! and latencies, and tracing spans. The crate documentation's
//! "Observability" section lists every metric and span with its labels
//! and fields; this module holds what they are built from.
//!
//! Why it exists: an operator asks for the hit ratio, per tier, and why a
//! request was a miss. The engine already counts what it does
//! ([`Cache::stats`](crate::Cache::stats)); the metrics are those same
//! counters, bumped at the same call sites (see `engine/stats.rs`), so the
//! two never disagree. Per-tier numbers are taken where tiers are called
//! (the engine calling its tier, a composition calling each of its two),
//! so every tier has them without doing anything itself.
//!
//! How it fits:
//!
//! - [`Outcome`]: how one request was answered, the `outcome` label of
//!   `hitbox_cache_requests_total` and a counter of [`CacheStats`](crate::CacheStats).
//!   The HTTP layer records its own with
//!   [`Cache::record_outcome`](crate::Cache::record_outcome).
//! - `tier` (crate-private): the metric handles and spans of one tier, used
//!   by the engine and by compositions around every tier call.
//! - `spans` (crate-private): the span helpers. Spans are at `DEBUG`; a
//!   disabled span costs a level check and nothing is formatted.
//! - With the `metrics` feature: `describe_metrics` (units and help texts
//!   for an exporter) and `SizeGauges` (the bytes and entries an
//!   in-process tier holds, for tier crates such as hitbox-moka).

pub(crate) mod spans;
pub(crate) mod tier;

#[cfg(feature = "metrics")]
mod exported;

#[cfg(feature = "metrics")]
pub use exported::{SizeGauges, describe_metrics};
#[cfg(feature = "metrics")]
pub(crate) use exported::{breaker_gauge, cache_counter};

/// The names of the metrics (feature `metrics`) and of the spans; see the
/// crate documentation's "Observability" section for their labels.
pub mod names {
    /// Requests by outcome: labels `cache`, `outcome`.
    pub const CACHE_REQUESTS: &str = "hitbox_cache_requests_total";
    /// Callers that joined a running load: label `cache`.
    pub const SINGLE_FLIGHT_JOINS: &str = "hitbox_single_flight_joins_total";
    /// Background refreshes started: label `cache`.
    pub const BACKGROUND_REFRESHES: &str = "hitbox_background_refreshes_total";
    /// Finished loads: labels `cache`, `result` (`ok`, `error`).
    pub const LOADS: &str = "hitbox_loads_total";
    /// Loads whose result was not stored: label `cache`.
    pub const STALE_LOADS_DISCARDED: &str = "hitbox_stale_loads_discarded_total";
    /// Invalidations: labels `cache`, `kind` (`key`, `tag`).
    pub const INVALIDATIONS: &str = "hitbox_invalidations_total";
    /// Purges: labels `cache`, `kind` (`key`, `prefix`, `tag`), `mode`
    /// (`hard`, `soft`), `result` (`ok`, `error`).
    pub const PURGES: &str = "hitbox_purges_total";
    /// Entries purged: labels `cache`, `kind`, `mode`.
    pub const PURGED_ENTRIES: &str = "hitbox_purged_entries_total";
    /// Values stored: label `cache`.
    pub const STORES: &str = "hitbox_stores_total";
    /// Stored entries that could not be read: label `cache`.
    pub const UNREADABLE_ENTRIES: &str = "hitbox_unreadable_entries_total";
    /// Tier reads: labels `tier`, `result` (`hit`, `miss`, `error`).
    pub const TIER_READS: &str = "hitbox_tier_reads_total";
    /// Tier writes: labels `tier`, `result` (`ok`, `error`, `refused`).
    pub const TIER_WRITES: &str = "hitbox_tier_writes_total";
    /// Failed tier operations: labels `tier`, `kind` (see
    /// [`BackendError::kind`](crate::BackendError::kind)).
    pub const TIER_ERRORS: &str = "hitbox_tier_errors_total";
    /// Tier read latency, seconds: label `tier`.
    pub const TIER_READ_SECONDS: &str = "hitbox_tier_read_seconds";
    /// Tier write latency, seconds: label `tier`.
    pub const TIER_WRITE_SECONDS: &str = "hitbox_tier_write_seconds";
    /// Circuit breaker state (0 closed, 1 half-open, 2 open): label `tier`.
    pub const TIER_BREAKER_STATE: &str = "hitbox_tier_breaker_state";
    /// Bytes an in-process tier holds, as it weighs them: label `tier`.
    pub const TIER_BYTES: &str = "hitbox_tier_bytes";
    /// Entries an in-process tier holds: label `tier`.
    pub const TIER_ENTRIES: &str = "hitbox_tier_entries";

    /// One engine read of its tier (all the tier reads it makes).
    pub const SPAN_LOOKUP: &str = "hitbox.lookup";
    /// One load: the loader (or the leading caller) and the store.
    pub const SPAN_LOAD: &str = "hitbox.load";
    /// A background refresh of a stale entry (a root span that follows
    /// from the request that started it).
    pub const SPAN_REVALIDATE: &str = "hitbox.revalidate";
    /// One value written by the engine.
    pub const SPAN_STORE: &str = "hitbox.store";
    /// One purge through the engine (all the tier purges it makes).
    pub const SPAN_PURGE: &str = "hitbox.purge";
    /// One read of one tier.
    pub const SPAN_TIER_READ: &str = "hitbox.tier.read";
    /// One write of one tier.
    pub const SPAN_TIER_WRITE: &str = "hitbox.tier.write";
    /// One removal of a key from one tier.
    pub const SPAN_TIER_REMOVE: &str = "hitbox.tier.remove";
    /// One tag invalidation in one tier.
    pub const SPAN_TIER_INVALIDATE: &str = "hitbox.tier.invalidate";
    /// One purge in one tier.
    pub const SPAN_TIER_PURGE: &str = "hitbox.tier.purge";
}

/// How the cache answered one request.
///
/// Each request ends in exactly one outcome, so the outcomes add up to
/// the requests: the hit ratio is `hit / (sum of all)`. The engine records
/// `hit`, `miss`, `stale`, `collapsed` and `error` (and `bypass` for a
/// call with [`Strategy::Bypass`](hitbox_core::Strategy::Bypass) or
/// [`Strategy::Invalidate`](hitbox_core::Strategy::Invalidate)); the
/// HTTP layer, which reads through [`Cache::get_entry`](crate::Cache::get_entry)
/// and decides itself, records all seven with
/// [`Cache::record_outcome`](crate::Cache::record_outcome).
///
/// ```
/// use hitbox_backend::{Cache, MemoryBackend, Outcome};
///
/// let cache = Cache::new(MemoryBackend::new());
/// cache.record_outcome(Outcome::Bypass);
/// assert_eq!(cache.stats().bypassed, 1);
/// assert_eq!(Outcome::Bypass.as_str(), "bypass");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered by a fresh entry.
    Hit,
    /// Nothing servable was stored: answered by loading (or, for
    /// [`Cache::get`](crate::Cache::get), with nothing).
    Miss,
    /// Answered by a stale entry: inside its stale-while-revalidate window
    /// (refreshed in the background), or inside its stale-if-error window
    /// after a failed load.
    Stale,
    /// Answered by a load another request was running (single-flight).
    Collapsed,
    /// Not handled by the cache: by configuration, or by the call's
    /// strategy.
    Bypass,
    /// Answered by the origin with something that may not be stored (the
    /// HTTP layer's verdict).
    Uncacheable,
    /// Could not be answered: the load failed with nothing stored to serve
    /// instead.
    Error,
}

impl Outcome {
    /// Every outcome, in the order of their counters.
    pub const ALL: [Outcome; 7] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Stale,
        Outcome::Collapsed,
        Outcome::Bypass,
        Outcome::Uncacheable,
        Outcome::Error,
    ];

    /// The label value: `hit`, `miss`, `stale`, `collapsed`, `bypass`,
    /// `uncacheable` or `error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Collapsed => "collapsed",
            Outcome::Bypass => "bypass",
            Outcome::Uncacheable => "uncacheable",
            Outcome::Error => "error",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
