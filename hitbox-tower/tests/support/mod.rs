//! A scripted origin behind the layer in standards mode, over real TCP.
//!
//! The origin answers each path with the reply the test scripted for it
//! (200 `default` otherwise) and records every request it receives, so a
//! test can assert both what the client got and what reached the origin.
//! Time is a `ManualClock` the test moves; stores are awaited on the
//! cache's counters, never with sleeps.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use hitbox_backend::Cache;
use hitbox_core::{Clock, ManualClock};
use hitbox_moka::MokaBackend;
use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::rfc9111::date::format_http_date;
use hitbox_tower::{CacheLayer, CacheLayerBuilder};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// What the origin answers for a path.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Sent as a stream of unknown length, in 16 KiB chunks.
    pub streamed: bool,
    /// Honours a single byte `Range` (and `If-Range` against its `ETag`)
    /// with `206`, as a file server does.
    pub ranged: bool,
}

/// One request the origin received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
}

#[derive(Clone, Default)]
pub struct Origin {
    script: Arc<Mutex<HashMap<String, Reply>>>,
    log: Arc<Mutex<Vec<Seen>>>,
    /// While set, requests wait for the gate to open before they are answered.
    held: Arc<std::sync::atomic::AtomicBool>,
    /// When set, only requests of this method are held.
    held_method: Arc<Mutex<Option<Method>>>,
    gate: Arc<tokio::sync::Notify>,
}

impl Origin {
    /// Scripts the reply for `path` (path and query).
    pub fn reply(&self, path: &str, status: u16, headers: &[(&str, &str)], body: &str) {
        let reply = Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_owned(),
            streamed: false,
            ranged: false,
        };
        self.script.lock().unwrap().insert(path.to_owned(), reply);
    }

    /// Like [`Origin::reply`], for requests of `method` only; they are
    /// answered by [`Origin::reply`]'s script otherwise.
    pub fn reply_to(&self, method: Method, path: &str, status: u16, headers: &[(&str, &str)], body: &str) {
        self.reply(&format!("{method} {path}"), status, headers, body);
    }

    /// Like [`Origin::reply`], with a body of unknown length.
    pub fn reply_streamed(&self, path: &str, status: u16, headers: &[(&str, &str)], body: &str) {
        self.reply(path, status, headers, body);
        self.script.lock().unwrap().get_mut(path).unwrap().streamed = true;
    }

    /// Like [`Origin::reply`] (a `200`), answering range requests with
    /// `206`.
    pub fn reply_ranged(&self, path: &str, headers: &[(&str, &str)], body: &str) {
        self.reply(path, 200, headers, body);
        self.script.lock().unwrap().get_mut(path).unwrap().ranged = true;
    }

    /// Holds every answer until [`Origin::release`].
    pub fn hold(&self) {
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Holds the answers to requests of `method` until [`Origin::release`];
    /// others are answered at once.
    pub fn hold_method(&self, method: Method) {
        *self.held_method.lock().unwrap() = Some(method);
        self.hold();
    }

    /// Answers the held requests, and the later ones at once.
    pub fn release(&self) {
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
        *self.held_method.lock().unwrap() = None;
        self.gate.notify_waiters();
    }

    /// How many requests reached the origin.
    pub fn calls(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The `i`th request the origin received.
    pub fn seen(&self, i: usize) -> Seen {
        self.log.lock().unwrap()[i].clone()
    }

    /// The last request the origin received.
    pub fn last(&self) -> Seen {
        self.log
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the origin was called")
    }
}

async fn scripted(State(origin): State<Origin>, request: http::Request<Body>) -> Response {
    let (parts, _) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    origin.log.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        headers: parts.headers.clone(),
    });
    let selected = origin
        .held_method
        .lock()
        .unwrap()
        .as_ref()
        .is_none_or(|method| *method == parts.method);
    while selected && origin.held.load(std::sync::atomic::Ordering::SeqCst) {
        let opened = origin.gate.notified();
        if !origin.held.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        opened.await;
    }
    let script = origin.script.lock().unwrap();
    let reply = script
        .get(&format!("{} {path}", parts.method))
        .or_else(|| script.get(&path))
        .cloned()
        .unwrap_or(Reply {
            status: 200,
            headers: Vec::new(),
            body: "default".to_owned(),
            streamed: false,
            ranged: false,
        });
    drop(script);
    // `{name}` in a scripted body stands for the request's `name` header.
    let mut body = reply.body;
    while let Some(start) = body.find('{') {
        let Some(len) = body[start..].find('}') else { break };
        let name = body[start + 1..start + len].to_owned();
        let value = parts
            .headers
            .get(name.as_str())
            .map_or("-", |v| v.to_str().unwrap_or("?"));
        body.replace_range(start..start + len + 1, value);
    }
    let mut status = reply.status;
    let mut headers = reply.headers;
    if reply.ranged {
        use hitbox_tower::rfc9111::range::{RangeRequest, content_range_value, parse_range};
        let etag = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("etag"))
            .map(|(_, value)| value.clone());
        let if_range = parts
            .headers
            .get("if-range")
            .map(|v| v.to_str().unwrap().to_owned());
        let holds = if_range.is_none() || if_range == etag;
        if let (Some(RangeRequest::Single(range)), true) = (parse_range(&parts.headers), holds) {
            let len = body.len() as u64;
            if let Some(span) = range.resolve(len) {
                status = 206;
                body = body[span.first as usize..=span.last as usize].to_owned();
                let value = content_range_value(span, len);
                headers.push(("content-range".to_owned(), value.to_str().unwrap().to_owned()));
            }
        }
    }
    let mut response = if reply.streamed {
        let bytes = Bytes::from(body);
        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..bytes.len())
            .step_by(16 * 1024)
            .map(|start| Ok(bytes.slice(start..(start + 16 * 1024).min(bytes.len()))))
            .collect();
        Response::new(Body::from_stream(futures::stream::iter(chunks)))
    } else {
        Response::new(Body::from(Bytes::from(body)))
    };
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub origin: Origin,
    pub cache: Cache,
    pub clock: ManualClock,
}

pub async fn setup() -> Proxy {
    setup_with(Rfc9111::new()).await
}

pub async fn setup_with(config: Rfc9111) -> Proxy {
    setup_layer(|layer| layer.rfc9111(config)).await
}

/// The scripted origin behind a layer configured by `configure` (standards
/// mode or rules).
pub async fn setup_layer(configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder) -> Proxy {
    let clock = ManualClock::new();
    let cache = Cache::builder(MokaBackend::default())
        .clock(clock.clone())
        .build();
    let origin = Origin::default();
    let layer = configure(CacheLayer::builder(cache.clone())).build();
    let app = Router::new()
        .fallback(scripted)
        .with_state(origin.clone())
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Proxy {
        addr,
        origin,
        cache,
        clock,
    }
}

/// A request written byte for byte over a fresh connection, for what no
/// HTTP client will send (two `Host` fields, an absolute-form target); the
/// answer's status and head.
pub async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        answer.extend_from_slice(&buf[..n]);
        if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text[9..12].parse().unwrap();
    (status, text)
}

pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn cache_status(&self) -> &str {
        self.headers.get("cache-status").unwrap().to_str().unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn age(&self) -> u64 {
        self.header("age").unwrap().parse().unwrap()
    }
}

impl Proxy {
    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Got {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut request = client.request(method, format!("http://{}{}", self.addr, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        Got {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        self.send(Method::GET, path, headers).await
    }

    /// Moves time forward.
    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// The clock's time as an HTTP-date, `offset` seconds away.
    pub fn date(&self, offset: i64) -> String {
        let now = (self.clock.now().as_millis() / 1000) as i64;
        format_http_date((now + offset).max(0) as u64)
    }

    /// Waits until `n` entries have been stored in all.
    pub async fn stores(&self, n: u64) {
        until(|| self.cache.stats().stores >= n).await;
    }
}

/// Polls until `done` holds, for at most 30 s.
pub async fn until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(feature = "reqwest")]
#[allow(unused_imports)]
pub use gateway::{Gateway, gateway};

#[cfg(feature = "reqwest")]
mod gateway {
    use super::*;

    /// The layer on the client side: in front of a reqwest client that talks
    /// to the scripted origin over TCP, so that the origin can go away.
    pub struct Gateway {
        pub origin: Origin,
        pub cache: Cache,
        pub clock: ManualClock,
        pub service: hitbox_tower::CacheService<hitbox_tower::client::ReqwestService>,
        pub base: String,
        server: tokio::task::JoinHandle<()>,
    }

    pub async fn gateway(config: Rfc9111) -> Gateway {
        let clock = ManualClock::new();
        let cache = Cache::builder(MokaBackend::default())
            .clock(clock.clone())
            .build();
        let origin = Origin::default();
        let app = Router::new().fallback(scripted).with_state(origin.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // No pooled connections: once the origin is gone, every request finds
        // the port closed.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let layer = CacheLayer::builder(cache.clone()).rfc9111(config).build();
        let service = tower::Layer::layer(&layer, hitbox_tower::client::ReqwestService::new(client));
        Gateway {
            origin,
            cache,
            clock,
            service,
            base: format!("http://{addr}"),
            server,
        }
    }

    impl Gateway {
        /// A `GET` through the layer: the status, headers and body, or the
        /// client's error when the origin could not be reached.
        pub async fn get(&self, path: &str) -> Result<Got, reqwest::Error> {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let request = http::Request::get(format!("{}{}", self.base, path))
                .body(reqwest::Body::from(""))
                .unwrap();
            let response = self.service.clone().oneshot(request).await?;
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.expect("a body").to_bytes();
            Ok(Got {
                status: parts.status,
                headers: parts.headers,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        }

        /// Takes the origin away: its port is closed, so connections are
        /// refused.
        pub async fn stop_origin(&self) {
            self.server.abort();
            while !self.server.is_finished() {
                tokio::task::yield_now().await;
            }
        }

        pub fn advance(&self, secs: u64) {
            self.clock.advance(Duration::from_secs(secs));
        }

        pub async fn stores(&self, n: u64) {
            until(|| self.cache.stats().stores >= n).await;
        }
    }
}
pub mod body_origin;
pub mod bus;
