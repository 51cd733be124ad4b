//! Compositions of tiers: every read, write and refill policy, nesting,
//! failures, tier health, the engine on top, and stages per tier.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hitbox_backend::composition::{
    Compose, CompositionBackend, ReadPolicy, RefillPolicy, RefillSampler, Tier, WritePolicy,
};
use hitbox_backend::envelope::{RawEntry, encode_entry};
use hitbox_backend::{
    Backend, BackendError, BackendFuture, Cache, Compression, Format, MemoryBackend, Staged, Stages,
};
use hitbox_core::{CacheKey, CachePolicy, Clock, EntryMeta, EntryOptions, ManualClock, Tag, Timestamp};
use tokio::sync::{Notify, Semaphore};

const HOUR: Duration = Duration::from_secs(3_600);

fn key(name: &str) -> CacheKey {
    CacheKey::builder("composition").part("k", name).build()
}

/// An envelope for `key(name)` holding `value`, stored at `at` and fresh
/// for `fresh`.
fn envelope_at_for(name: &str, at: Timestamp, fresh: Duration, value: &str) -> Bytes {
    let mut meta = EntryMeta::fresh_for(at, fresh);
    meta.tags.push(Tag::from("t"));
    encode_entry(&value.to_string(), &meta, Format::Postcard, &key(name)).unwrap()
}

fn envelope_for(name: &str, clock: &ManualClock, fresh: Duration, value: &str) -> Bytes {
    envelope_at_for(name, clock.now(), fresh, value)
}

/// An envelope for `key("a")`.
fn envelope(clock: &ManualClock, fresh: Duration, value: &str) -> Bytes {
    envelope_for("a", clock, fresh, value)
}

/// The value of an envelope written for `key("a")`.
fn value_of(bytes: &Bytes) -> String {
    value_under("a", bytes)
}

fn value_under(name: &str, bytes: &Bytes) -> String {
    RawEntry::decode(bytes.clone(), &key(name))
        .unwrap()
        .value::<String>(Format::Postcard)
        .unwrap()
}

fn mem(label: &str, clock: &ManualClock) -> MemoryBackend {
    MemoryBackend::with_clock(clock.clone()).labelled(label)
}

/// A tier that records the TTLs it is asked to write with, signals each
/// finished write, and can hold reads or writes until a permit is given.
struct Recording {
    inner: MemoryBackend,
    ttls: Mutex<Vec<Duration>>,
    written: Notify,
    read_gate: Option<Arc<Semaphore>>,
    write_gate: Option<Arc<Semaphore>>,
}

impl Recording {
    fn new(inner: MemoryBackend) -> Arc<Self> {
        Self::gated(inner, None, None)
    }

    fn gated(
        inner: MemoryBackend,
        read_gate: Option<Arc<Semaphore>>,
        write_gate: Option<Arc<Semaphore>>,
    ) -> Arc<Self> {
        Arc::new(Recording {
            inner,
            ttls: Mutex::new(Vec::new()),
            written: Notify::new(),
            read_gate,
            write_gate,
        })
    }

    fn ttls(&self) -> Vec<Duration> {
        self.ttls.lock().unwrap().clone()
    }
}

async fn pass(gate: &Option<Arc<Semaphore>>) {
    if let Some(gate) = gate {
        gate.acquire().await.unwrap().forget();
    }
}

impl Backend for Recording {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            pass(&self.read_gate).await;
            self.inner.read(key).await
        })
    }

    fn write<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            pass(&self.write_gate).await;
            self.ttls.lock().unwrap().push(ttl);
            let result = self.inner.write(key, value, ttl, tags).await;
            self.written.notify_one();
            result
        })
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        self.inner.remove(key)
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        self.inner.invalidate_tag(tag)
    }

    fn label(&self) -> &str {
        self.inner.label()
    }

    fn tier_stats(&self) -> Vec<hitbox_backend::TierStats> {
        self.inner.tier_stats()
    }
}

const READ_POLICIES: [ReadPolicy; 3] = [ReadPolicy::Sequential, ReadPolicy::Race, ReadPolicy::Parallel];

fn pair(clock: &ManualClock, read: ReadPolicy) -> (MemoryBackend, MemoryBackend, CompositionBackend) {
    let (l1, l2) = (mem("l1", clock), mem("l2", clock));
    let composition = CompositionBackend::builder(l1.clone(), l2.clone())
        .read_policy(read)
        .failure_threshold(0)
        .clock(clock.clone())
        .build();
    (l1, l2, composition)
}

// ---------------------------------------------------------------- reads

#[tokio::test]
async fn sequential_read_stops_at_an_l1_hit_and_falls_through_on_a_miss() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = pair(&clock, ReadPolicy::Sequential);
    l1.write(&key("a"), envelope(&clock, HOUR, "near"), HOUR, &[])
        .await
        .unwrap();
    l2.write(&key("a"), envelope(&clock, HOUR, "far"), HOUR, &[])
        .await
        .unwrap();
    l2.write(&key("b"), envelope_for("b", &clock, HOUR, "only far"), HOUR, &[])
        .await
        .unwrap();

    let found = tiers.read(&key("a")).await.unwrap().unwrap();
    assert_eq!(value_of(&found), "near");
    assert_eq!(l2.reads(), 0, "an L1 hit does not ask L2");

    let found = tiers.read(&key("b")).await.unwrap().unwrap();
    assert_eq!(value_under("b", &found), "only far");
    assert_eq!((l1.reads(), l2.reads()), (2, 1));

    assert_eq!(tiers.read(&key("none")).await.unwrap(), None);
    let [c1, c2] = tiers.tier_counters();
    assert_eq!((c1.hits, c1.misses, c2.hits, c2.misses), (1, 2, 1, 1));
}

#[tokio::test]
async fn race_read_takes_the_first_hit_without_waiting_for_the_other_tier() {
    let clock = ManualClock::new();
    // L1 never answers: L2's hit wins, and L1 (whose answer is unknown) is
    // not refilled.
    let stuck = Arc::new(Semaphore::new(0));
    let l1 = Recording::gated(mem("l1", &clock), Some(Arc::clone(&stuck)), None);
    let l2 = mem("l2", &clock);
    l1.inner
        .write(&key("a"), envelope(&clock, HOUR, "near"), HOUR, &[])
        .await
        .unwrap();
    l2.write(&key("a"), envelope(&clock, HOUR, "far"), HOUR, &[])
        .await
        .unwrap();
    let tiers = CompositionBackend::builder(Arc::clone(&l1), l2.clone())
        .read_policy(ReadPolicy::Race)
        .clock(clock.clone())
        .build();
    let found = tiers.read(&key("a")).await.unwrap().unwrap();
    assert_eq!(value_of(&found), "far");
    assert!(l1.ttls().is_empty(), "no refill while L1's answer is unknown");

    // L2 never answers: L1's hit wins.
    let l1 = mem("l1", &clock);
    let l2 = Recording::gated(mem("l2", &clock), Some(Arc::clone(&stuck)), None);
    l1.write(&key("a"), envelope(&clock, HOUR, "near"), HOUR, &[])
        .await
        .unwrap();
    let tiers = CompositionBackend::builder(l1, Arc::clone(&l2))
        .read_policy(ReadPolicy::Race)
        .clock(clock.clone())
        .build();
    assert_eq!(value_of(&tiers.read(&key("a")).await.unwrap().unwrap()), "near");
}

#[tokio::test]
async fn race_read_waits_for_the_other_tier_after_a_miss_and_refills() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = pair(&clock, ReadPolicy::Race);
    l2.write(&key("a"), envelope(&clock, HOUR, "far"), HOUR, &[])
        .await
        .unwrap();
    let found = tiers.read(&key("a")).await.unwrap().unwrap();
    assert_eq!(value_of(&found), "far");
    assert_eq!(l1.raw(&key("a")), Some(found), "L1 answered a miss: refilled");
    assert_eq!(tiers.read(&key("none")).await.unwrap(), None);
}

#[tokio::test]
async fn parallel_read_prefers_the_entry_fresh_for_longer() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = pair(&clock, ReadPolicy::Parallel);
    let older = envelope(&clock, Duration::from_secs(10), "older");
    let newer = envelope(&clock, Duration::from_secs(60), "newer");

    // L2's is fresher: served and copied over L1's.
    l1.write(&key("a"), older.clone(), HOUR, &[]).await.unwrap();
    l2.write(&key("a"), newer.clone(), HOUR, &[]).await.unwrap();
    assert_eq!(tiers.read(&key("a")).await.unwrap(), Some(newer.clone()));
    assert_eq!((l1.reads(), l2.reads()), (1, 1), "both tiers asked");
    assert_eq!(
        l1.raw(&key("a")),
        Some(newer.clone()),
        "L1 refilled with the fresher entry"
    );

    // L1's is fresher: served, nothing written.
    let older_b = envelope_for("b", &clock, Duration::from_secs(10), "older");
    let newer_b = envelope_for("b", &clock, Duration::from_secs(60), "newer");
    l1.write(&key("b"), newer_b.clone(), HOUR, &[]).await.unwrap();
    l2.write(&key("b"), older_b, HOUR, &[]).await.unwrap();
    let writes = l1.writes();
    assert_eq!(tiers.read(&key("b")).await.unwrap(), Some(newer_b));
    assert_eq!(l1.writes(), writes);

    // An undecodable entry loses to a decodable one.
    let older_c = envelope_for("c", &clock, Duration::from_secs(10), "older");
    l1.put_raw(&key("c"), &b"garbage"[..]);
    l2.write(&key("c"), older_c.clone(), HOUR, &[]).await.unwrap();
    assert_eq!(tiers.read(&key("c")).await.unwrap(), Some(older_c));

    // So does one written under another key (copied or swapped in the
    // tier), however fresh it claims to be.
    let far_d = envelope_for("d", &clock, Duration::from_secs(10), "d's own");
    l1.write(&key("d"), far_d.clone(), HOUR, &[]).await.unwrap();
    l2.write(&key("d"), newer.clone(), HOUR, &[]).await.unwrap();
    assert_eq!(tiers.read(&key("d")).await.unwrap(), Some(far_d));
}

#[tokio::test]
async fn a_failing_tier_never_fails_a_read_the_other_can_serve() {
    for policy in READ_POLICIES {
        let clock = ManualClock::new();
        let (l1, l2, tiers) = pair(&clock, policy);
        let bytes = envelope(&clock, HOUR, "v");
        l1.write(&key("a"), bytes.clone(), HOUR, &[]).await.unwrap();
        l2.write(&key("a"), bytes.clone(), HOUR, &[]).await.unwrap();

        l1.set_failing(true);
        assert_eq!(
            tiers.read(&key("a")).await.unwrap(),
            Some(bytes.clone()),
            "{policy:?} L1 down"
        );
        assert_eq!(
            tiers.read(&key("none")).await.unwrap(),
            None,
            "{policy:?} L1 down, L2 miss"
        );
        l1.set_failing(false);

        l2.set_failing(true);
        assert_eq!(
            tiers.read(&key("a")).await.unwrap(),
            Some(bytes.clone()),
            "{policy:?} L2 down"
        );
        assert_eq!(
            tiers.read(&key("none")).await.unwrap(),
            None,
            "{policy:?} L2 down, L1 miss"
        );

        l1.set_failing(true);
        let error = tiers.read(&key("a")).await.unwrap_err();
        assert_eq!(error.tier(), "l2", "{policy:?}: both down is L2's error");
        let [c1, c2] = tiers.tier_counters();
        assert!(c1.errors >= 3 && c2.errors >= 2, "{policy:?} {c1:?} {c2:?}");
    }
}

#[tokio::test]
async fn exists_asks_l2_when_l1_has_nothing_or_fails() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = pair(&clock, ReadPolicy::Sequential);
    l2.write(&key("a"), envelope(&clock, HOUR, "v"), HOUR, &[])
        .await
        .unwrap();
    assert!(tiers.exists(&key("a")).await.unwrap());
    assert!(!tiers.exists(&key("none")).await.unwrap());
    l1.set_failing(true);
    assert!(tiers.exists(&key("a")).await.unwrap());
    l2.set_failing(true);
    assert!(tiers.exists(&key("a")).await.is_err());
}

// --------------------------------------------------------------- writes

fn writer(clock: &ManualClock, policy: WritePolicy) -> (MemoryBackend, MemoryBackend, CompositionBackend) {
    let (l1, l2) = (mem("l1", clock), mem("l2", clock));
    let composition = CompositionBackend::builder(l1.clone(), l2.clone())
        .write_policy(policy)
        .failure_threshold(0)
        .clock(clock.clone())
        .build();
    (l1, l2, composition)
}

#[tokio::test]
async fn sequential_write_reaches_both_tiers_and_fails_if_either_fails() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = writer(&clock, WritePolicy::Sequential);
    let bytes = envelope(&clock, HOUR, "v");
    tiers.write(&key("a"), bytes.clone(), HOUR, &[]).await.unwrap();
    assert_eq!(l1.raw(&key("a")), Some(bytes.clone()));
    assert_eq!(l2.raw(&key("a")), Some(bytes.clone()));

    l2.set_failing(true);
    let error = tiers
        .write(&key("b"), bytes.clone(), HOUR, &[])
        .await
        .unwrap_err();
    assert_eq!(error.tier(), "l2");
    assert!(l1.raw(&key("b")).is_some());
    l2.set_failing(false);

    l1.set_failing(true);
    let error = tiers
        .write(&key("c"), bytes.clone(), HOUR, &[])
        .await
        .unwrap_err();
    assert_eq!(error.tier(), "l1");
    assert!(
        l2.raw(&key("c")).is_some(),
        "a broken L1 does not keep L2 from being written"
    );
}

#[tokio::test]
async fn optimistic_parallel_write_succeeds_if_any_tier_does() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = writer(&clock, WritePolicy::OptimisticParallel);
    let bytes = envelope(&clock, HOUR, "v");
    tiers.write(&key("a"), bytes.clone(), HOUR, &[]).await.unwrap();
    assert!(l1.raw(&key("a")).is_some() && l2.raw(&key("a")).is_some());

    l1.set_failing(true);
    tiers.write(&key("b"), bytes.clone(), HOUR, &[]).await.unwrap();
    assert!(l2.raw(&key("b")).is_some());
    l1.set_failing(false);

    l2.set_failing(true);
    tiers.write(&key("c"), bytes.clone(), HOUR, &[]).await.unwrap();
    assert!(l1.raw(&key("c")).is_some());

    l1.set_failing(true);
    let error = tiers.write(&key("d"), bytes, HOUR, &[]).await.unwrap_err();
    assert_eq!(error.tier(), "l1");
}

#[tokio::test]
async fn write_behind_returns_after_l1_and_writes_l2_in_the_background() {
    let clock = ManualClock::new();
    let gate = Arc::new(Semaphore::new(0));
    let l1 = mem("l1", &clock);
    let l2 = Recording::gated(mem("l2", &clock), None, Some(Arc::clone(&gate)));
    let tiers = CompositionBackend::builder(l1.clone(), Arc::clone(&l2))
        .write_policy(WritePolicy::WriteBehind)
        .clock(clock.clone())
        .build();
    let bytes = envelope(&clock, HOUR, "v");

    // L2 is held: the write still returns, with L1 written.
    tiers.write(&key("a"), bytes.clone(), HOUR, &[]).await.unwrap();
    assert_eq!(l1.raw(&key("a")), Some(bytes.clone()));
    assert_eq!(l2.inner.raw(&key("a")), None);

    // Released: the background write lands.
    let landed = l2.written.notified();
    gate.add_permits(1);
    landed.await;
    assert_eq!(l2.inner.raw(&key("a")), Some(bytes.clone()));

    // `flush` waits for the writes in flight.
    tiers.write(&key("b"), bytes.clone(), HOUR, &[]).await.unwrap();
    assert_eq!(l2.inner.raw(&key("b")), None);
    gate.add_permits(1);
    tiers.flush().await;
    assert_eq!(l2.inner.raw(&key("b")), Some(bytes));
}

#[tokio::test]
async fn write_behind_keeps_the_latest_write_of_a_key() {
    let clock = ManualClock::new();
    let gate = Arc::new(Semaphore::new(0));
    let l1 = mem("l1", &clock);
    let l2 = Recording::gated(mem("l2", &clock), None, Some(Arc::clone(&gate)));
    let tiers = CompositionBackend::builder(l1.clone(), Arc::clone(&l2))
        .write_policy(WritePolicy::WriteBehind)
        .clock(clock.clone())
        .build();
    let (first, second) = (envelope(&clock, HOUR, "first"), envelope(&clock, HOUR, "second"));
    tiers.write(&key("a"), first, HOUR, &[]).await.unwrap();
    tiers.write(&key("a"), second.clone(), HOUR, &[]).await.unwrap();
    gate.add_permits(2);
    tiers.flush().await;
    assert_eq!(l2.inner.raw(&key("a")), Some(second.clone()));
    assert_eq!(l2.ttls().len(), 1, "the superseded write was skipped");

    // A write that falls back to L2 (L1 down) waits its turn too.
    tiers
        .write(&key("b"), envelope_for("b", &clock, HOUR, "older"), HOUR, &[])
        .await
        .unwrap();
    l1.set_failing(true);
    let gate_opener = {
        let gate = Arc::clone(&gate);
        tokio::spawn(async move { gate.add_permits(2) })
    };
    tiers.write(&key("b"), second.clone(), HOUR, &[]).await.unwrap();
    gate_opener.await.unwrap();
    tiers.flush().await;
    assert_eq!(l2.inner.raw(&key("b")), Some(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_every_write_behind_write_under_concurrency() {
    let clock = ManualClock::new();
    let (l1, l2) = (mem("l1", &clock), mem("l2", &clock));
    let tiers = Arc::new(
        CompositionBackend::builder(l1.clone(), l2.clone())
            .write_policy(WritePolicy::WriteBehind)
            .clock(clock.clone())
            .build(),
    );
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let tiers = Arc::clone(&tiers);
            let bytes = envelope(&clock, HOUR, "v");
            tokio::spawn(async move {
                for i in 0..50 {
                    let key = key(&format!("{writer}-{i}"));
                    tiers.write(&key, bytes.clone(), HOUR, &[]).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    tiers.flush().await;
    assert_eq!(l1.len(), 400);
    assert_eq!(
        l2.len(),
        400,
        "every background write landed before flush returned"
    );
    assert_eq!(l2.writes(), 400);
}

#[tokio::test]
async fn write_behind_writes_l2_before_returning_when_l1_fails() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = writer(&clock, WritePolicy::WriteBehind);
    let bytes = envelope(&clock, HOUR, "v");
    l1.set_failing(true);
    tiers.write(&key("a"), bytes.clone(), HOUR, &[]).await.unwrap();
    assert_eq!(l2.raw(&key("a")), Some(bytes.clone()), "written without a flush");
    l2.set_failing(true);
    assert!(tiers.write(&key("b"), bytes, HOUR, &[]).await.is_err());
}

#[tokio::test]
async fn an_invalidation_waits_for_write_behind_writes_in_flight() {
    let clock = ManualClock::new();
    let gate = Arc::new(Semaphore::new(0));
    let l1 = mem("l1", &clock);
    let l2 = Recording::gated(mem("l2", &clock), None, Some(Arc::clone(&gate)));
    let tiers = Arc::new(
        CompositionBackend::builder(l1.clone(), Arc::clone(&l2))
            .write_policy(WritePolicy::WriteBehind)
            .clock(clock.clone())
            .build(),
    );
    tiers
        .write(&key("a"), envelope(&clock, HOUR, "v"), HOUR, &[])
        .await
        .unwrap();

    let remover = Arc::clone(&tiers);
    let removal = tokio::spawn(async move { remover.remove(&key("a")).await });
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert!(
        !removal.is_finished(),
        "the removal waits for the pending L2 write"
    );
    gate.add_permits(1);
    assert!(removal.await.unwrap().unwrap());
    assert_eq!(l1.raw(&key("a")), None);
    assert_eq!(
        l2.inner.raw(&key("a")),
        None,
        "the older write did not overtake the removal"
    );
}

#[tokio::test]
async fn each_tier_scales_the_ttl_it_is_given() {
    let clock = ManualClock::new();
    let l1 = Recording::new(mem("l1", &clock));
    let l2 = Recording::new(mem("l2", &clock));
    let tiers = CompositionBackend::builder(Arc::clone(&l1), Arc::clone(&l2))
        .l1_ttl_scale(0.5)
        .l2_ttl_scale(3.0)
        .clock(clock.clone())
        .build();
    tiers
        .write(
            &key("a"),
            envelope(&clock, HOUR, "v"),
            Duration::from_secs(10),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(l1.ttls(), [Duration::from_secs(5)]);
    assert_eq!(l2.ttls(), [Duration::from_secs(30)]);
}

#[test]
#[should_panic(expected = "TTL scale")]
fn a_nonsensical_ttl_scale_is_refused() {
    let _ = CompositionBackend::builder(MemoryBackend::new(), MemoryBackend::new()).l2_ttl_scale(-1.0);
}

// -------------------------------------------------------------- refills

fn refiller(
    clock: &ManualClock,
    policy: RefillPolicy,
) -> (Arc<Recording>, MemoryBackend, CompositionBackend) {
    let l1 = Recording::new(mem("l1", clock));
    let l2 = mem("l2", clock);
    let composition = CompositionBackend::builder(Arc::clone(&l1), l2.clone())
        .refill_policy(policy)
        .clock(clock.clone())
        .build();
    (l1, l2, composition)
}

#[tokio::test]
async fn refill_always_and_never() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = refiller(&clock, RefillPolicy::Always);
    let bytes = envelope(&clock, HOUR, "v");
    l2.write(&key("a"), bytes.clone(), HOUR, &[]).await.unwrap();
    tiers.read(&key("a")).await.unwrap();
    assert_eq!(l1.inner.raw(&key("a")), Some(bytes.clone()));
    assert_eq!(tiers.tier_counters()[0].refills, 1);
    // The next read is an L1 hit.
    tiers.read(&key("a")).await.unwrap();
    assert_eq!(l2.reads(), 1);

    let (l1, l2, tiers) = refiller(&clock, RefillPolicy::Never);
    l2.write(&key("a"), bytes.clone(), HOUR, &[]).await.unwrap();
    assert_eq!(tiers.read(&key("a")).await.unwrap(), Some(bytes));
    assert_eq!(l1.inner.raw(&key("a")), None);
    assert!(l1.ttls().is_empty());
}

#[tokio::test]
async fn refill_probabilistic_promotes_one_hit_in_n() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = refiller(&clock, RefillPolicy::Probabilistic { one_in: 3 });
    l2.write(&key("a"), envelope(&clock, HOUR, "v"), HOUR, &[])
        .await
        .unwrap();
    let mut promoted = Vec::new();
    for _ in 0..7 {
        tiers.read(&key("a")).await.unwrap().unwrap();
        promoted.push(l1.inner.remove(&key("a")).await.unwrap());
    }
    assert_eq!(promoted, [true, false, false, true, false, false, true]);
    assert_eq!(l2.reads(), 7);

    // An injected sampler decides.
    struct Refuse(Arc<AtomicU32>);
    impl RefillSampler for Refuse {
        fn promote(&self, one_in: u32) -> bool {
            assert_eq!(one_in, 4);
            self.0.fetch_add(1, Ordering::SeqCst);
            false
        }
    }
    let asked = Arc::new(AtomicU32::new(0));
    let l1 = mem("l1", &clock);
    let tiers = CompositionBackend::builder(l1.clone(), l2.clone())
        .refill_policy(RefillPolicy::Probabilistic { one_in: 4 })
        .refill_sampler(Refuse(Arc::clone(&asked)))
        .clock(clock.clone())
        .build();
    for _ in 0..3 {
        tiers.read(&key("a")).await.unwrap().unwrap();
    }
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert_eq!(l1.writes(), 0);

    // One in zero promotes nothing.
    let (l1, l2, tiers) = refiller(&clock, RefillPolicy::Probabilistic { one_in: 0 });
    l2.write(&key("a"), envelope(&clock, HOUR, "v"), HOUR, &[])
        .await
        .unwrap();
    tiers.read(&key("a")).await.unwrap().unwrap();
    assert!(l1.ttls().is_empty());
}

#[tokio::test]
async fn a_refilled_entry_lives_in_l1_no_longer_than_its_freshness_or_the_cap() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = refiller(&clock, RefillPolicy::Always);
    // Fresh for 10 s: kept 10 s (under the default 30 s cap).
    l2.write(
        &key("short"),
        envelope_for("short", &clock, Duration::from_secs(10), "v"),
        HOUR,
        &[],
    )
    .await
    .unwrap();
    // Fresh for 5 min: kept 30 s.
    l2.write(
        &key("long"),
        envelope_for("long", &clock, Duration::from_secs(300), "v"),
        HOUR,
        &[],
    )
    .await
    .unwrap();
    // Fresh for 10 s from 4 s ago: kept the 6 s left.
    let earlier = Timestamp::from_millis(clock.now().as_millis() - 4_000);
    l2.write(
        &key("aged"),
        envelope_at_for("aged", earlier, Duration::from_secs(10), "v"),
        HOUR,
        &[],
    )
    .await
    .unwrap();
    for name in ["short", "long", "aged"] {
        tiers.read(&key(name)).await.unwrap().unwrap();
    }
    assert_eq!(
        l1.ttls(),
        [
            Duration::from_secs(10),
            Duration::from_secs(30),
            Duration::from_secs(6)
        ]
    );

    // Stale (but still served by L2): not refilled.
    let mut meta = EntryMeta::fresh_for(earlier, Duration::from_secs(2));
    meta.stale_until = meta.fresh_until.add(HOUR);
    let stale = encode_entry(&"old".to_string(), &meta, Format::Postcard, &key("stale")).unwrap();
    l2.write(&key("stale"), stale.clone(), HOUR, &[]).await.unwrap();
    assert_eq!(tiers.read(&key("stale")).await.unwrap(), Some(stale));
    assert_eq!(l1.ttls().len(), 3);

    // Undecodable: served as it is, not refilled.
    l2.put_raw(&key("junk"), &b"junk"[..]);
    assert!(tiers.read(&key("junk")).await.unwrap().is_some());
    assert_eq!(l1.ttls().len(), 3);

    // A configured cap and an L1 scale below one.
    let l1 = Recording::new(mem("l1", &clock));
    let tiers = CompositionBackend::builder(Arc::clone(&l1), l2.clone())
        .refill_max_ttl(Duration::from_secs(5))
        .clock(clock.clone())
        .build();
    tiers.read(&key("long")).await.unwrap().unwrap();
    let l1_scaled = Recording::new(mem("l1", &clock));
    let tiers = CompositionBackend::builder(Arc::clone(&l1_scaled), l2.clone())
        .l1_ttl_scale(0.25)
        .clock(clock.clone())
        .build();
    tiers.read(&key("short")).await.unwrap().unwrap();
    assert_eq!(l1.ttls(), [Duration::from_secs(5)]);
    assert_eq!(l1_scaled.ttls(), [Duration::from_millis(2_500)]);
}

#[tokio::test]
async fn a_refilled_entry_keeps_its_tags() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = refiller(&clock, RefillPolicy::Always);
    l2.write(&key("a"), envelope(&clock, HOUR, "v"), HOUR, &[Tag::from("t")])
        .await
        .unwrap();
    tiers.read(&key("a")).await.unwrap().unwrap();
    assert!(l1.inner.raw(&key("a")).is_some());
    assert_eq!(l1.inner.invalidate_tag(&Tag::from("t")).await.unwrap(), 1);
}

// ---------------------------------------------------------- three tiers

#[tokio::test]
async fn three_tiers_nest_and_refill_all_the_way_up() {
    let (a, b, c) = (
        MemoryBackend::new().labelled("a"),
        MemoryBackend::new().labelled("b"),
        MemoryBackend::new().labelled("c"),
    );
    let tiers = a.clone().compose(b.clone()).compose(c.clone());
    assert_eq!(tiers.label(), "a+b+c");

    let now = Timestamp::from(SystemTime::now());
    let bytes = envelope_at_for("x", now, HOUR, "deep");
    c.write(&key("x"), bytes.clone(), HOUR, &[Tag::from("t")])
        .await
        .unwrap();
    assert_eq!(tiers.read(&key("x")).await.unwrap(), Some(bytes.clone()));
    assert_eq!(a.raw(&key("x")), Some(bytes.clone()), "refilled into a");
    assert_eq!(b.raw(&key("x")), Some(bytes.clone()), "refilled into b");

    // The next read stops at a.
    tiers.read(&key("x")).await.unwrap();
    assert_eq!((a.reads(), b.reads(), c.reads()), (2, 1, 1));

    // Writes reach all three, invalidations clear all three.
    tiers
        .write(&key("y"), bytes.clone(), HOUR, &[Tag::from("t")])
        .await
        .unwrap();
    assert!(a.raw(&key("y")).is_some() && b.raw(&key("y")).is_some() && c.raw(&key("y")).is_some());
    assert_eq!(tiers.invalidate_tag(&Tag::from("t")).await.unwrap(), 2);
    assert!(a.is_empty() && b.is_empty() && c.is_empty());

    let labels: Vec<String> = tiers.tier_stats().into_iter().map(|s| s.label).collect();
    assert_eq!(
        labels,
        ["a", "b", "a+b:l1", "a+b:l2", "c", "a+b+c:l1", "a+b+c:l2"]
    );
}

// --------------------------------------------------------------- health

#[tokio::test]
async fn a_tier_failing_in_a_row_is_skipped_for_a_cool_down_then_retried() {
    let clock = ManualClock::new();
    let (l1, l2) = (mem("l1", &clock), mem("l2", &clock));
    let tiers = CompositionBackend::builder(l1.clone(), l2.clone())
        .failure_threshold(2)
        .cool_down(Duration::from_secs(10))
        .clock(clock.clone())
        .build();
    l2.write(&key("a"), envelope(&clock, HOUR, "v"), HOUR, &[])
        .await
        .unwrap();

    l1.set_failing(true);
    for _ in 0..2 {
        assert!(tiers.read(&key("a")).await.unwrap().is_some());
    }
    assert_eq!(l1.reads(), 2);
    assert!(!tiers.is_available(Tier::L1));
    assert!(tiers.is_available(Tier::L2));

    // In cool-down: not asked, reads still served by L2.
    for _ in 0..3 {
        assert!(tiers.read(&key("a")).await.unwrap().is_some());
    }
    assert_eq!(l1.reads(), 2);
    assert_eq!(tiers.tier_counters()[0].skipped, 3);
    // Writes skip it too (and a sequential write reports it).
    let error = tiers
        .write(&key("b"), envelope_for("b", &clock, HOUR, "v"), HOUR, &[])
        .await
        .unwrap_err();
    assert!(matches!(error, BackendError::Unavailable { .. }), "{error:?}");
    assert_eq!(l1.writes(), 0);
    assert!(l2.raw(&key("b")).is_some());

    // Cool-down over, still broken: one try, then skipped again at once.
    clock.advance(Duration::from_secs(10));
    assert!(tiers.is_available(Tier::L1));
    assert!(tiers.read(&key("a")).await.unwrap().is_some());
    assert_eq!(l1.reads(), 3);
    assert!(!tiers.is_available(Tier::L1));
    tiers.read(&key("a")).await.unwrap();
    assert_eq!(l1.reads(), 3);

    // Cool-down over, repaired: asked again, refilled, and healthy.
    clock.advance(Duration::from_secs(10));
    l1.set_failing(false);
    assert!(tiers.read(&key("a")).await.unwrap().is_some());
    assert_eq!(l1.reads(), 4);
    assert!(l1.raw(&key("a")).is_some(), "refilled once it answered");
    assert!(tiers.is_available(Tier::L1));
    assert!(tiers.tier_counters()[0].healthy);
    tiers.read(&key("a")).await.unwrap();
    assert_eq!(l1.reads(), 5);
}

/// A tier that refuses every write (too large, say) but reads fine.
struct Refusing(MemoryBackend);

impl Backend for Refusing {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        self.0.read(key)
    }
    fn write<'a>(&'a self, _: &'a CacheKey, _: Bytes, _: Duration, _: &'a [Tag]) -> BackendFuture<'a, ()> {
        Box::pin(async {
            Err(BackendError::Refused {
                tier: "refusing".into(),
                reason: "too large",
            })
        })
    }
    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        self.0.remove(key)
    }
    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        self.0.invalidate_tag(tag)
    }
    fn label(&self) -> &str {
        "refusing"
    }
}

#[tokio::test]
async fn a_refused_value_does_not_count_against_a_tiers_health() {
    let clock = ManualClock::new();
    let l2 = mem("l2", &clock);
    let tiers = CompositionBackend::builder(Refusing(mem("l1", &clock)), l2.clone())
        .write_policy(WritePolicy::OptimisticParallel)
        .failure_threshold(1)
        .clock(clock.clone())
        .build();
    for _ in 0..3 {
        tiers
            .write(&key("a"), envelope(&clock, HOUR, "v"), HOUR, &[])
            .await
            .unwrap();
    }
    assert!(tiers.is_available(Tier::L1));
    assert_eq!(tiers.tier_counters()[0].errors, 3);
    assert_eq!(tiers.tier_counters()[0].skipped, 0);
}

/// A tier that answers every read with an error about the key (a Redis
/// `WRONGTYPE`, say): reachable, just not for this key.
struct WrongType(MemoryBackend);

impl Backend for WrongType {
    fn read<'a>(&'a self, _: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        Box::pin(async {
            Err(BackendError::key(
                "wrongtype",
                "WRONGTYPE Operation against a key",
            ))
        })
    }
    fn write<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        self.0.write(key, value, ttl, tags)
    }
    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        self.0.remove(key)
    }
    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        self.0.invalidate_tag(tag)
    }
    fn label(&self) -> &str {
        "wrongtype"
    }
}

#[tokio::test]
async fn a_per_key_error_does_not_open_a_tiers_breaker() {
    let clock = ManualClock::new();
    let l2 = mem("l2", &clock);
    let tiers = CompositionBackend::builder(WrongType(mem("l1", &clock)), l2.clone())
        .failure_threshold(1)
        .clock(clock.clone())
        .build();
    l2.write(&key("a"), envelope(&clock, HOUR, "v"), HOUR, &[])
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(tiers.read(&key("a")).await.unwrap().is_some(), "served by L2");
    }
    assert!(tiers.is_available(Tier::L1));
    let [l1, _] = tiers.tier_counters();
    assert_eq!((l1.errors, l1.skipped), (5, 0), "asked every time: {l1:?}");
    assert!(!BackendError::key("t", "MOVED 3999 127.0.0.1:6381").is_tier_failure());
    assert!(BackendError::client("t", "connection refused").is_tier_failure());
}

#[tokio::test]
async fn invalidations_reach_a_tier_in_cool_down() {
    let clock = ManualClock::new();
    let (l1, l2) = (mem("l1", &clock), mem("l2", &clock));
    let tiers = CompositionBackend::builder(l1.clone(), l2.clone())
        .failure_threshold(1)
        .clock(clock.clone())
        .build();
    l1.write(&key("a"), envelope(&clock, HOUR, "v"), HOUR, &[])
        .await
        .unwrap();
    l1.set_failing(true);
    tiers.read(&key("a")).await.unwrap();
    assert!(!tiers.is_available(Tier::L1));
    l1.set_failing(false);
    assert!(tiers.remove(&key("a")).await.unwrap());
    assert_eq!(l1.raw(&key("a")), None);
}

// ----------------------------------------------------------- stats

#[tokio::test]
async fn tier_stats_report_inner_tiers_and_the_compositions_counters() {
    let clock = ManualClock::new();
    let (l1, l2, tiers) = pair(&clock, ReadPolicy::Sequential);
    l2.write(&key("a"), envelope(&clock, HOUR, "v"), HOUR, &[])
        .await
        .unwrap();
    tiers.read(&key("a")).await.unwrap(); // L1 miss, L2 hit, refill
    tiers.read(&key("a")).await.unwrap(); // L1 hit
    l1.set_failing(true);
    tiers.read(&key("none")).await.unwrap(); // L1 error, L2 miss

    let stats = tiers.tier_stats();
    let labels: Vec<&str> = stats.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["l1", "l2", "l1+l2:l1", "l1+l2:l2"]);
    assert_eq!((stats[2].hits, stats[2].misses, stats[2].errors), (1, 1, 1));
    assert_eq!((stats[3].hits, stats[3].misses, stats[3].errors), (1, 1, 0));

    let [c1, c2] = tiers.tier_counters();
    assert_eq!(c1.calls, 4, "three reads and a refill");
    assert_eq!(c2.calls, 2);
    assert_eq!(c1.refills, 1);
    assert!(c1.max_latency_micros <= c1.total_latency_micros);
    assert!(c2.max_latency_micros <= c2.total_latency_micros);
}

// --------------------------------------------------------------- engine

#[tokio::test]
async fn the_engine_on_a_composition_refills_and_invalidates_both_tiers() {
    let clock = ManualClock::new();
    let l1 = Recording::new(mem("l1", &clock));
    let l2 = mem("l2", &clock);
    let tiers = CompositionBackend::builder(Arc::clone(&l1), l2.clone())
        .clock(clock.clone())
        .build();
    let cache = Cache::builder(tiers)
        .clock(clock.clone())
        .policy(CachePolicy::short_term())
        .build();

    let options = EntryOptions::new().tag("team");
    cache
        .set_with(&key("a"), &"ada".to_string(), &options)
        .await
        .unwrap();
    assert!(l1.inner.raw(&key("a")).is_some() && l2.raw(&key("a")).is_some());

    // Only L2 has it: a hit, copied into L1 for at most 30 s.
    l1.inner.remove(&key("a")).await.unwrap();
    clock.advance(Duration::from_secs(45));
    assert_eq!(cache.get::<String>(&key("a")).await.as_deref(), Some("ada"));
    assert!(l1.inner.raw(&key("a")).is_some());
    assert_eq!(
        l1.ttls().last(),
        Some(&Duration::from_secs(15)),
        "the 15 s of freshness left"
    );
    assert_eq!(cache.stats().hits, 1);

    cache.invalidate_tag(&Tag::from("team")).await.unwrap();
    assert_eq!(l1.inner.raw(&key("a")), None);
    assert_eq!(l2.raw(&key("a")), None);
    assert_eq!(cache.get::<String>(&key("a")).await, None);
}

// --------------------------------------------------------------- stages

#[tokio::test]
async fn each_tier_applies_its_own_stages() {
    let clock = ManualClock::new();
    let l1 = mem("plain", &clock);
    let l2_raw = mem("zstd", &clock);
    let l2 = Staged::new(
        l2_raw.clone(),
        Stages::new()
            .compression(Compression::zstd(3))
            .min_compress_size(0),
    );
    // The composition's clock decides what is fresh enough to refill.
    let tiers = CompositionBackend::builder(l1.clone(), l2)
        .clock(clock.clone())
        .build();
    let cache = Cache::builder(tiers).clock(clock.clone()).build();
    let big = "a cache entry that compresses well. ".repeat(50);
    cache.set(&key("a"), &big).await.unwrap();

    let near = l1.raw(&key("a")).unwrap();
    let far = l2_raw.raw(&key("a")).unwrap();
    assert_ne!(near, far, "L2 stores its own (compressed) form");
    assert!(far.len() < near.len());
    assert!(
        RawEntry::decode(near.clone(), &key("a")).is_ok(),
        "L1 holds the plain envelope"
    );
    assert!(RawEntry::decode(far, &key("a")).is_err());

    assert_eq!(
        cache.get::<String>(&key("a")).await.as_deref(),
        Some(big.as_str())
    );
    // From L2 alone: decompressed, and refilled into L1 as the plain envelope.
    l1.remove(&key("a")).await.unwrap();
    assert_eq!(
        cache.get::<String>(&key("a")).await.as_deref(),
        Some(big.as_str())
    );
    assert_eq!(l1.raw(&key("a")), Some(near));
}

#[tokio::test]
async fn an_in_process_l1_is_refilled_with_a_copy_not_a_slice_of_l2s_buffer() {
    let clock = ManualClock::new();
    let (l1, l2) = (mem("l1", &clock), mem("l2", &clock));
    let tiers = CompositionBackend::builder(l1.clone(), l2.clone())
        .refill_policy(RefillPolicy::Always)
        .clock(clock.clone())
        .build();
    // L2's entry is a slice of a much larger buffer, as a network client's
    // read buffer would be.
    let entry = envelope(&clock, HOUR, "v");
    let mut big = vec![0u8; 1 << 20];
    big[..entry.len()].copy_from_slice(&entry);
    let big = Bytes::from(big);
    l2.put_raw(&key("a"), big.slice(..entry.len()));

    assert_eq!(tiers.read(&key("a")).await.unwrap(), Some(entry.clone()));
    let kept = l1.raw(&key("a")).expect("refilled");
    assert_eq!(kept, entry);
    let (start, end) = (big.as_ptr() as usize, big.as_ptr() as usize + big.len());
    let at = kept.as_ptr() as usize;
    assert!(
        !(start..end).contains(&at),
        "L1 keeps the whole 1 MiB buffer alive"
    );
}

/// A tier that counts its batch reads and the keys they asked for.
struct Batches {
    inner: MemoryBackend,
    batches: Mutex<Vec<usize>>,
}

impl Backend for Batches {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        self.inner.read(key)
    }
    fn read_many<'a>(&'a self, keys: &'a [CacheKey]) -> BackendFuture<'a, Vec<Option<Bytes>>> {
        self.batches.lock().unwrap().push(keys.len());
        self.inner.read_many(keys)
    }
    fn write<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        self.inner.write(key, value, ttl, tags)
    }
    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        self.inner.remove(key)
    }
    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        self.inner.invalidate_tag(tag)
    }
    fn label(&self) -> &str {
        self.inner.label()
    }
}

#[tokio::test]
async fn a_batch_read_asks_l1_once_and_l2_once_for_what_l1_lacked() {
    let clock = ManualClock::new();
    let l1 = mem("l1", &clock);
    let l2 = Arc::new(Batches {
        inner: mem("l2", &clock),
        batches: Mutex::new(Vec::new()),
    });
    let tiers = CompositionBackend::builder(l1.clone(), Arc::clone(&l2))
        .refill_policy(RefillPolicy::Always)
        .clock(clock.clone())
        .build();
    l1.write(&key("a"), envelope_for("a", &clock, HOUR, "near"), HOUR, &[])
        .await
        .unwrap();
    l2.write(&key("b"), envelope_for("b", &clock, HOUR, "far"), HOUR, &[])
        .await
        .unwrap();
    let keys = [key("a"), key("b"), key("c")];
    let found = tiers.read_many(&keys).await.unwrap();
    assert_eq!(value_under("a", found[0].as_ref().unwrap()), "near");
    assert_eq!(value_under("b", found[1].as_ref().unwrap()), "far");
    assert_eq!(found[2], None);
    assert_eq!(*l2.batches.lock().unwrap(), [2], "one batch, for b and c only");
    assert!(l1.raw(&key("b")).is_some(), "b refilled into L1");

    // Behind stages, each entry is opened; one that does not open is a miss.
    let staged = Staged::new(
        MemoryBackend::new(),
        Stages::new().compression(Compression::Lz4).min_compress_size(0),
    );
    staged
        .write(&key("a"), envelope_for("a", &clock, HOUR, "s"), HOUR, &[])
        .await
        .unwrap();
    staged.inner().put_raw(&key("b"), &b"HS garbage"[..]);
    let found = staged.read_many(&keys[..2]).await.unwrap();
    assert_eq!(value_under("a", found[0].as_ref().unwrap()), "s");
    assert_eq!(found[1], None);
}
