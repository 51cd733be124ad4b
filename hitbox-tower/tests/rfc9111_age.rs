//! RFC 9111 section 4.2.3 and 5.1: the age of a stored response.

mod support;

use support::setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_grows_with_residence_and_starts_from_the_upstream_age() {
    let p = setup().await;
    p.origin
        .reply("/a", 200, &[("cache-control", "max-age=60"), ("age", "30")], "x");
    p.get("/a", &[]).await;
    p.stores(1).await;
    let hit = p.get("/a", &[]).await;
    assert_eq!(hit.age(), 30);
    assert_eq!(hit.cache_status(), "hitbox; hit; ttl=30");
    p.advance(20);
    assert_eq!(p.get("/a", &[]).await.age(), 50);
    p.advance(10);
    p.get("/a", &[]).await;
    assert_eq!(p.origin.calls(), 2, "stale once age reaches max-age");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_far_in_the_past_counts_as_age() {
    let p = setup().await;
    let old = p.date(-3_600);
    p.origin.reply(
        "/old",
        200,
        &[("cache-control", "max-age=600"), ("date", &old)],
        "x",
    );
    p.origin.reply(
        "/older",
        200,
        &[("cache-control", "max-age=7200"), ("date", &old)],
        "x",
    );
    p.get("/old", &[]).await;
    p.get("/old", &[]).await;
    assert_eq!(p.origin.calls(), 2, "already older than its max-age");
    p.get("/older", &[]).await;
    p.stores(1).await;
    let hit = p.get("/older", &[]).await;
    assert_eq!(hit.age(), 3_600);
    assert_eq!(hit.cache_status(), "hitbox; hit; ttl=3600");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_in_the_future_gives_no_negative_age() {
    let p = setup().await;
    let future = p.date(3_600);
    p.origin.reply(
        "/f",
        200,
        &[("cache-control", "max-age=60"), ("date", &future)],
        "x",
    );
    p.get("/f", &[]).await;
    p.stores(1).await;
    assert_eq!(p.get("/f", &[]).await.age(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_age_is_ignored_and_huge_age_is_stale() {
    let p = setup().await;
    p.origin.reply(
        "/neg",
        200,
        &[("cache-control", "max-age=60"), ("age", "-5")],
        "x",
    );
    p.origin.reply(
        "/huge",
        200,
        &[("cache-control", "max-age=60"), ("age", "99999999999999999999")],
        "x",
    );
    p.get("/neg", &[]).await;
    p.stores(1).await;
    let hit = p.get("/neg", &[]).await;
    assert_eq!(hit.age(), 0);
    assert!(hit.cache_status().contains("hit"));
    p.get("/huge", &[]).await;
    p.get("/huge", &[]).await;
    assert_eq!(p.origin.calls(), 3);
}
