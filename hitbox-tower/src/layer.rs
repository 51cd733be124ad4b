//! The layer: cheap, `Clone` configuration shared by every service it wraps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hitbox_backend::Cache;
use hitbox_core::{CacheKey, Timestamp};
use tower_layer::Layer;

use crate::rfc9111::Rfc9111;
use crate::rule::Rule;
use crate::service::CacheService;

/// How long a key whose response turned out not to be storable is sent
/// straight to the origin (hit-for-pass), by default.
pub const DEFAULT_HIT_FOR_PASS: Duration = Duration::from_secs(10);

/// How long a request waits for another request's load of the same key
/// before it goes to the origin itself, by default (nginx's
/// `proxy_cache_lock_timeout` default is the same).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many keys are remembered as uncacheable; past it, expired
/// ones are dropped, and if that is not enough, all of them.
const MAX_REMEMBERED_PASSES: usize = 10_000;

/// A `tower::Layer` that caches HTTP responses; see the
/// [crate documentation](crate).
#[derive(Clone)]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer")
            .field("cache", &self.shared.cache)
            .field("rules", &self.shared.rules)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub cache: Cache,
    pub rules: Vec<Rule>,
    pub name: Arc<str>,
    pub x_cache: bool,
    pub rfc: Option<Rfc9111>,
    pub lock_timeout: Duration,
    hit_for_pass: Duration,
    passes: Mutex<HashMap<CacheKey, Timestamp>>,
    pass_count: AtomicUsize,
}

impl Shared {
    /// Remembers `key` as uncacheable for the hit-for-pass time.
    pub fn remember_uncacheable(&self, key: &CacheKey) {
        if self.hit_for_pass.is_zero() {
            return;
        }
        let now = self.cache.clock().now();
        let mut passes = self.passes.lock().unwrap_or_else(|p| p.into_inner());
        if passes.len() >= MAX_REMEMBERED_PASSES {
            passes.retain(|_, until| *until > now);
            if passes.len() >= MAX_REMEMBERED_PASSES {
                passes.clear();
            }
        }
        passes.insert(key.clone(), now.add(self.hit_for_pass));
        self.pass_count.store(passes.len(), Ordering::Relaxed);
    }

    /// Whether `key` is remembered as uncacheable.
    pub fn is_uncacheable(&self, key: &CacheKey) -> bool {
        // Most caches remember nothing: skip the lock on the hit path.
        if self.pass_count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let now = self.cache.clock().now();
        let mut passes = self.passes.lock().unwrap_or_else(|p| p.into_inner());
        let remembered = match passes.get(key) {
            Some(until) if *until > now => true,
            Some(_) => {
                passes.remove(key);
                false
            }
            None => false,
        };
        self.pass_count.store(passes.len(), Ordering::Relaxed);
        remembered
    }
}

impl CacheLayer {
    /// A layer that caches every `GET` with the safe defaults of
    /// [`Rule::new`] and the cache's own policy.
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
        }
    }

    /// The cache behind the layer.
    pub fn cache(&self) -> &Cache {
        &self.shared.cache
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService::new(inner, Arc::clone(&self.shared))
    }
}

/// Configures a [`CacheLayer`].
pub struct CacheLayerBuilder {
    cache: Cache,
    rules: Vec<Rule>,
    name: Arc<str>,
    x_cache: bool,
    rfc: Option<Rfc9111>,
    hit_for_pass: Duration,
    lock_timeout: Duration,
}

impl CacheLayerBuilder {
    /// Adds a rule. Rules are tried in order; the first whose predicate
    /// matches a request applies, and a request no rule matches is passed
    /// through. Without any rule, the layer has one [`Rule::new`].
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// The cache's name in `Cache-Status` (default `hitbox`).
    pub fn cache_name(mut self, name: &str) -> Self {
        self.name = name.into();
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

    /// Switches the layer to standards mode: it behaves as an RFC 9111
    /// shared cache, and the origin's headers (not rules) decide what is
    /// stored and for how long; rules are then ignored. See
    /// [`rfc9111`](crate::rfc9111).
    pub fn rfc9111(mut self, config: Rfc9111) -> Self {
        self.rfc = Some(config);
        self
    }

    /// Builds the layer.
    pub fn build(self) -> CacheLayer {
        let rules = if self.rules.is_empty() {
            vec![Rule::new()]
        } else {
            self.rules
        };
        CacheLayer {
            shared: Arc::new(Shared {
                cache: self.cache,
                rules,
                name: self.name,
                x_cache: self.x_cache,
                rfc: self.rfc,
                lock_timeout: self.lock_timeout,
                hit_for_pass: self.hit_for_pass,
                passes: Mutex::new(HashMap::new()),
                pass_count: AtomicUsize::new(0),
            }),
        }
    }
}
