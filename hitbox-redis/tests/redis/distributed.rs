//! Several instances sharing one Redis: invalidations reaching every L1
//! through pub/sub, and the distributed single-flight lock.
//!
//! Each "instance" is a `Cache` over `moka + redis` with fred clients and an
//! origin id of its own, as two processes would have.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::{ClientLike, KeysInterface, PubsubInterface};
use fred::types::{ClusterHash, CustomCommand};
use hitbox_backend::{Backend, BackendError, Cache, Compose};
use hitbox_core::{CachePolicy, EntryOptions, Tag};
use hitbox_moka::MokaBackend;
use hitbox_redis::invalidation::{
    BusEvent, Invalidation, InvalidationBus, InvalidationBusBuilder, InvalidationMessage, OriginId,
};
use hitbox_redis::lock::Role;
use hitbox_redis::{RedisBackend, RedisLock};
use tokio::sync::{Barrier, broadcast};

use crate::common::{
    CLUSTER, OwnServer, Profile, STANDALONE, backend, builder, connected, env, init_tracing, key,
    plain_client, poll_until, profile, unique_prefix,
};

/// How long a test waits for an event before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// One instance: its own Redis clients, L1 and bus.
struct Instance {
    redis: RedisBackend,
    moka: MokaBackend,
    bus: InvalidationBus,
    cache: Cache,
}

impl Instance {
    async fn start(url: &str, prefix: &str, degraded_ttl: Duration) -> Instance {
        let redis = backend(url, prefix).await;
        Instance::over(redis, degraded_ttl).await
    }

    async fn over(redis: RedisBackend, degraded_ttl: Duration) -> Instance {
        Instance::configured(redis, |bus| bus.degraded_ttl(degraded_ttl)).await
    }

    /// An instance whose bus `configure` sets up (after a short retry
    /// interval).
    async fn configured(
        redis: RedisBackend,
        configure: impl FnOnce(InvalidationBusBuilder) -> InvalidationBusBuilder,
    ) -> Instance {
        let moka = MokaBackend::new(16 * 1024 * 1024);
        let bus = configure(InvalidationBus::builder(&redis).retry_interval(Duration::from_millis(100)))
            .start(moka.clone())
            .expect("the bus starts");
        let tiers = bus.broadcasting(bus.local_tier().compose(redis.clone()));
        let cache = Cache::builder(tiers)
            .policy(CachePolicy::new(Duration::from_secs(60)))
            .build();
        bus.wait_subscribed(PATIENCE).await.expect("the bus subscribes");
        Instance {
            redis,
            moka,
            bus,
            cache,
        }
    }

    /// Whether this instance's moka holds anything under `id`'s key.
    async fn l1_holds(&self, id: u64) -> bool {
        self.moka.read(&key(id)).await.expect("moka reads").is_some()
    }
}

/// Waits for the first event `wanted` accepts; panics after `PATIENCE`.
async fn wait_for(
    events: &mut broadcast::Receiver<BusEvent>,
    what: &str,
    wanted: impl Fn(&BusEvent) -> bool,
) {
    let outcome = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("the bus stopped while waiting for {what}")
                }
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "no {what} within {PATIENCE:?}");
}

#[tokio::test]
async fn a_delete_on_one_instance_empties_the_other_l1() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("bus-delete");
    let a = Instance::start(&url, &prefix, Duration::from_secs(5)).await;
    let b = Instance::start(&url, &prefix, Duration::from_secs(5)).await;
    assert_ne!(a.bus.origin(), b.bus.origin());
    assert_eq!(a.bus.channel(), format!("{prefix}#invalidations"));

    a.cache.set(&key(1), &profile(1)).await.expect("A stores");
    a.cache.set(&key(2), &profile(2)).await.expect("A stores");
    // B reads both from Redis, which refills its L1.
    assert_eq!(b.cache.get::<Profile>(&key(1)).await, Some(profile(1)));
    assert_eq!(b.cache.get::<Profile>(&key(2)).await, Some(profile(2)));
    assert!(b.l1_holds(1).await && b.l1_holds(2).await);

    let mut a_events = a.bus.events();
    let mut b_events = b.bus.events();
    assert!(a.cache.delete(&key(1)).await.expect("A deletes"));
    let wanted = Invalidation::Key(key(1).as_str().to_owned());
    wait_for(&mut b_events, "B applying A's delete", |e| {
        *e == BusEvent::Applied(wanted.clone())
    })
    .await;
    assert!(!b.l1_holds(1).await, "B's L1 forgot the deleted key");
    assert!(b.l1_holds(2).await, "and only that key");
    assert_eq!(b.cache.get::<Profile>(&key(1)).await, None);

    // A hears its own message and skips it.
    wait_for(&mut a_events, "A skipping its own message", |e| {
        *e == BusEvent::SkippedOwn(wanted.clone())
    })
    .await;
    let a_stats = a.bus.stats();
    assert_eq!(a_stats.published, 1, "{a_stats:?}");
    assert_eq!(a_stats.skipped_own, 1, "{a_stats:?}");
    assert_eq!(a_stats.applied, 0, "{a_stats:?}");
    let b_stats = b.bus.stats();
    assert_eq!(b_stats.applied, 1, "{b_stats:?}");
    assert_eq!(b_stats.skipped_own, 0, "{b_stats:?}");
    assert!(b_stats.subscribed);
}

#[tokio::test]
async fn a_tag_invalidation_and_a_purge_reach_the_other_l1() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("bus-tag");
    let a = Instance::start(&url, &prefix, Duration::from_secs(5)).await;
    let b = Instance::start(&url, &prefix, Duration::from_secs(5)).await;

    let tagged = EntryOptions::new().tag(Tag::new("team:7"));
    a.cache
        .set_with(&key(1), &profile(1), &tagged)
        .await
        .expect("A stores");
    a.cache.set(&key(2), &profile(2)).await.expect("A stores");
    assert_eq!(b.cache.get::<Profile>(&key(1)).await, Some(profile(1)));
    assert_eq!(b.cache.get::<Profile>(&key(2)).await, Some(profile(2)));
    assert!(b.l1_holds(1).await && b.l1_holds(2).await);

    let mut b_events = b.bus.events();
    let removed = a
        .cache
        .invalidate_tag(&Tag::new("team:7"))
        .await
        .expect("A invalidates");
    assert_eq!(removed, 1, "one entry had the tag");
    wait_for(&mut b_events, "B applying the tag invalidation", |e| {
        *e == BusEvent::Applied(Invalidation::Tag("team:7".into()))
    })
    .await;
    assert!(!b.l1_holds(1).await, "the tagged entry left B's L1");
    assert!(b.l1_holds(2).await, "the untagged one stayed");

    // A purge empties B's L1 (as the composition sees it) but not Redis.
    a.bus.purge().await.expect("A purges");
    wait_for(&mut b_events, "B applying the purge", |e| {
        *e == BusEvent::Applied(Invalidation::Purge)
    })
    .await;
    let local = b.bus.local_tier();
    assert_eq!(local.read(&key(2)).await.expect("L1 reads"), None);
    assert_eq!(
        b.cache.get::<Profile>(&key(2)).await,
        Some(profile(2)),
        "Redis still has it"
    );
    assert!(
        local.read(&key(2)).await.expect("L1 reads").is_some(),
        "and refilled L1"
    );
    assert_eq!(b.bus.stats().purges, 1);
}

#[tokio::test]
async fn unreadable_messages_are_counted_and_dropped() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("bus-garbage");
    let b = Instance::start(&url, &prefix, Duration::from_secs(5)).await;
    b.cache.set(&key(1), &profile(1)).await.expect("B stores");
    let mut events = b.bus.events();
    let plain = plain_client(&url).await;
    let _: i64 = plain
        .publish(b.bus.channel(), "hbinv9 someone key x")
        .await
        .expect("PUBLISH");
    wait_for(&mut events, "the malformed message", |e| {
        *e == BusEvent::Malformed
    })
    .await;
    assert_eq!(b.bus.stats().malformed, 1);
    assert!(b.l1_holds(1).await, "nothing was applied");
}

#[tokio::test]
async fn the_subscription_comes_back_after_the_connection_is_killed() {
    init_tracing();
    // A server of the test's own: CLIENT KILL TYPE pubsub would cut the
    // subscriptions of tests running beside this one on the shared server.
    let server = OwnServer::start().await;
    let url = server.url();
    let prefix = unique_prefix("bus-kill");
    let a = Instance::start(&url, &prefix, Duration::from_secs(5)).await;
    let b = Instance::start(&url, &prefix, Duration::from_secs(5)).await;
    a.cache.set(&key(1), &profile(1)).await.expect("A stores");
    assert_eq!(b.cache.get::<Profile>(&key(1)).await, Some(profile(1)));
    assert!(b.l1_holds(1).await);

    let mut events = b.bus.events();
    let killed = kill_subscribers(&url).await;
    assert!(killed >= 2, "both subscribers were killed ({killed})");
    wait_for(&mut events, "B noticing the loss", |e| *e == BusEvent::Lost).await;
    wait_for(&mut events, "B resubscribing", |e| *e == BusEvent::Subscribed).await;
    let stats = b.bus.stats();
    assert!(stats.losses >= 1 && stats.subscriptions >= 2, "{stats:?}");
    // Messages may have been lost in the gap: the bus caught up from the
    // audit stream (there was nothing to apply) instead of purging L1.
    assert!(stats.catch_ups >= 1, "{stats:?}");
    assert_eq!(stats.purges, 0, "{stats:?}");
    assert!(b.l1_holds(1).await);
    a.bus.wait_subscribed(PATIENCE).await.expect("A resubscribes too");

    // Messages flow again.
    assert_eq!(b.cache.get::<Profile>(&key(1)).await, Some(profile(1)));
    assert!(b.l1_holds(1).await);
    a.cache.delete(&key(1)).await.expect("A deletes");
    wait_for(&mut events, "B applying a delete after the resubscription", |e| {
        matches!(e, BusEvent::Applied(Invalidation::Key(_)))
    })
    .await;
    assert!(!b.l1_holds(1).await);
}

#[tokio::test]
async fn l1_lifetimes_are_capped_while_the_subscription_is_down() {
    init_tracing();
    let mut server = OwnServer::start().await;
    let port = server.port;
    let url = server.url();
    let cap = Duration::from_millis(400);
    let b = Instance::start(&url, &unique_prefix("bus-degraded"), cap).await;
    let local = b.bus.local_tier();
    let long = Duration::from_secs(60);
    assert_eq!(local.effective_ttl(long), long, "no cap while subscribed");

    let before = key(1);
    local
        .write(&before, Bytes::from_static(b"old"), long, &[])
        .await
        .expect("L1 writes");

    let mut events = b.bus.events();
    server.kill();
    wait_for(&mut events, "B noticing the loss", |e| *e == BusEvent::Lost).await;
    let lost_at = Instant::now();
    assert!(!b.bus.is_subscribed());
    assert_eq!(local.effective_ttl(long), cap, "writes are capped while down");

    let during = key(2);
    let written_at = Instant::now();
    local
        .write(&during, Bytes::from_static(b"new"), long, &[])
        .await
        .expect("L1 writes");
    assert_eq!(
        local.read(&during).await.expect("L1 reads").as_deref(),
        Some(&b"new"[..])
    );
    // Both entries asked for a minute; neither outlives the cap.
    let gone = poll_until(PATIENCE, || async {
        local.read(&during).await.expect("L1 reads").is_none()
            && local.read(&before).await.expect("L1 reads").is_none()
    })
    .await;
    assert!(gone.is_some(), "the entries outlived the cap");
    let margin = Duration::from_millis(50);
    assert!(
        written_at.elapsed() + margin >= cap && lost_at.elapsed() + margin >= cap,
        "an entry went before its time"
    );

    // The server comes back on the same port: resubscribed, no more cap.
    let _server = OwnServer::start_on(port).await;
    b.bus
        .wait_subscribed(Duration::from_secs(30))
        .await
        .expect("B resubscribes");
    assert_eq!(local.effective_ttl(long), long);
    let after = key(3);
    local
        .write(&after, Bytes::from_static(b"fresh"), long, &[])
        .await
        .expect("L1 writes");
    assert!(local.read(&after).await.expect("L1 reads").is_some());
    let stats = b.bus.stats();
    assert!(stats.losses >= 1 && stats.subscriptions >= 2, "{stats:?}");
}

#[tokio::test]
async fn invalidations_cross_a_cluster() {
    init_tracing();
    let url = env(CLUSTER);
    let prefix = unique_prefix("bus-cluster");
    let a = Instance::start(&url, &prefix, Duration::from_secs(5)).await;
    let b = Instance::start(&url, &prefix, Duration::from_secs(5)).await;
    assert!(a.redis.is_clustered());
    for id in 1..=4 {
        a.cache.set(&key(id), &profile(id)).await.expect("A stores");
        assert_eq!(b.cache.get::<Profile>(&key(id)).await, Some(profile(id)));
        assert!(b.l1_holds(id).await);
    }
    let mut events = b.bus.events();
    for id in 1..=4 {
        a.cache.delete(&key(id)).await.expect("A deletes");
        let wanted = Invalidation::Key(key(id).as_str().to_owned());
        wait_for(&mut events, "B applying a delete", |e| {
            *e == BusEvent::Applied(wanted.clone())
        })
        .await;
        assert!(!b.l1_holds(id).await);
    }
}

/// An instance for the lock tests: moka + redis, no bus needed.
async fn locking_instance(url: &str, prefix: &str) -> (Cache, RedisLock) {
    let redis = backend(url, prefix).await;
    let cache = Cache::builder(MokaBackend::new(1024 * 1024).compose(redis.clone()))
        .policy(CachePolicy::new(Duration::from_secs(60)))
        .build();
    let lock = RedisLock::new(&redis)
        .lease(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(10))
        .command_timeout(Duration::from_secs(2));
    (cache, lock)
}

async fn many_instances_load_once(url: &str, test: &str) {
    const INSTANCES: usize = 6;
    let prefix = unique_prefix(test);
    let loads = Arc::new(AtomicU32::new(0));
    let barrier = Arc::new(Barrier::new(INSTANCES));
    let mut tasks = Vec::new();
    for _ in 0..INSTANCES {
        let (cache, lock) = locking_instance(url, &prefix).await;
        let loads = Arc::clone(&loads);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            lock.get_or_insert_with(
                &cache,
                &key(1),
                &EntryOptions::new(),
                PATIENCE,
                move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    // The origin takes a while: the others arrive meanwhile.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, std::io::Error>(profile(1))
                },
            )
            .await
            .expect("the load succeeds")
        }));
    }
    let mut roles = Vec::new();
    for task in tasks {
        let outcome = task.await.expect("the task ends");
        assert_eq!(outcome.value, profile(1));
        roles.push(outcome.role);
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one origin call for all: {roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == Role::Loaded).count(),
        1,
        "{roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == Role::Found).count(),
        INSTANCES - 1,
        "{roles:?}"
    );
}

#[tokio::test]
async fn instances_missing_one_key_call_the_origin_once() {
    init_tracing();
    many_instances_load_once(&env(STANDALONE), "lock-once").await;
}

#[tokio::test]
async fn instances_missing_one_key_call_the_origin_once_on_a_cluster() {
    init_tracing();
    many_instances_load_once(&env(CLUSTER), "lock-once-cluster").await;
}

#[tokio::test]
async fn a_waiter_takes_over_from_a_holder_that_died() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("lock-dead");
    let (_, dead) = locking_instance(&url, &prefix).await;
    let (cache, lock) = locking_instance(&url, &prefix).await;
    let lease = Duration::from_millis(500);
    let dead = dead.lease(lease);

    let started = Instant::now();
    let guard = dead
        .try_acquire(&RedisLock::key_lock_name(&key(1)))
        .await
        .expect("SET NX")
        .expect("the lock is free");
    // The holder dies: nobody releases nor renews the lock.
    std::mem::forget(guard);
    let loads = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&loads);
    let outcome = lock
        .get_or_insert_with(
            &cache,
            &key(1),
            &EntryOptions::new(),
            PATIENCE,
            move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(profile(1))
            },
        )
        .await
        .expect("the load succeeds");
    let took = started.elapsed();
    assert_eq!(outcome.role, Role::Loaded, "the waiter took the lock over");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(
        took + Duration::from_millis(50) >= lease,
        "not before the lease ran out: {took:?}"
    );
    assert!(took < PATIENCE, "within the wait: {took:?}");
    assert_eq!(cache.get::<Profile>(&key(1)).await, Some(profile(1)));
}

#[tokio::test]
async fn the_wait_for_a_holder_is_bounded() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("lock-bounded");
    let (_, holder) = locking_instance(&url, &prefix).await;
    let (cache, lock) = locking_instance(&url, &prefix).await;
    let guard = holder
        .try_acquire(&RedisLock::key_lock_name(&key(1)))
        .await
        .expect("SET NX")
        .expect("the lock is free");
    let max_wait = Duration::from_millis(200);
    let started = Instant::now();
    let outcome = lock
        .get_or_insert_with(&cache, &key(1), &EntryOptions::new(), max_wait, || async {
            Ok::<_, std::io::Error>(profile(1))
        })
        .await
        .expect("the load succeeds");
    assert_eq!(outcome.role, Role::Fallback);
    assert!(started.elapsed() >= max_wait);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "well before the 5 s lease"
    );
    assert!(
        guard.release().await.expect("release"),
        "the holder still held it"
    );
}

#[tokio::test]
async fn only_the_owner_releases_the_lock() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("lock-owner");
    let (_, first) = locking_instance(&url, &prefix).await;
    let (_, second) = locking_instance(&url, &prefix).await;
    let first = first.lease(Duration::from_millis(300));
    let name = "report";

    let old = first.try_acquire(name).await.expect("SET NX").expect("free");
    assert!(second.try_acquire(name).await.expect("SET NX").is_none(), "held");
    assert!(old.renew().await.expect("renew"), "the owner extends its lease");
    // The first holder's lease runs out; the second one takes the lock.
    let polling = Instant::now();
    let new = loop {
        if let Some(guard) = second.try_acquire(name).await.expect("SET NX") {
            break guard;
        }
        assert!(polling.elapsed() < PATIENCE, "the lease never ran out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    assert!(!old.renew().await.expect("renew"), "a former owner cannot extend");
    assert!(!old.release().await.expect("release"), "nor release");
    let plain = plain_client(&url).await;
    let exists: i64 = plain.exists(first.lock_key(name)).await.expect("EXISTS");
    assert_eq!(exists, 1, "the new owner's lock survived");
    assert!(first.try_acquire(name).await.expect("SET NX").is_none());
    assert!(new.release().await.expect("release"), "the owner releases");
    assert_eq!(
        plain
            .exists::<i64, _>(first.lock_key(name))
            .await
            .expect("EXISTS"),
        0
    );
    let again = first.try_acquire(name).await.expect("SET NX");
    assert!(again.is_some(), "free again");
    plain.quit().await.expect("QUIT");
}

/// The lock `get_or_insert_with` takes is named by the key's digest, as the
/// HTTP layer's is: held while the loader runs, and no lock name carries
/// the key itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_programmatic_lock_is_named_by_the_keys_digest() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("lock-name");
    let (cache, lock) = locking_instance(&url, &prefix).await;
    let name = RedisLock::key_lock_name(&key(7));
    assert_eq!(name.len(), 64, "{name}");
    assert!(!lock.lock_key(&name).contains(key(7).as_str()));
    let plain = plain_client(&url).await;
    let lock_key = lock.lock_key(&name);
    let outcome = lock
        .get_or_insert_with(&cache, &key(7), &EntryOptions::new(), PATIENCE, || async move {
            let held: i64 = plain.exists(lock_key).await.expect("EXISTS");
            assert_eq!(held, 1, "the digest-named lock is held while loading");
            Ok::<_, std::io::Error>(profile(7))
        })
        .await
        .expect("the load succeeds");
    assert_eq!((outcome.value, outcome.role), (profile(7), Role::Loaded));
}

/// Kills every pub/sub connection of `url`'s server (a server of the
/// test's own: the shared one carries other tests' subscriptions); how
/// many.
async fn kill_subscribers(url: &str) -> i64 {
    let plain = plain_client(url).await;
    plain
        .custom(
            CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
            vec!["KILL", "TYPE", "pubsub"],
        )
        .await
        .expect("CLIENT KILL")
}

#[tokio::test]
async fn publish_timeout_bounds_a_publish_to_a_hung_redis() {
    init_tracing();
    let server = OwnServer::start().await;
    let url = server.url();
    let prefix = unique_prefix("bus-publish-timeout");
    // Longer than the bus's own bound: if the publish gave up, it was the
    // bus's timeout that did, not the backend's.
    let redis = connected(
        builder(&url, &prefix)
            .write_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(5)),
    )
    .await;
    let bound = Duration::from_millis(250);
    let a = Instance::configured(redis, |bus| bus.publish_timeout(bound)).await;
    assert_eq!(a.bus.publish_timeout(), bound);

    server.pause();
    let started = Instant::now();
    let outcome = a.bus.publish(Invalidation::Key(key(1).as_str().to_owned())).await;
    let took = started.elapsed();
    server.resume();
    match outcome {
        Err(BackendError::Timeout { after, .. }) => assert_eq!(after, bound),
        other => panic!("expected the publish timeout, got {other:?}"),
    }
    // The stream append and the PUBLISH each wait at most `bound`; the
    // backend's own timeouts (5 s) never came into it.
    assert!(took < Duration::from_secs(4), "the publish took {took:?}");
    assert_eq!(a.bus.stats().publish_failures, 1);
}

#[tokio::test]
async fn purge_on_resubscribe_decides_what_a_loss_without_a_stream_costs() {
    init_tracing();
    let server = OwnServer::start().await;
    let url = server.url();
    let prefix = unique_prefix("bus-purge-on-resubscribe");
    // Without the audit stream a bus cannot know what it missed while its
    // subscription was down.
    let no_stream = || connected(builder(&url, &prefix).audit_stream(false));
    let purging = Instance::configured(no_stream().await, |bus| bus.purge_on_resubscribe(true)).await;
    let keeping = Instance::configured(no_stream().await, |bus| bus.purge_on_resubscribe(false)).await;
    assert!(purging.bus.purge_on_resubscribe());
    assert!(!keeping.bus.purge_on_resubscribe());
    for instance in [&purging, &keeping] {
        instance.cache.set(&key(1), &profile(1)).await.expect("stores");
        let local = instance.bus.local_tier();
        assert!(local.read(&key(1)).await.expect("L1 reads").is_some());
    }

    let mut purging_events = purging.bus.events();
    let mut keeping_events = keeping.bus.events();
    assert!(kill_subscribers(&url).await >= 2, "both subscribers were killed");
    for events in [&mut purging_events, &mut keeping_events] {
        wait_for(events, "the loss", |e| *e == BusEvent::Lost).await;
        wait_for(events, "the resubscription", |e| *e == BusEvent::Subscribed).await;
    }
    let purged = purging.bus.stats();
    assert_eq!(purged.purges, 1, "{purged:?}");
    // A purge leaves moka's entries in place but out of the L1's sight.
    let seen = |instance: &Instance| {
        let local = instance.bus.local_tier();
        async move { local.read(&key(1)).await.expect("L1 reads").is_some() }
    };
    assert!(!seen(&purging).await, "the default empties L1");
    let kept = keeping.bus.stats();
    assert_eq!(kept.purges, 0, "{kept:?}");
    assert!(seen(&keeping).await, "purge_on_resubscribe(false) keeps L1");
}

#[tokio::test]
async fn stream_poll_interval_paces_what_the_stream_brings() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("bus-stream-poll");
    let fast = Instance::configured(backend(&url, &prefix).await, |bus| {
        bus.stream_poll_interval(Duration::from_millis(100))
    })
    .await;
    // Never polls within the test: every event restarts its wait.
    let slow = Instance::configured(backend(&url, &prefix).await, |bus| {
        bus.stream_poll_interval(Duration::from_secs(3600))
    })
    .await;
    assert_eq!(fast.bus.stream_poll_interval(), Duration::from_millis(100));
    assert_eq!(slow.bus.stream_poll_interval(), Duration::from_secs(3600));
    // Twelve entries in both L1s.
    let ids = 1..=12;
    for instance in [&fast, &slow] {
        for id in ids.clone() {
            instance.cache.set(&key(id), &profile(id)).await.expect("stores");
            assert!(instance.l1_holds(id).await);
        }
    }

    // An instance without a bus: its removals reach the audit stream, not
    // pub/sub. One at a time, each replayed by the fast poller before the
    // next: twelve polls 100 ms apart, longer than the default interval
    // (1 s), so a slow poller that fell back to the default would have
    // polled meanwhile.
    let busless = backend(&url, &prefix).await;
    let mut events = fast.bus.events();
    for id in ids.clone() {
        assert!(busless.remove(&key(id)).await.expect("removes"));
        let wanted = Invalidation::Key(key(id).as_str().to_owned());
        wait_for(&mut events, "the fast poller replaying the removal", |e| {
            *e == BusEvent::Replayed(wanted.clone())
        })
        .await;
        assert!(!fast.l1_holds(id).await);
    }
    for id in ids {
        assert!(slow.l1_holds(id).await, "the slow poller has not read the stream");
    }
    assert_eq!(slow.bus.stats().replayed, 0);
}

/// Sends `ACL SETUSER limited ...rules` to `admin`.
async fn set_user(admin: &fred::prelude::Client, rules: &[&str]) {
    let mut args = vec!["SETUSER", "limited"];
    args.extend_from_slice(rules);
    let _: String = admin
        .custom(CustomCommand::new_static("ACL", ClusterHash::Random, false), args)
        .await
        .expect("ACL SETUSER");
}

/// A subscription Redis refuses (an ACL user without the channel) is not
/// taken for one: the bus stays down, its L1 lifetimes capped, and tries
/// again every `retry_interval`; once the channel is granted, the bus with
/// a short interval subscribes, the one with an hour's has not tried yet.
#[tokio::test]
async fn a_refused_subscription_is_down_and_retried_every_retry_interval() {
    init_tracing();
    // A server of the test's own: its users change.
    let server = OwnServer::start().await;
    let url = server.url();
    let admin = plain_client(&url).await;
    set_user(&admin, &["on", ">pw", "~*", "+@all", "resetchannels"]).await;
    let prefix = unique_prefix("bus-refused");
    let start = |retry: Duration| {
        let (url, prefix) = (url.clone(), prefix.clone());
        async move {
            let redis = connected(builder(&url, &prefix).username("limited").password("pw")).await;
            let bus = InvalidationBus::builder(&redis)
                .retry_interval(retry)
                .degraded_ttl(Duration::from_secs(2))
                .start(MokaBackend::new(1 << 20))
                .expect("the bus starts");
            (redis, bus)
        }
    };
    let (_quick_redis, quick) = start(Duration::from_millis(100)).await;
    let (_slow_redis, slow) = start(Duration::from_secs(3600)).await;
    assert_eq!(quick.retry_interval(), Duration::from_millis(100));
    assert_eq!(slow.retry_interval(), Duration::from_secs(3600));
    let mut events = quick.events();
    // Refused, not up: what the L1 keeps lives `degraded_ttl` at most.
    assert!(quick.wait_subscribed(Duration::from_millis(500)).await.is_err());
    assert!(!quick.is_subscribed() && !slow.is_subscribed());
    let long = Duration::from_secs(60);
    assert_eq!(quick.local_tier().effective_ttl(long), Duration::from_secs(2));

    set_user(&admin, &["allchannels"]).await;
    wait_for(&mut events, "the quick bus subscribing", |e| {
        *e == BusEvent::Subscribed
    })
    .await;
    assert!(quick.is_subscribed());
    assert_eq!(quick.local_tier().effective_ttl(long), long);
    assert!(!slow.is_subscribed(), "the slow bus has not tried again");

    // And the subscription works.
    let mut applied = quick.events();
    let message = InvalidationMessage {
        origin: OriginId::new("elsewhere").expect("a valid id"),
        invalidation: Invalidation::Purge,
    }
    .encode();
    let _: i64 = admin.publish(quick.channel(), message).await.expect("PUBLISH");
    wait_for(&mut applied, "the quick bus applying a purge", |e| {
        *e == BusEvent::Applied(Invalidation::Purge)
    })
    .await;
}
