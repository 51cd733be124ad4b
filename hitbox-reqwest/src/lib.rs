//! hitbox for reqwest clients, as a [`reqwest_middleware`] middleware.
//!
//! Callers keep writing `client.get(url).send().await?` and get a
//! [`reqwest::Response`] back, with `.json()`, `.text()`, `.bytes()` and
//! `.bytes_stream()` as usual. Behind it runs the same engine as the tower
//! [`CacheLayer`]: its rules or its standards mode, its tiers and stages,
//! single-flight, stale-while-revalidate and stale-if-error. Every response
//! says what happened in `Cache-Status`.
//!
//! ```
//! use hitbox_backend::Cache;
//! use hitbox_moka::MokaBackend;
//! use hitbox_reqwest::CacheMiddleware;
//! use hitbox_tower::CacheLayer;
//! use reqwest_middleware::ClientBuilder;
//!
//! # async fn run() -> Result<(), reqwest_middleware::Error> {
//! let client = reqwest::Client::new();
//! let layer = CacheLayer::new(Cache::new(MokaBackend::new(64 << 20)));
//! let cached = ClientBuilder::new(client.clone())
//!     .with(CacheMiddleware::new(layer, client))
//!     .build();
//!
//! let response = cached.get("http://127.0.0.1:8000/products/1").send().await?;
//! let status = response.headers().get("cache-status").cloned();
//! println!("{status:?}: {}", response.text().await?);
//! # Ok(()) }
//! ```
//!
//! # Where requests go
//!
//! A request the cache cannot answer goes on down the middleware chain
//! (`next.run`): the middlewares added after this one (retries, tracing)
//! and then the client run for it as they would without the cache. Put the
//! cache first in the chain, so that a hit skips the rest.
//!
//! Work that outlives the caller's request, a background refresh for
//! stale-while-revalidate, cannot use the chain (it is borrowed for one
//! call only), so it goes through the `reqwest::Client` given to
//! [`CacheMiddleware::new`]: give the same client the chain ends with.
//!
//! # TLS
//!
//! The crate enables no TLS backend of reqwest: the client you build
//! decides (reqwest's default features, `rustls`, or `native-tls`).
//!
//! # What the client sees
//!
//! - A response from the origin keeps its URL (`Response::url`); one served
//!   from the cache carries the request's URL.
//! - A per-request timeout set with `RequestBuilder::timeout` applies to
//!   every origin request made for that call.
//! - An origin error comes back as the chain's own error; the cache adds
//!   none of its own (a dead tier degrades to the origin).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hitbox_tower::{CacheBody, CacheLayer, CacheService};
use http::Extensions;
use reqwest::{Body, Client, Request, Response, ResponseBuilderExt, Url};
use reqwest_middleware::{Middleware, Next};
use tokio::sync::{mpsc, oneshot};
use tower_layer::Layer;
use tower_service::Service;

/// What the cache asks of the chain: one origin request and where its
/// answer goes.
type Exchange = (http::Request<Body>, oneshot::Sender<OriginResult>);
type OriginResult = Result<http::Response<Body>, reqwest_middleware::Error>;

/// A [`Middleware`] that answers requests from a hitbox cache.
///
/// Built from a [`CacheLayer`] (rules or standards mode, over any tiers) and
/// the `reqwest::Client` used for background refreshes; see the
/// [crate] documentation.
#[derive(Clone)]
pub struct CacheMiddleware {
    layer: CacheLayer,
    client: Client,
}

impl std::fmt::Debug for CacheMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMiddleware").finish_non_exhaustive()
    }
}

impl CacheMiddleware {
    /// A middleware caching through `layer`; `client` serves the origin
    /// requests made after a call returned (background refreshes).
    ///
    /// ```
    /// use hitbox_backend::{Cache, MemoryBackend};
    /// use hitbox_reqwest::CacheMiddleware;
    /// use hitbox_tower::CacheLayer;
    ///
    /// let client = reqwest::Client::new();
    /// let middleware = CacheMiddleware::new(CacheLayer::new(Cache::new(MemoryBackend::new())), client);
    /// ```
    pub fn new(layer: CacheLayer, client: Client) -> Self {
        CacheMiddleware { layer, client }
    }
}

#[async_trait::async_trait]
impl Middleware for CacheMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let url = request.url().clone();
        let timeout = request.timeout().copied();
        let mut request = http::Request::<Body>::try_from(request)?;
        // What the chain's callers put in its extensions (a per-request
        // cache mode, say) reaches the layer too.
        request.extensions_mut().extend(extensions.clone());

        let (sender, mut receiver) = mpsc::unbounded_channel::<Exchange>();
        let origin = ChainOrigin {
            sender,
            client: self.client.clone(),
            timeout,
        };
        let mut service: CacheService<ChainOrigin> = self.layer.layer(origin);
        let call = service.call(request);
        tokio::pin!(call);

        // The cache's future runs here; the origin requests it makes while
        // it does are sent on down the chain, one after the other.
        let outcome = loop {
            tokio::select! {
                outcome = &mut call => break outcome,
                Some((request, reply)) = receiver.recv() => {
                    let answer = match into_reqwest(request, timeout) {
                        Ok(request) => next.clone().run(request, extensions).await.map(http::Response::from),
                        Err(error) => Err(error),
                    };
                    let _ = reply.send(answer);
                }
            }
        };
        // Origin requests made from now on (a background refresh) go to
        // the client; any already queued are handed to it too.
        receiver.close();
        while let Ok((request, reply)) = receiver.try_recv() {
            let client = self.client.clone();
            tokio::spawn(async move {
                let _ = reply.send(send_with(&client, request, timeout).await);
            });
        }

        let response = outcome?;
        Ok(into_response(response, url))
    }
}

/// A reqwest response from what the layer answered. A response from the
/// origin keeps the URL reqwest recorded; one from the cache gets the
/// request's.
fn into_response(response: http::Response<CacheBody<Body>>, url: Url) -> Response {
    let (mut parts, body) = response.into_parts();
    // reqwest keeps a response's URL in an extension whose type only
    // `ResponseBuilderExt` can write: put the request's URL in a map of its
    // own, then lay the response's extensions over it, so that a URL the
    // origin's response carries (after redirects) wins.
    let (tagged, ()) = http::Response::builder()
        .url(url)
        .body(())
        .expect("an empty response")
        .into_parts();
    let mut extensions = tagged.extensions;
    extensions.extend(std::mem::take(&mut parts.extensions));
    parts.extensions = extensions;
    Response::from(http::Response::from_parts(parts, Body::wrap(body)))
}

fn into_reqwest(
    request: http::Request<Body>,
    timeout: Option<Duration>,
) -> Result<Request, reqwest_middleware::Error> {
    let mut request = Request::try_from(request)?;
    if let Some(timeout) = timeout {
        *request.timeout_mut() = Some(timeout);
    }
    Ok(request)
}

async fn send_with(client: &Client, request: http::Request<Body>, timeout: Option<Duration>) -> OriginResult {
    let request = into_reqwest(request, timeout)?;
    Ok(http::Response::from(client.execute(request).await?))
}

/// The origin of the layer inside the middleware: the chain while the call
/// runs, the client after.
#[derive(Clone)]
struct ChainOrigin {
    sender: mpsc::UnboundedSender<Exchange>,
    client: Client,
    timeout: Option<Duration>,
}

impl Service<http::Request<Body>> for ChainOrigin {
    type Response = http::Response<Body>;
    type Error = reqwest_middleware::Error;
    type Future = Pin<Box<dyn Future<Output = OriginResult> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (reply, answer) = oneshot::channel();
        match self.sender.send((request, reply)) {
            Ok(()) => Box::pin(async move {
                answer.await.unwrap_or_else(|_| {
                    Err(reqwest_middleware::Error::middleware(std::io::Error::other(
                        "the request was dropped before the origin answered",
                    )))
                })
            }),
            Err(mpsc::error::SendError((request, _))) => {
                let client = self.client.clone();
                let timeout = self.timeout;
                Box::pin(async move { send_with(&client, request, timeout).await })
            }
        }
    }
}
