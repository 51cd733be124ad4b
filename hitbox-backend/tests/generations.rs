//! Tag generations through the engine: a load records the generations of
//! its tags before its loader runs, and a tier that keeps them refuses the
//! store when another process (here: a call that bypasses this cache)
//! invalidated one of them meanwhile. The interleavings are driven with
//! channels, never with sleeps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hitbox_backend::{
    Backend, BackendError, BackendFuture, Cache, CompositionBackend, LoadTicket, MemoryBackend,
    TagGenerations, WritePolicy,
};
use hitbox_core::{CacheKey, CachePolicy, EntryOptions, Tag};
use tokio::sync::oneshot;

/// A memory tier that keeps a generation per tag, as a shared tier would,
/// and logs when generations are read.
#[derive(Clone)]
struct Tracking {
    entries: MemoryBackend,
    source: u64,
    generations: Arc<Mutex<HashMap<Tag, u64>>>,
    reads_of_generations: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    failing_generations: Arc<AtomicBool>,
}

impl Tracking {
    fn new() -> Self {
        Tracking {
            entries: MemoryBackend::new().labelled("shared"),
            source: TagGenerations::new_source(),
            generations: Arc::default(),
            reads_of_generations: Arc::default(),
            refused: Arc::default(),
            failing_generations: Arc::default(),
        }
    }

    /// What another process's invalidation of `tag` does to this tier.
    async fn invalidate_elsewhere(&self, tag: &str) {
        *self
            .generations
            .lock()
            .unwrap()
            .entry(Tag::from(tag))
            .or_insert(0) += 1;
        self.entries.invalidate_tag(&Tag::from(tag)).await.unwrap();
    }

    fn generation(&self, tag: &Tag) -> u64 {
        self.generations.lock().unwrap().get(tag).copied().unwrap_or(0)
    }
}

impl Backend for Tracking {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        self.entries.read(key)
    }

    fn write<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        self.entries.write(key, value, ttl, tags)
    }

    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        self.entries.remove(key)
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        *self.generations.lock().unwrap().entry(tag.clone()).or_insert(0) += 1;
        self.entries.invalidate_tag(tag)
    }

    fn label(&self) -> &str {
        "shared"
    }

    fn tag_generations<'a>(&'a self, tags: &'a [Tag]) -> BackendFuture<'a, Option<TagGenerations>> {
        Box::pin(async move {
            self.reads_of_generations.fetch_add(1, Ordering::SeqCst);
            if self.failing_generations.load(Ordering::SeqCst) {
                return Err(BackendError::Timeout {
                    tier: "shared".into(),
                    after: Duration::from_millis(50),
                });
            }
            let mut seen = TagGenerations::new();
            for tag in tags {
                seen.record(self.source, tag.clone(), self.generation(tag));
            }
            Ok(Some(seen))
        })
    }

    fn write_if_current<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
        expected: &'a TagGenerations,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            let current = tags
                .iter()
                .all(|tag| expected.get(self.source, tag) == Some(self.generation(tag)));
            if !current {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Ok(false);
            }
            self.entries.write(key, value, ttl, tags).await?;
            Ok(true)
        })
    }
}

fn key(id: &str) -> CacheKey {
    CacheKey::builder("generations").part("id", id).build()
}

fn cache_over(backend: impl Backend) -> Cache {
    Cache::builder(backend)
        .policy(CachePolicy::new(Duration::from_secs(60)))
        .build()
}

fn tagged(tags: &[&str]) -> EntryOptions {
    tags.iter()
        .fold(EntryOptions::new(), |options, tag| options.tag(*tag))
}

/// Loads `id` with `options`; the loader says it started, then waits for
/// the go-ahead. Returns the started signal, the go-ahead and the load.
fn gated_load(
    cache: &Cache,
    id: &'static str,
    options: EntryOptions,
    value: &'static str,
) -> (
    oneshot::Receiver<()>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<String>,
) {
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let cache = cache.clone();
    let load = tokio::spawn(async move {
        cache
            .try_get_or_insert_with_options(&key(id), &options, move || async move {
                let _ = started_tx.send(());
                let _ = go_rx.await;
                Ok::<_, std::io::Error>(value.to_string())
            })
            .await
            .expect("the loader succeeds")
    });
    (started_rx, go_tx, load)
}

#[tokio::test]
async fn a_load_whose_tag_moved_elsewhere_is_returned_but_not_stored() {
    let shared = Tracking::new();
    let cache = cache_over(shared.clone());
    let (started, go, load) = gated_load(&cache, "1", tagged(&["team:7"]), "old");
    started.await.unwrap();
    assert_eq!(
        shared.reads_of_generations.load(Ordering::SeqCst),
        1,
        "the generations were read before the loader ran"
    );
    shared.invalidate_elsewhere("team:7").await;
    go.send(()).unwrap();
    assert_eq!(load.await.unwrap(), "old", "the caller still gets its value");
    assert_eq!(shared.refused.load(Ordering::SeqCst), 1);
    assert_eq!(shared.entries.raw(&key("1")), None, "nothing was stored");
    let stats = cache.stats();
    assert_eq!(stats.stale_loads_discarded, 1, "{stats:?}");
    assert_eq!(stats.stores, 0, "{stats:?}");
    assert_eq!(stats.tier_errors, Vec::new(), "a refusal is no error");

    // The next call loads again, and that load is kept.
    let fresh = cache
        .try_get_or_insert_with_options(&key("1"), &tagged(&["team:7"]), || async {
            Ok::<_, std::io::Error>("new".to_string())
        })
        .await
        .unwrap();
    assert_eq!(fresh, "new");
    assert_eq!(cache.get::<String>(&key("1")).await.as_deref(), Some("new"));
}

#[tokio::test]
async fn without_an_invalidation_the_store_succeeds() {
    let shared = Tracking::new();
    let cache = cache_over(shared.clone());
    // Generations that moved before the load started are what it records.
    shared.invalidate_elsewhere("team:7").await;
    let (started, go, load) = gated_load(&cache, "1", tagged(&["team:7"]), "value");
    started.await.unwrap();
    go.send(()).unwrap();
    assert_eq!(load.await.unwrap(), "value");
    assert_eq!(shared.refused.load(Ordering::SeqCst), 0);
    assert_eq!(cache.get::<String>(&key("1")).await.as_deref(), Some("value"));
    assert_eq!(cache.stats().stale_loads_discarded, 0);
}

#[tokio::test]
async fn one_moved_tag_among_several_refuses_the_store() {
    let shared = Tracking::new();
    let cache = cache_over(shared.clone());
    let (started, go, load) = gated_load(&cache, "1", tagged(&["a", "b", "c"]), "value");
    started.await.unwrap();
    shared.invalidate_elsewhere("b").await;
    go.send(()).unwrap();
    assert_eq!(load.await.unwrap(), "value");
    assert_eq!(shared.entries.raw(&key("1")), None);
    assert_eq!(cache.stats().stale_loads_discarded, 1);
}

#[tokio::test]
async fn untagged_loads_read_no_generations() {
    let shared = Tracking::new();
    let cache = cache_over(shared.clone());
    let value = cache
        .get_or_insert_with(&key("1"), || async { "plain".to_string() })
        .await;
    assert_eq!(value, "plain");
    assert_eq!(shared.reads_of_generations.load(Ordering::SeqCst), 0);
    assert!(shared.entries.raw(&key("1")).is_some());
}

#[tokio::test]
async fn unreadable_generations_keep_the_result_out_of_the_cache() {
    let shared = Tracking::new();
    shared.failing_generations.store(true, Ordering::SeqCst);
    let cache = cache_over(shared.clone());
    let value = cache
        .try_get_or_insert_with_options(&key("1"), &tagged(&["t"]), || async {
            Ok::<_, std::io::Error>("v".to_string())
        })
        .await
        .unwrap();
    assert_eq!(value, "v", "the call does not fail");
    assert_eq!(shared.entries.raw(&key("1")), None, "not stored unchecked");
    assert_eq!(cache.stats().errors_of("shared"), 1);
}

#[tokio::test]
async fn a_led_load_records_its_generations_before_the_leader_loads() {
    let shared = Tracking::new();
    let cache = cache_over(shared.clone());
    let options = tagged(&["team:7"]);
    let LoadTicket::Lead(lead) = cache.lead_or_join::<String, std::io::Error>(&key("1"), &options) else {
        panic!("nobody else loads");
    };
    lead.ready().await;
    assert_eq!(shared.reads_of_generations.load(Ordering::SeqCst), 1);
    // The origin answers; meanwhile another process invalidates the tag.
    shared.invalidate_elsewhere("team:7").await;
    let value = lead.finish(Ok("old".to_string())).await.unwrap();
    assert_eq!(value, "old");
    assert_eq!(shared.entries.raw(&key("1")), None);
    assert_eq!(cache.stats().stale_loads_discarded, 1);
    assert_eq!(
        shared.reads_of_generations.load(Ordering::SeqCst),
        1,
        "read once, for the lead and the store"
    );

    // A lead that nobody raced stores.
    let LoadTicket::Lead(lead) = cache.lead_or_join::<String, std::io::Error>(&key("2"), &options) else {
        panic!("nobody else loads");
    };
    lead.ready().await;
    lead.finish(Ok("kept".to_string())).await.unwrap();
    assert_eq!(cache.get::<String>(&key("2")).await.as_deref(), Some("kept"));
}

#[tokio::test]
async fn a_lead_reads_its_generations_without_being_asked() {
    let shared = Tracking::new();
    let cache = cache_over(shared.clone());
    let LoadTicket::Lead(lead) = cache.lead_or_join::<String, std::io::Error>(&key("1"), &tagged(&["t"]))
    else {
        panic!("nobody else loads");
    };
    // Read by a task of its own, from the moment the lead was handed out.
    for _ in 0..10_000 {
        if shared.reads_of_generations.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(shared.reads_of_generations.load(Ordering::SeqCst), 1);
    shared.invalidate_elsewhere("t").await;
    lead.finish(Ok("old".to_string())).await.unwrap();
    assert_eq!(shared.entries.raw(&key("1")), None);
}

#[tokio::test]
async fn a_composition_keeps_out_of_l1_what_the_shared_tier_refused() {
    for policy in [
        WritePolicy::Sequential,
        WritePolicy::OptimisticParallel,
        WritePolicy::WriteBehind,
    ] {
        let near = MemoryBackend::new().labelled("near");
        let shared = Tracking::new();
        let tiers = CompositionBackend::builder(near.clone(), shared.clone())
            .write_policy(policy)
            .build();
        let cache = cache_over(tiers);
        let (started, go, load) = gated_load(&cache, "1", tagged(&["team:7"]), "old");
        started.await.unwrap();
        shared.invalidate_elsewhere("team:7").await;
        go.send(()).unwrap();
        assert_eq!(load.await.unwrap(), "old");
        assert_eq!(near.raw(&key("1")), None, "{policy:?}: L1 has nothing");
        assert_eq!(shared.entries.raw(&key("1")), None, "{policy:?}");
        assert_eq!(cache.stats().stale_loads_discarded, 1, "{policy:?}");

        // Not raced: both tiers get it.
        let (started, go, load) = gated_load(&cache, "2", tagged(&["team:7"]), "new");
        started.await.unwrap();
        go.send(()).unwrap();
        assert_eq!(load.await.unwrap(), "new");
        assert!(near.raw(&key("2")).is_some(), "{policy:?}");
        assert!(shared.entries.raw(&key("2")).is_some(), "{policy:?}");
    }
}

#[tokio::test]
async fn a_composition_skips_a_shared_tier_in_cool_down_and_still_fills_l1() {
    let near = MemoryBackend::new().labelled("near");
    let shared = Tracking::new();
    let tiers = CompositionBackend::builder(near.clone(), shared.clone())
        .failure_threshold(1)
        .cool_down(Duration::from_secs(3_600))
        .write_policy(WritePolicy::OptimisticParallel)
        .build();
    // One failure opens L2's breaker.
    shared.failing_generations.store(true, Ordering::SeqCst);
    assert!(tiers.tag_generations(&[Tag::from("t")]).await.is_err());
    shared.failing_generations.store(false, Ordering::SeqCst);
    let seen = tiers
        .tag_generations(&[Tag::from("t")])
        .await
        .expect("a tier in cool-down is left out")
        .expect("and recorded as such");
    assert!(seen.is_empty());
    let cache = cache_over(tiers);
    let value = cache
        .try_get_or_insert_with_options(&key("1"), &tagged(&["t"]), || async {
            Ok::<_, std::io::Error>("v".to_string())
        })
        .await
        .unwrap();
    assert_eq!(value, "v");
    assert!(near.raw(&key("1")).is_some(), "L1 serves while L2 is away");
    assert_eq!(shared.entries.raw(&key("1")), None);
}

#[tokio::test]
async fn tiers_without_generations_store_tagged_loads_as_before() {
    let memory = MemoryBackend::new();
    assert_eq!(memory.tag_generations(&[Tag::from("t")]).await.unwrap(), None);
    let cache = cache_over(memory.clone());
    let value = cache
        .try_get_or_insert_with_options(&key("1"), &tagged(&["t"]), || async {
            Ok::<_, std::io::Error>("v".to_string())
        })
        .await
        .unwrap();
    assert_eq!(value, "v");
    assert!(memory.raw(&key("1")).is_some());
    assert_eq!(cache.stats().stale_loads_discarded, 0);
}

/// What a caller that stores with its own metadata (the HTTP layer's
/// standards mode) writes through its lead: refused like the engine's own
/// store when a tag moved elsewhere or the key was invalidated here.
#[tokio::test]
async fn a_lead_stores_its_own_entry_only_if_nothing_was_invalidated() {
    let shared = Tracking::new();
    let cache = cache_over(shared.clone());
    // Zero lifetime: the flight stores nothing itself.
    let options = tagged(&["page"]).ttl(Duration::ZERO);
    let meta = |tag: &str| hitbox_core::EntryMeta {
        tags: vec![Tag::from(tag)],
        ..CachePolicy::new(Duration::from_secs(60)).entry_meta(cache.clock().now(), Vec::new())
    };

    // Another process invalidates the tag while the origin answers.
    let LoadTicket::Lead(lead) = cache.lead_or_join::<String, std::io::Error>(&key("1"), &options) else {
        panic!("nobody else loads");
    };
    lead.ready().await;
    shared.invalidate_elsewhere("page").await;
    let stored = lead
        .store_entry(&key("1"), &"old".to_string(), &meta("page"))
        .await;
    assert!(!stored.unwrap());
    assert_eq!(shared.entries.raw(&key("1")), None);
    lead.complete(Ok("old".to_string()));

    // This process invalidates the key meanwhile.
    let LoadTicket::Lead(lead) = cache.lead_or_join::<String, std::io::Error>(&key("2"), &options) else {
        panic!("nobody else loads");
    };
    lead.ready().await;
    cache.delete(&key("2")).await.unwrap();
    let stored = lead
        .store_entry(&key("2"), &"old".to_string(), &meta("page"))
        .await;
    assert!(!stored.unwrap());
    assert_eq!(shared.entries.raw(&key("2")), None);
    drop(lead);

    // Nobody raced: stored, under the key given (a variant, here).
    let LoadTicket::Lead(lead) = cache.lead_or_join::<String, std::io::Error>(&key("3"), &options) else {
        panic!("nobody else loads");
    };
    lead.ready().await;
    let stored = lead
        .store_entry(&key("3-variant"), &"kept".to_string(), &meta("page"))
        .await;
    assert!(stored.unwrap());
    assert_eq!(
        cache.get::<String>(&key("3-variant")).await.as_deref(),
        Some("kept")
    );
}

/// A value another process stored is handed to the waiters as it is: the
/// flight does not store it again (which would restart its lifetime).
#[tokio::test]
async fn a_handed_over_value_reaches_the_waiters_without_a_second_store() {
    let shared = Tracking::new();
    let cache = cache_over(shared.clone());
    let LoadTicket::Lead(lead) =
        cache.lead_or_join::<String, std::io::Error>(&key("1"), &EntryOptions::new())
    else {
        panic!("nobody else loads");
    };
    let LoadTicket::Join(join) =
        cache.lead_or_join::<String, std::io::Error>(&key("1"), &EntryOptions::new())
    else {
        panic!("the load is running");
    };
    let stores = cache.stats().stores;
    lead.hand_over("from elsewhere".to_string());
    assert_eq!(join.wait().await.unwrap(), "from elsewhere");
    assert_eq!(cache.stats().stores, stores);
    assert_eq!(shared.entries.raw(&key("1")), None, "not stored again");
}
