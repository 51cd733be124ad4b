//! The future of [`CacheService`](crate::CacheService)'s responses.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hitbox_backend::Outcome;
use http::Response;

use crate::body::CacheBody;
use crate::observe::Observation;

/// What a [`ResponseFuture`] resolves to.
type Output<B, E> = Result<Response<CacheBody<B>>, E>;

/// The future of [`CacheService`](crate::CacheService)'s responses: one
/// boxed future per request, holding only what its phase needs (a hit
/// boxes the small lookup; a miss boxes its load apart). It runs inside
/// the request's `hitbox.request` span, when one was made, and counts the
/// request's outcome when it resolves.
pub struct ResponseFuture<B: http_body::Body, E> {
    inner: Pin<Box<dyn Future<Output = Output<B, E>> + Send>>,
    observation: Option<Observation>,
}

impl<B: http_body::Body, E> ResponseFuture<B, E> {
    pub(crate) fn new(
        future: impl Future<Output = Result<Response<CacheBody<B>>, E>> + Send + 'static,
    ) -> Self {
        ResponseFuture {
            inner: Box::pin(future),
            observation: None,
        }
    }

    /// Reports the request's end through `observation`.
    pub(crate) fn observed(mut self, observation: Observation) -> Self {
        self.observation = Some(observation);
        self
    }
}

impl<B: http_body::Body, E> Future for ResponseFuture<B, E> {
    type Output = Output<B, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let poll = match this.observation.as_ref().and_then(|o| o.span.as_ref()) {
            None => this.inner.as_mut().poll(cx),
            Some(span) => {
                let _entered = span.enter();
                this.inner.as_mut().poll(cx)
            }
        };
        if let Poll::Ready(result) = &poll
            && let Some(observation) = this.observation.take()
        {
            match result {
                Ok(response) => {
                    let outcome = response.body().outcome();
                    debug_assert!(outcome.is_some(), "a response of the layer was not counted");
                    let status = response.status().as_u16();
                    observation.finish(outcome.unwrap_or(Outcome::Bypass), Some(status));
                }
                Err(_) => observation.finish(Outcome::Error, None),
            }
        }
        poll
    }
}

impl<B: http_body::Body, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
