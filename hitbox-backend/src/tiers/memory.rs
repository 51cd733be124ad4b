//! A plain in-memory tier: the reference implementation of [`Backend`].
//!
//! It keeps entries in a `HashMap` with no capacity bound and honours TTLs
//! against a [`Clock`], so tests can drive expiry. It can also be told to
//! fail, which is how the engine's degradation rules are tested. For real
//! in-process caching use `hitbox-moka`, which bounds memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hitbox_core::{CacheKey, Clock, SharedClock, SystemClock, Tag, Timestamp};

use crate::error::BackendError;
use crate::tiers::backend::{Backend, BackendFuture, TierStats};
use crate::tiers::purge::PurgeTarget;

/// An unbounded in-memory tier: the reference implementation of
/// [`Backend`]. It honours TTLs against a [`Clock`], so tests can drive
/// expiry, and can be told to fail, which is how the engine's degradation
/// rules are tested. For real in-process caching use `hitbox-moka`, which
/// bounds memory.
///
/// ```
/// use hitbox_backend::{Cache, MemoryBackend};
///
/// let tier = MemoryBackend::new();
/// let cache = Cache::new(tier.clone()); // clones share the same entries
/// ```
#[derive(Clone)]
pub struct MemoryBackend {
    shared: Arc<MemoryState>,
}

struct MemoryState {
    label: Arc<str>,
    clock: SharedClock,
    entries: Mutex<HashMap<Arc<str>, Stored>>,
    fail: AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

struct Stored {
    bytes: Bytes,
    expires_at: Timestamp,
    tags: Vec<Tag>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty tier labelled `memory`, on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::new())
    }

    /// An empty tier whose TTLs run on `clock`.
    pub fn with_clock(clock: impl Clock) -> Self {
        MemoryBackend {
            shared: Arc::new(MemoryState {
                label: "memory".into(),
                clock: Arc::new(clock),
                entries: Mutex::new(HashMap::new()),
                fail: AtomicBool::new(false),
                reads: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
        }
    }

    /// The same tier under another label.
    pub fn labelled(self, label: &str) -> Self {
        let shared = Arc::try_unwrap(self.shared)
            .unwrap_or_else(|_| panic!("relabel a MemoryBackend before cloning it"));
        MemoryBackend {
            shared: Arc::new(MemoryState {
                label: label.into(),
                ..shared
            }),
        }
    }

    /// While `failing` is set, every operation fails with a client error.
    pub fn set_failing(&self, failing: bool) {
        self.shared.fail.store(failing, Ordering::SeqCst);
    }

    /// Replaces the stored bytes under `key` as they are (to plant corrupt
    /// or foreign entries in tests), keeping them for an hour.
    pub fn put_raw(&self, key: &CacheKey, bytes: impl Into<Bytes>) {
        let expires_at = self.shared.clock.now().add(Duration::from_secs(3_600));
        self.entries().insert(
            key.as_str().into(),
            Stored {
                bytes: bytes.into(),
                expires_at,
                tags: Vec::new(),
            },
        );
    }

    /// The stored bytes under `key`, expired or not.
    pub fn raw(&self, key: &CacheKey) -> Option<Bytes> {
        self.entries().get(key.as_str()).map(|s| s.bytes.clone())
    }

    /// How many entries are held (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read calls so far.
    pub fn reads(&self) -> u64 {
        self.shared.reads.load(Ordering::SeqCst)
    }

    /// Write calls so far.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::SeqCst)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Stored>> {
        self.shared.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.shared.fail.load(Ordering::SeqCst) {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            return Err(BackendError::client(
                Arc::clone(&self.shared.label),
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "injected failure"),
            ));
        }
        Ok(())
    }
}

impl Backend for MemoryBackend {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            self.shared.reads.fetch_add(1, Ordering::SeqCst);
            self.check()?;
            let now = self.shared.clock.now();
            let found = self
                .entries()
                .get(key.as_str())
                .filter(|s| s.expires_at > now)
                .map(|s| s.bytes.clone());
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
            self.shared.writes.fetch_add(1, Ordering::SeqCst);
            self.check()?;
            let expires_at = self.shared.clock.now().add(ttl);
            self.entries().insert(
                key.as_str().into(),
                Stored {
                    bytes: value,
                    expires_at,
                    tags: tags.to_vec(),
                },
            );
            Ok(())
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            self.check()?;
            Ok(self.entries().remove(key.as_str()).is_some())
        })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            self.check()?;
            let mut entries = self.entries();
            let doomed: HashSet<Arc<str>> = entries
                .iter()
                .filter(|(_, stored)| stored.tags.contains(tag))
                .map(|(key, _)| Arc::clone(key))
                .collect();
            entries.retain(|key, _| !doomed.contains(key));
            Ok(doomed.len() as u64)
        })
    }

    /// Every live entry's key that `target` matches.
    fn purge_keys<'a>(&'a self, target: &'a PurgeTarget) -> BackendFuture<'a, Vec<CacheKey>> {
        Box::pin(async move {
            self.check()?;
            let now = self.shared.clock.now();
            Ok(self
                .entries()
                .iter()
                .filter(|(key, stored)| {
                    stored.expires_at > now
                        && target.matches(&CacheKey::from_encoded(Arc::clone(key)), &stored.tags)
                })
                .map(|(key, _)| CacheKey::from_encoded(Arc::clone(key)))
                .collect())
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
            errors: self.shared.errors.load(Ordering::Relaxed),
            evictions: 0,
            entries: Some(self.len() as u64),
            bytes: Some(self.entries().values().map(|s| s.bytes.len() as u64).sum()),
            ..TierStats::default()
        }]
    }

    fn shares_buffers(&self) -> bool {
        true
    }
}
