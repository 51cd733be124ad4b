//! Two instances with moka in front of one shared Redis: what one instance
//! invalidates leaves the other's in-process tier too, and a key both miss
//! at once is loaded by one of them only.
//!
//! Both instances live in this one process (two `Cache` values with their
//! own Redis connections, L1 and origin id), as two servers would.
//!
//! Needs a Redis: `HITBOX_REDIS_URL` (default `redis://127.0.0.1:6379`).
//! Run with `cargo run -p hitbox-examples --example multi_tier`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hitbox_backend::{Backend, Cache, Compose};
use hitbox_core::{CacheKey, CachePolicy, EntryOptions};
use hitbox_moka::MokaBackend;
use hitbox_redis::invalidation::{BusEvent, Invalidation, InvalidationBus};
use hitbox_redis::{RedisBackend, RedisLock};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
    price_cents: u64,
}

/// Stands in for a slow database; counts its calls.
async fn load_product(id: u64, calls: Arc<AtomicUsize>) -> Result<Product, std::io::Error> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(Product {
        id,
        name: format!("product {id}"),
        price_cents: 100 * id,
    })
}

/// One instance: its Redis connections, its L1, its bus and its cache.
struct Instance {
    name: &'static str,
    bus: InvalidationBus,
    lock: RedisLock,
    cache: Cache,
}

impl Instance {
    async fn start(name: &'static str, url: &str, prefix: &str) -> Result<Instance, String> {
        let redis = RedisBackend::builder()
            .url(url)
            .key_prefix(prefix)
            .build()
            .map_err(|error| error.to_string())?;
        redis
            .wait_connected(Duration::from_secs(3))
            .await
            .map_err(|error| error.to_string())?;
        let moka = MokaBackend::new(32 * 1024 * 1024);
        let bus = InvalidationBus::builder(&redis)
            .degraded_ttl(Duration::from_secs(5))
            .start(moka)
            .map_err(|error| error.to_string())?;
        bus.wait_subscribed(Duration::from_secs(3))
            .await
            .map_err(|error| error.to_string())?;
        let tiers = bus.broadcasting(bus.local_tier().compose(redis.clone()));
        let cache = Cache::builder(tiers)
            .policy(CachePolicy::new(Duration::from_secs(300)))
            .build();
        let lock = RedisLock::new(&redis).lease(Duration::from_secs(5));
        Ok(Instance {
            name,
            bus,
            lock,
            cache,
        })
    }

    /// Whether this instance's L1 would serve `key`.
    async fn l1_serves(&self, key: &CacheKey) -> bool {
        matches!(self.bus.local_tier().read(key).await, Ok(Some(_)))
    }
}

/// Waits (at most 5 s) for the bus event `wanted`.
async fn wait_for(events: &mut broadcast::Receiver<BusEvent>, wanted: BusEvent) -> bool {
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(event) = events.recv().await {
            if event == wanted {
                return true;
            }
        }
        false
    })
    .await;
    matches!(waited, Ok(true))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter("error").init();
    let url = std::env::var("HITBOX_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    // A prefix of this run's own, so the example leaves other data alone.
    let prefix = format!("hitbox-example:multi-tier:{}:", std::process::id());

    let (a, b) = match (
        Instance::start("A", &url, &prefix).await,
        Instance::start("B", &url, &prefix).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("error: cannot use Redis at {url}: {error}");
            eprintln!(
                "start one (for instance `docker run --rm -p 6379:6379 redis`) or set HITBOX_REDIS_URL"
            );
            return ExitCode::FAILURE;
        }
    };
    println!("two instances share {url} on channel {}", a.bus.channel());

    let calls = Arc::new(AtomicUsize::new(0));
    let key = CacheKey::entity("shop", "acme", "product", "1");

    // A loads the product; B finds it in Redis and keeps a copy in its L1.
    let loaded = {
        let calls = Arc::clone(&calls);
        a.cache
            .try_get_or_insert_with(&key, move || load_product(1, calls))
            .await
            .expect("the load succeeds")
    };
    let seen = b.cache.get::<Product>(&key).await;
    println!("{} loaded {loaded:?}; {} read {seen:?}", a.name, b.name);
    println!("{}'s L1 serves it: {}", b.name, b.l1_serves(&key).await);

    // A purges: every L1 empties (Redis keeps the entry).
    let mut b_events = b.bus.events();
    a.bus.purge().await.expect("the purge is published");
    let applied = wait_for(&mut b_events, BusEvent::Applied(Invalidation::Purge)).await;
    println!(
        "{} purged; {} applied it: {applied}, its L1 serves the product: {}",
        a.name,
        b.name,
        b.l1_serves(&key).await
    );
    let again = b.cache.get::<Product>(&key).await;
    println!(
        "{} reads it again from Redis: {:?}",
        b.name,
        again.map(|p| p.name)
    );

    // A deletes the product: gone from Redis and from both L1s.
    a.cache.delete(&key).await.expect("the delete is published");
    let deleted = Invalidation::Key(key.as_str().to_string());
    let applied = wait_for(&mut b_events, BusEvent::Applied(deleted)).await;
    println!(
        "{} deleted it; {} applied it: {applied}, {} now reads {:?}",
        a.name,
        b.name,
        b.name,
        b.cache.get::<Product>(&key).await
    );

    // Both miss product 2 at once: one of them calls the database.
    let key2 = CacheKey::entity("shop", "acme", "product", "2");
    let before = calls.load(Ordering::SeqCst);
    let load = |instance: &Instance| {
        let calls = Arc::clone(&calls);
        let (lock, cache, key2) = (instance.lock.clone(), instance.cache.clone(), key2.clone());
        async move {
            lock.get_or_insert_with(
                &cache,
                &key2,
                &EntryOptions::new(),
                Duration::from_secs(2),
                move || load_product(2, calls),
            )
            .await
        }
    };
    let (from_a, from_b) = tokio::join!(load(&a), load(&b));
    let (from_a, from_b) = (from_a.expect("A's load"), from_b.expect("B's load"));
    println!(
        "both missed product 2: {} was {:?}, {} was {:?}; database calls: {}",
        a.name,
        from_a.role,
        b.name,
        from_b.role,
        calls.load(Ordering::SeqCst) - before
    );

    let _ = a.cache.delete(&key2).await;
    let stats = b.bus.stats();
    println!(
        "{}'s bus: {} received, {} applied, {} own skipped",
        b.name, stats.received, stats.applied, stats.skipped_own
    );
    ExitCode::SUCCESS
}
