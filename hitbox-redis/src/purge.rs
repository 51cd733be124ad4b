//! Purges in Redis: by key and by tag as the tier's deletions and tag
//! invalidations do them, by prefix with `SCAN` (on every primary of a
//! cluster) and `UNLINK` in batches, never `KEYS`; soft purges rewrite each
//! entry through the tier. Every purge is appended to the audit stream
//! with `reason` = `purge`. The whole of a purge by prefix, or of a soft
//! purge, is bounded by the backend's
//! [`purge_timeout`](crate::RedisBackendBuilder::purge_timeout) (default
//! [`DEFAULT_PURGE_TIMEOUT`](crate::DEFAULT_PURGE_TIMEOUT)).

use std::sync::Arc;

use fred::clients::{Client, WithOptions};
use fred::prelude::{Key, KeysInterface, SortedSetsInterface};
use futures::TryStreamExt;
use futures::future::try_join_all;
use hitbox_backend::BackendError;
use hitbox_backend::purge::{Purge, PurgeTarget, purge_default};
use hitbox_core::CacheKey;

use crate::invalidation::Invalidation;
use crate::{DELETE_BATCH, RedisBackend};

/// How many keys one `SCAN` call asks for.
const SCAN_COUNT: u32 = 1_000;

/// `text` with the characters of Redis glob patterns escaped.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl RedisBackend {
    /// Refuses a prefix that would reach the tier's own keys (tag sets,
    /// generations, the audit stream, locks: all `<prefix>#...`), or
    /// everything.
    fn check_prefix(&self, prefix: &str) -> Result<(), BackendError> {
        if prefix.is_empty() || prefix.starts_with('#') {
            return Err(BackendError::Refused {
                tier: Arc::clone(&self.inner.label),
                reason: "a purge prefix must not be empty or start with `#`",
            });
        }
        Ok(())
    }

    /// The Redis keys of the entries whose key starts with `prefix`.
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Key>, fred::error::Error> {
        let pattern = format!("{}*", glob_escape(&format!("{}{prefix}", self.inner.prefix)));
        let client: Client = self.inner.pool.next().clone();
        if self.inner.clustered {
            client
                .scan_cluster_buffered(pattern, Some(SCAN_COUNT), None)
                .try_collect()
                .await
        } else {
            client
                .scan_buffered(pattern, Some(SCAN_COUNT), None)
                .try_collect()
                .await
        }
    }

    async fn unlink_keys(
        &self,
        client: &WithOptions<Client>,
        keys: &[Key],
    ) -> Result<u64, fred::error::Error> {
        let mut removed = 0u64;
        for batch in keys.chunks(DELETE_BATCH) {
            if self.inner.clustered {
                let unlinks = batch.iter().map(|key| client.unlink::<i64, _>(key.clone()));
                for count in try_join_all(unlinks).await? {
                    removed += count.max(0) as u64;
                }
            } else {
                removed += client.unlink::<i64, _>(batch.to_vec()).await?.max(0) as u64;
            }
        }
        Ok(removed)
    }

    /// The cache key of a Redis key of this tier.
    fn cache_key_of(&self, redis_key: &[u8]) -> Option<CacheKey> {
        let text = std::str::from_utf8(redis_key).ok()?;
        let key = text.strip_prefix(self.inner.prefix.as_str())?;
        (!key.starts_with('#')).then(|| CacheKey::from_encoded(key))
    }

    /// Appends a purge to the audit stream.
    async fn audit_purge(
        &self,
        client: &WithOptions<Client>,
        invalidation: &Invalidation,
        generation: Option<u64>,
    ) -> Result<(), fred::error::Error> {
        if let Some(audit) = &self.inner.audit {
            audit
                .append_entry(client, &self.inner.instance, invalidation, generation, true)
                .await?;
        }
        Ok(())
    }

    fn timed_out(&self) -> BackendError {
        BackendError::Timeout {
            tier: Arc::clone(&self.inner.label),
            after: self.inner.purge_timeout,
        }
    }

    /// [`Backend::purge`](hitbox_backend::Backend::purge) for Redis.
    pub(crate) async fn purge_now(&self, purge: &Purge) -> Result<u64, BackendError> {
        if let PurgeTarget::Prefix(prefix) = purge.target() {
            self.check_prefix(prefix)?;
        }
        let invalidation = Invalidation::of_purge(purge);
        let client = self.fail_fast();
        if purge.is_soft() {
            let purged = tokio::time::timeout(self.inner.purge_timeout, purge_default(self, purge))
                .await
                .map_err(|_| self.timed_out())??;
            self.run(crate::Kind::Write, self.audit_purge(&client, &invalidation, None))
                .await?;
            tracing::debug!(kind = purge.target().kind(), purged, "redis soft purge");
            return Ok(purged);
        }
        let purged = match purge.target() {
            PurgeTarget::Key(key) => {
                let redis_key = self.redis_key(key);
                let op = async {
                    let removed = client.unlink::<i64, _>(redis_key.as_str()).await?;
                    self.audit_purge(&client, &invalidation, None).await?;
                    Ok(removed.max(0) as u64)
                };
                let result = self.run(crate::Kind::Write, op).await;
                if result.as_ref().is_err_and(BackendError::is_tier_failure) {
                    self.inner.pending.remember_key(&redis_key);
                }
                result?
            }
            PurgeTarget::Tag(tag) => {
                let op = async {
                    let (removed, generation) = self.invalidate_tag_now(&client, tag).await?;
                    self.audit_purge(&client, &invalidation, Some(generation)).await?;
                    Ok(removed)
                };
                let result = self.run(crate::Kind::Invalidate, op).await;
                if result.as_ref().is_err_and(BackendError::is_tier_failure) {
                    self.inner.pending.remember_tag(tag);
                }
                result?
            }
            PurgeTarget::Prefix(prefix) => {
                let op = async {
                    let keys = self.scan_prefix(prefix).await?;
                    let removed = self.unlink_keys(&client, &keys).await?;
                    self.audit_purge(&client, &invalidation, None).await?;
                    Ok(removed)
                };
                self.run(crate::Kind::Purge, op).await?
            }
        };
        tracing::debug!(kind = purge.target().kind(), purged, "redis purge");
        Ok(purged)
    }

    /// [`Backend::purge_keys`](hitbox_backend::Backend::purge_keys) for
    /// Redis: a prefix by `SCAN`, a tag from its set.
    pub(crate) async fn purge_keys_now(&self, target: &PurgeTarget) -> Result<Vec<CacheKey>, BackendError> {
        match target {
            PurgeTarget::Key(key) => Ok(vec![key.clone()]),
            PurgeTarget::Prefix(prefix) => {
                self.check_prefix(prefix)?;
                let keys = self.run(crate::Kind::Purge, self.scan_prefix(prefix)).await?;
                Ok(keys
                    .iter()
                    .filter_map(|key| self.cache_key_of(key.as_bytes()))
                    .collect())
            }
            PurgeTarget::Tag(tag) => {
                let set = self.tag_set_key(tag);
                let client = self.fail_fast();
                let members: Vec<bytes::Bytes> = self
                    .run(
                        crate::Kind::Read,
                        client.zrange(set.as_str(), 0, -1, None, false, None, false),
                    )
                    .await?;
                Ok(members.iter().filter_map(|key| self.cache_key_of(key)).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("app:v1:q=a*b?[c]\\"), "app:v1:q=a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("plain:v1:id="), "plain:v1:id=");
    }
}
