//! Purges: removing entries (hard) or marking them stale (soft) by key, by
//! key prefix or by tag, in every tier.
//!
//! Why it exists: an operator who changed content upstream must make the
//! cache forget it now. [`Cache::purge`](crate::Cache::purge) is the entry
//! point; it hands a [`Purge`] to its tier through [`Backend::purge`], and
//! each tier (a composition: each of its tiers) applies it.
//!
//! - A **hard** purge removes what it matches: the next read is a miss.
//! - A **soft** purge rewrites what it matches as stale
//!   ([`EntryMeta::purged`](hitbox_core::EntryMeta::purged)): the entry is no longer fresh, but its
//!   stale-while-revalidate and stale-if-error windows, counted from the
//!   purge, still let it be served while one load refreshes it (or when
//!   that load fails). Entries stale already are left as they are, and an
//!   entry without a stale-while-revalidate window is, in effect, expired.
//!
//! A soft purge needs the entry's metadata, which lives in the envelope,
//! under the stages. A tier does not decode it: it reads its stored bytes
//! and hands them to the purge's [`StaleMarker`], which answers with the
//! bytes to store instead. The engine's marker ([`MarkStaleAt`]) rewrites
//! the envelope; a wrapper that transforms bytes ([`Staged`](crate::Staged),
//! an L1 that frames them) wraps the marker so that it sees envelopes.
//!
//! # What a tier implements
//!
//! [`Backend::purge`] has a default that works on any tier from its other
//! methods: a key is removed or re-written in place, a tag is invalidated
//! ([`Backend::invalidate_tag`]), and a prefix, or a soft purge by tag,
//! goes through the keys [`Backend::purge_keys`] lists. A tier that cannot
//! list its keys answers [`BackendError::Unsupported`] for those. Tiers
//! override `purge` where they do better (Redis removes a prefix with
//! `SCAN` and `UNLINK` and records purges in its audit stream).
//!
//! # Limits
//!
//! A soft purge reads, rewrites and writes back each entry: a value stored
//! (or removed) by another writer between the read and the write is
//! replaced by the stale copy, which is then served stale until a load
//! refreshes it. A purge that fails half-way (a tier that went down) has
//! purged some entries and not others; purges are idempotent, so the
//! caller retries.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hitbox_core::{CacheKey, Tag, Timestamp};

use crate::codec::envelope::RawEntry;
use crate::error::BackendError;
use crate::tiers::backend::{Backend, BackendFuture};

/// How many entries a soft purge of many keys rewrites at once.
pub const PURGE_CONCURRENCY: usize = 16;

/// What a purge matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PurgeTarget {
    /// The entry stored under this key.
    Key(CacheKey),
    /// Every entry whose key ([`CacheKey::as_str`]) starts with this. Build
    /// it with [`KeyBuilder::key_prefix`](hitbox_core::KeyBuilder::key_prefix)
    /// so that it ends at a part boundary. Never empty (the engine refuses
    /// an empty one).
    Prefix(String),
    /// Every entry tagged with this.
    Tag(Tag),
}

impl PurgeTarget {
    /// Whether an entry under `key` with `tags` is one this purge targets.
    pub fn matches(&self, key: &CacheKey, tags: &[Tag]) -> bool {
        match self {
            PurgeTarget::Key(target) => target == key,
            PurgeTarget::Prefix(prefix) => key.as_str().starts_with(prefix.as_str()),
            PurgeTarget::Tag(tag) => tags.contains(tag),
        }
    }

    /// `key`, `prefix` or `tag`: for logs and metrics.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }

    /// Every [`kind`](Self::kind), in the order of their counters.
    pub(crate) const KINDS: [&'static str; 3] = ["key", "prefix", "tag"];

    pub(crate) const fn kind_index(&self) -> usize {
        match self {
            PurgeTarget::Key(_) => 0,
            PurgeTarget::Prefix(_) => 1,
            PurgeTarget::Tag(_) => 2,
        }
    }
}

/// Whether a purge removes entries or marks them stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurgeMode {
    /// Remove: the next read misses.
    Hard,
    /// Mark stale: served stale (within its windows, counted from the
    /// purge) while one load refreshes it.
    Soft,
}

impl PurgeMode {
    /// Both modes, in the order of their counters.
    pub(crate) const ALL: [PurgeMode; 2] = [PurgeMode::Hard, PurgeMode::Soft];

    /// `hard` or `soft`: the `mode` label of the purge metrics and the
    /// `hitbox.purge.mode` field of the purge spans.
    ///
    /// ```
    /// use hitbox_backend::PurgeMode;
    ///
    /// assert_eq!(PurgeMode::Hard.as_str(), "hard");
    /// assert_eq!(PurgeMode::Soft.as_str(), "soft");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            PurgeMode::Hard => "hard",
            PurgeMode::Soft => "soft",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for PurgeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`StaleMarker`] makes of one stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marked {
    /// Store these bytes instead, for `ttl`, with these tags.
    Replace {
        /// The new stored bytes.
        bytes: Bytes,
        /// How long the tier keeps them.
        ttl: Duration,
        /// The entry's tags (unchanged).
        tags: Vec<Tag>,
    },
    /// Leave it as it is (stale already).
    Keep,
    /// Remove it: it has no grace left, or cannot be read.
    Remove,
}

/// How a soft purge rewrites one stored entry; see the [module
/// documentation](self). Given the bytes a tier read under a key, it says
/// what to store instead. It does no I/O.
pub trait StaleMarker: Send + Sync + 'static {
    /// What to do with `stored`, read under `key`.
    fn mark(&self, key: &CacheKey, stored: Bytes) -> Marked;
}

/// The engine's [`StaleMarker`]: reads the envelope, moves its metadata to
/// [`EntryMeta::purged`](hitbox_core::EntryMeta::purged)(hitbox_core::EntryMeta::purged) at a given time,
/// and writes the envelope again (the value is not decoded). An entry that
/// does not read as an envelope is removed: it would read as a miss anyway.
///
/// ```
/// use std::time::Duration;
/// use hitbox_backend::envelope::{RawEntry, encode_entry};
/// use hitbox_backend::purge::{MarkStaleAt, Marked, StaleMarker};
/// use hitbox_backend::Format;
/// use hitbox_core::{CacheKey, EntryMeta, Freshness, Timestamp};
///
/// let key = CacheKey::builder("k").build();
/// let t0 = Timestamp::from_millis(1_000_000);
/// let mut meta = EntryMeta::fresh_for(t0, Duration::from_secs(60));
/// meta.stale_until = meta.fresh_until.add(Duration::from_secs(30));
/// let stored = encode_entry(&7u32, &meta, Format::Json, &key).unwrap();
///
/// let now = t0.add(Duration::from_secs(5));
/// let Marked::Replace { bytes, ttl, .. } = MarkStaleAt::new(now).mark(&key, stored) else {
///     panic!("a fresh entry is rewritten");
/// };
/// assert_eq!(ttl, Duration::from_secs(30));
/// let raw = RawEntry::decode(bytes, &key).unwrap();
/// assert_eq!(raw.meta.freshness(now), Freshness::Stale);
/// assert_eq!(raw.value::<u32>(Format::Json).unwrap(), 7);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkStaleAt {
    now: Timestamp,
}

impl MarkStaleAt {
    /// A marker for a purge made at `now`.
    pub fn new(now: Timestamp) -> Self {
        MarkStaleAt { now }
    }

    /// When the purge was made.
    pub fn now(&self) -> Timestamp {
        self.now
    }
}

impl StaleMarker for MarkStaleAt {
    fn mark(&self, key: &CacheKey, stored: Bytes) -> Marked {
        let mut raw = match RawEntry::decode(stored, key) {
            Ok(raw) => raw,
            Err(reason) => {
                tracing::debug!(key = %key.log_id(), %reason, "unreadable entry removed by a soft purge");
                return Marked::Remove;
            }
        };
        if raw.meta.fresh_until <= self.now {
            return Marked::Keep;
        }
        raw.meta = raw.meta.purged(self.now);
        let ttl = raw.meta.time_to_expiry(self.now);
        if ttl.is_zero() {
            return Marked::Remove;
        }
        Marked::Replace {
            bytes: raw.encode(key),
            ttl,
            tags: raw.meta.tags.clone(),
        }
    }
}

/// One purge: what it matches, and for a soft purge, how entries are
/// marked stale. Cheap to clone.
///
/// ```
/// use hitbox_backend::purge::{Purge, PurgeTarget};
/// use hitbox_core::{Tag, Timestamp};
///
/// let hard = Purge::hard(PurgeTarget::Tag(Tag::from("catalog")));
/// assert!(!hard.is_soft());
/// let soft = Purge::soft(PurgeTarget::Prefix("shop:v1:".into()), Timestamp::from_millis(0));
/// assert!(soft.is_soft());
/// ```
#[derive(Clone)]
pub struct Purge {
    target: PurgeTarget,
    marker: Option<Arc<dyn StaleMarker>>,
}

impl std::fmt::Debug for Purge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purge")
            .field("target", &self.target)
            .field("soft", &self.is_soft())
            .finish()
    }
}

impl Purge {
    /// A hard purge of `target`: its entries are removed.
    pub fn hard(target: PurgeTarget) -> Purge {
        Purge { target, marker: None }
    }

    /// A soft purge of `target` made at `now`: its entries are marked stale
    /// by [`MarkStaleAt`].
    pub fn soft(target: PurgeTarget, now: Timestamp) -> Purge {
        Purge::soft_with(target, Arc::new(MarkStaleAt::new(now)))
    }

    /// A soft purge of `target` whose entries are rewritten by `marker`.
    pub fn soft_with(target: PurgeTarget, marker: Arc<dyn StaleMarker>) -> Purge {
        Purge {
            target,
            marker: Some(marker),
        }
    }

    /// A purge of `target` in `mode`, made at `now`.
    pub fn new(target: PurgeTarget, mode: PurgeMode, now: Timestamp) -> Purge {
        match mode {
            PurgeMode::Hard => Purge::hard(target),
            PurgeMode::Soft => Purge::soft(target, now),
        }
    }

    /// What it matches.
    pub fn target(&self) -> &PurgeTarget {
        &self.target
    }

    /// Its mode.
    pub fn mode(&self) -> PurgeMode {
        if self.is_soft() {
            PurgeMode::Soft
        } else {
            PurgeMode::Hard
        }
    }

    /// Whether it marks entries stale rather than removing them.
    pub fn is_soft(&self) -> bool {
        self.marker.is_some()
    }

    /// The marker of a soft purge.
    pub fn marker(&self) -> Option<&Arc<dyn StaleMarker>> {
        self.marker.as_ref()
    }

    /// The same purge with its marker (if soft) replaced by what `wrap`
    /// makes of it: for a tier that transforms the bytes it stores.
    pub fn map_marker(&self, wrap: impl FnOnce(Arc<dyn StaleMarker>) -> Arc<dyn StaleMarker>) -> Purge {
        Purge {
            target: self.target.clone(),
            marker: self.marker.clone().map(wrap),
        }
    }
}

/// What [`Backend::purge`] does by default, from the tier's other methods;
/// see the [module documentation](self). Public for tiers that override
/// `purge` for some targets and not others.
pub async fn purge_default<B: Backend + ?Sized>(tier: &B, purge: &Purge) -> Result<u64, BackendError> {
    match (purge.target(), purge.marker()) {
        (PurgeTarget::Key(key), None) => Ok(u64::from(tier.remove(key).await?)),
        (PurgeTarget::Tag(tag), None) => tier.invalidate_tag(tag).await,
        (PurgeTarget::Key(key), Some(marker)) => Ok(u64::from(mark_stale(tier, key, &**marker).await?)),
        (target @ PurgeTarget::Prefix(_), None) => {
            let keys = tier.purge_keys(target).await?;
            count_all(keys.iter().map(|key| tier.remove(key)).collect()).await
        }
        (target, Some(marker)) => {
            let keys = tier.purge_keys(target).await?;
            let marker = &**marker;
            count_all(
                keys.iter()
                    .map(|key| -> BackendFuture<'_, bool> { Box::pin(mark_stale(tier, key, marker)) })
                    .collect(),
            )
            .await
        }
    }
}

/// Runs `operations`, [`PURGE_CONCURRENCY`] at a time, and counts the
/// `true` answers. Every one runs; the first error is returned.
pub async fn count_all(operations: Vec<BackendFuture<'_, bool>>) -> Result<u64, BackendError> {
    let mut done = 0;
    let mut first_error = None;
    let mut results = futures::stream::iter(operations).buffer_unordered(PURGE_CONCURRENCY);
    while let Some(result) = results.next().await {
        match result {
            Ok(true) => done += 1,
            Ok(false) => {}
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(done),
    }
}

/// Marks the entry under `key` in `tier` stale with `marker`: reads it,
/// and writes back (or removes) what the marker says. Whether there was an
/// entry.
pub async fn mark_stale<B: Backend + ?Sized>(
    tier: &B,
    key: &CacheKey,
    marker: &dyn StaleMarker,
) -> Result<bool, BackendError> {
    let Some(stored) = tier.read(key).await? else {
        return Ok(false);
    };
    match marker.mark(key, stored) {
        Marked::Keep => Ok(true),
        Marked::Remove => {
            tier.remove(key).await?;
            Ok(true)
        }
        Marked::Replace { bytes, ttl, tags } => {
            tier.write(key, bytes, ttl, &tags).await?;
            Ok(true)
        }
    }
}

/// The error of a tier asked for keys it cannot list.
pub fn unsupported(tier: &str, operation: &'static str) -> BackendError {
    BackendError::Unsupported {
        tier: tier.into(),
        operation,
    }
}
