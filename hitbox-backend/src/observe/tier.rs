//! The metrics and spans of one tier, taken where the tier is called.
//!
//! Tiers do nothing for this themselves. Whoever calls a tier wraps the
//! call: the engine around its one tier, a composition around each of its
//! two (see [`Backend::observes_tiers`]: a composition is not observed as
//! one more tier, its tiers are). So moka, Redis, cachekit.io and
//! memcached all have the same spans and counters, and a tier used alone
//! or inside a composition has the same ones.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hitbox_core::{CacheKey, Tag};
use tracing::field::Empty;

use super::spans::Traced;
use crate::error::BackendError;
use crate::tiers::backend::Backend;
use crate::tiers::generations::TagGenerations;
use crate::tiers::purge::Purge;

#[cfg(feature = "metrics")]
use super::exported::{ReadResult, TierMetrics, WriteResult};

/// The spans and metric handles of one tier.
pub(crate) struct TierObserver {
    label: std::sync::Arc<str>,
    #[cfg(feature = "metrics")]
    metrics: TierMetrics,
}

impl std::fmt::Debug for TierObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierObserver")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// How a write ended.
pub(crate) enum Written<'a> {
    Stored,
    /// The tier declined it by its own rule: too large
    /// ([`BackendError::Refused`]), or a tag moved
    /// ([`Backend::write_if_current`] answering `false`).
    Refused(Option<&'a BackendError>),
    Failed(&'a BackendError),
}

impl<'a> Written<'a> {
    pub(crate) fn of<T>(result: &'a Result<T, BackendError>, stored: impl FnOnce(&T) -> bool) -> Self {
        match result {
            Ok(value) if stored(value) => Written::Stored,
            Ok(_) => Written::Refused(None),
            Err(error @ BackendError::Refused { .. }) => Written::Refused(Some(error)),
            Err(error) => Written::Failed(error),
        }
    }
}

impl TierObserver {
    /// The observer of the tier labelled `label`: its handles are
    /// registered with the recorder installed now.
    pub(crate) fn new(label: &str) -> Self {
        TierObserver {
            label: label.into(),
            #[cfg(feature = "metrics")]
            metrics: TierMetrics::new(label),
        }
    }

    /// Whether latencies are measured (feature `metrics`, a recorder
    /// installed when the tier's handles were registered).
    #[inline(always)]
    pub(crate) fn timed(&self) -> bool {
        #[cfg(feature = "metrics")]
        return self.metrics.timed();
        #[cfg(not(feature = "metrics"))]
        false
    }

    /// A clock read for a latency, when latencies are measured.
    #[inline]
    pub(crate) fn started(&self) -> Option<Instant> {
        #[cfg(feature = "metrics")]
        if self.metrics.timed() {
            return Some(Instant::now());
        }
        None
    }

    #[inline(always)]
    pub(crate) fn read_span(&self, key: &CacheKey) -> Traced {
        Traced::new(|| {
            tracing::debug_span!(
                "hitbox.tier.read",
                hitbox.tier = &*self.label,
                hitbox.key = %key.log_id(),
                hitbox.result = Empty,
                error.type = Empty,
                otel.status_code = Empty,
            )
        })
    }

    pub(crate) fn read_many_span(&self, keys: usize) -> Traced {
        Traced::new(|| {
            tracing::debug_span!(
                "hitbox.tier.read",
                hitbox.tier = &*self.label,
                hitbox.keys = keys,
                hitbox.result = Empty,
                error.type = Empty,
                otel.status_code = Empty,
            )
        })
    }

    #[inline]
    pub(crate) fn write_span(&self, key: &CacheKey) -> Traced {
        Traced::new(|| {
            tracing::debug_span!(
                "hitbox.tier.write",
                hitbox.tier = &*self.label,
                hitbox.key = %key.log_id(),
                hitbox.result = Empty,
                error.type = Empty,
                otel.status_code = Empty,
            )
        })
    }

    pub(crate) fn remove_span(&self, key: &CacheKey) -> Traced {
        Traced::new(|| {
            tracing::debug_span!(
                "hitbox.tier.remove",
                hitbox.tier = &*self.label,
                hitbox.key = %key.log_id(),
                hitbox.result = Empty,
                error.type = Empty,
                otel.status_code = Empty,
            )
        })
    }

    pub(crate) fn invalidate_span(&self, tag: &Tag) -> Traced {
        Traced::new(|| {
            tracing::debug_span!(
                "hitbox.tier.invalidate",
                hitbox.tier = &*self.label,
                hitbox.tag = tag.as_str(),
                hitbox.result = Empty,
                error.type = Empty,
                otel.status_code = Empty,
            )
        })
    }

    /// One purge in this tier, with the fields of the engine's
    /// `hitbox.purge` span and the tier's label.
    pub(crate) fn purge_span(&self, purge: &Purge) -> Traced {
        Traced::new(|| {
            let span = tracing::debug_span!(
                "hitbox.tier.purge",
                hitbox.tier = &*self.label,
                hitbox.purge.kind = purge.target().kind(),
                hitbox.purge.mode = purge.mode().as_str(),
                hitbox.key = Empty,
                hitbox.tag = Empty,
                hitbox.purged = Empty,
                hitbox.result = Empty,
                error.type = Empty,
                otel.status_code = Empty,
            );
            super::spans::record_target(&span, purge.target());
            span
        })
    }

    /// Records a purge: `ok` with the entries it purged, or `error`
    /// (counted in `hitbox_tier_errors_total`).
    pub(crate) fn purge_done(&self, span: &Traced, result: &Result<u64, BackendError>) {
        span.purged(result);
        if let Err(error) = result {
            self.error(error);
        }
    }

    /// Records a read of one key: `hit`, `miss` or `error`.
    #[inline]
    pub(crate) fn read_done(
        &self,
        span: &Traced,
        result: &Result<Option<Bytes>, BackendError>,
        took: Option<Duration>,
    ) {
        let _ = took;
        match result {
            Ok(found) => {
                #[cfg(feature = "metrics")]
                self.metrics.read(
                    if found.is_some() {
                        ReadResult::Hit
                    } else {
                        ReadResult::Miss
                    },
                    1,
                    took,
                );
                span.finish(if found.is_some() { "hit" } else { "miss" });
            }
            Err(error) => self.read_failed(span, error, 1, took),
        }
    }

    /// Records a read of many keys: a hit or a miss per key, or an error
    /// per key when the read failed; one latency.
    pub(crate) fn read_many_done(
        &self,
        span: &Traced,
        result: &Result<Vec<Option<Bytes>>, BackendError>,
        keys: usize,
        took: Option<Duration>,
    ) {
        let _ = (took, keys);
        match result {
            Ok(found) => {
                #[cfg(feature = "metrics")]
                {
                    let hits = found.iter().filter(|entry| entry.is_some()).count() as u64;
                    self.metrics.read(ReadResult::Hit, hits, took);
                    self.metrics
                        .read(ReadResult::Miss, found.len() as u64 - hits, None);
                }
                let _ = found;
                span.finish("ok");
            }
            Err(error) => self.read_failed(span, error, keys as u64, took),
        }
    }

    fn read_failed(&self, span: &Traced, error: &BackendError, keys: u64, took: Option<Duration>) {
        let _ = (keys, took);
        #[cfg(feature = "metrics")]
        {
            self.metrics.read(ReadResult::Error, keys, took);
            self.metrics.error(error);
        }
        span.fail(error.kind());
    }

    /// Records a write: `ok`, `refused` or `error`.
    #[inline]
    pub(crate) fn write_done(&self, span: &Traced, written: Written<'_>, took: Option<Duration>) {
        let _ = took;
        match written {
            Written::Stored => {
                #[cfg(feature = "metrics")]
                self.metrics.write(WriteResult::Ok, took);
                span.finish("ok");
            }
            Written::Refused(error) => {
                #[cfg(feature = "metrics")]
                {
                    self.metrics.write(WriteResult::Refused, took);
                    if let Some(error) = error {
                        self.metrics.error(error);
                    }
                }
                let _ = error;
                span.finish("refused");
            }
            Written::Failed(error) => {
                #[cfg(feature = "metrics")]
                {
                    self.metrics.write(WriteResult::Error, took);
                    self.metrics.error(error);
                }
                span.fail(error.kind());
            }
        }
    }

    /// Records a removal or an invalidation: `ok` or `error`.
    pub(crate) fn done<T>(&self, span: &Traced, result: &Result<T, BackendError>) {
        match result {
            Ok(_) => span.finish("ok"),
            Err(error) => {
                self.error(error);
                span.fail(error.kind());
            }
        }
    }

    /// Counts a failed operation that has no span of its own (`exists`,
    /// `tag_generations`).
    pub(crate) fn error(&self, error: &BackendError) {
        let _ = error;
        #[cfg(feature = "metrics")]
        self.metrics.error(error);
    }

    /// `backend.read_many(keys)`, observed.
    pub(crate) async fn read_many(
        &self,
        backend: &dyn Backend,
        keys: &[CacheKey],
    ) -> Result<Vec<Option<Bytes>>, BackendError> {
        let span = self.read_many_span(keys.len());
        let started = self.started();
        let result = span.run(backend.read_many(keys)).await;
        self.read_many_done(&span, &result, keys.len(), started.map(|at| at.elapsed()));
        result
    }

    /// `backend.write(..)`, observed.
    pub(crate) async fn write(
        &self,
        backend: &dyn Backend,
        key: &CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &[Tag],
    ) -> Result<(), BackendError> {
        let span = self.write_span(key);
        let started = self.started();
        let result = span.run(backend.write(key, value, ttl, tags)).await;
        self.write_done(
            &span,
            Written::of(&result, |_| true),
            started.map(|at| at.elapsed()),
        );
        result
    }

    /// `backend.write_if_current(..)`, observed.
    pub(crate) async fn write_if_current(
        &self,
        backend: &dyn Backend,
        key: &CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &[Tag],
        expected: &TagGenerations,
    ) -> Result<bool, BackendError> {
        let span = self.write_span(key);
        let started = self.started();
        let result = span
            .run(backend.write_if_current(key, value, ttl, tags, expected))
            .await;
        self.write_done(
            &span,
            Written::of(&result, |stored| *stored),
            started.map(|at| at.elapsed()),
        );
        result
    }

    /// `backend.remove(key)`, observed.
    pub(crate) async fn remove(&self, backend: &dyn Backend, key: &CacheKey) -> Result<bool, BackendError> {
        let span = self.remove_span(key);
        let result = span.run(backend.remove(key)).await;
        self.done(&span, &result);
        result
    }

    /// `backend.purge(purge)`, observed.
    pub(crate) async fn purge(&self, backend: &dyn Backend, purge: &Purge) -> Result<u64, BackendError> {
        let span = self.purge_span(purge);
        let result = span.run(backend.purge(purge)).await;
        self.purge_done(&span, &result);
        result
    }

    /// `backend.invalidate_tag(tag)`, observed.
    pub(crate) async fn invalidate_tag(&self, backend: &dyn Backend, tag: &Tag) -> Result<u64, BackendError> {
        let span = self.invalidate_span(tag);
        let result = span.run(backend.invalidate_tag(tag)).await;
        self.done(&span, &result);
        result
    }
}
