//! The HTTP layer in process: building the key of a typical request, and a
//! whole `Service::call` answered from L1 (moka), with the body collected;
//! the same hit with and without a body predicate.
//!
//! No sockets: the layer wraps a trivial inner service, and every call is
//! driven on a current-thread runtime, so what is measured is the layer's
//! own cost on a hit (decide, key, moka read, decode, response).

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use hitbox_backend::Cache;
use hitbox_core::{Extractor, KeyBuilder};
use hitbox_moka::MokaBackend;
use hitbox_tower::extract::default_key;
use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::{CacheLayer, Rule};
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

/// A request as a browser or an API client sends it: absolute path with a
/// query, a host and a handful of ordinary headers.
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

fn bench_key(c: &mut Criterion) {
    let (parts, _) = typical_request().into_parts();
    let extractor = default_key();
    let mut group = c.benchmark_group("http/key");
    group.bench_function("default_key", |b| {
        b.iter(|| {
            let mut key = KeyBuilder::new("http");
            extractor.extract(black_box(&parts), &mut key);
            key.build()
        })
    });
    group.finish();
}

fn bench_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("http/call");
    for (label, size) in [("1KiB", 1024), ("100KiB", 100 * 1024)] {
        let body = Bytes::from(vec![b'x'; size]);
        let origin = service_fn(move |_request: Request<Full<Bytes>>| {
            let body = body.clone();
            async move {
                let mut response = Response::new(Full::new(body));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
                Ok::<_, Infallible>(response)
            }
        });

        // The origin alone: what any tower stack pays for a call.
        group.bench_function(BenchmarkId::new("origin_only", label), |b| {
            b.to_async(&runtime).iter_batched(
                typical_request,
                |request| {
                    let service = origin.clone();
                    async move {
                        let response = service.oneshot(request).await.unwrap();
                        response.into_body().collect().await.unwrap().to_bytes()
                    }
                },
                BatchSize::SmallInput,
            )
        });

        let cache = Cache::new(MokaBackend::default());
        let layer = CacheLayer::builder(cache).rule(Rule::new()).build();
        let service = layer.layer(origin.clone());
        // Fill the cache (the store completes in a task of its own), then
        // check that two hits hand out the stored buffer itself: no copy.
        let call = || async {
            let response = service.clone().oneshot(typical_request()).await.unwrap();
            let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
            (status, response.into_body().collect().await.unwrap().to_bytes())
        };
        let (first, second) = runtime.block_on(async {
            for _ in 0..100 {
                let (status, _) = call().await;
                if status.contains("; hit") && !status.contains("collapsed") {
                    return (call().await, call().await);
                }
                tokio::task::yield_now().await;
            }
            panic!("the layer never answered a hit");
        });
        for (status, body) in [&first, &second] {
            assert!(status.contains("; hit"), "not a hit: {status}");
            assert_eq!(body.len(), size);
        }
        assert_eq!(
            first.1.as_ptr(),
            second.1.as_ptr(),
            "two hits should hand out the same stored buffer"
        );

        group.bench_function(BenchmarkId::new("l1_hit", label), |b| {
            b.to_async(&runtime).iter_batched(
                typical_request,
                |request| {
                    let service = service.clone();
                    async move {
                        let response = service.oneshot(request).await.unwrap();
                        response.into_body().collect().await.unwrap().to_bytes()
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Standards mode: a plain hit beside a hit for one byte range of the same
/// stored response. The range is sliced out of the stored buffer: the
/// check before the measurement fails if a byte is copied.
fn bench_range_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("http/rfc9111");
    for (label, size) in [("1KiB", 1024), ("100KiB", 100 * 1024)] {
        let body = Bytes::from(vec![b'x'; size]);
        let origin = service_fn(move |_request: Request<Full<Bytes>>| {
            let body = body.clone();
            async move {
                let mut response = Response::new(Full::new(body));
                let headers = response.headers_mut();
                headers.insert(header::CACHE_CONTROL, "max-age=3600".parse().unwrap());
                headers.insert(header::ETAG, "\"v1\"".parse().unwrap());
                Ok::<_, Infallible>(response)
            }
        });
        let layer = CacheLayer::builder(Cache::new(MokaBackend::default()))
            .rfc9111(Rfc9111::new())
            .build();
        let service = layer.layer(origin);
        let ranged = || {
            let mut request = typical_request();
            request
                .headers_mut()
                .insert(header::RANGE, "bytes=100-599".parse().unwrap());
            request
        };
        let call = |request: Request<Full<Bytes>>| {
            let service = service.clone();
            async move {
                let response = service.oneshot(request).await.unwrap();
                let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
                (status, response.into_body().collect().await.unwrap().to_bytes())
            }
        };
        let (whole, part) = runtime.block_on(async {
            for _ in 0..100 {
                let (status, _) = call(typical_request()).await;
                if status.contains("; hit") {
                    return (call(typical_request()).await, call(ranged()).await);
                }
                tokio::task::yield_now().await;
            }
            panic!("the layer never answered a hit");
        });
        assert!(part.0.contains("; hit"), "not a hit: {}", part.0);
        assert_eq!((whole.1.len(), part.1.len()), (size, 500));
        assert_eq!(
            part.1.as_ptr(),
            whole.1[100..].as_ptr(),
            "a range hit should hand out a slice of the stored buffer"
        );
        for (name, make) in [("hit", typical_request as fn() -> _), ("range_hit", ranged)] {
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.to_async(&runtime).iter_batched(
                    make,
                    |request| {
                        let service = service.clone();
                        async move {
                            let response = service.oneshot(request).await.unwrap();
                            response.into_body().collect().await.unwrap().to_bytes()
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

/// A rule with a body predicate against one without: a `GET` hit under a
/// rule whose predicate judges the (absent) body, and a query-style `POST`
/// whose 200-byte JSON body is read, judged and keyed on every hit, beside
/// the plain `GET` hit. Only rules with body predicates pay for them.
fn bench_body_predicate_hit(c: &mut Criterion) {
    use hitbox_core::Predicate;
    use hitbox_tower::BodyKey;
    use hitbox_tower::predicate::{Json, ReadSize};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = Bytes::from(vec![b'x'; 1024]);
    let origin = service_fn(move |_request: Request<Full<Bytes>>| {
        let body = body.clone();
        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
    });
    let search = || {
        Request::post("/v1/search")
            .header(header::HOST, "api.example.com")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "hitbox-bench/1.0")
            .body(Full::new(Bytes::from_static(
                br#"{"query": {"text": "rust cache", "lang": "en"}, "filters": {"year": [2024, 2025], "kind": "article"}, "page": 2, "size": 20, "sort": "relevance"}"#,
            )))
            .unwrap()
    };
    type MakeRequest = fn() -> Request<Full<Bytes>>;
    let cases: [(&str, Rule, MakeRequest); 3] = [
        ("get_without_body_predicate", Rule::new(), typical_request),
        (
            "get_with_body_predicate",
            Rule::new().when_body(ReadSize::at_most(1024)),
            typical_request,
        ),
        (
            "post_json_body_predicate_and_key",
            Rule::new()
                .post_as_read(BodyKey::json())
                .when_body(Json::exists("/query/text").and(ReadSize::at_most(4096))),
            search,
        ),
    ];
    let mut group = c.benchmark_group("http/body");
    for (name, rule, make) in cases {
        let layer = CacheLayer::builder(Cache::new(MokaBackend::default()))
            .rule(rule)
            .build();
        let service = layer.layer(origin.clone());
        runtime.block_on(async {
            for _ in 0..100 {
                let response = service.clone().oneshot(make()).await.unwrap();
                let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
                response.into_body().collect().await.unwrap();
                if status.contains("; hit") {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!("{name}: the layer never answered a hit");
        });
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter_batched(
                make,
                |request| {
                    let service = service.clone();
                    async move {
                        let response = service.oneshot(request).await.unwrap();
                        response.into_body().collect().await.unwrap().to_bytes()
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = bench_key, bench_hit, bench_range_hit, bench_body_predicate_hit
}
criterion_main!(benches);
