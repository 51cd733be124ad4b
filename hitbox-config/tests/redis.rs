//! A Redis-tier config against the real Redis that `scripts/services.sh`
//! starts (`HITBOX_TEST_REDIS_URL`, `HITBOX_TEST_REDIS_CLUSTER_URL`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use hitbox_backend::Backend;
use hitbox_config::Config;
use hitbox_core::{CacheKey, Extractor, Tag};
use hitbox_redis::invalidation::{BusEvent, Invalidation};
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

fn bus_config_text(url: &str, prefix: &str) -> String {
    format!(
        r#"
[[tiers]]
moka = {{ max_bytes = "8 MiB" }}

[[tiers]]
redis = {{ url = "{url}", key_prefix = "{prefix}", wait_connected = "5s" }}

[bus]
channel = "{prefix}bus"
degraded_ttl = "30s"
retry_interval = "100ms"
wait_subscribed = "10s"

[[rules]]
namespace = "items"
key = ["method", "path"]
policy = {{ ttl = "1h" }}
tags = ["items"]
"#
    )
}

/// Waits (at most 10 s) for the bus to apply an invalidation another
/// instance published.
async fn applied(events: &mut tokio::sync::broadcast::Receiver<BusEvent>, expected: &Invalidation) {
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(BusEvent::Applied(invalidation)) if invalidation == *expected => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(error) => panic!("the bus stopped: {error}"),
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "{expected:?} was not applied in 10 s");
}

/// Two instances built from the same file text: what one invalidates, by
/// tag or by key, leaves the other's moka tier too.
async fn two_instances_share_invalidations(url: &str) {
    let prefix = unique_prefix();
    let text = bus_config_text(url, &prefix);
    let first = Config::from_toml_str("two-tier.toml", &text)
        .unwrap()
        .build()
        .await
        .unwrap();
    let second = Config::from_toml_str("two-tier.toml", &text)
        .unwrap()
        .build()
        .await
        .unwrap();
    let first_bus = first.bus.clone().expect("[bus] starts a bus");
    let second_bus = second.bus.clone().expect("[bus] starts a bus");
    assert_eq!(first_bus.channel(), format!("{prefix}bus"));
    assert_eq!(second_bus.channel(), first_bus.channel());
    assert_ne!(
        first_bus.origin(),
        second_bus.origin(),
        "each start has an id of its own"
    );
    assert!(first_bus.is_subscribed() && second_bus.is_subscribed());
    assert_eq!(second_bus.degraded_ttl(), std::time::Duration::from_secs(30));

    // The second instance's moka tier, as the bus sees it, and its events.
    let second_l1 = Arc::clone(second_bus.l1());
    let mut events = second_bus.events();
    // The second's handles on its bus are dropped, as a server's `main`
    // that keeps only the layer does: the cache holds the bus, which keeps
    // running.
    let second_layer = second.layer;
    let second_cache = second.cache;
    drop(second.bus);
    drop(second_bus);

    let (base, _) = serve(first.layer).await;
    let (second_base, second_calls) = serve(second_layer).await;
    let client = reqwest::Client::new();
    let get = |base: &str| client.get(format!("{base}/items/7")).send();
    let (parts, ()) = http::Request::get("/items/7").body(()).unwrap().into_parts();
    let mut key = CacheKey::builder("items");
    extract::Method.and(extract::Path).extract(&parts, &mut key);
    let key = key.build();

    // Stored by the second instance, in its moka tier and in Redis; the
    // first reads it from Redis.
    let response = get(&second_base).await.unwrap();
    assert_eq!(response.headers()["cache-status"], "hitbox; fwd=miss; stored");
    response.text().await.unwrap();
    until(|| second_cache.stats().stores >= 1).await;
    assert!(second_l1.read(&key).await.unwrap().is_some());
    let response = get(&base).await.unwrap();
    assert!(
        response.headers()["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("hitbox; hit"),
        "{:?}",
        response.headers()["cache-status"]
    );

    // The first invalidates the tag: the second's moka forgets the entry,
    // and the second calls its origin again.
    assert!(first.cache.invalidate_tag(&Tag::new("items")).await.unwrap() >= 1);
    applied(&mut events, &Invalidation::Tag("items".into())).await;
    assert!(second_l1.read(&key).await.unwrap().is_none());
    let response = get(&second_base).await.unwrap();
    assert_eq!(response.headers()["cache-status"], "hitbox; fwd=miss; stored");
    assert_eq!(response.text().await.unwrap(), "call 2");
    assert_eq!(second_calls.load(Ordering::SeqCst), 2);

    // The same for a key the first deletes.
    until(|| second_cache.stats().stores >= 2).await;
    assert!(second_l1.read(&key).await.unwrap().is_some());
    assert!(first.cache.delete(&key).await.unwrap());
    applied(&mut events, &Invalidation::Key(key.as_str().to_owned())).await;
    assert!(second_l1.read(&key).await.unwrap().is_none());
    let response = get(&second_base).await.unwrap();
    assert_eq!(response.headers()["cache-status"], "hitbox; fwd=miss; stored");
    assert_eq!(second_calls.load(Ordering::SeqCst), 3);
    assert!(second_cache.stats().stores >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_from_config_standalone() {
    two_instances_share_invalidations(&env("HITBOX_TEST_REDIS_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_from_config_cluster() {
    two_instances_share_invalidations(&env("HITBOX_TEST_REDIS_CLUSTER_URL")).await;
}

/// A bus over a Redis nothing listens at: the build waits
/// `wait_subscribed` and fails with an error that points at it.
#[tokio::test]
async fn a_bus_that_cannot_subscribe_is_an_error_when_asked_to_wait() {
    let text = "[[tiers]]\nmoka = { max_bytes = \"1 MiB\" }\n[[tiers]]\nredis = { url = \"redis://127.0.0.1:1\", connection_timeout = \"100ms\" }\n\n[bus]\nwait_subscribed = \"300ms\"\n";
    let error = Config::from_toml_str("app.toml", text)
        .unwrap()
        .build()
        .await
        .unwrap_err();
    assert_eq!(error.line_column(), Some((7, 1)), "{error}");
    assert!(
        error
            .message()
            .starts_with("the invalidation bus did not subscribe: "),
        "{error}"
    );
}

/// `origin_env` names a variable that is not set: the build fails at it.
#[tokio::test]
async fn a_bus_origin_from_an_unset_variable_is_an_error() {
    let text = "[[tiers]]\nmoka = { max_bytes = \"1 MiB\" }\n[[tiers]]\nredis = { url = \"redis://127.0.0.1:1\" }\n[bus]\norigin_env = \"HITBOX_CONFIG_TEST_UNSET_ORIGIN\"\n";
    let error = Config::from_toml_str("app.toml", text)
        .unwrap()
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "app.toml:6:15: the environment variable HITBOX_CONFIG_TEST_UNSET_ORIGIN that should hold this instance's id is not set"
    );
}

/// `origin_env`: the instance's id comes from the environment (here a
/// variable cargo sets for every test it runs).
#[tokio::test]
async fn a_bus_origin_from_the_environment() {
    let expected = env("CARGO_PKG_NAME");
    let text = "[[tiers]]\nmoka = { max_bytes = \"1 MiB\" }\n[[tiers]]\nredis = { url = \"redis://127.0.0.1:1\" }\n[bus]\norigin_env = \"CARGO_PKG_NAME\"\n";
    let built = Config::from_toml_str("app.toml", text)
        .unwrap()
        .build()
        .await
        .unwrap();
    let bus = built.bus.expect("[bus] starts a bus");
    assert_eq!(bus.origin().as_str(), expected);
    assert_eq!(
        built.redis[0].instance_id().as_str(),
        expected,
        "the Redis tier's audit entries carry the same origin"
    );
    assert_eq!(
        bus.channel(),
        "#invalidations",
        "the default channel, without a key prefix"
    );
    assert!(!bus.is_subscribed(), "nothing listens at port 1");
}

/// A redis-server of the test's own (`HITBOX_TEST_REDIS_SERVER_BIN`), for
/// a test that freezes it: the shared one serves the other tests.
struct OwnServer {
    child: std::process::Child,
    port: u16,
}

impl OwnServer {
    async fn start() -> OwnServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(env("HITBOX_TEST_REDIS_SERVER_BIN"))
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        // Up once it accepts a connection (its own start takes a few ms).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not come up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        OwnServer { child, port }
    }

    /// SIGSTOP or SIGCONT, through the shell's own `kill`.
    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("sh")
            .args(["-c", "kill \"$0\" \"$1\"", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `purge_timeout` reaches the Redis tier: a purge of a frozen server
/// gives up after it, not after the (longer) read and write timeouts.
#[tokio::test]
async fn purge_timeout_from_config_bounds_a_purge_that_redis_holds() {
    let server = OwnServer::start().await;
    let prefix = unique_prefix();
    let text = format!(
        "[[tiers]]\nredis = {{ url = \"redis://127.0.0.1:{}\", key_prefix = \"{prefix}\", read_timeout = \"5s\", write_timeout = \"5s\", purge_timeout = \"300ms\", wait_connected = \"5s\" }}\n",
        server.port
    );
    let built = Config::from_toml_str("app.toml", &text)
        .unwrap()
        .build()
        .await
        .unwrap();
    let users = CacheKey::builder("users").part("tenant", "t1");
    for id in 0..10 {
        let key = users.clone().part("id", id.to_string()).build();
        built.cache.set(&key, &id.to_string()).await.unwrap();
    }

    server.signal("-STOP");
    let started = tokio::time::Instant::now();
    let result = built
        .cache
        .purge_prefix(&users.key_prefix(), hitbox_backend::purge::PurgeMode::Hard)
        .await;
    let took = started.elapsed();
    server.signal("-CONT");
    let bound = std::time::Duration::from_millis(300);
    assert!(
        matches!(&result, Err(hitbox_backend::BackendError::Timeout { after, .. }) if *after == bound),
        "{result:?}"
    );
    assert!(
        took >= bound && took < std::time::Duration::from_secs(4),
        "{took:?}"
    );

    // Thawed, the same purge goes through.
    let purged = built
        .cache
        .purge_prefix(&users.key_prefix(), hitbox_backend::purge::PurgeMode::Hard)
        .await
        .unwrap();
    assert_eq!(purged, 10);
}

/// Every `[bus]` setting reaches the bus it starts.
#[tokio::test]
async fn bus_settings_from_config_reach_the_bus() {
    let prefix = unique_prefix();
    let url = env("HITBOX_TEST_REDIS_URL");
    let text = format!(
        r#"
[[tiers]]
moka = {{ max_bytes = "8 MiB" }}

[[tiers]]
redis = {{ url = "{url}", key_prefix = "{prefix}", wait_connected = "5s" }}

[bus]
channel = "{prefix}settings"
degraded_ttl = "7s"
purge_on_resubscribe = false
publish_timeout = "1500ms"
retry_interval = "250ms"
stream_poll_interval = "3s"
wait_subscribed = "10s"
"#
    );
    let built = Config::from_toml_str("bus.toml", &text)
        .unwrap()
        .build()
        .await
        .unwrap();
    let bus = built.bus.clone().expect("[bus] starts a bus");
    let ms = std::time::Duration::from_millis;
    assert_eq!(bus.channel(), format!("{prefix}settings"));
    assert_eq!(bus.degraded_ttl(), ms(7000));
    assert!(!bus.purge_on_resubscribe());
    assert_eq!(bus.publish_timeout(), ms(1500));
    assert_eq!(bus.retry_interval(), ms(250));
    assert_eq!(bus.stream_poll_interval(), ms(3000));

    // And the defaults, where the section says nothing.
    let text = format!(
        "[[tiers]]\nmoka = {{ max_bytes = \"8 MiB\" }}\n\n[[tiers]]\nredis = {{ url = \"{url}\", key_prefix = \"{prefix}d:\", wait_connected = \"5s\" }}\n\n[bus]\n"
    );
    let built = Config::from_toml_str("bus.toml", &text)
        .unwrap()
        .build()
        .await
        .unwrap();
    let bus = built.bus.clone().expect("[bus] starts a bus");
    assert!(bus.purge_on_resubscribe());
    assert_eq!(
        bus.publish_timeout(),
        hitbox_redis::invalidation::DEFAULT_PUBLISH_TIMEOUT
    );
    assert_eq!(
        bus.retry_interval(),
        hitbox_redis::invalidation::DEFAULT_RETRY_INTERVAL
    );
    assert_eq!(
        bus.stream_poll_interval(),
        hitbox_redis::invalidation::DEFAULT_STREAM_POLL_INTERVAL
    );
}
