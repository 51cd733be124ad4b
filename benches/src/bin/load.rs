//! The load benchmark: real HTTP over loopback, every case in one run.
//!
//! ```sh
//! cargo run --release -p hitbox-benches --bin load -- --seconds 5
//! ```
//!
//! It starts what it needs itself: a redis-server on a free port (installing
//! Debian's `redis-server` with apt-get when it is missing) and one axum
//! server on a free port, whose routes are the cases. The server runs on a
//! current-thread tokio runtime on one OS thread; the load generator (hyper
//! http1 connections with keep-alive, closed loop) runs on another
//! current-thread runtime on the main thread, so on a 2-core machine each has
//! a core (redis-server is the third process, busy only in the Redis cases).
//!
//! The cases run interleaved: short rounds of each in turn, so that machine
//! noise falls on all of them alike. Every case answers with the same 1 KiB
//! JSON body:
//!
//! - `static`: a prebuilt response, no cache (the limit of the server);
//! - `origin`: an origin taking 20 ms, no cache;
//! - `l1`: that origin behind the layer, served from moka;
//! - `rfc`: the same in standards mode (the origin then says
//!   `Cache-Control: max-age=3600`);
//! - `redis`: behind the layer with Redis as the only tier;
//! - `tiers`: behind the layer on moka -> moka -> Redis;
//! - `fred`: a handler doing a raw fred `GET` of the very bytes the `redis`
//!   case stores, returned as the body (what a Redis hit costs at least);
//! - `miss`: behind the layer on moka, every request a new key;
//! - `*-1k`: the same with requests spread over 1,000 keys (after a warm-up).
//!
//! Then a cold-start stampede (1,000 concurrent requests for one key, the
//! origin's calls counted), an in-process comparison of a Redis hit through
//! the engine with a raw fred `GET`, and the memory a cached 1 KiB response
//! costs in moka. The last line is `hit/static ratio: X.XX`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use fred::interfaces::KeysInterface;
use hitbox_backend::{Backend, Cache, Compose};
use hitbox_core::{CacheKey, CachePolicy, Extractor, KeyBuilder};
use hitbox_moka::MokaBackend;
use hitbox_redis::RedisBackend;
use hitbox_tower::extract::default_key;
use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::{CacheLayer, CachedResponse, Rule};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

const BODY_SIZE: usize = 1024;
const ORIGIN_DELAY: Duration = Duration::from_millis(20);
const SPREAD_KEYS: u64 = 1_000;
const STAMPEDE: usize = 1_000;
const RAW_PREFIX: &str = "hitbox-load:raw:";

struct Args {
    seconds: f64,
    connections: usize,
    round: Duration,
    /// Only these cases, and none of the extras (stampede, in-process
    /// Redis, memory): for profiling one path.
    cases: Option<Vec<String>>,
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 5.0,
        connections: 32,
        round: Duration::from_millis(500),
        cases: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| fail(&format!("{name} needs a value")))
                .parse::<f64>()
                .unwrap_or_else(|_| fail(&format!("{name} needs a number")))
        };
        if flag == "--cases" {
            let list = it.next().unwrap_or_else(|| fail("--cases needs a list"));
            let names: Vec<String> = list.split(',').map(str::to_owned).collect();
            if let Some(unknown) = names.iter().find(|n| !CASES.iter().any(|c| c.name == n.as_str())) {
                fail(&format!("unknown case {unknown}"));
            }
            args.cases = Some(names);
            continue;
        }
        match flag.as_str() {
            "--seconds" => args.seconds = value("--seconds"),
            "--connections" => args.connections = value("--connections") as usize,
            "--round-ms" => args.round = Duration::from_secs_f64(value("--round-ms") / 1e3),
            "-h" | "--help" => {
                println!(
                    "usage: load [--seconds N (per case, default 5)] [--connections C (default 32)] \
                     [--round-ms R (default 500)] [--cases static,l1,... (only those, no extras)]"
                );
                std::process::exit(0);
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    if args.seconds <= 0.0 || args.connections == 0 || args.round.is_zero() {
        fail("--seconds, --connections and --round-ms must be above zero");
    }
    args
}

/// Reports `message`, stops the redis-server this run started, and exits.
fn fail(message: &str) -> ! {
    eprintln!("load: {message}");
    stop_redis();
    std::process::exit(2);
}

/// The redis-server of this run, where `fail` (which exits without
/// unwinding) and the main thread's guard can both stop it.
static REDIS: std::sync::Mutex<Option<RedisServer>> = std::sync::Mutex::new(None);

fn stop_redis() {
    let server = REDIS.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(server);
}

/// Stops the redis-server when the main thread ends, panics included.
struct StopRedisOnDrop;

impl Drop for StopRedisOnDrop {
    fn drop(&mut self) {
        stop_redis();
    }
}

// ---------------------------------------------------------------- redis

/// A redis-server started for this run; killed and its data removed on drop.
struct RedisServer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Installs Debian's redis-server, keeping the package from starting a
/// system-wide server of its own (as `scripts/services.sh` does).
fn install_redis() {
    eprintln!("load: redis-server is missing; installing it with apt-get");
    let script = r#"
        sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        policy=/usr/sbin/policy-rc.d; made=0
        if [ ! -e "$policy" ] && [ -w /usr/sbin ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
        fi
        status=0
        $sudo apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null || status=$?
        if [ "$status" = 0 ]; then
            DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
                --no-install-recommends redis-server >/dev/null || status=$?
        fi
        if [ "$made" = 1 ]; then rm -f "$policy"; fi
        exit "$status"
    "#;
    let ok = Command::new("sh")
        .args(["-c", script])
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !redis_installed() {
        fail("could not install redis-server with apt-get");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&format!("no free port: {e}")))
}

fn start_redis() -> RedisServer {
    if !redis_installed() {
        install_redis();
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("hitbox-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no", "--daemonize", "no", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start redis-server: {e}")));
    let server = RedisServer { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if redis_ping(port) {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    fail(&format!("redis-server on port {port} did not answer PING"));
}

fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

// ---------------------------------------------------------------- server

#[derive(Clone)]
struct Origin {
    body: Bytes,
    calls: Arc<AtomicU64>,
}

fn json(body: Bytes) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

async fn origin(State(origin): State<Origin>) -> Response {
    origin_response(origin).await
}

/// The origin, saying how long its answer may be cached (what standards
/// mode needs to store it).
async fn cacheable_origin(State(origin): State<Origin>) -> Response {
    let mut response = origin_response(origin).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    response
}

async fn origin_response(origin: Origin) -> Response {
    origin.calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(ORIGIN_DELAY).await;
    json(origin.body.clone())
}

async fn raw_fred(State(redis): State<RedisBackend>, Path(id): Path<String>) -> Response {
    match redis
        .pool()
        .get::<Option<Bytes>, _>(format!("{RAW_PREFIX}{id}"))
        .await
    {
        Ok(Some(bytes)) => json(bytes),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// What the main thread gets from the server thread.
struct ServerHandles {
    addr: SocketAddr,
    tid: Option<u32>,
    origin_calls: Arc<AtomicU64>,
    stampede_calls: Arc<AtomicU64>,
    l1_moka: MokaBackend,
}

fn policy() -> CachePolicy {
    CachePolicy::new(Duration::from_secs(3_600))
}

fn layer(cache: Cache, namespace: &str) -> CacheLayer {
    CacheLayer::builder(cache)
        .rule(Rule::new().namespace(namespace).policy(policy()))
        .build()
}

fn thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

fn start_server(
    redis_url: String,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> (ServerHandles, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("server".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let redis = RedisBackend::from_url(&redis_url).expect("redis url");
                redis
                    .wait_connected(Duration::from_secs(10))
                    .await
                    .expect("connect to redis");
                let body = Bytes::from(json_body(BODY_SIZE));
                let calls = Arc::new(AtomicU64::new(0));
                let stampede_calls = Arc::new(AtomicU64::new(0));
                let state = Origin {
                    body: body.clone(),
                    calls: Arc::clone(&calls),
                };
                let stampede_state = Origin {
                    body: body.clone(),
                    calls: Arc::clone(&stampede_calls),
                };
                let l1_moka = MokaBackend::builder().label("l1").build();
                let tiers = MokaBackend::builder().label("tiers-l1").build().compose(
                    MokaBackend::builder()
                        .label("tiers-l2")
                        .build()
                        .compose(redis.clone()),
                );
                let origin_routes = Router::new()
                    .route("/origin/{id}", get(origin))
                    .route(
                        "/l1/{id}",
                        get(origin).layer(layer(Cache::new(l1_moka.clone()), "l1")),
                    )
                    .route(
                        "/rfc/{id}",
                        get(cacheable_origin).layer(
                            CacheLayer::builder(Cache::new(MokaBackend::builder().label("rfc").build()))
                                .rfc9111(Rfc9111::new())
                                .build(),
                        ),
                    )
                    .route(
                        "/redis/{id}",
                        get(origin).layer(layer(Cache::new(redis.clone()), "redis")),
                    )
                    .route(
                        "/tiers/{id}",
                        get(origin).layer(layer(Cache::new(tiers), "tiers")),
                    )
                    .route(
                        "/miss/{id}",
                        get(origin).layer(layer(Cache::new(MokaBackend::default()), "miss")),
                    )
                    .with_state(state);
                let stampede_routes = Router::new()
                    .route(
                        "/stampede/{id}",
                        get(origin).layer(layer(Cache::new(MokaBackend::default()), "stampede")),
                    )
                    .with_state(stampede_state);
                let prebuilt = body.clone();
                let app = Router::new()
                    .route(
                        "/static/{id}",
                        get(move || {
                            let body = prebuilt.clone();
                            async move { json(body) }
                        }),
                    )
                    .route("/fred/{id}", get(raw_fred).with_state(redis.clone()))
                    .merge(origin_routes)
                    .merge(stampede_routes);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr = listener.local_addr().expect("local addr");
                tx.send(ServerHandles {
                    addr,
                    tid: thread_id(),
                    origin_calls: calls,
                    stampede_calls,
                    l1_moka,
                })
                .expect("send handles");
                use axum::serve::ListenerExt;
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                tokio::select! {
                    result = axum::serve(listener, app) => result.expect("serve"),
                    _ = shutdown => {}
                }
                redis.quit().await;
            });
        })
        .expect("spawn the server thread");
    let handles = rx.recv().unwrap_or_else(|_| fail("the server did not start"));
    (handles, thread)
}

/// A JSON document of about `size` bytes.
fn json_body(size: usize) -> Vec<u8> {
    let mut out = String::from("{\"items\":[");
    let mut id = 0;
    while out.len() + 80 < size {
        if id > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":{id},\"name\":\"item {id}\",\"tags\":[\"a\",\"b\"]}}"
        ));
        id += 1;
    }
    out.push_str("],\"next\":null");
    while out.len() + 1 < size {
        out.push(' ');
    }
    out.push('}');
    out.into_bytes()
}

// ---------------------------------------------------------------- CPU time

/// CPU seconds (user + system) from a `/proc/.../stat` file.
fn cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(") ").map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file; `rest` starts at field 3.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct CpuProbe {
    server: String,
    client: String,
    redis: String,
}

impl CpuProbe {
    fn read(&self) -> [f64; 3] {
        [
            cpu_seconds(&self.server),
            cpu_seconds(&self.client),
            cpu_seconds(&self.redis),
        ]
    }
}

// ---------------------------------------------------------------- client

struct Conn {
    sender: SendRequest<Empty<Bytes>>,
}

async fn connect(addr: SocketAddr) -> Conn {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| fail(&format!("connect {addr}: {e}")));
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| fail(&format!("handshake: {e}")));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Conn { sender }
}

/// What one response was.
struct Answer {
    status: StatusCode,
    cache_status: String,
    body_len: usize,
}

/// How long one request may take before the run calls it failed (so that a
/// hung server cannot hang the run).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn request(conn: &mut Conn, host: &str, path: &str) -> Result<Answer, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request_once(conn, host, path)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

async fn request_once(conn: &mut Conn, host: &str, path: &str) -> Result<Answer, hyper::Error> {
    let request = http::Request::get(path)
        .header(header::HOST, host)
        .body(Empty::new())
        .expect("request");
    conn.sender.ready().await?;
    let response = conn.sender.send_request(request).await?;
    let status = response.status();
    let cache_status = response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        cache_status,
        body_len: body.len(),
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Keys {
    One,
    Spread,
    Unique,
}

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    route: &'static str,
    keys: Keys,
    /// Whether its answers should be hits.
    cached: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "static",
        route: "/static",
        keys: Keys::One,
        cached: false,
    },
    Case {
        name: "origin",
        route: "/origin",
        keys: Keys::One,
        cached: false,
    },
    Case {
        name: "l1",
        route: "/l1",
        keys: Keys::One,
        cached: true,
    },
    Case {
        name: "rfc",
        route: "/rfc",
        keys: Keys::One,
        cached: true,
    },
    Case {
        name: "redis",
        route: "/redis",
        keys: Keys::One,
        cached: true,
    },
    Case {
        name: "tiers",
        route: "/tiers",
        keys: Keys::One,
        cached: true,
    },
    Case {
        name: "fred",
        route: "/fred",
        keys: Keys::One,
        cached: false,
    },
    Case {
        name: "miss",
        route: "/miss",
        keys: Keys::Unique,
        cached: false,
    },
    Case {
        name: "l1-1k",
        route: "/l1",
        keys: Keys::Spread,
        cached: true,
    },
    Case {
        name: "rfc-1k",
        route: "/rfc",
        keys: Keys::Spread,
        cached: true,
    },
    Case {
        name: "redis-1k",
        route: "/redis",
        keys: Keys::Spread,
        cached: true,
    },
    Case {
        name: "tiers-1k",
        route: "/tiers",
        keys: Keys::Spread,
        cached: true,
    },
    Case {
        name: "fred-1k",
        route: "/fred",
        keys: Keys::Spread,
        cached: false,
    },
];

#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    elapsed: Duration,
    hits: u64,
    errors: u64,
    cpu: [f64; 3],
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_ns.extend(other.latencies_ns);
        self.hits += other.hits;
        self.errors += other.errors;
    }

    fn rps(&self) -> f64 {
        self.latencies_ns.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile_ms(&self, sorted: &[u64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index] as f64 / 1e6
    }
}

struct Run {
    addr: SocketAddr,
    host: String,
    unique: Arc<AtomicU64>,
}

impl Run {
    fn path(&self, case: &Case, rng: &mut u64) -> String {
        let id = match case.keys {
            Keys::One => 1,
            Keys::Spread => {
                // xorshift: cheap, and good enough to spread keys.
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                *rng % SPREAD_KEYS
            }
            Keys::Unique => self.unique.fetch_add(1, Ordering::Relaxed),
        };
        format!("{}/{id}", case.route)
    }
}

async fn worker(run: Arc<Run>, mut conn: Conn, case: Case, deadline: Instant, seed: u64) -> (Conn, Tally) {
    let mut tally = Tally::default();
    let mut rng = seed | 1;
    while Instant::now() < deadline {
        let path = run.path(&case, &mut rng);
        let started = Instant::now();
        match request(&mut conn, &run.host, &path).await {
            Ok(answer) => {
                tally.latencies_ns.push(started.elapsed().as_nanos() as u64);
                // The raw fred case answers with the stored envelope, a little
                // longer than the body.
                let expected = case.route == "/fred" || answer.body_len == BODY_SIZE;
                if !answer.status.is_success() || !expected || answer.body_len < BODY_SIZE {
                    tally.errors += 1;
                }
                if answer.cache_status.contains("; hit") {
                    tally.hits += 1;
                }
            }
            Err(_) => {
                tally.errors += 1;
                conn = connect(run.addr).await;
            }
        }
    }
    (conn, tally)
}

/// Requests `paths` over the connections, `conns.len()` at a time; returns
/// the answers in order.
async fn fetch_all(run: &Arc<Run>, conns: &mut Vec<Conn>, paths: Vec<String>) -> Vec<Answer> {
    let width = conns.len();
    let mut chunks: Vec<Vec<(usize, String)>> = (0..width).map(|_| Vec::new()).collect();
    for (i, path) in paths.into_iter().enumerate() {
        chunks[i % width].push((i, path));
    }
    let mut tasks = Vec::new();
    for (conn, chunk) in conns.drain(..).zip(chunks) {
        let run = Arc::clone(run);
        tasks.push(tokio::spawn(async move {
            let mut conn = conn;
            let mut out = Vec::new();
            for (i, path) in chunk {
                let answer = request(&mut conn, &run.host, &path)
                    .await
                    .unwrap_or_else(|e| fail(&format!("warm-up request {path}: {e}")));
                out.push((i, answer));
            }
            (conn, out)
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        let (conn, out) = task.await.expect("warm-up task");
        conns.push(conn);
        answers.extend(out);
    }
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

/// The key the layer stores `path` under in `namespace` (the default key
/// over the request this client sends).
fn http_key(namespace: &str, host: &str, path: &str) -> CacheKey {
    let (parts, ()) = http::Request::get(path)
        .header(header::HOST, host)
        .body(())
        .expect("request")
        .into_parts();
    let mut key = KeyBuilder::new(namespace);
    default_key().extract(&parts, &mut key);
    key.build()
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        })
        .map_or_else(
            || "?".into(),
            |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0),
        );
    format!("{cores} cores, {cpu}, {memory}")
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--memory-child") {
        memory_child();
        return;
    }
    let args = parse_args();
    let redis = start_redis();
    let (redis_port, redis_pid) = (redis.port, redis.child.id());
    *REDIS.lock().unwrap_or_else(|p| p.into_inner()) = Some(redis);
    let _stop_redis = StopRedisOnDrop;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (server, server_thread) = start_server(redis_url.clone(), stopped);
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let ratio = client.block_on(drive(&args, &server, (redis_port, redis_pid), &redis_url));
    let _ = stop.send(());
    let _ = server_thread.join();
    stop_redis();
    println!("hit/static ratio: {ratio:.2}");
}

async fn drive(args: &Args, server: &ServerHandles, redis: (u16, u32), redis_url: &str) -> f64 {
    let (redis_port, redis_pid) = redis;
    let probe = CpuProbe {
        server: server
            .tid
            .map_or_else(String::new, |tid| format!("/proc/self/task/{tid}/stat")),
        client: thread_id().map_or_else(String::new, |tid| format!("/proc/self/task/{tid}/stat")),
        redis: format!("/proc/{redis_pid}/stat"),
    };
    let run = Arc::new(Run {
        addr: server.addr,
        host: server.addr.to_string(),
        unique: Arc::new(AtomicU64::new(1_000_000)),
    });
    println!("hitbox load benchmark");
    println!("machine: {}", machine());
    println!(
        "server: axum on 127.0.0.1:{}, one current-thread tokio runtime on one OS thread; \
         redis-server {} on port {} (its own process)",
        server.addr.port(),
        redis_version(),
        redis_port
    );
    println!(
        "client: hyper http1, {} keep-alive connections, closed loop, one current-thread runtime \
         on the main thread; {} s per case in rounds of {} ms, round-robin",
        args.connections,
        args.seconds,
        args.round.as_millis()
    );
    println!(
        "every response: {BODY_SIZE} B of JSON; origin: {} ms; cache TTL 1 h",
        ORIGIN_DELAY.as_millis()
    );

    let mut conns = Vec::new();
    for _ in 0..args.connections {
        conns.push(connect(run.addr).await);
    }

    let selected: Vec<Case> = CASES
        .iter()
        .filter(|c| {
            args.cases
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == c.name))
        })
        .copied()
        .collect();
    let wanted = |route: &str| selected.iter().any(|c| c.route == route);
    let spread = selected.iter().any(|c| c.keys == Keys::Spread);

    // Warm-up: fill the caches, check that the cached cases hit.
    let started = Instant::now();
    for route in ["/l1", "/rfc", "/redis", "/tiers"] {
        if !(wanted(route) || route == "/redis" && wanted("/fred")) {
            continue;
        }
        // The first request stores in a task of its own: ask until a hit.
        let mut hit = false;
        for _ in 0..100 {
            let answer = &fetch_all(&run, &mut conns, vec![format!("{route}/1")]).await[0];
            if answer.status.is_success() && answer.cache_status.contains("; hit") {
                hit = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !hit {
            fail(&format!("{route}/1 is not a hit after a warm-up"));
        }
        if spread {
            let paths = (0..SPREAD_KEYS).map(|id| format!("{route}/{id}")).collect();
            fetch_all(&run, &mut conns, paths).await;
        }
    }
    // The raw fred case reads copies of the very bytes the `redis` case
    // stores.
    let raw = RedisBackend::from_url(redis_url).expect("redis url");
    raw.wait_connected(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| fail(&format!("redis: {e}")));
    let mut stored_len = 0;
    let copies = if !wanted("/fred") {
        0..0
    } else if spread {
        0..SPREAD_KEYS
    } else {
        1..2
    };
    for id in copies {
        let key = http_key("redis", &run.host, &format!("/redis/{id}"));
        let bytes = raw
            .read(&key)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| fail(&format!("no entry in Redis under {}", key.as_str())));
        stored_len = bytes.len();
        let _: () = raw
            .pool()
            .set(format!("{RAW_PREFIX}{id}"), bytes, None, None, false)
            .await
            .unwrap_or_else(|e| fail(&format!("redis SET: {e}")));
    }
    println!(
        "warm-up: {:.1} s (1,000 keys in each of l1, rfc, redis, tiers; raw copies for fred: {stored_len} B each, \
         the stored envelope of a 1 KiB response)",
        started.elapsed().as_secs_f64()
    );

    // The interleaved rounds.
    let mut tallies: Vec<Tally> = selected.iter().map(|_| Tally::default()).collect();
    let rounds = ((args.seconds / args.round.as_secs_f64()).ceil() as usize).max(1);
    let origin_calls_before = server.origin_calls.load(Ordering::Relaxed);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..rounds {
        for offset in 0..selected.len() {
            let index = (round + offset) % selected.len();
            let case = selected[index];
            let cpu_before = probe.read();
            let started = Instant::now();
            let deadline = started + args.round;
            let mut tasks = Vec::new();
            for conn in conns.drain(..) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                tasks.push(tokio::spawn(worker(Arc::clone(&run), conn, case, deadline, seed)));
            }
            for task in tasks {
                let (conn, tally) = task.await.expect("worker");
                conns.push(conn);
                tallies[index].merge(tally);
            }
            tallies[index].elapsed += started.elapsed();
            let cpu_after = probe.read();
            for (total, (after, before)) in tallies[index]
                .cpu
                .iter_mut()
                .zip(cpu_after.iter().zip(cpu_before))
            {
                *total += after - before;
            }
        }
    }
    let origin_calls = server.origin_calls.load(Ordering::Relaxed) - origin_calls_before;

    // The table.
    println!();
    println!(
        "{:<10} {:>9} {:>8} {:>8} {:>6} {:>6} {:>7} {:>7} {:>7} {:>9} {:>8}",
        "case",
        "req/s",
        "p50 ms",
        "p99 ms",
        "hit%",
        "errors",
        "srv cpu",
        "cli cpu",
        "redis",
        "rps/stat",
        "p99/stat"
    );
    let mut summary: HashMap<&str, (f64, f64, f64)> = HashMap::new();
    let mut static_row = (0.0, 0.0);
    for (case, tally) in selected.iter().zip(tallies.iter_mut()) {
        tally.latencies_ns.sort_unstable();
        let p50 = tally.percentile_ms(&tally.latencies_ns, 0.50);
        let p99 = tally.percentile_ms(&tally.latencies_ns, 0.99);
        let rps = tally.rps();
        if case.name == "static" {
            static_row = (rps, p99);
        }
        let seconds = tally.elapsed.as_secs_f64().max(1e-9);
        let hit_pct = 100.0 * tally.hits as f64 / tally.latencies_ns.len().max(1) as f64;
        println!(
            "{:<10} {:>9.0} {:>8.3} {:>8.3} {:>6.1} {:>6} {:>6.0}% {:>6.0}% {:>6.0}% {:>9.2} {:>8.2}",
            case.name,
            rps,
            p50,
            p99,
            hit_pct,
            tally.errors,
            100.0 * tally.cpu[0] / seconds,
            100.0 * tally.cpu[1] / seconds,
            100.0 * tally.cpu[2] / seconds,
            rps / static_row.0,
            p99 / static_row.1,
        );
        if case.cached && hit_pct < 99.0 {
            println!("  warning: {} answered {hit_pct:.1}% hits", case.name);
        }
        if args.cases.is_some() {
            // For instruction counts per request (benches/load-profile.sh).
            println!("  requests: {}", tally.latencies_ns.len());
        }
        summary.insert(case.name, (rps, p50, p99));
    }
    println!(
        "origin calls during the rounds: {origin_calls} (origin and miss cases only are expected to call it)"
    );

    if args.cases.is_none() {
        // Stampede.
        println!();
        stampede(&run, server).await;

        // In-process Redis hit against a raw fred GET.
        println!();
        redis_in_process(&run, redis_url).await;

        // Memory.
        println!();
        server.l1_moka.run_pending_tasks().await;
        memory(server);
    }

    // Against the targets.
    let get = |name: &str| {
        summary
            .get(name)
            .copied()
            .unwrap_or((f64::NAN, f64::NAN, f64::NAN))
    };
    let (s_rps, _, s_p99) = get("static");
    let (l1_rps, _, l1_p99) = get("l1");
    let (r_rps, r_p50, r_p99) = get("redis");
    let (f_rps, f_p50, f_p99) = get("fred");
    let (_, o_p50, o_p99) = get("origin");
    let (_, m_p50, m_p99) = get("miss");
    println!();
    println!("targets:");
    println!(
        "  L1 hit throughput >= 0.90 x static: {:.2} ({}); p99 within 1.2x: {:.2} ({})",
        l1_rps / s_rps,
        verdict(l1_rps / s_rps >= 0.90),
        l1_p99 / s_p99,
        verdict(l1_p99 / s_p99 <= 1.2)
    );
    println!(
        "  Redis hit within 1.3x of a raw fred GET: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x ({})",
        f_rps / r_rps,
        r_p50 / f_p50,
        r_p99 / f_p99,
        verdict(f_rps / r_rps <= 1.3 && r_p50 / f_p50 <= 1.3)
    );
    println!(
        "  a miss adds < 5% to the origin's latency: p50 +{:.1}%, p99 +{:.1}% ({})",
        100.0 * (m_p50 / o_p50 - 1.0),
        100.0 * (m_p99 / o_p99 - 1.0),
        verdict(m_p50 / o_p50 < 1.05)
    );
    l1_rps / s_rps
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.split_whitespace()
                .find(|w| w.starts_with("v="))
                .map(|w| w[2..].to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

async fn stampede(run: &Arc<Run>, server: &ServerHandles) {
    let before = server.stampede_calls.load(Ordering::Relaxed);
    let mut conns = Vec::with_capacity(STAMPEDE);
    for _ in 0..STAMPEDE {
        conns.push(connect(run.addr).await);
    }
    let gate = Arc::new(tokio::sync::Barrier::new(STAMPEDE));
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let run = Arc::clone(run);
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                gate.wait().await;
                let t0 = Instant::now();
                let answer = request(&mut conn, &run.host, "/stampede/1").await;
                (answer, t0.elapsed())
            })
        })
        .collect();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let mut latencies = Vec::new();
    for task in tasks {
        let (answer, took) = task.await.expect("stampede task");
        latencies.push(took);
        let label = match answer {
            Ok(a) if a.status.is_success() => {
                let s = &a.cache_status;
                if s.contains("collapsed") {
                    "collapsed"
                } else if s.contains("; hit") {
                    "hit"
                } else if s.contains("miss") {
                    "miss (led)"
                } else {
                    "other"
                }
            }
            Ok(_) => "error status",
            Err(_) => "failed",
        };
        *outcomes.entry(label.to_owned()).or_default() += 1;
    }
    latencies.sort();
    let calls = server.stampede_calls.load(Ordering::Relaxed) - before;
    let mut outcomes: Vec<_> = outcomes.into_iter().collect();
    outcomes.sort();
    println!(
        "stampede: {STAMPEDE} concurrent requests for one cold key (L1 moka, origin {} ms): origin calls {calls} ({}); \
         answers {:?}; all done in {:.0} ms, slowest {:.0} ms",
        ORIGIN_DELAY.as_millis(),
        verdict(calls == 1),
        outcomes,
        started.elapsed().as_secs_f64() * 1e3,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
}

/// Sequential reads on one connection, in process: a Redis hit through the
/// engine (read, envelope, decode of the stored response) against a raw
/// fred `GET` of the same bytes.
async fn redis_in_process(run: &Arc<Run>, redis_url: &str) {
    let backend = RedisBackend::builder()
        .url(redis_url)
        .pool_size(1)
        .build()
        .expect("redis url");
    backend
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| fail(&format!("redis: {e}")));
    let cache = Cache::new(backend.clone());
    let key = http_key("redis", &run.host, "/redis/1");
    let raw_key = format!("{RAW_PREFIX}1");
    let (mut engine, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        for _ in 0..200 {
            let t = Instant::now();
            let entry = cache
                .get_entry::<CachedResponse>(&key)
                .await
                .expect("a Redis hit");
            engine.push(t.elapsed());
            std::hint::black_box(entry);
        }
        for _ in 0..200 {
            let t = Instant::now();
            let bytes: Option<Bytes> = backend.pool().get(raw_key.as_str()).await.expect("GET");
            raw.push(t.elapsed());
            std::hint::black_box(bytes.expect("raw copy"));
        }
    }
    engine.sort();
    raw.sort();
    let p50 = |v: &[Duration]| v[v.len() / 2].as_secs_f64() * 1e6;
    let mean = |v: &[Duration]| v.iter().sum::<Duration>().as_secs_f64() * 1e6 / v.len() as f64;
    println!(
        "redis in process (one connection, sequential, {} each): engine get_entry p50 {:.1} µs mean {:.1} µs; \
         raw fred GET p50 {:.1} µs mean {:.1} µs; ratio p50 {:.2}x ({})",
        engine.len(),
        p50(&engine),
        mean(&engine),
        p50(&raw),
        mean(&raw),
        p50(&engine) / p50(&raw),
        verdict(p50(&engine) / p50(&raw) <= 1.3)
    );
    backend.quit().await;
}

/// What a cached 1 KiB response costs in moka: the weight moka gives the
/// entries of the `l1` case, then a child process that stores 20,000 of
/// them in a fresh tier and counts what that allocates.
fn memory(server: &ServerHandles) {
    let (entries, weight) = (server.l1_moka.entry_count(), server.l1_moka.weighted_size());
    println!(
        "memory: the l1 tier holds {entries} entries weighing {weight} B: {:.0} B per entry as moka weighs \
         it (key + stored bytes + {} B overhead)",
        weight as f64 / entries.max(1) as f64,
        hitbox_moka::ENTRY_OVERHEAD
    );
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&format!("current exe: {e}")));
    match Command::new(exe).arg("--memory-child").output() {
        Ok(out) if out.status.success() => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => println!(
            "memory: the measuring process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => println!("memory: could not start the measuring process: {e}"),
    }
}

/// Counts live heap bytes and allocations while `COUNTING` is set (only in
/// the memory child: elsewhere it costs one load of a constant flag).
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are only read.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let ptr = unsafe { System.alloc(layout) };
        if COUNTING.load(Ordering::Relaxed) && !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if COUNTING.load(Ordering::Relaxed) && !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from this allocator, which is the system's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if COUNTING.load(Ordering::Relaxed) && !new.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The memory child: stores 20,000 cached 1 KiB responses, as the layer
/// stores them, in a fresh moka tier, and reports the heap bytes and
/// allocations that added and the growth of resident memory.
fn memory_child() {
    const N: u64 = 20_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tier = MokaBackend::default();
        let cache = Cache::builder(tier.clone()).policy(policy()).build();
        let body = Bytes::from(json_body(BODY_SIZE));
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(BODY_SIZE));
        let host = "127.0.0.1:40000";
        let keys: Vec<CacheKey> = (0..N)
            .map(|id| http_key("l1", host, &format!("/l1/{}", 10_000 + id)))
            .collect();
        let response = CachedResponse::new(StatusCode::OK, headers, body);
        // One store first, so that moka's lazily built structures are not
        // counted against the entries.
        let first = http_key("l1", host, "/l1/warm");
        cache.set(&first, &response).await.expect("set");
        tier.run_pending_tasks().await;
        let rss_before = rss_bytes();
        COUNTING.store(true, Ordering::SeqCst);
        for key in &keys {
            cache.set(key, &response).await.expect("set");
        }
        tier.run_pending_tasks().await;
        COUNTING.store(false, Ordering::SeqCst);
        let rss_after = rss_bytes();
        let live = LIVE_BYTES.load(Ordering::SeqCst);
        let allocations = ALLOCATIONS.load(Ordering::SeqCst);
        let stored = tier.read(&keys[0]).await.ok().flatten().map_or(0, |b| b.len());
        println!(
            "memory: {N} cached 1 KiB responses in a fresh moka tier ({stored} B stored each, key {} B): \
             heap +{:.0} B per entry still allocated ({:.1} allocations per store), resident memory \
             +{:.0} B per entry; moka weighs {:.0} B per entry",
            keys[0].as_str().len(),
            live as f64 / N as f64,
            allocations as f64 / N as f64,
            rss_after.saturating_sub(rss_before) as f64 / N as f64,
            tier.weighted_size() as f64 / tier.entry_count().max(1) as f64
        );
    });
}
