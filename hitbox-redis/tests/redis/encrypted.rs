//! With the encryptor stage on, Redis never holds a byte of plaintext.

use fred::prelude::KeysInterface;
use hitbox_backend::encryption::{AesGcmEncryptor, MasterKey};
use hitbox_backend::{Cache, Compression, Staged, Stages};
use hitbox_core::CachePolicy;
use std::time::Duration;

use crate::common::{STANDALONE, backend, env, init_tracing, key, plain_client, unique_prefix};

const SECRET: &str = "card number 4111-1111-1111-1111 belongs to Ada";

fn value() -> Vec<String> {
    // Long enough to be compressed, so compression and encryption both run.
    (0..50).map(|i| format!("{SECRET} #{i}")).collect()
}

async fn stored_bytes(url: &str, redis_key: &str) -> Vec<u8> {
    let plain = plain_client(url).await;
    let bytes: Option<Vec<u8>> = plain.get(redis_key).await.expect("GET");
    bytes.expect("the entry is in Redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_receives_only_ciphertext() {
    init_tracing();
    let url = env(STANDALONE);
    let master = MasterKey::from_bytes(&[0x42; 32]).expect("a 32-byte key");
    let prefix = unique_prefix("encrypted");
    let redis = backend(&url, &prefix).await;
    let stages = Stages::new()
        .compression(Compression::zstd(3))
        .encryptor(AesGcmEncryptor::new(master));
    let cache = Cache::builder(Staged::new(redis.clone(), stages))
        .policy(CachePolicy::new(Duration::from_secs(60)))
        .build();
    cache.set(&key(1), &value()).await.expect("store");
    assert_eq!(
        cache.get::<Vec<String>>(&key(1)).await,
        Some(value()),
        "reads back"
    );

    let stored = stored_bytes(&url, &redis.redis_key(&key(1))).await;
    for needle in [&b"card number"[..], b"4111", b"Ada"] {
        assert!(
            !stored.windows(needle.len()).any(|window| window == needle),
            "plaintext {:?} found in Redis",
            String::from_utf8_lossy(needle)
        );
    }

    // Control: the same search finds the plaintext when the stage is off,
    // so the check above can fail.
    let control_prefix = unique_prefix("plaintext");
    let control = backend(&url, &control_prefix).await;
    let plain_cache = Cache::builder(control.clone())
        .policy(CachePolicy::new(Duration::from_secs(60)))
        .build();
    plain_cache.set(&key(1), &value()).await.expect("store");
    let stored = stored_bytes(&url, &control.redis_key(&key(1))).await;
    assert!(stored.windows(11).any(|window| window == b"card number"));

    // And a reader with another key gets a miss, not garbage.
    let other = Stages::new()
        .compression(Compression::zstd(3))
        .encryptor(AesGcmEncryptor::new(
            MasterKey::from_bytes(&[0x43; 32]).expect("a 32-byte key"),
        ));
    let intruder = Cache::new(Staged::new(redis, other));
    assert_eq!(intruder.get::<Vec<String>>(&key(1)).await, None);
}
