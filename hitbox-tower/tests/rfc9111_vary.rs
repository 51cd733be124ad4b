//! RFC 9111 section 4.1: `Vary`.

mod support;

use support::setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_of_one_url_are_stored_side_by_side() {
    let p = setup().await;
    p.origin.reply(
        "/v",
        200,
        &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        "lang={accept-language}",
    );
    assert_eq!(p.get("/v", &[("accept-language", "en")]).await.body, "lang=en");
    p.stores(1).await; // the URL's primary entry
    assert_eq!(p.get("/v", &[("accept-language", "fr")]).await.body, "lang=fr");
    p.stores(2).await; // a variant beside it
    let en = p.get("/v", &[("accept-language", "en")]).await;
    let fr = p.get("/v", &[("accept-language", "fr")]).await;
    assert_eq!((en.body.as_str(), fr.body.as_str()), ("lang=en", "lang=fr"));
    assert!(en.cache_status().contains("hit") && fr.cache_status().contains("hit"));
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_compared_after_whitespace_normalisation() {
    let p = setup().await;
    p.origin.reply(
        "/v",
        200,
        &[("cache-control", "max-age=60"), ("vary", "accept")],
        "x",
    );
    p.get("/v", &[("accept", "text/html,  application/json")]).await;
    p.stores(1).await;
    let hit = p.get("/v", &[("accept", "text/html, application/json")]).await;
    assert!(hit.cache_status().contains("hit"));
    // Order is meaningful: not normalised away.
    p.get("/v", &[("accept", "application/json, text/html")]).await;
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_header_only_matches_absent() {
    let p = setup().await;
    p.origin.reply(
        "/v",
        200,
        &[("cache-control", "max-age=60"), ("vary", "x-tenant")],
        "t={x-tenant}",
    );
    assert_eq!(p.get("/v", &[]).await.body, "t=-");
    p.stores(1).await;
    assert_eq!(p.get("/v", &[("x-tenant", "a")]).await.body, "t=a");
    assert_eq!(p.get("/v", &[("x-tenant", "")]).await.body, "t=");
    let again = p.get("/v", &[]).await;
    assert_eq!(again.body, "t=-");
    assert!(again.cache_status().contains("hit"));
    assert_eq!(p.origin.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_star_is_never_served_from_the_cache() {
    let p = setup().await;
    p.origin
        .reply("/v", 200, &[("cache-control", "max-age=60"), ("vary", "*")], "x");
    for _ in 0..3 {
        assert_eq!(p.get("/v", &[]).await.cache_status(), "hitbox; fwd=miss");
    }
    assert_eq!(p.origin.calls(), 3);
}
