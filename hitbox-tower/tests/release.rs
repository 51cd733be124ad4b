//! Waiters of a load whose response turns out not to be storable go to the
//! origin themselves, at once; and an origin that fails at the transport
//! level inside the stale-if-error window is answered from the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hitbox_backend::Cache;
use hitbox_core::{CachePolicy, ManualClock};
use hitbox_moka::MokaBackend;
use hitbox_tower::CacheLayer;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::{Barrier, Notify};
use tower::{Layer, ServiceExt};

async fn until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_an_unstorable_response_go_to_the_origin_at_once() {
    const WAITERS: usize = 20;
    let calls = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(Notify::new());
    // Every waiter's own call blocks here until all of them have arrived:
    // if they were sent to the origin one after another, this would never
    // fill and the test would time out.
    let together = Arc::new(Barrier::new(WAITERS));
    let origin = {
        let (calls, first, together) = (Arc::clone(&calls), Arc::clone(&first), Arc::clone(&together));
        tower::service_fn(move |_request: Request<Body>| {
            let (calls, first, together) = (Arc::clone(&calls), Arc::clone(&first), Arc::clone(&together));
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 1 {
                    first.notified().await;
                } else if n <= WAITERS + 1 {
                    together.wait().await;
                }
                let response = Response::builder()
                    .header(header::SET_COOKIE, "session=private")
                    .body(Body::from(format!("call {n}")))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let cache = Cache::new(MokaBackend::default());
    let service = CacheLayer::new(cache.clone()).layer(origin);

    let mut requests = Vec::new();
    for _ in 0..=WAITERS {
        let service = service.clone();
        requests.push(tokio::spawn(async move {
            let response = service.oneshot(get("/personal")).await.unwrap();
            let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
            (status, response.into_body().collect().await.unwrap().to_bytes())
        }));
    }
    until(|| cache.stats().joins == WAITERS as u64).await;
    first.notify_one();
    let mut bodies = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, "hitbox; fwd=miss");
        bodies.push(body);
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), WAITERS + 1, "each request got its own response");
    assert_eq!(calls.load(Ordering::SeqCst), WAITERS + 1);
    assert_eq!(cache.stats().stores, 0);
    // And the key is now passed straight through for a while.
    let response = service.clone().oneshot(get("/personal")).await.unwrap();
    assert_eq!(
        response.headers()["cache-status"],
        "hitbox; fwd=bypass; detail=uncacheable"
    );
    assert_eq!(calls.load(Ordering::SeqCst), WAITERS + 2);
}

#[tokio::test]
async fn a_transport_error_inside_the_stale_if_error_window_serves_the_stale_response() {
    let failing = Arc::new(AtomicBool::new(false));
    let origin = {
        let failing = Arc::clone(&failing);
        tower::service_fn(move |_request: Request<Body>| {
            let failing = failing.load(Ordering::SeqCst);
            async move {
                if failing {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "origin unreachable",
                    ))
                } else {
                    Ok(Response::new(Body::from(Bytes::from_static(b"last good"))))
                }
            }
        })
    };
    let clock = ManualClock::new();
    let cache = Cache::builder(MokaBackend::default())
        .clock(clock.clone())
        .policy(CachePolicy::new(Duration::from_secs(10)).stale_if_error(Duration::from_secs(60)))
        .build();
    let service = CacheLayer::new(cache.clone()).layer(origin);

    let response = service.clone().oneshot(get("/thing")).await.unwrap();
    response.into_body().collect().await.unwrap();
    until(|| cache.stats().stores == 1).await;

    failing.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(20));
    let response = service.clone().oneshot(get("/thing")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["cache-status"],
        "hitbox; fwd=stale; ttl=-10; detail=stale-if-error"
    );
    assert_eq!(
        &response.into_body().collect().await.unwrap().to_bytes()[..],
        b"last good"
    );

    // Past the window the error reaches the caller.
    clock.advance(Duration::from_secs(60));
    let Err(error) = service.clone().oneshot(get("/thing")).await else {
        panic!("the origin's error must reach the caller past the window");
    };
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
}
