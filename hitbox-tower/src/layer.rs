//! The layer: cheap, `Clone` configuration, and the state every service it
//! wraps shares.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hitbox_backend::Cache;
use hitbox_backend::lock::DistributedLock;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body;

use crate::body::CacheBody;
use crate::headers::{CacheOutcome, age_value, decimal_value, hit_status};
use crate::observe::{self, LayerObserver};
use crate::pass::HitForPass;
use crate::policy::{HttpPolicy, RulePolicy, StandardsPolicy};
use crate::purge::SurrogateKeys;
use crate::rfc9111::Rfc9111;
use crate::rule::Rule;

/// How long a key whose response turned out not to be storable is sent
/// straight to the origin (hit-for-pass), by default.
pub const DEFAULT_HIT_FOR_PASS: Duration = Duration::from_secs(10);

/// How long a request waits for another request's load of the same key
/// before it goes to the origin itself, by default (nginx's
/// `proxy_cache_lock_timeout` default is the same).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A `tower::Layer` that caches HTTP responses; see the
/// [crate documentation](crate). Cheap to clone: every clone, and every
/// service it wraps, shares one configuration and one cache.
///
/// ```
/// use axum::{Router, routing::get};
/// use hitbox_backend::{Cache, MemoryBackend};
/// use hitbox_tower::CacheLayer;
///
/// let layer = CacheLayer::new(Cache::new(MemoryBackend::new()));
/// let app: Router = Router::new()
///     .route("/a", get(|| async { "a" }).layer(layer.clone()))
///     .route("/b", get(|| async { "b" }).layer(layer));
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    pub(crate) mode: Mode,
}

/// The layer's state, by the policy it runs.
#[derive(Clone)]
pub(crate) enum Mode {
    Rules(Arc<LayerState<RulePolicy>>),
    Standards(Arc<LayerState<StandardsPolicy>>),
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("CacheLayer");
        match &self.mode {
            Mode::Rules(shared) => out
                .field("cache", &shared.cache)
                .field("rules", &shared.policy.rules),
            Mode::Standards(shared) => out
                .field("cache", &shared.cache)
                .field("rfc9111", &shared.policy.config),
        };
        out.finish_non_exhaustive()
    }
}

/// What every service of one layer shares: the cache, the policy, and how
/// responses are labelled.
pub(crate) struct LayerState<P> {
    pub cache: Cache,
    pub policy: P,
    pub name: Arc<str>,
    pub x_cache: bool,
    pub lock_timeout: Duration,
    pub passes: Arc<HitForPass>,
    /// The lock misses take across instances, if any.
    pub lock: Option<Arc<dyn DistributedLock>>,
    /// Counts each request's outcome.
    pub observer: Arc<LayerObserver>,
    /// Tags responses bring in a header, if the layer reads them.
    pub surrogate: Option<SurrogateKeys>,
}

impl<P: HttpPolicy> LayerState<P> {
    /// Adds this cache's member to a forwarded response's `Cache-Status`,
    /// after any member an upstream cache put there (RFC 9211).
    pub fn decorate(&self, headers: &mut HeaderMap, outcome: CacheOutcome) {
        headers.append(CACHE_STATUS, outcome.cache_status(&self.name));
        if self.x_cache {
            headers.insert(X_CACHE, outcome.x_cache());
        }
    }

    /// The response for a stored status, headers and whole body (the body
    /// is left out for a `HEAD`; its length is kept), counted as `outcome`
    /// of the rule labelled `label`. Stored headers hold no `Cache-Status`
    /// (or a hit's placeholder): this cache's member is the only one.
    #[allow(clippy::too_many_arguments)]
    pub fn respond<B: Body>(
        &self,
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        age: u64,
        head: bool,
        outcome: CacheOutcome,
        label: usize,
    ) -> Response<CacheBody<B>> {
        // Stored responses carry their length (`CachedResponse::new`);
        // this is for entries written without it.
        if !headers.contains_key(header::CONTENT_LENGTH) {
            headers.insert(header::CONTENT_LENGTH, decimal_value(body.len() as u64));
        }
        headers.insert(header::AGE, age_value(age));
        let member = match outcome {
            CacheOutcome::Hit { ttl } => hit_status(&self.name, ttl),
            other => other.cache_status(&self.name),
        };
        headers.insert(CACHE_STATUS, member);
        if self.x_cache {
            headers.insert(X_CACHE, outcome.x_cache());
        }
        self.for_client(&mut headers, false);
        let body = if head { Bytes::new() } else { body };
        self.count(label, outcome.counted(), Some(status));
        let mut response = Response::new(CacheBody::stored(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// A response the cache makes itself, without asking the origin,
    /// counted as `outcome` of the rule labelled `label`.
    pub fn answer<B: Body>(
        &self,
        status: StatusCode,
        body: &'static str,
        outcome: CacheOutcome,
        label: usize,
    ) -> Response<CacheBody<B>> {
        self.count(label, outcome.counted(), Some(status));
        let mut response = Response::new(CacheBody::stored(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        self.decorate(response.headers_mut(), outcome);
        response
    }
}

impl CacheLayer {
    /// A layer that caches every `GET` with the safe defaults of
    /// [`Rule::new`] and the cache's own policy.
    ///
    /// ```
    /// use hitbox_backend::{Cache, MemoryBackend};
    /// use hitbox_tower::CacheLayer;
    ///
    /// let layer = CacheLayer::new(Cache::new(MemoryBackend::new()));
    /// ```
    pub fn new(cache: Cache) -> Self {
        CacheLayer::builder(cache).build()
    }

    /// Starts configuring a layer.
    pub fn builder(cache: Cache) -> CacheLayerBuilder {
        CacheLayerBuilder {
            cache,
            rules: Vec::new(),
            name: "hitbox".into(),
            x_cache: false,
            rfc: None,
            hit_for_pass: DEFAULT_HIT_FOR_PASS,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            lock: None,
            surrogate: Some(SurrogateKeys::new()),
        }
    }

    /// The cache behind the layer.
    pub fn cache(&self) -> &Cache {
        match &self.mode {
            Mode::Rules(shared) => &shared.cache,
            Mode::Standards(shared) => &shared.cache,
        }
    }
}

/// Configures a [`CacheLayer`].
///
/// ```
/// use std::time::Duration;
/// use hitbox_backend::{Cache, MemoryBackend};
/// use hitbox_tower::{CacheLayer, Rule};
///
/// let layer = CacheLayer::builder(Cache::new(MemoryBackend::new()))
///     .rule(Rule::new().namespace("api"))
///     .cache_name("edge")
///     .x_cache_header(true)
///     .lock_timeout(Duration::from_secs(2))
///     .build();
/// ```
pub struct CacheLayerBuilder {
    cache: Cache,
    rules: Vec<Rule>,
    name: Arc<str>,
    x_cache: bool,
    rfc: Option<Rfc9111>,
    hit_for_pass: Duration,
    lock_timeout: Duration,
    lock: Option<Arc<dyn DistributedLock>>,
    surrogate: Option<SurrogateKeys>,
}

impl CacheLayerBuilder {
    /// Which response header brings tags for the stored entry, and its
    /// limits (default: [`SurrogateKeys::new`], `Surrogate-Key`). The
    /// header is removed from every response the layer passes on.
    pub fn surrogate_keys(mut self, keys: SurrogateKeys) -> Self {
        self.surrogate = Some(keys);
        self
    }

    /// Reads no tags from responses, and leaves every response header to
    /// its client (`Surrogate-Key` included).
    pub fn without_surrogate_keys(mut self) -> Self {
        self.surrogate = None;
        self
    }

    /// Adds a rule. Rules are tried in order; the first whose predicate
    /// matches a request applies, and a request no rule matches is passed
    /// through. Without any rule, the layer has one [`Rule::new`].
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// The cache's name in `Cache-Status` (default `hitbox`), and the
    /// `layer` label of its `hitbox_requests_total` (feature `metrics`).
    pub fn cache_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into().into();
        self
    }

    /// Also sets `X-Cache: HIT` or `MISS`, for tools that expect it.
    pub fn x_cache_header(mut self, enabled: bool) -> Self {
        self.x_cache = enabled;
        self
    }

    /// How long a key whose response was not storable goes straight to the
    /// origin (default 10 s; zero turns it off).
    pub fn hit_for_pass(mut self, duration: Duration) -> Self {
        self.hit_for_pass = duration;
        self
    }

    /// How long a request for a key that another request is loading waits
    /// for that load (default 5 s). Past it, the request goes to the origin
    /// itself and its response is not stored (`Cache-Status:
    /// fwd=miss; detail=lock-timeout`), so an origin that hangs for one
    /// request never holds every other request for the same URL.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Shares loads with the other instances of the service: a miss (a key
    /// missing in every tier, once this process chose the request to lead
    /// its load) first takes `lock`, a lock per key shared by every
    /// instance, such as `hitbox_redis::RedisLock`. The instance that
    /// takes it asks the origin and stores the response; the others wait
    /// for its announcement, at most the [lock
    /// timeout](CacheLayerBuilder::lock_timeout), and serve what the shared
    /// tier then holds for their key (`Cache-Status: fwd=miss;
    /// collapsed`). They go to the origin themselves when the wait runs
    /// out, when the holder stored nothing, and when the lock cannot be
    /// reached: the lock saves origin calls, it never fails a request.
    /// Hits never touch it. Applies in both modes; a rule opts out with
    /// [`Rule::distributed_lock`]. The cache should have a tier the
    /// instances share (the lock's Redis), or waiters find nothing.
    pub fn distributed_lock(mut self, lock: impl DistributedLock) -> Self {
        self.lock = Some(Arc::new(lock));
        self
    }

    /// Switches the layer to standards mode: it behaves as an RFC 9111
    /// shared cache, and the origin's headers (not rules) decide what is
    /// stored and for how long; rules are then ignored. See
    /// [`rfc9111`](crate::rfc9111).
    pub fn rfc9111(mut self, config: Rfc9111) -> Self {
        self.rfc = Some(config);
        self
    }

    fn shared<P>(&self, policy: P, labels: Vec<Arc<str>>) -> Arc<LayerState<P>> {
        let passes = HitForPass::new(self.cache.clock().clone(), self.hit_for_pass);
        let observer = LayerObserver::new(self.cache.clone(), &self.name, labels);
        Arc::new(LayerState {
            cache: self.cache.clone(),
            policy,
            name: Arc::clone(&self.name),
            x_cache: self.x_cache,
            lock_timeout: self.lock_timeout,
            passes: Arc::new(passes),
            lock: self.lock.clone(),
            observer: Arc::new(observer),
            surrogate: self.surrogate.clone(),
        })
    }

    /// Builds the layer.
    pub fn build(mut self) -> CacheLayer {
        let mode = match self.rfc.take() {
            Some(config) => {
                let labels = vec![Arc::from(observe::STANDARDS)];
                Mode::Standards(self.shared(StandardsPolicy { config }, labels))
            }
            None => {
                let rules = if self.rules.is_empty() {
                    vec![Rule::new()]
                } else {
                    std::mem::take(&mut self.rules)
                };
                let fallback = self.cache.policy();
                let labels = rules
                    .iter()
                    .map(Rule::label)
                    .chain([Arc::from(observe::NO_RULE)])
                    .collect();
                Mode::Rules(self.shared(RulePolicy { rules, fallback }, labels))
            }
        };
        CacheLayer { mode }
    }
}
