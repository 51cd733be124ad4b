//! RFC 9111 section 4.4: unsafe methods invalidate.

mod support;

use http::Method;
use support::{Proxy, setup};

async fn cached(p: &Proxy, path: &str) {
    p.origin
        .reply(path, 200, &[("cache-control", "max-age=600")], "x");
    let before = p.cache.stats().stores;
    p.get(path, &[]).await;
    p.stores(before + 1).await;
    assert!(p.get(path, &[]).await.cache_status().contains("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_unsafe_methods_invalidate_the_target() {
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let p = setup().await;
        cached(&p, "/items").await;
        let got = p.send(method.clone(), "/items", &[]).await;
        assert_eq!(got.cache_status(), "hitbox; fwd=bypass; detail=method");
        let after = p.get("/items", &[]).await;
        assert!(after.cache_status().contains("fwd=miss"), "{method}");
        assert_eq!(p.origin.calls(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_and_content_location_on_the_same_host_are_invalidated() {
    let p = setup().await;
    cached(&p, "/items/7").await;
    cached(&p, "/items/8").await;
    cached(&p, "/elsewhere").await;
    let absolute = format!("http://{}/items/8", p.addr);
    p.origin.reply(
        "/items",
        201,
        &[("location", "/items/7"), ("content-location", &absolute)],
        "",
    );
    p.send(Method::POST, "/items", &[]).await;
    assert!(p.get("/items/7", &[]).await.cache_status().contains("fwd=miss"));
    assert!(p.get("/items/8", &[]).await.cache_status().contains("fwd=miss"));
    assert!(p.get("/elsewhere", &[]).await.cache_status().contains("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_hosts_and_failed_requests_invalidate_nothing() {
    let p = setup().await;
    cached(&p, "/items/7").await;
    p.origin
        .reply("/items", 201, &[("location", "http://other.example/items/7")], "");
    p.send(Method::POST, "/items", &[]).await;
    assert!(p.get("/items/7", &[]).await.cache_status().contains("hit"));
    p.origin.reply("/items/7", 500, &[], "");
    p.send(Method::DELETE, "/items/7", &[]).await;
    assert!(p.get("/items/7", &[]).await.cache_status().contains("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_variant_is_invalidated() {
    let p = setup().await;
    p.origin.reply(
        "/v",
        200,
        &[("cache-control", "max-age=600"), ("vary", "accept")],
        "{accept}",
    );
    // One store per variant (the first is the URL's primary entry).
    p.get("/v", &[("accept", "a")]).await;
    p.stores(1).await;
    p.get("/v", &[("accept", "b")]).await;
    p.stores(2).await;
    p.origin.reply("/v", 204, &[], "");
    p.send(Method::PUT, "/v", &[]).await;
    p.origin.reply(
        "/v",
        200,
        &[("cache-control", "max-age=600"), ("vary", "accept")],
        "{accept}",
    );
    assert!(
        p.get("/v", &[("accept", "b")])
            .await
            .cache_status()
            .contains("fwd=miss")
    );
    p.stores(3).await;
    // A new primary entry for the URL must not bring the old variant back.
    assert!(
        p.get("/v", &[("accept", "a")])
            .await
            .cache_status()
            .contains("fwd=miss")
    );
}
