//! `RedisLock` as a `DistributedLock`: one holder per key across clients,
//! waiters told by pub/sub (never by the payload), leases renewed while
//! held and lapsing when the holder is gone. Standalone and cluster.

use std::time::Duration;

use fred::prelude::{Expiration, KeysInterface, PubsubInterface, SetOptions};
use hitbox_backend::lock::{DistributedLock, FillEvent, LoadEnd, LockAttempt};
use hitbox_core::CacheKey;
use hitbox_redis::RedisLock;
use tokio::time::Instant;

use crate::common::{CLUSTER, STANDALONE, backend, env, init_tracing, plain_client, unique_prefix};

fn key(name: &str) -> CacheKey {
    CacheKey::builder("http").part("path", name).build()
}

/// A lock of its own connection (as another instance would have) under
/// `prefix`.
async fn lock(url: &str, prefix: &str) -> RedisLock {
    RedisLock::new(&backend(url, prefix).await).lease(Duration::from_secs(2))
}

fn soon(millis: u64) -> Instant {
    Instant::now() + Duration::from_millis(millis)
}

async fn one_holder_and_waiters_told_by_key(url: &str) {
    init_tracing();
    let prefix = unique_prefix("fills");
    let (a, b, c) = (
        lock(url, &prefix).await,
        lock(url, &prefix).await,
        lock(url, &prefix).await,
    );
    let (one, two) = (key("/one"), key("/two"));

    // The lock and channel name the key's digest, never the key.
    for name in [a.flight_key(&one), a.fill_channel(&one)] {
        assert!(name.starts_with(&prefix), "{name}");
        assert!(!name.contains("/one"), "{name} leaks the key");
    }
    assert_ne!(a.flight_key(&one), a.flight_key(&two));

    let LockAttempt::Acquired(hold_one) = a.acquire(&one).await.unwrap() else {
        panic!("a free lock is taken");
    };
    let LockAttempt::Acquired(hold_two) = c.acquire(&two).await.unwrap() else {
        panic!("another key's lock is its own");
    };
    let LockAttempt::HeldElsewhere(mut wait_one) = b.acquire(&one).await.unwrap() else {
        panic!("a held lock is not taken twice");
    };
    let LockAttempt::HeldElsewhere(mut wait_two) = b.acquire(&two).await.unwrap() else {
        panic!("a held lock is not taken twice");
    };
    assert_eq!(b.waiting(), 2);

    // Someone publishes junk on key two's channel: ignored.
    let client = plain_client(url).await;
    let _: i64 = client
        .publish(b.fill_channel(&two), "filled please")
        .await
        .unwrap();
    // The fill of key one releases its waiter only.
    hold_one.release(LoadEnd::Filled).await;
    assert_eq!(wait_one.wait(soon(5_000)).await, FillEvent::Filled);
    assert_eq!(
        wait_two.wait(soon(300)).await,
        FillEvent::TimedOut,
        "the announcement for one key released the waiter of another"
    );
    // Key one is free again; key two's holder stores nothing.
    assert!(matches!(b.acquire(&one).await.unwrap(), LockAttempt::Acquired(_)));
    hold_two.release(LoadEnd::Empty).await;
    assert_eq!(wait_two.wait(soon(5_000)).await, FillEvent::Empty);
    drop((wait_one, wait_two));
    assert_eq!(b.waiting(), 0);
}

async fn a_dropped_hold_frees_its_waiters(url: &str) {
    init_tracing();
    let prefix = unique_prefix("fills-drop");
    let (a, b) = (lock(url, &prefix).await, lock(url, &prefix).await);
    let k = key("/dropped");
    let LockAttempt::Acquired(hold) = a.acquire(&k).await.unwrap() else {
        panic!("a free lock is taken");
    };
    let LockAttempt::HeldElsewhere(mut waiting) = b.acquire(&k).await.unwrap() else {
        panic!("held");
    };
    let started = Instant::now();
    drop(hold);
    assert_eq!(waiting.wait(soon(5_000)).await, FillEvent::Free);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(b.acquire(&k).await.unwrap(), LockAttempt::Acquired(_)));
}

async fn a_holder_that_died_lapses_and_a_live_one_is_renewed(url: &str) {
    init_tracing();
    let prefix = unique_prefix("fills-lapse");
    let lease = Duration::from_millis(600);
    let a = RedisLock::new(&backend(url, &prefix).await).lease(lease);
    let b = RedisLock::new(&backend(url, &prefix).await).lease(lease);
    // A holder of another process that died: the key, never renewed.
    let dead = key("/dead");
    let client = plain_client(url).await;
    let _: () = client
        .set(
            a.flight_key(&dead),
            "someone-gone",
            Some(Expiration::PX(600)),
            Some(SetOptions::NX),
            false,
        )
        .await
        .unwrap();
    let started = Instant::now();
    let LockAttempt::HeldElsewhere(mut waiting) = b.acquire(&dead).await.unwrap() else {
        panic!("held");
    };
    assert_eq!(
        waiting.wait(soon(5_000)).await,
        FillEvent::Free,
        "the lease lapsed"
    );
    let lapsed = started.elapsed();
    assert!(
        lapsed >= Duration::from_millis(400) && lapsed < Duration::from_millis(1_500),
        "{lapsed:?}"
    );
    assert!(matches!(
        b.acquire(&dead).await.unwrap(),
        LockAttempt::Acquired(_)
    ));

    // A live holder keeps its lock well past one lease.
    let live = key("/live");
    let LockAttempt::Acquired(hold) = a.acquire(&live).await.unwrap() else {
        panic!("free");
    };
    tokio::time::sleep(lease * 3).await;
    assert!(
        matches!(b.acquire(&live).await.unwrap(), LockAttempt::HeldElsewhere(_)),
        "the lease is renewed while held"
    );
    let left: i64 = client.pttl(a.flight_key(&live)).await.unwrap();
    assert!(left > 0 && left <= 600, "{left}");
    hold.release(LoadEnd::Filled).await;
    let gone: i64 = client.exists(a.flight_key(&live)).await.unwrap();
    assert_eq!(gone, 0, "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_one_holder_and_waiters_told_by_key() {
    one_holder_and_waiters_told_by_key(&env(STANDALONE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_one_holder_and_waiters_told_by_key_on_a_cluster() {
    one_holder_and_waiters_told_by_key(&env(CLUSTER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_a_dropped_hold_frees_its_waiters() {
    a_dropped_hold_frees_its_waiters(&env(STANDALONE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_a_dropped_hold_frees_its_waiters_on_a_cluster() {
    a_dropped_hold_frees_its_waiters(&env(CLUSTER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_a_holder_that_died_lapses_and_a_live_one_is_renewed() {
    a_holder_that_died_lapses_and_a_live_one_is_renewed(&env(STANDALONE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_a_holder_that_died_lapses_and_a_live_one_is_renewed_on_a_cluster() {
    a_holder_that_died_lapses_and_a_live_one_is_renewed(&env(CLUSTER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_an_unreachable_redis_fails_fast() {
    init_tracing();
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://127.0.0.1:{}", listener.local_addr().unwrap().port());
    drop(listener);
    let redis = crate::common::builder(&url, &unique_prefix("fills-down"))
        .build()
        .unwrap();
    let lock = RedisLock::new(&redis).command_timeout(Duration::from_millis(200));
    let started = Instant::now();
    assert!(lock.acquire(&key("/x")).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// The waiters' subscriber connection is cut (as by a network blip or a
/// server-side `CLIENT KILL`): its subscriptions are gone, so every waiter
/// is told `free` and tries the lock again; the reconnected subscriber
/// carries the holder's announcement. A server of the test's own, so that
/// cutting its subscribers disturbs no other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_a_waiter_whose_subscriber_reconnects_is_told_and_waits_again() {
    use fred::prelude::ClientLike;
    use fred::types::{ClusterHash, CustomCommand};
    init_tracing();
    let server = crate::common::OwnServer::start().await;
    let url = server.url();
    let prefix = unique_prefix("fills-reconnect");
    let (a, b) = (lock(&url, &prefix).await, lock(&url, &prefix).await);
    let k = key("/reconnect");
    let LockAttempt::Acquired(hold) = a.acquire(&k).await.unwrap() else {
        panic!("a free lock is taken");
    };
    let LockAttempt::HeldElsewhere(mut waiting) = b.acquire(&k).await.unwrap() else {
        panic!("a held lock is not taken twice");
    };

    let admin = plain_client(&url).await;
    let killed: i64 = admin
        .custom(
            CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
            vec!["KILL", "TYPE", "pubsub"],
        )
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "B's subscriber is the only one");
    assert_eq!(waiting.wait(soon(10_000)).await, FillEvent::Free);

    // A still holds (and renews) the lock: B waits again, over the
    // subscriber that reconnected, and hears A's fill.
    let LockAttempt::HeldElsewhere(mut again) = b.acquire(&k).await.unwrap() else {
        panic!("the lock is still held");
    };
    hold.release(LoadEnd::Filled).await;
    assert_eq!(again.wait(soon(10_000)).await, FillEvent::Filled);
    let _ = admin.quit().await;
}
