//! Purges over TCP: an axum origin behind the layer, the admin router
//! mounted beside it, reqwest clients; and two instances over one real
//! Redis with the invalidation bus, where a purge through one instance's
//! admin router reaches the other.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hitbox_backend::{Cache, PurgeMode};
use hitbox_core::Extractor as _;
use hitbox_core::{CachePolicy, ManualClock};
use hitbox_moka::MokaBackend;
use hitbox_redis::RedisBackend;
use hitbox_redis::invalidation::{BusEvent, Invalidation, InvalidationBus};
use hitbox_tower::admin::{Denied, purge_router};
use hitbox_tower::predicate::Path;
use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::{CacheLayer, CacheLayerBuilder, PurgeError, Rule};
use http::Method;
use support::body_origin::{Answer, BodyOrigin};
use support::bus::{bus_cache, redis_url};
use support::{Got, until};

const TOKEN: &str = "Bearer purge-token";

/// The origin behind a layer, the admin router at `/admin`, over TCP.
struct Site {
    addr: SocketAddr,
    origin: BodyOrigin,
    cache: Cache,
    clock: ManualClock,
    layer: CacheLayer,
}

fn origin() -> BodyOrigin {
    BodyOrigin::new(|received, n| {
        let answer = Answer::ok(format!("{} (call {n})", received.path));
        if received.path.starts_with("/tagged") {
            answer
                .header("surrogate-key", "product-1 catalog")
                .header("surrogate-key", "  shelf-9 ")
        } else if received.path.starts_with("/varies") {
            answer
                .header("cache-control", "max-age=60")
                .header("vary", "accept-language")
        } else {
            answer.header("cache-control", "max-age=60")
        }
    })
}

async fn site_with(
    cache: Cache,
    clock: ManualClock,
    configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder,
) -> Site {
    let origin = origin();
    let layer = configure(CacheLayer::builder(cache.clone())).build();
    let admin = purge_router(layer.purger(), |parts| match parts.headers.get("authorization") {
        Some(value) if value == TOKEN => Ok(()),
        Some(_) => Err(Denied::Forbidden),
        None => Err(Denied::Unauthenticated),
    });
    let app = Router::new()
        .nest("/admin", admin)
        .fallback_service(origin.app().layer(layer.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Site {
        addr,
        origin,
        cache,
        clock,
        layer,
    }
}

async fn site(configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder) -> Site {
    let clock = ManualClock::new();
    let policy = CachePolicy::new(Duration::from_secs(60)).stale_while_revalidate(Duration::from_secs(30));
    let cache = Cache::builder(MokaBackend::default())
        .clock(clock.clone())
        .policy(policy)
        .build();
    site_with(cache, clock, configure).await
}

impl Site {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut request = client.request(method, format!("http://{}{}", self.addr, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if !body.is_empty() {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned();
        Got {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Got {
        self.send(Method::GET, path, &[], "").await
    }

    /// An authorised admin purge.
    async fn admin(&self, path: &str, body: &str) -> Got {
        self.send(
            Method::POST,
            &format!("/admin{path}"),
            &[("authorization", TOKEN)],
            body,
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stores `path` (a miss), then checks that it is a hit.
    async fn fill(&self, path: &str) -> Got {
        let before = self.cache.stats().stores;
        let first = self.get(path).await;
        assert_eq!(first.cache_status(), "hitbox; fwd=miss; stored", "{path}");
        until(|| self.cache.stats().stores > before).await;
        assert!(is_hit(&self.get(path).await), "{path} is stored");
        first
    }
}

fn is_hit(got: &Got) -> bool {
    got.cache_status().starts_with("hitbox; hit")
}

#[tokio::test]
async fn a_hard_url_purge_removes_that_url_only() {
    let site = site(|layer| layer).await;
    site.fill("/items/1").await;
    site.fill("/items/1?lang=fr").await;
    let purged = site.admin("/purge/url", &site.url("/items/1")).await;
    assert_eq!(purged.status, 200);
    assert_eq!(purged.header("content-type"), Some("application/json"));
    assert_eq!(purged.body, r#"{"purged":1,"mode":"hard"}"#);
    let after = site.get("/items/1").await;
    assert_eq!(after.cache_status(), "hitbox; fwd=miss; stored");
    assert!(
        is_hit(&site.get("/items/1?lang=fr").await),
        "another query is another URL"
    );
}

#[tokio::test]
async fn a_soft_url_purge_serves_stale_once_while_one_request_refreshes() {
    let site = site(|layer| layer).await;
    let first = site.fill("/items/1").await;
    let calls = site.origin.calls();
    let purged = site.admin("/purge/url?soft=1", &site.url("/items/1")).await;
    assert_eq!(purged.body, r#"{"purged":1,"mode":"soft"}"#);
    let stores = site.cache.stats().stores;
    let stale = site.get("/items/1").await;
    assert!(
        stale.cache_status().starts_with("hitbox; hit; ttl=-"),
        "{}",
        stale.cache_status()
    );
    assert_eq!(stale.body, first.body, "the stale copy is served");
    until(|| site.cache.stats().stores > stores).await;
    assert_eq!(site.origin.calls(), calls + 1, "one background refresh");
    let fresh = site.get("/items/1").await;
    assert!(
        fresh.cache_status().starts_with("hitbox; hit; ttl="),
        "{}",
        fresh.cache_status()
    );
    assert!(!fresh.cache_status().contains("ttl=-"));
    assert_ne!(fresh.body, first.body, "the refreshed copy");
}

#[tokio::test]
async fn surrogate_keys_tag_entries_and_never_reach_clients() {
    let site = site(|layer| layer).await;
    let miss = site.fill("/tagged/1").await;
    assert_eq!(miss.header("surrogate-key"), None, "stripped on the miss");
    let hit = site.get("/tagged/1").await;
    assert!(is_hit(&hit));
    assert_eq!(hit.header("surrogate-key"), None, "stripped on hits");
    site.fill("/items/1").await;

    // A tag from the second header line counts as well.
    let purged = site.admin("/purge/tag/shelf-9", "").await;
    assert_eq!(purged.body, r#"{"purged":1,"mode":"hard"}"#);
    let stores = site.cache.stats().stores;
    assert_eq!(
        site.get("/tagged/1").await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
    until(|| site.cache.stats().stores > stores).await;
    let purged = site
        .layer
        .purger()
        .purge_tag("product-1", PurgeMode::Hard)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(is_hit(&site.get("/items/1").await), "untagged entries stay");
}

#[tokio::test]
async fn surrogate_keys_are_bounded_and_a_layer_can_do_without_them() {
    let keys = hitbox_tower::SurrogateKeys::new().max_keys(1).max_len(9);
    let site = site(|layer| layer.surrogate_keys(keys)).await;
    site.fill("/tagged/1").await;
    // `product-1` (9 bytes) is the one tag kept; `catalog` is past the count.
    let none = site
        .layer
        .purger()
        .purge_tag("catalog", PurgeMode::Hard)
        .await
        .unwrap();
    assert_eq!(none, 0);
    let one = site
        .layer
        .purger()
        .purge_tag("product-1", PurgeMode::Hard)
        .await
        .unwrap();
    assert_eq!(one, 1);

    let plain = site_with_default_cache(|layer| layer.without_surrogate_keys()).await;
    let got = plain.get("/tagged/1").await;
    assert_eq!(
        got.header("surrogate-key"),
        Some("product-1 catalog"),
        "left to the client"
    );
    until(|| plain.cache.stats().stores >= 1).await;
    let none = plain
        .layer
        .purger()
        .purge_tag("product-1", PurgeMode::Hard)
        .await
        .unwrap();
    assert_eq!(none, 0, "no tags read");
}

async fn site_with_default_cache(configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder) -> Site {
    site(configure).await
}

#[tokio::test]
async fn a_client_cannot_inject_tags_through_request_headers() {
    let site = site(|layer| layer).await;
    let before = site.cache.stats().stores;
    let got = site
        .send(
            Method::GET,
            "/items/1",
            &[("surrogate-key", "victim"), ("cache-tag", "victim")],
            "",
        )
        .await;
    assert_eq!(got.cache_status(), "hitbox; fwd=miss; stored");
    until(|| site.cache.stats().stores > before).await;
    let purged = site.admin("/purge/tag/victim", "").await;
    assert_eq!(purged.body, r#"{"purged":0,"mode":"hard"}"#);
    assert!(
        is_hit(&site.get("/items/1").await),
        "the entry carries no client tag"
    );
}

#[tokio::test]
async fn prefix_and_namespace_purges() {
    let site = site(|layer| {
        layer
            .rule(Rule::new().when(Path::prefix("/a")).namespace("alpha"))
            .rule(Rule::new().namespace("beta"))
    })
    .await;
    site.fill("/a/1").await;
    site.fill("/a/2").await;
    site.fill("/b/1").await;
    let purged = site.admin("/purge/namespace/alpha?soft=0", "").await;
    assert_eq!(purged.body, r#"{"purged":2,"mode":"hard"}"#);
    assert_eq!(site.get("/a/1").await.cache_status(), "hitbox; fwd=miss; stored");
    assert!(is_hit(&site.get("/b/1").await));
    let purged = site.admin("/purge/prefix", "beta:").await;
    assert_eq!(purged.body, r#"{"purged":1,"mode":"hard"}"#);
    assert_eq!(site.get("/b/1").await.cache_status(), "hitbox; fwd=miss; stored");
}

#[tokio::test]
async fn a_url_purge_in_standards_mode_reaches_every_variant() {
    let site = site(|layer| layer.rfc9111(Rfc9111::new())).await;
    for lang in ["fr", "de"] {
        let headers = [("accept-language", lang)];
        let got = site.send(Method::GET, "/varies/1", &headers, "").await;
        assert!(got.cache_status().contains("stored"), "{}", got.cache_status());
    }
    until(|| site.cache.stats().stores >= 2).await;
    let hit = site
        .send(Method::GET, "/varies/1", &[("accept-language", "de")], "")
        .await;
    assert!(is_hit(&hit));
    let purged = site.admin("/purge/url", &site.url("/varies/1")).await;
    assert_eq!(purged.body, r#"{"purged":2,"mode":"hard"}"#);
    for lang in ["fr", "de"] {
        let got = site
            .send(Method::GET, "/varies/1", &[("accept-language", lang)], "")
            .await;
        assert!(!is_hit(&got), "{lang}: {}", got.cache_status());
    }
}

#[tokio::test]
async fn the_admin_router_refuses_without_authorisation_and_bad_input() {
    let site = site(|layer| layer.rule(Rule::new().when(Path::prefix("/items")))).await;
    site.fill("/items/1").await;
    let url = site.url("/items/1");
    let anonymous = site.send(Method::POST, "/admin/purge/url", &[], &url).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.body.contains("\"kind\":\"unauthenticated\""));
    let wrong = site
        .send(
            Method::POST,
            "/admin/purge/tag/x",
            &[("authorization", "Bearer guess")],
            "",
        )
        .await;
    assert_eq!(wrong.status, 403);
    assert!(is_hit(&site.get("/items/1").await), "nothing purged");

    for (path, body, kind) in [
        ("/purge/url", "not a url", "bad-url"),
        ("/purge/url", "/items/1", "bad-url"),
        ("/purge/url?soft=2", url.as_str(), "bad-query"),
        ("/purge/prefix", "", "bad-target"),
        ("/purge/prefix", "has space", "bad-target"),
        ("/purge/tag/caf%C3%A9", "", "bad-target"),
    ] {
        let got = site.admin(path, body).await;
        assert_eq!(got.status, 400, "{path} {body}");
        assert!(
            got.body.contains(&format!("\"kind\":\"{kind}\"")),
            "{path}: {}",
            got.body
        );
    }
    let not_cached = site.admin("/purge/url", &site.url("/other")).await;
    assert_eq!(not_cached.status, 400);
    assert!(not_cached.body.contains("not-cached"));
    let huge = "x".repeat(hitbox_tower::admin::MAX_ADMIN_BODY + 1);
    assert_eq!(site.admin("/purge/prefix", &huge).await.status, 400);
    let get = site
        .send(Method::GET, "/admin/purge/tag/x", &[("authorization", TOKEN)], "")
        .await;
    assert_eq!(get.status, 405, "purges are POSTs");
    assert!(
        is_hit(&site.get("/items/1").await),
        "nothing purged by bad requests"
    );
}

#[tokio::test]
async fn a_failing_tier_is_a_503_with_its_kind() {
    // Nothing listens on port 1: every Redis command fails.
    let redis = RedisBackend::builder()
        .url("redis://127.0.0.1:1")
        .read_timeout(Duration::from_millis(200))
        .write_timeout(Duration::from_millis(200))
        .build()
        .expect("the backend builds");
    let clock = ManualClock::new();
    let cache = Cache::builder(redis).clock(clock.clone()).build();
    let site = site_with(cache, clock, |layer| layer).await;
    let got = site.admin("/purge/tag/x", "").await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert!(got.body.contains("\"kind\":\""), "{}", got.body);
    let error = site
        .layer
        .purger()
        .purge_url(
            &site.url("/x").parse().unwrap(),
            &Default::default(),
            PurgeMode::Hard,
        )
        .await;
    assert!(matches!(error, Err(PurgeError::Backend(_))), "{error:?}");
}

#[tokio::test]
async fn a_tier_that_cannot_list_its_keys_is_a_501_for_a_prefix_purge() {
    // memcached (the real server the test command starts) cannot list its
    // keys: a purge by prefix is one it cannot do, and says so.
    let url = std::env::var("HITBOX_TEST_MEMCACHED_URL")
        .expect("HITBOX_TEST_MEMCACHED_URL: run the tests through scripts/test.sh");
    let memcached = hitbox_memcached::MemcachedBackend::builder()
        .url(url)
        .build()
        .expect("the backend builds");
    let clock = ManualClock::new();
    let cache = Cache::builder(memcached).clock(clock.clone()).build();
    let site = site_with(cache, clock, |layer| layer).await;
    let got = site.admin("/purge/prefix", "hitbox:").await;
    assert_eq!(got.status, 501, "{}", got.body);
    assert!(got.body.contains("\"kind\":\"unsupported\""), "{}", got.body);
    // A purge by URL names its keys: that one it can do.
    let filled = site.get("/items/9").await;
    assert_eq!(filled.cache_status(), "hitbox; fwd=miss; stored");
    until_hit(&site, "/items/9").await;
    let purged = site.admin("/purge/url", &site.url("/items/9")).await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    assert!(!is_hit(&site.get("/items/9").await));
}

/// Waits until `path` is served from the cache.
async fn until_hit(site: &Site, path: &str) {
    for _ in 0..200 {
        if is_hit(&site.get(path).await) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{path} was never stored");
}

#[tokio::test]
async fn a_url_purge_takes_the_request_headers_a_rule_keys() {
    let tenant = http::HeaderName::from_static("x-tenant");
    let site = site(|layer| {
        layer.rule(Rule::new().key(
            hitbox_tower::extract::default_key().and(hitbox_tower::extract::Header::named(tenant.clone())),
        ))
    })
    .await;
    for who in ["acme", "globex"] {
        let got = site.send(Method::GET, "/items/1", &[("x-tenant", who)], "").await;
        assert_eq!(got.cache_status(), "hitbox; fwd=miss; stored", "{who}");
    }
    until(|| site.cache.stats().stores >= 2).await;
    // The URL alone names neither tenant's entry.
    let alone = site.admin("/purge/url", &site.url("/items/1")).await;
    assert_eq!(alone.body, r#"{"purged":0,"mode":"hard"}"#);
    let body = format!("{}\nX-Tenant: acme\n", site.url("/items/1"));
    let purged = site.admin("/purge/url", &body).await;
    assert_eq!(purged.body, r#"{"purged":1,"mode":"hard"}"#);
    let acme = site
        .send(Method::GET, "/items/1", &[("x-tenant", "acme")], "")
        .await;
    assert!(!is_hit(&acme), "{}", acme.cache_status());
    let globex = site
        .send(Method::GET, "/items/1", &[("x-tenant", "globex")], "")
        .await;
    assert!(
        is_hit(&globex),
        "the other tenant's entry stays: {}",
        globex.cache_status()
    );
    for bad in [
        format!("{}\nno colon here", site.url("/items/1")),
        format!("{}\nbad name: x", site.url("/items/1")),
    ] {
        let got = site.admin("/purge/url", &bad).await;
        assert_eq!(got.status, 400, "{bad}");
        assert!(got.body.contains("bad-header"), "{}", got.body);
    }
}

#[tokio::test]
async fn a_url_purge_in_rule_mode_reaches_variants_that_no_prefix_can() {
    // A URL long enough for its key to be digested: its variants' keys are
    // digests too, which no prefix of the primary key reaches.
    let path = format!("/varies/long?q={}", "x".repeat(300));
    let site = site(|layer| layer).await;
    let fill = |lang: &'static str| {
        let (site, path) = (&site, path.clone());
        async move {
            site.send(Method::GET, &path, &[("accept-language", lang)], "")
                .await
        }
    };
    for lang in ["fr", "de"] {
        let got = fill(lang).await;
        assert!(
            got.cache_status().contains("stored"),
            "{lang}: {}",
            got.cache_status()
        );
    }
    until(|| site.cache.stats().stores >= 2).await;
    for lang in ["fr", "de"] {
        assert!(is_hit(&fill(lang).await), "{lang} is stored");
    }
    // Soft: each variant is served stale while it is refreshed, none fresh.
    let purged = site.admin("/purge/url?soft=1", &site.url(&path)).await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    let stores = site.cache.stats().stores;
    let de = fill("de").await;
    assert!(
        de.cache_status().starts_with("hitbox; hit; ttl=-"),
        "the variant is stale, not fresh: {}",
        de.cache_status()
    );
    until(|| site.cache.stats().stores > stores).await;
    // Hard: neither variant is served.
    let purged = site.admin("/purge/url", &site.url(&path)).await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    for lang in ["fr", "de"] {
        let got = fill(lang).await;
        assert!(!is_hit(&got), "{lang}: {}", got.cache_status());
    }
}

#[tokio::test]
async fn a_rule_that_keys_bodies_cannot_be_purged_by_url() {
    let site = site(|layer| layer.rule(Rule::new().post_as_read(hitbox_tower::BodyKey::digest()))).await;
    let uri = site.url("/search").parse().unwrap();
    let error = site
        .layer
        .purger()
        .purge_url(&uri, &Default::default(), PurgeMode::Hard)
        .await;
    assert!(matches!(error, Err(PurgeError::KeyedByBody)), "{error:?}");
    let got = site.admin("/purge/url", &site.url("/search")).await;
    assert_eq!(got.status, 400);
    assert!(got.body.contains("keyed-by-body"));
    let _ = site.clock;
}

struct Instance {
    site: Site,
    bus: InvalidationBus,
}

async fn instance(url: &str, prefix: &str) -> Instance {
    let (cache, clock, bus) = bus_cache(url, prefix).await;
    let site = site_with(cache, clock, |layer| layer).await;
    Instance { site, bus }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_through_one_instances_admin_reaches_the_other() {
    let url = redis_url();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("hitbox-test:tower-purge:{}-{nanos}:", std::process::id());
    let a = instance(&url, &prefix).await;
    let b = instance(&url, &prefix).await;
    // Both instances serve one host, as behind a load balancer.
    let host = ("host", "api.example");
    let get = |site: &Site, path: &'static str| {
        let site_addr = site.addr;
        async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let response = client
                .get(format!("http://{site_addr}{path}"))
                .header(host.0, host.1)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.text().await.unwrap();
            Got {
                status,
                headers,
                body,
            }
        }
    };
    assert_eq!(
        get(&b.site, "/tagged/1").await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
    until(|| b.site.cache.stats().stores >= 1).await;
    assert!(
        is_hit(&get(&a.site, "/tagged/1").await),
        "A reads it from Redis into its L1"
    );
    assert!(is_hit(&get(&b.site, "/tagged/1").await));

    let mut b_events = b.bus.events();
    let purged = a.site.admin("/purge/tag/product-1", "").await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    let applied = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match b_events.recv().await {
                Ok(BusEvent::Applied(Invalidation::Tag(tag))) if tag == "product-1" => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(error) => panic!("B's bus stopped: {error}"),
            }
        }
    })
    .await;
    assert!(applied.is_ok(), "B applied A's purge");
    let after = get(&b.site, "/tagged/1").await;
    assert_eq!(
        after.cache_status(),
        "hitbox; fwd=miss; stored",
        "B's L1 forgot it too"
    );

    // And a URL purge, by the same admin surface.
    until(|| b.site.cache.stats().stores >= 2).await;
    assert!(is_hit(&get(&a.site, "/tagged/1").await));
    assert!(is_hit(&get(&b.site, "/tagged/1").await));
    let mut b_events = b.bus.events();
    let purged = a.site.admin("/purge/url", "http://api.example/tagged/1").await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    let applied = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match b_events.recv().await {
                Ok(BusEvent::Applied(Invalidation::Key(_))) => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(error) => panic!("B's bus stopped: {error}"),
            }
        }
    })
    .await;
    assert!(applied.is_ok(), "B applied A's URL purge");
    let after = get(&b.site, "/tagged/1").await;
    assert_eq!(
        after.cache_status(),
        "hitbox; fwd=miss; stored",
        "B stopped serving the purged URL"
    );
}

#[tokio::test]
async fn a_soft_purge_in_standards_mode_is_not_served_fresh_by_its_headers() {
    let site = site(|layer| layer.rfc9111(Rfc9111::new())).await;
    site.fill("/items/1").await;
    let purged = site.admin("/purge/url?soft=1", &site.url("/items/1")).await;
    assert_eq!(purged.body, r#"{"purged":1,"mode":"soft"}"#);
    // `max-age=60` and no stale-while-revalidate: the origin is asked.
    let calls = site.origin.calls();
    let after = site.get("/items/1").await;
    assert!(!is_hit(&after), "{}", after.cache_status());
    assert_eq!(site.origin.calls(), calls + 1);
}
