//! `GET /metrics` for the demo and the proxy: every hitbox metric (the
//! layer's `hitbox_requests_total`, the engine's per-cache counters, the
//! tiers' counters, latencies and gauges) as Prometheus text, rendered by
//! `metrics-exporter-prometheus` from an axum handler on the service's own
//! listener.
//!
//! The recorder must be installed **before** the cache and the layer are
//! built: they register their metric handles once, when built, with the
//! recorder installed then. So a `main` calls [`install`] first, builds
//! its cache and router, and adds the route with [`route`]:
//!
//! ```no_run
//! # async fn run() {
//! use axum::{Router, routing::get};
//! use hitbox_backend::{Cache, MemoryBackend};
//! use hitbox_tower::CacheLayer;
//!
//! let handle = hitbox_examples::metrics::install().expect("a recorder");
//! let layer = CacheLayer::new(Cache::new(MemoryBackend::new()));
//! let app = Router::new().route("/hello", get(|| async { "hello" }).layer(layer));
//! let app = hitbox_examples::metrics::route(app, handle);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! The route is not authenticated: on a listener clients reach, put it
//! behind whatever guards the service's other admin routes.

use axum::Router;
use axum::routing::get;
use http::header::{CONTENT_TYPE, HeaderValue};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// The content type of Prometheus' text format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A Prometheus recorder, not installed: for tests, which build their
/// caches under [`metrics::with_local_recorder`] instead of installing one
/// recorder for the whole process.
pub fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new().build_recorder()
}

/// Installs a Prometheus recorder for the whole process, with the units and
/// help texts of hitbox's metrics, and returns the handle that renders
/// them. Fails when a recorder is already installed.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|error| format!("metrics recorder: {error}"))?;
    hitbox_tower::observe::describe_metrics();
    Ok(handle)
}

/// `app` with `GET /metrics` answered with the Prometheus text of `handle`.
pub fn route(app: Router, handle: PrometheusHandle) -> Router {
    let metrics = Router::new().route(
        "/metrics",
        get(move || {
            let text = handle.render();
            async move {
                (
                    [(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT))],
                    text,
                )
            }
        }),
    );
    app.merge(metrics)
}
