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
