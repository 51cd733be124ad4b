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
