//! Purges across instances: two instances (moka L1, the bus, one Redis)
//! on a standalone server and on a cluster; one purges by key, prefix and
//! tag, hard and soft, the other observes it in its L1, and Redis and the
//! audit stream hold what they should. A purge that Redis holds (a server
//! of the test's own, its writes paused) is bounded by the backend's
//! purge timeout.

use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, KeysInterface};
use fred::types::{ClusterHash, CustomCommand};
use hitbox_backend::{Backend, BackendError, Cache, CompositionBackend, PurgeMode};
use hitbox_core::{CacheKey, CachePolicy, EntryOptions, Freshness, ManualClock, Tag};
use hitbox_moka::MokaBackend;
use hitbox_redis::audit::AuditId;
use hitbox_redis::invalidation::{BusEvent, Invalidation, InvalidationBus};
use hitbox_redis::{DEFAULT_PURGE_TIMEOUT, RedisBackend};
use tokio::sync::broadcast;

use crate::common::{
    CLUSTER, OwnServer, STANDALONE, backend, builder, env, init_tracing, plain_client, unique_prefix,
};

const PATIENCE: Duration = Duration::from_secs(10);

struct Instance {
    redis: RedisBackend,
    moka: MokaBackend,
    bus: InvalidationBus,
    cache: Cache,
}

fn policy() -> CachePolicy {
    CachePolicy::new(Duration::from_secs(60)).stale_while_revalidate(Duration::from_secs(30))
}

impl Instance {
    async fn start(url: &str, prefix: &str, clock: &ManualClock) -> Instance {
        let redis = backend(url, prefix).await;
        let moka = MokaBackend::new(16 * 1024 * 1024);
        let bus = InvalidationBus::builder(&redis)
            .clock(clock.clone())
            .start(moka.clone())
            .expect("the bus starts");
        let tiers = CompositionBackend::builder(bus.local_tier(), redis.clone())
            .clock(clock.clone())
            .build();
        let cache = Cache::builder(bus.broadcasting(tiers))
            .clock(clock.clone())
            .policy(policy())
            .build();
        bus.wait_subscribed(PATIENCE).await.expect("the bus subscribes");
        Instance {
            redis,
            moka,
            bus,
            cache,
        }
    }

    /// How this instance's L1 alone sees `key`.
    async fn l1(&self, key: &CacheKey, clock: &ManualClock) -> Option<Freshness> {
        let l1 = Cache::builder(self.bus.local_tier()).clock(clock.clone()).build();
        l1.get_entry::<String>(key).await.map(|entry| entry.freshness)
    }

    /// How Redis alone sees `key`.
    async fn redis(&self, key: &CacheKey, clock: &ManualClock) -> Option<Freshness> {
        let redis = Cache::builder(self.redis.clone()).clock(clock.clone()).build();
        redis.get_entry::<String>(key).await.map(|entry| entry.freshness)
    }
}

async fn applied(events: &mut broadcast::Receiver<BusEvent>, wanted: Invalidation) {
    let outcome = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(BusEvent::Applied(got)) if got == wanted => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the bus stopped"),
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "{wanted:?} not applied within {PATIENCE:?}");
}

fn user(tenant: &str, id: &str) -> CacheKey {
    CacheKey::builder("users")
        .part("tenant", tenant)
        .part("id", id)
        .build()
}

async fn purges_reach_the_other_instance(url: &str) {
    init_tracing();
    let prefix = unique_prefix("purge-bus");
    let clock = ManualClock::new();
    let a = Instance::start(url, &prefix, &clock).await;
    let b = Instance::start(url, &prefix, &clock).await;
    let (k1, k2, neighbour) = (user("a", "1"), user("a", "2"), user("ab", "1"));
    let tagged = EntryOptions::new().tag("team");
    for key in [&k1, &k2, &neighbour] {
        a.cache
            .set_with(key, &key.as_str().to_owned(), &tagged)
            .await
            .unwrap();
        // B reads it from Redis, which fills its L1.
        assert!(b.cache.get::<String>(key).await.is_some());
        assert_eq!(b.l1(key, &clock).await, Some(Freshness::Fresh));
    }
    let mut events = b.bus.events();

    // Soft, by key: B's L1 copy is stale, not gone; so is Redis's.
    assert_eq!(a.cache.purge_key(&k1, PurgeMode::Soft).await.unwrap(), 1);
    applied(&mut events, Invalidation::SoftKey(k1.as_str().into())).await;
    assert_eq!(b.l1(&k1, &clock).await, Some(Freshness::Stale));
    assert_eq!(a.l1(&k1, &clock).await, Some(Freshness::Stale));
    assert_eq!(b.redis(&k1, &clock).await, Some(Freshness::Stale));
    assert_eq!(b.l1(&k2, &clock).await, Some(Freshness::Fresh));
    // B serves it stale and refreshes it once.
    let served: String = b
        .cache
        .get_or_insert_with(&k1, || async { "new".to_string() })
        .await;
    assert_eq!(served, k1.as_str());

    // Soft, by tag.
    a.cache
        .purge_tag(&Tag::from("team"), PurgeMode::Soft)
        .await
        .unwrap();
    applied(&mut events, Invalidation::SoftTag("team".into())).await;
    assert_eq!(b.l1(&k2, &clock).await, Some(Freshness::Stale));
    assert_eq!(b.l1(&neighbour, &clock).await, Some(Freshness::Stale));

    // Soft, by prefix, after fresh copies everywhere.
    for key in [&k1, &k2, &neighbour] {
        for instance in [&a, &b] {
            instance
                .cache
                .set_with(key, &"v".to_string(), &tagged)
                .await
                .unwrap();
        }
        assert_eq!(b.l1(key, &clock).await, Some(Freshness::Fresh));
    }
    let users_a = CacheKey::builder("users").part("tenant", "a").key_prefix();
    assert_eq!(a.cache.purge_prefix(&users_a, PurgeMode::Soft).await.unwrap(), 2);
    applied(&mut events, Invalidation::SoftPrefix(users_a.clone())).await;
    assert_eq!(b.l1(&k2, &clock).await, Some(Freshness::Stale));
    assert_eq!(
        b.l1(&neighbour, &clock).await,
        Some(Freshness::Fresh),
        "a shorter shared prefix is not purged"
    );
    assert_eq!(b.redis(&neighbour, &clock).await, Some(Freshness::Fresh));

    // Hard, by prefix: gone from B's L1 and from Redis; the neighbour stays.
    assert_eq!(a.cache.purge_prefix(&users_a, PurgeMode::Hard).await.unwrap(), 2);
    applied(&mut events, Invalidation::Prefix(users_a.clone())).await;
    for key in [&k1, &k2] {
        assert_eq!(b.l1(key, &clock).await, None);
        assert_eq!(b.redis(key, &clock).await, None);
        assert!(b.moka.read(key).await.unwrap().is_none());
    }
    assert_eq!(b.l1(&neighbour, &clock).await, Some(Freshness::Fresh));

    // Hard, by key and by tag.
    assert_eq!(a.cache.purge_key(&neighbour, PurgeMode::Hard).await.unwrap(), 1);
    applied(&mut events, Invalidation::Key(neighbour.as_str().into())).await;
    assert_eq!(b.l1(&neighbour, &clock).await, None);
    a.cache.set_with(&k1, &"t".to_string(), &tagged).await.unwrap();
    assert!(b.cache.get::<String>(&k1).await.is_some());
    assert_eq!(
        a.cache
            .purge_tag(&Tag::from("team"), PurgeMode::Hard)
            .await
            .unwrap(),
        1
    );
    applied(&mut events, Invalidation::Tag("team".into())).await;
    assert_eq!(b.l1(&k1, &clock).await, None);
    assert_eq!(b.redis(&k1, &clock).await, None);

    // Every purge is in the audit stream, marked as one.
    let audit = a.redis.audit().expect("the audit stream is on");
    let batch = audit.entries_after(AuditId::ZERO, 1_000).await.unwrap();
    let purges: Vec<&Invalidation> = batch
        .entries
        .iter()
        .filter(|entry| entry.purge)
        .map(|entry| &entry.invalidation)
        .collect();
    assert_eq!(
        purges,
        [
            &Invalidation::SoftKey(k1.as_str().into()),
            &Invalidation::SoftTag("team".into()),
            &Invalidation::SoftPrefix(users_a.clone()),
            &Invalidation::Prefix(users_a.clone()),
            &Invalidation::Key(neighbour.as_str().into()),
            &Invalidation::Tag("team".into()),
        ]
    );
}

#[tokio::test]
async fn purges_reach_the_other_instance_on_a_standalone_server() {
    purges_reach_the_other_instance(&env(STANDALONE)).await;
}

#[tokio::test]
async fn purges_reach_the_other_instance_on_a_cluster() {
    purges_reach_the_other_instance(&env(CLUSTER)).await;
}

#[tokio::test]
async fn a_prefix_purge_covers_many_keys_and_refuses_the_tier_own() {
    for url in [env(STANDALONE), env(CLUSTER)] {
        let prefix = unique_prefix("purge-many");
        let redis = backend(&url, &prefix).await;
        let cache = Cache::new(redis.clone());
        for id in 0..1_500 {
            cache.set(&user("a", &id.to_string()), &id).await.unwrap();
        }
        cache.set(&user("b", "1"), &1).await.unwrap();
        cache
            .set_with(&user("c", "1"), &1, &EntryOptions::new().tag("t"))
            .await
            .unwrap();
        let users_a = CacheKey::builder("users").part("tenant", "a").key_prefix();
        assert_eq!(
            cache.purge_prefix(&users_a, PurgeMode::Hard).await.unwrap(),
            1_500
        );
        assert_eq!(cache.get::<i32>(&user("b", "1")).await, Some(1));
        // The tier's own keys cannot be reached through a prefix.
        let refused = cache.purge_prefix("#tag", PurgeMode::Hard).await.unwrap_err();
        assert!(
            matches!(refused, hitbox_backend::BackendError::Refused { .. }),
            "{refused:?}"
        );
        assert_eq!(
            cache.purge_tag(&Tag::from("t"), PurgeMode::Hard).await.unwrap(),
            1
        );
        // Counted: the prefix purge and its entries, the refusal, the tag.
        let stats = cache.stats();
        assert_eq!(
            (
                stats.purges,
                stats.prefix_purges,
                stats.tag_purges,
                stats.purge_errors
            ),
            (3, 2, 1, 1),
            "{stats:?}"
        );
        assert_eq!(stats.purged_entries, 1_501, "{stats:?}");
    }
}

/// Sends `CLIENT <args>` to the server behind `admin`.
async fn client_command(admin: &fred::prelude::Client, args: Vec<&str>) {
    let _: String = admin
        .custom(
            CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
            args,
        )
        .await
        .expect("CLIENT");
}

#[tokio::test]
async fn a_short_purge_timeout_bounds_a_purge_that_redis_holds() {
    init_tracing();
    // A server of the test's own: its writes are paused for a while.
    let server = OwnServer::start().await;
    let url = server.url();
    let prefix = unique_prefix("purge-timeout");
    let short = Duration::from_millis(200);
    // The test builder's read and write timeouts are 2 s: only the purge
    // timeout is short.
    let redis = builder(&url, &prefix)
        .purge_timeout(short)
        .build()
        .expect("the backend builds");
    redis
        .wait_connected(PATIENCE)
        .await
        .expect("the backend connects");
    let cache = Cache::builder(redis.clone()).policy(policy()).build();
    let users = CacheKey::builder("users").part("tenant", "slow");
    let keys: Vec<CacheKey> = (0..50)
        .map(|id| users.clone().part("id", id.to_string()).build())
        .collect();
    for key in &keys {
        cache.set(key, &key.as_str().to_owned()).await.unwrap();
    }
    let redis_keys: Vec<String> = keys.iter().map(|key| redis.redis_key(key)).collect();
    let admin = plain_client(&url).await;
    let stored = || async {
        let stored: i64 = admin.exists(redis_keys.clone()).await.expect("EXISTS");
        stored
    };
    assert_eq!(stored().await, 50);

    // Redis holds every write from now on; reads still answer, so a
    // purge's SCAN (and a soft purge's reads) go through and its UNLINKs
    // (or rewrites) wait.
    client_command(&admin, vec!["PAUSE", "10000", "WRITE"]).await;
    for mode in [PurgeMode::Hard, PurgeMode::Soft] {
        let started = Instant::now();
        let result = cache.purge_prefix(&users.key_prefix(), mode).await;
        let took = started.elapsed();
        assert!(
            matches!(&result, Err(BackendError::Timeout { after, .. }) if *after == short),
            "{mode}: {result:?}"
        );
        assert!(
            took >= short && took < Duration::from_secs(2),
            "{mode}: the purge gave up after {took:?}, its timeout is {short:?}"
        );
        // Nothing was removed or rewritten: Redis still holds the writes.
        assert_eq!(stored().await, 50, "{mode}");
    }
    client_command(&admin, vec!["UNPAUSE"]).await;
    let stats = cache.stats();
    assert_eq!(
        (
            stats.purges,
            stats.prefix_purges,
            stats.soft_purges,
            stats.purge_errors
        ),
        (2, 2, 1, 2),
        "{stats:?}"
    );
    assert_eq!(stats.errors_of("redis"), 2, "{stats:?}");

    // The default bound, on the same server once its writes are let
    // through: a purge of another prefix is whole.
    let patient = builder(&url, &prefix).build().expect("the backend builds");
    patient
        .wait_connected(PATIENCE)
        .await
        .expect("the backend connects");
    let patient = Cache::builder(patient).policy(policy()).build();
    let others = CacheKey::builder("users").part("tenant", "patient");
    for id in 0..1_200 {
        let key = others.clone().part("id", id.to_string()).build();
        patient.set(&key, &id.to_string()).await.unwrap();
    }
    let started = Instant::now();
    assert_eq!(
        patient
            .purge_prefix(&others.key_prefix(), PurgeMode::Hard)
            .await
            .unwrap(),
        1_200
    );
    assert!(started.elapsed() < DEFAULT_PURGE_TIMEOUT);
    assert_eq!(
        patient
            .get::<String>(&others.clone().part("id", "7").build())
            .await,
        None
    );
    assert_eq!(DEFAULT_PURGE_TIMEOUT, Duration::from_secs(30));
}

#[tokio::test]
async fn a_purge_while_redis_is_down_fails_clearly_and_soon() {
    // Nothing listens on port 1.
    let redis = RedisBackend::builder()
        .url("redis://127.0.0.1:1")
        .build()
        .expect("the backend builds");
    let cache = Cache::new(redis);
    for mode in [PurgeMode::Hard, PurgeMode::Soft] {
        for purge in [
            hitbox_backend::PurgeTarget::Key(user("a", "1")),
            hitbox_backend::PurgeTarget::Prefix("users:".into()),
            hitbox_backend::PurgeTarget::Tag(Tag::from("t")),
        ] {
            let started = Instant::now();
            let error = cache.purge(purge.clone(), mode).await.unwrap_err();
            assert!(error.is_tier_failure(), "{purge:?} {mode:?}: {error:?}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{purge:?} {mode:?} took {:?}",
                started.elapsed()
            );
        }
    }
}

/// The spans a test sees: name, parent (by place) and `hitbox.tier`.
mod spans {
    use std::sync::{Arc, Mutex};

    use tracing::Subscriber;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::Context;
    use tracing_subscriber::registry::LookupSpan;

    #[derive(Debug, Clone)]
    pub struct Seen {
        pub name: &'static str,
        pub parent: Option<usize>,
        pub tier: Option<String>,
    }

    #[derive(Clone, Default)]
    pub struct Captured(pub Arc<Mutex<Vec<Seen>>>);

    struct Place(usize);

    struct Tier<'a>(&'a mut Option<String>);

    impl Visit for Tier<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "hitbox.tier" {
                *self.0 = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Captured {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let span = ctx.span(id).expect("a new span is registered");
            let parent = span
                .parent()
                .and_then(|parent| parent.extensions().get::<Place>().map(|place| place.0));
            let mut tier = None;
            attrs.record(&mut Tier(&mut tier));
            let mut seen = self.0.lock().unwrap();
            seen.push(Seen {
                name: attrs.metadata().name(),
                parent,
                tier,
            });
            span.extensions_mut().insert(Place(seen.len() - 1));
        }
    }
}

#[tokio::test]
async fn a_purge_through_the_bus_is_traced_over_each_tier_not_over_the_bus() {
    use tracing_subscriber::layer::SubscriberExt;

    let captured = spans::Captured::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    let url = env(STANDALONE);
    let prefix = unique_prefix("purge-spans");
    let clock = ManualClock::new();
    let instance = Instance::start(&url, &prefix, &clock).await;
    let key = user("spans", "1");
    instance.cache.set(&key, &"v".to_string()).await.unwrap();
    captured.0.lock().unwrap().clear();

    assert_eq!(instance.cache.purge_key(&key, PurgeMode::Hard).await.unwrap(), 1);
    let seen = captured.0.lock().unwrap().clone();
    let purge = seen
        .iter()
        .position(|span| span.name == "hitbox.purge")
        .expect("a hitbox.purge span");
    let under: Vec<(&str, Option<&str>)> = seen
        .iter()
        .filter(|span| span.parent == Some(purge))
        .map(|span| (span.name, span.tier.as_deref()))
        .collect();
    let local = instance.bus.local_tier().label().to_owned();
    assert_eq!(
        under,
        [
            ("hitbox.tier.purge", Some(local.as_str())),
            ("hitbox.tier.purge", Some("redis")),
        ],
        "{seen:#?}"
    );
}
