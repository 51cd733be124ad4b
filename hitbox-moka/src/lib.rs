//! The in-process tier of hitbox, on [moka](https://docs.rs/moka)'s
//! synchronous cache.
//!
//! A [`MokaBackend`] is a tier (a [`Backend`]): it stores the bytes of
//! entries in the process's memory and never sees values; the engine,
//! [`hitbox_backend::Cache`], encodes and decodes them. It is the usual L1:
//! alone for a single process, or in front of a shared tier (Redis,
//! cachekit.io) in a composition.
//!
//! - **Bounded in bytes.** Capacity is a number of bytes, not of entries:
//!   each entry weighs its key, its stored bytes and a fixed overhead, and
//!   moka evicts the least useful entries (TinyLFU) to stay under the bound.
//!   Evictions are counted in [`TierStats`].
//! - **Per-entry expiry.** Every entry lives exactly as long as the engine
//!   asks (the end of its stale windows), not for a global TTL.
//! - **Tags.** An index from tag to keys serves
//!   [`invalidate_tag`](hitbox_backend::Backend::invalidate_tag).
//! - **Zero-copy hits.** Entries are stored as [`Bytes`]; a hit hands out a
//!   reference-counted view, never a copy.
//! - **No waiting.** moka's synchronous cache is called directly from the
//!   tier's futures: its calls wait on nothing but short internal locks (its
//!   maintenance runs inline, bounded by moka's own time limit, and the
//!   eviction listener only updates the tag index), so an async cache would
//!   add a future per call and moka's async crates to every build for
//!   nothing.
//!
//! # The smallest cache
//!
//! Build the tier, put it under a [`Cache`](hitbox_backend::Cache), then
//! set and get:
//!
//! ```
//! use hitbox_backend::Cache;
//! use hitbox_core::CacheKey;
//! use hitbox_moka::MokaBackend;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = Cache::new(MokaBackend::new(64 * 1024 * 1024));
//!
//! let key = CacheKey::builder("greetings").part("lang", "en").build();
//! cache.set(&key, &"hello".to_string()).await.unwrap();
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("hello"));
//! # });
//! ```
//!
//! Most code goes through a typed view and a loader instead: concurrent
//! callers that miss one key run the loader once.
//!
//! ```
//! use hitbox_backend::Cache;
//! use hitbox_moka::MokaBackend;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let tier = MokaBackend::builder().max_bytes(64 * 1024 * 1024).build();
//! let cache = Cache::new(tier);
//! let greeting = cache
//!     .typed::<String>("greetings")
//!     .get_or_insert_with("en", || async { "hello".to_string() })
//!     .await;
//! assert_eq!(greeting, "hello");
//! # });
//! ```
//!
//! # Capacity, expiry and labels
//!
//! [`MokaBackend::builder`] configures the tier:
//!
//! - [`max_bytes`](MokaBackendBuilder::max_bytes): the capacity, default
//!   [`DEFAULT_MAX_BYTES`] (256 MiB). An entry weighs its key, its stored
//!   bytes and [`ENTRY_OVERHEAD`]; [`MokaBackend::weighted_size`] reports
//!   the total as weighed, [`MokaBackend::entry_count`] the entries and
//!   [`MokaBackend::evictions`] the entries evicted to stay within it.
//! - [`label`](MokaBackendBuilder::label): the name of the tier in logs and
//!   [`TierStats`] (default `moka`). Give each tier of a process its own
//!   when there are several.
//!
//! Expiry has no setting of its own: each entry expires after the lifetime
//! the engine writes it with (its TTL plus its stale windows, from the
//! engine's [`CachePolicy`](hitbox_core::CachePolicy) or the call's
//! [`EntryOptions`](hitbox_core::EntryOptions)); freshness is then judged
//! by the engine, on its clock, from the entry's own metadata. moka applies
//! evictions, expirations and their counters in batches;
//! [`MokaBackend::run_pending_tasks`] applies them now (in tests, or before
//! reading the counters).
//!
//! ```
//! use std::time::Duration;
//! use hitbox_backend::Cache;
//! use hitbox_core::{EntryOptions, Tag};
//! use hitbox_moka::MokaBackend;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let tier = MokaBackend::builder()
//!     .max_bytes(16 * 1024 * 1024)
//!     .label("l1-sessions")
//!     .build();
//! let cache = Cache::new(tier.clone());
//! let sessions = cache.typed::<String>("sessions");
//!
//! // A lifetime and a tag for this entry only.
//! let options = EntryOptions::new().ttl(Duration::from_secs(30)).tag("user:7");
//! sessions.set_with("s-1", &"token".to_string(), &options).await.unwrap();
//! assert_eq!(sessions.get("s-1").await.as_deref(), Some("token"));
//!
//! // Tags invalidate every entry that carries them.
//! assert_eq!(cache.invalidate_tag(&Tag::from("user:7")).await.unwrap(), 1);
//! assert_eq!(sessions.get("s-1").await, None);
//!
//! tier.run_pending_tasks().await;
//! assert_eq!(tier.entry_count(), 0);
//! # });
//! ```
//!
//! # Composition: moka in front of a shared tier
//!
//! A tier in front of another is a composition, itself a tier:
//! `MokaBackend::new(..).compose(l2)` ([`Compose`](hitbox_backend::Compose))
//! reads moka first, falls back to L2 and refills moka from it, and writes
//! to both; [`CompositionBackend::builder`](hitbox_backend::CompositionBackend::builder)
//! chooses the read, write and refill policies. Here L2 is
//! hitbox-backend's [`MemoryBackend`](hitbox_backend::MemoryBackend) so that
//! the example runs anywhere; in practice it is the Redis tier
//! (`MokaBackend::new(..).compose(redis)`, see the `hitbox-redis` crate,
//! which also carries L1 invalidations between instances) or the
//! cachekit.io tier.
//!
//! ```
//! use hitbox_backend::{Cache, Compose, MemoryBackend};
//! use hitbox_core::CacheKey;
//! use hitbox_moka::MokaBackend;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let shared = MemoryBackend::new(); // the Redis tier, in practice
//! let cache = Cache::new(MokaBackend::new(64 * 1024 * 1024).compose(shared));
//!
//! let key = CacheKey::builder("prices").part("sku", "A-1").build();
//! cache.set(&key, &1999_u64).await.unwrap();
//! assert_eq!(cache.get::<u64>(&key).await, Some(1999));
//! // Each tier has its own line in the stats.
//! let labels: Vec<String> = cache.stats().tiers.into_iter().map(|t| t.label).collect();
//! assert!(labels.iter().any(|l| l == "moka"));
//! # });
//! ```
//!
//! # Features
//!
//! - `metrics`: the gauges `hitbox_tier_bytes{tier}` (the bytes held, as
//!   weighed) and `hitbox_tier_entries{tier}`, kept as entries are added
//!   and as moka reports them removed (evicted, expired, replaced,
//!   removed), and hitbox-backend's `metrics` feature (per-tier reads,
//!   writes, errors and latencies, taken by the engine or composition that
//!   calls this tier). The gauges are registered when the tier is built:
//!   install the recorder first (hitbox-backend's crate documentation,
//!   "Observability").
//!
//! Compression and encryption are stages of hitbox-backend
//! ([`Staged`](hitbox_backend::Staged)), which wrap this tier like any
//! other.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hitbox_backend::{Backend, BackendError, BackendFuture, PurgeTarget, TierStats};
use hitbox_core::{CacheKey, Tag};
use moka::Expiry;
use moka::notification::RemovalCause;

/// The default capacity: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// What an entry costs beyond its key and value: moka's own bookkeeping and
/// ours (the node, its expiry and frequency data, the tag list and the tag
/// index, the engine's envelope). Measured by `moka_soak` in `benches/`
/// (see `benches/README.md`): 200,000 entries of 100 bytes with one tag
/// each took about 625 bytes of heap each beyond their keys and stored
/// bytes (it was 420 before the tag index was counted).
pub const ENTRY_OVERHEAD: usize = 640;

/// The moka tier; cheap to clone (clones share the cache).
///
/// Build it with [`MokaBackend::new`] (a capacity in bytes),
/// [`MokaBackend::builder`] or `MokaBackend::default()` (256 MiB), and
/// hand it to a [`Cache`](hitbox_backend::Cache) or a composition.
///
/// ```
/// use hitbox_backend::Backend;
/// use hitbox_moka::MokaBackend;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let tier = MokaBackend::new(8 * 1024 * 1024);
/// let view = tier.clone(); // the same cache
/// assert_eq!(view.label(), "moka");
/// tier.run_pending_tasks().await;
/// assert_eq!((view.entry_count(), view.weighted_size(), view.evictions()), (0, 0, 0));
/// # });
/// ```
#[derive(Clone)]
pub struct MokaBackend {
    shared: Arc<MokaState>,
}

struct MokaState {
    max_entry_size: usize,
    label: Arc<str>,
    cache: moka::sync::Cache<Arc<str>, Stored>,
    index: Arc<TagIndex>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
    /// The bytes and entries held (feature `metrics`).
    #[cfg(feature = "metrics")]
    gauges: hitbox_backend::observe::SizeGauges,
}

#[derive(Clone)]
struct Stored {
    bytes: Bytes,
    ttl: Duration,
    tags: Arc<[Tag]>,
}

/// Which keys carry which tag. It may hold keys that have since been
/// replaced without the tag; `invalidate_tag` checks the live entry.
#[derive(Default)]
struct TagIndex {
    keys: Mutex<HashMap<Tag, HashSet<Arc<str>>>>,
}

impl TagIndex {
    fn lock(&self) -> MutexGuard<'_, HashMap<Tag, HashSet<Arc<str>>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, key: &Arc<str>, tags: &[Tag]) {
        if tags.is_empty() {
            return;
        }
        let mut index = self.lock();
        for tag in tags {
            index.entry(tag.clone()).or_default().insert(Arc::clone(key));
        }
    }

    fn forget(&self, key: &str, tags: &[Tag]) {
        if tags.is_empty() {
            return;
        }
        let mut index = self.lock();
        for tag in tags {
            if let Some(keys) = index.get_mut(tag) {
                keys.remove(key);
                if keys.is_empty() {
                    index.remove(tag);
                }
            }
        }
    }

    fn keys(&self, tag: &Tag) -> Vec<Arc<str>> {
        self.lock()
            .get(tag)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn take(&self, tag: &Tag) -> HashSet<Arc<str>> {
        self.lock().remove(tag).unwrap_or_default()
    }
}

/// What an entry weighs against the capacity.
fn weight(key: &str, value: &Stored) -> u32 {
    u32::try_from(key.len() + value.bytes.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

/// Each entry expires after the time it was written with.
struct PerEntryExpiry;

impl Expiry<Arc<str>, Stored> for PerEntryExpiry {
    fn expire_after_create(&self, _key: &Arc<str>, value: &Stored, _created_at: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &Arc<str>,
        value: &Stored,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Configures a [`MokaBackend`]; see [`MokaBackend::builder`].
///
/// ```
/// use hitbox_backend::Backend;
/// use hitbox_moka::MokaBackend;
///
/// let tier = MokaBackend::builder()
///     .max_bytes(32 * 1024 * 1024)
///     .label("l1")
///     .build();
/// assert_eq!(tier.label(), "l1");
/// ```
#[derive(Debug, Clone)]
pub struct MokaBackendBuilder {
    max_bytes: u64,
    max_entry_size: Option<usize>,
    label: String,
}

impl MokaBackendBuilder {
    /// The capacity in bytes (default [`DEFAULT_MAX_BYTES`]).
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The largest entry the tier takes, in bytes (default: an eighth of
    /// the capacity, at most 64 MiB). A larger write is refused
    /// ([`BackendError::Refused`]),
    /// so that one entry cannot evict most of the others; behind
    /// [`Staged`](hitbox_backend::Staged) stages it also bounds what an entry
    /// may decompress to.
    pub fn max_entry_size(mut self, bytes: usize) -> Self {
        self.max_entry_size = Some(bytes);
        self
    }

    /// The label in logs and stats (default `moka`).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Builds the tier.
    pub fn build(self) -> MokaBackend {
        let index = Arc::new(TagIndex::default());
        let evictions = Arc::new(AtomicU64::new(0));
        let listener_index = Arc::clone(&index);
        let listener_evictions = Arc::clone(&evictions);
        #[cfg(feature = "metrics")]
        let gauges = hitbox_backend::observe::SizeGauges::new(&self.label);
        #[cfg(feature = "metrics")]
        let listener_gauges = gauges.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(|key: &Arc<str>, value: &Stored| -> u32 { weight(key, value) })
            .expire_after(PerEntryExpiry)
            .eviction_listener(move |key: Arc<Arc<str>>, value: Stored, cause: RemovalCause| {
                // Every entry moka took is reported here once when it
                // goes, whatever the cause (one it would not admit too).
                #[cfg(feature = "metrics")]
                listener_gauges.removed(u64::from(weight(&key, &value)));
                if cause == RemovalCause::Size {
                    listener_evictions.fetch_add(1, Ordering::Relaxed);
                }
                // A replaced entry's key is still live; `write` has updated
                // the index for it already.
                if cause != RemovalCause::Replaced {
                    listener_index.forget(&key, &value.tags);
                }
            })
            .build();
        let max_entry_size = self.max_entry_size.unwrap_or_else(|| {
            usize::try_from(self.max_bytes / 8)
                .unwrap_or(usize::MAX)
                .min(hitbox_backend::DEFAULT_MAX_DECOMPRESSED)
        });
        MokaBackend {
            shared: Arc::new(MokaState {
                max_entry_size,
                label: self.label.into(),
                cache,
                index,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                evictions,
                #[cfg(feature = "metrics")]
                gauges,
            }),
        }
    }
}

impl Default for MokaBackend {
    fn default() -> Self {
        MokaBackend::builder().build()
    }
}

impl MokaBackend {
    /// A tier holding at most `max_bytes` bytes.
    pub fn new(max_bytes: u64) -> Self {
        MokaBackend::builder().max_bytes(max_bytes).build()
    }

    /// Starts configuring a tier.
    pub fn builder() -> MokaBackendBuilder {
        MokaBackendBuilder {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entry_size: None,
            label: "moka".into(),
        }
    }

    /// Runs moka's pending maintenance now (evictions, expirations and
    /// their counters are otherwise applied in batches).
    pub async fn run_pending_tasks(&self) {
        self.shared.cache.run_pending_tasks();
    }

    /// The bytes held, as weighed (keys, values and overhead).
    pub fn weighted_size(&self) -> u64 {
        self.shared.cache.weighted_size()
    }

    /// The entries held.
    pub fn entry_count(&self) -> u64 {
        self.shared.cache.entry_count()
    }

    /// Entries evicted to stay within capacity so far.
    pub fn evictions(&self) -> u64 {
        self.shared.evictions.load(Ordering::Relaxed)
    }
}

impl Backend for MokaBackend {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let found = self.shared.cache.get(key.as_str()).map(|stored| stored.bytes);
            let counter = if found.is_some() {
                &self.shared.hits
            } else {
                &self.shared.misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(found)
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
            if value.len() > self.shared.max_entry_size {
                return Err(BackendError::Refused {
                    tier: Arc::clone(&self.shared.label),
                    reason: "entry larger than the tier's max_entry_size",
                });
            }
            let key: Arc<str> = key.as_str().into();
            if let Some(previous) = self.shared.cache.get(&key) {
                let dropped: Vec<Tag> = previous
                    .tags
                    .iter()
                    .filter(|t| !tags.contains(t))
                    .cloned()
                    .collect();
                self.shared.index.forget(&key, &dropped);
            }
            self.shared.index.add(&key, tags);
            let stored = Stored {
                bytes: value,
                ttl: ttl.max(Duration::from_millis(1)),
                tags: tags.into(),
            };
            #[cfg(feature = "metrics")]
            self.shared.gauges.added(u64::from(weight(&key, &stored)));
            self.shared.cache.insert(key, stored);
            Ok(())
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move { Ok(self.shared.cache.remove(key.as_str()).is_some()) })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let mut removed = 0;
            for key in self.shared.index.take(tag) {
                // The index may be behind a replacement that dropped the tag.
                let tagged = self
                    .shared
                    .cache
                    .get(&key)
                    .is_some_and(|stored| stored.tags.contains(tag));
                if tagged && self.shared.cache.remove(&key).is_some() {
                    removed += 1;
                }
            }
            tracing::debug!(
                tier = &*self.shared.label,
                tag = tag.as_str(),
                removed,
                "tag invalidated"
            );
            Ok(removed)
        })
    }

    fn exists<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move { Ok(self.shared.cache.contains_key(key.as_str())) })
    }

    /// The live keys `target` matches: a prefix walks the whole cache (one
    /// pass, no lock held across it), a tag reads the tag index.
    fn purge_keys<'a>(&'a self, target: &'a PurgeTarget) -> BackendFuture<'a, Vec<CacheKey>> {
        Box::pin(async move {
            let keys = match target {
                PurgeTarget::Key(key) => vec![key.clone()],
                PurgeTarget::Prefix(prefix) => self
                    .shared
                    .cache
                    .iter()
                    .filter(|(key, _)| key.starts_with(prefix.as_str()))
                    .map(|(key, _)| CacheKey::from_encoded(Arc::clone(&*key)))
                    .collect(),
                PurgeTarget::Tag(tag) => self
                    .shared
                    .index
                    .keys(tag)
                    .into_iter()
                    // The index may be behind a replacement that dropped the tag.
                    .filter(|key| {
                        self.shared
                            .cache
                            .get(key)
                            .is_some_and(|stored| stored.tags.contains(tag))
                    })
                    .map(CacheKey::from_encoded)
                    .collect(),
            };
            Ok(keys)
        })
    }

    fn label(&self) -> &str {
        &self.shared.label
    }

    fn tier_stats(&self) -> Vec<TierStats> {
        vec![TierStats {
            label: self.shared.label.to_string(),
            hits: self.shared.hits.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
            errors: 0,
            evictions: self.evictions(),
            entries: Some(self.entry_count()),
            bytes: Some(self.weighted_size()),
            ..TierStats::default()
        }]
    }

    /// Reads hand out the stored buffer: the engine keeps its decoding.
    fn shares_buffers(&self) -> bool {
        true
    }

    fn max_entry_size(&self) -> usize {
        self.shared.max_entry_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_over_the_limit_are_refused_and_bound_decompression() {
        let key = CacheKey::from_encoded("k");
        let tier = MokaBackend::new(8 * 1024);
        assert_eq!(tier.max_entry_size(), 1024, "an eighth of the capacity");
        let refused = tier
            .write(&key, Bytes::from(vec![0; 1025]), Duration::from_secs(5), &[])
            .await;
        assert!(
            matches!(refused, Err(BackendError::Refused { .. })),
            "{refused:?}"
        );
        assert!(!refused.unwrap_err().is_tier_failure());
        tier.write(&key, Bytes::from(vec![0; 1024]), Duration::from_secs(5), &[])
            .await
            .unwrap();

        // Behind stages, an entry that would inflate past the limit is a
        // miss, refused before it is decompressed.
        use hitbox_backend::{Compression, Staged, Stages};
        let roomy = MokaBackend::builder().max_entry_size(1 << 20).build();
        let writer = Staged::new(
            roomy.clone(),
            Stages::new()
                .compression(Compression::zstd(3))
                .min_compress_size(0),
        );
        writer
            .write(
                &key,
                Bytes::from(vec![7; 512 * 1024]),
                Duration::from_secs(5),
                &[],
            )
            .await
            .unwrap();
        let small = roomy.read(&key).await.unwrap().unwrap();
        assert!(small.len() < 1024, "it compresses to {} bytes", small.len());
        let strict = MokaBackend::builder().max_entry_size(64 * 1024).build();
        strict
            .write(&key, small, Duration::from_secs(5), &[])
            .await
            .unwrap();
        let reader = Staged::new(strict, Stages::new().compression(Compression::zstd(3)));
        assert_eq!(reader.read(&key).await.unwrap(), None);
        assert_eq!(
            writer.read(&key).await.unwrap().map(|b| b.len()),
            Some(512 * 1024)
        );
    }

    #[test]
    fn expiry_is_the_entry_own_ttl() {
        let stored = Stored {
            bytes: Bytes::from_static(b"x"),
            ttl: Duration::from_millis(1_234),
            tags: Arc::new([]),
        };
        let key: Arc<str> = "k".into();
        let now = Instant::now();
        assert_eq!(
            PerEntryExpiry.expire_after_create(&key, &stored, now),
            Some(Duration::from_millis(1_234))
        );
        assert_eq!(
            PerEntryExpiry.expire_after_update(&key, &stored, now, Some(Duration::from_secs(99))),
            Some(Duration::from_millis(1_234))
        );
    }
}
