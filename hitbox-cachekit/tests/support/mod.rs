//! A loopback stand-in for the hosted cachekit.io service.
//!
//! The service cannot be reached from CI and no server implementation is
//! public, so this axum server implements the API from the protocol's text
//! (cachekit-io/protocol `spec/saas-api.md` and `spec/cache-key-format.md`,
//! summarised with their sources in the project's protocol notes), not
//! from what the client in this crate does. Its code shares nothing with
//! the client's: a client bug cannot hide behind the same bug here.
//!
//! What it follows, in the order it checks:
//!
//! - `OPTIONS` on any path: 204 before authentication, nothing inspected.
//! - Authentication of every other request: `Authorization: Bearer <key>`
//!   with one of the three prefixes `ck_sdk_`, `ck_api_`, `ck_live_` and a
//!   key it knows ([`LoopbackServer::add_api_key`]); 401 otherwise, 503 with
//!   `Retry-After` while its key store is down.
//! - A `ck_sdk_` API key needs `X-CacheKit-L1-Status` of exactly `hit`,
//!   `miss` or `disabled` on every request, health included: 400 otherwise.
//! - Routes: `health` GET; `{key}` GET, HEAD, PUT, DELETE; `{key}/ttl` GET,
//!   PATCH; `{key}/lock` POST, DELETE; 405 with `Allow` for another method,
//!   404 for another path (`/v1/cache/` itself included).
//! - The key segment is percent-decoded exactly once (a malformed escape is
//!   400), then must be 1 to 400 characters of `[A-Za-z0-9_.:-]`, without
//!   `..`, and a key starting `ns:` or `nsapi:` must name a namespace of 1
//!   to 64 `[A-Za-z0-9_-]` before its next `:` (or its end): 400 otherwise.
//!   `ns:x:` and `nsapi:x:` keys are in namespace `x`, others in `default`.
//! - 403 when the API key's grants leave out the key's namespace (reads and
//!   mutations), and for the write split on mutations (PUT, DELETE, lock,
//!   unlock, PATCH /ttl): `ck_sdk_` never mutates `nsapi:` keys, `ck_api_`
//!   never `ns:` keys, `ck_live_` is exempt.
//! - PUT: `Content-Type: application/octet-stream` (400 without); the TTL
//!   from `X-CacheKit-TTL`, else the deprecated `X-TTL` (the first wins
//!   when both come), 1 to 2,592,000 whole seconds, none = no expiry;
//!   `X-CacheKit-Stale-TTL` 0 to 2,591,999, only with a TTL, and TTL plus
//!   stale at most 2,592,000 (400 otherwise); `fresh_until = floor(now) +
//!   ttl`, `evict_at = fresh_until + stale`; bodies over 25 × 2^20 bytes are
//!   413 (upstream says "25 MB" without a byte count; tests use sizes that
//!   both readings, 25,000,000 and 26,214,400, agree on).
//! - GET: 200 with `X-CacheKit-Freshness` `fresh` or `stale` and
//!   `X-CacheKit-Fresh-For: max(0, floor(fresh_until − now))` (0 when
//!   stale, absent for a no-expiry entry); HEAD: the same status and
//!   freshness, no body, never `Fresh-For`; from `evict_at` on, 404.
//! - GET /ttl: `{"ttl": evict_at − floor(now)}` (rounded up, never 0 for a
//!   present entry), `{"ttl": null}` without expiry, 404 when absent.
//! - PATCH /ttl: 200 and nothing done for an absent key; a fresh entry is
//!   fresh for `ttl` from `floor(now)` and keeps its stale window; a stale
//!   one is 409; a no-expiry one becomes bounded with no stale window.
//! - Locks: 200 `{"lock_id": "<uuid>"}` or `{"lock_id": null}` when held;
//!   unlock answers 200, takes the id from `X-CacheKit-Lock-Id`, else from
//!   the deprecated `?lock_id=` query (an empty or whitespace-only id counts
//!   as absent), and answers 400 when neither has one. Upstream does not
//!   say what a wrong or expired id gets: here 200, and the lock stays.
//! - Every response carries `Cache-Control: no-store` and
//!   `Vary: Authorization`.
//!
//! Time is the [`ManualClock`] the test moves; nothing here sleeps. It
//! records every request it receives (method, raw path, headers, body) and
//! can be told to misbehave: hold answers until released, answer 429 (with
//! or without a deny reason), 5xx, malformed JSON, a redirect, or chosen
//! freshness header bytes.
//!
//! It is a test utility: it has no persistence, one tenant, and it is not
//! the hosted service.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hitbox_core::{Clock, ManualClock, Timestamp};
use serde::Deserialize;
use tokio::sync::watch;

/// The API key the server knows from the start, with every namespace
/// granted. An SDK key: every request made with it needs
/// `X-CacheKit-L1-Status`.
pub const API_KEY: &str = "ck_sdk_SECRET_5f1e0c9a7b";
/// The largest body a PUT may carry.
pub const MAX_BODY: usize = 25 * 1024 * 1024;
/// The largest TTL, and the largest TTL plus stale window.
pub const MAX_TTL: u64 = 2_592_000;
/// The largest stale window alone.
pub const MAX_STALE_TTL: u64 = 2_591_999;
/// The longest decoded key.
pub const MAX_KEY_CHARS: usize = 400;

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

/// The class of an API key, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyClass {
    Sdk,
    Api,
    Live,
}

impl KeyClass {
    fn of(key: &str) -> Option<KeyClass> {
        if key.starts_with("ck_sdk_") {
            Some(KeyClass::Sdk)
        } else if key.starts_with("ck_api_") {
            Some(KeyClass::Api)
        } else if key.starts_with("ck_live_") {
            Some(KeyClass::Live)
        } else {
            None
        }
    }
}

/// The namespaces an API key may use: `None` for all of them.
type Grants = Option<Vec<String>>;

#[derive(Debug, Clone)]
struct Entry {
    bytes: Bytes,
    /// The TTL the entry was last given, in seconds (`None`: no expiry).
    ttl: Option<u64>,
    stale: u64,
    /// `floor(stored_at) + ttl`, in epoch seconds.
    fresh_until: Option<u64>,
}

enum Phase {
    NoExpiry,
    Fresh { fresh_for: u64, evict_in: u64 },
    Stale { evict_in: u64 },
    Gone,
}

impl Entry {
    fn phase(&self, now: Timestamp) -> Phase {
        let Some(fresh_until) = self.fresh_until else {
            return Phase::NoExpiry;
        };
        let now_ms = now.as_millis();
        let now_s = now_ms / 1000;
        let evict_at = fresh_until + self.stale;
        if now_ms < fresh_until * 1000 {
            Phase::Fresh {
                // Whole seconds, rounded down.
                fresh_for: (fresh_until * 1000 - now_ms) / 1000,
                evict_in: evict_at - now_s,
            }
        } else if now_ms < evict_at * 1000 {
            Phase::Stale {
                evict_in: evict_at - now_s,
            }
        } else {
            Phase::Gone
        }
    }
}

struct Data {
    entries: HashMap<String, Entry>,
    locks: HashMap<String, (String, Timestamp)>,
    api_keys: HashMap<String, Grants>,
    key_store_down: bool,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    always: Option<Fault>,
    malformed_json: bool,
    unknown_field: bool,
    freshness_override: Option<FreshnessHeaders>,
    lock_id_override: Option<String>,
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
    /// A plain HTTP client for hand-made requests ([`raw`]).
    client: reqwest::Client,
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
        let data = Data {
            entries: HashMap::new(),
            locks: HashMap::new(),
            api_keys: HashMap::from([(API_KEY.to_owned(), None)]),
            key_store_down: false,
            requests: Vec::new(),
            faults: VecDeque::new(),
            always: None,
            malformed_json: false,
            unknown_field: false,
            freshness_override: None,
            lock_id_override: None,
        };
        let shared = Arc::new(ServerState {
            clock: clock.clone(),
            data: Mutex::new(data),
            hold,
        });
        // One handler for every path: the routing, its order of checks and
        // the key's single decode are the protocol's, not a framework's.
        let router = Router::new().fallback(entry_point).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        LoopbackServer {
            addr,
            clock,
            client: reqwest::Client::new(),
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

    /// A lock that is acquired hands out this id instead of a fresh UUID
    /// (to test what a client does with an id the protocol does not allow).
    pub fn lock_id_override(&self, id: Option<String>) {
        self.data().lock_id_override = id;
    }

    /// The server knows `key`, granted `namespaces` (`None`: all of them).
    /// A key without one of the three prefixes still never authenticates.
    pub fn add_api_key(&self, key: &str, namespaces: Option<&[&str]>) {
        let grants = namespaces.map(|list| list.iter().map(|n| (*n).to_owned()).collect());
        self.data().api_keys.insert(key.to_owned(), grants);
    }

    /// The server forgets `key` (a revoked key).
    pub fn revoke_api_key(&self, key: &str) {
        self.data().api_keys.remove(key);
    }

    /// While on, authentication fails with 503 (never 401).
    pub fn key_store_down(&self, down: bool) {
        self.data().key_store_down = down;
    }

    /// Answers wait until [`LoopbackServer::release`].
    pub fn hold(&self) {
        self.shared.hold.send_replace(true);
    }

    pub fn release(&self) {
        self.shared.hold.send_replace(false);
    }

    /// The stored bytes under the decoded `key`, whatever their phase.
    pub fn stored(&self, key: &str) -> Option<Bytes> {
        self.data().entries.get(key).map(|e| e.bytes.clone())
    }

    /// `(ttl, stale)` of the entry under `key`.
    pub fn windows(&self, key: &str) -> Option<(Option<u64>, u64)> {
        self.data().entries.get(key).map(|e| (e.ttl, e.stale))
    }

    /// Whether a lock is held on `key` now.
    pub fn locked(&self, key: &str) -> bool {
        let now = self.clock.now();
        self.data().locks.get(key).is_some_and(|(_, until)| *until > now)
    }
}

fn text(status: StatusCode, message: &'static str) -> Response {
    (status, message).into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn success() -> Response {
    json(StatusCode::OK, r#"{"success":true}"#.to_owned())
}

/// Every answer, whatever produced it, is marked uncacheable and varying
/// by `Authorization`: the path carries no tenant.
async fn entry_point(State(shared): State<Arc<ServerState>>, request: Request) -> Response {
    let mut response = handle(&shared, request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::VARY, HeaderValue::from_static("Authorization"));
    response
}

/// The routes under `/v1/cache/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Entry,
    Ttl,
    Lock,
}

impl Route {
    fn allowed(self) -> &'static [Method] {
        match self {
            Route::Health => &[Method::GET],
            Route::Entry => &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            Route::Ttl => &[Method::GET, Method::PATCH],
            Route::Lock => &[Method::POST, Method::DELETE],
        }
    }
}

/// Splits the raw path on `/` (before any decoding) into a route and the
/// still-encoded key segment.
fn route(path: &str) -> Option<(Route, &str)> {
    let rest = path.strip_prefix("/v1/cache/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["health"] => Some((Route::Health, "")),
        [""] => None,
        [key] => Some((Route::Entry, key)),
        [key, "ttl"] => Some((Route::Ttl, key)),
        [key, "lock"] => Some((Route::Lock, key)),
        _ => None,
    }
}

/// One `decodeURIComponent`-like pass: `%` must start two hex digits, and
/// the bytes must be UTF-8.
fn decode_once(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The key format's server-side checks. `Ok` carries the key's namespace
/// (for grants) and its write space (`Some("ns")`, `Some("nsapi")`, or
/// `None` for the shared `default` space).
fn check_key(key: &str) -> Result<(String, Option<&'static str>), &'static str> {
    if key.is_empty() {
        return Err("empty key");
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err("key longer than 400 characters");
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
    {
        return Err("key outside [A-Za-z0-9_.:-]");
    }
    if key.contains("..") {
        return Err("`..` in key");
    }
    for space in ["ns", "nsapi"] {
        if let Some(rest) = key.strip_prefix(space).and_then(|r| r.strip_prefix(':')) {
            let namespace = rest.split(':').next().unwrap_or("");
            let valid = !namespace.is_empty()
                && namespace.len() <= 64
                && namespace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
            if !valid {
                return Err("bad namespace in a namespace-prefixed key");
            }
            return Ok((namespace.to_owned(), Some(space)));
        }
    }
    Ok(("default".to_owned(), None))
}

/// The API key of `Authorization: Bearer <key>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn handle(shared: &ServerState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return text(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let raw_path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let fault = {
        let mut data = shared.data.lock().unwrap();
        data.requests.push(Recorded {
            method: parts.method.clone(),
            path: raw_path,
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
        Some(Fault::Status(code)) => {
            let mut response = StatusCode::from_u16(code).unwrap().into_response();
            if code == 503 {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return response;
        }
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
        return text(StatusCode::OK, "redirect target");
    }

    // CORS preflight: before authentication, nothing inspected.
    if parts.method == Method::OPTIONS {
        return StatusCode::NO_CONTENT.into_response();
    }

    // Authentication precedes every other error.
    let (class, grants) = {
        let data = shared.data.lock().unwrap();
        if data.key_store_down {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "key store unavailable",
            )
                .into_response();
        }
        let Some(api_key) = bearer(&parts.headers) else {
            return text(StatusCode::UNAUTHORIZED, "missing or malformed Authorization");
        };
        let (Some(class), Some(grants)) = (KeyClass::of(api_key), data.api_keys.get(api_key)) else {
            return text(StatusCode::UNAUTHORIZED, "unknown API key");
        };
        (class, grants.clone())
    };

    if class == KeyClass::Sdk
        && !matches!(
            parts
                .headers
                .get("x-cachekit-l1-status")
                .map(HeaderValue::as_bytes),
            Some(b"hit" | b"miss" | b"disabled")
        )
    {
        return text(
            StatusCode::BAD_REQUEST,
            "ck_sdk_ keys need X-CacheKit-L1-Status: hit, miss or disabled",
        );
    }

    let Some((route, segment)) = route(parts.uri.path()) else {
        return text(StatusCode::NOT_FOUND, "no such route");
    };
    if !route.allowed().contains(&parts.method) {
        let allow = route
            .allowed()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, allow)],
            "method not allowed",
        )
            .into_response();
    }
    if route == Route::Health {
        return health(shared);
    }

    let Some(key) = decode_once(segment) else {
        return text(StatusCode::BAD_REQUEST, "malformed percent-escape in the key");
    };
    let (namespace, space) = match check_key(&key) {
        Ok(found) => found,
        Err(reason) => return text(StatusCode::BAD_REQUEST, reason),
    };
    if let Some(granted) = &grants
        && !granted.contains(&namespace)
    {
        return text(StatusCode::FORBIDDEN, "no grant for this namespace");
    }
    let mutation = !matches!(
        (route, &parts.method),
        (Route::Entry, &Method::GET | &Method::HEAD) | (Route::Ttl, &Method::GET)
    );
    let split_forbids = matches!(
        (class, space),
        (KeyClass::Sdk, Some("nsapi")) | (KeyClass::Api, Some("ns"))
    );
    if mutation && split_forbids {
        return text(
            StatusCode::FORBIDDEN,
            "this key class may not write this key space",
        );
    }

    let query = parts.uri.query();
    match (route, parts.method) {
        (Route::Entry, Method::GET) => get_entry(shared, &key),
        (Route::Entry, Method::HEAD) => head_entry(shared, &key),
        (Route::Entry, Method::PUT) => put_entry(shared, key, &parts.headers, body),
        (Route::Entry, Method::DELETE) => {
            shared.data.lock().unwrap().entries.remove(&key);
            success()
        }
        (Route::Ttl, Method::GET) => get_ttl(shared, &key),
        (Route::Ttl, Method::PATCH) => patch_ttl(shared, &key, &body),
        (Route::Lock, Method::POST) => lock(shared, key, &body),
        (Route::Lock, Method::DELETE) => unlock(shared, &key, &parts.headers, query),
        _ => unreachable!("methods were checked against the route"),
    }
}

/// A whole number of seconds from a header: digits only (no sign, no
/// space, no fraction), at most `max`. `Err` for anything else.
fn header_secs(value: &HeaderValue, max: u64) -> Result<u64, ()> {
    let text = value.to_str().map_err(|_| ())?;
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    let secs: u64 = text.parse().map_err(|_| ())?;
    if secs > max { Err(()) } else { Ok(secs) }
}

/// A live entry, dropping it when its stale window is over.
fn live<'a>(data: &'a mut Data, key: &str, now: Timestamp) -> Option<(&'a mut Entry, Phase)> {
    let phase = data.entries.get(key)?.phase(now);
    if matches!(phase, Phase::Gone) {
        data.entries.remove(key);
        return None;
    }
    Some((data.entries.get_mut(key).unwrap(), phase))
}

fn freshness_label(phase: &Phase) -> &'static [u8] {
    match phase {
        Phase::Stale { .. } => b"stale",
        _ => b"fresh",
    }
}

fn get_entry(shared: &ServerState, key: &str) -> Response {
    let now = shared.clock.now();
    let mut data = shared.data.lock().unwrap();
    let overrides = data.freshness_override.clone();
    let Some((entry, phase)) = live(&mut data, key, now) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = (StatusCode::OK, entry.bytes.clone()).into_response();
    let headers = response.headers_mut();
    let (freshness, fresh_for) = match overrides {
        Some(o) => o,
        None => {
            let fresh_for = match phase {
                Phase::NoExpiry => None,
                Phase::Fresh { fresh_for, .. } => Some(fresh_for.to_string().into_bytes()),
                _ => Some(b"0".to_vec()),
            };
            (Some(freshness_label(&phase).to_vec()), fresh_for)
        }
    };
    if let Some(value) = freshness {
        headers.insert("x-cachekit-freshness", HeaderValue::from_bytes(&value).unwrap());
    }
    if let Some(value) = fresh_for {
        headers.insert("x-cachekit-fresh-for", HeaderValue::from_bytes(&value).unwrap());
    }
    response
}

fn head_entry(shared: &ServerState, key: &str) -> Response {
    let now = shared.clock.now();
    let mut data = shared.data.lock().unwrap();
    let Some((_, phase)) = live(&mut data, key, now) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        StatusCode::OK,
        [(
            "x-cachekit-freshness",
            HeaderValue::from_static(if freshness_label(&phase) == b"stale" {
                "stale"
            } else {
                "fresh"
            }),
        )],
    )
        .into_response()
}

fn put_entry(shared: &ServerState, key: String, headers: &HeaderMap, body: Bytes) -> Response {
    if headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes) != Some(b"application/octet-stream") {
        return text(
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/octet-stream",
        );
    }
    // `X-CacheKit-TTL` wins; the deprecated `X-TTL` is still accepted.
    let ttl = match headers.get("x-cachekit-ttl").or_else(|| headers.get("x-ttl")) {
        None => None,
        Some(value) => match header_secs(value, MAX_TTL) {
            Ok(0) | Err(()) => return text(StatusCode::BAD_REQUEST, "bad TTL"),
            Ok(secs) => Some(secs),
        },
    };
    // Checked on its own before any arithmetic.
    let stale = match headers.get("x-cachekit-stale-ttl") {
        None => None,
        Some(value) => match header_secs(value, MAX_STALE_TTL) {
            Ok(secs) => Some(secs),
            Err(()) => return text(StatusCode::BAD_REQUEST, "bad stale TTL"),
        },
    };
    let Some(ttl) = ttl else {
        if stale.is_some() {
            return text(StatusCode::BAD_REQUEST, "a stale TTL needs a TTL");
        }
        return store(shared, key, body, None, 0);
    };
    let stale = stale.unwrap_or(0);
    if ttl + stale > MAX_TTL {
        return text(StatusCode::BAD_REQUEST, "TTL plus stale TTL over 2,592,000");
    }
    store(shared, key, body, Some(ttl), stale)
}

fn store(shared: &ServerState, key: String, body: Bytes, ttl: Option<u64>, stale: u64) -> Response {
    if body.len() > MAX_BODY {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "value over 25 MB");
    }
    let now_s = shared.clock.now().as_millis() / 1000;
    let entry = Entry {
        bytes: body,
        ttl,
        stale,
        fresh_until: ttl.map(|ttl| now_s + ttl),
    };
    shared.data.lock().unwrap().entries.insert(key, entry);
    success()
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

fn lock(shared: &ServerState, key: String, body: &[u8]) -> Response {
    let Ok(request) = serde_json::from_slice::<LockBody>(body) else {
        return text(StatusCode::BAD_REQUEST, "bad lock body");
    };
    let now = shared.clock.now();
    let lock_id = {
        let mut data = shared.data.lock().unwrap();
        match data.locks.get(&key) {
            Some((_, until)) if *until > now => None,
            _ => {
                let id = data
                    .lock_id_override
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let until = now.add(Duration::from_millis(request.timeout_ms));
                data.locks.insert(key, (id.clone(), until));
                Some(id)
            }
        }
    };
    answer(shared, StatusCode::OK, serde_json::json!({ "lock_id": lock_id }))
}

/// The `lock_id` of a query string, decoded once.
fn query_lock_id(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "lock_id")
        .and_then(|(_, value)| decode_once(&value.replace('+', " ")))
}

fn unlock(shared: &ServerState, key: &str, headers: &HeaderMap, query: Option<&str>) -> Response {
    let from_header = headers
        .get("x-cachekit-lock-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let from_query = query_lock_id(query)
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty());
    let Some(id) = from_header.or(from_query) else {
        return text(StatusCode::BAD_REQUEST, "a lock id is required");
    };
    let mut data = shared.data.lock().unwrap();
    if data.locks.get(key).is_some_and(|(held, _)| *held == id) {
        data.locks.remove(key);
    }
    StatusCode::OK.into_response()
}

fn get_ttl(shared: &ServerState, key: &str) -> Response {
    let now = shared.clock.now();
    let ttl = {
        let mut data = shared.data.lock().unwrap();
        match live(&mut data, key, now) {
            None => return StatusCode::NOT_FOUND.into_response(),
            Some((_, Phase::NoExpiry)) => None,
            Some((_, Phase::Fresh { evict_in, .. } | Phase::Stale { evict_in })) => Some(evict_in),
            Some((_, Phase::Gone)) => unreachable!("live drops gone entries"),
        }
    };
    answer(shared, StatusCode::OK, serde_json::json!({ "ttl": ttl }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TtlBody {
    ttl: u64,
}

fn patch_ttl(shared: &ServerState, key: &str, body: &[u8]) -> Response {
    let ttl = match serde_json::from_slice::<TtlBody>(body) {
        Ok(TtlBody { ttl }) if (1..=MAX_TTL).contains(&ttl) => ttl,
        _ => return text(StatusCode::BAD_REQUEST, "bad TTL"),
    };
    let now = shared.clock.now();
    let now_s = now.as_millis() / 1000;
    let mut data = shared.data.lock().unwrap();
    match live(&mut data, key, now) {
        // Absent or evicted: nothing to do, and not an error.
        None => success(),
        Some((_, Phase::Stale { .. })) => text(StatusCode::CONFLICT, "the entry is already stale"),
        Some((entry, Phase::NoExpiry)) => {
            entry.ttl = Some(ttl);
            entry.stale = 0;
            entry.fresh_until = Some(now_s + ttl);
            success()
        }
        Some((entry, _)) => {
            if ttl + entry.stale > MAX_TTL {
                return text(StatusCode::BAD_REQUEST, "TTL plus stale TTL over 2,592,000");
            }
            entry.ttl = Some(ttl);
            entry.fresh_until = Some(now_s + ttl);
            success()
        }
    }
}

fn health(shared: &ServerState) -> Response {
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
        shared,
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

/// A request to `path` (raw, already encoded) signed with `api_key` and
/// `X-CacheKit-L1-Status: disabled`, for tests that must send what the
/// client never would.
pub fn raw(server: &LoopbackServer, method: Method, path: &str, api_key: &str) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
    server
        .client
        .request(method, format!("{}{path}", server.url()))
        .header("authorization", format!("Bearer {api_key}"))
        .header("x-cachekit-l1-status", "disabled")
}

pub fn header<'a>(request: &'a Recorded, name: &str) -> Option<&'a [u8]> {
    request
        .headers
        .get(HeaderName::from_bytes(name.as_bytes()).unwrap())
        .map(|v| v.as_bytes())
}
