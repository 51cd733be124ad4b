//! The main job: an axum server with the cache layer on the moka tier, or
//! on moka in front of Redis.
//!
//! ```sh
//! cargo run --release --example demo        # listens on 127.0.0.1:3000
//! HITBOX_DEMO_ADDR=0.0.0.0:8080 cargo run --release --example demo
//! HITBOX_REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example demo
//! ```
//!
//! Tiers:
//! - without `HITBOX_REDIS_URL`: moka only, in this process, nothing else
//!   to run;
//! - with `HITBOX_REDIS_URL` (any URL [`RedisBackend::from_url`] takes:
//!   standalone, cluster, sentinel): moka as L1 composed in front of Redis
//!   as L2, the Redis tier's entries compressed with zstd (those of 1 KiB
//!   and more: smaller ones are stored as they are). Entries live under the
//!   `hitbox-demo:` prefix. Redis may be down at start-up: the L2 tier then
//!   fails, its breaker opens, and moka serves on its own until it is back.
//!   The cached routes also take a distributed lock in that Redis
//!   (`RedisLock`) on a miss: several demo processes sharing it call the
//!   origin once per cold key between them, the others serving what the
//!   one that called stored (`cache-status: hitbox; fwd=miss; collapsed`).
//!   Each origin call is logged (`origin called for /slow/…`):
//!
//! ```sh
//! HITBOX_REDIS_URL=redis://127.0.0.1:6379 HITBOX_DEMO_ADDR=127.0.0.1:3000 cargo run --release --example demo &
//! HITBOX_REDIS_URL=redis://127.0.0.1:6379 HITBOX_DEMO_ADDR=127.0.0.1:3001 cargo run --release --example demo &
//! # The same Host on both, as behind a load balancer: the URL is the key.
//! for port in 3000 3001 3000 3001; do
//!   curl -s -H 'host: api.example' localhost:$port/slow/7 -o /dev/null -w '%{http_code}\n' &
//! done; wait
//! # one "origin called for /slow/7" line between the two logs
//! ```
//!
//! The first log line says which tiers are in use.
//!
//! Routes:
//! - `GET /slow/{id}`: an origin that takes 100 ms and returns JSON naming
//!   the id and when it was made; cached 30 s, then served stale for 30 s
//!   more while it is refreshed in the background.
//! - `POST /slow/{id}`: the same origin, never cached.
//! - `GET /static`: a prebuilt response, not cached (the benchmarks'
//!   baseline).
//! - `GET /private`: sets a cookie, so it is never stored.
//! - `POST /graphql` (and `GET /graphql?query=…`): a GraphQL-style
//!   endpoint that takes 100 ms. `query` operations are cached 30 s, keyed
//!   by the query, its variables and its operation name; a `mutation`
//!   always reaches the origin (`fwd=bypass; detail=not-a-query`), and
//!   its answer counts the mutations so far.
//!
//! ```sh
//! q='{"query":"query Product($id: ID!) { product(id: $id) { name } }","variables":{"id":"1"}}'
//! curl -si localhost:3000/graphql -H 'content-type: application/json' -d "$q" | grep -i cache-status
//! # cache-status: hitbox; fwd=miss, then cache-status: hitbox; hit; ttl=29
//! m='{"query":"mutation { like(id: \"1\") }"}'
//! curl -si localhost:3000/graphql -H 'content-type: application/json' -d "$m" | grep -i cache-status
//! # cache-status: hitbox; fwd=bypass; detail=not-a-query, every time
//! ```
//!
//! Each request is logged on one line with its `Cache-Status`.
//!
//! `--config FILE` takes the cache layer from a configuration file instead
//! (`examples/config/demo.toml`, `demo.yaml`, `two-tier.toml`): one layer
//! for every cached route, whose rules pick routes by path. An invalid
//! file is reported as `FILE:LINE:COLUMN: ...` and the demo exits with
//! status 1.
//!
//! ```sh
//! cargo run --example demo -- --config examples/config/demo.toml
//! cargo run --example demo -- --help
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hitbox_backend::{Cache, Compose, Compression, Staged, Stages};
use hitbox_core::CachePolicy;
use hitbox_moka::MokaBackend;
use hitbox_redis::{RedisBackend, RedisLock};
use hitbox_tower::graphql::GraphQl;
use hitbox_tower::{CacheLayer, Rule};
use serde_json::json;

/// What `--help` prints.
const USAGE: &str = "\
usage: demo [--config FILE]

The demo server: cached routes over moka, or moka in front of Redis.

options:
  --config FILE   build the cache layer from a TOML or YAML file instead of
                  the demo's own (see examples/config/demo.toml)
  -h, --help      print this help and exit

environment:
  HITBOX_DEMO_ADDR   where to listen (default 127.0.0.1:3000)
  HITBOX_REDIS_URL   add a Redis tier behind moka (default: moka only)
  RUST_LOG           log filter (default demo=info,hitbox=warn)
";

async fn slow(Path(id): Path<String>) -> Json<serde_json::Value> {
    tracing::info!("origin called for /slow/{id}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let made_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Json(json!({ "id": id, "made_at_ms": made_at.as_millis() as u64 }))
}

async fn private() -> impl IntoResponse {
    (
        [(
            header::SET_COOKIE,
            HeaderValue::from_static("session=demo; HttpOnly"),
        )],
        "a response for one user only\n",
    )
}

/// How many mutations the GraphQL-style origin has run.
static MUTATIONS: AtomicU64 = AtomicU64::new(0);

/// A stand-in for a GraphQL server: it does not execute the document, it
/// answers what it was asked and when, after 100 ms. A document that
/// starts with `mutation` counts as one (the cache layer in front reads
/// documents properly; this origin only has to show what reaches it).
async fn graphql_answer(request: serde_json::Value) -> Json<serde_json::Value> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let made_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let document = request["query"].as_str().unwrap_or_default();
    let mutations = if document.trim_start().starts_with("mutation") {
        MUTATIONS.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        MUTATIONS.load(Ordering::SeqCst)
    };
    Json(json!({
        "data": {
            "asked": document,
            "variables": request["variables"],
            "mutations_so_far": mutations,
            "made_at_ms": made_at.as_millis() as u64,
        }
    }))
}

async fn graphql_post(Json(request): Json<serde_json::Value>) -> Json<serde_json::Value> {
    graphql_answer(request).await
}

async fn graphql_get(
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Json<serde_json::Value> {
    let variables = params
        .get("variables")
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or(serde_json::Value::Null);
    graphql_answer(json!({ "query": params.get("query"), "variables": variables })).await
}

/// One log line per request: method, path, status, cache status, time.
async fn log_requests(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let cache_status = response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    tracing::info!(
        "{method} {path} {} [{cache_status}] {:.1} ms",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1e3
    );
    response
}

/// The cache: over moka alone, or over moka composed in front of Redis
/// when `HITBOX_REDIS_URL` is set, with the lock misses take in that Redis.
async fn cache() -> (Cache, Option<RedisLock>) {
    let moka = MokaBackend::new(256 << 20);
    let url = match std::env::var("HITBOX_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            tracing::info!("cache tiers: moka (set HITBOX_REDIS_URL to put Redis behind it)");
            return (Cache::new(moka), None);
        }
    };
    let redis = RedisBackend::builder()
        .url(url.trim())
        .key_prefix("hitbox-demo:")
        .label("redis")
        .build()
        .unwrap_or_else(|error| panic!("HITBOX_REDIS_URL: {error}"));
    match redis.wait_connected(Duration::from_secs(3)).await {
        Ok(()) => {
            let mode = if redis.is_clustered() { "cluster" } else { "server" };
            tracing::info!("cache tiers: moka (L1) + redis {mode} (L2, zstd)");
        }
        Err(error) => tracing::warn!(
            %error,
            "cache tiers: moka (L1) + redis (L2, zstd), but Redis is not reachable yet: \
             moka serves alone until it is"
        ),
    }
    let lock = RedisLock::new(&redis);
    let l2 = Staged::new(redis, Stages::new().compression(Compression::zstd(3)));
    (Cache::new(moka.compose(l2)), Some(lock))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if hitbox_examples::config_arg::wants_help(&args) {
        print!("{USAGE}");
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "demo=info,hitbox=warn".into()))
        .init();
    let addr: SocketAddr = std::env::var("HITBOX_DEMO_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()
        .expect("HITBOX_DEMO_ADDR must be an address such as 127.0.0.1:3000");

    // GET /metrics: the recorder goes in before any cache is built, so that
    // they register with it.
    let metrics = hitbox_examples::metrics::install().expect("install the metrics recorder");
    // `--config FILE`: one layer from that file serves every cached route.
    let (_, configured) = hitbox_examples::config_arg::from_args_or_exit("demo", args).await;
    let configured = configured.map(|built| built.layer);
    let (cache, lock) = cache().await;
    // One origin call per cold key across the demo processes sharing Redis.
    let builder = |rule: Rule| {
        let layer = CacheLayer::builder(cache.clone()).rule(rule);
        match &lock {
            Some(lock) => layer.distributed_lock(lock.clone()),
            None => layer,
        }
    };
    let slow_policy =
        CachePolicy::new(Duration::from_secs(30)).stale_while_revalidate(Duration::from_secs(30));
    let cached = |namespace: &str, policy: CachePolicy| {
        configured
            .clone()
            .unwrap_or_else(|| builder(Rule::new().namespace(namespace).policy(policy)).build())
    };
    let prebuilt = (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        "static response\n",
    );

    let app = Router::new()
        // GET is cached; POST goes through the same layer and is never stored.
        .route(
            "/slow/{id}",
            get(slow).post(slow).layer(cached("slow", slow_policy)),
        )
        .route("/private", get(private).layer(cached("private", slow_policy)))
        // GraphQL: queries are cached, mutations always reach the origin.
        .route(
            "/graphql",
            get(graphql_get)
                .post(graphql_post)
                .layer(configured.clone().unwrap_or_else(|| {
                    builder(
                        Rule::new()
                            .namespace("graphql")
                            .policy(CachePolicy::new(Duration::from_secs(30)))
                            .graphql(GraphQl::new()),
                    )
                    .build()
                })),
        )
        .route("/static", get(move || async move { prebuilt }))
        .layer(middleware::from_fn(log_requests));
    let app = hitbox_examples::metrics::route(app, metrics);

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the demo address");
    tracing::info!("hitbox demo listening on http://{addr}");
    axum::serve(listener, app).await.expect("serve");
}
