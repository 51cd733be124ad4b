//! Stages: every combination round-trips, and every mismatch or corruption
//! is a clean miss.

use std::time::Duration;

use bytes::Bytes;
use hitbox_backend::{
    Backend, BackendExt, Cache, CodecError, Compression, EncryptionContext, Encryptor, Format, MemoryBackend,
    Staged, Stages,
};
use hitbox_core::{CacheKey, Tag};

/// A toy encryptor (XOR with a byte, bound to the key by a prefix): enough to
/// exercise the stage plumbing; the real AES-GCM stage has its own tests.
struct XorEncryptor(u8);

impl Encryptor for XorEncryptor {
    fn id(&self) -> u8 {
        200
    }
    fn encrypt(&self, context: &EncryptionContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CodecError> {
        let mut out = context.key.as_str().as_bytes().to_vec();
        out.push(context.format_id);
        out.push(u8::from(context.compressed));
        out.extend(plaintext.iter().map(|b| b ^ self.0));
        Ok(out)
    }
    fn decrypt(&self, context: &EncryptionContext<'_>, ciphertext: &[u8]) -> Result<Vec<u8>, CodecError> {
        let mut bound = context.key.as_str().as_bytes().to_vec();
        bound.push(context.format_id);
        bound.push(u8::from(context.compressed));
        let body = ciphertext.strip_prefix(&bound[..]).ok_or(CodecError::Decrypt)?;
        Ok(body.iter().map(|b| b ^ self.0).collect())
    }
}

fn key(name: &str) -> CacheKey {
    CacheKey::builder("stages").part("k", name).build()
}

fn big_value() -> String {
    "all work and no play makes a cache entry compressible. ".repeat(100)
}

#[tokio::test]
async fn every_stage_combination_round_trips() {
    let combos = [
        Stages::new(),
        Stages::new().compression(Compression::zstd(3)),
        Stages::new()
            .compression(Compression::zstd(19))
            .min_compress_size(0),
        Stages::new().encryptor(XorEncryptor(0x5A)),
        Stages::new()
            .compression(Compression::zstd(3))
            .encryptor(XorEncryptor(0x33)),
        Stages::new().compression(Compression::Lz4).min_compress_size(0),
        Stages::new()
            .compression(Compression::Lz4)
            .encryptor(XorEncryptor(0x77)),
    ];
    for stages in combos {
        let tier = Staged::new(MemoryBackend::new(), stages.clone());
        for (name, value) in [("small", "tiny".to_string()), ("big", big_value())] {
            tier.set(&key(name), &value, Format::Postcard, Duration::from_secs(60))
                .await
                .unwrap();
            let back: Option<String> = tier.get(&key(name), Format::Postcard).await.unwrap();
            assert_eq!(back.as_deref(), Some(value.as_str()), "{stages:?} {name}");
        }
    }
}

#[tokio::test]
async fn compression_applies_only_above_the_threshold_and_shrinks() {
    let raw = MemoryBackend::new();
    let tier = Staged::new(
        raw.clone(),
        Stages::new()
            .compression(Compression::zstd(3))
            .min_compress_size(1024),
    );
    tier.set(
        &key("small"),
        &"x".repeat(10),
        Format::Postcard,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    tier.set(
        &key("big"),
        &big_value(),
        Format::Postcard,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(
        raw.raw(&key("small")).unwrap()[4],
        0,
        "small entries stay uncompressed"
    );
    let big = raw.raw(&key("big")).unwrap();
    assert_eq!(big[4], Compression::zstd(3).id());
    assert!(big.len() < big_value().len() / 4, "zstd shrinks repetitive text");
}

#[tokio::test]
async fn mismatched_stages_are_misses() {
    let raw = MemoryBackend::new();
    let zstd = Staged::new(
        raw.clone(),
        Stages::new()
            .compression(Compression::zstd(3))
            .min_compress_size(0),
    );
    zstd.set(&key("v"), &big_value(), Format::Postcard, Duration::from_secs(60))
        .await
        .unwrap();

    // Read without stages: the staged header is not an envelope.
    assert_eq!(
        raw.get::<String>(&key("v"), Format::Postcard).await.unwrap(),
        None
    );
    // Read with an encryptor where none was used.
    let encrypted = Staged::new(
        raw.clone(),
        Stages::new()
            .compression(Compression::zstd(3))
            .encryptor(XorEncryptor(1)),
    );
    assert_eq!(
        encrypted
            .get::<String>(&key("v"), Format::Postcard)
            .await
            .unwrap(),
        None
    );
    // Read with another format.
    assert_eq!(zstd.get::<String>(&key("v"), Format::Json).await.unwrap(), None);

    // Encrypted, then read without the encryptor, or under another key.
    encrypted
        .set(
            &key("e"),
            &"secret".to_string(),
            Format::Postcard,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let plain_reader = Staged::new(raw.clone(), Stages::new().compression(Compression::zstd(3)));
    assert_eq!(
        plain_reader
            .get::<String>(&key("e"), Format::Postcard)
            .await
            .unwrap(),
        None
    );
    raw.put_raw(&key("copied"), raw.raw(&key("e")).unwrap());
    assert_eq!(
        encrypted
            .get::<String>(&key("copied"), Format::Postcard)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        encrypted
            .get::<String>(&key("e"), Format::Postcard)
            .await
            .unwrap()
            .as_deref(),
        Some("secret")
    );
}

#[tokio::test]
async fn truncated_corrupted_and_foreign_zstd_entries_are_misses() {
    corruption_is_a_miss(Compression::zstd(3)).await;
}

#[tokio::test]
async fn truncated_corrupted_and_foreign_lz4_entries_are_misses() {
    corruption_is_a_miss(Compression::Lz4).await;
}

async fn corruption_is_a_miss(compression: Compression) {
    let raw = MemoryBackend::new();
    let stages = Stages::new().compression(compression).min_compress_size(0);
    let tier = Staged::new(raw.clone(), stages.clone());
    tier.set(&key("v"), &big_value(), Format::Postcard, Duration::from_secs(60))
        .await
        .unwrap();
    let good = raw.raw(&key("v")).unwrap();
    let cache = Cache::new(Staged::new(raw.clone(), stages));
    for len in 0..good.len() {
        raw.put_raw(&key("t"), good.slice(..len));
        assert_eq!(
            tier.get::<String>(&key("t"), Format::Postcard).await.unwrap(),
            None,
            "len {len}"
        );
        assert_eq!(cache.get::<String>(&key("t")).await, None, "len {len}");
    }
    for i in 0..good.len() {
        let mut corrupt = good.to_vec();
        corrupt[i] ^= 0xFF;
        raw.put_raw(&key("c"), corrupt);
        // The frame checksum catches damage to the compressed bytes; a
        // flip in a byte that carries no meaning may still decode, but
        // only ever to the original value, never to something else.
        if let Some(value) = tier.get::<String>(&key("c"), Format::Postcard).await.unwrap() {
            assert_eq!(value, big_value(), "byte {i} decoded to garbage");
        }
    }
    // A claim of a huge decompressed size is refused before allocating.
    let mut bomb = good.to_vec();
    bomb[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
    raw.put_raw(&key("bomb"), bomb);
    assert_eq!(
        tier.get::<String>(&key("bomb"), Format::Postcard).await.unwrap(),
        None
    );
    for foreign in [&b"PONG"[..], b"", b"{\"a\":1}", &[0xFF; 64]] {
        raw.put_raw(&key("f"), Bytes::copy_from_slice(foreign));
        assert_eq!(
            tier.get::<String>(&key("f"), Format::Postcard).await.unwrap(),
            None
        );
        assert_eq!(cache.get::<String>(&key("f")).await, None);
    }
    // Every read of damaged or foreign bytes was a miss, none a hit.
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.stale_hits), (0, 0));
    assert_eq!(stats.misses, good.len() as u64 + 4);
}

#[tokio::test]
async fn staged_tiers_pass_removal_and_tags_through() {
    let raw = MemoryBackend::new();
    let tier = Staged::new(raw.clone(), Stages::new().compression(Compression::zstd(1)));
    let tag = [Tag::from("t")];
    tier.write(&key("a"), Bytes::from_static(b"HB"), Duration::from_secs(5), &tag)
        .await
        .unwrap();
    assert!(tier.exists(&key("a")).await.unwrap());
    assert_eq!(tier.invalidate_tag(&Tag::from("t")).await.unwrap(), 1);
    assert!(!tier.remove(&key("a")).await.unwrap());
    assert_eq!(tier.label(), "memory");
}
