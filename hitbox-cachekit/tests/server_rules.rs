//! The loopback stand-in against the protocol's server rules, one test per
//! rule: a request that breaks the rule gets the documented status, and its
//! allowed neighbours do not. The requests are made by hand (a plain
//! reqwest client), since the crate's client never sends most of them.
//!
//! Source of every rule: cachekit-io/protocol `spec/saas-api.md` and
//! `spec/cache-key-format.md` (Server-Side Requirements).

mod support;

use std::time::Duration;

use axum::http::Method;
use support::{API_KEY, Fault, LoopbackServer, raw};

const API: &str = "ck_api_direct_0b1c";
const LIVE: &str = "ck_live_legacy_2d3e";

async fn start() -> LoopbackServer {
    let server = LoopbackServer::start().await;
    server.add_api_key(API, None);
    server.add_api_key(LIVE, None);
    server
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

fn put(server: &LoopbackServer, path: &str, api_key: &str) -> reqwest::RequestBuilder {
    raw(server, Method::PUT, path, api_key)
        .header("content-type", "application/octet-stream")
        .body("v")
}

async fn json(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    if body.is_empty() {
        return (status, serde_json::Value::Null);
    }
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn options_is_204_before_authentication_and_inspects_nothing() {
    let server = start().await;
    let client = reqwest::Client::new();
    for path in [
        "/v1/cache/k",
        "/v1/cache/",
        "/v1/cache/a%2Fb/lock",
        "/v1/cache/%zz",
        "/elsewhere",
    ] {
        let response = client
            .request(reqwest::Method::OPTIONS, format!("{}{path}", server.url()))
            .header("authorization", "Bearer ck_nope_x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    // No other success is a 204.
    assert_eq!(status(put(&server, "/v1/cache/k", API_KEY)).await, 200);
    assert_eq!(
        status(raw(&server, Method::DELETE, "/v1/cache/k", API_KEY)).await,
        200
    );
}

#[tokio::test]
async fn every_response_is_no_store_and_varies_by_authorization() {
    let server = start().await;
    let client = reqwest::Client::new();
    server.push_faults([Fault::Status(503)]);
    let requests = [
        raw(&server, Method::GET, "/v1/cache/k", API_KEY), // the 503 fault
        put(&server, "/v1/cache/k", API_KEY),
        raw(&server, Method::GET, "/v1/cache/k", API_KEY),
        raw(&server, Method::HEAD, "/v1/cache/k", API_KEY),
        raw(&server, Method::GET, "/v1/cache/absent", API_KEY),
        raw(&server, Method::GET, "/v1/cache/k/ttl", API_KEY),
        raw(&server, Method::GET, "/v1/cache/health", API_KEY),
        raw(&server, Method::POST, "/v1/cache/k", API_KEY),
        raw(&server, Method::GET, "/v1/cache/a..b", API_KEY),
        raw(&server, Method::GET, "/v1/cache/k", "ck_sdk_unknown"),
        put(&server, "/v1/cache/nsapi:t:k", API_KEY),
        client.get(format!("{}/v1/cache/k", server.url())),
    ];
    let mut statuses = Vec::new();
    for request in requests {
        let response = request.send().await.unwrap();
        statuses.push(response.status().as_u16());
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["vary"], "Authorization");
        if response.status() == 503 {
            assert!(response.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(
        statuses,
        [503, 200, 200, 200, 404, 200, 200, 405, 400, 401, 403, 401]
    );
}

#[tokio::test]
async fn only_the_three_prefixes_authenticate() {
    let server = start().await;
    // Keys the server knows, but whose prefix is none of the three.
    for key in [
        "ck_test_x",
        "ck_sdkx",
        "CK_SDK_x",
        "ck_apix_x",
        "sk_live_x",
        "ck_sdk",
    ] {
        server.add_api_key(key, None);
        let response = raw(&server, Method::GET, "/v1/cache/health", key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{key}");
    }
    for key in [API_KEY, API, LIVE] {
        assert_eq!(
            status(raw(&server, Method::GET, "/v1/cache/health", key)).await,
            200,
            "{key}"
        );
    }
    // A good prefix is not enough: the key must be known and not revoked.
    assert_eq!(
        status(raw(&server, Method::GET, "/v1/cache/k", "ck_api_unknown")).await,
        401
    );
    server.revoke_api_key(LIVE);
    assert_eq!(status(raw(&server, Method::GET, "/v1/cache/k", LIVE)).await, 401);
    // Missing or malformed Authorization.
    let client = reqwest::Client::new();
    let url = format!("{}/v1/cache/k", server.url());
    for value in [
        None,
        Some(format!("Basic {API_KEY}")),
        Some("Bearer ".to_owned()),
        Some(API_KEY.to_owned()),
        Some(format!("Bearer  {API_KEY}")),
    ] {
        let mut request = client.get(&url).header("x-cachekit-l1-status", "disabled");
        if let Some(value) = &value {
            request = request.header("authorization", value);
        }
        assert_eq!(status(request).await, 401, "{value:?}");
    }
    // The scheme is case-insensitive.
    let request = client
        .get(&url)
        .header("authorization", format!("bearer {API_KEY}"))
        .header("x-cachekit-l1-status", "disabled");
    assert_eq!(status(request).await, 404);
    // A key-store fault is 503, never 401, whatever the key.
    server.key_store_down(true);
    for key in [API_KEY, "ck_sdk_unknown", "ck_test_x"] {
        let response = raw(&server, Method::GET, "/v1/cache/k", key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "{key}");
        assert!(response.headers().contains_key("retry-after"));
    }
}

#[tokio::test]
async fn authentication_precedes_every_other_error() {
    let server = start().await;
    let stranger = "ck_sdk_stranger";
    let client = reqwest::Client::new();
    // No L1 status, a bad method, a bad key, a missing route, an oversized
    // TTL: all 401 first.
    let no_l1 = client
        .get(format!("{}/v1/cache/k", server.url()))
        .header("authorization", format!("Bearer {stranger}"));
    assert_eq!(status(no_l1).await, 401);
    assert_eq!(
        status(raw(&server, Method::POST, "/v1/cache/k", stranger)).await,
        401
    );
    assert_eq!(
        status(raw(&server, Method::GET, "/v1/cache/a%2Fb", stranger)).await,
        401
    );
    assert_eq!(
        status(raw(&server, Method::GET, "/v1/cache/a/b/c", stranger)).await,
        401
    );
    assert_eq!(
        status(raw(&server, Method::GET, "/v1/cache/nsapi:t:k", stranger)).await,
        401
    );
    let request = put(&server, "/v1/cache/k", stranger).header("x-cachekit-ttl", "0");
    assert_eq!(status(request).await, 401);
    // Then the key's own errors: a malformed key is 400 before the write
    // split's 403.
    assert_eq!(status(put(&server, "/v1/cache/nsapi:t.x:k", API_KEY)).await, 400);
    assert_eq!(status(put(&server, "/v1/cache/nsapi:t:k", API_KEY)).await, 403);
}

#[tokio::test]
async fn the_l1_status_rule_is_about_the_api_key_not_the_cache_key() {
    let server = start().await;
    let client = reqwest::Client::new();
    let without = |path: &str, key: &str| {
        client
            .get(format!("{}{path}", server.url()))
            .header("authorization", format!("Bearer {key}"))
    };
    // A ck_sdk_ API key: every request needs the header, health included.
    for path in ["/v1/cache/k", "/v1/cache/health", "/v1/cache/k/ttl"] {
        assert_eq!(status(without(path, API_KEY)).await, 400, "{path}");
    }
    for bad in ["HIT", "Miss", "", "none", "hit,miss", "hit miss"] {
        let request = without("/v1/cache/k", API_KEY).header("x-cachekit-l1-status", bad);
        assert_eq!(status(request).await, 400, "{bad:?}");
    }
    for good in ["hit", "miss", "disabled"] {
        let request = without("/v1/cache/k", API_KEY).header("x-cachekit-l1-status", good);
        assert_eq!(status(request).await, 404, "{good}");
    }
    // Writes too.
    let request = client
        .put(format!("{}/v1/cache/k", server.url()))
        .header("authorization", format!("Bearer {API_KEY}"))
        .header("content-type", "application/octet-stream")
        .body("v");
    assert_eq!(status(request).await, 400);
    assert_eq!(server.stored("k"), None);
    // The other two prefixes may leave it out, even for a cache key that
    // starts with `ck_sdk_`.
    assert_eq!(status(put(&server, "/v1/cache/ck_sdk_probe", API)).await, 200);
    for key in [API, LIVE] {
        assert_eq!(status(without("/v1/cache/ck_sdk_probe", key)).await, 200, "{key}");
        assert_eq!(status(without("/v1/cache/health", key)).await, 200, "{key}");
    }
}

#[tokio::test]
async fn routes_methods_and_405_with_allow() {
    let server = start().await;
    for (method, path, allow) in [
        (Method::POST, "/v1/cache/k", "GET, HEAD, PUT, DELETE"),
        (Method::PATCH, "/v1/cache/k", "GET, HEAD, PUT, DELETE"),
        (Method::PUT, "/v1/cache/k/ttl", "GET, PATCH"),
        (Method::DELETE, "/v1/cache/k/ttl", "GET, PATCH"),
        (Method::GET, "/v1/cache/k/lock", "POST, DELETE"),
        (Method::PUT, "/v1/cache/k/lock", "POST, DELETE"),
        (Method::POST, "/v1/cache/health", "GET"),
        (Method::HEAD, "/v1/cache/health", "GET"),
    ] {
        let response = raw(&server, method.clone(), path, API_KEY).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
    }
    // Nothing is served at /v1/cache/ itself, nor at deeper paths.
    for path in [
        "/v1/cache/",
        "/v1/cache",
        "/v1/cache/k/other",
        "/v1/cache/a/b/c",
        "/v1/cache/k/ttl/x",
        "/v1/elsewhere",
    ] {
        assert_eq!(
            status(raw(&server, Method::GET, path, API_KEY)).await,
            404,
            "{path}"
        );
    }
}

#[tokio::test]
async fn keys_are_decoded_exactly_once_then_validated() {
    let server = start().await;
    // Malformed escapes, and bytes that are not UTF-8.
    for segment in ["%", "a%", "a%4", "%zz", "a%g1b", "%C3", "%FF"] {
        let path = format!("/v1/cache/{segment}");
        assert_eq!(status(put(&server, &path, API_KEY)).await, 400, "{segment}");
        assert_eq!(server.requests().pop().unwrap().path, path, "sent as written");
    }
    // `%2F` decodes to a `/`, which the charset refuses; `%25` to a `%`.
    for segment in ["a%2Fb", "a%2fb", "100%25", "a%252Fb"] {
        let path = format!("/v1/cache/{segment}");
        assert_eq!(status(put(&server, &path, API_KEY)).await, 400, "{segment}");
    }
    // One decode: an escaped colon, either case, is the colon.
    assert_eq!(status(put(&server, "/v1/cache/User%3aKey", API_KEY)).await, 200);
    assert!(server.stored("User:Key").is_some());
    assert_eq!(
        status(raw(&server, Method::GET, "/v1/cache/User%3AKey", API_KEY)).await,
        200
    );
    assert_eq!(
        status(raw(&server, Method::GET, "/v1/cache/User:Key", API_KEY)).await,
        200
    );
}

#[tokio::test]
async fn key_charset_length_and_double_dots() {
    let server = start().await;
    let long = "k".repeat(400);
    for good in [
        "a",
        "A_b-c.d:e",
        "a.b.c",
        "x.y",
        long.as_str(),
        "ns",
        "nsapi",
        "nsx:a.b:c",
    ] {
        let path = format!("/v1/cache/{good}");
        assert_eq!(status(put(&server, &path, API_KEY)).await, 200, "{good}");
        assert!(server.stored(good).is_some(), "{good}");
    }
    let too_long = "k".repeat(401);
    for bad in [
        "a%20b",
        "a~b",
        "a%3Db",
        "a%23b",
        "caf%C3%A9",
        "a%00b",
        "a%5Cb",
        "a*b",
        too_long.as_str(),
        "a..b",
        "a:..",
        "..a",
        "a...b",
        "a%2E%2Eb",
    ] {
        let path = format!("/v1/cache/{bad}");
        assert_eq!(status(put(&server, &path, API_KEY)).await, 400, "{bad}");
        // Every route validates the key.
        for (method, suffix) in [
            (Method::GET, ""),
            (Method::HEAD, ""),
            (Method::DELETE, ""),
            (Method::GET, "/ttl"),
            (Method::DELETE, "/lock"),
        ] {
            let path = format!("/v1/cache/{bad}{suffix}");
            let request = raw(&server, method.clone(), &path, API_KEY).header("x-cachekit-lock-id", "id");
            assert_eq!(status(request).await, 400, "{method} {path}");
        }
        let request = raw(&server, Method::POST, &format!("/v1/cache/{bad}/lock"), API_KEY)
            .body(r#"{"timeout_ms":1000}"#);
        assert_eq!(status(request).await, 400, "lock {bad}");
    }
}

#[tokio::test]
async fn namespace_prefixed_keys_need_a_well_formed_namespace() {
    let server = start().await;
    let n64 = "n".repeat(64);
    let n65 = "n".repeat(65);
    let good = [
        "ns:users:x".to_owned(),
        "ns:users:".to_owned(),
        "ns:Users_2-b:x".to_owned(),
        "ns:key".to_owned(),
        format!("ns:{n64}:x"),
        "nsx:a.b:x".to_owned(),
        "ns.a:b".to_owned(),
    ];
    for key in &good {
        assert_eq!(
            status(put(&server, &format!("/v1/cache/{key}"), API_KEY)).await,
            200,
            "{key}"
        );
    }
    let bad = [
        "ns::x".to_owned(),
        "ns:a.b:x".to_owned(),
        "ns:a.b".to_owned(),
        format!("ns:{n65}:x"),
        "nsapi::x".to_owned(),
        "nsapi:a.b:x".to_owned(),
        "nsapi:".to_owned(),
        "ns:".to_owned(),
    ];
    for key in &bad {
        assert_eq!(
            status(raw(&server, Method::GET, &format!("/v1/cache/{key}"), API)).await,
            400,
            "{key}"
        );
    }
}

#[tokio::test]
async fn namespace_grants_gate_reads_and_mutations() {
    let server = start().await;
    let users_only = "ck_live_users_only";
    let users_and_default = "ck_live_users_default";
    server.add_api_key(users_only, Some(&["users"]));
    server.add_api_key(users_and_default, Some(&["users", "default"]));
    // `ns:users:` and `nsapi:users:` are one namespace.
    for key in ["ns:users:a", "nsapi:users:b"] {
        let path = format!("/v1/cache/{key}");
        assert_eq!(status(put(&server, &path, users_only)).await, 200, "{key}");
        assert_eq!(
            status(raw(&server, Method::GET, &path, users_only)).await,
            200,
            "{key}"
        );
    }
    // Another namespace, or an unprefixed key (namespace `default`): 403
    // for reads and mutations alike.
    for key in ["ns:orders:a", "nsapi:orders:a", "plain", "users:a"] {
        let path = format!("/v1/cache/{key}");
        assert_eq!(status(put(&server, &path, users_only)).await, 403, "{key}");
        for (method, path) in [
            (Method::GET, path.clone()),
            (Method::HEAD, path.clone()),
            (Method::DELETE, path.clone()),
            (Method::GET, format!("{path}/ttl")),
        ] {
            assert_eq!(
                status(raw(&server, method.clone(), &path, users_only)).await,
                403,
                "{method} {path}"
            );
        }
    }
    assert_eq!(server.stored("plain"), None);
    // With `default` granted, unprefixed keys are open again.
    assert_eq!(
        status(put(&server, "/v1/cache/plain", users_and_default)).await,
        200
    );
    assert_eq!(
        status(raw(&server, Method::GET, "/v1/cache/plain", users_and_default)).await,
        200
    );
    assert_eq!(
        status(raw(
            &server,
            Method::GET,
            "/v1/cache/ns:orders:a",
            users_and_default
        ))
        .await,
        403
    );
}

#[tokio::test]
async fn the_write_split_covers_mutations_only() {
    let server = start().await;
    // A ck_live_ key may write both spaces: put something in each.
    let fill = || async {
        for key in ["ns:t:k", "nsapi:t:k", "plain"] {
            assert_eq!(
                status(put(&server, &format!("/v1/cache/{key}"), LIVE)).await,
                200,
                "{key}"
            );
        }
    };
    let mutations = |key: &str, api_key: &str| {
        let path = format!("/v1/cache/{key}");
        [
            put(&server, &path, api_key),
            raw(&server, Method::DELETE, &path, api_key),
            raw(&server, Method::POST, &format!("{path}/lock"), api_key).body(r#"{"timeout_ms":1000}"#),
            raw(&server, Method::DELETE, &format!("{path}/lock"), api_key).header("x-cachekit-lock-id", "x"),
            raw(&server, Method::PATCH, &format!("{path}/ttl"), api_key).body(r#"{"ttl":5}"#),
        ]
    };
    let reads = |key: &str, api_key: &str| {
        let path = format!("/v1/cache/{key}");
        [
            raw(&server, Method::GET, &path, api_key),
            raw(&server, Method::HEAD, &path, api_key),
            raw(&server, Method::GET, &format!("{path}/ttl"), api_key),
        ]
    };
    // ck_sdk_ never mutates nsapi:, ck_api_ never ns:; both read both.
    for (api_key, forbidden, allowed) in [(API_KEY, "nsapi:t:k", "ns:t:k"), (API, "ns:t:k", "nsapi:t:k")] {
        fill().await;
        for request in mutations(forbidden, api_key) {
            assert_eq!(status(request).await, 403, "{api_key} on {forbidden}");
        }
        assert!(server.stored(forbidden).is_some(), "the 403s changed nothing");
        for request in reads(forbidden, api_key) {
            assert_eq!(status(request).await, 200, "{api_key} reading {forbidden}");
        }
        for key in [allowed, "plain"] {
            for request in mutations(key, api_key) {
                assert_eq!(status(request).await, 200, "{api_key} on {key}");
            }
        }
    }
    // ck_live_ is exempt.
    fill().await;
    for key in ["ns:t:k", "nsapi:t:k"] {
        for request in mutations(key, LIVE) {
            assert_eq!(status(request).await, 200, "live on {key}");
        }
    }
}

#[tokio::test]
async fn put_ttl_headers() {
    let server = start().await;
    let with = |headers: &[(&str, &str)]| {
        let mut request = put(&server, "/v1/cache/k", API_KEY);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    };
    for headers in [
        &[("x-cachekit-ttl", "0")][..],
        &[("x-cachekit-ttl", "-5")],
        &[("x-cachekit-ttl", "1.5")],
        &[("x-cachekit-ttl", "+5")],
        &[("x-cachekit-ttl", "abc")],
        &[("x-cachekit-ttl", "")],
        &[("x-cachekit-ttl", "1e3")],
        &[("x-cachekit-ttl", "2592001")],
        &[("x-cachekit-ttl", "99999999999999999999999")],
        &[("x-ttl", "0")],
        &[("x-ttl", "-1")],
        &[("x-cachekit-stale-ttl", "5")],
        &[("x-cachekit-stale-ttl", "0")],
        &[("x-cachekit-ttl", "1"), ("x-cachekit-stale-ttl", "-1")],
        &[("x-cachekit-ttl", "1"), ("x-cachekit-stale-ttl", "1.5")],
        &[("x-cachekit-ttl", "1"), ("x-cachekit-stale-ttl", "2592000")],
        &[("x-cachekit-ttl", "2"), ("x-cachekit-stale-ttl", "2591999")],
        &[("x-cachekit-ttl", "10"), ("x-cachekit-stale-ttl", "2591991")],
    ] {
        assert_eq!(status(with(headers)).await, 400, "{headers:?}");
        assert_eq!(server.stored("k"), None, "{headers:?}");
    }
    for (headers, windows) in [
        (&[][..], (None, 0)),
        (&[("x-cachekit-ttl", "2592000")][..], (Some(2_592_000), 0)),
        (&[("x-cachekit-ttl", "007")], (Some(7), 0)),
        (
            &[("x-cachekit-ttl", "1"), ("x-cachekit-stale-ttl", "2591999")],
            (Some(1), 2_591_999),
        ),
        (
            &[("x-cachekit-ttl", "10"), ("x-cachekit-stale-ttl", "0")],
            (Some(10), 0),
        ),
        // The deprecated X-TTL is still accepted, stale window included.
        (&[("x-ttl", "30")], (Some(30), 0)),
        (&[("x-ttl", "30"), ("x-cachekit-stale-ttl", "5")], (Some(30), 5)),
        // X-CacheKit-TTL wins over X-TTL, even a broken one.
        (&[("x-cachekit-ttl", "10"), ("x-ttl", "99")], (Some(10), 0)),
        (&[("x-cachekit-ttl", "10"), ("x-ttl", "bad")], (Some(10), 0)),
    ] {
        assert_eq!(status(with(headers)).await, 200, "{headers:?}");
        assert_eq!(server.windows("k"), Some(windows), "{headers:?}");
    }
    // A PUT replaces all earlier timing: the last one had a TTL, this one
    // has none.
    assert_eq!(status(with(&[])).await, 200);
    let (_, body) = json(raw(&server, Method::GET, "/v1/cache/k/ttl", API_KEY)).await;
    assert_eq!(body, serde_json::json!({ "ttl": null }));
    // The content type is required.
    let no_type = raw(&server, Method::PUT, "/v1/cache/t", API_KEY).body("v");
    assert_eq!(status(no_type).await, 400);
    let wrong_type = raw(&server, Method::PUT, "/v1/cache/t", API_KEY)
        .header("content-type", "application/json")
        .body("v");
    assert_eq!(status(wrong_type).await, 400);
    assert_eq!(server.stored("t"), None);
}

/// `X-CacheKit-Fresh-For` and `GET /ttl` round in opposite directions, from
/// `floor(stored_at)`, on the server's clock.
#[tokio::test]
async fn fresh_for_rounds_down_and_ttl_rounds_up_to_eviction() {
    let server = start().await;
    let fresh_for = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-cachekit-fresh-for")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let freshness = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-cachekit-freshness")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let get = || raw(&server, Method::GET, "/v1/cache/k", API_KEY);
    let head = || raw(&server, Method::HEAD, "/v1/cache/k", API_KEY);
    let ttl = || async { json(raw(&server, Method::GET, "/v1/cache/k/ttl", API_KEY)).await };

    // Stored 300 ms into a second: the windows start at the whole second.
    server.clock.advance(Duration::from_millis(300));
    let request = put(&server, "/v1/cache/k", API_KEY)
        .header("x-cachekit-ttl", "10")
        .header("x-cachekit-stale-ttl", "5");
    assert_eq!(status(request).await, 200);
    let steps: [(u64, &str, Option<&str>, Option<u64>); 7] = [
        // (ms since the stored second, freshness, Fresh-For, GET /ttl)
        (300, "fresh", Some("9"), Some(15)),
        (1_000, "fresh", Some("9"), Some(14)),
        (9_000, "fresh", Some("1"), Some(6)),
        (9_500, "fresh", Some("0"), Some(6)),
        (10_000, "stale", Some("0"), Some(5)),
        (14_999, "stale", Some("0"), Some(1)),
        (15_000, "", None, None),
    ];
    let mut at = 300;
    for (ms, label, expected_fresh_for, expected_ttl) in steps {
        server.clock.advance(Duration::from_millis(ms - at));
        at = ms;
        let response = get().send().await.unwrap();
        let head_response = head().send().await.unwrap();
        let (ttl_status, ttl_body) = ttl().await;
        if label.is_empty() {
            // From evict_at on: 404 everywhere.
            assert_eq!(response.status(), 404, "{ms}");
            assert_eq!(head_response.status(), 404, "{ms}");
            assert_eq!(ttl_status, 404, "{ms}");
            continue;
        }
        assert_eq!(response.status(), 200, "{ms}");
        assert_eq!(freshness(&response).as_deref(), Some(label), "{ms}");
        assert_eq!(fresh_for(&response).as_deref(), expected_fresh_for, "{ms}");
        // HEAD: the same status and label, never Fresh-For, no body.
        assert_eq!(head_response.status(), 200, "{ms}");
        assert_eq!(freshness(&head_response).as_deref(), Some(label), "{ms}");
        assert_eq!(fresh_for(&head_response), None, "{ms}");
        assert!(head_response.bytes().await.unwrap().is_empty());
        assert_eq!(
            (ttl_status, ttl_body),
            (200, serde_json::json!({ "ttl": expected_ttl })),
            "{ms}"
        );
    }

    // No expiry: always fresh, no Fresh-For, a null TTL.
    assert_eq!(status(put(&server, "/v1/cache/k", API_KEY)).await, 200);
    server.clock.advance(Duration::from_secs(10_000_000));
    let response = get().send().await.unwrap();
    assert_eq!(freshness(&response).as_deref(), Some("fresh"));
    assert_eq!(fresh_for(&response), None);
    let head_response = head().send().await.unwrap();
    assert_eq!(
        (
            head_response.status().as_u16(),
            freshness(&head_response).as_deref()
        ),
        (200, Some("fresh"))
    );
    assert_eq!(ttl().await, (200, serde_json::json!({ "ttl": null })));
}

#[tokio::test]
async fn patch_ttl_rules() {
    let server = start().await;
    let patch = |key: &str, body: &str| {
        raw(&server, Method::PATCH, &format!("/v1/cache/{key}/ttl"), API_KEY)
            .header("content-type", "application/json")
            .body(body.to_owned())
    };
    let ttl_of = |key: &str| {
        let request = raw(&server, Method::GET, &format!("/v1/cache/{key}/ttl"), API_KEY);
        async move { json(request).await }
    };
    // Absent: 200, a no-op that creates nothing.
    assert_eq!(status(patch("absent", r#"{"ttl":5}"#)).await, 200);
    assert_eq!(server.stored("absent"), None);
    assert_eq!(
        status(raw(&server, Method::GET, "/v1/cache/absent/ttl", API_KEY)).await,
        404
    );
    // A bad TTL is 400, present key or not.
    let request = put(&server, "/v1/cache/k", API_KEY)
        .header("x-cachekit-ttl", "10")
        .header("x-cachekit-stale-ttl", "100");
    assert_eq!(status(request).await, 200);
    for body in [
        r#"{"ttl":0}"#,
        r#"{"ttl":-1}"#,
        r#"{"ttl":1.5}"#,
        r#"{"ttl":"5"}"#,
        r#"{"ttl":null}"#,
        r#"{}"#,
        r#"{"ttl":5,"extra":1}"#,
        r#"{"ttl":2592001}"#,
        "not json",
    ] {
        assert_eq!(status(patch("k", body)).await, 400, "{body}");
        assert_eq!(status(patch("absent", body)).await, 400, "{body}");
    }
    // Fresh: fresh for `ttl` from floor(now), the stale window kept...
    server.clock.advance(Duration::from_millis(4_700));
    assert_eq!(status(patch("k", r#"{"ttl":20}"#)).await, 200);
    assert_eq!(ttl_of("k").await, (200, serde_json::json!({ "ttl": 120 })));
    let response = raw(&server, Method::GET, "/v1/cache/k", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cachekit-fresh-for"], "19");
    // ...and ttl plus that window within the cap.
    assert_eq!(status(patch("k", r#"{"ttl":2591901}"#)).await, 400);
    assert_eq!(status(patch("k", r#"{"ttl":2591900}"#)).await, 200);
    assert_eq!(status(patch("k", r#"{"ttl":20}"#)).await, 200);
    // Stale: 409, nothing changed.
    server.clock.advance(Duration::from_secs(21));
    assert_eq!(status(patch("k", r#"{"ttl":20}"#)).await, 409);
    assert_eq!(ttl_of("k").await, (200, serde_json::json!({ "ttl": 99 })));
    // Evicted: 200 again, a no-op.
    server.clock.advance(Duration::from_secs(100));
    assert_eq!(status(patch("k", r#"{"ttl":20}"#)).await, 200);
    assert_eq!(server.stored("k"), None);
    // No expiry: bounded from now on, without a stale window.
    assert_eq!(status(put(&server, "/v1/cache/forever", API_KEY)).await, 200);
    assert_eq!(status(patch("forever", r#"{"ttl":3}"#)).await, 200);
    assert_eq!(ttl_of("forever").await, (200, serde_json::json!({ "ttl": 3 })));
    assert_eq!(server.windows("forever"), Some((Some(3), 0)));
    server.clock.advance(Duration::from_secs(3));
    assert_eq!(
        status(raw(&server, Method::GET, "/v1/cache/forever", API_KEY)).await,
        404
    );
}

#[tokio::test]
async fn lock_and_unlock() {
    let server = start().await;
    let lock = |timeout_ms: u64| {
        raw(&server, Method::POST, "/v1/cache/job/lock", API_KEY)
            .header("content-type", "application/json")
            .body(format!(r#"{{"timeout_ms":{timeout_ms}}}"#))
    };
    let unlock = || raw(&server, Method::DELETE, "/v1/cache/job/lock", API_KEY);
    let (code, body) = json(lock(5_000)).await;
    assert_eq!(code, 200);
    let id = body["lock_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    // Held: 200 with a null id, never 409.
    assert_eq!(
        json(lock(5_000)).await,
        (200, serde_json::json!({ "lock_id": null }))
    );

    // No id, or one that is empty or only whitespace: 400, lock kept.
    for request in [
        unlock(),
        unlock().header("x-cachekit-lock-id", ""),
        unlock().header("x-cachekit-lock-id", "   "),
        unlock().header("x-cachekit-lock-id", "\t"),
        raw(&server, Method::DELETE, "/v1/cache/job/lock?lock_id=", API_KEY),
        raw(&server, Method::DELETE, "/v1/cache/job/lock?lock_id=%20", API_KEY),
        raw(&server, Method::DELETE, "/v1/cache/job/lock?other=1", API_KEY),
    ] {
        assert_eq!(status(request).await, 400);
        assert!(server.locked("job"));
    }
    // A wrong id: 200, and the lock stays (upstream leaves this open).
    assert_eq!(status(unlock().header("x-cachekit-lock-id", "not-it")).await, 200);
    assert!(server.locked("job"));
    // The header wins over the query when both come.
    let path = format!("/v1/cache/job/lock?lock_id={id}");
    let both = raw(&server, Method::DELETE, &path, API_KEY).header("x-cachekit-lock-id", "not-it");
    assert_eq!(status(both).await, 200);
    assert!(server.locked("job"), "the query's id was not used");
    // A blank header counts as absent: the query's id is used.
    let blank = raw(&server, Method::DELETE, &path, API_KEY).header("x-cachekit-lock-id", " ");
    assert_eq!(status(blank).await, 200);
    assert!(!server.locked("job"));

    // The legacy query alone releases too; the header alone as well.
    for by_query in [true, false] {
        let (_, body) = json(lock(5_000)).await;
        let id = body["lock_id"].as_str().unwrap().to_owned();
        let request = if by_query {
            raw(
                &server,
                Method::DELETE,
                &format!("/v1/cache/job/lock?lock_id={id}"),
                API_KEY,
            )
        } else {
            unlock().header("x-cachekit-lock-id", id)
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "query: {by_query}");
        assert!(!server.locked("job"), "query: {by_query}");
    }
    // Bad lock bodies.
    for body in ["", "{}", r#"{"timeout_ms":-1}"#, r#"{"timeout_ms":1,"x":2}"#] {
        let request = raw(&server, Method::POST, "/v1/cache/job/lock", API_KEY).body(body);
        assert_eq!(status(request).await, 400, "{body:?}");
    }
}
