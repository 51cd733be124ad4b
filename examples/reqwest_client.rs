//! A reqwest client whose repeated requests are answered from the cache,
//! through reqwest-middleware: the calls stay `client.get(url).send()`, and
//! the answers are `reqwest::Response`s.
//!
//! ```sh
//! cargo run --release --example demo &          # an origin on 127.0.0.1:3000
//! cargo run --example reqwest_client            # or pass another URL
//! cargo run --example reqwest_client -- http://127.0.0.1:3000/slow/9
//! ```

use std::time::{Duration, Instant};

use hitbox_backend::Cache;
use hitbox_core::CachePolicy;
use hitbox_moka::MokaBackend;
use hitbox_reqwest::CacheMiddleware;
use hitbox_tower::{CacheLayer, Rule};
use reqwest_middleware::ClientBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:3000/slow/1".into());
    let cache = Cache::new(MokaBackend::new(64 << 20));
    let layer = CacheLayer::builder(cache)
        .rule(Rule::new().policy(CachePolicy::new(Duration::from_secs(60))))
        .build();
    // The client the chain ends with also serves background refreshes.
    let client = reqwest::Client::new();
    let client = ClientBuilder::new(client.clone())
        .with(CacheMiddleware::new(layer, client))
        .build();

    // No waiting between requests: one that arrives while the first
    // response is still being stored waits for that store (single-flight)
    // and is answered from it.
    for attempt in 1..=3 {
        let started = Instant::now();
        let response = match client.get(&url).send().await {
            Ok(response) => response,
            Err(error) => {
                eprintln!(
                    "cannot reach {url}: {error}\nstart the demo first: cargo run --release --example demo"
                );
                std::process::exit(1);
            }
        };
        let status = response.headers().get("cache-status").cloned();
        let body = response.text().await?;
        println!(
            "request {attempt}: {:>7.2} ms  {:?}  {}",
            started.elapsed().as_secs_f64() * 1e3,
            status,
            body.trim()
        );
    }
    Ok(())
}
