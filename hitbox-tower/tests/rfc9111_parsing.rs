//! Parsing where the RFCs are strict: HTTP-dates (RFC 9110 section 5.6.7),
//! `Age` with several members (RFC 9111 section 5.1), `must-understand`
//! (5.2.2.3).

mod support;

use http::StatusCode;
use support::setup;

/// A date far ahead of the test clock, in each spelling.
const VALID: [&str; 3] = [
    "Sat, 06 Nov 2094 08:49:37 GMT",
    "Saturday, 06-Nov-32 08:49:37 GMT",
    "Sat Nov  6 08:49:37 2094",
];

const INVALID: [&str; 9] = [
    "Sat,  06 Nov 2094 08:49:37 GMT",
    "Sat, 06-Nov-2094 08:49:37 GMT",
    "Sat, 06 Nov 2094 8:49:37 GMT",
    "Sat, 6 Nov 2094 08:49:37 GMT",
    "Sat, 06 Nov 2094 08:49:37 UTC",
    "Sat Nov 6 08:49:37 2094",
    // `GMT` is case-sensitive, and the weekday must be the date's.
    "Sat, 06 Nov 2094 08:49:37 gmt",
    "Sun, 06 Nov 2094 08:49:37 GMT",
    "Sun Nov  6 08:49:37 2094",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_in_one_of_the_three_forms_is_fresh_and_anything_else_is_stale() {
    let p = setup().await;
    for (i, expires) in VALID.iter().enumerate() {
        let path = format!("/valid/{i}");
        p.origin.reply(&path, 200, &[("expires", expires)], "x");
        p.get(&path, &[]).await;
        p.stores(i as u64 + 1).await;
        let hit = p.get(&path, &[]).await;
        assert!(
            hit.cache_status().contains("; hit"),
            "{expires}: {}",
            hit.cache_status()
        );
    }
    let calls = p.origin.calls();
    for (i, expires) in INVALID.iter().enumerate() {
        let path = format!("/invalid/{i}");
        p.origin.reply(&path, 200, &[("expires", expires)], "x");
        let first = p.get(&path, &[]).await;
        assert_eq!(first.cache_status(), "hitbox; fwd=miss", "{expires}");
        let again = p.get(&path, &[]).await;
        assert!(!again.cache_status().contains("; hit"), "{expires} was fresh");
    }
    assert_eq!(p.origin.calls(), calls + 2 * INVALID.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_with_several_members_is_read_by_its_first_and_a_non_integer_is_ignored() {
    let p = setup().await;
    p.origin.reply(
        "/list",
        200,
        &[("cache-control", "max-age=10000"), ("age", "7200, 0")],
        "x",
    );
    p.origin.reply(
        "/lines",
        200,
        &[("cache-control", "max-age=10000"), ("age", "7200"), ("age", "0")],
        "x",
    );
    p.origin.reply(
        "/fraction",
        200,
        &[("cache-control", "max-age=10000"), ("age", "1.5")],
        "x",
    );
    for (i, path) in ["/list", "/lines"].into_iter().enumerate() {
        p.get(path, &[]).await;
        p.stores(i as u64 + 1).await;
        let hit = p.get(path, &[]).await;
        assert_eq!(hit.age(), 7200, "{path}");
        assert_eq!(hit.cache_status(), "hitbox; hit; ttl=2800", "{path}");
    }
    p.get("/fraction", &[]).await;
    p.stores(3).await;
    let hit = p.get("/fraction", &[]).await;
    assert_eq!(hit.age(), 0);
    assert_eq!(hit.cache_status(), "hitbox; hit; ttl=10000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_understand_overrides_no_store_only_for_a_status_the_cache_understands() {
    let p = setup().await;
    let cc = [("cache-control", "no-store, must-understand, max-age=60")];
    p.origin.reply("/known", 200, &cc, "known");
    p.origin.reply("/unknown", 299, &cc, "unknown");
    p.origin.reply(
        "/unknown-without-no-store",
        299,
        &[("cache-control", "must-understand, max-age=60")],
        "unknown",
    );
    p.origin.reply(
        "/plain-unknown",
        299,
        &[("cache-control", "max-age=60")],
        "unknown",
    );

    assert_eq!(
        p.get("/known", &[]).await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
    p.stores(1).await;
    assert!(p.get("/known", &[]).await.cache_status().contains("; hit"));

    for path in ["/unknown", "/unknown-without-no-store"] {
        let got = p.get(path, &[]).await;
        assert_eq!(got.status, StatusCode::from_u16(299).unwrap());
        assert_eq!(got.cache_status(), "hitbox; fwd=miss", "{path}");
        assert_eq!(
            p.get(path, &[]).await.cache_status(),
            "hitbox; fwd=miss",
            "{path}"
        );
    }
    // Without must-understand, a status with explicit freshness is stored.
    p.get("/plain-unknown", &[]).await;
    p.stores(2).await;
    assert!(
        p.get("/plain-unknown", &[])
            .await
            .cache_status()
            .contains("; hit")
    );
    assert_eq!(p.origin.calls(), 6);
}
