//! The Redis tier of hitbox: a [`Backend`] over
//! [fred](https://docs.rs/fred) 10, for a standalone server, a cluster or a
//! server behind sentinels.
//!
//! Like every tier it stores bytes and never sees values: the engine,
//! [`hitbox_backend::Cache`], encodes them. Redis is the shared tier: alone
//! under the engine, or as the L2 behind an in-process tier (moka) in a
//! composition, with the [`invalidation`] bus keeping the instances' L1s in
//! step and a [`lock`] sharing loads between them.
//!
//! # The smallest cache
//!
//! Build the tier, put it under a [`Cache`](hitbox_backend::Cache), then
//! set and get (this example needs a server, so it only compiles here):
//!
//! ```no_run
//! use std::time::Duration;
//! use hitbox_backend::Cache;
//! use hitbox_core::CacheKey;
//! use hitbox_redis::RedisBackend;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisBackend::from_url("redis://127.0.0.1:6379")?;
//! // Optional: operations issued before the connection is up wait for it.
//! redis.wait_connected(Duration::from_secs(5)).await?;
//! let cache = Cache::new(redis);
//!
//! let key = CacheKey::builder("greetings").part("lang", "en").build();
//! cache.set(&key, &"hello".to_string()).await?;
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("hello"));
//! # Ok(())
//! # }
//! ```
//!
//! # Connecting: URLs, cluster, sentinel
//!
//! [`RedisBackend::from_url`] takes `redis://host:port[/db]` (standalone),
//! `redis-cluster://host:port?node=host2:port2` (cluster) and
//! `redis-sentinel://host:port?sentinelServiceName=NAME&node=...`
//! (sentinels). [`RedisBackend::builder`] takes the same
//! ([`url`](RedisBackendBuilder::url)) or names the servers:
//! [`standalone`](RedisBackendBuilder::standalone),
//! [`cluster`](RedisBackendBuilder::cluster) (seed nodes; the others are
//! discovered), [`sentinel`](RedisBackendBuilder::sentinel), or a whole
//! fred [`Config`](fred::prelude::Config) with
//! [`fred_config`](RedisBackendBuilder::fred_config). The builder also sets
//! the credentials, the database, the [pool size](RedisBackendBuilder::pool_size),
//! the [key prefix](RedisBackendBuilder::key_prefix) that lets several
//! applications share one Redis, and the tier's
//! [label](RedisBackendBuilder::label) in logs, errors and stats. Building
//! must happen inside a Tokio runtime and does not wait for the connection.
//!
//! ```no_run
//! use std::time::Duration;
//! use hitbox_backend::Cache;
//! use hitbox_redis::RedisBackend;
//!
//! # async fn example() -> Result<(), hitbox_redis::RedisError> {
//! // From a URL (`redis://`, `redis-cluster://`, `redis-sentinel://`)...
//! let simple = RedisBackend::from_url("redis://127.0.0.1:6379")?;
//!
//! // ...or from the builder.
//! let tuned = RedisBackend::builder()
//!     .cluster([("10.0.0.1", 7000), ("10.0.0.2", 7000)])
//!     .pool_size(4)
//!     .key_prefix("shop:")
//!     .read_timeout(Duration::from_millis(30))
//!     .failure_threshold(10)
//!     .build()?;
//!
//! // The primary of `cache-main`, found through its sentinels.
//! let sentinel = RedisBackend::builder()
//!     .sentinel([("10.0.1.1", 26379), ("10.0.1.2", 26379)], "cache-main")
//!     .password("secret")
//!     .label("redis-sentinel")
//!     .build()?;
//!
//! let cache = Cache::new(tuned);
//! # let _ = (simple, sentinel, cache);
//! # Ok(())
//! # }
//! ```
//!
//! # Timeouts and the circuit breaker
//!
//! Every command runs under a timeout ([read](RedisBackendBuilder::read_timeout)
//! 50 ms, [write](RedisBackendBuilder::write_timeout) 100 ms,
//! [invalidation](RedisBackendBuilder::invalidate_timeout) 1 s, a whole
//! [purge](RedisBackendBuilder::purge_timeout) by prefix or soft purge
//! 30 s by default) and through a circuit [breaker] (hitbox-backend's, the one every tier
//! shares): after
//! [`failure_threshold`](RedisBackendBuilder::failure_threshold) consecutive
//! connection-level failures (timeouts, I/O, a connection refused or reset)
//! the tier answers [`BackendError::Unavailable`] at once, without
//! touching Redis, until a probe made after the
//! [cool-down](RedisBackendBuilder::cool_down) (1 s by default, on the
//! [clock](RedisBackendBuilder::clock) it is given) succeeds. Errors Redis
//! sends back about one key (`WRONGTYPE`, `MOVED`/`ASK`, any other `ERR`
//! reply) are [`BackendError::Key`] and never count. Reconnecting is
//! fred's job: the backend sets a reconnect policy (exponential back-off,
//! retrying forever, see [`RedisBackendBuilder::reconnect_policy`]) that also
//! applies to the first connection, and logs reconnections and connection
//! errors with `tracing`. A connection that gets no answer for
//! [2 s](RedisBackendBuilder::unresponsive_after) (a hung server, a
//! network that drops packets) is closed and reconnected. The engine treats every tier error as a miss (on
//! reads) or a skipped write, so none of this reaches a user.
//!
//! ## Nothing invalidated comes back after an outage
//!
//! Writes, removals and tag invalidations are sent *fail-fast*: while the
//! connection is down they fail at once rather than wait in the client's
//! queue, so a write its caller gave up on is never sent later, after a
//! deletion that followed it. A removal or tag invalidation that fails
//! because Redis is unreachable (or because the breaker is open) is
//! remembered, and so is the key of a write that timed out (a frozen server
//! may still carry it out when it thaws). The first call the breaker lets
//! through once Redis is back replays them (deletes those keys, invalidates
//! those tags) before doing anything else, and the tier serves nothing
//! until the replay succeeded. At most [`MAX_PENDING_KEYS`] keys and
//! [`MAX_PENDING_TAGS`] tags wait; past that, invalidations are counted in
//! [`RedisBackend::lost_invalidations`] and logged as errors.
//! [`RedisBackend::pending_invalidations`] tells how many wait.
//!
//! Keys are never logged; only [`CacheKey::log_id`](hitbox_core::CacheKey::log_id).
//!
//! The breaker is configured on the builder, setting by setting or as a
//! whole [`BreakerConfig`] (hitbox-backend's, re-exported here), with the
//! clock the engine and the composition use:
//!
//! ```no_run
//! use std::time::Duration;
//! use hitbox_core::SystemClock;
//! use hitbox_redis::{BreakerConfig, RedisBackend};
//!
//! # fn example() -> Result<(), hitbox_redis::RedisError> {
//! let redis = RedisBackend::builder()
//!     .url("redis://127.0.0.1:6379")
//!     .read_timeout(Duration::from_millis(20))
//!     .write_timeout(Duration::from_millis(50))
//!     .invalidate_timeout(Duration::from_millis(500))
//!     .breaker(BreakerConfig { failure_threshold: 3, cool_down: Duration::from_secs(2) })
//!     .clock(SystemClock::new())
//!     .build()?;
//! # let _ = redis;
//! # Ok(())
//! # }
//! ```
//!
//! # Storage
//!
//! Each entry is one Redis string, stored whole (the bytes the engine hands
//! over) under the [key prefix](RedisBackendBuilder::key_prefix) followed by
//! [`CacheKey::as_str`](hitbox_core::CacheKey::as_str), with `SET ... PX`:
//! the TTL is sent in milliseconds, rounded up, so a TTL under a millisecond
//! becomes one millisecond, never zero nor "no expiry".
//!
//! # Tags
//!
//! Every tag has a sorted set under `<prefix>#tag:{<tag name>}` (a key the
//! [key builder](hitbox_core::KeyBuilder) never produces: an encoded key never
//! starts with `#`; in the name, `%`, `{` and `}` are percent-encoded, and
//! the empty name is written `%`). Its members are the Redis keys of the
//! entries written with the tag, each scored with the time its entry
//! expires, in milliseconds of the server's clock. Beside it, under the same
//! name followed by `#gen`, is the tag's *generation*: a number that every
//! invalidation of the tag moves on. The braces make the tag's name the
//! keys' hash tag, so that in a cluster the set and the generation live in
//! one slot and one script can update both.
//!
//! - A write first registers the key in each of its tags' sets, then stores
//!   the entry (so an entry is never stored without being reachable from its
//!   tags). The registration is one Lua script per tag that touches only the
//!   tag's keys: it drops the members whose entries have expired (more than
//!   a [grace period](RedisBackendBuilder::tag_grace) ago, 5 s by default,
//!   to allow for clock skew between cluster nodes), adds the key, and sets
//!   the set's own expiry to that of its longest-lived member plus the same
//!   margin. A tag set therefore holds only live entries and disappears
//!   shortly after the last of them.
//! - [`invalidate_tag`](hitbox_backend::Backend::invalidate_tag) runs one
//!   script that moves the tag's generation on and reads the set's members,
//!   then replaces each member's entry with a *fence* (see below), then
//!   removes from the set exactly the members it read (a key registered
//!   meanwhile stays for the next invalidation). If it fails half-way, the
//!   set is left as it is and a retry finds the same keys.
//!
//! No script touches keys of two hash slots: a tag's scripts name its two
//! keys (one slot), the others one key each, and in cluster mode the
//! entries are fenced one script per key (sent together, so this costs one
//! round trip per node, not one per key). With a standalone server or
//! sentinels they are batched into multi-key calls. The tag state lives in
//! Redis, so an invalidation done by one process is seen by every other.
//! (In a cluster, a [key prefix](RedisBackendBuilder::key_prefix) whose
//! first `{` is directly followed by `}` is refused: it would make the
//! whole key the hash tag, and a tag's two keys could land apart.)
//!
//! ## Tags that hold across processes
//!
//! The engine ([`hitbox_backend::Cache`]) keeps a load whose tag is
//! invalidated *through the same cache* while it runs from storing what it
//! loaded. An invalidation made by another process is checked here, with
//! the tags' generations (see [`hitbox_backend::generations`]):
//!
//! 1. Before a load with tags runs its loader, the engine reads their
//!    generations ([`Backend::tag_generations`]: one `GET` per tag in a
//!    cluster, one `MGET` otherwise; 0 for a tag never invalidated).
//! 2. Its store ([`Backend::write_if_current`]) registers the key under each
//!    tag only if the tag's generation is still the one read: the
//!    registration script compares them. If one moved, nothing is written
//!    and the load's value only goes to its callers (counted in
//!    [`CacheStats::stale_loads_discarded`](hitbox_backend::CacheStats::stale_loads_discarded)).
//! 3. Then a script on the entry's own key stores it, unless the key holds
//!    a fence newer than what the load read.
//!
//! Step 2 and step 3 touch different slots, so an invalidation may land
//! between them: it finds the key registered (step 2 came first) and puts
//! a fence under it, a short-lived value (at least the tag grace period,
//! and twice the write timeout) that names the invalidated tags and their
//! new generations. Step 3 reads the fence in the same script that would
//! write the entry, and refuses. An invalidation after step 3 replaces the
//! entry with a fence, as any invalidation does. So whatever the
//! interleaving, a value loaded before an invalidation began is not left in
//! Redis after it ended. Reads see a fence as no entry (`GET`, `MGET`,
//! `EXISTS` alike); a later load, or a plain [`write`](Backend::write),
//! replaces it.
//!
//! Generations never repeat: each is at least the server's clock in
//! microseconds, and is kept [24 hours](GENERATION_TTL_MS) after it last
//! moved, so a generation that expired and came back is still new to a
//! load that read the old one.
//!
//! A composition ([`Compose`](hitbox_backend::Compose)) asks this tier for
//! the generations and writes it before its L1, so what Redis refuses is
//! not kept in the L1 either. A caller that leads a load and fetches the
//! value itself ([`Cache::lead_or_join`](hitbox_backend::Cache::lead_or_join),
//! as the HTTP layer does) gets the generations read in the background from
//! the moment it leads, and can await
//! [`LoadLead::ready`](hitbox_backend::LoadLead::ready) before it asks its
//! origin.
//!
//! What it costs: one round trip before each tagged load's loader, and the
//! store's own scripts; nothing on reads. When the generations cannot be
//! read (Redis unreachable), the load's result is not stored.
//!
//! Limits: a key rewritten without a tag it had stays in that tag's set
//! until it expires (invalidating the tag then deletes it: more than
//! needed, never less). Generations are per tag: a key deleted by another
//! process ([`remove`](Backend::remove)) while a load of it runs can still
//! be written back by that load. A value stored directly rather than by a
//! load ([`Cache::set_with`](hitbox_backend::Cache::set_with)) is not
//! checked. Processes of an older version read a fence as an unreadable
//! entry (a logged miss).
//!
//! ```no_run
//! use std::time::Duration;
//! use hitbox_backend::Cache;
//! use hitbox_core::{EntryOptions, Tag};
//! use hitbox_redis::RedisBackend;
//!
//! # async fn example(redis: RedisBackend) -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::new(redis);
//! let products = cache.typed::<String>("products");
//! let options = EntryOptions::new().ttl(Duration::from_secs(600)).tag("catalog:shoes");
//! products.set_with(17, &"Runner".to_string(), &options).await?;
//! // Seen by every process sharing the Redis.
//! cache.invalidate_tag(&Tag::from("catalog:shoes")).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Composition: moka in front
//!
//! A round trip to Redis is cheap but not free; an in-process tier in
//! front of it serves the hot entries. `MokaBackend::new(..).compose(redis)`
//! ([`Compose`](hitbox_backend::Compose)) is a composition, itself a tier:
//! reads try moka, then Redis (refilling moka), writes go to both, and each
//! tier has its own breaker and its own line in the stats.
//!
//! ```no_run
//! use hitbox_backend::{Cache, Compose};
//! use hitbox_moka::MokaBackend;
//! use hitbox_redis::RedisBackend;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisBackend::from_url("redis://127.0.0.1:6379")?;
//! let cache = Cache::new(MokaBackend::new(64 * 1024 * 1024).compose(redis));
//! let greeting = cache
//!     .typed::<String>("greetings")
//!     .get_or_insert_with("en", || async { "hello".to_string() })
//!     .await;
//! # let _ = greeting;
//! # Ok(())
//! # }
//! ```
//!
//! With several instances, each has its own moka: what one of them
//! deletes or invalidates must reach the others' moka, and their misses of
//! one key can share one load:
//!
//! - [`invalidation`]: with an in-process tier in front of Redis, an
//!   [`InvalidationBus`] carries deletes, tag invalidations and purges to
//!   every other instance's L1 over Redis pub/sub, caps L1 lifetimes while
//!   its subscription is down, and catches up from the audit stream when
//!   it is back.
//! - [`lock`]: a [`RedisLock`] lets the instances that miss one key at once
//!   call the origin once between them (distributed single-flight).
//!
//! # The invalidation audit stream
//!
//! Every invalidation made through the tier (a key removed, a tag
//! invalidated, including those replayed after an outage) and every purge
//! or published invalidation of an [`InvalidationBus`] is appended to one
//! Redis Stream, `<prefix>#audit`, with `XADD ... MAXLEN ~ N` (N is
//! [`DEFAULT_AUDIT_MAX_LEN`](audit::DEFAULT_AUDIT_MAX_LEN), 10,000, unless
//! [`audit_max_len`](RedisBackendBuilder::audit_max_len) says otherwise;
//! [`audit_stream(false)`](RedisBackendBuilder::audit_stream) turns it
//! off). An entry holds the instance that invalidated
//! ([`instance_id`](RedisBackendBuilder::instance_id)), the time on the
//! tier's [clock](RedisBackendBuilder::clock), the kind (`key`, `tag`,
//! `prefix`, `purge`), the key, tag or prefix, and for a tag its new
//! generation. The append follows the invalidation it records, in the same
//! call, under the same timeout; if it fails for want of Redis, the call
//! fails and the invalidation is replayed (and appended) once Redis is
//! back, as any other.
//!
//! [`RedisBackend::audit`] hands out the stream's [`AuditLog`]: typed
//! entries ([`AuditEntry`]) from any id, and consumer groups (created with
//! `MKSTREAM`, read with `XREADGROUP`, acknowledged with `XACK`). Each
//! [`InvalidationBus`] follows the stream in a group of its own, so that an
//! instance whose subscription was down applies what it missed instead of
//! emptying its L1 (see [`invalidation`]).
//!
//! The stream is one key, so in a cluster it lives in one slot on one
//! node: appends from every instance meet there, which gives the entries
//! one order; invalidations are rare enough next to reads for that node
//! not to matter.
//!
//! ```no_run
//! use std::time::Duration;
//! use hitbox_backend::Cache;
//! use hitbox_core::Tag;
//! use hitbox_redis::audit::{AuditId, GroupStart};
//! use hitbox_redis::invalidation::Invalidation;
//! use hitbox_redis::{OriginId, RedisBackend};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisBackend::builder()
//!     .url("redis://127.0.0.1:6379")
//!     .key_prefix("shop:")
//!     .instance_id(OriginId::new("web-3")?)
//!     .audit_max_len(100_000)
//!     .build()?;
//! redis.wait_connected(Duration::from_secs(5)).await?;
//! let cache = Cache::new(redis.clone());
//! cache.invalidate_tag(&Tag::from("catalog:shoes")).await?;
//!
//! let audit = redis.audit().expect("on by default");
//! assert_eq!(audit.key(), "shop:#audit");
//! // A replay of everything the stream still holds.
//! let batch = audit.entries_after(AuditId::ZERO, 1_000).await?;
//! for entry in &batch.entries {
//!     if let Invalidation::Tag(tag) = &entry.invalidation {
//!         println!("{} invalidated {tag} at {:?} (generation {:?})", entry.origin, entry.at, entry.generation);
//!     }
//! }
//! // An auditor following it: each entry once, acknowledged when handled.
//! audit.create_group("auditor", GroupStart::Beginning).await?;
//! let batch = audit.read_group("auditor", "auditor-1", 100).await?;
//! audit.ack("auditor", &batch.ids()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `tls`: TLS connections (`rediss://` URLs, `RedisBackendBuilder::tls`)
//!   through rustls. Without it, TLS URLs are refused rather than used in
//!   the clear.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod audit;
pub mod breaker;
mod builder;
mod error;
pub mod invalidation;
pub mod lock;
mod purge;
mod tags;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::{Client, WithOptions};
use fred::prelude::{ClientLike, Expiration, Key, KeysInterface, Options, Pool, Value};
use futures::future::try_join_all;
use hitbox_backend::pending::{DEFAULT_MAX_PENDING_KEYS, DEFAULT_MAX_PENDING_TAGS};
use hitbox_backend::{
    Backend, BackendError, BackendFuture, CircuitBreaker, PendingInvalidations, Purge, PurgeTarget,
    TagGenerations, TierStats,
};
use hitbox_core::{CacheKey, SharedClock, Tag};

pub use audit::{AuditEntry, AuditId, AuditLog};
pub use breaker::{BreakerConfig, BreakerState};
pub use builder::{
    DEFAULT_INVALIDATE_TIMEOUT, DEFAULT_MAX_ENTRY_SIZE, DEFAULT_POOL_SIZE, DEFAULT_PURGE_TIMEOUT,
    DEFAULT_READ_TIMEOUT, DEFAULT_TAG_GRACE, DEFAULT_WRITE_TIMEOUT, RedisBackendBuilder,
};
pub use error::RedisError;
/// The Redis client this crate is built on, re-exported so that its
/// configuration types ([`ReconnectPolicy`](fred::prelude::ReconnectPolicy),
/// [`Config`](fred::prelude::Config)...) can be named.
pub use fred;
pub use invalidation::{Broadcasting, Invalidation, InvalidationBus, LocalTier, OriginId};
pub use lock::RedisLock;
pub use tags::{FENCE_MAGIC, GENERATION_TTL_MS};

/// The longest TTL sent to Redis (about 100 years); longer ones are cut to
/// it, since Redis refuses expiry times that overflow its clock.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);

/// The most key deletions an outage may leave for replay (see
/// [`RedisBackend::pending_invalidations`]); past it, further ones are
/// counted as lost and logged.
pub const MAX_PENDING_KEYS: usize = DEFAULT_MAX_PENDING_KEYS;

/// The most tag invalidations an outage may leave for replay.
pub const MAX_PENDING_TAGS: usize = DEFAULT_MAX_PENDING_TAGS;

/// Keys deleted per command (standalone) or sent at once (cluster) by an
/// invalidation.
pub(crate) const DELETE_BATCH: usize = 512;

/// The Redis tier; see the [crate documentation](crate).
///
/// A cheap `Clone` handle: clones share the connections, the breaker and
/// the counters. Build it with [`RedisBackend::from_url`] or
/// [`RedisBackend::builder`], inside a Tokio runtime.
///
/// ```no_run
/// use std::time::Duration;
/// use hitbox_backend::Cache;
/// use hitbox_redis::{BreakerState, RedisBackend};
///
/// # async fn example() -> Result<(), hitbox_redis::RedisError> {
/// let redis = RedisBackend::from_url("redis://127.0.0.1:6379/2")?;
/// redis.wait_connected(Duration::from_secs(5)).await?;
/// assert_eq!(redis.breaker_state(), BreakerState::Closed);
/// let cache = Cache::new(redis.clone());
/// # let _ = cache;
/// redis.quit().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    clustered: bool,
    label: Arc<str>,
    prefix: String,
    read_timeout: Duration,
    write_timeout: Duration,
    invalidate_timeout: Duration,
    /// The bound on one purge by prefix or soft purge.
    purge_timeout: Duration,
    tag_grace_ms: i64,
    max_entry_size: usize,
    breaker: CircuitBreaker,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    /// Operations sent to Redis (not refused by the breaker) and how long
    /// they took, timeouts included, in microseconds.
    timed_calls: AtomicU64,
    total_micros: AtomicU64,
    max_micros: AtomicU64,
    /// Invalidations that did not reach Redis (and keys whose write may
    /// have reached it after its caller gave up), replayed before the tier
    /// is used again.
    pending: PendingInvalidations,
    /// This tier's source number in [`TagGenerations`].
    source: u64,
    /// How long the fence an invalidation leaves under a key lives, in ms.
    fence_ms: i64,
    /// Who this instance is, in the audit stream.
    instance: OriginId,
    /// Whether a bus took `instance` as its origin already.
    instance_claimed: AtomicBool,
    /// The audit stream, unless it is off.
    audit: Option<AuditLog>,
}

impl Inner {
    fn timed(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.timed_calls.fetch_add(1, Ordering::Relaxed);
        self.total_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("label", &self.inner.label)
            .field("clustered", &self.inner.clustered)
            .field("pool_size", &self.inner.pool.size())
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

/// Which timeout an operation runs under.
#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
    Invalidate,
    /// A purge by prefix: its `SCAN` and `UNLINK`s, under
    /// [`RedisBackendBuilder::purge_timeout`].
    Purge,
}

impl RedisBackend {
    /// Starts configuring a backend.
    pub fn builder() -> RedisBackendBuilder {
        RedisBackendBuilder::new()
    }

    /// A backend with the default settings for the server(s) at `url`:
    /// `redis://host:port[/db]` for a standalone server,
    /// `redis-cluster://host:port?node=host2:port2&node=...` for a cluster,
    /// `redis-sentinel://host:port?sentinelServiceName=NAME&node=...` for
    /// sentinels (the `rediss` TLS schemes need the `tls` feature). Must be called
    /// inside a Tokio runtime; it does not wait for the connection (see
    /// [`RedisBackend::wait_connected`]).
    pub fn from_url(url: &str) -> Result<RedisBackend, RedisError> {
        RedisBackend::builder().url(url).build()
    }

    pub(crate) fn from_parts(parts: builder::Parts) -> RedisBackend {
        let clock: SharedClock = parts.clock;
        let breaker =
            CircuitBreaker::new(parts.breaker, Arc::clone(&clock)).labelled(Arc::clone(&parts.label));
        let tag_grace_ms = i64::try_from(parts.tag_grace.min(MAX_TTL).as_millis()).unwrap_or(i64::MAX / 4);
        // A fence must outlive any write that registered its key before the
        // invalidation and is still on its way: at least the tag grace, the
        // write timeout and a second.
        let write_ms = i64::try_from(parts.write_timeout.as_millis()).unwrap_or(i64::MAX / 4);
        let fence_ms = tag_grace_ms.max(write_ms.saturating_mul(2)).max(1_000);
        let audit = parts.audit.map(|audit| {
            AuditLog::new(
                parts.pool.clone(),
                audit
                    .key
                    .unwrap_or_else(|| format!("{}{}", parts.prefix, audit::AUDIT_SUFFIX)),
                audit.max_len,
                parts.instance.clone(),
                Arc::clone(&clock),
                parts.invalidate_timeout,
                Arc::clone(&parts.label),
            )
        });
        RedisBackend {
            inner: Arc::new(Inner {
                pool: parts.pool,
                clustered: parts.clustered,
                label: parts.label,
                prefix: parts.prefix,
                read_timeout: parts.read_timeout,
                write_timeout: parts.write_timeout,
                invalidate_timeout: parts.invalidate_timeout,
                purge_timeout: parts.purge_timeout,
                tag_grace_ms,
                max_entry_size: parts.max_entry_size,
                breaker,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                timed_calls: AtomicU64::new(0),
                total_micros: AtomicU64::new(0),
                max_micros: AtomicU64::new(0),
                pending: PendingInvalidations::new(),
                source: TagGenerations::new_source(),
                fence_ms,
                instance: parts.instance,
                instance_claimed: AtomicBool::new(false),
                audit,
            }),
        }
    }

    /// Waits until every connection of the pool is up, for at most
    /// `timeout`. Optional: operations issued before are queued by fred
    /// (and bounded by their own timeouts).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), RedisError> {
        match tokio::time::timeout(timeout, self.inner.pool.wait_for_connect()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(RedisError::Connect(error)),
            Err(_) => Err(RedisError::ConnectTimeout(timeout)),
        }
    }

    /// Where the circuit breaker stands.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// Whether the backend talks to a cluster.
    pub fn is_clustered(&self) -> bool {
        self.inner.clustered
    }

    /// The prefix put before every key.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The Redis key an entry stored under `key` lives at.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.inner.prefix, key.as_str())
    }

    /// The Redis key of the set that tracks the entries tagged `tag`:
    /// `<prefix>#tag:{<tag>}`, the braces making the tag's name (with `%`,
    /// `{` and `}` percent-encoded) the key's hash tag.
    pub fn tag_set_key(&self, tag: &Tag) -> String {
        format!("{}#tag:{{{}}}", self.inner.prefix, tags::hash_tag_of(tag))
    }

    /// The Redis key of `tag`'s generation: its set's key followed by
    /// `#gen`, in the same hash slot.
    pub fn tag_generation_key(&self, tag: &Tag) -> String {
        format!("{}#gen", self.tag_set_key(tag))
    }

    /// Who this instance is in the audit stream (and, by default, on the
    /// [invalidation bus](InvalidationBus)); see
    /// [`RedisBackendBuilder::instance_id`].
    pub fn instance_id(&self) -> &OriginId {
        &self.inner.instance
    }

    /// Whether the caller is the first to take this backend's instance id
    /// as a bus origin.
    pub(crate) fn claim_instance_id(&self) -> bool {
        !self.inner.instance_claimed.swap(true, Ordering::SeqCst)
    }

    /// The audit stream every invalidation through this tier is appended
    /// to, or `None` when it is off; see the [`audit`] module.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.inner.audit.as_ref()
    }

    /// Appends an invalidation this tier made to the audit stream.
    async fn audit_append(
        &self,
        client: &WithOptions<Client>,
        invalidation: &Invalidation,
        generation: Option<u64>,
    ) -> Result<(), fred::error::Error> {
        if let Some(audit) = &self.inner.audit {
            audit
                .append_with(client, &self.inner.instance, invalidation, generation)
                .await?;
        }
        Ok(())
    }

    /// The fred connection pool, for commands this tier does not offer.
    /// Commands sent through it bypass the timeouts and the breaker.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// How many invalidations an outage kept from Redis and that wait to be
    /// replayed: key deletions (including keys whose write timed out, since
    /// it may still land) and tag invalidations. Until they are replayed,
    /// no read or write goes to Redis; the first call that the breaker lets
    /// through after the outage replays them first.
    pub fn pending_invalidations(&self) -> usize {
        self.inner.pending.len()
    }

    /// Invalidations that could not be remembered for replay because more
    /// than [`MAX_PENDING_KEYS`] or [`MAX_PENDING_TAGS`] were waiting.
    pub fn lost_invalidations(&self) -> u64 {
        self.inner.pending.lost()
    }

    /// Closes the connections. Later operations fail.
    pub async fn quit(&self) {
        if let Err(error) = self.inner.pool.quit().await {
            tracing::debug!(%error, "redis quit failed");
        }
    }

    /// Runs `op` under the breaker and the timeout of `kind`.
    async fn run<T>(
        &self,
        kind: Kind,
        op: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, BackendError> {
        let inner = &self.inner;
        let Some(permit) = inner.breaker.try_acquire() else {
            inner.errors.fetch_add(1, Ordering::Relaxed);
            return Err(BackendError::Unavailable {
                tier: Arc::clone(&inner.label),
            });
        };
        let after = match kind {
            Kind::Read => inner.read_timeout,
            Kind::Write => inner.write_timeout,
            Kind::Invalidate => inner.invalidate_timeout,
            Kind::Purge => inner.purge_timeout,
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(after, async {
            if !inner.pending.is_empty() {
                self.replay_pending().await?;
            }
            op.await
        })
        .await;
        inner.timed(started.elapsed());
        match outcome {
            Ok(Ok(value)) => {
                permit.success();
                Ok(value)
            }
            Ok(Err(error)) => {
                // A connection-level error counts towards the breaker; an
                // error Redis sent back about this key does not.
                let result = Err(backend_error(&inner.label, error));
                permit.record(&result);
                inner.errors.fetch_add(1, Ordering::Relaxed);
                result
            }
            Err(_) => {
                permit.failure();
                inner.errors.fetch_add(1, Ordering::Relaxed);
                Err(BackendError::Timeout {
                    tier: Arc::clone(&inner.label),
                    after,
                })
            }
        }
    }

    /// A client of the pool whose commands fail at once when its connection
    /// is down, instead of waiting in fred's queue to be sent after a
    /// reconnection: a write or a deletion that its caller gave up on must
    /// not reach Redis later, out of order with what came after it.
    fn fail_fast(&self) -> WithOptions<Client> {
        self.inner.pool.next().with_options(&Options {
            fail_fast: true,
            ..Options::default()
        })
    }

    /// Replays what an outage kept from Redis: deletes the keys, invalidates
    /// the tags. What it replayed is forgotten only once it succeeded.
    async fn replay_pending(&self) -> Result<(), fred::error::Error> {
        let replay = self.inner.pending.snapshot();
        let keys: Vec<Bytes> = replay.keys.iter().map(|key| Bytes::from(key.clone())).collect();
        let client = self.fail_fast();
        // An error about one key or tag set (a tag set of the wrong type,
        // say) is logged and that invalidation dropped: retrying it on
        // every call would keep the tier from ever serving again. Only an
        // outage stops the replay, to be resumed by the next call.
        let dropped = |error: fred::error::Error| -> Result<(), fred::error::Error> {
            if is_outage(&error) {
                return Err(error);
            }
            tracing::error!(tier = %self.inner.label, %error, "an invalidation could not be replayed and is dropped");
            Ok(())
        };
        if let Err(error) = self.delete_keys(&client, &keys).await {
            dropped(error)?;
        }
        if self.inner.audit.is_some() {
            let prefix = self.inner.prefix.as_str();
            let client = &client;
            let appends = replay.keys.iter().map(|redis_key| {
                let key = redis_key.strip_prefix(prefix).unwrap_or(redis_key);
                let invalidation = Invalidation::Key(key.to_owned());
                async move { self.audit_append(client, &invalidation, None).await }
            });
            if let Err(error) = try_join_all(appends).await {
                dropped(error)?;
            }
        }
        for tag in &replay.tags {
            let invalidated = async {
                let (_, generation) = self.invalidate_tag_now(&client, tag).await?;
                let invalidation = Invalidation::Tag(tag.as_str().to_owned());
                self.audit_append(&client, &invalidation, Some(generation)).await
            };
            if let Err(error) = invalidated.await {
                dropped(error)?;
            }
        }
        self.inner.pending.replayed(&replay);
        tracing::info!(tier = %self.inner.label, keys = replay.keys.len(), tags = replay.tags.len(), "replayed the invalidations an outage kept from redis");
        Ok(())
    }

    async fn delete_keys(
        &self,
        client: &WithOptions<Client>,
        keys: &[Bytes],
    ) -> Result<u64, fred::error::Error> {
        let pool = client;
        let mut removed = 0u64;
        for batch in keys.chunks(DELETE_BATCH) {
            if self.inner.clustered {
                let deletes = batch.iter().map(|key| pool.del::<i64, _>(Key::from(key.clone())));
                for count in try_join_all(deletes).await? {
                    removed += count.max(0) as u64;
                }
            } else {
                let batch: Vec<Key> = batch.iter().cloned().map(Key::from).collect();
                removed += pool.del::<i64, _>(batch).await?.max(0) as u64;
            }
        }
        Ok(removed)
    }
}

/// Whether `error` says Redis could not be reached or the connection broke
/// (what the breaker counts), rather than that Redis answered this one
/// command with an error.
///
/// fred sorts Redis error replies by their prefix: `WRONGTYPE` is
/// `InvalidArgument`, `MOVED`/`ASK`/`CLUSTERDOWN` are `Cluster` (fred
/// follows redirections itself; one that reaches us failed this command
/// only), and any other `ERR` reply (a value over `proto-max-bulk-len`, an
/// `OOM`) is `Unknown`. Those, and replies that do not parse, are about the
/// command. What is left is about the connection: I/O, timeouts, cancelled
/// commands (the connection closed), routing (no node for the slot),
/// back-pressure, authentication, sentinel and TLS errors.
fn is_outage(error: &fred::error::Error) -> bool {
    use fred::error::ErrorKind;
    !matches!(
        error.kind(),
        ErrorKind::InvalidCommand
            | ErrorKind::InvalidArgument
            | ErrorKind::Parse
            | ErrorKind::NotFound
            | ErrorKind::Cluster
            | ErrorKind::Unknown
            | ErrorKind::Protocol
    )
}

/// The [`BackendError`] for a fred error of the tier labelled `label`: a
/// [`Client`](BackendError::Client) error (a tier failure) when Redis could
/// not be reached, a [`Key`](BackendError::Key) error when it answered this
/// command with an error.
pub(crate) fn backend_error(label: &Arc<str>, error: fred::error::Error) -> BackendError {
    if is_outage(&error) {
        BackendError::client(Arc::clone(label), error)
    } else {
        BackendError::key(Arc::clone(label), error)
    }
}

/// The TTL in milliseconds as sent with `PX`: rounded up, at least 1, at
/// most [`MAX_TTL`].
pub fn px_millis(ttl: Duration) -> i64 {
    let ttl = ttl.min(MAX_TTL);
    let millis = ttl.as_nanos().div_ceil(1_000_000).max(1);
    i64::try_from(millis).unwrap_or(i64::MAX)
}

fn into_bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::Null => None,
        // Whatever else is there (a string read as text or as a number) is
        // handed over as bytes: the engine rejects what does not decode. A
        // fence left by a tag invalidation is no entry.
        other => other.into_bytes().filter(|bytes| !tags::is_fence(bytes)),
    }
}

impl Backend for RedisBackend {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let redis_key = self.redis_key(key);
            let value = self
                .run(Kind::Read, self.inner.pool.get::<Value, _>(redis_key))
                .await?;
            let found = into_bytes(value);
            let counter = if found.is_some() {
                &self.inner.hits
            } else {
                &self.inner.misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(key = %key.log_id(), hit = found.is_some(), "redis read");
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
            if value.len() > self.inner.max_entry_size {
                return Err(BackendError::Refused {
                    tier: Arc::clone(&self.inner.label),
                    reason: "entry larger than the tier's max_entry_size",
                });
            }
            let redis_key = self.redis_key(key);
            let px = px_millis(ttl);
            let client = self.fail_fast();
            let op = async {
                if !tags.is_empty() {
                    try_join_all(
                        tags.iter()
                            .map(|tag| self.register_tag(&client, tag, &redis_key, px, None)),
                    )
                    .await?;
                }
                client
                    .set::<(), _, _>(redis_key.as_str(), value, Some(Expiration::PX(px)), None, false)
                    .await
            };
            let result = self.run(Kind::Write, op).await;
            // A write that timed out or lost its connection may still be
            // carried out (a frozen server executes what it had read when
            // it thaws): its key is deleted when Redis is back, so that it
            // cannot outlive an invalidation issued after it.
            if matches!(
                result,
                Err(BackendError::Timeout { .. } | BackendError::Client { .. })
            ) {
                self.inner.pending.remember_key(&redis_key);
            }
            result?;
            tracing::trace!(key = %key.log_id(), px, tags = tags.len(), "redis write");
            Ok(())
        })
    }

    /// The generations of `tags` (one `GET` each in a cluster, one `MGET`
    /// otherwise), under the read timeout; see the crate documentation.
    fn tag_generations<'a>(&'a self, tags: &'a [Tag]) -> BackendFuture<'a, Option<TagGenerations>> {
        Box::pin(async move {
            if tags.is_empty() {
                return Ok(Some(TagGenerations::new()));
            }
            let seen = self.run(Kind::Read, self.read_generations(tags)).await?;
            Ok(Some(seen))
        })
    }

    /// Registers the entry in its tags' sets, each only if the tag's
    /// generation is still the one in `expected`, then stores it unless a
    /// fence left by an invalidation of one of its tags refuses it; see the
    /// crate documentation. A tag `expected` has nothing for, in a snapshot
    /// that holds others of this tier's (one learnt after the load
    /// started), is checked against its generation read here, just before
    /// the write; a snapshot with nothing of this tier's refuses the write.
    fn write_if_current<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
        expected: &'a TagGenerations,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            if tags.is_empty() {
                self.write(key, value, ttl, tags).await?;
                return Ok(true);
            }
            if value.len() > self.inner.max_entry_size {
                return Err(BackendError::Refused {
                    tier: Arc::clone(&self.inner.label),
                    reason: "entry larger than the tier's max_entry_size",
                });
            }
            // A tag the load did not know when it started (the HTTP layer
            // learns surrogate keys from the response) is checked against
            // its generation read now: an invalidation of it from here on
            // refuses the write; one before cannot be told from an older one.
            // A snapshot with nothing of this tier's own was never read
            // here: refused whole, as nothing says when its load started.
            let read_here = expected.iter().any(|(source, _, _)| source == self.inner.source);
            let unknown: Vec<Tag> = tags
                .iter()
                .filter(|tag| read_here && expected.get(self.inner.source, tag).is_none())
                .cloned()
                .collect();
            let now = if unknown.is_empty() {
                TagGenerations::new()
            } else {
                self.run(Kind::Read, self.read_generations(&unknown)).await?
            };
            let mut checks = Vec::with_capacity(tags.len());
            for tag in tags {
                match expected
                    .get(self.inner.source, tag)
                    .or_else(|| now.get(self.inner.source, tag))
                {
                    Some(generation) => checks.push((tag, generation)),
                    None => {
                        tracing::debug!(key = %key.log_id(), tag = tag.as_str(), "no generation for a tag: write refused");
                        return Ok(false);
                    }
                }
            }
            let redis_key = self.redis_key(key);
            let px = px_millis(ttl);
            let client = self.fail_fast();
            let result = self
                .run(
                    Kind::Write,
                    self.store_if_current(&client, &redis_key, value, px, &checks),
                )
                .await;
            if matches!(
                result,
                Err(BackendError::Timeout { .. } | BackendError::Client { .. })
            ) {
                self.inner.pending.remember_key(&redis_key);
            }
            let stored = result?;
            tracing::trace!(key = %key.log_id(), px, tags = tags.len(), stored, "redis write if current");
            Ok(stored)
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let redis_key = self.redis_key(key);
            let client = self.fail_fast();
            let op = async {
                let removed = client.del::<i64, _>(redis_key.as_str()).await?;
                // After the deletion: an instance catching up from the
                // stream reads the key again only once it is gone.
                let invalidation = Invalidation::Key(key.as_str().to_owned());
                self.audit_append(&client, &invalidation, None).await?;
                Ok(removed)
            };
            let result = self.run(Kind::Write, op).await;
            // Not sent, or lost on the way: deleted again when Redis is back.
            if result.as_ref().is_err_and(BackendError::is_tier_failure) {
                self.inner.pending.remember_key(&redis_key);
            }
            let removed = result?;
            tracing::trace!(key = %key.log_id(), removed, "redis remove");
            Ok(removed > 0)
        })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let client = self.fail_fast();
            let op = async {
                let (removed, generation) = self.invalidate_tag_now(&client, tag).await?;
                let invalidation = Invalidation::Tag(tag.as_str().to_owned());
                self.audit_append(&client, &invalidation, Some(generation))
                    .await?;
                Ok((removed, generation))
            };
            let result = self.run(Kind::Invalidate, op).await;
            if result.as_ref().is_err_and(BackendError::is_tier_failure) {
                self.inner.pending.remember_tag(tag);
            }
            let (removed, generation) = result?;
            tracing::debug!(tag = tag.as_str(), removed, generation, "redis invalidate tag");
            Ok(removed)
        })
    }

    /// See the `purge` notes in the crate documentation: by key and tag as
    /// deletions and tag invalidations, by prefix with `SCAN` and
    /// `UNLINK`, soft purges entry by entry; each appended to the audit
    /// stream with `reason` = `purge`; a purge by prefix and a soft purge
    /// within [`RedisBackendBuilder::purge_timeout`] (default
    /// [`DEFAULT_PURGE_TIMEOUT`]).
    fn purge<'a>(&'a self, purge: &'a Purge) -> BackendFuture<'a, u64> {
        Box::pin(self.purge_now(purge))
    }

    fn purge_keys<'a>(&'a self, target: &'a PurgeTarget) -> BackendFuture<'a, Vec<CacheKey>> {
        Box::pin(self.purge_keys_now(target))
    }

    fn exists<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let redis_key = self.redis_key(key);
            let client = self.inner.pool.next().with_options(&Options::default());
            self.run(Kind::Read, self.holds_entry(&client, &redis_key)).await
        })
    }

    fn label(&self) -> &str {
        &self.inner.label
    }

    fn has_breaker(&self) -> bool {
        true
    }

    fn max_entry_size(&self) -> usize {
        self.inner.max_entry_size
    }

    fn tier_stats(&self) -> Vec<TierStats> {
        vec![TierStats {
            label: self.inner.label.to_string(),
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            errors: self.inner.errors.load(Ordering::Relaxed),
            evictions: 0,
            entries: None,
            bytes: None,
            timed_calls: self.inner.timed_calls.load(Ordering::Relaxed),
            total_latency_micros: self.inner.total_micros.load(Ordering::Relaxed),
            max_latency_micros: self.inner.max_micros.load(Ordering::Relaxed),
        }]
    }

    /// One `MGET` for a standalone server (or a sentinel's primary). In a
    /// cluster the keys may hash to slots on different nodes, which one
    /// `MGET` cannot span: there each key gets its own `GET`, all sent at
    /// once (fred routes each to its node and pipelines them), under one
    /// timeout.
    fn read_many<'a>(&'a self, keys: &'a [CacheKey]) -> BackendFuture<'a, Vec<Option<Bytes>>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let names: Vec<String> = keys.iter().map(|key| self.redis_key(key)).collect();
            let pool = &self.inner.pool;
            let values: Vec<Value> = if self.inner.clustered {
                let gets = names.iter().map(|name| pool.get::<Value, _>(name.as_str()));
                self.run(Kind::Read, try_join_all(gets)).await?
            } else {
                let names: Vec<Key> = names.into_iter().map(Key::from).collect();
                match self.run(Kind::Read, pool.mget::<Value, _>(names)).await? {
                    Value::Array(values) => values,
                    single => vec![single],
                }
            };
            if values.len() != keys.len() {
                return Err(BackendError::key(
                    Arc::clone(&self.inner.label),
                    format!("MGET of {} keys answered {} values", keys.len(), values.len()),
                ));
            }
            let found: Vec<Option<Bytes>> = values.into_iter().map(into_bytes).collect();
            for value in &found {
                let counter = if value.is_some() {
                    &self.inner.hits
                } else {
                    &self.inner.misses
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            tracing::trace!(
                keys = keys.len(),
                hits = found.iter().flatten().count(),
                "redis read many"
            );
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn px_rounds_up_and_never_reaches_zero() {
        assert_eq!(px_millis(Duration::ZERO), 1);
        assert_eq!(px_millis(Duration::from_nanos(1)), 1);
        assert_eq!(px_millis(Duration::from_micros(999)), 1);
        assert_eq!(px_millis(Duration::from_millis(1)), 1);
        assert_eq!(px_millis(Duration::from_micros(1_001)), 2);
        assert_eq!(px_millis(Duration::from_millis(300)), 300);
        assert_eq!(px_millis(Duration::from_secs(90)), 90_000);
        assert_eq!(px_millis(Duration::MAX), MAX_TTL.as_millis() as i64);
    }

    #[test]
    fn only_transport_errors_count_as_outages() {
        use fred::error::{Error, ErrorKind};
        assert!(is_outage(&Error::new(ErrorKind::IO, "reset")));
        assert!(is_outage(&Error::new(ErrorKind::Timeout, "slow")));
        assert!(is_outage(&Error::new(ErrorKind::Canceled, "gone")));
        assert!(is_outage(&Error::new(ErrorKind::Routing, "no node for slot")));
        assert!(!is_outage(&Error::new(ErrorKind::Parse, "bad reply")));
        assert!(!is_outage(&Error::new(ErrorKind::InvalidArgument, "bad")));
    }

    #[test]
    fn per_key_replies_are_key_errors_and_not_tier_failures() {
        use fred::error::{Error, ErrorKind};
        let label: Arc<str> = "redis".into();
        // What fred makes of the replies Redis sends about one key.
        for (kind, reply) in [
            (
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ),
            (ErrorKind::Cluster, "MOVED 3999 127.0.0.1:6381"),
            (ErrorKind::Cluster, "ASK 3999 127.0.0.1:6381"),
            (
                ErrorKind::Unknown,
                "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
            ),
            (ErrorKind::Parse, "could not convert the reply"),
        ] {
            let error = backend_error(&label, Error::new(kind, reply));
            assert!(matches!(error, BackendError::Key { .. }), "{reply}: {error:?}");
            assert!(!error.is_tier_failure(), "{reply}");
        }
        for (kind, what) in [
            (ErrorKind::IO, "Connection refused (os error 111)"),
            (ErrorKind::IO, "Connection reset by peer (os error 104)"),
            (ErrorKind::Timeout, "Request timed out."),
            (ErrorKind::Canceled, "Canceled."),
        ] {
            let error = backend_error(&label, Error::new(kind, what));
            assert!(matches!(error, BackendError::Client { .. }), "{what}: {error:?}");
            assert!(error.is_tier_failure(), "{what}");
        }
    }

    #[tokio::test]
    async fn a_per_key_error_does_not_open_the_breaker() {
        let backend = RedisBackend::builder()
            .url("redis://127.0.0.1:1")
            .failure_threshold(1)
            .build()
            .expect("the backend builds");
        for _ in 0..5 {
            let result = backend
                .run(Kind::Read, async {
                    Err::<(), _>(fred::error::Error::new(
                        fred::error::ErrorKind::InvalidArgument,
                        "WRONGTYPE Operation against a key holding the wrong kind of value",
                    ))
                })
                .await;
            assert!(matches!(result, Err(BackendError::Key { .. })), "{result:?}");
        }
        assert_eq!(backend.breaker_state(), BreakerState::Closed);
        let result = backend
            .run(Kind::Read, async {
                Err::<(), _>(fred::error::Error::new(
                    fred::error::ErrorKind::IO,
                    "Connection reset",
                ))
            })
            .await;
        assert!(matches!(result, Err(BackendError::Client { .. })), "{result:?}");
        assert_eq!(backend.breaker_state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn commands_sent_are_timed_and_those_the_breaker_refuses_are_not() {
        // Nothing listens on port 1: every read waits out its timeout.
        let backend = RedisBackend::builder()
            .url("redis://127.0.0.1:1")
            .read_timeout(Duration::from_millis(30))
            .failure_threshold(2)
            .build()
            .expect("the backend builds");
        let key = CacheKey::builder("t").build();
        for _ in 0..2 {
            assert!(matches!(
                backend.read(&key).await,
                Err(BackendError::Timeout { .. })
            ));
        }
        assert!(matches!(
            backend.read(&key).await,
            Err(BackendError::Unavailable { .. })
        ));
        let stats = &backend.tier_stats()[0];
        assert_eq!((stats.errors, stats.timed_calls), (3, 2), "{stats:?}");
        assert!(stats.max_latency_micros >= 30_000, "{stats:?}");
        assert!(stats.total_latency_micros >= 60_000, "{stats:?}");
        assert!(
            stats.mean_latency() >= Some(Duration::from_millis(30)),
            "{stats:?}"
        );
    }
}
