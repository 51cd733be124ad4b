//! The invalidation audit stream: what its entries hold, replays from an
//! id, the `MAXLEN ~` cap, the consumer-group API, and an instance that
//! misses messages while its subscription is cut and catches up from the
//! stream when it is back, instead of purging its whole L1. Standalone and
//! cluster.

use std::time::Duration;

use fred::prelude::{ClientLike, KeysInterface};
use fred::types::{ClusterHash, CustomCommand};
use hitbox_backend::{Backend, Cache, Compose};
use hitbox_core::{CachePolicy, EntryOptions, ManualClock, Tag, Timestamp};
use hitbox_moka::MokaBackend;
use hitbox_redis::audit::{AuditId, GroupStart};
use hitbox_redis::invalidation::{BusEvent, Invalidation, InvalidationBus};
use hitbox_redis::{OriginId, RedisBackend, RedisBackendBuilder};
use tokio::sync::broadcast;

use crate::cluster_reshard::OwnCluster;
use crate::common::{
    CLUSTER, OwnServer, STANDALONE, backend, builder, env, init_tracing, key, plain_client, poll_until,
    profile, unique_prefix,
};

/// How long a test waits for an event before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// One instance: moka + redis with a bus.
struct Instance {
    redis: RedisBackend,
    moka: MokaBackend,
    bus: InvalidationBus,
    cache: Cache,
}

impl Instance {
    async fn start(redis: RedisBackendBuilder) -> Instance {
        let redis = redis.build().expect("the backend builds");
        redis
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("the backend connects");
        let moka = MokaBackend::new(16 * 1024 * 1024);
        let bus = InvalidationBus::builder(&redis)
            .retry_interval(Duration::from_millis(100))
            .stream_poll_interval(Duration::from_millis(100))
            .start(moka.clone())
            .expect("the bus starts");
        let tiers = bus.broadcasting(bus.local_tier().compose(redis.clone()));
        let cache = Cache::builder(tiers)
            .policy(CachePolicy::new(Duration::from_secs(600)))
            .build();
        bus.wait_subscribed(PATIENCE).await.expect("the bus subscribes");
        Instance {
            redis,
            moka,
            bus,
            cache,
        }
    }

    /// Whether this instance's moka holds anything under `id`'s key (what
    /// the bus has not removed, whatever the L1 would serve).
    async fn moka_holds(&self, id: u64) -> bool {
        self.moka.read(&key(id)).await.expect("moka reads").is_some()
    }

    /// Whether its L1, as the composition reads it, serves `id`.
    async fn l1_serves(&self, id: u64) -> bool {
        self.bus
            .local_tier()
            .read(&key(id))
            .await
            .expect("L1 reads")
            .is_some()
    }
}

async fn wait_for(
    events: &mut broadcast::Receiver<BusEvent>,
    what: &str,
    wanted: impl Fn(&BusEvent) -> bool,
) -> BusEvent {
    let outcome = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("the bus stopped while waiting for {what}")
                }
            }
        }
    })
    .await;
    outcome.unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
}

// ---------------------------------------------------------------------------
// Entries, replays, the cap, groups.

async fn every_invalidation_is_appended(url: &str, test: &str) {
    let prefix = unique_prefix(test);
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_123_456));
    let origin = OriginId::new("web-1.pid-42").expect("a valid id");
    let a = Instance::start(
        builder(url, &prefix)
            .instance_id(origin.clone())
            .clock(clock.clone()),
    )
    .await;
    assert_eq!(a.bus.origin(), &origin, "the bus takes the backend's id");
    let audit = a.redis.audit().expect("on by default").clone();
    assert_eq!(audit.key(), format!("{prefix}#audit"));

    let tagged = EntryOptions::new().tag("team:7");
    a.cache.set(&key(1), &profile(1)).await.expect("stores");
    a.cache
        .set_with(&key(2), &profile(2), &tagged)
        .await
        .expect("stores");
    assert!(
        audit.is_empty().await.expect("XLEN"),
        "writes are not invalidations"
    );

    assert!(a.cache.delete(&key(1)).await.expect("deletes"));
    clock.advance(Duration::from_millis(5));
    assert_eq!(
        a.cache
            .invalidate_tag(&Tag::from("team:7"))
            .await
            .expect("invalidates"),
        1
    );
    clock.advance(Duration::from_millis(5));
    a.bus.purge().await.expect("purges");
    a.bus
        .publish(Invalidation::Prefix("profiles:v1:".into()))
        .await
        .expect("publishes");

    let batch = audit.entries_after(AuditId::ZERO, 100).await.expect("XRANGE");
    assert!(batch.unreadable.is_empty(), "{batch:?}");
    let entries = batch.entries;
    let what: Vec<&Invalidation> = entries.iter().map(|entry| &entry.invalidation).collect();
    assert_eq!(
        what,
        vec![
            &Invalidation::Key(key(1).as_str().to_owned()),
            &Invalidation::Tag("team:7".into()),
            &Invalidation::Purge,
            &Invalidation::Prefix("profiles:v1:".into()),
        ]
    );
    assert!(entries.iter().all(|entry| entry.origin == origin), "{entries:?}");
    let at: Vec<u64> = entries.iter().map(|entry| entry.at.as_millis()).collect();
    assert_eq!(
        at,
        vec![
            1_700_000_123_456,
            1_700_000_123_461,
            1_700_000_123_466,
            1_700_000_123_466
        ]
    );
    // The tag's entry carries its generation after the invalidation.
    let plain = plain_client(url).await;
    let generation: String = plain
        .get(a.redis.tag_generation_key(&Tag::from("team:7")))
        .await
        .expect("GET");
    assert_eq!(entries[1].generation, Some(generation.parse().expect("a number")));
    assert!(
        entries
            .iter()
            .enumerate()
            .all(|(i, entry)| (i == 1) == entry.generation.is_some())
    );
    assert!(entries.windows(2).all(|pair| pair[0].id < pair[1].id), "ids grow");

    // Replays from an id, by pages.
    assert_eq!(audit.last_id().await.expect("XREVRANGE"), Some(entries[3].id));
    let after = audit.entries_after(entries[1].id, 100).await.expect("XRANGE");
    assert_eq!(after.entries, entries[2..].to_vec());
    let page = audit.entries_after(AuditId::ZERO, 2).await.expect("XRANGE");
    assert_eq!(page.entries, entries[..2].to_vec());
    assert_eq!(page.last_id(), Some(entries[1].id));
    assert!(
        audit
            .entries_after(entries[3].id, 100)
            .await
            .expect("XRANGE")
            .is_empty()
    );
}

#[tokio::test]
async fn every_invalidation_is_appended_on_a_standalone_server() {
    init_tracing();
    every_invalidation_is_appended(&env(STANDALONE), "audit-entries").await;
}

#[tokio::test]
async fn every_invalidation_is_appended_on_a_cluster() {
    init_tracing();
    every_invalidation_is_appended(&env(CLUSTER), "audit-entries-cluster").await;
}

#[tokio::test]
async fn the_stream_is_capped_by_maxlen() {
    init_tracing();
    let url = env(STANDALONE);
    let redis = builder(&url, &unique_prefix("audit-cap"))
        .audit_max_len(50)
        .build()
        .expect("builds");
    redis
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("connects");
    let audit = redis.audit().expect("on").clone();
    assert_eq!(audit.max_len(), 50);
    for i in 0..600 {
        audit
            .append(&Invalidation::Key(format!("k{i}")))
            .await
            .expect("XADD");
    }
    let len = audit.len().await.expect("XLEN");
    // `MAXLEN ~` trims whole blocks (100 entries by default): about the
    // cap, never below it, far below what was appended.
    assert!((50..=250).contains(&len), "{len} entries kept");
    let newest = audit.entries_after(AuditId::ZERO, 1_000).await.expect("XRANGE");
    assert_eq!(newest.entries.len() as u64, len);
    assert_eq!(
        newest.entries.last().map(|entry| entry.invalidation.clone()),
        Some(Invalidation::Key("k599".into())),
        "the newest are kept"
    );
}

#[tokio::test]
async fn without_the_stream_nothing_is_appended() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("audit-off");
    let redis = builder(&url, &prefix)
        .audit_stream(false)
        .build()
        .expect("builds");
    redis
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("connects");
    assert!(redis.audit().is_none());
    redis
        .write(&key(1), "v".into(), Duration::from_secs(60), &[Tag::from("t")])
        .await
        .expect("write");
    assert!(redis.remove(&key(1)).await.is_ok());
    redis.invalidate_tag(&Tag::from("t")).await.expect("invalidate");
    let plain = plain_client(&url).await;
    let exists: i64 = plain.exists(format!("{prefix}#audit")).await.expect("EXISTS");
    assert_eq!(exists, 0);
    assert!(matches!(
        RedisBackend::builder().url(&url).audit_max_len(0).build(),
        Err(hitbox_redis::RedisError::Invalid(_))
    ));
}

async fn consumer_groups(url: &str, test: &str) {
    let redis = backend(url, &unique_prefix(test)).await;
    let audit = redis.audit().expect("on").clone();
    // MKSTREAM: the group can come before the first entry.
    assert!(
        audit
            .create_group("auditor", GroupStart::Beginning)
            .await
            .expect("XGROUP CREATE")
    );
    assert!(
        !audit
            .create_group("auditor", GroupStart::End)
            .await
            .expect("XGROUP CREATE"),
        "exists"
    );
    for id in 1..=3 {
        redis.remove(&key(id)).await.expect("DEL");
    }
    let first = audit
        .read_group("auditor", "worker", 2)
        .await
        .expect("XREADGROUP");
    assert_eq!(first.entries.len(), 2);
    let second = audit
        .read_group("auditor", "worker", 10)
        .await
        .expect("XREADGROUP");
    assert_eq!(second.entries.len(), 1);
    assert!(
        audit
            .read_group("auditor", "worker", 10)
            .await
            .expect("XREADGROUP")
            .is_empty()
    );
    let position = audit
        .group_position("auditor")
        .await
        .expect("XINFO")
        .expect("the group");
    assert_eq!(position.last_delivered, second.last_id().expect("an id"));
    assert_eq!(position.pending, 3, "read, not acknowledged");
    assert_eq!(position.lag, Some(0));
    assert!(!position.trimmed_past);
    let mut ids = first.ids();
    ids.extend(second.ids());
    assert_eq!(audit.ack("auditor", &ids).await.expect("XACK"), 3);
    let position = audit
        .group_position("auditor")
        .await
        .expect("XINFO")
        .expect("the group");
    assert_eq!(position.pending, 0);

    // A group created at the end sees only what comes next.
    assert!(
        audit
            .create_group("late", GroupStart::End)
            .await
            .expect("XGROUP CREATE")
    );
    redis.invalidate_tag(&Tag::from("t")).await.expect("invalidate");
    let late = audit.read_group("late", "worker", 10).await.expect("XREADGROUP");
    assert_eq!(
        late.entries
            .iter()
            .map(|e| e.invalidation.clone())
            .collect::<Vec<_>>(),
        vec![Invalidation::Tag("t".into())]
    );
    // Moved back: it reads again.
    audit
        .set_group_position("late", GroupStart::After(first.entries[0].id))
        .await
        .expect("XGROUP SETID");
    assert_eq!(
        audit
            .read_group("late", "worker", 10)
            .await
            .expect("XREADGROUP")
            .entries
            .len(),
        3
    );
    assert!(audit.destroy_group("late").await.expect("XGROUP DESTROY"));
    assert_eq!(audit.group_position("late").await.expect("XINFO"), None);
    assert!(audit.read_group("late", "worker", 10).await.is_err(), "NOGROUP");
}

#[tokio::test]
async fn consumer_groups_on_a_standalone_server() {
    init_tracing();
    consumer_groups(&env(STANDALONE), "audit-groups").await;
}

#[tokio::test]
async fn consumer_groups_on_a_cluster() {
    init_tracing();
    consumer_groups(&env(CLUSTER), "audit-groups-cluster").await;
}

/// An instance with no bus (a worker, a script) deletes a key: no pub/sub
/// message goes out, but the others read the stream while subscribed and
/// drop the key from their L1.
#[tokio::test]
async fn the_stream_brings_invalidations_pub_sub_never_carried() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("audit-heal");
    let b = Instance::start(builder(&url, &prefix)).await;
    let worker = backend(&url, &prefix).await;
    b.cache.set(&key(1), &profile(1)).await.expect("stores");
    b.cache.set(&key(2), &profile(2)).await.expect("stores");
    assert!(b.l1_serves(1).await && b.l1_serves(2).await);
    let mut events = b.bus.events();
    assert!(worker.remove(&key(1)).await.expect("DEL"));
    let wanted = Invalidation::Key(key(1).as_str().to_owned());
    wait_for(&mut events, "B replaying the worker's delete", |e| {
        *e == BusEvent::Replayed(wanted.clone())
    })
    .await;
    assert!(!b.l1_serves(1).await, "dropped from B's L1");
    assert!(b.l1_serves(2).await, "and only that key");
    let stats = b.bus.stats();
    assert_eq!(
        (stats.replayed, stats.applied, stats.purges),
        (1, 0, 0),
        "{stats:?}"
    );
}

// ---------------------------------------------------------------------------
// An instance that misses messages while its subscription is cut.

async fn config_set(admin: &fred::prelude::Client, name: &str, value: &str) {
    let _: String = admin
        .custom(
            CustomCommand::new_static("CONFIG", ClusterHash::Random, false),
            vec!["SET", name, value],
        )
        .await
        .expect("CONFIG SET");
}

/// Cuts every subscriber connection of the servers behind `admins`, and
/// keeps new connections out (existing ones stay authenticated) until
/// [`let_in`].
async fn cut_subscriptions(admins: &[fred::prelude::Client]) {
    for admin in admins {
        config_set(admin, "requirepass", "kept-out").await;
        let _: i64 = admin
            .custom(
                CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
                vec!["KILL", "TYPE", "pubsub"],
            )
            .await
            .expect("CLIENT KILL");
    }
}

async fn let_in(admins: &[fred::prelude::Client]) {
    for admin in admins {
        config_set(admin, "requirepass", "").await;
    }
}

/// What B's L1 serves after the gap, and its bus's counters.
struct AfterGap {
    serves: Vec<bool>,
    stats: hitbox_redis::invalidation::InvalidationStats,
}

/// A and B share `url`. B holds keys 1 to 4 in its L1 (4 tagged). B's
/// subscription is cut; meanwhile A deletes key 1, invalidates key 4's tag
/// and deletes `extra` more keys. Then B is let back in.
async fn miss_and_come_back(
    url: &str,
    admins: &[fred::prelude::Client],
    test: &str,
    configure: impl Fn(RedisBackendBuilder) -> RedisBackendBuilder,
    extra: u64,
) -> AfterGap {
    let prefix = unique_prefix(test);
    let a = Instance::start(configure(builder(url, &prefix))).await;
    let b = Instance::start(configure(builder(url, &prefix))).await;
    let tagged = EntryOptions::new().tag("team:7");
    for id in 1..=3 {
        a.cache.set(&key(id), &profile(id)).await.expect("A stores");
    }
    a.cache
        .set_with(&key(4), &profile(4), &tagged)
        .await
        .expect("A stores");
    for id in 1..=4 {
        assert_eq!(b.cache.get(&key(id)).await, Some(profile(id)));
        assert!(b.l1_serves(id).await, "B's L1 holds {id}");
    }

    let mut events = b.bus.events();
    cut_subscriptions(admins).await;
    wait_for(&mut events, "B noticing the loss", |e| *e == BusEvent::Lost).await;
    assert!(a.cache.delete(&key(1)).await.expect("A deletes"));
    assert_eq!(
        a.cache
            .invalidate_tag(&Tag::from("team:7"))
            .await
            .expect("A invalidates"),
        1
    );
    for id in 0..extra {
        a.cache.delete(&key(1_000 + id)).await.expect("A deletes");
    }
    // B missed both: its moka still holds the entries.
    assert!(!b.bus.is_subscribed(), "B is still kept out");
    assert!(
        b.moka_holds(1).await && b.moka_holds(4).await,
        "B missed the messages"
    );
    assert_eq!(b.bus.stats().applied, 0);

    let_in(admins).await;
    wait_for(&mut events, "B back", |e| *e == BusEvent::Subscribed).await;
    let stats = b.bus.stats();
    let mut serves = Vec::new();
    for id in 1..=4 {
        serves.push(b.l1_serves(id).await);
    }
    // A is back too, and invalidations flow again.
    a.bus.wait_subscribed(PATIENCE).await.expect("A resubscribes");
    a.cache.delete(&key(2)).await.expect("A deletes");
    let wanted = Invalidation::Key(key(2).as_str().to_owned());
    wait_for(
        &mut events,
        "B applying a later delete",
        |e| matches!(e, BusEvent::Applied(i) | BusEvent::Replayed(i) if *i == wanted),
    )
    .await;
    assert!(!b.l1_serves(2).await);
    AfterGap { serves, stats }
}

/// The three outcomes on one deployment: caught up, no stream, trimmed.
async fn catch_up_or_purge(url: &str, admins: &[fred::prelude::Client], test: &str) {
    // With the stream: the two invalidations B missed are applied, the
    // other entries are still served from its L1.
    let caught_up = miss_and_come_back(url, admins, &format!("{test}-stream"), |b| b, 0).await;
    assert_eq!(
        caught_up.serves,
        vec![false, true, true, false],
        "{:?}",
        caught_up.stats
    );
    assert_eq!(caught_up.stats.purges, 0, "{:?}", caught_up.stats);
    assert_eq!(caught_up.stats.catch_ups, 1, "{:?}", caught_up.stats);
    assert_eq!(caught_up.stats.replayed, 2, "{:?}", caught_up.stats);

    // Without it, as before: the whole L1 is purged.
    let purged = miss_and_come_back(url, admins, &format!("{test}-off"), |b| b.audit_stream(false), 0).await;
    assert_eq!(purged.serves, vec![false; 4], "{:?}", purged.stats);
    assert_eq!(purged.stats.purges, 1, "{:?}", purged.stats);
    assert_eq!(purged.stats.catch_ups, 0, "{:?}", purged.stats);

    // Trimmed past B's position: it cannot know all it missed, so it purges.
    let trimmed =
        miss_and_come_back(url, admins, &format!("{test}-trim"), |b| b.audit_max_len(10), 300).await;
    assert_eq!(trimmed.serves, vec![false; 4], "{:?}", trimmed.stats);
    assert_eq!(trimmed.stats.purges, 1, "{:?}", trimmed.stats);
    assert_eq!(trimmed.stats.catch_ups, 0, "{:?}", trimmed.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_back_from_a_cut_catches_up_from_the_stream() {
    init_tracing();
    // A server of the test's own: its password and its pub/sub clients are
    // changed and killed.
    let server = OwnServer::start().await;
    let admin = plain_client(&server.url()).await;
    catch_up_or_purge(&server.url(), &[admin], "audit-cut").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_back_from_a_cut_catches_up_from_the_stream_on_a_cluster() {
    init_tracing();
    let cluster = OwnCluster::start_with(0, 5_000).await;
    let mut admins = Vec::new();
    for port in &cluster.ports {
        admins.push(plain_client(&format!("redis://127.0.0.1:{port}")).await);
    }
    let ok = poll_until(Duration::from_secs(30), || async {
        let mut all = true;
        for admin in &admins {
            let info: String = admin
                .custom(
                    CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
                    vec!["INFO"],
                )
                .await
                .unwrap_or_default();
            all &= info.contains("cluster_state:ok");
        }
        all
    })
    .await;
    assert!(ok.is_some(), "the cluster did not settle");
    catch_up_or_purge(&cluster.url(), &admins, "audit-cut-cluster").await;
    for admin in admins {
        let _ = admin.quit().await;
    }
}

/// An instance reads its own invalidations back from the stream and skips
/// them: its L1 keeps what was stored after them.
#[tokio::test]
async fn own_invalidations_read_back_from_the_stream_are_skipped() {
    init_tracing();
    let url = env(STANDALONE);
    let b = Instance::start(builder(&url, &unique_prefix("audit-own"))).await;
    assert_eq!(b.bus.origin(), b.redis.instance_id());
    b.cache.set(&key(1), &profile(1)).await.expect("stores");
    assert!(b.cache.delete(&key(1)).await.expect("deletes"));
    // Stored again right after: a replay of the delete would drop it.
    b.cache.set(&key(1), &profile(1)).await.expect("stores");
    let read_back = poll_until(PATIENCE, || async { b.bus.stats().replay_skipped >= 1 }).await;
    assert!(read_back.is_some(), "the bus read its own entry back");
    assert!(b.l1_serves(1).await, "and did not apply it");
    assert_eq!(b.bus.stats().replayed, 0);
}

/// Two buses over one backend (two caches in one process): the first takes
/// the backend's id, the second one of its own, so that neither takes the
/// other's messages for its own.
#[tokio::test]
async fn two_buses_over_one_backend_keep_apart() {
    init_tracing();
    let url = env(STANDALONE);
    let redis = backend(&url, &unique_prefix("audit-two")).await;
    let start = |redis: &RedisBackend| {
        let moka = MokaBackend::new(1024 * 1024);
        let bus = InvalidationBus::builder(redis)
            .stream_poll_interval(Duration::from_millis(100))
            .start(moka.clone())
            .expect("the bus starts");
        let cache = Cache::new(bus.broadcasting(bus.local_tier().compose(redis.clone())));
        (moka, bus, cache)
    };
    let (_, first, first_cache) = start(&redis);
    let (second_moka, second, _) = start(&redis);
    assert_eq!(first.origin(), redis.instance_id());
    assert_ne!(second.origin(), first.origin());
    first.wait_subscribed(PATIENCE).await.expect("subscribes");
    second.wait_subscribed(PATIENCE).await.expect("subscribes");

    first_cache.set(&key(1), &profile(1)).await.expect("stores");
    second
        .local_tier()
        .write(&key(1), "cached".into(), Duration::from_secs(60), &[])
        .await
        .expect("L1 writes");
    let mut events = second.events();
    first_cache.delete(&key(1)).await.expect("deletes");
    let wanted = Invalidation::Key(key(1).as_str().to_owned());
    wait_for(
        &mut events,
        "the second bus applying the first's delete",
        |e| matches!(e, BusEvent::Applied(i) | BusEvent::Replayed(i) if *i == wanted),
    )
    .await;
    assert_eq!(second_moka.read(&key(1)).await.expect("moka reads"), None);
}

/// The stream deleted under a running bus (a `FLUSHALL`, an operator): the
/// bus makes its group again and goes on following the stream.
#[tokio::test]
async fn a_bus_follows_a_stream_that_was_deleted_and_made_again() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("audit-deleted");
    let b = Instance::start(builder(&url, &prefix)).await;
    let worker = backend(&url, &prefix).await;
    let audit = b.bus.audit().expect("on").clone();
    let group = b.bus.origin().as_str().to_owned();
    assert!(audit.group_position(&group).await.expect("XINFO").is_some());
    let plain = plain_client(&url).await;
    let _: i64 = plain.del(audit.key()).await.expect("DEL");
    let back = poll_until(PATIENCE, || async {
        matches!(audit.group_position(&group).await, Ok(Some(_)))
    })
    .await;
    assert!(back.is_some(), "the bus made its group again");

    b.cache.set(&key(1), &profile(1)).await.expect("stores");
    let mut events = b.bus.events();
    assert!(worker.remove(&key(1)).await.expect("DEL"));
    let wanted = Invalidation::Key(key(1).as_str().to_owned());
    wait_for(&mut events, "B replaying the worker's delete", |e| {
        *e == BusEvent::Replayed(wanted.clone())
    })
    .await;
    assert!(!b.l1_serves(1).await);
}
