//! The client against the service's key rules and access control: how a
//! 400 or a 403 surfaces, which key the engine's entries travel under, and
//! that no two cache keys can meet under one wire key.

mod support;

use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use hitbox_backend::{Backend, BackendError, Cache, MemoryBackend};
use hitbox_cachekit::{
    BreakerState, CachekitBackend, CachekitError, CachekitTiered, DIGEST_KEY_PREFIX, SetOptions, wire_key,
};
use hitbox_core::CacheKey;
use support::{LoopbackServer, header};

fn backend_with_key(server: &LoopbackServer, api_key: &str) -> CachekitBackend {
    support::backend(server)
        .api_key(api_key)
        .failure_threshold(2)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_403_is_forbidden_not_an_authentication_failure() {
    let server = LoopbackServer::start().await;
    let api = "ck_api_client_7a";
    let users_only = "ck_live_users_only_9c";
    server.add_api_key(api, None);
    server.add_api_key(users_only, Some(&["users"]));
    let sdk = support::backend(&server).failure_threshold(2).build().unwrap();
    let api = backend_with_key(&server, api);
    let users_only = backend_with_key(&server, users_only);
    let value = || Bytes::from_static(b"v");

    // The write split: each class writes its own space and reads both.
    sdk.set("ns:team:k", value(), SetOptions::default())
        .await
        .unwrap();
    api.set("nsapi:team:k", value(), SetOptions::default())
        .await
        .unwrap();
    for (backend, foreign) in [(&sdk, "nsapi:team:k"), (&api, "ns:team:k")] {
        let before = server.requests().len();
        for result in [
            backend.set(foreign, value(), SetOptions::default()).await,
            backend.delete(foreign).await,
            backend.refresh_ttl(foreign, Duration::from_secs(5)).await,
            backend.lock(foreign, Duration::from_secs(1)).await.map(drop),
        ] {
            assert_eq!(result, Err(CachekitError::Forbidden), "{foreign}");
        }
        assert_eq!(server.requests().len(), before + 4, "a 403 is not retried");
        assert!(server.stored(foreign).is_some());
        assert!(backend.read_with_freshness(foreign).await.unwrap().is_some());
        assert!(backend.exists_key(foreign).await.unwrap());
    }
    // A missing grant: reads too.
    assert_eq!(
        users_only.read_with_freshness("ns:team:k").await,
        Err(CachekitError::Forbidden)
    );
    assert_eq!(
        users_only.read_with_freshness("plain").await,
        Err(CachekitError::Forbidden)
    );
    users_only
        .set("nsapi:users:k", value(), SetOptions::default())
        .await
        .unwrap();
    assert!(users_only.read_with_freshness("ns:users:k").await.is_ok());

    // Not an authentication failure, and not the service failing: through
    // the Backend trait it is about one request, and the breaker stays
    // closed after many of them.
    let error = CachekitError::Forbidden.to_string();
    assert!(
        error.contains("403") && !error.contains("authentication"),
        "{error}"
    );
    for _ in 0..5 {
        let read = users_only.read(&CacheKey::from_encoded("plain")).await;
        assert!(
            matches!(&read, Err(e @ BackendError::Key { .. }) if !e.is_tier_failure()),
            "{read:?}"
        );
    }
    assert_eq!(users_only.breaker_state(), BreakerState::Closed);
    // A 401 is still Auth.
    let stranger = backend_with_key(&server, "ck_api_stranger");
    assert_eq!(
        stranger.read_with_freshness("k").await,
        Err(CachekitError::Auth { status: 401 })
    );
}

#[tokio::test]
async fn a_400_is_a_bad_request_and_is_not_retried() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).failure_threshold(2).build().unwrap();
    // Keys the client sends as given (the protocol asks it to) and the
    // service refuses.
    let too_long = "k".repeat(401);
    for key in ["a:..", "x..y", "a b", "a=b", "ns:my.app:k", too_long.as_str()] {
        let before = server.requests().len();
        assert_eq!(
            backend
                .set(key, Bytes::from_static(b"v"), SetOptions::default())
                .await,
            Err(CachekitError::BadRequest),
            "{key}"
        );
        assert_eq!(
            backend.read_with_freshness(key).await,
            Err(CachekitError::BadRequest),
            "{key}"
        );
        assert_eq!(server.requests().len(), before + 2, "{key}: asked once each");
    }
    assert_eq!(backend.breaker_state(), BreakerState::Closed);
    // The one per-request error does not open the breaker through the
    // Backend trait either.
    let error = CachekitError::BadRequest.into_backend_error("cachekit");
    assert!(matches!(error, BackendError::Key { .. }) && !error.is_tier_failure());
}

#[tokio::test]
async fn engine_keys_the_service_refuses_travel_as_their_digest() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    let cache = Cache::builder(backend.clone())
        .clock(server.clock.clone())
        .build();
    // Keys from the key builder hold `=`, `/`, `%`; some are route names.
    let keys = [
        CacheKey::builder("users").part("id", "7").build(),
        CacheKey::builder("api")
            .part("path", "/a/../b")
            .part("q", "x y")
            .build(),
        CacheKey::from_encoded("health"),
        CacheKey::from_encoded(".."),
        CacheKey::from_encoded("k".repeat(401)),
    ];
    for (i, key) in keys.iter().enumerate() {
        let value = format!("value {i}");
        cache.set(key, &value).await.unwrap();
        let wire = wire_key(key.as_str()).into_owned();
        assert!(wire.starts_with(DIGEST_KEY_PREFIX), "{wire}");
        assert!(server.stored(&wire).is_some(), "{wire}");
        let put = server.requests().pop().unwrap();
        assert_eq!(put.path, format!("/v1/cache/{}", wire.replace(':', "%3A")));
        assert_eq!(cache.get::<String>(key).await, Some(value));
        assert!(backend.exists(key).await.unwrap());
    }
    // A key the service accepts goes as it is: the entry is where other
    // SDKs look for it.
    let plain = CacheKey::from_encoded("users:get_user:0a1b");
    cache.set(&plain, &"ada".to_string()).await.unwrap();
    assert!(server.stored("users:get_user:0a1b").is_some());
    assert!(backend.remove(&plain).await.unwrap());
    assert!(server.stored("users:get_user:0a1b").is_none());
    // Removal reaches the digest form too.
    assert!(backend.remove(&keys[0]).await.unwrap());
    assert!(server.stored(&wire_key(keys[0].as_str())).is_none());
    assert_eq!(cache.get::<String>(&keys[0]).await, None);
}

/// One caller's key is another caller's digest form, spelled out: the two
/// must stay two entries, or the second would read what the first stored.
#[tokio::test]
async fn a_key_spelled_like_a_digest_form_never_reads_another_entry() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    let first = Cache::builder(backend.clone())
        .clock(server.clock.clone())
        .build();
    let second = Cache::builder(backend.clone())
        .clock(server.clock.clone())
        .build();
    let theirs = CacheKey::builder("account").part("user", "alice").build();
    let forged = CacheKey::from_encoded(wire_key(theirs.as_str()).into_owned());
    first.set(&theirs, &"alice's balance".to_string()).await.unwrap();
    assert_eq!(second.get::<String>(&forged).await, None);
    second.set(&forged, &"mallory's".to_string()).await.unwrap();
    assert_eq!(
        first.get::<String>(&theirs).await.as_deref(),
        Some("alice's balance")
    );
    assert_ne!(wire_key(forged.as_str()), wire_key(theirs.as_str()));
    assert!(server.stored(&wire_key(theirs.as_str())).is_some());
    assert!(server.stored(&wire_key(forged.as_str())).is_some());
    // Only `theirs` was written under that spelling.
    let spelled = format!("/v1/cache/{}", forged.as_str().replace(':', "%3A"));
    assert_eq!(server.count(Method::PUT, &spelled), 1);
}

#[tokio::test]
async fn the_tiered_l1_reads_the_digest_form_too() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    let l1 = MemoryBackend::new().labelled("memory");
    let tiers = CachekitTiered::new(l1.clone(), &backend, Duration::from_secs(60));
    let key = CacheKey::builder("users").part("id", "7").build();
    backend
        .set(
            &wire_key(key.as_str()),
            Bytes::from_static(b"remote"),
            SetOptions::ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(tiers.read(&key).await.unwrap().as_deref(), Some(&b"remote"[..]));
    assert!(l1.raw(&key).is_some(), "backfilled under the engine's key");
    let read = server.requests().pop().unwrap();
    assert_eq!(header(&read, "x-cachekit-l1-status"), Some(&b"miss"[..]));
    assert!(read.path.contains(&wire_key(key.as_str()).replace(':', "%3A")));
}

#[tokio::test]
async fn the_client_reads_fresh_for_as_the_server_rounds_it() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    // Stored 600 ms into a second: fresh until the 10th whole second.
    server.clock.advance(Duration::from_millis(600));
    backend
        .set(
            "k",
            Bytes::from_static(b"v"),
            SetOptions::ttl(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let entry = backend.read_with_freshness("k").await.unwrap().unwrap();
    assert_eq!(entry.fresh_for, Some(9));
    assert_eq!(
        entry.l1_lifetime(Duration::from_secs(60)),
        Some(Duration::from_secs(9))
    );
    // The last sub-second of freshness reads 0: fresh, but not for an L1.
    server.clock.advance(Duration::from_millis(9_000));
    let entry = backend.read_with_freshness("k").await.unwrap().unwrap();
    assert!(!entry.freshness.is_stale());
    assert_eq!(entry.fresh_for, Some(0));
    assert_eq!(entry.l1_lifetime(Duration::from_secs(60)), None);
    assert_eq!(
        backend.ttl("k").await.unwrap(),
        hitbox_cachekit::RemoteTtl::Seconds(1)
    );
}

#[tokio::test]
async fn every_key_class_can_use_the_client() {
    let server = LoopbackServer::start().await;
    for api_key in ["ck_api_any_1", "ck_live_any_2"] {
        server.add_api_key(api_key, None);
        let backend = backend_with_key(&server, api_key);
        let cache = Cache::builder(backend).clock(server.clock.clone()).build();
        let key = CacheKey::builder("k").part("class", api_key).build();
        cache.set(&key, &api_key.to_string()).await.unwrap();
        assert_eq!(cache.get::<String>(&key).await.as_deref(), Some(api_key));
    }
}
