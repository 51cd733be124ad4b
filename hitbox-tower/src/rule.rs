//! Rules: which requests a layer caches, under which key, for how long.

use std::sync::Arc;

use hitbox_core::{CachePolicy, Extractor, Predicate, Tag};
use http::{Method, request, response};

use crate::body_key::BodyKey;
use crate::extract;
use crate::predicate::ReadBody;

type RequestPredicate = Arc<dyn Predicate<request::Parts> + Send + Sync>;
type ResponsePredicate = Arc<dyn Predicate<response::Parts> + Send + Sync>;
pub(crate) type BodyPredicate = Arc<dyn Predicate<ReadBody> + Send + Sync>;
type KeyExtractor = Arc<dyn Extractor<request::Parts> + Send + Sync>;

/// The default largest body that is stored: 8 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 8 * 1024 * 1024;

/// The default largest request body a rule reads, for a body predicate or
/// a body key: 64 KiB.
pub const DEFAULT_REQUEST_BODY_LIMIT: usize = 64 * 1024;

/// One caching rule: a request predicate (which requests), a key, a policy
/// and what makes a response storable; optionally body predicates
/// ([`Rule::when_body`], [`Rule::store_when_body`]), `POST`s read as
/// queries ([`Rule::post_as_read`], [`Rule::graphql`]), and whether unsafe
/// requests invalidate what it stores ([`Rule::invalidate_on_unsafe`]).
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
    pub(crate) name: Option<Arc<str>>,
    pub(crate) policy: Option<CachePolicy>,
    pub(crate) tags: Vec<Tag>,
    pub(crate) methods: Vec<Method>,
    pub(crate) max_body_size: usize,
    pub(crate) cache_authorized: bool,
    pub(crate) cache_with_cookies: bool,
    pub(crate) store_set_cookie: bool,
    pub(crate) store_private: bool,
    pub(crate) when_body: Option<BodyPredicate>,
    pub(crate) store_when_body: Option<BodyPredicate>,
    pub(crate) body_key: Option<BodyKey>,
    pub(crate) request_body_limit: usize,
    pub(crate) invalidate_on_unsafe: bool,
    pub(crate) distributed_lock: bool,
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
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("methods", &self.methods)
            .field("max_body_size", &self.max_body_size)
            .field("body_key", &self.body_key)
            .field("request_body_limit", &self.request_body_limit)
            .field("invalidate_on_unsafe", &self.invalidate_on_unsafe)
            .field("distributed_lock", &self.distributed_lock)
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
            name: None,
            policy: None,
            tags: Vec::new(),
            methods: vec![Method::GET],
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            cache_authorized: false,
            cache_with_cookies: false,
            store_set_cookie: false,
            store_private: false,
            when_body: None,
            store_when_body: None,
            body_key: None,
            request_body_limit: DEFAULT_REQUEST_BODY_LIMIT,
            invalidate_on_unsafe: true,
            distributed_lock: true,
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

    /// The rule's name in metrics (the `rule` label of
    /// `hitbox_requests_total`) and in the `hitbox.rule` field of the
    /// request's span; by default its [namespace](Rule::namespace). Name
    /// each rule of a layer apart to tell their traffic apart.
    ///
    /// ```
    /// use hitbox_tower::Rule;
    ///
    /// let rule = Rule::new().namespace("v1").name("catalog");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into().into());
        self
    }

    /// The label the rule is counted under: its name, or its namespace.
    pub(crate) fn label(&self) -> Arc<str> {
        self.name.clone().unwrap_or_else(|| Arc::clone(&self.namespace))
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

    /// Makes the request body part of the key (as its BLAKE2b-256 digest,
    /// with its `Content-Type` and `Content-Encoding`), for APIs that query
    /// with `POST` bodies: add the method with [`Rule::methods`]. Bodies of
    /// up to `max_bytes` whose length is known before they are read are
    /// read before the key is built; others are passed through uncached.
    /// The same as `post_as_read(BodyKey::digest())` with that
    /// [`Rule::request_body_limit`], without adding `POST`.
    pub fn key_body(mut self, max_bytes: usize) -> Self {
        self.body_key = Some(BodyKey::digest());
        self.request_body_limit = max_bytes;
        self
    }

    /// Caches `POST` requests to this rule as reads: search requests,
    /// JSON-RPC reads, GraphQL queries (see [`Rule::graphql`] for those).
    /// `POST` joins the rule's methods, and `key` says what of the body
    /// enters the key ([`BodyKey`]); it is read whole first, up to
    /// [`Rule::request_body_limit`].
    ///
    /// Only rules that say so cache a `POST`. What is not cached passes
    /// through to the origin, never fails: a body larger than the limit, or
    /// whose length is not known before it is read (sent chunked), is
    /// forwarded untouched (`Cache-Status: fwd=bypass; detail=body`), a
    /// body that is not the JSON a JSON key needs is forwarded as it came
    /// (`detail=invalid-json`). A `POST` that this rule caches is a read:
    /// it does not invalidate anything.
    ///
    /// ```
    /// use hitbox_tower::{BodyKey, Rule};
    /// use hitbox_tower::predicate::Path;
    ///
    /// let rule = Rule::new()
    ///     .when(Path::exact("/search"))
    ///     .post_as_read(BodyKey::digest())
    ///     .request_body_limit(16 * 1024);
    /// ```
    pub fn post_as_read(mut self, key: BodyKey) -> Self {
        if !self.methods.contains(&Method::POST) {
            self.methods.push(Method::POST);
        }
        self.body_key = Some(key);
        self
    }

    /// The GraphQL preset: `GET` and `POST` requests whose operation is a
    /// `query` are cached, keyed by the query, its variables, its operation
    /// name and its extensions (a persisted-query hash among them);
    /// `mutation` and `subscription` operations, and documents whose
    /// operation cannot be told, pass through (`Cache-Status: fwd=bypass;
    /// detail=not-a-query`) and invalidate nothing. A response whose JSON
    /// has a top-level `errors` member is not stored (GraphQL answers
    /// errors with `200`); a [`Rule::store_when_body`] given after this
    /// replaces that. See [`graphql`](crate::graphql). Feature `json`.
    ///
    /// ```
    /// use hitbox_tower::Rule;
    /// use hitbox_tower::graphql::GraphQl;
    /// use hitbox_tower::predicate::Path;
    ///
    /// let rule = Rule::new().when(Path::exact("/graphql")).graphql(GraphQl::new());
    /// ```
    #[cfg(feature = "json")]
    pub fn graphql(mut self, graphql: crate::graphql::GraphQl) -> Self {
        self.methods = vec![Method::GET, Method::POST];
        self.body_key = Some(BodyKey::graphql(graphql));
        self.store_when_body = Some(Arc::new(Predicate::<ReadBody>::not(
            crate::predicate::Json::exists("/errors"),
        )));
        self
    }

    /// The largest request body the rule reads for [`Rule::when_body`] and
    /// [`Rule::post_as_read`] (default [`DEFAULT_REQUEST_BODY_LIMIT`]).
    /// A body over it, or whose length is not known before it is read, is
    /// not read: it streams to the origin untouched and the request is not
    /// cached.
    pub fn request_body_limit(mut self, bytes: usize) -> Self {
        self.request_body_limit = bytes;
        self
    }

    /// Applies the rule only to requests whose body passes `predicate` (see
    /// [`predicate::ReadBody`](crate::predicate::ReadBody)): the body is
    /// read once, up to [`Rule::request_body_limit`], and handed on to the
    /// origin unchanged. A request whose body fails it, or is not read (too
    /// large, of unknown length), passes through uncached (`Cache-Status:
    /// fwd=bypass; detail=body-predicate`, or `detail=body`); the rules
    /// after this one are not tried. A request without a body is judged as
    /// an empty body. Requests of rules without body predicates or body
    /// keys are never buffered.
    ///
    /// ```
    /// use hitbox_tower::{BodyKey, Rule};
    /// use hitbox_tower::predicate::{Path, ReadSize};
    ///
    /// let rule = Rule::new()
    ///     .when(Path::exact("/lookup"))
    ///     .post_as_read(BodyKey::digest())
    ///     .when_body(ReadSize::range(1..=512));
    /// ```
    pub fn when_body(mut self, predicate: impl Predicate<ReadBody> + Send + Sync + 'static) -> Self {
        self.when_body = Some(Arc::new(predicate));
        self
    }

    /// Stores only responses whose body passes `predicate`, for APIs that
    /// answer errors with `200` (`{"error": …}`). The body still streams to
    /// the client as it comes, unchanged; it is judged once it has been
    /// read whole, up to [`Rule::max_body_size`], and not stored when it
    /// fails (nor when it is larger). `Cache-Status` then says
    /// `fwd=miss` without `stored`: storing is not sure until the body is
    /// judged.
    ///
    /// ```
    /// # #[cfg(feature = "json")] {
    /// use hitbox_core::Predicate;
    /// use hitbox_tower::Rule;
    /// use hitbox_tower::predicate::Json;
    ///
    /// let rule = Rule::new().store_when_body(Json::exists("/error").not());
    /// # }
    /// ```
    pub fn store_when_body(mut self, predicate: impl Predicate<ReadBody> + Send + Sync + 'static) -> Self {
        self.store_when_body = Some(Arc::new(predicate));
        self
    }

    /// Whether the responses this rule stores are dropped when an unsafe
    /// request (`PUT`, `POST`, `DELETE`, `PATCH`, any method but `GET`,
    /// `HEAD`, `OPTIONS` and `TRACE`) to the same host and path gets a
    /// non-error response (default `true`). See the
    /// [crate documentation](crate#invalidation-by-unsafe-methods).
    pub fn invalidate_on_unsafe(mut self, enabled: bool) -> Self {
        self.invalidate_on_unsafe = enabled;
        self
    }

    /// Whether a miss of this rule takes the layer's distributed lock
    /// (default `true`; see
    /// [`CacheLayerBuilder::distributed_lock`](crate::CacheLayerBuilder::distributed_lock)).
    /// Turn it off for keys that are cheap to load, or whose loads should
    /// not wait on another instance.
    pub fn distributed_lock(mut self, enabled: bool) -> Self {
        self.distributed_lock = enabled;
        self
    }

    /// Whether requests of this rule are read before they are looked up
    /// (their body, or, for the GraphQL preset, their URL).
    pub(crate) fn reads_body(&self) -> bool {
        self.when_body.is_some() || self.body_key.is_some()
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
