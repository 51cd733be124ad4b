//! An L1 in front of the remote tier, following the protocol's rules for
//! it.
//!
//! hitbox-backend's composition (`l1.compose(l2)`) refills its L1 from the
//! value's own metadata and knows nothing of cachekit.io. The service has
//! rules of its own for an L1 (never keep a stale answer, keep a fresh one
//! for at most `Fresh-For`, report the L1's counters), and this module is
//! the composition that follows them. It sits on top of `backend`, whose
//! freshness-aware read and counters it uses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hitbox_backend::{Backend, BackendFuture, TierStats};
use hitbox_core::{CacheKey, Tag};

use crate::backend::{CachekitBackend, L1Counters, L1Status};
use crate::key::wire_key;

/// An in-process tier (moka, memory...) in front of [`CachekitBackend`],
/// with the remote tier's freshness rules:
///
/// - an answer the service marks stale is returned but never copied into
///   the L1;
/// - a fresh answer is copied for `min(local_ttl, X-CacheKit-Fresh-For)`,
///   and not at all when `Fresh-For` is 0;
/// - every remote request carries `X-CacheKit-L1-Status: miss` and the
///   L1's counters (`X-CacheKit-L1-Hits`, `-L2-Hits`, `-Misses`,
///   `-L1-Hit-Rate`).
///
/// [`CompositionBackend`](hitbox_backend::CompositionBackend) refills its
/// L1 from the value's own metadata instead, which agrees with the service
/// when the value's windows were sent with it (see [`CachekitBackend`]);
/// this type also honours the service's `Fresh-For`, for entries whose TTL
/// was changed on the service.
///
/// Writes go to the L1 (for at most `local_ttl`) and to the remote tier;
/// removals to both; tag invalidation reaches the L1 only (the API has no
/// tags).
///
/// ```
/// use std::time::Duration;
/// use hitbox_backend::{Cache, MemoryBackend};
/// use hitbox_cachekit::{CachekitBackend, CachekitTiered};
///
/// let remote = CachekitBackend::builder().api_key("ck_live_example").build().unwrap();
/// // `hitbox_moka::MokaBackend` in practice.
/// let tiered = CachekitTiered::new(MemoryBackend::new(), &remote, Duration::from_secs(60));
/// assert_eq!(tiered.counters().snapshot(), (0, 0, 0));
/// let cache = Cache::new(tiered);
/// # let _ = cache;
/// ```
pub struct CachekitTiered<L1> {
    l1: L1,
    remote: CachekitBackend,
    counters: Arc<L1Counters>,
    local_ttl: Duration,
    label: String,
}

impl<L1: Backend> CachekitTiered<L1> {
    /// `l1` in front of `remote`; the L1 keeps entries for at most
    /// `local_ttl`.
    pub fn new(l1: L1, remote: &CachekitBackend, local_ttl: Duration) -> Self {
        let counters = Arc::new(L1Counters::new());
        let label = format!("{}+{}", l1.label(), remote.label());
        CachekitTiered {
            remote: remote.with_l1_counters(counters.clone()),
            l1,
            counters,
            local_ttl,
            label,
        }
    }

    /// The L1.
    pub fn l1(&self) -> &L1 {
        &self.l1
    }

    /// The remote tier (sending this composition's counters).
    pub fn remote(&self) -> &CachekitBackend {
        &self.remote
    }

    /// The counters sent to the service.
    pub fn counters(&self) -> &L1Counters {
        &self.counters
    }
}

impl<L1: Backend> Backend for CachekitTiered<L1> {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            match self.l1.read(key).await {
                Ok(Some(bytes)) => {
                    self.counters.l1_hit();
                    return Ok(Some(bytes));
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, "L1 read failed; asking cachekit"),
            }
            let entry = self
                .remote
                .read_as(&wire_key(key.as_str()), L1Status::Miss)
                .await
                .map_err(|e| e.into_backend_error(self.remote.label()))?;
            let Some(entry) = entry else {
                self.counters.miss();
                return Ok(None);
            };
            self.counters.l2_hit();
            if let Some(lifetime) = entry.l1_lifetime(self.local_ttl)
                && let Err(error) = self.l1.write(key, entry.bytes.clone(), lifetime, &[]).await
            {
                tracing::debug!(%error, "L1 backfill failed");
            }
            Ok(Some(entry.bytes))
        })
    }

    fn write<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let local = self
                .l1
                .write(key, value.clone(), ttl.min(self.local_ttl), tags)
                .await;
            let remote = self.remote.write(key, value, ttl, tags).await;
            remote.and(local)
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let local = self.l1.remove(key).await;
            let remote = self.remote.remove(key).await;
            Ok(remote? | local?)
        })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        self.l1.invalidate_tag(tag)
    }

    fn exists<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            if matches!(self.l1.exists(key).await, Ok(true)) {
                return Ok(true);
            }
            self.remote.exists(key).await
        })
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn has_breaker(&self) -> bool {
        true
    }

    fn max_entry_size(&self) -> usize {
        self.l1.max_entry_size().min(self.remote.max_entry_size())
    }

    fn tier_stats(&self) -> Vec<TierStats> {
        let mut stats = self.l1.tier_stats();
        stats.extend(self.remote.tier_stats());
        stats
    }
}
