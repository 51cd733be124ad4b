//! The layer over real TCP: an axum origin that counts its calls, the layer
//! in front of it (in the same axum server, or around a reqwest client), and
//! a reqwest client sending real requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use hitbox_backend::Cache;
use hitbox_core::{CachePolicy, ManualClock};
use hitbox_moka::MokaBackend;
use hitbox_tower::{CacheLayer, Rule};
use tokio::sync::Notify;

/// What the origin saw and how it should behave.
#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
    /// Calls from this number on wait for the notification.
    gate: Option<(usize, Arc<Notify>)>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl Origin {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn item(State(origin): State<Origin>, Path(id): Path<String>) -> Response {
    let n = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some((from, gate)) = &origin.gate
        && n >= *from
    {
        gate.notified().await;
    }
    if origin.fail.load(Ordering::SeqCst) {
        return (StatusCode::BAD_GATEWAY, "origin down").into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain")],
        format!("item {id} call {n}"),
    )
        .into_response()
}

async fn with_headers(State(origin): State<Origin>, Path(kind): Path<String>) -> Response {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    let mut headers = HeaderMap::new();
    match kind.as_str() {
        "cookie" => {
            headers.insert(header::SET_COOKIE, HeaderValue::from_static("session=abc"));
        }
        "private" => {
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=60"),
            );
        }
        "no-store" => {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        "error" => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        _ => {}
    }
    (headers, "headers").into_response()
}

/// A body of `size` bytes in 16 KiB chunks, with no declared length.
async fn big(State(origin): State<Origin>, Path(size): Path<usize>) -> Response {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..size)
        .step_by(16 * 1024)
        .map(|start| Ok(Bytes::from(vec![b'x'; (size - start).min(16 * 1024)])))
        .collect();
    Response::new(Body::from_stream(futures::stream::iter(chunks)))
}

/// A body that fails after its first chunk.
async fn broken(State(origin): State<Origin>) -> Response {
    origin.calls.fetch_add(1, Ordering::SeqCst);
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"first part")),
        Err(std::io::Error::other("the origin broke mid-stream")),
    ];
    Response::new(Body::from_stream(futures::stream::iter(chunks)))
}

fn routes(origin: Origin) -> Router {
    Router::new()
        .route("/item/{id}", get(item).post(item))
        .route("/headers/{kind}", get(with_headers))
        .route("/big/{size}", get(big))
        .route("/broken", get(broken))
        .with_state(origin)
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

const STAMPEDE: u64 = 1_000;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

struct Setup {
    addr: SocketAddr,
    origin: Origin,
    cache: Cache,
    clock: ManualClock,
}

/// Fresh 10 s, stale-while-revalidate 10 s, stale-if-error 60 s.
fn policy() -> CachePolicy {
    CachePolicy::new(Duration::from_secs(10))
        .stale_while_revalidate(Duration::from_secs(10))
        .stale_if_error(Duration::from_secs(60))
}

async fn setup_with(origin: Origin, configure: impl FnOnce(Cache) -> CacheLayer) -> Setup {
    let clock = ManualClock::new();
    let cache = Cache::builder(MokaBackend::default())
        .clock(clock.clone())
        .policy(policy())
        .build();
    let layer = configure(cache.clone());
    let addr = serve(routes(origin.clone()).layer(layer)).await;
    Setup {
        addr,
        origin,
        cache,
        clock,
    }
}

async fn setup() -> Setup {
    setup_with(Origin::default(), |cache| {
        CacheLayer::builder(cache).x_cache_header(true).build()
    })
    .await
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn get(&self, path: &str) -> (StatusCode, HeaderMap, String) {
        let response = client().get(self.url(path)).send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }
}

fn cache_status(headers: &HeaderMap) -> &str {
    headers.get("cache-status").unwrap().to_str().unwrap()
}

/// Polls until `done` holds, for at most 30 s: for events that only a
/// counter shows (a request reaching the origin, an entry being stored).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_stored_and_then_served_with_age_and_cache_status() {
    let s = setup().await;
    let (status, headers, body) = s.get("/item/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_status(&headers), "hitbox; fwd=miss; stored");
    assert_eq!(headers["x-cache"], "MISS");
    assert_eq!(body, "item 1 call 1");
    until(|| s.cache.stats().stores == 1).await;

    s.clock.advance(Duration::from_secs(3));
    let (status, headers, body) = s.get("/item/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "item 1 call 1");
    assert_eq!(cache_status(&headers), "hitbox; hit; ttl=7");
    assert_eq!(headers["age"], "3");
    assert_eq!(headers["x-cache"], "HIT");
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(s.origin.calls(), 1);
    // Each set once, the second hit (served from the decoded entry the
    // first one left) as well as the first.
    s.clock.advance(Duration::from_secs(1));
    let (_, headers, body) = s.get("/item/1").await;
    assert_eq!(body, "item 1 call 1");
    assert_eq!(cache_status(&headers), "hitbox; hit; ttl=6");
    for name in ["age", "cache-status", "x-cache", "content-length"] {
        assert_eq!(headers.get_all(name).iter().count(), 1, "{name}");
    }
    assert_eq!(headers["age"], "4");
    assert_eq!(headers["content-length"], "13");

    // Another path is another key.
    let (_, _, body) = s.get("/item/2").await;
    assert_eq!(body, "item 2 call 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_is_normalised_in_the_key() {
    let s = setup().await;
    s.get("/item/q?b=2&a=1").await;
    until(|| s.cache.stats().stores == 1).await;
    let (_, headers, _) = s.get("/item/q?a=1&b=2").await;
    assert!(cache_status(&headers).starts_with("hitbox; hit"), "{headers:?}");
    let (_, headers, _) = s.get("/item/q?a=1&b=3").await;
    assert!(cache_status(&headers).starts_with("hitbox; fwd=miss"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_from_the_stored_get() {
    let s = setup().await;
    let response = client().head(s.url("/item/h")).send().await.unwrap();
    assert_eq!(cache_status(response.headers()), "hitbox; fwd=miss");
    assert_eq!(s.origin.calls(), 1);
    s.get("/item/h").await;
    until(|| s.cache.stats().stores == 1).await;
    let response = client().head(s.url("/item/h")).send().await.unwrap();
    assert!(cache_status(response.headers()).starts_with("hitbox; hit"));
    assert_eq!(response.headers()["content-length"], "13");
    assert_eq!(response.bytes().await.unwrap().len(), 0);
    assert_eq!(s.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_defaults_never_share_private_responses() {
    let s = setup().await;
    for _ in 0..2 {
        let response = client()
            .get(s.url("/item/auth"))
            .header("authorization", "Bearer alice")
            .send()
            .await
            .unwrap();
        assert_eq!(
            cache_status(response.headers()),
            "hitbox; fwd=bypass; detail=authorization"
        );
        let response = client()
            .get(s.url("/item/auth"))
            .header("cookie", "a=b")
            .send()
            .await
            .unwrap();
        assert_eq!(
            cache_status(response.headers()),
            "hitbox; fwd=bypass; detail=cookie"
        );
        let response = client().post(s.url("/item/auth")).send().await.unwrap();
        assert_eq!(
            cache_status(response.headers()),
            "hitbox; fwd=bypass; detail=method"
        );
    }
    assert_eq!(s.origin.calls(), 6);

    for kind in ["cookie", "private", "no-store", "error"] {
        let (_, headers, _) = s.get(&format!("/headers/{kind}")).await;
        assert_eq!(cache_status(&headers), "hitbox; fwd=miss", "{kind}");
        // Remembered as uncacheable: the next request goes straight through.
        let (_, headers, _) = s.get(&format!("/headers/{kind}")).await;
        assert_eq!(
            cache_status(&headers),
            "hitbox; fwd=bypass; detail=uncacheable",
            "{kind}"
        );
    }
    assert_eq!(s.origin.calls(), 6 + 8);
    assert_eq!(s.cache.stats().loads, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_opted_in_become_part_of_the_key() {
    let s = setup_with(Origin::default(), |cache| {
        CacheLayer::builder(cache)
            .rule(Rule::new().cache_authorized(true).cache_with_cookies(true))
            .build()
    })
    .await;
    let as_user = |token: &'static str| {
        let url = s.url("/item/me");
        async move {
            let response = client()
                .get(url)
                .header("authorization", token)
                .send()
                .await
                .unwrap();
            let status = cache_status(response.headers()).to_owned();
            (status, response.text().await.unwrap())
        }
    };
    let (status, alice) = as_user("Bearer alice").await;
    assert_eq!(status, "hitbox; fwd=miss; stored");
    until(|| s.cache.stats().stores == 1).await;
    let (status, bob) = as_user("Bearer bob").await;
    assert_eq!(status, "hitbox; fwd=miss; stored");
    assert_ne!(alice, bob);
    until(|| s.cache.stats().stores == 2).await;
    let (status, again) = as_user("Bearer alice").await;
    assert!(status.starts_with("hitbox; hit"));
    assert_eq!(again, alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_for_one_cold_url_reach_the_origin_once() {
    let gate = Arc::new(Notify::new());
    let origin = Origin {
        gate: Some((1, Arc::clone(&gate))),
        ..Origin::default()
    };
    let s = setup_with(origin, CacheLayer::new).await;
    let client = client();
    let mut requests = Vec::new();
    for _ in 0..STAMPEDE {
        let (client, url) = (client.clone(), s.url("/item/hot"));
        requests.push(tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            let status = cache_status(response.headers()).to_owned();
            (status, response.text().await.unwrap())
        }));
    }
    until(|| s.cache.stats().joins == STAMPEDE - 1).await;
    gate.notify_one();
    let mut collapsed = 0;
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(body, "item hot call 1");
        if status == "hitbox; fwd=miss; collapsed" {
            collapsed += 1;
        } else {
            assert_eq!(status, "hitbox; fwd=miss; stored");
        }
    }
    assert_eq!(collapsed, STAMPEDE - 1);
    assert_eq!(s.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let gate = Arc::new(Notify::new());
    let origin = Origin {
        gate: Some((2, Arc::clone(&gate))),
        ..Origin::default()
    };
    let s = setup_with(origin, CacheLayer::new).await;
    s.get("/item/s").await;
    until(|| s.cache.stats().stores == 1).await;
    s.clock.advance(Duration::from_secs(12));
    // While the refresh is held at the origin, every request is served the
    // stale response at once, and no second refresh starts.
    for _ in 0..5 {
        let (_, headers, body) = s.get("/item/s").await;
        assert_eq!(body, "item s call 1");
        assert_eq!(cache_status(&headers), "hitbox; hit; ttl=-2");
    }
    until(|| s.origin.calls() == 2).await;
    assert_eq!(s.cache.stats().background_refreshes, 1);
    gate.notify_one();
    until(|| s.cache.stats().stores == 2).await;
    let (_, headers, body) = s.get("/item/s").await;
    assert_eq!(body, "item s call 2");
    assert_eq!(cache_status(&headers), "hitbox; hit; ttl=10");
    assert_eq!(s.origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_stale_response_when_the_origin_fails() {
    let s = setup().await;
    s.get("/item/e").await;
    until(|| s.cache.stats().stores == 1).await;
    s.clock.advance(Duration::from_secs(30)); // past fresh + stale-while-revalidate
    s.origin.fail.store(true, Ordering::SeqCst);
    let (status, headers, body) = s.get("/item/e").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "item e call 1");
    assert_eq!(
        cache_status(&headers),
        "hitbox; fwd=stale; fwd-status=502; ttl=-20; detail=stale-if-error"
    );
    // Past the error window the failure reaches the client.
    s.clock.advance(Duration::from_secs(61));
    let (status, _, _) = s.get("/item/e").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_untruncated_and_are_not_stored() {
    let s = setup_with(Origin::default(), |cache| {
        CacheLayer::builder(cache)
            .rule(Rule::new().max_body_size(256 * 1024))
            .build()
    })
    .await;
    for _ in 0..2 {
        let (status, headers, body) = s.get("/big/3000000").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 3_000_000, "never truncated");
        assert!(cache_status(&headers).starts_with("hitbox; fwd="));
    }
    assert_eq!(s.origin.calls(), 2);
    // A small body of unknown length is stored.
    s.get("/big/100000").await;
    until(|| s.cache.stats().stores == 1).await;
    let (_, headers, body) = s.get("/big/100000").await;
    assert_eq!(body.len(), 100_000);
    assert!(cache_status(&headers).starts_with("hitbox; hit"), "{headers:?}");
    assert_eq!(s.origin.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_body_failing_mid_stream_reaches_the_client_and_stores_nothing() {
    let s = setup().await;
    for call in 1..=2 {
        // Depending on when the server notices, the failure cuts the
        // response before its head or inside its body; either way the
        // client sees it.
        let outcome = match client().get(s.url("/broken")).send().await {
            Ok(response) => response.bytes().await.map(|_| ()),
            Err(error) => Err(error),
        };
        assert!(outcome.is_err(), "the client must see the failure");
        assert_eq!(s.origin.calls(), call);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_layers_share_one_cache_without_colliding() {
    let clock = ManualClock::new();
    let cache = Cache::builder(MokaBackend::default()).clock(clock).build();
    let origin = Origin::default();
    let short = CacheLayer::builder(cache.clone())
        .rule(
            Rule::new()
                .namespace("a")
                .policy(CachePolicy::new(Duration::from_secs(5))),
        )
        .build();
    let long = CacheLayer::builder(cache.clone())
        .rule(
            Rule::new()
                .namespace("b")
                .policy(CachePolicy::new(Duration::from_secs(500))),
        )
        .build();
    let app = Router::new()
        .route("/a/{id}", get(item).layer(short))
        .route("/b/{id}", get(item).layer(long))
        .with_state(origin.clone());
    let addr = serve(app).await;
    let get = |path: &'static str| {
        let url = format!("http://{addr}{path}");
        async move {
            let response = client().get(url).send().await.unwrap();
            cache_status(response.headers()).to_owned()
        }
    };
    assert_eq!(get("/a/1").await, "hitbox; fwd=miss; stored");
    assert_eq!(get("/b/1").await, "hitbox; fwd=miss; stored");
    until(|| cache.stats().stores == 2).await;
    assert_eq!(get("/a/1").await, "hitbox; hit; ttl=5");
    assert_eq!(get("/b/1").await, "hitbox; hit; ttl=500");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_pick_the_first_match_and_pass_the_rest_through() {
    use http::request::Parts;
    let s = setup_with(Origin::default(), |cache| {
        CacheLayer::builder(cache)
            .rule(
                Rule::new()
                    .when(|p: &Parts| p.uri.path().starts_with("/item/short"))
                    .policy(CachePolicy::new(Duration::from_secs(1))),
            )
            .rule(
                Rule::new()
                    .when(|p: &Parts| p.uri.path().starts_with("/item/"))
                    .policy(CachePolicy::new(Duration::from_secs(100))),
            )
            .build()
    })
    .await;
    s.get("/item/short").await;
    s.get("/item/long").await;
    until(|| s.cache.stats().stores == 2).await;
    assert_eq!(cache_status(&s.get("/item/short").await.1), "hitbox; hit; ttl=1");
    assert_eq!(cache_status(&s.get("/item/long").await.1), "hitbox; hit; ttl=100");
    assert_eq!(
        cache_status(&s.get("/headers/plain").await.1),
        "hitbox; fwd=bypass"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_wraps_a_reqwest_client() {
    use hitbox_tower::client::ReqwestService;
    use tower::{Service, ServiceBuilder, ServiceExt};

    let origin = Origin::default();
    let addr = serve(routes(origin.clone())).await;
    let cache = Cache::new(MokaBackend::default());
    let mut client = ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .service(ReqwestService::new(client()));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let request = http::Request::get(format!("http://{addr}/item/c"))
            .body(reqwest::Body::default())
            .unwrap();
        let response = ServiceExt::<http::Request<reqwest::Body>>::ready(&mut client)
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap();
        let status = cache_status(response.headers()).to_owned();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        seen.push((status, body));
        until(|| cache.stats().stores == 1).await;
    }
    assert_eq!(seen[0].0, "hitbox; fwd=miss; stored");
    assert!(seen[1].0.starts_with("hitbox; hit"));
    assert!(seen[2].0.starts_with("hitbox; hit"));
    assert!(seen.iter().all(|(_, body)| &body[..] == b"item c call 1"));
    assert_eq!(origin.calls(), 1);
}

async fn graphql(State(origin): State<Origin>, body: Bytes) -> Response {
    let n = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
    format!("answer to {} (call {n})", String::from_utf8_lossy(&body)).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_bodies_can_select_the_response() {
    use http::Method;
    let origin = Origin::default();
    let cache = Cache::new(MokaBackend::default());
    let layer = CacheLayer::builder(cache.clone())
        .rule(Rule::new().methods([Method::POST]).key_body(1024))
        .build();
    let app = Router::new()
        .route("/graphql", axum::routing::post(graphql).layer(layer))
        .with_state(origin.clone());
    let addr = serve(app).await;
    let post = |body: &'static str| {
        let url = format!("http://{addr}/graphql");
        async move {
            let response = client().post(url).body(body).send().await.unwrap();
            let status = cache_status(response.headers()).to_owned();
            (status, response.text().await.unwrap())
        }
    };
    let (status, first) = post("{ user(id: 1) { name } }").await;
    assert_eq!(status, "hitbox; fwd=miss; stored");
    assert_eq!(
        first, "answer to { user(id: 1) { name } } (call 1)",
        "the origin still gets the body"
    );
    until(|| cache.stats().stores == 1).await;
    let (status, again) = post("{ user(id: 1) { name } }").await;
    assert!(status.starts_with("hitbox; hit"), "{status}");
    assert_eq!(again, first);
    let (status, other) = post("{ user(id: 2) { name } }").await;
    assert_eq!(status, "hitbox; fwd=miss; stored");
    assert_eq!(other, "answer to { user(id: 2) { name } } (call 2)");
    let big: &'static str = Box::leak("x".repeat(2048).into_boxed_str());
    let (status, _) = post(big).await;
    assert_eq!(status, "hitbox; fwd=bypass; detail=body");
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_layer_caches_matched_routes_only() {
    let origin = Origin::default();
    let cache = Cache::new(MokaBackend::default());
    let app = Router::new()
        .route("/item/{id}", get(item))
        .route_layer(CacheLayer::new(cache.clone()))
        .with_state(origin.clone());
    let addr = serve(app).await;
    for expected in ["hitbox; fwd=miss; stored", "hitbox; hit"] {
        let response = client()
            .get(format!("http://{addr}/item/r"))
            .send()
            .await
            .unwrap();
        assert!(cache_status(response.headers()).starts_with(expected));
        until(|| cache.stats().stores == 1).await;
    }
    let missing = client()
        .get(format!("http://{addr}/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(
        missing.headers().get("cache-status").is_none(),
        "route_layer skips unmatched routes"
    );
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_wraps_a_hyper_client() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower::{Service, ServiceBuilder, ServiceExt};

    let origin = Origin::default();
    let addr = serve(routes(origin.clone())).await;
    let cache = Cache::new(MokaBackend::default());
    let hyper_client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut client = ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .service(hyper_client);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let request = http::Request::get(format!("http://{addr}/item/hy"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        statuses.push(cache_status(response.headers()).to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"item hy call 1");
        until(|| cache.stats().stores == 1).await;
    }
    assert_eq!(statuses[0], "hitbox; fwd=miss; stored");
    assert!(statuses[1].starts_with("hitbox; hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_headers_and_huge_keys_are_handled() {
    use hitbox_core::Extractor;
    use hitbox_tower::extract;
    let s = setup_with(Origin::default(), |cache| {
        CacheLayer::builder(cache)
            .rule(
                Rule::new().key(
                    extract::default_key()
                        .and(extract::Header::named(http::HeaderName::from_static("x-variant"))),
                ),
            )
            .build()
    })
    .await;
    // A header value that is not UTF-8 is still a key part.
    let send = |value: &'static [u8]| {
        let url = s.url("/item/odd");
        async move {
            let response = client()
                .get(url)
                .header("x-variant", HeaderValue::from_bytes(value).unwrap())
                .send()
                .await
                .unwrap();
            cache_status(response.headers()).to_owned()
        }
    };
    assert_eq!(send(b"caf\xe9").await, "hitbox; fwd=miss; stored");
    until(|| s.cache.stats().stores == 1).await;
    assert!(send(b"caf\xe9").await.starts_with("hitbox; hit"));
    assert_eq!(send(b"cafe").await, "hitbox; fwd=miss; stored");
    // Repeated and very long headers, and a query far longer than the key
    // limit: the key is digested, the response cached.
    let long = "q".repeat(6_000);
    let url = s.url(&format!("/item/long?v={long}"));
    for expected in ["hitbox; fwd=miss; stored", "hitbox; hit"] {
        let response = client()
            .get(&url)
            .header("x-variant", "a")
            .header("x-extra", "1")
            .header("x-extra", "2")
            .header("x-big", "b".repeat(8_000))
            .send()
            .await
            .unwrap();
        assert!(
            cache_status(response.headers()).starts_with(expected),
            "{expected}"
        );
        until(|| s.cache.stats().stores == 3).await;
    }
}

/// A service that records whether the instance it is called on was made
/// ready first, the way a concurrency limit would rely on.
#[derive(Clone, Default)]
struct StrictService {
    ready: bool,
    calls: Arc<AtomicUsize>,
}

impl tower::Service<http::Request<Body>> for StrictService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response, std::convert::Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.ready = true;
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<Body>) -> Self::Future {
        assert!(self.ready, "called without poll_ready on this instance");
        self.ready = false;
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok("strict".into_response()))
    }
}

#[tokio::test]
async fn the_service_made_ready_is_the_service_called() {
    use tower::{Layer, Service, ServiceExt};
    let inner = StrictService::default();
    let calls = Arc::clone(&inner.calls);
    let mut service = CacheLayer::new(Cache::new(MokaBackend::default())).layer(inner);
    for path in ["/a", "/b", "/c"] {
        let request = http::Request::get(path).body(Body::empty()).unwrap();
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Clones are independent and each honours the contract.
    let mut clone = service.clone();
    let request = http::Request::get("/d").body(Body::empty()).unwrap();
    clone.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}
