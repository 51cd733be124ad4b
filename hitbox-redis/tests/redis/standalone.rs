//! The tier against a standalone server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::{Expiration, KeysInterface, SortedSetsInterface};
use hitbox_backend::Backend;
use hitbox_core::{CacheKey, EntryOptions, Tag};

use crate::common::{Profile, unique_prefix};
use crate::common::{STANDALONE, backend, cache, env, init_tracing, key, plain_client, poll_until, profile};

#[tokio::test]
async fn round_trip_through_the_cache() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("round-trip");
    let redis = backend(&url, &prefix).await;
    let cache = cache(redis.clone());
    let loads = Arc::new(AtomicU32::new(0));

    for _ in 0..3 {
        let loads = Arc::clone(&loads);
        let value = cache
            .try_get_or_insert_with(&key(1), move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(profile(1))
            })
            .await
            .expect("the load succeeds");
        assert_eq!(value, profile(1));
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "the second and third calls are hits"
    );
    assert_eq!(cache.get::<Profile>(&key(1)).await, Some(profile(1)));
    assert_eq!(cache.get::<Profile>(&key(2)).await, None);

    // The entry is one string under prefix + key, with an expiry.
    let plain = plain_client(&url).await;
    let stored_at = format!("{prefix}{}", key(1).as_str());
    assert_eq!(redis.redis_key(&key(1)), stored_at);
    let pttl: i64 = plain.pttl(&stored_at).await.expect("PTTL");
    assert!(
        (1..=60_000).contains(&pttl),
        "the entry expires within its TTL, PTTL {pttl}"
    );

    let stats = redis.tier_stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].label, "redis");
    assert!(stats[0].hits >= 3, "{stats:?}");
    assert!(stats[0].misses >= 2, "{stats:?}");
    assert_eq!(stats[0].errors, 0, "{stats:?}");
    assert_eq!(cache.stats().errors_of("redis"), 0);
}

#[tokio::test]
async fn remove_and_exists() {
    init_tracing();
    let url = env(STANDALONE);
    let redis = backend(&url, &unique_prefix("remove")).await;
    let k = key(7);
    assert!(!redis.exists(&k).await.expect("EXISTS"));
    redis
        .write(&k, Bytes::from_static(b"seven"), Duration::from_secs(30), &[])
        .await
        .expect("SET");
    assert!(redis.exists(&k).await.expect("EXISTS"));
    assert_eq!(
        redis.read(&k).await.expect("GET"),
        Some(Bytes::from_static(b"seven"))
    );
    // A later write replaces an earlier one.
    redis
        .write(&k, Bytes::from_static(b"eight"), Duration::from_secs(30), &[])
        .await
        .expect("SET");
    assert_eq!(
        redis.read(&k).await.expect("GET"),
        Some(Bytes::from_static(b"eight"))
    );
    assert!(redis.remove(&k).await.expect("DEL"));
    assert!(!redis.remove(&k).await.expect("DEL"));
    assert_eq!(redis.read(&k).await.expect("GET"), None);
}

#[tokio::test]
async fn a_300_ms_ttl_is_kept_to_the_millisecond() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("px");
    let redis = backend(&url, &prefix).await;
    let cache = cache(redis.clone());
    let plain = plain_client(&url).await;
    let k = key(300);
    let stored_at = redis.redis_key(&k);

    let written = Instant::now();
    cache
        .set_with(
            &k,
            &profile(300),
            &EntryOptions::new().ttl(Duration::from_millis(300)),
        )
        .await
        .expect("the write succeeds");
    // Sent with PX: whole seconds (EX) would round 300 ms to 0 or 1000 ms.
    let pttl: i64 = plain.pttl(&stored_at).await.expect("PTTL");
    // (-2, gone, only if this machine stalled past the TTL already.)
    assert!(
        (1..=300).contains(&pttl) || (pttl == -2 && written.elapsed() >= Duration::from_millis(300)),
        "PTTL {pttl} ms for a 300 ms TTL"
    );
    let early = cache.get::<Profile>(&k).await;
    if written.elapsed() < Duration::from_millis(300) {
        assert_eq!(early, Some(profile(300)), "the entry is there before its TTL");
    }

    let gone = poll_until(Duration::from_secs(3), || async {
        redis.read(&k).await.expect("GET").is_none()
    })
    .await;
    let elapsed = written.elapsed();
    assert!(gone.is_some(), "the entry outlived its 300 ms TTL by seconds");
    assert!(
        elapsed >= Duration::from_millis(290),
        "the entry vanished after {elapsed:?}, before its 300 ms TTL"
    );
    assert_eq!(cache.get::<Profile>(&k).await, None);
}

#[tokio::test]
async fn sub_millisecond_ttls_round_up_never_to_no_expiry() {
    init_tracing();
    let url = env(STANDALONE);
    let redis = backend(&url, &unique_prefix("sub-ms")).await;
    let plain = plain_client(&url).await;

    // 1.5 ms is sent as 2 ms: the key has an expiry and it is never above 2.
    let k = key(2);
    redis
        .write(&k, Bytes::from_static(b"x"), Duration::from_micros(1_500), &[])
        .await
        .expect("SET");
    let pttl: i64 = plain.pttl(redis.redis_key(&k)).await.expect("PTTL");
    assert!(
        pttl == -2 || (0..=2).contains(&pttl),
        "PTTL {pttl} for a 1.5 ms TTL"
    );

    // Under a millisecond (and zero): 1 ms, not 0 (an error) nor no expiry.
    for ttl in [Duration::from_micros(200), Duration::ZERO] {
        let k = key(1);
        redis
            .write(&k, Bytes::from_static(b"x"), ttl, &[])
            .await
            .expect("a sub-millisecond TTL is accepted");
        let pttl: i64 = plain.pttl(redis.redis_key(&k)).await.expect("PTTL");
        assert_ne!(pttl, -1, "a {ttl:?} TTL must not become 'no expiry'");
        assert!(pttl <= 1, "PTTL {pttl} for a {ttl:?} TTL");
        let gone = poll_until(Duration::from_secs(2), || async {
            redis.read(&k).await.expect("GET").is_none()
        })
        .await;
        assert!(gone.is_some(), "a {ttl:?} entry is still there after 2 s");
    }
}

#[tokio::test]
async fn a_tag_invalidated_by_one_instance_is_gone_for_another() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("tags");
    // Two instances, each with its own connection, as two processes would.
    let first = cache(backend(&url, &prefix).await);
    let second = cache(backend(&url, &prefix).await);
    let tagged = EntryOptions::new().tag("team:ops");
    let both = EntryOptions::new().tag("team:ops").tag("team:dev");
    let other = EntryOptions::new().tag("team:dev");

    first
        .set_with(&key(1), &profile(1), &tagged)
        .await
        .expect("write 1");
    first
        .set_with(&key(2), &profile(2), &both)
        .await
        .expect("write 2");
    first
        .set_with(&key(3), &profile(3), &other)
        .await
        .expect("write 3");
    first.set(&key(4), &profile(4)).await.expect("write 4");
    assert_eq!(second.get::<Profile>(&key(1)).await, Some(profile(1)));

    let removed = second
        .invalidate_tag(&Tag::from("team:ops"))
        .await
        .expect("the invalidation succeeds");
    assert_eq!(removed, 2);

    assert_eq!(first.get::<Profile>(&key(1)).await, None);
    assert_eq!(first.get::<Profile>(&key(2)).await, None);
    assert_eq!(first.get::<Profile>(&key(3)).await, Some(profile(3)));
    assert_eq!(first.get::<Profile>(&key(4)).await, Some(profile(4)));
    assert_eq!(second.get::<Profile>(&key(2)).await, None);

    // Nothing is left to invalidate under that tag; the other tag still works.
    assert_eq!(
        first.invalidate_tag(&Tag::from("team:ops")).await.expect("again"),
        0
    );
    assert_eq!(
        first.invalidate_tag(&Tag::from("team:dev")).await.expect("dev"),
        1
    );
    assert_eq!(second.get::<Profile>(&key(3)).await, None);
}

#[tokio::test]
async fn tag_sets_expire_with_their_entries() {
    init_tracing();
    let url = env(STANDALONE);
    let redis = backend(&url, &unique_prefix("tag-ttl")).await;
    let plain = plain_client(&url).await;
    let tag = Tag::from("short");
    let set = redis.tag_set_key(&tag);

    redis
        .write(
            &key(1),
            Bytes::from_static(b"a"),
            Duration::from_secs(2),
            std::slice::from_ref(&tag),
        )
        .await
        .expect("write");
    let first: i64 = plain.pttl(&set).await.expect("PTTL");
    assert!(first > 0, "the tag set has an expiry (PTTL {first})");
    assert!(
        first <= 2_000 + 5_000,
        "PTTL {first}: the entry's TTL plus the grace period at most"
    );

    // A longer-lived member extends the set; a shorter one does not shorten it.
    redis
        .write(
            &key(2),
            Bytes::from_static(b"b"),
            Duration::from_secs(60),
            std::slice::from_ref(&tag),
        )
        .await
        .expect("write");
    redis
        .write(
            &key(3),
            Bytes::from_static(b"c"),
            Duration::from_secs(1),
            std::slice::from_ref(&tag),
        )
        .await
        .expect("write");
    let extended: i64 = plain.pttl(&set).await.expect("PTTL");
    assert!(extended > 55_000 && extended <= 65_000, "PTTL {extended}");
}

#[tokio::test]
async fn garbage_under_a_key_is_a_miss() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("garbage");
    let redis = backend(&url, &prefix).await;
    let cache = cache(redis.clone());
    let plain = plain_client(&url).await;
    let k = CacheKey::entity("profiles", "acme", "user", "garbage");

    plain
        .set::<(), _, _>(
            redis.redis_key(&k),
            "definitely not a hitbox envelope",
            Some(Expiration::EX(60)),
            None,
            false,
        )
        .await
        .expect("SET through the plain client");

    assert_eq!(cache.get::<Profile>(&k).await, None);
    assert!(cache.stats().unreadable_entries >= 1);
    // A load replaces the garbage.
    let value = cache
        .try_get_or_insert_with(&k, || async { Ok::<_, std::io::Error>(profile(9)) })
        .await
        .expect("the loader's value");
    assert_eq!(value, profile(9));
    assert_eq!(cache.get::<Profile>(&k).await, Some(profile(9)));
    assert_eq!(redis.tier_stats()[0].errors, 0);

    // A number, an empty string: still bytes, still a miss, never a panic.
    for junk in ["12345", ""] {
        plain
            .set::<(), _, _>(redis.redis_key(&k), junk, None, None, false)
            .await
            .expect("SET");
        assert_eq!(cache.get::<Profile>(&k).await, None);
    }
    let _: i64 = plain.del(redis.redis_key(&k)).await.expect("DEL");
}

#[tokio::test]
async fn missing_server_settings_are_errors_not_panics() {
    assert!(matches!(
        hitbox_redis::RedisBackend::builder().build(),
        Err(hitbox_redis::RedisError::NoServer)
    ));
    assert!(matches!(
        hitbox_redis::RedisBackend::from_url("not a url"),
        Err(hitbox_redis::RedisError::Config(_))
    ));
    assert!(matches!(
        hitbox_redis::RedisBackend::builder()
            .standalone("127.0.0.1", 6379)
            .pool_size(0)
            .build(),
        Err(hitbox_redis::RedisError::Invalid(_))
    ));
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    assert!(matches!(
        hitbox_redis::RedisBackend::from_url("redis://127.0.0.1:6379"),
        Err(hitbox_redis::RedisError::NoRuntime)
    ));
}

#[tokio::test]
async fn tag_sets_drop_the_members_whose_entries_expired() {
    init_tracing();
    let url = env(STANDALONE);
    let redis = crate::common::builder(&url, &unique_prefix("tag-prune"))
        .tag_grace(Duration::ZERO)
        .build()
        .expect("builds");
    redis
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    let plain = plain_client(&url).await;
    let tag = Tag::from("churn");
    let set = redis.tag_set_key(&tag);

    for id in 0..5 {
        redis
            .write(
                &key(id),
                Bytes::from_static(b"short"),
                Duration::from_millis(1),
                std::slice::from_ref(&tag),
            )
            .await
            .expect("write");
    }
    let expired = poll_until(Duration::from_secs(2), || async {
        let mut all_gone = true;
        for id in 0..5 {
            all_gone &= redis.read(&key(id)).await.expect("GET").is_none();
        }
        all_gone
    })
    .await;
    assert!(expired.is_some(), "1 ms entries still there after 2 s");
    // A key reads as gone once the server's clock is past its expiry time,
    // which is at or after the score its tag set gave it: it is pruned.

    redis
        .write(
            &key(9),
            Bytes::from_static(b"long"),
            Duration::from_secs(60),
            std::slice::from_ref(&tag),
        )
        .await
        .expect("write");
    let members: Vec<String> = plain
        .zrange(&set, 0, -1, None, false, None, false)
        .await
        .expect("ZRANGE");
    assert_eq!(
        members,
        vec![redis.redis_key(&key(9))],
        "expired members are dropped"
    );
    assert_eq!(redis.invalidate_tag(&tag).await.expect("invalidate"), 1);
}
