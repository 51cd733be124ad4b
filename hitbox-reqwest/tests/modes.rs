//! Per-request cache modes and standards mode as a private cache, through
//! the middleware over real TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use hitbox_backend::Cache;
use hitbox_core::{CachePolicy, ManualClock};
use hitbox_moka::MokaBackend;
use hitbox_reqwest::CacheMiddleware;
use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::{CacheLayer, CacheMode};
use reqwest::Response;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

/// An origin whose answers count its calls: `/n` (no cache headers),
/// `/private` (`private, max-age=60`), `/shared-zero` (`max-age=60,
/// s-maxage=0`), `/me` (`max-age=60`, echoes the Authorization it got).
async fn origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = |calls: &Arc<AtomicUsize>| calls.fetch_add(1, Ordering::SeqCst) + 1;
    let (a, b, c, d) = (calls.clone(), calls.clone(), calls.clone(), calls.clone());
    let app = Router::new()
        .route("/n", get(move || async move { count(&a).to_string() }))
        .route(
            "/private",
            get(move || async move {
                (
                    [(header::CACHE_CONTROL, "private, max-age=60")],
                    count(&b).to_string(),
                )
            }),
        )
        .route(
            "/shared-zero",
            get(move || async move {
                (
                    [(header::CACHE_CONTROL, "max-age=60, s-maxage=0")],
                    count(&c).to_string(),
                )
            }),
        )
        .route(
            "/me",
            get(move |headers: HeaderMap| async move {
                let who = headers
                    .get(header::AUTHORIZATION)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                (
                    [(header::CACHE_CONTROL, "max-age=60")],
                    format!("{who} {}", count(&d)),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

fn client(layer: CacheLayer) -> ClientWithMiddleware {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    ClientBuilder::new(client.clone())
        .with(CacheMiddleware::new(layer, client))
        .build()
}

async fn read(response: Response) -> (String, String) {
    let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn cache_modes_narrow_what_the_cache_does_for_one_request() {
    let (addr, calls) = origin().await;
    let clock = ManualClock::new();
    let cache = Cache::builder(MokaBackend::new(1 << 20))
        // A stale window keeps entries past their freshness, for the modes
        // that take them as they are.
        .policy(CachePolicy::new(Duration::from_secs(10)).stale_while_revalidate(Duration::from_secs(60)))
        .clock(clock.clone())
        .build();
    let client = client(CacheLayer::new(cache));
    let url = format!("http://{addr}/n");
    let with = |mode: CacheMode| client.get(&url).with_extension(mode);

    // Only the cache answers, and nothing is stored yet: 504, no origin call.
    let response = with(CacheMode::OnlyIfCached).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // No cache at all: the origin answers every time, nothing is stored.
    for n in ["1", "2"] {
        let (status, body) = read(with(CacheMode::NoStore).send().await.unwrap()).await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("hitbox; fwd=bypass; detail=request-mode", n)
        );
    }
    let (status, body) = read(client.get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("hitbox; fwd=miss; stored", "3")
    );
    let (status, body) = read(client.get(&url).send().await.unwrap()).await;
    assert!(status.starts_with("hitbox; hit"), "{status}");
    assert_eq!(body, "3");

    // Reload: the stored response is not read; the new one replaces it.
    let (status, body) = read(with(CacheMode::Reload).send().await.unwrap()).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("hitbox; fwd=miss; stored", "4")
    );
    let (_, body) = read(client.get(&url).send().await.unwrap()).await;
    assert_eq!(body, "4");

    // Once stale, a plain request would start a background refresh;
    // force-cache and only-if-cached take the stale response as it is.
    clock.advance(Duration::from_secs(15));
    for mode in [CacheMode::ForceCache, CacheMode::OnlyIfCached] {
        let (status, body) = read(with(mode).send().await.unwrap()).await;
        assert_eq!(body, "4", "{mode:?}");
        assert!(status.starts_with("hitbox; hit; ttl=-5"), "{mode:?}: {status}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4, "no refresh was started");
}

#[tokio::test]
async fn a_private_cache_stores_private_responses_and_ignores_s_maxage() {
    let (addr, calls) = origin().await;
    let shared = client(
        CacheLayer::builder(Cache::new(MokaBackend::new(1 << 20)))
            .rfc9111(Rfc9111::new())
            .build(),
    );
    let private = client(
        CacheLayer::builder(Cache::new(MokaBackend::new(1 << 20)))
            .rfc9111(Rfc9111::new().private_cache(true))
            .build(),
    );
    for path in ["/private", "/shared-zero"] {
        let url = format!("http://{addr}{path}");
        // A shared cache never serves these from storage.
        let before = calls.load(Ordering::SeqCst);
        read(shared.get(&url).send().await.unwrap()).await;
        let (status, _) = read(shared.get(&url).send().await.unwrap()).await;
        assert!(!status.starts_with("hitbox; hit"), "{path}: {status}");
        assert_eq!(calls.load(Ordering::SeqCst), before + 2);
        // A private cache does.
        let (_, first) = read(private.get(&url).send().await.unwrap()).await;
        let (status, second) = read(private.get(&url).send().await.unwrap()).await;
        assert!(status.starts_with("hitbox; hit"), "{path}: {status}");
        assert_eq!(first, second);
        assert_eq!(calls.load(Ordering::SeqCst), before + 3);
    }
}

#[tokio::test]
async fn a_private_cache_stores_authorized_responses_per_credentials() {
    let (addr, calls) = origin().await;
    let shared = client(
        CacheLayer::builder(Cache::new(MokaBackend::new(1 << 20)))
            .rfc9111(Rfc9111::new())
            .build(),
    );
    let private = client(
        CacheLayer::builder(Cache::new(MokaBackend::new(1 << 20)))
            .rfc9111(Rfc9111::new().private_cache(true))
            .build(),
    );
    let url = format!("http://{addr}/me");
    let get =
        |client: &ClientWithMiddleware, token: &str| client.get(&url).header("authorization", token).send();

    // A shared cache does not store a response to Authorization without
    // public or s-maxage.
    read(get(&shared, "alice").await.unwrap()).await;
    let (status, _) = read(get(&shared, "alice").await.unwrap()).await;
    assert!(!status.starts_with("hitbox; hit"), "{status}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A private cache stores it, and serves it to the same credentials only.
    let (_, alice) = read(get(&private, "alice").await.unwrap()).await;
    assert_eq!(alice, "alice 3");
    let (status, again) = read(get(&private, "alice").await.unwrap()).await;
    assert!(status.starts_with("hitbox; hit"), "{status}");
    assert_eq!(again, "alice 3");
    let (status, bob) = read(get(&private, "bob").await.unwrap()).await;
    assert_eq!(
        (status.as_str(), bob.as_str()),
        ("hitbox; fwd=miss; stored", "bob 4")
    );
    let (_, anonymous) = read(private.get(&url).send().await.unwrap()).await;
    assert_eq!(anonymous, " 5", "no credentials: not alice's response");
}
