//! RFC 9111 section 4.2.4: serving stale when the origin cannot be reached.
//! The layer sits in front of a reqwest client talking to the scripted
//! origin over TCP; the origin's port is then closed.

mod support;

use std::time::Duration;

use hitbox_tower::rfc9111::Rfc9111;
use http::StatusCode;
use support::gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_response_stands_in_for_an_unreachable_origin_within_the_grace_window() {
    let g = gateway(Rfc9111::new()).await;
    g.origin
        .reply("/r", 200, &[("cache-control", "max-age=10")], "kept");
    g.get("/r").await.unwrap();
    g.stores(1).await;
    g.stop_origin().await;
    // Fresh: no origin needed.
    assert!(g.get("/r").await.unwrap().cache_status().contains("; hit"));
    g.advance(15);
    let stale = g.get("/r").await.unwrap();
    assert_eq!((stale.status, stale.body.as_str()), (StatusCode::OK, "kept"));
    assert_eq!(
        stale.cache_status(),
        "hitbox; fwd=stale; ttl=-5; detail=stale-if-disconnected"
    );
    assert_eq!(stale.age(), 15);
    // Past the default grace (10 s of staleness), the error goes on.
    g.advance(6);
    assert!(g.get("/r").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_window_is_configured() {
    let g = gateway(Rfc9111::new().stale_if_disconnected(Duration::from_secs(120))).await;
    g.origin
        .reply("/r", 200, &[("cache-control", "max-age=10")], "kept");
    g.get("/r").await.unwrap();
    g.stores(1).await;
    g.stop_origin().await;
    g.advance(100);
    let stale = g.get("/r").await.unwrap();
    assert_eq!(stale.body, "kept");
    assert!(stale.cache_status().contains("detail=stale-if-disconnected"));

    let off = gateway(Rfc9111::new().stale_if_disconnected(Duration::ZERO)).await;
    off.origin
        .reply("/r", 200, &[("cache-control", "max-age=10")], "kept");
    off.origin.reply(
        "/e",
        200,
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        "kept",
    );
    off.get("/r").await.unwrap();
    off.get("/e").await.unwrap();
    off.stores(2).await;
    off.stop_origin().await;
    off.advance(11);
    assert!(off.get("/r").await.is_err());
    // Kept for revalidation, but still not served when turned off.
    assert!(off.get("/e").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_forbid_serving_stale_get_504() {
    for cc in [
        "max-age=10, must-revalidate",
        "max-age=10, proxy-revalidate",
        "s-maxage=10",
        "no-cache",
    ] {
        let g = gateway(Rfc9111::new()).await;
        g.origin
            .reply("/r", 200, &[("cache-control", cc), ("etag", "\"v1\"")], "kept");
        g.get("/r").await.unwrap();
        g.stores(1).await;
        g.stop_origin().await;
        g.advance(11);
        let got = g.get("/r").await.unwrap();
        assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{cc}");
        assert_eq!(
            got.cache_status(),
            "hitbox; fwd=stale; detail=origin-unreachable",
            "{cc}"
        );
        assert!(!got.body.contains("kept"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_stored_means_the_error_goes_on() {
    let g = gateway(Rfc9111::new()).await;
    g.stop_origin().await;
    assert!(g.get("/never").await.is_err());
}
