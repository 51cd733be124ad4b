//! `GET /metrics` on the proxy, over TCP: after a miss and a hit through
//! the proxy, its Prometheus text shows both, labelled by layer, rule and
//! outcome, beside the engine's and the tier's counters.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use hitbox_backend::Cache;
use hitbox_examples::{metrics, proxy};
use hitbox_moka::MokaBackend;

async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The value of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?.strip_prefix('{')?.strip_suffix('}')?;
        let mut found: Vec<(String, String)> = rest
            .split(',')
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((key.to_owned(), value.trim_matches('"').to_owned()))
            })
            .collect();
        found.sort();
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wanted.sort();
        (found == wanted).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn the_proxy_serves_its_misses_and_hits_as_prometheus_text() {
    let (origin_listener, origin) = listen().await;
    let upstream = Router::new().route(
        "/page",
        get(|| async { ([("cache-control", "max-age=60")], "page") }),
    );
    tokio::spawn(async move { axum::serve(origin_listener, upstream).await.unwrap() });

    // The recorder is this test's, not the process's: the cache and the
    // layer register their handles with it while they are built.
    let recorder = metrics::recorder();
    let handle = recorder.handle();
    let config = proxy::Config::new(format!("http://{origin}").parse().unwrap());
    let (cache, app) = ::metrics::with_local_recorder(&recorder, || {
        let cache = Cache::new(MokaBackend::builder().label("moka").build());
        let app = proxy::app(&config, cache.clone());
        (cache, app)
    });
    let app = metrics::route(app, handle);
    let (listener, addr) = listen().await;
    tokio::spawn(async move { proxy::serve(listener, app).await.unwrap() });

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let page = || async {
        let response = client.get(format!("http://{addr}/page")).send().await.unwrap();
        let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
        assert_eq!(response.text().await.unwrap(), "page");
        status
    };
    assert!(page().await.contains("fwd=miss; stored"));
    // The store completes in a task of its own; the stats say when.
    for _ in 0..10_000 {
        if cache.stats().stores == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(page().await.contains("; hit"));

    let response = client.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], metrics::CONTENT_TYPE_TEXT);
    let text = response.text().await.unwrap();
    let requests = |outcome| {
        sample(
            &text,
            "hitbox_requests_total",
            &[("layer", "hitbox"), ("rule", "rfc9111"), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("miss"), Some(1.0), "{text}");
    assert_eq!(requests("hit"), Some(1.0), "{text}");
    assert_eq!(requests("stale"), Some(0.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "hitbox_tier_reads_total",
            &[("tier", "moka"), ("result", "hit")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "hitbox_tier_entries", &[("tier", "moka")]),
        Some(1.0),
        "{text}"
    );
    // /metrics went around the cache: it is not counted as a request.
    assert_eq!(cache.stats().requests(), 2);
}
