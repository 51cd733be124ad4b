//! The cache layer around a reqwest client: repeated requests are answered
//! from the cache instead of the network.
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
use hitbox_tower::client::ReqwestService;
use hitbox_tower::{CacheLayer, Rule};
use http_body_util::BodyExt;
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:3000/slow/1".into());
    let cache = Cache::new(MokaBackend::new(64 << 20));
    let mut client = ServiceBuilder::new()
        .layer(
            CacheLayer::builder(cache.clone())
                .rule(Rule::new().policy(CachePolicy::new(Duration::from_secs(60))))
                .build(),
        )
        .service(ReqwestService::new(reqwest::Client::new()));

    for attempt in 1..=3 {
        let request = http::Request::get(&url).body(reqwest::Body::default())?;
        let started = Instant::now();
        let response = match ServiceExt::<http::Request<reqwest::Body>>::ready(&mut client)
            .await?
            .call(request)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                eprintln!(
                    "cannot reach {url}: {error}\nstart the demo first: cargo run --release --example demo"
                );
                std::process::exit(1);
            }
        };
        let status = response.headers().get("cache-status").cloned();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "request {attempt}: {:>7.2} ms  {:?}  {}",
            started.elapsed().as_secs_f64() * 1e3,
            status,
            String::from_utf8_lossy(&body).trim()
        );
        // Let the first response be stored before asking again (a response
        // that is not storable never will be: give up after a second).
        let deadline = Instant::now() + Duration::from_secs(1);
        while attempt == 1 && cache.stats().stores == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(())
}
