//! Reuse that other caches miss: a client's `If-Modified-Since` against a
//! stored `Date` (RFC 9111 section 4.3.2), a `POST` response stored for its
//! `Content-Location` (RFC 9110 section 9.3.3), `Accept-Language` variants
//! shared by equivalent requests (RFC 9111 section 4.1).

mod support;

use http::StatusCode;
use support::setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_modified_since_is_answered_from_the_date_when_there_is_no_last_modified() {
    let p = setup().await;
    let date = p.date(0);
    p.origin.reply(
        "/d",
        200,
        &[("cache-control", "max-age=60"), ("date", &date)],
        "body",
    );
    p.get("/d", &[]).await;
    p.stores(1).await;
    p.advance(5);
    let same = p.get("/d", &[("if-modified-since", &date)]).await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert!(same.cache_status().contains("; hit"));
    assert_eq!(same.body, "");
    let later = p.date(0);
    assert_eq!(
        p.get("/d", &[("if-modified-since", &later)]).await.status,
        StatusCode::NOT_MODIFIED
    );
    let before = p.date(-100);
    let full = p.get("/d", &[("if-modified-since", &before)]).await;
    assert_eq!((full.status, full.body.as_str()), (StatusCode::OK, "body"));
    // An invalid date is ignored: the full response.
    let bad = p.get("/d", &[("if-modified-since", "yesterday")]).await;
    assert_eq!(bad.status, StatusCode::OK);
    assert_eq!(p.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_language_variants_are_shared_by_equivalent_requests() {
    let p = setup().await;
    p.origin.reply(
        "/l",
        200,
        &[
            ("cache-control", "max-age=60"),
            ("vary", "Accept-Language"),
            ("content-language", "en-US"),
        ],
        "for {accept-language}",
    );
    let first = p.get("/l", &[("accept-language", "en-US, fr;q=0.5")]).await;
    assert_eq!(first.body, "for en-US, fr;q=0.5");
    p.stores(1).await;
    // Order by q-value, case and q-values themselves are normalised; a
    // request whose first choice is the stored Content-Language is served
    // it too.
    for equivalent in [
        "fr;q=0.1, EN-us",
        "en-us;q=1.0, fr;q=0.9, de;q=0",
        "en-US",
        "en",
        "en-GB;q=0.2, en-US;q=0.8",
    ] {
        let got = p.get("/l", &[("accept-language", equivalent)]).await;
        assert!(
            got.cache_status().contains("; hit"),
            "{equivalent}: {}",
            got.cache_status()
        );
        assert_eq!(got.body, "for en-US, fr;q=0.5");
    }
    assert_eq!(p.origin.calls(), 1);
    // Another first choice is another variant, and never gets en-US.
    p.origin.reply(
        "/l",
        200,
        &[
            ("cache-control", "max-age=60"),
            ("vary", "Accept-Language"),
            ("content-language", "fr"),
        ],
        "pour {accept-language}",
    );
    for other in ["fr, en-US;q=0.5", "de", "*"] {
        let got = p.get("/l", &[("accept-language", other)]).await;
        assert!(!got.body.starts_with("for "), "{other} got {}", got.body);
    }
    // Absent matches only absent.
    assert!(p.get("/l", &[]).await.body.starts_with("pour"));
    assert_eq!(p.origin.calls(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_response_naming_its_own_target_in_content_location_serves_later_gets() {
    let p = setup().await;
    p.origin
        .reply("/p", 200, &[("cache-control", "max-age=60")], "old");
    p.get("/p", &[]).await;
    p.stores(1).await;
    let target = format!("http://{}/p", p.addr);
    p.origin.reply(
        "/p",
        200,
        &[("cache-control", "max-age=60"), ("content-location", &target)],
        "posted",
    );
    let posted = p.send(http::Method::POST, "/p", &[]).await;
    assert_eq!(posted.body, "posted");
    p.stores(2).await;
    // The GET is answered with the POST's response, not the stale "old".
    let got = p.get("/p", &[]).await;
    assert_eq!(got.body, "posted");
    assert!(got.cache_status().contains("; hit"));
    assert_eq!(p.origin.calls(), 2);

    // Relative form.
    p.origin.reply(
        "/q",
        201,
        &[("cache-control", "max-age=60"), ("content-location", "/q")],
        "created",
    );
    p.send(http::Method::POST, "/q", &[]).await;
    p.stores(3).await;
    assert_eq!(p.get("/q", &[]).await.body, "created");
    assert_eq!(p.origin.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_response_is_not_stored_for_another_target_or_without_explicit_freshness() {
    let p = setup().await;
    for (path, headers) in [
        (
            "/a",
            vec![
                ("cache-control", "max-age=60"),
                ("content-location", "/elsewhere"),
            ],
        ),
        (
            "/b",
            vec![
                ("cache-control", "max-age=60"),
                ("content-location", "http://evil.example/b"),
            ],
        ),
        (
            "/c",
            vec![
                ("content-location", "/c"),
                ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
        ),
        ("/d", vec![("cache-control", "max-age=60")]),
        (
            "/e",
            vec![
                ("cache-control", "max-age=60, no-store"),
                ("content-location", "/e"),
            ],
        ),
        // Sent with a cookie, and not said to be shared.
        (
            "/f",
            vec![("cache-control", "max-age=60"), ("content-location", "/f")],
        ),
    ] {
        p.origin.reply(path, 200, &headers, "posted");
        let cookie: &[(&str, &str)] = if path == "/f" {
            &[("cookie", "session=attacker")]
        } else {
            &[]
        };
        p.send(http::Method::POST, path, cookie).await;
        p.origin.reply(path, 200, &[], "from the origin");
        let got = p.get(path, &[]).await;
        assert_eq!(got.body, "from the origin", "{path}");
    }
    for path in ["/elsewhere"] {
        p.origin.reply(path, 200, &[], "elsewhere");
        assert_eq!(p.get(path, &[]).await.body, "elsewhere");
    }
    assert_eq!(p.cache.stats().stores, 0);
    // Said to be shared, it is stored even so.
    p.origin.reply(
        "/g",
        200,
        &[
            ("cache-control", "public, max-age=60"),
            ("content-location", "/g"),
        ],
        "posted",
    );
    p.send(http::Method::POST, "/g", &[("cookie", "session=a")]).await;
    p.stores(1).await;
    assert_eq!(p.get("/g", &[]).await.body, "posted");
}
