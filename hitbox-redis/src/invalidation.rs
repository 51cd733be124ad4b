//! Invalidation across instances: deletes, tag invalidations and purges made
//! by one process reach the in-process tier (L1) of every other process
//! sharing the Redis, through Redis pub/sub.
//!
//! # The pieces
//!
//! An [`InvalidationBus`] belongs to one instance (one process, or one
//! [`Cache`](hitbox_backend::Cache) among several in a process). It is
//! started over the instance's [`RedisBackend`] and its L1 backend (moka,
//! typically), and hands out two wrappers:
//!
//! - [`InvalidationBus::local_tier`]: a [`LocalTier`], the L1 as the
//!   composition should see it. It caps lifetimes while the bus is not
//!   subscribed (see *Degraded mode* below) and implements purges.
//! - [`InvalidationBus::broadcasting`]: a [`Broadcasting`] wrapper for the
//!   whole composition. Its [`remove`](Backend::remove) and
//!   [`invalidate_tag`](Backend::invalidate_tag) do the work (in L1 and in
//!   Redis), then publish a message saying what was invalidated.
//!
//! ```no_run
//! use std::time::Duration;
//! use hitbox_backend::{Cache, Compose, Backend, MemoryBackend};
//! use hitbox_redis::RedisBackend;
//! use hitbox_redis::invalidation::InvalidationBus;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisBackend::from_url("redis://127.0.0.1:6379")?;
//! let near = MemoryBackend::new(); // hitbox_moka::MokaBackend in practice
//! let bus = InvalidationBus::builder(&redis)
//!     .degraded_ttl(Duration::from_secs(5))
//!     .start(near)?;
//! let cache = Cache::new(bus.broadcasting(bus.local_tier().compose(redis.clone())));
//! bus.wait_subscribed(Duration::from_secs(5)).await?;
//!
//! // Removed here, in Redis, and from every other instance's L1.
//! # let key = hitbox_core::CacheKey::builder("k").build();
//! cache.delete(&key).await?;
//! // Every instance's L1 emptied (Redis keeps its entries).
//! bus.purge().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The bus subscribes, with a fred client of its own built from the
//! backend's configuration, to one channel (by default
//! `<key prefix>#invalidations`, see [`InvalidationBusBuilder::channel`]), and
//! applies each message from another instance to its L1: a key is removed, a
//! tag is invalidated, a purge empties the L1. Messages carrying the bus's
//! own [`OriginId`] are skipped (and counted): that instance did the work
//! before publishing.
//!
//! Classic `PUBLISH`/`SUBSCRIBE` is used, for a standalone server, sentinels
//! and clusters alike: a cluster forwards a `PUBLISH` to every node, and fred
//! sends the `SUBSCRIBE` to one node chosen by the client's id.
//!
//! # Message format
//!
//! A message is one line of UTF-8 text, fields separated by single spaces:
//!
//! ```text
//! hbinv1 <origin> key <stored key>
//! hbinv1 <origin> tag <tag name>
//! hbinv1 <origin> prefix <key prefix>
//! hbinv1 <origin> purge
//! hbinv1 <origin> soft-key <stored key>
//! hbinv1 <origin> soft-tag <tag name>
//! hbinv1 <origin> soft-prefix <key prefix>
//! ```
//!
//! `hbinv1` names the format (a later format gets another word, so old
//! listeners ignore what they do not understand). `<origin>` is the
//! publisher's [`OriginId`] (no spaces). The payload is everything after the
//! third space, taken as it is (it may contain spaces): the key as the tiers
//! store it ([`CacheKey::as_str`], already a digest for keys with sensitive
//! parts, and without the Redis key prefix) or the tag's name. A message never
//! carries a value. See [`InvalidationMessage`].
//!
//! The `soft-*` kinds are soft purges (see [`hitbox_backend::purge`]): the
//! entries are marked stale, not removed. They were added to format
//! `hbinv1` without changing what the older kinds mean, so every message an
//! older version sends reads as before. A listener of an older version does
//! not know them and drops them as unreadable (its L1 keeps its copy until
//! that expires): while instances of two versions share a bus, purge hard.
//! Hard purges by key, tag and prefix use the `key`, `tag` and `prefix`
//! kinds every version reads.
//!
//! # Degraded mode
//!
//! While the subscription is down (not yet established, connection lost,
//! resubscription failed), messages may be missed, so the L1 is trusted for
//! a short time only ([`InvalidationBusBuilder::degraded_ttl`], default
//! [`DEFAULT_DEGRADED_TTL`]):
//!
//! - writes to the [`LocalTier`] get at most that lifetime;
//! - entries written before the loss are served for at most that long after
//!   it (each entry carries the time it was written).
//!
//! So no entry is served from L1 more than `degraded_ttl` after an
//! invalidation it may have missed. fred reconnects (with the backend's
//! reconnect policy) and the bus subscribes again on every reconnection,
//! and retries every [`InvalidationBusBuilder::retry_interval`] while it is
//! down. A subscription Redis refuses (an ACL user not granted the
//! channel) leaves it down too, retried the same way. Losses and
//! resubscriptions are logged with `tracing`.
//!
//! # Catching up from the audit stream
//!
//! Messages published while the subscription was down are lost for good.
//! When the backend keeps the [audit stream](crate::audit) (the default),
//! the bus finds them there: it follows the stream in a consumer group of
//! its own, named after its [`OriginId`], created at the end of the stream
//! when the bus first subscribes. Once subscribed again after a loss, and
//! before it trusts its L1 again, it reads its group to the end and applies
//! to its L1 what other instances invalidated meanwhile; everything else
//! stays in the L1. ([`BusEvent::CaughtUp`] says how many it applied.)
//!
//! It purges its L1 instead, as it would without the stream, when it
//! cannot know all it missed: the stream is off, the stream was trimmed
//! past its group's position (more invalidations than the stream's
//! `MAXLEN` came meanwhile), its group is gone, or the stream cannot be
//! read. [`InvalidationBusBuilder::purge_on_resubscribe`] turns that purge
//! off.
//!
//! While subscribed, the bus reads its group every
//! [`InvalidationBusBuilder::stream_poll_interval`] (1 s by default), which
//! keeps its position close (a catch-up reads little and is rarely trimmed
//! past) and applies what pub/sub did not bring: an invalidation by an
//! instance without a bus, or one whose publish failed. An invalidation
//! that arrives both ways is applied once: the bus remembers the last 1024
//! it applied, for a minute, by origin and content. The group is deleted when the bus
//! stops; a process that dies leaves its (empty) group behind, which
//! [`AuditLog::destroy_group`] removes.
//!
//! # Purges
//!
//! The L1 trait has no "clear", so the [`LocalTier`] prefixes every entry
//! it stores with a 16-byte header: a generation number and the write time.
//! A purge bumps the generation; entries of an older generation read as
//! misses (and are removed when read; the others stay in memory until they
//! expire or are evicted).
//!
//! # Limits
//!
//! - Pub/sub delivery is at most once: a message published while a
//!   listener is disconnected is lost (hence the catch-up from the stream,
//!   or the purge). A publish that fails makes [`Broadcasting::remove`]
//!   return an error after the local and Redis tiers were invalidated; the
//!   caller may retry (and the others read it from the stream meanwhile).
//! - A catch-up checks whether the stream was trimmed past its position
//!   before it reads: entries trimmed while it reads (more than the
//!   stream's `MAXLEN` appended during the catch-up itself) go unseen.
//! - An instance that read the old entry from Redis just before the
//!   invalidation, and refills its L1 just after the message was applied,
//!   keeps that copy until its L1 lifetime ends (bounded by the
//!   composition's refill cap).
//! - Loads in flight on other instances are not cancelled (the engine of the
//!   instance that invalidates cancels its own), but a tag invalidation
//!   keeps their results out of Redis and out of their L1 (the tag
//!   generations described in the [crate documentation](crate)); a key
//!   deletion does not.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use fred::prelude::{Builder, Client, ClientLike, EventInterface, Pool, PubsubInterface, ReconnectPolicy};
use fred::types::{ClusterHash, CustomCommand, Message};
use hitbox_backend::purge::{MarkStaleAt, Marked, Purge, PurgeTarget, StaleMarker};
use hitbox_backend::{Backend, BackendError, BackendFuture, TagGenerations, TierStats};
use hitbox_core::{CacheKey, Clock, SharedClock, SystemClock, Tag};
use tokio::sync::{broadcast, watch};

use crate::audit::{AuditBatch, AuditLog, GroupStart};
use crate::{RedisBackend, RedisError};

/// The default lifetime cap of L1 entries while the subscription is down.
pub const DEFAULT_DEGRADED_TTL: Duration = Duration::from_secs(5);

/// The default timeout of a `PUBLISH`.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// The default time between resubscription attempts while down.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// What the default channel name adds to the key prefix.
pub const CHANNEL_SUFFIX: &str = "#invalidations";

/// The first word of every message; see the [module documentation](self).
pub const FORMAT_TAG: &str = "hbinv1";

/// The size of the header a [`LocalTier`] puts before every value.
pub const LOCAL_HEADER_LEN: usize = 16;

/// The default time between two reads of the audit stream while
/// subscribed; see [`InvalidationBusBuilder::stream_poll_interval`].
pub const DEFAULT_STREAM_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How many messages the subscriber's client buffers for the listener.
const MESSAGE_BUFFER: usize = 1024;

/// Entries read from the audit stream per call.
const STREAM_BATCH: usize = 512;

/// How many invalidations applied through one path (pub/sub or the stream)
/// are remembered, to skip the same one arriving through the other.
const RECENT_MAX: usize = 1024;

/// How long they are remembered.
const RECENT_AGE: Duration = Duration::from_secs(60);

/// Why the subscription ends when the bus itself stops.
const STOPPED: &str = "stopped";

/// `down_since` when the subscription is up.
const UP: u64 = u64::MAX;

/// A random hexadecimal string of 32 digits, from the standard library's
/// randomly keyed hasher, the time, the process id and a counter: unique per
/// call, and unpredictable enough for lock tokens and origin ids.
pub(crate) fn random_token() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut token = String::with_capacity(32);
    for round in 0u64..2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(round);
        hasher.write_u64(call);
        hasher.write_u64(nanos);
        hasher.write_u32(std::process::id());
        token.push_str(&format!("{:016x}", hasher.finish()));
    }
    token
}

/// Who published a message: unique per [`InvalidationBus`], so that an
/// instance recognises (and skips) its own messages.
///
/// ```
/// use hitbox_redis::OriginId;
///
/// let named = OriginId::new("web-3.pid-4711").unwrap();
/// assert_eq!(named.as_str(), "web-3.pid-4711");
/// assert!(OriginId::new("has space").is_err());
/// assert_eq!(OriginId::random().as_str().len(), 32);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginId(Arc<str>);

impl OriginId {
    /// A new random id (32 hexadecimal digits).
    pub fn random() -> OriginId {
        OriginId(random_token().into())
    }

    /// An id of the caller's choosing (a host name and process id, say):
    /// non-empty, printable ASCII without spaces, at most 128 bytes.
    pub fn new(id: &str) -> Result<OriginId, RedisError> {
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RedisError::Invalid(
                "an origin id is 1 to 128 printable ASCII characters without spaces",
            ));
        }
        Ok(OriginId(id.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OriginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a message invalidates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// The entry stored under this key ([`CacheKey::as_str`]).
    Key(String),
    /// Every entry with this tag ([`Tag::as_str`]).
    Tag(String),
    /// Every entry whose key starts with this ([`CacheKey::as_str`]): a
    /// hard [purge by prefix](hitbox_backend::Cache::purge_prefix). A bus
    /// removes them from its L1 (or purges its whole L1 when the L1 cannot
    /// list its keys).
    Prefix(String),
    /// Every entry of the L1.
    Purge,
    /// The entry under this key, soft-purged: marked stale, not removed
    /// (see [`hitbox_backend::purge`]). A bus marks its L1 copy stale.
    SoftKey(String),
    /// Every entry with this tag, soft-purged.
    SoftTag(String),
    /// Every entry whose key starts with this, soft-purged.
    SoftPrefix(String),
}

impl Invalidation {
    /// The invalidation that tells other instances about `purge`.
    pub fn of_purge(purge: &Purge) -> Invalidation {
        match (purge.target(), purge.is_soft()) {
            (PurgeTarget::Key(key), false) => Invalidation::Key(key.as_str().to_owned()),
            (PurgeTarget::Tag(tag), false) => Invalidation::Tag(tag.as_str().to_owned()),
            (PurgeTarget::Prefix(prefix), false) => Invalidation::Prefix(prefix.clone()),
            (PurgeTarget::Key(key), true) => Invalidation::SoftKey(key.as_str().to_owned()),
            (PurgeTarget::Tag(tag), true) => Invalidation::SoftTag(tag.as_str().to_owned()),
            (PurgeTarget::Prefix(prefix), true) => Invalidation::SoftPrefix(prefix.clone()),
        }
    }

    /// Whether it marks entries stale rather than removing them.
    pub fn is_soft(&self) -> bool {
        matches!(
            self,
            Invalidation::SoftKey(_) | Invalidation::SoftTag(_) | Invalidation::SoftPrefix(_)
        )
    }

    /// What it matches as a purge target (`None` for [`Invalidation::Purge`]).
    pub fn target(&self) -> Option<PurgeTarget> {
        Some(match self {
            Invalidation::Key(key) | Invalidation::SoftKey(key) => {
                PurgeTarget::Key(CacheKey::from_encoded(key.as_str()))
            }
            Invalidation::Tag(tag) | Invalidation::SoftTag(tag) => PurgeTarget::Tag(Tag::new(tag.as_str())),
            Invalidation::Prefix(prefix) | Invalidation::SoftPrefix(prefix) => {
                PurgeTarget::Prefix(prefix.clone())
            }
            Invalidation::Purge => return None,
        })
    }
}

/// One message on the channel; see the [module documentation](self) for the
/// wire format.
///
/// ```
/// use hitbox_redis::OriginId;
/// use hitbox_redis::invalidation::{Invalidation, InvalidationMessage};
///
/// let message = InvalidationMessage {
///     origin: OriginId::new("web-3").unwrap(),
///     invalidation: Invalidation::Tag("team:ops".into()),
/// };
/// assert_eq!(message.encode(), "hbinv1 web-3 tag team:ops");
/// assert_eq!(InvalidationMessage::decode(message.encode().as_bytes()), Some(message));
/// assert_eq!(InvalidationMessage::decode(b"hbinv9 web-3 purge"), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidationMessage {
    /// Who published it.
    pub origin: OriginId,
    /// What it invalidates.
    pub invalidation: Invalidation,
}

impl InvalidationMessage {
    /// The message as sent.
    pub fn encode(&self) -> String {
        let origin = self.origin.as_str();
        match &self.invalidation {
            Invalidation::Key(key) => format!("{FORMAT_TAG} {origin} key {key}"),
            Invalidation::Tag(tag) => format!("{FORMAT_TAG} {origin} tag {tag}"),
            Invalidation::Prefix(prefix) => format!("{FORMAT_TAG} {origin} prefix {prefix}"),
            Invalidation::Purge => format!("{FORMAT_TAG} {origin} purge"),
            Invalidation::SoftKey(key) => format!("{FORMAT_TAG} {origin} soft-key {key}"),
            Invalidation::SoftTag(tag) => format!("{FORMAT_TAG} {origin} soft-tag {tag}"),
            Invalidation::SoftPrefix(prefix) => format!("{FORMAT_TAG} {origin} soft-prefix {prefix}"),
        }
    }

    /// Reads a message; `None` for anything that is not one (another format,
    /// a truncated message, an unknown kind).
    pub fn decode(message: &[u8]) -> Option<InvalidationMessage> {
        let text = std::str::from_utf8(message).ok()?;
        let mut fields = text.splitn(4, ' ');
        if fields.next()? != FORMAT_TAG {
            return None;
        }
        let origin = OriginId::new(fields.next()?).ok()?;
        let invalidation = match (fields.next()?, fields.next()) {
            ("key", Some(key)) => Invalidation::Key(key.to_owned()),
            ("tag", Some(tag)) if !tag.is_empty() => Invalidation::Tag(tag.to_owned()),
            ("prefix", Some(prefix)) => Invalidation::Prefix(prefix.to_owned()),
            ("purge", None) => Invalidation::Purge,
            ("soft-key", Some(key)) => Invalidation::SoftKey(key.to_owned()),
            ("soft-tag", Some(tag)) if !tag.is_empty() => Invalidation::SoftTag(tag.to_owned()),
            ("soft-prefix", Some(prefix)) if !prefix.is_empty() => {
                Invalidation::SoftPrefix(prefix.to_owned())
            }
            _ => return None,
        };
        Some(InvalidationMessage { origin, invalidation })
    }
}

/// Something the bus did or saw; see [`InvalidationBus::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusEvent {
    /// A message from another instance was applied to the L1.
    Applied(Invalidation),
    /// A message of this instance's own came back and was skipped.
    SkippedOwn(Invalidation),
    /// A message could not be read and was dropped.
    Malformed,
    /// The subscription is (again) established.
    Subscribed,
    /// The subscription was lost: the bus is in degraded mode.
    Lost,
    /// The L1 was purged (by a message, [`InvalidationBus::purge`], a
    /// resubscription that could not catch up from the audit stream, or a
    /// listener that fell behind).
    Purged,
    /// An invalidation by another instance was read from the audit stream
    /// (pub/sub had not delivered it) and applied to the L1.
    Replayed(Invalidation),
    /// Back after a loss, the bus caught up from the audit stream instead
    /// of purging its L1: `applied` invalidations were missed and applied.
    CaughtUp {
        /// How many.
        applied: u64,
    },
}

/// What an [`InvalidationBus`] counted; see [`InvalidationBus::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvalidationStats {
    /// Messages published.
    pub published: u64,
    /// Publishes that failed or timed out.
    pub publish_failures: u64,
    /// Messages received (own ones and malformed ones included).
    pub received: u64,
    /// Messages from other instances applied to the L1.
    pub applied: u64,
    /// Own messages skipped.
    pub skipped_own: u64,
    /// Messages that could not be read.
    pub malformed: u64,
    /// Times the subscription was established (the first time included).
    pub subscriptions: u64,
    /// Times it was lost.
    pub losses: u64,
    /// Purges of the L1, for whatever reason.
    pub purges: u64,
    /// Invalidations read from the audit stream and applied (those
    /// pub/sub had not delivered).
    pub replayed: u64,
    /// Entries read from the audit stream and skipped: pub/sub had
    /// delivered them, or they were this instance's own.
    pub replay_skipped: u64,
    /// Losses of the subscription after which the bus caught up from the
    /// audit stream instead of purging its L1.
    pub catch_ups: u64,
    /// Whether the subscription is up now.
    pub subscribed: bool,
}

#[derive(Default)]
struct BusCounters {
    published: AtomicU64,
    publish_failures: AtomicU64,
    received: AtomicU64,
    applied: AtomicU64,
    skipped_own: AtomicU64,
    malformed: AtomicU64,
    subscriptions: AtomicU64,
    losses: AtomicU64,
    purges: AtomicU64,
    replayed: AtomicU64,
    replay_skipped: AtomicU64,
    catch_ups: AtomicU64,
}

/// How an invalidation reached the L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// A pub/sub message from another instance, or this instance's own
    /// invalidation through [`Broadcasting`] or the bus.
    Delivered,
    /// The audit stream.
    Stream,
}

/// Invalidations applied lately, by the path they came through: the same
/// invalidation arriving through the other path is applied once. They are
/// matched by origin and content, one for one, so two identical
/// invalidations are each matched once.
#[derive(Default)]
struct Recent {
    seen: VecDeque<(Instant, Via, OriginId, Invalidation)>,
}

impl Recent {
    /// Whether `invalidation` from `origin` was applied already through
    /// the other path (and forgets it then); otherwise remembers it.
    fn seen_elsewhere(&mut self, via: Via, origin: &OriginId, invalidation: &Invalidation) -> bool {
        let now = Instant::now();
        while self
            .seen
            .front()
            .is_some_and(|(at, ..)| now.duration_since(*at) > RECENT_AGE)
        {
            self.seen.pop_front();
        }
        let earlier = self
            .seen
            .iter()
            .position(|(_, path, o, i)| *path != via && o == origin && i == invalidation);
        if let Some(earlier) = earlier {
            self.seen.remove(earlier);
            return true;
        }
        if self.seen.len() == RECENT_MAX {
            self.seen.pop_front();
        }
        self.seen
            .push_back((now, via, origin.clone(), invalidation.clone()));
        false
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the bus, its wrappers and its listener task share.
struct BusState {
    l1: Arc<dyn Backend>,
    publisher: Pool,
    label: Arc<str>,
    channel: String,
    origin: OriginId,
    /// The origin of the entries the tier appends to the stream: the same
    /// as `origin` for the first bus over a backend.
    tier_origin: OriginId,
    /// The audit stream, and this instance's consumer group in it (named
    /// after `origin`).
    audit: Option<AuditLog>,
    stream_poll_interval: Duration,
    recent: Mutex<Recent>,
    degraded_ttl: Duration,
    purge_on_resubscribe: bool,
    publish_timeout: Duration,
    retry_interval: Duration,
    epoch: Instant,
    /// The clock soft purges from other instances are stamped with.
    clock: SharedClock,
    generation: AtomicU64,
    /// Milliseconds since `epoch` at which the subscription was lost, or
    /// [`UP`].
    down_since: AtomicU64,
    subscribed: watch::Sender<bool>,
    events: broadcast::Sender<BusEvent>,
    counters: BusCounters,
}

impl BusState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(UP - 1)
    }

    fn is_up(&self) -> bool {
        self.down_since.load(Ordering::SeqCst) == UP
    }

    fn emit(&self, event: BusEvent) {
        // No receiver is fine.
        let _ = self.events.send(event);
    }

    /// Whether an entry written at `written_ms` may be served now.
    fn trusted(&self, written_ms: u64) -> bool {
        let down = self.down_since.load(Ordering::SeqCst);
        if down == UP {
            return true;
        }
        let since = written_ms.max(down);
        self.now_ms().saturating_sub(since) < self.degraded_ttl.as_millis() as u64
    }

    fn mark_down(&self, why: &str) {
        let now = self.now_ms();
        if self
            .down_since
            .compare_exchange(UP, now, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            bump(&self.counters.losses);
            self.subscribed.send_replace(false);
            if why == STOPPED {
                tracing::debug!(channel = %self.channel, "invalidation listener stopped");
                self.emit(BusEvent::Lost);
                return;
            }
            tracing::warn!(
                channel = %self.channel, why,
                degraded_ttl = ?self.degraded_ttl,
                "invalidation subscription lost; L1 lifetimes are capped until it is back"
            );
            self.emit(BusEvent::Lost);
        }
    }

    /// Marks the subscription up; `purge` when messages published while it
    /// was down may have been missed and could not be caught up.
    fn mark_up(&self, purge: bool) {
        if self.is_up() {
            return;
        }
        if purge {
            self.purge_local();
        }
        self.down_since.store(UP, Ordering::SeqCst);
        bump(&self.counters.subscriptions);
        self.subscribed.send_replace(true);
        tracing::info!(channel = %self.channel, "invalidation subscription established");
        self.emit(BusEvent::Subscribed);
    }

    fn purge_local(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        bump(&self.counters.purges);
        tracing::debug!(channel = %self.channel, "L1 purged");
        self.emit(BusEvent::Purged);
    }

    /// What to do once subscribed: nothing if the subscription was up
    /// already (another node reconnected); otherwise position the stream
    /// group (the first time) or catch up from it (after a loss, falling
    /// back to a purge), then mark the subscription up.
    async fn subscribed(&self) {
        if self.is_up() {
            return;
        }
        if self.counters.subscriptions.load(Ordering::Relaxed) == 0 {
            // The L1 starts out with nothing to invalidate: follow the
            // stream from here.
            self.reset_group().await;
            self.mark_up(false);
            return;
        }
        let caught_up = self.audit.is_some() && self.catch_up().await;
        self.mark_up(!caught_up && self.purge_on_resubscribe);
    }

    /// Creates this instance's group at the end of the stream, or moves it
    /// there. Failures are logged: the next catch-up then finds no usable
    /// group and purges.
    async fn reset_group(&self) {
        let Some(audit) = &self.audit else {
            return;
        };
        let group = self.origin.as_str();
        let reset = async {
            if !audit.create_group(group, GroupStart::End).await? {
                audit.set_group_position(group, GroupStart::End).await?;
            }
            Ok::<(), BackendError>(())
        };
        if let Err(error) = reset.await {
            tracing::warn!(stream = audit.key(), %error, "could not position this instance's group in the audit stream");
        }
    }

    /// Applies what the stream holds beyond this instance's group position;
    /// true when that is all that was missed. Otherwise (no group, trimmed
    /// past it, unreadable entries, errors) the group is moved to the end
    /// and false says the L1 must be purged.
    async fn catch_up(&self) -> bool {
        let Some(audit) = &self.audit else {
            return false;
        };
        let group = self.origin.as_str();
        let usable = match audit.group_position(group).await {
            Ok(Some(position)) if !position.trimmed_past => true,
            Ok(Some(position)) => {
                tracing::warn!(stream = audit.key(), last = %position.last_delivered, "the audit stream was trimmed past this instance's position; purging L1");
                false
            }
            Ok(None) => {
                tracing::warn!(
                    stream = audit.key(),
                    "this instance's group is gone from the audit stream; purging L1"
                );
                false
            }
            Err(error) => {
                tracing::warn!(stream = audit.key(), %error, "the audit stream cannot be read; purging L1");
                false
            }
        };
        let drained = if usable { self.drain_stream().await } else { None };
        match drained {
            Some(applied) => {
                bump(&self.counters.catch_ups);
                tracing::info!(stream = audit.key(), applied, "caught up from the audit stream");
                self.emit(BusEvent::CaughtUp { applied });
                true
            }
            None => {
                self.reset_group().await;
                false
            }
        }
    }

    /// Reads this instance's group to the end, applying what pub/sub did
    /// not deliver, and acknowledges it. The number applied, or `None` when
    /// something could not be read (then the L1 may miss it).
    async fn drain_stream(&self) -> Option<u64> {
        let audit = self.audit.as_ref()?;
        let group = self.origin.as_str();
        let mut applied = 0;
        loop {
            let batch: AuditBatch = match audit.read_group(group, group, STREAM_BATCH).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(stream = audit.key(), %error, "reading the audit stream failed");
                    return None;
                }
            };
            if batch.is_empty() {
                return Some(applied);
            }
            for entry in &batch.entries {
                // This instance's own entries were applied when they were
                // made, and noted then; another instance's, when pub/sub
                // delivered them.
                let delivered = self
                    .recent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .seen_elsewhere(Via::Stream, &entry.origin, &entry.invalidation);
                if delivered {
                    bump(&self.counters.replay_skipped);
                    continue;
                }
                self.apply(&entry.invalidation).await;
                applied += 1;
                bump(&self.counters.replayed);
                self.emit(BusEvent::Replayed(entry.invalidation.clone()));
            }
            if let Err(error) = audit.ack(group, &batch.ids()).await {
                tracing::debug!(stream = audit.key(), %error, "acknowledging audit entries failed");
            }
            if !batch.unreadable.is_empty() {
                return None;
            }
        }
    }

    /// A soft purge's marker for entries of the L1 as the [`LocalTier`]
    /// frames them, marking them stale at `now`.
    fn local_marker(&self, inner: Arc<dyn StaleMarker>) -> Arc<dyn StaleMarker> {
        Arc::new(LocalMarker {
            generation: self.generation.load(Ordering::SeqCst),
            cap: if self.is_up() {
                None
            } else {
                Some(self.degraded_ttl)
            },
            inner,
        })
    }

    /// Applies an invalidation from another instance to the L1.
    async fn apply(&self, invalidation: &Invalidation) {
        let result = match invalidation {
            Invalidation::Key(key) => {
                let key = CacheKey::from_encoded(key.as_str());
                self.l1.remove(&key).await.map(|_| ())
            }
            Invalidation::Tag(tag) => self.l1.invalidate_tag(&Tag::new(tag.as_str())).await.map(|_| ()),
            Invalidation::Prefix(prefix) => {
                let purge = Purge::hard(PurgeTarget::Prefix(prefix.clone()));
                if let Err(error) = self.l1.purge(&purge).await {
                    tracing::debug!(%error, "L1 cannot purge a prefix; purging it whole");
                    self.purge_local();
                }
                Ok(())
            }
            Invalidation::Purge => {
                self.purge_local();
                Ok(())
            }
            Invalidation::SoftKey(_) | Invalidation::SoftTag(_) | Invalidation::SoftPrefix(_) => {
                let target = invalidation.target().expect("a soft purge has a target");
                let now = Arc::new(MarkStaleAt::new(self.clock.now()));
                let purge = Purge::soft_with(target.clone(), self.local_marker(now));
                match self.l1.purge(&purge).await {
                    Ok(_) => Ok(()),
                    // Cannot mark them: forget them.
                    Err(error) => {
                        tracing::debug!(%error, "L1 cannot soft-purge; purging hard");
                        self.l1.purge(&Purge::hard(target)).await.map(|_| ())
                    }
                }
            }
        };
        if let Err(error) = result {
            // The L1 is in-process; this should not happen. Purge to be safe.
            tracing::warn!(%error, "applying an invalidation to L1 failed; purging L1");
            self.purge_local();
        }
    }

    /// Notes an invalidation this instance made and applied to its L1
    /// itself, appended to the stream as made by `origin`: when the bus
    /// reads it back from the stream, it skips it.
    fn note_own(&self, origin: &OriginId, invalidation: &Invalidation) {
        if self.audit.is_some() {
            self.recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .seen_elsewhere(Via::Delivered, origin, invalidation);
        }
    }

    /// Appends an invalidation made through the bus itself to the stream.
    async fn append(&self, invalidation: &Invalidation) -> Result<(), BackendError> {
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        self.note_own(&self.origin, invalidation);
        let append = audit.append_with(&self.publisher, &self.origin, invalidation, None);
        match tokio::time::timeout(self.publish_timeout, append).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(crate::backend_error(&self.label, error)),
            Err(_) => Err(BackendError::Timeout {
                tier: Arc::clone(&self.label),
                after: self.publish_timeout,
            }),
        }
    }

    async fn publish(&self, invalidation: Invalidation) -> Result<(), BackendError> {
        let message = InvalidationMessage {
            origin: self.origin.clone(),
            invalidation,
        }
        .encode();
        let send = self
            .publisher
            .next()
            .publish::<i64, _, _>(self.channel.as_str(), message);
        match tokio::time::timeout(self.publish_timeout, send).await {
            Ok(Ok(_listeners)) => {
                bump(&self.counters.published);
                Ok(())
            }
            Ok(Err(error)) => {
                bump(&self.counters.publish_failures);
                tracing::warn!(channel = %self.channel, %error, "invalidation publish failed");
                Err(crate::backend_error(&self.label, error))
            }
            Err(_) => {
                bump(&self.counters.publish_failures);
                tracing::warn!(channel = %self.channel, "invalidation publish timed out");
                Err(BackendError::Timeout {
                    tier: Arc::clone(&self.label),
                    after: self.publish_timeout,
                })
            }
        }
    }

    async fn handle(&self, message: Message) {
        bump(&self.counters.received);
        let decoded = message.value.as_bytes().and_then(InvalidationMessage::decode);
        let Some(decoded) = decoded else {
            bump(&self.counters.malformed);
            tracing::warn!(channel = %self.channel, "unreadable invalidation message dropped");
            self.emit(BusEvent::Malformed);
            return;
        };
        if decoded.origin == self.origin {
            bump(&self.counters.skipped_own);
            self.emit(BusEvent::SkippedOwn(decoded.invalidation));
            return;
        }
        if self.audit.is_some() {
            // Applied now; its stream entry, when read, is skipped (or, if
            // the stream got there first, this is the second delivery, and
            // applying it again only costs a refill).
            self.recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .seen_elsewhere(Via::Delivered, &decoded.origin, &decoded.invalidation);
        }
        self.apply(&decoded.invalidation).await;
        bump(&self.counters.applied);
        self.emit(BusEvent::Applied(decoded.invalidation));
    }
}

/// Configures an [`InvalidationBus`]; see [`InvalidationBus::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use hitbox_moka::MokaBackend;
/// use hitbox_redis::{OriginId, RedisBackend};
/// use hitbox_redis::invalidation::InvalidationBus;
///
/// # fn example(redis: RedisBackend) -> Result<(), hitbox_redis::RedisError> {
/// let bus = InvalidationBus::builder(&redis)
///     .channel("shop:invalidations")
///     .origin(OriginId::new("web-3")?)
///     .degraded_ttl(Duration::from_secs(2))
///     .purge_on_resubscribe(true)
///     .publish_timeout(Duration::from_millis(500))
///     .retry_interval(Duration::from_secs(1))
///     .start(MokaBackend::new(64 * 1024 * 1024))?;
/// assert_eq!(bus.channel(), "shop:invalidations");
/// # Ok(())
/// # }
/// ```
pub struct InvalidationBusBuilder {
    redis: RedisBackend,
    channel: Option<String>,
    origin: Option<OriginId>,
    degraded_ttl: Duration,
    purge_on_resubscribe: bool,
    publish_timeout: Duration,
    retry_interval: Duration,
    stream_poll_interval: Duration,
    clock: SharedClock,
}

impl fmt::Debug for InvalidationBusBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidationBusBuilder")
            .field("channel", &self.channel)
            .field("origin", &self.origin)
            .field("degraded_ttl", &self.degraded_ttl)
            .field("purge_on_resubscribe", &self.purge_on_resubscribe)
            .finish_non_exhaustive()
    }
}

impl InvalidationBusBuilder {
    /// The channel (default the backend's key prefix followed by
    /// [`CHANNEL_SUFFIX`]). Every instance sharing the cache must use the
    /// same one.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// This instance's id: the origin of its messages, and the name of its
    /// consumer group in the audit stream. By default the backend's
    /// [instance id](RedisBackend::instance_id) for the first bus started
    /// over a backend (set it there, with
    /// [`RedisBackendBuilder::instance_id`](crate::RedisBackendBuilder::instance_id),
    /// so that the tier's stream entries and the bus's messages carry the
    /// same origin), and [`OriginId::random`] for any further one, since
    /// two buses must not share an id.
    pub fn origin(mut self, origin: OriginId) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The lifetime cap of L1 entries while the subscription is down
    /// (default [`DEFAULT_DEGRADED_TTL`]).
    pub fn degraded_ttl(mut self, ttl: Duration) -> Self {
        self.degraded_ttl = ttl;
        self
    }

    /// Whether the L1 is purged when the subscription comes back after a
    /// loss (default `true`; see the [module documentation](self)).
    pub fn purge_on_resubscribe(mut self, purge: bool) -> Self {
        self.purge_on_resubscribe = purge;
        self
    }

    /// The timeout of a `PUBLISH` (default [`DEFAULT_PUBLISH_TIMEOUT`]).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How often to try subscribing again while down (default
    /// [`DEFAULT_RETRY_INTERVAL`]), besides on every reconnection.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// How often, while subscribed, the bus reads its consumer group in the
    /// audit stream (default [`DEFAULT_STREAM_POLL_INTERVAL`]): it keeps
    /// the group's position close, so that a catch-up after a loss has
    /// little to read and is not trimmed past, and applies what pub/sub
    /// did not deliver (a publish that failed, an instance without a bus).
    /// Unused when the backend's audit stream is off.
    pub fn stream_poll_interval(mut self, interval: Duration) -> Self {
        self.stream_poll_interval = interval;
        self
    }

    /// The clock that stamps the soft purges of other instances applied
    /// to the L1: their stale windows are counted from when this instance
    /// applies them (default [`SystemClock`]). Give it the engine's clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Starts the bus over `l1`, this instance's in-process tier: builds the
    /// subscriber client (from the backend's fred configuration, with its
    /// reconnect policy), connects it in the background and spawns the
    /// listener. Must be called inside a Tokio runtime; does not wait for
    /// the subscription (see [`InvalidationBus::wait_subscribed`]): until
    /// then the bus is in degraded mode.
    pub fn start(self, l1: impl Backend) -> Result<InvalidationBus, RedisError> {
        if self.degraded_ttl.is_zero()
            || self.publish_timeout.is_zero()
            || self.retry_interval.is_zero()
            || self.stream_poll_interval.is_zero()
        {
            return Err(RedisError::Invalid(
                "degraded_ttl, publish_timeout, retry_interval and stream_poll_interval must be longer than zero",
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisError::NoRuntime);
        }
        let pool = self.redis.pool().clone();
        let template = pool.next();
        let mut performance = template.perf_config();
        performance.broadcast_channel_capacity = performance.broadcast_channel_capacity.max(MESSAGE_BUFFER);
        let policy = template
            .client_reconnect_policy()
            .unwrap_or_else(|| ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
        let subscriber = Builder::from_config(template.client_config())
            .set_performance_config(performance)
            .set_connection_config(template.connection_config().clone())
            .set_policy(policy)
            .build()
            .map_err(RedisError::Config)?;

        let channel = self
            .channel
            .unwrap_or_else(|| format!("{}{CHANNEL_SUFFIX}", self.redis.key_prefix()));
        let (subscribed, _) = watch::channel(false);
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(BusState {
            l1: Arc::new(l1),
            publisher: pool,
            label: Arc::from(format!("{}-invalidation", self.redis.label())),
            channel,
            origin: self.origin.unwrap_or_else(|| {
                // The backend's id names one bus: its pub/sub messages and
                // the tier's stream entries then carry the same origin.
                if self.redis.claim_instance_id() {
                    self.redis.instance_id().clone()
                } else {
                    OriginId::random()
                }
            }),
            tier_origin: self.redis.instance_id().clone(),
            audit: self.redis.audit().cloned(),
            stream_poll_interval: self.stream_poll_interval,
            recent: Mutex::default(),
            degraded_ttl: self.degraded_ttl,
            purge_on_resubscribe: self.purge_on_resubscribe,
            publish_timeout: self.publish_timeout,
            retry_interval: self.retry_interval,
            epoch: Instant::now(),
            clock: self.clock,
            generation: AtomicU64::new(0),
            down_since: AtomicU64::new(0),
            subscribed,
            events,
            counters: BusCounters::default(),
        });

        // The receivers exist before the connection, so the first
        // "reconnection" (the initial connection) is seen.
        let receivers = Receivers {
            messages: subscriber.message_rx(),
            errors: subscriber.error_rx(),
            reconnects: subscriber.reconnect_rx(),
            unresponsive: subscriber.unresponsive_rx(),
        };
        drop(subscriber.connect());
        let task = tokio::spawn(listen(Arc::clone(&shared), subscriber.clone(), receivers));
        Ok(InvalidationBus {
            inner: Arc::new(BusInner {
                shared,
                subscriber,
                task,
            }),
        })
    }
}

struct Receivers {
    messages: broadcast::Receiver<Message>,
    errors: broadcast::Receiver<(fred::error::Error, Option<fred::types::config::Server>)>,
    reconnects: broadcast::Receiver<fred::types::config::Server>,
    unresponsive: broadcast::Receiver<fred::types::config::Server>,
}

/// Subscribes; true once Redis took the subscription.
///
/// fred takes a `SUBSCRIBE` as answered once it is written, and Redis's
/// confirmation is dropped as out of band. A refusal (`NOPERM`: an ACL
/// user without the channel) comes back as a plain error, which fred
/// reads as the answer to the next command on that connection: a `PING`
/// sent there (the node fred subscribed on, in a cluster) fails with it.
/// Without the `PING`, a refused subscription counted as up, and the L1
/// went on serving what other instances invalidated.
async fn subscribe(shared: &BusState, client: &Client) -> bool {
    let timeout = shared.publish_timeout.max(Duration::from_secs(1));
    let confirmed = async {
        client.subscribe(shared.channel.as_str()).await?;
        // fred subscribes on the node of the client id's slot.
        let slot = fred::util::redis_keyslot(client.id().as_bytes());
        let ping = CustomCommand::new_static("PING", ClusterHash::Custom(slot), false);
        client
            .custom::<fred::types::Value, fred::types::Value>(ping, Vec::new())
            .await?;
        Ok::<(), fred::error::Error>(())
    };
    match tokio::time::timeout(timeout, confirmed).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(channel = %shared.channel, %error, "invalidation subscribe failed; retrying");
            false
        }
        Err(_) => {
            tracing::warn!(channel = %shared.channel, "invalidation subscribe timed out; retrying");
            false
        }
    }
}

/// The listener task: applies messages, follows the connection's state and
/// resubscribes.
async fn listen(shared: Arc<BusState>, client: Client, mut rx: Receivers) {
    use broadcast::error::RecvError;
    loop {
        let down = !shared.is_up();
        let poll = !down && shared.audit.is_some();
        tokio::select! {
            message = rx.messages.recv() => match message {
                Ok(message) => shared.handle(message).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "invalidation listener fell behind; purging L1");
                    shared.purge_local();
                }
                Err(RecvError::Closed) => break,
            },
            error = rx.errors.recv() => match error {
                Ok((error, _server)) => shared.mark_down(&error.to_string()),
                Err(RecvError::Lagged(_)) => shared.mark_down("connection errors"),
                Err(RecvError::Closed) => break,
            },
            server = rx.unresponsive.recv() => match server {
                Ok(_) | Err(RecvError::Lagged(_)) => shared.mark_down("unresponsive connection"),
                Err(RecvError::Closed) => break,
            },
            server = rx.reconnects.recv() => match server {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    // A fresh connection is subscribed to nothing. SUBSCRIBE
                    // is idempotent, so a reconnection of another cluster
                    // node costs one round trip and changes nothing.
                    if subscribe(&shared, &client).await {
                        shared.subscribed().await;
                    } else {
                        shared.mark_down("resubscription failed");
                    }
                }
                Err(RecvError::Closed) => break,
            },
            _ = tokio::time::sleep(shared.retry_interval), if down => {
                if client.is_connected() && subscribe(&shared, &client).await {
                    shared.subscribed().await;
                }
            }
            _ = tokio::time::sleep(shared.stream_poll_interval), if poll => {
                // Keeps the group's position current; what it applies is
                // what pub/sub missed. A group that cannot be read (the
                // stream was deleted, say) is made again at the end: while
                // subscribed, pub/sub carries what comes meanwhile.
                if shared.drain_stream().await.is_none() {
                    shared.reset_group().await;
                }
            }
        }
    }
    shared.mark_down(STOPPED);
}

/// One instance's side of cross-instance invalidation; see the
/// [module documentation](self). A cheap `Clone` handle; the listener stops
/// (and the subscriber disconnects) when the last clone is dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use hitbox_backend::{Cache, Compose};
/// use hitbox_moka::MokaBackend;
/// use hitbox_redis::RedisBackend;
/// use hitbox_redis::invalidation::{BusEvent, InvalidationBus};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisBackend::from_url("redis://127.0.0.1:6379")?;
/// let bus = InvalidationBus::builder(&redis).start(MokaBackend::new(64 * 1024 * 1024))?;
/// // Moka (as the bus sees it) in front of Redis, removals broadcast.
/// let cache = Cache::new(bus.broadcasting(bus.local_tier().compose(redis.clone())));
/// bus.wait_subscribed(Duration::from_secs(5)).await?;
///
/// let mut events = bus.events();
/// if let Ok(BusEvent::Lost) = events.try_recv() {
///     // Degraded mode: L1 entries live at most `degraded_ttl`.
/// }
/// assert!(bus.stats().subscriptions >= 1);
/// # let _ = cache;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct InvalidationBus {
    inner: Arc<BusInner>,
}

struct BusInner {
    shared: Arc<BusState>,
    subscriber: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BusInner {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.mark_down(STOPPED);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let subscriber = self.subscriber.clone();
            // Nobody follows this instance's group any more.
            let group = self
                .shared
                .audit
                .clone()
                .map(|audit| (audit, self.shared.origin.clone()));
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
                if let Some((audit, origin)) = group {
                    let _ = audit.destroy_group(origin.as_str()).await;
                }
            });
        }
    }
}

impl fmt::Debug for InvalidationBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.inner.shared;
        f.debug_struct("InvalidationBus")
            .field("channel", &shared.channel)
            .field("origin", &shared.origin)
            .field("subscribed", &shared.is_up())
            .finish_non_exhaustive()
    }
}

impl InvalidationBus {
    /// Starts configuring a bus that publishes through `redis`'s connections
    /// and subscribes with a client built from its configuration.
    pub fn builder(redis: &RedisBackend) -> InvalidationBusBuilder {
        InvalidationBusBuilder {
            redis: redis.clone(),
            channel: None,
            origin: None,
            degraded_ttl: DEFAULT_DEGRADED_TTL,
            purge_on_resubscribe: true,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            stream_poll_interval: DEFAULT_STREAM_POLL_INTERVAL,
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// The L1 as the composition should use it: `bus.local_tier().compose(redis)`.
    pub fn local_tier(&self) -> LocalTier {
        LocalTier {
            shared: Arc::clone(&self.inner.shared),
        }
    }

    /// `tiers` (usually `local_tier().compose(redis)`) with removals and tag
    /// invalidations published to the other instances.
    pub fn broadcasting<B: Backend>(&self, tiers: B) -> Broadcasting<B> {
        Broadcasting {
            tiers,
            shared: Arc::clone(&self.inner.shared),
        }
    }

    /// Empties this instance's L1 and tells the others to empty theirs.
    /// Redis keeps its entries. Fails if the publish failed (the local L1
    /// is purged anyway).
    pub async fn purge(&self) -> Result<(), BackendError> {
        let shared = &self.inner.shared;
        shared.purge_local();
        let appended = shared.append(&Invalidation::Purge).await;
        shared.publish(Invalidation::Purge).await?;
        appended
    }

    /// Publishes `invalidation` without applying it here (and appends it to
    /// the audit stream); for invalidations done by other means (a script
    /// that deleted keys in Redis, say).
    pub async fn publish(&self, invalidation: Invalidation) -> Result<(), BackendError> {
        let shared = &self.inner.shared;
        let appended = shared.append(&invalidation).await;
        shared.publish(invalidation).await?;
        appended
    }

    /// The audit stream the bus catches up from, or `None` when the
    /// backend's is off.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.inner.shared.audit.as_ref()
    }

    /// Whether the subscription is up (otherwise L1 lifetimes are capped).
    pub fn is_subscribed(&self) -> bool {
        self.inner.shared.is_up()
    }

    /// Waits until the subscription is up, for at most `timeout`.
    pub async fn wait_subscribed(&self, timeout: Duration) -> Result<(), RedisError> {
        let mut subscribed = self.inner.shared.subscribed.subscribe();
        match tokio::time::timeout(timeout, subscribed.wait_for(|up| *up)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(RedisError::ConnectTimeout(timeout)),
        }
    }

    /// A stream of what the bus does, from now on: for metrics, and for
    /// tests that wait for a message to be applied. A receiver that falls
    /// more than 256 events behind loses the oldest.
    pub fn events(&self) -> broadcast::Receiver<BusEvent> {
        self.inner.shared.events.subscribe()
    }

    /// This instance's origin id.
    pub fn origin(&self) -> &OriginId {
        &self.inner.shared.origin
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.inner.shared.channel
    }

    /// The lifetime cap of L1 entries while down.
    pub fn degraded_ttl(&self) -> Duration {
        self.inner.shared.degraded_ttl
    }

    /// Whether the L1 tier is emptied after a lost subscription whose missed
    /// invalidations the audit stream could not replay; see
    /// [`InvalidationBusBuilder::purge_on_resubscribe`].
    pub fn purge_on_resubscribe(&self) -> bool {
        self.inner.shared.purge_on_resubscribe
    }

    /// How long a publish (stream append or `PUBLISH`) may take before it
    /// fails; see [`InvalidationBusBuilder::publish_timeout`].
    pub fn publish_timeout(&self) -> Duration {
        self.inner.shared.publish_timeout
    }

    /// How often a lost subscription is retried; see
    /// [`InvalidationBusBuilder::retry_interval`].
    pub fn retry_interval(&self) -> Duration {
        self.inner.shared.retry_interval
    }

    /// How often the audit stream is read while subscribed; see
    /// [`InvalidationBusBuilder::stream_poll_interval`].
    pub fn stream_poll_interval(&self) -> Duration {
        self.inner.shared.stream_poll_interval
    }

    /// The L1 backend the bus was started over (without the header the
    /// [`LocalTier`] adds).
    pub fn l1(&self) -> &Arc<dyn Backend> {
        &self.inner.shared.l1
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> InvalidationStats {
        let c = &self.inner.shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        InvalidationStats {
            published: load(&c.published),
            publish_failures: load(&c.publish_failures),
            received: load(&c.received),
            applied: load(&c.applied),
            skipped_own: load(&c.skipped_own),
            malformed: load(&c.malformed),
            subscriptions: load(&c.subscriptions),
            losses: load(&c.losses),
            purges: load(&c.purges),
            replayed: load(&c.replayed),
            replay_skipped: load(&c.replay_skipped),
            catch_ups: load(&c.catch_ups),
            subscribed: self.is_subscribed(),
        }
    }
}

/// The L1 of an instance with an [`InvalidationBus`]; see the
/// [module documentation](self). Made by [`InvalidationBus::local_tier`];
/// clones share the tier.
///
/// Stores each value behind a [`LOCAL_HEADER_LEN`]-byte header (the purge
/// generation and the write time), caps write lifetimes at the bus's
/// degraded TTL while the subscription is down, and reads entries of an
/// older generation, or trusted for too long while down, as misses.
///
/// ```no_run
/// use std::time::Duration;
/// use hitbox_backend::{Compose, MemoryBackend};
/// use hitbox_redis::RedisBackend;
/// use hitbox_redis::invalidation::InvalidationBus;
///
/// # fn example(redis: RedisBackend) -> Result<(), hitbox_redis::RedisError> {
/// let bus = InvalidationBus::builder(&redis)
///     .degraded_ttl(Duration::from_secs(5))
///     .start(MemoryBackend::new())?;
/// let l1 = bus.local_tier();
/// // Not subscribed yet: a write asking for a minute gets five seconds.
/// assert_eq!(l1.effective_ttl(Duration::from_secs(60)), Duration::from_secs(5));
/// let tiers = l1.compose(redis);
/// # let _ = tiers;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LocalTier {
    shared: Arc<BusState>,
}

impl fmt::Debug for LocalTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTier")
            .field("l1", &self.shared.l1.label())
            .field("subscribed", &self.shared.is_up())
            .finish_non_exhaustive()
    }
}

impl LocalTier {
    /// The lifetime a write asking for `ttl` gets now.
    pub fn effective_ttl(&self, ttl: Duration) -> Duration {
        if self.shared.is_up() {
            ttl
        } else {
            ttl.min(self.shared.degraded_ttl)
        }
    }
}

impl Backend for LocalTier {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let shared = &self.shared;
            let Some(stored) = shared.l1.read(key).await? else {
                return Ok(None);
            };
            if stored.len() < LOCAL_HEADER_LEN {
                // Not written by a LocalTier: not ours to serve.
                return Ok(None);
            }
            let generation = u64::from_be_bytes(stored[..8].try_into().expect("8 bytes"));
            let written = u64::from_be_bytes(stored[8..16].try_into().expect("8 bytes"));
            if generation != shared.generation.load(Ordering::SeqCst) {
                let _ = shared.l1.remove(key).await;
                return Ok(None);
            }
            if !shared.trusted(written) {
                return Ok(None);
            }
            Ok(Some(stored.slice(LOCAL_HEADER_LEN..)))
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
            let shared = &self.shared;
            let ttl = self.effective_ttl(ttl);
            let mut framed = BytesMut::with_capacity(LOCAL_HEADER_LEN + value.len());
            framed.put_u64(shared.generation.load(Ordering::SeqCst));
            framed.put_u64(shared.now_ms());
            framed.extend_from_slice(&value);
            shared.l1.write(key, framed.freeze(), ttl, tags).await
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        self.shared.l1.remove(key)
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        self.shared.l1.invalidate_tag(tag)
    }

    /// The L1's purge; a soft one marks entries through the header.
    fn purge<'a>(&'a self, purge: &'a Purge) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let through = purge.map_marker(|marker| self.shared.local_marker(marker));
            self.shared.l1.purge(&through).await
        })
    }

    fn purge_keys<'a>(&'a self, target: &'a PurgeTarget) -> BackendFuture<'a, Vec<CacheKey>> {
        self.shared.l1.purge_keys(target)
    }

    fn label(&self) -> &str {
        self.shared.l1.label()
    }

    fn tier_stats(&self) -> Vec<TierStats> {
        self.shared.l1.tier_stats()
    }

    /// As the local tier does: a hit is a slice of its stored buffer.
    fn shares_buffers(&self) -> bool {
        self.shared.l1.shares_buffers()
    }
}

/// A backend (usually the `L1 + Redis` composition) whose removals and tag
/// invalidations are published to the other instances after they are done
/// here. Made by [`InvalidationBus::broadcasting`].
///
/// The publish happens whether or not the wrapped operation succeeded (the
/// other instances' L1 must forget the entry either way). The wrapped
/// operation's error is returned first; otherwise a failed publish is
/// returned as the error, since the other instances were not told.
///
/// ```no_run
/// use hitbox_backend::{Backend, Compose, MemoryBackend};
/// use hitbox_core::Tag;
/// use hitbox_redis::RedisBackend;
/// use hitbox_redis::invalidation::InvalidationBus;
///
/// # async fn example(redis: RedisBackend) -> Result<(), Box<dyn std::error::Error>> {
/// let bus = InvalidationBus::builder(&redis).start(MemoryBackend::new())?;
/// let tiers = bus.broadcasting(bus.local_tier().compose(redis));
/// // Invalidated here, in Redis, and in every other instance's L1.
/// tiers.invalidate_tag(&Tag::from("catalog:shoes")).await?;
/// let _composition = tiers.get_ref();
/// # Ok(())
/// # }
/// ```
pub struct Broadcasting<B> {
    tiers: B,
    shared: Arc<BusState>,
}

impl<B: fmt::Debug> fmt::Debug for Broadcasting<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcasting")
            .field("tiers", &self.tiers)
            .field("channel", &self.shared.channel)
            .finish_non_exhaustive()
    }
}

impl<B> Broadcasting<B> {
    /// The wrapped backend.
    pub fn get_ref(&self) -> &B {
        &self.tiers
    }
}

impl<B: Backend> Backend for Broadcasting<B> {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        self.tiers.read(key)
    }

    fn write<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        self.tiers.write(key, value, ttl, tags)
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let removed = self.tiers.remove(key).await;
            let invalidation = Invalidation::Key(key.as_str().to_owned());
            self.shared.note_own(&self.shared.tier_origin, &invalidation);
            let published = self.shared.publish(invalidation).await;
            let removed = removed?;
            published?;
            Ok(removed)
        })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let removed = self.tiers.invalidate_tag(tag).await;
            let invalidation = Invalidation::Tag(tag.as_str().to_owned());
            self.shared.note_own(&self.shared.tier_origin, &invalidation);
            let published = self.shared.publish(invalidation).await;
            let removed = removed?;
            published?;
            Ok(removed)
        })
    }

    fn exists<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        self.tiers.exists(key)
    }

    /// Purges here (L1 and Redis), then tells the other instances: a hard
    /// purge as the invalidation of the same key, tag or prefix, a soft
    /// one as its `soft-*` message.
    fn purge<'a>(&'a self, purge: &'a Purge) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let purged = self.tiers.purge(purge).await;
            let invalidation = Invalidation::of_purge(purge);
            self.shared.note_own(&self.shared.tier_origin, &invalidation);
            let published = self.shared.publish(invalidation).await;
            let purged = purged?;
            published?;
            Ok(purged)
        })
    }

    fn purge_keys<'a>(&'a self, target: &'a PurgeTarget) -> BackendFuture<'a, Vec<CacheKey>> {
        self.tiers.purge_keys(target)
    }

    fn tag_generations<'a>(&'a self, tags: &'a [Tag]) -> BackendFuture<'a, Option<TagGenerations>> {
        self.tiers.tag_generations(tags)
    }

    fn write_if_current<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
        expected: &'a TagGenerations,
    ) -> BackendFuture<'a, bool> {
        self.tiers.write_if_current(key, value, ttl, tags, expected)
    }

    fn label(&self) -> &str {
        self.tiers.label()
    }

    fn tier_stats(&self) -> Vec<TierStats> {
        self.tiers.tier_stats()
    }

    fn shares_buffers(&self) -> bool {
        self.tiers.shares_buffers()
    }

    /// Forwarded, as a wrapper around one tier does: over a composition,
    /// the engine observes the composition's tiers (each with its own
    /// spans and metrics), not the composition as one more tier.
    fn observes_tiers(&self) -> bool {
        self.tiers.observes_tiers()
    }

    fn has_breaker(&self) -> bool {
        self.tiers.has_breaker()
    }

    fn max_entry_size(&self) -> usize {
        self.tiers.max_entry_size()
    }

    fn read_many<'a>(&'a self, keys: &'a [CacheKey]) -> BackendFuture<'a, Vec<Option<Bytes>>> {
        self.tiers.read_many(keys)
    }
}

/// A soft purge's marker for entries framed by a [`LocalTier`]: an entry
/// of an older purge generation is removed, the others are marked by the
/// inner marker behind their header (kept), their lifetime capped while
/// the bus is down.
struct LocalMarker {
    generation: u64,
    cap: Option<Duration>,
    inner: Arc<dyn StaleMarker>,
}

impl StaleMarker for LocalMarker {
    fn mark(&self, key: &CacheKey, stored: Bytes) -> Marked {
        if stored.len() < LOCAL_HEADER_LEN
            || u64::from_be_bytes(stored[..8].try_into().expect("8 bytes")) != self.generation
        {
            return Marked::Remove;
        }
        match self.inner.mark(key, stored.slice(LOCAL_HEADER_LEN..)) {
            Marked::Replace { bytes, ttl, tags } => {
                let mut framed = BytesMut::with_capacity(LOCAL_HEADER_LEN + bytes.len());
                framed.extend_from_slice(&stored[..LOCAL_HEADER_LEN]);
                framed.extend_from_slice(&bytes);
                Marked::Replace {
                    bytes: framed.freeze(),
                    ttl: self.cap.map_or(ttl, |cap| ttl.min(cap)),
                    tags,
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> OriginId {
        OriginId::new("node-a:42").expect("a valid id")
    }

    #[test]
    fn soft_purges_round_trip_and_older_messages_still_read() {
        for invalidation in [
            Invalidation::SoftKey("users:v1:tenant=a:id=1".into()),
            Invalidation::SoftTag("team ops".into()),
            Invalidation::SoftPrefix("users:v1:tenant=a:".into()),
        ] {
            let message = InvalidationMessage {
                origin: origin(),
                invalidation,
            };
            assert_eq!(
                InvalidationMessage::decode(message.encode().as_bytes()),
                Some(message)
            );
        }
        assert_eq!(
            InvalidationMessage {
                origin: origin(),
                invalidation: Invalidation::SoftKey("k".into()),
            }
            .encode(),
            "hbinv1 node-a:42 soft-key k"
        );
        // Messages of the format as it was before soft purges read as then.
        let old = |text: &str| InvalidationMessage::decode(text.as_bytes()).map(|m| m.invalidation);
        assert_eq!(
            old("hbinv1 node-a:42 key users:v1:id=1"),
            Some(Invalidation::Key("users:v1:id=1".into()))
        );
        assert_eq!(
            old("hbinv1 node-a:42 tag team"),
            Some(Invalidation::Tag("team".into()))
        );
        assert_eq!(
            old("hbinv1 node-a:42 prefix users:"),
            Some(Invalidation::Prefix("users:".into()))
        );
        assert_eq!(old("hbinv1 node-a:42 purge"), Some(Invalidation::Purge));
        // A soft purge needs a target.
        assert_eq!(old("hbinv1 node-a:42 soft-tag "), None);
        assert_eq!(old("hbinv1 node-a:42 soft-prefix "), None);
        assert_eq!(old("hbinv1 node-a:42 soft-key"), None);
    }

    #[test]
    fn messages_round_trip() {
        for invalidation in [
            Invalidation::Key("profiles:v1:tenant=acme:id=7".into()),
            Invalidation::Key("key with spaces".into()),
            Invalidation::Key(String::new()),
            Invalidation::Tag("user:7".into()),
            Invalidation::Prefix("profiles:v1:".into()),
            Invalidation::Purge,
        ] {
            let message = InvalidationMessage {
                origin: origin(),
                invalidation,
            };
            let wire = message.encode();
            assert_eq!(
                InvalidationMessage::decode(wire.as_bytes()),
                Some(message),
                "{wire}"
            );
        }
    }

    #[test]
    fn the_wire_format_is_stable() {
        let key = InvalidationMessage {
            origin: origin(),
            invalidation: Invalidation::Key("a b".into()),
        };
        assert_eq!(key.encode(), "hbinv1 node-a:42 key a b");
        let purge = InvalidationMessage {
            origin: origin(),
            invalidation: Invalidation::Purge,
        };
        assert_eq!(purge.encode(), "hbinv1 node-a:42 purge");
    }

    #[test]
    fn foreign_messages_are_refused() {
        for wire in [
            &b""[..],
            b"hbinv2 node key k",
            b"hbinv1 node",
            b"hbinv1 node key",
            b"hbinv1 node tag ",
            b"hbinv1 node purge extra",
            b"hbinv1 node drop k",
            b"\xff\xfe",
        ] {
            assert_eq!(InvalidationMessage::decode(wire), None, "{wire:?}");
        }
    }

    #[test]
    fn origin_ids_are_checked_and_random_ones_differ() {
        assert!(OriginId::new("").is_err());
        assert!(OriginId::new("a b").is_err());
        assert!(OriginId::new("é").is_err());
        let (a, b) = (OriginId::random(), OriginId::random());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
