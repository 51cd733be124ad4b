//! Reading many keys at once: [`Cache::get_many`] and
//! [`Cache::get_many_entries`], over [`Backend::read_many`](crate::Backend::read_many),
//! so that a tier that can answer many keys in one round trip (Redis
//! `MGET`, memcached's multi-key `get`) does. The entity cache
//! ([`crate::entity`]) loads many ids through these.

use std::sync::Arc;

use hitbox_core::{CacheKey, Freshness};

use super::memo::Decoded;
use super::{Cache, CachedEntry};
use crate::codec::format::CacheableValue;
use crate::observe::Outcome;
use crate::observe::spans;

impl Cache {
    /// The entries under `keys`, in order, whatever their freshness (like
    /// [`Cache::get_entry`], for each key), read in one
    /// [`read_many`](crate::Backend::read_many) of the tier. Counts
    /// nothing. A failed read leaves every entry out (`None`), logged and
    /// counted as a tier error, as a failed [`Cache::get_entry`] does.
    ///
    /// ```
    /// use hitbox_backend::{Cache, MemoryBackend};
    /// use hitbox_core::{CacheKey, Freshness};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = Cache::new(MemoryBackend::new());
    /// let keys: Vec<CacheKey> = (1..=3).map(|id| CacheKey::builder("n").part("id", id.to_string()).build()).collect();
    /// cache.set(&keys[1], &2u32).await.unwrap();
    /// let found = cache.get_many_entries::<u32>(&keys).await;
    /// assert!(found[0].is_none() && found[2].is_none());
    /// let two = found[1].as_ref().unwrap();
    /// assert_eq!((*two.value(), two.freshness), (2, Freshness::Fresh));
    /// # });
    /// ```
    pub async fn get_many_entries<V>(&self, keys: &[CacheKey]) -> Vec<Option<CachedEntry<V>>>
    where
        V: CacheableValue + Send + Sync + 'static,
    {
        if keys.is_empty() {
            return Vec::new();
        }
        let span = spans::lookup_many(keys.len());
        let found = match span.run(self.inner.tier_read_many(keys)).await {
            Ok(found) if found.len() == keys.len() => found,
            Ok(found) => {
                tracing::warn!(
                    keys = keys.len(),
                    answered = found.len(),
                    "tier answered read_many with the wrong count, treated as misses"
                );
                span.finish("miss");
                return keys.iter().map(|_| None).collect();
            }
            Err(error) => {
                self.inner.stats.tier_error(error.tier());
                tracing::warn!(keys = keys.len(), %error, "cache read of many keys failed, treated as misses");
                span.fail(error.kind());
                return keys.iter().map(|_| None).collect();
            }
        };
        span.finish("ok");
        let now = self.inner.clock.now();
        keys.iter()
            .zip(found)
            .map(|(key, bytes)| {
                let bytes = bytes?;
                if let Some(memo) = &self.inner.memo
                    && let Some(decoded) = memo.get::<V>(&bytes)
                {
                    let freshness = decoded.meta.freshness(now);
                    return Some(CachedEntry { decoded, freshness });
                }
                let raw = self.decode_envelope(key, bytes.clone()).ok()?;
                let value = self.decode_value::<V>(key, &raw).ok()?;
                let decoded = Arc::new(Decoded {
                    meta: raw.meta,
                    value,
                });
                if let Some(memo) = &self.inner.memo {
                    memo.put(&bytes, &decoded);
                }
                let freshness = decoded.meta.freshness(now);
                Some(CachedEntry { decoded, freshness })
            })
            .collect()
    }

    /// The values under `keys`, in order, by the rules of [`Cache::get`]
    /// for each (fresh, or stale inside the stale-while-revalidate window;
    /// no refresh is started), read in one
    /// [`read_many`](crate::Backend::read_many) of the tier. Counts a hit,
    /// stale hit or miss per key.
    pub async fn get_many<V>(&self, keys: &[CacheKey]) -> Vec<Option<V>>
    where
        V: CacheableValue + Send + Sync + 'static,
    {
        let entries = self.get_many_entries::<V>(keys).await;
        entries
            .into_iter()
            .map(|entry| match entry {
                Some(entry) if entry.freshness == Freshness::Fresh => {
                    self.inner.stats.outcome(Outcome::Hit);
                    Some(entry.into_value())
                }
                Some(entry) if entry.freshness == Freshness::Stale => {
                    self.inner.stats.outcome(Outcome::Stale);
                    Some(entry.into_value())
                }
                _ => {
                    self.inner.stats.outcome(Outcome::Miss);
                    None
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hitbox_core::{CachePolicy, ManualClock};

    use crate::{Cache, MemoryBackend};

    use super::*;

    #[tokio::test]
    async fn many_keys_follow_the_rules_of_one() {
        let clock = ManualClock::new();
        let cache = Cache::builder(MemoryBackend::new())
            .clock(clock.clone())
            .policy(CachePolicy::new(Duration::from_secs(10)).stale_while_revalidate(Duration::from_secs(10)))
            .build();
        let keys: Vec<CacheKey> = (0..4)
            .map(|id| CacheKey::builder("n").part("id", id.to_string()).build())
            .collect();
        cache.set(&keys[0], &0u32).await.unwrap();
        clock.advance(Duration::from_secs(15));
        cache.set(&keys[1], &1u32).await.unwrap();
        cache.set(&keys[2], &"not a number".to_string()).await.unwrap();
        // 0 is stale (served), 1 fresh, 2 unreadable as u32, 3 missing.
        assert_eq!(
            cache.get_many::<u32>(&keys).await,
            vec![Some(0), Some(1), None, None]
        );
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.stale_hits, stats.misses), (1, 1, 2));
        assert_eq!(stats.unreadable_entries, 1);
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            cache.get_many::<u32>(&keys).await,
            vec![None, Some(1), None, None]
        );
    }
}
