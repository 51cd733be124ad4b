//! Tags that hold across instances: a load that started in instance A
//! before instance B invalidated one of its tags is not stored, on a
//! standalone server and on a cluster. Two instances are two
//! `RedisBackend`s (each with its own connections) under one prefix; the
//! interleaving is driven with channels inside the loader.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{Expiration, KeysInterface};
use hitbox_backend::{Backend, Cache, Compose, LoadTicket, TagGenerations};
use hitbox_core::{CacheKey, CachePolicy, EntryOptions, Tag};
use hitbox_moka::MokaBackend;
use hitbox_redis::invalidation::InvalidationBus;
use hitbox_redis::{FENCE_MAGIC, RedisBackend};
use tokio::sync::oneshot;

use crate::common::{
    CLUSTER, Profile, STANDALONE, backend, cache, env, init_tracing, key, plain_client, profile,
    unique_prefix,
};

fn named(id: u64, name: &str) -> Profile {
    Profile {
        id,
        name: name.to_owned(),
    }
}

fn tagged(tags: &[&str]) -> EntryOptions {
    tags.iter().fold(
        EntryOptions::new().ttl(Duration::from_secs(60)),
        |options, tag| options.tag(*tag),
    )
}

/// A load of `id` by `cache` with `options` whose loader reports that it
/// started, then waits for the go-ahead before answering `value`.
struct GatedLoad {
    started: oneshot::Receiver<()>,
    go: oneshot::Sender<()>,
    load: tokio::task::JoinHandle<Profile>,
}

fn gated_load(
    cache: &Cache,
    id: u64,
    options: EntryOptions,
    value: Profile,
    loads: &Arc<AtomicU32>,
) -> GatedLoad {
    let (started_tx, started) = oneshot::channel();
    let (go, go_rx) = oneshot::channel::<()>();
    let cache = cache.clone();
    let loads = Arc::clone(loads);
    let load = tokio::spawn(async move {
        cache
            .try_get_or_insert_with_options(&key(id), &options, move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                let _ = started_tx.send(());
                let _ = go_rx.await;
                Ok::<_, std::io::Error>(value)
            })
            .await
            .expect("the load succeeds")
    });
    GatedLoad { started, go, load }
}

/// Loads `id` through `cache`, counting a loader call in `loads`.
async fn load_now(
    cache: &Cache,
    id: u64,
    options: &EntryOptions,
    value: Profile,
    loads: &Arc<AtomicU32>,
) -> Profile {
    let loads = Arc::clone(loads);
    cache
        .try_get_or_insert_with_options(&key(id), options, move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(value)
        })
        .await
        .expect("the load succeeds")
}

async fn two_instances(url: &str, test: &str) -> (RedisBackend, Cache, RedisBackend, Cache) {
    let prefix = unique_prefix(test);
    let a = backend(url, &prefix).await;
    let b = backend(url, &prefix).await;
    (a.clone(), cache(a), b.clone(), cache(b))
}

async fn a_load_raced_by_another_instance_is_not_stored(url: &str, test: &str) {
    let (a_redis, a, b_redis, b) = two_instances(url, test).await;
    let loads = Arc::new(AtomicU32::new(0));
    let options = tagged(&["team:7"]);

    let racing = gated_load(&a, 1, options.clone(), named(1, "old"), &loads);
    racing.started.await.expect("A's loader runs");
    // B invalidates the tag while A's load is in flight (nothing is stored
    // under it yet).
    assert_eq!(
        b.invalidate_tag(&Tag::from("team:7"))
            .await
            .expect("B invalidates"),
        0
    );
    racing.go.send(()).expect("A's loader waits");
    assert_eq!(
        racing.load.await.expect("the task ends"),
        named(1, "old"),
        "A's caller still gets what it loaded"
    );
    assert!(
        !a_redis.exists(&key(1)).await.expect("EXISTS"),
        "A's result was not stored"
    );
    let stats = a.stats();
    assert_eq!(stats.stale_loads_discarded, 1, "{stats:?}");
    assert_eq!(
        stats.tier_errors,
        Vec::new(),
        "a refused store is no error: {stats:?}"
    );
    assert_eq!(a_redis.tier_stats()[0].errors, 0);

    // Every later read, from either instance, is fresh: a reload.
    assert_eq!(b.get::<Profile>(&key(1)).await, None);
    assert_eq!(a.get::<Profile>(&key(1)).await, None);
    let fresh = load_now(&b, 1, &options, named(1, "new"), &loads).await;
    assert_eq!(fresh, named(1, "new"));
    assert_eq!(loads.load(Ordering::SeqCst), 2, "B loaded again");
    assert_eq!(a.get::<Profile>(&key(1)).await, Some(named(1, "new")));
    assert_eq!(
        load_now(&a, 1, &options, named(1, "other"), &loads).await,
        named(1, "new"),
        "and A finds B's fresh value"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert!(b_redis.exists(&key(1)).await.expect("EXISTS"));
}

#[tokio::test]
async fn a_load_raced_by_another_instance_is_not_stored_on_a_standalone_server() {
    init_tracing();
    a_load_raced_by_another_instance_is_not_stored(&env(STANDALONE), "gen-race").await;
}

#[tokio::test]
async fn a_load_raced_by_another_instance_is_not_stored_on_a_cluster() {
    init_tracing();
    a_load_raced_by_another_instance_is_not_stored(&env(CLUSTER), "gen-race-cluster").await;
}

async fn without_a_concurrent_invalidation_the_store_succeeds(url: &str, test: &str) {
    let (_, a, b_redis, b) = two_instances(url, test).await;
    let loads = Arc::new(AtomicU32::new(0));
    // Invalidated before the load starts: the load records the new
    // generation and its store holds.
    b.invalidate_tag(&Tag::from("team:7"))
        .await
        .expect("B invalidates");
    let load = gated_load(&a, 1, tagged(&["team:7"]), profile(1), &loads);
    load.started.await.expect("A's loader runs");
    // An invalidation of another tag changes nothing.
    b.invalidate_tag(&Tag::from("team:8"))
        .await
        .expect("B invalidates");
    load.go.send(()).expect("A's loader waits");
    assert_eq!(load.load.await.expect("the task ends"), profile(1));
    assert!(b_redis.exists(&key(1)).await.expect("EXISTS"));
    assert_eq!(b.get::<Profile>(&key(1)).await, Some(profile(1)));
    assert_eq!(a.stats().stale_loads_discarded, 0);
    // And the entry is registered under its tag: invalidating it works.
    assert_eq!(
        b.invalidate_tag(&Tag::from("team:7"))
            .await
            .expect("B invalidates"),
        1
    );
    assert_eq!(a.get::<Profile>(&key(1)).await, None);
}

#[tokio::test]
async fn without_a_concurrent_invalidation_the_store_succeeds_on_a_standalone_server() {
    init_tracing();
    without_a_concurrent_invalidation_the_store_succeeds(&env(STANDALONE), "gen-clean").await;
}

#[tokio::test]
async fn without_a_concurrent_invalidation_the_store_succeeds_on_a_cluster() {
    init_tracing();
    without_a_concurrent_invalidation_the_store_succeeds(&env(CLUSTER), "gen-clean-cluster").await;
}

async fn one_moved_tag_among_several_refuses_the_store(url: &str, test: &str) {
    let (a_redis, a, _, b) = two_instances(url, test).await;
    let loads = Arc::new(AtomicU32::new(0));
    // Tags whose keys hash to different slots on a cluster.
    let options = tagged(&["region:eu", "team:7", "plan:gold"]);
    let load = gated_load(&a, 1, options, profile(1), &loads);
    load.started.await.expect("A's loader runs");
    b.invalidate_tag(&Tag::from("team:7"))
        .await
        .expect("B invalidates");
    load.go.send(()).expect("A's loader waits");
    assert_eq!(load.load.await.expect("the task ends"), profile(1));
    assert!(!a_redis.exists(&key(1)).await.expect("EXISTS"));
    assert_eq!(a.stats().stale_loads_discarded, 1);
}

#[tokio::test]
async fn one_moved_tag_among_several_refuses_the_store_on_a_standalone_server() {
    init_tracing();
    one_moved_tag_among_several_refuses_the_store(&env(STANDALONE), "gen-several").await;
}

#[tokio::test]
async fn one_moved_tag_among_several_refuses_the_store_on_a_cluster() {
    init_tracing();
    one_moved_tag_among_several_refuses_the_store(&env(CLUSTER), "gen-several-cluster").await;
}

/// A load whose key was registered under its tag before the invalidation,
/// and whose value arrives after it: the fence the invalidation left under
/// the key refuses it. The tier's two steps (register, then store) are
/// driven one by one here with the plain client standing for the moment
/// between them.
async fn a_fence_refuses_a_store_its_invalidation_postdates(url: &str, test: &str) {
    let prefix = unique_prefix(test);
    let a = backend(url, &prefix).await;
    let b = backend(url, &prefix).await;
    let plain = plain_client(url).await;
    let tag = Tag::from("team:7");
    let k = key(1);
    let seen = a
        .tag_generations(std::slice::from_ref(&tag))
        .await
        .expect("GET")
        .expect("kept");

    // A registers k under the tag (a tagged write), then B invalidates the
    // tag, which fences k.
    a.write(
        &k,
        Bytes::from_static(b"first"),
        Duration::from_secs(60),
        std::slice::from_ref(&tag),
    )
    .await
    .expect("write");
    assert_eq!(b.invalidate_tag(&tag).await.expect("invalidate"), 1);
    let fence: Bytes = plain.get(a.redis_key(&k)).await.expect("GET");
    assert!(fence.starts_with(FENCE_MAGIC), "a fence is left under the key");
    assert!(!a.exists(&k).await.expect("EXISTS"), "a fence is no entry");
    assert_eq!(a.read(&k).await.expect("GET"), None);
    assert_eq!(
        a.read_many(std::slice::from_ref(&k)).await.expect("MGET"),
        vec![None]
    );

    // Stand for the state between A's registration and A's store: the
    // generation reads as what A saw, the fence is newer.
    let generation = generation_in(&seen, &tag);
    let _: () = plain
        .set(
            a.tag_generation_key(&tag),
            generation.to_string(),
            Some(Expiration::EX(60)),
            None,
            false,
        )
        .await
        .expect("SET");
    let stored = a
        .write_if_current(
            &k,
            Bytes::from_static(b"stale"),
            Duration::from_secs(60),
            std::slice::from_ref(&tag),
            &seen,
        )
        .await
        .expect("the write answers");
    assert!(!stored, "the fence refused it");
    let still: Bytes = plain.get(a.redis_key(&k)).await.expect("GET");
    assert!(still.starts_with(FENCE_MAGIC));

    // A load that started after the invalidation writes over the fence.
    let _: i64 = plain.del(a.tag_generation_key(&tag)).await.expect("DEL");
    b.invalidate_tag(&tag).await.expect("invalidate");
    let now = a
        .tag_generations(std::slice::from_ref(&tag))
        .await
        .expect("GET")
        .expect("kept");
    assert!(
        a.write_if_current(
            &k,
            Bytes::from_static(b"fresh"),
            Duration::from_secs(60),
            std::slice::from_ref(&tag),
            &now
        )
        .await
        .expect("the write answers"),
        "a newer load is stored"
    );
    assert_eq!(a.read(&k).await.expect("GET"), Some(Bytes::from_static(b"fresh")));

    // A snapshot that holds nothing of this tier's own (read elsewhere, or
    // not at all) is refused.
    let foreign = TagGenerations::new();
    assert!(
        !a.write_if_current(
            &k,
            Bytes::from_static(b"x"),
            Duration::from_secs(60),
            std::slice::from_ref(&tag),
            &foreign
        )
        .await
        .expect("the write answers")
    );
    // A plain write (a `set`, not a load) replaces a fence.
    b.invalidate_tag(&tag).await.expect("invalidate");
    a.write(&k, Bytes::from_static(b"set"), Duration::from_secs(60), &[])
        .await
        .expect("write");
    assert_eq!(a.read(&k).await.expect("GET"), Some(Bytes::from_static(b"set")));
}

/// The generation a snapshot of one backend records for `tag`.
fn generation_in(seen: &TagGenerations, tag: &Tag) -> u64 {
    let found: Vec<u64> = seen
        .iter()
        .filter(|(_, t, _)| *t == tag)
        .map(|(_, _, generation)| generation)
        .collect();
    assert_eq!(found.len(), 1, "one backend, one generation: {seen:?}");
    found[0]
}

#[tokio::test]
async fn a_fence_refuses_a_store_its_invalidation_postdates_on_a_standalone_server() {
    init_tracing();
    a_fence_refuses_a_store_its_invalidation_postdates(&env(STANDALONE), "gen-fence").await;
}

#[tokio::test]
async fn a_fence_refuses_a_store_its_invalidation_postdates_on_a_cluster() {
    init_tracing();
    a_fence_refuses_a_store_its_invalidation_postdates(&env(CLUSTER), "gen-fence-cluster").await;
}

#[tokio::test]
async fn generations_move_with_every_invalidation_and_never_repeat() {
    init_tracing();
    let url = env(STANDALONE);
    let redis = backend(&url, &unique_prefix("gen-move")).await;
    let tag = Tag::from("t");
    let tags = std::slice::from_ref(&tag);
    let before = redis.tag_generations(tags).await.expect("GET").expect("kept");
    assert_eq!(generation_in(&before, &tag), 0, "never invalidated");
    redis.invalidate_tag(&tag).await.expect("invalidate");
    let first = generation_in(
        &redis.tag_generations(tags).await.expect("GET").expect("kept"),
        &tag,
    );
    redis.invalidate_tag(&tag).await.expect("invalidate");
    let second = generation_in(
        &redis.tag_generations(tags).await.expect("GET").expect("kept"),
        &tag,
    );
    assert!(first > 0 && second > first, "{first} then {second}");
    // Gone (expired, or deleted by hand) and back: still newer.
    let plain = plain_client(&url).await;
    let _: i64 = plain.del(redis.tag_generation_key(&tag)).await.expect("DEL");
    redis.invalidate_tag(&tag).await.expect("invalidate");
    let third = generation_in(
        &redis.tag_generations(tags).await.expect("GET").expect("kept"),
        &tag,
    );
    assert!(third > second, "{second} then {third}");
    let ttl: i64 = plain.pttl(redis.tag_generation_key(&tag)).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= hitbox_redis::GENERATION_TTL_MS, "PTTL {ttl}");
}

/// The HTTP layer's path: a caller that leads the load and fetches the
/// value itself.
#[tokio::test]
async fn a_led_load_raced_by_another_instance_is_not_stored() {
    init_tracing();
    let (a_redis, a, _, b) = two_instances(&env(STANDALONE), "gen-lead").await;
    let options = tagged(&["team:7"]);
    let LoadTicket::Lead(lead) = a.lead_or_join::<Profile, std::io::Error>(&key(1), &options) else {
        panic!("nobody else loads");
    };
    lead.ready().await;
    b.invalidate_tag(&Tag::from("team:7"))
        .await
        .expect("B invalidates");
    let value = lead.finish(Ok(profile(1))).await.expect("the value");
    assert_eq!(value, profile(1));
    assert!(!a_redis.exists(&key(1)).await.expect("EXISTS"));
    assert_eq!(a.stats().stale_loads_discarded, 1);
}

/// With moka in front: the refused value is not kept in L1 either.
#[tokio::test]
async fn a_refused_load_is_not_kept_in_l1() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("gen-l1");
    let a_redis = backend(&url, &prefix).await;
    let moka = MokaBackend::new(1024 * 1024);
    let a = Cache::builder(moka.clone().compose(a_redis.clone()))
        .policy(CachePolicy::new(Duration::from_secs(60)))
        .build();
    let b = cache(backend(&url, &prefix).await);
    let loads = Arc::new(AtomicU32::new(0));
    let load = gated_load(&a, 1, tagged(&["team:7"]), profile(1), &loads);
    load.started.await.expect("A's loader runs");
    b.invalidate_tag(&Tag::from("team:7"))
        .await
        .expect("B invalidates");
    load.go.send(()).expect("A's loader waits");
    assert_eq!(load.load.await.expect("the task ends"), profile(1));
    let k: CacheKey = key(1);
    assert_eq!(moka.read(&k).await.expect("moka reads"), None, "not in L1");
    assert!(!a_redis.exists(&k).await.expect("EXISTS"), "nor in Redis");
    // Not raced: both tiers keep it.
    let load = gated_load(&a, 2, tagged(&["team:7"]), profile(2), &loads);
    load.started.await.expect("A's loader runs");
    load.go.send(()).expect("A's loader waits");
    load.load.await.expect("the task ends");
    assert!(moka.read(&key(2)).await.expect("moka reads").is_some());
    assert!(a_redis.exists(&key(2)).await.expect("EXISTS"));
}

/// The deployment the bus is for: moka + redis behind an invalidation bus
/// in each instance. B's invalidation reaches A's L1 over pub/sub and A's
/// racing load keeps its result out of both of A's tiers.
#[tokio::test]
async fn a_load_raced_through_the_bus_is_kept_out_of_both_tiers() {
    init_tracing();
    let url = env(STANDALONE);
    let prefix = unique_prefix("gen-bus");
    let instance = |redis: RedisBackend| {
        let moka = MokaBackend::new(1024 * 1024);
        let bus = InvalidationBus::builder(&redis)
            .retry_interval(Duration::from_millis(100))
            .start(moka.clone())
            .expect("the bus starts");
        let cache = Cache::builder(bus.broadcasting(bus.local_tier().compose(redis)))
            .policy(CachePolicy::new(Duration::from_secs(60)))
            .build();
        (moka, bus, cache)
    };
    let a_redis = backend(&url, &prefix).await;
    let (a_moka, a_bus, a) = instance(a_redis.clone());
    let (_, b_bus, b) = instance(backend(&url, &prefix).await);
    a_bus
        .wait_subscribed(Duration::from_secs(10))
        .await
        .expect("A subscribes");
    b_bus
        .wait_subscribed(Duration::from_secs(10))
        .await
        .expect("B subscribes");

    let loads = Arc::new(AtomicU32::new(0));
    let load = gated_load(&a, 1, tagged(&["team:7"]), profile(1), &loads);
    load.started.await.expect("A's loader runs");
    b.invalidate_tag(&Tag::from("team:7"))
        .await
        .expect("B invalidates");
    load.go.send(()).expect("A's loader waits");
    assert_eq!(load.load.await.expect("the task ends"), profile(1));
    assert_eq!(
        a_moka.read(&key(1)).await.expect("moka reads"),
        None,
        "not in A's L1"
    );
    assert!(!a_redis.exists(&key(1)).await.expect("EXISTS"), "nor in Redis");
    assert_eq!(a.stats().stale_loads_discarded, 1);
    assert_eq!(b.get::<Profile>(&key(1)).await, None);
}

/// A tag the load learnt after it started (the HTTP layer's surrogate keys)
/// is stored with the entry, checked against its generation when the entry
/// is written; an invalidation of it afterwards removes the entry. A
/// snapshot with nothing of this tier's own still refuses the write.
async fn a_tag_learnt_after_the_load_started_is_stored_and_invalidates(url: &str, test: &str) {
    init_tracing();
    let prefix = unique_prefix(test);
    let a = backend(url, &prefix).await;
    let (known, late) = (Tag::from("known"), Tag::from("late"));
    let seen = a
        .tag_generations(std::slice::from_ref(&known))
        .await
        .expect("GET")
        .expect("kept");
    let k = CacheKey::builder("late").part("id", "1").build();
    let tags = [known.clone(), late.clone()];
    assert!(
        a.write_if_current(
            &k,
            Bytes::from_static(b"v1"),
            Duration::from_secs(60),
            &tags,
            &seen
        )
        .await
        .expect("the write answers"),
        "a late tag is checked when the entry is written, not refused"
    );
    assert_eq!(a.read(&k).await.expect("GET"), Some(Bytes::from_static(b"v1")));
    a.invalidate_tag(&late).await.expect("invalidate");
    assert_eq!(
        a.read(&k).await.expect("GET"),
        None,
        "the late tag holds the entry"
    );

    let foreign = TagGenerations::new();
    assert!(
        !a.write_if_current(
            &k,
            Bytes::from_static(b"v2"),
            Duration::from_secs(60),
            &tags,
            &foreign
        )
        .await
        .expect("the write answers")
    );
}

#[tokio::test]
async fn a_tag_learnt_after_the_load_started_is_stored_and_invalidates_on_a_standalone_server() {
    a_tag_learnt_after_the_load_started_is_stored_and_invalidates(&env(STANDALONE), "gen-late").await;
}

#[tokio::test]
async fn a_tag_learnt_after_the_load_started_is_stored_and_invalidates_on_a_cluster() {
    a_tag_learnt_after_the_load_started_is_stored_and_invalidates(&env(CLUSTER), "gen-late-cluster").await;
}
