//! RFC 9111 section 3: what a shared cache stores.

mod support;

use http::{Method, StatusCode};
use support::setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_freshness_is_stored_and_served_with_cache_status() {
    let p = setup().await;
    p.origin.reply("/a", 200, &[("cache-control", "max-age=60")], "A");
    let first = p.get("/a", &[]).await;
    assert_eq!(first.cache_status(), "hitbox; fwd=miss; stored");
    p.stores(1).await;
    p.advance(10);
    let second = p.get("/a", &[]).await;
    assert_eq!(second.body, "A");
    assert_eq!(second.cache_status(), "hitbox; hit; ttl=50");
    assert_eq!(second.age(), 10);
    assert_eq!(p.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_and_private_responses_are_not_stored() {
    let p = setup().await;
    p.origin
        .reply("/ns", 200, &[("cache-control", "max-age=60, no-store")], "x");
    p.origin
        .reply("/pr", 200, &[("cache-control", "private, max-age=60")], "x");
    for path in ["/ns", "/pr"] {
        let first = p.get(path, &[]).await;
        assert_eq!(first.cache_status(), "hitbox; fwd=miss");
        p.get(path, &[]).await;
    }
    assert_eq!(p.origin.calls(), 4);
    assert_eq!(p.cache.stats().stores, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualified_private_stores_the_response_without_the_named_field() {
    let p = setup().await;
    p.origin.reply(
        "/q",
        200,
        &[
            ("cache-control", "max-age=60, private=\"x-user\""),
            ("x-user", "alice"),
        ],
        "x",
    );
    assert_eq!(p.get("/q", &[]).await.header("x-user"), Some("alice"));
    p.stores(1).await;
    let hit = p.get("/q", &[]).await;
    assert!(hit.cache_status().contains("hit"));
    assert_eq!(hit.header("x-user"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_authorization_are_stored_only_when_the_response_allows_sharing() {
    let p = setup().await;
    let auth = [("authorization", "Bearer t")];
    p.origin
        .reply("/private", 200, &[("cache-control", "max-age=60")], "x");
    p.get("/private", &auth).await;
    p.get("/private", &auth).await;
    assert_eq!(p.origin.calls(), 2);
    p.origin
        .reply("/shared", 200, &[("cache-control", "public, max-age=60")], "x");
    p.get("/shared", &auth).await;
    p.stores(1).await;
    assert!(p.get("/shared", &auth).await.cache_status().contains("hit"));
    assert_eq!(p.origin.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_308_is_cacheable_by_default_but_a_302_is_not() {
    let p = setup().await;
    let modified = p.date(-10_000);
    p.origin.reply(
        "/moved",
        308,
        &[("location", "/new"), ("last-modified", &modified)],
        "",
    );
    p.origin.reply(
        "/found",
        302,
        &[("location", "/new"), ("last-modified", &modified)],
        "",
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("http://{}{}", p.addr, path);
    client.get(url("/moved")).send().await.unwrap();
    p.stores(1).await;
    let again = client.get(url("/moved")).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::PERMANENT_REDIRECT);
    assert!(again.headers()["cache-status"].to_str().unwrap().contains("hit"));
    client.get(url("/found")).send().await.unwrap();
    client.get(url("/found")).send().await.unwrap();
    assert_eq!(p.origin.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_extensions_are_ignored_and_hop_by_hop_fields_never_stored() {
    let p = setup().await;
    p.origin.reply(
        "/ext",
        200,
        &[
            ("cache-control", "community=\"a, b\", max-age=60, x-ext"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("x-kept", "1"),
        ],
        "x",
    );
    let miss = p.get("/ext", &[]).await;
    assert_eq!(miss.header("x-hop"), None);
    assert_eq!(miss.header("x-kept"), Some("1"));
    p.stores(1).await;
    let hit = p.get("/ext", &[]).await;
    assert!(hit.cache_status().contains("hit"));
    assert_eq!(hit.header("x-hop"), None);
    assert_eq!(hit.header("x-kept"), Some("1"));
    assert_eq!(p.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_pass_through_with_cache_status() {
    let p = setup().await;
    p.origin
        .reply("/opt", 200, &[("cache-control", "max-age=60")], "x");
    for _ in 0..2 {
        let got = p.send(Method::OPTIONS, "/opt", &[]).await;
        assert_eq!(got.cache_status(), "hitbox; fwd=bypass; detail=method");
    }
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_from_the_stored_get_and_never_stored_itself() {
    let p = setup().await;
    p.origin
        .reply("/h", 200, &[("cache-control", "max-age=60")], "hello");
    let head = p.send(Method::HEAD, "/h", &[]).await;
    assert_eq!(head.cache_status(), "hitbox; fwd=miss");
    p.get("/h", &[]).await;
    p.stores(1).await;
    let head = p.send(Method::HEAD, "/h", &[]).await;
    assert!(head.cache_status().contains("hit"));
    assert_eq!(head.header("content-length"), Some("5"));
    assert_eq!(head.body, "");
    assert_eq!(p.origin.calls(), 2);
    assert_eq!(p.cache.stats().stores, 1);
}
