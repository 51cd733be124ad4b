//! Tiers stacked on each other: a fast, small L1 in front of a slower,
//! larger (often shared) L2.
//!
//! A [`CompositionBackend`] is itself a [`Backend`], so the engine
//! ([`Cache`](crate::Cache)) sees one tier, and compositions nest:
//! `moka.compose(redis).compose(remote)` is a composition whose L1 is the
//! composition `moka+redis`.
//!
//! Every tier stores the same plain envelope (see [`crate::envelope`]). A
//! tier wrapped in [`Staged`](crate::Staged) compresses or encrypts it on
//! its way in and undoes that on its way out, so bytes read from one tier
//! can be written to the other as they are.
//!
//! # Reading: [`ReadPolicy`]
//!
//! - [`ReadPolicy::Sequential`] (the default): L1 first; L2 only on an L1
//!   miss or error. The cheapest for L2.
//! - [`ReadPolicy::Race`]: both tiers at once; the first hit wins and the
//!   other request is dropped. A miss (or error) from one waits for the
//!   other. The lowest latency when L1 is not always the faster one.
//! - [`ReadPolicy::Parallel`]: both tiers at once; the entry that stays
//!   fresh the longest (the later `fresh_until`) wins, ties go to L1. For
//!   an L1 shared by hosts that may hold an older copy than L2.
//!
//! Whatever the policy, a tier that fails never fails a read the other tier
//! can answer: an error in one tier falls through to the other, a miss in
//! one and an error in the other is a miss, and only when every tier asked
//! failed does the read return an error (L2's), which the engine treats as
//! a miss.
//!
//! # Refilling L1: [`RefillPolicy`]
//!
//! An entry found in L2 while L1 answered "miss" (or, with
//! [`ReadPolicy::Parallel`], an older entry) is written back to L1 before
//! the read returns: [`RefillPolicy::Always`] (the default),
//! [`RefillPolicy::Never`], or [`RefillPolicy::Probabilistic`] to promote
//! only one such hit in N (chosen by a [`RefillSampler`]; the default one,
//! [`EveryNth`], is a deterministic counter). Only fresh entries are
//! refilled, and their lifetime in L1 is the shortest of: the entry's
//! remaining freshness, the refill cap ([`DEFAULT_REFILL_MAX_TTL`] unless
//! [`CompositionBuilder::refill_max_ttl`] says otherwise) and L1's scaled
//! TTL (see below). L1 thus never serves a refilled entry past its
//! freshness; once it drops it, reads go to L2, which still holds the
//! entry's stale windows. A refill that fails is logged and ignored.
//!
//! # Writing: [`WritePolicy`]
//!
//! - [`WritePolicy::Sequential`] (the default): L1, then L2. Both are
//!   always attempted (a broken L1 does not keep L2 from being updated);
//!   the write succeeds only if both did, otherwise it returns the first
//!   error. The strict choice: an error means the tiers may disagree.
//! - [`WritePolicy::OptimisticParallel`]: both at once; succeeds if either
//!   did (when both fail, L1's error is returned).
//! - [`WritePolicy::WriteBehind`]: L1 now, L2 in a spawned task; the call
//!   returns once L1 is written. If L1 fails, L2 is written before the call
//!   returns instead, and the call reports L2's result: a write succeeds
//!   when the value landed somewhere. Without a tokio runtime L2 is written
//!   inline. [`CompositionBackend::flush`] waits for the writes still
//!   running, and [`Backend::remove`] and [`Backend::invalidate_tag`] flush
//!   first so that an invalidation is not overtaken by an older write.
//!   Writes of one key reach L2 one at a time and in order; one overtaken
//!   by a later write of the key before it started is skipped.
//!
//! A load's store that checks its tags' generations
//! ([`Backend::write_if_current`], see [`crate::generations`]) goes to L2
//! first and to L1 only if L2 took it, whatever the policy: a value the
//! shared tier refused, because another process invalidated one of its
//! tags meanwhile, is not kept near either.
//!
//! Each tier may keep entries for a multiple of the TTL it is asked for
//! ([`CompositionBuilder::l1_ttl_scale`], [`CompositionBuilder::l2_ttl_scale`]):
//! an L2 that keeps entries twice as long serves stale-if-error fallbacks
//! for longer; an L1 at half the TTL re-checks L2 more often.
//!
//! [`Backend::remove`] and [`Backend::invalidate_tag`] go to both tiers,
//! always (even to a tier in cool-down: an invalidation that skips a tier
//! would let it serve what was invalidated once it is back).
//!
//! # Tier health
//!
//! Each tier sits behind its own [`CircuitBreaker`] (see
//! [`crate::breaker`]), on the composition's clock. A tier that failed
//! [`CompositionBuilder::failure_threshold`] times in a row (default
//! [`DEFAULT_FAILURE_THRESHOLD`]) is not asked to read or write for a
//! cool-down ([`CompositionBuilder::cool_down`], default
//! [`DEFAULT_COOL_DOWN`]); calls that skip it see
//! [`BackendError::Unavailable`]. After the cool-down one call probes it
//! (the others still skip it while the probe runs): its success makes the
//! tier healthy, its failure starts another cool-down. Only errors for which
//! [`BackendError::is_tier_failure`] holds count (timeouts, client errors,
//! an inner tier's own breaker being open). An error about one key
//! ([`BackendError::Key`]) is the tier answering and counts as a success;
//! a tier refusing a value ([`BackendError::Refused`]) or a value its
//! stages cannot encode ([`BackendError::Encode`]) says nothing about the
//! tier's health and counts neither way. Invalidations reach a tier in
//! cool-down anyway; their outcome counts only while its breaker is closed.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use hitbox_backend::composition::{
//!     Compose, CompositionBackend, ReadPolicy, RefillPolicy, WritePolicy,
//! };
//! use hitbox_backend::{Backend, Cache, MemoryBackend};
//! use hitbox_core::CacheKey;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let near = MemoryBackend::new().labelled("near");
//! let far = MemoryBackend::new().labelled("far");
//!
//! // Two tiers with the default policies...
//! let simple = near.clone().compose(far.clone());
//! assert_eq!(simple.label(), "near+far");
//!
//! // ...or configured.
//! let tiers = CompositionBackend::builder(near.clone(), far.clone())
//!     .read_policy(ReadPolicy::Sequential)
//!     .write_policy(WritePolicy::OptimisticParallel)
//!     .refill_policy(RefillPolicy::Always)
//!     .refill_max_ttl(Duration::from_secs(10))
//!     .l2_ttl_scale(2.0)
//!     .build();
//! let cache = Cache::new(tiers);
//!
//! let key = CacheKey::builder("greeting").build();
//! cache.set(&key, &"hello".to_string()).await.unwrap();
//! assert!(near.raw(&key).is_some() && far.raw(&key).is_some());
//!
//! // An entry only L2 has is served, and copied into L1.
//! near.remove(&key).await.unwrap();
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("hello"));
//! assert!(near.raw(&key).is_some());
//!
//! // A broken L1 does not fail reads L2 can serve.
//! near.set_failing(true);
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("hello"));
//! near.set_failing(false);
//!
//! // Invalidations reach both tiers.
//! cache.delete(&key).await.unwrap();
//! assert!(near.raw(&key).is_none() && far.raw(&key).is_none());
//!
//! // Three tiers: a composition is a tier.
//! let three = MemoryBackend::new().labelled("moka")
//!     .compose(MemoryBackend::new().labelled("redis"))
//!     .compose(MemoryBackend::new().labelled("remote"));
//! assert_eq!(three.label(), "moka+redis+remote");
//! # });
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{Either, select};
use hitbox_core::{CacheKey, Clock, Freshness, SharedClock, SystemClock, Tag};
use tokio::sync::{Mutex as AsyncMutex, Notify};

use crate::codec::envelope::RawEntry;
use crate::error::BackendError;
use crate::observe::spans::traced_await;
use crate::observe::tier::{TierObserver, Written};
use crate::tiers::backend::{Backend, BackendFuture, TierStats};
use crate::tiers::breaker::{BreakerConfig, CircuitBreaker};
use crate::tiers::generations::TagGenerations;
use crate::tiers::purge::{Purge, PurgeTarget};

/// The default cap on the lifetime of an entry refilled into L1.
pub const DEFAULT_REFILL_MAX_TTL: Duration = Duration::from_secs(30);

/// The default number of consecutive tier failures after which a tier is
/// skipped, and the default time it is skipped for: those of every
/// [`CircuitBreaker`].
pub use crate::tiers::breaker::{DEFAULT_COOL_DOWN, DEFAULT_FAILURE_THRESHOLD};

/// How a [`CompositionBackend`] reads; see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadPolicy {
    /// L1, then L2 on a miss or an error.
    #[default]
    Sequential,
    /// Both tiers at once; the first hit wins.
    Race,
    /// Both tiers at once; the entry with the later `fresh_until` wins.
    Parallel,
}

/// How a [`CompositionBackend`] writes; see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WritePolicy {
    /// L1, then L2; fails if either failed.
    #[default]
    Sequential,
    /// Both tiers at once; succeeds if either succeeded.
    OptimisticParallel,
    /// L1 now, L2 in a background task.
    WriteBehind,
}

/// Whether an entry found in L2 is copied into L1; see the
/// [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefillPolicy {
    /// Every fresh L2 hit is copied.
    #[default]
    Always,
    /// Nothing is copied.
    Never,
    /// One fresh L2 hit in `one_in` is copied, as chosen by the
    /// composition's [`RefillSampler`]. `one_in: 1` copies every hit;
    /// `one_in: 0` copies none.
    Probabilistic {
        /// The N in "one in N".
        one_in: u32,
    },
}

/// Decides which L2 hits a [`RefillPolicy::Probabilistic`] composition
/// copies into L1.
///
/// The default, [`EveryNth`], is deterministic; plug in a random one with
/// [`CompositionBuilder::refill_sampler`] to spread promotions over keys.
pub trait RefillSampler: Send + Sync + 'static {
    /// Whether to copy this hit, for a policy of one hit in `one_in`
    /// (never called with `one_in` below 2).
    fn promote(&self, one_in: u32) -> bool;
}

/// A [`RefillSampler`] that promotes the first candidate, then every
/// `one_in`-th one after it.
#[derive(Debug, Default)]
pub struct EveryNth {
    seen: AtomicU64,
}

impl EveryNth {
    /// A sampler whose next candidate is promoted.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RefillSampler for EveryNth {
    fn promote(&self, one_in: u32) -> bool {
        self.seen
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(u64::from(one_in.max(1)))
    }
}

/// One of the two tiers of a composition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The first (near) tier.
    L1,
    /// The second (far) tier.
    L2,
}

/// What a composition counted about one of its tiers; see
/// [`CompositionBackend::tier_counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompositionTierStats {
    /// The tier's label.
    pub label: String,
    /// Reads the tier answered with an entry.
    pub hits: u64,
    /// Reads the tier answered with nothing.
    pub misses: u64,
    /// Operations (of any kind) the tier failed.
    pub errors: u64,
    /// Reads and writes not sent to the tier because it was in cool-down.
    pub skipped: u64,
    /// Entries copied into the tier from L2 (L1 only).
    pub refills: u64,
    /// Operations sent to the tier whose answer was awaited.
    pub calls: u64,
    /// The time those operations took, in total, in microseconds.
    pub total_latency_micros: u64,
    /// The longest of those operations, in microseconds.
    pub max_latency_micros: u64,
    /// Whether the tier is asked now (not in cool-down).
    pub healthy: bool,
}

#[derive(Default)]
struct TierCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    refills: AtomicU64,
    calls: AtomicU64,
    total_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl TierCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn latency(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        Self::bump(&self.calls);
        self.total_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }
}

/// A tier with what the composition knows about it.
struct TierState {
    backend: Arc<dyn Backend>,
    ttl_scale: f64,
    breaker: CircuitBreaker,
    counters: TierCounters,
    /// Its spans and metrics; `None` for a composition, which observes
    /// its own tiers.
    observer: Option<TierObserver>,
}

impl TierState {
    fn label(&self) -> &str {
        self.backend.label()
    }

    fn scaled(&self, ttl: Duration) -> Duration {
        if self.ttl_scale == 1.0 {
            return ttl;
        }
        Duration::try_from_secs_f64(ttl.as_secs_f64() * self.ttl_scale).unwrap_or(Duration::MAX)
    }

    fn available(&self) -> bool {
        self.breaker.is_available()
    }

    /// Runs one operation on the tier, timing it and recording its outcome.
    /// With `gated`, a tier in cool-down is not asked.
    async fn call<'a, T>(
        &'a self,
        gated: bool,
        operation: impl FnOnce(&'a dyn Backend) -> BackendFuture<'a, T>,
    ) -> Result<T, BackendError> {
        let (result, _) = self.call_timed(gated, operation).await;
        if let (Some(observer), Err(error)) = (&self.observer, &result) {
            observer.error(error);
        }
        result
    }

    /// [`TierState::call`], with the time the call took (`None` when the
    /// tier was not asked), for the caller to record in the tier's
    /// metrics.
    async fn call_timed<'a, T>(
        &'a self,
        gated: bool,
        operation: impl FnOnce(&'a dyn Backend) -> BackendFuture<'a, T>,
    ) -> (Result<T, BackendError>, Option<Duration>) {
        let permit = if gated {
            let Some(permit) = self.breaker.try_acquire() else {
                TierCounters::bump(&self.counters.skipped);
                let skipped = BackendError::Unavailable {
                    tier: self.label().into(),
                };
                return (Err(skipped), None);
            };
            permit
        } else {
            self.breaker.bypass()
        };
        let started = Instant::now();
        let result = operation(&*self.backend).await;
        let took = started.elapsed();
        self.counters.latency(took);
        permit.record(&result);
        if let Err(error) = &result {
            TierCounters::bump(&self.counters.errors);
            tracing::debug!(tier = self.label(), %error, "composition tier failed");
        }
        (result, Some(took))
    }

    async fn read(&self, key: &CacheKey) -> Result<Option<Bytes>, BackendError> {
        let (result, took) = match &self.observer {
            Some(observer) => {
                let span = observer.read_span(key);
                let (result, took) = traced_await!(span, self.call_timed(true, |tier| tier.read(key)));
                observer.read_done(&span, &result, took);
                (result, took)
            }
            None => self.call_timed(true, |tier| tier.read(key)).await,
        };
        let _ = took;
        match &result {
            Ok(Some(_)) => TierCounters::bump(&self.counters.hits),
            Ok(None) => TierCounters::bump(&self.counters.misses),
            Err(_) => {}
        }
        result
    }

    async fn write(
        &self,
        key: &CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &[Tag],
    ) -> Result<(), BackendError> {
        let Some(observer) = &self.observer else {
            return self.call(true, |tier| tier.write(key, value, ttl, tags)).await;
        };
        let span = observer.write_span(key);
        let (result, took) = span
            .run(self.call_timed(true, |tier| tier.write(key, value, ttl, tags)))
            .await;
        observer.write_done(&span, Written::of(&result, |_| true), took);
        result
    }

    async fn write_if_current(
        &self,
        key: &CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &[Tag],
        expected: &TagGenerations,
    ) -> Result<bool, BackendError> {
        let Some(observer) = &self.observer else {
            return self
                .call(true, |tier| {
                    tier.write_if_current(key, value, ttl, tags, expected)
                })
                .await;
        };
        let span = observer.write_span(key);
        let operation = self.call_timed(true, |tier| {
            tier.write_if_current(key, value, ttl, tags, expected)
        });
        let (result, took) = span.run(operation).await;
        observer.write_done(&span, Written::of(&result, |stored| *stored), took);
        result
    }

    async fn read_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Bytes>>, BackendError> {
        let result = match &self.observer {
            Some(observer) => {
                let span = observer.read_many_span(keys.len());
                let (result, took) = span.run(self.call_timed(true, |tier| tier.read_many(keys))).await;
                observer.read_many_done(&span, &result, keys.len(), took);
                result
            }
            None => self.call(true, |tier| tier.read_many(keys)).await,
        };
        if let Ok(found) = &result {
            for entry in found {
                TierCounters::bump(if entry.is_some() {
                    &self.counters.hits
                } else {
                    &self.counters.misses
                });
            }
        }
        result
    }

    /// Removes `key`, even from a tier in cool-down.
    async fn remove(&self, key: &CacheKey) -> Result<bool, BackendError> {
        let Some(observer) = &self.observer else {
            return self.call(false, |tier| tier.remove(key)).await;
        };
        let span = observer.remove_span(key);
        let (result, _) = span.run(self.call_timed(false, |tier| tier.remove(key))).await;
        observer.done(&span, &result);
        result
    }

    /// Invalidates `tag`, even in a tier in cool-down.
    async fn invalidate_tag(&self, tag: &Tag) -> Result<u64, BackendError> {
        let Some(observer) = &self.observer else {
            return self.call(false, |tier| tier.invalidate_tag(tag)).await;
        };
        let span = observer.invalidate_span(tag);
        let (result, _) = span
            .run(self.call_timed(false, |tier| tier.invalidate_tag(tag)))
            .await;
        observer.done(&span, &result);
        result
    }

    /// Purges, even in a tier in cool-down.
    async fn purge(&self, purge: &Purge) -> Result<u64, BackendError> {
        let Some(observer) = &self.observer else {
            return self.call(false, |tier| tier.purge(purge)).await;
        };
        let span = observer.purge_span(purge);
        let (result, _) = span.run(self.call_timed(false, |tier| tier.purge(purge))).await;
        observer.purge_done(&span, &result);
        result
    }

    fn stats(&self) -> CompositionTierStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &self.counters;
        CompositionTierStats {
            label: self.label().to_string(),
            hits: load(&c.hits),
            misses: load(&c.misses),
            errors: load(&c.errors),
            skipped: load(&c.skipped),
            refills: load(&c.refills),
            calls: load(&c.calls),
            total_latency_micros: load(&c.total_micros),
            max_latency_micros: load(&c.max_micros),
            healthy: self.available(),
        }
    }
}

/// Write-behind writes still running, and the order of writes per key.
#[derive(Default)]
struct Pending {
    running: AtomicUsize,
    idle: Notify,
    next: AtomicU64,
    /// The keys with an L2 write scheduled.
    keys: Mutex<HashMap<CacheKey, KeySlot>>,
}

/// The L2 writes scheduled for one key.
struct KeySlot {
    /// The number of the latest write.
    latest: u64,
    /// The lock the key's writes take in turn.
    turn: Arc<AsyncMutex<()>>,
}

impl Pending {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, KeySlot>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules a write of `key` to L2; it supersedes those scheduled before.
    fn claim(self: &Arc<Self>, key: &CacheKey) -> Claim {
        let seq = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let lock = {
            let mut keys = self.keys();
            let slot = keys.entry(key.clone()).or_insert_with(|| KeySlot {
                latest: 0,
                turn: Arc::default(),
            });
            slot.latest = seq;
            Arc::clone(&slot.turn)
        };
        Claim {
            pending: Arc::clone(self),
            key: key.clone(),
            seq,
            lock,
        }
    }
}

/// A scheduled L2 write of one key. Writes of a key run one at a time, and
/// one superseded by a later write before it ran is skipped, so L2 ends up
/// with the latest value.
struct Claim {
    pending: Arc<Pending>,
    key: CacheKey,
    seq: u64,
    lock: Arc<AsyncMutex<()>>,
}

impl Claim {
    /// Runs the write unless a later one superseded it (then `Ok`: the later
    /// write carries the newer value).
    async fn write(
        &self,
        l2: &TierState,
        value: Bytes,
        ttl: Duration,
        tags: &[Tag],
    ) -> Result<(), BackendError> {
        let _turn = self.lock.lock().await;
        let latest = self.pending.keys().get(&self.key).map(|slot| slot.latest) == Some(self.seq);
        if !latest {
            tracing::trace!(key = %self.key.log_id(), "write-behind superseded by a later write");
            return Ok(());
        }
        l2.write(&self.key, value, ttl, tags).await
    }
}

impl Claim {
    /// [`Claim::write`] for a checked write: its turn, then L2's
    /// [`Backend::write_if_current`] (`Ok(true)` when superseded: the later
    /// write carries the newer value).
    async fn write_if_current(
        &self,
        l2: &TierState,
        value: Bytes,
        ttl: Duration,
        tags: &[Tag],
        expected: &TagGenerations,
    ) -> Result<bool, BackendError> {
        let _turn = self.lock.lock().await;
        let latest = self.pending.keys().get(&self.key).map(|slot| slot.latest) == Some(self.seq);
        if !latest {
            tracing::trace!(key = %self.key.log_id(), "checked write superseded by a later write");
            return Ok(true);
        }
        l2.write_if_current(&self.key, value, ttl, tags, expected).await
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut keys = self.pending.keys();
        if keys.get(&self.key).map(|slot| slot.latest) == Some(self.seq) {
            keys.remove(&self.key);
        }
    }
}

/// Marks one write-behind write as running until dropped (also when its
/// task is cancelled or panics).
struct PendingGuard(Arc<Pending>);

impl PendingGuard {
    fn new(pending: &Arc<Pending>) -> Self {
        pending.running.fetch_add(1, Ordering::SeqCst);
        PendingGuard(Arc::clone(pending))
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Two tiers acting as one; see the [module documentation](self).
///
/// Built with [`Compose::compose`] (default policies) or
/// [`CompositionBackend::builder`].
///
/// ```
/// use hitbox_backend::{Compose, MemoryBackend};
///
/// let tiers = MemoryBackend::new().compose(MemoryBackend::new());
/// assert!(tiers.is_available(hitbox_backend::composition::Tier::L1));
/// ```
pub struct CompositionBackend {
    l1: Arc<TierState>,
    l2: Arc<TierState>,
    read_policy: ReadPolicy,
    write_policy: WritePolicy,
    refill_policy: RefillPolicy,
    refill_max_ttl: Duration,
    sampler: Arc<dyn RefillSampler>,
    clock: SharedClock,
    label: String,
    pending: Arc<Pending>,
}

impl fmt::Debug for CompositionBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompositionBackend")
            .field("label", &self.label)
            .field("read_policy", &self.read_policy)
            .field("write_policy", &self.write_policy)
            .field("refill_policy", &self.refill_policy)
            .field("refill_max_ttl", &self.refill_max_ttl)
            .finish_non_exhaustive()
    }
}

/// `l1.compose(l2)` on every [`Backend`].
pub trait Compose: Backend + Sized {
    /// A composition with `self` as L1 and `l2` as L2, with the default
    /// policies (sequential reads and writes, refill always).
    fn compose<L2: Backend>(self, l2: L2) -> CompositionBackend {
        CompositionBackend::new(self, l2)
    }
}

impl<B: Backend> Compose for B {}

/// Configures a [`CompositionBackend`]; see [`CompositionBackend::builder`].
///
/// ```
/// use std::time::Duration;
/// use hitbox_backend::{CompositionBackend, MemoryBackend, ReadPolicy, RefillPolicy, WritePolicy};
///
/// let tiers = CompositionBackend::builder(MemoryBackend::new(), MemoryBackend::new())
///     .read_policy(ReadPolicy::Race)
///     .write_policy(WritePolicy::WriteBehind)
///     .refill_policy(RefillPolicy::Probabilistic { one_in: 10 })
///     .refill_max_ttl(Duration::from_secs(60))
///     .label("memory+memory")
///     .build();
/// assert_eq!(tiers.read_policy(), ReadPolicy::Race);
/// ```
pub struct CompositionBuilder {
    l1: Arc<dyn Backend>,
    l2: Arc<dyn Backend>,
    read_policy: ReadPolicy,
    write_policy: WritePolicy,
    refill_policy: RefillPolicy,
    refill_max_ttl: Duration,
    sampler: Arc<dyn RefillSampler>,
    clock: SharedClock,
    label: Option<String>,
    l1_ttl_scale: f64,
    l2_ttl_scale: f64,
    breaker: BreakerConfig,
}

impl fmt::Debug for CompositionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompositionBuilder")
            .field("l1", &self.l1.label())
            .field("l2", &self.l2.label())
            .field("read_policy", &self.read_policy)
            .field("write_policy", &self.write_policy)
            .field("refill_policy", &self.refill_policy)
            .finish_non_exhaustive()
    }
}

impl CompositionBuilder {
    /// How reads are served (default [`ReadPolicy::Sequential`]).
    pub fn read_policy(mut self, policy: ReadPolicy) -> Self {
        self.read_policy = policy;
        self
    }

    /// How writes are made (default [`WritePolicy::Sequential`]).
    pub fn write_policy(mut self, policy: WritePolicy) -> Self {
        self.write_policy = policy;
        self
    }

    /// Whether L2 hits are copied into L1 (default [`RefillPolicy::Always`]).
    pub fn refill_policy(mut self, policy: RefillPolicy) -> Self {
        self.refill_policy = policy;
        self
    }

    /// The longest an entry copied into L1 is kept there (default
    /// [`DEFAULT_REFILL_MAX_TTL`]); it is never kept past its freshness.
    pub fn refill_max_ttl(mut self, ttl: Duration) -> Self {
        self.refill_max_ttl = ttl;
        self
    }

    /// What picks the hits [`RefillPolicy::Probabilistic`] promotes
    /// (default [`EveryNth`]).
    pub fn refill_sampler(mut self, sampler: impl RefillSampler) -> Self {
        self.sampler = Arc::new(sampler);
        self
    }

    /// The clock for freshness (refills) and cool-downs (default
    /// [`SystemClock`]); tests pass a [`ManualClock`](hitbox_core::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The label (default `"<l1>+<l2>"`).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// L1 keeps written entries `factor` times the TTL it is asked for
    /// (default 1). Refills are only ever shortened by it.
    ///
    /// # Panics
    ///
    /// If `factor` is not a finite number above zero.
    pub fn l1_ttl_scale(mut self, factor: f64) -> Self {
        self.l1_ttl_scale = checked_scale(factor);
        self
    }

    /// L2 keeps written entries `factor` times the TTL it is asked for
    /// (default 1).
    ///
    /// # Panics
    ///
    /// If `factor` is not a finite number above zero.
    pub fn l2_ttl_scale(mut self, factor: f64) -> Self {
        self.l2_ttl_scale = checked_scale(factor);
        self
    }

    /// How many tier failures in a row put a tier in cool-down (default
    /// [`DEFAULT_FAILURE_THRESHOLD`]); 0 never skips a tier.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.breaker.failure_threshold = failures;
        self
    }

    /// How long a tier in cool-down is skipped before one call probes it
    /// (default [`DEFAULT_COOL_DOWN`]).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.breaker.cool_down = cool_down;
        self
    }

    /// The whole breaker configuration of each tier (default
    /// [`BreakerConfig::default`]).
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Builds the composition.
    pub fn build(self) -> CompositionBackend {
        let label = self
            .label
            .unwrap_or_else(|| format!("{}+{}", self.l1.label(), self.l2.label()));
        let tier = |backend: Arc<dyn Backend>, ttl_scale: f64| {
            // A tier with a breaker of its own is not guarded twice: two
            // breakers would stack their cool-downs when it comes back.
            let config = if backend.has_breaker() {
                BreakerConfig::disabled()
            } else {
                self.breaker
            };
            // Labelled as the tier itself: the label of its log lines and
            // of its breaker-state gauge.
            let breaker = CircuitBreaker::new(config, Arc::clone(&self.clock)).labelled(backend.label());
            let observer = (!backend.observes_tiers()).then(|| TierObserver::new(backend.label()));
            Arc::new(TierState {
                backend,
                ttl_scale,
                breaker,
                counters: TierCounters::default(),
                observer,
            })
        };
        CompositionBackend {
            l1: tier(Arc::clone(&self.l1), self.l1_ttl_scale),
            l2: tier(Arc::clone(&self.l2), self.l2_ttl_scale),
            read_policy: self.read_policy,
            write_policy: self.write_policy,
            refill_policy: self.refill_policy,
            refill_max_ttl: self.refill_max_ttl,
            sampler: self.sampler,
            clock: self.clock,
            label,
            pending: Arc::default(),
        }
    }
}

fn checked_scale(factor: f64) -> f64 {
    assert!(
        factor.is_finite() && factor > 0.0,
        "a TTL scale must be a finite number above zero, not {factor}"
    );
    factor
}

/// What a read of one tier produced, for the refill decision.
enum Served {
    /// L1's answer (or nothing to refill).
    L1(Option<Bytes>),
    /// L2's entry; `l1_answered` when L1 answered without an error (so a
    /// copy in L1 is wanted).
    L2 { bytes: Bytes, l1_answered: bool },
}

impl CompositionBackend {
    /// A composition of `l1` and `l2` with the default policies.
    pub fn new(l1: impl Backend, l2: impl Backend) -> Self {
        Self::builder(l1, l2).build()
    }

    /// Starts configuring a composition of `l1` and `l2`.
    pub fn builder(l1: impl Backend, l2: impl Backend) -> CompositionBuilder {
        Self::builder_shared(Arc::new(l1), Arc::new(l2))
    }

    /// Starts configuring a composition of tiers that are shared already.
    pub fn builder_shared(l1: Arc<dyn Backend>, l2: Arc<dyn Backend>) -> CompositionBuilder {
        CompositionBuilder {
            l1,
            l2,
            read_policy: ReadPolicy::default(),
            write_policy: WritePolicy::default(),
            refill_policy: RefillPolicy::default(),
            refill_max_ttl: DEFAULT_REFILL_MAX_TTL,
            sampler: Arc::new(EveryNth::new()),
            clock: Arc::new(SystemClock::new()),
            label: None,
            l1_ttl_scale: 1.0,
            l2_ttl_scale: 1.0,
            breaker: BreakerConfig::default(),
        }
    }

    /// The first tier.
    pub fn l1(&self) -> &Arc<dyn Backend> {
        &self.l1.backend
    }

    /// The second tier.
    pub fn l2(&self) -> &Arc<dyn Backend> {
        &self.l2.backend
    }

    /// The read policy.
    pub fn read_policy(&self) -> ReadPolicy {
        self.read_policy
    }

    /// The write policy.
    pub fn write_policy(&self) -> WritePolicy {
        self.write_policy
    }

    /// The refill policy.
    pub fn refill_policy(&self) -> RefillPolicy {
        self.refill_policy
    }

    /// Whether `tier` is asked now (not in cool-down).
    pub fn is_available(&self, tier: Tier) -> bool {
        self.tier(tier).available()
    }

    /// What the composition counted about each of its two tiers, L1 first.
    pub fn tier_counters(&self) -> [CompositionTierStats; 2] {
        [self.l1.stats(), self.l2.stats()]
    }

    /// Waits until every write-behind write started so far has finished.
    pub async fn flush(&self) {
        loop {
            let idle = self.pending.idle.notified();
            let mut idle = std::pin::pin!(idle);
            idle.as_mut().enable();
            if self.pending.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    fn tier(&self, tier: Tier) -> &TierState {
        match tier {
            Tier::L1 => &self.l1,
            Tier::L2 => &self.l2,
        }
    }

    async fn read_sequential(&self, key: &CacheKey) -> Result<Served, BackendError> {
        let l1 = self.l1.read(key).await;
        if let Ok(Some(bytes)) = l1 {
            return Ok(Served::L1(Some(bytes)));
        }
        let l1_answered = l1.is_ok();
        match self.l2.read(key).await {
            Ok(Some(bytes)) => Ok(Served::L2 { bytes, l1_answered }),
            Ok(None) => Ok(Served::L1(None)),
            Err(error) if l1_answered => {
                tracing::debug!(tier = self.l2.label(), %error, "L2 failed after an L1 miss: a miss");
                Ok(Served::L1(None))
            }
            Err(error) => Err(error),
        }
    }

    async fn read_race(&self, key: &CacheKey) -> Result<Served, BackendError> {
        let l1 = std::pin::pin!(self.l1.read(key));
        let l2 = std::pin::pin!(self.l2.read(key));
        let (l1, l2) = match select(l1, l2).await {
            Either::Left((Ok(Some(bytes)), _)) => return Ok(Served::L1(Some(bytes))),
            // L2 won while L1 had not answered: L1 may hold the entry, so no
            // refill.
            Either::Right((Ok(Some(bytes)), _)) => {
                return Ok(Served::L2 {
                    bytes,
                    l1_answered: false,
                });
            }
            Either::Left((l1, l2)) => (l1, l2.await),
            Either::Right((l2, l1)) => (l1.await, l2),
        };
        Self::combine(l1, l2)
    }

    /// Combines two answers of which at most one is a hit, L1 first.
    fn combine(
        l1: Result<Option<Bytes>, BackendError>,
        l2: Result<Option<Bytes>, BackendError>,
    ) -> Result<Served, BackendError> {
        match (l1, l2) {
            (Ok(Some(bytes)), _) => Ok(Served::L1(Some(bytes))),
            (l1, Ok(Some(bytes))) => Ok(Served::L2 {
                bytes,
                l1_answered: l1.is_ok(),
            }),
            (Err(_), Err(error)) => Err(error),
            _ => Ok(Served::L1(None)),
        }
    }

    async fn read_parallel(&self, key: &CacheKey) -> Result<Served, BackendError> {
        let (l1, l2) = futures::future::join(self.l1.read(key), self.l2.read(key)).await;
        match (l1, l2) {
            (Ok(Some(near)), Ok(Some(far))) => {
                let fresh_until = |bytes: &Bytes| {
                    RawEntry::decode(bytes.clone(), key)
                        .ok()
                        .map(|e| e.meta.fresh_until)
                };
                // An undecodable entry loses to a decodable one; ties go to L1.
                if fresh_until(&far) > fresh_until(&near) {
                    Ok(Served::L2 {
                        bytes: far,
                        l1_answered: true,
                    })
                } else {
                    Ok(Served::L1(Some(near)))
                }
            }
            (l1, l2) => Self::combine(l1, l2),
        }
    }

    /// Copies an entry read from L2 into L1 when the refill policy says so
    /// and it is fresh, for at most its remaining freshness.
    async fn refill(&self, key: &CacheKey, bytes: &Bytes) {
        let one_in = match self.refill_policy {
            RefillPolicy::Never => return,
            RefillPolicy::Always => 1,
            RefillPolicy::Probabilistic { one_in: 0 } => return,
            RefillPolicy::Probabilistic { one_in } => one_in,
        };
        let Ok(entry) = RawEntry::decode(bytes.clone(), key) else {
            return;
        };
        let now = self.clock.now();
        if entry.meta.freshness(now) != Freshness::Fresh {
            return;
        }
        if one_in > 1 && !self.sampler.promote(one_in) {
            return;
        }
        let remaining = entry.meta.time_to_stale(now);
        let ttl = remaining.min(self.refill_max_ttl).min(self.l1.scaled(remaining));
        if ttl.is_zero() {
            return;
        }
        // An in-process L1 keeps what it is given for as long as the entry
        // lives, and bytes read from a network tier are often a slice of
        // the client's whole read buffer: keeping the slice would keep the
        // buffer, unweighed. Such a tier gets a copy of exactly the entry.
        let refill = if self.l1.backend.shares_buffers() {
            Bytes::copy_from_slice(bytes)
        } else {
            bytes.clone()
        };
        match self.l1.write(key, refill, ttl, &entry.meta.tags).await {
            Ok(()) => TierCounters::bump(&self.l1.counters.refills),
            Err(error) => {
                tracing::debug!(tier = self.l1.label(), key = %key.log_id(), %error, "refill failed")
            }
        }
    }

    async fn write_inner(
        &self,
        key: &CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &[Tag],
    ) -> Result<(), BackendError> {
        let (l1_ttl, l2_ttl) = (self.l1.scaled(ttl), self.l2.scaled(ttl));
        match self.write_policy {
            WritePolicy::Sequential => {
                let l1 = self.l1.write(key, value.clone(), l1_ttl, tags).await;
                let l2 = self.l2.write(key, value, l2_ttl, tags).await;
                l1.and(l2)
            }
            WritePolicy::OptimisticParallel => {
                let (l1, l2) = futures::future::join(
                    self.l1.write(key, value.clone(), l1_ttl, tags),
                    self.l2.write(key, value, l2_ttl, tags),
                )
                .await;
                match (l1, l2) {
                    (Err(error), Err(_)) => Err(error),
                    _ => Ok(()),
                }
            }
            WritePolicy::WriteBehind => {
                let l1 = self.l1.write(key, value.clone(), l1_ttl, tags).await;
                let claim = self.pending.claim(key);
                if l1.is_err() {
                    return claim.write(&self.l2, value, l2_ttl, tags).await;
                }
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    // No runtime to run it behind: write it now, and report
                    // success since L1 has it.
                    let _ = claim.write(&self.l2, value, l2_ttl, tags).await;
                    return Ok(());
                };
                let guard = PendingGuard::new(&self.pending);
                let l2 = Arc::clone(&self.l2);
                let tags = tags.to_vec();
                runtime.spawn(async move {
                    let _guard = guard;
                    if let Err(error) = claim.write(&l2, value, l2_ttl, &tags).await {
                        tracing::warn!(tier = l2.label(), key = %claim.key.log_id(), %error, "write-behind failed");
                    }
                });
                Ok(())
            }
        }
    }
}

impl Backend for CompositionBackend {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let served = match self.read_policy {
                ReadPolicy::Sequential => self.read_sequential(key).await?,
                ReadPolicy::Race => self.read_race(key).await?,
                ReadPolicy::Parallel => self.read_parallel(key).await?,
            };
            match served {
                Served::L1(found) => Ok(found),
                Served::L2 { bytes, l1_answered } => {
                    if l1_answered {
                        self.refill(key, &bytes).await;
                    }
                    Ok(Some(bytes))
                }
            }
        })
    }

    fn write<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        Box::pin(self.write_inner(key, value, ttl, tags))
    }

    /// Both tiers' generations, merged; `None` when neither keeps any. A
    /// tier in cool-down (or behind its own open breaker) is left out: a
    /// checked write skips it too, and if it is back by then, it finds
    /// nothing of its own recorded and refuses the write.
    fn tag_generations<'a>(&'a self, tags: &'a [Tag]) -> BackendFuture<'a, Option<TagGenerations>> {
        Box::pin(async move {
            let (l1, l2) = futures::future::join(
                self.l1.call(true, |tier| tier.tag_generations(tags)),
                self.l2.call(true, |tier| tier.tag_generations(tags)),
            )
            .await;
            let mut merged: Option<TagGenerations> = None;
            for result in [l1, l2] {
                match result {
                    Ok(Some(seen)) => merged.get_or_insert_with(TagGenerations::new).merge(seen),
                    Ok(None) => {}
                    Err(BackendError::Unavailable { .. }) => {
                        merged.get_or_insert_with(TagGenerations::new);
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(merged)
        })
    }

    /// L2 first, then L1, whatever the write policy (write-behind included:
    /// a checked write waits for L2): what the far, shared tier refuses is
    /// not kept in the near one. If L1 refuses after L2 took the value, the
    /// value is removed from L2 again. Errors combine as the write policy
    /// says ([`WritePolicy::Sequential`]: both must succeed; the others:
    /// one is enough).
    fn write_if_current<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
        expected: &'a TagGenerations,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let (l1_ttl, l2_ttl) = (self.l1.scaled(ttl), self.l2.scaled(ttl));
            let l2 = if self.write_policy == WritePolicy::WriteBehind {
                let claim = self.pending.claim(key);
                claim
                    .write_if_current(&self.l2, value.clone(), l2_ttl, tags, expected)
                    .await
            } else {
                self.l2
                    .write_if_current(key, value.clone(), l2_ttl, tags, expected)
                    .await
            };
            if let Ok(false) = l2 {
                return Ok(false);
            }
            let l1 = self.l1.write_if_current(key, value, l1_ttl, tags, expected).await;
            if let Ok(false) = l1 {
                if let Ok(true) = l2 {
                    let _ = self.l2.remove(key).await;
                }
                return Ok(false);
            }
            match self.write_policy {
                WritePolicy::Sequential => l1.and(l2),
                WritePolicy::OptimisticParallel | WritePolicy::WriteBehind => match (l1, l2) {
                    (Err(error), Err(_)) => Err(error),
                    _ => Ok(true),
                },
            }
        })
    }

    /// One batch read of L1, then one of L2 for what L1 did not have (or
    /// for every key, when L1 failed), whatever the read policy; entries
    /// found in L2 are refilled into L1 as single reads refill them. Fails
    /// only when both tiers fail.
    fn read_many<'a>(&'a self, keys: &'a [CacheKey]) -> BackendFuture<'a, Vec<Option<Bytes>>> {
        Box::pin(async move {
            let near = self.l1.read_many(keys).await;
            let l1_answered = near.is_ok();
            let mut found = match near {
                Ok(found) => found,
                Err(_) => vec![None; keys.len()],
            };
            let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
            if missing.is_empty() {
                return Ok(found);
            }
            let wanted: Vec<CacheKey> = missing.iter().map(|&i| keys[i].clone()).collect();
            match self.l2.read_many(&wanted).await {
                Ok(far) => {
                    for (&i, bytes) in missing.iter().zip(far) {
                        if let Some(bytes) = bytes {
                            if l1_answered {
                                self.refill(&keys[i], &bytes).await;
                            }
                            found[i] = Some(bytes);
                        }
                    }
                    Ok(found)
                }
                Err(error) if !l1_answered => Err(error),
                Err(_) => Ok(found),
            }
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            self.flush().await;
            let (l1, l2) = futures::future::join(self.l1.remove(key), self.l2.remove(key)).await;
            Ok(l1? | l2?)
        })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            self.flush().await;
            let (l1, l2) =
                futures::future::join(self.l1.invalidate_tag(tag), self.l2.invalidate_tag(tag)).await;
            // An entry usually sits in both tiers: count it once.
            Ok(l1?.max(l2?))
        })
    }

    /// Purges both tiers (each its own copy: a soft purge rewrites L1's
    /// and L2's entries where each has one), even one in cool-down, after
    /// the write-behind writes still running. Fails if either failed; an
    /// entry in both counts once.
    fn purge<'a>(&'a self, purge: &'a Purge) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            self.flush().await;
            let (l1, l2) = futures::future::join(self.l1.purge(purge), self.l2.purge(purge)).await;
            Ok(l1?.max(l2?))
        })
    }

    /// The keys either tier lists, each once.
    fn purge_keys<'a>(&'a self, target: &'a PurgeTarget) -> BackendFuture<'a, Vec<CacheKey>> {
        Box::pin(async move {
            let (l1, l2) = futures::future::join(
                self.l1.call(false, |tier| tier.purge_keys(target)),
                self.l2.call(false, |tier| tier.purge_keys(target)),
            )
            .await;
            let mut keys = l2?;
            let known: HashSet<CacheKey> = keys.iter().cloned().collect();
            keys.extend(l1?.into_iter().filter(|key| !known.contains(key)));
            Ok(keys)
        })
    }

    fn exists<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let l1 = self.l1.call(true, |tier| tier.exists(key)).await;
            if let Ok(true) = l1 {
                return Ok(true);
            }
            match self.l2.call(true, |tier| tier.exists(key)).await {
                Err(error) if l1.is_err() => Err(error),
                l2 => Ok(l2.unwrap_or(false)),
            }
        })
    }

    fn label(&self) -> &str {
        &self.label
    }

    /// The stats of every inner tier (L1's, then L2's), then the
    /// composition's own counters for L1 and for L2, labelled
    /// `"<composition>:l1"` and `"<composition>:l2"`, with the latency the
    /// composition measured around each tier (as seen by the caller: a
    /// tier's own stages, a compression say, are in it).
    fn tier_stats(&self) -> Vec<TierStats> {
        let mut stats = self.l1.backend.tier_stats();
        stats.extend(self.l2.backend.tier_stats());
        for (name, tier) in [("l1", &self.l1), ("l2", &self.l2)] {
            let own = tier.stats();
            stats.push(TierStats {
                label: format!("{}:{name}", self.label),
                hits: own.hits,
                misses: own.misses,
                errors: own.errors,
                timed_calls: own.calls,
                total_latency_micros: own.total_latency_micros,
                max_latency_micros: own.max_latency_micros,
                ..TierStats::default()
            });
        }
        stats
    }

    /// As L1 does: its hits are the ones worth remembering decoded, and an
    /// L2 hit refilled into it is read back from there.
    fn shares_buffers(&self) -> bool {
        self.l1.backend.shares_buffers()
    }

    /// Each of its tiers is behind a breaker (its own, or the
    /// composition's), so a composition inside another is not guarded again.
    fn has_breaker(&self) -> bool {
        true
    }

    /// Each of its tiers is observed by it (unless it is a composition
    /// too, which observes its own).
    fn observes_tiers(&self) -> bool {
        true
    }

    /// The smaller of its tiers' limits: an entry is meant for both.
    fn max_entry_size(&self) -> usize {
        self.l1
            .backend
            .max_entry_size()
            .min(self.l2.backend.max_entry_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    #[tokio::test]
    async fn write_behind_forgets_a_key_once_its_writes_are_done() {
        let tiers = CompositionBackend::builder(MemoryBackend::new(), MemoryBackend::new())
            .write_policy(WritePolicy::WriteBehind)
            .build();
        let key = CacheKey::builder("t").build();
        for _ in 0..3 {
            tiers
                .write(&key, Bytes::from_static(b"v"), Duration::from_secs(60), &[])
                .await
                .unwrap();
        }
        assert_eq!(tiers.pending.keys().len(), 1);
        tiers.flush().await;
        assert!(tiers.pending.keys().is_empty());
        assert_eq!(tiers.pending.running.load(Ordering::SeqCst), 0);
    }

    /// A memory tier whose reads take at least `delay`, like a remote one.
    struct Slow {
        inner: MemoryBackend,
        delay: Duration,
    }

    impl Backend for Slow {
        fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                self.inner.read(key).await
            })
        }
        fn write<'a>(
            &'a self,
            key: &'a CacheKey,
            value: Bytes,
            ttl: Duration,
            tags: &'a [Tag],
        ) -> BackendFuture<'a, ()> {
            self.inner.write(key, value, ttl, tags)
        }
        fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
            self.inner.remove(key)
        }
        fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
            self.inner.invalidate_tag(tag)
        }
        fn label(&self) -> &str {
            self.inner.label()
        }
        fn tier_stats(&self) -> Vec<TierStats> {
            self.inner.tier_stats()
        }
    }

    #[tokio::test]
    async fn tier_stats_carry_the_latency_measured_around_each_tier() {
        let l1 = MemoryBackend::new().labelled("near");
        let l2 = MemoryBackend::new().labelled("far");
        let (near, far) = (Duration::from_millis(2), Duration::from_millis(5));
        let tiers = CompositionBackend::builder(
            Slow {
                inner: l1.clone(),
                delay: near,
            },
            Slow {
                inner: l2.clone(),
                delay: far,
            },
        )
        .refill_policy(RefillPolicy::Never)
        .build();
        let (in_l1, in_l2) = (CacheKey::builder("a").build(), CacheKey::builder("b").build());
        let ttl = Duration::from_secs(60);
        l1.write(&in_l1, Bytes::from_static(b"1"), ttl, &[])
            .await
            .unwrap();
        l2.write(&in_l2, Bytes::from_static(b"2"), ttl, &[])
            .await
            .unwrap();

        for _ in 0..3 {
            assert!(tiers.read(&in_l1).await.unwrap().is_some()); // L1 only
            assert!(tiers.read(&in_l2).await.unwrap().is_some()); // L1 miss, then L2
        }

        let stats = tiers.tier_stats();
        let own = |label: &str| {
            stats
                .iter()
                .find(|s| s.label == label)
                .unwrap_or_else(|| panic!("no stats labelled {label} in {stats:?}"))
        };
        for (label, calls, delay) in [("near+far:l1", 6, near), ("near+far:l2", 3, far)] {
            let tier = own(label);
            assert_eq!(tier.timed_calls, calls, "{label}");
            let delay = u64::try_from(delay.as_micros()).unwrap();
            assert!(tier.max_latency_micros >= delay, "{label}: {tier:?}");
            assert!(tier.total_latency_micros >= calls * delay, "{label}: {tier:?}");
            assert!(
                tier.max_latency_micros <= tier.total_latency_micros,
                "{label}: {tier:?}"
            );
            assert!(
                tier.mean_latency().unwrap() >= Duration::from_micros(delay),
                "{label}"
            );
        }
        // The inner memory tiers do not time themselves.
        assert_eq!(own("near").timed_calls, 0);
        assert_eq!(own("near").mean_latency(), None);
        // The same numbers as the composition's own counters.
        let [c1, c2] = tiers.tier_counters();
        assert_eq!(
            (c1.calls, c1.total_latency_micros),
            (
                own("near+far:l1").timed_calls,
                own("near+far:l1").total_latency_micros
            )
        );
        assert_eq!(c2.max_latency_micros, own("near+far:l2").max_latency_micros);
    }
}
