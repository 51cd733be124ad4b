//! Single-flight: one load per key, however many callers wait for it.
//!
//! A load is a `Shared` future registered under its key. Every caller that
//! finds it awaits a clone, and whichever caller is polling drives it, so a
//! caller that gives up (its future dropped) leaves the load to the others
//! instead of stranding them. The loader runs under `catch_unwind`: a panic
//! becomes [`LoadError::Panicked`] for every waiter rather than a hang.
//!
//! The load itself stores its result before it resolves, then removes its
//! registration; a load whose key or tags were invalidated while it ran
//! (its `cancelled` flag set by `Cache::delete` or `Cache::invalidate_tag`)
//! hands its value to its waiters but does not keep it in the cache. A load
//! with tags first records their generations (`start.rs`), so that a tier
//! shared with other processes refuses its store if one of them
//! invalidated a tag meanwhile; the value still goes to the waiters.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use hitbox_core::{CacheKey, EntryMeta, EntryOptions};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::start::{LoadStart, Recorded};
use super::{Flight, Inner, load_error_type};
use crate::codec::format::CacheableValue;
use crate::error::{BackendError, LoadError};
use crate::observe::spans;

/// A load that several callers can await.
pub(crate) type SharedLoad<V, E> = Shared<BoxFuture<'static, Result<V, LoadError<E>>>>;

/// Who does the loading for a key: see [`Cache::lead_or_join`](crate::Cache::lead_or_join).
pub enum LoadTicket<V, E> {
    /// No load was running: this caller loads, then reports with
    /// [`LoadLead::complete`] or [`LoadLead::finish`]. Dropping it releases
    /// the waiters with [`LoadError::Abandoned`].
    Lead(LoadLead<V, E>),
    /// A load was running: wait for it with [`LoadJoin::wait`].
    Join(LoadJoin<V, E>),
}

/// The leading caller's side of a load.
pub struct LoadLead<V, E> {
    result: oneshot::Sender<Result<V, E>>,
    shared: SharedLoad<V, E>,
    start: Arc<LoadStart>,
}

impl<V: CacheableValue, E: Send + Sync + 'static> LoadLead<V, E> {
    /// Waits until the start of the load is recorded: the generations of
    /// its tags, in a tier that keeps them (see [`crate::generations`]).
    /// They are read in the background from the moment the lead is handed
    /// out, and the store waits for them in any case; a caller that awaits
    /// this before asking its origin makes sure they were read before the
    /// origin was, so that an invalidation made by another process while
    /// the origin answers is never missed. Immediate for a load without
    /// tags.
    pub async fn ready(&self) {
        self.start.get().await;
    }

    /// Hands `value`, found stored already (another process loaded and
    /// stored it in a tier this cache shares), to the waiters without
    /// storing it again, so that its metadata stays the one it was stored
    /// with.
    pub fn hand_over(self, value: V) {
        self.start.mark_stored_elsewhere();
        self.complete(Ok(value));
    }

    /// Stores `value` under `key` (the load's key, or a variant of it) with
    /// metadata the caller computed, as the engine stores a load's result:
    /// not when the key or one of the load's tags was invalidated in this
    /// process since the load started, and, in a tier shared with other
    /// processes, only if none of the tag generations the load recorded
    /// moved ([`Backend::write_if_current`](crate::Backend::write_if_current)).
    /// For a caller that decides an entry's lifetime itself (the HTTP
    /// layer's standards mode). `Ok(false)`: not stored for one of those
    /// reasons, or because the generations could not be read.
    pub async fn store_entry(
        &self,
        key: &CacheKey,
        value: &V,
        meta: &EntryMeta,
    ) -> Result<bool, BackendError> {
        store_checked(&self.start, key, value, meta).await
    }

    /// Reports the result and waits until it is stored (or, for an error,
    /// until the waiters are released).
    pub async fn finish(self, result: Result<V, E>) -> Result<V, LoadError<E>> {
        let _ = self.result.send(result);
        self.shared.await
    }

    /// Reports the result without waiting: the store runs in a spawned task
    /// (or in the waiters, without a tokio runtime).
    pub fn complete(self, result: Result<V, E>) {
        let _ = self.result.send(result);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = self.shared;
            runtime.spawn(async move {
                let _ = shared.await;
            });
        }
    }
}

/// Stores `value` under `key` with `meta` for the load `start` records:
/// see [`LoadLead::store_entry`].
async fn store_checked<V: CacheableValue>(
    start: &LoadStart,
    key: &CacheKey,
    value: &V,
    meta: &EntryMeta,
) -> Result<bool, BackendError> {
    let Some(inner) = start.inner() else {
        return Ok(false);
    };
    if start.is_cancelled() {
        tracing::debug!(key = %key.log_id(), "load raced with an invalidation: result not stored");
        return Ok(false);
    }
    let stored = match start.get().await {
        Recorded::Untracked => inner.store(key, value, meta).await.map(|()| true),
        Recorded::Seen(expected) => inner.store_if_current(key, value, meta, expected).await,
        Recorded::Unknown => Ok(false),
    };
    if let Ok(false) = stored {
        inner.stats.stale_loads_discarded.bump();
        tracing::debug!(key = %key.log_id(), "a tag of the load was invalidated while it ran, or its generations are unknown: result not stored");
    }
    // An invalidation that landed while the value was written may have
    // removed the key before the write: undo it.
    if start.is_cancelled() && matches!(stored, Ok(true)) {
        let _ = inner.backend.remove(key).await;
        return Ok(false);
    }
    stored
}

/// A background refresh's way to store what it loaded itself, with
/// metadata it computed: see [`Cache::refresh_in_background_with`](crate::Cache::refresh_in_background_with).
/// It stores as [`LoadLead::store_entry`] does: not when the key or one of
/// the refresh's tags was invalidated in this process since it started,
/// and, in a tier shared with other processes, only if none of the tag
/// generations it recorded moved.
pub struct RefreshStore {
    start: Arc<OnceLock<Arc<LoadStart>>>,
}

impl RefreshStore {
    pub(crate) fn new(start: Arc<OnceLock<Arc<LoadStart>>>) -> RefreshStore {
        RefreshStore { start }
    }

    /// Stores `value` under `key` (the refreshed key, or a variant of it)
    /// with `meta`, checked against what the refresh recorded when it
    /// started. `Ok(false)`: not stored, because of an invalidation, or
    /// because the generations could not be read.
    pub async fn store_entry<V: CacheableValue>(
        &self,
        key: &CacheKey,
        value: &V,
        meta: &EntryMeta,
    ) -> Result<bool, BackendError> {
        match self.start.get() {
            Some(start) => store_checked(start, key, value, meta).await,
            // Set before the refresh is first polled; never seen unset.
            None => Ok(false),
        }
    }
}

/// A waiting caller's side of a load.
pub struct LoadJoin<V, E> {
    shared: SharedLoad<V, E>,
}

impl<V: CacheableValue, E: Send + Sync + 'static> LoadJoin<V, E> {
    /// The load's result.
    pub async fn wait(self) -> Result<V, LoadError<E>> {
        self.shared.await
    }
}

impl Inner {
    pub(crate) fn lead_or_join<V, E>(
        self: &Arc<Self>,
        key: &CacheKey,
        options: &EntryOptions,
    ) -> LoadTicket<V, E>
    where
        V: CacheableValue,
        E: Send + Sync + 'static,
    {
        let (sender, receiver) = oneshot::channel::<Result<V, E>>();
        let load = async move {
            match receiver.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(LoadError::Failed(Arc::new(error))),
                Err(_) => Err(LoadError::Abandoned),
            }
        };
        match self.start_flight(key, options, load, true) {
            Ok((shared, start)) => {
                start.read_in_background();
                LoadTicket::Lead(LoadLead {
                    result: sender,
                    shared,
                    start,
                })
            }
            Err((shared, _)) => LoadTicket::Join(LoadJoin { shared }),
        }
    }

    /// [`Inner::lead_or_join`], or, without `join`, always a lead that
    /// replaces (and cancels) a running load of `key`: a forced refresh led
    /// in place (`in_place.rs`).
    pub(crate) fn lead_with<V, E>(
        self: &Arc<Self>,
        key: &CacheKey,
        options: &EntryOptions,
        join: bool,
    ) -> LoadTicket<V, E>
    where
        V: CacheableValue,
        E: Send + Sync + 'static,
    {
        if join {
            return self.lead_or_join(key, options);
        }
        let (sender, receiver) = oneshot::channel::<Result<V, E>>();
        let load = async move {
            match receiver.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(LoadError::Failed(Arc::new(error))),
                Err(_) => Err(LoadError::Abandoned),
            }
        };
        match self.start_flight(key, options, load, false) {
            Ok((shared, start)) => {
                start.read_in_background();
                LoadTicket::Lead(LoadLead {
                    result: sender,
                    shared,
                    start,
                })
            }
            Err(_) => unreachable!("a load that does not join always starts"),
        }
    }
}

/// Runs a loader, turning a panic into [`LoadError::Panicked`].
pub(crate) async fn guarded<V, E, Fut>(load: Fut) -> Result<V, LoadError<E>>
where
    Fut: Future<Output = Result<V, E>>,
{
    match AssertUnwindSafe(load).catch_unwind().await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(LoadError::Failed(Arc::new(error))),
        Err(_) => {
            tracing::error!("cache loader panicked");
            Err(LoadError::Panicked)
        }
    }
}

impl Inner {
    /// Registers and returns a new load of `key`, with the record of its
    /// start (not read yet). When `join` is set and a load of the same
    /// types is already registered, returns that one as `Err` instead, with
    /// `load` unpolled. Without `join` (a forced refresh) a registered load
    /// is cancelled and replaced: it started earlier, so its result must not
    /// overwrite the new one.
    #[allow(clippy::type_complexity)]
    pub(crate) fn start_flight<V, E, Fut>(
        self: &Arc<Self>,
        key: &CacheKey,
        options: &EntryOptions,
        load: Fut,
        join: bool,
    ) -> Result<(SharedLoad<V, E>, Arc<LoadStart>), (SharedLoad<V, E>, Fut)>
    where
        V: CacheableValue,
        E: Send + Sync + 'static,
        Fut: Future<Output = Result<V, LoadError<E>>> + Send + 'static,
    {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = flights.get(key) {
            if join {
                if let Some(shared) = existing.shared.downcast_ref::<SharedLoad<V, E>>() {
                    self.stats.joins.bump();
                    return Err((shared.clone(), load));
                }
            } else {
                existing.cancelled.store(true, Ordering::SeqCst);
            }
        }
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let cancelled = Arc::new(AtomicBool::new(false));
        let policy = self.policy.with_overrides(options);
        let tags = options.tags().to_vec();
        let start = LoadStart::new(self, tags.clone(), Arc::clone(&cancelled));
        // A child of the span current now: the request that leads the load,
        // or the background refresh. Whoever awaits the load enters it.
        let span = spans::load(key);
        let flight = run_flight(
            Arc::downgrade(self),
            key.clone(),
            id,
            Arc::clone(&cancelled),
            policy,
            Arc::clone(&start),
            load,
            span.clone(),
        );
        let shared = match span.span() {
            None => flight.boxed().shared(),
            Some(span) => flight.instrument(span.clone()).boxed().shared(),
        };
        flights.insert(
            key.clone(),
            Flight {
                id,
                tags,
                cancelled,
                shared: Box::new(shared.clone()),
            },
        );
        Ok((shared, start))
    }

    fn finish_flight(&self, key: &CacheKey, id: u64) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(key).is_some_and(|flight| flight.id == id) {
            flights.remove(key);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_flight<V, E, Fut>(
    inner: Weak<Inner>,
    key: CacheKey,
    id: u64,
    cancelled: Arc<AtomicBool>,
    policy: hitbox_core::CachePolicy,
    start: Arc<LoadStart>,
    load: Fut,
    span: spans::Traced,
) -> Result<V, LoadError<E>>
where
    V: CacheableValue,
    Fut: Future<Output = Result<V, LoadError<E>>>,
{
    if let Some(inner) = inner.upgrade() {
        inner.stats.loads.bump();
    }
    // Before the loader runs: what a shared tier's check compares with.
    start.get().await;
    let result = load.await;
    // The cache may have been dropped while the loader ran; the waiters
    // still get their value.
    let Some(inner) = inner.upgrade() else {
        return result;
    };
    let result = inner.count_load_result(result);
    match &result {
        Ok(_) => span.finish("ok"),
        Err(error) => span.fail(load_error_type(error)),
    }
    if let Ok(value) = &result {
        if start.is_stored_elsewhere() {
            tracing::trace!(key = %key.log_id(), "load's value was stored by another process: not stored again");
        } else if cancelled.load(Ordering::SeqCst) {
            inner.stats.stale_loads_discarded.bump();
            tracing::debug!(key = %key.log_id(), "load raced with an invalidation: result not stored");
        } else {
            let meta = policy.entry_meta(inner.clock.now(), start.tags().to_vec());
            match start.get().await {
                Recorded::Untracked => {
                    let _ = inner.store(&key, value, &meta).await;
                }
                Recorded::Seen(expected) => {
                    if let Ok(false) = inner.store_if_current(&key, value, &meta, expected).await {
                        inner.stats.stale_loads_discarded.bump();
                        tracing::debug!(key = %key.log_id(), "a tag of the load was invalidated elsewhere while it ran: result not stored");
                    }
                }
                Recorded::Unknown => {
                    tracing::debug!(key = %key.log_id(), "the load's tag generations are unknown: result not stored");
                }
            }
            // An invalidation that landed while the value was being written
            // may have removed the key before the write: undo the write.
            if cancelled.load(Ordering::SeqCst) {
                inner.stats.stale_loads_discarded.bump();
                tracing::debug!(key = %key.log_id(), "load raced with an invalidation: stored result removed");
                let _ = inner.tier_remove(&key).await;
            }
        }
    }
    inner.finish_flight(&key, id);
    result
}
