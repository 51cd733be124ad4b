//! Distributed single-flight: when several instances miss one key at once,
//! one of them calls the origin and the others wait for its result.
//!
//! The engine ([`Cache`]) already runs one load per key inside a process;
//! [`RedisLock`] extends that across processes with a lock in Redis:
//!
//! - **Acquire**: `SET <prefix>#lock:<name> <token> NX PX <lease>`, with a
//!   token drawn at random for each acquisition. One key, so one hash slot:
//!   it works on a cluster as on a single server.
//! - **Hold**: while the holder loads, it extends the lease every third of
//!   it, only if the key still holds its token (a Lua compare-and-`PEXPIRE`).
//!   A holder that dies stops extending, and the lock expires after at most
//!   one lease.
//! - **Release**: a Lua compare-and-delete: the key is deleted only if it
//!   still holds the caller's token, so a holder whose lease ran out cannot
//!   release the lock a later holder took.
//!
//! [`RedisLock::get_or_insert_with`] puts this around the engine: a caller
//! that finds the value in the cache returns it; otherwise it tries to take
//! the lock. The holder loads through the engine (which stores the value in
//! every tier) and releases the lock. The others poll, every
//! [`poll_interval`](RedisLock::poll_interval), for the value to appear in
//! the cache, trying to take the lock each time (so they take over from a
//! holder that died), for at most `max_wait`; when the wait runs out, or
//! when Redis cannot be asked, they load for themselves ([`Role::Fallback`]):
//! the lock saves the origin work, it never makes a caller fail.
//! [`RedisLock::run_once`] is the same protocol with caller-supplied "check"
//! and "load" steps, for results that are not stored through a [`Cache`].
//!
//! The lock key lives under the backend's key prefix (`<prefix>#lock:` and
//! the name, a key the key builder never produces) and is never read by the
//! tier. [`RedisLock::get_or_insert_with`] names its lock by the hex
//! BLAKE2b-256 of the cache key ([`RedisLock::key_lock_name`]), so a lock
//! name has a bounded length and never carries the key.
//!
//! # For the HTTP layer: [`DistributedLock`], waiters told by pub/sub
//!
//! `RedisLock` also implements [`DistributedLock`], the hook
//! `hitbox-tower`'s `CacheLayerBuilder::distributed_lock` takes. There the
//! waiters do not poll:
//!
//! - The lock of a key is `<prefix>#flight:<digest>` and its channel
//!   `<prefix>#filled:<digest>`, the digest being the hex BLAKE2b-256 of
//!   the key ([`RedisLock::flight_key`], [`RedisLock::fill_channel`]): the
//!   key itself never appears in a lock or a channel name.
//! - `acquire` is one `SET NX PX`. Taken, the hold renews the lease every
//!   third of it (compare-and-`PEXPIRE`) until it is released. Not taken,
//!   the fill channel is subscribed (Redis confirms it) and then the lease
//!   left is read, before `acquire` returns: an announcement made after
//!   that is seen, and a lock already gone is seen too.
//! - Releasing deletes the lock (compare-and-delete), then publishes
//!   `filled` or `empty`; a hold dropped without release (its task
//!   aborted) publishes `free`. The payload says only what happened: a
//!   waiter reads the shared tier for its own key, never a value from the
//!   message, and a message on another key's channel never reaches it.
//! - A holder that died announces nothing: the waiter wakes when the lease
//!   it read runs out and tries the lock again (the holder that is alive
//!   has renewed it by then, and the waiter goes back to waiting).
//! - One subscriber client per `RedisLock` (and its clones), made on the
//!   first wait; a channel is unsubscribed when its last waiter in the
//!   process leaves. Classic `PUBLISH`/`SUBSCRIBE`, so a cluster works as a
//!   single server does. A reconnection of the subscriber drops its
//!   subscriptions: every waiter is told `free` and tries again.
//!
//! ```no_run
//! use std::time::Duration;
//! use hitbox_backend::lock::{DistributedLock, FillEvent, LoadEnd, LockAttempt};
//! use hitbox_core::CacheKey;
//! use hitbox_redis::{RedisBackend, RedisLock};
//!
//! # async fn example(redis: RedisBackend) -> Result<(), hitbox_backend::BackendError> {
//! let lock = RedisLock::new(&redis).lease(Duration::from_secs(10));
//! let key = CacheKey::builder("reports").part("day", "2024-06-01").build();
//! match lock.acquire(&key).await? {
//!     LockAttempt::Acquired(hold) => {
//!         // ... load and store, then tell the others:
//!         hold.release(LoadEnd::Filled).await;
//!     }
//!     LockAttempt::HeldElsewhere(mut watch) => {
//!         let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
//!         if watch.wait(deadline).await == FillEvent::Filled {
//!             // ... read the shared tier for `key`
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ```no_run
//! use std::time::Duration;
//! use hitbox_backend::Cache;
//! use hitbox_core::{CacheKey, EntryOptions};
//! use hitbox_redis::{RedisBackend, RedisLock};
//!
//! # async fn example(redis: RedisBackend, cache: Cache) {
//! let lock = RedisLock::new(&redis).lease(Duration::from_secs(5));
//! let key = CacheKey::entity("reports", "acme", "daily", "2024-06-01");
//! let report = lock
//!     .get_or_insert_with(&cache, &key, &EntryOptions::new(), Duration::from_secs(2), || async {
//!         Ok::<_, std::io::Error>("expensive".to_string())
//!     })
//!     .await;
//! # let _ = report;
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use blake2::Digest;
use fred::prelude::{
    Builder, Client, ClientLike, EventInterface, Expiration, KeysInterface, LuaInterface, Pool,
    PubsubInterface, ReconnectPolicy, SetOptions, Value,
};
use fred::types::Message;
use fred::types::scripts::Script;
use hitbox_backend::lock::{
    DistributedLock, FillEvent, FillWatch, LoadEnd, LockAttempt, LockFuture, LockHold,
};
use hitbox_backend::{BackendError, Cache, CacheableValue, LoadError};
use hitbox_core::{CacheKey, EntryOptions};
use tokio::sync::broadcast;

use crate::RedisBackend;
use crate::invalidation::random_token;

/// The default lease of a lock: how long it outlives a holder that died.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The default time between two checks of a waiter.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The default timeout of one lock command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Deletes KEYS[1] if it holds ARGV[1].
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Sets the expiry of KEYS[1] to ARGV[2] ms if it holds ARGV[1].
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::from_lua(RELEASE_LUA));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::from_lua(RENEW_LUA));

/// How a caller of [`RedisLock::run_once`] got its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The value was there already, or appeared while waiting: someone
    /// else loaded it.
    Found,
    /// This caller held the lock and loaded.
    Loaded,
    /// This caller loaded without the lock: the wait ran out, or Redis
    /// could not be asked.
    Fallback,
}

/// A value and how it was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOnce<T> {
    /// The value.
    pub value: T,
    /// How it was obtained.
    pub role: Role,
}

/// Distributed single-flight over the Redis of a [`RedisBackend`]; see the
/// [module documentation](self). Cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use hitbox_redis::{RedisBackend, RedisLock};
///
/// # fn example(redis: RedisBackend) {
/// let lock = RedisLock::new(&redis)
///     .lease(Duration::from_secs(5))
///     .poll_interval(Duration::from_millis(50))
///     .command_timeout(Duration::from_millis(200));
/// assert_eq!(lock.lock_key("daily-report"), format!("{}#lock:daily-report", redis.key_prefix()));
/// # }
/// ```
#[derive(Clone)]
pub struct RedisLock {
    inner: Arc<LockConfig>,
    /// The waiters of [`DistributedLock`] acquisitions, and their
    /// subscriber client (made on the first wait).
    fills: Arc<Fills>,
}

#[derive(Clone)]
struct LockConfig {
    pool: Pool,
    prefix: String,
    label: Arc<str>,
    lease: Duration,
    poll_interval: Duration,
    command_timeout: Duration,
}

impl fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLock")
            .field("prefix", &self.inner.prefix)
            .field("lease", &self.inner.lease)
            .field("poll_interval", &self.inner.poll_interval)
            .finish_non_exhaustive()
    }
}

impl RedisLock {
    /// Locks in the Redis of `redis`, under its key prefix, with the default
    /// settings. Lock commands use the backend's connections but not its
    /// breaker nor its timeouts (see [`RedisLock::command_timeout`]).
    pub fn new(redis: &RedisBackend) -> RedisLock {
        RedisLock {
            inner: Arc::new(LockConfig {
                pool: redis.pool().clone(),
                prefix: redis.key_prefix().to_owned(),
                label: Arc::from(format!("{}-lock", hitbox_backend::Backend::label(redis))),
                lease: DEFAULT_LEASE,
                poll_interval: DEFAULT_POLL_INTERVAL,
                command_timeout: DEFAULT_COMMAND_TIMEOUT,
            }),
            fills: Arc::new(Fills::default()),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut LockConfig)) -> Self {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// The lease (default [`DEFAULT_LEASE`], at least 3 ms): how long the
    /// lock outlives a holder that died. Holders extend it while they load.
    pub fn lease(self, lease: Duration) -> Self {
        self.with(|c| c.lease = lease.max(Duration::from_millis(3)))
    }

    /// The time between two checks of a waiter (default
    /// [`DEFAULT_POLL_INTERVAL`], at least 1 ms).
    pub fn poll_interval(self, interval: Duration) -> Self {
        self.with(|c| c.poll_interval = interval.max(Duration::from_millis(1)))
    }

    /// The timeout of one lock command (default [`DEFAULT_COMMAND_TIMEOUT`]).
    pub fn command_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.command_timeout = timeout)
    }

    /// The Redis key of the lock named `name`.
    pub fn lock_key(&self, name: &str) -> String {
        format!("{}#lock:{name}", self.inner.prefix)
    }

    /// The name of the lock [`RedisLock::get_or_insert_with`] takes for
    /// `key`: the hex BLAKE2b-256 of the key.
    pub fn key_lock_name(key: &CacheKey) -> String {
        key_digest(key)
    }

    async fn command<T>(
        &self,
        op: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, BackendError> {
        match tokio::time::timeout(self.inner.command_timeout, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(crate::backend_error(&self.inner.label, error)),
            Err(_) => Err(BackendError::Timeout {
                tier: Arc::clone(&self.inner.label),
                after: self.inner.command_timeout,
            }),
        }
    }

    /// Runs a compare-and-something script on one key.
    async fn script(
        &self,
        script: &Script,
        lua: &str,
        key: &str,
        args: Vec<Value>,
    ) -> Result<i64, BackendError> {
        let pool = &self.inner.pool;
        let op = async {
            match pool
                .evalsha::<i64, _, _, _>(script.sha1().clone(), key, args.clone())
                .await
            {
                Err(error) if error.details().starts_with("NOSCRIPT") => {
                    pool.eval::<i64, _, _, _>(lua, key, args).await
                }
                other => other,
            }
        };
        self.command(op).await
    }

    /// Takes the lock named `name` if nobody holds it. `Ok(None)`: someone
    /// does.
    pub async fn try_acquire(&self, name: &str) -> Result<Option<LockGuard>, BackendError> {
        let key = self.lock_key(name);
        let token = random_token();
        let px = crate::px_millis(self.inner.lease);
        let reply: Value = self
            .command(self.inner.pool.set(
                key.as_str(),
                token.as_str(),
                Some(Expiration::PX(px)),
                Some(SetOptions::NX),
                false,
            ))
            .await?;
        if reply.is_null() {
            return Ok(None);
        }
        Ok(Some(LockGuard {
            lock: self.clone(),
            key,
            token,
            released: false,
        }))
    }

    /// Runs `work` while extending `guard`'s lease every third of it.
    async fn holding<F: Future>(&self, guard: &LockGuard, work: F) -> F::Output {
        let every = self.inner.lease / 3;
        let renew = async {
            loop {
                tokio::time::sleep(every).await;
                match guard.renew().await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!("distributed lock lost while loading (lease too short?)"),
                    Err(error) => tracing::debug!(%error, "distributed lock renewal failed"),
                }
            }
        };
        tokio::select! {
            output = work => output,
            _ = renew => unreachable!("the renewal loop never ends"),
        }
    }

    /// The single-flight protocol with steps of the caller's: `check` looks
    /// for the value (in a store the holder's `load` fills); `load` computes
    /// it, and stores it where `check` looks. At most `max_wait` is spent
    /// waiting for another instance before loading anyway.
    ///
    /// `check` runs first, then after each wait and once more after the lock
    /// is taken (another holder may have stored the value and released the
    /// lock in between). `load` runs at most once, with the lock
    /// ([`Role::Loaded`]) or without it ([`Role::Fallback`]).
    pub async fn run_once<T, E, C, CF, L, LF>(
        &self,
        name: &str,
        max_wait: Duration,
        mut check: C,
        load: L,
    ) -> Result<RunOnce<T>, E>
    where
        C: FnMut() -> CF,
        CF: Future<Output = Option<T>>,
        L: FnOnce() -> LF,
        LF: Future<Output = Result<T, E>>,
    {
        let found = |value| RunOnce {
            value,
            role: Role::Found,
        };
        if let Some(value) = check().await {
            return Ok(found(value));
        }
        let deadline = Instant::now() + max_wait;
        loop {
            match self.try_acquire(name).await {
                Ok(Some(guard)) => {
                    let outcome = match check().await {
                        Some(value) => Ok(found(value)),
                        None => self.holding(&guard, load()).await.map(|value| RunOnce {
                            value,
                            role: Role::Loaded,
                        }),
                    };
                    if let Err(error) = guard.release().await {
                        tracing::debug!(%error, "distributed lock release failed; it expires");
                    }
                    return outcome;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "distributed lock unavailable; loading without it");
                    break;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::debug!(?max_wait, "distributed lock wait ran out; loading without it");
                break;
            }
            tokio::time::sleep(self.inner.poll_interval.min(deadline - now)).await;
            if let Some(value) = check().await {
                return Ok(found(value));
            }
        }
        load().await.map(|value| RunOnce {
            value,
            role: Role::Fallback,
        })
    }

    /// [`Cache::try_get_or_insert_with_options`] with the load shared by
    /// every instance: the value under `key` if `cache` has it, otherwise
    /// the loader's value, loaded by one instance holding the lock named
    /// after the key (the others wait up to `max_wait` for it to appear in
    /// `cache`). The lock's name is the key's digest ([`RedisLock::key_lock_name`]),
    /// as the HTTP layer's lock is: of a bounded length, whatever the key. `cache` should reach the Redis the lock lives in (an L2
    /// the instances share), or waiters never see the holder's value.
    pub async fn get_or_insert_with<V, E, F, Fut>(
        &self,
        cache: &Cache,
        key: &CacheKey,
        options: &EntryOptions,
        max_wait: Duration,
        loader: F,
    ) -> Result<RunOnce<V>, LoadError<E>>
    where
        V: CacheableValue,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        self.run_once(
            &Self::key_lock_name(key),
            max_wait,
            || cache.get::<V>(key),
            || cache.try_get_or_insert_with_options(key, options, loader),
        )
        .await
    }
}

/// A lock held; see [`RedisLock::try_acquire`]. Dropping it without
/// [`release`](LockGuard::release) releases it in a spawned task (best
/// effort); `std::mem::forget` leaves it to expire.
pub struct LockGuard {
    lock: RedisLock,
    key: String,
    token: String,
    released: bool,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is what proves ownership: not logged.
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// The lock's Redis key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Extends the lease from now; `false` if the lock is no longer this
    /// guard's (it expired, and maybe someone else took it).
    pub async fn renew(&self) -> Result<bool, BackendError> {
        let px = crate::px_millis(self.lock.inner.lease);
        let args = vec![Value::from(self.token.as_str()), Value::from(px)];
        Ok(self.lock.script(&RENEW, RENEW_LUA, &self.key, args).await? == 1)
    }

    /// Releases the lock if it is still this guard's; returns whether it
    /// was (`false`: it expired, and maybe someone else holds it now, whose
    /// lock is left alone).
    pub async fn release(mut self) -> Result<bool, BackendError> {
        self.released = true;
        release_token(&self.lock, &self.key, &self.token).await
    }
}

/// Deletes the lock at `key` if it holds `token`.
async fn release_token(lock: &RedisLock, key: &str, token: &str) -> Result<bool, BackendError> {
    let args = vec![Value::from(token)];
    Ok(lock.script(&RELEASE, RELEASE_LUA, key, args).await? == 1)
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // A plain future, not a guard: if the runtime is shutting down and
        // drops it unpolled, nothing is spawned again.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let lock = self.lock.clone();
            let key = std::mem::take(&mut self.key);
            let token = std::mem::take(&mut self.token);
            runtime.spawn(async move {
                let _ = release_token(&lock, &key, &token).await;
            });
        }
    }
}

// The lock as the HTTP layer uses it: `DistributedLock`, with waiters told
// by pub/sub instead of polling.

/// What a holder publishes on a key's fill channel. Announcements carry
/// no data: a waiter reads what the shared tier holds for its own key.
const FILLED: &str = "filled";
const EMPTY: &str = "empty";
const FREE: &str = "free";

/// How many locks serialise the (un)subscriptions of the fill channels:
/// one channel's always go through the same one, in order.
const SHARDS: usize = 16;

/// The waiters of one process, by fill channel, and the client they
/// listen through.
#[derive(Default)]
struct Fills {
    subscriber: tokio::sync::OnceCell<Subscriber>,
    channels: Arc<Mutex<HashMap<String, Listeners>>>,
    shards: [tokio::sync::Mutex<()>; SHARDS],
}

impl Fills {
    fn shard(&self, channel: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        channel.hash(&mut hasher);
        &self.shards[(hasher.finish() % SHARDS as u64) as usize]
    }
}

/// The waiters of one channel in this process.
struct Listeners {
    count: usize,
    events: broadcast::Sender<FillEvent>,
}

/// The client the fill channels are subscribed with, and the task that
/// hands what arrives to the waiters.
struct Subscriber {
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

/// Tells every waiter of this process that its lock may be free: after a
/// lost connection (its subscriptions went with it) or lost messages.
fn wake_all(channels: &Mutex<HashMap<String, Listeners>>) {
    let channels = channels.lock().unwrap_or_else(|p| p.into_inner());
    for listeners in channels.values() {
        let _ = listeners.events.send(FillEvent::Free);
    }
}

/// Hands the announcements that arrive to the waiters of their channel.
async fn dispatch(
    channels: Arc<Mutex<HashMap<String, Listeners>>>,
    mut messages: broadcast::Receiver<Message>,
    mut reconnects: broadcast::Receiver<fred::types::config::Server>,
) {
    use broadcast::error::RecvError;
    // Every server's first connection is no loss (a cluster client makes
    // one per node); any later one is: the subscriptions it carried are
    // gone, and the waiters resubscribe as they try the lock again.
    let mut connected_before = std::collections::HashSet::new();
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    let event = match message.value.as_bytes() {
                        Some(bytes) if bytes == FILLED.as_bytes() => FillEvent::Filled,
                        Some(bytes) if bytes == EMPTY.as_bytes() => FillEvent::Empty,
                        Some(bytes) if bytes == FREE.as_bytes() => FillEvent::Free,
                        _ => {
                            tracing::debug!("unreadable fill announcement dropped");
                            continue;
                        }
                    };
                    let channels = channels.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(listeners) = channels.get(&*message.channel) {
                        let _ = listeners.events.send(event);
                    }
                }
                Err(RecvError::Lagged(_)) => wake_all(&channels),
                Err(RecvError::Closed) => break,
            },
            server = reconnects.recv() => match server {
                Ok(server) => {
                    if !connected_before.insert(server) {
                        wake_all(&channels);
                    }
                }
                Err(RecvError::Lagged(_)) => wake_all(&channels),
                Err(RecvError::Closed) => break,
            },
        }
    }
}

/// The digest a key's lock and channel are named by: the key itself never
/// appears in Redis outside the entry.
fn key_digest(key: &CacheKey) -> String {
    hex::encode(Blake2b256::digest(key.as_str().as_bytes()))
}

type Blake2b256 = blake2::Blake2b<blake2::digest::consts::U32>;

impl RedisLock {
    /// The Redis key of the [`DistributedLock`] of `key`:
    /// `<prefix>#flight:<hex BLAKE2b-256 of the key>`.
    pub fn flight_key(&self, key: &CacheKey) -> String {
        format!("{}#flight:{}", self.inner.prefix, key_digest(key))
    }

    /// The pub/sub channel on which the holder of `key`'s
    /// [`DistributedLock`] announces the end of its load:
    /// `<prefix>#filled:<hex BLAKE2b-256 of the key>`.
    pub fn fill_channel(&self, key: &CacheKey) -> String {
        format!("{}#filled:{}", self.inner.prefix, key_digest(key))
    }

    /// How many [`DistributedLock`] waiters of this process (of this lock
    /// and its clones) are listening for a holder's announcement now.
    pub fn waiting(&self) -> usize {
        let channels = self.fills.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.values().map(|listeners| listeners.count).sum()
    }

    /// The subscriber client, made and connected on first use.
    async fn subscriber(&self) -> Result<&Client, BackendError> {
        let label = &self.inner.label;
        let subscriber = self
            .fills
            .subscriber
            .get_or_try_init(|| async {
                let template = self.inner.pool.next();
                let policy = template
                    .client_reconnect_policy()
                    .unwrap_or_else(|| ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
                let client = Builder::from_config(template.client_config())
                    .set_performance_config(template.perf_config())
                    .set_connection_config(template.connection_config().clone())
                    .set_policy(policy)
                    .build()
                    .map_err(|error| crate::backend_error(label, error))?;
                // The receivers exist before the connection, so that
                // nothing published once it is up is missed.
                let task = tokio::spawn(dispatch(
                    Arc::clone(&self.fills.channels),
                    client.message_rx(),
                    client.reconnect_rx(),
                ));
                drop(client.connect());
                Ok::<_, BackendError>(Subscriber { client, task })
            })
            .await?;
        if !subscriber.client.is_connected() {
            self.command(subscriber.client.wait_for_connect()).await?;
        }
        Ok(&subscriber.client)
    }

    /// Listens on `channel` for the end of the load holding `lock_key`:
    /// subscribed (Redis confirmed) before it returns, then the lease left
    /// read, so that a holder that is gone already is seen.
    async fn watch(&self, channel: String, lock_key: &str) -> Result<RedisWatch, BackendError> {
        let client = self.subscriber().await?;
        let events = {
            let mut channels = self.fills.channels.lock().unwrap_or_else(|p| p.into_inner());
            let listeners = channels.entry(channel.clone()).or_insert_with(|| Listeners {
                count: 0,
                events: broadcast::channel(4).0,
            });
            listeners.count += 1;
            listeners.events.subscribe()
        };
        // From here on, dropping the watch (an error below) unregisters it.
        let mut watch = RedisWatch {
            lock: self.clone(),
            channel,
            events,
            lapses_at: None,
        };
        {
            let _order = self.fills.shard(&watch.channel).lock().await;
            self.command(client.subscribe(watch.channel.as_str())).await?;
        }
        let left: i64 = self.command(self.inner.pool.pttl(lock_key)).await?;
        let now = tokio::time::Instant::now();
        watch.lapses_at = match left {
            // Gone already: released (its announcement came before we
            // listened) or lapsed.
            -2 => Some(now),
            left if left >= 0 => Some(now + Duration::from_millis(left as u64)),
            _ => None,
        };
        Ok(watch)
    }

    /// Publishes `what` on `channel`, within the command timeout.
    async fn announce(&self, channel: &str, what: &'static str) {
        if let Err(error) = self
            .command(self.inner.pool.next().publish::<i64, _, _>(channel, what))
            .await
        {
            tracing::debug!(%error, "fill announcement failed; waiters time out or see the lock lapse");
        }
    }
}

impl DistributedLock for RedisLock {
    /// `SET <flight key> <token> NX PX <lease>`; taken, the lease is
    /// renewed every third of it until the hold is released. Not taken,
    /// the fill channel is subscribed, then the lease left is read. Every
    /// command is bounded by [`RedisLock::command_timeout`].
    fn acquire<'a>(&'a self, key: &'a CacheKey) -> LockFuture<'a, Result<LockAttempt, BackendError>> {
        Box::pin(async move {
            let digest = key_digest(key);
            let lock_key = format!("{}#flight:{digest}", self.inner.prefix);
            let channel = format!("{}#filled:{digest}", self.inner.prefix);
            let token = random_token();
            let px = crate::px_millis(self.inner.lease);
            let reply: Value = self
                .command(self.inner.pool.set(
                    lock_key.as_str(),
                    token.as_str(),
                    Some(Expiration::PX(px)),
                    Some(SetOptions::NX),
                    false,
                ))
                .await?;
            if reply.is_null() {
                let watch = self.watch(channel, &lock_key).await?;
                return Ok(LockAttempt::HeldElsewhere(Box::new(watch)));
            }
            Ok(LockAttempt::Acquired(Box::new(RedisHold::start(
                self.clone(),
                lock_key,
                channel,
                token,
            ))))
        })
    }
}

/// A [`DistributedLock`] held: renewed by a task of its own until released.
struct RedisHold {
    lock: RedisLock,
    key: String,
    channel: String,
    token: String,
    renew: tokio::task::JoinHandle<()>,
    released: bool,
}

impl RedisHold {
    fn start(lock: RedisLock, key: String, channel: String, token: String) -> RedisHold {
        let renew = tokio::spawn({
            let (lock, key, token) = (lock.clone(), key.clone(), token.clone());
            async move {
                let every = lock.inner.lease / 3;
                loop {
                    tokio::time::sleep(every).await;
                    let px = crate::px_millis(lock.inner.lease);
                    let args = vec![Value::from(token.as_str()), Value::from(px)];
                    match lock.script(&RENEW, RENEW_LUA, &key, args).await {
                        Ok(1) => {}
                        Ok(_) => {
                            tracing::warn!("distributed lock lost while loading (lease too short?)");
                            return;
                        }
                        Err(error) => tracing::debug!(%error, "distributed lock renewal failed"),
                    }
                }
            }
        });
        RedisHold {
            lock,
            key,
            channel,
            token,
            renew,
            released: false,
        }
    }

    /// Releases the lock, then tells the waiters (releasing first, so that
    /// a waiter told to try the lock finds it free). A fill is news
    /// whoever holds the lock now; the other announcements only if the
    /// lock was still this hold's, not to disturb a later holder's waiters.
    fn finish(&mut self, what: &'static str) -> impl Future<Output = ()> + Send + 'static {
        self.released = true;
        self.renew.abort();
        let lock = self.lock.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        let channel = std::mem::take(&mut self.channel);
        async move {
            let ours = match release_token(&lock, &key, &token).await {
                Ok(ours) => ours,
                Err(error) => {
                    tracing::debug!(%error, "distributed lock release failed; it lapses");
                    false
                }
            };
            if what == FILLED || ours {
                lock.announce(&channel, what).await;
            }
        }
    }
}

impl LockHold for RedisHold {
    fn release(mut self: Box<Self>, end: LoadEnd) -> LockFuture<'static, ()> {
        let what = match end {
            LoadEnd::Filled => FILLED,
            LoadEnd::Empty => EMPTY,
        };
        Box::pin(self.finish(what))
    }
}

impl Drop for RedisHold {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Dropped mid-load (its task aborted): the lock is freed for a
        // waiter to take over.
        let finish = self.finish(FREE);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(finish);
        }
    }
}

/// A waiter's side of a [`DistributedLock`] acquisition that lost.
struct RedisWatch {
    lock: RedisLock,
    channel: String,
    events: broadcast::Receiver<FillEvent>,
    /// When the holder's lease runs out, as read after subscribing: past
    /// it, the waiter tries the lock again (a holder that died announces
    /// nothing).
    lapses_at: Option<tokio::time::Instant>,
}

impl FillWatch for RedisWatch {
    fn wait(&mut self, deadline: tokio::time::Instant) -> LockFuture<'_, FillEvent> {
        Box::pin(async move {
            let until = self.lapses_at.map_or(deadline, |lapses| lapses.min(deadline));
            tokio::select! {
                event = self.events.recv() => event.unwrap_or(FillEvent::Free),
                _ = tokio::time::sleep_until(until) => {
                    if until < deadline { FillEvent::Free } else { FillEvent::TimedOut }
                }
            }
        })
    }
}

impl Drop for RedisWatch {
    fn drop(&mut self) {
        let last = {
            let mut channels = self.lock.fills.channels.lock().unwrap_or_else(|p| p.into_inner());
            match channels.get_mut(&self.channel) {
                Some(listeners) if listeners.count > 1 => {
                    listeners.count -= 1;
                    false
                }
                Some(_) => {
                    channels.remove(&self.channel);
                    true
                }
                None => false,
            }
        };
        if !last {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let lock = self.lock.clone();
        let channel = std::mem::take(&mut self.channel);
        runtime.spawn(async move {
            let Some(subscriber) = lock.fills.subscriber.get() else {
                return;
            };
            let _order = lock.fills.shard(&channel).lock().await;
            // A waiter that came for the channel meanwhile keeps it.
            let wanted = lock
                .fills
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&channel);
            if !wanted {
                let _ = lock
                    .command(subscriber.client.unsubscribe(channel.as_str()))
                    .await;
            }
        });
    }
}
