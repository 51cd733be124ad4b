//! The service: the layer around one inner service, and its `tower`
//! plumbing. What happens to a request is told in the flow (`crate::flow`).

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::CacheBody;
use crate::future::ResponseFuture;
use crate::layer::{CacheLayer, Mode};
use crate::origin::{Origin, RequestBody, ResponseBody};

/// The service a [`CacheLayer`] wraps around another.
///
/// What happens to one request:
///
/// 1. **Decide**, without waiting: the policy bypasses the request
///    (`fwd=bypass`), refuses it (`400` for an ambiguous `Host`, in
///    standards mode), forwards it and then invalidates what it changed (an
///    unsafe method), or keys it, after reading its body for a rule that
///    judges or keys bodies. A key remembered as uncacheable is bypassed
///    (hit-for-pass). Only then is a future boxed, holding only what its
///    phase needs.
/// 2. **Look up.** A stored response whose `Vary` the request does not
///    match leads to the variant stored for the request's values. The
///    policy says what the stored response is worth: fresh (`hit`), stale
///    but acceptable, stale and served while one background request
///    refreshes it (`hit; ttl=-N`), or to be revalidated first. In
///    standards mode a client's own conditional request is answered `304`.
/// 3. **Load.** Requests that may share an answer wait for the one that
///    leads the load, at most the lock timeout. The leader asks the origin,
///    with the stored validators when it revalidates. An origin error or
///    `5xx` is answered with the stale response where stale-if-error allows
///    it; a `304` refreshes the stored response.
/// 4. **Store.** The policy says whether the response is stored; it streams
///    to the client while a task collects it at the origin's pace, then it
///    is stored and the waiters are served.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::{BodyExt, Full};
/// use hitbox_backend::{Cache, MemoryBackend};
/// use hitbox_tower::CacheLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let origin = service_fn(|_: Request<Full<Bytes>>| async {
///     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
/// });
/// let service = CacheLayer::new(Cache::new(MemoryBackend::new())).layer(origin);
/// let response = service.oneshot(Request::get("/greeting").body(Full::default()).unwrap()).await.unwrap();
/// assert_eq!(response.headers()["cache-status"], "hitbox; fwd=miss; stored");
/// assert_eq!(&response.into_body().collect().await.unwrap().to_bytes()[..], b"hello");
/// # }
/// ```
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
