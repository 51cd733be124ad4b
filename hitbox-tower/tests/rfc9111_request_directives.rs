//! RFC 9111 section 5.2.1: request directives.

mod support;

use http::StatusCode;
use support::{Proxy, setup};

/// A stored response, fresh for 60 s, with an `ETag` so it is kept when
/// stale.
async fn stored() -> Proxy {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
        "x",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_goes_to_the_origin_with_validators() {
    let p = stored().await;
    p.origin.reply("/r", 304, &[("etag", "\"v1\"")], "");
    let got = p.get("/r", &[("cache-control", "no-cache")]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "x");
    assert_eq!(got.cache_status(), "hitbox; fwd=request; fwd-status=304; stored");
    assert_eq!(p.origin.calls(), 2);
    assert_eq!(p.origin.last().headers["if-none-match"], "\"v1\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_in_the_request_keeps_the_response_out_of_the_cache() {
    let p = setup().await;
    p.origin.reply("/r", 200, &[("cache-control", "max-age=60")], "x");
    let got = p.get("/r", &[("cache-control", "no-store")]).await;
    assert_eq!(got.cache_status(), "hitbox; fwd=miss");
    p.get("/r", &[]).await;
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_and_min_fresh_limit_what_is_served() {
    let p = stored().await;
    p.advance(10);
    assert!(
        p.get("/r", &[("cache-control", "max-age=20")])
            .await
            .cache_status()
            .contains("hit")
    );
    assert!(
        p.get("/r", &[("cache-control", "min-fresh=40")])
            .await
            .cache_status()
            .contains("hit")
    );
    assert_eq!(p.origin.calls(), 1);
    p.get("/r", &[("cache-control", "max-age=5")]).await;
    assert_eq!(p.origin.calls(), 2);
    // That response replaced the stored one: fresh for 60 s from now.
    p.stores(2).await;
    assert!(
        p.get("/r", &[("cache-control", "min-fresh=55")])
            .await
            .cache_status()
            .contains("hit")
    );
    p.get("/r", &[("cache-control", "min-fresh=61")]).await;
    assert_eq!(p.origin.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_stale_accepts_stale_responses_within_its_limit() {
    let p = stored().await;
    p.advance(70);
    let got = p.get("/r", &[("cache-control", "max-stale=20")]).await;
    assert_eq!(got.cache_status(), "hitbox; hit; ttl=-10");
    assert!(
        p.get("/r", &[("cache-control", "max-stale")])
            .await
            .cache_status()
            .contains("hit")
    );
    assert_eq!(p.origin.calls(), 1);
    p.get("/r", &[("cache-control", "max-stale=5")]).await;
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_is_a_504_without_a_usable_response() {
    let p = setup().await;
    let got = p.get("/r", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(got.cache_status(), "hitbox; detail=only-if-cached");
    assert_eq!(p.origin.calls(), 0);
    let p = stored().await;
    assert_eq!(
        p.get("/r", &[("cache-control", "only-if-cached")]).await.status,
        StatusCode::OK
    );
    p.advance(61);
    let stale = p.get("/r", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(stale.status, StatusCode::GATEWAY_TIMEOUT);
    let allowed = p
        .get("/r", &[("cache-control", "only-if-cached, max-stale")])
        .await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(p.origin.calls(), 1);
}
