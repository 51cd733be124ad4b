//! Loads that run inside the call: [`Cache::try_get_or_load_in_place`].
//!
//! [`Cache::try_get_or_insert_with`] hands its loader to the single-flight
//! machinery, which may drive it from another caller's task or from a
//! background refresh, so the loader must be `Send + 'static`. A memoized
//! function body (what `#[cached]` wraps) borrows its arguments, `&self`
//! among them, and so cannot be one. This file serves those: the caller
//! leads the load itself through [`Cache::lead_or_join`] and runs the body
//! in its own task, while the callers that miss the same key meanwhile wait
//! for it. Everything else (what is stored, with which metadata, and that a
//! load racing an invalidation does not store its result) is the engine's
//! usual path.
//!
//! What differs, because the body cannot outlive the call:
//!
//! - A stale entry (inside its stale-while-revalidate window) is refreshed
//!   in the call, not in the background; it is still served when the
//!   refresh fails, like an entry inside its stale-if-error window.
//! - The body's error is the caller's own (`E` need not be `Clone` or
//!   shared): the callers that waited on a failed or abandoned load run the
//!   body themselves, and do not store what they get.

use std::future::Future;

use hitbox_core::{CacheKey, EntryOptions, Freshness, Strategy};

use super::{Cache, Lookup};
use crate::codec::format::CacheableValue;
use crate::engine::flight::LoadTicket;
use crate::observe::Outcome;

/// The error a load led in place reports to its waiters: they only learn
/// that it failed (the caller keeps the error itself).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InPlaceFailed;

impl Cache {
    /// The value under `key`, or the result of `load`, run in this call and
    /// stored with `options` when it is `Ok`. Concurrent callers that miss
    /// `key` wait for this call's load instead of running their own.
    ///
    /// Unlike [`Cache::try_get_or_insert_with_options`], `load` may borrow
    /// (it need be neither `Send` nor `'static`) and its error is returned
    /// as it is. The price: a stale entry is refreshed in the call rather
    /// than in the background, and the callers that waited on a load that
    /// failed run `load` themselves. The [`Strategy`] of `options` applies
    /// as everywhere else. This is what `#[cached]` (feature `macros`)
    /// expands to.
    ///
    /// ```
    /// use hitbox_backend::{Cache, MemoryBackend};
    /// use hitbox_core::{CacheKey, EntryOptions};
    ///
    /// struct Repo { name: String }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(MemoryBackend::new());
    /// let repo = Repo { name: "ada".into() };
    /// let key = CacheKey::builder("names").part("id", "1").build();
    /// // The load borrows `repo`: no clone, no 'static.
    /// let name: Result<String, std::io::Error> = cache
    ///     .try_get_or_load_in_place(&key, &EntryOptions::new(), async { Ok(repo.name.clone()) })
    ///     .await;
    /// assert_eq!(name.unwrap(), "ada");
    /// assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("ada"));
    /// # });
    /// ```
    pub async fn try_get_or_load_in_place<V, E, Fut>(
        &self,
        key: &CacheKey,
        options: &EntryOptions,
        load: Fut,
    ) -> Result<V, E>
    where
        V: CacheableValue,
        Fut: Future<Output = Result<V, E>>,
    {
        self.get_or_load_in_place(key, options, load, |_| true).await
    }

    /// [`Cache::try_get_or_load_in_place`], serving a stale entry in place
    /// of only those errors `serve_stale_on` accepts: "there is nothing"
    /// (a `None`, an absent row) is not a failure to hide behind an old
    /// value.
    pub(crate) async fn get_or_load_in_place<V, E, Fut>(
        &self,
        key: &CacheKey,
        options: &EntryOptions,
        load: Fut,
        serve_stale_on: fn(&E) -> bool,
    ) -> Result<V, E>
    where
        V: CacheableValue,
        Fut: Future<Output = Result<V, E>>,
    {
        match options.strategy_of() {
            Strategy::UseCache => {}
            Strategy::Bypass => {
                tracing::debug!(key = %key.log_id(), "cache bypass");
                self.inner.stats.outcome(Outcome::Bypass);
                return self.load_unshared(load).await;
            }
            Strategy::Invalidate => {
                let _ = self.delete(key).await;
                self.inner.stats.outcome(Outcome::Bypass);
                return self.load_unshared(load).await;
            }
            Strategy::Refresh => {
                tracing::debug!(key = %key.log_id(), "cache refresh");
                let ticket = self.inner.lead_with::<V, InPlaceFailed>(key, options, false);
                return self.lead_in_place(ticket, load, None, serve_stale_on).await;
            }
        }

        let fallback = match self.lookup::<V>(key).await {
            Lookup::Found(entry) => match entry.freshness {
                Freshness::Fresh => {
                    self.inner.stats.outcome(Outcome::Hit);
                    tracing::trace!(key = %key.log_id(), outcome = "hit", "cache load in place");
                    return Ok(entry.value);
                }
                Freshness::Stale | Freshness::StaleIfError => Some(entry.value),
                Freshness::Expired => None,
            },
            Lookup::Miss => None,
        };
        tracing::debug!(key = %key.log_id(), outcome = "miss", "cache load in place");
        let ticket = self.inner.lead_or_join::<V, InPlaceFailed>(key, options);
        self.lead_in_place(ticket, load, fallback, serve_stale_on).await
    }

    async fn load_unshared<V, E, Fut>(&self, load: Fut) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        self.inner.stats.loads.bump();
        let result = load.await;
        self.inner.stats.load_finished(result.is_ok());
        result
    }

    async fn lead_in_place<V, E, Fut>(
        &self,
        ticket: LoadTicket<V, InPlaceFailed>,
        load: Fut,
        fallback: Option<V>,
        serve_stale_on: fn(&E) -> bool,
    ) -> Result<V, E>
    where
        V: CacheableValue,
        Fut: Future<Output = Result<V, E>>,
    {
        // A caller that waited on another's load is `collapsed`, unless
        // that load failed and it loaded itself.
        let mut collapsed = false;
        let result = match ticket {
            LoadTicket::Lead(lead) => {
                // The tags' generations are read before the body runs.
                lead.ready().await;
                match load.await {
                    // The flight stores the value (unless an invalidation
                    // raced it) and hands it back.
                    Ok(value) => match lead.finish(Ok(value)).await {
                        Ok(value) => Ok(value),
                        Err(_) => unreachable!("a load reported as Ok resolves to Ok"),
                    },
                    Err(error) => {
                        lead.complete(Err(InPlaceFailed));
                        Err(error)
                    }
                }
            }
            LoadTicket::Join(join) => match join.wait().await {
                Ok(value) => {
                    collapsed = true;
                    Ok(value)
                }
                // The leader failed or gave up: its error is not ours to
                // return, so run the body here, without storing it.
                Err(_) => self.load_unshared(load).await,
            },
        };
        let (result, outcome) = match (result, fallback) {
            (Err(error), Some(stale)) if serve_stale_on(&error) => {
                self.inner.stats.stale_if_error_hits.bump();
                tracing::warn!("load in place failed, serving the stale entry");
                (Ok(stale), Outcome::Stale)
            }
            (Ok(value), _) if collapsed => (Ok(value), Outcome::Collapsed),
            (Ok(value), _) => (Ok(value), Outcome::Miss),
            (Err(error), _) => (Err(error), Outcome::Error),
        };
        self.inner.stats.outcome(outcome);
        result
    }
}
