//! Configuration: the API key, the URL and its safety switches, timeouts,
//! retries, the breaker, concurrency and TTL defaults.
//!
//! Settings only: nothing here talks to the network. `backend` reads a
//! [`CachekitConfig`] when it builds a backend ([`CachekitConfig::build`]
//! is defined there), so this module sits below it and never imports it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hitbox_core::{SharedClock, SystemClock};

use crate::error::CachekitError;
use crate::safety::{DEFAULT_API_URL, UrlGuard};
use hitbox_backend::BreakerConfig;

/// The variable holding the API key.
pub const API_KEY_ENV: &str = "CACHEKIT_API_KEY";
/// The variable overriding the base URL.
pub const API_URL_ENV: &str = "CACHEKIT_API_URL";
/// The variable holding the default TTL, in whole seconds.
pub const DEFAULT_TTL_ENV: &str = "CACHEKIT_DEFAULT_TTL";

/// The default budget of a read (`GET`, `HEAD`, health, TTL lookups),
/// connection included.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The default budget of a write (`PUT`, `DELETE`, `PATCH`, locks).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of attempts for a transient error.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The default first backoff; attempt `n` waits `base × 2^n` plus jitter.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The default cap on one backoff.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(5);
/// The default number of requests in flight at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// The largest body the service accepts: 25 MB (25 × 2^20 bytes). Larger
/// values are refused before anything is sent.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The text that stands for the API key in every output.
pub(crate) const REDACTED: &str = "<redacted>";

/// The API key. Its `Debug` and `Display` print `<redacted>`; the backend
/// sends it in a header marked sensitive and scrubs it from error text.
///
/// ```
/// use hitbox_cachekit::ApiKey;
///
/// let key = ApiKey::new("ck_live_example");
/// assert_eq!(format!("{key} {key:?}"), "<redacted> ApiKey(<redacted>)");
/// assert_eq!(key.expose_secret(), "ck_live_example");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for building the `Authorization` header. Keep it out
    /// of logs.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", REDACTED)
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// How the backend is configured; a builder that ends in
/// [`CachekitConfig::build`]. Start from [`CachekitBackend::builder`](crate::CachekitBackend::builder) or
/// [`CachekitConfig::from_env`].
///
/// ```
/// use std::time::Duration;
/// use hitbox_cachekit::CachekitConfig;
///
/// // The variables, read from a secret store instead of the environment.
/// let config = CachekitConfig::from_lookup(|name| match name {
///     "CACHEKIT_API_KEY" => Some("ck_live_example".to_string()),
///     "CACHEKIT_DEFAULT_TTL" => Some("300".to_string()),
///     _ => None,
/// })
/// .unwrap()
/// .write_timeout(Duration::from_secs(3))
/// .max_attempts(2)
/// .max_concurrency(16)
/// .stale_ttl(Duration::from_secs(60));
/// let remote = config.build().unwrap();
/// assert_eq!(remote.origin(), "https://api.cachekit.io");
///
/// // No key, no backend.
/// assert!(CachekitConfig::from_lookup(|_| None).is_err());
/// ```
#[derive(Clone)]
pub struct CachekitConfig {
    pub(crate) api_key: Option<ApiKey>,
    pub(crate) base_url: String,
    pub(crate) url_policy: UrlGuard,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) max_concurrency: usize,
    pub(crate) breaker: BreakerConfig,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) stale_ttl: Option<Duration>,
    pub(crate) label: String,
    pub(crate) clock: SharedClock,
}

impl fmt::Debug for CachekitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachekitConfig")
            .field("api_key", &self.api_key)
            .field("base_url", &self.base_url)
            .field("url_policy", &self.url_policy)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_cap", &self.backoff_cap)
            .field("max_concurrency", &self.max_concurrency)
            .field("breaker", &self.breaker)
            .field("default_ttl", &self.default_ttl)
            .field("stale_ttl", &self.stale_ttl)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Default for CachekitConfig {
    fn default() -> Self {
        CachekitConfig {
            api_key: None,
            base_url: DEFAULT_API_URL.to_owned(),
            url_policy: UrlGuard::default(),
            read_timeout: DEFAULT_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            breaker: BreakerConfig::default(),
            default_ttl: None,
            stale_ttl: None,
            label: "cachekit".to_owned(),
            clock: Arc::new(SystemClock::new()),
        }
    }
}

impl CachekitConfig {
    /// The defaults: production URL, strict URL rules, no key yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `CACHEKIT_API_KEY` (required), `CACHEKIT_API_URL` and
    /// `CACHEKIT_DEFAULT_TTL` (whole seconds) from the process environment.
    ///
    /// `CACHEKIT_MASTER_KEY` is not read here: encryption is switched on
    /// only by building an encryptor explicitly (see
    /// `CachekitConfig::encryptor_from_env`, feature `encryption`) and
    /// putting it in a [`Staged`](hitbox_backend::Staged) tier.
    pub fn from_env() -> Result<Self, CachekitError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`CachekitConfig::from_env`], reading variables through `lookup`
    /// (for tests, or a secret store).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CachekitError> {
        let key = lookup(API_KEY_ENV)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| CachekitError::Config {
                reason: format!("{API_KEY_ENV} is not set"),
            })?;
        let mut config = CachekitConfig::new().api_key(key);
        if let Some(url) = lookup(API_URL_ENV).filter(|u| !u.is_empty()) {
            config = config.base_url(url);
        }
        if let Some(ttl) = lookup(DEFAULT_TTL_ENV).filter(|t| !t.is_empty()) {
            let secs: u64 = ttl.trim().parse().map_err(|_| CachekitError::Config {
                reason: format!("{DEFAULT_TTL_ENV} is not a whole number of seconds"),
            })?;
            if secs == 0 {
                return Err(CachekitError::Config {
                    reason: format!("{DEFAULT_TTL_ENV} must be at least 1 second"),
                });
            }
            config = config.default_ttl(Duration::from_secs(secs));
        }
        Ok(config)
    }

    /// The AES-256-GCM encryptor built from `CACHEKIT_MASTER_KEY` (and
    /// `CACHEKIT_PREVIOUS_MASTER_KEYS`), to put in front of the tier:
    /// `Staged::new(backend, Stages::new().encryptor(encryptor))`. Calling
    /// this is the only way this crate switches encryption on; the
    /// variable's presence alone does nothing.
    #[cfg(feature = "encryption")]
    pub fn encryptor_from_env() -> Result<hitbox_backend::AesGcmEncryptor, CachekitError> {
        hitbox_backend::AesGcmEncryptor::from_env().map_err(|error| CachekitError::Config {
            reason: error.to_string(),
        })
    }

    /// The API key.
    pub fn api_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.api_key = Some(ApiKey::new(key));
        self
    }

    /// The base URL (default `https://api.cachekit.io`), checked against the
    /// URL safety rules by [`CachekitConfig::build`].
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Accept hosts other than the official ones (still `https`, still no
    /// private or loopback IP literals).
    pub fn allow_custom_host(mut self, allow: bool) -> Self {
        self.url_policy.allow_custom_host = allow;
        self
    }

    /// **Tests and local development only**: accept `http://` to a loopback
    /// IP literal, for the loopback stand-in of the service. The API key
    /// then travels unencrypted; never set this in production.
    pub fn allow_insecure_loopback_for_tests(mut self, allow: bool) -> Self {
        self.url_policy.allow_insecure_loopback_for_tests = allow;
        self
    }

    /// The budget of a read, connection and retries included (default 5 s).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The budget of a write, retries included (default 10 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Attempts for transient errors (default 3, at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The backoff: attempt `n` (from 0) waits `base × 2^n`, plus up to half
    /// of that as jitter, at most `cap` (defaults 100 ms and 5 s).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap;
        self
    }

    /// Requests in flight at once (default 64); further calls wait, within
    /// their budget.
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = max.max(1);
        self
    }

    /// Service failures in a row that open the circuit breaker (default
    /// [`DEFAULT_FAILURE_THRESHOLD`](crate::DEFAULT_FAILURE_THRESHOLD), 5; 0
    /// turns the breaker off).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.breaker.failure_threshold = failures;
        self
    }

    /// How long the open breaker refuses calls before it lets a probe
    /// through (default [`DEFAULT_COOL_DOWN`](crate::DEFAULT_COOL_DOWN), 1 s,
    /// the same for every hitbox tier).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.breaker.cool_down = cool_down;
        self
    }

    /// The whole circuit breaker configuration (default
    /// [`BreakerConfig::default`]).
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// The TTL of [`CachekitBackend::set`](crate::CachekitBackend::set) calls that name none (default:
    /// none, so such entries never expire).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// The stale window sent with writes through the
    /// [`Backend`](hitbox_backend::Backend) trait when the value's own
    /// metadata does not give one (default: none).
    pub fn stale_ttl(mut self, stale: Duration) -> Self {
        self.stale_ttl = Some(stale);
        self
    }

    /// The tier's label (default `cachekit`).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The clock of the circuit breaker's cool-down (default: the system
    /// clock).
    pub fn clock(mut self, clock: impl hitbox_core::Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}
