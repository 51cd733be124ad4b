//! The caching proxy over real TCP: a real axum origin that reflects the
//! request headers it received into its body, the proxy in front of it,
//! and reqwest clients (or raw sockets, for requests reqwest cannot make).
//!
//! Each security test has a first client send the field under attack to a
//! cacheable URL, and a second client without it check that it never sees
//! what the first caused, while the origin shows what it was really sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use hitbox_backend::Cache;
use hitbox_core::ManualClock;
use hitbox_examples::proxy::{self, Command, Config, DEFAULT_DROPPED, USAGE};
use hitbox_moka::MokaBackend;
use http::{HeaderMap, HeaderName};
use hyper::body::{Bytes, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

// ---------------------------------------------------------------- origin

/// What the origin does for a path.
#[derive(Clone)]
enum Behaviour {
    /// Answers at once, its body the request headers it received.
    Reflect,
    /// Never answers.
    Hang,
    /// Sends the head and a first chunk, then nothing, ever.
    StallAfterFirstChunk,
    /// Sends `chunks` chunks, `gap` apart.
    Slow { chunks: usize, gap: Duration },
}

#[derive(Clone)]
struct Script {
    cache_control: &'static str,
    behaviour: Behaviour,
}

/// A scriptable origin that records the headers of every request.
#[derive(Clone, Default)]
struct Origin {
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    seen: Arc<Mutex<HashMap<String, Vec<HeaderMap>>>>,
}

impl Origin {
    fn script(&self, path: &str, cache_control: &'static str, behaviour: Behaviour) {
        self.scripts.lock().unwrap().insert(
            path.to_owned(),
            Script {
                cache_control,
                behaviour,
            },
        );
    }

    /// The headers of every request the origin got for `path`.
    fn seen(&self, path: &str) -> Vec<HeaderMap> {
        self.seen.lock().unwrap().get(path).cloned().unwrap_or_default()
    }

    fn calls(&self, path: &str) -> usize {
        self.seen(path).len()
    }
}

/// The request headers as the origin's body shows them: `name: value`
/// lines, in the order received.
fn reflect(headers: &HeaderMap) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
        .collect()
}

/// A body that sends one chunk and then stalls forever.
struct Stall {
    sent: bool,
}

impl hyper::body::Body for Stall {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first chunk\n")))))
    }
}

/// A body fed by a channel.
struct Channel(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

async fn origin_handler(State(origin): State<Origin>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    origin
        .seen
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default()
        .push(headers.clone());
    let script = origin
        .scripts
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Script {
            cache_control: "max-age=60",
            behaviour: Behaviour::Reflect,
        });
    let body = match script.behaviour {
        Behaviour::Reflect => Body::from(reflect(&headers)),
        Behaviour::Hang => std::future::pending().await,
        Behaviour::StallAfterFirstChunk => Body::new(Stall { sent: false }),
        Behaviour::Slow { chunks, gap } => {
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for i in 0..chunks {
                    if i > 0 {
                        // The origin's pace is the behaviour under test.
                        tokio::time::sleep(gap).await;
                    }
                    if tx.send(Bytes::from(format!("chunk {i}\n"))).await.is_err() {
                        return;
                    }
                }
            });
            Body::new(Channel(rx))
        }
    };
    Response::builder()
        .header("cache-control", script.cache_control)
        .header("content-type", "text/plain")
        .body(body)
        .unwrap()
}

async fn start_origin(origin: Origin) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(origin_handler).with_state(origin);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

// ----------------------------------------------------------------- proxy

struct Harness {
    proxy: SocketAddr,
    origin: Origin,
    cache: Cache,
    clock: ManualClock,
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// Waits until the cache has stored `n` entries in all (a bounded poll:
    /// a response is stored once its body has streamed through).
    async fn stored(&self, n: u64) {
        for _ in 0..500 {
            if self.cache.stats().stores >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} stores, got {}", self.cache.stats().stores);
    }
}

/// The origin, and the proxy in front of it configured from `args` (after
/// `--upstream`), then `configure`.
async fn start_with(args: &[&str], configure: impl FnOnce(&mut Config)) -> Harness {
    let origin = Origin::default();
    let origin_addr = start_origin(origin.clone()).await;
    let upstream = format!("http://{origin_addr}");
    let mut argv = vec!["--upstream", upstream.as_str()];
    argv.extend_from_slice(args);
    let Ok(Command::Run(mut config)) = proxy::parse_args(argv) else {
        panic!("the test's arguments parse");
    };
    configure(&mut config);
    start_proxy(*config, origin).await
}

async fn start_proxy(config: Config, origin: Origin) -> Harness {
    let clock = ManualClock::new();
    let cache = Cache::builder(MokaBackend::default())
        .clock(clock.clone())
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let app = proxy::app(&config, cache.clone());
    tokio::spawn(async move { proxy::serve(listener, app).await.unwrap() });
    Harness {
        proxy,
        origin,
        cache,
        clock,
    }
}

async fn start() -> Harness {
    start_with(&[], |_| {}).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn cache_status(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("cache-status")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Whether the response was served from the cache (`hitbox; hit...`).
fn is_hit(response: &reqwest::Response) -> bool {
    cache_status(response).starts_with("hitbox; hit")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

/// One HTTP/1.1 exchange over a raw socket (for request forms reqwest does
/// not make): the status, the response head, and the de-chunked body.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the proxy answers and closes")
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

// ------------------------------------------------------ forwarding fields

#[tokio::test]
async fn client_forwarding_headers_are_replaced_and_never_reach_another_client() {
    let h = start().await;
    let url = h.url("/fwd");
    let a = client()
        .get(&url)
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=6.6.6.6;host=evil.example;proto=https")
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    assert!(a.headers().get_all("via").iter().any(|v| v == "1.1 hitbox"));
    let body_a = a.text().await.unwrap();
    for hostile in ["evil.example", "6.6.6.6", "https"] {
        assert!(
            !body_a.contains(hostile),
            "{hostile} reached the origin:\n{body_a}"
        );
    }

    // The origin saw the proxy's own values, and nothing else.
    let seen = &h.origin.seen("/fwd")[0];
    let host = h.proxy.to_string();
    assert_eq!(header(seen, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(seen, "x-forwarded-host"), Some(host.as_str()));
    assert_eq!(header(seen, "x-forwarded-proto"), Some("http"));
    let forwarded = format!("for=127.0.0.1;host=\"{host}\";proto=http");
    assert_eq!(header(seen, "forwarded"), Some(forwarded.as_str()));
    assert_eq!(header(seen, "via"), Some("1.1 hitbox"));
    for name in [
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "forwarded",
    ] {
        assert_eq!(seen.get_all(name).iter().count(), 1, "{name} sent once");
    }

    // Client B, without any of it, gets A's stored response: clean.
    h.stored(1).await;
    let b = client().get(&url).send().await.unwrap();
    assert!(is_hit(&b), "{}", cache_status(&b));
    let body_b = b.text().await.unwrap();
    assert_eq!(body_b, body_a);
    assert!(!body_b.contains("evil.example"));
    assert_eq!(h.origin.calls("/fwd"), 1);
}

#[tokio::test]
async fn an_ipv6_client_is_bracketed_and_quoted_in_forwarded() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let origin = Origin::default();
    let origin_addr = start_origin(origin.clone()).await;
    let config = Config::new(format!("http://{origin_addr}").parse().unwrap());
    let proxy = listener.local_addr().unwrap();
    let app = proxy::app(&config, Cache::new(MokaBackend::default()));
    tokio::spawn(async move { proxy::serve(listener, app).await.unwrap() });

    let response = client().get(format!("http://{proxy}/v6")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = &origin.seen("/v6")[0];
    assert_eq!(header(seen, "x-forwarded-for"), Some("::1"));
    let forwarded = format!("for=\"[::1]\";host=\"{proxy}\";proto=http");
    assert_eq!(header(seen, "forwarded"), Some(forwarded.as_str()));
}

#[tokio::test]
async fn a_connection_header_cannot_remove_a_field_after_it_was_keyed() {
    // `Connection: x-forwarded-host` would make a later hop-by-hop pass
    // remove the proxy's own value; the proxy strips first, then sets.
    let h = start().await;
    let (status, _, body) = raw(
        h.proxy,
        "GET /conn HTTP/1.1\r\nHost: site.example\r\nConnection: close, x-forwarded-host, x-secret\r\n\
         X-Secret: 1\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("evil.example") && !body.contains("x-secret"),
        "{body}"
    );
    let seen = &h.origin.seen("/conn")[0];
    assert_eq!(header(seen, "x-forwarded-host"), Some("site.example"));
    assert!(seen.get("x-secret").is_none());
}

#[tokio::test]
async fn trusted_forwarding_headers_are_kept_appended_and_keyed() {
    let h = start_with(&["--trust-forwarded"], |_| {}).await;
    let url = h.url("/trusted");
    let host = h.proxy.to_string();

    let a = client()
        .get(&url)
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.7;proto=https")
        .send()
        .await
        .unwrap();
    let body_a = a.text().await.unwrap();
    assert!(body_a.contains("x-forwarded-proto: https"), "{body_a}");
    let seen = &h.origin.seen("/trusted")[0];
    assert_eq!(header(seen, "x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(header(seen, "x-forwarded-proto"), Some("https"));
    assert_eq!(header(seen, "x-forwarded-host"), Some(host.as_str()));
    let forwarded = format!("for=203.0.113.7;proto=https, for=127.0.0.1;host=\"{host}\";proto=http");
    assert_eq!(header(seen, "forwarded"), Some(forwarded.as_str()));
    h.stored(1).await;

    // Same chain, other protocol: another entry, not A's.
    let b = client()
        .get(&url)
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "http")
        .header("forwarded", "for=203.0.113.7;proto=https")
        .send()
        .await
        .unwrap();
    assert!(!is_hit(&b), "{}", cache_status(&b));
    let body_b = b.text().await.unwrap();
    assert!(
        body_b.contains("x-forwarded-proto: http\n") && !body_b.contains("https\n"),
        "{body_b}"
    );
    assert_eq!(h.origin.calls("/trusted"), 2);
    h.stored(2).await;

    // No forwarding fields at all: yet another entry.
    let c = client().get(&url).send().await.unwrap();
    assert!(!is_hit(&c));
    assert!(!c.text().await.unwrap().contains("203.0.113.7"));
    assert_eq!(h.origin.calls("/trusted"), 3);

    // A's fields again: A's entry.
    let d = client()
        .get(&url)
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.7;proto=https")
        .send()
        .await
        .unwrap();
    assert!(is_hit(&d), "{}", cache_status(&d));
    assert_eq!(d.text().await.unwrap(), body_a);
    assert_eq!(h.origin.calls("/trusted"), 3);
}

// --------------------------------------------------------- dropped fields

#[tokio::test]
async fn routing_override_headers_never_reach_the_origin_nor_another_client() {
    let h = start_with(&["--drop-header", "X-Custom-Route"], |_| {}).await;
    let url = h.url("/drop");
    let a = client()
        .get(&url)
        .header("x-original-url", "/admin")
        .header("x-rewrite-url", "/admin")
        .header("x-http-method-override", "DELETE")
        .header("x-forwarded-server", "evil.example")
        .header("x-custom-route", "/admin")
        .send()
        .await
        .unwrap();
    let body_a = a.text().await.unwrap();
    assert!(!body_a.contains("/admin") && !body_a.contains("DELETE") && !body_a.contains("evil"));
    let seen = &h.origin.seen("/drop")[0];
    for name in DEFAULT_DROPPED.iter().chain(&["x-custom-route"]) {
        assert!(seen.get(*name).is_none(), "{name} reached the origin");
    }

    h.stored(1).await;
    let b = client().get(&url).send().await.unwrap();
    assert!(is_hit(&b));
    assert_eq!(b.text().await.unwrap(), body_a);
    assert_eq!(h.origin.calls("/drop"), 1);
}

#[tokio::test]
async fn no_default_drops_passes_the_routing_headers_through() {
    let h = start_with(&["--no-default-drops", "--drop-header", "x-rewrite-url"], |_| {}).await;
    client()
        .get(h.url("/nodrop"))
        .header("x-original-url", "/admin")
        .header("x-rewrite-url", "/admin")
        .send()
        .await
        .unwrap();
    let seen = &h.origin.seen("/nodrop")[0];
    assert_eq!(header(seen, "x-original-url"), Some("/admin"));
    assert!(seen.get("x-rewrite-url").is_none());
}

// ------------------------------------------------------------------- host

#[tokio::test]
async fn the_origin_gets_the_host_the_key_was_built_from() {
    let h = start().await;
    // Absolute form without `Host`: the key's host is victim.example
    // (lowercased), and so is the origin's.
    let (status, _, body_a) = raw(
        h.proxy,
        "GET http://Victim.EXAMPLE/host HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body_a.contains("host: victim.example\n"), "{body_a}");
    assert!(body_a.contains("x-forwarded-host: victim.example\n"), "{body_a}");
    let seen = h.origin.seen("/host")[0].clone();
    assert_eq!(header(&seen, "host"), Some("victim.example"));
    h.stored(1).await;

    // A client of the proxy's own host does not get victim.example's entry.
    let b = client().get(h.url("/host")).send().await.unwrap();
    assert!(!is_hit(&b));
    let body_b = b.text().await.unwrap();
    assert!(!body_b.contains("victim.example"), "{body_b}");
    assert!(body_b.contains(&format!("host: {}\n", h.proxy)), "{body_b}");
    assert_eq!(h.origin.calls("/host"), 2);

    // A client asking for victim.example (in any case) gets it.
    let (status, head, body_c) = raw(
        h.proxy,
        "GET /host HTTP/1.1\r\nHost: VICTIM.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("cache-status: hitbox; hit"),
        "{head}"
    );
    assert_eq!(body_c, body_a);
    assert_eq!(h.origin.calls("/host"), 2);
}

#[tokio::test]
async fn ambiguous_or_malformed_hosts_are_refused() {
    let h = start().await;
    for request in [
        "GET /bad HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        "GET http://a.example/bad HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        "GET /bad HTTP/1.1\r\nHost: user@a.example\r\nConnection: close\r\n\r\n",
        "GET /bad HTTP/1.1\r\nHost: a.example/x\r\nConnection: close\r\n\r\n",
    ] {
        let (status, _, _) = raw(h.proxy, request).await;
        assert_eq!(status, 400, "{request:?}");
    }
    assert_eq!(h.origin.calls("/bad"), 0);
}

// --------------------------------------------------------------- timeouts

#[tokio::test]
async fn a_hanging_origin_gets_504_after_the_response_timeout() {
    let h = start_with(&["--response-timeout", "0.3"], |_| {}).await;
    h.origin.script("/hang", "max-age=60", Behaviour::Hang);
    let started = Instant::now();
    let response = client().get(h.url("/hang")).send().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(
        cache_status(&response).contains("detail=upstream-timeout"),
        "{}",
        cache_status(&response)
    );
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // The client sees no detail about the upstream.
    assert_eq!(response.text().await.unwrap(), "504 Gateway Timeout\n");
}

#[tokio::test]
async fn an_unreachable_upstream_gets_502() {
    // A port nobody listens on: bound, then released.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let config = Config::new(format!("http://{closed}").parse().unwrap());
    let h = start_proxy(config, Origin::default()).await;
    let response = client().get(h.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(
        cache_status(&response).contains("detail=unreachable"),
        "{}",
        cache_status(&response)
    );
}

#[tokio::test]
async fn a_connect_timeout_gets_504_not_502() {
    // A local blackhole: a listener that never accepts, its accept queue
    // filled, so that Linux drops further SYNs and a connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let blackhole = socket.listen(1).unwrap();
    let addr = blackhole.local_addr().unwrap();
    let mut held = Vec::new();
    let mut full = false;
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(stream) => held.push(stream.unwrap()),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "the accept queue never filled");

    let mut config = Config::new(format!("http://{addr}").parse().unwrap());
    config.connect_timeout = Duration::from_millis(300);
    let h = start_proxy(config, Origin::default()).await;
    let started = Instant::now();
    let response = client().get(h.url("/")).send().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert!(
        cache_status(&response).contains("detail=upstream-timeout"),
        "{}",
        cache_status(&response)
    );
    // Well before the 30 s response-head timeout: the connect timeout fired.
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    drop((held, blackhole));
}

#[tokio::test]
async fn a_stalled_body_fails_after_the_idle_timeout_and_is_not_stored() {
    let h = start_with(&["--idle-timeout", "0.3"], |_| {}).await;
    h.origin
        .script("/stall", "max-age=60", Behaviour::StallAfterFirstChunk);
    let started = Instant::now();
    let a = client().get(h.url("/stall")).send().await.unwrap();
    assert_eq!(a.status(), 200);
    let read = tokio::time::timeout(Duration::from_secs(5), a.bytes()).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(read, Ok(Err(_))),
        "the cut-off body is an error: {read:?}"
    );
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");

    // The truncated response was not stored: B gets the origin's whole one.
    h.origin.script("/stall", "max-age=60", Behaviour::Reflect);
    let b = client().get(h.url("/stall")).send().await.unwrap();
    assert!(!is_hit(&b), "{}", cache_status(&b));
    let body_b = b.text().await.unwrap();
    assert!(
        !body_b.contains("first chunk") && body_b.contains("x-forwarded-for"),
        "{body_b}"
    );
    assert_eq!(h.origin.calls("/stall"), 2);
}

#[tokio::test]
async fn a_slow_body_that_keeps_moving_is_not_cut() {
    // Five chunks 100 ms apart: longer in all than the idle timeout, never
    // idle for that long.
    let h = start_with(&["--idle-timeout", "0.3", "--response-timeout", "0.3"], |_| {}).await;
    let gap = Duration::from_millis(100);
    h.origin
        .script("/slow", "max-age=60", Behaviour::Slow { chunks: 5, gap });
    let started = Instant::now();
    let body = client()
        .get(h.url("/slow"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
}

#[tokio::test]
async fn a_timeout_serves_the_stale_response_where_stale_if_error_allows() {
    let h = start_with(&["--response-timeout", "0.3"], |_| {}).await;
    h.origin
        .script("/sie", "max-age=1, stale-if-error=60", Behaviour::Reflect);
    let body_a = client()
        .get(h.url("/sie"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    h.stored(1).await;

    // Stale by the cache's clock, and the origin now hangs.
    h.clock.advance(Duration::from_secs(5));
    h.origin
        .script("/sie", "max-age=1, stale-if-error=60", Behaviour::Hang);
    let started = Instant::now();
    let b = client().get(h.url("/sie")).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(b.status(), 200);
    assert!(
        cache_status(&b).contains("stale-if-error"),
        "{}",
        cache_status(&b)
    );
    assert_eq!(b.text().await.unwrap(), body_a);
    assert_eq!(h.origin.calls("/sie"), 2, "the origin was asked, and timed out");

    // Past the stale-if-error window, the timeout is the client's.
    h.clock.advance(Duration::from_secs(120));
    let c = client().get(h.url("/sie")).send().await.unwrap();
    assert_eq!(c.status(), 504);
}

#[tokio::test]
async fn by_default_a_failing_upstream_is_answered_with_a_briefly_stale_response() {
    for (args, served) in [
        (&["--response-timeout", "0.3"][..], true),
        (
            &["--response-timeout", "0.3", "--stale-if-disconnected", "0"][..],
            false,
        ),
    ] {
        let h = start_with(args, |_| {}).await;
        // No stale-if-error: only serving stale when disconnected applies.
        h.origin.script("/grace", "max-age=1", Behaviour::Reflect);
        let first = client().get(h.url("/grace")).send().await.unwrap();
        let body = first.text().await.unwrap();
        h.stored(1).await;
        h.clock.advance(Duration::from_secs(5));
        h.origin.script("/grace", "max-age=1", Behaviour::Hang);
        let got = client().get(h.url("/grace")).send().await.unwrap();
        if served {
            assert_eq!(got.status(), 200);
            assert!(
                cache_status(&got).contains("fwd=stale; ttl=-4; detail=stale-if-disconnected"),
                "{}",
                cache_status(&got)
            );
            assert_eq!(got.text().await.unwrap(), body);
            // Past the grace window, the timeout is the client's.
            h.clock.advance(Duration::from_secs(20));
            assert_eq!(client().get(h.url("/grace")).send().await.unwrap().status(), 504);
        } else {
            assert_eq!(got.status(), 504, "{args:?}");
        }
    }
}

// ------------------------------------------------------------ command line

fn run(args: &[&str]) -> (Result<Config, u8>, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = proxy::command_line(args.iter().copied(), &mut out, &mut err);
    (
        result,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn help_prints_every_flag_with_its_default_to_stdout_and_exits_0() {
    for flag in ["--help", "-h"] {
        let (result, out, err) = run(&["--upstream", "http://127.0.0.1:1", flag]);
        assert_eq!(result.err(), Some(0));
        assert_eq!(out, USAGE);
        assert!(err.is_empty());
    }
    let (_, out, _) = run(&["--help"]);
    for flag in [
        "--upstream",
        "--listen",
        "--redis",
        "--config FILE",
        "--trust-forwarded",
        "--drop-header",
        "--no-default-drops",
        "--connect-timeout",
        "--response-timeout",
        "--idle-timeout",
        "--stale-if-disconnected",
        "--help",
    ] {
        assert!(out.contains(flag), "{flag} missing from the help");
    }
    for default in [
        "default 127.0.0.1:8080",
        "default 5)",
        "default 30)",
        "default 10; 0: off)",
        "default: moka only",
        "default: off",
        "X-Original-URL, X-Rewrite-URL",
    ] {
        assert!(out.contains(default), "{default} missing from the help");
    }
}

#[test]
fn a_bad_command_line_prints_the_usage_to_stderr_and_exits_2() {
    for args in [
        &["--upstream", "http://127.0.0.1:1", "--bogus"][..],
        &["--upstream"],
        &[],
        &["--upstream", "https://127.0.0.1:1"],
        &["--upstream", "http://127.0.0.1:1", "--idle-timeout", "0"],
        &["--upstream", "http://127.0.0.1:1", "--connect-timeout", "soon"],
        &["--upstream", "http://127.0.0.1:1", "--drop-header", "bad name"],
        &["--upstream", "http://127.0.0.1:1", "--drop-header", "Host"],
        &["--upstream", "http://127.0.0.1:1", "--trust-forwarded=yes"],
        &[
            "--upstream",
            "http://127.0.0.1:1",
            "--stale-if-disconnected",
            "-1",
        ],
    ] {
        let (result, out, err) = run(args);
        assert_eq!(result.err(), Some(2), "{args:?}");
        assert!(out.is_empty(), "{args:?}");
        assert!(
            err.ends_with(USAGE) && err.starts_with("proxy: "),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn flags_and_defaults() {
    let (Ok(config), _, _) = run(&["--upstream", "http://127.0.0.1:1"]) else {
        panic!()
    };
    assert!(!config.trust_forwarded);
    assert_eq!(config.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.response_timeout, Duration::from_secs(30));
    assert_eq!(config.idle_timeout, Duration::from_secs(30));
    assert_eq!(config.stale_if_disconnected, Duration::from_secs(10));
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.drop_headers, DEFAULT_DROPPED.map(HeaderName::from_static));

    let (Ok(config), _, _) = run(&[
        "--drop-header",
        "X-Extra",
        "--upstream=http://127.0.0.1:1",
        "--no-default-drops",
        "--drop-header=x-original-url",
        "--connect-timeout=1.5",
        "--response-timeout",
        "2",
        "--idle-timeout",
        "0.25",
        "--listen",
        "[::1]:9000",
        "--trust-forwarded",
        "--stale-if-disconnected=60",
    ]) else {
        panic!()
    };
    // The defaults unless --no-default-drops, plus every --drop-header,
    // whatever the order.
    let drops: Vec<&str> = config.drop_headers.iter().map(HeaderName::as_str).collect();
    assert_eq!(drops, ["x-extra", "x-original-url"]);
    assert!(config.trust_forwarded);
    assert_eq!(config.connect_timeout, Duration::from_millis(1500));
    assert_eq!(config.response_timeout, Duration::from_secs(2));
    assert_eq!(config.idle_timeout, Duration::from_millis(250));
    assert_eq!(config.stale_if_disconnected, Duration::from_secs(60));
    assert_eq!(config.listen, "[::1]:9000".parse().unwrap());
}

// ------------------------------------------------------------------ PURGE

async fn purge(harness: &Harness, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let method = reqwest::Method::from_bytes(b"PURGE").unwrap();
    let mut request = client().request(method, format!("http://{}{path}", harness.proxy));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Stores `path`, then checks that the next `GET` is a hit.
async fn stored(harness: &Harness, path: &str) {
    let url = format!("http://{}{path}", harness.proxy);
    let stores = harness.cache.stats().stores;
    let first = client().get(&url).send().await.unwrap();
    assert!(
        cache_status(&first).contains("stored"),
        "{}",
        cache_status(&first)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while harness.cache.stats().stores <= stores {
        assert!(Instant::now() < deadline, "stored in time");
        tokio::task::yield_now().await;
    }
    assert!(is_hit(&client().get(&url).send().await.unwrap()));
}

#[tokio::test]
async fn purge_is_405_for_a_client_not_in_the_acl_and_purges_nothing() {
    for args in [&[][..], &["--purge-allow", "10.0.0.0/8,192.0.2.1"][..]] {
        let harness = start_with(args, |_| {}).await;
        stored(&harness, "/page").await;
        let (status, _) = purge(&harness, "/page", &[]).await;
        assert_eq!(status, 405, "{args:?}");
        let again = client()
            .get(format!("http://{}/page", harness.proxy))
            .send()
            .await
            .unwrap();
        assert!(is_hit(&again), "{args:?}: nothing purged");
    }
}

#[tokio::test]
async fn purge_from_an_allowed_client_purges_the_url_hard_or_soft() {
    let harness = start_with(&["--purge-allow", "10.0.0.0/8, 127.0.0.0/8"], |_| {}).await;
    stored(&harness, "/page").await;
    stored(&harness, "/other").await;
    assert_eq!(
        purge(&harness, "/page", &[]).await,
        (200, "purged 1\n".to_owned())
    );
    let url = |path: &str| format!("http://{}{path}", harness.proxy);
    let after = client().get(url("/page")).send().await.unwrap();
    assert!(!is_hit(&after), "{}", cache_status(&after));
    assert!(
        is_hit(&client().get(url("/other")).send().await.unwrap()),
        "another URL stays"
    );

    let soft = purge(&harness, "/other", &[("hitbox-purge", "soft")]).await;
    assert_eq!(soft, (200, "purged 1\n".to_owned()));
    let after = client().get(url("/other")).send().await.unwrap();
    assert!(
        !cache_status(&after).starts_with("hitbox; hit; ttl=6"),
        "{}",
        cache_status(&after)
    );

    let (status, body) = purge(&harness, "/page", &[("hitbox-purge", "sideways")]).await;
    assert_eq!(status, 400, "{body}");
}

#[test]
fn purge_allow_parses_addresses_and_cidrs_and_refuses_the_rest() {
    let (result, _, _) = run(&[
        "--upstream",
        "http://127.0.0.1:1",
        "--purge-allow",
        "127.0.0.1,10.0.0.0/8,::1",
    ]);
    let allow = result.unwrap().purge_allow;
    let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
    assert!(allow.iter().any(|range| range.contains(ip("10.200.3.4"))));
    assert!(
        allow.iter().any(|range| range.contains(ip("::ffff:10.0.0.1"))),
        "mapped IPv4"
    );
    assert!(allow.iter().any(|range| range.contains(ip("::1"))));
    assert!(!allow.iter().any(|range| range.contains(ip("127.0.0.2"))));
    assert!(!allow.iter().any(|range| range.contains(ip("11.0.0.1"))));
    let everyone: proxy::AddrRange = "0.0.0.0/0".parse().unwrap();
    assert!(everyone.contains(ip("203.0.113.9")));
    assert!(
        !everyone.contains(ip("2001:db8::1")),
        "an IPv4 range holds no IPv6 address"
    );
    for bad in ["10.0.0.0/33", "localhost", "::1/129", "10.0.0.0/x"] {
        let (result, _, err) = run(&["--upstream", "http://127.0.0.1:1", "--purge-allow", bad]);
        assert_eq!(result.err(), Some(2), "{bad}");
        assert!(err.contains("--purge-allow"), "{err}");
    }
    let (result, _, _) = run(&["--upstream", "http://127.0.0.1:1"]);
    assert!(result.unwrap().purge_allow.is_empty(), "nobody by default");
}
