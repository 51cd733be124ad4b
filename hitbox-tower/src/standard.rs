//! The request flow of standards mode: the I/O around the pure rules of
//! [`crate::rfc9111`].
//!
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
//!    streams to the client through the tee that stores it; `only-if-cached`
//!    gets a `504` instead. Plain requests (no conditions, no `no-cache`)
//!    for one variant share one origin call (single-flight), a miss or a
//!    revalidation alike.
//! 4. An origin error or `5xx` is answered with the stale response where
//!    `stale-if-error` allows it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hitbox_backend::{BoxError, CachedEntry, LoadTicket};
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
use crate::rfc9111::{Rfc9111, invalidation, storage, validation, vary};
use crate::service::{call_when_ready, content_length};

fn secs(time: Timestamp) -> u64 {
    time.as_millis() / 1000
}

/// The URL a request is for: its host (the `Host` header, else the URI's
/// authority) and its path and query, exactly as sent.
fn target(parts: &request::Parts) -> (String, String) {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    (host, path)
}

/// The start of every key for a URL: its host and target, and the request
/// fields configured with [`Rfc9111::key_field`].
fn url_builder(config: &Rfc9111, host: &str, path: &str, request: &HeaderMap) -> KeyBuilder {
    let mut key = KeyBuilder::new("rfc9111");
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
fn client_headers(config: &Rfc9111, headers: &mut HeaderMap) {
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
        .map(|entry: CachedEntry<CachedResponse>| entry.value)
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
fn serve<B>(
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

fn gateway_timeout<B>(shared: &Shared) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::stored(Bytes::from_static(
        b"only-if-cached: nothing usable is stored\n",
    )));
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    shared.decorate(response.headers_mut(), CacheOutcome::OnlyIfCached);
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
    ResB::Error: Into<BoxError>,
{
    let config = shared.rfc.clone().expect("standards mode");
    let (parts, body) = request.into_parts();
    let (host, path) = target(&parts);
    let cache = shared.cache.clone();

    if invalidation::is_unsafe(&parts.method) {
        let method = parts.method.clone();
        let parts_headers = parts.headers.clone();
        let response = inner.call(Request::from_parts(parts, body)).await?;
        let (mut head, body) = response.into_parts();
        for (host, path) in invalidation::targets(&method, head.status, &host, &path, &head.headers) {
            invalidate(&shared, &config, &host, &path, &parts_headers).await;
        }
        client_headers(&config, &mut head.headers);
        shared.decorate(
            &mut head.headers,
            CacheOutcome::Bypass {
                detail: Some("method"),
            },
        );
        return Ok(Response::from_parts(head, CacheBody::origin(body)));
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let response = inner.call(Request::from_parts(parts, body)).await?;
        let (mut head, body) = response.into_parts();
        client_headers(&config, &mut head.headers);
        shared.decorate(
            &mut head.headers,
            CacheOutcome::Bypass {
                detail: Some("method"),
            },
        );
        return Ok(Response::from_parts(head, CacheBody::origin(body)));
    }

    let is_head = parts.method == Method::HEAD;
    let request_cc = CacheControl::from_headers(&parts.headers, "cache-control");
    let now = cache.clock().now();
    let found = lookup(&shared, &config, &host, &path, &parts.headers).await;
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
        match freshness::verdict(view, &request_cc, secs(now), &config) {
            Verdict::Serve { ttl } => {
                let outcome = if ttl > 0 {
                    CacheOutcome::Hit { ttl: ttl as u64 }
                } else {
                    CacheOutcome::StaleAllowed {
                        stale_for: ttl.unsigned_abs(),
                    }
                };
                return Ok(serve(
                    &shared,
                    &config,
                    stored.clone(),
                    secs(now),
                    &parts,
                    outcome,
                ));
            }
            Verdict::ServeStaleAndRevalidate { stale_for } => {
                revalidate_in_background(
                    &shared,
                    &config,
                    inner,
                    &parts,
                    &found,
                    stored.clone(),
                    &host,
                    &path,
                );
                let outcome = CacheOutcome::StaleWhileRevalidate { stale_for };
                return Ok(serve(
                    &shared,
                    &config,
                    stored.clone(),
                    secs(now),
                    &parts,
                    outcome,
                ));
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
        return Ok(gateway_timeout(&shared));
    }
    let serve_stale = |shared: &Shared, stored: CachedResponse, stale_for: u64, parts: &request::Parts| {
        let outcome = CacheOutcome::StaleIfError { stale_for };
        serve(shared, &config, stored, secs(cache.clock().now()), parts, outcome)
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

    // One origin call for a URL nothing is stored for.
    let mut lead = None;
    let plain = !is_head
        && !validation::is_conditional(&client)
        && request_cc.no_cache.is_none()
        && !request_cc.no_store
        && !shared.is_uncacheable(&found.key);
    if plain {
        match cache.lead_or_join::<CachedResponse, Uncacheable>(&found.key, &flight_options(tag.clone())) {
            LoadTicket::Lead(ticket) => lead = Some(ticket),
            LoadTicket::Join(join) => {
                if let Ok(value) = join.wait().await
                    && selected_by(&value, &client)
                {
                    let now = secs(cache.clock().now());
                    return Ok(serve(
                        &shared,
                        &config,
                        value,
                        now,
                        &parts,
                        CacheOutcome::Collapsed,
                    ));
                }
            }
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
                (Some(stored), Some(stale_for)) => Ok(serve_stale(&shared, stored, stale_for, &parts)),
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
        return Ok(serve_stale(&shared, stored.clone(), stale_for, &parts));
    }

    if head.status == StatusCode::NOT_MODIFIED
        && let Some(stored) = revalidating
    {
        if validation::selects(&head.headers, &stored.headers) {
            let exchange = Exchange::new(&head.headers, request_time, response_time);
            let updated = refreshed(&shared, &config, stored, &head.headers, exchange, &found.key, tag).await;
            if let Some(lead) = lead {
                lead.complete(Ok(updated.clone()));
            }
            let outcome = CacheOutcome::Forwarded {
                fwd,
                status: 304,
                stored: true,
            };
            return Ok(serve(&shared, &config, updated, response_time, &parts, outcome));
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
            client_headers(&config, &mut head.headers);
            shared.decorate(&mut head.headers, CacheOutcome::Miss { stored: false });
            return Ok(Response::from_parts(head, CacheBody::origin(body)));
        }
    }

    let cc = config.response_cache_control(&head.headers);
    let declared = content_length(&head.headers).or(body.size_hint().exact());
    let mut verdict = storage::check_storable(&method, &client, &request_cc, head.status, &head.headers, &cc)
        .map_err(|reason| reason.as_str());
    if is_head {
        verdict = Err("head");
    }
    if declared.is_some_and(|len| len > config.max_body_size as u64) {
        verdict = Err("size");
    }
    let exchange = Exchange::new(&head.headers, request_time, response_time);
    let meta = entry_meta(
        &config,
        head.status,
        &head.headers,
        &cc,
        &exchange,
        cache.clock().now(),
        tag,
    );
    if verdict.is_ok() && meta.expires_at() <= meta.stored_at {
        verdict = Err("no-freshness");
    }
    let outcome = |stored| {
        if fwd == "miss" {
            CacheOutcome::Miss { stored }
        } else {
            CacheOutcome::Forwarded {
                fwd,
                status: head.status.as_u16(),
                stored,
            }
        }
    };
    if verdict.is_err() {
        if let Some(lead) = lead {
            lead.complete(Err(Uncacheable::NotStorable));
        }
        let outcome = outcome(false);
        client_headers(&config, &mut head.headers);
        shared.decorate(&mut head.headers, outcome);
        return Ok(Response::from_parts(head, CacheBody::origin(body)));
    }

    let names = vary::vary_names(&head.headers).unwrap_or_default();
    let store_key = response_key(&config, &host, &path, &names, &client);
    let marker = match (&found.marker, names.is_empty()) {
        (Some(old), false) if *old == names => MarkerChange::Keep,
        (_, false) => MarkerChange::Set(
            marker_key(&config, &host, &path, &client),
            VaryMarker { names: names.clone() },
        ),
        (Some(_), true) => MarkerChange::Delete(marker_key(&config, &host, &path, &client)),
        (None, true) => MarkerChange::Keep,
    };
    let mut stored_headers = head.headers.clone();
    strip_hop_by_hop(&mut stored_headers);
    storage::strip_unstorable_fields(&mut stored_headers, &cc);
    stored_headers.remove("cache-status");
    let tee = Tee {
        lead,
        rfc: Some(RfcStore {
            meta,
            exchange,
            request_headers: vary::selecting_headers(&names, &client),
            marker,
        }),
        status: head.status,
        headers: stored_headers,
        chunks: Vec::new(),
        size: 0,
        limit: config.max_body_size,
        shared: Arc::clone(&shared),
        key: store_key,
    };
    let outcome = outcome(true);
    client_headers(&config, &mut head.headers);
    shared.decorate(&mut head.headers, outcome);
    // A server never polls a body that says it has ended (an empty one).
    if body.is_end_stream() {
        tee.finish();
        return Ok(Response::from_parts(head, CacheBody::origin(body)));
    }
    Ok(Response::from_parts(head, CacheBody::teed(body, tee)))
}

/// Applies a `304` to a stored response and stores the result under `key`.
async fn refreshed(
    shared: &Shared,
    config: &Rfc9111,
    mut stored: CachedResponse,
    not_modified: &HeaderMap,
    exchange: Exchange,
    key: &CacheKey,
    tag: Tag,
) -> CachedResponse {
    validation::update_headers(&mut stored.headers, not_modified);
    let cc = config.response_cache_control(&stored.headers);
    let now = shared.cache.clock().now();
    let meta = entry_meta(config, stored.status, &stored.headers, &cc, &exchange, now, tag);
    stored.exchange = Some(exchange);
    if let Err(error) = shared.cache.set_entry(key, &stored, &meta).await {
        tracing::debug!(%error, "revalidated response not stored");
    }
    stored
}

/// Revalidates a stored response in the background (stale-while-revalidate),
/// at most once at a time per key.
#[allow(clippy::too_many_arguments)]
fn revalidate_in_background<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    config: &Rfc9111,
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
    let (shared_for_load, config, key) = (Arc::clone(shared), config.clone(), found.key.clone());
    let client = parts.headers.clone();
    let request_cc = CacheControl::from_headers(&client, "cache-control");
    shared
        .cache
        .refresh_in_background(&found.key, &flight_options(tag.clone()), move || async move {
            let shared = shared_for_load;
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
                return Ok(refreshed(&shared, &config, stored, &head.headers, exchange, &key, tag).await);
            }
            let cc = config.response_cache_control(&head.headers);
            let names = vary::vary_names(&head.headers).ok_or(Uncacheable::NotStorable)?;
            if storage::check_storable(
                &Method::GET,
                &client,
                &request_cc,
                head.status,
                &head.headers,
                &cc,
            )
            .is_err()
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
            let meta = entry_meta(&config, head.status, &head.headers, &cc, &exchange, now, tag);
            let mut headers = head.headers;
            strip_hop_by_hop(&mut headers);
            storage::strip_unstorable_fields(&mut headers, &cc);
            let store = RfcStore {
                meta,
                exchange,
                request_headers: vary::selecting_headers(&names, &client),
                marker: MarkerChange::Keep,
            };
            Ok(store
                .store(&shared, &key, CachedResponse::new(head.status, headers, body))
                .await)
        });
}
