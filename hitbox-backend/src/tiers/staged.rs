//! [`Staged`]: a tier behind the value stages of [`crate::codec`].
//!
//! Why it exists: the engine writes one plain envelope for every tier, but
//! tiers differ in what they should hold. An in-process tier keeps plain
//! entries for speed; a shared or remote one wants them compressed and
//! encrypted. `Staged` wraps any [`Backend`] and runs its [`Stages`] on the
//! way in ([`Stages::seal`]) and out ([`Stages::open`]), so each tier of a
//! [composition](crate::composition) carries its own stages while the
//! bytes passed between tiers stay the plain envelope.
//!
//! An entry that does not open (other stages, a wrong key, corruption) is a
//! logged miss, never an error: it says nothing about the tier's health.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hitbox_core::{CacheKey, Tag};

use crate::codec::stages::Stages;
use crate::error::BackendError;
use crate::tiers::backend::{Backend, BackendFuture, TierStats};
use crate::tiers::generations::TagGenerations;
use crate::tiers::purge::{Marked, Purge, PurgeTarget, StaleMarker};

/// A tier with stages: compression, then encryption, on the way to the
/// wrapped tier, and the reverse on the way back. Each entry records its
/// stages in a header, so one read with other stages is a miss.
///
/// ```
/// use hitbox_backend::{Compression, MemoryBackend, Staged, Stages};
///
/// let compressed = Staged::new(MemoryBackend::new(), Stages::new().compression(Compression::Lz4));
/// let cache = hitbox_backend::Cache::new(compressed);
/// ```
pub struct Staged<B> {
    inner: B,
    stages: Stages,
}

impl<B: Backend> Staged<B> {
    /// Wraps `inner` with `stages`.
    pub fn new(inner: B, stages: Stages) -> Self {
        Staged { inner, stages }
    }

    /// The wrapped tier.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The stages.
    pub fn stages(&self) -> &Stages {
        &self.stages
    }

    /// `value` as the wrapped tier stores it, unless it is larger than the
    /// tier takes.
    fn seal(&self, key: &CacheKey, value: &Bytes) -> Result<Bytes, BackendError> {
        if value.len() > self.inner.max_entry_size() {
            return Err(BackendError::Refused {
                tier: self.inner.label().into(),
                reason: "entry larger than the tier's max_entry_size",
            });
        }
        let sealed = self
            .stages
            .seal(key, value)
            .map_err(|source| BackendError::Encode {
                tier: self.inner.label().into(),
                source,
            })?;
        Ok(Bytes::from(sealed))
    }
}

impl<B: Backend> Backend for Staged<B> {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let Some(stored) = self.inner.read(key).await? else {
                return Ok(None);
            };
            match self.stages.open_within(key, &stored, self.inner.max_entry_size()) {
                Ok(plain) => Ok(Some(plain)),
                Err(reason) => {
                    tracing::warn!(tier = self.inner.label(), key = %key.log_id(), %reason, "unreadable entry, treated as a miss");
                    Ok(None)
                }
            }
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
            let sealed = self.seal(key, &value)?;
            self.inner.write(key, sealed, ttl, tags).await
        })
    }

    fn tag_generations<'a>(&'a self, tags: &'a [Tag]) -> BackendFuture<'a, Option<TagGenerations>> {
        self.inner.tag_generations(tags)
    }

    fn write_if_current<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
        expected: &'a TagGenerations,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let sealed = self.seal(key, &value)?;
            self.inner
                .write_if_current(key, sealed, ttl, tags, expected)
                .await
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        self.inner.remove(key)
    }

    /// The wrapped tier's batch read, each entry opened as a single read
    /// opens it.
    fn read_many<'a>(&'a self, keys: &'a [CacheKey]) -> BackendFuture<'a, Vec<Option<Bytes>>> {
        Box::pin(async move {
            let stored = self.inner.read_many(keys).await?;
            let limit = self.inner.max_entry_size();
            Ok(keys
                .iter()
                .zip(stored)
                .map(|(key, stored)| {
                    let stored = stored?;
                    match self.stages.open_within(key, &stored, limit) {
                        Ok(plain) => Some(plain),
                        Err(reason) => {
                            tracing::warn!(tier = self.inner.label(), key = %key.log_id(), %reason, "unreadable entry, treated as a miss");
                            None
                        }
                    }
                })
                .collect())
        })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        self.inner.invalidate_tag(tag)
    }

    fn exists<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        self.inner.exists(key)
    }

    /// The wrapped tier's purge; a soft one marks entries through the
    /// stages (opened, marked, sealed again).
    fn purge<'a>(&'a self, purge: &'a Purge) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let through = purge.map_marker(|marker| {
                Arc::new(StagedMarker {
                    stages: self.stages.clone(),
                    limit: self.inner.max_entry_size(),
                    marker,
                }) as Arc<dyn StaleMarker>
            });
            self.inner.purge(&through).await
        })
    }

    fn purge_keys<'a>(&'a self, target: &'a PurgeTarget) -> BackendFuture<'a, Vec<CacheKey>> {
        self.inner.purge_keys(target)
    }

    fn label(&self) -> &str {
        self.inner.label()
    }

    fn tier_stats(&self) -> Vec<TierStats> {
        self.inner.tier_stats()
    }

    fn has_breaker(&self) -> bool {
        self.inner.has_breaker()
    }

    fn observes_tiers(&self) -> bool {
        self.inner.observes_tiers()
    }

    fn max_entry_size(&self) -> usize {
        self.inner.max_entry_size()
    }
}

/// A soft purge's marker behind stages: it sees the envelope, and what it
/// writes is sealed again.
struct StagedMarker {
    stages: Stages,
    limit: usize,
    marker: Arc<dyn StaleMarker>,
}

impl StaleMarker for StagedMarker {
    fn mark(&self, key: &CacheKey, stored: Bytes) -> Marked {
        let Ok(plain) = self.stages.open_within(key, &stored, self.limit) else {
            return Marked::Remove;
        };
        match self.marker.mark(key, plain) {
            Marked::Replace { bytes, ttl, tags } => match self.stages.seal(key, &bytes) {
                Ok(sealed) => Marked::Replace {
                    bytes: Bytes::from(sealed),
                    ttl,
                    tags,
                },
                Err(_) => Marked::Remove,
            },
            other => other,
        }
    }
}
