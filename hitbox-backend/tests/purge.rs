//! Purges through the engine: by key, prefix and tag, hard and soft, on a
//! driven clock, through a plain tier, stages and a composition.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hitbox_backend::{
    Backend, BackendError, Cache, Compose, Compression, MemoryBackend, PurgeMode, PurgeTarget, Staged, Stages,
};
use hitbox_core::{CacheKey, CachePolicy, EntryOptions, Freshness, ManualClock, Tag};
use tokio::sync::Notify;

/// fresh 10 s, stale-while-revalidate 10 s, stale-if-error 60 s.
fn policy() -> CachePolicy {
    CachePolicy::new(Duration::from_secs(10))
        .stale_while_revalidate(Duration::from_secs(10))
        .stale_if_error(Duration::from_secs(60))
}

fn cache_over(backend: impl Backend, clock: &ManualClock) -> Cache {
    Cache::builder(backend)
        .clock(clock.clone())
        .policy(policy())
        .build()
}

fn setup() -> (Cache, MemoryBackend, ManualClock) {
    let clock = ManualClock::new();
    let backend = MemoryBackend::with_clock(clock.clone());
    (cache_over(backend.clone(), &clock), backend, clock)
}

fn users() -> hitbox_core::KeyBuilder {
    CacheKey::builder("users").part("tenant", "a")
}

fn user(tenant: &str, id: &str) -> CacheKey {
    CacheKey::builder("users")
        .part("tenant", tenant)
        .part("id", id)
        .build()
}

/// Yields until `done` holds, a bounded number of times.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_serves_the_stale_copy_and_refreshes_it_exactly_once() {
    let (cache, backend, clock) = setup();
    let key = user("a", "1");
    cache.set(&key, &"old".to_string()).await.unwrap();
    clock.advance(Duration::from_secs(2));

    assert_eq!(cache.purge_key(&key, PurgeMode::Soft).await.unwrap(), 1);
    let entry = cache.get_entry::<String>(&key).await.unwrap();
    assert_eq!(entry.freshness, Freshness::Stale);
    // The grace is counted from the purge: stale for 10 s more, not 18.
    assert_eq!(entry.meta().fresh_until, hitbox_core::Clock::now(&clock));

    let loads = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    for _ in 0..10 {
        let (loads, gate) = (Arc::clone(&loads), Arc::clone(&gate));
        let value: String = cache
            .get_or_insert_with(&key, move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                "new".to_string()
            })
            .await;
        assert_eq!(value, "old", "the stale copy is served while it refreshes");
    }
    until(|| loads.load(Ordering::SeqCst) == 1).await;
    let writes = backend.writes();
    gate.notify_one();
    until(|| backend.writes() > writes).await;
    assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("new"));
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one refresh for every stale read"
    );
    assert_eq!(cache.stats().background_refreshes, 1);
}

#[tokio::test]
async fn a_soft_purge_never_lengthens_a_life_and_expires_with_its_grace() {
    let (cache, _, clock) = setup();
    let key = user("a", "1");
    cache.set(&key, &1u32).await.unwrap();
    clock.advance(Duration::from_secs(12)); // stale already
    let before = cache.get_entry::<u32>(&key).await.unwrap().meta().clone();
    cache.purge_key(&key, PurgeMode::Soft).await.unwrap();
    assert_eq!(cache.get_entry::<u32>(&key).await.unwrap().meta(), &before);

    let fresh = user("a", "2");
    cache.set(&fresh, &2u32).await.unwrap();
    cache.purge_key(&fresh, PurgeMode::Soft).await.unwrap();
    clock.advance(Duration::from_secs(10));
    // Past the stale-while-revalidate window counted from the purge: a
    // plain read misses.
    assert_eq!(cache.get::<u32>(&fresh).await, None);
}

#[tokio::test]
async fn an_entry_without_a_stale_window_is_gone_after_a_soft_purge() {
    let clock = ManualClock::new();
    let backend = MemoryBackend::with_clock(clock.clone());
    let cache = Cache::builder(backend.clone())
        .clock(clock.clone())
        .policy(CachePolicy::new(Duration::from_secs(10)))
        .build();
    let key = user("a", "1");
    cache.set(&key, &1u32).await.unwrap();
    assert_eq!(cache.purge_key(&key, PurgeMode::Soft).await.unwrap(), 1);
    assert_eq!(backend.raw(&key), None, "no grace: removed");
}

#[tokio::test]
async fn a_hard_purge_misses() {
    let (cache, backend, _) = setup();
    let key = user("a", "1");
    cache.set(&key, &1u32).await.unwrap();
    assert_eq!(cache.purge_key(&key, PurgeMode::Hard).await.unwrap(), 1);
    assert_eq!(cache.get::<u32>(&key).await, None);
    assert!(backend.is_empty());
    assert_eq!(cache.purge_key(&key, PurgeMode::Hard).await.unwrap(), 0);
}

#[tokio::test]
async fn a_prefix_purge_leaves_neighbours_that_share_a_shorter_prefix() {
    let (cache, _, _) = setup();
    let mine = [user("a", "1"), user("a", "2")];
    let neighbours = [
        user("ab", "1"),                                        // shares "users:v1:tenant=a"
        user("b", "1"),                                         // shares "users:v1:tenant="
        CacheKey::builder("users").part("tenant", "a").build(), // the prefix's own key, no more parts
        CacheKey::builder("usersx")
            .part("tenant", "a")
            .part("id", "1")
            .build(),
    ];
    for key in mine.iter().chain(&neighbours) {
        cache.set(key, &7u32).await.unwrap();
    }
    for mode in [PurgeMode::Soft, PurgeMode::Hard] {
        let purged = cache.purge_prefix(&users().key_prefix(), mode).await.unwrap();
        assert_eq!(purged, 2, "{mode:?}");
        for key in &neighbours {
            let entry = cache.get_entry::<u32>(key).await.unwrap();
            assert_eq!(entry.freshness, Freshness::Fresh, "{mode:?} touched a neighbour");
        }
    }
    for key in &mine {
        assert_eq!(cache.get_entry::<u32>(key).await, None);
    }
}

#[tokio::test]
async fn a_tag_purge_soft_then_hard() {
    let (cache, _, _) = setup();
    let tagged = EntryOptions::new().tag("team:ops");
    let (a, b, c) = (user("a", "1"), user("a", "2"), user("a", "3"));
    cache.set_with(&a, &1u32, &tagged).await.unwrap();
    cache.set_with(&b, &2u32, &tagged).await.unwrap();
    cache.set(&c, &3u32).await.unwrap();
    let tag = Tag::from("team:ops");

    assert_eq!(cache.purge_tag(&tag, PurgeMode::Soft).await.unwrap(), 2);
    for key in [&a, &b] {
        let entry = cache.get_entry::<u32>(key).await.unwrap();
        assert_eq!(entry.freshness, Freshness::Stale);
        assert_eq!(entry.meta().tags, vec![tag.clone()], "tags survive a soft purge");
    }
    assert_eq!(
        cache.get_entry::<u32>(&c).await.unwrap().freshness,
        Freshness::Fresh
    );

    // The rewritten entries are still in the tag's index.
    assert_eq!(cache.purge_tag(&tag, PurgeMode::Hard).await.unwrap(), 2);
    assert_eq!(cache.get_entry::<u32>(&a).await, None);
    assert_eq!(cache.get_entry::<u32>(&b).await, None);
    assert!(cache.get_entry::<u32>(&c).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_raced_a_purge_is_not_stored() {
    for (target, mode) in [
        (PurgeTarget::Key(user("a", "1")), PurgeMode::Hard),
        (PurgeTarget::Prefix(users().key_prefix()), PurgeMode::Soft),
        (PurgeTarget::Tag(Tag::from("t")), PurgeMode::Hard),
    ] {
        let (cache, backend, _) = setup();
        let key = user("a", "1");
        let gate = Arc::new(Notify::new());
        let started = Arc::new(AtomicUsize::new(0));
        let load = {
            let (cache, key, gate, started) = (
                cache.clone(),
                key.clone(),
                Arc::clone(&gate),
                Arc::clone(&started),
            );
            tokio::spawn(async move {
                cache
                    .try_get_or_insert_with_options(&key, &EntryOptions::new().tag("t"), move || async move {
                        started.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok::<_, std::convert::Infallible>(1u32)
                    })
                    .await
            })
        };
        until(|| started.load(Ordering::SeqCst) == 1).await;
        cache.purge(target.clone(), mode).await.unwrap();
        gate.notify_one();
        assert_eq!(load.await.unwrap().unwrap(), 1, "the caller still gets its value");
        assert_eq!(
            backend.raw(&key),
            None,
            "{target:?}: the raced load stored nothing"
        );
        assert_eq!(cache.stats().stale_loads_discarded, 1);
    }
}

#[tokio::test]
async fn soft_purges_go_through_stages_and_both_tiers_of_a_composition() {
    let clock = ManualClock::new();
    let l1 = MemoryBackend::with_clock(clock.clone()).labelled("l1");
    let l2 = MemoryBackend::with_clock(clock.clone()).labelled("l2");
    let sealed = Staged::new(
        l2.clone(),
        Stages::new()
            .compression(Compression::zstd(3))
            .min_compress_size(0),
    );
    let cache = cache_over(l1.clone().compose(sealed), &clock);
    let key = user("a", "1");
    cache
        .set_with(&key, &"value".to_string(), &EntryOptions::new().tag("t"))
        .await
        .unwrap();
    let l2_before = l2.raw(&key).unwrap();

    assert_eq!(
        cache.purge_tag(&Tag::from("t"), PurgeMode::Soft).await.unwrap(),
        1
    );
    assert_ne!(l2.raw(&key).unwrap(), l2_before, "L2 rewritten");
    // L2 alone (through its stages) reads stale.
    let l2_only = cache_over(
        Staged::new(l2.clone(), Stages::new().compression(Compression::zstd(3))),
        &clock,
    );
    let entry = l2_only.get_entry::<String>(&key).await.unwrap();
    assert_eq!(
        (entry.value().as_str(), entry.freshness),
        ("value", Freshness::Stale)
    );
    let l1_only = cache_over(l1.clone(), &clock);
    assert_eq!(
        l1_only.get_entry::<String>(&key).await.unwrap().freshness,
        Freshness::Stale
    );

    // Hard, by prefix: out of both tiers.
    assert_eq!(
        cache
            .purge_prefix(&users().key_prefix(), PurgeMode::Hard)
            .await
            .unwrap(),
        1
    );
    assert!(l1.is_empty() && l2.is_empty());
}

#[tokio::test]
async fn purge_errors_are_clear() {
    let (cache, backend, _) = setup();
    let empty = cache.purge_prefix("", PurgeMode::Hard).await.unwrap_err();
    assert!(matches!(empty, BackendError::Refused { .. }), "{empty:?}");

    backend.set_failing(true);
    for mode in [PurgeMode::Hard, PurgeMode::Soft] {
        for target in [
            PurgeTarget::Key(user("a", "1")),
            PurgeTarget::Prefix(users().key_prefix()),
            PurgeTarget::Tag(Tag::from("t")),
        ] {
            let error = cache.purge(target.clone(), mode).await.unwrap_err();
            assert!(error.is_tier_failure(), "{target:?} {mode:?}: {error:?}");
        }
    }
    let counted: u64 = cache.stats().tier_errors.iter().map(|(_, n)| n).sum();
    assert_eq!(counted, 6, "every failed purge is counted");

    // A tier that cannot list its keys says so.
    struct Plain(MemoryBackend);
    impl Backend for Plain {
        fn read<'a>(&'a self, key: &'a CacheKey) -> hitbox_backend::BackendFuture<'a, Option<bytes::Bytes>> {
            self.0.read(key)
        }
        fn write<'a>(
            &'a self,
            key: &'a CacheKey,
            value: bytes::Bytes,
            ttl: Duration,
            tags: &'a [Tag],
        ) -> hitbox_backend::BackendFuture<'a, ()> {
            self.0.write(key, value, ttl, tags)
        }
        fn remove<'a>(&'a self, key: &'a CacheKey) -> hitbox_backend::BackendFuture<'a, bool> {
            self.0.remove(key)
        }
        fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> hitbox_backend::BackendFuture<'a, u64> {
            self.0.invalidate_tag(tag)
        }
        fn label(&self) -> &str {
            "plain"
        }
    }
    let clock = ManualClock::new();
    let plain = cache_over(Plain(MemoryBackend::with_clock(clock.clone())), &clock);
    let error = plain.purge_prefix("users:", PurgeMode::Hard).await.unwrap_err();
    assert!(matches!(error, BackendError::Unsupported { .. }), "{error:?}");
    assert_eq!(error.kind(), "unsupported");
    assert!(!error.is_tier_failure());
    // By key and (hard) by tag it needs nothing more.
    let key = user("a", "1");
    plain
        .set_with(&key, &1u32, &EntryOptions::new().tag("t"))
        .await
        .unwrap();
    assert_eq!(plain.purge_key(&key, PurgeMode::Soft).await.unwrap(), 1);
    assert_eq!(
        plain.purge_tag(&Tag::from("t"), PurgeMode::Hard).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn corrupt_entries_are_removed_by_a_soft_purge() {
    let (cache, backend, _) = setup();
    let key = user("a", "1");
    backend.put_raw(&key, &b"not an envelope"[..]);
    assert_eq!(cache.purge_key(&key, PurgeMode::Soft).await.unwrap(), 1);
    assert_eq!(backend.raw(&key), None);
}
