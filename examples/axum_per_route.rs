//! Different caching per route, with one shared cache.
//!
//! ```sh
//! cargo run --example axum_per_route      # listens on 127.0.0.1:3001
//! curl -i localhost:3001/prices/btc       # cached 1 s
//! curl -i localhost:3001/products/42      # cached 5 min, stale-while-revalidate 1 min
//! curl -i 'localhost:3001/search?q=rust&page=2'   # cached 30 s, keyed by q and page only
//! curl -i localhost:3001/me -H 'authorization: Bearer alice'   # cached per user
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use hitbox_backend::Cache;
use hitbox_core::{CachePolicy, Extractor};
use hitbox_moka::MokaBackend;
use hitbox_tower::{CacheLayer, Rule, extract};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_env_filter("info").init();
    // One in-process tier shared by every route.
    let cache = Cache::new(MokaBackend::new(128 << 20));
    let layer = |rule: Rule| CacheLayer::builder(cache.clone()).rule(rule).build();

    let app = Router::new()
        // Prices change every second: the real-time preset.
        .route(
            "/prices/{symbol}",
            get(|Path(symbol): Path<String>| async move { format!("price of {symbol}\n") }).layer(layer(
                Rule::new().namespace("prices").policy(CachePolicy::real_time()),
            )),
        )
        // Products rarely change: five minutes, then a minute of
        // stale-while-revalidate so nobody waits for a refresh.
        .route(
            "/products/{id}",
            get(|Path(id): Path<u64>| async move { format!("product {id}\n") }).layer(layer(
                Rule::new().namespace("products").policy(
                    CachePolicy::new(Duration::from_secs(300))
                        .stale_while_revalidate(Duration::from_secs(60)),
                ),
            )),
        )
        // Search keyed by the parameters that matter, ignoring tracking ones.
        .route(
            "/search",
            get(|| async { "results\n" }).layer(layer(
                Rule::new()
                    .namespace("search")
                    .policy(CachePolicy::new(Duration::from_secs(30)))
                    .key(extract::Path.and(extract::Query::named(["q", "page"]))),
            )),
        )
        // Per-user data: cached only because the rule opts in, and then the
        // Authorization header is part of the key (as a digest).
        .route(
            "/me",
            get(|| async { "your profile\n" }).layer(layer(
                Rule::new()
                    .namespace("me")
                    .policy(CachePolicy::new(Duration::from_secs(10)))
                    .cache_authorized(true),
            )),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001")
        .await
        .expect("bind 127.0.0.1:3001");
    tracing::info!("listening on http://127.0.0.1:3001");
    axum::serve(listener, app).await.expect("serve");
}
