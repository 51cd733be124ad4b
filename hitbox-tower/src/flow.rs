//! What happens to one request, in both modes: the phases, written once
//! around the answers of an [`HttpPolicy`].
//!
//! 1. **Decide** ([`start`]), without waiting: the policy bypasses the
//!    request (`fwd=bypass`), refuses it (`400` for an ambiguous `Host`),
//!    forwards it and then invalidates what it changed (an unsafe method),
//!    or keys it. A rule that reads bodies has its request read first, up
//!    to its limit ([`read_body_then_lookup`]), and judged and keyed by the
//!    policy ([`HttpPolicy::with_body`]); a body it cannot read streams on
//!    untouched. A key remembered as uncacheable is bypassed
//!    (hit-for-pass). Only then is a future boxed, holding only what its
//!    phase needs.
//! 2. **Look up** ([`lookup`]). A stored response whose `Vary` the request
//!    does not match leads to the variant stored for the request's values
//!    ([`variant_key`]); a variant older than the primary entry is not
//!    used. The policy says what the stored response is worth: fresh
//!    (`hit`), stale but acceptable (`hit; ttl=-N`), stale and served while
//!    one background request refreshes it, or to be revalidated first.
//!    A client's own conditional request is answered `304` where the
//!    policy uses validators.
//! 3. **Load** ([`load`]). Requests the policy lets share a load wait for
//!    the one that leads it, at most the lock timeout
//!    (`fwd=miss; collapsed`, or `detail=lock-timeout`). With a
//!    distributed lock, the leader of a miss then shares the load with the
//!    other instances ([`distributed`]): it loads if it takes the lock, and
//!    otherwise serves what the instance that took it stored. The leader
//!    waits until the generations of the load's tags are read, then asks
//!    the origin, with the stored validators when revalidating. An origin error
//!    or `5xx` is answered with the stale response where stale-if-error
//!    allows it; a `304` refreshes the stored response (its fields meant for
//!    one client go to that client only).
//! 4. **Store.** The policy says whether and how the response is stored; it
//!    streams to the client while a task collects it at the origin's pace
//!    ([`Tee`]), then, if its body passes the rule's body predicate, it is
//!    stored and the waiters are served.

use std::sync::Arc;

use bytes::Bytes;
use hitbox_backend::lock::LoadEnd;
use hitbox_backend::{LoadTicket, Outcome};
use hitbox_core::{CacheKey, EntryMeta, KeyBuilder, Tag, Timestamp};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, request};
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use crate::body::{CacheBody, Tee};
use crate::distributed::{self, Coordinated};
use crate::future::{Phase, ResponseFuture};
use crate::headers::{BypassReason, CacheOutcome, Fwd, decimal_value};
use crate::layer::LayerState;
use crate::mode::CacheMode;
use crate::observe;
use crate::origin::{Origin, RequestBody, ResponseBody, call_when_ready};
use crate::policy::{Decision, HttpPolicy, Skip, Worth};
use crate::predicate::ReadBody;
use crate::response::{CachedResponse, HitResponse};
use crate::rfc9111::freshness::{Disconnected, Exchange};
use crate::rfc9111::range::{self, RangeRequest, Span};
use crate::rfc9111::{validation, vary};
use crate::store::{self, Store, Uncacheable, variant_key};

/// A request the cache handles, with its key.
struct Keyed<C, ReqB> {
    parts: request::Parts,
    body: ReqB,
    context: C,
    key: CacheKey,
    /// A `HEAD`, looked up as the `GET` of the same URL.
    head: bool,
    /// The request body, when it is part of the key.
    body_bytes: Option<Bytes>,
    /// The label its outcome is counted under ([`LayerState::count`]).
    label: usize,
    /// When `key` is a variant's: the primary key it varies from.
    variant_of: Option<CacheKey>,
}

impl<C, ReqB> Keyed<C, ReqB> {
    fn into_request(self) -> Request<ReqB> {
        Request::from_parts(self.parts, self.body)
    }
}

/// A stored response that may not be served before the origin is asked.
struct Pending {
    stored: CachedResponse,
    meta: EntryMeta,
    fwd: Fwd,
    /// Ask with the stored validators.
    validate: bool,
    /// How long it has been stale, when it may stand in for an origin error.
    stale_if_error: Option<u64>,
    /// What it does when the origin cannot be reached.
    if_disconnected: Disconnected,
}

/// The age a stored response is served with: by the RFC's calculation
/// when its exchange was kept (standards mode), else since it was stored.
fn age_of(stored: &CachedResponse, meta: &EntryMeta, now: Timestamp) -> u64 {
    match &stored.exchange {
        Some(exchange) => exchange.current_age(now.as_millis() / 1000),
        None => meta.age(now).as_secs(),
    }
}

/// Whether a request carries a body (a `GET` with one is never cached on
/// a key that does not capture it).
pub(crate) fn has_body<B: Body>(body: &B) -> bool {
    !body.is_end_stream() && body.size_hint().exact() != Some(0)
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

/// Starts a request: makes its span (when one is wanted), decides inside
/// it, and boxes the future of the phase that follows (polled inside the
/// span). One function, so that the request's parts are not moved again.
pub(crate) fn start<P, S, ReqB, ResB>(
    shared: Arc<LayerState<P>>,
    inner: S,
    request: Request<ReqB>,
) -> ResponseFuture<ResB, S::Error>
where
    P: HttpPolicy,
    S: Origin<ReqB, ResB>,
    ReqB: RequestBody,
    ResB: ResponseBody,
{
    let (mut parts, body) = request.into_parts();
    let span = observe::request_span(&parts);
    // Owns a handle of its own, so `span` can move into the future while
    // the decision runs inside it; left when the future is made.
    let entered = span.as_deref().map(observe::enter);
    let decision = shared.policy.decide(&mut parts, has_body(&body));
    let rule = match &decision {
        Decision::Bypass { rule, .. } => *rule,
        Decision::Reject(_) => None,
        Decision::Invalidate(context) | Decision::Cache { context, .. } => shared.policy.rule_index(context),
    };
    let label = shared.label(rule, span.as_deref());
    let phase = move |phase: Phase<ResB, S::Error>| {
        if let Some(entered) = entered {
            observe::leave(entered);
        }
        ResponseFuture::new(phase, span)
    };
    if CacheMode::of(&parts) == CacheMode::NoStore && matches!(decision, Decision::Cache { .. }) {
        let request = Request::from_parts(parts, body);
        let outcome = CacheOutcome::Bypass {
            detail: Some(BypassReason::RequestMode),
        };
        return phase(Box::pin(forward(shared, inner, request, outcome, label)));
    }
    let chosen: Phase<ResB, S::Error> = match decision {
        Decision::Bypass { detail, .. } => {
            let request = Request::from_parts(parts, body);
            Box::pin(forward(
                shared,
                inner,
                request,
                CacheOutcome::Bypass { detail },
                label,
            ))
        }
        Decision::Reject(detail) => {
            let response = shared.answer(
                StatusCode::BAD_REQUEST,
                "the Host of this request is ambiguous\n",
                CacheOutcome::Rejected { detail },
                label,
            );
            Box::pin(std::future::ready(Ok(response)))
        }
        Decision::Invalidate(context) => Box::pin(invalidate(
            shared,
            inner,
            Request::from_parts(parts, body),
            context,
            label,
        )),
        Decision::Cache {
            key,
            body_limit: Some(limit),
            head,
            context,
        } if has_body(&body) => Box::pin(read_body_then_lookup(
            shared, inner, parts, body, key, limit, head, context, label,
        )),
        Decision::Cache {
            mut key,
            body_limit,
            head,
            context,
        } => {
            // No body to read: a rule that reads bodies judges an empty one,
            // at once.
            if body_limit.is_some()
                && let Err(reason) =
                    shared
                        .policy
                        .with_body(&context, &parts, &ReadBody::new(Bytes::new()), &mut key)
            {
                let request = Request::from_parts(parts, body);
                let outcome = CacheOutcome::Bypass { detail: Some(reason) };
                return phase(Box::pin(forward(shared, inner, request, outcome, label)));
            }
            let request = Keyed {
                parts,
                body,
                context,
                key: key.build(),
                head,
                body_bytes: None,
                label,
                variant_of: None,
            };
            Box::pin(lookup(shared, inner, request))
        }
    };
    phase(chosen)
}

/// Forwards a request the cache does not handle, and passes the response
/// on with `outcome` (counted under `label`).
async fn forward<P, S, ReqB, ResB>(
    shared: Arc<LayerState<P>>,
    mut inner: S,
    request: Request<ReqB>,
    outcome: CacheOutcome,
    label: usize,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    P: HttpPolicy,
    S: Origin<ReqB, ResB>,
    ResB: ResponseBody,
{
    let (mut head, body) = shared.origin(label, inner.call(request).await)?.into_parts();
    shared.for_client(&mut head.headers, true);
    shared.decorate(&mut head.headers, outcome);
    shared.count(label, outcome.counted(), Some(head.status));
    Ok(Response::from_parts(head, CacheBody::origin(body)))
}

/// Forwards an unsafe request; when it succeeds, what it changed is
/// invalidated (every variant: they share a tag).
async fn invalidate<P, S, ReqB, ResB>(
    shared: Arc<LayerState<P>>,
    mut inner: S,
    request: Request<ReqB>,
    context: P::Context,
    label: usize,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    P: HttpPolicy,
    S: Origin<ReqB, ResB>,
    ResB: ResponseBody,
{
    let request_headers = request.headers().clone();
    let method = request.method().clone();
    let request_time = shared.cache.clock().now();
    let (mut head, body) = shared.origin(label, inner.call(request).await)?.into_parts();
    let response_time = shared.cache.clock().now();
    let invalidations = shared.policy.invalidations(&context, &request_headers, &head);
    for key in &invalidations.keys {
        let _ = shared.cache.delete(key).await;
    }
    for tag in &invalidations.tags {
        if let Err(error) = shared.cache.invalidate_tag(tag).await {
            tracing::debug!(%error, tag = tag.as_str(), "invalidation failed");
        }
    }
    let outcome = CacheOutcome::Bypass {
        detail: Some(BypassReason::Method),
    };
    // A response that is a representation of the target (a `POST` whose
    // `Content-Location` names it) is stored for the `GET`s that follow,
    // once what it replaced is gone.
    let exchange = Exchange::new(
        &head.headers,
        request_time.as_millis() / 1000,
        response_time.as_millis() / 1000,
    );
    let declared = content_length(&head.headers).or(body.size_hint().exact());
    let storing = shared.policy.storing_unsafe(
        &context,
        &method,
        &request_headers,
        &head,
        declared,
        exchange,
        response_time,
    );
    if let Some((key, mut storing)) = storing {
        let options = hitbox_core::EntryOptions::new();
        shared.tag_from_response(&mut storing, &head.headers, &options, response_time);
        let names = vary::vary_names(&head.headers).unwrap_or_default();
        let tee = Tee {
            store: Store {
                cache: shared.cache.clone(),
                passes: Arc::clone(&shared.passes),
                key,
                lead: None,
                meta: storing.meta.clone(),
                hold: None,
            },
            status: head.status,
            headers: storing.headers,
            request_headers: vary::selecting_headers(&names, &request_headers),
            exchange: storing.exchange,
            chunks: Vec::new(),
            size: 0,
            limit: storing.limit,
            accept: storing.accept,
        };
        shared.for_client(&mut head.headers, true);
        shared.decorate(&mut head.headers, outcome);
        shared.count(label, outcome.counted(), Some(head.status));
        return Ok(Response::from_parts(head, tee.fill(body)));
    }
    shared.for_client(&mut head.headers, true);
    shared.decorate(&mut head.headers, outcome);
    shared.count(label, outcome.counted(), Some(head.status));
    Ok(Response::from_parts(head, CacheBody::origin(body)))
}

/// Reads a body the rule needs whole (up to `limit`), lets the policy judge
/// it and add to the key, and hands it on to the origin as it was read;
/// then [`lookup`]. A body whose length is not known to be within the limit
/// before it is read is not read at all: it streams to the origin untouched.
#[allow(clippy::too_many_arguments)]
async fn read_body_then_lookup<P, S, ReqB, ResB>(
    shared: Arc<LayerState<P>>,
    inner: S,
    parts: request::Parts,
    body: ReqB,
    mut key: KeyBuilder,
    limit: usize,
    head: bool,
    context: P::Context,
    label: usize,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    P: HttpPolicy,
    S: Origin<ReqB, ResB>,
    ReqB: RequestBody,
    ResB: ResponseBody,
{
    let hint = body.size_hint();
    // The body's own bound first (it is what will be read), else what the
    // request declares.
    let bound = hint.upper().or_else(|| content_length(&parts.headers));
    if bound.is_none_or(|len| len > limit as u64) {
        let request = Request::from_parts(parts, body);
        let outcome = CacheOutcome::Bypass {
            detail: Some(BypassReason::Body),
        };
        return forward(shared, inner, request, outcome, label).await;
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            // Part of the body is gone: it cannot be forwarded whole.
            tracing::debug!(error = %error, "request body could not be read");
            let body = CacheBody::stored(Bytes::from_static(b"the request body could not be read\n"));
            shared.count(label, Outcome::Error, Some(StatusCode::BAD_REQUEST));
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(response);
        }
    };
    let verdict = shared
        .policy
        .with_body(&context, &parts, &ReadBody::new(bytes.clone()), &mut key);
    if let Err(reason) = verdict {
        let request = Request::from_parts(parts, ReqB::from(bytes));
        let outcome = CacheOutcome::Bypass { detail: Some(reason) };
        return forward(shared, inner, request, outcome, label).await;
    }
    let request = Keyed {
        parts,
        body: ReqB::from(bytes.clone()),
        context,
        key: key.build(),
        head,
        body_bytes: Some(bytes),
        label,
        variant_of: None,
    };
    lookup(shared, inner, request).await
}

/// Serves a stored response: `304` when the policy uses validators and the
/// client's own conditional request matches, else the whole response. Its
/// headers are copied (values are reference-counted), its body is not.
fn serve<P: HttpPolicy, B: Body>(
    shared: &LayerState<P>,
    stored: &CachedResponse,
    age: u64,
    request: &HeaderMap,
    head: bool,
    outcome: CacheOutcome,
    label: usize,
) -> Response<CacheBody<B>> {
    if shared.policy.uses_validators()
        && validation::is_conditional(request)
        && validation::not_modified(request, &stored.headers)
    {
        shared.count(label, outcome.counted(), Some(StatusCode::NOT_MODIFIED));
        let mut response = Response::new(CacheBody::stored(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let mut headers = validation::not_modified_headers(&stored.headers);
        headers.insert(header::AGE, HeaderValue::from(age));
        shared.decorate(&mut headers, outcome);
        *response.headers_mut() = headers;
        return response;
    }
    if !head
        && shared.policy.serves_ranges()
        && let Some(response) = serve_range(shared, stored, age, request, outcome, label)
    {
        return response;
    }
    let (headers, body) = (stored.headers.clone(), stored.body.clone());
    shared.respond(stored.status, headers, body, age, head, outcome, label)
}

/// The span a stored response holds and the length of the whole: all of a
/// complete `200`, or what a stored part's `Content-Range` says. `None`
/// for other statuses, and for an empty `200` (of length zero).
fn stored_span(stored: &CachedResponse) -> Option<(Option<Span>, u64)> {
    match stored.status {
        StatusCode::OK => {
            let len = stored.body.len() as u64;
            let span = len.checked_sub(1).map(|last| Span { first: 0, last });
            Some((span, len))
        }
        StatusCode::PARTIAL_CONTENT => {
            let (span, len) = range::content_range(&stored.headers)?;
            (span.len() == stored.body.len() as u64).then_some((Some(span), len))
        }
        _ => None,
    }
}

/// What a range request wants of a stored response: `Some(None)` when its
/// one range selects nothing of it (`416`), `None` when the request is not
/// for one range of it (no `Range`, several ranges, syntax this cache
/// ignores, an `If-Range` that does not hold): then it wants the whole.
fn wanted_span(stored: &CachedResponse, len: u64, request: &HeaderMap) -> Option<Option<Span>> {
    let Some(RangeRequest::Single(wanted)) = range::parse_range(request) else {
        return None;
    };
    if !range::if_range_holds(request, &stored.headers) {
        return None;
    }
    Some(wanted.resolve(len))
}

/// A range request answered from a stored response: `206` with the
/// requested bytes, sliced out of the stored body (no byte copied), or
/// `416` when the range selects none of it. `None`: the request does not
/// ask for one range the stored response holds.
fn serve_range<P: HttpPolicy, B: Body>(
    shared: &LayerState<P>,
    stored: &CachedResponse,
    age: u64,
    request: &HeaderMap,
    outcome: CacheOutcome,
    label: usize,
) -> Option<Response<CacheBody<B>>> {
    if !request.contains_key(header::RANGE) {
        return None;
    }
    let (have, len) = stored_span(stored)?;
    let wanted = wanted_span(stored, len, request)?;
    let mut headers = stored.headers.clone();
    let Some(wanted) = wanted else {
        headers.insert(header::CONTENT_RANGE, range::unsatisfied_value(len));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let status = StatusCode::RANGE_NOT_SATISFIABLE;
        return Some(shared.respond(status, headers, Bytes::new(), age, false, outcome, label));
    };
    let have = have.filter(|have| have.contains(wanted))?;
    let start = (wanted.first - have.first) as usize;
    let end = (wanted.last - have.first) as usize;
    let body = stored.body.slice(start..=end);
    headers.insert(header::CONTENT_RANGE, range::content_range_value(wanted, len));
    headers.insert(header::CONTENT_LENGTH, decimal_value(wanted.len()));
    let status = StatusCode::PARTIAL_CONTENT;
    Some(shared.respond(status, headers, body, age, false, outcome, label))
}

/// Answers from the cache when it can; otherwise [`load`]. Everything that
/// may wait on the origin is boxed apart, so that this future (the one a
/// hit allocates) stays small.
async fn lookup<P, S, ReqB, ResB>(
    shared: Arc<LayerState<P>>,
    inner: S,
    mut request: Keyed<P::Context, ReqB>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    P: HttpPolicy,
    S: Origin<ReqB, ResB>,
    ReqB: RequestBody,
    ResB: ResponseBody,
{
    observe::keyed(&request.key);
    if shared.passes.contains(&request.key) {
        let outcome = CacheOutcome::Bypass {
            detail: Some(BypassReason::Uncacheable),
        };
        let label = request.label;
        return Box::pin(forward(shared, inner, request.into_request(), outcome, label)).await;
    }
    let cache = &shared.cache;
    let now = cache.clock().now();
    let mode = CacheMode::of(&request.parts);
    // LayerState, not copied: an L1 entry is decoded on its first hit only.
    let mut found = match mode {
        CacheMode::Reload => None,
        _ => cache.get_entry::<HitResponse>(&request.key).await,
    };
    if let Some(primary) = &found
        && !primary.value().selects(&request.parts.headers)
    {
        let names = primary.value().vary.clone().unwrap_or_default();
        let stored_at = primary.meta().stored_at;
        let variant = variant_key(&request.key, &names, &request.parts.headers);
        request.variant_of = Some(std::mem::replace(&mut request.key, variant));
        found = cache
            .get_entry::<HitResponse>(&request.key)
            .await
            .filter(|variant| {
                variant.meta().stored_at >= stored_at && variant.value().selects(&request.parts.headers)
            });
    }
    let mut pending = None;
    if let Some(entry) = found {
        let (stored, meta) = (entry.value(), entry.meta());
        let mut worth = shared.policy.worth(
            &request.context,
            stored,
            meta,
            entry.freshness,
            &request.parts.headers,
            now,
        );
        // A stored part answers only the ranges it holds; a request that
        // needs more completes it when it can, and is a miss otherwise.
        if stored.response.status == StatusCode::PARTIAL_CONTENT {
            let fresh =
                !request.head && matches!(worth, Some(Worth::Fresh { .. } | Worth::StaleAllowed { .. }));
            match part_plan(&stored.response, &request.parts.headers) {
                PartPlan::Serve if fresh => {}
                PartPlan::Complete { missing, len } if fresh => {
                    let part = stored.to_stored();
                    return Box::pin(complete_part(shared, inner, request, part, missing, len)).await;
                }
                _ => worth = None,
            }
        }
        let (parts, head, label) = (&request.parts.headers, request.head, request.label);
        // The request takes a stored response as it is, however stale.
        if mode.serves_stale()
            && let Some(Worth::StaleWhileRevalidate { .. } | Worth::Revalidate { .. }) = worth
        {
            let stale_for = now.since(meta.fresh_until).as_secs();
            let age = meta.age(now).as_secs();
            let outcome = CacheOutcome::StaleAllowed { stale_for };
            return Ok(serve(&shared, &stored.response, age, parts, head, outcome, label));
        }
        match worth {
            Some(Worth::Fresh { ttl, age }) => {
                let outcome = CacheOutcome::Hit { ttl };
                return Ok(serve(&shared, &stored.response, age, parts, head, outcome, label));
            }
            Some(Worth::StaleAllowed { stale_for, age }) => {
                let outcome = CacheOutcome::StaleAllowed { stale_for };
                return Ok(serve(&shared, &stored.response, age, parts, head, outcome, label));
            }
            Some(Worth::StaleWhileRevalidate { stale_for, age }) => {
                refresh_in_background(&shared, &request, stored.to_stored(), meta.tags.clone(), inner);
                let outcome = CacheOutcome::StaleWhileRevalidate { stale_for };
                return Ok(serve(&shared, &stored.response, age, parts, head, outcome, label));
            }
            Some(Worth::Revalidate {
                fwd,
                validate,
                stale_if_error,
                if_disconnected,
            }) => {
                pending = Some(Pending {
                    if_disconnected,
                    stored: stored.to_stored(),
                    meta: meta.clone(),
                    fwd,
                    validate: validate && !head,
                    stale_if_error,
                });
            }
            None => {}
        }
    }
    Box::pin(load(shared, inner, request, pending)).await
}

/// What to do with a stored part for a request.
enum PartPlan {
    /// It holds the one range the request asks for (or the range is
    /// unsatisfiable): served from it.
    Serve,
    /// It lacks `missing`, one span next to it, of a representation of
    /// `len` bytes: asked of the origin, then combined with it.
    Complete { missing: Span, len: u64 },
    /// Neither: the request goes to the origin as if nothing were stored.
    Miss,
}

fn part_plan(part: &CachedResponse, request: &HeaderMap) -> PartPlan {
    let Some((Some(have), len)) = stored_span(part) else {
        return PartPlan::Miss;
    };
    let wanted = match wanted_span(part, len, request) {
        Some(Some(wanted)) if have.contains(wanted) => return PartPlan::Serve,
        Some(None) => return PartPlan::Serve,
        Some(Some(wanted)) => wanted,
        // The whole representation.
        None => Span {
            first: 0,
            last: len - 1,
        },
    };
    // Parts are combined only under one strong validator.
    match range::missing(have, wanted) {
        Some(missing) if range::strong_etag(&part.headers).is_some() => PartPlan::Complete { missing, len },
        _ => PartPlan::Miss,
    }
}

/// Completes a stored part: asks the origin for the `missing` span only,
/// on the condition (`If-Range`) that the representation is still the
/// one whose strong `ETag` the part carries. A `206` of that
/// representation that joins the part is combined with it: the new
/// fields win, the part's others stay; the result is stored (as a `200`
/// once it is whole) and answers the request. Anything else (the
/// representation changed, the origin ignored the range) removes the part;
/// a `200` goes to the client as it is, and any other answer makes the
/// client's own request go to the origin unchanged.
async fn complete_part<P, S, ReqB, ResB>(
    shared: Arc<LayerState<P>>,
    inner: S,
    request: Keyed<P::Context, ReqB>,
    part: CachedResponse,
    missing: Span,
    len: u64,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    P: HttpPolicy,
    S: Origin<ReqB, ResB>,
    ReqB: RequestBody,
    ResB: ResponseBody,
{
    let cache = &shared.cache;
    let Keyed {
        parts,
        key,
        context,
        label,
        variant_of,
        ..
    } = request;
    let client = parts.headers.clone();
    let etag = range::strong_etag(&part.headers)
        .and_then(|etag| HeaderValue::from_str(etag).ok())
        .expect("a part is completed only under a strong ETag");
    let mut headers = parts.headers.clone();
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
    ] {
        headers.remove(name);
    }
    headers.insert(header::RANGE, range::range_value(missing, len));
    headers.insert(header::IF_RANGE, etag.clone());
    let rebuild = |headers: HeaderMap| {
        let mut again = Request::new(ReqB::default());
        *again.method_mut() = Method::GET;
        *again.uri_mut() = parts.uri.clone();
        *again.version_mut() = parts.version;
        *again.headers_mut() = headers;
        *again.extensions_mut() = parts.extensions.clone();
        again
    };
    // The completed entry is stored as a load's result: checked against an
    // invalidation that lands while the missing range is fetched. Should
    // another request be loading the whole response already, its store
    // wins and this one stores nothing.
    let options = flight_options(&shared, &context, &parts, variant_of.as_ref());
    let lead = match cache.lead_or_join::<CachedResponse, Uncacheable>(&key, &options) {
        LoadTicket::Lead(lead) => {
            lead.ready().await;
            Some(lead)
        }
        LoadTicket::Join(_) => None,
    };
    let request_time = cache.clock().now();
    let response = shared.origin(label, call_when_ready(inner.clone(), rebuild(headers)).await)?;
    let response_time = cache.clock().now();
    let (head_parts, body) = response.into_parts();
    let joins = head_parts.status == StatusCode::PARTIAL_CONTENT
        && range::strong_etag(&head_parts.headers) == etag.to_str().ok()
        && range::content_range(&head_parts.headers)
            .is_some_and(|(span, whole)| whole == len && span.contains(missing));
    let exchange = Exchange::new(
        &head_parts.headers,
        request_time.as_millis() / 1000,
        response_time.as_millis() / 1000,
    );
    let declared = content_length(&head_parts.headers).or(body.size_hint().exact());
    let storing = joins
        .then(|| {
            let mut storing = shared
                .policy
                .storing(&context, &client, &head_parts, declared, exchange, response_time)
                .ok()?;
            shared.tag_from_response(&mut storing, &head_parts.headers, &options, response_time);
            Some(storing)
        })
        .flatten();
    let Some(storing) = storing else {
        let _ = cache.delete(&key).await;
        if head_parts.status == StatusCode::OK {
            let outcome = CacheOutcome::Miss { stored: false };
            return Ok(passed(
                &shared,
                Response::from_parts(head_parts, body),
                outcome,
                label,
            ));
        }
        drop(body);
        let outcome = CacheOutcome::Miss { stored: false };
        return shared
            .origin(label, call_when_ready(inner, rebuild(client)).await)
            .map(|response| passed(&shared, response, outcome, label));
    };
    let (new_span, _) = range::content_range(&head_parts.headers).expect("checked above");
    let bytes = match Limited::new(body, storing.limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let body = "the origin's answer for the missing range could not be read\n";
            return Ok(shared.answer(
                StatusCode::BAD_GATEWAY,
                body,
                CacheOutcome::Miss { stored: false },
                label,
            ));
        }
    };
    if bytes.len() as u64 != new_span.len() {
        let body = "the origin's answer for the missing range had the wrong length\n";
        let _ = cache.delete(&key).await;
        return Ok(shared.answer(
            StatusCode::BAD_GATEWAY,
            body,
            CacheOutcome::Miss { stored: false },
            label,
        ));
    }
    let combined = combine(part, new_span, bytes, storing.headers, len);
    let mut value = combined;
    value.exchange = storing.exchange;
    let stored = match (&storing.meta, &lead) {
        (Some(meta), Some(_)) => store::put_checked(cache, lead.as_ref(), &key, &value, meta).await,
        _ => false,
    };
    // A part is no answer for whoever waits for the whole: they ask the
    // origin themselves.
    if let Some(lead) = lead {
        lead.complete(Err(Uncacheable::NotStorable));
    }
    let outcome = CacheOutcome::Forwarded {
        fwd: Fwd::Partial,
        status: 206,
        stored,
    };
    let age = value
        .exchange
        .map_or(0, |e| e.current_age(response_time.as_millis() / 1000));
    Ok(serve(&shared, &value, age, &client, false, outcome, label))
}

/// A stored part and a new one of the same representation, as one: the
/// bytes of both (the new ones where they overlap), the new part's fields
/// over the stored part's (RFC 9111 section 3.4); a `200` when they make
/// the whole of its `len` bytes.
fn combine(
    part: CachedResponse,
    new_span: Span,
    new_body: Bytes,
    new_headers: HeaderMap,
    len: u64,
) -> CachedResponse {
    let (old_span, _) = range::content_range(&part.headers).expect("a stored part has a Content-Range");
    let span = Span {
        first: old_span.first.min(new_span.first),
        last: old_span.last.max(new_span.last),
    };
    let mut body = bytes::BytesMut::with_capacity(span.len() as usize);
    // The stored bytes before the new ones, the new ones, the stored ones
    // after them.
    if old_span.first < new_span.first {
        body.extend_from_slice(&part.body[..(new_span.first - old_span.first) as usize]);
    }
    body.extend_from_slice(&new_body);
    if old_span.last > new_span.last {
        body.extend_from_slice(&part.body[(new_span.last + 1 - old_span.first) as usize..]);
    }
    let mut headers = part.headers;
    validation::update_headers(&mut headers, &new_headers);
    let whole = span.first == 0 && span.last + 1 == len;
    let status = if whole {
        headers.remove(header::CONTENT_RANGE);
        StatusCode::OK
    } else {
        headers.insert(header::CONTENT_RANGE, range::content_range_value(span, len));
        StatusCode::PARTIAL_CONTENT
    };
    headers.insert(header::CONTENT_LENGTH, decimal_value(span.len()));
    let mut combined = CachedResponse::new(status, headers, body.freeze());
    combined.request_headers = part.request_headers;
    combined
}

/// A miss, or a stored response to revalidate: asks the origin (once for
/// every request that may share the answer) and stores what may be stored
/// while it streams to the client.
async fn load<P, S, ReqB, ResB>(
    shared: Arc<LayerState<P>>,
    mut inner: S,
    request: Keyed<P::Context, ReqB>,
    mut pending: Option<Pending>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    P: HttpPolicy,
    S: Origin<ReqB, ResB>,
    ReqB: RequestBody,
    ResB: ResponseBody,
{
    let policy = &shared.policy;
    let cache = &shared.cache;
    let (context, head, label) = (&request.context, request.head, request.label);
    if policy.only_if_cached(context) || CacheMode::of(&request.parts) == CacheMode::OnlyIfCached {
        let body = "only-if-cached: nothing usable is stored\n";
        let outcome = CacheOutcome::OnlyIfCached;
        return Ok(shared.answer(StatusCode::GATEWAY_TIMEOUT, body, outcome, label));
    }
    let fwd = pending.as_ref().map_or(Fwd::Miss, |pending| pending.fwd);

    // One origin call for a key, however many requests want it.
    let mut lead = None;
    let mut skip = None;
    if !head && policy.joins_loads(context, &request.parts.headers) {
        let options = flight_options(&shared, context, &request.parts, request.variant_of.as_ref());
        let options = shared.engine_options(&options);
        match cache.lead_or_join::<CachedResponse, Uncacheable>(&request.key, &options) {
            LoadTicket::Lead(ticket) => lead = Some(ticket),
            LoadTicket::Join(join) => match tokio::time::timeout(shared.lock_timeout, join.wait()).await {
                Ok(Ok(value))
                    if value.status != StatusCode::PARTIAL_CONTENT
                        && value.selects(&request.parts.headers) =>
                {
                    let now = cache.clock().now();
                    let age = value
                        .exchange
                        .map_or(0, |e| e.current_age(now.as_millis() / 1000));
                    let headers = &request.parts.headers;
                    return Ok(serve(
                        &shared,
                        &value,
                        age,
                        headers,
                        false,
                        CacheOutcome::Collapsed,
                        label,
                    ));
                }
                // Not storable, or another variant: ask for this one.
                Ok(_) => {}
                Err(_) => skip = Some(LockTimeout),
            },
        }
    }

    // One origin call for a key across instances, when the layer has a
    // distributed lock: taken by the request that leads this process's load
    // of a key missing in every tier.
    let mut hold = None;
    if let Some(lock) = &shared.lock
        && lead.is_some()
        && pending.is_none()
        && policy.takes_distributed_lock(context)
    {
        let headers = &request.parts.headers;
        match distributed::coordinate(&shared, lock.as_ref(), &request.key, context, headers).await {
            Coordinated::Load(taken) => hold = taken,
            Coordinated::Found(entry, age) => {
                let stored = &entry.value().response;
                let response = serve(
                    &shared,
                    stored,
                    age,
                    headers,
                    false,
                    CacheOutcome::Collapsed,
                    label,
                );
                if let Some(lead) = lead {
                    lead.hand_over(entry.value().to_stored());
                }
                return Ok(response);
            }
        }
    }

    // What the response is judged against, kept before the request goes.
    let client = request.parts.headers.clone();
    // What the stored entry is tagged with, when responses bring tags.
    let tag_options = if shared.surrogate.is_some() {
        flight_options(&shared, context, &request.parts, request.variant_of.as_ref())
    } else {
        hitbox_core::EntryOptions::default()
    };
    let Keyed {
        mut parts,
        body,
        key,
        context,
        body_bytes: _,
        ..
    } = request;
    let validating = pending.as_ref().filter(|pending| pending.validate);
    if let Some(pending) = validating {
        validation::add_validators(&mut parts.headers, &pending.stored.headers);
    }
    let retry = validating.map(|_| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.version,
            parts.extensions.clone(),
        )
    });
    // The generations of the load's tags are read before the origin is
    // asked, so that an invalidation racing the origin's answer is seen.
    if let Some(lead) = &lead {
        lead.ready().await;
    }
    let request_time = cache.clock().now();
    let response = match inner.call(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(error) => {
            if let Some(lead) = lead {
                lead.complete(Err(Uncacheable::OriginFailed));
            }
            store::release(hold, LoadEnd::Empty);
            return match pending {
                Some(pending) if pending.stale_if_error.is_some() => {
                    Ok(serve_stale(&shared, pending, None, &client, head, label))
                }
                Some(pending) => match pending.if_disconnected {
                    Disconnected::Serve => Ok(serve_disconnected(&shared, pending, &client, head, label)),
                    Disconnected::Forbidden => Ok(shared.answer(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the origin cannot be reached, and the stored response may not be served stale\n",
                        CacheOutcome::StaleForbidden,
                        label,
                    )),
                    Disconnected::Error => shared.origin(label, Err(error)),
                },
                None => shared.origin(label, Err(error)),
            };
        }
    };
    let response_time = cache.clock().now();
    let (mut head_parts, body) = response.into_parts();
    if head_parts.status.is_server_error()
        && let Some(pending) = pending.take_if(|pending| pending.stale_if_error.is_some())
    {
        if let Some(lead) = lead {
            lead.complete(Err(Uncacheable::OriginFailed));
        }
        store::release(hold, LoadEnd::Empty);
        let status = Some(head_parts.status.as_u16());
        return Ok(serve_stale(&shared, pending, status, &client, head, label));
    }
    let exchange = Exchange::new(
        &head_parts.headers,
        request_time.as_millis() / 1000,
        response_time.as_millis() / 1000,
    );

    if head_parts.status == StatusCode::NOT_MODIFIED
        && let Some(pending) = pending.filter(|pending| pending.validate)
    {
        if validation::selects(&head_parts.headers, &pending.stored.headers) {
            let mut merged = policy.merge(
                &context,
                pending.stored,
                &head_parts.headers,
                exchange,
                &client,
                response_time,
            );
            keep_tags(&mut merged.meta, &pending.meta.tags);
            shared.strip_surrogate(&mut merged.response.headers);
            shared.strip_surrogate(&mut merged.personal);
            let stored = match &merged.meta {
                Some(meta) => store::put_checked(cache, lead.as_ref(), &key, &merged.response, meta).await,
                None => {
                    let _ = cache.delete(&key).await;
                    false
                }
            };
            if let Some(lead) = lead {
                lead.complete(if stored {
                    Ok(merged.response.clone())
                } else {
                    Err(Uncacheable::NotStorable)
                });
            }
            let outcome = CacheOutcome::Forwarded {
                fwd,
                status: 304,
                stored,
            };
            let age = merged
                .response
                .exchange
                .map_or(0, |e| e.current_age(response_time.as_millis() / 1000));
            let mut response = serve(&shared, &merged.response, age, &client, head, outcome, label);
            // The one client whose request refreshed the entry gets what
            // the `304` said to it alone.
            for (name, value) in &merged.personal {
                response.headers_mut().append(name, value.clone());
            }
            return Ok(response);
        }
        // The 304 is for another response than the one stored: ask again
        // without conditions (RFC 9111 4.3.4), unless the client's own
        // conditions were what the origin answered.
        if !validation::is_conditional(&client)
            && let Some((method, uri, version, extensions)) = retry
        {
            drop(lead);
            let mut again = Request::new(ReqB::default());
            *again.method_mut() = method;
            *again.uri_mut() = uri;
            *again.version_mut() = version;
            *again.headers_mut() = client;
            *again.extensions_mut() = extensions;
            let outcome = CacheOutcome::Miss { stored: false };
            return shared
                .origin(label, call_when_ready(inner, again).await)
                .map(|response| passed(&shared, response, outcome, label));
        }
    }

    let declared = content_length(&head_parts.headers).or(body.size_hint().exact());
    let storing = match (skip, head) {
        (Some(LockTimeout), _) => Err(None),
        (None, true) => Err(Some(Skip::Head)),
        (None, false) => policy
            .storing(&context, &client, &head_parts, declared, exchange, response_time)
            .map(|mut storing| {
                shared.tag_from_response(&mut storing, &head_parts.headers, &tag_options, response_time);
                storing
            })
            .map_err(Some),
    };
    let outcome = |stored: bool| match (skip, fwd) {
        (Some(LockTimeout), _) => CacheOutcome::LockTimeout,
        (None, Fwd::Miss) => CacheOutcome::Miss { stored },
        (None, fwd) => CacheOutcome::Forwarded {
            fwd,
            status: head_parts.status.as_u16(),
            stored,
        },
    };
    let plan = storing.and_then(|storing| {
        let store = Store {
            cache: cache.clone(),
            passes: Arc::clone(&shared.passes),
            key: key.clone(),
            lead: lead.take(),
            meta: storing.meta.clone(),
            hold: None,
        };
        // A request that joined a load that stored nothing cannot lead
        // the engine's store: it passes the response on.
        if store.stores() {
            Ok((store, storing))
        } else {
            Err(None)
        }
    });
    let (mut store, storing) = match plan {
        Ok(plan) => plan,
        Err(skip) => {
            // A response the policy refused to store; a `HEAD`'s, which
            // has no body to store, is a plain miss.
            let counted = match skip {
                Some(Skip::Head) | None => None,
                Some(_) => Some(Outcome::Uncacheable),
            };
            if let Some(skip) = skip {
                tracing::debug!(key = %key.log_id(), ?skip, "response not stored");
                if shared.policy.remembers(skip) {
                    shared.passes.remember(&key);
                }
            }
            if let Some(lead) = lead {
                lead.complete(Err(Uncacheable::NotStorable));
            }
            store::release(hold, LoadEnd::Empty);
            let outcome = outcome(false);
            let response = Response::from_parts(head_parts, body);
            return Ok(match counted {
                Some(counted) => passed_as(&shared, response, outcome, label, counted),
                None => passed(&shared, response, outcome, label),
            });
        }
    };
    store.hold = hold;
    let names = vary::vary_names(&head_parts.headers).unwrap_or_default();
    // `stored` only when it is sure: a length known up front, within the
    // limit, and no predicate left to judge the body. A body of unknown
    // length may still outgrow the limit.
    let sure = declared.is_some() && storing.accept.is_none();
    let tee = Tee {
        store,
        status: head_parts.status,
        headers: storing.headers,
        request_headers: vary::selecting_headers(&names, &client),
        exchange: storing.exchange,
        chunks: Vec::new(),
        size: 0,
        limit: storing.limit,
        accept: storing.accept,
    };
    let outcome = outcome(sure);
    shared.for_client(&mut head_parts.headers, true);
    shared.decorate(&mut head_parts.headers, outcome);
    shared.count(label, outcome.counted(), Some(head_parts.status));
    Ok(Response::from_parts(head_parts, tee.fill(body)))
}

/// The options of a load's single-flight (the policy's), with the tag of
/// the primary key's variants when the request's key is a variant's and
/// the policy tags them ([`HttpPolicy::tags_variants`]).
fn flight_options<P: HttpPolicy>(
    shared: &LayerState<P>,
    context: &P::Context,
    parts: &request::Parts,
    variant_of: Option<&CacheKey>,
) -> hitbox_core::EntryOptions {
    let options = shared.policy.flight_options(context, parts);
    match variant_of {
        Some(primary) if shared.policy.tags_variants() => options.tag(crate::purge::variants_tag(primary)),
        _ => options,
    }
}

/// A request that gave up waiting for another's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LockTimeout;

/// A response from the origin passed on as it is, with `outcome`
/// (counted under `label`).
fn passed<P: HttpPolicy, B: Body>(
    shared: &LayerState<P>,
    response: Response<B>,
    outcome: CacheOutcome,
    label: usize,
) -> Response<CacheBody<B>> {
    passed_as(shared, response, outcome, label, outcome.counted())
}

/// [`passed`], counted as `counted` rather than as what `outcome` says.
fn passed_as<P: HttpPolicy, B: Body>(
    shared: &LayerState<P>,
    response: Response<B>,
    outcome: CacheOutcome,
    label: usize,
    counted: Outcome,
) -> Response<CacheBody<B>> {
    let (mut head, body) = response.into_parts();
    shared.for_client(&mut head.headers, true);
    shared.decorate(&mut head.headers, outcome);
    shared.count(label, counted, Some(head.status));
    Response::from_parts(head, CacheBody::origin(body))
}

/// The stale response, standing in for an origin that failed (`status`, a
/// `5xx`, when it answered).
fn serve_stale<P: HttpPolicy, B: Body>(
    shared: &LayerState<P>,
    pending: Pending,
    status: Option<u16>,
    client: &HeaderMap,
    head: bool,
    label: usize,
) -> Response<CacheBody<B>> {
    let now = shared.cache.clock().now();
    let age = age_of(&pending.stored, &pending.meta, now);
    let stale_for = pending.stale_if_error.unwrap_or(0);
    let outcome = CacheOutcome::StaleIfError { stale_for, status };
    serve(shared, &pending.stored, age, client, head, outcome, label)
}

/// The stale response, standing in for an origin that cannot be reached
/// (RFC 9111 section 4.2.4), within the grace window.
fn serve_disconnected<P: HttpPolicy, B: Body>(
    shared: &LayerState<P>,
    pending: Pending,
    client: &HeaderMap,
    head: bool,
    label: usize,
) -> Response<CacheBody<B>> {
    let now = shared.cache.clock().now();
    let age = age_of(&pending.stored, &pending.meta, now);
    let stale_for = now.since(pending.meta.fresh_until).as_secs();
    let outcome = CacheOutcome::StaleIfDisconnected { stale_for };
    serve(shared, &pending.stored, age, client, head, outcome, label)
}

/// Keeps the tags of the entry a `304` refreshed (those its response
/// brought, surrogate keys, above all: the `304` need not repeat them) in
/// the metadata of the merged entry.
fn keep_tags(meta: &mut Option<EntryMeta>, stored: &[Tag]) {
    if let Some(meta) = meta {
        for tag in stored {
            if !meta.tags.contains(tag) {
                meta.tags.push(tag.clone());
            }
        }
    }
}

/// Refreshes a stale entry in the background (at most once at a time per
/// key) with a request rebuilt from the original: its head (`GET` for a
/// `HEAD`), the body it was keyed by, if any, and the stored validators
/// where the policy uses them. No client waits for it, so what the origin
/// says to one client alone is dropped.
fn refresh_in_background<P, S, ReqB, ResB>(
    shared: &Arc<LayerState<P>>,
    original: &Keyed<P::Context, ReqB>,
    stored: CachedResponse,
    stored_tags: Vec<Tag>,
    inner: S,
) where
    P: HttpPolicy,
    S: Origin<ReqB, ResB>,
    ReqB: RequestBody,
    ResB: ResponseBody,
{
    let parts = &original.parts;
    let body = original.body_bytes.clone();
    let mut request = Request::new(body.map_or_else(ReqB::default, ReqB::from));
    *request.method_mut() = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    let mut headers = parts.headers.clone();
    // The refresh is of the whole response, whatever part the client wanted.
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
    let validate = shared.policy.uses_validators();
    if validate {
        validation::add_validators(&mut headers, &stored.headers);
    }
    *request.headers_mut() = headers;
    // Routers keep what they matched (path parameters) in extensions.
    *request.extensions_mut() = parts.extensions.clone();
    let client = parts.headers.clone();
    let (shared_for_load, key, context) =
        (Arc::clone(shared), original.key.clone(), original.context.clone());
    let options = flight_options(shared, &context, parts, original.variant_of.as_ref());
    let engine_options = shared.engine_options(&options);
    shared
        .cache
        .refresh_in_background_with(&original.key, &engine_options, move |refresh| async move {
            let shared = shared_for_load;
            let (policy, cache) = (&shared.policy, &shared.cache);
            let request_time = cache.clock().now();
            let response = call_when_ready(inner, request)
                .await
                .map_err(|_| Uncacheable::OriginFailed)?;
            let now = cache.clock().now();
            let (head, body) = response.into_parts();
            let exchange = Exchange::new(
                &head.headers,
                request_time.as_millis() / 1000,
                now.as_millis() / 1000,
            );
            if validate && head.status == StatusCode::NOT_MODIFIED {
                if !validation::selects(&head.headers, &stored.headers) {
                    return Err(Uncacheable::NotStorable);
                }
                let mut merged = policy.merge(&context, stored, &head.headers, exchange, &client, now);
                keep_tags(&mut merged.meta, &stored_tags);
                shared.strip_surrogate(&mut merged.response.headers);
                return match &merged.meta {
                    Some(meta) if store::put_refreshed(&refresh, &key, &merged.response, meta).await => {
                        Ok(merged.response)
                    }
                    _ => {
                        let _ = cache.delete(&key).await;
                        Err(Uncacheable::NotStorable)
                    }
                };
            }
            let declared = content_length(&head.headers).or(body.size_hint().exact());
            let mut storing = policy
                .storing(&context, &client, &head, declared, exchange, now)
                .map_err(|_| Uncacheable::NotStorable)?;
            shared.tag_from_response(&mut storing, &head.headers, &options, now);
            let body = Limited::new(body, storing.limit)
                .collect()
                .await
                .map_err(|_| Uncacheable::TooLarge)?
                .to_bytes();
            if let Some(accept) = &storing.accept
                && !accept.check(&ReadBody::new(body.clone()))
            {
                return Err(Uncacheable::BodyRefused);
            }
            let names = vary::vary_names(&head.headers).unwrap_or_default();
            let mut value = CachedResponse::new(head.status, storing.headers, body);
            value.request_headers = vary::selecting_headers(&names, &client);
            value.exchange = storing.exchange;
            if let Some(meta) = &storing.meta {
                store::put_refreshed(&refresh, &key, &value, meta).await;
            }
            Ok(value)
        });
}
