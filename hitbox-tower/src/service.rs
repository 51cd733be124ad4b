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
