//! The future of [`CacheService`](crate::CacheService)'s responses.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use crate::body::CacheBody;
use tracing::Span;

/// What a [`ResponseFuture`] resolves to.
type Output<B, E> = Result<Response<CacheBody<B>>, E>;

/// The boxed future of a request's phase.
pub(crate) type Phase<B, E> = Pin<Box<dyn Future<Output = Output<B, E>> + Send>>;

/// The future of [`CacheService`](crate::CacheService)'s responses: one
/// boxed future per request, holding only what its phase needs (a hit
/// boxes the small lookup; a miss boxes its load apart). It runs inside
/// the request's `hitbox.request` span, when one was made. (The phase
/// counts the request's outcome where it makes the response; see
/// [`observe`](crate::observe).)
pub struct ResponseFuture<B: http_body::Body, E> {
    inner: Phase<B, E>,
    span: Option<Box<Span>>,
}

impl<B: http_body::Body, E> ResponseFuture<B, E> {
    /// The future of a request whose phase is `inner`, polled inside
    /// `span`, if any.
    pub(crate) fn new(inner: Phase<B, E>, span: Option<Box<Span>>) -> Self {
        ResponseFuture { inner, span }
    }
}

impl<B: http_body::Body, E> Drop for ResponseFuture<B, E> {
    #[inline]
    fn drop(&mut self) {
        // The span is rare: its drop stays out of the common path.
        if let Some(span) = self.span.take() {
            drop_span(span);
        }
    }
}

#[cold]
#[inline(never)]
fn drop_span(span: Box<Span>) {
    drop(span);
}

impl<B: http_body::Body, E> Future for ResponseFuture<B, E> {
    type Output = Output<B, E>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match &this.span {
            None => this.inner.as_mut().poll(cx),
            Some(span) => {
                let _entered = span.enter();
                this.inner.as_mut().poll(cx)
            }
        }
    }
}

impl<B: http_body::Body, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
