//! The remote tier under the engine: `Cache`, encryption stages and an L1.

mod support;

use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use hitbox_backend::encryption::{AesGcmEncryptor, MasterKey};
use hitbox_backend::{Backend, Cache, Compression, MemoryBackend, Staged, Stages};
use hitbox_cachekit::{CachekitTiered, Freshness, SetOptions};
use hitbox_core::{CacheKey, EntryOptions, Freshness as EngineFreshness};
use support::{LoopbackServer, header};

#[tokio::test]
async fn miss_set_hit_then_stale_through_the_cache() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    let cache = Cache::builder(backend.clone())
        .clock(server.clock.clone())
        .build();
    let key = CacheKey::from_encoded("users:v1:id=7");

    assert_eq!(cache.get::<String>(&key).await, None);
    let options = EntryOptions::new()
        .ttl(Duration::from_secs(10))
        .stale_while_revalidate(Duration::from_secs(20))
        .stale_if_error(Duration::ZERO);
    cache.set_with(&key, &"ada".to_string(), &options).await.unwrap();
    // The key holds `=`, which the service refuses: it went as its digest
    // form, and the envelope's windows as TTL and stale TTL.
    let wire = hitbox_cachekit::wire_key(key.as_str()).into_owned();
    assert!(wire.starts_with(hitbox_cachekit::DIGEST_KEY_PREFIX));
    assert_eq!(server.stored(key.as_str()), None);
    assert_eq!(server.windows(&wire), Some((Some(10), 20)));
    assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("ada"));

    server.clock.advance(Duration::from_secs(15));
    let entry = cache.get_entry::<String>(&key).await.unwrap();
    assert_eq!(entry.freshness, EngineFreshness::Stale);
    assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("ada"));
    let remote = backend.read_with_freshness(&wire).await.unwrap().unwrap();
    assert_eq!(remote.freshness, Freshness::Stale);

    server.clock.advance(Duration::from_secs(20));
    assert_eq!(cache.get::<String>(&key).await, None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.stale_hits, stats.misses), (1, 1, 2));
    let tier = stats.tiers.iter().find(|t| t.label == "cachekit").unwrap();
    assert_eq!((tier.hits, tier.misses), (4, 2));

    // Delete and tag invalidation (a no-op remotely: no tags in the API).
    cache.set(&key, &"grace".to_string()).await.unwrap();
    assert!(cache.exists(&key).await);
    assert_eq!(cache.invalidate_tag(&"team".into()).await.unwrap(), 0);
    assert!(cache.delete(&key).await.unwrap());
    assert_eq!(cache.get::<String>(&key).await, None);
    let path = format!("/v1/cache/{}", wire.replace(':', "%3A"));
    assert_eq!(server.count(Method::DELETE, &path), 1);
}

#[tokio::test]
async fn a_failing_service_degrades_to_the_origin() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).max_attempts(1).build().unwrap();
    let cache = Cache::builder(backend).clock(server.clock.clone()).build();
    server.always(Some(support::Fault::Status(503)));
    let key = CacheKey::from_encoded("k");
    let value = cache
        .get_or_insert_with(&key, || async { "from origin".to_string() })
        .await;
    assert_eq!(value, "from origin");
}

const SECRET: &str = "PLAINTEXT-CANARY-4111-1111-1111-1111";

async fn bodies_after_storing_secret(encrypt: bool) -> Vec<Bytes> {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    let mut stages = Stages::new()
        .compression(Compression::zstd(3))
        .min_compress_size(1024);
    if encrypt {
        let master =
            MasterKey::from_hex("6161616161616161616161616161616161616161616161616161616161616161").unwrap();
        stages = stages.encryptor(AesGcmEncryptor::new(master));
    }
    let tier = Staged::new(backend, stages);
    let cache = Cache::builder(tier).clock(server.clock.clone()).build();
    let key = CacheKey::from_encoded("cards:v1:id=1");
    // Small values stay uncompressed, so the plaintext is visible unless
    // it is encrypted; a large one is compressed as well.
    for value in [SECRET.to_string(), SECRET.repeat(200)] {
        cache.set(&key, &value).await.unwrap();
        assert_eq!(cache.get::<String>(&key).await.as_deref(), Some(value.as_str()));
    }
    let loaded = cache
        .get_or_insert_with(&CacheKey::from_encoded("cards:v1:id=2"), || async {
            SECRET.to_string()
        })
        .await;
    assert_eq!(loaded, SECRET);
    let bodies: Vec<Bytes> = server.requests().into_iter().map(|r| r.body).collect();
    assert!(bodies.iter().filter(|b| !b.is_empty()).count() >= 3);
    bodies
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn with_encryption_the_service_never_sees_plaintext() {
    let bodies = bodies_after_storing_secret(true).await;
    for body in &bodies {
        assert!(!contains(body, SECRET.as_bytes()));
        assert!(!contains(body, b"PLAINTEXT-CANARY"));
    }
}

#[tokio::test]
async fn without_encryption_the_canary_is_found() {
    // The control run: the same traffic unencrypted does carry the secret,
    // so the test above would notice a stage that stopped encrypting.
    let bodies = bodies_after_storing_secret(false).await;
    assert!(bodies.iter().any(|b| contains(b, SECRET.as_bytes())));
}

#[tokio::test]
async fn an_l1_never_backfills_stale_answers_and_honours_fresh_for() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    let l1 = MemoryBackend::new().labelled("memory");
    let tiers = CachekitTiered::new(l1.clone(), &backend, Duration::from_secs(60));
    assert_eq!(tiers.label(), "memory+cachekit");
    let key = CacheKey::from_encoded("k");

    // A fresh remote entry with 5 s left is copied for at most 5 s.
    backend
        .set(
            "k",
            Bytes::from_static(b"fresh"),
            SetOptions::ttl(Duration::from_secs(5)).with_stale(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(tiers.read(&key).await.unwrap().as_deref(), Some(&b"fresh"[..]));
    assert!(l1.raw(&key).is_some());
    let request = server.requests().pop().unwrap();
    assert_eq!(header(&request, "x-cachekit-l1-status"), Some(&b"miss"[..]));
    // Next read is an L1 hit: no request.
    let before = server.requests().len();
    assert_eq!(tiers.read(&key).await.unwrap().as_deref(), Some(&b"fresh"[..]));
    assert_eq!(server.requests().len(), before);

    // A stale answer is served but not copied.
    l1.remove(&key).await.unwrap();
    server.clock.advance(Duration::from_secs(10));
    assert_eq!(tiers.read(&key).await.unwrap().as_deref(), Some(&b"fresh"[..]));
    assert!(l1.raw(&key).is_none(), "a stale answer must not reach the L1");

    // Fresh-For of 0 on a "fresh" answer: not copied either.
    server.freshness_override(Some((Some(b"fresh".to_vec()), Some(b"0".to_vec()))));
    assert!(tiers.read(&key).await.unwrap().is_some());
    assert!(l1.raw(&key).is_none());
    server.freshness_override(None);

    // A miss in both.
    assert_eq!(tiers.read(&CacheKey::from_encoded("none")).await.unwrap(), None);
    // Counters: one L1 hit, three L2 hits, one miss, sent with the next request.
    assert_eq!(tiers.counters().snapshot(), (1, 3, 1));
    tiers.remote().health().await.unwrap();
    let request = server.requests().pop().unwrap();
    assert_eq!(header(&request, "x-cachekit-l1-hits"), Some(&b"1"[..]));
    assert_eq!(header(&request, "x-cachekit-l2-hits"), Some(&b"3"[..]));
    assert_eq!(header(&request, "x-cachekit-misses"), Some(&b"1"[..]));
    assert_eq!(header(&request, "x-cachekit-l1-hit-rate"), Some(&b"0.200"[..]));
}

#[tokio::test]
async fn the_l1_lifetime_is_bounded_by_fresh_for() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    let l1 = MemoryBackend::with_clock(server.clock.clone()).labelled("memory");
    let tiers = CachekitTiered::new(l1.clone(), &backend, Duration::from_secs(60));
    let key = CacheKey::from_encoded("k");
    backend
        .set(
            "k",
            Bytes::from_static(b"v"),
            SetOptions::ttl(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    tiers.read(&key).await.unwrap();
    assert!(l1.raw(&key).is_some());
    server.clock.advance(Duration::from_secs(6));
    assert_eq!(
        l1.read(&key).await.unwrap(),
        None,
        "the L1 copy lived past Fresh-For"
    );
}

#[tokio::test]
async fn a_composition_with_cachekit_as_l2() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    let l1 = MemoryBackend::new().labelled("memory");
    let tiers = hitbox_backend::CompositionBackend::builder(l1.clone(), backend.clone())
        .clock(server.clock.clone())
        .build();
    let cache = Cache::builder(tiers).clock(server.clock.clone()).build();
    let key = CacheKey::from_encoded("c");
    cache.set(&key, &7u64).await.unwrap();
    assert!(server.stored("c").is_some());
    l1.remove(&key).await.unwrap();
    assert_eq!(cache.get::<u64>(&key).await, Some(7));
    assert!(l1.raw(&key).is_some(), "refilled from cachekit");
}
