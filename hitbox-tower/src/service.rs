//! The service: the layer around one inner service. What happens to a
//! request is told in the flow (`crate::flow`); this module holds the
//! `tower` plumbing and the bounds every part shares, named once.

use std::task::{Context, Poll};

use bytes::Bytes;
use hitbox_backend::BoxError;
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::CacheBody;
use crate::future::ResponseFuture;
use crate::layer::{CacheLayer, Mode};

/// What the layer needs of the service it wraps: a `Clone`, `Send` service
/// of HTTP requests whose futures and errors can cross tasks. Every such
/// service is one.
pub trait Origin<ReqB, ResB>:
    Service<Request<ReqB>, Response = Response<ResB>, Error: Send + 'static, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, ReqB, ResB> Origin<ReqB, ResB> for S where
    S: Service<Request<ReqB>, Response = Response<ResB>, Error: Send + 'static, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// What the layer needs of a request body: one it can rebuild from bytes
/// (when the body is part of the key, or for a background refresh), and
/// send across tasks. axum's `Body`, `reqwest::Body` and `Full<Bytes>`
/// are such bodies.
pub trait RequestBody:
    Body<Data: Send, Error: Into<BoxError>> + From<Bytes> + Default + Send + 'static
{
}

impl<B> RequestBody for B where
    B: Body<Data: Send, Error: Into<BoxError>> + From<Bytes> + Default + Send + 'static
{
}

/// What the layer needs of a response body: bytes, sendable across tasks
/// (its fill into the cache runs in a task of its own).
pub trait ResponseBody: Body<Data = Bytes, Error: Into<BoxError> + Send> + Send + 'static {}

impl<B> ResponseBody for B where B: Body<Data = Bytes, Error: Into<BoxError> + Send> + Send + 'static {}

/// The service a [`CacheLayer`] wraps around another.
pub struct CacheService<S> {
    inner: S,
    mode: Mode,
}

impl<S: Clone> Clone for CacheService<S> {
    fn clone(&self) -> Self {
        CacheService {
            inner: self.inner.clone(),
            mode: self.mode.clone(),
        }
    }
}

impl<S> CacheService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner,
            mode: self.mode.clone(),
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for CacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Origin<ReqB, ResB>,
    ReqB: RequestBody,
    ResB: ResponseBody,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The service `poll_ready` prepared is the one that must be called:
        // keep it, and leave a fresh clone behind for the next request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        match &self.mode {
            Mode::Rules(shared) => crate::flow::start(std::sync::Arc::clone(shared), inner, request),
            Mode::Standards(shared) => crate::flow::start(std::sync::Arc::clone(shared), inner, request),
        }
    }
}

/// Calls a service that has not been made ready.
pub(crate) async fn call_when_ready<S, R>(mut service: S, request: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    futures::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(request).await
}
