//! The response body the layer returns: a stored body, or the origin's body
//! streamed to the client while a copy is collected for the cache.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hitbox_backend::LoadLead;
use hitbox_core::{CacheKey, EntryMeta};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

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
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Stored { data: Option<Bytes> },
        Origin {
            #[pin]
            body: B,
            tee: Option<Tee>,
        },
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn stored(data: Bytes) -> Self {
        CacheBody {
            kind: Kind::Stored {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn origin(body: B) -> Self {
        CacheBody {
            kind: Kind::Origin { body, tee: None },
        }
    }

    pub(crate) fn teed(body: B, tee: Tee) -> Self {
        CacheBody {
            kind: Kind::Origin { body, tee: Some(tee) },
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
    pub request_headers: HeaderMap,
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
        value.request_headers = self.request_headers;
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
    fn push(mut self, data: &Bytes) -> Option<Tee> {
        if self.size + data.len() > self.limit {
            self.give_up(Uncacheable::TooLarge);
            return None;
        }
        self.size += data.len();
        self.chunks.push(data.clone());
        Some(self)
    }

    fn give_up(self, reason: Uncacheable) {
        tracing::debug!(key = %self.key.log_id(), %reason, "response not stored");
        if let Some(lead) = self.lead {
            self.shared.remember_uncacheable(&self.key);
            lead.complete(Err(reason));
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
        let value = CachedResponse::new(self.status, self.headers, body);
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
            KindProj::Origin { mut body, tee } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                match &frame {
                    Some(Ok(frame)) => {
                        if let Some(collecting) = tee.take() {
                            *tee = match frame.data_ref() {
                                Some(data) => collecting.push(data),
                                None => {
                                    collecting.give_up(Uncacheable::Trailers);
                                    None
                                }
                            };
                        }
                        // A server stops polling once the body says it has
                        // ended, so the end must be caught here too.
                        if body.is_end_stream()
                            && let Some(collecting) = tee.take()
                        {
                            collecting.finish();
                        }
                    }
                    // The origin failed mid-stream: the error reaches the
                    // client, nothing is stored, and the waiters are
                    // released when the tee is dropped.
                    Some(Err(_)) => drop(tee.take()),
                    None => {
                        if let Some(collecting) = tee.take() {
                            collecting.finish();
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { data } => data.is_none(),
            Kind::Origin { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Origin { body, .. } => body.size_hint(),
        }
    }
}
