//! The facade works on its own: an application that depends only on
//! `hitbox` reaches the layer, the tiers and the `#[cached]` attribute.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::{Router, routing::get};
use hitbox::{Cache, CacheLayer, MokaBackend, cached};

static CACHE: LazyLock<Cache> = LazyLock::new(|| Cache::new(MokaBackend::new(1 << 20)));
static CALLS: AtomicU32 = AtomicU32::new(0);

// The attribute finds the engine through `hitbox::backend`: this crate has
// no dependency on `hitbox-backend` of its own.
#[cached(cache = CACHE)]
async fn double(n: u32) -> u32 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    n * 2
}

#[tokio::test]
async fn cached_through_the_facade_runs_the_body_once() {
    assert_eq!(double(21).await, 42);
    assert_eq!(double(21).await, 42);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(double(2).await, 4);
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_layer_from_the_facade_caches_over_tcp() {
    let calls = std::sync::Arc::new(AtomicU32::new(0));
    let counted = std::sync::Arc::clone(&calls);
    let app: Router = Router::new()
        .route(
            "/n",
            get(move || {
                let counted = std::sync::Arc::clone(&counted);
                async move { counted.fetch_add(1, Ordering::SeqCst).to_string() }
            }),
        )
        .layer(CacheLayer::new(Cache::new(MokaBackend::new(1 << 20))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = reqwest::Client::new();
    let url = format!("http://{address}/n");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["cache-status"], "hitbox; fwd=miss; stored");
    assert_eq!(first.text().await.unwrap(), "0");
    let second = client.get(&url).send().await.unwrap();
    assert!(
        second.headers()["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("hitbox; hit")
    );
    assert_eq!(second.text().await.unwrap(), "0");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
