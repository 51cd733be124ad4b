//! Formats and compressors, encoding and decoding 1 KiB and 100 KiB values.
//!
//! This is the measurement the default format was chosen by; see
//! `benches/README.md` for the results.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hitbox_backend::{CacheableValue, Format};
use hitbox_benches::{Record, records};
use std::hint::black_box;
use std::io::{Read, Write};

fn formats() -> Vec<(&'static str, Format)> {
    vec![
        ("postcard", Format::Postcard),
        ("bitcode", Format::Bitcode),
        ("json", Format::Json),
        ("bincode", Format::Bincode),
    ]
}

fn bench_formats(c: &mut Criterion) {
    for (label, size) in [("1KiB", 1024), ("100KiB", 100 * 1024)] {
        let value = records(size);
        let mut group = c.benchmark_group(format!("format/{label}"));
        for (name, format) in formats() {
            let mut encoded = Vec::new();
            value.encode(format, &mut encoded).unwrap();
            eprintln!("format {name} {label}: {} bytes", encoded.len());
            group.throughput(Throughput::Bytes(encoded.len() as u64));
            group.bench_function(BenchmarkId::new("encode", name), |b| {
                b.iter(|| {
                    let mut out = Vec::with_capacity(encoded.len());
                    black_box(&value).encode(format, &mut out).unwrap();
                    out
                })
            });
            let bytes = bytes::Bytes::from(encoded);
            group.bench_function(BenchmarkId::new("decode", name), |b| {
                b.iter(|| Vec::<Record>::decode(black_box(bytes.clone()), format).unwrap())
            });
        }
        group.finish();
    }
}

fn bench_compressors(c: &mut Criterion) {
    for (label, size) in [("1KiB", 1024), ("100KiB", 100 * 1024)] {
        let mut plain = Vec::new();
        records(size).encode(Format::Postcard, &mut plain).unwrap();
        let mut group = c.benchmark_group(format!("compress/{label}"));
        group.throughput(Throughput::Bytes(plain.len() as u64));

        for level in [1, 3] {
            let packed = zstd::bulk::compress(&plain, level).unwrap();
            eprintln!("zstd-{level} {label}: {} -> {} bytes", plain.len(), packed.len());
            group.bench_function(BenchmarkId::new("compress", format!("zstd-{level}")), |b| {
                b.iter(|| zstd::bulk::compress(black_box(&plain), level).unwrap())
            });
            group.bench_function(BenchmarkId::new("decompress", format!("zstd-{level}")), |b| {
                b.iter(|| zstd::bulk::decompress(black_box(&packed), plain.len()).unwrap())
            });
        }

        let packed = lz4_flex::compress_prepend_size(&plain);
        eprintln!("lz4 {label}: {} -> {} bytes", plain.len(), packed.len());
        group.bench_function(BenchmarkId::new("compress", "lz4"), |b| {
            b.iter(|| lz4_flex::compress_prepend_size(black_box(&plain)))
        });
        group.bench_function(BenchmarkId::new("decompress", "lz4"), |b| {
            b.iter(|| lz4_flex::decompress_size_prepended(black_box(&packed)).unwrap())
        });

        let gzip = |data: &[u8]| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        };
        let packed = gzip(&plain);
        eprintln!("gzip-1 {label}: {} -> {} bytes", plain.len(), packed.len());
        group.bench_function(BenchmarkId::new("compress", "gzip-1"), |b| {
            b.iter(|| gzip(black_box(&plain)))
        });
        group.bench_function(BenchmarkId::new("decompress", "gzip-1"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(plain.len());
                flate2::read::GzDecoder::new(black_box(&packed[..]))
                    .read_to_end(&mut out)
                    .unwrap();
                out
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = bench_formats, bench_compressors
}
criterion_main!(benches);
