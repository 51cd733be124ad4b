//! A reqwest `Client` as a `tower::Service`, so the cache layer can wrap it.
//!
//! ```no_run
//! use hitbox_backend::Cache;
//! use hitbox_moka::MokaBackend;
//! use hitbox_tower::{CacheLayer, client::ReqwestService};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::new(MokaBackend::new(64 << 20));
//! let mut client = ServiceBuilder::new()
//!     .layer(CacheLayer::new(cache))
//!     .service(ReqwestService::new(reqwest::Client::new()));
//!
//! let request = http::Request::get("http://127.0.0.1:8000/slow/1").body(reqwest::Body::default())?;
//! let response = ServiceExt::<http::Request<reqwest::Body>>::ready(&mut client).await?.call(request).await?;
//! println!("{:?}", response.headers().get("cache-status"));
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_service::Service;

/// Wraps a [`reqwest::Client`] (see the [module](self) for it under the
/// layer):
///
/// ```
/// use hitbox_tower::client::ReqwestService;
///
/// let service = ReqwestService::new(reqwest::Client::new());
/// ```
///
/// It takes `http::Request<B>` for any body that
/// converts into a reqwest body and answers `http::Response<reqwest::Body>`,
/// whose body streams. Under the cache layer, send `reqwest::Body` (the
/// layer may rebuild a request from its head, or from a body it read to
/// build the key).
#[derive(Debug, Clone, Default)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Wraps `client`.
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestService { client }
    }
}

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: Into<reqwest::Body>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, reqwest::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), reqwest::Error>> {
        // reqwest queues requests in its own pool.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client = self.client.clone();
        let request = reqwest::Request::try_from(request.map(Into::into));
        Box::pin(async move {
            let response = client.execute(request?).await?;
            Ok(http::Response::from(response))
        })
    }
}
