//! Rules: which requests a layer caches, under which key, for how long.

use std::sync::Arc;

use hitbox_core::{CachePolicy, Extractor, Predicate, Tag};
use http::{Method, request, response};

use crate::extract;

type RequestPredicate = Arc<dyn Predicate<request::Parts> + Send + Sync>;
type ResponsePredicate = Arc<dyn Predicate<response::Parts> + Send + Sync>;
type KeyExtractor = Arc<dyn Extractor<request::Parts> + Send + Sync>;

/// The default largest body that is stored: 8 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 8 * 1024 * 1024;

/// One caching rule: a request predicate (which requests), a key, a policy
/// and what makes a response storable.
///
/// The defaults are the safe ones: only `GET` (and `HEAD`, answered from
/// the stored `GET`), not when the request carries `Authorization` or
/// `Cookie`, not when the response sets a cookie or is marked `private`,
/// `no-store` or (unqualified) `no-cache`, never `Vary: *`, and only `2xx`
/// (but `206`), `301` and `308` responses. A response that varies is stored
/// per variant. The
/// default key is [`extract::default_key`]: method, scheme and host, path
/// and the normalised query.
///
/// ```
/// use std::time::Duration;
/// use hitbox_core::CachePolicy;
/// use hitbox_tower::Rule;
///
/// let rule = Rule::new()
///     .namespace("catalog")
///     .policy(CachePolicy::new(Duration::from_secs(60)))
///     .max_body_size(1024 * 1024);
/// ```
#[derive(Clone)]
pub struct Rule {
    pub(crate) when: Option<RequestPredicate>,
    pub(crate) storable: Option<ResponsePredicate>,
    pub(crate) key: KeyExtractor,
    pub(crate) namespace: Arc<str>,
    pub(crate) policy: Option<CachePolicy>,
    pub(crate) tags: Vec<Tag>,
    pub(crate) methods: Vec<Method>,
    pub(crate) max_body_size: usize,
    pub(crate) cache_authorized: bool,
    pub(crate) cache_with_cookies: bool,
    pub(crate) store_set_cookie: bool,
    pub(crate) store_private: bool,
    pub(crate) body_key_limit: Option<usize>,
}

impl Default for Rule {
    fn default() -> Self {
        Rule::new()
    }
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("namespace", &self.namespace)
            .field("policy", &self.policy)
            .field("methods", &self.methods)
            .field("max_body_size", &self.max_body_size)
            .finish_non_exhaustive()
    }
}

impl Rule {
    /// A rule with the safe defaults, matching every request.
    pub fn new() -> Self {
        Rule {
            when: None,
            storable: None,
            key: Arc::new(extract::default_key()),
            namespace: "http".into(),
            policy: None,
            tags: Vec::new(),
            methods: vec![Method::GET],
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            cache_authorized: false,
            cache_with_cookies: false,
            store_set_cookie: false,
            store_private: false,
            body_key_limit: None,
        }
    }

    /// Applies the rule only to requests that pass `predicate` (see
    /// [`predicate`](crate::predicate)).
    pub fn when(mut self, predicate: impl Predicate<request::Parts> + Send + Sync + 'static) -> Self {
        self.when = Some(Arc::new(predicate));
        self
    }

    /// Stores only responses that pass `predicate`, instead of the default
    /// (`2xx` but `206`, `301`, `308`). The safety checks (cookies,
    /// `private`, `no-store`, size) apply on top.
    pub fn store_when(mut self, predicate: impl Predicate<response::Parts> + Send + Sync + 'static) -> Self {
        self.storable = Some(Arc::new(predicate));
        self
    }

    /// Builds keys with `extractor` instead of [`extract::default_key`].
    pub fn key(mut self, extractor: impl Extractor<request::Parts> + Send + Sync + 'static) -> Self {
        self.key = Arc::new(extractor);
        self
    }

    /// The key namespace (default `http`): two rules with different
    /// namespaces never share entries.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into().into();
        self
    }

    /// The policy (default: the cache's own policy).
    pub fn policy(mut self, policy: CachePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Tags every stored response, for `Cache::invalidate_tag`.
    pub fn tag(mut self, tag: impl Into<Tag>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// The methods that are cached (default `GET`; `HEAD` is always answered
    /// from a stored `GET` and never stored itself).
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Responses with larger bodies are passed through, not stored (and
    /// never truncated).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Caches requests that carry `Authorization`. The header value becomes
    /// part of the key (as a digest), so users never share an entry.
    pub fn cache_authorized(mut self, enabled: bool) -> Self {
        self.cache_authorized = enabled;
        self
    }

    /// Caches requests that carry `Cookie`. The cookies become part of the
    /// key (as a digest), so users never share an entry.
    pub fn cache_with_cookies(mut self, enabled: bool) -> Self {
        self.cache_with_cookies = enabled;
        self
    }

    /// Stores responses that set a cookie (the `Set-Cookie` header is then
    /// replayed to everyone who hits the entry: only for keys that are
    /// private to one user).
    pub fn store_set_cookie(mut self, enabled: bool) -> Self {
        self.store_set_cookie = enabled;
        self
    }

    /// Stores responses marked `Cache-Control: private`.
    pub fn store_private(mut self, enabled: bool) -> Self {
        self.store_private = enabled;
        self
    }

    /// Makes the request body part of the key (as its BLAKE2b-256 digest),
    /// for APIs that query with `POST` bodies such as GraphQL: add the
    /// method with [`Rule::methods`]. Bodies up to `max_bytes` whose length
    /// is declared are read before the key is built; others are passed
    /// through uncached.
    pub fn key_body(mut self, max_bytes: usize) -> Self {
        self.body_key_limit = Some(max_bytes);
        self
    }

    pub(crate) fn matches(&self, parts: &request::Parts) -> bool {
        self.when.as_ref().is_none_or(|p| p.check(parts))
    }

    pub(crate) fn is_storable_status(&self, parts: &response::Parts) -> bool {
        match &self.storable {
            Some(predicate) => predicate.check(parts),
            None => {
                let status = parts.status.as_u16();
                (status != 206 && parts.status.is_success()) || status == 301 || status == 308
            }
        }
    }
}
