//! `#[cached]`: memoized async functions, a free function and a method.
//!
//! ```sh
//! cargo run --example memoized
//! ```
//!
//! The "slow" functions count their calls, so the output shows which calls
//! the cache answered.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hitbox_backend::{Cache, cached};
use hitbox_core::{CachePolicy, Tag};
use hitbox_moka::MokaBackend;
use serde::{Deserialize, Serialize};

static CACHE: LazyLock<Cache> = LazyLock::new(|| Cache::new(MokaBackend::new(16 << 20)));
static EXCHANGE_CALLS: AtomicU32 = AtomicU32::new(0);

/// A rate from a slow upstream, cached 30 s per currency pair.
#[cached(cache = CACHE, policy = CachePolicy::new(Duration::from_secs(30)))]
async fn rate(from: &str, to: &str) -> Result<f64, String> {
    EXCHANGE_CALLS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    match (from, to) {
        ("EUR", "USD") => Ok(1.08),
        ("USD", "EUR") => Ok(0.93),
        _ => Err(format!("no rate for {from}/{to}")),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
}

struct Profiles {
    cache: Cache,
    loads: AtomicU32,
}

impl Profiles {
    /// Keyed by a template, tagged per user so one profile can be dropped.
    #[cached(cache = self.cache, key = "profile:{id}", tags = ["profiles", "profile:{id}"], policy = long_term)]
    async fn get(&self, id: u64) -> Option<Profile> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        (id < 100).then(|| Profile {
            id,
            name: format!("user {id}"),
        })
    }
}

#[tokio::main]
async fn main() {
    // Ten callers at once for one pair: the body runs once.
    let calls = (0..10).map(|_| rate("EUR", "USD"));
    let rates = futures::future::join_all(calls).await;
    println!(
        "10 concurrent calls -> {:?}, upstream calls: {}",
        rates[0],
        EXCHANGE_CALLS.load(Ordering::SeqCst)
    );
    // Errors are not cached: each call tries again.
    let _ = rate("EUR", "JPY").await;
    let _ = rate("EUR", "JPY").await;
    println!(
        "after two failing calls, upstream calls: {}",
        EXCHANGE_CALLS.load(Ordering::SeqCst)
    );

    let profiles = Profiles {
        cache: Cache::new(MokaBackend::new(16 << 20)),
        loads: AtomicU32::new(0),
    };
    profiles.get(7).await;
    profiles.get(7).await;
    println!(
        "profile 7 twice, loads: {}",
        profiles.loads.load(Ordering::SeqCst)
    );
    profiles
        .cache
        .invalidate_tag(&Tag::from("profile:7"))
        .await
        .unwrap();
    profiles.get(7).await;
    println!(
        "after invalidating its tag, loads: {}",
        profiles.loads.load(Ordering::SeqCst)
    );
    // None is not cached by default (cache_none = true would).
    profiles.get(500).await;
    profiles.get(500).await;
    println!(
        "a missing profile twice, loads: {}",
        profiles.loads.load(Ordering::SeqCst)
    );
}
