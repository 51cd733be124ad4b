//! The service: what happens to one request.
//!
//! 1. **Decide.** The first rule whose predicate matches applies; a request
//!    no rule matches, with a method the rule does not cache, carrying
//!    credentials the rule does not accept, or a `GET` with a body the key
//!    does not capture, is forwarded untouched (`fwd=bypass`). Otherwise the
//!    rule's extractor builds the key (`HEAD` is keyed as `GET`). A key
//!    remembered as uncacheable is forwarded too.
//! 2. **Look up.** A stored response whose `Vary` the request does not
//!    match leads to the variant stored for the request's values. A fresh
//!    entry is served (`hit`). A stale one inside its stale-while-revalidate
//!    window is served while one background request refreshes it
//!    (`hit; ttl=-N`). One inside its stale-if-error window is kept in hand
//!    in case the origin fails.
//! 3. **Load once.** The first request for a missing key leads: it calls the
//!    origin and streams the body to its client while a task collects it
//!    at the origin's pace; the others wait for it, at most the lock
//!    timeout, and are served the stored response (`fwd=miss; collapsed`).
//!    If the response is not storable (or grows past the limit), the
//!    waiters are released to call the origin themselves at once, and the
//!    key is remembered as uncacheable for a while (hit-for-pass).
//! 4. **Fail softly.** An origin error or `5xx` inside a stale-if-error
//!    window is answered with the stale response instead
//!    (`fwd=stale; detail=stale-if-error`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hitbox_backend::{BoxError, LoadTicket};
use hitbox_core::{CacheKey, EntryMeta, EntryOptions, Freshness, KeyBuilder, Timestamp};
use http::header::{self, HeaderName};
use http::{Method, Request, Response, request, response};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower_service::Service;

use crate::body::{CacheBody, Tee, Uncacheable};
use crate::headers::{CacheOutcome, age_value, decimal_value, hit_status, strip_hop_by_hop};
use crate::layer::Shared;
use crate::response::{CachedResponse, HitResponse};
use crate::rfc9111::directives::CacheControl;
use crate::rfc9111::vary;
use crate::rule::Rule;

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The service a [`CacheLayer`](crate::CacheLayer) wraps around another.
pub struct CacheService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for CacheService<S> {
    fn clone(&self) -> Self {
        CacheService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> CacheService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        CacheService { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The future of [`CacheService`]'s responses.
pub type ResponseFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for CacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + From<Bytes> + Default + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The service `poll_ready` prepared is the one that must be called:
        // keep it, and leave a fresh clone behind for the next request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        if shared.rfc.is_some() {
            return Box::pin(crate::standard::handle(shared, inner, request));
        }
        // Deciding and keying need no waiting: done here, so that the
        // future boxed for a hit holds only what a hit needs.
        let (mut parts, body) = request.into_parts();
        match shared.decide(&mut parts, has_body(&body)) {
            Decision::Bypass(detail) => {
                let request = Request::from_parts(parts, body);
                Box::pin(forward(shared, inner, request, CacheOutcome::Bypass { detail }))
            }
            Decision::Cache { rule, key, head } => {
                if head || shared.rules[rule].body_key_limit.is_none() {
                    let request = Keyed {
                        parts,
                        body,
                        rule,
                        key: key.build(),
                        head,
                        body_bytes: None,
                    };
                    Box::pin(lookup(shared, inner, request))
                } else {
                    Box::pin(key_body_then_lookup(shared, inner, parts, body, rule, key))
                }
            }
        }
    }
}

/// A request the cache handles, with its key.
struct Keyed<ReqB> {
    parts: request::Parts,
    body: ReqB,
    /// The index of the rule that applies.
    rule: usize,
    key: CacheKey,
    /// A `HEAD`, keyed (and looked up) as the `GET` of the same URL.
    head: bool,
    /// The request body, when it is part of the key.
    body_bytes: Option<Bytes>,
}

impl<ReqB> Keyed<ReqB> {
    fn into_request(self) -> Request<ReqB> {
        Request::from_parts(self.parts, self.body)
    }
}

/// Where a request is going.
enum Decision {
    Bypass(Option<&'static str>),
    Cache {
        rule: usize,
        key: KeyBuilder,
        head: bool,
    },
}

impl Shared {
    fn decide(&self, parts: &mut request::Parts, with_body: bool) -> Decision {
        let Some(index) = self.rules.iter().position(|rule| rule.matches(parts)) else {
            return Decision::Bypass(None);
        };
        let rule = &self.rules[index];
        let head = parts.method == Method::HEAD;
        let method = if head { &Method::GET } else { &parts.method };
        if !rule.methods.contains(method) {
            return Decision::Bypass(Some("method"));
        }
        // A `GET` body the key does not capture could change the response
        // for everyone who shares the key.
        if with_body && *method == Method::GET && rule.body_key_limit.is_none() {
            return Decision::Bypass(Some("request-body"));
        }
        if parts.headers.contains_key(header::AUTHORIZATION) && !rule.cache_authorized {
            return Decision::Bypass(Some("authorization"));
        }
        if parts.headers.contains_key(header::COOKIE) && !rule.cache_with_cookies {
            return Decision::Bypass(Some("cookie"));
        }
        let mut key = KeyBuilder::new(&*rule.namespace);
        if head {
            parts.method = Method::GET;
            rule.key.extract(parts, &mut key);
            parts.method = Method::HEAD;
        } else {
            rule.key.extract(parts, &mut key);
        }
        if rule.cache_authorized {
            for value in parts.headers.get_all(header::AUTHORIZATION) {
                key.push_sensitive("authorization", Some(value.as_bytes()));
            }
        }
        if rule.cache_with_cookies {
            for value in parts.headers.get_all(header::COOKIE) {
                key.push_sensitive("cookie", Some(value.as_bytes()));
            }
        }
        Decision::Cache {
            rule: index,
            key,
            head,
        }
    }

    /// Whether a response may be stored under a rule: its status, no
    /// cookie or `private` unless the rule accepts them, not `no-store`,
    /// not an unqualified `no-cache` (policy mode does not revalidate, so it
    /// does not store what must be revalidated before every use), and not
    /// `Vary: *`.
    fn is_storable(&self, rule: &Rule, parts: &response::Parts) -> bool {
        let cc = CacheControl::from_headers(&parts.headers, "cache-control");
        rule.is_storable_status(parts)
            && (rule.store_set_cookie || !parts.headers.contains_key(header::SET_COOKIE))
            && !cc.no_store
            && !cc.no_cache.as_ref().is_some_and(Vec::is_empty)
            && (rule.store_private || cc.private.is_none())
            && vary::vary_names(&parts.headers).is_some()
    }

    /// Adds this cache's member to a response's `Cache-Status`, after any
    /// member an upstream cache put there (RFC 9211).
    pub(crate) fn decorate(&self, headers: &mut http::HeaderMap, outcome: CacheOutcome) {
        headers.append(CACHE_STATUS, outcome.cache_status(&self.name));
        if self.x_cache {
            headers.insert(X_CACHE, outcome.x_cache());
        }
    }

    pub(crate) fn serve<B: Body>(
        &self,
        stored: CachedResponse,
        age: u64,
        head: bool,
        outcome: CacheOutcome,
    ) -> Response<CacheBody<B>> {
        self.respond(stored.status, stored.headers, stored.body, age, head, outcome)
    }

    /// Serves a response other hits share: its headers are copied (values
    /// are reference-counted), its body is not.
    fn serve_shared<B: Body>(
        &self,
        stored: &CachedResponse,
        age: u64,
        head: bool,
        outcome: CacheOutcome,
    ) -> Response<CacheBody<B>> {
        let (headers, body) = (stored.headers.clone(), stored.body.clone());
        self.respond(stored.status, headers, body, age, head, outcome)
    }

    /// The response for a stored status, headers and whole body (the
    /// body is left out for a `HEAD`; its length is kept).
    fn respond<B: Body>(
        &self,
        status: http::StatusCode,
        mut headers: http::HeaderMap,
        body: Bytes,
        age: u64,
        head: bool,
        outcome: CacheOutcome,
    ) -> Response<CacheBody<B>> {
        // Stored responses carry their length (`CachedResponse::new`);
        // this is for entries written without it.
        if !headers.contains_key(header::CONTENT_LENGTH) {
            headers.insert(header::CONTENT_LENGTH, decimal_value(body.len() as u64));
        }
        headers.insert(header::AGE, age_value(age));
        // Stored headers hold no `Cache-Status` but a hit's placeholder:
        // this cache's member is the only one.
        let member = match outcome {
            CacheOutcome::Hit { ttl } => hit_status(&self.name, ttl),
            other => other.cache_status(&self.name),
        };
        headers.insert(CACHE_STATUS, member);
        if self.x_cache {
            headers.insert(X_CACHE, outcome.x_cache());
        }
        let body = if head { Bytes::new() } else { body };
        let mut response = Response::new(CacheBody::stored(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    fn serve_entry<B: Body>(
        &self,
        stored: CachedResponse,
        meta: &EntryMeta,
        now: Timestamp,
        head: bool,
        outcome: CacheOutcome,
    ) -> Response<CacheBody<B>> {
        self.serve(stored, meta.age(now).as_secs(), head, outcome)
    }
}

fn entry_options(rule: &Rule, shared: &Shared) -> EntryOptions {
    let policy = rule.policy.unwrap_or_else(|| shared.cache.policy());
    let mut options = EntryOptions::new()
        .ttl(policy.ttl())
        .stale_while_revalidate(policy.stale_while_revalidate_window())
        .stale_if_error(policy.stale_if_error_window());
    for tag in &rule.tags {
        options = options.tag(tag.clone());
    }
    options
}

fn blake2b_256(bytes: &[u8]) -> [u8; 32] {
    use blake2::{Blake2b, Digest, digest::consts::U32};
    Blake2b::<U32>::digest(bytes).into()
}

pub(crate) fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

/// Whether a request carries a body (a `GET` with one is never cached on
/// a key that does not capture it).
pub(crate) fn has_body<B: Body>(body: &B) -> bool {
    !body.is_end_stream() && body.size_hint().exact() != Some(0)
}

/// Forwards a request the cache does not handle, and passes the response
/// on with `outcome` (in standards mode, without hop-by-hop fields and the
/// fields meant for this cache only).
pub(crate) async fn forward<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<ReqB>,
    outcome: CacheOutcome,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
{
    let response = inner.call(request).await?;
    let (mut parts, body) = response.into_parts();
    if let Some(config) = &shared.rfc {
        crate::standard::client_headers(config, &mut parts.headers);
    }
    shared.decorate(&mut parts.headers, outcome);
    Ok(Response::from_parts(parts, CacheBody::origin(body)))
}

/// Calls a service that has not been made ready.
pub(crate) async fn call_when_ready<S, R>(mut service: S, request: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    futures::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(request).await
}

/// Reads a body that selects the response whole, digests it into the key,
/// and hands it on to the origin as it was read; then [`lookup`].
async fn key_body_then_lookup<S, ReqB, ResB>(
    shared: Arc<Shared>,
    inner: S,
    parts: request::Parts,
    body: ReqB,
    rule: usize,
    mut key: KeyBuilder,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + From<Bytes> + Default + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    let limit = shared.rules[rule].body_key_limit.unwrap_or(0);
    let declared = content_length(&parts.headers).or(body.size_hint().exact());
    if declared.is_none_or(|len| len > limit as u64) {
        let request = Request::from_parts(parts, body);
        let outcome = CacheOutcome::Bypass { detail: Some("body") };
        return forward(shared, inner, request, outcome).await;
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            key.push("body", Some(hex::encode(blake2b_256(&bytes)).as_bytes()));
            let request = Keyed {
                parts,
                body: ReqB::from(bytes.clone()),
                rule,
                key: key.build(),
                head: false,
                body_bytes: Some(bytes),
            };
            lookup(shared, inner, request).await
        }
        Err(error) => {
            tracing::debug!(error = %error, "request body could not be read");
            let mut response = Response::new(CacheBody::stored(Bytes::from_static(
                b"the request body could not be read\n",
            )));
            *response.status_mut() = http::StatusCode::BAD_REQUEST;
            Ok(response)
        }
    }
}

/// The key of one variant of a response that varies: the primary key, and
/// the request's values of the fields its `Vary` names. Digested when the
/// primary key is, or when it names credentials.
fn variant_key(primary: &CacheKey, names: &[HeaderName], request: &http::HeaderMap) -> CacheKey {
    let mut key = KeyBuilder::new("vary");
    key.push("of", Some(primary.as_str().as_bytes()));
    for name in names {
        key.push(name.as_str(), vary::normalised(request, name).as_deref());
    }
    if primary.is_digested()
        || names
            .iter()
            .any(|n| n == header::COOKIE || n == header::AUTHORIZATION)
    {
        key.mark_sensitive();
    }
    key.build()
}

/// Answers from the cache when it can; otherwise [`load`]. Everything that
/// may wait on the origin is boxed apart, so that this future (the one a
/// hit allocates) stays small.
///
/// A response that varies is stored under the primary key for the first
/// request that loads it, and under a variant key (see [`variant_key`]) for
/// the others; a variant older than the primary entry is not used, so that
/// reloading the primary entry renews its variants too.
async fn lookup<S, ReqB, ResB>(
    shared: Arc<Shared>,
    inner: S,
    mut request: Keyed<ReqB>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + From<Bytes> + Default + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    if shared.is_uncacheable(&request.key) {
        let outcome = CacheOutcome::Bypass {
            detail: Some("uncacheable"),
        };
        return Box::pin(forward(shared, inner, request.into_request(), outcome)).await;
    }
    let cache = &shared.cache;
    let now = cache.clock().now();
    let head = request.head;
    let mut stale = None;
    // Shared, not copied: an L1 entry is decoded on its first hit only.
    let mut found = cache.get_entry_shared::<HitResponse>(&request.key).await;
    if let Some(primary) = &found
        && !primary.value().selects(&request.parts.headers)
    {
        let names = primary.value().vary.clone().unwrap_or_default();
        let stored_at = primary.meta().stored_at;
        request.key = variant_key(&request.key, &names, &request.parts.headers);
        found = cache
            .get_entry_shared::<HitResponse>(&request.key)
            .await
            .filter(|variant| {
                variant.meta().stored_at >= stored_at && variant.value().selects(&request.parts.headers)
            });
    }
    if let Some(entry) = found {
        let meta = entry.meta();
        match entry.freshness {
            Freshness::Fresh => {
                let ttl = meta.time_to_stale(now).as_secs();
                let outcome = CacheOutcome::Hit { ttl };
                return Ok(shared.serve_shared(
                    &entry.value().response,
                    meta.age(now).as_secs(),
                    head,
                    outcome,
                ));
            }
            Freshness::Stale => {
                let rule = &shared.rules[request.rule];
                let options = entry_options(rule, &shared);
                refresh_in_background(&shared, &request, &options, inner);
                let stale_for = now.since(meta.fresh_until).as_secs();
                let outcome = CacheOutcome::StaleWhileRevalidate { stale_for };
                return Ok(shared.serve_shared(
                    &entry.value().response,
                    meta.age(now).as_secs(),
                    head,
                    outcome,
                ));
            }
            Freshness::StaleIfError => {
                stale = Some(hitbox_backend::CachedEntry {
                    value: entry.value().response.clone(),
                    meta: meta.clone(),
                    freshness: entry.freshness,
                });
            }
            Freshness::Expired => {}
        }
    }
    Box::pin(load(shared, inner, request, stale, now)).await
}

/// A stored response as a rule keeps it: hop-by-hop fields out, the fields
/// a qualified `no-cache` names out (they would need revalidating), and
/// the request's values of the fields its `Vary` names.
fn to_store(headers: &http::HeaderMap, request: &http::HeaderMap) -> (http::HeaderMap, http::HeaderMap) {
    let mut stored = headers.clone();
    strip_hop_by_hop(&mut stored);
    let cc = CacheControl::from_headers(headers, "cache-control");
    for name in cc.no_cache.iter().flatten() {
        stored.remove(name);
    }
    stored.remove(CACHE_STATUS);
    let names = vary::vary_names(headers).unwrap_or_default();
    (stored, vary::selecting_headers(&names, request))
}

/// A miss (or an entry only good if the origin fails): the first request
/// for the key calls the origin and stores its response while streaming
/// it; the others wait for it, at most the lock timeout.
async fn load<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Keyed<ReqB>,
    stale: Option<hitbox_backend::CachedEntry<CachedResponse>>,
    now: Timestamp,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + From<Bytes> + Default + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    let head = request.head;
    let serve_stale = |shared: &Shared, entry: hitbox_backend::CachedEntry<CachedResponse>, status| {
        let stale_for = now.since(entry.meta.fresh_until).as_secs();
        let outcome = CacheOutcome::StaleIfError { stale_for, status };
        shared.serve_entry(entry.value, &entry.meta, now, head, outcome)
    };

    // A HEAD response has no body to store: forward it.
    if head {
        let outcome = CacheOutcome::Miss { stored: false };
        return forward(shared, inner, request.into_request(), outcome).await;
    }

    let rule_index = request.rule;
    let key = request.key.clone();
    let rule = &shared.rules[rule_index];
    // Built only now: a fresh hit never needs the entry options.
    let options = entry_options(rule, &shared);
    let lead = match shared
        .cache
        .lead_or_join::<CachedResponse, Uncacheable>(&key, &options)
    {
        LoadTicket::Lead(lead) => lead,
        LoadTicket::Join(join) => {
            let outcome = match tokio::time::timeout(shared.lock_timeout, join.wait()).await {
                Ok(Ok(stored)) if HitResponse::new(stored.clone()).selects(&request.parts.headers) => {
                    return Ok(shared.serve(stored, 0, false, CacheOutcome::Collapsed));
                }
                // The leader's response was not storable, or is another
                // variant: go to the origin.
                Ok(_) => CacheOutcome::Miss { stored: false },
                Err(_) => CacheOutcome::LockTimeout,
            };
            return forward(shared, inner, request.into_request(), outcome).await;
        }
    };

    // What `Vary` may select on, kept before the request goes.
    let request_headers = request.parts.headers.clone();
    let response = match inner.call(request.into_request()).await {
        Ok(response) => response,
        Err(error) => {
            lead.complete(Err(Uncacheable::OriginFailed));
            return match stale {
                Some(entry) => Ok(serve_stale(&shared, entry, None)),
                None => Err(error),
            };
        }
    };
    let rule = &shared.rules[rule_index];
    let (mut parts, body) = response.into_parts();
    if parts.status.is_server_error()
        && let Some(entry) = stale
    {
        lead.complete(Err(Uncacheable::OriginFailed));
        return Ok(serve_stale(&shared, entry, Some(parts.status.as_u16())));
    }
    // The length the body declares, in a header or (for bodies built in
    // the same process, such as axum's) in its size hint.
    let declared = content_length(&parts.headers).or(body.size_hint().exact());
    let too_large = declared.is_some_and(|len| len > rule.max_body_size as u64);
    if too_large || !shared.is_storable(rule, &parts) {
        shared.remember_uncacheable(&key);
        let reason = if too_large {
            Uncacheable::TooLarge
        } else {
            Uncacheable::NotStorable
        };
        lead.complete(Err(reason));
        shared.decorate(&mut parts.headers, CacheOutcome::Miss { stored: false });
        return Ok(Response::from_parts(parts, CacheBody::origin(body)));
    }
    let (stored_headers, request_headers) = to_store(&parts.headers, &request_headers);
    let tee = Tee {
        lead: Some(lead),
        rfc: None,
        status: parts.status,
        headers: stored_headers,
        request_headers,
        chunks: Vec::new(),
        size: 0,
        limit: rule.max_body_size,
        shared: Arc::clone(&shared),
        key,
    };
    // With a declared length within the limit, storing is all but certain;
    // without one, the body may still outgrow the limit.
    let stored = declared.is_some();
    shared.decorate(&mut parts.headers, CacheOutcome::Miss { stored });
    Ok(Response::from_parts(parts, tee.fill(body)))
}

/// Refreshes a stale entry with a request rebuilt from the original: its
/// head (`GET` for a `HEAD`) and the body it was keyed by, if any.
fn refresh_in_background<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    original: &Keyed<ReqB>,
    options: &EntryOptions,
    inner: S,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    ReqB: From<Bytes> + Default + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let (parts, rule_index, key) = (&original.parts, original.rule, &original.key);
    let body = original.body_bytes.clone();
    let mut request = Request::new(body.map_or_else(ReqB::default, ReqB::from));
    *request.method_mut() = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    // Routers keep what they matched (path parameters) in extensions.
    *request.extensions_mut() = parts.extensions.clone();
    let shared_for_load = Arc::clone(shared);
    shared
        .cache
        .refresh_in_background(key, options, move || async move {
            let request_headers = request.headers().clone();
            let response = call_when_ready(inner, request)
                .await
                .map_err(|_| Uncacheable::OriginFailed)?;
            let (parts, body) = response.into_parts();
            let rule = &shared_for_load.rules[rule_index];
            if !shared_for_load.is_storable(rule, &parts) {
                return Err(Uncacheable::NotStorable);
            }
            let body = Limited::new(body, rule.max_body_size)
                .collect()
                .await
                .map_err(|_| Uncacheable::TooLarge)?
                .to_bytes();
            let (headers, request_headers) = to_store(&parts.headers, &request_headers);
            let mut value = CachedResponse::new(parts.status, headers, body);
            value.request_headers = request_headers;
            Ok(value)
        });
}
