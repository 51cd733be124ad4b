//! A loopback stand-in for the hosted cachekit.io service.
//!
//! The service cannot be reached from CI and no server implementation is
//! public, so this axum server implements the API as the protocol describes
//! it: every route of the table, its statuses and headers, the TTL and
//! stale windows (on a [`ManualClock`] the test moves), locks with ids and
//! timeouts, `Authorization` checks, the `ck_sdk_` L1-status rule, strict
//! snake_case JSON, the 25 MB body limit. It records every request it
//! receives (method, raw path, headers, body) and can be told to misbehave:
//! hold answers until released, answer 429 (with or without a deny reason),
//! 5xx, malformed JSON, a redirect, or chosen freshness header bytes.
//!
//! It is a test utility: it has no persistence, no namespaces and no
//! server-side key charset checks, and it is not the hosted service.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hitbox_core::{Clock, ManualClock, Timestamp};
use serde::Deserialize;
use tokio::sync::watch;

pub const API_KEY: &str = "ck_test_SECRET_5f1e0c9a7b";
pub const MAX_BODY: usize = 25 * 1024 * 1024;
pub const MAX_TTL: u64 = 2_592_000;

/// Raw `X-CacheKit-Freshness` and `X-CacheKit-Fresh-For` values (`None`:
/// header absent).
pub type FreshnessHeaders = (Option<Vec<u8>>, Option<Vec<u8>>);

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// The raw (still percent-encoded) path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A misbehaviour for one request.
#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16),
    RateLimited { deny_reason: Option<String> },
    Redirect,
}

#[derive(Debug, Clone)]
struct Entry {
    bytes: Bytes,
    stored_at: Timestamp,
    ttl: Option<u64>,
    stale: u64,
}

enum Phase {
    Fresh { remaining: Option<u64> },
    Stale,
    Gone,
}

impl Entry {
    fn phase(&self, now: Timestamp) -> Phase {
        let Some(ttl) = self.ttl else {
            return Phase::Fresh { remaining: None };
        };
        let fresh_until = self.stored_at.add(Duration::from_secs(ttl));
        let evict_at = fresh_until.add(Duration::from_secs(self.stale));
        if now < fresh_until {
            let left = now.until(fresh_until);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            Phase::Fresh {
                remaining: Some(secs),
            }
        } else if now < evict_at {
            Phase::Stale
        } else {
            Phase::Gone
        }
    }
}

#[derive(Default)]
struct Data {
    entries: HashMap<String, Entry>,
    locks: HashMap<String, (String, Timestamp)>,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    always: Option<Fault>,
    malformed_json: bool,
    unknown_field: bool,
    freshness_override: Option<FreshnessHeaders>,
}

struct ServerState {
    clock: ManualClock,
    data: Mutex<Data>,
    hold: watch::Sender<bool>,
}

/// The running server. Dropping it stops it.
pub struct LoopbackServer {
    pub addr: SocketAddr,
    pub clock: ManualClock,
    shared: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LoopbackServer {
    pub async fn start() -> LoopbackServer {
        let clock = ManualClock::new();
        let (hold, _) = watch::channel(false);
        let shared = Arc::new(ServerState {
            clock: clock.clone(),
            data: Mutex::new(Data::default()),
            hold,
        });
        let router = Router::new()
            .route("/v1/cache/health", get(health))
            .route(
                "/v1/cache/{key}",
                get(get_entry)
                    .head(head_entry)
                    .put(put_entry)
                    .delete(delete_entry),
            )
            .route("/v1/cache/{key}/lock", post(lock).delete(unlock))
            .route("/v1/cache/{key}/ttl", get(get_ttl).patch(patch_ttl))
            .route("/v1/redirected", any(|| async { "redirect target" }))
            .layer(middleware::from_fn_with_state(shared.clone(), gate))
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        LoopbackServer {
            addr,
            clock,
            shared,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.shared.data.lock().unwrap()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.data().requests.clone()
    }

    /// Requests whose raw path is `path`.
    pub fn count(&self, method: Method, path: &str) -> usize {
        self.data()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    /// The next requests misbehave in this order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.data().faults.extend(faults);
    }

    /// Every request misbehaves this way (until `None`).
    pub fn always(&self, fault: Option<Fault>) {
        self.data().always = fault;
    }

    pub fn malformed_json(&self, on: bool) {
        self.data().malformed_json = on;
    }

    pub fn unknown_field(&self, on: bool) {
        self.data().unknown_field = on;
    }

    /// GET answers carry these raw `X-CacheKit-Freshness` and
    /// `X-CacheKit-Fresh-For` values (`None`: header absent).
    pub fn freshness_override(&self, headers: Option<FreshnessHeaders>) {
        self.data().freshness_override = headers;
    }

    /// Answers wait until [`LoopbackServer::release`].
    pub fn hold(&self) {
        self.shared.hold.send_replace(true);
    }

    pub fn release(&self) {
        self.shared.hold.send_replace(false);
    }

    /// The stored bytes under `key`, whatever their phase.
    pub fn stored(&self, key: &str) -> Option<Bytes> {
        self.data().entries.get(key).map(|e| e.bytes.clone())
    }

    /// `(ttl, stale)` of the entry under `key`.
    pub fn windows(&self, key: &str) -> Option<(Option<u64>, u64)> {
        self.data().entries.get(key).map(|e| (e.ttl, e.stale))
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Recording, failure injection, authentication and the L1-status rules,
/// in front of every route.
async fn gate(State(shared): State<Arc<ServerState>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let fault = {
        let mut data = shared.data.lock().unwrap();
        data.requests.push(Recorded {
            method: parts.method.clone(),
            path: path.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        data.faults.pop_front().or_else(|| data.always.clone())
    };
    let mut held = shared.hold.subscribe();
    while *held.borrow_and_update() {
        if held.changed().await.is_err() {
            break;
        }
    }
    match fault {
        Some(Fault::Status(code)) => return StatusCode::from_u16(code).unwrap().into_response(),
        Some(Fault::RateLimited { deny_reason }) => {
            let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
            if let Some(reason) = deny_reason {
                response
                    .headers_mut()
                    .insert("x-cachekit-deny-reason", HeaderValue::from_str(&reason).unwrap());
            }
            return response;
        }
        Some(Fault::Redirect) => {
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, "/v1/redirected")],
            )
                .into_response();
        }
        None => {}
    }
    if parts.uri.path() == "/v1/redirected" {
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    }
    let expected = format!("Bearer {API_KEY}");
    if parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match parts.headers.get("x-cachekit-l1-status").map(|v| v.as_bytes()) {
        Some(b"hit" | b"miss" | b"disabled") => {}
        Some(_) => return (StatusCode::BAD_REQUEST, "bad X-CacheKit-L1-Status").into_response(),
        None => {
            let segment = parts.uri.path().strip_prefix("/v1/cache/").unwrap_or("");
            let segment = segment.split('/').next().unwrap_or("");
            let key = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
            if key.starts_with("ck_sdk_") {
                return (StatusCode::BAD_REQUEST, "ck_sdk_ keys need X-CacheKit-L1-Status").into_response();
            }
        }
    }
    if parts.headers.contains_key("x-ttl") {
        return (StatusCode::BAD_REQUEST, "X-TTL is deprecated").into_response();
    }
    if body.len() > MAX_BODY {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn header_secs(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ()> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ())?;
    if text.is_empty() || text.len() > 7 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    text.parse().map(Some).map_err(|_| ())
}

/// A live entry, dropping it when its stale window is over.
fn live<'a>(data: &'a mut Data, key: &str, now: Timestamp) -> Option<(&'a Entry, Phase)> {
    let phase = data.entries.get(key)?.phase(now);
    if matches!(phase, Phase::Gone) {
        data.entries.remove(key);
        return None;
    }
    Some((data.entries.get(key).unwrap(), phase))
}

async fn get_entry(State(shared): State<Arc<ServerState>>, Path(key): Path<String>) -> Response {
    let now = shared.clock.now();
    let mut data = shared.data.lock().unwrap();
    let overrides = data.freshness_override.clone();
    let Some((entry, phase)) = live(&mut data, &key, now) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = (StatusCode::OK, entry.bytes.clone()).into_response();
    let headers = response.headers_mut();
    let (freshness, fresh_for): (Option<Vec<u8>>, Option<Vec<u8>>) = match (overrides, phase) {
        (Some(o), _) => o,
        (None, Phase::Fresh { remaining }) => (
            Some(b"fresh".to_vec()),
            remaining.map(|s| s.to_string().into_bytes()),
        ),
        (None, _) => (Some(b"stale".to_vec()), Some(b"0".to_vec())),
    };
    if let Some(value) = freshness {
        headers.insert("x-cachekit-freshness", HeaderValue::from_bytes(&value).unwrap());
    }
    if let Some(value) = fresh_for {
        headers.insert("x-cachekit-fresh-for", HeaderValue::from_bytes(&value).unwrap());
    }
    response
}

async fn head_entry(State(shared): State<Arc<ServerState>>, Path(key): Path<String>) -> StatusCode {
    let now = shared.clock.now();
    let mut data = shared.data.lock().unwrap();
    if live(&mut data, &key, now).is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn put_entry(
    State(shared): State<Arc<ServerState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()) != Some(b"application/octet-stream") {
        return (
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/octet-stream",
        )
            .into_response();
    }
    let (Ok(ttl), Ok(stale)) = (
        header_secs(&headers, "x-cachekit-ttl"),
        header_secs(&headers, "x-cachekit-stale-ttl"),
    ) else {
        return (StatusCode::BAD_REQUEST, "bad TTL").into_response();
    };
    if ttl == Some(0) || ttl.unwrap_or(0) + stale.unwrap_or(0) > MAX_TTL || (stale.is_some() && ttl.is_none())
    {
        return (StatusCode::BAD_REQUEST, "bad TTL").into_response();
    }
    let entry = Entry {
        bytes: body,
        stored_at: shared.clock.now(),
        ttl,
        stale: stale.unwrap_or(0),
    };
    shared.data.lock().unwrap().entries.insert(key, entry);
    json(StatusCode::OK, r#"{"success":true}"#.to_owned())
}

async fn delete_entry(State(shared): State<Arc<ServerState>>, Path(key): Path<String>) -> Response {
    shared.data.lock().unwrap().entries.remove(&key);
    json(StatusCode::OK, r#"{"success":true}"#.to_owned())
}

/// Encodes a JSON answer, or breaks it when told to.
fn answer(shared: &ServerState, status: StatusCode, mut value: serde_json::Value) -> Response {
    let data = shared.data.lock().unwrap();
    if data.malformed_json {
        return json(status, r#"{"lock_id": "#.to_owned());
    }
    if data.unknown_field {
        value["surprise"] = serde_json::Value::Bool(true);
    }
    json(status, value.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockBody {
    timeout_ms: u64,
}

async fn lock(State(shared): State<Arc<ServerState>>, Path(key): Path<String>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<LockBody>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad lock body").into_response();
    };
    let now = shared.clock.now();
    let lock_id = {
        let mut data = shared.data.lock().unwrap();
        match data.locks.get(&key) {
            Some((_, until)) if *until > now => None,
            _ => {
                let id = uuid::Uuid::new_v4().to_string();
                let until = now.add(Duration::from_millis(request.timeout_ms));
                data.locks.insert(key, (id.clone(), until));
                Some(id)
            }
        }
    };
    answer(&shared, StatusCode::OK, serde_json::json!({ "lock_id": lock_id }))
}

async fn unlock(
    State(shared): State<Arc<ServerState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = headers.get("x-cachekit-lock-id").and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "X-CacheKit-Lock-Id is required").into_response();
    };
    let mut data = shared.data.lock().unwrap();
    if data.locks.get(&key).is_some_and(|(held, _)| held == id) {
        data.locks.remove(&key);
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

async fn get_ttl(State(shared): State<Arc<ServerState>>, Path(key): Path<String>) -> Response {
    let now = shared.clock.now();
    let ttl = {
        let mut data = shared.data.lock().unwrap();
        match live(&mut data, &key, now) {
            None => return StatusCode::NOT_FOUND.into_response(),
            Some((_, Phase::Fresh { remaining })) => remaining,
            Some(_) => Some(0),
        }
    };
    answer(&shared, StatusCode::OK, serde_json::json!({ "ttl": ttl }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TtlBody {
    ttl: u64,
}

async fn patch_ttl(State(shared): State<Arc<ServerState>>, Path(key): Path<String>, body: Bytes) -> Response {
    let Ok(TtlBody { ttl }) = serde_json::from_slice::<TtlBody>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad TTL body").into_response();
    };
    let now = shared.clock.now();
    let mut data = shared.data.lock().unwrap();
    let stale = match live(&mut data, &key, now) {
        None => return StatusCode::NOT_FOUND.into_response(),
        Some((_, Phase::Stale)) => return StatusCode::CONFLICT.into_response(),
        Some((entry, _)) => entry.stale,
    };
    if ttl == 0 || ttl + stale > MAX_TTL {
        return (StatusCode::BAD_REQUEST, "bad TTL").into_response();
    }
    let entry = data.entries.get_mut(&key).unwrap();
    entry.stored_at = now;
    entry.ttl = Some(ttl);
    drop(data);
    json(StatusCode::OK, r#"{"success":true}"#.to_owned())
}

async fn health(State(shared): State<Arc<ServerState>>) -> Response {
    let now = shared.clock.now();
    let (entries, locks) = {
        let data = shared.data.lock().unwrap();
        let entries = data
            .entries
            .values()
            .filter(|e| !matches!(e.phase(now), Phase::Gone))
            .count();
        let locks = data.locks.values().filter(|(_, until)| *until > now).count();
        (entries, locks)
    };
    answer(
        &shared,
        StatusCode::OK,
        serde_json::json!({ "status": "ok", "cache_entries": entries, "active_locks": locks }),
    )
}

/// A backend pointed at `server`, with tiny backoffs.
pub fn backend(server: &LoopbackServer) -> hitbox_cachekit::CachekitConfig {
    hitbox_cachekit::CachekitBackend::builder()
        .api_key(API_KEY)
        .base_url(server.url())
        .allow_insecure_loopback_for_tests(true)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .clock(server.clock.clone())
}

pub fn header<'a>(request: &'a Recorded, name: &str) -> Option<&'a [u8]> {
    request
        .headers
        .get(HeaderName::from_bytes(name.as_bytes()).unwrap())
        .map(|v| v.as_bytes())
}
