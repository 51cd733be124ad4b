//! The programmatic cache: typed views, tags and single-flight.
//!
//! Run with `cargo run --example programmatic`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hitbox_backend::Cache;
use hitbox_core::{CachePolicy, EntryOptions, Tag};
use hitbox_moka::MokaBackend;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    team: String,
}

/// Stands in for a slow database.
async fn load_user(id: u64, calls: Arc<AtomicUsize>) -> User {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    User {
        id,
        name: format!("user-{id}"),
        team: if id.is_multiple_of(2) { "red" } else { "blue" }.into(),
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_env_filter("warn").init();

    // The in-process tier, bounded to 64 MiB, under a cache whose entries
    // are fresh for a minute and revalidated in the background for another.
    let cache = Cache::builder(MokaBackend::new(64 * 1024 * 1024))
        .policy(CachePolicy::short_term())
        .build();
    let users = cache.typed::<User>("users");
    let calls = Arc::new(AtomicUsize::new(0));

    // Single-flight: a hundred concurrent requests for one cold user run the
    // loader once.
    let mut requests = Vec::new();
    for _ in 0..100 {
        let (users, calls) = (users.clone(), Arc::clone(&calls));
        requests.push(tokio::spawn(async move {
            users.get_or_insert_with(1, move || load_user(1, calls)).await
        }));
    }
    for request in requests {
        request.await.expect("request task");
    }
    println!(
        "100 concurrent requests, loader calls: {}",
        calls.load(Ordering::SeqCst)
    );

    // Tags: store users tagged with their team, then drop a whole team.
    for id in 2..=5 {
        let user = load_user(id, Arc::clone(&calls)).await;
        let options = EntryOptions::new().tag(format!("team:{}", user.team));
        users.set_with(id, &user, &options).await.expect("store");
    }
    let removed = cache
        .invalidate_tag(&Tag::from("team:red"))
        .await
        .expect("invalidate");
    println!("invalidated team:red, entries removed: {removed}");
    for id in 2..=5 {
        let state = if users.get(id).await.is_some() {
            "cached"
        } else {
            "gone"
        };
        println!("  user {id}: {state}");
    }

    let stats = cache.stats();
    println!(
        "hits {} misses {} loads {} joins {} invalidations {}",
        stats.hits, stats.misses, stats.loads, stats.joins, stats.invalidations
    );
}
