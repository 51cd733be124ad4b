//! The main job: an axum server with the cache layer on the moka tier.
//!
//! ```sh
//! cargo run --release --example demo        # listens on 127.0.0.1:3000
//! HITBOX_DEMO_ADDR=0.0.0.0:8080 cargo run --release --example demo
//! ```
//!
//! Routes:
//! - `GET /slow/{id}`: an origin that takes 100 ms and returns JSON naming
//!   the id and when it was made; cached 30 s, then served stale for 30 s
//!   more while it is refreshed in the background.
//! - `POST /slow/{id}`: the same origin, never cached.
//! - `GET /static`: a prebuilt response, not cached (the benchmarks'
//!   baseline).
//! - `GET /private`: sets a cookie, so it is never stored.
//!
//! Each request is logged on one line with its `Cache-Status`.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hitbox_backend::Cache;
use hitbox_core::CachePolicy;
use hitbox_moka::MokaBackend;
use hitbox_tower::{CacheLayer, Rule};
use serde_json::json;

async fn slow(Path(id): Path<String>) -> Json<serde_json::Value> {
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

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "demo=info,hitbox=warn".into()))
        .init();
    let addr: SocketAddr = std::env::var("HITBOX_DEMO_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()
        .expect("HITBOX_DEMO_ADDR must be an address such as 127.0.0.1:3000");

    let cache = Cache::new(MokaBackend::new(256 << 20));
    let slow_policy =
        CachePolicy::new(Duration::from_secs(30)).stale_while_revalidate(Duration::from_secs(30));
    let cached = |namespace: &str, policy: CachePolicy| {
        CacheLayer::builder(cache.clone())
            .rule(Rule::new().namespace(namespace).policy(policy))
            .build()
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
        .route("/static", get(move || async move { prebuilt }))
        .layer(middleware::from_fn(log_requests));

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the demo address");
    tracing::info!("hitbox demo listening on http://{addr}");
    axum::serve(listener, app).await.expect("serve");
}
