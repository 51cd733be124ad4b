//! Purges through the engine: [`Cache::purge`] and its shorthands.
//!
//! The engine's part is small: it refuses an empty prefix, cancels its own
//! loads of what the purge matches (their results are not stored, as for
//! [`Cache::delete`]), stamps a soft purge with its clock's time, and hands
//! the [`Purge`] to its tier; see [`crate::purge`] for what tiers do. It
//! also observes it: a `hitbox.purge` span around the tier purges (each in
//! its `hitbox.tier.purge`), and the purge counters of [`Cache::stats`]
//! (`purges`, `purged_entries`, ...), exported as `hitbox_purges_total`
//! and `hitbox_purged_entries_total` with the `metrics` feature.

use hitbox_core::{CacheKey, Tag};

use super::Cache;
use crate::error::BackendError;
use crate::observe::spans;
use crate::tiers::purge::{Purge, PurgeMode, PurgeTarget};

impl Cache {
    /// Purges what `target` matches, in every tier: `PurgeMode::Hard`
    /// removes the entries, `PurgeMode::Soft` marks them stale (served
    /// within their stale windows, counted from now on the cache's clock,
    /// while one load refreshes them; see [`crate::purge`]). Loads of
    /// matching keys running in this cache do not store their results.
    /// Returns how many entries were purged (per tier, the larger count).
    ///
    /// Unlike reads and stores, a purge reports a failed tier as an error
    /// (and counts it): the caller must know the purge did not happen
    /// everywhere, and may retry it. An empty prefix is refused
    /// ([`BackendError::Refused`]), and a tier that cannot list its keys
    /// answers [`BackendError::Unsupported`] to a purge by prefix (or a
    /// soft one by tag).
    ///
    /// Each call counts once in [`Cache::stats`] (`purges`, by kind and
    /// mode, `purge_errors`, and the entries in `purged_entries`), and
    /// runs in a `hitbox.purge` span; see the crate documentation,
    /// "Observability".
    ///
    /// ```
    /// use std::time::Duration;
    /// use hitbox_backend::{Cache, MemoryBackend, PurgeMode, PurgeTarget};
    /// use hitbox_core::{CacheKey, CachePolicy, ManualClock};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let clock = ManualClock::new();
    /// let policy = CachePolicy::new(Duration::from_secs(60)).stale_while_revalidate(Duration::from_secs(30));
    /// let cache = Cache::builder(MemoryBackend::with_clock(clock.clone()))
    ///     .clock(clock.clone())
    ///     .policy(policy)
    ///     .build();
    /// let users = CacheKey::builder("users").part("tenant", "acme");
    /// let ada = users.clone().part("id", "1").build();
    /// cache.set(&ada, &"Ada".to_string()).await.unwrap();
    ///
    /// // Soft: still served, but stale (a loader would refresh it).
    /// cache.purge(PurgeTarget::Key(ada.clone()), PurgeMode::Soft).await.unwrap();
    /// let entry = cache.get_entry::<String>(&ada).await.unwrap();
    /// assert!(entry.freshness.is_stale());
    ///
    /// // Hard, by prefix: gone.
    /// let purged = cache.purge_prefix(&users.key_prefix(), PurgeMode::Hard).await.unwrap();
    /// assert_eq!(purged, 1);
    /// assert_eq!(cache.get::<String>(&ada).await, None);
    /// # });
    /// ```
    pub async fn purge(&self, target: PurgeTarget, mode: PurgeMode) -> Result<u64, BackendError> {
        let span = spans::purge(&target, mode);
        let result = span.run(self.purge_in_tiers(&target, mode)).await;
        span.purged(&result);
        self.inner.stats.purge_finished(&target, mode, &result);
        match &result {
            Ok(purged) => tracing::debug!(kind = target.kind(), %mode, purged, "cache purged"),
            Err(error) => tracing::warn!(kind = target.kind(), %mode, %error, "cache purge failed"),
        }
        result
    }

    /// What [`Cache::purge`] does inside its span.
    async fn purge_in_tiers(&self, target: &PurgeTarget, mode: PurgeMode) -> Result<u64, BackendError> {
        if matches!(target, PurgeTarget::Prefix(prefix) if prefix.is_empty()) {
            return Err(BackendError::Refused {
                tier: "engine".into(),
                reason: "a purge prefix must not be empty",
            });
        }
        self.inner.cancel_flights(|key, tags| target.matches(key, tags));
        let purge = Purge::new(target.clone(), mode, self.inner.clock.now());
        tracing::debug!(kind = target.kind(), %mode, "cache purge");
        let result = self.inner.tier_purge(&purge).await;
        if let Err(error) = &result {
            self.inner.stats.tier_error(error.tier());
        }
        result
    }

    /// [`Cache::purge`] of the entry under `key`.
    pub async fn purge_key(&self, key: &CacheKey, mode: PurgeMode) -> Result<u64, BackendError> {
        self.purge(PurgeTarget::Key(key.clone()), mode).await
    }

    /// [`Cache::purge`] of every entry whose key starts with `prefix`
    /// (build it with
    /// [`KeyBuilder::key_prefix`](hitbox_core::KeyBuilder::key_prefix), so
    /// that it ends at a part boundary).
    pub async fn purge_prefix(&self, prefix: &str, mode: PurgeMode) -> Result<u64, BackendError> {
        self.purge(PurgeTarget::Prefix(prefix.to_owned()), mode).await
    }

    /// [`Cache::purge`] of every entry tagged `tag`.
    pub async fn purge_tag(&self, tag: &Tag, mode: PurgeMode) -> Result<u64, BackendError> {
        self.purge(PurgeTarget::Tag(tag.clone()), mode).await
    }
}
