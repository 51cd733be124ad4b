//! What the layer needs of the service it wraps and of the bodies it
//! passes, named once: every part of the flow takes these bounds.

use bytes::Bytes;
use hitbox_backend::BoxError;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

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

/// Calls a service that has not been made ready.
pub(crate) async fn call_when_ready<S, R>(mut service: S, request: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    futures::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(request).await
}
