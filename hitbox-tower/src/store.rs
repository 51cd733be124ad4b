//! Storing a loaded response, and where its variants live.
//!
//! A response is stored under the key its request was looked up with: the
//! primary key of the request (its URL, or a rule's key), or, when the
//! response stored there varies and this request selects another variant,
//! the variant key ([`variant_key`]). It is stored by the engine, through
//! the single-flight the request leads (rules: the flight's options give
//! its lifetime), or directly with the metadata its headers give
//! (standards mode), after which the flight's waiters get it. A direct
//! store is checked as the engine's own is: refused when the key or its
//! tags were invalidated while the load ran, here or, through a shared
//! tier's tag generations, in another process ([`LoadLead::store_entry`]),
//! and so is a background refresh's ([`RefreshStore::store_entry`]).
//! A load that holds the distributed lock releases it once the store is
//! done, telling the other instances whether there is something to read.

use std::sync::Arc;

use hitbox_backend::lock::{LoadEnd, LockHold};
use hitbox_backend::{Cache, LoadLead, RefreshStore};
use hitbox_core::{CacheKey, EntryMeta, KeyBuilder};
use http::header::{self, HeaderMap, HeaderName};

use crate::pass::HitForPass;
use crate::response::CachedResponse;
use crate::rfc9111::vary;

/// Why a response was not stored; what waiters of its load are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Uncacheable {
    /// The response is not storable (status, headers, rule).
    #[error("the response is not storable")]
    NotStorable,
    /// The body grew past the rule's limit.
    #[error("the body is larger than the limit")]
    TooLarge,
    /// The body did not pass the rule's response-body predicate.
    #[error("the body did not pass the rule's predicate")]
    BodyRefused,
    /// The body carried trailers, which are not stored.
    #[error("the body has trailers")]
    Trailers,
    /// The origin failed.
    #[error("the origin failed")]
    OriginFailed,
}

/// The key of one variant of a response that varies: the primary key, and
/// the request's values of the fields its `Vary` names. Digested when the
/// primary key is, or when it names credentials.
pub(crate) fn variant_key(primary: &CacheKey, names: &[HeaderName], request: &HeaderMap) -> CacheKey {
    let mut key = KeyBuilder::new("vary");
    key.push("of", Some(primary.as_str().as_bytes()));
    for name in names {
        key.push(name.as_str(), vary::normalised(request, name).as_deref());
    }
    if primary.is_digested()
        || names
            .iter()
            .any(|n| n == header::COOKIE || n == header::AUTHORIZATION)
    {
        key.mark_sensitive();
    }
    key.build()
}

/// Where a loaded response goes.
pub(crate) struct Store {
    pub cache: Cache,
    pub passes: Arc<HitForPass>,
    pub key: CacheKey,
    /// The single-flight this response answers, if it leads one.
    pub lead: Option<LoadLead<CachedResponse, Uncacheable>>,
    /// The metadata to store it with directly; `None`: the lead's flight
    /// stores it.
    pub meta: Option<EntryMeta>,
    /// The distributed lock this load holds, released once it is stored.
    pub hold: Option<Box<dyn LockHold>>,
}

impl Store {
    /// Whether anything will be stored: directly, or through a flight.
    pub fn stores(&self) -> bool {
        self.meta.is_some() || self.lead.is_some()
    }

    /// Stores nothing: the waiters are released to go to the origin, and
    /// the key is remembered as uncacheable for a while.
    pub fn give_up(self, reason: Uncacheable) {
        tracing::debug!(key = %self.key.log_id(), %reason, "response not stored");
        if let Some(lead) = self.lead {
            self.passes.remember(&self.key);
            lead.complete(Err(reason));
        }
        release(self.hold, LoadEnd::Empty);
    }

    /// Stores `value` (in a task of its own when it is stored directly)
    /// and hands it to the waiters.
    pub fn finish(self, value: CachedResponse) {
        if self.meta.is_none() && self.hold.is_none() {
            if let Some(lead) = self.lead {
                lead.complete(Ok(value));
            }
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let Store {
                cache,
                key,
                lead,
                meta,
                hold,
                ..
            } = self;
            let stored = match (meta, lead) {
                (Some(meta), lead) => {
                    let stored = put_checked(&cache, lead.as_ref(), &key, &value, &meta).await;
                    if let Some(lead) = lead {
                        lead.complete(Ok(value));
                    }
                    stored
                }
                // The flight stores it; it ends once it did.
                (None, Some(lead)) => lead.finish(Ok(value)).await.is_ok(),
                (None, None) => false,
            };
            if let Some(hold) = hold {
                let end = if stored { LoadEnd::Filled } else { LoadEnd::Empty };
                hold.release(end).await;
            }
        });
    }
}

/// Releases a distributed lock with `end`, in the background.
pub(crate) fn release(hold: Option<Box<dyn LockHold>>, end: LoadEnd) {
    let Some(hold) = hold else {
        return;
    };
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(hold.release(end));
    }
}

/// [`put`], checked against what the load `lead` recorded when it started
/// when there is one ([`LoadLead::store_entry`]).
pub(crate) async fn put_checked(
    cache: &Cache,
    lead: Option<&LoadLead<CachedResponse, Uncacheable>>,
    key: &CacheKey,
    value: &CachedResponse,
    meta: &EntryMeta,
) -> bool {
    let Some(lead) = lead else {
        return put(cache, key, value, meta).await;
    };
    match lead.store_entry(key, value, meta).await {
        Ok(stored) => stored,
        Err(error) => {
            tracing::debug!(%error, key = %key.log_id(), "response not stored");
            false
        }
    }
}

/// [`put`] for a background refresh, checked against what the refresh
/// recorded when it started ([`RefreshStore::store_entry`]): a refresh that
/// raced an invalidation, here or in another process, stores nothing.
pub(crate) async fn put_refreshed(
    refresh: &RefreshStore,
    key: &CacheKey,
    value: &CachedResponse,
    meta: &EntryMeta,
) -> bool {
    match refresh.store_entry(key, value, meta).await {
        Ok(stored) => stored,
        Err(error) => {
            tracing::debug!(%error, key = %key.log_id(), "refreshed response not stored");
            false
        }
    }
}

/// Stores `value` under `key` with `meta`; a tier's failure is logged, and
/// is a miss later.
pub(crate) async fn put(cache: &Cache, key: &CacheKey, value: &CachedResponse, meta: &EntryMeta) -> bool {
    match cache.set_entry(key, value, meta).await {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%error, key = %key.log_id(), "response not stored");
            false
        }
    }
}
