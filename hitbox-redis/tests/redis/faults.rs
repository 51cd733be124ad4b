//! An operator's worst day, against real redis-server processes: Redis
//! killed or frozen while entries are written and invalidated, garbage of
//! every kind under real keys, and the time the tier takes to be used again
//! once Redis is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::{KeysInterface, ListInterface};
use hitbox_backend::{Backend, BackendError, Cache, Compression, Staged, Stages};
use hitbox_core::{CachePolicy, Tag};
use hitbox_redis::fred::prelude::ReconnectPolicy;
use hitbox_redis::{BreakerState, RedisBackend};

use crate::common::{
    OwnServer, Profile, STANDALONE, env, init_tracing, key, load, plain_client, poll_until, profile,
    unique_prefix,
};

const READ_TIMEOUT: Duration = Duration::from_millis(100);
const WRITE_TIMEOUT: Duration = Duration::from_millis(150);
const HOUR: Duration = Duration::from_secs(3_600);

/// A backend on `server` that opens its breaker after one failure.
async fn fragile(server: &OwnServer, test: &str) -> RedisBackend {
    let redis = RedisBackend::builder()
        .url(server.url())
        .key_prefix(unique_prefix(test))
        .read_timeout(READ_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .failure_threshold(1)
        .cool_down(Duration::from_millis(200))
        .unresponsive_after(Some(Duration::from_millis(400)))
        .connection_timeout(Duration::from_millis(400))
        .reconnect_policy(ReconnectPolicy::new_constant(0, 50))
        .build()
        .expect("the backend builds");
    redis
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    redis
}

/// Waits until the tier answers a read again (the replay runs first).
async fn until_back(redis: &RedisBackend) {
    let back = poll_until(Duration::from_secs(15), || async {
        redis.read(&key(999)).await.is_ok()
    })
    .await;
    assert!(back.is_some(), "the tier did not come back within 15 s");
    assert_eq!(redis.breaker_state(), BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_issued_while_redis_is_dead_holds_once_it_is_back() {
    init_tracing();
    let mut server = OwnServer::start().await;
    let port = server.port;
    let redis = fragile(&server, "outage-order").await;
    let tag = Tag::from("team");
    redis
        .write(&key(1), Bytes::from_static(b"v1"), HOUR, &[])
        .await
        .expect("write while up");

    server.kill();
    // During the outage: a newer write (which must not be sent later), then
    // its deletion and a tag invalidation (which must not be lost).
    let written = redis.write(&key(1), Bytes::from_static(b"v2"), HOUR, &[]).await;
    assert!(written.is_err(), "Redis is down: {written:?}");
    let removed = redis.remove(&key(1)).await;
    assert!(
        removed.as_ref().is_err_and(BackendError::is_tier_failure),
        "{removed:?}"
    );
    assert!(redis.invalidate_tag(&tag).await.is_err());
    assert_eq!(redis.pending_invalidations(), 2, "the key and the tag wait");

    // Redis comes back on the same port, and meanwhile someone (another
    // instance, a restore) put entries there: the key, and one under the
    // tag.
    let _back = OwnServer::start_on(port).await;
    let plain = plain_client(&format!("redis://127.0.0.1:{port}")).await;
    let _: () = plain
        .set(redis.redis_key(&key(1)), "restored", None, None, false)
        .await
        .unwrap();
    let writer = RedisBackend::builder()
        .url(format!("redis://127.0.0.1:{port}"))
        .key_prefix(redis.key_prefix())
        .build()
        .unwrap();
    writer.wait_connected(Duration::from_secs(10)).await.unwrap();
    writer
        .write(
            &key(2),
            Bytes::from_static(b"tagged"),
            HOUR,
            std::slice::from_ref(&tag),
        )
        .await
        .unwrap();

    until_back(&redis).await;
    assert_eq!(redis.pending_invalidations(), 0);
    assert_eq!(
        redis.read(&key(1)).await.unwrap(),
        None,
        "the deletion was replayed"
    );
    assert_eq!(
        redis.read(&key(2)).await.unwrap(),
        None,
        "the tag invalidation was replayed"
    );
    // And the write of the outage never landed afterwards.
    let later: Option<Bytes> = plain.get(redis.redis_key(&key(1))).await.unwrap();
    assert_eq!(later, None);
    // The tier is used normally again.
    redis
        .write(&key(1), Bytes::from_static(b"v3"), HOUR, &[])
        .await
        .unwrap();
    assert_eq!(
        redis.read(&key(1)).await.unwrap(),
        Some(Bytes::from_static(b"v3"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_timed_out_on_a_frozen_redis_cannot_outlive_a_later_delete() {
    init_tracing();
    let server = OwnServer::start().await;
    let redis = fragile(&server, "frozen-order").await;
    let plain = plain_client(&server.url()).await;
    redis
        .write(&key(1), Bytes::from_static(b"v1"), HOUR, &[])
        .await
        .expect("write while up");

    server.pause();
    // Sent, but nobody answers: it times out, and may still be carried out.
    let written = redis.write(&key(1), Bytes::from_static(b"v2"), HOUR, &[]).await;
    assert!(
        matches!(written, Err(BackendError::Timeout { .. })),
        "{written:?}"
    );
    // The breaker is open now: the deletion is refused before it is sent.
    let removed = redis.remove(&key(1)).await;
    assert!(
        matches!(removed, Err(BackendError::Unavailable { .. })),
        "{removed:?}"
    );
    assert!(redis.pending_invalidations() >= 1);

    server.resume();
    until_back(&redis).await;
    let now: Option<Bytes> = plain.get(redis.redis_key(&key(1))).await.unwrap();
    assert_eq!(now, None, "neither v1 nor the late v2 survives the deletion");
    assert_eq!(redis.read(&key(1)).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_is_used_again_within_one_and_a_half_seconds_of_redis_returning() {
    init_tracing();
    let mut server = OwnServer::start().await;
    let port = server.port;
    // The defaults, but for short timeouts: one breaker, its 1 s cool-down,
    // fred's 250 ms reconnect back-off.
    let redis = RedisBackend::builder()
        .url(server.url())
        .key_prefix(unique_prefix("recovery-time"))
        .read_timeout(READ_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .build()
        .expect("the backend builds");
    redis.wait_connected(Duration::from_secs(10)).await.unwrap();
    let cache = Cache::builder(redis.clone())
        .policy(CachePolicy::new(HOUR))
        .build();

    server.kill();
    for id in 0..10 {
        let _ = cache.get::<Profile>(&key(id)).await;
    }
    assert_eq!(redis.breaker_state(), BreakerState::Open);

    let _back = OwnServer::start_on(port).await;
    let returned = Instant::now();
    // Traffic as an application makes it: a call every 10 ms.
    let used = poll_until(Duration::from_secs(10), || async {
        cache.set(&key(1), &profile(1)).await.is_ok()
    })
    .await
    .expect("the tier is used again");
    let took = returned.elapsed();
    assert!(
        took <= Duration::from_millis(1_500),
        "the tier was used again {took:?} after Redis returned ({used:?} of polling)"
    );
    assert_eq!(cache.get::<Profile>(&key(1)).await, Some(profile(1)));
}

/// Plain and staged (compressed) tiers over the shared server: garbage of
/// each kind under the keys the cache reads is a miss that reloads, the
/// breaker stays closed, and every value served is the right one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_of_every_kind_under_real_keys_reads_as_a_miss() {
    init_tracing();
    let url = env(STANDALONE);
    let plain = plain_client(&url).await;
    for staged in [false, true] {
        let redis = crate::common::backend(&url, &unique_prefix("garbage")).await;
        let cache = if staged {
            Cache::builder(Staged::new(
                redis.clone(),
                Stages::new()
                    .compression(Compression::zstd(3))
                    .min_compress_size(0),
            ))
        } else {
            Cache::builder(redis.clone())
        }
        .policy(CachePolicy::new(HOUR))
        .build();
        let loads = Arc::new(AtomicU32::new(0));
        for id in 0..2 {
            assert_eq!(load(&cache, id, &loads).await, profile(id));
        }
        let good0: Bytes = plain.get(redis.redis_key(&key(0))).await.unwrap();
        let good1: Bytes = plain.get(redis.redis_key(&key(1))).await.unwrap();

        let other_format = {
            let json = Cache::builder(redis.clone())
                .format(hitbox_backend::Format::Json)
                .policy(CachePolicy::new(HOUR))
                .build();
            json.set(&key(7), &profile(0)).await.unwrap();
            let bytes: Bytes = plain.get(redis.redis_key(&key(7))).await.unwrap();
            bytes
        };
        let mut flipped = good0.to_vec();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        let garbage: Vec<(&str, Bytes)> = vec![
            (
                "random",
                Bytes::from_static(b"\x8f\x02random bytes \x00\xff no entry"),
            ),
            ("truncated", good0.slice(..good0.len() - 3)),
            ("bit flipped", Bytes::from(flipped)),
            ("other format", other_format),
            ("swapped", good1.clone()),
            ("empty", Bytes::new()),
        ];
        for (kind, bytes) in garbage {
            let _: () = plain
                .set(redis.redis_key(&key(0)), bytes, None, None, false)
                .await
                .unwrap();
            let before = loads.load(Ordering::SeqCst);
            assert_eq!(
                load(&cache, 0, &loads).await,
                profile(0),
                "{kind} (staged: {staged})"
            );
            assert_eq!(loads.load(Ordering::SeqCst), before + 1, "{kind}: reloaded");
            // The reload replaced it with a readable entry.
            assert_eq!(load(&cache, 0, &loads).await, profile(0));
            assert_eq!(loads.load(Ordering::SeqCst), before + 1, "{kind}: then a hit");
        }
        // Wrong type: a list where a string should be. Redis answers
        // WRONGTYPE, about that key only: many of them never open the
        // breaker, and the other keys keep being served from Redis.
        for _ in 0..20 {
            let _: i64 = plain.del(redis.redis_key(&key(0))).await.unwrap();
            let _: i64 = plain.rpush(redis.redis_key(&key(0)), "a list").await.unwrap();
            assert_eq!(load(&cache, 0, &loads).await, profile(0));
        }
        assert_eq!(redis.breaker_state(), BreakerState::Closed);
        let before = loads.load(Ordering::SeqCst);
        assert_eq!(load(&cache, 1, &loads).await, profile(1));
        assert_eq!(loads.load(Ordering::SeqCst), before, "key 1 is still a hit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_that_cannot_be_replayed_is_dropped_not_retried_forever() {
    init_tracing();
    let mut server = OwnServer::start().await;
    let port = server.port;
    let redis = fragile(&server, "replay-wrongtype").await;
    let tag = Tag::from("broken");
    server.kill();
    assert!(redis.invalidate_tag(&tag).await.is_err());
    assert_eq!(redis.pending_invalidations(), 1);

    // Back, but someone left a string where the tag's set should be: the
    // replay's ZRANGE gets WRONGTYPE, about that key only.
    let _back = OwnServer::start_on(port).await;
    let plain = plain_client(&format!("redis://127.0.0.1:{port}")).await;
    let _: () = plain
        .set(redis.tag_set_key(&tag), "not a set", None, None, false)
        .await
        .unwrap();
    until_back(&redis).await;
    assert_eq!(redis.pending_invalidations(), 0, "dropped, not retried forever");
    redis
        .write(&key(1), Bytes::from_static(b"v"), HOUR, &[])
        .await
        .unwrap();
    assert_eq!(redis.read(&key(1)).await.unwrap(), Some(Bytes::from_static(b"v")));
}
