//! Every route of the API table against the loopback stand-in.

mod support;

use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use hitbox_cachekit::{
    CachekitError, Freshness, L1Counters, RemoteTtl, Revalidation, SetOptions, ttl_header_secs,
};
use support::{API_KEY, LoopbackServer, header};

async fn setup() -> (LoopbackServer, hitbox_cachekit::CachekitBackend) {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    (server, backend)
}

#[tokio::test]
async fn set_get_exists_delete() {
    let (server, backend) = setup().await;
    assert_eq!(backend.read_with_freshness("user:1").await.unwrap(), None);
    assert!(!backend.exists_key("user:1").await.unwrap());

    backend
        .set(
            "user:1",
            Bytes::from_static(b"ada"),
            SetOptions::ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let put = server.requests().pop().unwrap();
    assert_eq!(put.method, Method::PUT);
    assert_eq!(put.path, "/v1/cache/user%3A1");
    assert_eq!(
        header(&put, "content-type"),
        Some(&b"application/octet-stream"[..])
    );
    assert_eq!(header(&put, "x-cachekit-ttl"), Some(&b"60"[..]));
    assert_eq!(header(&put, "x-cachekit-stale-ttl"), None);
    assert_eq!(header(&put, "x-ttl"), None);
    assert_eq!(&put.body[..], b"ada");

    let entry = backend.read_with_freshness("user:1").await.unwrap().unwrap();
    assert_eq!(&entry.bytes[..], b"ada");
    assert_eq!(entry.freshness, Freshness::Fresh);
    assert_eq!(entry.fresh_for, Some(60));
    assert!(backend.exists_key("user:1").await.unwrap());
    assert_eq!(server.count(Method::HEAD, "/v1/cache/user%3A1"), 2);

    backend.delete("user:1").await.unwrap();
    assert_eq!(backend.read_with_freshness("user:1").await.unwrap(), None);
    // Deleting what is not there is still a success.
    backend.delete("user:1").await.unwrap();
}

#[tokio::test]
async fn every_request_carries_auth_session_and_l1_status() {
    let (server, backend) = setup().await;
    backend
        .set("a", Bytes::from_static(b"1"), SetOptions::default())
        .await
        .unwrap();
    backend.read_with_freshness("a").await.unwrap();
    backend.exists_key("a").await.unwrap();
    backend.ttl("a").await.unwrap();
    backend.health().await.unwrap();
    let lock = backend.lock("a", Duration::from_secs(1)).await.unwrap().unwrap();
    backend.unlock("a", &lock).await.unwrap();
    backend.delete("a").await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 8);
    let session = hitbox_cachekit::Session::current();
    let expected_auth = format!("Bearer {API_KEY}");
    for request in &requests {
        assert_eq!(header(request, "authorization"), Some(expected_auth.as_bytes()));
        let id = std::str::from_utf8(header(request, "x-cachekit-session-id").unwrap()).unwrap();
        assert_eq!(id, session.id);
        let parsed = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(
            header(request, "x-cachekit-session-start"),
            Some(session.started_at_ms.to_string().as_bytes())
        );
        assert_eq!(header(request, "x-cachekit-l1-status"), Some(&b"disabled"[..]));
        assert_eq!(header(request, "x-cachekit-l1-hits"), None);
    }
    // A second backend in the process shares the session.
    let other = support::backend(&server).build().unwrap();
    other.health().await.unwrap();
    let last = server.requests().pop().unwrap();
    assert_eq!(
        header(&last, "x-cachekit-session-id"),
        Some(session.id.as_bytes())
    );
}

#[tokio::test]
async fn l1_counters_travel_with_requests() {
    let (server, backend) = setup().await;
    let counters = std::sync::Arc::new(L1Counters::new());
    let backend = backend.with_l1_counters(counters.clone());
    counters.l1_hit();
    counters.l1_hit();
    counters.l2_hit();
    backend.read_with_freshness("k").await.unwrap();
    let request = server.requests().pop().unwrap();
    assert_eq!(header(&request, "x-cachekit-l1-status"), Some(&b"miss"[..]));
    assert_eq!(header(&request, "x-cachekit-l1-hits"), Some(&b"2"[..]));
    assert_eq!(header(&request, "x-cachekit-l2-hits"), Some(&b"1"[..]));
    assert_eq!(header(&request, "x-cachekit-misses"), Some(&b"0"[..]));
    assert_eq!(header(&request, "x-cachekit-l1-hit-rate"), Some(&b"0.667"[..]));
    backend
        .read_as("k", hitbox_cachekit::L1Status::Hit)
        .await
        .unwrap();
    let request = server.requests().pop().unwrap();
    assert_eq!(header(&request, "x-cachekit-l1-status"), Some(&b"hit"[..]));
}

#[tokio::test]
async fn ttl_rules() {
    let (server, backend) = setup().await;
    // No TTL: no header, no expiry.
    backend
        .set("forever", Bytes::from_static(b"x"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(header(&server.requests().pop().unwrap(), "x-cachekit-ttl"), None);
    assert_eq!(backend.ttl("forever").await.unwrap(), RemoteTtl::NoExpiry);
    assert_eq!(
        backend
            .read_with_freshness("forever")
            .await
            .unwrap()
            .unwrap()
            .fresh_for,
        None
    );
    // Sub-second rounds up.
    backend
        .set(
            "short",
            Bytes::from_static(b"x"),
            SetOptions::ttl(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    assert_eq!(
        header(&server.requests().pop().unwrap(), "x-cachekit-ttl"),
        Some(&b"2"[..])
    );
    assert_eq!(ttl_header_secs(Duration::from_millis(1)).unwrap(), 1);
    // 0, over 30 days and ttl + stale over 30 days are refused before sending.
    let before = server.requests().len();
    for options in [
        SetOptions::ttl(Duration::ZERO),
        SetOptions::ttl(Duration::from_secs(2_592_001)),
        SetOptions::ttl(Duration::from_secs(2_592_000)).with_stale(Duration::from_secs(1)),
        SetOptions {
            ttl: None,
            stale_ttl: Some(Duration::from_secs(5)),
        },
    ] {
        let error = backend
            .set("k", Bytes::from_static(b"x"), options)
            .await
            .unwrap_err();
        assert!(matches!(error, CachekitError::InvalidTtl { .. }), "{error}");
    }
    assert_eq!(server.requests().len(), before);
    // The cap itself is fine.
    backend
        .set(
            "cap",
            Bytes::from_static(b"x"),
            SetOptions::ttl(Duration::from_secs(2_592_000)),
        )
        .await
        .unwrap();
    // A default TTL applies when none is given.
    let with_default = support::backend(&server)
        .default_ttl(Duration::from_secs(42))
        .build()
        .unwrap();
    with_default
        .set("d", Bytes::from_static(b"x"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        header(&server.requests().pop().unwrap(), "x-cachekit-ttl"),
        Some(&b"42"[..])
    );
}

#[tokio::test]
async fn stale_window_follows_the_server_clock() {
    let (server, backend) = setup().await;
    backend
        .set(
            "k",
            Bytes::from_static(b"v"),
            SetOptions::ttl(Duration::from_secs(10)).with_stale(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    let put = server.requests().pop().unwrap();
    assert_eq!(header(&put, "x-cachekit-stale-ttl"), Some(&b"20"[..]));
    server.clock.advance(Duration::from_secs(4));
    let entry = backend.read_with_freshness("k").await.unwrap().unwrap();
    assert_eq!((entry.freshness, entry.fresh_for), (Freshness::Fresh, Some(6)));
    assert_eq!(
        entry.l1_lifetime(Duration::from_secs(60)),
        Some(Duration::from_secs(6))
    );
    assert_eq!(
        entry.l1_lifetime(Duration::from_secs(2)),
        Some(Duration::from_secs(2))
    );
    // GET /ttl counts to eviction: 6 fresh seconds plus the 20 stale ones.
    assert_eq!(backend.ttl("k").await.unwrap(), RemoteTtl::Seconds(26));

    server.clock.advance(Duration::from_secs(10));
    let entry = backend.read_with_freshness("k").await.unwrap().unwrap();
    assert_eq!(entry.freshness, Freshness::Stale);
    assert_eq!(entry.fresh_for, Some(0));
    assert_eq!(entry.l1_lifetime(Duration::from_secs(60)), None);
    assert!(backend.exists_key("k").await.unwrap());
    assert_eq!(backend.ttl("k").await.unwrap(), RemoteTtl::Seconds(16));

    server.clock.advance(Duration::from_secs(20));
    assert_eq!(backend.read_with_freshness("k").await.unwrap(), None);
    assert_eq!(backend.ttl("k").await.unwrap(), RemoteTtl::Absent);
}

#[tokio::test]
async fn refresh_ttl_extends_fresh_entries_and_refuses_stale_ones() {
    let (server, backend) = setup().await;
    let options = SetOptions::ttl(Duration::from_secs(10)).with_stale(Duration::from_secs(30));
    backend.set("k", Bytes::from_static(b"v"), options).await.unwrap();
    server.clock.advance(Duration::from_secs(8));
    backend.refresh_ttl("k", Duration::from_secs(100)).await.unwrap();
    let patch = server.requests().pop().unwrap();
    assert_eq!(
        (patch.method.as_str(), patch.path.as_str()),
        ("PATCH", "/v1/cache/k/ttl")
    );
    assert_eq!(&patch.body[..], br#"{"ttl":100}"#);
    // Fresh for 100 s from now, and the 30 s stale window is kept.
    assert_eq!(backend.ttl("k").await.unwrap(), RemoteTtl::Seconds(130));
    let entry = backend.read_with_freshness("k").await.unwrap().unwrap();
    assert_eq!(entry.fresh_for, Some(100));

    server.clock.advance(Duration::from_secs(101));
    assert_eq!(
        backend
            .refresh_ttl("k", Duration::from_secs(5))
            .await
            .unwrap_err(),
        CachekitError::AlreadyStale
    );
    // An absent entry is a no-op: 200, nothing created.
    backend.refresh_ttl("nope", Duration::from_secs(5)).await.unwrap();
    assert_eq!(server.stored("nope"), None);
    assert_eq!(backend.ttl("nope").await.unwrap(), RemoteTtl::Absent);
    // An evicted one too.
    server.clock.advance(Duration::from_secs(30));
    backend.refresh_ttl("k", Duration::from_secs(5)).await.unwrap();
    assert_eq!(backend.read_with_freshness("k").await.unwrap(), None);
    // A zero TTL never leaves.
    assert!(matches!(
        backend.refresh_ttl("k", Duration::ZERO).await.unwrap_err(),
        CachekitError::InvalidTtl { .. }
    ));
}

#[tokio::test]
async fn locks_have_ids_timeouts_and_are_decided_on_the_body() {
    let (server, backend) = setup().await;
    let first = backend
        .lock("job", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("acquired");
    let post = server.requests().pop().unwrap();
    assert_eq!(&post.body[..], br#"{"timeout_ms":5000}"#);
    assert_eq!(post.path, "/v1/cache/job/lock");
    // Held by another: 200 with a null id.
    assert_eq!(backend.lock("job", Duration::from_secs(5)).await.unwrap(), None);
    assert_eq!(backend.health().await.unwrap().active_locks, 1);
    // The lock times out on the server's clock.
    server.clock.advance(Duration::from_secs(6));
    let second = backend
        .lock("job", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("expired lock retaken");
    assert_ne!(first, second);
    // The stale id releases nothing; the right one does.
    backend.unlock("job", &first).await.unwrap();
    assert_eq!(backend.lock("job", Duration::from_secs(5)).await.unwrap(), None);
    backend.unlock("job", &second).await.unwrap();
    let delete = server.requests().pop().unwrap();
    assert_eq!(
        delete.path, "/v1/cache/job/lock",
        "the id is never in the query string"
    );
    assert_eq!(
        header(&delete, "x-cachekit-lock-id"),
        Some(second.as_str().as_bytes())
    );
    assert!(
        backend
            .lock("job", Duration::from_secs(5))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn unlock_answers_200_and_a_lock_id_that_cannot_come_back_is_refused() {
    let (server, backend) = setup().await;
    let lock = backend
        .lock("job", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    backend.unlock("job", &lock).await.unwrap();
    let release = server.requests().pop().unwrap();
    assert_eq!(release.method, Method::DELETE);
    assert!(!server.locked("job"));
    // The server read the id from the header: the query carries none.
    assert_eq!(release.path, "/v1/cache/job/lock");

    // An id the service would read as absent on release, or one no header
    // can carry, is refused where it arrives (a service that hands one out
    // broke the protocol): the caller never holds a lock it cannot release.
    let before = server.requests().len();
    for (n, broken) in ["", " ", "\t ", "a\nb"].into_iter().enumerate() {
        server.lock_id_override(Some(broken.to_owned()));
        let error = backend
            .lock(&format!("other-{n}"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(error, CachekitError::Protocol { .. }),
            "{broken:?}: {error}"
        );
    }
    server.lock_id_override(None);
    let sent = server.requests();
    assert_eq!(sent.len(), before + 4, "only the four lock calls went out");
    assert!(
        sent[before..]
            .iter()
            .all(|request| request.method == Method::POST)
    );
}

#[tokio::test]
async fn revalidation_takes_the_lock_or_serves_stale_without_waiting() {
    let (server, backend) = setup().await;
    let options = SetOptions::ttl(Duration::from_secs(10)).with_stale(Duration::from_secs(60));
    backend
        .set("page", Bytes::from_static(b"old"), options)
        .await
        .unwrap();
    server.clock.advance(Duration::from_secs(15));
    assert!(
        backend
            .read_with_freshness("page")
            .await
            .unwrap()
            .unwrap()
            .freshness
            .is_stale()
    );

    // Someone else revalidates: we serve stale, the loader never runs.
    let theirs = backend
        .lock("page", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let outcome = backend
        .revalidate("page", Duration::from_secs(30), options, || async {
            panic!("the loader must not run while another caller holds the lock");
            #[allow(unreachable_code)]
            Ok::<Bytes, std::io::Error>(Bytes::new())
        })
        .await
        .unwrap();
    assert_eq!(outcome, Revalidation::HeldByAnother);
    backend.unlock("page", &theirs).await.unwrap();

    // Nobody holds it: we load, store and release.
    let outcome = backend
        .revalidate("page", Duration::from_secs(30), options, || async {
            Ok::<_, std::io::Error>(Bytes::from_static(b"new"))
        })
        .await
        .unwrap();
    assert_eq!(outcome, Revalidation::Refreshed);
    let entry = backend.read_with_freshness("page").await.unwrap().unwrap();
    assert_eq!(
        (&entry.bytes[..], entry.freshness),
        (&b"new"[..], Freshness::Fresh)
    );
    assert_eq!(backend.health().await.unwrap().active_locks, 0);

    // A failing loader still releases the lock.
    let failed = backend
        .revalidate("page", Duration::from_secs(30), options, || async {
            Err::<Bytes, _>(std::io::Error::other("origin down"))
        })
        .await;
    assert!(matches!(failed, Err(hitbox_cachekit::RevalidateError::Load(_))));
    assert_eq!(backend.health().await.unwrap().active_locks, 0);
}

#[tokio::test]
async fn health_reports_entries_and_locks() {
    let (_server, backend) = setup().await;
    backend
        .set("a", Bytes::from_static(b"1"), SetOptions::default())
        .await
        .unwrap();
    backend
        .set("b", Bytes::from_static(b"2"), SetOptions::default())
        .await
        .unwrap();
    backend.lock("a", Duration::from_secs(1)).await.unwrap();
    let health = backend.health().await.unwrap();
    assert_eq!(health.status, "ok");
    assert_eq!((health.cache_entries, health.active_locks), (2, 1));
}

#[tokio::test]
async fn wrong_key_is_401_and_surfaces_as_auth() {
    let (server, _backend) = setup().await;
    let wrong = hitbox_cachekit::CachekitBackend::builder()
        .api_key("ck_test_wrong")
        .base_url(server.url())
        .allow_insecure_loopback_for_tests(true)
        .build()
        .unwrap();
    let error = wrong.read_with_freshness("k").await.unwrap_err();
    assert_eq!(error, CachekitError::Auth { status: 401 });
    // Permanent: asked once.
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_sdk_api_key_works_because_the_client_always_sends_the_l1_status() {
    // The server's default key is a `ck_sdk_` key: every call the client
    // makes (health included) would be a 400 without the header.
    assert!(API_KEY.starts_with("ck_sdk_"));
    let (server, backend) = setup().await;
    backend
        .set("probe", Bytes::from_static(b"x"), SetOptions::default())
        .await
        .unwrap();
    assert!(backend.read_with_freshness("probe").await.unwrap().is_some());
    backend.health().await.unwrap();
    for request in server.requests() {
        assert_eq!(header(&request, "x-cachekit-l1-status"), Some(&b"disabled"[..]));
    }
}

/// Upstream says "25 MB" without a byte count (25,000,000 or 26,214,400),
/// so these sizes stay outside the span between the two readings.
#[tokio::test]
async fn bodies_over_25_mb() {
    let (server, backend) = setup().await;
    // Over the client's own limit (the larger reading): refused before
    // sending.
    let over = Bytes::from(vec![b'x'; hitbox_cachekit::MAX_BODY_BYTES + 1]);
    let error = backend.set("big", over, SetOptions::default()).await.unwrap_err();
    assert!(matches!(error, CachekitError::TooLarge { .. }));
    assert!(server.requests().is_empty(), "refused before sending");
    // The stand-in answers 413 to a client that sends one anyway (the size
    // cachekit-py's live test uses).
    let big = Bytes::from(vec![b'x'; 26 * 1024 * 1024]);
    let status = support::raw(&server, Method::PUT, "/v1/cache/big", API_KEY)
        .header("content-type", "application/octet-stream")
        .body(big)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 413);
    assert_eq!(server.stored("big"), None);
    // 25,000,000 bytes is within every reading.
    let within = Bytes::from(vec![b'y'; 25_000_000]);
    backend
        .set("within", within, SetOptions::default())
        .await
        .unwrap();
    assert_eq!(server.stored("within").map(|b| b.len()), Some(25_000_000));
}

#[tokio::test]
async fn unknown_fields_and_malformed_json_are_protocol_errors() {
    let (server, backend) = setup().await;
    backend
        .set(
            "k",
            Bytes::from_static(b"1"),
            SetOptions::ttl(Duration::from_secs(9)),
        )
        .await
        .unwrap();
    server.unknown_field(true);
    for result in [
        backend.health().await.map(drop),
        backend.ttl("k").await.map(drop),
        backend.lock("k", Duration::from_secs(1)).await.map(drop),
    ] {
        assert!(
            matches!(result, Err(CachekitError::Protocol { .. })),
            "{result:?}"
        );
    }
    server.unknown_field(false);
    server.malformed_json(true);
    for result in [
        backend.health().await.map(drop),
        backend.ttl("k").await.map(drop),
        backend.lock("k2", Duration::from_secs(1)).await.map(drop),
    ] {
        assert!(
            matches!(result, Err(CachekitError::Protocol { .. })),
            "{result:?}"
        );
    }
    server.malformed_json(false);
    assert_eq!(backend.ttl("k").await.unwrap(), RemoteTtl::Seconds(9));
}

#[tokio::test]
async fn reserved_keys_never_reach_the_server() {
    let (server, backend) = setup().await;
    for key in hitbox_cachekit::RESERVED_KEYS {
        assert!(matches!(
            backend.read_with_freshness(key).await,
            Err(CachekitError::InvalidKey { .. })
        ));
        assert!(
            backend
                .set(key, Bytes::new(), SetOptions::default())
                .await
                .is_err()
        );
        assert!(backend.lock(key, Duration::from_secs(1)).await.is_err());
    }
    assert!(server.requests().is_empty());
}
