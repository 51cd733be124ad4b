//! Standards mode: a layer built from a `[standards]` section and the same
//! layer built in code with `CacheLayerBuilder::rfc9111` give the same
//! decisions, the same bodies and the same stored entries, over real TCP.
//!
//! Every field of the section is set to a value other than its default, and
//! the script has a request whose answer shows it; the stored entries'
//! metadata shows the two that only change how long an entry is kept. A
//! field the builder dropped makes the config's layer answer or store as
//! the default would, and the test fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hitbox_backend::Cache;
use hitbox_backend::purge::PurgeTarget;
use hitbox_config::model::StandardsConfig;
use hitbox_moka::MokaBackend;
use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::rfc9111::date::format_http_date;
use hitbox_tower::{CacheLayer, CachedResponse};

const CONFIG: &str = r#"
[[tiers]]
moka = { max_bytes = "16 MiB" }

[layer]
name = "edge"

[standards]
heuristic_fraction = 0.5
heuristic_max = "20s"
targeted_fields = ["cdn-cache-control"]
keep_stale = "2h"
max_body_size = "1 KiB"
key_fields = ["x-forwarded-proto"]
refuse_set_cookie = true
stale_if_disconnected = "30s"
private_cache = true
"#;

/// The same layer, in code.
fn code_layer() -> CacheLayer {
    let cache = Cache::new(MokaBackend::new(16 << 20));
    CacheLayer::builder(cache)
        .cache_name("edge")
        .rfc9111(
            Rfc9111::new()
                .heuristic_fraction(0.5)
                .heuristic_max(Duration::from_secs(20))
                .targeted_field("cdn-cache-control")
                .keep_stale(Duration::from_secs(7200))
                .max_body_size(1024)
                .key_field("x-forwarded-proto")
                .refuse_set_cookie(true)
                .stale_if_disconnected(Duration::from_secs(30))
                .private_cache(true),
        )
        .build()
}

/// The section sets every field, to a value other than its default. The
/// pattern names every field: one added to the model without being added
/// here (and to the script) does not compile.
#[test]
fn the_section_sets_every_field() {
    let config = hitbox_config::Config::from_toml_str("standards.toml", CONFIG).unwrap();
    let StandardsConfig {
        heuristic_fraction,
        heuristic_max,
        targeted_fields,
        keep_stale,
        max_body_size,
        key_fields,
        refuse_set_cookie,
        stale_if_disconnected,
        private_cache,
    } = config.model().standards.clone().unwrap();
    // Each differs from what `Rfc9111::new()` would use.
    assert_eq!(heuristic_fraction, Some(0.5));
    assert_eq!(heuristic_max.unwrap().0, Duration::from_secs(20));
    assert_eq!(targeted_fields.len(), 1);
    assert_eq!(keep_stale.unwrap().0, Duration::from_secs(7200));
    assert_eq!(max_body_size.unwrap().as_usize(), 1024);
    assert_ne!(1024, hitbox_tower::DEFAULT_MAX_BODY_SIZE);
    assert_eq!(key_fields.len(), 1);
    assert_eq!(refuse_set_cookie, Some(true));
    assert_eq!(stale_if_disconnected.unwrap().0, Duration::from_secs(30));
    assert_ne!(
        Duration::from_secs(30),
        hitbox_tower::rfc9111::DEFAULT_STALE_IF_DISCONNECTED
    );
    assert_eq!(private_cache, Some(true));
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An origin that answers each path with the headers the step is about,
/// counts its calls and says in the body which call made it (and what of
/// the request a variant depends on).
async fn serve(layer: CacheLayer) -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&calls);
    let origin = move |method: Method, uri: Uri, request: HeaderMap| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move { answer(n, &method, &uri, &request) }
    };
    let app = Router::new().fallback(origin).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), calls)
}

fn answer(n: u64, method: &Method, uri: &Uri, request: &HeaderMap) -> Response {
    let now = now_secs();
    let field = |name: &str| request.get(name).map_or("-", |v| v.to_str().unwrap()).to_owned();
    let path = uri.path();
    let mut headers: Vec<(&str, String)> = vec![("date", format_http_date(now))];
    let mut body = format!("call {n}: {method} {path}");
    let mut status = StatusCode::OK;
    match path {
        "/fresh" => headers.push(("cache-control", "max-age=60".into())),
        "/etag" => {
            headers.push(("cache-control", "max-age=60".into()));
            headers.push(("etag", "\"v1\"".into()));
            if field("if-none-match") == "\"v1\"" {
                status = StatusCode::NOT_MODIFIED;
                body.clear();
            }
        }
        "/vary" => {
            headers.push(("cache-control", "max-age=60".into()));
            headers.push(("vary", "accept-language".into()));
            body = format!("{body} lang={}", field("accept-language"));
        }
        "/no-store" => headers.push(("cache-control", "no-store".into())),
        "/private" => headers.push(("cache-control", "private, max-age=60".into())),
        "/auth" => {
            headers.push(("cache-control", "max-age=60".into()));
            body = format!("{body} auth={}", field("authorization"));
        }
        // No explicit freshness: heuristics from Last-Modified.
        "/heuristic/long" => headers.push(("last-modified", format_http_date(now - 100))),
        "/heuristic/short" => headers.push(("last-modified", format_http_date(now - 30))),
        "/targeted" => {
            headers.push(("cache-control", "no-store".into()));
            headers.push(("cdn-cache-control", "max-age=60".into()));
        }
        "/big" => {
            headers.push(("cache-control", "max-age=60".into()));
            body = format!("{body} {}", "x".repeat(2000));
        }
        "/forwarded" => {
            headers.push(("cache-control", "max-age=60".into()));
            body = format!("{body} proto={}", field("x-forwarded-proto"));
        }
        "/cookie" => {
            headers.push(("cache-control", "max-age=60".into()));
            headers.push(("set-cookie", "session=1".into()));
        }
        _ => {}
    }
    let mut response = (status, body).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// One request: method, path, extra headers.
type Step = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const SCRIPT: &[Step] = &[
    // 0, 1: max-age; kept stale for `stale_if_disconnected` (no validator).
    ("GET", "/fresh", &[]),
    ("GET", "/fresh", &[]),
    // 2-4: a validator; the client's conditional request answered from
    // the cache, then a revalidation the client asks for.
    ("GET", "/etag", &[]),
    ("GET", "/etag", &[("if-none-match", "\"v1\"")]),
    ("GET", "/etag", &[("cache-control", "no-cache")]),
    // 5-7: Vary.
    ("GET", "/vary", &[("accept-language", "fr")]),
    ("GET", "/vary", &[("accept-language", "en")]),
    ("GET", "/vary", &[("accept-language", "fr")]),
    // 8, 9: no-store.
    ("GET", "/no-store", &[]),
    ("GET", "/no-store", &[]),
    // 10, 11: `private`, stored by a private cache (`private_cache`).
    ("GET", "/private", &[]),
    ("GET", "/private", &[]),
    // 12-14: Authorization: stored and keyed by it (`private_cache`).
    ("GET", "/auth", &[("authorization", "Bearer a")]),
    ("GET", "/auth", &[("authorization", "Bearer a")]),
    ("GET", "/auth", &[("authorization", "Bearer b")]),
    // 15-18: heuristics (`heuristic_max`, then `heuristic_fraction`).
    ("GET", "/heuristic/long", &[]),
    ("GET", "/heuristic/long", &[]),
    ("GET", "/heuristic/short", &[]),
    ("GET", "/heuristic/short", &[]),
    // 19, 20: CDN-Cache-Control over Cache-Control (`targeted_fields`).
    ("GET", "/targeted", &[]),
    ("GET", "/targeted", &[]),
    // 21, 22: a body over `max_body_size`.
    ("GET", "/big", &[]),
    ("GET", "/big", &[]),
    // 23-25: `key_fields`.
    ("GET", "/forwarded", &[("x-forwarded-proto", "http")]),
    ("GET", "/forwarded", &[("x-forwarded-proto", "https")]),
    ("GET", "/forwarded", &[("x-forwarded-proto", "http")]),
    // 26, 27: Set-Cookie (`refuse_set_cookie`).
    ("GET", "/cookie", &[]),
    ("GET", "/cookie", &[]),
    // 28, 29: an unsafe method invalidates the URL.
    ("POST", "/fresh", &[]),
    ("GET", "/fresh", &[]),
];

/// What a client saw: the status, the `Cache-Status` without its `ttl`,
/// the `ttl`, the body.
#[derive(Debug)]
struct Seen {
    status: u16,
    decision: String,
    ttl: Option<i64>,
    body: String,
}

fn decision(headers: &HeaderMap) -> (String, Option<i64>) {
    let Some(value) = headers.get("cache-status") else {
        return ("-".into(), None);
    };
    let mut ttl = None;
    let parts: Vec<&str> = value
        .to_str()
        .unwrap()
        .split("; ")
        .filter(|part| match part.strip_prefix("ttl=") {
            Some(n) => {
                ttl = Some(n.parse().unwrap());
                false
            }
            None => true,
        })
        .collect();
    (parts.join("; "), ttl)
}

/// Polls until `done` holds, for at most 30 s: a store happens once the
/// body has streamed to the client, and only the cache's counter shows it.
async fn until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn run(base: &str, cache: &Cache) -> Vec<Seen> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut seen = Vec::new();
    let mut stored = 0;
    for (method, path, headers) in SCRIPT {
        // The same host on both servers: it is part of every key.
        let mut request = client
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .header("host", "origin.test");
        for (name, value) in *headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let (decision, ttl) = decision(response.headers());
        let body = response.text().await.unwrap();
        if decision.ends_with("; stored") {
            stored += 1;
            until(|| cache.stats().stores >= stored).await;
        }
        seen.push(Seen {
            status,
            decision,
            ttl,
            body,
        });
    }
    seen
}

/// What a stored entry's metadata says, in whole seconds: how long it was
/// fresh for when stored, its stale-while-revalidate window, and how long
/// it is kept after it goes stale.
#[derive(Debug, PartialEq, Eq)]
struct Kept {
    fresh: u64,
    stale_while_revalidate: u64,
    kept_stale: u64,
}

/// Every entry of the cache, by key, with the start of its body (which
/// names the path) and its metadata.
async fn entries(cache: &Cache) -> BTreeMap<String, (String, Kept)> {
    // A URL's first response is under its key (namespace `rfc9111`), its
    // other variants under keys derived from it (namespace `vary`).
    let mut keys = Vec::new();
    for namespace in ["rfc9111:", "vary:"] {
        let target = PurgeTarget::Prefix(namespace.into());
        keys.extend(cache.backend().purge_keys(&target).await.unwrap());
    }
    let mut entries = BTreeMap::new();
    for key in keys {
        let entry = cache
            .get_entry::<CachedResponse>(&key)
            .await
            .unwrap_or_else(|| panic!("{} listed but not read", key.as_str()));
        let meta = entry.meta();
        let body = String::from_utf8_lossy(&entry.value().body);
        let path = body.split(' ').nth(3).unwrap_or_default().to_owned();
        let kept = Kept {
            fresh: meta.fresh_until.since(meta.stored_at).as_secs(),
            stale_while_revalidate: meta.stale_until.since(meta.fresh_until).as_secs(),
            kept_stale: meta.error_until.since(meta.fresh_until).as_secs(),
        };
        entries.insert(key.as_str().to_owned(), (path, kept));
    }
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standards_config_and_code_give_the_same_decisions_and_entries() {
    let built = hitbox_config::Config::from_toml_str("standards.toml", CONFIG)
        .unwrap()
        .build()
        .await
        .unwrap();
    let from_config_cache = built.cache.clone();
    let in_code = code_layer();
    let in_code_cache = in_code.cache().clone();

    let (config_base, config_calls) = serve(built.layer).await;
    let (code_base, code_calls) = serve(in_code).await;
    let from_config = run(&config_base, &from_config_cache).await;
    let from_code = run(&code_base, &in_code_cache).await;

    // The same answers, step by step.
    for (i, (a, b)) in from_config.iter().zip(&from_code).enumerate() {
        assert_eq!(
            (a.status, &a.decision, &a.body),
            (b.status, &b.decision, &b.body),
            "step {i}: {:?}",
            SCRIPT[i]
        );
        // A ttl counts down with the clock: equal within the second the
        // two runs may straddle.
        match (a.ttl, b.ttl) {
            (Some(x), Some(y)) => assert!((x - y).abs() <= 1, "step {i}: ttl {x} and {y}"),
            (x, y) => assert_eq!(x, y, "step {i}"),
        }
    }
    assert_eq!(
        config_calls.load(Ordering::SeqCst),
        code_calls.load(Ordering::SeqCst)
    );

    // What each step shows: the answer the options mean, so that equal is
    // not trivially equal, and so that an option the config's builder
    // dropped (its default takes over) changes an answer.
    let d: Vec<&str> = from_config.iter().map(|s| s.decision.as_str()).collect();
    let miss_stored = "edge; fwd=miss; stored";
    let miss = "edge; fwd=miss";
    assert_eq!(d[0], miss_stored, "{d:?}");
    assert_eq!(d[1], "edge; hit");
    assert_eq!(from_config[1].body, from_config[0].body);
    assert_eq!(d[2], miss_stored);
    assert_eq!(
        (from_config[3].status, d[3]),
        (304, "edge; hit"),
        "the client's If-None-Match answered from the cache"
    );
    assert_eq!(
        (from_config[4].status, d[4]),
        (200, "edge; fwd=request; fwd-status=304; stored"),
        "no-cache: revalidated with the stored ETag"
    );
    assert_eq!(from_config[4].body, from_config[2].body);
    assert_eq!(d[5], miss_stored);
    assert_eq!(d[6], miss_stored, "another Accept-Language, another variant");
    assert_eq!(d[7], "edge; hit");
    assert!(from_config[7].body.ends_with("lang=fr"));
    assert_eq!([d[8], d[9]], [miss, miss], "no-store");
    assert_eq!(
        [d[10], d[11]],
        [miss_stored, "edge; hit"],
        "private_cache: `private` is stored"
    );
    assert_eq!(
        [d[12], d[13], d[14]],
        [miss_stored, "edge; hit", miss_stored],
        "private_cache: Authorization is stored and keyed"
    );
    assert!(from_config[14].body.ends_with("auth=Bearer b"));
    assert_eq!([d[15], d[16]], [miss_stored, "edge; hit"]);
    let long = from_config[16].ttl.unwrap();
    assert!(
        (18..=20).contains(&long),
        "heuristic_max: half of 100 s capped at 20 s, got ttl={long}"
    );
    assert_eq!([d[17], d[18]], [miss_stored, "edge; hit"]);
    let short = from_config[18].ttl.unwrap();
    assert!(
        (13..=15).contains(&short),
        "heuristic_fraction: half of 30 s, got ttl={short}"
    );
    assert_eq!(
        [d[19], d[20]],
        [miss_stored, "edge; hit"],
        "targeted_fields: CDN-Cache-Control overrides no-store"
    );
    assert_eq!([d[21], d[22]], [miss, miss], "max_body_size: too big to store");
    assert_eq!(
        [d[23], d[24], d[25]],
        [miss_stored, miss_stored, "edge; hit"],
        "key_fields: X-Forwarded-Proto is in the key"
    );
    assert!(from_config[25].body.ends_with("proto=http"));
    assert_eq!([d[26], d[27]], [miss, miss], "refuse_set_cookie");
    assert_eq!(d[29], miss_stored, "the POST invalidated /fresh");

    // Both caches hold the same entries under the same keys, with the same
    // lifetimes.
    let config_entries = entries(&from_config_cache).await;
    let code_entries = entries(&in_code_cache).await;
    assert_eq!(
        config_entries.keys().collect::<Vec<_>>(),
        code_entries.keys().collect::<Vec<_>>()
    );
    for (key, (path, kept)) in &config_entries {
        let (code_path, code_kept) = &code_entries[key];
        assert_eq!(path, code_path, "{key}");
        assert_eq!(
            (kept.stale_while_revalidate, kept.kept_stale),
            (code_kept.stale_while_revalidate, code_kept.kept_stale),
            "{path}"
        );
        assert!(
            kept.fresh.abs_diff(code_kept.fresh) <= 1,
            "{path}: {kept:?} {code_kept:?}"
        );
        // A private cache keys every request by its credentials: every key
        // is a digest.
        assert!(key.contains(":#"), "{key}");
    }
    let mut paths: Vec<&str> = config_entries.values().map(|(p, _)| p.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/auth",
            "/auth",
            "/etag",
            "/forwarded",
            "/forwarded",
            "/fresh",
            "/heuristic/long",
            "/heuristic/short",
            "/private",
            "/targeted",
            "/vary",
            "/vary",
        ]
    );
    let kept = |path: &str| &config_entries.values().find(|(p, _)| p == path).unwrap().1;
    assert_eq!(
        kept("/fresh").kept_stale,
        30,
        "stale_if_disconnected: an entry without a validator is kept for the grace window"
    );
    assert_eq!(
        kept("/etag").kept_stale,
        7200,
        "keep_stale: an entry with a validator is kept two hours"
    );
    assert!((19..=20).contains(&kept("/heuristic/long").fresh));
    assert!((14..=15).contains(&kept("/heuristic/short").fresh));
}
