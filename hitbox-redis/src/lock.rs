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
//! the key, a name the key builder never produces) and is never read by the
//! tier.
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

use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use fred::prelude::{Expiration, KeysInterface, LuaInterface, Pool, SetOptions, Value};
use fred::types::scripts::Script;
use hitbox_backend::{BackendError, Cache, CacheableValue, LoadError};
use hitbox_core::{CacheKey, EntryOptions};

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
    /// `cache`). `cache` should reach the Redis the lock lives in (an L2
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
            key.as_str(),
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
