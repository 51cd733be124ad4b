//! The metric handles (feature `metrics`), registered once and kept.
//!
//! A handle is registered with the recorder installed when its owner is
//! built (a [`Cache`](crate::Cache), a composition, a breaker, a tier
//! using [`SizeGauges`]), and kept for the owner's life: an event is then
//! an increment on a handle, with no label built, no lookup and no
//! allocation. Without a recorder the facade hands out no-op handles, and
//! an event costs a branch. The price of registering once: a recorder
//! installed after a cache was built never sees that cache. Install the
//! exporter first, at start-up, as exporters ask anyway.
//!
//! Latencies need a clock read before and after the call. Those reads
//! would be most of the cost of a metric on the hit path, so a tier's
//! latency is measured only when a recorder was installed when its handles
//! were registered ([`recorder_installed`]).

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};

use super::names;
use crate::error::BackendError;

/// Whether a recorder is installed (globally, or locally for this thread).
///
/// The facade does not say; but its stand-in when none is installed is a
/// recorder without any state (`metrics::NoopRecorder`), and every real
/// recorder keeps its metrics somewhere. A recorder of a type with no
/// state of its own (one that forwards to statics) is taken for no
/// recorder: its counters still count, only tier latencies are not
/// measured.
pub(crate) fn recorder_installed() -> bool {
    metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0)
}

/// One counter of a cache, labelled `cache` and then `labels`.
pub(crate) fn cache_counter(
    name: &'static str,
    cache: &str,
    labels: &[(&'static str, &'static str)],
) -> Counter {
    let mut all = Vec::with_capacity(labels.len() + 1);
    all.push(metrics::Label::new("cache", cache.to_owned()));
    all.extend(
        labels
            .iter()
            .map(|&(label, value)| metrics::Label::from_static_parts(label, value)),
    );
    metrics::counter!(name, all)
}

/// The handles of one tier.
pub(crate) struct TierMetrics {
    timed: bool,
    /// `hit`, `miss`, `error`.
    reads: [Counter; 3],
    /// `ok`, `error`, `refused`.
    writes: [Counter; 3],
    /// By [`BackendError::kind`].
    errors: [Counter; BackendError::KINDS.len()],
    read_seconds: Histogram,
    write_seconds: Histogram,
}

/// How a read ended, as `hitbox_tier_reads_total` counts it.
#[derive(Clone, Copy)]
pub(crate) enum ReadResult {
    Hit = 0,
    Miss = 1,
    Error = 2,
}

/// How a write ended, as `hitbox_tier_writes_total` counts it.
#[derive(Clone, Copy)]
pub(crate) enum WriteResult {
    Ok = 0,
    Error = 1,
    Refused = 2,
}

impl TierMetrics {
    pub(crate) fn new(tier: &str) -> Self {
        let counter = |name: &'static str, label: &'static str, value: &'static str| metrics::counter!(name, "tier" => tier.to_owned(), label => value);
        TierMetrics {
            timed: recorder_installed(),
            reads: ["hit", "miss", "error"].map(|result| counter(names::TIER_READS, "result", result)),
            writes: ["ok", "error", "refused"].map(|result| counter(names::TIER_WRITES, "result", result)),
            errors: BackendError::KINDS.map(|kind| counter(names::TIER_ERRORS, "kind", kind)),
            read_seconds: metrics::histogram!(names::TIER_READ_SECONDS, "tier" => tier.to_owned()),
            write_seconds: metrics::histogram!(names::TIER_WRITE_SECONDS, "tier" => tier.to_owned()),
        }
    }

    /// Whether latencies are worth a clock read.
    pub(crate) fn timed(&self) -> bool {
        self.timed
    }

    pub(crate) fn read(&self, result: ReadResult, count: u64, took: Option<Duration>) {
        self.reads[result as usize].increment(count);
        if let Some(took) = took {
            self.read_seconds.record(took.as_secs_f64());
        }
    }

    pub(crate) fn write(&self, result: WriteResult, took: Option<Duration>) {
        self.writes[result as usize].increment(1);
        if let Some(took) = took {
            self.write_seconds.record(took.as_secs_f64());
        }
    }

    pub(crate) fn error(&self, error: &BackendError) {
        self.errors[error.kind_index()].increment(1);
    }
}

/// The state gauge of a circuit breaker guarding the tier `tier`.
pub(crate) fn breaker_gauge(tier: &str) -> Gauge {
    metrics::gauge!(names::TIER_BREAKER_STATE, "tier" => tier.to_owned())
}

/// The bytes and the entries an in-process tier holds, as the gauges
/// `hitbox_tier_bytes{tier}` and `hitbox_tier_entries{tier}` (feature
/// `metrics`).
///
/// For tier crates: hitbox-moka keeps its gauges with one. The tier tells
/// it what it added and removed, as it weighs entries; the gauges are
/// registered when it is made (see the crate documentation,
/// "Observability", for why a recorder must be installed first).
///
/// ```
/// use hitbox_backend::observe::SizeGauges;
/// use metrics_util::debugging::DebuggingRecorder;
///
/// let recorder = DebuggingRecorder::new();
/// let snapshotter = recorder.snapshotter();
/// let gauges = metrics::with_local_recorder(&recorder, || SizeGauges::new("l1"));
/// gauges.added(1_000);
/// gauges.added(500);
/// gauges.removed(1_000);
/// let held: Vec<(String, f64)> = snapshotter
///     .snapshot()
///     .into_vec()
///     .into_iter()
///     .map(|(key, _, _, value)| match value {
///         metrics_util::debugging::DebugValue::Gauge(value) => (key.key().name().to_owned(), value.into_inner()),
///         other => panic!("{other:?}"),
///     })
///     .collect();
/// assert!(held.contains(&("hitbox_tier_bytes".to_owned(), 500.0)));
/// assert!(held.contains(&("hitbox_tier_entries".to_owned(), 1.0)));
/// ```
#[derive(Debug, Clone)]
pub struct SizeGauges {
    bytes: Gauge,
    entries: Gauge,
}

impl SizeGauges {
    /// The gauges of the tier labelled `tier`, registered with the recorder
    /// installed now.
    pub fn new(tier: &str) -> Self {
        SizeGauges {
            bytes: metrics::gauge!(names::TIER_BYTES, "tier" => tier.to_owned()),
            entries: metrics::gauge!(names::TIER_ENTRIES, "tier" => tier.to_owned()),
        }
    }

    /// One entry of `bytes` was added.
    pub fn added(&self, bytes: u64) {
        self.bytes.increment(bytes as f64);
        self.entries.increment(1.0);
    }

    /// One entry of `bytes` was removed (evicted, expired, replaced or
    /// removed).
    pub fn removed(&self, bytes: u64) {
        self.bytes.decrement(bytes as f64);
        self.entries.decrement(1.0);
    }

    /// Sets both gauges outright.
    pub fn set(&self, bytes: u64, entries: u64) {
        self.bytes.set(bytes as f64);
        self.entries.set(entries as f64);
    }
}

/// Gives the installed recorder the unit and a help text of every hitbox
/// metric (what a Prometheus exporter prints as `# HELP`). Optional; call
/// it once after installing the recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        names::CACHE_REQUESTS,
        Unit::Count,
        "Requests by how the cache answered them (outcome: hit, miss, stale, collapsed, bypass, uncacheable, error)."
    );
    describe_counter!(
        names::SINGLE_FLIGHT_JOINS,
        Unit::Count,
        "Callers that joined a load already running for their key."
    );
    describe_counter!(
        names::BACKGROUND_REFRESHES,
        Unit::Count,
        "Background refreshes of stale entries started."
    );
    describe_counter!(names::LOADS, Unit::Count, "Loads finished (result: ok, error).");
    describe_counter!(
        names::STALE_LOADS_DISCARDED,
        Unit::Count,
        "Loads whose result was not stored because an invalidation raced them."
    );
    describe_counter!(
        names::INVALIDATIONS,
        Unit::Count,
        "Invalidations (kind: key, tag)."
    );
    describe_counter!(
        names::PURGES,
        Unit::Count,
        "Purges (kind: key, prefix, tag; mode: hard, soft; result: ok, error)."
    );
    describe_counter!(
        names::PURGED_ENTRIES,
        Unit::Count,
        "Entries removed (hard) or marked stale (soft) by purges (kind: key, prefix, tag; mode: hard, soft)."
    );
    describe_counter!(names::STORES, Unit::Count, "Values written to the tiers.");
    describe_counter!(
        names::UNREADABLE_ENTRIES,
        Unit::Count,
        "Stored entries that could not be read (corrupt, foreign, other format): read as misses."
    );
    describe_counter!(
        names::TIER_READS,
        Unit::Count,
        "Tier reads (result: hit, miss, error)."
    );
    describe_counter!(
        names::TIER_WRITES,
        Unit::Count,
        "Tier writes (result: ok, error, refused)."
    );
    describe_counter!(names::TIER_ERRORS, Unit::Count, "Failed tier operations by kind.");
    describe_histogram!(names::TIER_READ_SECONDS, Unit::Seconds, "Tier read latency.");
    describe_histogram!(names::TIER_WRITE_SECONDS, Unit::Seconds, "Tier write latency.");
    describe_gauge!(
        names::TIER_BREAKER_STATE,
        "Circuit breaker state of a tier: 0 closed, 1 half-open, 2 open."
    );
    describe_gauge!(
        names::TIER_BYTES,
        Unit::Bytes,
        "Bytes an in-process tier holds, as it weighs entries."
    );
    describe_gauge!(
        names::TIER_ENTRIES,
        Unit::Count,
        "Entries an in-process tier holds."
    );
}
