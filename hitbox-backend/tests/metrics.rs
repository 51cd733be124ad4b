//! The exported metrics (feature `metrics`) against `Cache::stats()`: a
//! scripted run through every kind of event, then the two compared field
//! by field; the same for purges of every kind and mode; the per-tier
//! counters against what the composition counted; the breaker-state gauge
//! through open, half-open and closed.
//!
//! Each test records into its own `DebuggingRecorder`, set as the local
//! recorder while the cache is built: the handles are registered then, and
//! keep recording into it afterwards, so tests never share the global
//! recorder.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hitbox_backend::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use hitbox_backend::{BackendError, Cache, CompositionBackend, MemoryBackend, Outcome, PurgeMode};
use hitbox_core::{CacheKey, CachePolicy, EntryOptions, ManualClock, Strategy, Tag};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::oneshot;

/// What the recorder holds, as `name{label=value,...}` (labels sorted) ->
/// value; a histogram's value is how many observations it holds.
#[derive(Debug, Default)]
struct Exported(HashMap<String, f64>);

impl Exported {
    /// Reads the recorder (which resets its counters and gauges, so each
    /// reading holds what happened since the last).
    fn read(snapshotter: &Snapshotter) -> Self {
        let values = snapshotter
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
            .collect();
        Exported(values)
    }

    /// A metric that must exist (it was registered).
    fn get(&self, name: &str) -> u64 {
        match self.0.get(name) {
            Some(value) => *value as u64,
            None => panic!("no metric {name} in {:#?}", self.0),
        }
    }

    fn names_with(&self, part: &str) -> Vec<&String> {
        self.0.keys().filter(|name| name.contains(part)).collect()
    }

    /// The sum of the metrics named `name` whose labels include all of
    /// `labels` (`kind=prefix`, ...); panics if none matches.
    fn sum(&self, name: &str, labels: &[&str]) -> u64 {
        let matching: Vec<u64> = self
            .0
            .iter()
            .filter(|(metric, _)| {
                metric.starts_with(&format!("{name}{{"))
                    && labels.iter().all(|label| {
                        metric[name.len() + 1..metric.len() - 1]
                            .split(',')
                            .any(|have| have == *label)
                    })
            })
            .map(|(_, value)| *value as u64)
            .collect();
        assert!(
            !matching.is_empty(),
            "no metric {name} with {labels:?} in {:#?}",
            self.0
        );
        matching.iter().sum()
    }
}

fn key(id: &str) -> CacheKey {
    CacheKey::builder("metrics").part("id", id).build()
}

/// Yields to the runtime until `done` holds: waiting for other tasks to
/// reach a point, without sleeping.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

#[derive(Debug)]
struct Boom;

#[tokio::test]
async fn exported_counters_are_the_stats_field_by_field() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let clock = ManualClock::new();
    let l1 = MemoryBackend::with_clock(clock.clone()).labelled("m-l1");
    let l2 = MemoryBackend::with_clock(clock.clone()).labelled("m-l2");
    let (tiers, cache) = metrics::with_local_recorder(&recorder, || {
        let tiers = Arc::new(
            CompositionBackend::builder(l1.clone(), l2.clone())
                .clock(clock.clone())
                .failure_threshold(2)
                .cool_down(Duration::from_secs(5))
                .build(),
        );
        let cache = Cache::builder_shared(tiers.clone())
            .name("scripted")
            .clock(clock.clone())
            .policy(
                CachePolicy::new(Duration::from_secs(10))
                    .stale_while_revalidate(Duration::from_secs(10))
                    .stale_if_error(Duration::from_secs(60)),
            )
            .build();
        (tiers, cache)
    });

    // A miss, loaded and stored in both tiers.
    assert_eq!(cache.get_or_insert_with(&key("a"), || async { 1u32 }).await, 1);
    // A hit in L1.
    assert_eq!(cache.get::<u32>(&key("a")).await, Some(1));
    // A stale hit, refreshed in the background.
    clock.advance(Duration::from_secs(15));
    let stale = cache
        .try_get_or_insert_with(&key("a"), || async { Ok::<_, Boom>(2u32) })
        .await
        .unwrap();
    assert_eq!(stale, 1);
    until(|| cache.stats().stores == 2).await;

    // Two callers for one missing key: one loads, one joins.
    let (release, gate) = oneshot::channel::<()>();
    let leader = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .try_get_or_insert_with(&key("b"), move || async move {
                    gate.await.unwrap();
                    Ok::<_, Boom>(3u32)
                })
                .await
        }
    });
    until(|| cache.stats().loads == 3).await;
    let follower = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .try_get_or_insert_with(&key("b"), || async { Ok::<_, Boom>(99u32) })
                .await
        }
    });
    until(|| cache.stats().joins == 1).await;
    release.send(()).unwrap();
    assert_eq!(leader.await.unwrap().unwrap(), 3);
    assert_eq!(follower.await.unwrap().unwrap(), 3);

    // A load that races an invalidation: served, not stored.
    let (release, gate) = oneshot::channel::<()>();
    let racing = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .try_get_or_insert_with(&key("c"), move || async move {
                    gate.await.unwrap();
                    Ok::<_, Boom>(4u32)
                })
                .await
        }
    });
    until(|| cache.stats().loads == 4).await;
    cache.delete(&key("c")).await.unwrap();
    release.send(()).unwrap();
    assert_eq!(racing.await.unwrap().unwrap(), 4);

    // A load that fails with nothing to serve instead.
    let failed = cache
        .try_get_or_insert_with(&key("d"), || async { Err::<u32, _>(Boom) })
        .await;
    assert!(failed.is_err());
    // An entry that does not decode: a miss.
    l1.put_raw(&key("e"), b"garbage".to_vec());
    assert_eq!(cache.get::<u32>(&key("e")).await, None);
    // A bypass, and what the HTTP layer reports itself.
    let bypass = EntryOptions::new().strategy(Strategy::Bypass);
    let bypassed = cache
        .try_get_or_insert_with_options(&key("f"), &bypass, || async { Ok::<_, Boom>(5u32) })
        .await;
    assert_eq!(bypassed.unwrap(), 5);
    cache.record_outcome(Outcome::Uncacheable);
    cache.invalidate_tag(&Tag::from("t")).await.unwrap();

    // L1 fails: two reads fail (L2 answers them) and open L1's breaker;
    // the next read and a write skip L1. The write fails (the default
    // write policy wants both tiers), though L2 took it.
    l1.set_failing(true);
    for _ in 0..3 {
        assert_eq!(cache.get::<u32>(&key("a")).await, Some(2));
    }
    assert!(cache.set(&key("g"), &6u32).await.is_err());

    let stats = cache.stats();
    let m = Exported::read(&snapshotter);
    let requests = |outcome: &str| {
        m.get(&format!(
            "hitbox_cache_requests_total{{cache=scripted,outcome={outcome}}}"
        ))
    };

    // What happened, as the stats count it.
    assert_eq!(
        (stats.hits, stats.misses, stats.stale_hits, stats.collapsed),
        (4, 4, 1, 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.bypassed, stats.uncacheable, stats.request_errors),
        (1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.loads, stats.loads_succeeded, stats.load_errors),
        (6, 5, 1),
        "{stats:?}"
    );
    assert_eq!(
        (
            stats.joins,
            stats.background_refreshes,
            stats.stale_loads_discarded
        ),
        (1, 1, 1)
    );
    assert_eq!(
        (
            stats.invalidations,
            stats.tag_invalidations,
            stats.stores,
            stats.unreadable_entries
        ),
        (2, 1, 3, 1)
    );

    // The same, as exported: field by field.
    for outcome in Outcome::ALL {
        assert_eq!(requests(outcome.as_str()), stats.outcome(outcome), "{outcome}");
    }
    assert_eq!(stats.requests(), 13);
    // The failed write, as the engine saw it.
    assert_eq!(stats.errors_of("m-l1"), 1);
    assert_eq!(
        m.get("hitbox_loads_total{cache=scripted,result=ok}"),
        stats.loads_succeeded
    );
    assert_eq!(
        m.get("hitbox_loads_total{cache=scripted,result=error}"),
        stats.load_errors
    );
    assert_eq!(
        stats.loads,
        stats.loads_succeeded + stats.load_errors,
        "no load is running"
    );
    assert_eq!(
        m.get("hitbox_single_flight_joins_total{cache=scripted}"),
        stats.joins
    );
    assert_eq!(
        m.get("hitbox_background_refreshes_total{cache=scripted}"),
        stats.background_refreshes
    );
    assert_eq!(
        m.get("hitbox_stale_loads_discarded_total{cache=scripted}"),
        stats.stale_loads_discarded
    );
    assert_eq!(
        m.get("hitbox_invalidations_total{cache=scripted,kind=key}")
            + m.get("hitbox_invalidations_total{cache=scripted,kind=tag}"),
        stats.invalidations
    );
    assert_eq!(
        m.get("hitbox_invalidations_total{cache=scripted,kind=tag}"),
        stats.tag_invalidations
    );
    assert_eq!(m.get("hitbox_stores_total{cache=scripted}"), stats.stores);
    assert_eq!(
        m.get("hitbox_unreadable_entries_total{cache=scripted}"),
        stats.unreadable_entries
    );

    // Per tier. L1: hits a, a (stale), e (garbage); misses a, b twice, c,
    // d; two client errors, then a read skipped by its open breaker. L2 is
    // read on every L1 miss or error.
    let tier = |name: &str, tier: &str, label: &str| m.get(&format!("{name}{{{label},tier={tier}}}"));
    let reads = |t: &str, result: &str| tier("hitbox_tier_reads_total", t, &format!("result={result}"));
    let writes = |t: &str, result: &str| tier("hitbox_tier_writes_total", t, &format!("result={result}"));
    let errors = |t: &str, kind: &str| tier("hitbox_tier_errors_total", t, &format!("kind={kind}"));
    assert_eq!(
        (
            reads("m-l1", "hit"),
            reads("m-l1", "miss"),
            reads("m-l1", "error")
        ),
        (3, 5, 3)
    );
    assert_eq!(
        (
            reads("m-l2", "hit"),
            reads("m-l2", "miss"),
            reads("m-l2", "error")
        ),
        (3, 5, 0)
    );
    // Writes: a, the refresh of a, b in both; g in L2 only, L1 skipped.
    assert_eq!(
        (
            writes("m-l1", "ok"),
            writes("m-l1", "error"),
            writes("m-l1", "refused")
        ),
        (3, 1, 0)
    );
    assert_eq!((writes("m-l2", "ok"), writes("m-l2", "error")), (4, 0));
    assert_eq!((errors("m-l1", "client"), errors("m-l1", "unavailable")), (2, 2));
    for kind in ["timeout", "client", "unavailable", "key", "refused", "codec"] {
        assert_eq!(errors("m-l2", kind), 0, "{kind}");
    }
    // The same events the composition counted itself.
    let [near, far] = tiers.tier_counters();
    assert_eq!(
        (near.hits, near.misses, near.errors, near.skipped),
        (
            reads("m-l1", "hit"),
            reads("m-l1", "miss"),
            errors("m-l1", "client"),
            errors("m-l1", "unavailable")
        )
    );
    assert_eq!(
        (far.hits, far.misses),
        (reads("m-l2", "hit"), reads("m-l2", "miss"))
    );
    // One latency per call that reached a tier (skipped ones did not): a
    // recorder was installed when the tiers were built.
    assert_eq!(
        m.get("hitbox_tier_read_seconds{tier=m-l1}"),
        reads("m-l1", "hit") + reads("m-l1", "miss") + errors("m-l1", "client")
    );
    assert_eq!(m.get("hitbox_tier_write_seconds{tier=m-l1}"), 3);
    assert_eq!(m.get("hitbox_tier_write_seconds{tier=m-l2}"), 4);
    // The breaker of L1 is open; L2's is closed.
    assert_eq!(m.get("hitbox_tier_breaker_state{tier=m-l1}"), 2);
    assert_eq!(m.get("hitbox_tier_breaker_state{tier=m-l2}"), 0);
    // The composition is not one more tier: its tiers are.
    assert!(m.names_with("tier=m-l1+m-l2").is_empty(), "{m:#?}");
}

#[tokio::test]
async fn a_tier_alone_is_observed_by_the_engine() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let tier = MemoryBackend::new().labelled("alone");
    let cache = metrics::with_local_recorder(&recorder, || Cache::new(tier.clone()));
    assert_eq!(
        cache.name(),
        "alone",
        "a cache is named after its tier by default"
    );
    let key = key("alone");
    cache.set(&key, &1u32).await.unwrap();
    assert_eq!(cache.get::<u32>(&key).await, Some(1));
    tier.set_failing(true);
    assert_eq!(cache.get::<u32>(&key).await, None);
    assert!(cache.set(&key, &2u32).await.is_err());
    assert!(cache.delete(&key).await.is_err());

    let m = Exported::read(&snapshotter);
    assert_eq!(m.get("hitbox_tier_reads_total{result=hit,tier=alone}"), 1);
    assert_eq!(m.get("hitbox_tier_reads_total{result=error,tier=alone}"), 1);
    assert_eq!(m.get("hitbox_tier_writes_total{result=ok,tier=alone}"), 1);
    assert_eq!(m.get("hitbox_tier_writes_total{result=error,tier=alone}"), 1);
    // The read, the write and the removal.
    assert_eq!(m.get("hitbox_tier_errors_total{kind=client,tier=alone}"), 3);
    assert_eq!(cache.stats().errors_of("alone"), 3);
    assert_eq!(m.get("hitbox_cache_requests_total{cache=alone,outcome=miss}"), 1);
    // No breaker in front of a tier used alone: no gauge.
    assert!(m.names_with("breaker").is_empty(), "{m:#?}");
}

#[tokio::test]
async fn the_breaker_gauge_follows_open_half_open_and_closed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let clock = ManualClock::new();
    let config = BreakerConfig::default()
        .failure_threshold(1)
        .cool_down(Duration::from_secs(5));
    let (breaker, off) = metrics::with_local_recorder(&recorder, || {
        (
            CircuitBreaker::new(config, Arc::new(clock.clone())).labelled("guarded"),
            CircuitBreaker::new(BreakerConfig::disabled(), Arc::new(clock.clone())).labelled("unguarded"),
        )
    });
    let gauge = || Exported::read(&snapshotter).get("hitbox_tier_breaker_state{tier=guarded}");
    assert_eq!(gauge(), 0, "registered closed");

    breaker.try_acquire().expect("closed").failure();
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(gauge(), 2);
    clock.advance(Duration::from_secs(5));
    let probe = breaker.try_acquire().expect("the probe");
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(gauge(), 1);
    // A probe that ends without a verdict leaves it open.
    drop(probe);
    assert_eq!(gauge(), 2);
    breaker.try_acquire().expect("the next probe").success();
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(gauge(), 0);

    // A breaker that is turned off exports nothing.
    off.try_acquire().expect("never refused").failure();
    assert!(Exported::read(&snapshotter).names_with("unguarded").is_empty());
}

#[tokio::test]
async fn without_a_recorder_the_stats_still_count() {
    // Built with no recorder installed: the handles are no-ops, and the
    // stats are what they always were.
    let cache = Cache::new(MemoryBackend::new());
    cache.set(&key("quiet"), &1u32).await.unwrap();
    assert_eq!(cache.get::<u32>(&key("quiet")).await, Some(1));
    cache.record_outcome(Outcome::Bypass);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.bypassed, stats.stores), (1, 1, 1));
}

#[tokio::test]
async fn purges_are_counted_once_in_the_stats_and_exported_alike() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let clock = ManualClock::new();
    let l1 = MemoryBackend::with_clock(clock.clone()).labelled("p-l1");
    let l2 = MemoryBackend::with_clock(clock.clone()).labelled("p-l2");
    let cache = metrics::with_local_recorder(&recorder, || {
        let tiers = CompositionBackend::builder(l1.clone(), l2.clone())
            .clock(clock.clone())
            .build();
        Cache::builder(tiers)
            .name("purging")
            .clock(clock.clone())
            .policy(CachePolicy::new(Duration::from_secs(60)).stale_while_revalidate(Duration::from_secs(30)))
            .build()
    });
    let users = CacheKey::builder("users").part("tenant", "acme");
    let user = |id: &str| users.clone().part("id", id).build();
    let tagged = EntryOptions::new().tag("team");
    for id in ["1", "2", "3"] {
        cache.set(&user(id), &id.to_string()).await.unwrap();
    }
    cache.set_with(&key("tagged"), &0u32, &tagged).await.unwrap();

    // Soft by key: one entry marked stale.
    assert_eq!(cache.purge_key(&user("1"), PurgeMode::Soft).await.unwrap(), 1);
    // Hard by prefix: the three users (one stale already) removed. A
    // prefix purge counted nowhere before.
    assert_eq!(
        cache
            .purge_prefix(&users.key_prefix(), PurgeMode::Hard)
            .await
            .unwrap(),
        3
    );
    // A hard prefix purge that matches nothing: a purge, no entry.
    assert_eq!(cache.purge_prefix("nobody:", PurgeMode::Hard).await.unwrap(), 0);
    // Soft by tag (through the tiers' listings), then hard by tag.
    assert_eq!(
        cache
            .purge_tag(&Tag::from("team"), PurgeMode::Soft)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        cache
            .purge_tag(&Tag::from("team"), PurgeMode::Hard)
            .await
            .unwrap(),
        1
    );
    // Refused by the engine: an error, and no tier error.
    assert!(matches!(
        cache.purge_prefix("", PurgeMode::Hard).await,
        Err(BackendError::Refused { .. })
    ));
    // A failing tier: the purge fails, and the tier's error is counted.
    l1.set_failing(true);
    assert!(cache.purge_key(&user("1"), PurgeMode::Hard).await.is_err());

    let stats = cache.stats();
    let m = Exported::read(&snapshotter);

    // What happened, as the stats count it.
    assert_eq!(
        (stats.purges, stats.purge_errors, stats.soft_purges),
        (7, 2, 2),
        "{stats:?}"
    );
    assert_eq!(
        (stats.key_purges, stats.prefix_purges, stats.tag_purges),
        (2, 3, 2),
        "{stats:?}"
    );
    assert_eq!(
        (stats.purged_entries, stats.soft_purged_entries),
        (6, 2),
        "{stats:?}"
    );
    assert_eq!(stats.errors_of("p-l1"), 1, "{stats:?}");
    assert_eq!(
        (stats.invalidations, stats.tag_invalidations),
        (0, 0),
        "purges are not counted as invalidations"
    );

    // The same, as exported: each field is a sum of labelled series.
    let purges = |labels: &[&str]| m.sum("hitbox_purges_total", labels);
    let purged = |labels: &[&str]| m.sum("hitbox_purged_entries_total", labels);
    assert_eq!(purges(&["cache=purging"]), stats.purges);
    assert_eq!(purges(&["result=error"]), stats.purge_errors);
    assert_eq!(purges(&["mode=soft"]), stats.soft_purges);
    assert_eq!(purges(&["kind=key"]), stats.key_purges);
    assert_eq!(purges(&["kind=prefix"]), stats.prefix_purges);
    assert_eq!(purges(&["kind=tag"]), stats.tag_purges);
    assert_eq!(purged(&["cache=purging"]), stats.purged_entries);
    assert_eq!(purged(&["mode=soft"]), stats.soft_purged_entries);
    // Down to single series, with every label.
    for (kind, mode, result, expected) in [
        ("key", "soft", "ok", 1),
        ("key", "hard", "error", 1),
        ("key", "hard", "ok", 0),
        ("prefix", "hard", "ok", 2),
        ("prefix", "hard", "error", 1),
        ("prefix", "soft", "ok", 0),
        ("tag", "soft", "ok", 1),
        ("tag", "hard", "ok", 1),
        ("tag", "soft", "error", 0),
    ] {
        assert_eq!(
            m.get(&format!(
                "hitbox_purges_total{{cache=purging,kind={kind},mode={mode},result={result}}}"
            )),
            expected,
            "{kind} {mode} {result}"
        );
    }
    assert_eq!(
        m.get("hitbox_purged_entries_total{cache=purging,kind=prefix,mode=hard}"),
        3
    );
    assert_eq!(
        m.get("hitbox_purged_entries_total{cache=purging,kind=key,mode=soft}"),
        1
    );
    // Every kind, mode and result is registered up front: 12 + 6 series.
    assert_eq!(m.names_with("hitbox_purges_total").len(), 12);
    assert_eq!(m.names_with("hitbox_purged_entries_total").len(), 6);
    // The failing tier's purge, as its tier metrics count it.
    assert_eq!(m.get("hitbox_tier_errors_total{kind=client,tier=p-l1}"), 1);
    assert_eq!(m.get("hitbox_tier_errors_total{kind=client,tier=p-l2}"), 0);
}

#[test]
fn the_purge_metrics_are_described() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        hitbox_backend::observe::describe_metrics();
        let _cache = Cache::builder(MemoryBackend::new()).name("described").build();
    });
    let described: HashMap<String, (Option<metrics::Unit>, Option<String>)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, unit, description, _)| {
            (
                key.key().name().to_owned(),
                (unit, description.map(|text| text.to_string())),
            )
        })
        .collect();
    for name in ["hitbox_purges_total", "hitbox_purged_entries_total"] {
        let (unit, help) = described
            .get(name)
            .unwrap_or_else(|| panic!("{name} not registered"));
        assert_eq!(*unit, Some(metrics::Unit::Count), "{name}");
        assert!(
            help.as_deref().is_some_and(|help| help.contains("kind")),
            "{name}: {help:?}"
        );
    }
}
