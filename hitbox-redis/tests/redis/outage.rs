//! A Redis that dies: calls keep succeeding from their loaders within the
//! timeouts, the breaker opens, and closes again once Redis is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hitbox_backend::{Backend, BackendError, Cache};
use hitbox_core::CachePolicy;
use hitbox_redis::fred::prelude::ReconnectPolicy;
use hitbox_redis::{BreakerState, RedisBackend};

use crate::common::{OwnServer, init_tracing, key, load, poll_until, profile, unique_prefix};

const READ_TIMEOUT: Duration = Duration::from_millis(100);
const WRITE_TIMEOUT: Duration = Duration::from_millis(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_dies_mid_traffic_never_fails_a_call() {
    init_tracing();
    let mut server = OwnServer::start().await;
    let redis = RedisBackend::builder()
        .url(server.url())
        .key_prefix(unique_prefix("outage"))
        .read_timeout(READ_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .failure_threshold(4)
        .cool_down(Duration::from_secs(600))
        .build()
        .expect("the backend builds");
    redis
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    let cache = Cache::builder(redis.clone())
        .policy(CachePolicy::new(Duration::from_secs(60)))
        .build();
    let loads = Arc::new(AtomicU32::new(0));

    // Traffic while Redis is up: five loads, then five hits.
    for id in 0..5 {
        assert_eq!(load(&cache, id, &loads).await, profile(id));
    }
    for id in 0..5 {
        assert_eq!(load(&cache, id, &loads).await, profile(id));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 5);
    assert_eq!(redis.breaker_state(), BreakerState::Closed);

    server.kill();

    // Every call still succeeds, from its loader, each bounded by the read
    // and write timeouts plus a margin for a busy machine.
    let bound = READ_TIMEOUT + WRITE_TIMEOUT + Duration::from_millis(750);
    let mut took = Vec::new();
    for id in 0..30 {
        let start = Instant::now();
        assert_eq!(load(&cache, id, &loads).await, profile(id));
        let elapsed = start.elapsed();
        assert!(elapsed < bound, "call {id} took {elapsed:?}, over {bound:?}");
        took.push(elapsed);
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        5 + 30,
        "Redis is gone: every call loads"
    );

    // The breaker is open: the tier answers at once without touching Redis.
    assert_eq!(redis.breaker_state(), BreakerState::Open);
    let start = Instant::now();
    let error = redis.read(&key(1)).await.expect_err("the breaker refuses");
    assert!(matches!(error, BackendError::Unavailable { .. }), "{error:?}");
    let error = redis
        .write(&key(1), Bytes::from_static(b"x"), Duration::from_secs(1), &[])
        .await
        .expect_err("the breaker refuses");
    assert!(matches!(error, BackendError::Unavailable { .. }), "{error:?}");
    assert!(
        start.elapsed() < READ_TIMEOUT / 2,
        "refusals took {:?}",
        start.elapsed()
    );
    // So the last calls did not wait for any timeout.
    for (i, elapsed) in took.iter().enumerate().skip(took.len() - 10) {
        assert!(
            *elapsed < READ_TIMEOUT,
            "call {i} took {elapsed:?} with the breaker open"
        );
    }

    let stats = cache.stats();
    assert!(stats.errors_of("redis") >= 60, "{stats:?}");
    assert!(redis.tier_stats()[0].errors >= 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_closes_again_once_redis_is_back() {
    init_tracing();
    let mut server = OwnServer::start().await;
    let port = server.port;
    let redis = RedisBackend::builder()
        .url(server.url())
        .key_prefix(unique_prefix("recovery"))
        .read_timeout(READ_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .failure_threshold(2)
        .cool_down(Duration::from_millis(300))
        .reconnect_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .expect("the backend builds");
    redis
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    let k = key(1);
    redis
        .write(&k, Bytes::from_static(b"before"), Duration::from_secs(60), &[])
        .await
        .expect("write while up");

    server.kill();
    for _ in 0..2 {
        redis.read(&k).await.expect_err("Redis is down");
    }
    assert_eq!(redis.breaker_state(), BreakerState::Open);
    assert!(matches!(
        redis.read(&k).await,
        Err(BackendError::Unavailable { .. })
    ));

    // A new, empty server on the same port: fred reconnects, a probe after
    // the cool-down succeeds, and the breaker closes.
    let _back = OwnServer::start_on(port).await;
    let recovered = poll_until(Duration::from_secs(15), || async {
        redis
            .write(&k, Bytes::from_static(b"after"), Duration::from_secs(60), &[])
            .await
            .is_ok()
    })
    .await;
    assert!(recovered.is_some(), "the tier did not recover within 15 s");
    assert_eq!(redis.breaker_state(), BreakerState::Closed);
    assert_eq!(
        redis.read(&k).await.expect("read"),
        Some(Bytes::from_static(b"after"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_one_timeout_then_nothing() {
    init_tracing();
    let server = OwnServer::start().await;
    let redis = RedisBackend::builder()
        .url(server.url())
        .key_prefix(unique_prefix("hung"))
        .read_timeout(READ_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .failure_threshold(3)
        .cool_down(Duration::from_millis(200))
        .unresponsive_after(Some(Duration::from_millis(500)))
        .connection_timeout(Duration::from_millis(500))
        .reconnect_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .expect("the backend builds");
    redis
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    let cache = Cache::builder(redis.clone())
        .policy(CachePolicy::new(Duration::from_secs(60)))
        .build();
    let loads = Arc::new(AtomicU32::new(0));
    assert_eq!(load(&cache, 1, &loads).await, profile(1));

    // The connection stays open but nothing answers: only the timeouts and
    // the breaker keep the calls bounded.
    server.pause();
    let bound = READ_TIMEOUT + WRITE_TIMEOUT + Duration::from_millis(750);
    for id in 0..20 {
        let start = Instant::now();
        assert_eq!(load(&cache, id, &loads).await, profile(id));
        let elapsed = start.elapsed();
        assert!(elapsed < bound, "call {id} took {elapsed:?}, over {bound:?}");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1 + 20);
    assert_ne!(redis.breaker_state(), BreakerState::Closed);

    // Thawed, the server answers again and a probe closes the breaker.
    server.resume();
    let recovered = poll_until(Duration::from_secs(15), || async {
        redis
            .write(&key(1), Bytes::from_static(b"back"), Duration::from_secs(60), &[])
            .await
            .is_ok()
    })
    .await;
    assert!(recovered.is_some(), "the tier did not recover within 15 s");
    assert_eq!(redis.breaker_state(), BreakerState::Closed);
    assert_eq!(
        redis.read(&key(1)).await.expect("read"),
        Some(Bytes::from_static(b"back"))
    );
}
