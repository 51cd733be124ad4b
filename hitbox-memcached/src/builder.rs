//! Configuration of a [`MemcachedBackend`]: the server, the pool, the key
//! prefix, the timeouts, the breaker and its clock.

use std::sync::Arc;
use std::time::Duration;

use hitbox_backend::BreakerConfig;
use hitbox_core::{Clock, SharedClock, SystemClock};

use crate::MemcachedBackend;
use crate::error::MemcachedError;

/// How long a read (one `get`, or the `get` of many keys, with the tag
/// generations it needs) may take, connecting included, by default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(50);
/// How long a write, delete or tag invalidation may take by default.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// Connections kept to the server by default.
pub const DEFAULT_POOL_SIZE: usize = 2;
/// The longest key prefix accepted: it comes out of memcached's 250 bytes.
pub const MAX_PREFIX_LEN: usize = 100;

/// Builds a [`MemcachedBackend`]; see [`MemcachedBackend::builder`].
///
/// ```
/// use std::time::Duration;
/// use hitbox_memcached::MemcachedBackend;
///
/// let memcached = MemcachedBackend::builder()
///     .server("127.0.0.1:11211")
///     .pool_size(4)
///     .key_prefix("shop:")
///     .read_timeout(Duration::from_millis(30))
///     .failure_threshold(10)
///     .build()
///     .unwrap();
/// assert_eq!(memcached.key_prefix(), "shop:");
/// ```
#[derive(Clone)]
pub struct MemcachedBackendBuilder {
    server: Option<String>,
    pool_size: usize,
    prefix: String,
    label: Arc<str>,
    read_timeout: Duration,
    write_timeout: Duration,
    breaker: BreakerConfig,
    clock: SharedClock,
}

impl std::fmt::Debug for MemcachedBackendBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedBackendBuilder")
            .field("server", &self.server)
            .field("pool_size", &self.pool_size)
            .field("prefix", &self.prefix)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Default for MemcachedBackendBuilder {
    fn default() -> Self {
        MemcachedBackendBuilder::new()
    }
}

impl MemcachedBackendBuilder {
    /// The default settings, with no server yet.
    pub fn new() -> Self {
        MemcachedBackendBuilder {
            server: None,
            pool_size: DEFAULT_POOL_SIZE,
            prefix: String::new(),
            label: "memcached".into(),
            read_timeout: DEFAULT_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            breaker: BreakerConfig::default(),
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// The server: `host:port`, `tcp://host:port` or `unix:///path/to/socket`.
    pub fn server(mut self, address: impl Into<String>) -> Self {
        self.server = Some(address.into());
        self
    }

    /// The same as [`server`](Self::server), under the name the other tiers
    /// use.
    pub fn url(self, url: impl Into<String>) -> Self {
        self.server(url)
    }

    /// How many connections to keep (default 2). Each runs one command at
    /// a time.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// A prefix put before every key, so that several applications can
    /// share one memcached (at most [`MAX_PREFIX_LEN`] bytes, printable
    /// ASCII without spaces).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The tier's name in logs, errors and stats (default `memcached`).
    pub fn label(mut self, label: impl Into<Arc<str>>) -> Self {
        self.label = label.into();
        self
    }

    /// How long a read may take (default 50 ms), connecting included.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// How long a write, delete or tag invalidation may take (default
    /// 100 ms), connecting included.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The circuit breaker, as a whole.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Consecutive tier failures that open the breaker (default 5).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.breaker = self.breaker.failure_threshold(failures);
        self
    }

    /// How long the breaker stays open before a probe (default 5 s).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.breaker = self.breaker.cool_down(cool_down);
        self
    }

    /// The clock the breaker's cool-down runs on (default the system
    /// clock); tests pass a [`ManualClock`](hitbox_core::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the backend. It connects on first use, not here, so building
    /// needs no server and no runtime.
    pub fn build(self) -> Result<MemcachedBackend, MemcachedError> {
        let server = self.server.ok_or(MemcachedError::NoServer)?;
        let dsn = dsn(&server)?;
        if self.pool_size == 0 {
            return Err(MemcachedError::Invalid("the pool needs at least one connection"));
        }
        if self.prefix.len() > MAX_PREFIX_LEN || !self.prefix.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(MemcachedError::Invalid(
                "the key prefix must be at most 100 bytes of printable ASCII without spaces",
            ));
        }
        if self.read_timeout.is_zero() || self.write_timeout.is_zero() {
            return Err(MemcachedError::Invalid("timeouts must be longer than zero"));
        }
        Ok(MemcachedBackend::from_parts(Parts {
            dsn,
            pool_size: self.pool_size,
            prefix: self.prefix,
            label: self.label,
            read_timeout: self.read_timeout,
            write_timeout: self.write_timeout,
            breaker: self.breaker,
            clock: self.clock,
        }))
    }
}

/// What a built backend is made of.
pub(crate) struct Parts {
    pub dsn: String,
    pub pool_size: usize,
    pub prefix: String,
    pub label: Arc<str>,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub breaker: BreakerConfig,
    pub clock: SharedClock,
}

/// The address as the client takes it, checked here so that a typo is a
/// build error rather than a tier that never connects.
fn dsn(address: &str) -> Result<String, MemcachedError> {
    let invalid = || MemcachedError::Address(address.to_owned());
    if let Some(path) = address.strip_prefix("unix://") {
        return if path.is_empty() {
            Err(invalid())
        } else {
            Ok(address.to_owned())
        };
    }
    let host_port = address.strip_prefix("tcp://").unwrap_or(address);
    let (host, port) = host_port.rsplit_once(':').ok_or_else(invalid)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
        return Err(invalid());
    }
    Ok(format!("tcp://{host_port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(dsn("127.0.0.1:11211").unwrap(), "tcp://127.0.0.1:11211");
        assert_eq!(dsn("tcp://cache:11211").unwrap(), "tcp://cache:11211");
        assert_eq!(
            dsn("unix:///run/memcached.sock").unwrap(),
            "unix:///run/memcached.sock"
        );
        for bad in [
            "",
            "cache",
            "cache:port",
            ":11211",
            "tcp://cache",
            "unix://",
            "http://x/y:1",
        ] {
            assert!(dsn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let base = MemcachedBackendBuilder::new().server("127.0.0.1:11211");
        assert_eq!(
            MemcachedBackendBuilder::new().build().unwrap_err(),
            MemcachedError::NoServer
        );
        assert!(matches!(
            base.clone().pool_size(0).build(),
            Err(MemcachedError::Invalid(_))
        ));
        assert!(matches!(
            base.clone().key_prefix("a b").build(),
            Err(MemcachedError::Invalid(_))
        ));
        assert!(matches!(
            base.clone().key_prefix("x".repeat(101)).build(),
            Err(MemcachedError::Invalid(_))
        ));
        assert!(matches!(
            base.clone().read_timeout(Duration::ZERO).build(),
            Err(MemcachedError::Invalid(_))
        ));
        assert!(base.build().is_ok());
    }
}
