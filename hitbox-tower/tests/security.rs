//! The layer as an attacker tries it, over real TCP: in every test a first
//! client sends what is under attack, the scripted origin reflects it into
//! its body (`{name}` stands for the request's `name` field) or headers,
//! and a second client, without it, must never see what the first caused.
//! Standards mode first, then rule mode.

mod support;

use std::time::Duration;

use hitbox_core::CachePolicy;
use hitbox_tower::Rule;
use hitbox_tower::rfc9111::Rfc9111;
use http::{Method, StatusCode};
use support::{raw, setup, setup_layer, setup_with, until};

// 1. Set-Cookie never reaches a second client.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_goes_to_the_client_that_caused_it_and_never_to_a_hit() {
    let p = setup().await;
    p.origin.reply(
        "/login",
        200,
        &[
            ("cache-control", "max-age=60"),
            ("set-cookie", "session=alice"),
            ("set-cookie", "theme=dark"),
        ],
        "welcome",
    );
    let alice = p.get("/login", &[]).await;
    assert_eq!(alice.headers.get_all("set-cookie").iter().count(), 2);
    assert_eq!(alice.cache_status(), "hitbox; fwd=miss; stored");
    p.stores(1).await;
    let bob = p.get("/login", &[]).await;
    assert!(bob.cache_status().contains("hit"), "{}", bob.cache_status());
    assert_eq!(bob.body, "welcome");
    assert_eq!(bob.header("set-cookie"), None);
    assert_eq!(p.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_named_by_qualified_no_cache_are_not_served_from_the_cache() {
    let p = setup().await;
    p.origin.reply(
        "/n",
        200,
        &[
            ("cache-control", "max-age=60, no-cache=\"x-user\""),
            ("x-user", "alice"),
        ],
        "page",
    );
    assert_eq!(p.get("/n", &[]).await.header("x-user"), Some("alice"));
    p.stores(1).await;
    let hit = p.get("/n", &[]).await;
    assert!(hit.cache_status().contains("hit"));
    assert_eq!(hit.header("x-user"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_set_cookie_stores_no_such_response() {
    let p = setup_with(Rfc9111::new().refuse_set_cookie(true)).await;
    p.origin.reply(
        "/c",
        200,
        &[("cache-control", "max-age=60"), ("set-cookie", "session=alice")],
        "x",
    );
    p.origin
        .reply("/plain", 200, &[("cache-control", "max-age=60")], "y");
    for _ in 0..2 {
        let got = p.get("/c", &[]).await;
        assert_eq!(got.header("set-cookie"), Some("session=alice"));
        assert_eq!(got.cache_status(), "hitbox; fwd=miss");
    }
    assert_eq!(p.origin.calls(), 2);
    p.get("/plain", &[]).await;
    p.stores(1).await;
    assert!(p.get("/plain", &[]).await.cache_status().contains("hit"));
    assert_eq!(p.cache.stats().stores, 1);
}

// 2. A 304 never rewrites the shared entry with one user's fields.

/// `/r` stored with `ETag: "v1"`, then stale: the next request revalidates.
async fn stale_with_etag() -> support::Proxy {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        "body",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.advance(20);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304s_set_cookie_goes_to_its_client_and_never_into_the_entry() {
    let p = stale_with_etag().await;
    p.origin.reply(
        "/r",
        304,
        &[
            ("cache-control", "max-age=60, no-cache=\"x-user\""),
            ("etag", "\"v1\""),
            ("set-cookie", "session=alice"),
            ("x-user", "alice"),
        ],
        "",
    );
    let alice = p.get("/r", &[]).await;
    assert_eq!(alice.cache_status(), "hitbox; fwd=stale; fwd-status=304; stored");
    assert_eq!(alice.body, "body");
    assert_eq!(alice.header("set-cookie"), Some("session=alice"));
    assert_eq!(alice.header("x-user"), Some("alice"));
    p.stores(2).await;
    let bob = p.get("/r", &[]).await;
    assert!(bob.cache_status().contains("hit"), "{}", bob.cache_status());
    assert_eq!(bob.body, "body");
    assert_eq!(bob.header("set-cookie"), None);
    assert_eq!(bob.header("x-user"), None);
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_that_makes_the_response_private_removes_the_entry() {
    let p = stale_with_etag().await;
    p.origin.reply(
        "/r",
        304,
        &[("cache-control", "private, max-age=60"), ("etag", "\"v1\"")],
        "",
    );
    let first = p.get("/r", &[]).await;
    assert_eq!(first.body, "body");
    assert_eq!(first.cache_status(), "hitbox; fwd=stale; fwd-status=304");
    // The entry is gone: the next request asks the origin (without
    // validators) instead of being served a response now private.
    p.origin
        .reply("/r", 200, &[("cache-control", "private")], "fresh");
    let second = p.get("/r", &[]).await;
    assert_eq!(second.body, "fresh");
    assert_eq!(second.cache_status(), "hitbox; fwd=miss");
    assert_eq!(p.origin.last().headers.get("if-none-match"), None);
}

// 3. Credentials get no heuristic freshness (web cache deception).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_page_under_a_static_looking_url_is_never_shared() {
    let p = setup().await;
    let modified = p.date(-86_400);
    p.origin.reply(
        "/account/profile.css",
        200,
        &[("last-modified", &modified)],
        "profile of {cookie}",
    );
    let alice = p
        .get("/account/profile.css", &[("cookie", "session=alice")])
        .await;
    assert_eq!(alice.body, "profile of session=alice");
    assert_eq!(alice.cache_status(), "hitbox; fwd=miss");
    let mallory = p.get("/account/profile.css", &[]).await;
    assert_eq!(mallory.body, "profile of -");
    assert_eq!(p.origin.calls(), 2);
    // The same response without credentials is stored on the heuristic.
    p.stores(1).await;
    assert!(
        p.get("/account/profile.css", &[])
            .await
            .cache_status()
            .contains("hit")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_with_explicit_freshness_are_stored_without_their_cookies() {
    let p = setup().await;
    p.origin.reply(
        "/shared",
        200,
        &[("cache-control", "max-age=60"), ("set-cookie", "seen=1")],
        "the same for all",
    );
    let alice = p.get("/shared", &[("cookie", "session=alice")]).await;
    assert_eq!(alice.header("set-cookie"), Some("seen=1"));
    p.stores(1).await;
    let bob = p.get("/shared", &[]).await;
    assert!(bob.cache_status().contains("hit"));
    assert_eq!(bob.header("set-cookie"), None);
}

// 4. The key is built from what the origin sees.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_named_by_connection_never_selects_a_variant() {
    let p = setup().await;
    p.origin.reply(
        "/v",
        200,
        &[("cache-control", "max-age=60"), ("vary", "accept-language")],
        "lang {accept-language}",
    );
    // The hop to the cache drops Accept-Language: the origin never sees it.
    let attacker = p
        .get(
            "/v",
            &[("connection", "accept-language"), ("accept-language", "evil")],
        )
        .await;
    assert_eq!(attacker.body, "lang -");
    assert_eq!(p.origin.last().headers.get("accept-language"), None);
    p.stores(1).await;
    // A client that really sends the value gets its own variant, not the
    // response made without it.
    let victim = p.get("/v", &[("accept-language", "evil")]).await;
    assert_eq!(victim.body, "lang evil");
    // And one without it is served what the attacker's request stored.
    let plain = p.get("/v", &[]).await;
    assert!(plain.cache_status().contains("hit"));
    assert_eq!(plain.body, "lang -");
}

// 5. Host is unambiguous.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_fields_or_a_host_at_odds_with_the_target_get_400() {
    let p = setup().await;
    p.origin
        .reply("/h", 200, &[("cache-control", "max-age=60")], "host {host}");
    let (status, head) = raw(
        p.addr,
        "GET /h HTTP/1.1\r\nHost: victim.example\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{head}");
    assert!(head.contains("hitbox; detail=ambiguous-host"), "{head}");
    let (status, _) = raw(
        p.addr,
        "GET http://victim.example/h HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = raw(
        p.addr,
        "GET /h HTTP/1.1\r\nHost: evil.example/x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(p.origin.calls(), 0);
    // An absolute-form target whose Host agrees is keyed by that host, as
    // forwarded.
    let (status, head) = raw(
        p.addr,
        "GET http://victim.example/h HTTP/1.1\r\nHost: VICTIM.example:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(p.origin.last().headers["host"], "VICTIM.example:80");
}

// 6. Forwarding fields a front end trusts are part of the key.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_fields_keep_requests_that_differ_in_them_apart() {
    let p = setup_with(Rfc9111::new().key_field("x-forwarded-proto")).await;
    p.origin.reply(
        "/f",
        200,
        &[("cache-control", "max-age=60")],
        "{x-forwarded-proto}://site",
    );
    let https = p.get("/f", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(https.body, "https://site");
    p.stores(1).await;
    let http = p.get("/f", &[("x-forwarded-proto", "http")]).await;
    assert_eq!(http.body, "http://site");
    p.stores(2).await;
    let again = p.get("/f", &[("x-forwarded-proto", "https")]).await;
    assert!(again.cache_status().contains("hit"));
    assert_eq!(again.body, "https://site");
    assert_eq!(p.origin.calls(), 2);
}

// 7. Fat GET.

async fn fat_get(p: &support::Proxy, path: &str, body: &'static str) -> support::Got {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("http://{}{}", p.addr, path))
        .body(body)
        .send()
        .await
        .unwrap();
    support::Got {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_body_bypasses_the_cache() {
    for p in [setup().await, setup_layer(|layer| layer).await] {
        p.origin
            .reply("/g", 200, &[("cache-control", "max-age=60")], "poisoned?");
        let fat = fat_get(&p, "/g", "{\"admin\":true}").await;
        assert_eq!(fat.cache_status(), "hitbox; fwd=bypass; detail=request-body");
        let plain = p.get("/g", &[]).await;
        assert!(plain.cache_status().starts_with("hitbox; fwd=miss"));
        assert_eq!(p.origin.calls(), 2);
    }
}

// 8. Vary compares bytes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_values_that_differ_only_in_invalid_utf8_are_different_variants() {
    let p = setup().await;
    p.origin.reply(
        "/b",
        200,
        &[("cache-control", "max-age=60"), ("vary", "x-token")],
        "v",
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = |value: &'static [u8]| {
        client
            .get(format!("http://{}/b", p.addr))
            .header("x-token", http::HeaderValue::from_bytes(value).unwrap())
            .send()
    };
    send(b"a\xff").await.unwrap();
    p.stores(1).await;
    let other = send(b"a\xfe").await.unwrap();
    assert!(
        other.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("fwd=miss")
    );
    let same = send(b"a\xff").await.unwrap();
    assert!(same.headers()["cache-status"].to_str().unwrap().contains("hit"));
    assert_eq!(p.origin.calls(), 2);
}

// 9. Single-flight cannot be held hostage.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_never_reads_does_not_stop_the_fill() {
    for p in [setup().await, setup_layer(|layer| layer).await] {
        // Far more than the socket buffers hold, in chunks of unknown total.
        let big = "x".repeat(4 << 20);
        p.origin
            .reply_streamed("/big", 200, &[("cache-control", "max-age=60")], &big);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("http://{}/big", p.addr);
        // The head arrives; the body is never read.
        let stalled = client.get(&url).send().await.unwrap();
        assert_eq!(stalled.status(), StatusCode::OK);
        p.stores(1).await;
        let second = p.get("/big", &[]).await;
        assert!(second.cache_status().contains("hit"), "{}", second.cache_status());
        assert_eq!(second.body.len(), big.len());
        assert_eq!(p.origin.calls(), 1);
        drop(stalled);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gives_up_on_a_hanging_load_after_the_lock_timeout() {
    let timeout = Duration::from_millis(200);
    for p in [
        setup_layer(|layer| layer.rfc9111(Rfc9111::new()).lock_timeout(timeout)).await,
        setup_layer(|layer| layer.lock_timeout(timeout)).await,
    ] {
        p.origin
            .reply("/slow", 200, &[("cache-control", "max-age=60")], "late");
        p.origin.hold();
        let leader = tokio::spawn({
            let (addr, url) = (p.addr, "/slow");
            async move {
                let client = reqwest::Client::builder().no_proxy().build().unwrap();
                client.get(format!("http://{addr}{url}")).send().await.unwrap()
            }
        });
        until(|| p.origin.calls() == 1).await;
        let waiter = tokio::spawn({
            let addr = p.addr;
            async move {
                let client = reqwest::Client::builder().no_proxy().build().unwrap();
                client.get(format!("http://{addr}/slow")).send().await.unwrap()
            }
        });
        // The waiter reaches the origin itself while the leader still hangs.
        until(|| p.origin.calls() == 2).await;
        p.origin.release();
        let waiter = waiter.await.unwrap();
        assert_eq!(
            waiter.headers()["cache-status"],
            "hitbox; fwd=miss; detail=lock-timeout"
        );
        assert_eq!(waiter.text().await.unwrap(), "late");
        assert_eq!(leader.await.unwrap().text().await.unwrap(), "late");
    }
}

// 11. Cache-Status tells the truth.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_is_said_only_when_it_is_sure() {
    for p in [
        setup_with(Rfc9111::new().max_body_size(1024)).await,
        setup_layer(|layer| layer.rule(Rule::new().max_body_size(1024))).await,
    ] {
        // Unknown length that outgrows the limit: never called stored.
        p.origin.reply_streamed(
            "/grows",
            200,
            &[("cache-control", "max-age=60")],
            &"x".repeat(64 << 10),
        );
        let grows = p.get("/grows", &[]).await;
        assert_eq!(grows.cache_status(), "hitbox; fwd=miss");
        assert_eq!(grows.body.len(), 64 << 10);
        // Known length within the limit: stored, and it is.
        p.origin
            .reply("/fits", 200, &[("cache-control", "max-age=60")], "small");
        assert_eq!(
            p.get("/fits", &[]).await.cache_status(),
            "hitbox; fwd=miss; stored"
        );
        p.stores(1).await;
        assert!(p.get("/fits", &[]).await.cache_status().contains("hit"));
        assert_eq!(p.cache.stats().stores, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_cache_status_is_kept_and_ours_comes_last() {
    let p = setup().await;
    p.origin.reply(
        "/u",
        200,
        &[("cache-control", "max-age=60"), ("cache-status", "edge; hit")],
        "x",
    );
    let miss = p.get("/u", &[]).await;
    let members: Vec<&str> = miss
        .headers
        .get_all("cache-status")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(members, ["edge; hit", "hitbox; fwd=miss; stored"]);
    p.stores(1).await;
    // A hit was handled by this cache alone.
    let hit = p.get("/u", &[]).await;
    assert_eq!(hit.headers.get_all("cache-status").iter().count(), 1);
    assert!(hit.cache_status().starts_with("hitbox; hit"));
}

// 12-14. Rule mode.

fn rules(layer: hitbox_tower::CacheLayerBuilder) -> hitbox_tower::CacheLayerBuilder {
    layer.rule(Rule::new().policy(CachePolicy::new(Duration::from_secs(60))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_mode_keeps_variants_side_by_side_and_never_stores_vary_star() {
    let p = setup_layer(rules).await;
    p.origin.reply(
        "/v",
        200,
        &[("vary", "accept-language")],
        "lang {accept-language}",
    );
    let en = p.get("/v", &[("accept-language", "en")]).await;
    assert_eq!(en.body, "lang en");
    p.stores(1).await;
    // Another language is not served the stored English response.
    let fr = p.get("/v", &[("accept-language", "fr")]).await;
    assert_eq!(fr.body, "lang fr");
    assert_eq!(fr.cache_status(), "hitbox; fwd=miss; stored");
    p.stores(2).await;
    // Both are now hits, side by side.
    for (lang, body) in [("en", "lang en"), ("fr", "lang fr"), ("en", "lang en")] {
        let got = p.get("/v", &[("accept-language", lang)]).await;
        assert!(
            got.cache_status().contains("hit"),
            "{lang}: {}",
            got.cache_status()
        );
        assert_eq!(got.body, body);
    }
    let none = p.get("/v", &[]).await;
    assert_eq!(none.body, "lang -");
    assert_eq!(p.origin.calls(), 3);

    p.origin.reply("/star", 200, &[("vary", "*")], "x");
    p.get("/star", &[]).await;
    p.get("/star", &[]).await;
    assert_eq!(p.origin.calls(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_mode_does_not_store_no_cache_and_strips_fields_it_names() {
    let p = setup_layer(rules).await;
    p.origin.reply("/nc", 200, &[("cache-control", "no-cache")], "x");
    p.get("/nc", &[]).await;
    assert_eq!(
        p.get("/nc", &[]).await.cache_status(),
        "hitbox; fwd=bypass; detail=uncacheable"
    );
    assert_eq!(p.origin.calls(), 2);
    p.origin.reply(
        "/q",
        200,
        &[("cache-control", "no-cache=\"x-user\""), ("x-user", "alice")],
        "y",
    );
    assert_eq!(p.get("/q", &[]).await.header("x-user"), Some("alice"));
    p.stores(1).await;
    let hit = p.get("/q", &[]).await;
    assert!(hit.cache_status().contains("hit"));
    assert_eq!(hit.header("x-user"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_mode_keys_repeated_query_parameters_in_their_order() {
    let p = setup_layer(rules).await;
    p.origin.reply("/list?id=1&id=2", 200, &[], "one then two");
    p.origin.reply("/list?id=2&id=1", 200, &[], "two then one");
    assert_eq!(p.get("/list?id=1&id=2", &[]).await.body, "one then two");
    p.stores(1).await;
    let other = p.get("/list?id=2&id=1", &[]).await;
    assert_eq!(other.body, "two then one");
    assert_eq!(p.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_keeps_working_for_both_modes() {
    for p in [setup().await, setup_layer(rules).await] {
        p.origin
            .reply("/h", 200, &[("cache-control", "max-age=60")], "hello");
        p.get("/h", &[]).await;
        p.stores(1).await;
        let head = p.send(Method::HEAD, "/h", &[]).await;
        assert!(head.cache_status().contains("hit"));
        assert_eq!(head.body, "");
    }
}
