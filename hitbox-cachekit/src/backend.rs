//! The HTTP client and the [`Backend`] implementation.
//!
//! This is where the protocol's rules (keys from `key`, freshness headers
//! from `freshness`, URL safety from `safety`) meet the network: one
//! request path with its budget, retries, breaker and concurrency limit,
//! the service's own calls (`read_with_freshness`, `set`, `ttl`, locks,
//! health), and the [`Backend`] trait on top of them, which is how the
//! engine and compositions see the tier. It also builds a backend from its
//! [`CachekitConfig`], so that `config` stays below it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hitbox_backend::envelope::RawEntry;
use hitbox_backend::{
    Backend, BackendError, BackendFuture, BreakerState, CircuitBreaker, PendingInvalidations, TierStats,
};
use hitbox_core::{CacheKey, Tag};
use rand::Rng;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::config::{ApiKey, CachekitConfig, MAX_BODY_BYTES, REDACTED};
use crate::error::CachekitError;
use crate::freshness::{Freshness, MAX_FRESH_FOR_SECS, parse_fresh_for, parse_freshness};
use crate::key::{key_path_segment, wire_key};
use crate::safety::check_base_url;

/// `X-CacheKit-TTL`.
pub const TTL_HEADER: &str = "x-cachekit-ttl";
/// `X-CacheKit-Stale-TTL`.
pub const STALE_TTL_HEADER: &str = "x-cachekit-stale-ttl";
/// `X-CacheKit-Freshness`.
pub const FRESHNESS_HEADER: &str = "x-cachekit-freshness";
/// `X-CacheKit-Fresh-For`.
pub const FRESH_FOR_HEADER: &str = "x-cachekit-fresh-for";
/// `X-CacheKit-Session-ID`.
pub const SESSION_ID_HEADER: &str = "x-cachekit-session-id";
/// `X-CacheKit-Session-Start`.
pub const SESSION_START_HEADER: &str = "x-cachekit-session-start";
/// `X-CacheKit-L1-Status`.
pub const L1_STATUS_HEADER: &str = "x-cachekit-l1-status";
/// `X-CacheKit-L1-Hits`.
pub const L1_HITS_HEADER: &str = "x-cachekit-l1-hits";
/// `X-CacheKit-L2-Hits`.
pub const L2_HITS_HEADER: &str = "x-cachekit-l2-hits";
/// `X-CacheKit-Misses`.
pub const MISSES_HEADER: &str = "x-cachekit-misses";
/// `X-CacheKit-L1-Hit-Rate`.
pub const L1_HIT_RATE_HEADER: &str = "x-cachekit-l1-hit-rate";
/// `X-CacheKit-Lock-Id`.
pub const LOCK_ID_HEADER: &str = "x-cachekit-lock-id";
/// `x-cachekit-deny-reason`, on a 429 that is a quota denial.
pub const DENY_REASON_HEADER: &str = "x-cachekit-deny-reason";

/// What the L1 in front of the remote tier did for the request being sent
/// (`X-CacheKit-L1-Status`); passed to [`CachekitBackend::read_as`].
///
/// ```
/// use hitbox_cachekit::L1Status;
/// assert_eq!(L1Status::Miss.as_str(), "miss");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L1Status {
    /// The L1 had the entry (sent with requests made while serving an L1
    /// hit, such as a revalidation).
    Hit,
    /// The L1 did not have it.
    Miss,
    /// There is no L1.
    Disabled,
}

impl L1Status {
    /// The header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            L1Status::Hit => "hit",
            L1Status::Miss => "miss",
            L1Status::Disabled => "disabled",
        }
    }
}

/// Counters of an L1 in front of the remote tier, sent with every request
/// (`X-CacheKit-L1-Hits`, `-L2-Hits`, `-Misses`, `-L1-Hit-Rate`) once
/// attached with [`CachekitBackend::with_l1_counters`].
/// [`CachekitTiered`](crate::CachekitTiered) keeps its own; build these
/// only for an L1 of your own making.
///
/// ```
/// use std::sync::Arc;
/// use hitbox_cachekit::{CachekitBackend, L1Counters};
///
/// let counters = Arc::new(L1Counters::new());
/// let remote = CachekitBackend::builder().api_key("ck_live_example").build().unwrap();
/// let _reporting = remote.with_l1_counters(Arc::clone(&counters));
///
/// counters.l1_hit();
/// counters.l1_hit();
/// counters.l2_hit();
/// counters.miss();
/// assert_eq!(counters.snapshot(), (2, 1, 1));
/// assert_eq!(counters.hit_rate(), "0.500");
/// ```
#[derive(Debug, Default)]
pub struct L1Counters {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    misses: AtomicU64,
}

impl L1Counters {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a read served by the L1.
    pub fn l1_hit(&self) {
        self.l1_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a read the L1 missed and the remote tier served.
    pub fn l2_hit(&self) {
        self.l2_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a read that neither tier served.
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// `(l1 hits, l2 hits, misses)`.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.l1_hits.load(Ordering::Relaxed),
            self.l2_hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// The L1 hit rate with three decimals (`0.000` before any read).
    pub fn hit_rate(&self) -> String {
        let (l1, l2, misses) = self.snapshot();
        let total = l1 + l2 + misses;
        let rate = if total == 0 { 0.0 } else { l1 as f64 / total as f64 };
        format!("{rate:.3}")
    }
}

/// The session of this process: a UUIDv4 and the epoch milliseconds at
/// which it was first needed, the same for every backend in the process.
#[derive(Debug, Clone)]
pub struct Session {
    /// `X-CacheKit-Session-ID`.
    pub id: String,
    /// `X-CacheKit-Session-Start`, in epoch milliseconds.
    pub started_at_ms: u64,
}

impl Session {
    /// The process's session.
    pub fn current() -> &'static Session {
        static SESSION: OnceLock<Session> = OnceLock::new();
        SESSION.get_or_init(|| Session {
            id: uuid::Uuid::new_v4().to_string(),
            started_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        })
    }
}

/// What `GET /v1/cache/{key}` found.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use hitbox_cachekit::{Freshness, RemoteEntry};
///
/// let entry = RemoteEntry { bytes: Bytes::from_static(b"v"), freshness: Freshness::Fresh, fresh_for: Some(30) };
/// // An L1 keeps it for the shorter of its own lifetime and `Fresh-For`.
/// assert_eq!(entry.l1_lifetime(Duration::from_secs(60)), Some(Duration::from_secs(30)));
/// // A stale answer is never copied into an L1.
/// let stale = RemoteEntry { freshness: Freshness::Stale, ..entry };
/// assert_eq!(stale.l1_lifetime(Duration::from_secs(60)), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The stored bytes.
    pub bytes: Bytes,
    /// `X-CacheKit-Freshness`.
    pub freshness: Freshness,
    /// `X-CacheKit-Fresh-For` in seconds; `None` when the header is absent
    /// (no server-side bound).
    pub fresh_for: Option<u32>,
}

impl RemoteEntry {
    /// How long an L1 may keep this entry, given its own `local_ttl`:
    /// `None` (do not backfill) for a stale answer or a `Fresh-For` of 0,
    /// otherwise `min(local_ttl, Fresh-For)`.
    pub fn l1_lifetime(&self, local_ttl: Duration) -> Option<Duration> {
        if self.freshness.is_stale() {
            return None;
        }
        let bound = match self.fresh_for {
            None => local_ttl,
            Some(0) => return None,
            Some(secs) => local_ttl.min(Duration::from_secs(u64::from(secs))),
        };
        (!bound.is_zero()).then_some(bound)
    }
}

/// The TTL and stale window of a [`CachekitBackend::set`].
///
/// ```no_run
/// use std::time::Duration;
/// use bytes::Bytes;
/// use hitbox_cachekit::{CachekitBackend, SetOptions};
///
/// # async fn example(remote: CachekitBackend) -> Result<(), hitbox_cachekit::CachekitError> {
/// // Fresh for 5 minutes, then served as stale for one more.
/// let options = SetOptions::ttl(Duration::from_secs(300)).with_stale(Duration::from_secs(60));
/// remote.set("report-2024-06", Bytes::from_static(b"..."), options).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// `X-CacheKit-TTL`; `None` uses the configured default TTL, or none
    /// (no expiry).
    pub ttl: Option<Duration>,
    /// `X-CacheKit-Stale-TTL`: how long the entry is served as stale after
    /// its TTL.
    pub stale_ttl: Option<Duration>,
}

impl SetOptions {
    /// A TTL.
    pub fn ttl(ttl: Duration) -> Self {
        SetOptions {
            ttl: Some(ttl),
            stale_ttl: None,
        }
    }

    /// Adds a stale window.
    pub fn with_stale(mut self, stale: Duration) -> Self {
        self.stale_ttl = Some(stale);
        self
    }
}

/// What `GET /v1/cache/{key}/ttl` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteTtl {
    /// No entry (404), or one already evicted.
    Absent,
    /// The entry never expires (`{"ttl":null}`).
    NoExpiry,
    /// Whole seconds until the entry is evicted: the end of its stale
    /// window, not of its freshness, rounded up (`evict_at − floor(now)`),
    /// so an entry that is still there never reads 0. How long it stays
    /// fresh is `X-CacheKit-Fresh-For` on a read
    /// ([`RemoteEntry::fresh_for`]).
    Seconds(u64),
}

/// A lock held on a key, to release with [`CachekitBackend::unlock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockId(String);

impl LockId {
    /// The id as the service gave it (a UUID; never empty or only
    /// whitespace, which the service would read as no id at all:
    /// [`CachekitBackend::lock`] refuses such an answer).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `GET /v1/cache/health`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok` when healthy.
    pub status: String,
    /// Entries stored.
    pub cache_entries: u64,
    /// Locks held.
    pub active_locks: u64,
}

/// What a [`CachekitBackend::revalidate`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revalidation {
    /// This caller took the lock, loaded and stored a new value.
    Refreshed,
    /// Another caller holds the lock: serve the stale value, do not wait.
    HeldByAnother,
}

#[derive(Serialize)]
struct LockRequest {
    timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockResponse {
    lock_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TtlBody {
    ttl: Option<u64>,
}

/// Which budget a call runs under.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Read,
    Write,
}

/// A response, read in full.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    attempts: u32,
}

#[derive(Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

struct Inner {
    client: reqwest::Client,
    /// `scheme://host[:port]`, no trailing slash.
    origin: String,
    api_key: ApiKey,
    auth: HeaderValue,
    config: CachekitConfig,
    breaker: Arc<CircuitBreaker>,
    /// Deletions the service did not get during an outage (and keys whose
    /// write timed out), replayed before the next call; shared by views.
    pending: Arc<PendingInvalidations>,
    permits: Arc<Semaphore>,
    stats: Stats,
    l1: Option<Arc<L1Counters>>,
    label: Arc<str>,
}

/// The cachekit.io remote tier.
///
/// Build it with [`CachekitBackend::builder`] or [`CachekitBackend::from_env`].
/// Cheap to clone (clones share the connection pool, breaker and counters).
///
/// ```
/// use hitbox_backend::{Backend, Cache};
/// use hitbox_cachekit::CachekitBackend;
///
/// let remote = CachekitBackend::builder()
///     .api_key("ck_live_example")
///     .label("cachekit-eu")
///     .build()
///     .unwrap();
/// assert_eq!(remote.label(), "cachekit-eu");
/// let cache = Cache::new(remote.clone());
/// # let _ = cache;
/// ```
///
/// Through the [`Backend`] trait:
///
/// - every call sends [`wire_key`]`(key)`: the key itself when the service
///   accepts it as it is (interop keys, `user:42`), otherwise its digest
///   form, since hitbox keys often hold characters the service refuses
///   (`=`, `/`, `%`, `#`); the crate's own calls send the key they are
///   given.
/// - `read` is `GET`: a stale answer is returned like a fresh one (the
///   engine judges freshness from the value's own metadata); use
///   [`CachekitBackend::read_with_freshness`] to see the service's view.
/// - `write` is `PUT` with `X-CacheKit-TTL` = the lifetime the engine asks
///   for (rounded up to whole seconds, at most 30 days). When the value is a
///   plain hitbox envelope its metadata splits that lifetime into a fresh
///   part (`X-CacheKit-TTL`) and a stale window (`X-CacheKit-Stale-TTL`), so
///   the service's freshness agrees with the engine's; otherwise (a
///   [`Staged`](hitbox_backend::Staged) value, whose metadata is sealed) the
///   configured [`CachekitConfig::stale_ttl`] is sent, if any.
/// - `remove` is `DELETE`. The service always answers 200 and does not say
///   whether an entry existed, so `remove` returns `true` once the delete
///   is acknowledged.
/// - `invalidate_tag` returns `Ok(0)`: the API has no tags, and tags are not
///   sent. Entries written with a tag stay in cachekit.io until their TTL
///   ends; give tagged entries short TTLs, or delete them by key.
/// - `exists` is `HEAD`.
#[derive(Clone)]
pub struct CachekitBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CachekitBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachekitBackend")
            .field("origin", &self.inner.origin)
            .field("label", &self.inner.label)
            .field("api_key", &self.inner.api_key)
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

/// Converts a duration to the whole seconds of a TTL header: 0 is refused,
/// a fraction rounds up, more than 30 days is refused.
pub fn ttl_header_secs(ttl: Duration) -> Result<u64, CachekitError> {
    if ttl.is_zero() {
        return Err(CachekitError::InvalidTtl {
            reason: "a TTL of 0 is not accepted",
        });
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    if secs > u64::from(MAX_FRESH_FOR_SECS) {
        return Err(CachekitError::InvalidTtl {
            reason: "a TTL is at most 2,592,000 seconds",
        });
    }
    Ok(secs)
}

// `build` lives here, beside the backend it makes, rather than in `config`:
// `backend` reads the configuration, so `config` importing `backend` back
// would make the two modules a circle.
impl CachekitConfig {
    /// Checks the configuration and builds the backend. Sends nothing: the
    /// URL is checked against the safety rules, the key against what a
    /// header can carry.
    pub fn build(self) -> Result<CachekitBackend, CachekitError> {
        CachekitBackend::from_config(self)
    }
}

impl CachekitBackend {
    /// A configuration to fill in; end it with [`CachekitConfig::build`].
    pub fn builder() -> CachekitConfig {
        CachekitConfig::new()
    }

    /// A backend configured from `CACHEKIT_API_KEY`, `CACHEKIT_API_URL` and
    /// `CACHEKIT_DEFAULT_TTL` (see [`CachekitConfig::from_env`]).
    pub fn from_env() -> Result<Self, CachekitError> {
        CachekitConfig::from_env()?.build()
    }

    pub(crate) fn from_config(config: CachekitConfig) -> Result<Self, CachekitError> {
        let api_key = config.api_key.clone().ok_or_else(|| CachekitError::Config {
            reason: "no API key".to_owned(),
        })?;
        let url = check_base_url(&config.base_url, config.url_policy)?;
        let origin = url.origin().ascii_serialization();
        let mut auth =
            HeaderValue::try_from(format!("Bearer {}", api_key.expose_secret())).map_err(|_| {
                CachekitError::Config {
                    reason: "the API key holds characters a header cannot carry".to_owned(),
                }
            })?;
        auth.set_sensitive(true);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.read_timeout)
            .build()
            .map_err(|error| CachekitError::Config {
                reason: scrub(&error.without_url().to_string(), &api_key),
            })?;
        let breaker = Arc::new(
            CircuitBreaker::new(config.breaker, config.clock.clone()).labelled(config.label.as_str()),
        );
        Ok(CachekitBackend {
            inner: Arc::new(Inner {
                client,
                origin,
                auth,
                breaker,
                pending: Arc::new(PendingInvalidations::new()),
                permits: Arc::new(Semaphore::new(config.max_concurrency)),
                stats: Stats::default(),
                l1: None,
                label: config.label.as_str().into(),
                api_key,
                config,
            }),
        })
    }

    /// This backend sending the counters of the L1 in front of it with
    /// every request, and `X-CacheKit-L1-Status: miss` instead of
    /// `disabled` on reads (a read that reaches the remote tier is an L1
    /// miss). The view shares the connection pool, circuit breaker and
    /// concurrency limit of `self`, and counts its own hits and misses.
    /// [`CachekitTiered`](crate::CachekitTiered) does this for you.
    pub fn with_l1_counters(&self, counters: Arc<L1Counters>) -> Self {
        let inner = &self.inner;
        CachekitBackend {
            inner: Arc::new(Inner {
                client: inner.client.clone(),
                origin: inner.origin.clone(),
                api_key: inner.api_key.clone(),
                auth: inner.auth.clone(),
                config: inner.config.clone(),
                breaker: Arc::clone(&inner.breaker),
                pending: Arc::clone(&inner.pending),
                permits: Arc::clone(&inner.permits),
                stats: Stats::default(),
                l1: Some(counters),
                label: inner.label.clone(),
            }),
        }
    }

    /// The origin requests go to (`https://api.cachekit.io`).
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Where the circuit breaker stands.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    fn default_l1_status(&self) -> L1Status {
        if self.inner.l1.is_some() {
            L1Status::Miss
        } else {
            L1Status::Disabled
        }
    }

    fn url(&self, segment: &str, suffix: &str) -> String {
        format!("{}/v1/cache/{segment}{suffix}", self.inner.origin)
    }

    fn common_headers(&self, l1: L1Status) -> HeaderMap {
        let session = Session::current();
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.inner.auth.clone());
        let text = |s: &str| HeaderValue::from_str(s).expect("ASCII header value");
        headers.insert(HeaderName::from_static(SESSION_ID_HEADER), text(&session.id));
        headers.insert(
            HeaderName::from_static(SESSION_START_HEADER),
            HeaderValue::from(session.started_at_ms),
        );
        headers.insert(HeaderName::from_static(L1_STATUS_HEADER), text(l1.as_str()));
        if let Some(counters) = &self.inner.l1 {
            let (l1_hits, l2_hits, misses) = counters.snapshot();
            headers.insert(
                HeaderName::from_static(L1_HITS_HEADER),
                HeaderValue::from(l1_hits),
            );
            headers.insert(
                HeaderName::from_static(L2_HITS_HEADER),
                HeaderValue::from(l2_hits),
            );
            headers.insert(HeaderName::from_static(MISSES_HEADER), HeaderValue::from(misses));
            headers.insert(
                HeaderName::from_static(L1_HIT_RATE_HEADER),
                text(&counters.hit_rate()),
            );
        }
        headers
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.inner.config.backoff_base;
        let cap = self.inner.config.backoff_cap;
        let exp = base.saturating_mul(1u32 << attempt.min(16));
        let jitter_max = exp / 2;
        let jitter = if jitter_max.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..=jitter_max)
        };
        exp.saturating_add(jitter).min(cap)
    }

    /// Runs one call: breaker, concurrency permit, budget, retries.
    async fn execute(
        &self,
        kind: Kind,
        l1: L1Status,
        make: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Reply, CachekitError> {
        let budget = match kind {
            Kind::Read => self.inner.config.read_timeout,
            Kind::Write => self.inner.config.write_timeout,
        };
        // Dropped with this future (the caller gave up), the permit releases
        // a probe so the breaker does not stay half-open.
        let Some(permit) = self.inner.breaker.try_acquire() else {
            return Err(CachekitError::CircuitOpen);
        };
        let attempts = async {
            let _permit = self
                .inner
                .permits
                .acquire()
                .await
                .map_err(|_| CachekitError::Config {
                    reason: "the concurrency limiter is closed".to_owned(),
                })?;
            if !self.inner.pending.is_empty() {
                self.replay_pending(budget, l1).await?;
            }
            self.attempts(budget, l1, &make).await
        };
        let result = match tokio::time::timeout(budget, attempts).await {
            Ok(result) => result,
            Err(_) => Err(CachekitError::Timeout { after: budget }),
        };
        // A 5xx the caller will turn into an error is the service failing;
        // any other answer (a 404, a refused key, a quota) says it is up.
        match &result {
            Err(error) if error.is_service_failure() => permit.failure(),
            Ok(reply) if reply.status.is_server_error() => permit.failure(),
            _ => permit.success(),
        }
        if result.is_err() {
            self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Deletes the keys an outage kept from the service, before anything
    /// else is asked of it; see [`PendingInvalidations`].
    async fn replay_pending(&self, budget: Duration, l1: L1Status) -> Result<(), CachekitError> {
        let replay = self.inner.pending.snapshot();
        for key in &replay.keys {
            // A key the service refuses, or any answer about this one
            // request that is not the service failing, drops that deletion
            // (logged): retrying it on every call would keep the tier from
            // ever serving again. Only a service failure stops the replay.
            let outcome = match key_path_segment(key) {
                Ok(segment) => {
                    let url = self.url(&segment, "");
                    match self
                        .attempts(budget, l1, &|c: &reqwest::Client| c.delete(&url))
                        .await
                    {
                        Ok(reply) if reply.status.is_success() || reply.status == StatusCode::NOT_FOUND => {
                            Ok(())
                        }
                        Ok(reply) => Err(self.fail(&reply)),
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
            match outcome {
                Err(error) if error.is_service_failure() => return Err(error),
                Err(error) => {
                    tracing::error!(tier = %self.inner.label, %error, "a deletion could not be replayed and is dropped")
                }
                Ok(()) => {}
            }
        }
        self.inner.pending.replayed(&replay);
        tracing::info!(tier = %self.inner.label, keys = replay.keys.len(), "replayed the deletions an outage kept from cachekit.io");
        Ok(())
    }

    /// How many deletions an outage kept from the service and wait to be
    /// replayed (removals, and keys whose write timed out): the first call
    /// the breaker lets through once the service answers again deletes
    /// them before anything else.
    pub fn pending_invalidations(&self) -> usize {
        self.inner.pending.len()
    }

    async fn attempts(
        &self,
        budget: Duration,
        l1: L1Status,
        make: &impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Reply, CachekitError> {
        let max = self.inner.config.max_attempts;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = make(&self.inner.client)
                .headers(self.common_headers(l1))
                .timeout(budget);
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let denied = response.headers().contains_key(DENY_REASON_HEADER);
                    if is_transient(status)
                        && !(status == StatusCode::TOO_MANY_REQUESTS && denied)
                        && attempt < max
                    {
                        tracing::debug!(
                            status = status.as_u16(),
                            attempt,
                            "cachekit transient error, retrying"
                        );
                        tokio::time::sleep(self.backoff(attempt - 1)).await;
                        continue;
                    }
                    let headers = response.headers().clone();
                    let body = response.bytes().await.map_err(|e| self.transport(e, budget))?;
                    return Ok(Reply {
                        status,
                        headers,
                        body,
                        attempts: attempt,
                    });
                }
                Err(error) => {
                    let retry = error.is_connect() && attempt < max;
                    let error = self.transport(error, budget);
                    if retry {
                        tracing::debug!(attempt, %error, "cachekit connection failed, retrying");
                        tokio::time::sleep(self.backoff(attempt - 1)).await;
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    fn transport(&self, error: reqwest::Error, budget: Duration) -> CachekitError {
        if error.is_timeout() {
            return CachekitError::Timeout { after: budget };
        }
        // Without the URL: it holds the cache key.
        let error = error.without_url();
        let mut message = scrub(&error.to_string(), &self.inner.api_key);
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&scrub(&cause.to_string(), &self.inner.api_key));
            source = cause.source();
        }
        CachekitError::Transport { message }
    }

    /// The error for a status the operation does not expect.
    fn unexpected(&self, reply: &Reply) -> CachekitError {
        let status = reply.status.as_u16();
        match reply.status {
            StatusCode::UNAUTHORIZED => CachekitError::Auth { status },
            StatusCode::FORBIDDEN => CachekitError::Forbidden,
            StatusCode::BAD_REQUEST => CachekitError::BadRequest,
            StatusCode::TOO_MANY_REQUESTS if reply.headers.contains_key(DENY_REASON_HEADER) => {
                let reason = reply
                    .headers
                    .get(DENY_REASON_HEADER)
                    .map(|v| {
                        String::from_utf8_lossy(v.as_bytes())
                            .chars()
                            .take(200)
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                CachekitError::Denied {
                    reason: scrub(&reason, &self.inner.api_key),
                }
            }
            StatusCode::PAYLOAD_TOO_LARGE => CachekitError::TooLarge {
                size: 0,
                limit: MAX_BODY_BYTES,
            },
            s if is_transient(s) => CachekitError::Transient {
                status,
                attempts: reply.attempts,
            },
            _ => CachekitError::Status { status },
        }
    }

    fn json<T: DeserializeOwned>(&self, reply: &Reply) -> Result<T, CachekitError> {
        serde_json::from_slice(&reply.body).map_err(|error| CachekitError::Protocol {
            message: scrub(&format!("malformed JSON answer: {error}"), &self.inner.api_key),
        })
    }

    /// `GET /v1/cache/{key}` with the service's view of freshness; `None`
    /// on a miss.
    pub async fn read_with_freshness(&self, key: &str) -> Result<Option<RemoteEntry>, CachekitError> {
        self.read_as(key, self.default_l1_status()).await
    }

    /// As [`CachekitBackend::read_with_freshness`], sending `l1` as
    /// `X-CacheKit-L1-Status`.
    pub async fn read_as(&self, key: &str, l1: L1Status) -> Result<Option<RemoteEntry>, CachekitError> {
        let url = self.url(&key_path_segment(key)?, "");
        let reply = self.execute(Kind::Read, l1, |c| c.get(&url)).await?;
        match reply.status {
            StatusCode::OK => {
                self.inner.stats.hits.fetch_add(1, Ordering::Relaxed);
                let freshness = parse_freshness(reply.headers.get(FRESHNESS_HEADER).map(|v| v.as_bytes()));
                let fresh_for = parse_fresh_for(reply.headers.get(FRESH_FOR_HEADER).map(|v| v.as_bytes()));
                Ok(Some(RemoteEntry {
                    bytes: reply.body,
                    freshness,
                    fresh_for,
                }))
            }
            StatusCode::NOT_FOUND => {
                self.inner.stats.misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            _ => Err(self.fail(&reply)),
        }
    }

    fn fail(&self, reply: &Reply) -> CachekitError {
        self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
        self.unexpected(reply)
    }

    /// `PUT /v1/cache/{key}`. The value is refused before sending when it
    /// is over 25 MB; TTLs are rounded up to whole seconds and checked (not
    /// 0, and TTL plus stale window at most 30 days).
    pub async fn set(&self, key: &str, value: Bytes, options: SetOptions) -> Result<(), CachekitError> {
        let segment = key_path_segment(key)?;
        if value.len() > MAX_BODY_BYTES {
            return Err(CachekitError::TooLarge {
                size: value.len(),
                limit: MAX_BODY_BYTES,
            });
        }
        let ttl = options
            .ttl
            .or(self.inner.config.default_ttl)
            .map(ttl_header_secs)
            .transpose()?;
        let stale = match options.stale_ttl {
            Some(stale) => {
                if ttl.is_none() {
                    return Err(CachekitError::InvalidTtl {
                        reason: "a stale window needs a TTL",
                    });
                }
                Some(ttl_header_secs(stale)?)
            }
            None => None,
        };
        if ttl.unwrap_or(0) + stale.unwrap_or(0) > u64::from(MAX_FRESH_FOR_SECS) {
            return Err(CachekitError::InvalidTtl {
                reason: "TTL plus stale window is at most 2,592,000 seconds",
            });
        }
        let url = self.url(&segment, "");
        let size = value.len();
        let reply = self
            .execute(Kind::Write, self.default_l1_status(), |c| {
                let mut request = c
                    .put(&url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(value.clone());
                if let Some(ttl) = ttl {
                    request = request.header(TTL_HEADER, ttl);
                }
                if let Some(stale) = stale {
                    request = request.header(STALE_TTL_HEADER, stale);
                }
                request
            })
            .await?;
        if reply.status.is_success() {
            return Ok(());
        }
        match self.fail(&reply) {
            CachekitError::TooLarge { limit, .. } => Err(CachekitError::TooLarge { size, limit }),
            other => Err(other),
        }
    }

    /// `DELETE /v1/cache/{key}`.
    pub async fn delete(&self, key: &str) -> Result<(), CachekitError> {
        let url = self.url(&key_path_segment(key)?, "");
        let reply = self
            .execute(Kind::Write, self.default_l1_status(), |c| c.delete(&url))
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(self.fail(&reply))
        }
    }

    /// `HEAD /v1/cache/{key}`.
    pub async fn exists_key(&self, key: &str) -> Result<bool, CachekitError> {
        let url = self.url(&key_path_segment(key)?, "");
        let reply = self
            .execute(Kind::Read, self.default_l1_status(), |c| c.head(&url))
            .await?;
        match reply.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(&reply)),
        }
    }

    /// `GET /v1/cache/health`.
    pub async fn health(&self) -> Result<Health, CachekitError> {
        let url = format!("{}/v1/cache/health", self.inner.origin);
        let reply = self
            .execute(Kind::Read, self.default_l1_status(), |c| c.get(&url))
            .await?;
        if reply.status != StatusCode::OK {
            return Err(self.fail(&reply));
        }
        self.json(&reply)
    }

    /// `GET /v1/cache/{key}/ttl`.
    pub async fn ttl(&self, key: &str) -> Result<RemoteTtl, CachekitError> {
        let url = self.url(&key_path_segment(key)?, "/ttl");
        let reply = self
            .execute(Kind::Read, self.default_l1_status(), |c| c.get(&url))
            .await?;
        match reply.status {
            StatusCode::OK => Ok(match self.json::<TtlBody>(&reply)?.ttl {
                Some(secs) => RemoteTtl::Seconds(secs),
                None => RemoteTtl::NoExpiry,
            }),
            StatusCode::NOT_FOUND => Ok(RemoteTtl::Absent),
            _ => Err(self.fail(&reply)),
        }
    }

    /// `PATCH /v1/cache/{key}/ttl`: the entry is fresh for `ttl` (rounded up
    /// to whole seconds) from the service's `floor(now)`, keeping its stale
    /// window; an entry without expiry becomes bounded, with no stale
    /// window. An entry that is already stale cannot be refreshed
    /// ([`CachekitError::AlreadyStale`], 409). An absent entry is a no-op:
    /// the service answers 200 and creates nothing, so this returns `Ok`.
    pub async fn refresh_ttl(&self, key: &str, ttl: Duration) -> Result<(), CachekitError> {
        let url = self.url(&key_path_segment(key)?, "/ttl");
        let body = serde_json::to_vec(&TtlBody {
            ttl: Some(ttl_header_secs(ttl)?),
        })
        .expect("a TTL serialises");
        let body = Bytes::from(body);
        let reply = self
            .execute(Kind::Write, self.default_l1_status(), |c| {
                c.request(Method::PATCH, &url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        match reply.status {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => Err(CachekitError::AlreadyStale),
            _ => Err(self.fail(&reply)),
        }
    }

    /// `POST /v1/cache/{key}/lock`: takes the lock if nobody holds it, and
    /// never waits. `Some(id)` = acquired (for at most `timeout`, rounded
    /// up to milliseconds), `None` = held by another. The answer is decided
    /// on the body, not the status. An id that is empty, only whitespace or
    /// not a valid header value is refused ([`CachekitError::Protocol`]):
    /// the service would read it as no id on release, so the lock could
    /// only expire.
    pub async fn lock(&self, key: &str, timeout: Duration) -> Result<Option<LockId>, CachekitError> {
        let url = self.url(&key_path_segment(key)?, "/lock");
        let timeout_ms = u64::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        let body = Bytes::from(serde_json::to_vec(&LockRequest { timeout_ms }).expect("a number serialises"));
        let reply = self
            .execute(Kind::Write, self.default_l1_status(), |c| {
                c.post(&url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
            .await?;
        if !reply.status.is_success() {
            return Err(self.fail(&reply));
        }
        let Some(id) = self.json::<LockResponse>(&reply)?.lock_id else {
            return Ok(None);
        };
        // An id the service would read as none on release, or one no
        // header can carry, could never release the lock (it would hold
        // until `timeout`): the answer breaks the protocol.
        if id.trim().is_empty() || HeaderValue::from_str(&id).is_err() {
            return Err(CachekitError::Protocol {
                message: "the service gave a lock id that cannot be sent back (empty, or not a header value)"
                    .to_owned(),
            });
        }
        Ok(Some(LockId(id)))
    }

    /// `DELETE /v1/cache/{key}/lock` with the id in `X-CacheKit-Lock-Id`
    /// (never in the deprecated `?lock_id=` query). The service answers 200.
    ///
    /// The id is never empty ([`CachekitBackend::lock`] refuses such an
    /// answer). The protocol does not say what a wrong or expired id gets;
    /// whatever success status comes back is `Ok`.
    pub async fn unlock(&self, key: &str, lock: &LockId) -> Result<(), CachekitError> {
        let url = self.url(&key_path_segment(key)?, "/lock");
        let id = HeaderValue::from_str(lock.as_str()).map_err(|_| CachekitError::Protocol {
            message: "the lock id cannot be sent as a header".to_owned(),
        })?;
        let reply = self
            .execute(Kind::Write, self.default_l1_status(), |c| {
                c.delete(&url).header(LOCK_ID_HEADER, id.clone())
            })
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(self.fail(&reply))
        }
    }

    /// Revalidates a stale entry under the service's lock, without waiting:
    /// if another caller holds the lock this returns
    /// [`Revalidation::HeldByAnother`] at once (serve the stale value);
    /// otherwise `load` runs, its value is stored with `options`, and the
    /// lock is released whatever happened.
    pub async fn revalidate<F, Fut, E>(
        &self,
        key: &str,
        lock_timeout: Duration,
        options: SetOptions,
        load: F,
    ) -> Result<Revalidation, RevalidateError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let Some(lock) = self
            .lock(key, lock_timeout)
            .await
            .map_err(RevalidateError::Cachekit)?
        else {
            return Ok(Revalidation::HeldByAnother);
        };
        let stored = match load().await {
            Ok(value) => self
                .set(key, value, options)
                .await
                .map_err(RevalidateError::Cachekit),
            Err(error) => Err(RevalidateError::Load(error)),
        };
        let released = self.unlock(key, &lock).await;
        stored?;
        released.map_err(RevalidateError::Cachekit)?;
        Ok(Revalidation::Refreshed)
    }

    /// The TTL headers of a write through the [`Backend`] trait (see the
    /// type's documentation); `None` for a lifetime of zero.
    fn write_options(&self, key: &CacheKey, value: &Bytes, ttl: Duration) -> Option<SetOptions> {
        if ttl.is_zero() {
            return None;
        }
        let secs = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
        let max = u64::from(MAX_FRESH_FOR_SECS);
        let total = secs(ttl).min(max);
        let (fresh, stale) = match RawEntry::decode(value.clone(), key) {
            // A plain hitbox envelope says how much of its lifetime is stale.
            Ok(raw) => {
                let stale = secs(raw.meta.expires_at().since(raw.meta.fresh_until)).min(total);
                // Already inside its stale window: one second fresh, no more.
                let fresh = total.saturating_sub(stale).max(1);
                (fresh, total - fresh)
            }
            Err(_) => {
                let stale = self.inner.config.stale_ttl.map_or(0, secs).min(max - total);
                (total, stale)
            }
        };
        let options = SetOptions::ttl(Duration::from_secs(fresh));
        Some(if stale > 0 {
            options.with_stale(Duration::from_secs(stale))
        } else {
            options
        })
    }
}

/// Why [`CachekitBackend::revalidate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RevalidateError<E> {
    /// The loader failed; the lock was released.
    #[error("the loader failed")]
    Load(E),
    /// The service failed.
    #[error(transparent)]
    Cachekit(CachekitError),
}

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Removes every occurrence of the API key from `text`.
fn scrub(text: &str, key: &ApiKey) -> String {
    let secret = key.expose_secret();
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, REDACTED)
    }
}

impl Backend for CachekitBackend {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let entry = self
                .read_with_freshness(&wire_key(key.as_str()))
                .await
                .map_err(|e| e.into_backend_error(&self.inner.label))?;
            Ok(entry.map(|e| e.bytes))
        })
    }

    fn write<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        _tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let Some(options) = self.write_options(key, &value, ttl) else {
                return Ok(());
            };
            let wire = wire_key(key.as_str());
            let result = self.set(&wire, value, options).await;
            // A write that timed out may still be carried out by the
            // service: its key is deleted before the tier is used again.
            if matches!(result, Err(CachekitError::Timeout { .. })) {
                self.inner.pending.remember_key(&wire);
            }
            result.map_err(|e| e.into_backend_error(&self.inner.label))
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let wire = wire_key(key.as_str());
            let result = self
                .delete(&wire)
                .await
                .map_err(|e| e.into_backend_error(&self.inner.label));
            if result.as_ref().is_err_and(BackendError::is_tier_failure) {
                self.inner.pending.remember_key(&wire);
            }
            result?;
            Ok(true)
        })
    }

    fn invalidate_tag<'a>(&'a self, _tag: &'a Tag) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            tracing::debug!(tier = %self.inner.label, "cachekit.io has no tags; tag invalidation skipped");
            Ok(0)
        })
    }

    fn exists<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            self.exists_key(&wire_key(key.as_str()))
                .await
                .map_err(|e| e.into_backend_error(&self.inner.label))
        })
    }

    fn label(&self) -> &str {
        &self.inner.label
    }

    fn has_breaker(&self) -> bool {
        true
    }

    /// The service's limit on a value (25 MB).
    fn max_entry_size(&self) -> usize {
        MAX_BODY_BYTES
    }

    fn tier_stats(&self) -> Vec<TierStats> {
        let stats = &self.inner.stats;
        vec![TierStats {
            label: self.inner.label.to_string(),
            hits: stats.hits.load(Ordering::Relaxed),
            misses: stats.misses.load(Ordering::Relaxed),
            errors: stats.errors.load(Ordering::Relaxed),
            ..TierStats::default()
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hitbox_backend::Format;
    use hitbox_backend::envelope::encode_entry;
    use hitbox_core::{EntryMeta, Timestamp};

    fn backend() -> CachekitBackend {
        CachekitBackend::builder()
            .api_key("ck_unit_secret")
            .stale_ttl(Duration::from_secs(7))
            .build()
            .unwrap()
    }

    #[test]
    fn the_authorization_header_is_sensitive() {
        let backend = backend();
        assert!(backend.inner.auth.is_sensitive());
        let headers = backend.common_headers(L1Status::Disabled);
        assert!(headers.get(AUTHORIZATION).unwrap().is_sensitive());
        assert!(!format!("{:?}", headers.get(AUTHORIZATION).unwrap()).contains("ck_unit_secret"));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let backend = backend();
        for attempt in 0..3 {
            let base = Duration::from_millis(100) * (1 << attempt);
            for _ in 0..20 {
                let wait = backend.backoff(attempt);
                assert!(wait >= base && wait <= base + base / 2, "{attempt}: {wait:?}");
            }
        }
        assert_eq!(backend.backoff(30), Duration::from_secs(5));
    }

    #[test]
    fn writes_split_an_envelope_into_fresh_and_stale_windows() {
        let backend = backend();
        let now = Timestamp::from_millis(1_000_000);
        let meta = EntryMeta {
            stored_at: now,
            fresh_until: now.add(Duration::from_secs(10)),
            stale_until: now.add(Duration::from_secs(30)),
            error_until: now.add(Duration::from_secs(70)),
            tags: Vec::new(),
        };
        let key = CacheKey::from_encoded("k");
        let envelope = encode_entry(&"v".to_string(), &meta, Format::default(), &key).unwrap();
        let options = backend
            .write_options(&key, &envelope, Duration::from_secs(70))
            .unwrap();
        assert_eq!(
            options,
            SetOptions::ttl(Duration::from_secs(10)).with_stale(Duration::from_secs(60))
        );
        // Already stale: one fresh second, the rest stale.
        let options = backend
            .write_options(&key, &envelope, Duration::from_secs(40))
            .unwrap();
        assert_eq!(
            options,
            SetOptions::ttl(Duration::from_secs(1)).with_stale(Duration::from_secs(39))
        );
        // Opaque bytes (a staged value): the configured window, within the cap.
        let opaque = Bytes::from_static(b"HS\x01sealed");
        let options = backend
            .write_options(&key, &opaque, Duration::from_millis(2500))
            .unwrap();
        assert_eq!(
            options,
            SetOptions::ttl(Duration::from_secs(3)).with_stale(Duration::from_secs(7))
        );
        let options = backend
            .write_options(&key, &opaque, Duration::from_secs(9_999_999))
            .unwrap();
        assert_eq!(options, SetOptions::ttl(Duration::from_secs(2_592_000)));
        assert_eq!(backend.write_options(&key, &opaque, Duration::ZERO), None);
    }
}
