//! The response body the layer returns: a stored body, or the origin's body
//! streamed to the client while a copy is collected for the cache.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hitbox_backend::LoadLead;
use hitbox_core::{CacheKey, EntryMeta};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::sync::{mpsc, oneshot};

use crate::layer::Shared;
use crate::response::{CachedResponse, VaryMarker};
use crate::rfc9111::freshness::Exchange;

/// Why a response was not stored; what waiters of its load are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Uncacheable {
    /// The response is not storable (status, headers, rule).
    #[error("the response is not storable")]
    NotStorable,
    /// The body grew past the rule's limit.
    #[error("the body is larger than the limit")]
    TooLarge,
    /// The body carried trailers, which are not stored.
    #[error("the body has trailers")]
    Trailers,
    /// The origin failed.
    #[error("the origin failed")]
    OriginFailed,
}

pin_project! {
    /// The body of a response that passed through the cache layer.
    pub struct CacheBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Stored { data: Option<Bytes> },
        Origin {
            #[pin]
            body: B,
        },
        // Fed by a task that reads the origin's body into the cache at the
        // origin's pace (see `Tee::fill`).
        Filled {
            feed: mpsc::UnboundedReceiver<Result<Frame<Bytes>, B::Error>>,
            // Past the size limit the task hands the rest of the body over,
            // to be read at this client's pace.
            rest: Option<oneshot::Receiver<Pin<Box<B>>>>,
            tail: Option<Pin<Box<B>>>,
            hint: SizeHint,
        },
    }
}

impl<B: Body> CacheBody<B> {
    pub(crate) fn stored(data: Bytes) -> Self {
        CacheBody {
            kind: Kind::Stored {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn origin(body: B) -> Self {
        CacheBody {
            kind: Kind::Origin { body },
        }
    }
}

/// Collects the origin's body for the cache while it streams to the client.
pub(crate) struct Tee {
    /// The single-flight this response answers, if it leads one.
    pub lead: Option<LoadLead<CachedResponse, Uncacheable>>,
    /// Standards mode: how to store it (policy mode lets the engine store
    /// what the lead reports).
    pub rfc: Option<RfcStore>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The request fields the response's `Vary` names, as this request
    /// sent them (empty when it does not vary).
    pub request_headers: HeaderMap,
    pub chunks: Vec<Bytes>,
    pub size: usize,
    pub limit: usize,
    pub shared: Arc<Shared>,
    pub key: CacheKey,
}

/// What standards mode stores with a response: its lifetime, computed from
/// its headers, and what the age and `Vary` rules need later.
pub(crate) struct RfcStore {
    pub meta: EntryMeta,
    pub exchange: Exchange,
    pub marker: MarkerChange,
}

/// What happens to the `Vary` marker of the response's URL.
pub(crate) enum MarkerChange {
    Keep,
    Set(CacheKey, VaryMarker),
    Delete(CacheKey),
}

impl RfcStore {
    /// Stores `value` (and the marker) and returns it.
    pub async fn store(self, shared: &Shared, key: &CacheKey, mut value: CachedResponse) -> CachedResponse {
        value.exchange = Some(self.exchange);
        let cache = &shared.cache;
        match &self.marker {
            MarkerChange::Keep => {}
            MarkerChange::Set(marker_key, marker) => {
                let _ = cache.set_entry(marker_key, marker, &self.meta).await;
            }
            MarkerChange::Delete(marker_key) => {
                let _ = cache.delete(marker_key).await;
            }
        }
        if let Err(error) = cache.set_entry(key, &value, &self.meta).await {
            tracing::debug!(%error, "response not stored");
        }
        value
    }
}

impl Tee {
    /// Adds a chunk; `false` (and the waiters released) once the body
    /// outgrows the limit.
    fn push(&mut self, data: &Bytes) -> bool {
        if self.size + data.len() > self.limit {
            return false;
        }
        self.size += data.len();
        self.chunks.push(data.clone());
        true
    }

    fn give_up(self, reason: Uncacheable) {
        tracing::debug!(key = %self.key.log_id(), %reason, "response not stored");
        if let Some(lead) = self.lead {
            self.shared.remember_uncacheable(&self.key);
            lead.complete(Err(reason));
        }
    }

    /// Streams `body` to the client while a task reads it into the cache at
    /// the origin's pace, whatever the client reads: a slow (or vanished)
    /// client never holds back the requests waiting for this load. Up to
    /// the limit, what the client has not read yet waits in memory; past
    /// it, the task stops collecting and the client reads the rest of the
    /// body itself, at its own pace. Without a tokio runtime the body
    /// streams through and is not stored.
    pub(crate) fn fill<B>(self, body: B) -> CacheBody<B>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Send + 'static,
    {
        if body.is_end_stream() {
            // A server never polls a body that says it has ended.
            self.finish();
            return CacheBody::origin(body);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.give_up(Uncacheable::NotStorable);
            return CacheBody::origin(body);
        };
        let hint = body.size_hint();
        let (feed_tx, feed) = mpsc::unbounded_channel();
        let (rest_tx, rest) = oneshot::channel();
        runtime.spawn(self.collect(Box::pin(body), feed_tx, rest_tx));
        CacheBody {
            kind: Kind::Filled {
                feed,
                rest: Some(rest),
                tail: None,
                hint,
            },
        }
    }

    async fn collect<B>(
        mut self,
        mut body: Pin<Box<B>>,
        feed: mpsc::UnboundedSender<Result<Frame<Bytes>, B::Error>>,
        rest: oneshot::Sender<Pin<Box<B>>>,
    ) where
        B: Body<Data = Bytes>,
    {
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    let kept = match frame.data_ref() {
                        Some(data) => self.push(data),
                        None => false,
                    };
                    if !kept {
                        let reason = if frame.is_trailers() {
                            Uncacheable::Trailers
                        } else {
                            Uncacheable::TooLarge
                        };
                        self.give_up(reason);
                        // Sending fails only when the client is gone.
                        if feed.send(Ok(frame)).is_ok() {
                            let _ = rest.send(body);
                        }
                        return;
                    }
                    // A client that went away leaves the fill to finish.
                    let _ = feed.send(Ok(frame));
                    if body.is_end_stream() {
                        self.finish();
                        return;
                    }
                }
                // The origin failed mid-body: nothing is stored, and the
                // waiters are released as the lead is dropped.
                Some(Err(error)) => {
                    tracing::debug!(key = %self.key.log_id(), "origin body failed: response not stored");
                    let _ = feed.send(Err(error));
                    return;
                }
                None => {
                    self.finish();
                    return;
                }
            }
        }
    }

    /// Stores the collected body (all of it: the body has ended).
    pub(crate) fn finish(self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().expect("one chunk"),
            _ => {
                let mut joined = BytesMut::with_capacity(self.size);
                for chunk in &self.chunks {
                    joined.extend_from_slice(chunk);
                }
                joined.freeze()
            }
        };
        let mut value = CachedResponse::new(self.status, self.headers, body);
        value.request_headers = self.request_headers;
        match self.rfc {
            None => {
                if let Some(lead) = self.lead {
                    lead.complete(Ok(value));
                }
            }
            Some(rfc) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let (shared, key, lead) = (self.shared, self.key, self.lead);
                runtime.spawn(async move {
                    let value = rfc.store(&shared, &key, value).await;
                    if let Some(lead) = lead {
                        lead.complete(Ok(value));
                    }
                });
            }
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Stored { data } => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            KindProj::Origin { body } => body.poll_frame(cx),
            KindProj::Filled { feed, rest, tail, .. } => {
                if let Some(tail) = tail {
                    return tail.as_mut().poll_frame(cx);
                }
                if let Some(frame) = ready!(feed.poll_recv(cx)) {
                    return Poll::Ready(Some(frame));
                }
                // The feed has ended: the task is done, and either handed
                // the rest of the body over or had nothing left to hand.
                let Some(receiver) = rest else {
                    return Poll::Ready(None);
                };
                match ready!(Pin::new(receiver).poll(cx)) {
                    Ok(body) => {
                        *rest = None;
                        let tail = tail.insert(body);
                        tail.as_mut().poll_frame(cx)
                    }
                    Err(_) => {
                        *rest = None;
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { data } => data.is_none(),
            Kind::Origin { body } => body.is_end_stream(),
            Kind::Filled { tail, rest, feed, .. } => match tail {
                Some(tail) => tail.is_end_stream(),
                None => rest.is_none() && feed.is_closed() && feed.is_empty(),
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Origin { body } => body.size_hint(),
            // What the origin's body said before any of it was read.
            Kind::Filled { hint, .. } => *hint,
        }
    }
}
