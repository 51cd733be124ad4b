//! The response body the layer returns: a stored body, or the origin's body
//! streamed to the client while a copy is collected for the cache.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::sync::{mpsc, oneshot};

use crate::predicate::ReadBody;
use crate::response::CachedResponse;
use crate::rfc9111::freshness::Exchange;
use crate::rule::BodyPredicate;
use crate::store::{Store, Uncacheable};

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
    /// Where the collected response goes.
    pub store: Store,
    pub status: StatusCode,
    /// The headers stored: no hop-by-hop fields, none meant for one client.
    pub headers: HeaderMap,
    /// The request fields the response's `Vary` names, as this request
    /// sent them (empty when it does not vary).
    pub request_headers: HeaderMap,
    /// Standards mode: the exchange, for the age calculation.
    pub exchange: Option<Exchange>,
    pub chunks: Vec<Bytes>,
    pub size: usize,
    pub limit: usize,
    /// What the whole body must pass to be stored: judged once it has
    /// ended, after every byte went on to the client.
    pub accept: Option<BodyPredicate>,
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
        self.store.give_up(reason);
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
                    tracing::debug!(key = %self.store.key.log_id(), "origin body failed: response not stored");
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

    /// Stores the collected body (all of it: the body has ended), if it
    /// passes the rule's body predicate.
    pub(crate) fn finish(self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut joined = BytesMut::with_capacity(self.size);
                for chunk in &self.chunks {
                    joined.extend_from_slice(chunk);
                }
                joined.freeze()
            }
        };
        if let Some(accept) = &self.accept
            && !accept.check(&ReadBody::new(body.clone()))
        {
            self.give_up(Uncacheable::BodyRefused);
            return;
        }
        let mut value = CachedResponse::new(self.status, self.headers, body);
        value.request_headers = self.request_headers;
        value.exchange = self.exchange;
        self.store.finish(value);
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
