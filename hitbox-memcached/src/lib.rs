//! The memcached tier of hitbox: a [`Backend`] over
//! [async-memcached](https://docs.rs/async-memcached) (Shopify's Tokio
//! client, pure Rust).
//!
//! Like every tier it stores bytes and never sees values: the engine,
//! [`hitbox_backend::Cache`], encodes them. memcached is a shared tier, as
//! Redis is: alone under the engine, or as the L2 behind moka.
//!
//! # The smallest cache
//!
//! Build the tier, put it under a [`Cache`](hitbox_backend::Cache), then
//! set and get (this example needs a server, so it only compiles here):
//!
//! ```no_run
//! use hitbox_backend::Cache;
//! use hitbox_core::CacheKey;
//! use hitbox_memcached::MemcachedBackend;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let memcached = MemcachedBackend::from_url("127.0.0.1:11211")?;
//! let cache = Cache::new(memcached);
//!
//! let key = CacheKey::builder("greetings").part("lang", "en").build();
//! cache.set(&key, &"hello".to_string()).await?;
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("hello"));
//! # Ok(())
//! # }
//! ```
//!
//! # Connecting, timeouts and the breaker
//!
//! [`MemcachedBackend::from_url`] takes `host:port`, `tcp://host:port` or
//! `unix:///path`; [`MemcachedBackend::builder`] takes the same and sets
//! the [pool size](MemcachedBackendBuilder::pool_size) (connections, each
//! running one command at a time), a [key prefix](MemcachedBackendBuilder::key_prefix)
//! for sharing one memcached between applications, the
//! [label](MemcachedBackendBuilder::label), the timeouts and the breaker.
//! Building checks the settings and connects nothing: connections are made
//! on first use, and made again after one breaks.
//!
//! Every operation runs under a timeout, connecting included
//! ([read](MemcachedBackendBuilder::read_timeout) 50 ms,
//! [write](MemcachedBackendBuilder::write_timeout) 100 ms by default), and
//! through hitbox-backend's circuit [breaker](hitbox_backend::breaker),
//! the one every tier shares: after
//! [`failure_threshold`](MemcachedBackendBuilder::failure_threshold)
//! consecutive tier failures (timeouts, a refused or broken connection)
//! the tier answers [`BackendError::Unavailable`] at once until a probe
//! after the [cool-down](MemcachedBackendBuilder::cool_down) succeeds. An
//! error memcached sends about one command (`SERVER_ERROR object too large
//! for cache`, a `CLIENT_ERROR`) is [`BackendError::Key`] and does not
//! count. The engine reads every tier error as a miss and skips failed
//! writes, so a dead memcached slows nothing down for longer than a
//! timeout, and fails nothing.
//!
//! ```
//! use std::time::Duration;
//! use hitbox_core::ManualClock;
//! use hitbox_memcached::{BreakerState, MemcachedBackend};
//!
//! let memcached = MemcachedBackend::builder()
//!     .server("tcp://10.0.0.5:11211")
//!     .read_timeout(Duration::from_millis(20))
//!     .failure_threshold(3)
//!     .cool_down(Duration::from_secs(2))
//!     .clock(ManualClock::new())
//!     .build()
//!     .unwrap();
//! assert_eq!(memcached.breaker_state(), BreakerState::Closed);
//! ```
//!
//! # Storage
//!
//! - **Expiry** is per entry: the TTL the engine gives, rounded up to whole
//!   seconds (memcached's unit); past 30 days it is sent as an absolute
//!   time, as memcached requires.
//! - **Keys** are the prefix and the encoded [`CacheKey`]. One that would
//!   pass memcached's 250 bytes (or holds a byte memcached does not take in
//!   a key, which a key built by [`CacheKey::builder`] never does) is
//!   stored under the prefix and its BLAKE2b-256 digest.
//! - **Many at once**: [`Backend::read_many`] sends one `get` with every
//!   key (and one more for the tags the entries found carry): the
//!   entity-cache path of loading many ids.
//! - **Corrupt entries**: bytes that are not an entry of this tier (written
//!   by another program, truncated) read as a miss and are logged.
//!
//! # Tags
//!
//! memcached has no sets, so a tag cannot list its entries. Each tag has a
//! generation counter under a key of its own (`<prefix>#tag:<tag>`); an
//! entry records the generation of each of its tags when written, and
//! reads as a miss once one has moved on. [`Backend::invalidate_tag`] is
//! one `incr`, however many entries the tag has; it returns 0, since
//! memcached cannot count them. A counter that memcached evicted matches
//! no entry, so eviction can make entries miss early but never serves one
//! that was invalidated.
//!
//! ```no_run
//! use std::time::Duration;
//! use hitbox_backend::Cache;
//! use hitbox_core::{CacheKey, EntryOptions, Tag};
//! use hitbox_memcached::MemcachedBackend;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::new(MemcachedBackend::from_url("127.0.0.1:11211")?);
//! let key = CacheKey::builder("users").part("id", "1").build();
//! let options = EntryOptions::new().ttl(Duration::from_secs(60)).tag("team:ops");
//! cache.set_with(&key, &"Ada".to_string(), &options).await?;
//! cache.invalidate_tag(&Tag::from("team:ops")).await?;
//! assert_eq!(cache.get::<String>(&key).await, None);
//! # Ok(())
//! # }
//! ```
//!
//! # moka in front
//!
//! ```no_run
//! use hitbox_backend::{Cache, Compose};
//! use hitbox_memcached::MemcachedBackend;
//! use hitbox_moka::MokaBackend;
//!
//! # fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let memcached = MemcachedBackend::from_url("127.0.0.1:11211")?;
//! let cache = Cache::new(MokaBackend::new(64 * 1024 * 1024).compose(memcached));
//! # let _ = cache;
//! # Ok(())
//! # }
//! ```
//!
//! # Why async-memcached
//!
//! The two maintained Rust clients are `memcache` (aisk/rust-memcache) and
//! `async-memcached` (Shopify). `memcache` is synchronous (each call would
//! hold a runtime thread for a network round trip, or need
//! `spawn_blocking`), and its default features pull in OpenSSL. async-memcached
//! is Tokio-native, pure Rust, cancel-safe (an operation dropped at a
//! timeout closes its connection rather than leaving a reply unread for
//! the next one), and has the multi-key `get` the many-ids path needs. It
//! is one connection per client, so this crate keeps a small pool.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod builder;
mod entry;
mod error;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_memcached::{AsciiProtocol, Client, Status};
use bytes::Bytes;
use hitbox_backend::{Backend, BackendError, BackendFuture, CircuitBreaker, TierStats};
use hitbox_core::{CacheKey, Tag};
use tokio::sync::{Mutex, MutexGuard};

pub use builder::{
    DEFAULT_POOL_SIZE, DEFAULT_READ_TIMEOUT, DEFAULT_WRITE_TIMEOUT, MAX_PREFIX_LEN, MemcachedBackendBuilder,
};
pub use entry::MAX_KEY_LEN;
pub use error::MemcachedError;
pub use hitbox_backend::breaker::{BreakerConfig, BreakerState};

/// The longest relative expiry memcached takes (30 days); a longer TTL is
/// sent as an absolute Unix time.
pub const MAX_RELATIVE_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3_600);

/// The memcached tier; see the [crate documentation](crate).
///
/// A cheap `Clone` handle: clones share the connections, the breaker and
/// the counters.
///
/// ```
/// use hitbox_backend::{Backend, Cache};
/// use hitbox_memcached::MemcachedBackend;
///
/// let memcached = MemcachedBackend::from_url("127.0.0.1:11211").unwrap();
/// assert_eq!(memcached.label(), "memcached");
/// let cache = Cache::new(memcached.clone());
/// # let _ = cache;
/// ```
#[derive(Clone)]
pub struct MemcachedBackend {
    inner: Arc<Inner>,
}

struct Inner {
    dsn: String,
    connections: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    prefix: String,
    label: Arc<str>,
    read_timeout: Duration,
    write_timeout: Duration,
    breaker: CircuitBreaker,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    corrupt: AtomicU64,
    timed_calls: AtomicU64,
    total_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl std::fmt::Debug for MemcachedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedBackend")
            .field("label", &self.inner.label)
            .field("pool_size", &self.inner.connections.len())
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

/// Which timeout an operation runs under.
#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
}

/// A connection taken from the pool, connected.
struct Connection<'a> {
    slot: MutexGuard<'a, Option<Client>>,
}

impl Connection<'_> {
    fn client(&mut self) -> &mut Client {
        self.slot.as_mut().expect("a checked-out connection is connected")
    }

    /// Runs one command; a connection-level failure drops the connection
    /// so that the next user connects again.
    async fn run<T>(
        &mut self,
        command: impl AsyncFnOnce(&mut Client) -> Result<T, async_memcached::Error>,
    ) -> Result<T, async_memcached::Error> {
        let result = command(self.client()).await;
        if let Err(error) = &result
            && (is_outage(error) || self.client().is_closed())
        {
            *self.slot = None;
        }
        result
    }
}

impl MemcachedBackend {
    /// Starts configuring a backend.
    pub fn builder() -> MemcachedBackendBuilder {
        MemcachedBackendBuilder::new()
    }

    /// A backend with the default settings for the server at `url`
    /// (`host:port`, `tcp://host:port` or `unix:///path`). Connects on
    /// first use.
    pub fn from_url(url: &str) -> Result<MemcachedBackend, MemcachedError> {
        MemcachedBackend::builder().server(url).build()
    }

    pub(crate) fn from_parts(parts: builder::Parts) -> MemcachedBackend {
        let breaker = CircuitBreaker::new(parts.breaker, parts.clock).labelled(Arc::clone(&parts.label));
        MemcachedBackend {
            inner: Arc::new(Inner {
                dsn: parts.dsn,
                connections: (0..parts.pool_size).map(|_| Mutex::new(None)).collect(),
                next: AtomicUsize::new(0),
                prefix: parts.prefix,
                label: parts.label,
                read_timeout: parts.read_timeout,
                write_timeout: parts.write_timeout,
                breaker,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                corrupt: AtomicU64::new(0),
                timed_calls: AtomicU64::new(0),
                total_micros: AtomicU64::new(0),
                max_micros: AtomicU64::new(0),
            }),
        }
    }

    /// Where the circuit breaker stands.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// The prefix put before every key.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The memcached key an entry stored under `key` lives at.
    pub fn memcached_key(&self, key: &CacheKey) -> String {
        entry::memcached_key(&self.inner.prefix, key.as_str())
    }

    /// The memcached key of the generation counter of `tag`.
    pub fn tag_key(&self, tag: &Tag) -> String {
        entry::memcached_key(&self.inner.prefix, &format!("#tag:{}", tag.as_str()))
    }

    /// Entries read that were not entries of this tier (corrupt, foreign)
    /// and so were misses.
    pub fn corrupt_entries(&self) -> u64 {
        self.inner.corrupt.load(Ordering::Relaxed)
    }

    /// A connection from the pool: a free one if there is one, else the
    /// next in turn once it is free; connected (again) if it is not.
    async fn connection(&self) -> Result<Connection<'_>, async_memcached::Error> {
        let connections = &self.inner.connections;
        let mut slot = match connections.iter().find_map(|slot| slot.try_lock().ok()) {
            Some(free) => free,
            None => {
                let turn = self.inner.next.fetch_add(1, Ordering::Relaxed) % connections.len();
                connections[turn].lock().await
            }
        };
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            *slot = Some(Client::new(&self.inner.dsn).await?);
            tracing::debug!(tier = %self.inner.label, "memcached connected");
        }
        Ok(Connection { slot })
    }

    /// Runs `op` under the breaker and the timeout of `kind`.
    async fn guarded<T>(
        &self,
        kind: Kind,
        op: impl Future<Output = Result<T, async_memcached::Error>>,
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
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(after, op).await;
        self.timed(started.elapsed());
        match outcome {
            Ok(Ok(value)) => {
                permit.success();
                Ok(value)
            }
            Ok(Err(error)) => {
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

    fn timed(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.inner.timed_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.total_micros.fetch_add(micros, Ordering::Relaxed);
        self.inner.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// The current generations of `tags` (absent: no counter).
    async fn generations(
        conn: &mut Connection<'_>,
        tag_keys: &[String],
    ) -> Result<HashMap<Vec<u8>, u64>, async_memcached::Error> {
        if tag_keys.is_empty() {
            return Ok(HashMap::new());
        }
        let values = get_multi(conn, tag_keys).await?;
        Ok(values
            .into_iter()
            .filter_map(|(key, data)| Some((key, parse_generation(&data)?)))
            .collect())
    }

    /// Whether an entry's recorded generations are all current; counts and
    /// logs the entries that are not entries at all.
    fn current(&self, key: &CacheKey, stored: Bytes, generations: &HashMap<Vec<u8>, u64>) -> Option<Bytes> {
        let entry = self.decode(key, stored)?;
        let current = entry.tags.iter().all(|(tag, generation)| {
            let tag_key = self.tag_key(&Tag::from(tag.as_str()));
            generations.get(tag_key.as_bytes()) == Some(generation)
        });
        if !current {
            tracing::trace!(key = %key.log_id(), "memcached entry invalidated by a tag");
        }
        current.then_some(entry.payload)
    }

    fn decode(&self, key: &CacheKey, stored: Bytes) -> Option<entry::StoredEntry> {
        match entry::decode(stored) {
            Ok(entry) => Some(entry),
            Err(reason) => {
                self.inner.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %key.log_id(), %reason, "unreadable memcached entry, treated as a miss");
                None
            }
        }
    }

    fn count(&self, found: bool) {
        let counter = if found {
            &self.inner.hits
        } else {
            &self.inner.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `keys` (one `get`) and the generations of the tags their
    /// entries carry (one more), and keeps the entries still current.
    async fn read_keys(&self, keys: &[CacheKey]) -> Result<Vec<Option<Bytes>>, BackendError> {
        let names: Vec<String> = keys.iter().map(|key| self.memcached_key(key)).collect();
        let op = async {
            let mut conn = self.connection().await?;
            let mut found = get_multi(&mut conn, &names).await?;
            let mut stored: Vec<Option<Bytes>> =
                names.iter().map(|name| found.remove(name.as_bytes())).collect();
            // Decode the headers now, so that the tags are known.
            let mut tag_keys: Vec<String> = Vec::new();
            for (key, slot) in keys.iter().zip(stored.iter_mut()) {
                if let Some(bytes) = slot.take()
                    && let Some(entry) = self.decode(key, bytes.clone())
                {
                    for (tag, _) in &entry.tags {
                        let tag_key = self.tag_key(&Tag::from(tag.as_str()));
                        if !tag_keys.contains(&tag_key) {
                            tag_keys.push(tag_key);
                        }
                    }
                    *slot = Some(bytes);
                }
            }
            let generations = Self::generations(&mut conn, &tag_keys).await?;
            Ok((stored, generations))
        };
        let (stored, generations) = self.guarded(Kind::Read, op).await?;
        let found: Vec<Option<Bytes>> = keys
            .iter()
            .zip(stored)
            .map(|(key, bytes)| {
                // Decoded once above already; decoding again is cheap and
                // keeps the header parsing in one place.
                bytes.and_then(|bytes| self.current(key, bytes, &generations))
            })
            .collect();
        for value in &found {
            self.count(value.is_some());
        }
        Ok(found)
    }
}

/// One `get` for `names`: what was found, by key. memcached answers a
/// `get` that found nothing with an empty list, which the client reports
/// as "not found".
async fn get_multi(
    conn: &mut Connection<'_>,
    names: &[String],
) -> Result<HashMap<Vec<u8>, Bytes>, async_memcached::Error> {
    let result = conn
        .run(async |client| client.get_multi(names.iter()).await)
        .await;
    match result {
        Ok(values) => Ok(values
            .into_iter()
            .filter_map(|value| Some((value.key, Bytes::from(value.data?))))
            .collect()),
        Err(async_memcached::Error::Protocol(Status::NotFound)) => Ok(HashMap::new()),
        Err(error) => Err(error),
    }
}

fn parse_generation(data: &[u8]) -> Option<u64> {
    std::str::from_utf8(data).ok()?.trim().parse().ok()
}

/// The expiry sent to memcached for `ttl`: whole seconds, rounded up, at
/// least 1; past [`MAX_RELATIVE_EXPIRY`], an absolute Unix time.
pub fn expiry(ttl: Duration, now: SystemTime) -> i64 {
    let seconds = ttl.as_nanos().div_ceil(1_000_000_000).max(1);
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX / 2);
    if seconds <= MAX_RELATIVE_EXPIRY.as_secs() as i64 {
        return seconds;
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0) as i64;
    now.saturating_add(seconds)
}

/// Whether `error` says memcached could not be reached or the connection
/// broke (what the breaker counts), rather than that memcached answered
/// this command with an error.
fn is_outage(error: &async_memcached::Error) -> bool {
    use async_memcached::Error;
    match error {
        Error::Connect(_) | Error::Io(_) | Error::ConnectionClosed => true,
        Error::Protocol(_) | Error::ParseError(_) => false,
    }
}

/// The [`BackendError`] for a client error of the tier labelled `label`.
fn backend_error(label: &Arc<str>, error: async_memcached::Error) -> BackendError {
    if is_outage(&error) {
        BackendError::client(Arc::clone(label), error)
    } else {
        BackendError::key(Arc::clone(label), error)
    }
}

impl Backend for MemcachedBackend {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let found = self.read_keys(std::slice::from_ref(key)).await?;
            let found = found.into_iter().next().flatten();
            tracing::trace!(key = %key.log_id(), hit = found.is_some(), "memcached read");
            Ok(found)
        })
    }

    fn read_many<'a>(&'a self, keys: &'a [CacheKey]) -> BackendFuture<'a, Vec<Option<Bytes>>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let found = self.read_keys(keys).await?;
            tracing::trace!(
                keys = keys.len(),
                hits = found.iter().flatten().count(),
                "memcached read many"
            );
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
            let name = self.memcached_key(key);
            let exptime = expiry(ttl, SystemTime::now());
            let op = async {
                let mut conn = self.connection().await?;
                let mut recorded = Vec::with_capacity(tags.len());
                if !tags.is_empty() {
                    let tag_keys: Vec<String> = tags.iter().map(|tag| self.tag_key(tag)).collect();
                    let current = Self::generations(&mut conn, &tag_keys).await?;
                    for (tag, tag_key) in tags.iter().zip(&tag_keys) {
                        let generation = match current.get(tag_key.as_bytes()) {
                            Some(generation) => *generation,
                            None => create_counter(&mut conn, tag_key).await?,
                        };
                        recorded.push((tag.clone(), generation));
                    }
                }
                let stored = entry::encode(&recorded, &value).map_err(|reason| {
                    async_memcached::Error::Protocol(Status::Error(async_memcached::ErrorKind::Client(
                        reason.to_owned(),
                    )))
                })?;
                conn.run(async |client| {
                    client
                        .set(name.as_str(), stored.as_slice(), Some(exptime), None)
                        .await
                })
                .await
            };
            self.guarded(Kind::Write, op).await?;
            tracing::trace!(key = %key.log_id(), exptime, tags = tags.len(), "memcached write");
            Ok(())
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let name = self.memcached_key(key);
            let op = async {
                let mut conn = self.connection().await?;
                match conn.run(async |client| client.delete(name.as_str()).await).await {
                    Ok(()) => Ok(true),
                    Err(async_memcached::Error::Protocol(Status::NotFound)) => Ok(false),
                    Err(error) => Err(error),
                }
            };
            let removed = self.guarded(Kind::Write, op).await?;
            tracing::trace!(key = %key.log_id(), removed, "memcached remove");
            Ok(removed)
        })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            let tag_key = self.tag_key(tag);
            let op = async {
                let mut conn = self.connection().await?;
                match conn
                    .run(async |client| client.increment(tag_key.as_str(), 1).await)
                    .await
                {
                    // No counter: no current entry carries this tag.
                    Ok(_) | Err(async_memcached::Error::Protocol(Status::NotFound)) => Ok(()),
                    Err(error) => Err(error),
                }
            };
            self.guarded(Kind::Write, op).await?;
            tracing::debug!(tag = tag.as_str(), "memcached invalidate tag");
            Ok(0)
        })
    }

    fn label(&self) -> &str {
        &self.inner.label
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
}

/// Creates the counter of a tag that has none, at a fresh random value,
/// and returns its value (another writer's, if it created it first).
async fn create_counter(conn: &mut Connection<'_>, tag_key: &str) -> Result<u64, async_memcached::Error> {
    let fresh = entry::fresh_generation();
    let text = fresh.to_string();
    match conn
        .run(async |client| client.add(tag_key, text.as_str(), Some(0), None).await)
        .await
    {
        Ok(()) => Ok(fresh),
        Err(async_memcached::Error::Protocol(Status::NotStored)) => {
            let existing = conn.run(async |client| client.get(tag_key).await).await?;
            existing
                .and_then(|value| parse_generation(value.data.as_deref()?))
                .ok_or_else(|| {
                    async_memcached::Error::Protocol(Status::Error(async_memcached::ErrorKind::Generic(
                        "the tag counter vanished while it was created".into(),
                    )))
                })
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_whole_seconds_and_absolute_past_thirty_days() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(expiry(Duration::ZERO, now), 1);
        assert_eq!(expiry(Duration::from_millis(1), now), 1);
        assert_eq!(expiry(Duration::from_millis(1_001), now), 2);
        assert_eq!(expiry(Duration::from_secs(60), now), 60);
        assert_eq!(expiry(MAX_RELATIVE_EXPIRY, now), 2_592_000);
        assert_eq!(
            expiry(MAX_RELATIVE_EXPIRY + Duration::from_secs(1), now),
            1_000_000 + 2_592_001
        );
        assert!(expiry(Duration::MAX, now) > 0);
    }

    #[test]
    fn only_transport_errors_are_tier_failures() {
        use async_memcached::{Error, ErrorKind};
        let label: Arc<str> = "memcached".into();
        for error in [
            Error::Connect(std::io::ErrorKind::ConnectionRefused.into()),
            Error::Io(std::io::ErrorKind::ConnectionReset.into()),
            Error::ConnectionClosed,
        ] {
            assert!(backend_error(&label, error).is_tier_failure());
        }
        for error in [
            Error::Protocol(Status::Error(ErrorKind::Server(
                "object too large for cache".into(),
            ))),
            Error::Protocol(Status::Error(ErrorKind::Client("bad data chunk".into()))),
            Error::Protocol(Status::NotStored),
        ] {
            let error = backend_error(&label, error);
            assert!(matches!(error, BackendError::Key { .. }), "{error:?}");
        }
    }

    #[tokio::test]
    async fn a_dead_server_fails_within_the_timeout_and_opens_the_breaker() {
        // Nothing listens on port 1: connecting is refused at once.
        let backend = MemcachedBackend::builder()
            .server("127.0.0.1:1")
            .failure_threshold(2)
            .build()
            .unwrap();
        let key = CacheKey::builder("t").build();
        for _ in 0..2 {
            let error = backend.read(&key).await.unwrap_err();
            assert!(error.is_tier_failure(), "{error:?}");
        }
        assert_eq!(backend.breaker_state(), BreakerState::Open);
        assert!(matches!(
            backend.read(&key).await,
            Err(BackendError::Unavailable { .. })
        ));
    }
}
