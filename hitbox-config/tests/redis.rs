//! A Redis-tier config against the real Redis that `scripts/services.sh`
//! starts (`HITBOX_TEST_REDIS_URL`, `HITBOX_TEST_REDIS_CLUSTER_URL`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use hitbox_backend::Backend;
use hitbox_config::Config;
use hitbox_core::{CacheKey, Extractor};
use hitbox_tower::{CacheLayer, extract};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: this test needs the Redis that scripts/services.sh starts (scripts/test.sh does)")
    })
}

fn unique_prefix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("hitbox-config-test:{}:{nanos}:", std::process::id())
}

async fn serve(layer: CacheLayer) -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&calls);
    let app = Router::new()
        .fallback(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move { format!("call {n}") }
        })
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), calls)
}

/// Polls until `done` holds, for at most 30 s: for events only a counter
/// shows (an entry being stored after its body streamed to the client).
async fn until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

fn config_text(url: &str, prefix: &str) -> String {
    format!(
        r#"
[[tiers]]
moka = {{ max_bytes = "8 MiB" }}

[[tiers]]
redis = {{ url = "{url}", key_prefix = "{prefix}", wait_connected = "5s" }}
stages = {{ compression = "zstd", min_compress_size = "0 B" }}

[layer]
distributed_lock = {{ lease = "5s" }}

[[rules]]
namespace = "items"
key = ["method", "path"]
policy = {{ ttl = "1h" }}
"#
    )
}

async fn two_instances_share_the_redis_tier(url: &str) {
    let prefix = unique_prefix();
    let text = config_text(url, &prefix);
    let first = Config::from_toml_str("two-tier.toml", &text)
        .unwrap()
        .build()
        .await
        .unwrap();
    assert_eq!(first.redis.len(), 1);
    assert_eq!(first.redis[0].key_prefix(), prefix);
    let (base, calls) = serve(first.layer).await;
    let client = reqwest::Client::new();
    let body = client
        .get(format!("{base}/items/7"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "call 1");

    // The entry is stored once the body has streamed through: wait for it.
    until(|| first.cache.stats().stores >= 1).await;

    // The entry is in Redis, under the key the code's extractors make.
    let (parts, ()) = http::Request::get("/items/7").body(()).unwrap().into_parts();
    let mut key = CacheKey::builder("items");
    extract::Method.and(extract::Path).extract(&parts, &mut key);
    let key = key.build();
    assert!(
        first.redis[0].read(&key).await.unwrap().is_some(),
        "{} not in Redis",
        key.as_str()
    );

    // A second instance, with its own empty moka, hits Redis: the origin
    // is not called again.
    let second = Config::from_toml_str("two-tier.toml", &text)
        .unwrap()
        .build()
        .await
        .unwrap();
    let (base2, calls2) = serve(second.layer).await;
    let response = client.get(format!("{base2}/items/7")).send().await.unwrap();
    let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(status.starts_with("hitbox; hit"), "{status}");
    assert_eq!(response.text().await.unwrap(), "call 1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(calls2.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_standalone_tier_from_config() {
    two_instances_share_the_redis_tier(&env("HITBOX_TEST_REDIS_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_tier_from_config() {
    two_instances_share_the_redis_tier(&env("HITBOX_TEST_REDIS_CLUSTER_URL")).await;
}

/// A URL the syntax check lets through but nothing listens at: the build
/// waits `wait_connected` and fails with an error that points at the URL.
#[tokio::test]
async fn unreachable_redis_is_an_error_when_asked_to_wait() {
    let text = "[[tiers]]\nredis = { url = \"redis://127.0.0.1:1\", connection_timeout = \"200ms\", wait_connected = \"300ms\" }\n";
    let error = Config::from_toml_str("app.toml", text)
        .unwrap()
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.line_column(), Some((2, 70)), "{error}");
    assert!(
        error.message().starts_with("the Redis tier did not connect: "),
        "{error}"
    );
}
