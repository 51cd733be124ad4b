//! Drives `Service::call` for an L1 hit a given number of times, with no
//! timing of its own: a target for instruction counters.
//!
//! ```sh
//! cargo build --release -p hitbox-benches --bin hit_profile
//! for n in 2000 12000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$n target/release/hit_profile $n 1024
//! done
//! ```
//!
//! The difference between the two totals, divided by 10,000, is what one
//! hit costs, with start-up and the filling miss cancelled out. The third
//! argument picks what is driven: `rules` (the default: a rule-mode hit),
//! `rules-body` (the same `GET` under a rule with a body predicate),
//! `rules-post` (a query-style `POST` whose JSON body is read, judged and
//! keyed), `rfc9111` (a standards-mode hit) or `origin` (the bare inner
//! service). A mode with `-lock` appended (`rules-lock`, `rfc9111-lock`)
//! is the same with a distributed lock configured, to show that a hit
//! never touches it.
//!
//! The fourth argument is what observes the process, set up before the
//! layer is built (as a service sets it up at start-up): `none` (the
//! default: no metrics recorder, no tracing subscriber), `recorder` (the
//! Prometheus recorder the demo installs; needs the `metrics` feature),
//! `info` (a subscriber at `INFO`, which leaves the layer's `DEBUG` spans
//! off) or `debug` (the same subscriber at `DEBUG`: every span taken).
//! `./benches/obs-profile.sh` runs them against both builds.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use hitbox_backend::lock::{DistributedLock, LoadEnd, LockAttempt, LockFuture, LockHold};
use hitbox_backend::{BackendError, Cache};
use hitbox_core::{CacheKey, Predicate};
use hitbox_moka::MokaBackend;
use hitbox_tower::predicate::{Json, ReadSize};
use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::{BodyKey, CacheLayer, Rule};
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

fn typical_request() -> Request<Full<Bytes>> {
    Request::get("/v1/items/42?page=2&sort=name&lang=en")
        .header(header::HOST, "api.example.com")
        .header(header::ACCEPT, "application/json")
        .header(header::ACCEPT_ENCODING, "gzip, br")
        .header(header::USER_AGENT, "hitbox-bench/1.0")
        .header("x-request-id", "3f1c2a9e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")
        .body(Full::default())
        .unwrap()
}

/// A search `POST` with a 200-byte JSON body.
fn search_request() -> Request<Full<Bytes>> {
    Request::post("/v1/search")
        .header(header::HOST, "api.example.com")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "hitbox-bench/1.0")
        .body(Full::new(Bytes::from_static(
            br#"{"query": {"text": "rust cache", "lang": "en"}, "filters": {"year": [2024, 2025], "kind": "article"}, "page": 2, "size": 20, "sort": "relevance"}"#,
        )))
        .unwrap()
}

/// A lock that is always free, counting its acquisitions: a layer with a
/// distributed lock takes it on a miss only, which `main` checks.
struct CountingLock(Arc<AtomicUsize>);

struct Held;

impl LockHold for Held {
    fn release(self: Box<Self>, _end: LoadEnd) -> LockFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl DistributedLock for CountingLock {
    fn acquire<'a>(&'a self, _key: &'a CacheKey) -> LockFuture<'a, Result<LockAttempt, BackendError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(LockAttempt::Acquired(Box::new(Held))) })
    }
}

/// Installs what observes the process, for the whole process: `setting`
/// is the fourth argument. Exits with a message for a setting this build
/// cannot measure, so that no figure is printed under the wrong name.
fn observe(setting: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    let level = match setting {
        "none" => return,
        "recorder" => {
            #[cfg(feature = "metrics")]
            {
                let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
                metrics::set_global_recorder(recorder).expect("no recorder was installed before");
                hitbox_tower::observe::describe_metrics();
                return;
            }
            #[cfg(not(feature = "metrics"))]
            {
                eprintln!("hit_profile: `recorder` needs the `metrics` feature");
                std::process::exit(2);
            }
        }
        "info" => tracing_subscriber::filter::LevelFilter::INFO,
        "debug" => tracing_subscriber::filter::LevelFilter::DEBUG,
        other => {
            eprintln!("hit_profile: unknown observability setting `{other}` (none, recorder, info, debug)");
            std::process::exit(2);
        }
    };
    // What a service logs with: formatted lines (into a sink here), behind
    // a level filter.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
        .with(level);
    tracing::subscriber::set_global_default(subscriber).expect("no subscriber was installed before");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let size: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1024);
    let mode = args.next().unwrap_or_else(|| "rules".to_owned());
    let setting = args.next().unwrap_or_else(|| "none".to_owned());
    observe(&setting);
    let origin_only = mode == "origin";

    let body = Bytes::from(vec![b'x'; size]);
    let origin = service_fn(move |_request: Request<Full<Bytes>>| {
        let body = body.clone();
        async move {
            let mut response = Response::new(Full::new(body));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            // What standards mode needs to store it; rules ignore it.
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, "max-age=3600".parse().unwrap());
            Ok::<_, Infallible>(response)
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let builder = CacheLayer::builder(Cache::new(MokaBackend::default()));
    let acquired = Arc::new(AtomicUsize::new(0));
    let (builder, mode) = match mode.strip_suffix("-lock") {
        Some(base) => (
            builder.distributed_lock(CountingLock(Arc::clone(&acquired))),
            base.to_owned(),
        ),
        None => (builder, mode),
    };
    let layer = match mode.as_str() {
        "rfc9111" => builder.rfc9111(Rfc9111::new()),
        "rules-body" => builder.rule(Rule::new().when_body(ReadSize::at_most(1024))),
        "rules-post" => builder.rule(
            Rule::new()
                .post_as_read(BodyKey::json())
                .when_body(Json::exists("/query/text").and(ReadSize::at_most(4096))),
        ),
        _ => builder.rule(Rule::new()),
    }
    .build();
    let make: fn() -> Request<Full<Bytes>> = if mode == "rules-post" {
        search_request
    } else {
        typical_request
    };
    let service = layer.layer(origin.clone());
    let total = runtime.block_on(async {
        // Fill: the store completes in a task of its own.
        for _ in 0..100 {
            let response = service.clone().oneshot(make()).await.unwrap();
            let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
            response.into_body().collect().await.unwrap();
            if status.contains("; hit") && !status.contains("collapsed") {
                break;
            }
            tokio::task::yield_now().await;
        }
        let mut total = 0;
        for _ in 0..count {
            let body = if origin_only {
                let response = origin.clone().oneshot(typical_request()).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            } else {
                let response = service.clone().oneshot(make()).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            };
            total += body.len();
        }
        total
    });
    assert_eq!(total, count * size);
    // The lock is taken by the one miss that filled the cache, if any.
    assert!(acquired.load(Ordering::SeqCst) <= 1, "a hit took the lock");
    println!("{count} calls of {size} B, observed: {setting}");
}
