//! The moka tier, alone and under the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hitbox_backend::{Backend, Cache};
use hitbox_core::{CacheKey, EntryOptions, Tag};
use hitbox_moka::{ENTRY_OVERHEAD, MokaBackend};

fn key(id: usize) -> CacheKey {
    CacheKey::builder("moka").part("id", id.to_string()).build()
}

#[tokio::test]
async fn hits_hand_out_the_stored_bytes_without_copying() {
    let tier = MokaBackend::default();
    tier.write(
        &key(1),
        Bytes::from(vec![7u8; 4096]),
        Duration::from_secs(60),
        &[],
    )
    .await
    .unwrap();
    let a = tier.read(&key(1)).await.unwrap().unwrap();
    let b = tier.read(&key(1)).await.unwrap().unwrap();
    assert_eq!(a.as_ptr(), b.as_ptr(), "both reads share one buffer");
    assert!(tier.exists(&key(1)).await.unwrap());
    assert!(tier.remove(&key(1)).await.unwrap());
    assert!(!tier.remove(&key(1)).await.unwrap());
    assert_eq!(tier.read(&key(1)).await.unwrap(), None);
    let stats = &tier.tier_stats()[0];
    assert_eq!((stats.label.as_str(), stats.hits, stats.misses), ("moka", 2, 1));
}

#[tokio::test]
async fn capacity_is_counted_in_bytes_and_evictions_are_counted() {
    let max = 16 * 1024;
    let tier = MokaBackend::new(max);
    for id in 0..100 {
        tier.write(
            &key(id),
            Bytes::from(vec![0u8; 1024]),
            Duration::from_secs(60),
            &[],
        )
        .await
        .unwrap();
        tier.run_pending_tasks().await;
    }
    assert!(tier.weighted_size() <= max, "{} > {max}", tier.weighted_size());
    let per_entry = 1024 + ENTRY_OVERHEAD + key(10).as_str().len();
    assert!(tier.entry_count() as usize <= max as usize / per_entry + 1);
    assert!(tier.evictions() > 0);
    let stats = &tier.tier_stats()[0];
    assert_eq!(stats.evictions, tier.evictions());
    assert_eq!(stats.bytes, Some(tier.weighted_size()));
}

#[tokio::test]
async fn every_entry_expires_after_its_own_ttl() {
    let tier = MokaBackend::default();
    tier.write(
        &key(1),
        Bytes::from_static(b"short"),
        Duration::from_millis(30),
        &[],
    )
    .await
    .unwrap();
    tier.write(
        &key(2),
        Bytes::from_static(b"long"),
        Duration::from_secs(3_600),
        &[],
    )
    .await
    .unwrap();
    // moka's expiry runs on its own monotonic clock, so this one test waits
    // for real time; it polls rather than sleeping a fixed amount.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tier.read(&key(1)).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the 30 ms entry outlived 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(tier.read(&key(2)).await.unwrap().is_some());
}

#[tokio::test]
async fn tags_remove_exactly_the_tagged_entries() {
    let tier = MokaBackend::default();
    let red = [Tag::from("red")];
    let blue = [Tag::from("blue")];
    for id in 0..3 {
        tier.write(&key(id), Bytes::from_static(b"r"), Duration::from_secs(60), &red)
            .await
            .unwrap();
    }
    tier.write(&key(3), Bytes::from_static(b"b"), Duration::from_secs(60), &blue)
        .await
        .unwrap();
    // Re-written without the tag: it must survive the tag's invalidation.
    tier.write(&key(2), Bytes::from_static(b"b"), Duration::from_secs(60), &blue)
        .await
        .unwrap();
    assert_eq!(tier.invalidate_tag(&Tag::from("red")).await.unwrap(), 2);
    assert_eq!(tier.read(&key(0)).await.unwrap(), None);
    assert_eq!(tier.read(&key(1)).await.unwrap(), None);
    assert!(tier.read(&key(2)).await.unwrap().is_some());
    assert_eq!(tier.invalidate_tag(&Tag::from("red")).await.unwrap(), 0);
    assert_eq!(tier.invalidate_tag(&Tag::from("blue")).await.unwrap(), 2);
    assert_eq!(tier.read(&key(3)).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_on_moka_runs_one_load_for_a_thousand_callers() {
    let cache = Cache::new(MokaBackend::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        let (cache, calls, gate) = (cache.clone(), Arc::clone(&calls), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_insert_with(&key(0), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    "loaded".to_string()
                })
                .await
        }));
    }
    for _ in 0..100_000 {
        if cache.stats().joins == 999 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(cache.stats().joins, 999);
    gate.notify_one();
    for task in tasks {
        assert_eq!(task.await.unwrap(), "loaded");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get::<String>(&key(0)).await.as_deref(), Some("loaded"));
}

#[tokio::test]
async fn the_engine_tags_and_stats_reach_the_tier() {
    let tier = MokaBackend::default();
    let cache = Cache::new(tier.clone());
    let options = EntryOptions::new().tag("group");
    cache.set_with(&key(1), &1u32, &options).await.unwrap();
    cache.set(&key(2), &2u32).await.unwrap();
    assert_eq!(cache.invalidate_tag(&Tag::from("group")).await.unwrap(), 1);
    assert_eq!(cache.get::<u32>(&key(1)).await, None);
    assert_eq!(cache.get::<u32>(&key(2)).await, Some(2));
    tier.run_pending_tasks().await;
    let stats = cache.stats();
    assert_eq!(stats.tiers[0].label, "moka");
    assert_eq!(stats.tiers[0].entries, Some(1));
}
