//! The engine: a typed, programmatic cache over any [`Backend`].
//!
//! [`Cache`] is a cheap `Clone` handle. It frames values in envelopes with
//! their metadata, decides freshness with its [`Clock`], runs one loader per
//! missing key however many callers ask at once (single-flight), serves
//! stale entries while refreshing them in the background, falls back to
//! stale entries when a loader fails, and keeps loads that raced with an
//! invalidation from storing what they loaded: invalidations made through
//! this cache by cancelling its loads, those made by other processes
//! through the tag generations of a shared tier (see
//! [`crate::generations`]).
//!
//! A tier that fails never fails a call: a failed read is a miss, a failed
//! write is skipped; both are logged and counted in [`Cache::stats`].
//!
//! How it fits: the engine is the only part of the crate that knows about
//! values, loaders and freshness. Below it sits exactly one tier
//! ([`crate::tiers`]; a composition of several is still one), which stores
//! the bytes the codec ([`crate::codec`]) produced. `hitbox-tower` drives
//! the same engine through [`Cache::lead_or_join`] and [`Cache::get_entry`].
//! The files: `flight` (one load per missing key), `start` (the tag
//! generations a load records before it runs), `memo` (decoded values
//! kept beside their bytes), `typed` ([`TypedCache`], namespaced typed
//! views), `stats` (the counters).

mod flight;
pub(crate) mod in_place;
mod many;
mod memo;
mod purge;
mod start;
mod stats;
mod typed;

use std::any::Any;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hitbox_core::{
    CacheKey, CachePolicy, Clock, EntryMeta, EntryOptions, Freshness, SharedClock, Strategy, SystemClock, Tag,
};
use tokio::sync::Semaphore;

use crate::codec::envelope::{RawEntry, encode_entry};
use crate::codec::format::{CacheableValue, Format};
use crate::error::{BackendError, LoadError};
use crate::observe::Outcome;
use crate::observe::spans::{self, Traced, traced_await};
use crate::observe::tier::TierObserver;
use crate::tiers::backend::Backend;
use crate::tiers::generations::TagGenerations;
use memo::{Decoded, DecodedMemo};

pub use flight::{LoadJoin, LoadLead, LoadTicket, RefreshStore};
pub use stats::CacheStats;
use stats::EngineCounters;
pub use typed::TypedCache;

/// The default bound on background refreshes running at once.
pub const DEFAULT_MAX_BACKGROUND_REFRESHES: usize = 64;

/// A value read from the cache together with its metadata
/// ([`Cache::get_entry`]).
///
/// Over a tier that answers with its stored buffers (moka,
/// [`MemoryBackend`](crate::MemoryBackend), a composition whose L1 is one),
/// an entry is decoded on its first read only: later reads of the same
/// stored entry share that decoding, and the value is borrowed from it, not
/// copied. This is how the HTTP layer serves a hit.
pub struct CachedEntry<V> {
    decoded: Arc<Decoded<V>>,
    /// Its freshness when it was read.
    pub freshness: Freshness,
}

impl<V> CachedEntry<V> {
    /// The value.
    pub fn value(&self) -> &V {
        &self.decoded.value
    }

    /// Its metadata.
    pub fn meta(&self) -> &EntryMeta {
        &self.decoded.meta
    }

    /// The value, owned: moved out when no other read shares it, else
    /// copied.
    pub fn into_value(self) -> V
    where
        V: Clone,
    {
        match Arc::try_unwrap(self.decoded) {
            Ok(decoded) => decoded.value,
            Err(shared) => shared.value.clone(),
        }
    }
}

impl<V> Clone for CachedEntry<V> {
    fn clone(&self) -> Self {
        CachedEntry {
            decoded: Arc::clone(&self.decoded),
            freshness: self.freshness,
        }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for CachedEntry<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedEntry")
            .field("value", self.value())
            .field("meta", self.meta())
            .field("freshness", &self.freshness)
            .finish()
    }
}

impl<V: PartialEq> PartialEq for CachedEntry<V> {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value() && self.meta() == other.meta() && self.freshness == other.freshness
    }
}

/// An entry read and decoded for the engine's own use (the value is moved
/// out of it).
struct Found<V> {
    value: V,
    freshness: Freshness,
}

/// The programmatic cache. See the [crate documentation](crate) for a tour.
///
/// ```
/// use hitbox_backend::{Cache, MemoryBackend};
/// use hitbox_core::CacheKey;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(MemoryBackend::new());
/// let key = CacheKey::builder("answers").part("q", "life").build();
/// let answer: u32 = cache.get_or_insert_with(&key, || async { 42 }).await;
/// assert_eq!(cache.get::<u32>(&key).await, Some(answer));
/// # });
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    backend: Arc<dyn Backend>,
    /// The backend's spans and metrics; `None` when it observes its own
    /// tiers (a composition).
    observer: Option<TierObserver>,
    /// The `cache` label of the engine's metrics.
    name: Arc<str>,
    format: Format,
    policy: CachePolicy,
    clock: SharedClock,
    flights: Mutex<HashMap<CacheKey, Flight>>,
    next_flight: AtomicU64,
    stats: EngineCounters,
    refreshes: Arc<Semaphore>,
    /// Decoded entries of a tier that hands out its stored buffers.
    memo: Option<DecodedMemo>,
}

/// A load in progress for one key.
struct Flight {
    id: u64,
    tags: Vec<Tag>,
    /// Set when the key or one of the tags is invalidated during the load:
    /// the load's result must not be stored.
    cancelled: Arc<AtomicBool>,
    /// A `flight::SharedLoad<V, E>`; callers with other types do not join.
    shared: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("backend", &self.inner.backend.label())
            .field("format", &self.inner.format)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Cache`]; see [`Cache::builder`].
///
/// ```
/// use std::time::Duration;
/// use hitbox_backend::{Cache, Format, MemoryBackend};
/// use hitbox_core::{CachePolicy, ManualClock};
///
/// let cache = Cache::builder(MemoryBackend::new())
///     .format(Format::Json)
///     .policy(CachePolicy::new(Duration::from_secs(60)))
///     .clock(ManualClock::new())
///     .max_background_refreshes(16)
///     .build();
/// ```
pub struct CacheBuilder {
    backend: Arc<dyn Backend>,
    name: Option<String>,
    format: Format,
    policy: CachePolicy,
    clock: SharedClock,
    max_background_refreshes: usize,
}

impl CacheBuilder {
    /// The name of the cache: the `cache` label of its metrics (default:
    /// its backend's [label](Backend::label)). Give each cache of a
    /// process its own.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The format values are encoded in (default [`Format::Postcard`]).
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The policy for entries stored without overrides (default
    /// [`CachePolicy::short_term`]).
    pub fn policy(mut self, policy: CachePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The clock (default [`SystemClock`]); tests pass a
    /// [`ManualClock`](hitbox_core::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How many background refreshes may run at once (default 64). A stale
    /// hit past the bound is served without starting a refresh; the next
    /// stale hit tries again.
    pub fn max_background_refreshes(mut self, max: usize) -> Self {
        self.max_background_refreshes = max;
        self
    }

    /// Builds the cache. With the `metrics` feature, its metrics are
    /// registered here, with the recorder installed now: install it first
    /// (see the crate documentation, "Observability").
    pub fn build(self) -> Cache {
        let name: Arc<str> = match self.name {
            Some(name) => name.into(),
            None => self.backend.label().into(),
        };
        let observer = (!self.backend.observes_tiers()).then(|| TierObserver::new(self.backend.label()));
        Cache {
            inner: Arc::new(Inner {
                observer,
                stats: EngineCounters::new(&name),
                name,
                format: self.format,
                policy: self.policy,
                clock: self.clock,
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(1),
                refreshes: Arc::new(Semaphore::new(self.max_background_refreshes)),
                memo: self.backend.shares_buffers().then(DecodedMemo::new),
                backend: self.backend,
            }),
        }
    }
}

/// What a read found.
enum Lookup<V> {
    Found(Found<V>),
    Miss,
}

/// Why a read found nothing usable.
#[derive(Debug, Clone, Copy)]
enum Absent {
    /// Nothing stored.
    Miss,
    /// Something stored that does not decode.
    Unreadable,
    /// The tier failed (its [`BackendError::kind`]).
    Failed(&'static str),
}

impl Absent {
    fn record(self, span: &Traced) {
        match self {
            Absent::Miss => span.finish("miss"),
            Absent::Unreadable => span.finish("unreadable"),
            Absent::Failed(kind) => span.fail(kind),
        }
    }
}

/// The `hitbox.result` of a lookup that found an entry.
fn found_result(freshness: Freshness) -> &'static str {
    match freshness {
        Freshness::Fresh => "hit",
        Freshness::Stale => "stale",
        Freshness::StaleIfError => "stale_if_error",
        Freshness::Expired => "expired",
    }
}

/// The `error.type` of a failed load.
fn load_error_type<E>(error: &LoadError<E>) -> &'static str {
    match error {
        LoadError::Failed(_) => "failed",
        LoadError::Panicked => "panicked",
        LoadError::Abandoned => "abandoned",
    }
}

impl Cache {
    /// A cache over `backend` with the default settings.
    pub fn new(backend: impl Backend) -> Cache {
        Cache::builder(backend).build()
    }

    /// Starts configuring a cache over `backend`.
    pub fn builder(backend: impl Backend) -> CacheBuilder {
        Cache::builder_shared(Arc::new(backend))
    }

    /// Starts configuring a cache over a backend that is shared already.
    pub fn builder_shared(backend: Arc<dyn Backend>) -> CacheBuilder {
        CacheBuilder {
            backend,
            name: None,
            format: Format::default(),
            policy: CachePolicy::default(),
            clock: Arc::new(SystemClock::new()),
            max_background_refreshes: DEFAULT_MAX_BACKGROUND_REFRESHES,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The name of the cache: the `cache` label of its metrics (see
    /// [`CacheBuilder::name`]).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The default policy.
    pub fn policy(&self) -> CachePolicy {
        self.inner.policy
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.inner.format
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// A view of this cache for values of type `T` under `namespace`.
    pub fn typed<T: CacheableValue>(&self, namespace: &str) -> TypedCache<T> {
        TypedCache::new(self.clone(), namespace)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats.snapshot(self.inner.backend.tier_stats())
    }

    /// Counts how one request was answered, for a caller that decides
    /// itself and reads through [`Cache::get_entry`] and
    /// [`Cache::lead_or_join`], which count no outcome: the HTTP layer.
    /// It lands in the same counter of [`Cache::stats`] as the engine's own
    /// outcomes and, with the `metrics` feature, in
    /// `hitbox_cache_requests_total{cache, outcome}`. One call per request.
    ///
    /// ```
    /// use hitbox_backend::{Cache, MemoryBackend, Outcome};
    ///
    /// let cache = Cache::new(MemoryBackend::new());
    /// cache.record_outcome(Outcome::Hit);
    /// cache.record_outcome(Outcome::Uncacheable);
    /// let stats = cache.stats();
    /// assert_eq!((stats.hits, stats.uncacheable, stats.requests()), (1, 1, 2));
    /// ```
    pub fn record_outcome(&self, outcome: Outcome) {
        self.inner.stats.outcome(outcome);
    }

    /// The value under `key` if it is fresh, or stale inside its
    /// stale-while-revalidate window (no refresh is started: `get` has no
    /// loader). Tier errors and unreadable entries are misses.
    pub async fn get<V: CacheableValue>(&self, key: &CacheKey) -> Option<V> {
        match self.lookup::<V>(key).await {
            Lookup::Found(entry) => match entry.freshness {
                Freshness::Fresh => {
                    self.inner.stats.outcome(Outcome::Hit);
                    tracing::trace!(key = %key.log_id(), outcome = "hit", "cache get");
                    Some(entry.value)
                }
                Freshness::Stale => {
                    self.inner.stats.outcome(Outcome::Stale);
                    tracing::debug!(key = %key.log_id(), outcome = "stale", "cache get");
                    Some(entry.value)
                }
                Freshness::StaleIfError | Freshness::Expired => self.count_miss(key),
            },
            Lookup::Miss => self.count_miss(key),
        }
    }

    fn count_miss<V>(&self, key: &CacheKey) -> Option<V> {
        self.inner.stats.outcome(Outcome::Miss);
        tracing::debug!(key = %key.log_id(), outcome = "miss", "cache get");
        None
    }

    /// The entry under `key` with its metadata and freshness, whatever its
    /// freshness (expired entries a tier has not dropped yet included).
    /// Counts no outcome: for callers that make their own decisions (the
    /// HTTP layer, for one), which count theirs with
    /// [`Cache::record_outcome`]. (Its tier reads are counted per tier, and
    /// it is a `hitbox.lookup` span.) Over a tier that shares its buffers,
    /// reads of the same stored entry share one decoding ([`CachedEntry`]).
    pub async fn get_entry<V>(&self, key: &CacheKey) -> Option<CachedEntry<V>>
    where
        V: CacheableValue + Send + Sync + 'static,
    {
        // The tier read is awaited here, and the decoding (synchronous)
        // runs in the span's scope: no async layer of its own on the hit
        // path.
        let span = spans::lookup(key);
        let found = match traced_await!(span, self.read_bytes(key)) {
            Ok(bytes) => span.in_scope(|| self.decode_entry::<V>(key, bytes)),
            Err(absent) => Err(absent),
        };
        if span.span().is_some() {
            match &found {
                Ok(entry) => span.finish(found_result(entry.freshness)),
                Err(absent) => absent.record(&span),
            }
        }
        found.ok()
    }

    /// The entry in `bytes`: the decoding remembered for this very buffer,
    /// or a new one (remembered, over a tier that shares its buffers).
    #[inline]
    fn decode_entry<V>(&self, key: &CacheKey, bytes: bytes::Bytes) -> Result<CachedEntry<V>, Absent>
    where
        V: CacheableValue + Send + Sync + 'static,
    {
        if let Some(memo) = &self.inner.memo
            && let Some(decoded) = memo.get::<V>(&bytes)
        {
            let freshness = decoded.meta.freshness(self.inner.clock.now());
            return Ok(CachedEntry { decoded, freshness });
        }
        let raw = self.decode_envelope(key, bytes.clone())?;
        let value = self.decode_value::<V>(key, &raw)?;
        let decoded = Arc::new(Decoded {
            meta: raw.meta,
            value,
        });
        if let Some(memo) = &self.inner.memo {
            memo.put(&bytes, &decoded);
        }
        let freshness = decoded.meta.freshness(self.inner.clock.now());
        Ok(CachedEntry { decoded, freshness })
    }

    /// Whether a fresh or revalidatable entry is stored under `key`.
    pub async fn exists(&self, key: &CacheKey) -> bool {
        let now = self.inner.clock.now();
        match self.read_raw(key).await {
            Ok(raw) => matches!(raw.meta.freshness(now), Freshness::Fresh | Freshness::Stale),
            Err(_) => false,
        }
    }

    /// Stores `value` under `key` with the default policy.
    pub async fn set<V: CacheableValue>(&self, key: &CacheKey, value: &V) -> Result<(), BackendError> {
        self.set_with(key, value, &EntryOptions::new()).await
    }

    /// Stores `value` under `key` with per-entry options (TTL, windows, tags).
    pub async fn set_with<V: CacheableValue>(
        &self,
        key: &CacheKey,
        value: &V,
        options: &EntryOptions,
    ) -> Result<(), BackendError> {
        let meta = self
            .inner
            .policy
            .with_overrides(options)
            .entry_meta(self.inner.clock.now(), options.tags().to_vec());
        self.set_entry(key, value, &meta).await
    }

    /// Stores `value` under `key` with metadata the caller computed.
    pub async fn set_entry<V: CacheableValue>(
        &self,
        key: &CacheKey,
        value: &V,
        meta: &EntryMeta,
    ) -> Result<(), BackendError> {
        self.inner.store(key, value, meta).await
    }

    /// Removes the entry under `key`. A load of `key` that is running does
    /// not store its result, and later callers do not join it.
    pub async fn delete(&self, key: &CacheKey) -> Result<bool, BackendError> {
        self.inner.stats.key_invalidations.bump();
        self.inner.cancel_flights(|flight_key, _| flight_key == key);
        tracing::debug!(key = %key.log_id(), "cache delete");
        let result = self.inner.tier_remove(key).await;
        self.inner.note_error(&result);
        result
    }

    /// Removes every entry tagged `tag`. Loads running for entries with
    /// that tag do not store their results.
    pub async fn invalidate_tag(&self, tag: &Tag) -> Result<u64, BackendError> {
        self.inner.stats.tag_invalidations.bump();
        self.inner.cancel_flights(|_, tags| tags.contains(tag));
        tracing::debug!(tag = tag.as_str(), "cache invalidate tag");
        let result = self.inner.tier_invalidate_tag(tag).await;
        self.inner.note_error(&result);
        result
    }

    /// The value under `key`, or the loader's value, stored with the default
    /// policy. Concurrent callers for one missing key run the loader once.
    ///
    /// # Panics
    ///
    /// If the loader panics, every caller waiting on that load panics too
    /// (none of them hangs). Use [`Cache::try_get_or_insert_with`] to get
    /// [`LoadError::Panicked`] instead.
    pub async fn get_or_insert_with<V, F, Fut>(&self, key: &CacheKey, loader: F) -> V
    where
        V: CacheableValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let infallible = || {
            let load = loader();
            async move { Ok::<V, Infallible>(load.await) }
        };
        match self
            .try_get_or_insert_with_options(key, &EntryOptions::new(), infallible)
            .await
        {
            Ok(value) => value,
            Err(LoadError::Failed(never)) => match *never {},
            Err(LoadError::Panicked) => panic!("the loader for this cache key panicked"),
            Err(LoadError::Abandoned) => unreachable!("abandoned loads are retried by the caller"),
        }
    }

    /// Like [`Cache::get_or_insert_with`] with a fallible loader. A failed
    /// load is not cached and every caller that joined it gets the error;
    /// a stale entry inside its stale-if-error window is served instead of
    /// the error.
    pub async fn try_get_or_insert_with<V, E, F, Fut>(
        &self,
        key: &CacheKey,
        loader: F,
    ) -> Result<V, LoadError<E>>
    where
        V: CacheableValue,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        self.try_get_or_insert_with_options(key, &EntryOptions::new(), loader)
            .await
    }

    /// The general form: per-call options (TTL and windows, tags,
    /// [`Strategy`]) and a fallible loader.
    pub async fn try_get_or_insert_with_options<V, E, F, Fut>(
        &self,
        key: &CacheKey,
        options: &EntryOptions,
        loader: F,
    ) -> Result<V, LoadError<E>>
    where
        V: CacheableValue,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        match options.strategy_of() {
            Strategy::UseCache => {}
            Strategy::Bypass => {
                tracing::debug!(key = %key.log_id(), "cache bypass");
                self.inner.stats.outcome(Outcome::Bypass);
                self.inner.stats.loads.bump();
                return self.inner.count_load_result(flight::guarded(loader()).await);
            }
            Strategy::Invalidate => {
                let _ = self.delete(key).await;
                self.inner.stats.outcome(Outcome::Bypass);
                self.inner.stats.loads.bump();
                return self.inner.count_load_result(flight::guarded(loader()).await);
            }
            Strategy::Refresh => {
                tracing::debug!(key = %key.log_id(), "cache refresh");
                let (result, _) = self.load(key, options, loader, false).await;
                let outcome = if result.is_ok() {
                    Outcome::Miss
                } else {
                    Outcome::Error
                };
                self.inner.stats.outcome(outcome);
                return result;
            }
        }

        let fallback = match self.lookup::<V>(key).await {
            Lookup::Found(entry) => match entry.freshness {
                Freshness::Fresh => {
                    self.inner.stats.outcome(Outcome::Hit);
                    tracing::trace!(key = %key.log_id(), outcome = "hit", "cache load");
                    return Ok(entry.value);
                }
                Freshness::Stale => {
                    self.inner.stats.outcome(Outcome::Stale);
                    tracing::debug!(key = %key.log_id(), outcome = "stale", "cache load");
                    self.refresh_in_background(key, options, loader);
                    return Ok(entry.value);
                }
                Freshness::StaleIfError => Some(entry.value),
                Freshness::Expired => None,
            },
            Lookup::Miss => None,
        };
        tracing::debug!(key = %key.log_id(), outcome = "miss", "cache load");
        match self.load(key, options, loader, true).await {
            (Ok(value), joined) => {
                let outcome = if joined { Outcome::Collapsed } else { Outcome::Miss };
                self.inner.stats.outcome(outcome);
                Ok(value)
            }
            (Err(error), _) => match fallback {
                Some(stale) => {
                    self.inner.stats.stale_if_error_hits.bump();
                    self.inner.stats.outcome(Outcome::Stale);
                    tracing::warn!(key = %key.log_id(), "loader failed, serving the stale entry");
                    Ok(stale)
                }
                None => {
                    self.inner.stats.outcome(Outcome::Error);
                    Err(error)
                }
            },
        }
    }

    async fn read_bytes(&self, key: &CacheKey) -> Result<bytes::Bytes, Absent> {
        // The tier, observed here rather than through `TierObserver::read`:
        // one async layer fewer on the hit path.
        let backend = &*self.inner.backend;
        let read = match &self.inner.observer {
            // Neither a span nor a latency wanted: the read as it is, then
            // the counters.
            Some(observer) if !observer.timed() && !spans::wanted() => {
                let read = backend.read(key).await;
                observer.read_done(&Traced::OFF, &read, None);
                read
            }
            Some(observer) => {
                let span = observer.read_span(key);
                let started = observer.started();
                let read = traced_await!(span, backend.read(key));
                observer.read_done(&span, &read, started.map(|at| at.elapsed()));
                read
            }
            None => backend.read(key).await,
        };
        match read {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(Absent::Miss),
            Err(error) => {
                self.inner.stats.tier_error(error.tier());
                tracing::warn!(key = %key.log_id(), %error, "cache read failed, treated as a miss");
                Err(Absent::Failed(error.kind()))
            }
        }
    }

    fn decode_envelope(&self, key: &CacheKey, bytes: bytes::Bytes) -> Result<RawEntry, Absent> {
        RawEntry::decode(bytes, key).map_err(|reason| {
            self.inner.stats.unreadable_entries.bump();
            tracing::warn!(key = %key.log_id(), %reason, "unreadable entry, treated as a miss");
            Absent::Unreadable
        })
    }

    fn decode_value<V: CacheableValue>(&self, key: &CacheKey, raw: &RawEntry) -> Result<V, Absent> {
        raw.value::<V>(self.inner.format).map_err(|reason| {
            self.inner.stats.unreadable_entries.bump();
            tracing::warn!(key = %key.log_id(), %reason, "undecodable entry, treated as a miss");
            Absent::Unreadable
        })
    }

    async fn read_raw(&self, key: &CacheKey) -> Result<RawEntry, Absent> {
        let bytes = self.read_bytes(key).await?;
        self.decode_envelope(key, bytes)
    }

    /// Reads and decodes the entry under `key`, in a `hitbox.lookup` span.
    async fn lookup<V: CacheableValue>(&self, key: &CacheKey) -> Lookup<V> {
        let span = spans::lookup(key);
        let found = match traced_await!(span, self.read_bytes(key)) {
            Ok(bytes) => span.in_scope(|| self.decode_found::<V>(key, bytes)),
            Err(absent) => Err(absent),
        };
        match found {
            Ok(found) => {
                span.finish(found_result(found.freshness));
                Lookup::Found(found)
            }
            Err(absent) => {
                absent.record(&span);
                Lookup::Miss
            }
        }
    }

    fn decode_found<V: CacheableValue>(
        &self,
        key: &CacheKey,
        bytes: bytes::Bytes,
    ) -> Result<Found<V>, Absent> {
        let raw = self.decode_envelope(key, bytes)?;
        let value = self.decode_value::<V>(key, &raw)?;
        let freshness = raw.meta.freshness(self.inner.clock.now());
        Ok(Found { value, freshness })
    }

    /// Runs the loader for `key`, joining a load already running when
    /// `join` is set, and stores its result. Also says whether the result
    /// came from a load another caller started (it joined one).
    async fn load<V, E, F, Fut>(
        &self,
        key: &CacheKey,
        options: &EntryOptions,
        loader: F,
        join: bool,
    ) -> (Result<V, LoadError<E>>, bool)
    where
        V: CacheableValue,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        if join
            && let Some(running) = self.inner.joinable::<V, E>(key)
            && let Some(result) = Self::unless_abandoned(running.await)
        {
            return (result, true);
        }
        let load = flight::guarded(loader());
        match self.inner.start_flight(key, options, load, join) {
            Ok((started, _)) => (started.await, false),
            Err((running, load)) => match Self::unless_abandoned(running.await) {
                Some(result) => (result, true),
                // The load we joined was given up by its leader: load for
                // ourselves, replacing it.
                None => match self.inner.start_flight(key, options, load, false) {
                    Ok((started, _)) => (started.await, false),
                    Err(_) => unreachable!("a load that does not join always starts"),
                },
            },
        }
    }

    fn unless_abandoned<V, E>(result: Result<V, LoadError<E>>) -> Option<Result<V, LoadError<E>>> {
        match result {
            Err(LoadError::Abandoned) => None,
            other => Some(other),
        }
    }

    /// Decides who loads `key`: the first caller leads (and must report its
    /// result), later callers join and wait. For callers that cannot hand
    /// the engine a loader, such as an HTTP layer that streams the origin's
    /// response to its own client while the value is being collected. The
    /// value reported by the leader is stored with `options` (unless the key
    /// or one of its tags is invalidated meanwhile), like a loader's.
    ///
    /// A caller that joins counts in [`CacheStats::joins`], a lead's load
    /// in the loads; no request outcome is counted: the caller records its
    /// own ([`Cache::record_outcome`]). A lead's load is a `hitbox.load`
    /// span, a child of the span current now.
    pub fn lead_or_join<V, E>(&self, key: &CacheKey, options: &EntryOptions) -> LoadTicket<V, E>
    where
        V: CacheableValue,
        E: Send + Sync + 'static,
    {
        self.inner.lead_or_join(key, options)
    }

    /// Starts refreshing `key` in the background with `loader`, unless a
    /// load of it is running already, the bound of background refreshes is
    /// reached, or there is no tokio runtime. The loaded value is stored with
    /// `options`. The engine calls this itself on stale hits; it is public
    /// for callers that serve stale entries on their own. The refresh is a
    /// `hitbox.revalidate` span: a root span that follows from the span
    /// current now, with the load under it.
    pub fn refresh_in_background<V, E, F, Fut>(&self, key: &CacheKey, options: &EntryOptions, loader: F)
    where
        V: CacheableValue,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        self.refresh_in_background_with(key, options, move |_| loader());
    }

    /// [`Cache::refresh_in_background`], for a loader that stores what it
    /// loaded itself, with metadata it computes (the HTTP layer's
    /// standards mode, where the response decides its lifetime). The
    /// loader gets a [`RefreshStore`] that stores as the engine stores a
    /// load's result: not when the key or one of the refresh's tags (those
    /// of `options`) was invalidated meanwhile, here or, through a shared
    /// tier's tag generations, in another process. What the loader returns
    /// is then stored with `options` as well, unless they give it no
    /// lifetime (a zero TTL with no stale windows).
    pub fn refresh_in_background_with<V, E, F, Fut>(&self, key: &CacheKey, options: &EntryOptions, loader: F)
    where
        V: CacheableValue,
        E: Send + Sync + 'static,
        F: FnOnce(RefreshStore) -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        if self.inner.has_flight(key) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(key = %key.log_id(), "no tokio runtime: stale entry served without a refresh");
            return;
        };
        let Ok(permit) = Arc::clone(&self.inner.refreshes).try_acquire_owned() else {
            tracing::debug!(key = %key.log_id(), "background refreshes at their bound: refresh skipped");
            return;
        };
        // Its own root, following from the request: it outlives it.
        let span = spans::revalidate(key);
        // The loader's store handle learns what the refresh recorded once
        // the flight exists, before the flight is first polled.
        let recorded = Arc::new(std::sync::OnceLock::new());
        let store = RefreshStore::new(Arc::clone(&recorded));
        let started = span.in_scope(|| {
            let load = flight::guarded(loader(store));
            self.inner.start_flight(key, options, load, true)
        });
        let Ok((shared, start)) = started else {
            return;
        };
        let _ = recorded.set(start);
        self.inner.stats.background_refreshes.bump();
        runtime.spawn(async move {
            let _permit = permit;
            match span.run(shared).await {
                Ok(_) => span.finish("ok"),
                Err(error) => span.fail(load_error_type(&error)),
            }
        });
    }
}

impl Inner {
    fn note_error<T>(&self, result: &Result<T, BackendError>) {
        if let Err(error) = result {
            self.stats.tier_error(error.tier());
            tracing::warn!(%error, "cache tier operation failed");
        }
    }

    fn count_load_result<V, E>(&self, result: Result<V, LoadError<E>>) -> Result<V, LoadError<E>> {
        self.stats.load_finished(result.is_ok());
        result
    }

    async fn store<V: CacheableValue>(
        &self,
        key: &CacheKey,
        value: &V,
        meta: &EntryMeta,
    ) -> Result<(), BackendError> {
        self.write_entry(key, value, meta, None).await.map(|_| ())
    }

    /// [`Inner::store`] for a load's result, with the generations of its
    /// tags as the load saw them when it started: `Ok(false)` when the tier
    /// refused the value because one of them moved.
    async fn store_if_current<V: CacheableValue>(
        &self,
        key: &CacheKey,
        value: &V,
        meta: &EntryMeta,
        expected: &TagGenerations,
    ) -> Result<bool, BackendError> {
        self.write_entry(key, value, meta, Some(expected)).await
    }

    /// Encodes and writes one entry, in a `hitbox.store` span, checking
    /// `expected` generations when given: `Ok(false)` when the tier refused
    /// it for them. An entry already expired is not written (`Ok(true)`).
    async fn write_entry<V: CacheableValue>(
        &self,
        key: &CacheKey,
        value: &V,
        meta: &EntryMeta,
        expected: Option<&TagGenerations>,
    ) -> Result<bool, BackendError> {
        let span = spans::store(key);
        let result = span
            .run(async {
                let ttl = meta.time_to_expiry(self.clock.now());
                if ttl == Duration::ZERO {
                    return Ok(None);
                }
                let bytes =
                    encode_entry(value, meta, self.format, key).map_err(|source| BackendError::Encode {
                        tier: "engine".into(),
                        source,
                    })?;
                let result = match expected {
                    None => {
                        tracing::trace!(key = %key.log_id(), bytes = bytes.len(), "cache store");
                        self.tier_write(key, bytes, ttl, &meta.tags).await.map(|()| true)
                    }
                    Some(expected) => {
                        tracing::trace!(key = %key.log_id(), bytes = bytes.len(), "cache store if current");
                        self.tier_write_if_current(key, bytes, ttl, &meta.tags, expected)
                            .await
                    }
                };
                self.note_error(&result);
                result.map(Some)
            })
            .await;
        match &result {
            Ok(Some(true)) => {
                self.stats.stores.bump();
                span.finish("ok");
            }
            Ok(Some(false)) => span.finish("refused"),
            Ok(None) => span.finish("expired"),
            Err(error) => span.fail(error.kind()),
        }
        result.map(|written| written.unwrap_or(true))
    }

    async fn tier_read_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<bytes::Bytes>>, BackendError> {
        match &self.observer {
            Some(observer) => observer.read_many(&*self.backend, keys).await,
            None => self.backend.read_many(keys).await,
        }
    }

    async fn tier_write(
        &self,
        key: &CacheKey,
        bytes: bytes::Bytes,
        ttl: Duration,
        tags: &[Tag],
    ) -> Result<(), BackendError> {
        match &self.observer {
            Some(observer) => observer.write(&*self.backend, key, bytes, ttl, tags).await,
            None => self.backend.write(key, bytes, ttl, tags).await,
        }
    }

    async fn tier_write_if_current(
        &self,
        key: &CacheKey,
        bytes: bytes::Bytes,
        ttl: Duration,
        tags: &[Tag],
        expected: &TagGenerations,
    ) -> Result<bool, BackendError> {
        match &self.observer {
            Some(observer) => {
                observer
                    .write_if_current(&*self.backend, key, bytes, ttl, tags, expected)
                    .await
            }
            None => {
                self.backend
                    .write_if_current(key, bytes, ttl, tags, expected)
                    .await
            }
        }
    }

    pub(crate) async fn tier_remove(&self, key: &CacheKey) -> Result<bool, BackendError> {
        match &self.observer {
            Some(observer) => observer.remove(&*self.backend, key).await,
            None => self.backend.remove(key).await,
        }
    }

    async fn tier_purge(&self, purge: &crate::tiers::purge::Purge) -> Result<u64, BackendError> {
        match &self.observer {
            Some(observer) => observer.purge(&*self.backend, purge).await,
            None => self.backend.purge(purge).await,
        }
    }

    async fn tier_invalidate_tag(&self, tag: &Tag) -> Result<u64, BackendError> {
        match &self.observer {
            Some(observer) => observer.invalidate_tag(&*self.backend, tag).await,
            None => self.backend.invalidate_tag(tag).await,
        }
    }

    /// Counts a failed tier operation that has no span of its own (the
    /// generations a load reads when it starts).
    pub(crate) fn tier_error_elsewhere(&self, error: &BackendError) {
        self.stats.tier_error(error.tier());
        if let Some(observer) = &self.observer {
            observer.error(error);
        }
    }

    fn has_flight(&self, key: &CacheKey) -> bool {
        self.flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    fn joinable<V: CacheableValue, E: Send + Sync + 'static>(
        &self,
        key: &CacheKey,
    ) -> Option<flight::SharedLoad<V, E>> {
        let flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        let shared = flights
            .get(key)?
            .shared
            .downcast_ref::<flight::SharedLoad<V, E>>()?
            .clone();
        self.stats.joins.bump();
        tracing::debug!(key = %key.log_id(), "joined a running load");
        Some(shared)
    }

    fn cancel_flights(&self, matches: impl Fn(&CacheKey, &[Tag]) -> bool) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.retain(|key, flight| {
            if matches(key, &flight.tags) {
                flight.cancelled.store(true, Ordering::SeqCst);
                false
            } else {
                true
            }
        });
    }
}
