//! The request flow of standards mode: the I/O around the pure rules of
//! [`crate::rfc9111`].
//!
//! 0. The request is made what the origin will see: hop-by-hop fields, and
//!    those `Connection` names, are removed before anything is keyed. A
//!    request whose `Host` is ambiguous (repeated, malformed, or at odds
//!    with an absolute-form target) is refused with `400`. A `GET` or `HEAD`
//!    with a body is forwarded without the cache (`detail=request-body`).
//! 1. An unsafe method is forwarded; when it succeeds, the stored responses
//!    for its target, `Location` and `Content-Location` are invalidated
//!    (every variant: they share a tag).
//! 2. `GET` and `HEAD` look up the URL: its `Vary` marker, if any, names the
//!    request fields that select the variant to read. A stored response
//!    is served when the verdict allows it (fresh, or stale within what
//!    `max-stale` or `stale-while-revalidate` allow), answering the client's
//!    own conditional request with `304` when it matches.
//! 3. Otherwise the origin is asked, with the stored validators when there
//!    are some. A `304` refreshes the stored response; a storable response
//!    streams to the client while a task reads it into the cache at the
//!    origin's pace; `only-if-cached` gets a `504` instead. Plain requests
//!    (no conditions, no `no-cache`) for one variant share one origin call
//!    (single-flight), a miss or a revalidation alike; a request waits for
//!    another's call at most the lock timeout.
//! 4. An origin error or `5xx` is answered with the stale response where
//!    `stale-if-error` allows it.
//!
//! What is stored is shared: `Set-Cookie`, and the fields a qualified
//! `no-cache` or `private` names, are kept out of every stored response
//! and every `304` merged into one. Only the client whose request reached
//! the origin receives them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hitbox_backend::{BoxError, LoadTicket};
use hitbox_core::{CacheKey, EntryMeta, EntryOptions, KeyBuilder, Tag, Timestamp};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version, request};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower_service::Service;

use crate::body::{CacheBody, MarkerChange, RfcStore, Tee, Uncacheable};
use crate::headers::{CacheOutcome, strip_hop_by_hop};
use crate::layer::Shared;
use crate::response::{CachedResponse, VaryMarker};
use crate::rfc9111::directives::CacheControl;
use crate::rfc9111::freshness::{self, Exchange, StoredView, Verdict};
use crate::rfc9111::storage::NotStorable;
use crate::rfc9111::{Rfc9111, host, invalidation, storage, validation, vary};
use crate::service::{call_when_ready, content_length, forward, has_body};

/// The version of standards mode's keys. Version 2 began when stored
/// responses stopped carrying `Set-Cookie`: entries written before are
/// never read.
const KEY_VERSION: u32 = 2;

fn secs(time: Timestamp) -> u64 {
    time.as_millis() / 1000
}

/// The start of every key for a URL: its host and target, and the request
/// fields configured with [`Rfc9111::key_field`].
fn url_builder(config: &Rfc9111, host: &str, path: &str, request: &HeaderMap) -> KeyBuilder {
    let mut key = KeyBuilder::new("rfc9111").version(KEY_VERSION);
    key.push("host", Some(host.as_bytes()));
    key.push("target", Some(path.as_bytes()));
    for name in &config.key_fields {
        key.push_prefixed(
            "field:",
            name.as_str().as_bytes(),
            vary::normalised(request, name).as_deref(),
        );
    }
    key
}

fn marker_key(config: &Rfc9111, host: &str, path: &str, request: &HeaderMap) -> CacheKey {
    let mut key = url_builder(config, host, path, request);
    key.push("vary", None);
    key.build()
}

fn response_key(
    config: &Rfc9111,
    host: &str,
    path: &str,
    names: &[http::HeaderName],
    request: &HeaderMap,
) -> CacheKey {
    let mut key = url_builder(config, host, path, request);
    for name in names {
        key.push(name.as_str(), vary::normalised(request, name).as_deref());
    }
    key.build()
}

/// The tag every entry of a URL carries, so invalidation reaches all its
/// variants.
fn url_tag(host: &str, path: &str) -> Tag {
    use blake2::{Blake2b, Digest, digest::consts::U16};
    let mut hasher = Blake2b::<U16>::new();
    hasher.update(host.as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    Tag::new(format!("rfc9111:{}", hex::encode(hasher.finalize())))
}

async fn invalidate(shared: &Shared, config: &Rfc9111, host: &str, path: &str, request: &HeaderMap) {
    let cache = &shared.cache;
    let _ = cache.delete(&marker_key(config, host, path, request)).await;
    let _ = cache
        .delete(&response_key(config, host, path, &[], request))
        .await;
    let _ = cache.invalidate_tag(&url_tag(host, path)).await;
}

/// The response headers a client sees: no hop-by-hop fields, no fields
/// meant for this cache only.
pub(crate) fn client_headers(config: &Rfc9111, headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    config.strip_targeted(headers);
}

/// Options for a single-flight whose value the engine must not store:
/// standards mode stores it itself, with the lifetime its headers give.
fn flight_options(tag: Tag) -> EntryOptions {
    EntryOptions::new()
        .ttl(Duration::ZERO)
        .stale_while_revalidate(Duration::ZERO)
        .stale_if_error(Duration::ZERO)
        .tag(tag)
}

/// What the lookup found for a request.
struct Found {
    key: CacheKey,
    marker: Option<Vec<http::HeaderName>>,
    stored: Option<CachedResponse>,
}

async fn lookup(shared: &Shared, config: &Rfc9111, host: &str, path: &str, request: &HeaderMap) -> Found {
    let cache = &shared.cache;
    let marker = cache
        .get_entry::<VaryMarker>(&marker_key(config, host, path, request))
        .await
        .map(|entry| entry.value.names);
    let key = response_key(config, host, path, marker.as_deref().unwrap_or(&[]), request);
    let stored = cache
        .get_entry::<CachedResponse>(&key)
        .await
        .map(|entry| entry.value)
        .filter(|value| value.exchange.is_some() && selected_by(value, request));
    Found { key, marker, stored }
}

/// Whether a stored response may answer a request, by its `Vary`.
fn selected_by(stored: &CachedResponse, request: &HeaderMap) -> bool {
    vary::vary_names(&stored.headers)
        .is_some_and(|names| vary::matches(&names, &stored.request_headers, request))
}

/// A stored response for the client: `304` when the client's own
/// conditional request matches, else the whole response.
fn serve<B: Body>(
    shared: &Shared,
    config: &Rfc9111,
    mut stored: CachedResponse,
    now: u64,
    request: &request::Parts,
    outcome: CacheOutcome,
) -> Response<CacheBody<B>> {
    let age = stored.exchange.map_or(0, |exchange| exchange.current_age(now));
    client_headers(config, &mut stored.headers);
    if validation::is_conditional(&request.headers)
        && validation::not_modified(&request.headers, &stored.headers)
    {
        let mut response = Response::new(CacheBody::stored(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = validation::not_modified_headers(&stored.headers);
        response.headers_mut().insert(header::AGE, HeaderValue::from(age));
        shared.decorate(response.headers_mut(), outcome);
        return response;
    }
    shared.serve(stored, age, request.method == Method::HEAD, outcome)
}

/// A response the cache makes itself, without asking the origin.
fn answer<B: Body>(
    shared: &Shared,
    status: StatusCode,
    body: &'static str,
    outcome: CacheOutcome,
) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::stored(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    shared.decorate(response.headers_mut(), outcome);
    response
}

/// The metadata a response is stored with: fresh for what is left of its
/// lifetime, then kept for its stale windows (and, with validators, for
/// revalidation), tagged with its URL.
fn entry_meta(
    config: &Rfc9111,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    exchange: &Exchange,
    now: Timestamp,
    tag: Tag,
) -> EntryMeta {
    let lifetime = freshness::freshness_lifetime(status, headers, cc, exchange, config).secs;
    let left = lifetime.saturating_sub(exchange.corrected_initial_age());
    let fresh_until = now.add(Duration::from_secs(left));
    let strict = freshness::forbids_stale(cc);
    let swr = if strict {
        0
    } else {
        cc.stale_while_revalidate.unwrap_or(0)
    };
    let mut keep = if strict { 0 } else { cc.stale_if_error.unwrap_or(0) };
    if validation::has_validator(headers) {
        keep = keep.max(config.keep_stale.as_secs());
    }
    // A request may accept any staleness (`max-stale`): keep stale entries
    // a little while even without validators, within the same bound.
    keep = keep.max(swr);
    EntryMeta {
        stored_at: now,
        fresh_until,
        stale_until: fresh_until.add(Duration::from_secs(swr)),
        error_until: fresh_until.add(Duration::from_secs(keep)),
        tags: vec![tag],
    }
}

/// Whether a response may be stored for a request, by the RFC and by this
/// cache's configuration.
fn storable(
    config: &Rfc9111,
    request: &HeaderMap,
    request_cc: &CacheControl,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
) -> Result<(), NotStorable> {
    storage::check_storable(&Method::GET, request, request_cc, status, headers, cc)?;
    if config.refuse_set_cookie && storage::has_personal_fields(headers, cc) {
        return Err(NotStorable::PersonalFields);
    }
    Ok(())
}

/// Rebuilds a request to the origin from a head and a body.
fn rebuild<ReqB>(
    method: Method,
    uri: &Uri,
    version: Version,
    headers: HeaderMap,
    extensions: &http::Extensions,
    body: ReqB,
) -> Request<ReqB> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri.clone();
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    *request.extensions_mut() = extensions.clone();
    request
}

/// Why a response from the origin is passed on without being stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// The RFC or the configuration forbids storing it.
    NotStorable(NotStorable),
    /// A `HEAD` response has no body to store.
    Head,
    /// Its declared length is over the limit.
    TooLarge,
    /// It would be stale at once.
    Stale,
    /// This request gave up waiting for another's load of the same key.
    LockTimeout,
}

pub(crate) async fn handle<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<ReqB>,
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
    let config = shared.rfc.as_ref().expect("standards mode");
    let (mut parts, body) = request.into_parts();
    // Keyed as the origin will see it: what the hop to this cache carried
    // never selects a response.
    strip_hop_by_hop(&mut parts.headers);
    let host = match host::request_host(&parts.headers, &parts.uri) {
        Ok(host) => host,
        Err(error) => {
            let outcome = CacheOutcome::Rejected {
                detail: error.as_str(),
            };
            return Ok(answer(
                &shared,
                StatusCode::BAD_REQUEST,
                "the Host of this request is ambiguous\n",
                outcome,
            ));
        }
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let cache = shared.cache.clone();

    if invalidation::is_unsafe(&parts.method) {
        let method = parts.method.clone();
        let request_headers = parts.headers.clone();
        let response = inner.call(Request::from_parts(parts, body)).await?;
        let (mut head, body) = response.into_parts();
        for (host, path) in invalidation::targets(&method, head.status, &host, &path, &head.headers) {
            invalidate(&shared, config, &host, &path, &request_headers).await;
        }
        client_headers(config, &mut head.headers);
        let outcome = CacheOutcome::Bypass {
            detail: Some("method"),
        };
        shared.decorate(&mut head.headers, outcome);
        return Ok(Response::from_parts(head, CacheBody::origin(body)));
    }
    // A body on a `GET` means nothing the key could capture: whatever the
    // origin makes of it must not be stored for requests without it.
    let bypass = if parts.method != Method::GET && parts.method != Method::HEAD {
        Some("method")
    } else if has_body(&body) {
        Some("request-body")
    } else {
        None
    };
    if let Some(detail) = bypass {
        let outcome = CacheOutcome::Bypass { detail: Some(detail) };
        return forward(shared, inner, Request::from_parts(parts, body), outcome).await;
    }

    let is_head = parts.method == Method::HEAD;
    let request_cc = CacheControl::from_headers(&parts.headers, "cache-control");
    let now = cache.clock().now();
    let found = lookup(&shared, config, &host, &path, &parts.headers).await;
    let mut stale_if_error = None;
    let mut fwd = "miss";
    if let Some(stored) = &found.stored {
        let cc = config.response_cache_control(&stored.headers);
        let exchange = stored.exchange.expect("looked up with an exchange");
        let view = StoredView {
            status: stored.status,
            headers: &stored.headers,
            cc: &cc,
            exchange: &exchange,
        };
        match freshness::verdict(view, &request_cc, secs(now), config) {
            Verdict::Serve { ttl } => {
                let outcome = if ttl > 0 {
                    CacheOutcome::Hit { ttl: ttl as u64 }
                } else {
                    CacheOutcome::StaleAllowed {
                        stale_for: ttl.unsigned_abs(),
                    }
                };
                return Ok(serve(&shared, config, stored.clone(), secs(now), &parts, outcome));
            }
            Verdict::ServeStaleAndRevalidate { stale_for } => {
                revalidate_in_background(&shared, inner, &parts, &found, stored.clone(), &host, &path);
                let outcome = CacheOutcome::StaleWhileRevalidate { stale_for };
                return Ok(serve(&shared, config, stored.clone(), secs(now), &parts, outcome));
            }
            Verdict::Revalidate {
                stale_if_error: allowed,
                stale_for,
            } => {
                if allowed {
                    stale_if_error = Some(stale_for);
                }
                fwd = if request_cc.no_cache.is_some() || request_cc.max_age.is_some() {
                    "request"
                } else {
                    "stale"
                };
            }
        }
    }
    if request_cc.only_if_cached {
        let body = "only-if-cached: nothing usable is stored\n";
        return Ok(answer(
            &shared,
            StatusCode::GATEWAY_TIMEOUT,
            body,
            CacheOutcome::OnlyIfCached,
        ));
    }
    let serve_stale = |stored: CachedResponse, stale_for: u64, status: Option<u16>| {
        let outcome = CacheOutcome::StaleIfError { stale_for, status };
        serve(
            &shared,
            config,
            stored,
            secs(cache.clock().now()),
            &parts,
            outcome,
        )
    };

    // The client's request as it came: what `Vary` selects on, what its
    // own conditions are evaluated against.
    let client = parts.headers.clone();
    let revalidating = found
        .stored
        .clone()
        .filter(|stored| !is_head && validation::has_validator(&stored.headers));
    let mut origin_headers = parts.headers.clone();
    if let Some(stored) = &revalidating {
        validation::add_validators(&mut origin_headers, &stored.headers);
    }
    let tag = url_tag(&host, &path);

    // One origin call for a URL nothing (usable) is stored for.
    let mut lead = None;
    let mut skip = None;
    let plain = !is_head
        && !validation::is_conditional(&client)
        && request_cc.no_cache.is_none()
        && !request_cc.no_store
        && !shared.is_uncacheable(&found.key);
    if plain {
        match cache.lead_or_join::<CachedResponse, Uncacheable>(&found.key, &flight_options(tag.clone())) {
            LoadTicket::Lead(ticket) => lead = Some(ticket),
            LoadTicket::Join(join) => match tokio::time::timeout(shared.lock_timeout, join.wait()).await {
                Ok(Ok(value)) if selected_by(&value, &client) => {
                    let now = secs(cache.clock().now());
                    return Ok(serve(
                        &shared,
                        config,
                        value,
                        now,
                        &parts,
                        CacheOutcome::Collapsed,
                    ));
                }
                // Not storable, or another variant: ask for this one.
                Ok(_) => {}
                Err(_) => skip = Some(Skip::LockTimeout),
            },
        }
    }

    let request_time = secs(cache.clock().now());
    let method = parts.method.clone();
    let (uri, version, extensions) = (parts.uri.clone(), parts.version, parts.extensions.clone());
    let origin_request = rebuild(method.clone(), &uri, version, origin_headers, &extensions, body);
    let response = match inner.call(origin_request).await {
        Ok(response) => response,
        Err(error) => {
            if let Some(lead) = lead {
                lead.complete(Err(Uncacheable::OriginFailed));
            }
            return match (found.stored, stale_if_error) {
                (Some(stored), Some(stale_for)) => Ok(serve_stale(stored, stale_for, None)),
                _ => Err(error),
            };
        }
    };
    let response_time = secs(cache.clock().now());
    let (mut head, body) = response.into_parts();
    if head.status.is_server_error()
        && let (Some(stored), Some(stale_for)) = (&found.stored, stale_if_error)
    {
        if let Some(lead) = lead {
            lead.complete(Err(Uncacheable::OriginFailed));
        }
        return Ok(serve_stale(stored.clone(), stale_for, Some(head.status.as_u16())));
    }

    if head.status == StatusCode::NOT_MODIFIED
        && let Some(stored) = revalidating
    {
        if validation::selects(&head.headers, &stored.headers) {
            let exchange = Exchange::new(&head.headers, request_time, response_time);
            let update = Update {
                exchange,
                request: &client,
                request_cc: &request_cc,
                key: &found.key,
                tag,
            };
            let (updated, stored, personal) =
                revalidated(&shared, config, stored, &head.headers, update).await;
            if let Some(lead) = lead {
                lead.complete(if stored {
                    Ok(updated.clone())
                } else {
                    Err(Uncacheable::NotStorable)
                });
            }
            let outcome = CacheOutcome::Forwarded {
                fwd,
                status: 304,
                stored,
            };
            let mut response = serve(&shared, config, updated, response_time, &parts, outcome);
            // The one client whose request refreshed the entry gets what
            // the `304` said to it alone.
            for (name, value) in &personal {
                response.headers_mut().append(name, value.clone());
            }
            return Ok(response);
        }
        // The 304 is for another response than the one stored: ask again
        // without conditions (section 4.3.4), unless the client's own
        // conditions were what the origin answered.
        if !validation::is_conditional(&client) {
            let retry = rebuild(
                method,
                &uri,
                version,
                client.clone(),
                &extensions,
                ReqB::default(),
            );
            let response = call_when_ready(inner, retry).await?;
            let (mut head, body) = response.into_parts();
            client_headers(config, &mut head.headers);
            shared.decorate(&mut head.headers, CacheOutcome::Miss { stored: false });
            return Ok(Response::from_parts(head, CacheBody::origin(body)));
        }
    }

    let cc = config.response_cache_control(&head.headers);
    let declared = content_length(&head.headers).or(body.size_hint().exact());
    let exchange = Exchange::new(&head.headers, request_time, response_time);
    let meta = entry_meta(
        config,
        head.status,
        &head.headers,
        &cc,
        &exchange,
        cache.clock().now(),
        tag,
    );
    let skip = skip
        .or(is_head.then_some(Skip::Head))
        .or_else(|| {
            storable(config, &client, &request_cc, head.status, &head.headers, &cc)
                .err()
                .map(Skip::NotStorable)
        })
        .or(declared
            .is_some_and(|len| len > config.max_body_size as u64)
            .then_some(Skip::TooLarge))
        .or((meta.expires_at() <= meta.stored_at).then_some(Skip::Stale));
    let outcome = |stored| match (skip, fwd) {
        (Some(Skip::LockTimeout), _) => CacheOutcome::LockTimeout,
        (_, "miss") => CacheOutcome::Miss { stored },
        (_, fwd) => CacheOutcome::Forwarded {
            fwd,
            status: head.status.as_u16(),
            stored,
        },
    };
    if let Some(skip) = skip {
        tracing::debug!(?skip, "response not stored");
        if let Some(lead) = lead {
            lead.complete(Err(Uncacheable::NotStorable));
        }
        let outcome = outcome(false);
        client_headers(config, &mut head.headers);
        shared.decorate(&mut head.headers, outcome);
        return Ok(Response::from_parts(head, CacheBody::origin(body)));
    }

    let names = vary::vary_names(&head.headers).unwrap_or_default();
    let store_key = response_key(config, &host, &path, &names, &client);
    let marker = match (&found.marker, names.is_empty()) {
        (Some(old), false) if *old == names => MarkerChange::Keep,
        (_, false) => MarkerChange::Set(
            marker_key(config, &host, &path, &client),
            VaryMarker { names: names.clone() },
        ),
        (Some(_), true) => MarkerChange::Delete(marker_key(config, &host, &path, &client)),
        (None, true) => MarkerChange::Keep,
    };
    let mut stored_headers = head.headers.clone();
    strip_hop_by_hop(&mut stored_headers);
    storage::take_personal_fields(&mut stored_headers, &cc);
    stored_headers.remove("cache-status");
    let tee = Tee {
        lead,
        rfc: Some(RfcStore {
            meta,
            exchange,
            marker,
        }),
        status: head.status,
        headers: stored_headers,
        request_headers: vary::selecting_headers(&names, &client),
        chunks: Vec::new(),
        size: 0,
        limit: config.max_body_size,
        shared: Arc::clone(&shared),
        key: store_key,
    };
    // `stored` only when it is sure: a length known up front, within the
    // limit. A body of unknown length may still outgrow it.
    let outcome = outcome(declared.is_some());
    client_headers(config, &mut head.headers);
    shared.decorate(&mut head.headers, outcome);
    Ok(Response::from_parts(head, tee.fill(body)))
}

/// What a revalidation refreshes, and for which request.
struct Update<'a> {
    exchange: Exchange,
    request: &'a HeaderMap,
    request_cc: &'a CacheControl,
    key: &'a CacheKey,
    tag: Tag,
}

/// Applies a `304` to a stored response (RFC 9111 3.2) and stores the
/// result under the key if it may still be stored; otherwise the stored
/// response is removed (a `304` may have turned it `private` or
/// `no-store`). Returns the merged response, whether it was stored, and the
/// fields the `304` meant for the requesting client alone, which never
/// enter the stored headers.
async fn revalidated(
    shared: &Shared,
    config: &Rfc9111,
    mut stored: CachedResponse,
    not_modified: &HeaderMap,
    update: Update<'_>,
) -> (CachedResponse, bool, HeaderMap) {
    validation::update_headers(&mut stored.headers, not_modified);
    let cc = config.response_cache_control(&stored.headers);
    let personal = storage::take_personal_fields(&mut stored.headers, &cc);
    stored.exchange = Some(update.exchange);
    let now = shared.cache.clock().now();
    let meta = entry_meta(
        config,
        stored.status,
        &stored.headers,
        &cc,
        &update.exchange,
        now,
        update.tag,
    );
    // The merged response is judged as if it had just arrived.
    let mut verdict = storable(
        config,
        update.request,
        update.request_cc,
        stored.status,
        &stored.headers,
        &cc,
    );
    if verdict.is_ok() && config.refuse_set_cookie && !personal.is_empty() {
        verdict = Err(NotStorable::PersonalFields);
    }
    if verdict.is_ok() && meta.expires_at() > meta.stored_at {
        if let Err(error) = shared.cache.set_entry(update.key, &stored, &meta).await {
            tracing::debug!(%error, "revalidated response not stored");
            return (stored, false, personal);
        }
        return (stored, true, personal);
    }
    tracing::debug!(?verdict, "revalidated response no longer stored");
    let _ = shared.cache.delete(update.key).await;
    (stored, false, personal)
}

/// Revalidates a stored response in the background (stale-while-revalidate),
/// at most once at a time per key. No client waits for it, so what the
/// origin says to one client alone is dropped.
fn revalidate_in_background<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    inner: S,
    parts: &request::Parts,
    found: &Found,
    stored: CachedResponse,
    host: &str,
    path: &str,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    ReqB: From<Bytes> + Default + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let mut headers = parts.headers.clone();
    validation::add_validators(&mut headers, &stored.headers);
    let request = rebuild(
        Method::GET,
        &parts.uri,
        parts.version,
        headers,
        &parts.extensions,
        ReqB::default(),
    );
    let tag = url_tag(host, path);
    let (shared_for_load, key) = (Arc::clone(shared), found.key.clone());
    let client = parts.headers.clone();
    shared
        .cache
        .refresh_in_background(&found.key, &flight_options(tag.clone()), move || async move {
            let shared = shared_for_load;
            let config = shared.rfc.as_ref().expect("standards mode");
            let request_cc = CacheControl::from_headers(&client, "cache-control");
            let request_time = secs(shared.cache.clock().now());
            let response = call_when_ready(inner, request)
                .await
                .map_err(|_| Uncacheable::OriginFailed)?;
            let response_time = secs(shared.cache.clock().now());
            let (head, body) = response.into_parts();
            let exchange = Exchange::new(&head.headers, request_time, response_time);
            if head.status == StatusCode::NOT_MODIFIED {
                if !validation::selects(&head.headers, &stored.headers) {
                    return Err(Uncacheable::NotStorable);
                }
                let update = Update {
                    exchange,
                    request: &client,
                    request_cc: &request_cc,
                    key: &key,
                    tag,
                };
                return match revalidated(&shared, config, stored, &head.headers, update).await {
                    (updated, true, _) => Ok(updated),
                    _ => Err(Uncacheable::NotStorable),
                };
            }
            let cc = config.response_cache_control(&head.headers);
            let names = vary::vary_names(&head.headers).ok_or(Uncacheable::NotStorable)?;
            if storable(config, &client, &request_cc, head.status, &head.headers, &cc).is_err()
                || vary::vary_names(&stored.headers).as_ref() != Some(&names)
            {
                return Err(Uncacheable::NotStorable);
            }
            let body = Limited::new(body, config.max_body_size)
                .collect()
                .await
                .map_err(|_| Uncacheable::TooLarge)?
                .to_bytes();
            let now = shared.cache.clock().now();
            let meta = entry_meta(config, head.status, &head.headers, &cc, &exchange, now, tag);
            let mut headers = head.headers;
            strip_hop_by_hop(&mut headers);
            storage::take_personal_fields(&mut headers, &cc);
            headers.remove("cache-status");
            let store = RfcStore {
                meta,
                exchange,
                marker: MarkerChange::Keep,
            };
            let mut value = CachedResponse::new(head.status, headers, body);
            value.request_headers = vary::selecting_headers(&names, &client);
            Ok(store.store(&shared, &key, value).await)
        });
}
