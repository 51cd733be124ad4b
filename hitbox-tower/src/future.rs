//! The future of [`CacheService`](crate::CacheService)'s responses.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use crate::body::CacheBody;

/// What a [`ResponseFuture`] resolves to.
type Output<B, E> = Result<Response<CacheBody<B>>, E>;

/// The future of [`CacheService`](crate::CacheService)'s responses: one
/// boxed future per request, holding only what its phase needs (a hit
/// boxes the small lookup; a miss boxes its load apart).
pub struct ResponseFuture<B: http_body::Body, E> {
    inner: Pin<Box<dyn Future<Output = Output<B, E>> + Send>>,
}

impl<B: http_body::Body, E> ResponseFuture<B, E> {
    pub(crate) fn new(
        future: impl Future<Output = Result<Response<CacheBody<B>>, E>> + Send + 'static,
    ) -> Self {
        ResponseFuture {
            inner: Box::pin(future),
        }
    }
}

impl<B: http_body::Body, E> Future for ResponseFuture<B, E> {
    type Output = Output<B, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B: http_body::Body, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
