//! One instance's cache in a multi-instance test: a moka L1 kept in step
//! by the invalidation bus, composed over a real Redis.

use std::time::Duration;

use hitbox_backend::{Cache, Compose};
use hitbox_core::{CachePolicy, ManualClock};
use hitbox_moka::MokaBackend;
use hitbox_redis::RedisBackend;
use hitbox_redis::invalidation::InvalidationBus;

/// The Redis that `./scripts/test.sh` starts.
pub fn redis_url() -> String {
    match std::env::var("HITBOX_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "HITBOX_TEST_REDIS_URL is not set: this test needs the Redis that ./scripts/test.sh starts \
             (or run `source scripts/services.sh && start_services` first, in the same shell)"
        ),
    }
}

/// A cache (a minute's policy, on its own manual clock) over the Redis at
/// `url` under `prefix`, with its bus subscribed.
pub async fn bus_cache(url: &str, prefix: &str) -> (Cache, ManualClock, InvalidationBus) {
    let redis = RedisBackend::builder()
        .url(url)
        .key_prefix(prefix)
        .read_timeout(Duration::from_secs(2))
        .write_timeout(Duration::from_secs(2))
        .build()
        .expect("the Redis backend builds");
    redis
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("Redis is reachable");
    let bus = InvalidationBus::builder(&redis)
        .retry_interval(Duration::from_millis(100))
        .start(MokaBackend::new(16 << 20))
        .expect("the bus starts");
    let clock = ManualClock::new();
    let cache = Cache::builder(bus.broadcasting(bus.local_tier().compose(redis.clone())))
        .policy(CachePolicy::new(Duration::from_secs(60)))
        .clock(clock.clone())
        .build();
    bus.wait_subscribed(Duration::from_secs(10))
        .await
        .expect("the bus subscribes");
    (cache, clock, bus)
}
