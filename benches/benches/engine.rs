//! The engine's hit path on the moka tier, for a 1 KiB and a 100 KiB value.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hitbox_backend::Cache;
use hitbox_core::CacheKey;
use hitbox_moka::MokaBackend;
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
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = bench_hits
}
criterion_main!(benches);
