//! Rule mode's body predicates and query-style `POST`s, over TCP: an axum
//! origin that records every body it receives and counts its calls, the
//! layer in front of it, reqwest clients (and a raw socket for a chunked
//! body).
//!
//! Each test checks three things: what the client got, how often the
//! origin was asked, and that the origin received exactly the bytes the
//! client sent, whether the layer read the body or not.

mod support;

use std::time::Duration;

use bytes::Bytes;
use hitbox_core::Predicate;
use hitbox_tower::predicate::{BodyRegex, Json, Path, ReadSize};
use hitbox_tower::{BodyKey, Rule};
use http::Method;
use regex::Regex;
use support::body_origin::{Answer, BodyOrigin, Site, site};
use support::until;

/// An origin that answers every request with its call number and the body
/// it received, so a client can tell whose answer it got.
fn echo() -> BodyOrigin {
    BodyOrigin::new(|received, n| Answer::ok(format!("call {n}: {}", received.text())))
}

async fn post(site: &Site, path: &str, content_type: &str, body: &str) -> support::Got {
    let headers = [("content-type", content_type)];
    site.send(Method::POST, path, &headers, body.to_owned()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_pointer_predicates_select_what_is_cached() {
    let site = site(echo(), |layer| {
        layer
            .rule(
                Rule::new()
                    .when(Path::exact("/rpc"))
                    .post_as_read(BodyKey::json_fields(["/method", "/params"]))
                    .when_body(Json::one_of("/method", ["getBalance", "getBlock"])),
            )
            .rule(
                Rule::new()
                    .when(Path::exact("/equals"))
                    .post_as_read(BodyKey::json())
                    .when_body(Json::equals("/kind", "search")),
            )
            .rule(
                Rule::new()
                    .when(Path::exact("/exists"))
                    .post_as_read(BodyKey::json())
                    .when_body(Json::exists("/query/text")),
            )
    })
    .await;
    let json = "application/json";

    // one_of: a read method is cached, and the request id is not in the key.
    let first = post(
        &site,
        "/rpc",
        json,
        r#"{"method":"getBalance","params":["a1"],"id":1}"#,
    )
    .await;
    assert_eq!(first.cache_status(), "hitbox; fwd=miss; stored");
    site.stores(1).await;
    let again = post(
        &site,
        "/rpc",
        json,
        r#"{"id":2,"params":["a1"],"method":"getBalance"}"#,
    )
    .await;
    assert!(
        again.cache_status().starts_with("hitbox; hit"),
        "{}",
        again.cache_status()
    );
    assert_eq!(again.body, first.body);
    // Another account: its own entry, its own answer.
    let other = post(
        &site,
        "/rpc",
        json,
        r#"{"method":"getBalance","params":["b2"],"id":3}"#,
    )
    .await;
    assert_eq!(other.cache_status(), "hitbox; fwd=miss; stored");
    assert!(other.body.contains("b2"), "{}", other.body);
    // A method not listed: never cached, and the origin gets the body as sent.
    let transfer = r#"{"method":"transfer","params":["a1","b2",10],"id":4}"#;
    for _ in 0..2 {
        let got = post(&site, "/rpc", json, transfer).await;
        assert_eq!(got.cache_status(), "hitbox; fwd=bypass; detail=body-predicate");
        assert_eq!(site.origin.last().text(), transfer);
    }
    assert_eq!(site.origin.calls(), 4);

    // equals
    let search = post(&site, "/equals", json, r#"{"kind":"search","q":"rust"}"#).await;
    assert_eq!(search.cache_status(), "hitbox; fwd=miss; stored");
    let delete = post(&site, "/equals", json, r#"{"kind":"delete","q":"rust"}"#).await;
    assert_eq!(delete.cache_status(), "hitbox; fwd=bypass; detail=body-predicate");
    let number = post(&site, "/equals", json, r#"{"kind":1}"#).await;
    assert_eq!(number.cache_status(), "hitbox; fwd=bypass; detail=body-predicate");

    // exists, and an unknown pointer is false
    let deep = post(&site, "/exists", json, r#"{"query":{"text":null}}"#).await;
    assert_eq!(deep.cache_status(), "hitbox; fwd=miss; stored");
    for missing in [r#"{"query":{}}"#, r#"{"query":"text"}"#, r#"{"other":1}"#, "[]"] {
        let got = post(&site, "/exists", json, missing).await;
        assert_eq!(
            got.cache_status(),
            "hitbox; fwd=bypass; detail=body-predicate",
            "{missing}"
        );
        assert_eq!(site.origin.last().text(), missing);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_makes_the_predicate_false_and_passes_through_untouched() {
    let site = site(echo(), |layer| {
        layer
            .rule(
                Rule::new()
                    .when(Path::exact("/predicate"))
                    .post_as_read(BodyKey::digest())
                    .when_body(Json::equals("/kind", "search")),
            )
            .rule(
                Rule::new()
                    .when(Path::exact("/key"))
                    .post_as_read(BodyKey::json()),
            )
    })
    .await;
    let json = "application/json";
    let broken = [
        r#"{"kind":"search""#,
        r#"{"kind":"search",}"#,
        r#"{"kind":"delete","kind":"search"}"#,
        "kind=search",
        "",
    ];
    for body in broken {
        let got = post(&site, "/predicate", json, body).await;
        assert_eq!(got.status, 200, "never an error of the cache's own");
        assert_eq!(
            got.cache_status(),
            "hitbox; fwd=bypass; detail=body-predicate",
            "{body:?}"
        );
        assert_eq!(site.origin.last().text(), body);
        assert_eq!(got.body, format!("call {}: {body}", site.origin.calls()));
    }
    for body in broken {
        let got = post(&site, "/key", json, body).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.cache_status(),
            "hitbox; fwd=bypass; detail=invalid-json",
            "{body:?}"
        );
        assert_eq!(site.origin.last().text(), body);
    }
    // JSON sent as another type is not read as JSON either.
    let got = post(&site, "/key", "text/plain", r#"{"kind":"search"}"#).await;
    assert_eq!(got.cache_status(), "hitbox; fwd=bypass; detail=invalid-json");
    assert_eq!(site.origin.calls(), 11);
    assert_eq!(site.cache.stats().stores, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regular_expression_on_the_body() {
    let lookups = BodyRegex::new(Regex::new(r"^lookup:[a-z0-9]+$").unwrap());
    let site = site(echo(), |layer| {
        layer.rule(Rule::new().post_as_read(BodyKey::digest()).when_body(lookups))
    })
    .await;
    let text = "text/plain";
    assert_eq!(
        post(&site, "/q", text, "lookup:abc").await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
    site.stores(1).await;
    let hit = post(&site, "/q", text, "lookup:abc").await;
    assert!(hit.cache_status().starts_with("hitbox; hit"));
    assert_eq!(hit.body, "call 1: lookup:abc");
    for refused in ["delete:abc", "lookup:ABC", "lookup:abc\nmore"] {
        let got = post(&site, "/q", text, refused).await;
        assert_eq!(
            got.cache_status(),
            "hitbox; fwd=bypass; detail=body-predicate",
            "{refused:?}"
        );
        assert_eq!(site.origin.last().text(), refused);
    }
    assert_eq!(site.origin.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_as_read_and_bodies_over_the_limit() {
    let site = site(echo(), |layer| {
        layer.rule(
            Rule::new()
                .post_as_read(BodyKey::digest())
                .when_body(ReadSize::range(1..=8))
                .request_body_limit(64),
        )
    })
    .await;
    let text = "text/plain";
    assert_eq!(
        post(&site, "/s", text, "12345678").await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
    site.stores(1).await;
    assert!(
        post(&site, "/s", text, "12345678")
            .await
            .cache_status()
            .starts_with("hitbox; hit")
    );
    // Read (under the limit), but larger than the predicate allows.
    let nine = post(&site, "/s", text, "123456789").await;
    assert_eq!(nine.cache_status(), "hitbox; fwd=bypass; detail=body-predicate");
    // No body: judged as empty, which the range refuses.
    let empty = site.send(Method::POST, "/s", &[], Bytes::new()).await;
    assert_eq!(empty.cache_status(), "hitbox; fwd=bypass; detail=body-predicate");
    // Over the limit: not read at all, and the origin gets every byte.
    let big: String = (0..100_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let got = post(&site, "/s", text, &big).await;
    assert_eq!(got.cache_status(), "hitbox; fwd=bypass; detail=body");
    assert_eq!(site.origin.last().body.len(), big.len());
    assert_eq!(site.origin.last().text(), big);
    assert_eq!(site.origin.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_of_unknown_length_streams_through_untouched() {
    let site = site(echo(), |layer| {
        layer.rule(
            Rule::new()
                .post_as_read(BodyKey::digest())
                .request_body_limit(1024),
        )
    })
    .await;
    // Three chunks, 6000 bytes in all, more than the limit; the layer cannot
    // know the length before reading.
    let chunks = ["a".repeat(2000), "b".repeat(2000), "c".repeat(2000)];
    let mut request = format!(
        "POST /chunked HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        site.addr
    );
    for chunk in &chunks {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let (status, head) = support::raw(site.addr, &request).await;
    assert_eq!(status, 200);
    assert!(head.contains("fwd=bypass; detail=body"), "{head}");
    until(|| site.origin.calls() == 1).await;
    assert_eq!(site.origin.last().text(), chunks.concat());
    // A small chunked body is not read either: its length is not known up front.
    let small = format!(
        "POST /chunked HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        site.addr
    );
    let (_, head) = support::raw(site.addr, &small).await;
    assert!(head.contains("fwd=bypass; detail=body"), "{head}");
    until(|| site.origin.calls() == 2).await;
    assert_eq!(site.origin.last().text(), "abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_bodies_never_share_an_entry() {
    let site = site(echo(), |layer| {
        layer
            .rule(
                Rule::new()
                    .when(Path::exact("/json"))
                    .post_as_read(BodyKey::json()),
            )
            .rule(
                Rule::new()
                    .when(Path::exact("/raw"))
                    .post_as_read(BodyKey::digest()),
            )
    })
    .await;
    let json = "application/json";
    let a = post(&site, "/json", json, r#"{"q":"a","n":1}"#).await;
    site.stores(1).await;
    // The same JSON in another order and spacing: one entry.
    let same = post(&site, "/json", json, "{ \"n\": 1,\n  \"q\": \"a\" }").await;
    assert!(same.cache_status().starts_with("hitbox; hit"));
    assert_eq!(same.body, a.body);
    // Any other difference: another entry, another answer.
    for (n, body) in [
        r#"{"q":"b","n":1}"#,
        r#"{"q":"a","n":1.0}"#,
        r#"{"q":"a","n":1,"x":0}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let got = post(&site, "/json", json, body).await;
        assert_eq!(got.cache_status(), "hitbox; fwd=miss; stored", "{body}");
        assert_eq!(got.body, format!("call {}: {body}", n + 2));
    }
    // The raw digest keys the bytes and the type they are sent as.
    let raw = post(&site, "/raw", "text/plain", "x=1").await;
    site.stores(5).await;
    let form = post(&site, "/raw", "application/x-www-form-urlencoded", "x=1").await;
    assert_eq!(form.cache_status(), "hitbox; fwd=miss; stored");
    assert_ne!(form.body, raw.body);
    // A GET of the same URL is another key again.
    let get = site.get("/json").await;
    assert_eq!(get.cache_status(), "hitbox; fwd=miss; stored");
    assert_eq!(site.origin.calls(), 7);
}

/// An origin that answers `{"error": …}` with `200` on its first call, and
/// real data after.
fn flaky() -> BodyOrigin {
    BodyOrigin::new(|_, n| {
        if n == 1 {
            Answer::json(r#"{"error":"backend busy"}"#)
        } else {
            Answer::json(format!(r#"{{"data":{{"call":{n}}}}}"#))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_body_with_a_200_is_passed_on_but_not_stored() {
    let site = site(flaky(), |layer| {
        layer.rule(Rule::new().store_when_body(Json::exists("/error").not()))
    })
    .await;
    let first = site.get("/report").await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.body, r#"{"error":"backend busy"}"#,
        "the client gets it unchanged"
    );
    // Storing was not sure: the body had still to be judged.
    assert_eq!(first.cache_status(), "hitbox; fwd=miss");
    // The load ends without a value once the body is judged.
    until(|| site.cache.stats().load_errors >= 1).await;
    assert_eq!(site.cache.stats().stores, 0);
    // Then the key goes to the origin for a while (hit-for-pass).
    let second = site.get("/report").await;
    assert_eq!(second.cache_status(), "hitbox; fwd=bypass; detail=uncacheable");
    assert_eq!(second.body, r#"{"data":{"call":2}}"#);
    site.clock.advance(Duration::from_secs(11));
    let third = site.get("/report").await;
    assert_eq!(third.cache_status(), "hitbox; fwd=miss");
    site.stores(1).await;
    let fourth = site.get("/report").await;
    assert!(
        fourth.cache_status().starts_with("hitbox; hit"),
        "{}",
        fourth.cache_status()
    );
    assert_eq!(fourth.body, r#"{"data":{"call":3}}"#);
    assert_eq!(site.origin.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_over_the_limit_streams_whole_and_is_not_judged() {
    let big: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let body = big.clone();
    let origin = BodyOrigin::new(move |_, _| Answer::ok(body.clone()));
    let site = site(origin, |layer| {
        layer.rule(Rule::new().max_body_size(1024).store_when_body(
            |body: &hitbox_tower::predicate::ReadBody| {
                assert!(body.len() <= 1024, "a predicate never sees more than the limit");
                true
            },
        ))
    })
    .await;
    let got = site.get("/big").await;
    assert_eq!(got.body.len(), big.len());
    assert_eq!(got.body, big);
    until(|| site.cache.stats().load_errors >= 1).await;
    assert_eq!(site.cache.stats().stores, 0);
    let again = site.get("/big").await;
    assert_eq!(again.body, big);
    assert_eq!(site.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_without_body_predicates_never_read_the_body() {
    // A rule that caches GET only: a POST passes through with its body
    // streamed as it came, chunked or not.
    let site = site(echo(), |layer| layer.rule(Rule::new())).await;
    let body = "z".repeat(300_000);
    let got = post(&site, "/x", "text/plain", &body).await;
    assert_eq!(got.cache_status(), "hitbox; fwd=bypass; detail=method");
    assert_eq!(site.origin.last().text(), body);
    // A predicate that would refuse everything is never consulted for a
    // rule's GET without body predicates.
    let never = |_: &hitbox_tower::predicate::ReadBody| -> bool { unreachable!() };
    let site = support::body_origin::site(echo(), |layer| {
        layer
            .rule(Rule::new().when(Path::exact("/read")).when_body(never))
            .rule(Rule::new())
    })
    .await;
    assert_eq!(
        site.get("/other").await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
}
