//! A layer built from a config file and the same layer built in code give
//! the same keys and the same decisions, over real TCP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use hitbox_backend::{Backend, Cache};
use hitbox_core::{CacheKey, CachePolicy, Extractor, Predicate};
use hitbox_moka::MokaBackend;
use hitbox_tower::predicate::{Header, Path, Status};
use hitbox_tower::{BodyKey, CacheLayer, Rule, extract};
use http::header::ACCEPT_LANGUAGE;

const CONFIG: &str = r#"
[[tiers]]
moka = { max_bytes = "16 MiB" }

[layer]
name = "edge"

[[rules]]
namespace = "items"
when = { path_prefix = "/items/", headers = [{ name = "x-no-cache", present = false }] }
key = ["method", "path", { query_named = ["page"] }, { header = "accept-language" }]
policy = { ttl = "1h", stale_while_revalidate = "30s" }
tags = ["items"]

[[rules]]
namespace = "search"
when = { path = "/search" }
post_as_read = "digest"
policy = { ttl = "1h" }

[[rules]]
namespace = "status"
when = { path_prefix = "/status/" }
store_when = { status = [200, 404] }
policy = { ttl = "1h" }
"#;

/// The same layer, in code.
fn code_layer() -> CacheLayer {
    let cache = Cache::new(MokaBackend::new(16 << 20));
    CacheLayer::builder(cache)
        .cache_name("edge")
        .rule(
            Rule::new()
                .namespace("items")
                .when(
                    Path::prefix("/items/")
                        .and(Header::present(http::HeaderName::from_static("x-no-cache")).not()),
                )
                .key(
                    extract::Method
                        .and(extract::Path)
                        .and(extract::Query::named(["page"]))
                        .and(extract::Header::named(ACCEPT_LANGUAGE)),
                )
                .policy(
                    CachePolicy::new(Duration::from_secs(3600))
                        .stale_while_revalidate(Duration::from_secs(30)),
                )
                .tag("items"),
        )
        .rule(
            Rule::new()
                .namespace("search")
                .when(Path::exact("/search"))
                .post_as_read(BodyKey::digest())
                .policy(CachePolicy::new(Duration::from_secs(3600))),
        )
        .rule(
            Rule::new()
                .namespace("status")
                .when(Path::prefix("/status/"))
                .store_when(Status::code(StatusCode::OK).or(Status::code(StatusCode::NOT_FOUND)))
                .policy(CachePolicy::new(Duration::from_secs(3600))),
        )
        .build()
}

/// An origin that counts its calls and says which call made a response.
async fn serve(layer: CacheLayer) -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&calls);
    let origin = move |method: Method, uri: Uri, body: Bytes| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let status = match uri.path() {
                "/status/404" => StatusCode::NOT_FOUND,
                "/status/500" => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::OK,
            };
            (status, format!("call {n}: {method} {uri} {}", body.len())).into_response()
        }
    };
    let app = Router::new().fallback(origin).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), calls)
}

/// The `Cache-Status` without its `ttl`, which depends on the second.
fn decision(headers: &HeaderMap) -> String {
    headers
        .get("cache-status")
        .map(|v| {
            v.to_str()
                .unwrap()
                .split("; ")
                .filter(|p| !p.starts_with("ttl="))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| "-".into())
}

/// The script both layers run: (method, path, extra header, body).
/// One request: method, path, an extra header, a body.
type Step = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    &'static str,
);

const SCRIPT: &[Step] = &[
    ("GET", "/items/1?page=2&utm=a", None, ""),
    ("GET", "/items/1?utm=b&page=2", None, ""),
    ("GET", "/items/1?page=3", None, ""),
    ("GET", "/items/1?page=2", Some(("x-no-cache", "1")), ""),
    ("GET", "/items/1?page=2", Some(("accept-language", "fr")), ""),
    ("GET", "/items/1?page=2", Some(("accept-language", "fr")), ""),
    ("POST", "/search", None, "q=a"),
    ("POST", "/search", None, "q=a"),
    ("POST", "/search", None, "q=b"),
    ("GET", "/status/404", None, ""),
    ("GET", "/status/404", None, ""),
    ("GET", "/status/500", None, ""),
    ("GET", "/status/500", None, ""),
    ("GET", "/elsewhere", None, ""),
    ("GET", "/elsewhere", None, ""),
];

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

async fn run(base: &str, cache: &Cache) -> Vec<(u16, String, String)> {
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    let mut stored = 0;
    for (method, path, header, body) in SCRIPT {
        let mut request = client.request(method.parse().unwrap(), format!("{base}{path}"));
        if let Some((name, value)) = header {
            request = request.header(*name, *value);
        }
        if !body.is_empty() {
            request = request.body(*body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let decision = decision(response.headers());
        let text = response.text().await.unwrap();
        // The next request must find the entry, not join its store.
        if decision.ends_with("; stored") {
            stored += 1;
            until(|| cache.stats().stores >= stored).await;
        }
        seen.push((status, decision, text));
    }
    seen
}

fn code_key(uri: &str, language: Option<&str>) -> CacheKey {
    let mut request = http::Request::get(uri);
    if let Some(language) = language {
        request = request.header(ACCEPT_LANGUAGE, language);
    }
    let (parts, ()) = request.body(()).unwrap().into_parts();
    let mut key = CacheKey::builder("items");
    extract::Method
        .and(extract::Path)
        .and(extract::Query::named(["page"]))
        .and(extract::Header::named(ACCEPT_LANGUAGE))
        .extract(&parts, &mut key);
    key.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_code_give_the_same_keys_and_decisions() {
    let built = hitbox_config::Config::from_toml_str("equivalence.toml", CONFIG)
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

    assert_eq!(from_config, from_code);
    assert_eq!(
        config_calls.load(Ordering::SeqCst),
        code_calls.load(Ordering::SeqCst)
    );

    // The decisions are the ones the rules mean, so that equal is not
    // trivially equal (both passing everything through, say).
    let decisions: Vec<&str> = from_config.iter().map(|(_, d, _)| d.as_str()).collect();
    assert!(decisions[0].contains("fwd=miss"), "{decisions:?}");
    assert_eq!(
        decisions[1], "edge; hit",
        "the ignored utm parameter shares the entry"
    );
    assert!(decisions[2].contains("fwd=miss"), "page is part of the key");
    assert_eq!(decisions[3], "edge; fwd=bypass", "x-no-cache: no rule applies");
    assert!(
        decisions[4].contains("fwd=miss"),
        "accept-language is part of the key"
    );
    assert_eq!(decisions[5], "edge; hit");
    assert!(decisions[6].contains("fwd=miss"));
    assert_eq!(decisions[7], "edge; hit", "the same POST body is a hit");
    assert!(decisions[8].contains("fwd=miss"), "another body is another key");
    assert_eq!(decisions[10], "edge; hit", "404 is stored under store_when");
    assert_eq!(decisions[11], "edge; fwd=miss", "500 is not stored");
    assert_eq!(
        decisions[12], "edge; fwd=bypass; detail=uncacheable",
        "then it passes for a while"
    );
    assert_eq!(decisions[14], "edge; fwd=bypass", "no rule for /elsewhere");
    assert_eq!(
        from_config[1].2, from_config[0].2,
        "the hit served the first call's body"
    );
    assert_eq!(config_calls.load(Ordering::SeqCst), 11);

    // Both caches hold the entries under the keys the code's extractors make.
    for (uri, language) in [
        ("/items/1?page=2&utm=a", None),
        ("/items/1?page=3", None),
        ("/items/1?page=2", Some("fr")),
    ] {
        let key = code_key(uri, language);
        assert!(
            from_config_cache.backend().read(&key).await.unwrap().is_some(),
            "{}",
            key.as_str()
        );
        assert!(
            in_code_cache.backend().read(&key).await.unwrap().is_some(),
            "{}",
            key.as_str()
        );
    }
    let absent = code_key("/items/1?page=9", None);
    assert!(from_config_cache.backend().read(&absent).await.unwrap().is_none());
}
