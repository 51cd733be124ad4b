//! The memcached tier against a real memcached, which `scripts/services.sh`
//! installs and starts (`HITBOX_TEST_MEMCACHED_URL`). The outage test
//! starts and kills a memcached of its own (`HITBOX_TEST_MEMCACHED_BIN`).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_memcached::{AsciiProtocol, Client, MetaProtocol};
use bytes::Bytes;
use hitbox_backend::{Backend, Cache, Compose};
use hitbox_core::{CacheKey, EntryOptions, ManualClock, Tag};
use hitbox_memcached::{BreakerState, MemcachedBackend};
use hitbox_moka::MokaBackend;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
}

fn profile(id: u64) -> Profile {
    Profile {
        id,
        name: format!("user {id}"),
    }
}

/// The value of `var`; fails, saying how to start the services, when it is
/// missing. These tests never skip.
fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run `source scripts/services.sh && start_services` first (scripts/test.sh does)")
    })
}

fn url() -> String {
    env("HITBOX_TEST_MEMCACHED_URL")
}

/// A prefix no other test (or run) uses.
fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t{nanos}-{}-{}:{test}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn backend(test: &str) -> MemcachedBackend {
    MemcachedBackend::builder()
        .server(url())
        .key_prefix(unique_prefix(test))
        .read_timeout(Duration::from_secs(2))
        .write_timeout(Duration::from_secs(2))
        .build()
        .expect("the backend builds")
}

async fn raw_client() -> Client {
    Client::new(url())
        .await
        .expect("a raw connection to the test memcached")
}

fn key(id: u64) -> CacheKey {
    CacheKey::builder("profiles").part("id", id.to_string()).build()
}

#[tokio::test]
async fn write_read_remove() {
    let tier = backend("basic");
    let k = key(1);
    assert_eq!(tier.read(&k).await.unwrap(), None);
    tier.write(&k, Bytes::from_static(b"one"), Duration::from_secs(60), &[])
        .await
        .unwrap();
    assert_eq!(tier.read(&k).await.unwrap().as_deref(), Some(&b"one"[..]));
    tier.write(&k, Bytes::from_static(b"two"), Duration::from_secs(60), &[])
        .await
        .unwrap();
    assert_eq!(tier.read(&k).await.unwrap().as_deref(), Some(&b"two"[..]));
    assert!(tier.exists(&k).await.unwrap());
    assert!(tier.remove(&k).await.unwrap());
    assert!(!tier.remove(&k).await.unwrap());
    assert_eq!(tier.read(&k).await.unwrap(), None);
    let stats = &tier.tier_stats()[0];
    assert!(stats.hits >= 2 && stats.misses >= 2, "{stats:?}");
}

#[tokio::test]
async fn each_entry_gets_its_own_expiry() {
    let tier = backend("expiry");
    tier.write(
        &key(1),
        Bytes::from_static(b"short"),
        Duration::from_millis(1_500),
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
    // Ask memcached itself how long each has left (`mg <key> t`).
    let short = ttl_remaining(&tier, &key(1)).await;
    assert!((1..=2).contains(&short), "1.5 s rounds up to 2: {short}");
    let long = ttl_remaining(&tier, &key(2)).await;
    assert!((3_590..=3_600).contains(&long), "{long}");
}

/// The seconds memcached says the entry under `key` has left.
async fn ttl_remaining(tier: &MemcachedBackend, key: &CacheKey) -> i64 {
    raw_client()
        .await
        .meta_get(tier.memcached_key(key).as_bytes(), false, None, Some(&["t"]))
        .await
        .expect("mg answers")
        .expect("the entry is there")
        .ttl_remaining
        .expect("t asked for the TTL")
}

#[tokio::test]
async fn many_keys_are_read_in_one_operation_in_order() {
    let tier = backend("many");
    for id in [1u64, 3, 4] {
        tier.write(
            &key(id),
            Bytes::from(format!("v{id}")),
            Duration::from_secs(60),
            &[],
        )
        .await
        .unwrap();
    }
    let keys: Vec<CacheKey> = (1..=5).map(key).collect();
    let before = tier.tier_stats()[0].timed_calls;
    let found = tier.read_many(&keys).await.unwrap();
    assert_eq!(
        tier.tier_stats()[0].timed_calls - before,
        1,
        "one guarded operation"
    );
    let found: Vec<Option<String>> = found
        .into_iter()
        .map(|v| v.map(|b| String::from_utf8(b.to_vec()).unwrap()))
        .collect();
    assert_eq!(
        found,
        vec![
            Some("v1".into()),
            None,
            Some("v3".into()),
            Some("v4".into()),
            None
        ]
    );
    assert!(tier.read_many(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn tags_invalidate_through_generations() {
    let tier = backend("tags");
    let ops = Tag::from("team:ops");
    let dev = Tag::from("team:dev");
    tier.write(
        &key(1),
        Bytes::from_static(b"a"),
        Duration::from_secs(60),
        std::slice::from_ref(&ops),
    )
    .await
    .unwrap();
    tier.write(
        &key(2),
        Bytes::from_static(b"b"),
        Duration::from_secs(60),
        &[ops.clone(), dev.clone()],
    )
    .await
    .unwrap();
    tier.write(
        &key(3),
        Bytes::from_static(b"c"),
        Duration::from_secs(60),
        std::slice::from_ref(&dev),
    )
    .await
    .unwrap();
    tier.write(&key(4), Bytes::from_static(b"d"), Duration::from_secs(60), &[])
        .await
        .unwrap();
    tier.invalidate_tag(&ops).await.unwrap();
    assert_eq!(tier.read(&key(1)).await.unwrap(), None);
    assert_eq!(tier.read(&key(2)).await.unwrap(), None);
    assert!(tier.read(&key(3)).await.unwrap().is_some());
    assert!(tier.read(&key(4)).await.unwrap().is_some());
    // Written after the invalidation: current again.
    tier.write(
        &key(1),
        Bytes::from_static(b"a2"),
        Duration::from_secs(60),
        std::slice::from_ref(&ops),
    )
    .await
    .unwrap();
    assert_eq!(tier.read(&key(1)).await.unwrap().as_deref(), Some(&b"a2"[..]));
    // A tag nobody used has no counter: invalidating it is fine.
    tier.invalidate_tag(&Tag::from("never-used")).await.unwrap();
}

#[tokio::test]
async fn an_evicted_tag_counter_makes_its_entries_miss() {
    let tier = backend("evicted");
    let tag = Tag::from("users");
    tier.write(
        &key(1),
        Bytes::from_static(b"a"),
        Duration::from_secs(60),
        std::slice::from_ref(&tag),
    )
    .await
    .unwrap();
    assert!(tier.read(&key(1)).await.unwrap().is_some());
    // What eviction does to the counter, done by hand.
    raw_client().await.delete(tier.tag_key(&tag)).await.unwrap();
    assert_eq!(tier.read(&key(1)).await.unwrap(), None);
    // A new entry creates a new counter, at a value the old entry never had.
    tier.write(
        &key(2),
        Bytes::from_static(b"b"),
        Duration::from_secs(60),
        std::slice::from_ref(&tag),
    )
    .await
    .unwrap();
    assert!(tier.read(&key(2)).await.unwrap().is_some());
    assert_eq!(tier.read(&key(1)).await.unwrap(), None);
}

#[tokio::test]
async fn corrupt_and_foreign_values_read_as_misses() {
    let tier = backend("corrupt");
    let mut raw = raw_client().await;
    raw.set(
        tier.memcached_key(&key(1)),
        "written by someone else",
        Some(60),
        None,
    )
    .await
    .unwrap();
    raw.set(tier.memcached_key(&key(2)), &b"HBM1\x02\x00"[..], Some(60), None)
        .await
        .unwrap();
    assert_eq!(tier.read(&key(1)).await.unwrap(), None);
    assert_eq!(tier.read(&key(2)).await.unwrap(), None);
    assert_eq!(tier.corrupt_entries(), 2);
    // Bytes of this tier that the engine cannot read: a miss there too.
    tier.write(
        &key(3),
        Bytes::from_static(b"not an envelope"),
        Duration::from_secs(60),
        &[],
    )
    .await
    .unwrap();
    let cache = Cache::new(tier.clone());
    assert_eq!(cache.get::<Profile>(&key(1)).await, None);
    assert_eq!(cache.get::<Profile>(&key(3)).await, None);
    assert_eq!(cache.stats().unreadable_entries, 1);
    // The tier is still healthy.
    assert_eq!(tier.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn keys_past_250_bytes_are_stored_under_their_digest() {
    let tier = backend("long");
    let long = CacheKey::builder("profiles")
        .max_len(10_000)
        .part("q", "x".repeat(400))
        .build();
    let other = CacheKey::builder("profiles")
        .max_len(10_000)
        .part("q", format!("{}y", "x".repeat(400)))
        .build();
    assert!(tier.memcached_key(&long).len() <= hitbox_memcached::MAX_KEY_LEN);
    tier.write(&long, Bytes::from_static(b"long"), Duration::from_secs(60), &[])
        .await
        .unwrap();
    assert_eq!(tier.read(&long).await.unwrap().as_deref(), Some(&b"long"[..]));
    assert_eq!(tier.read(&other).await.unwrap(), None);
}

#[tokio::test]
async fn a_value_memcached_refuses_is_a_key_error_not_an_outage() {
    let tier = MemcachedBackend::builder()
        .server(url())
        .key_prefix(unique_prefix("too-large"))
        .failure_threshold(1)
        .read_timeout(Duration::from_secs(2))
        .write_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Over memcached's default 1 MB item size.
    let huge = Bytes::from(vec![7u8; 2 * 1024 * 1024]);
    let error = tier
        .write(&key(1), huge, Duration::from_secs(60), &[])
        .await
        .unwrap_err();
    assert!(!error.is_tier_failure(), "{error:?}");
    assert_eq!(tier.breaker_state(), BreakerState::Closed);
    tier.write(&key(2), Bytes::from_static(b"fine"), Duration::from_secs(60), &[])
        .await
        .unwrap();
    assert!(tier.read(&key(2)).await.unwrap().is_some());
}

#[tokio::test]
async fn moka_in_front_of_memcached() {
    let tier = backend("composed");
    let loads = Arc::new(AtomicU32::new(0));
    let first = Cache::new(MokaBackend::new(1 << 20).compose(tier.clone()));
    let users = first.typed::<Profile>("profiles");
    let counted = Arc::clone(&loads);
    let ada = users
        .get_or_insert_with(1, move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            profile(1)
        })
        .await;
    assert_eq!(ada, profile(1));
    // Another instance, with an empty moka of its own, finds it in memcached.
    let second = Cache::new(MokaBackend::new(1 << 20).compose(tier.clone()));
    let counted = Arc::clone(&loads);
    let again = second
        .typed::<Profile>("profiles")
        .get_or_insert_with(1, move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            profile(999)
        })
        .await;
    assert_eq!(again, profile(1));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(tier.tier_stats()[0].hits >= 1);
}

/// A memcached of the test's own on a free port; killed when dropped.
struct OwnMemcached {
    child: Child,
    port: u16,
}

impl OwnMemcached {
    async fn start(port: Option<u16>) -> OwnMemcached {
        let port = port.unwrap_or_else(|| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().unwrap().port()
        });
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let child = Command::new(env("HITBOX_TEST_MEMCACHED_BIN"))
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-m",
                "16",
                "-u",
                &user,
            ])
            .kill_on_drop(true)
            .spawn()
            .expect("memcached starts");
        // Wait until it answers (a process starting offers no event to
        // await); fail loudly after 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut client) = Client::new(format!("tcp://127.0.0.1:{port}")).await
                && client.version().await.is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "memcached on port {port} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        OwnMemcached { child, port }
    }

    async fn kill(mut self) -> u16 {
        self.child.kill().await.expect("memcached is killed");
        self.port
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_load_falls_back_to_the_origin_and_fails_nothing() {
    let server = OwnMemcached::start(None).await;
    let clock = ManualClock::new();
    let tier = MemcachedBackend::builder()
        .server(format!("127.0.0.1:{}", server.port))
        .read_timeout(Duration::from_millis(200))
        .write_timeout(Duration::from_millis(200))
        .failure_threshold(3)
        .cool_down(Duration::from_secs(5))
        .clock(clock.clone())
        .build()
        .unwrap();
    let cache = Cache::new(tier.clone());
    let origin_calls = Arc::new(AtomicU32::new(0));
    let read_all = |round: u64| {
        let cache = cache.clone();
        let origin_calls = Arc::clone(&origin_calls);
        async move {
            let users = cache.typed::<Profile>("profiles");
            let calls = (0..50u64).map(|id| {
                let users = users.clone();
                let origin_calls = Arc::clone(&origin_calls);
                async move {
                    let value = users
                        .get_or_insert_with(id, move || async move {
                            origin_calls.fetch_add(1, Ordering::SeqCst);
                            profile(id)
                        })
                        .await;
                    assert_eq!(value, profile(id), "round {round}");
                }
            });
            futures::future::join_all(calls).await;
        }
    };
    read_all(0).await;
    assert_eq!(origin_calls.load(Ordering::SeqCst), 50);
    read_all(1).await;
    assert_eq!(origin_calls.load(Ordering::SeqCst), 50, "all served by memcached");

    let port = server.kill().await;
    let started = Instant::now();
    read_all(2).await;
    read_all(3).await;
    assert_eq!(
        origin_calls.load(Ordering::SeqCst),
        150,
        "every read fell to the origin"
    );
    assert_eq!(tier.breaker_state(), BreakerState::Open);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a dead tier costs at most a few timeouts: {:?}",
        started.elapsed()
    );
    assert!(
        cache.stats().errors_of("memcached") > 0,
        "the engine saw the tier fail"
    );

    // Back on the same port: after the cool-down one probe closes the breaker.
    let _revived = OwnMemcached::start(Some(port)).await;
    clock.advance(Duration::from_secs(6));
    read_all(4).await;
    assert_eq!(tier.breaker_state(), BreakerState::Closed);
    // While the probe was out, the other calls of round 4 were refused
    // (their writes too); round 5 stores what is missing, round 6 hits.
    read_all(5).await;
    let after_refill = origin_calls.load(Ordering::SeqCst);
    read_all(6).await;
    assert_eq!(
        origin_calls.load(Ordering::SeqCst),
        after_refill,
        "memcached serves again"
    );
    assert_eq!(tier.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn entries_written_through_the_engine_carry_tags() {
    let tier = backend("engine-tags");
    let cache = Cache::new(tier.clone());
    let options = EntryOptions::new().ttl(Duration::from_secs(60)).tag("team:ops");
    cache.set_with(&key(1), &profile(1), &options).await.unwrap();
    cache.set(&key(2), &profile(2)).await.unwrap();
    assert_eq!(cache.get::<Profile>(&key(1)).await, Some(profile(1)));
    cache.invalidate_tag(&Tag::from("team:ops")).await.unwrap();
    assert_eq!(cache.get::<Profile>(&key(1)).await, None);
    assert_eq!(cache.get::<Profile>(&key(2)).await, Some(profile(2)));
}

impl hitbox_backend::Entity for Profile {
    type Id = u64;
    const NAMESPACE: &'static str = "profiles";

    fn id(&self) -> u64 {
        self.id
    }
}

/// Profiles 1 to 10, counting the ids each `load_many` is asked for.
#[derive(Default)]
struct Profiles {
    asked: std::sync::Mutex<Vec<Vec<u64>>>,
}

impl hitbox_backend::Repository<Profile> for Profiles {
    type Error = std::convert::Infallible;

    async fn load(&self, id: &u64) -> Result<Option<Profile>, Self::Error> {
        Ok((1..=10).contains(id).then(|| profile(*id)))
    }

    async fn load_many(&self, ids: &[u64]) -> Result<Vec<Profile>, Self::Error> {
        self.asked.lock().unwrap().push(ids.to_vec());
        Ok(ids
            .iter()
            .filter(|id| (1..=10).contains(*id))
            .map(|id| profile(*id))
            .collect())
    }
}

#[tokio::test]
async fn the_entity_cache_reads_many_ids_in_one_memcached_get() {
    let tier = backend("entities");
    let profiles = hitbox_backend::EntityCache::<Profile>::new(Cache::new(tier.clone()));
    let db = Profiles::default();
    let first = profiles.get_many(&db, &[1, 2, 3]).await.unwrap();
    assert!(first.iter().all(Option::is_some));
    let before = tier.tier_stats()[0].timed_calls;
    let found = profiles.get_many(&db, &[1, 2, 3, 4, 11]).await.unwrap();
    assert_eq!(
        found,
        vec![
            Some(profile(1)),
            Some(profile(2)),
            Some(profile(3)),
            Some(profile(4)),
            None
        ]
    );
    let stats = &tier.tier_stats()[0];
    // One read of the five keys; then one write for the one loaded entity.
    assert_eq!(stats.timed_calls - before, 2, "{stats:?}");
    assert_eq!(*db.asked.lock().unwrap(), vec![vec![1, 2, 3], vec![4, 11]]);
}
