//! Interim `1xx` responses (RFC 9110 section 15.2): never stored, and
//! their fields never reach the stored final response.
//!
//! What hyper 1.12 (the version in Cargo.lock) offers: its HTTP/1 client
//! reads interim responses and skips them, handing them only to a
//! callback registered per request with `hyper::ext::on_informational`
//! (status and headers; HTTP/1 only); its server cannot send one: a
//! service that returns a `1xx` as its response is answered `500` (hyper
//! logs "response with 1xx status code not supported"), and there is no
//! API to write an interim response before the final one (only
//! `100 Continue`, which hyper sends itself). So a `103 Early Hints` or a
//! `102 Processing` can reach a tower layer neither from hyper's server
//! nor as a response from its client, and cannot be passed on to an HTTP
//! client through hyper's server. These tests show the part that holds
//! whatever the transport: nothing of an interim response is stored.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hitbox_backend::Cache;
use hitbox_moka::MokaBackend;
use hitbox_tower::CacheLayer;
use hitbox_tower::client::ReqwestService;
use hitbox_tower::rfc9111::Rfc9111;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Layer, ServiceExt};

/// An origin that writes `answer` byte for byte on every connection, and
/// counts the requests it read.
async fn raw_origin(answer: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let calls = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                calls.fetch_add(1, Ordering::SeqCst);
                stream.write_all(answer.as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    (format!("http://{addr}"), calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_before_the_final_one_leave_nothing_in_the_cache() {
    let (base, calls) = raw_origin(concat!(
        "HTTP/1.1 102 Processing\r\n",
        "X-Interim: processing\r\n",
        "\r\n",
        "HTTP/1.1 103 Early Hints\r\n",
        "Link: </style.css>; rel=preload\r\n",
        "X-Interim: hints\r\n",
        "\r\n",
        "HTTP/1.1 200 OK\r\n",
        "Cache-Control: max-age=60\r\n",
        "Content-Length: 5\r\n",
        "Connection: close\r\n",
        "\r\n",
        "hello",
    ))
    .await;
    let cache = Cache::new(MokaBackend::default());
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let service = CacheLayer::builder(cache.clone())
        .rfc9111(Rfc9111::new())
        .build()
        .layer(ReqwestService::new(client));
    let get = || async {
        let request = http::Request::get(format!("{base}/page"))
            .body(reqwest::Body::from(""))
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    };
    let (first, body) = get().await;
    assert_eq!((first.status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    assert!(first.headers.get("link").is_none());
    assert!(first.headers.get("x-interim").is_none());
    support::until(|| cache.stats().stores >= 1).await;
    let (hit, body) = get().await;
    assert_eq!(&body[..], b"hello");
    assert!(hit.headers["cache-status"].to_str().unwrap().contains("; hit"));
    assert!(hit.headers.get("link").is_none());
    assert!(hit.headers.get("x-interim").is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interim_status_given_as_the_response_is_never_stored() {
    // An origin inside the same server answers 103 with a lifetime: the
    // layer does not store it, and hyper's server turns it into a 500.
    let p = support::setup().await;
    for status in [102, 103] {
        let path = format!("/interim/{status}");
        p.origin.reply(
            &path,
            status,
            &[("cache-control", "max-age=60"), ("link", "</a.css>; rel=preload")],
            "",
        );
        for _ in 0..2 {
            let got = p.get(&path, &[]).await;
            assert_eq!(got.status, StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
    assert_eq!(p.origin.calls(), 4);
    assert_eq!(p.cache.stats().stores, 0);
}
