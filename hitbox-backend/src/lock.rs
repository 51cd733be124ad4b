//! The hook a caching layer uses to share one load of a key across
//! processes: a lock per key, and a way to wait for the holder's result.
//!
//! The engine's single-flight ([`Cache::lead_or_join`](crate::Cache::lead_or_join))
//! keeps one process to one load per key. [`DistributedLock`] is what the
//! layers above use to keep *several* processes to one: the process whose
//! load leads tries the lock; the winner loads and stores, then says so;
//! the others wait for that word and read the shared tier. The trait lives
//! here, below both, so that a tier crate (Redis) can implement it and an
//! HTTP layer can use it without either depending on the other.
//!
//! The contract:
//!
//! - [`DistributedLock::acquire`] answers quickly (an implementation bounds
//!   its own commands) and never blocks on the holder.
//! - A caller that loses gets a [`FillWatch`] that is *already listening*:
//!   whatever the holder announces after `acquire` returned is seen. The
//!   caller should check the shared tier once after it lost, for a fill
//!   announced before it started listening.
//! - An announcement carries no data: a waiter only ever serves what the
//!   shared tier holds for its own key.
//! - A [`LockHold`] is kept alive (its lease renewed) while it exists, and
//!   ended with [`LockHold::release`]. One dropped without it (its task
//!   aborted) is released as [`FillEvent::Free`]; one whose process died
//!   lapses when its lease runs out.

use std::future::Future;
use std::pin::Pin;

use hitbox_core::CacheKey;
use tokio::time::Instant;

use crate::error::BackendError;

/// The boxed future of a lock operation.
pub type LockFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lock per cache key shared by several processes; see the
/// [module documentation](self).
pub trait DistributedLock: Send + Sync + 'static {
    /// Tries to take the lock of `key`: held by this caller now, or by
    /// another, in which case the answer listens for that holder's outcome.
    /// An error (the lock's store cannot be reached in time) means: go on
    /// without the lock.
    fn acquire<'a>(&'a self, key: &'a CacheKey) -> LockFuture<'a, Result<LockAttempt, BackendError>>;
}

/// What [`DistributedLock::acquire`] found.
pub enum LockAttempt {
    /// This caller holds the lock: it loads, stores, then releases.
    Acquired(Box<dyn LockHold>),
    /// Another caller holds it; the watch is listening for its outcome.
    HeldElsewhere(Box<dyn FillWatch>),
}

impl std::fmt::Debug for LockAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockAttempt::Acquired(_) => f.write_str("Acquired"),
            LockAttempt::HeldElsewhere(_) => f.write_str("HeldElsewhere"),
        }
    }
}

/// How a holder's load ended, as it tells the waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadEnd {
    /// The result was stored: waiters read the shared tier.
    Filled,
    /// Nothing was stored (not storable, or the origin failed): waiters
    /// load for themselves.
    Empty,
}

/// A lock held: its lease is renewed while it exists.
pub trait LockHold: Send + 'static {
    /// Releases the lock and announces `end` to the waiters. Dropping a
    /// hold instead releases it in the background as [`FillEvent::Free`].
    fn release(self: Box<Self>, end: LoadEnd) -> LockFuture<'static, ()>;
}

/// What a waiter learned; see [`FillWatch::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FillEvent {
    /// The holder stored its result: read the shared tier.
    Filled,
    /// The holder stored nothing: load without the lock.
    Empty,
    /// The lock is free without a result (the holder went away, or its
    /// lease ran out): try to take it.
    Free,
    /// The deadline passed first.
    TimedOut,
}

/// A waiter's side: listens for the outcome of another holder's load.
/// Dropping it stops listening.
pub trait FillWatch: Send + 'static {
    /// Waits for the holder's outcome, or for `deadline`.
    fn wait(&mut self, deadline: Instant) -> LockFuture<'_, FillEvent>;
}
