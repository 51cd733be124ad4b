//! The moka tier's gauges (feature `metrics`): what moka holds, as it
//! weighs it, after writes, replacements, removals and evictions; and the per-tier counters the engine takes around it.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::time::Duration;

use hitbox_backend::{Backend, Cache};
use hitbox_core::{CacheKey, EntryOptions, Tag};
use hitbox_moka::MokaBackend;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// `name{label=value,...}` (labels sorted) -> value; a histogram's value
/// is how many observations it holds. Reading resets the recorder, so each
/// test reads once, at the end.
fn read(snapshotter: &Snapshotter) -> HashMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(values) => values.len() as f64,
            };
            (name, value)
        })
        .collect()
}

fn key(n: usize) -> CacheKey {
    CacheKey::builder("moka-metrics").part("n", n.to_string()).build()
}

#[tokio::test]
async fn the_gauges_follow_what_moka_holds() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Small enough that the writes below evict.
    let tier = metrics::with_local_recorder(&recorder, || {
        MokaBackend::builder()
            .max_bytes(64 * 1024)
            .label("gauged")
            .build()
    });
    let ttl = Duration::from_secs(60);
    let value = bytes::Bytes::from(vec![7u8; 1_000]);
    for n in 0..200 {
        tier.write(&key(n), value.clone(), ttl, &[]).await.unwrap();
    }
    // Replacements, a removal, a tag invalidation. (Expirations reach the
    // gauges through the same removal notifications as these.)
    for n in 190..200 {
        tier.write(&key(n), bytes::Bytes::from(vec![1u8; 10]), ttl, &[Tag::from("t")])
            .await
            .unwrap();
    }
    assert!(tier.remove(&key(199)).await.unwrap());
    tier.invalidate_tag(&Tag::from("t")).await.unwrap();
    tier.run_pending_tasks().await;

    assert!(tier.evictions() > 0, "the capacity was exceeded");
    let held = read(&snapshotter);
    assert_eq!(
        held["hitbox_tier_bytes{tier=gauged}"],
        tier.weighted_size() as f64,
        "{held:?}"
    );
    assert_eq!(
        held["hitbox_tier_entries{tier=gauged}"],
        tier.entry_count() as f64,
        "{held:?}"
    );
    assert!(tier.entry_count() > 0 && tier.entry_count() < 200);
}

#[tokio::test]
async fn the_engine_counts_reads_and_writes_of_the_moka_tier() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = metrics::with_local_recorder(&recorder, || {
        Cache::builder(MokaBackend::builder().label("l1-counted").build())
            .name("counted")
            .build()
    });
    let options = EntryOptions::new().ttl(Duration::from_secs(60));
    assert_eq!(cache.get::<u32>(&key(1)).await, None);
    cache.set_with(&key(1), &7u32, &options).await.unwrap();
    assert_eq!(cache.get::<u32>(&key(1)).await, Some(7));
    assert_eq!(cache.get::<u32>(&key(1)).await, Some(7));

    let m = read(&snapshotter);
    assert_eq!(
        m["hitbox_tier_reads_total{result=hit,tier=l1-counted}"], 2.0,
        "{m:?}"
    );
    assert_eq!(m["hitbox_tier_reads_total{result=miss,tier=l1-counted}"], 1.0);
    assert_eq!(m["hitbox_tier_writes_total{result=ok,tier=l1-counted}"], 1.0);
    // Latencies are measured: a recorder was installed when the cache was built.
    assert_eq!(m["hitbox_tier_read_seconds{tier=l1-counted}"], 3.0);
    assert_eq!(m["hitbox_tier_write_seconds{tier=l1-counted}"], 1.0);
    assert_eq!(m["hitbox_cache_requests_total{cache=counted,outcome=hit}"], 2.0);
    assert_eq!(m["hitbox_cache_requests_total{cache=counted,outcome=miss}"], 1.0);
    assert_eq!(m["hitbox_stores_total{cache=counted}"], 1.0);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.stores), (2, 1, 1));
}
