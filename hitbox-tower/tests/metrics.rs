//! One source of truth: HTTP traffic through the layer, over TCP, counted
//! by `Cache::stats()` and exported through the `metrics` facade, and the
//! two agree outcome by outcome; `hitbox_requests_total` tells the layer's
//! rules apart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hitbox_backend::{Cache, CacheStats, Outcome};
use hitbox_core::{CachePolicy, ManualClock};
use hitbox_moka::MokaBackend;
use hitbox_tower::client::ReqwestService;
use hitbox_tower::predicate::Path;
use hitbox_tower::{CacheLayer, Rule};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Layer, ServiceExt};

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Every counter with a value, by name and sorted `key=value` labels.
fn counters(snapshotter: &Snapshotter) -> HashMap<(String, Vec<String>), u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) if n > 0 => {
                let mut labels: Vec<String> = key
                    .key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                labels.sort();
                Some(((key.key().name().to_owned(), labels), n))
            }
            _ => None,
        })
        .collect()
}

fn stat(stats: &CacheStats, outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Hit => stats.hits,
        Outcome::Miss => stats.misses,
        Outcome::Stale => stats.stale_hits,
        Outcome::Collapsed => stats.collapsed,
        Outcome::Bypass => stats.bypassed,
        Outcome::Uncacheable => stats.uncacheable,
        Outcome::Error => stats.request_errors,
    }
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("not reached in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_request_counters_equal_the_stats_for_http_traffic() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let clock = ManualClock::new();
    let policy = CachePolicy::new(Duration::from_secs(10)).stale_while_revalidate(Duration::from_secs(60));
    // The recorder is installed for this thread while the cache and the
    // layer register their handles; the handles count from any thread.
    let (cache, layer) = metrics::with_local_recorder(&recorder, || {
        let cache = Cache::builder(MokaBackend::builder().label("l1").build())
            .name("edge-cache")
            .clock(clock.clone())
            .build();
        let layer = CacheLayer::builder(cache.clone())
            .cache_name("edge")
            .rule(Rule::new().when(Path::prefix("/api")).name("api").policy(policy))
            .build();
        (cache, layer)
    });
    let app = Router::new()
        .route("/api/items", get(|| async { "items" }))
        .route(
            "/api/private",
            get(|| async { ([("cache-control", "no-store")], "private") }),
        )
        .route("/other", get(|| async { "other" }))
        .layer(layer.clone());
    let addr = serve(app).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &'static str, authorization: bool| {
        let client = client.clone();
        async move {
            let mut request = client.get(format!("http://{addr}{path}"));
            if authorization {
                request = request.header("authorization", "Bearer secret");
            }
            let response = request.send().await.unwrap();
            let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
            response.text().await.unwrap();
            status
        }
    };

    assert_eq!(get("/api/items", false).await, "edge; fwd=miss; stored");
    wait_for(|| cache.stats().stores == 1).await;
    assert!(get("/api/items", false).await.starts_with("edge; hit"));
    assert_eq!(
        get("/api/items", true).await,
        "edge; fwd=bypass; detail=authorization"
    );
    // Not storable, then remembered as such (hit-for-pass: a bypass).
    assert_eq!(get("/api/private", false).await, "edge; fwd=miss");
    assert_eq!(
        get("/api/private", false).await,
        "edge; fwd=bypass; detail=uncacheable"
    );
    // No rule matches.
    assert_eq!(get("/other", false).await, "edge; fwd=bypass");
    // Stale while it is refreshed.
    clock.advance(Duration::from_secs(15));
    assert!(get("/api/items", false).await.starts_with("edge; hit; ttl=-"));
    wait_for(|| cache.stats().stores == 2).await;

    // An origin that cannot be reached: the layer in front of a real
    // reqwest client, asking a port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let origin = ReqwestService::new(client.clone());
    let result = layer
        .layer(origin)
        .oneshot(
            http::Request::get(format!("http://{closed}/api/gone"))
                .body(reqwest::Body::from(""))
                .unwrap(),
        )
        .await;
    assert!(result.is_err());

    let stats = cache.stats();
    assert_eq!(
        Outcome::ALL.map(|o| stat(&stats, o)),
        // hit, miss, stale, collapsed, bypass, uncacheable, error
        [1, 1, 1, 0, 3, 1, 1],
        "{stats:?}"
    );
    let exported = counters(&snapshotter);
    let count = |name: &str, labels: &[&str]| {
        let mut labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        labels.sort();
        exported.get(&(name.to_owned(), labels)).copied().unwrap_or(0)
    };
    for outcome in Outcome::ALL {
        let value = format!("outcome={outcome}");
        // The engine's per-cache counter and the layer's, summed over its
        // rules, both equal the stats.
        assert_eq!(
            count("hitbox_cache_requests_total", &["cache=edge-cache", &value]),
            stat(&stats, outcome),
            "{outcome}"
        );
        let by_rules: u64 = ["api", "none"]
            .iter()
            .map(|rule| {
                count(
                    "hitbox_requests_total",
                    &["layer=edge", &format!("rule={rule}"), &value],
                )
            })
            .sum();
        assert_eq!(by_rules, stat(&stats, outcome), "{outcome}");
    }
    // By rule.
    let rule = |rule: &str, outcome: &str| {
        count(
            "hitbox_requests_total",
            &[
                "layer=edge",
                &format!("rule={rule}"),
                &format!("outcome={outcome}"),
            ],
        )
    };
    assert_eq!(rule("api", "bypass"), 2);
    assert_eq!(rule("none", "bypass"), 1);
    assert_eq!(rule("api", "error"), 1);
    assert_eq!(rule("none", "hit"), 0);
    // The tiers count the same traffic from their side.
    assert_eq!(count("hitbox_tier_writes_total", &["tier=l1", "result=ok"]), 2);
    assert_eq!(
        count("hitbox_background_refreshes_total", &["cache=edge-cache"]),
        1
    );
}

#[tokio::test]
async fn without_a_recorder_the_stats_still_count_http_traffic() {
    let cache = Cache::new(MokaBackend::default());
    let app = Router::new()
        .route("/a", get(|| async { "a" }))
        .layer(CacheLayer::new(cache.clone()));
    let addr = serve(app).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    client
        .get(format!("http://{addr}/a"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    wait_for(|| cache.stats().stores == 1).await;
    client
        .get(format!("http://{addr}/a"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.hits, stats.requests()), (1, 1, 2));
}
