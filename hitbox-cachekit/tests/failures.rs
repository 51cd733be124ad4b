//! Failure injection, retries, the breaker, URL safety and secrecy of the
//! API key.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use hitbox_backend::{Backend, BackendError, Cache};
use hitbox_cachekit::{BreakerState, CachekitBackend, CachekitError, SetOptions, UrlGuard, check_base_url};
use hitbox_core::CacheKey;
use support::{API_KEY, Fault, LoopbackServer};

#[tokio::test]
async fn a_server_slower_than_the_budget_is_a_timeout() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server)
        .read_timeout(Duration::from_millis(200))
        .write_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    server.hold();
    let error = backend.read_with_freshness("k").await.unwrap_err();
    assert_eq!(
        error,
        CachekitError::Timeout {
            after: Duration::from_millis(200)
        }
    );
    let error = backend
        .set("k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        error,
        CachekitError::Timeout {
            after: Duration::from_millis(300)
        }
    );
    // Through the trait, the engine sees a Timeout and degrades.
    let key = CacheKey::from_encoded("k");
    assert!(matches!(
        backend.read(&key).await,
        Err(BackendError::Timeout { .. })
    ));
    let cache = Cache::new(backend.clone());
    assert_eq!(cache.get::<String>(&key).await, None);
    server.release();
    // Once the server answers again, so does the backend.
    assert_eq!(backend.read_with_freshness("k").await.unwrap(), None);
}

#[tokio::test]
async fn five_hundreds_are_retried_three_times_then_reported() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    server.always(Some(Fault::Status(503)));
    let error = backend.read_with_freshness("k").await.unwrap_err();
    assert_eq!(
        error,
        CachekitError::Transient {
            status: 503,
            attempts: 3
        }
    );
    assert_eq!(server.count(Method::GET, "/v1/cache/k"), 3);
    server.always(None);

    // A transient error that clears is invisible.
    server.push_faults([Fault::Status(500), Fault::Status(408)]);
    backend
        .set("k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(server.count(Method::PUT, "/v1/cache/k"), 3);
    assert_eq!(server.stored("k").as_deref(), Some(&b"v"[..]));

    // Permanent 4xx: one attempt.
    server.push_faults([Fault::Status(422)]);
    let error = backend.read_with_freshness("k").await.unwrap_err();
    assert_eq!(error, CachekitError::Status { status: 422 });
    assert_eq!(server.count(Method::GET, "/v1/cache/k"), 4);
}

#[tokio::test]
async fn a_quota_429_is_not_retried_and_a_plain_429_is() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    server.push_faults([Fault::RateLimited {
        deny_reason: Some("monthly quota exceeded".into()),
    }]);
    let error = backend.read_with_freshness("k").await.unwrap_err();
    assert_eq!(
        error,
        CachekitError::Denied {
            reason: "monthly quota exceeded".into()
        }
    );
    assert_eq!(server.requests().len(), 1);

    server.push_faults([
        Fault::RateLimited { deny_reason: None },
        Fault::RateLimited { deny_reason: None },
    ]);
    assert_eq!(backend.read_with_freshness("k").await.unwrap(), None);
    assert_eq!(server.requests().len(), 4);

    server.always(Some(Fault::RateLimited { deny_reason: None }));
    let error = backend.read_with_freshness("k").await.unwrap_err();
    assert_eq!(
        error,
        CachekitError::Transient {
            status: 429,
            attempts: 3
        }
    );
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    server.push_faults([Fault::Redirect]);
    let error = backend.read_with_freshness("k").await.unwrap_err();
    assert_eq!(error, CachekitError::Status { status: 307 });
    assert_eq!(server.count(Method::GET, "/v1/redirected"), 0);
    assert_eq!(server.requests().len(), 1);
}

/// A call that started before the breaker opened and succeeds after does
/// not close it: only the probe decides (a straggler's answer says nothing
/// about the service now, and closing on it would make the breaker flap).
#[tokio::test]
async fn a_late_success_does_not_close_an_open_breaker() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server)
        .max_attempts(1)
        .failure_threshold(2)
        .cool_down(Duration::from_secs(30))
        .read_timeout(Duration::from_millis(100))
        .write_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    server.hold();
    let straggler = tokio::spawn({
        let backend = backend.clone();
        async move {
            let key = CacheKey::from_encoded("late");
            backend
                .write(&key, Bytes::from_static(b"v"), Duration::from_secs(60), &[])
                .await
        }
    });
    while server.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Admitted while the breaker was closed, the write waits; two reads
    // time out meanwhile and open the breaker.
    for _ in 0..2 {
        assert!(matches!(
            backend.read_with_freshness("k").await,
            Err(CachekitError::Timeout { .. })
        ));
    }
    assert_eq!(backend.breaker_state(), BreakerState::Open);

    server.release();
    straggler.await.unwrap().expect("the late write succeeds");
    assert_eq!(
        backend.breaker_state(),
        BreakerState::Open,
        "the straggler decides nothing"
    );
    assert_eq!(
        backend.read_with_freshness("k").await.unwrap_err(),
        CachekitError::CircuitOpen
    );

    // The probe decides.
    server.clock.advance(Duration::from_secs(31));
    assert_eq!(backend.read_with_freshness("k").await.unwrap(), None);
    assert_eq!(backend.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn the_breaker_opens_refuses_without_asking_then_probes() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server)
        .max_attempts(1)
        .failure_threshold(3)
        .cool_down(Duration::from_secs(30))
        .build()
        .unwrap();
    server.always(Some(Fault::Status(502)));
    for _ in 0..3 {
        assert!(matches!(
            backend.read_with_freshness("k").await,
            Err(CachekitError::Transient { .. })
        ));
    }
    assert_eq!(backend.breaker_state(), BreakerState::Open);
    let asked = server.requests().len();
    assert_eq!(
        backend.read_with_freshness("k").await.unwrap_err(),
        CachekitError::CircuitOpen
    );
    let key = CacheKey::from_encoded("k");
    assert!(matches!(
        backend.read(&key).await,
        Err(BackendError::Unavailable { .. })
    ));
    // A view with L1 counters shares the breaker.
    let view = backend.with_l1_counters(Arc::new(hitbox_cachekit::L1Counters::new()));
    assert_eq!(
        view.read_with_freshness("k").await.unwrap_err(),
        CachekitError::CircuitOpen
    );
    assert_eq!(server.requests().len(), asked, "an open breaker sends nothing");

    // After the cool-down one probe goes; it fails, the breaker reopens.
    server.clock.advance(Duration::from_secs(31));
    assert!(matches!(
        backend.read_with_freshness("k").await,
        Err(CachekitError::Transient { .. })
    ));
    assert_eq!(backend.breaker_state(), BreakerState::Open);
    assert_eq!(server.requests().len(), asked + 1);

    // The service recovers: the next probe closes it.
    server.always(None);
    server.clock.advance(Duration::from_secs(31));
    assert_eq!(backend.read_with_freshness("k").await.unwrap(), None);
    assert_eq!(backend.breaker_state(), BreakerState::Closed);

    // Misses and refused keys do not count as failures.
    for _ in 0..5 {
        backend.read_with_freshness("absent").await.unwrap();
        assert!(backend.read_with_freshness("..").await.is_err());
    }
    assert_eq!(backend.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server)
        .max_concurrency(2)
        .read_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    server.hold();
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let backend = backend.clone();
            tokio::spawn(async move { backend.read_with_freshness(&format!("k{i}")).await })
        })
        .collect();
    // Wait until the permitted requests have reached the server.
    while server.requests().len() < 2 {
        tokio::task::yield_now().await;
    }
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(server.requests().len(), 2, "only two requests in flight");
    server.release();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), None);
    }
    assert_eq!(server.requests().len(), 5);
}

#[test]
fn url_safety_accepts_and_refuses() {
    let strict = UrlGuard::default();
    let custom = UrlGuard {
        allow_custom_host: true,
        ..UrlGuard::default()
    };
    let tests = UrlGuard {
        allow_insecure_loopback_for_tests: true,
        ..UrlGuard::default()
    };
    for url in [
        "https://api.cachekit.io",
        "https://api.cachekit.io/",
        "https://api.staging.cachekit.io",
        "https://API.CACHEKIT.IO",
        "https://api.cachekit.io:443",
    ] {
        assert!(check_base_url(url, strict).is_ok(), "{url}");
    }
    for url in [
        "http://api.cachekit.io",
        "ftp://api.cachekit.io",
        "not a url",
        "https://cache.example.com",
        "https://api.cachekit.io.evil.com",
        "https://8.8.8.8",
        "https://user:pw@api.cachekit.io",
        "https://api.cachekit.io/v1?x=1",
        "https://api.cachekit.io/elsewhere",
        "http://127.0.0.1:8080",
    ] {
        assert!(check_base_url(url, strict).is_err(), "{url}");
    }
    assert!(check_base_url("https://cache.example.com", custom).is_ok());
    assert!(check_base_url("https://8.8.8.8", custom).is_ok());
    assert!(check_base_url("https://[2606:4700::1111]", custom).is_ok());
    for url in [
        "https://127.0.0.1",
        "https://127.8.9.10",
        "https://10.1.2.3",
        "https://172.16.0.1",
        "https://172.31.255.255",
        "https://192.168.1.1",
        "https://169.254.169.254",
        "https://0.0.0.0",
        "https://0.1.2.3",
        "https://0x7f.1",
        "https://2130706433",
        "https://[::1]",
        "https://[::]",
        "https://[fe80::1]",
        "https://[febf::1]",
        "https://[fc00::1]",
        "https://[fd12:3456::1]",
        "https://[::ffff:127.0.0.1]",
        "https://[::ffff:10.0.0.1]",
        "https://[::ffff:169.254.169.254]",
        "https://[::ffff:0.0.0.0]",
    ] {
        let error = check_base_url(url, custom).unwrap_err();
        assert!(matches!(error, CachekitError::InvalidUrl { .. }), "{url}");
        assert!(check_base_url(url, strict).is_err(), "{url}");
    }
    // The error never lists the allowed hosts.
    for url in [
        "https://evil.example",
        "http://api.cachekit.io",
        "https://10.0.0.1",
    ] {
        let text = check_base_url(url, strict).unwrap_err().to_string();
        assert!(!text.contains("cachekit.io"), "{text}");
    }
    // The test switch opens http to loopback literals, and nothing else.
    assert!(check_base_url("http://127.0.0.1:8080", tests).is_ok());
    assert!(check_base_url("http://[::1]:8080", tests).is_ok());
    assert!(check_base_url("http://localhost:8080", tests).is_err());
    assert!(check_base_url("http://10.0.0.1", tests).is_err());
    assert!(check_base_url("http://api.cachekit.io", tests).is_err());
    assert!(check_base_url("https://127.0.0.1", tests).is_err());
}

#[test]
fn from_env_reads_the_variables_and_never_the_master_key() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    };
    let error = hitbox_cachekit::CachekitConfig::from_lookup(vars(&[])).unwrap_err();
    assert!(error.to_string().contains("CACHEKIT_API_KEY"));
    let config = hitbox_cachekit::CachekitConfig::from_lookup(vars(&[
        ("CACHEKIT_API_KEY", "ck_env_secret"),
        ("CACHEKIT_API_URL", "https://api.staging.cachekit.io"),
        ("CACHEKIT_DEFAULT_TTL", "300"),
        (
            "CACHEKIT_MASTER_KEY",
            "6161616161616161616161616161616161616161616161616161616161616161",
        ),
    ]))
    .unwrap();
    let debug = format!("{config:?}");
    assert!(debug.contains("default_ttl: Some(300s)"), "{debug}");
    assert!(!debug.contains("ck_env_secret"));
    assert!(!debug.contains("6161"));
    let backend = config.build().unwrap();
    assert_eq!(backend.origin(), "https://api.staging.cachekit.io");
    // An unsafe URL from the environment is refused like any other.
    let refused = hitbox_cachekit::CachekitConfig::from_lookup(vars(&[
        ("CACHEKIT_API_KEY", "k"),
        ("CACHEKIT_API_URL", "https://169.254.169.254"),
    ]))
    .unwrap()
    .build();
    assert!(matches!(refused, Err(CachekitError::InvalidUrl { .. })));
    for bad in ["0", "-5", "ten"] {
        let pairs: &'static [(&'static str, &'static str)] = Box::leak(Box::new([
            ("CACHEKIT_API_KEY", "k"),
            ("CACHEKIT_DEFAULT_TTL", bad),
        ]));
        assert!(
            hitbox_cachekit::CachekitConfig::from_lookup(vars(pairs)).is_err(),
            "{bad}"
        );
    }
}

/// A `MakeWriter` that keeps everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn the_api_key_never_shows_in_errors_or_logs() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = LoopbackServer::start().await;
    let backend = support::backend(&server)
        .max_attempts(2)
        .failure_threshold(2)
        .read_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut errors: Vec<CachekitError> = Vec::new();
    let mut backend_errors: Vec<BackendError> = Vec::new();
    let key = CacheKey::from_encoded("k");

    server.push_faults([Fault::RateLimited {
        deny_reason: Some(format!("key {API_KEY} is over quota")),
    }]);
    errors.push(backend.read_with_freshness("k").await.unwrap_err());
    server.push_faults([Fault::Status(401)]);
    errors.push(backend.read_with_freshness("k").await.unwrap_err());
    server.malformed_json(true);
    errors.push(backend.health().await.unwrap_err());
    server.malformed_json(false);
    server.push_faults([Fault::Status(500), Fault::Status(500)]);
    backend_errors.push(backend.read(&key).await.unwrap_err());
    server.hold();
    errors.push(backend.read_with_freshness("k").await.unwrap_err());
    server.release();
    // Two service failures in a row: the breaker is open.
    let open = backend.read(&key).await.unwrap_err();
    assert!(matches!(open, BackendError::Unavailable { .. }));
    backend_errors.push(open);
    // A connection refused: a backend pointed at a closed port.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dead = CachekitBackend::builder()
        .api_key(API_KEY)
        .base_url(format!("http://{closed}"))
        .allow_insecure_loopback_for_tests(true)
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
        .build()
        .unwrap();
    let transport = dead.read_with_freshness("k").await.unwrap_err();
    assert!(
        matches!(transport, CachekitError::Transport { .. }),
        "{transport:?}"
    );
    errors.push(transport);
    backend_errors.push(dead.read(&key).await.unwrap_err());
    // A key that cannot be a header value is a configuration error.
    errors.push(
        CachekitBackend::builder()
            .api_key(format!("{API_KEY}\n"))
            .build()
            .unwrap_err(),
    );

    assert!(matches!(errors[0], CachekitError::Denied { .. }));
    for error in &errors {
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(API_KEY), "leaked in {text}");
        }
    }
    for error in &backend_errors {
        let mut text = format!("{error} {error:?}");
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        assert!(!text.contains(API_KEY), "leaked in {text}");
    }
    for text in [
        format!("{backend:?}"),
        format!("{:?}", hitbox_cachekit::ApiKey::new(API_KEY)),
        hitbox_cachekit::ApiKey::new(API_KEY).to_string(),
        format!("{:?}", support::backend(&server)),
    ] {
        assert!(!text.contains(API_KEY), "leaked in {text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying"),
        "the capture saw the client's logs: {logs}"
    );
    assert!(!logs.contains(API_KEY), "leaked in the logs");
}

#[tokio::test]
async fn a_delete_the_service_missed_during_an_outage_is_replayed_first() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server)
        .max_attempts(1)
        .failure_threshold(1)
        .cool_down(Duration::from_secs(30))
        .build()
        .unwrap();
    let key = CacheKey::from_encoded("profile-1");
    backend
        .write(&key, Bytes::from_static(b"v1"), Duration::from_secs(600), &[])
        .await
        .unwrap();
    assert!(server.stored("profile-1").is_some());

    // The service fails: the delete fails, then the breaker refuses the
    // next calls without asking it. Both leave the entry in place.
    server.always(Some(Fault::Status(503)));
    let removed = backend.remove(&key).await;
    assert!(
        removed.as_ref().is_err_and(BackendError::is_tier_failure),
        "{removed:?}"
    );
    assert_eq!(backend.pending_invalidations(), 1);
    assert!(backend.read(&key).await.is_err());
    assert!(
        server.stored("profile-1").is_some(),
        "the service never got the delete"
    );

    // Back, after the cool-down: the first call (a read of that very key)
    // replays the delete before anything else, so it cannot serve v1.
    server.always(None);
    server.clock.advance(Duration::from_secs(31));
    assert_eq!(backend.read(&key).await.unwrap(), None);
    assert_eq!(backend.pending_invalidations(), 0);
    assert!(server.stored("profile-1").is_none());
    assert_eq!(backend.breaker_state(), BreakerState::Closed);
}
