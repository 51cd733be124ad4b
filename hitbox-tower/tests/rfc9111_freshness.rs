//! RFC 9111 section 4.2.1 and 4.2.2: freshness lifetime, explicit and
//! heuristic, and RFC 9213 targeted fields.

mod support;

use hitbox_tower::rfc9111::Rfc9111;
use support::{setup, setup_with};

/// Requests `path` twice, `gap` seconds apart; how many reached the origin.
async fn calls_for(cache_control: &[(&str, &str)], gap: u64) -> usize {
    let p = setup().await;
    p.origin.reply("/r", 200, cache_control, "x");
    // Cache-Status says whether the response is being stored.
    if p.get("/r", &[]).await.cache_status().ends_with("stored") {
        p.stores(1).await;
    }
    p.advance(gap);
    p.get("/r", &[]).await;
    p.origin.calls()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_counts_and_max_age_zero_is_stale_at_once() {
    assert_eq!(calls_for(&[("cache-control", "max-age=60")], 59).await, 1);
    assert_eq!(calls_for(&[("cache-control", "max-age=60")], 60).await, 2);
    assert_eq!(calls_for(&[("cache-control", "max-age=0")], 0).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_duplicate_max_age_make_the_response_stale_but_quoted_is_accepted() {
    assert_eq!(calls_for(&[("cache-control", "max-age=+60")], 1).await, 2);
    assert_eq!(
        calls_for(&[("cache-control", "max-age=60, max-age=30")], 1).await,
        2
    );
    assert_eq!(calls_for(&[("cache-control", "max-age=\"60\"")], 30).await, 1);
    assert_eq!(calls_for(&[("cache-control", "MAX-AGE=60")], 30).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_maxage_wins_over_max_age_in_a_shared_cache() {
    assert_eq!(
        calls_for(&[("cache-control", "max-age=10, s-maxage=60")], 30).await,
        1
    );
    assert_eq!(
        calls_for(&[("cache-control", "max-age=60, s-maxage=10")], 30).await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_counts_from_date_and_invalid_expires_is_already_expired() {
    let p = setup().await;
    let (date, expires) = (p.date(0), p.date(30));
    p.origin
        .reply("/e", 200, &[("date", &date), ("expires", &expires)], "x");
    p.get("/e", &[]).await;
    p.stores(1).await;
    p.advance(20);
    assert!(p.get("/e", &[]).await.cache_status().contains("hit"));
    p.advance(11);
    p.get("/e", &[]).await;
    assert_eq!(p.origin.calls(), 2);

    assert_eq!(calls_for(&[("expires", "0")], 0).await, 2);
    // max-age wins over Expires.
    let p = setup().await;
    let past = p.date(-10);
    p.origin.reply(
        "/m",
        200,
        &[("expires", &past), ("cache-control", "max-age=60")],
        "x",
    );
    p.get("/m", &[]).await;
    p.stores(1).await;
    assert!(p.get("/m", &[]).await.cache_status().contains("hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_only_with_last_modified() {
    // No freshness information at all: nothing of the cache's own.
    assert_eq!(calls_for(&[], 0).await, 2);
    let p = setup().await;
    let (date, modified) = (p.date(0), p.date(-1_000));
    p.origin
        .reply("/h", 200, &[("date", &date), ("last-modified", &modified)], "x");
    p.get("/h", &[]).await;
    p.stores(1).await;
    p.advance(90);
    assert!(p.get("/h", &[]).await.cache_status().contains("hit"));
    p.advance(20);
    let again = p.get("/h", &[]).await;
    assert!(again.cache_status().contains("fwd="), "{}", again.cache_status());
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristics_can_be_turned_off() {
    let p = setup_with(Rfc9111::new().heuristic_fraction(0.0)).await;
    let modified = p.date(-1_000);
    p.origin.reply("/h", 200, &[("last-modified", &modified)], "x");
    p.get("/h", &[]).await;
    p.get("/h", &[]).await;
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_fields_take_precedence_and_only_cdn_cache_control_reaches_the_client() {
    let config = Rfc9111::new()
        .targeted_field("cdn-cache-control")
        .targeted_field("surrogate-control");
    let p = setup_with(config).await;
    p.origin.reply(
        "/cdn",
        200,
        &[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")],
        "x",
    );
    p.origin.reply(
        "/sur",
        200,
        &[
            ("cache-control", "max-age=600"),
            ("surrogate-control", "max-age=5"),
        ],
        "x",
    );
    let first = p.get("/cdn", &[]).await;
    // Meant for every CDN in a chain: passed on.
    assert_eq!(first.header("cdn-cache-control"), Some("max-age=60"));
    assert_eq!(first.header("cache-control"), Some("no-store"));
    p.get("/sur", &[]).await;
    p.stores(2).await;
    p.advance(10);
    let hit = p.get("/cdn", &[]).await;
    assert!(hit.cache_status().contains("; hit"));
    assert_eq!(hit.header("cdn-cache-control"), Some("max-age=60"));
    let stale = p.get("/sur", &[]).await;
    assert_eq!(stale.header("surrogate-control"), None);
    assert_eq!(p.origin.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_field_that_is_not_a_valid_dictionary_is_ignored_whole() {
    let config = Rfc9111::new().targeted_field("cdn-cache-control");
    let p = setup_with(config).await;
    // Valid, it would make the response storable for a minute; ignored,
    // Cache-Control's no-store applies.
    for (i, cdn) in [
        "max-age=\"10000\"",
        "&&&",
        "max-age=60, no-store=1",
        "max-age=1.5",
        "Max-Age=60",
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/bad/{i}");
        p.origin.reply(
            &path,
            200,
            &[("cache-control", "no-store"), ("cdn-cache-control", cdn)],
            "x",
        );
        p.get(&path, &[]).await;
        let again = p.get(&path, &[]).await;
        assert_eq!(again.cache_status(), "hitbox; fwd=miss", "{cdn}");
    }
    // A valid one, with members this cache does not know, applies.
    p.origin.reply(
        "/good",
        200,
        &[
            ("cache-control", "no-store"),
            (
                "cdn-cache-control",
                "max-age=60, x-vendor=\"a\", private=(\"x-secret\")",
            ),
            ("x-secret", "s"),
        ],
        "x",
    );
    assert_eq!(p.get("/good", &[]).await.header("x-secret"), Some("s"));
    p.stores(1).await;
    let hit = p.get("/good", &[]).await;
    assert!(hit.cache_status().contains("; hit"));
    assert_eq!(hit.header("x-secret"), None);
}
