//! Range requests answered from the cache (RFC 9110 section 14), stored
//! partial responses and their combination (RFC 9111 sections 3.3, 3.4).

mod support;

use std::sync::Arc;

use http::{Method, StatusCode};
use support::{setup, until};

const BODY: &str = "0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_200_answers_single_byte_ranges_with_206() {
    let p = setup().await;
    p.origin.reply(
        "/f",
        200,
        &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
        BODY,
    );
    assert_eq!(p.get("/f", &[]).await.body, BODY);
    p.stores(1).await;
    for (range, expected, content_range) in [
        ("bytes=0-4", "01234", "bytes 0-4/10"),
        ("bytes=5-", "56789", "bytes 5-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=8-100", "89", "bytes 8-9/10"),
        ("bytes=3-3", "3", "bytes 3-3/10"),
        ("bytes=0-99999999999999999999999", BODY, "bytes 0-9/10"),
    ] {
        let got = p.get("/f", &[("range", range)]).await;
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(got.body, expected, "{range}");
        assert_eq!(got.header("content-range"), Some(content_range), "{range}");
        assert_eq!(
            got.header("content-length"),
            Some(expected.len().to_string().as_str()),
            "{range}"
        );
        assert!(got.cache_status().contains("; hit"), "{range}");
    }
    for range in ["bytes=10-", "bytes=-0", "bytes=99999999999999999999999-"] {
        let got = p.get("/f", &[("range", range)]).await;
        assert_eq!(got.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(got.header("content-range"), Some("bytes */10"), "{range}");
        assert_eq!(got.body, "");
    }
    // Several ranges, and what this cache cannot read, get the whole 200.
    for range in [
        "bytes=0-1, 4-5",
        "bytes=5-1",
        "bytes=x-y",
        "items=0-1",
        "bytes=--5",
    ] {
        let got = p.get("/f", &[("range", range)]).await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, BODY), "{range}");
        assert_eq!(got.header("content-range"), None);
    }
    // A HEAD ignores Range.
    let head = p.send(http::Method::HEAD, "/f", &[("range", "bytes=0-1")]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(p.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_range_that_does_not_match_gets_the_whole_200() {
    let p = setup().await;
    let modified = p.date(-1000);
    p.origin.reply(
        "/f",
        200,
        &[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("last-modified", &modified),
        ],
        BODY,
    );
    p.get("/f", &[]).await;
    p.stores(1).await;
    let other_date = p.date(-999);
    for (if_range, partial) in [
        ("\"v1\"", true),
        ("\"v2\"", false),
        ("W/\"v1\"", false),
        (modified.as_str(), true),
        (other_date.as_str(), false),
        ("not a validator", false),
    ] {
        let got = p
            .get("/f", &[("range", "bytes=0-1"), ("if-range", if_range)])
            .await;
        if partial {
            assert_eq!(
                (got.status, got.body.as_str()),
                (StatusCode::PARTIAL_CONTENT, "01"),
                "{if_range}"
            );
        } else {
            assert_eq!(
                (got.status, got.body.as_str()),
                (StatusCode::OK, BODY),
                "{if_range}"
            );
        }
    }
    assert_eq!(p.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_206_from_the_origin_is_stored_and_reused_for_ranges_inside_it() {
    let p = setup().await;
    p.origin
        .reply_ranged("/f", &[("cache-control", "max-age=60"), ("etag", "\"v1\"")], BODY);
    let first = p.get("/f", &[("range", "bytes=0-4")]).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "01234")
    );
    assert_eq!(first.cache_status(), "hitbox; fwd=miss; stored");
    p.stores(1).await;
    for (range, expected) in [("bytes=1-3", "123"), ("bytes=0-4", "01234"), ("bytes=4-4", "4")] {
        let got = p.get("/f", &[("range", range)]).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (StatusCode::PARTIAL_CONTENT, expected)
        );
        assert!(got.cache_status().contains("; hit"), "{range}");
    }
    assert_eq!(p.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_more_asks_for_the_missing_part_only_and_the_parts_combine() {
    let p = setup().await;
    p.origin.reply_ranged(
        "/f",
        &[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("x-a", "1"),
            ("x-b", "1"),
        ],
        BODY,
    );
    p.get("/f", &[("range", "bytes=0-4")]).await;
    p.stores(1).await;
    // The origin's fields change: the new part's win, the others stay.
    p.origin.reply_ranged(
        "/f",
        &[("cache-control", "max-age=60"), ("etag", "\"v1\""), ("x-b", "2")],
        BODY,
    );
    let whole = p.get("/f", &[]).await;
    assert_eq!((whole.status, whole.body.as_str()), (StatusCode::OK, BODY));
    assert_eq!(
        whole.cache_status(),
        "hitbox; fwd=partial; fwd-status=206; stored"
    );
    let asked = p.origin.last();
    assert_eq!(asked.headers["range"], "bytes=5-");
    assert_eq!(asked.headers["if-range"], "\"v1\"");
    assert_eq!((whole.header("x-a"), whole.header("x-b")), (Some("1"), Some("2")));
    assert_eq!(whole.header("content-range"), None);
    assert_eq!(whole.header("content-length"), Some("10"));
    // Combined into a complete stored response.
    p.stores(2).await;
    let hit = p.get("/f", &[]).await;
    assert_eq!((hit.status, hit.body.as_str()), (StatusCode::OK, BODY));
    assert!(hit.cache_status().contains("; hit"));
    assert_eq!((hit.header("x-a"), hit.header("x-b")), (Some("1"), Some("2")));
    let tail = p.get("/f", &[("range", "bytes=-2")]).await;
    assert_eq!(
        (tail.status, tail.body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "89")
    );
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_request_that_reaches_past_a_part_completes_it_for_that_range() {
    let p = setup().await;
    p.origin
        .reply_ranged("/f", &[("cache-control", "max-age=60"), ("etag", "\"v1\"")], BODY);
    p.get("/f", &[("range", "bytes=2-4")]).await;
    p.stores(1).await;
    let got = p.get("/f", &[("range", "bytes=3-7")]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "34567")
    );
    assert_eq!(p.origin.last().headers["range"], "bytes=5-7");
    assert_eq!(got.header("content-range"), Some("bytes 3-7/10"));
    p.stores(2).await;
    // The part now holds 2-7.
    let inside = p.get("/f", &[("range", "bytes=2-7")]).await;
    assert_eq!(inside.body, "234567");
    assert!(inside.cache_status().contains("; hit"));
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_never_reaches_another_client_and_parts_of_two_representations_never_combine() {
    let p = setup().await;
    p.origin
        .reply_ranged("/f", &[("cache-control", "max-age=60"), ("etag", "\"v1\"")], BODY);
    // The first client asks for a part, and it is stored.
    p.get("/f", &[("range", "bytes=0-4")]).await;
    p.stores(1).await;
    // The representation changes at the origin.
    p.origin.reply_ranged(
        "/f",
        &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
        "abcdefghij",
    );
    // A second client asks for the whole: never the part, never v1's bytes
    // before v2's.
    let whole = p.get("/f", &[]).await;
    assert_eq!(
        (whole.status, whole.body.as_str()),
        (StatusCode::OK, "abcdefghij")
    );
    assert_eq!(whole.header("etag"), Some("\"v2\""));
    // The stale part was dropped: the next request is a plain miss, and
    // stores the whole of v2.
    let next = p.get("/f", &[]).await;
    assert_eq!(next.body, "abcdefghij");
    assert_eq!(next.cache_status(), "hitbox; fwd=miss; stored");
    assert!(!p.origin.last().headers.contains_key("range"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_206_whose_length_contradicts_its_content_range_is_not_stored() {
    let p = setup().await;
    // Claims ten bytes, sends five.
    p.origin.reply(
        "/lie",
        206,
        &[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("content-range", "bytes 0-9/10"),
        ],
        "01234",
    );
    // No strong validator: a part that cannot be completed is still
    // served for what it holds, but never combined.
    p.origin.reply(
        "/weak",
        206,
        &[
            ("cache-control", "max-age=60"),
            ("etag", "W/\"v1\""),
            ("content-range", "bytes 0-4/10"),
        ],
        "01234",
    );
    for _ in 0..2 {
        let got = p.get("/lie", &[("range", "bytes=0-9")]).await;
        assert_eq!(got.cache_status(), "hitbox; fwd=miss");
    }
    p.get("/weak", &[("range", "bytes=0-4")]).await;
    p.stores(1).await;
    assert!(
        p.get("/weak", &[("range", "bytes=0-1")])
            .await
            .cache_status()
            .contains("; hit")
    );
    // The whole cannot come from a part without a strong ETag: a miss.
    let whole = p.get("/weak", &[]).await;
    assert_eq!(whole.cache_status(), "hitbox; fwd=miss; stored");
    assert!(!p.origin.last().headers.contains_key("range"));
    assert_eq!(p.origin.calls(), 4);
}

/// Completing a stored part is a load like any other: an invalidation of
/// the URL that lands while the missing range is fetched wins, and the
/// combined response is served but not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_that_races_an_invalidation_is_not_stored() {
    let p = Arc::new(setup().await);
    let headers = [("cache-control", "max-age=60"), ("etag", "\"v1\"")];
    p.origin.reply_ranged("/f", &headers, BODY);
    p.get("/f", &[("range", "bytes=0-4")]).await;
    p.stores(1).await;

    p.origin.hold_method(Method::GET);
    let completing = tokio::spawn({
        let p = Arc::clone(&p);
        async move { p.get("/f", &[]).await }
    });
    until(|| p.origin.calls() == 2).await;
    assert_eq!(p.origin.last().headers["range"], "bytes=5-");
    p.origin.reply_to(Method::DELETE, "/f", 200, &[], "deleted");
    let deleted = p.send(Method::DELETE, "/f", &[]).await;
    assert_eq!(deleted.status, StatusCode::OK);
    p.origin.release();

    let whole = completing.await.unwrap();
    assert_eq!((whole.status, whole.body.as_str()), (StatusCode::OK, BODY));
    assert_eq!(whole.cache_status(), "hitbox; fwd=partial; fwd-status=206");
    // Nothing of /f is stored: the next request goes to the origin.
    let again = p.get("/f", &[]).await;
    assert_eq!(again.body, BODY);
    assert!(
        again.cache_status().contains("fwd=miss"),
        "{}",
        again.cache_status()
    );
    assert_eq!(p.origin.calls(), 4);
}
