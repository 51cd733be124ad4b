//! Three tiers with different stages: moka in process (plaintext, the
//! fastest), Redis (compressed with zstd and encrypted with AES-256-GCM),
//! and, when configured, the cachekit.io remote tier (encrypted too, so the
//! service only ever stores ciphertext).
//!
//! Needs:
//! - a Redis: `HITBOX_REDIS_URL` (default `redis://127.0.0.1:6379`);
//! - `CACHEKIT_MASTER_KEY`: 64 hex digits (`openssl rand -hex 32`). The
//!   variable alone switches nothing on: the example builds the encryptor
//!   from it explicitly and hands it to the stages of each tier;
//! - optionally `CACHEKIT_API_KEY` (and `CACHEKIT_API_URL`,
//!   `CACHEKIT_DEFAULT_TTL`) for the cachekit.io tier, which is skipped
//!   with a message when the key is not set.
//!
//! Run with `cargo run -p hitbox-examples --example encrypted_tiers`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hitbox_backend::{Backend, Cache, Compose, Compression, Encryptor, Staged, Stages};
use hitbox_cachekit::{API_KEY_ENV, CachekitBackend, CachekitConfig};
use hitbox_core::{CacheKey, CachePolicy};
use hitbox_moka::MokaBackend;
use hitbox_redis::RedisBackend;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Patient {
    id: u64,
    name: String,
    diagnosis: String,
}

/// Stands in for the database; counts its calls.
async fn load_patient(id: u64, calls: Arc<AtomicUsize>) -> Patient {
    calls.fetch_add(1, Ordering::SeqCst);
    Patient {
        id,
        name: format!("patient {id}"),
        diagnosis: "confidential".to_string(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter("warn").init();

    // One encryptor, shared by the Redis and cachekit.io stages.
    let encryptor: Arc<dyn Encryptor> = match CachekitConfig::encryptor_from_env() {
        Ok(encryptor) => {
            println!("encrypting with key {}", encryptor.fingerprint());
            Arc::new(encryptor)
        }
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!("set CACHEKIT_MASTER_KEY to 64 hex digits, for instance `openssl rand -hex 32`");
            return ExitCode::FAILURE;
        }
    };

    let url = std::env::var("HITBOX_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let prefix = format!("hitbox-example:encrypted-tiers:{}:", std::process::id());
    let redis = match RedisBackend::builder().url(&url).key_prefix(prefix).build() {
        Ok(redis) => redis,
        Err(error) => {
            eprintln!("error: cannot configure Redis at {url}: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = redis.wait_connected(Duration::from_secs(3)).await {
        eprintln!("error: cannot reach Redis at {url}: {error}");
        eprintln!("start one (for instance `docker run --rm -p 6379:6379 redis`) or set HITBOX_REDIS_URL");
        return ExitCode::FAILURE;
    }

    // L1: plaintext, in process. L2: compressed, then encrypted.
    let moka = MokaBackend::new(64 * 1024 * 1024);
    let redis_tier = Staged::new(
        redis,
        Stages::new()
            .compression(Compression::zstd(3))
            .shared_encryptor(Arc::clone(&encryptor)),
    );
    let near = moka.compose(redis_tier);

    // L3, when configured: cachekit.io, encrypted before it leaves.
    let tiers: Arc<dyn Backend> = if std::env::var_os(API_KEY_ENV).is_none() {
        println!("{API_KEY_ENV} is not set: skipping the cachekit.io tier (moka + Redis only)");
        Arc::new(near)
    } else {
        match CachekitBackend::from_env() {
            Ok(cachekit) => {
                println!("cachekit.io tier at {}", cachekit.origin());
                let remote = Staged::new(cachekit, Stages::new().shared_encryptor(Arc::clone(&encryptor)));
                Arc::new(near.compose(remote))
            }
            Err(error) => {
                // The error never contains the API key.
                eprintln!("error: cannot configure cachekit.io: {error}");
                return ExitCode::FAILURE;
            }
        }
    };
    println!("tiers: {}", tiers.label());

    let cache = Cache::builder_shared(tiers)
        .policy(CachePolicy::new(Duration::from_secs(300)))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let key = CacheKey::entity("clinic", "acme", "patient", "42");
    for round in 1..=3 {
        let calls_for_load = Arc::clone(&calls);
        let patient = cache
            .get_or_insert_with(&key, move || load_patient(42, calls_for_load))
            .await;
        println!("round {round}: {patient:?}");
    }
    println!(
        "origin calls: {} (the first round loaded, the others hit)",
        calls.load(Ordering::SeqCst)
    );
    let stats = cache.stats();
    for tier in &stats.tiers {
        println!(
            "tier {:>8}: {} hits, {} misses, {} errors",
            tier.label, tier.hits, tier.misses, tier.errors
        );
    }
    if let Err(error) = cache.delete(&key).await {
        eprintln!("warning: cleanup failed: {error}");
    }
    ExitCode::SUCCESS
}
