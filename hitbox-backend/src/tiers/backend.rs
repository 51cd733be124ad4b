//! The storage trait every tier implements.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hitbox_core::{CacheKey, Tag};

use crate::error::BackendError;
use crate::tiers::generations::TagGenerations;
use crate::tiers::purge::{Purge, PurgeTarget, purge_default, unsupported};

/// The future a [`Backend`] method returns.
///
/// Tiers are used as trait objects (a composition holds tiers of different
/// types), so their futures are boxed here, in this one place.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// A place that stores entries as bytes: moka in-process, Redis, a remote
/// API, or a composition of those.
///
/// A backend stores opaque bytes under a [`CacheKey`] for a given time. It
/// does not interpret them: the engine ([`Cache`](crate::Cache)) frames every
/// value in an envelope with its metadata, and stages
/// ([`Staged`](crate::Staged)) compress and encrypt the envelope on the way
/// to the tier.
///
/// The trait is object-safe; `Arc<dyn Backend>` is itself a backend.
pub trait Backend: Send + Sync + 'static {
    /// The bytes stored under `key`, or `None`.
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>>;

    /// Stores `value` under `key` for `ttl`, with `tags` for
    /// [`Backend::invalidate_tag`]. A later write replaces an earlier one.
    fn write<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()>;

    /// Removes the entry under `key`; returns whether there was one.
    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool>;

    /// Removes every entry written with `tag`; returns how many.
    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64>;

    /// Applies `purge` (hard: removes, soft: marks stale what it matches;
    /// see [`crate::purge`]) and returns how many entries it purged. The
    /// default ([`purge_default`]) uses the tier's other methods and
    /// [`Backend::purge_keys`]; a tier that wraps others passes it on to
    /// them, a tier that transforms the bytes it stores wraps the purge's
    /// [marker](crate::purge::StaleMarker).
    fn purge<'a>(&'a self, purge: &'a Purge) -> BackendFuture<'a, u64> {
        Box::pin(purge_default(self, purge))
    }

    /// The keys of the entries `target` matches, for purges by prefix and
    /// soft purges by tag. The default knows only a key's own; a tier that
    /// can list its keys (moka, Redis) overrides it, and others answer
    /// [`BackendError::Unsupported`] for prefixes and tags.
    fn purge_keys<'a>(&'a self, target: &'a PurgeTarget) -> BackendFuture<'a, Vec<CacheKey>> {
        Box::pin(async move {
            match target {
                PurgeTarget::Key(key) => Ok(vec![key.clone()]),
                PurgeTarget::Prefix(_) | PurgeTarget::Tag(_) => {
                    Err(unsupported(self.label(), "listing its keys by prefix or tag"))
                }
            }
        })
    }

    /// Whether an entry is stored under `key`. The default reads it.
    fn exists<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move { Ok(self.read(key).await?.is_some()) })
    }

    /// A short name for logs, errors and metrics (`moka`, `redis`...).
    fn label(&self) -> &str;

    /// Counters of this tier, and of the tiers inside it for compositions.
    /// The default reports nothing.
    fn tier_stats(&self) -> Vec<TierStats> {
        Vec::new()
    }

    /// Whether the tier guards itself with a [circuit
    /// breaker](crate::breaker) (Redis, cachekit.io, a composition). A
    /// composition puts no breaker of its own in front of such a tier, so
    /// that a tier that comes back is used again after one cool-down, not
    /// after two stacked ones. The default is `false`.
    fn has_breaker(&self) -> bool {
        false
    }

    /// Whether this backend observes the tiers inside it itself, as a
    /// [composition](crate::composition) does: it records the metrics and
    /// spans of each of its tiers (see the crate documentation,
    /// "Observability"), so whoever calls it (the engine, an outer
    /// composition) does not record it as one more tier. The default is
    /// `false`: the caller observes the backend as one tier, under its
    /// [`label`](Backend::label). A wrapper around one tier forwards it.
    fn observes_tiers(&self) -> bool {
        false
    }

    /// The largest entry, in bytes, the tier takes. [`Staged`](crate::Staged)
    /// refuses larger values before they reach the tier, and refuses to
    /// decompress a stored entry that claims to be larger, so that a small
    /// entry that inflates past what the tier would ever have stored is not
    /// inflated on every read. The default is
    /// [`DEFAULT_MAX_DECOMPRESSED`](crate::DEFAULT_MAX_DECOMPRESSED) (64 MiB).
    fn max_entry_size(&self) -> usize {
        crate::codec::stages::DEFAULT_MAX_DECOMPRESSED
    }

    /// Whether reads of an unchanged entry answer with the buffer that was
    /// stored (in-process tiers), so that the engine may keep each stored
    /// buffer's decoded form and skip decoding it again. The default is
    /// `false`: a tier whose reads build new buffers (from the network, or
    /// through stages) gains nothing from it. Saying `true` wrongly costs
    /// time and memory but never correctness: the engine matches a buffer
    /// only by its identity.
    fn shares_buffers(&self) -> bool {
        false
    }

    /// The generations of `tags` in this tier, for a load about to start
    /// (see [`crate::generations`]): `None` when the tier keeps none, which
    /// is the default. A tier shared by several processes (Redis) answers
    /// them, and later refuses, in [`Backend::write_if_current`], the store
    /// of a load during which one of them moved.
    fn tag_generations<'a>(&'a self, tags: &'a [Tag]) -> BackendFuture<'a, Option<TagGenerations>> {
        let _ = tags;
        Box::pin(async { Ok(None) })
    }

    /// Stores `value` as [`Backend::write`] does, unless one of `tags` was
    /// invalidated since `expected` was read from
    /// [`Backend::tag_generations`]: then nothing is stored and the answer
    /// is `Ok(false)`. The check and the write are one atomic step in the
    /// tier. The default (a tier that keeps no generations) writes and
    /// answers `Ok(true)`.
    fn write_if_current<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
        expected: &'a TagGenerations,
    ) -> BackendFuture<'a, bool> {
        let _ = expected;
        Box::pin(async move {
            self.write(key, value, ttl, tags).await?;
            Ok(true)
        })
    }

    /// The bytes stored under each of `keys`, in the same order, in as few
    /// round trips as the tier allows (Redis `MGET`, memcached `get` with
    /// several keys): for loading many entities at once. The default reads
    /// the keys one after the other. An error about one key (see
    /// [`BackendError::is_tier_failure`]) reads as `None` and is logged; a
    /// tier failure fails the whole call.
    fn read_many<'a>(&'a self, keys: &'a [CacheKey]) -> BackendFuture<'a, Vec<Option<Bytes>>> {
        Box::pin(async move {
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                match self.read(key).await {
                    Ok(bytes) => found.push(bytes),
                    Err(error) if !error.is_tier_failure() => {
                        tracing::warn!(key = %key.log_id(), %error, "read of one key failed, treated as a miss");
                        found.push(None);
                    }
                    Err(error) => return Err(error),
                }
            }
            Ok(found)
        })
    }
}

/// Counters a tier keeps about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierStats {
    /// The tier's label.
    pub label: String,
    /// Reads that found an entry.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
    /// Entries held now, where the tier knows.
    pub entries: Option<u64>,
    /// Bytes held now, where the tier knows.
    pub bytes: Option<u64>,
    /// Operations whose duration the tier measured (0 for a tier that does
    /// not measure its own: in-process tiers answer in nanoseconds and are
    /// not worth the clock reads).
    pub timed_calls: u64,
    /// The time those operations took, in total, in microseconds (failed
    /// and timed-out ones included). Divided by
    /// [`timed_calls`](TierStats::timed_calls), the mean latency.
    pub total_latency_micros: u64,
    /// The longest of those operations, in microseconds.
    pub max_latency_micros: u64,
}

impl TierStats {
    /// The mean duration of the timed operations, or `None` when none was
    /// timed.
    pub fn mean_latency(&self) -> Option<Duration> {
        (self.timed_calls > 0).then(|| Duration::from_micros(self.total_latency_micros / self.timed_calls))
    }
}

macro_rules! forward_backend {
    ($($ty:ty),*) => {$(
        impl<B: Backend + ?Sized> Backend for $ty {
            fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
                (**self).read(key)
            }
            fn write<'a>(
                &'a self,
                key: &'a CacheKey,
                value: Bytes,
                ttl: Duration,
                tags: &'a [Tag],
            ) -> BackendFuture<'a, ()> {
                (**self).write(key, value, ttl, tags)
            }
            fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
                (**self).remove(key)
            }
            fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
                (**self).invalidate_tag(tag)
            }
            fn exists<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
                (**self).exists(key)
            }
            fn purge<'a>(&'a self, purge: &'a Purge) -> BackendFuture<'a, u64> {
                (**self).purge(purge)
            }
            fn purge_keys<'a>(&'a self, target: &'a PurgeTarget) -> BackendFuture<'a, Vec<CacheKey>> {
                (**self).purge_keys(target)
            }
            fn label(&self) -> &str {
                (**self).label()
            }
            fn tier_stats(&self) -> Vec<TierStats> {
                (**self).tier_stats()
            }
            fn shares_buffers(&self) -> bool {
                (**self).shares_buffers()
            }
            fn has_breaker(&self) -> bool {
                (**self).has_breaker()
            }
            fn observes_tiers(&self) -> bool {
                (**self).observes_tiers()
            }
            fn max_entry_size(&self) -> usize {
                (**self).max_entry_size()
            }
            fn read_many<'a>(&'a self, keys: &'a [CacheKey]) -> BackendFuture<'a, Vec<Option<Bytes>>> {
                (**self).read_many(keys)
            }
            fn tag_generations<'a>(&'a self, tags: &'a [Tag]) -> BackendFuture<'a, Option<TagGenerations>> {
                (**self).tag_generations(tags)
            }
            fn write_if_current<'a>(
                &'a self,
                key: &'a CacheKey,
                value: Bytes,
                ttl: Duration,
                tags: &'a [Tag],
                expected: &'a TagGenerations,
            ) -> BackendFuture<'a, bool> {
                (**self).write_if_current(key, value, ttl, tags, expected)
            }
        }
    )*};
}

forward_backend!(Arc<B>, Box<B>);
