//! One load per key across instances: what a miss does with the layer's
//! [`DistributedLock`] before it asks the origin.
//!
//! It runs only for the request this process chose to lead the load of a
//! key missing in every tier, so one process makes one attempt per key,
//! however many of its requests want it:
//!
//! 1. Take the lock. Taken: look at the shared tier once more (another
//!    instance may have stored the response and released the lock since
//!    this request missed), then load, holding it.
//! 2. Held elsewhere: the answer is already listening for the holder's
//!    announcement, so what the tier is checked for next cannot slip
//!    between the check and the wait. Found: served.
//! 3. Wait, until the lock timeout at most. *Filled*: serve what the
//!    shared tier holds for this key (never anything from the
//!    announcement). *Empty*: the holder stored nothing: ask the origin.
//!    *Free* (the holder went away, its lease ran out): back to 1, to take
//!    over. The wait runs out, or the lock cannot be reached: ask the
//!    origin, without the lock.

use hitbox_backend::CachedEntry;
use hitbox_backend::lock::{DistributedLock, FillEvent, LoadEnd, LockAttempt, LockHold};
use hitbox_core::CacheKey;
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use crate::layer::LayerState;
use crate::policy::{HttpPolicy, Worth};
use crate::response::HitResponse;

/// What a miss does after it went through the lock.
pub(crate) enum Coordinated {
    /// Ask the origin: holding the lock, or without it.
    Load(Option<Box<dyn LockHold>>),
    /// Another instance stored the response: serve it, at `age`.
    Found(CachedEntry<HitResponse>, u64),
}

/// See the [module documentation](self).
pub(crate) async fn coordinate<P: HttpPolicy>(
    shared: &LayerState<P>,
    lock: &dyn DistributedLock,
    key: &CacheKey,
    context: &P::Context,
    request: &HeaderMap,
) -> Coordinated {
    let deadline = Instant::now() + shared.lock_timeout;
    loop {
        let attempt = match tokio::time::timeout_at(deadline, lock.acquire(key)).await {
            Ok(Ok(attempt)) => attempt,
            Ok(Err(error)) => {
                tracing::debug!(key = %key.log_id(), %error, "distributed lock unavailable: loading without it");
                return Coordinated::Load(None);
            }
            Err(_) => {
                tracing::debug!(key = %key.log_id(), "distributed lock too slow: loading without it");
                return Coordinated::Load(None);
            }
        };
        match attempt {
            LockAttempt::Acquired(hold) => {
                if let Some((entry, age)) = usable(shared, key, context, request).await {
                    crate::store::release(Some(hold), LoadEnd::Filled);
                    return Coordinated::Found(entry, age);
                }
                return Coordinated::Load(Some(hold));
            }
            LockAttempt::HeldElsewhere(mut watch) => {
                if let Some((entry, age)) = usable(shared, key, context, request).await {
                    return Coordinated::Found(entry, age);
                }
                match watch.wait(deadline).await {
                    FillEvent::Filled => {
                        return match usable(shared, key, context, request).await {
                            Some((entry, age)) => Coordinated::Found(entry, age),
                            None => Coordinated::Load(None),
                        };
                    }
                    FillEvent::Empty => return Coordinated::Load(None),
                    FillEvent::Free => {}
                    FillEvent::TimedOut => {
                        tracing::debug!(key = %key.log_id(), "distributed lock wait ran out: loading without it");
                        return Coordinated::Load(None);
                    }
                }
            }
        }
    }
}

/// What the cache holds for `key` that may answer `request` now, with its
/// age: a whole response of the request's variant that is fresh (or stale
/// but allowed).
async fn usable<P: HttpPolicy>(
    shared: &LayerState<P>,
    key: &CacheKey,
    context: &P::Context,
    request: &HeaderMap,
) -> Option<(CachedEntry<HitResponse>, u64)> {
    let entry = shared.cache.get_entry::<HitResponse>(key).await?;
    let value = entry.value();
    if value.response.status == StatusCode::PARTIAL_CONTENT || !value.selects(request) {
        return None;
    }
    let now = shared.cache.clock().now();
    match shared
        .policy
        .worth(context, value, entry.meta(), entry.freshness, request, now)
    {
        Some(Worth::Fresh { age, .. } | Worth::StaleAllowed { age, .. }) => Some((entry, age)),
        _ => None,
    }
}
