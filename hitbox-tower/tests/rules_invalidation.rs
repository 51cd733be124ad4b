//! Invalidation by unsafe methods in rule mode, over TCP: an axum origin
//! that counts its calls and answers unsafe requests as the test scripts,
//! the layer in front of it, reqwest clients; and two instances, each with
//! its own moka L1 over one real Redis and the invalidation bus.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hitbox_redis::invalidation::{BusEvent, Invalidation, InvalidationBus};
use hitbox_tower::predicate::Path;
use hitbox_tower::{BodyKey, Rule};
use http::Method;
use support::Got;
use support::body_origin::{Answer, BodyOrigin, Site, site, site_over};
use support::bus::{bus_cache, redis_url};

/// How unsafe requests are answered: status and headers, set by the test.
type Script = Arc<Mutex<Answer>>;

/// `GET` answers name the path and the call; unsafe requests get the
/// scripted answer.
fn origin() -> (BodyOrigin, Script) {
    let script: Script = Arc::new(Mutex::new(Answer::ok("done")));
    let unsafe_answer = Arc::clone(&script);
    let origin = BodyOrigin::new(move |received, n| {
        if received.method == Method::GET {
            Answer::ok(format!("{} (call {n})", received.path))
        } else {
            unsafe_answer.lock().unwrap().clone()
        }
    });
    (origin, script)
}

fn is_hit(got: &Got) -> bool {
    got.cache_status().starts_with("hitbox; hit")
}

/// Stores each path, then checks that each is a hit.
async fn fill(site: &Site, paths: &[&str]) {
    let before = site.cache.stats().stores;
    for path in paths {
        assert_eq!(
            site.get(path).await.cache_status(),
            "hitbox; fwd=miss; stored",
            "{path}"
        );
    }
    site.stores(before + paths.len() as u64).await;
    for path in paths {
        assert!(is_hit(&site.get(path).await), "{path} is stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_every_get_of_their_path() {
    let (origin, _) = origin();
    let site = site(origin, |layer| layer.rule(Rule::new())).await;
    for method in [Method::PUT, Method::POST, Method::DELETE, Method::PATCH] {
        fill(
            &site,
            &["/items/1", "/items/1?lang=fr&view=full", "/items/2", "/items"],
        )
        .await;
        let calls = site.origin.calls();
        let got = site
            .send(method.clone(), "/items/1", &[], Bytes::from_static(b"{}"))
            .await;
        assert_eq!(got.body, "done");
        assert_eq!(got.cache_status(), "hitbox; fwd=bypass; detail=method");
        assert_eq!(site.origin.calls(), calls + 1, "the {method} reached the origin");
        // Its path, whatever the query: gone. Other paths: kept.
        let fresh = site.get("/items/1").await;
        assert_eq!(fresh.cache_status(), "hitbox; fwd=miss; stored", "{method}");
        assert_eq!(fresh.body, format!("/items/1 (call {})", calls + 2));
        let query = site.get("/items/1?lang=fr&view=full").await;
        assert_eq!(query.cache_status(), "hitbox; fwd=miss; stored", "{method}");
        assert!(is_hit(&site.get("/items/2").await), "{method}");
        assert!(
            is_hit(&site.get("/items").await),
            "{method}: the parent path stays"
        );
        // Empty the cache for the next method's round.
        for path in ["/items/1", "/items/2", "/items"] {
            site.send(Method::DELETE, path, &[], Bytes::new()).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_and_content_location_on_the_same_host_are_invalidated() {
    let (origin, script) = origin();
    let site = site(origin, |layer| layer.rule(Rule::new())).await;
    let host = site.addr.to_string();
    fill(&site, &["/items", "/items/7", "/items/8", "/items/9", "/other/9"]).await;
    *script.lock().unwrap() = Answer::ok("created")
        .status(201)
        .header("location", "/items/7?created=1")
        .header("content-location", &format!("http://{host}/items/8"));
    let created = site
        .send(Method::POST, "/items", &[], Bytes::from_static(b"new"))
        .await;
    assert_eq!(created.status, 201);
    for dropped in ["/items", "/items/7", "/items/8"] {
        assert_eq!(
            site.get(dropped).await.cache_status(),
            "hitbox; fwd=miss; stored",
            "{dropped}"
        );
    }
    assert!(is_hit(&site.get("/items/9").await));
    // Another host in either field: nothing of it is touched here (and
    // the target's own path is).
    *script.lock().unwrap() = Answer::ok("moved")
        .header("location", "http://other.example/items/9")
        .header("content-location", "//other.example/other/9");
    site.send(Method::PUT, "/items/8", &[], Bytes::new()).await;
    assert!(
        is_hit(&site.get("/items/9").await),
        "another host's URL is not invalidated"
    );
    assert!(
        is_hit(&site.get("/other/9").await),
        "another host's URL is not invalidated"
    );
    assert_eq!(
        site.get("/items/8").await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_responses_invalidate_nothing() {
    let (origin, script) = origin();
    let site = site(origin, |layer| layer.rule(Rule::new())).await;
    fill(&site, &["/items/1", "/items/2"]).await;
    for status in [400, 403, 404, 409, 500, 503] {
        *script.lock().unwrap() = Answer::ok("no").status(status).header("location", "/items/2");
        let got = site
            .send(Method::PUT, "/items/1", &[], Bytes::from_static(b"x"))
            .await;
        assert_eq!(got.status, status);
        assert!(is_hit(&site.get("/items/1").await), "a {status} leaves the entry");
        assert!(
            is_hit(&site.get("/items/2").await),
            "a {status} leaves its Location"
        );
    }
    // A redirect is not an error (RFC 9111 section 4.4: 2xx and 3xx).
    *script.lock().unwrap() = Answer::ok("see other").status(303).header("location", "/items/2");
    site.send(Method::POST, "/items/1", &[], Bytes::new()).await;
    assert_eq!(
        site.get("/items/1").await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
    assert_eq!(
        site.get("/items/2").await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_may_keep_its_entries_and_reads_by_post_invalidate_nothing() {
    let (origin, _) = origin();
    let site = site(origin, |layer| {
        layer
            .rule(
                Rule::new()
                    .when(Path::prefix("/reports"))
                    .invalidate_on_unsafe(false),
            )
            .rule(
                Rule::new()
                    .when(Path::exact("/search"))
                    .post_as_read(BodyKey::digest()),
            )
            .rule(Rule::new())
    })
    .await;
    fill(&site, &["/reports/1", "/search", "/items/1"]).await;
    // The reports rule keeps its entries through a PUT.
    site.send(Method::PUT, "/reports/1", &[], Bytes::new()).await;
    assert!(is_hit(&site.get("/reports/1").await));
    // A POST the search rule caches is a read: the GET stays.
    let search = site
        .send(Method::POST, "/search", &[], Bytes::from_static(b"q=1"))
        .await;
    assert_eq!(search.cache_status(), "hitbox; fwd=miss; stored");
    assert!(is_hit(&site.get("/search").await));
    // Entries of other rules still go.
    site.send(Method::DELETE, "/items/1", &[], Bytes::new()).await;
    assert_eq!(
        site.get("/items/1").await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
}

/// One instance: its moka L1 and the bus, composed over one Redis.
struct Instance {
    site: Site,
    bus: InvalidationBus,
}

async fn instance(url: &str, prefix: &str, origin: BodyOrigin) -> Instance {
    let (cache, clock, bus) = bus_cache(url, prefix).await;
    let site = site_over(origin, cache, clock, |layer| layer.rule(Rule::new())).await;
    Instance { site, bus }
}

/// Every request names one host, as behind a load balancer: both instances
/// key and tag it alike.
const HOST: (&str, &str) = ("host", "api.example");

async fn get(instance: &Instance, path: &str) -> Got {
    instance.site.send(Method::GET, path, &[HOST], Bytes::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_one_instance_drops_the_entry_in_every_instance() {
    let url = redis_url();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("hitbox-test:tower-rules:{}-{nanos}:", std::process::id());
    let (origin, _) = origin();
    let a = instance(&url, &prefix, origin.clone()).await;
    let b = instance(&url, &prefix, origin.clone()).await;

    // B loads it (into its L1 and Redis); A finds it in Redis (into its L1).
    let first = get(&b, "/items/1").await;
    assert_eq!(first.cache_status(), "hitbox; fwd=miss; stored");
    b.site.stores(1).await;
    let from_redis = get(&a, "/items/1").await;
    assert!(is_hit(&from_redis), "{}", from_redis.cache_status());
    assert_eq!(from_redis.body, first.body);
    assert!(is_hit(&get(&b, "/items/1").await));
    assert_eq!(
        get(&b, "/items/2").await.cache_status(),
        "hitbox; fwd=miss; stored"
    );
    b.site.stores(2).await;
    assert_eq!(origin.calls(), 2);

    let mut b_events = b.bus.events();
    let put = a
        .site
        .send(Method::PUT, "/items/1", &[HOST], Bytes::from_static(b"v2"))
        .await;
    assert_eq!(put.body, "done");
    // B applies A's tag invalidation to its L1.
    let applied = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match b_events.recv().await {
                Ok(BusEvent::Applied(Invalidation::Tag(tag))) if tag.starts_with("rules-url:") => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(error) => panic!("B's bus stopped: {error}"),
            }
        }
    })
    .await;
    assert!(applied.is_ok(), "B never applied A's invalidation");

    // Neither B's L1 nor Redis answers any more: the origin does.
    let again = get(&b, "/items/1").await;
    assert_eq!(again.cache_status(), "hitbox; fwd=miss; stored");
    assert_eq!(again.body, format!("/items/1 (call {})", origin.calls()));
    assert_ne!(again.body, first.body);
    // The other path is still cached in B.
    assert!(is_hit(&get(&b, "/items/2").await));
}
