//! The middleware over real TCP: an axum origin that counts its calls, a
//! reqwest client with the cache in its middleware chain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use futures::StreamExt;
use hitbox_backend::Cache;
use hitbox_core::{CachePolicy, ManualClock};
use hitbox_moka::MokaBackend;
use hitbox_reqwest::CacheMiddleware;
use hitbox_tower::CacheLayer;
use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tokio::sync::{Notify, mpsc};

/// The origin: `/json` and `/big` count calls; `/slow` waits until the test
/// releases it; every call reports its path.
struct Origin {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    release: Arc<Notify>,
    seen: mpsc::UnboundedReceiver<String>,
}

const BIG: usize = 1 << 20;

async fn origin() -> Origin {
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (report, seen) = mpsc::unbounded_channel::<String>();
    let counted = |path: &'static str| {
        let calls = Arc::clone(&calls);
        let report = report.clone();
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = report.send(path.to_owned());
            n
        }
    };
    let json = counted("/json");
    let big = counted("/big");
    let slow = counted("/slow");
    let held = Arc::clone(&release);
    let app = Router::new()
        .route(
            "/json",
            get(move || {
                let n = json();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        format!(r#"{{"call":{n}}}"#),
                    )
                }
            }),
        )
        .route(
            "/big",
            get(move || {
                big();
                async move { vec![b'x'; BIG] }
            }),
        )
        .route(
            "/slow",
            get(move || {
                let held = Arc::clone(&held);
                let n = slow();
                async move {
                    held.notified().await;
                    format!("slow {n}")
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Origin {
        addr,
        calls,
        release,
        seen,
    }
}

/// Counts the requests that reach the rest of the chain after the cache.
#[derive(Clone, Default)]
struct Downstream(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Middleware for Downstream {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        next.run(request, extensions).await
    }
}

fn client(cache: Cache, downstream: &Downstream) -> ClientWithMiddleware {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    ClientBuilder::new(client.clone())
        .with(CacheMiddleware::new(CacheLayer::new(cache), client))
        .with(downstream.clone())
        .build()
}

fn status(response: &Response) -> String {
    response.headers()["cache-status"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_hit_is_a_reqwest_response_and_skips_the_rest_of_the_chain() {
    let origin = origin().await;
    let downstream = Downstream::default();
    let client = client(Cache::new(MokaBackend::new(8 << 20)), &downstream);
    let url = format!("http://{}/json", origin.addr);

    let first = client.get(&url).send().await.unwrap();
    assert_eq!(status(&first), "hitbox; fwd=miss; stored");
    assert_eq!(first.url().as_str(), url);
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["call"], 1);

    let second = client.get(&url).send().await.unwrap();
    assert!(status(&second).starts_with("hitbox; hit"), "{}", status(&second));
    assert_eq!(second.status(), 200);
    assert_eq!(second.url().as_str(), url, "a hit carries the request's URL");
    assert_eq!(second.headers()["content-type"], "application/json");
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["call"], 1, "the stored answer, not a second call");

    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        downstream.0.load(Ordering::SeqCst),
        1,
        "the miss went down the chain, the hit did not"
    );
}

#[tokio::test]
async fn bodies_stream_from_the_origin_and_from_the_cache() {
    let origin = origin().await;
    let client = client(Cache::new(MokaBackend::new(16 << 20)), &Downstream::default());
    let url = format!("http://{}/big", origin.addr);
    for expected in ["hitbox; fwd=miss; stored", "hitbox; hit"] {
        let response = client.get(&url).send().await.unwrap();
        assert!(status(&response).starts_with(expected), "{}", status(&response));
        let mut stream = response.bytes_stream();
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.iter().all(|&b| b == b'x'));
            total += chunk.len();
        }
        assert_eq!(total, BIG);
    }
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_origin_call() {
    let mut origin = origin().await;
    let cache = Cache::new(MokaBackend::new(8 << 20));
    let client = client(cache.clone(), &Downstream::default());
    let url = format!("http://{}/slow", origin.addr);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let response = client.get(&url).send().await.unwrap();
                (status(&response), response.text().await.unwrap())
            })
        })
        .collect();
    // The leader reached the origin; the nine others wait on its load.
    assert_eq!(origin.seen.recv().await.as_deref(), Some("/slow"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while cache.stats().joins < 9 {
        assert!(tokio::time::Instant::now() < deadline, "the others never joined");
        tokio::task::yield_now().await;
    }
    origin.release.notify_one();
    let mut collapsed = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(body, "slow 1");
        collapsed += usize::from(status.ends_with("collapsed"));
    }
    assert_eq!(collapsed, 9);
    assert_eq!(origin.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_background_refresh_after_the_call_goes_through_the_client() {
    let mut origin = origin().await;
    let clock = ManualClock::new();
    let cache = Cache::builder(MokaBackend::new(8 << 20))
        .policy(CachePolicy::new(Duration::from_secs(10)).stale_while_revalidate(Duration::from_secs(60)))
        .clock(clock.clone())
        .build();
    let downstream = Downstream::default();
    let client = client(cache, &downstream);
    let url = format!("http://{}/json", origin.addr);

    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.text().await.unwrap(), r#"{"call":1}"#);
    assert_eq!(origin.seen.recv().await.as_deref(), Some("/json"));

    clock.advance(Duration::from_secs(20));
    let stale = client.get(&url).send().await.unwrap();
    assert!(
        status(&stale).starts_with("hitbox; hit; ttl=-"),
        "{}",
        status(&stale)
    );
    assert_eq!(stale.text().await.unwrap(), r#"{"call":1}"#);
    // The refresh runs after the call returned: it reaches the origin
    // through the client, not the chain.
    assert_eq!(origin.seen.recv().await.as_deref(), Some("/json"));
    assert_eq!(downstream.0.load(Ordering::SeqCst), 1);

    // Once stored, the refreshed answer is served.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let fresh = client.get(&url).send().await.unwrap();
        let status = status(&fresh);
        let text = fresh.text().await.unwrap();
        if text == r#"{"call":2}"# {
            assert!(status.starts_with("hitbox; hit; ttl="), "{status}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refresh was never stored"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(origin.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_origin_error_is_the_chains_own_error() {
    // A port nobody listens on: the client's connect error comes back.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client(Cache::new(MokaBackend::new(1 << 20)), &Downstream::default());
    let error = client
        .get(format!("http://{addr}/json"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
}
