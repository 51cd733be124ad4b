//! One origin call per cold key across instances: several layers, each
//! with its own `Cache` (a moka L1 over one real Redis) and a `RedisLock`,
//! in front of one axum origin over TCP that counts its calls; real
//! reqwest clients. Standalone Redis and cluster.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing;
use bytes::Bytes;
use hitbox_backend::{Cache, Compose};
use hitbox_core::CachePolicy;
use hitbox_moka::MokaBackend;
use hitbox_redis::{RedisBackend, RedisLock};
use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::{CacheLayer, CacheLayerBuilder, Rule};
use tokio::time::Instant;

/// Every request names one host, as behind a load balancer: every
/// instance keys it alike.
const HOST: &str = "api.example";

fn env(var: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{var} is not set: this test needs the Redis that ./scripts/test.sh starts \
             (or run `source scripts/services.sh && start_services` first, in the same shell)"
        ),
    }
}

fn standalone() -> String {
    env("HITBOX_TEST_REDIS_URL")
}

fn cluster() -> String {
    env("HITBOX_TEST_REDIS_CLUSTER_URL")
}

fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("hitbox-test:{test}:{}-{nanos}-{n}:", std::process::id())
}

/// Polls `check` every 5 ms until it holds (at most 20 s).
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The origin: counts its calls; `/gated/..` waits for the gate,
/// `/hang-first/..` never answers its first call, `/slow/..` streams its
/// body over 1.2 s; every answer may be stored for a minute.
#[derive(Clone)]
struct Origin {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Origin {
    async fn start() -> Origin {
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::watch::channel(false).0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = (Arc::clone(&calls), Arc::clone(&gate));
        let app = Router::new()
            .route("/{*path}", routing::get(answer))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Origin { addr, calls, gate }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }
}

type OriginState = (Arc<AtomicUsize>, Arc<tokio::sync::watch::Sender<bool>>);

async fn answer(State((calls, gate)): State<OriginState>, uri: Uri) -> Response {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    let path = uri.path().to_owned();
    if path.starts_with("/gated/") {
        let mut open = gate.subscribe();
        let _ = open.wait_for(|open| *open).await;
    }
    if path.starts_with("/hang-first/") && n == 1 {
        std::future::pending::<()>().await;
    }
    let text = format!("{path} (call {n})");
    let body = if path.starts_with("/slow/") {
        let chunks = futures::stream::unfold(0, move |i| {
            let text = text.clone();
            async move {
                if i == 6 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let chunk = if i == 5 { text } else { String::from(".") };
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), i + 1))
            }
        });
        Body::from_stream(chunks)
    } else {
        Body::from(text)
    };
    Response::builder()
        .header("cache-control", "public, max-age=60")
        .body(body)
        .unwrap()
}

/// The instance's own handler: forwards to the origin, streaming its body.
async fn forward(State((client, origin)): State<(reqwest::Client, SocketAddr)>, uri: Uri) -> Response {
    let url = format!("http://{origin}{}", uri.path());
    let Ok(response) = client.get(url).send().await else {
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap();
    };
    let mut out = Response::builder().status(response.status().as_u16());
    for (name, value) in response.headers() {
        if name == "cache-control" || name == "content-length" {
            out = out.header(name.as_str(), value.as_bytes());
        }
    }
    let chunks = futures::stream::unfold(response, |mut response| async move {
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, reqwest::Error>(chunk), response)),
            _ => None,
        }
    });
    out.body(Body::from_stream(chunks)).unwrap()
}

/// One instance: its own Redis connections, moka L1 and lock, a layer
/// over them, served over TCP.
struct Instance {
    addr: SocketAddr,
    lock: RedisLock,
    cache: Cache,
}

async fn redis(url: &str, prefix: &str) -> RedisBackend {
    let redis = RedisBackend::builder()
        .url(url)
        .key_prefix(prefix)
        .read_timeout(Duration::from_secs(2))
        .write_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    redis.wait_connected(Duration::from_secs(10)).await.unwrap();
    redis
}

fn app(
    redis: &RedisBackend,
    origin: &Origin,
    lease: Duration,
    configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder,
) -> (Router, RedisLock, Cache) {
    let cache = Cache::builder(MokaBackend::new(16 << 20).compose(redis.clone()))
        .policy(CachePolicy::new(Duration::from_secs(60)))
        .build();
    // Loose, for a busy test machine (the default is 500 ms).
    let lock = RedisLock::new(redis)
        .lease(lease)
        .command_timeout(Duration::from_secs(2));
    let layer = configure(CacheLayer::builder(cache.clone()).distributed_lock(lock.clone())).build();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let app = Router::new()
        .route("/{*path}", routing::get(forward))
        .with_state((client, origin.addr))
        .layer(layer);
    (app, lock, cache)
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn instance(
    url: &str,
    prefix: &str,
    origin: &Origin,
    lease: Duration,
    configure: impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder,
) -> Instance {
    let redis = redis(url, prefix).await;
    let (app, lock, cache) = app(&redis, origin, lease, configure);
    Instance {
        addr: serve(app).await,
        lock,
        cache,
    }
}

struct Got {
    status: u16,
    cache_status: String,
    body: String,
}

async fn get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> Got {
    let response = client
        .get(format!("http://{addr}{path}"))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let cache_status = response
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = String::from_utf8(response.bytes().await.unwrap().to_vec()).unwrap();
    Got {
        status,
        cache_status,
        body,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Rules,
    Standards,
}

fn configure(mode: Mode) -> impl FnOnce(CacheLayerBuilder) -> CacheLayerBuilder {
    move |layer| match mode {
        Mode::Rules => layer.rule(Rule::new()),
        Mode::Standards => layer.rfc9111(Rfc9111::new()),
    }
}

/// 1,000 concurrent requests for one cold key, spread over four
/// instances: one origin call, and every response is its answer.
/// One thousand-request test at a time: on a small machine, several at
/// once can starve a lock command past its timeout, and the request then
/// (rightly) goes to the origin without the lock.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_origin_call_for_a_thousand_requests(url: &str, mode: Mode) {
    let _alone = HEAVY.lock().await;
    let origin = Origin::start().await;
    let prefix = unique_prefix("lock-thousand");
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(instance(url, &prefix, &origin, Duration::from_secs(10), configure(mode)).await);
    }
    let client = client();
    let path = "/gated/cold";
    let mut requests = Vec::new();
    for i in 0..1_000 {
        let (client, addr) = (client.clone(), instances[i % 4].addr);
        requests.push(tokio::spawn(async move { get(&client, addr, path).await }));
    }
    // The origin holds its answer until the three instances that lost
    // the lock are waiting for the announcement.
    until("one instance loads", || origin.calls() >= 1).await;
    until("the three others wait", || {
        instances.iter().map(|i| i.lock.waiting()).sum::<usize>() == 3
    })
    .await;
    // And every other request has joined its instance's load: none can
    // arrive after the answer and be a plain hit, however slow the machine.
    until("every request has joined a load", || {
        instances.iter().map(|i| i.cache.stats().joins).sum::<u64>() == 1_000 - 4
    })
    .await;
    origin.open();
    let (mut collapsed, mut led) = (0, 0);
    for request in requests {
        let got = request.await.unwrap();
        assert_eq!(got.status, 200, "{mode:?}");
        assert_eq!(got.body, "/gated/cold (call 1)", "{mode:?}");
        // Collapsed into a load (this instance's or another's), or a hit
        // for the few sent after the entry was stored.
        if got.cache_status.contains("collapsed") {
            collapsed += 1;
        } else if !got.cache_status.starts_with("hitbox; hit") {
            assert!(
                got.cache_status.starts_with("hitbox; fwd=miss"),
                "{}",
                got.cache_status
            );
            led += 1;
        }
    }
    assert_eq!(
        origin.calls(),
        1,
        "{mode:?}: one origin call across the instances"
    );
    assert_eq!(led, 1, "{mode:?}: one request led the load");
    // Every request but the four instances' own loads joined one.
    assert!(collapsed >= 996, "{mode:?}: {collapsed} collapsed");
    // And the entry is shared: each instance hits it now.
    for instance in &instances {
        let got = get(&client, instance.addr, path).await;
        assert!(
            got.cache_status.starts_with("hitbox; hit"),
            "{mode:?}: {}",
            got.cache_status
        );
    }
    assert_eq!(origin.calls(), 1);
    drop(instances);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_call_for_a_thousand_requests_over_four_instances() {
    one_origin_call_for_a_thousand_requests(&standalone(), Mode::Rules).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_call_for_a_thousand_requests_over_four_instances_on_a_cluster() {
    one_origin_call_for_a_thousand_requests(&cluster(), Mode::Rules).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_call_for_a_thousand_requests_in_standards_mode() {
    one_origin_call_for_a_thousand_requests(&standalone(), Mode::Standards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_call_for_a_thousand_requests_in_standards_mode_on_a_cluster() {
    one_origin_call_for_a_thousand_requests(&cluster(), Mode::Standards).await;
}

/// A leader whose process dies mid-load (its runtime, with every task and
/// connection, is dropped: nothing releases the lock or renews it) is
/// taken over by another instance once its lease runs out.
async fn a_leader_killed_mid_load_is_taken_over(url: &str) {
    let origin = Origin::start().await;
    let prefix = unique_prefix("lock-killed");
    let lease = Duration::from_millis(1_500);
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let leader = {
        let (url, prefix, origin) = (url.to_owned(), prefix.clone(), origin.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let redis = redis(&url, &prefix).await;
                let (app, _lock, _cache) = app(&redis, &origin, lease, configure(Mode::Rules));
                addr_tx.send(serve(app).await).unwrap();
                let _ = kill_rx.await;
            });
            // Every task of the instance goes with its runtime.
            drop(runtime);
        })
    };
    let leader_addr = addr_rx.await.unwrap();
    let other = instance(url, &prefix, &origin, lease, configure(Mode::Rules)).await;
    let client = client();
    let path = "/hang-first/killed";
    let lost = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .get(format!("http://{leader_addr}{path}"))
                .header("host", HOST)
                .send()
                .await
        }
    });
    until("the leader loads", || origin.calls() == 1).await;
    let waiting = tokio::spawn({
        let client = client.clone();
        let addr = other.addr;
        async move { get(&client, addr, path).await }
    });
    until("the other instance waits", || other.lock.waiting() == 1).await;
    let killed = Instant::now();
    kill_tx.send(()).unwrap();
    leader.join().unwrap();
    let got = waiting.await.unwrap();
    let took = killed.elapsed();
    assert_eq!(got.body, "/hang-first/killed (call 2)");
    assert_eq!(origin.calls(), 2);
    assert!(
        took <= lease + Duration::from_millis(700),
        "taken over {took:?} after the leader died (lease {lease:?})"
    );
    assert!(
        lost.await.unwrap().is_err(),
        "the dead leader's client got no answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_load_is_taken_over_within_the_lease() {
    a_leader_killed_mid_load_is_taken_over(&standalone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_load_is_taken_over_within_the_lease_on_a_cluster() {
    a_leader_killed_mid_load_is_taken_over(&cluster()).await;
}

/// A waiter whose wait (the lock timeout) runs out asks the origin itself.
async fn a_waiter_that_times_out_asks_the_origin(url: &str) {
    let origin = Origin::start().await;
    let prefix = unique_prefix("lock-timeout");
    let timeout = Duration::from_millis(400);
    let with_timeout = |layer: CacheLayerBuilder| layer.rule(Rule::new()).lock_timeout(timeout);
    let a = instance(url, &prefix, &origin, Duration::from_secs(10), with_timeout).await;
    let b = instance(url, &prefix, &origin, Duration::from_secs(10), with_timeout).await;
    let client = client();
    let path = "/hang-first/timeout";
    let _stuck = tokio::spawn({
        let (client, addr) = (client.clone(), a.addr);
        async move { get(&client, addr, path).await }
    });
    until("the leader loads", || origin.calls() == 1).await;
    let started = Instant::now();
    let got = get(&client, b.addr, path).await;
    let took = started.elapsed();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "/hang-first/timeout (call 2)");
    assert_eq!(origin.calls(), 2, "the waiter asked the origin itself");
    assert!(took >= timeout && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(b.lock.waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_wait_runs_out_asks_the_origin() {
    a_waiter_that_times_out_asks_the_origin(&standalone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_wait_runs_out_asks_the_origin_on_a_cluster() {
    a_waiter_that_times_out_asks_the_origin(&cluster()).await;
}

/// The lease is renewed while the origin streams the body into the cache:
/// a body that takes four leases to arrive is still loaded once.
async fn the_lease_is_renewed_while_the_body_streams(url: &str) {
    let origin = Origin::start().await;
    let prefix = unique_prefix("lock-renew");
    let lease = Duration::from_millis(300);
    let a = instance(url, &prefix, &origin, lease, configure(Mode::Rules)).await;
    let b = instance(url, &prefix, &origin, lease, configure(Mode::Rules)).await;
    let client = client();
    let path = "/slow/renewed";
    let first = tokio::spawn({
        let (client, addr) = (client.clone(), a.addr);
        async move { get(&client, addr, path).await }
    });
    until("the leader loads", || origin.calls() == 1).await;
    let got = get(&client, b.addr, path).await;
    assert_eq!(got.body, format!(".....{path} (call 1)"));
    assert_eq!(origin.calls(), 1, "the waiter never took over");
    assert!(got.cache_status.contains("collapsed"), "{}", got.cache_status);
    assert_eq!(first.await.unwrap().body, got.body);
    let _ = (a.cache, b.cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_renewed_while_the_origin_streams() {
    the_lease_is_renewed_while_the_body_streams(&standalone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_renewed_while_the_origin_streams_on_a_cluster() {
    the_lease_is_renewed_while_the_body_streams(&cluster()).await;
}

/// A redis-server of the test's own, killed when dropped.
struct OwnServer {
    child: Child,
    port: u16,
}

impl OwnServer {
    async fn start() -> OwnServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let child = Command::new(env("HITBOX_TEST_REDIS_SERVER_BIN"))
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = OwnServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the test's redis-server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With Redis gone (tier and lock), every request is still answered by
/// the origin, within a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_requests_are_answered_by_the_origin() {
    let mut server = OwnServer::start().await;
    let origin = Origin::start().await;
    let prefix = unique_prefix("lock-down");
    // The tier's own timeouts (50 ms reads, 100 ms writes) and the lock's
    // (500 ms a command): what a deployment gets without tuning.
    let mut instances = Vec::new();
    for _ in 0..2 {
        let redis = RedisBackend::builder()
            .url(server.url())
            .key_prefix(&prefix)
            .build()
            .unwrap();
        redis.wait_connected(Duration::from_secs(10)).await.unwrap();
        let (app, _lock, cache) = app(&redis, &origin, Duration::from_secs(10), configure(Mode::Rules));
        instances.push((serve(app).await, cache));
    }
    let (a, b) = (instances[0].0, instances[1].0);
    let client = client();
    // Up: one call, shared.
    assert_eq!(get(&client, a, "/up").await.body, "/up (call 1)");
    until("the entry is stored", || instances[0].1.stats().stores >= 1).await;
    assert!(
        get(&client, b, "/up")
            .await
            .cache_status
            .starts_with("hitbox; hit")
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for (i, path) in ["/down/1", "/down/2", "/down/3"].iter().enumerate() {
        let addr = if i % 2 == 0 { a } else { b };
        let started = Instant::now();
        let got = get(&client, addr, path).await;
        let took = started.elapsed();
        assert_eq!(got.status, 200, "{path}");
        assert!(got.body.starts_with(&format!("{path} (call")), "{}", got.body);
        // A tier read, the lock's attempt and the read of the load's tag
        // generations, each bounded by its timeout.
        assert!(
            took < Duration::from_millis(1_500),
            "{path} took {took:?} with Redis down"
        );
    }
    assert_eq!(origin.calls(), 4);
}
