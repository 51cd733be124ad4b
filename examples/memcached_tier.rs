//! The memcached tier with moka in front, tags and many ids at once.
//!
//! ```sh
//! memcached -p 11211 &      # or: source scripts/services.sh && start_services
//! MEMCACHED_URL=127.0.0.1:11211 cargo run --example memcached_tier
//! ```

use std::time::Duration;

use hitbox_backend::{Backend, Cache, Compose};
use hitbox_core::{CacheKey, EntryOptions, Tag};
use hitbox_memcached::MemcachedBackend;
use hitbox_moka::MokaBackend;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("MEMCACHED_URL").unwrap_or_else(|_| "127.0.0.1:11211".into());
    let memcached = MemcachedBackend::builder()
        .server(&url)
        .key_prefix("hitbox-example:")
        .build()?;
    let cache = Cache::new(MokaBackend::new(16 << 20).compose(memcached.clone()));

    let key = |id: u32| CacheKey::builder("greetings").part("id", id.to_string()).build();
    let options = EntryOptions::new().ttl(Duration::from_secs(60)).tag("greetings");
    for id in 1..=3 {
        cache
            .set_with(&key(id), &format!("hello #{id}"), &options)
            .await?;
    }
    println!("one: {:?}", cache.get::<String>(&key(1)).await);

    // Straight from memcached, three keys in one `get`.
    let keys: Vec<CacheKey> = (1..=4).map(key).collect();
    let found = memcached.read_many(&keys).await?;
    println!(
        "in memcached: {:?}",
        found.iter().map(Option::is_some).collect::<Vec<_>>()
    );

    // One `incr` of the tag's generation invalidates all three.
    cache.invalidate_tag(&Tag::from("greetings")).await?;
    println!("after the tag: {:?}", cache.get::<String>(&key(1)).await);
    println!("tier stats: {:?}", memcached.tier_stats());
    Ok(())
}
