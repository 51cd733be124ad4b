//! RFC 9111 section 4.3 (validation), 5.2.2 (`must-revalidate`,
//! `no-cache`), and RFC 5861 (`stale-while-revalidate`, `stale-if-error`).

mod support;

use http::{Method, StatusCode};
use support::{setup, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_revalidated_with_its_etag_and_a_304_refreshes_it() {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[
            ("cache-control", "max-age=10"),
            ("etag", "\"v1\""),
            ("x-version", "1"),
        ],
        "body",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.advance(15);
    p.origin.reply(
        "/r",
        304,
        &[
            ("cache-control", "max-age=100"),
            ("etag", "\"v1\""),
            ("x-version", "2"),
        ],
        "",
    );
    let got = p.get("/r", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "body");
    assert_eq!(got.header("x-version"), Some("2"));
    assert_eq!(got.cache_status(), "hitbox; fwd=stale; fwd-status=304; stored");
    assert_eq!(p.origin.last().headers["if-none-match"], "\"v1\"");
    p.stores(2).await;
    p.advance(50);
    let hit = p.get("/r", &[]).await;
    assert_eq!(hit.cache_status(), "hitbox; hit; ttl=50");
    assert_eq!(hit.header("x-version"), Some("2"));
    assert_eq!(hit.body, "body");
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_modified_is_sent_as_if_modified_since() {
    let p = setup().await;
    let modified = p.date(-100_000);
    p.origin.reply(
        "/r",
        200,
        &[("cache-control", "max-age=10"), ("last-modified", &modified)],
        "x",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.advance(11);
    p.origin.reply("/r", 304, &[], "");
    assert_eq!(p.get("/r", &[]).await.body, "x");
    let seen = p.origin.last();
    assert_eq!(seen.headers["if-modified-since"], modified.as_str());
    assert!(!seen.headers.contains_key("if-none-match"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_without_validators_refreshes_the_one_stored_response() {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        "x",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.advance(11);
    p.origin.reply("/r", 304, &[("cache-control", "max-age=30")], "");
    let got = p.get("/r", &[]).await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "x"));
    p.stores(2).await;
    assert!(p.get("/r", &[]).await.cache_status().contains("hit"));
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_for_another_etag_leads_to_an_unconditional_request() {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        "x",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.advance(11);
    p.origin.reply("/r", 304, &[("etag", "\"v9\"")], "");
    p.get("/r", &[]).await;
    assert_eq!(p.origin.calls(), 3);
    assert!(!p.origin.last().headers.contains_key("if-none-match"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_conditional_request_is_answered_304_from_a_fresh_entry() {
    let p = setup().await;
    let modified = p.date(-1_000);
    p.origin.reply(
        "/r",
        200,
        &[
            ("cache-control", "max-age=60"),
            ("etag", "W/\"v1\""),
            ("last-modified", &modified),
        ],
        "x",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    let got = p.get("/r", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.header("etag"), Some("W/\"v1\""));
    assert!(got.cache_status().contains("hit"));
    let since = p.date(0);
    let got = p.get("/r", &[("if-modified-since", &since)]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    let other = p.get("/r", &[("if-none-match", "\"v2\"")]).await;
    assert_eq!((other.status, other.body.as_str()), (StatusCode::OK, "x"));
    assert_eq!(p.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_responses_are_revalidated_every_time() {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
        "x",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.origin.reply("/r", 304, &[("etag", "\"v1\"")], "");
    for expected in 2..4 {
        let got = p.get("/r", &[]).await;
        assert_eq!(got.body, "x");
        assert_eq!(p.origin.calls(), expected);
        assert_eq!(p.origin.last().headers["if-none-match"], "\"v1\"");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_with_a_field_name_keeps_that_field_out_of_the_cache() {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[
            ("cache-control", "max-age=60, no-cache=\"x-secret\""),
            ("x-secret", "s"),
        ],
        "x",
    );
    assert_eq!(p.get("/r", &[]).await.header("x-secret"), Some("s"));
    p.stores(1).await;
    let hit = p.get("/r", &[]).await;
    assert!(hit.cache_status().contains("hit"));
    assert_eq!(hit.header("x-secret"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_and_proxy_revalidate_forbid_stale_responses() {
    for directive in ["must-revalidate", "proxy-revalidate"] {
        let p = setup().await;
        let cc = format!("max-age=10, {directive}, stale-if-error=600");
        p.origin
            .reply("/r", 200, &[("cache-control", &cc), ("etag", "\"v1\"")], "x");
        p.get("/r", &[]).await;
        p.stores(1).await;
        p.advance(20);
        p.origin.reply("/r", 500, &[], "down");
        let got = p.get("/r", &[("cache-control", "max-stale")]).await;
        assert_eq!(got.status, StatusCode::INTERNAL_SERVER_ERROR, "{directive}");
        assert_eq!(p.origin.calls(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_origin_errors_with_the_stale_response() {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[("cache-control", "max-age=10, stale-if-error=60")],
        "x",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.advance(30);
    p.origin.reply("/r", 503, &[], "down");
    let got = p.get("/r", &[]).await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "x"));
    assert_eq!(
        got.cache_status(),
        "hitbox; fwd=stale; fwd-status=503; ttl=-20; detail=stale-if-error"
    );
    p.advance(50);
    assert_eq!(p.get("/r", &[]).await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[
            ("cache-control", "max-age=10, stale-while-revalidate=30"),
            ("etag", "\"v1\""),
        ],
        "old",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.advance(15);
    p.origin.reply(
        "/r",
        200,
        &[
            ("cache-control", "max-age=10, stale-while-revalidate=30"),
            ("etag", "\"v2\""),
        ],
        "new",
    );
    let got = p.get("/r", &[]).await;
    assert_eq!(got.body, "old");
    assert_eq!(got.cache_status(), "hitbox; hit; ttl=-5");
    until(|| p.origin.calls() == 2).await;
    assert_eq!(p.origin.last().headers["if-none-match"], "\"v1\"");
    p.stores(2).await;
    let fresh = p.get("/r", &[]).await;
    assert_eq!(fresh.body, "new");
    assert!(fresh.cache_status().contains("hit"));
}

/// A background refresh stores as a load does: an invalidation of the URL
/// (here a `DELETE` through the cache) that lands while the refresh waits
/// for the origin wins, and what the refresh brings back is not kept. A
/// later client gets the origin's answer, not the refresh's.
async fn a_refresh_racing_an_invalidation(refreshed_status: u16) {
    let p = setup().await;
    let headers = [
        ("cache-control", "max-age=10, stale-while-revalidate=30"),
        ("etag", "\"v1\""),
    ];
    p.origin.reply("/r", 200, &headers, "old");
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.advance(15);
    // The refresh gets a new body, or a 304 that would freshen the old one.
    let body = if refreshed_status == 304 { "" } else { "refreshed" };
    p.origin.reply("/r", refreshed_status, &headers, body);
    p.origin.hold_method(Method::GET);
    let stale = p.get("/r", &[]).await;
    assert_eq!(stale.body, "old");
    assert_eq!(stale.cache_status(), "hitbox; hit; ttl=-5");
    until(|| p.origin.calls() == 2).await;

    // The DELETE is answered at once (only GETs are held) and invalidates.
    p.origin.reply_to(Method::DELETE, "/r", 200, &[], "deleted");
    let deleted = p.send(Method::DELETE, "/r", &[]).await;
    assert!(deleted.status.is_success(), "{}", deleted.status);
    assert_eq!(p.origin.calls(), 3);
    let finished = || {
        let stats = p.cache.stats();
        stats.loads_succeeded + stats.load_errors
    };
    let before = finished();
    p.origin.release();
    until(|| finished() > before).await;

    p.origin.reply("/r", 200, &headers, "after");
    let after = p.get("/r", &[]).await;
    assert_eq!(after.body, "after");
    assert!(
        after.cache_status().contains("fwd=miss"),
        "{}",
        after.cache_status()
    );
    assert_eq!(p.origin.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_races_an_invalidation_is_not_stored() {
    a_refresh_racing_an_invalidation(200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revalidation_in_the_background_that_races_an_invalidation_is_not_stored() {
    a_refresh_racing_an_invalidation(304).await;
}

/// A `304` refreshes the stored entry's lifetime and headers, not what
/// tags it: the surrogate keys its `200` brought still reach it, whether
/// the `304` answered a client's request or a background refresh.
async fn a_304_keeps_the_surrogate_keys(cache_control: &str, in_background: bool) {
    use hitbox_backend::PurgeMode;
    use hitbox_core::Tag;
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[
            ("cache-control", cache_control),
            ("etag", "\"v1\""),
            ("surrogate-key", "product-1"),
        ],
        "body",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.advance(15);
    // The `304` names a surrogate key too: it is stripped from what is
    // stored, so that no hit ever passes it on.
    p.origin.reply(
        "/r",
        304,
        &[
            ("cache-control", cache_control),
            ("etag", "\"v1\""),
            ("surrogate-key", "from-the-304"),
        ],
        "",
    );
    let got = p.get("/r", &[]).await;
    assert_eq!(got.body, "body");
    if in_background {
        assert_eq!(got.cache_status(), "hitbox; hit; ttl=-5");
    } else {
        assert_eq!(got.cache_status(), "hitbox; fwd=stale; fwd-status=304; stored");
    }
    assert_eq!(got.headers.get("surrogate-key"), None);
    p.stores(2).await;
    assert_eq!(p.origin.calls(), 2);
    let hit = p.get("/r", &[]).await;
    assert!(
        hit.cache_status().starts_with("hitbox; hit; ttl="),
        "{}",
        hit.cache_status()
    );
    assert_eq!(
        hit.headers.get("surrogate-key"),
        None,
        "the refreshed entry holds none"
    );
    let purged = p
        .cache
        .purge_tag(&Tag::new("product-1"), PurgeMode::Hard)
        .await
        .unwrap();
    assert_eq!(purged, 1, "the refreshed entry still has its tag");
    let after = p.get("/r", &[]).await;
    assert!(
        after.cache_status().contains("fwd=miss"),
        "{}",
        after.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_keeps_the_surrogate_keys_of_the_entry_it_refreshes() {
    a_304_keeps_the_surrogate_keys("max-age=10", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_in_the_background_keeps_the_surrogate_keys() {
    a_304_keeps_the_surrogate_keys("max-age=10, stale-while-revalidate=30", true).await;
}
