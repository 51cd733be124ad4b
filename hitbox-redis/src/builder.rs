//! Configuration of a [`RedisBackend`].
//!
//! Everything about a backend is decided here, once, before it exists:
//! where the servers are (a URL, a standalone server, a cluster, sentinels
//! or a whole fred configuration), the credentials, the pool, the key
//! prefix, the timeouts, the breaker and its clock, the reconnect policy.
//! [`RedisBackendBuilder::build`] turns the settings into a fred pool and
//! hands the result to the backend; the backend itself never changes its
//! settings.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{
    Config, ConnectionConfig, EventInterface, PerformanceConfig, Pool, ReconnectPolicy, Server, ServerConfig,
};
use fred::types::config::ClusterDiscoveryPolicy;

use hitbox_core::{Clock, SharedClock, SystemClock};

use crate::audit::DEFAULT_AUDIT_MAX_LEN;
use crate::breaker::BreakerConfig;
use crate::invalidation::OriginId;
use crate::{RedisBackend, RedisError};

/// The default timeout of a read (`GET`, `EXISTS`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(50);

/// The default timeout of a write (the tag registrations and the `SET`
/// together) and of a removal.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// The default timeout of a whole tag invalidation (which may delete many
/// keys).
pub const DEFAULT_INVALIDATE_TIMEOUT: Duration = Duration::from_secs(1);

/// The default bound on one purge (see [`RedisBackendBuilder::purge_timeout`]):
/// a prefix's `SCAN` and `UNLINK`s, or a soft purge's reads and writes,
/// all together.
pub const DEFAULT_PURGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a tag set keeps a member after its entry expired; see
/// [`RedisBackendBuilder::tag_grace`].
pub const DEFAULT_TAG_GRACE: Duration = Duration::from_secs(5);

/// The default largest entry the tier takes (16 MiB): Redis takes values
/// up to 512 MB, but a large value blocks the server while it is copied,
/// and an HTTP response that large is rarely worth caching in a shared
/// tier. See [`RedisBackendBuilder::max_entry_size`].
pub const DEFAULT_MAX_ENTRY_SIZE: usize = 16 * 1024 * 1024;

/// The default number of connections (each multiplexes and pipelines
/// commands, so one is often enough).
pub const DEFAULT_POOL_SIZE: usize = 1;

enum Target {
    Url(String),
    Servers(ServerConfig),
    Config(Box<Config>),
}

/// Configures a [`RedisBackend`]; see [`RedisBackend::builder`].
///
/// One of [`url`](Self::url), [`standalone`](Self::standalone),
/// [`cluster`](Self::cluster), [`sentinel`](Self::sentinel) or
/// [`fred_config`](Self::fred_config) is required; the last one called wins.
///
/// ```no_run
/// use std::time::Duration;
/// use hitbox_redis::RedisBackend;
/// use hitbox_redis::fred::prelude::ReconnectPolicy;
///
/// # fn example() -> Result<(), hitbox_redis::RedisError> {
/// let redis = RedisBackend::builder()
///     .standalone("cache.internal", 6379)
///     .username("app")
///     .password("secret")
///     .database(1)
///     .pool_size(2)
///     .key_prefix("shop:")
///     .label("redis-shop")
///     .connection_timeout(Duration::from_secs(2))
///     .unresponsive_after(Some(Duration::from_secs(1)))
///     .tag_grace(Duration::from_secs(10))
///     // Up to 10 attempts, 50 ms to 2 s apart.
///     .reconnect_policy(ReconnectPolicy::new_exponential(10, 50, 2_000, 2))
///     .build()?;
/// # let _ = redis;
/// # Ok(())
/// # }
/// ```
pub struct RedisBackendBuilder {
    target: Option<Target>,
    username: Option<String>,
    password: Option<String>,
    database: Option<u8>,
    pool_size: usize,
    prefix: String,
    label: Arc<str>,
    read_timeout: Duration,
    write_timeout: Duration,
    invalidate_timeout: Duration,
    purge_timeout: Duration,
    connection_timeout: Duration,
    unresponsive_after: Option<Duration>,
    tag_grace: Duration,
    breaker: BreakerConfig,
    clock: SharedClock,
    reconnect: ReconnectPolicy,
    max_entry_size: usize,
    instance: Option<OriginId>,
    audit: Option<AuditSettings>,
    #[cfg(feature = "tls")]
    tls: bool,
}

/// The audit stream's settings.
#[derive(Debug, Clone)]
pub(crate) struct AuditSettings {
    pub(crate) key: Option<String>,
    pub(crate) max_len: u64,
}

impl std::fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No URL, user name or password: they may hold secrets.
        f.debug_struct("RedisBackendBuilder")
            .field("pool_size", &self.pool_size)
            .field("label", &self.label)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("invalidate_timeout", &self.invalidate_timeout)
            .field("purge_timeout", &self.purge_timeout)
            .field("breaker", &self.breaker)
            .field("instance", &self.instance)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

impl Default for RedisBackendBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// What the builder hands to [`RedisBackend::from_parts`].
pub(crate) struct Parts {
    pub(crate) pool: Pool,
    pub(crate) clustered: bool,
    pub(crate) label: Arc<str>,
    pub(crate) prefix: String,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) invalidate_timeout: Duration,
    pub(crate) purge_timeout: Duration,
    pub(crate) tag_grace: Duration,
    pub(crate) breaker: BreakerConfig,
    pub(crate) clock: SharedClock,
    pub(crate) max_entry_size: usize,
    pub(crate) instance: OriginId,
    pub(crate) audit: Option<AuditSettings>,
}

impl RedisBackendBuilder {
    /// A builder with the default settings and no server.
    pub fn new() -> Self {
        RedisBackendBuilder {
            target: None,
            username: None,
            password: None,
            database: None,
            pool_size: DEFAULT_POOL_SIZE,
            prefix: String::new(),
            label: "redis".into(),
            read_timeout: DEFAULT_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            invalidate_timeout: DEFAULT_INVALIDATE_TIMEOUT,
            purge_timeout: DEFAULT_PURGE_TIMEOUT,
            connection_timeout: Duration::from_secs(5),
            unresponsive_after: Some(Duration::from_secs(2)),
            tag_grace: DEFAULT_TAG_GRACE,
            breaker: BreakerConfig::default(),
            clock: Arc::new(SystemClock::new()),
            // Retry forever, from 100 ms up to 250 ms between attempts: a
            // Redis that comes back is connected to within a quarter of a
            // second, so that the breaker's next probe (one cool-down
            // later) finds it up. A refused connection costs nothing to
            // retry.
            reconnect: ReconnectPolicy::new_exponential(0, 100, 250, 2),
            max_entry_size: DEFAULT_MAX_ENTRY_SIZE,
            instance: None,
            audit: Some(AuditSettings {
                key: None,
                max_len: DEFAULT_AUDIT_MAX_LEN,
            }),
            #[cfg(feature = "tls")]
            tls: false,
        }
    }

    /// The server(s) as a URL; see [`RedisBackend::from_url`] for the forms.
    /// Credentials and the database in the URL are used unless
    /// [`username`](Self::username), [`password`](Self::password) or
    /// [`database`](Self::database) are set too.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.target = Some(Target::Url(url.into()));
        self
    }

    /// A standalone server.
    pub fn standalone(mut self, host: impl Into<String>, port: u16) -> Self {
        self.target = Some(Target::Servers(ServerConfig::new_centralized(host, port)));
        self
    }

    /// A cluster, reached through these seed nodes (one is enough: the
    /// others are discovered).
    pub fn cluster<H: Into<String>>(mut self, nodes: impl IntoIterator<Item = (H, u16)>) -> Self {
        let hosts = nodes
            .into_iter()
            .map(|(host, port)| Server::new(host.into(), port))
            .collect();
        self.target = Some(Target::Servers(ServerConfig::Clustered {
            hosts,
            policy: ClusterDiscoveryPolicy::default(),
        }));
        self
    }

    /// The primary of `service_name`, found through these sentinels.
    pub fn sentinel<H: Into<String>>(
        mut self,
        sentinels: impl IntoIterator<Item = (H, u16)>,
        service_name: impl Into<String>,
    ) -> Self {
        let hosts = sentinels
            .into_iter()
            .map(|(host, port)| Server::new(host.into(), port))
            .collect();
        self.target = Some(Target::Servers(ServerConfig::Sentinel {
            hosts,
            service_name: service_name.into(),
        }));
        self
    }

    /// A complete fred configuration, for settings this builder does not
    /// offer. The credentials and database of the builder
    /// still override it when set.
    pub fn fred_config(mut self, config: Config) -> Self {
        self.target = Some(Target::Config(Box::new(config)));
        self
    }

    /// The ACL user name.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The database to `SELECT` (standalone and sentinel only).
    pub fn database(mut self, database: u8) -> Self {
        self.database = Some(database);
        self
    }

    /// Connects with TLS (rustls, trusting the platform's root
    /// certificates), as the `rediss://` URL schemes do. For client
    /// certificates or other roots, pass a [`fred_config`](Self::fred_config)
    /// with its `tls` field set.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// How many connections to open (default [`DEFAULT_POOL_SIZE`]).
    /// Operations are spread over them in turn.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// A prefix put before every key, data and tag sets alike (default
    /// none), so that several applications can share one Redis.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The tier's label in logs, errors and stats (default `redis`).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into().into();
        self
    }

    /// The largest entry the tier takes, in bytes (default
    /// [`DEFAULT_MAX_ENTRY_SIZE`]). Behind [`Staged`](hitbox_backend::Staged)
    /// stages, a larger value is refused before it is sent, and a stored
    /// entry that would decompress to more is a miss, refused before it is
    /// decompressed. Without stages, larger writes are refused here.
    pub fn max_entry_size(mut self, bytes: usize) -> Self {
        self.max_entry_size = bytes;
        self
    }

    /// The timeout of a read (default [`DEFAULT_READ_TIMEOUT`]).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The timeout of a write or removal (default
    /// [`DEFAULT_WRITE_TIMEOUT`]).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The timeout of a tag invalidation (default
    /// [`DEFAULT_INVALIDATE_TIMEOUT`]).
    pub fn invalidate_timeout(mut self, timeout: Duration) -> Self {
        self.invalidate_timeout = timeout;
        self
    }

    /// The bound on one purge (default [`DEFAULT_PURGE_TIMEOUT`], 30 s): a
    /// purge by prefix (its `SCAN` on every primary and its `UNLINK`s) or a
    /// soft purge (its reads and rewrites), all together. Past it the purge
    /// fails with [`BackendError::Timeout`](hitbox_backend::BackendError::Timeout);
    /// what it purged so far stays purged, and purges are idempotent, so
    /// the caller may retry. Hard purges by key and by tag are a removal
    /// and a tag invalidation, bounded by
    /// [`write_timeout`](Self::write_timeout) and
    /// [`invalidate_timeout`](Self::invalidate_timeout).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use hitbox_redis::RedisBackend;
    ///
    /// # fn example() -> Result<(), hitbox_redis::RedisError> {
    /// // An admin endpoint that must answer within 5 s.
    /// let redis = RedisBackend::builder()
    ///     .url("redis://127.0.0.1:6379")
    ///     .purge_timeout(Duration::from_secs(5))
    ///     .build()?;
    /// # let _ = redis;
    /// # Ok(())
    /// # }
    /// ```
    pub fn purge_timeout(mut self, timeout: Duration) -> Self {
        self.purge_timeout = timeout;
        self
    }

    /// How long fred may take to open one connection (default 5 s).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// After how long without an answer a connection is taken for dead
    /// and reconnected (default 2 s; `None`: never). This is what notices
    /// a Redis that hangs, or a network that drops packets, where no error
    /// ever closes the connection; the breaker keeps requests fast in the
    /// meantime.
    pub fn unresponsive_after(mut self, after: Option<Duration>) -> Self {
        self.unresponsive_after = after;
        self
    }

    /// How long a tag set keeps a member after the member's entry expired
    /// (default [`DEFAULT_TAG_GRACE`]), and how long the set outlives its
    /// last member. A margin for the clocks of cluster nodes, which each
    /// expire their own keys: it should exceed their skew.
    pub fn tag_grace(mut self, grace: Duration) -> Self {
        self.tag_grace = grace;
        self
    }

    /// The whole circuit breaker configuration.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Consecutive tier failures that open the circuit breaker (default
    /// [`DEFAULT_FAILURE_THRESHOLD`](crate::breaker::DEFAULT_FAILURE_THRESHOLD),
    /// 5; 0 turns it off).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.breaker.failure_threshold = failures;
        self
    }

    /// How long the breaker stays open before it lets a probe through
    /// (default [`DEFAULT_COOL_DOWN`](crate::breaker::DEFAULT_COOL_DOWN),
    /// 1 s, the same for every hitbox tier).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.breaker.cool_down = cool_down;
        self
    }

    /// The clock the breaker's cool-down is measured on (default the system
    /// clock); give it the clock of the engine and the composition, or a
    /// [`ManualClock`](hitbox_core::ManualClock) in tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Who this instance is: the origin of the entries it appends to the
    /// audit stream, and the default origin of the first
    /// [`InvalidationBus`](crate::InvalidationBus) started over it (default
    /// [`OriginId::random`]). Unique per instance; a stable one (a host name
    /// and process id) makes the stream easier to read.
    pub fn instance_id(mut self, id: OriginId) -> Self {
        self.instance = Some(id);
        self
    }

    /// Whether every invalidation through the tier is appended to the
    /// audit stream (default `true`); see the [`audit`](crate::audit)
    /// module. Without it, an [`InvalidationBus`](crate::InvalidationBus)
    /// that lost its subscription purges its L1 when it is back.
    pub fn audit_stream(mut self, enabled: bool) -> Self {
        self.audit = match (enabled, self.audit.take()) {
            (false, _) => None,
            (true, Some(audit)) => Some(audit),
            (true, None) => Some(AuditSettings {
                key: None,
                max_len: DEFAULT_AUDIT_MAX_LEN,
            }),
        };
        self
    }

    /// About how many entries the audit stream keeps (`XADD ... MAXLEN ~`;
    /// default [`DEFAULT_AUDIT_MAX_LEN`]). Redis trims whole blocks of
    /// entries, so the stream may hold somewhat more. Turns the stream on.
    pub fn audit_max_len(mut self, max_len: u64) -> Self {
        let mut audit = self.audit.take().unwrap_or(AuditSettings {
            key: None,
            max_len: DEFAULT_AUDIT_MAX_LEN,
        });
        audit.max_len = max_len;
        self.audit = Some(audit);
        self
    }

    /// The audit stream's key (default the key prefix followed by
    /// [`AUDIT_SUFFIX`](crate::audit::AUDIT_SUFFIX)). Every instance sharing
    /// the cache must use the same one. Turns the stream on.
    pub fn audit_key(mut self, key: impl Into<String>) -> Self {
        let mut audit = self.audit.take().unwrap_or(AuditSettings {
            key: None,
            max_len: DEFAULT_AUDIT_MAX_LEN,
        });
        audit.key = Some(key.into());
        self.audit = Some(audit);
        self
    }

    /// How fred reconnects (default: exponential back-off from 100 ms to
    /// 5 s, forever). It applies to the first connection too.
    pub fn reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    fn config(&mut self) -> Result<Config, RedisError> {
        // fred builds a rustls connector from the process-wide provider when
        // it parses a `rediss://` URL. That choice is ambiguous once another
        // crate of the application enables another provider (reqwest enables
        // aws-lc-rs), and rustls then panics: name ring as the default,
        // unless the application chose one already.
        #[cfg(feature = "tls")]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = match self.target.take() {
            None => return Err(RedisError::NoServer),
            Some(Target::Url(url)) => {
                if !cfg!(feature = "tls") && uses_tls(&url) {
                    // fred would silently connect in the clear.
                    return Err(RedisError::Invalid(
                        "TLS URLs (rediss://, valkeys://) need the `tls` feature of hitbox-redis",
                    ));
                }
                Config::from_url(&url).map_err(RedisError::Config)?
            }
            Some(Target::Servers(server)) => Config {
                server,
                ..Config::default()
            },
            Some(Target::Config(config)) => *config,
        };
        if let Some(username) = self.username.take() {
            config.username = Some(username);
        }
        if let Some(password) = self.password.take() {
            config.password = Some(password);
        }
        if self.database.is_some() {
            config.database = self.database;
        }
        #[cfg(feature = "tls")]
        if self.tls && config.tls.is_none() {
            config.tls = Some(rustls_connector()?.into());
        }
        // Retry the first connection like any later one: a cache whose Redis
        // is down at start-up degrades, it does not stop the application.
        config.fail_fast = false;
        Ok(config)
    }

    /// Builds the backend and starts connecting in the background. Must be
    /// called inside a Tokio runtime. Operations issued before the
    /// connections are up wait for them within their timeouts, and those
    /// that time out count towards the circuit breaker: an application that
    /// serves traffic at once should await
    /// [`RedisBackend::wait_connected`] at start-up.
    pub fn build(mut self) -> Result<RedisBackend, RedisError> {
        if self.pool_size == 0 {
            return Err(RedisError::Invalid("the pool size must be at least 1"));
        }
        for timeout in [
            self.read_timeout,
            self.write_timeout,
            self.invalidate_timeout,
            self.purge_timeout,
        ] {
            if timeout.is_zero() {
                return Err(RedisError::Invalid("timeouts must be longer than zero"));
            }
        }
        if self.audit.as_ref().is_some_and(|audit| audit.max_len == 0) {
            return Err(RedisError::Invalid(
                "the audit stream's max_len must be at least 1 (audit_stream(false) turns it off)",
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisError::NoRuntime);
        }
        let config = self.config()?;
        let clustered = matches!(config.server, ServerConfig::Clustered { .. });
        if clustered && !tag_keys_share_a_slot(&self.prefix) {
            return Err(RedisError::Invalid(
                "in a cluster, a key prefix whose first `{` is directly followed by `}` would put a tag's set and generation in different slots",
            ));
        }

        // fred's own timeout on a command (the longest of ours) ends the
        // caller's wait, but it does not take the command out of fred's
        // queue: a command queued while Redis was down is still sent once
        // it is back. Reads may wait there; writes, removals and
        // invalidations are sent fail-fast instead (see
        // `RedisBackend::fail_fast`), and what an outage kept from Redis is
        // replayed before the tier is used again.
        let longest = self
            .read_timeout
            .max(self.write_timeout)
            .max(self.invalidate_timeout);
        let performance = PerformanceConfig {
            default_command_timeout: longest,
            ..PerformanceConfig::default()
        };
        let mut connection = ConnectionConfig {
            connection_timeout: self.connection_timeout,
            // fred 10.1 mishandles ASK (a slot being migrated): it sends
            // ASKING to the new owner but the command back to the old one,
            // which answers ASK again, and when the command's write attempts
            // run out first its router task ends for good; ASKING's reply is
            // also read off a connection that may have other replies in
            // flight, handing "OK" to another command. With no redirections
            // allowed, an ASK fails just the one command (a miss for the
            // cache), and a MOVED still refreshes the routing table before
            // failing the command that met it, so the next one goes right.
            max_redirections: 0,
            ..ConnectionConfig::default()
        };
        if let Some(after) = self.unresponsive_after {
            if after.is_zero() {
                return Err(RedisError::Invalid("unresponsive_after must be longer than zero"));
            }
            connection.unresponsive.max_timeout = Some(after);
            // fred checks at this interval; a quarter of the limit keeps the
            // detection within 1.25 times it.
            connection.unresponsive.interval = (after / 4).max(Duration::from_millis(10));
        }
        let pool = Pool::new(
            config,
            Some(performance),
            Some(connection),
            Some(self.reconnect.clone()),
            self.pool_size,
        )
        .map_err(RedisError::Config)?;

        let label = Arc::clone(&self.label);
        for client in pool.clients() {
            let tier = Arc::clone(&label);
            client.on_reconnect(move |server| {
                tracing::info!(tier = %tier, host = %server.host, port = server.port, "redis reconnected");
                async { Ok(()) }
            });
            let tier = Arc::clone(&label);
            client.on_error(move |(error, server)| {
                match server {
                    Some(server) => tracing::warn!(
                        tier = %tier, host = %server.host, port = server.port, %error,
                        "redis connection error; fred reconnects"
                    ),
                    None => tracing::warn!(tier = %tier, %error, "redis connection error; fred reconnects"),
                }
                async { Ok(()) }
            });
        }
        // The connection tasks run until the pool is dropped or quits.
        drop(pool.connect_pool());

        Ok(RedisBackend::from_parts(Parts {
            pool,
            clustered,
            label: self.label,
            prefix: self.prefix,
            read_timeout: self.read_timeout,
            write_timeout: self.write_timeout,
            invalidate_timeout: self.invalidate_timeout,
            purge_timeout: self.purge_timeout,
            tag_grace: self.tag_grace,
            breaker: self.breaker,
            clock: self.clock,
            max_entry_size: self.max_entry_size,
            instance: self.instance.unwrap_or_else(OriginId::random),
            audit: self.audit,
        }))
    }
}

/// Whether the keys of a tag (its set and its generation, which one script
/// updates together) hash to one slot under `prefix`. They share the hash
/// tag `{<tag>}` unless the prefix has a hash tag of its own, which they
/// share too; the one prefix that breaks this is one whose first `{` is
/// directly followed by `}` (an empty hash tag: the whole key is hashed).
fn tag_keys_share_a_slot(prefix: &str) -> bool {
    let set = format!("{prefix}#tag:{{probe}}");
    let generation = format!("{set}#gen");
    fred::util::redis_keyslot(set.as_bytes()) == fred::util::redis_keyslot(generation.as_bytes())
}

/// Whether `url` names a TLS scheme.
fn uses_tls(url: &str) -> bool {
    let scheme = url
        .trim_start()
        .split(':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    scheme.starts_with("rediss") || scheme.starts_with("valkeys")
}

/// A rustls connector trusting the platform's roots, on the ring provider
/// named explicitly: the process-wide default is ambiguous as soon as
/// another crate in the application (reqwest, for one) enables another
/// provider, and rustls then refuses to guess.
#[cfg(feature = "tls")]
fn rustls_connector() -> Result<fred::prelude::TlsConnector, RedisError> {
    use std::sync::Arc;
    let tls_error =
        |message: String| RedisError::Config(fred::error::Error::new(fred::error::ErrorKind::Tls, message));
    let native = rustls_native_certs::load_native_certs();
    if let Some(error) = native.errors.first() {
        return Err(tls_error(format!(
            "loading the platform's root certificates: {error}"
        )));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in native.certs {
        roots
            .add(certificate)
            .map_err(|error| tls_error(format!("adding a root certificate: {error}")))?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| tls_error(format!("choosing TLS versions: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(fred::prelude::TlsConnector::from(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tags_keys_share_a_slot_unless_the_prefix_has_an_empty_hash_tag() {
        for prefix in ["", "shop:", "{shop}:", "a{b", "x}y{", "{}{a}"] {
            let shares = tag_keys_share_a_slot(prefix);
            assert_eq!(shares, !prefix.contains("{}"), "{prefix:?}");
        }
    }

    #[test]
    fn the_purge_timeout_defaults_to_thirty_seconds_and_is_never_zero() {
        assert_eq!(DEFAULT_PURGE_TIMEOUT, Duration::from_secs(30));
        let builder = RedisBackendBuilder::new();
        assert_eq!(builder.purge_timeout, DEFAULT_PURGE_TIMEOUT);
        let set = builder.purge_timeout(Duration::from_secs(5));
        assert_eq!(set.purge_timeout, Duration::from_secs(5));
        assert!(format!("{set:?}").contains("purge_timeout: 5s"));
        let zero = RedisBackendBuilder::new()
            .url("redis://127.0.0.1:6379")
            .purge_timeout(Duration::ZERO)
            .build();
        assert!(matches!(zero, Err(RedisError::Invalid(_))));
    }

    #[test]
    fn tls_schemes_are_recognised() {
        assert!(uses_tls("rediss://host:6380"));
        assert!(uses_tls("REDISS-cluster://host:6380"));
        assert!(uses_tls("valkeys-sentinel://host:26379?sentinelServiceName=x"));
        assert!(!uses_tls("redis://host:6379"));
        assert!(!uses_tls("redis-cluster://host:6379"));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_urls_without_the_feature_are_refused() {
        let mut builder = RedisBackendBuilder::new().url("rediss://127.0.0.1:6380");
        assert!(matches!(builder.config(), Err(RedisError::Invalid(_))));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_urls_and_the_tls_switch_set_up_tls() {
        let mut from_url = RedisBackendBuilder::new().url("rediss://127.0.0.1:6380");
        let config = from_url.config().expect("a TLS URL is accepted");
        assert!(config.tls.is_some());
        let mut switched = RedisBackendBuilder::new().standalone("127.0.0.1", 6380).tls(true);
        assert!(switched.config().expect("TLS on").tls.is_some());
        let mut plain = RedisBackendBuilder::new().standalone("127.0.0.1", 6379);
        assert!(plain.config().expect("no TLS").tls.is_none());
    }
}
