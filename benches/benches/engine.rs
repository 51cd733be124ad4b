//! The engine's hit path on the moka tier, for a 1 KiB and a 100 KiB value;
//! the AES-GCM encryptor; a read through three composed tiers; what
//! observability costs a hit (`engine/observability`: build with and
//! without `--features metrics` to compare).

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hitbox_backend::encryption::{AesGcmEncryptor, EntryBinding, MasterKey};
use hitbox_backend::{Backend, Cache, CompositionBackend, RefillPolicy};
use hitbox_core::CacheKey;
use hitbox_moka::MokaBackend;
use hitbox_tower::CachedResponse;
use std::hint::black_box;

fn bench_hits(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = Cache::new(MokaBackend::default());
    let mut group = c.benchmark_group("engine/hit");
    for (label, size) in [("1KiB", 1024), ("100KiB", 100 * 1024)] {
        let key = CacheKey::builder("bench").part("size", label).build();
        let value = bytes::Bytes::from(vec![42u8; size]);
        runtime.block_on(cache.set(&key, &value.to_vec())).unwrap();
        group.bench_function(BenchmarkId::new("get", label), |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(cache.get::<Vec<u8>>(black_box(&key)).await.unwrap()) })
        });
    }
    group.finish();

    // The value the HTTP layer stores: decoding slices headers and body out
    // of the stored bytes, so a hit costs the same at any size.
    let mut group = c.benchmark_group("engine/hit_response");
    for (label, size) in [("1KiB", 1024), ("100KiB", 100 * 1024)] {
        let key = CacheKey::builder("bench").part("response", label).build();
        runtime.block_on(cache.set(&key, &response(size))).unwrap();
        // Decoded on the first read, shared afterwards (entries up to
        // 16 KiB): the layer's hit path.
        group.bench_function(BenchmarkId::new("get_entry", label), |b| {
            b.to_async(&runtime).iter(|| async {
                black_box(cache.get_entry::<CachedResponse>(black_box(&key)).await.unwrap())
            })
        });
        // What a caller that needs its own copy pays on top.
        group.bench_function(BenchmarkId::new("get_entry_owned", label), |b| {
            b.to_async(&runtime).iter(|| async {
                black_box(
                    cache
                        .get_entry::<CachedResponse>(black_box(&key))
                        .await
                        .unwrap()
                        .into_value(),
                )
            })
        });
    }
    group.finish();
}

/// A JSON response as an API answers it, with a body of `size` bytes.
fn response(size: usize) -> CachedResponse {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
    headers.insert(http::header::CONTENT_LENGTH, size.into());
    headers.insert(http::header::CACHE_CONTROL, "max-age=60".parse().unwrap());
    CachedResponse::new(http::StatusCode::OK, headers, Bytes::from(vec![b'x'; size]))
}

fn bench_encryptor(c: &mut Criterion) {
    let master = MasterKey::from_bytes(&[7u8; 32]).unwrap();
    let encryptor = AesGcmEncryptor::builder(master).tenant("bench").build().unwrap();
    let binding = EntryBinding::new("bench:v1:path=/items/42", "postcard");
    let mut group = c.benchmark_group("encryptor");
    for (label, size) in [("1KiB", 1024), ("100KiB", 100 * 1024)] {
        let plain = vec![42u8; size];
        let sealed = encryptor.seal(&binding, &plain).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("seal", label), |b| {
            b.iter(|| encryptor.seal(&binding, black_box(&plain)).unwrap())
        });
        group.bench_function(BenchmarkId::new("open", label), |b| {
            b.iter(|| encryptor.open(&binding, black_box(&sealed)).unwrap())
        });
    }
    group.finish();
}

/// Three tiers, moka -> moka -> moka, composed as `l1.compose(l2.compose(l3))`
/// without refills, so that an entry only L3 holds stays there and every
/// read of it goes through the three tiers.
fn bench_three_tiers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tier = |label: &str| MokaBackend::builder().label(label).build();
    let (l1, l2, l3) = (tier("l1"), tier("l2"), tier("l3"));
    let lower = CompositionBackend::builder(l2, l3.clone())
        .refill_policy(RefillPolicy::Never)
        .build();
    let tiers = CompositionBackend::builder(l1, lower)
        .refill_policy(RefillPolicy::Never)
        .build();
    let cache = Cache::new(tiers);
    let value = response(1024);
    let everywhere = CacheKey::builder("bench").part("in", "all").build();
    let only_l3 = CacheKey::builder("bench").part("in", "l3").build();
    runtime.block_on(async {
        cache.set(&everywhere, &value).await.unwrap();
        // Written through the engine to a cache over L3 alone, so the
        // bytes are a real envelope.
        Cache::new(l3.clone()).set(&only_l3, &value).await.unwrap();
    });
    let mut group = c.benchmark_group("three_tiers/read_1KiB");
    for (label, key) in [("l1_hit", &everywhere), ("l3_hit", &only_l3)] {
        assert!(runtime.block_on(cache.backend().read(key)).unwrap().is_some());
        group.bench_function(BenchmarkId::new("backend_read", label), |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(cache.backend().read(black_box(key)).await.unwrap()) })
        });
        group.bench_function(BenchmarkId::new("engine_get_entry", label), |b| {
            b.to_async(&runtime).iter(|| async {
                black_box(cache.get_entry::<CachedResponse>(black_box(key)).await.unwrap())
            })
        });
    }
    group.finish();
}

/// The layer's hit (`get_entry` of a 1 KiB response from moka) as
/// observability leaves it:
///
/// - `no_recorder`: no metrics recorder and no tracing subscriber. Built
///   without the `metrics` feature, this is the hit as it always was; with
///   it, the no-op handles' cost.
/// - `recorder` (feature `metrics`): a recorder installed before the cache
///   was built, so every counter, gauge and latency is recorded.
/// - `spans_disabled`: a subscriber that keeps `INFO` and above, as in
///   production: the engine's `DEBUG` spans are checked and skipped.
/// - `spans_enabled`: a subscriber that takes every span (and does nothing
///   with it), for the cost of turning the spans on.
fn bench_observability(c: &mut Criterion) {
    use tracing_subscriber::layer::SubscriberExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = CacheKey::builder("bench").part("observed", "1KiB").build();
    let hit = |cache: &Cache| {
        runtime.block_on(cache.set(&key, &response(1024))).unwrap();
        assert!(
            runtime
                .block_on(cache.get_entry::<CachedResponse>(&key))
                .is_some()
        );
    };
    let mut group = c.benchmark_group("engine/observability");
    let case = |group: &mut criterion::BenchmarkGroup<'_, _>, name: &str, cache: &Cache| {
        hit(cache);
        group.bench_function(BenchmarkId::new("get_entry", name), |b| {
            b.to_async(&runtime).iter(|| async {
                black_box(cache.get_entry::<CachedResponse>(black_box(&key)).await.unwrap())
            })
        });
    };

    let plain = Cache::new(MokaBackend::builder().label("plain").build());
    case(&mut group, "no_recorder", &plain);

    #[cfg(feature = "metrics")]
    {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let recorded = metrics::with_local_recorder(&recorder, || {
            Cache::new(MokaBackend::builder().label("recorded").build())
        });
        case(&mut group, "recorder", &recorded);
    }

    {
        let production = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
            .with(tracing_subscriber::filter::LevelFilter::INFO);
        let _guard = tracing::subscriber::set_default(production);
        case(&mut group, "spans_disabled", &plain);
    }
    {
        struct Takes;
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Takes {}
        let everything = tracing_subscriber::registry().with(Takes);
        let _guard = tracing::subscriber::set_default(everything);
        case(&mut group, "spans_enabled", &plain);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = bench_hits, bench_encryptor, bench_three_tiers, bench_observability
}
criterion_main!(benches);
