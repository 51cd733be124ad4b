//! The engine's spans, and the handle every span of the crate goes
//! through, [`Traced`].
//!
//! Every span is at `DEBUG`. A span is made only when the level check says
//! a subscriber may want `DEBUG` ([`wanted`]: one atomic load), and kept
//! only when the subscriber took it; otherwise the handle holds nothing.
//! Then no field is evaluated (the key's digest is not even computed),
//! nothing is recorded, the future is not wrapped ([`Traced::run`]) and
//! dropping the handle does nothing, so the hit path pays a level check
//! per span. (A disabled [`Span`] from the `span!` macros still carries
//! its metadata: with `tracing`'s `log` feature and no subscriber,
//! recording on it or dropping it goes through the `log` crate. So spans
//! are not turned into `log` records when there is no subscriber.)
//!
//! Spans are children of whatever span is current when they are made, so a
//! caller that enters its own span (the HTTP layer's `hitbox.request`) gets
//! the engine's spans under it. The one exception is [`revalidate`]: a
//! background refresh outlives the request that started it, so it is a
//! root span that *follows from* that request.
//!
//! Field names: OpenTelemetry's where one fits (`error.type`, the class of
//! error an operation ended with), `otel.status_code` (the field
//! `tracing-opentelemetry` turns into the span's status), and `hitbox.*`
//! for the rest: OpenTelemetry has no conventions for caches, and the
//! database ones (`db.*`) describe a query to a database, which a cache
//! lookup across tiers is not.

use std::future::Future;

use futures::future::Either;
use hitbox_core::CacheKey;
use tracing::field::Empty;
use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};

use crate::tiers::purge::{PurgeMode, PurgeTarget};

/// Whether `DEBUG` spans may be wanted: the level check the `span!` macros
/// make first, on the static and the current maximum level.
#[inline(always)]
pub(crate) fn wanted() -> bool {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    tracing::Level::DEBUG <= STATIC_MAX_LEVEL && tracing::Level::DEBUG <= LevelFilter::current()
}

/// Awaits `$future` inside the span of `$traced` (a [`Traced`]), or as it
/// is when there is none: for the hit path, where even the poll of an
/// [`Either`] between the two is worth saving. `$future` is evaluated
/// once.
macro_rules! traced_await {
    ($traced:expr, $future:expr) => {
        match $traced.span() {
            None => $future.await,
            Some(span) => ::tracing::Instrument::instrument($future, span.clone()).await,
        }
    };
}
pub(crate) use traced_await;

/// A span of the crate, or nothing when no subscriber wants it.
#[derive(Debug, Clone)]
pub(crate) struct Traced(Option<Span>);

impl Traced {
    /// No span.
    pub(crate) const OFF: Traced = Traced(None);

    /// The span `make` makes, when `DEBUG` spans may be wanted and the
    /// subscriber takes it.
    #[inline(always)]
    pub(crate) fn new(make: impl FnOnce() -> Span) -> Self {
        if !wanted() {
            return Traced(None);
        }
        Self::make(make)
    }

    /// Out of the hit path's line: only when spans may be wanted.
    #[cold]
    #[inline(never)]
    fn make(make: impl FnOnce() -> Span) -> Self {
        let span = make();
        Traced((!span.is_disabled()).then_some(span))
    }

    /// The span, if one was made.
    #[inline]
    pub(crate) fn span(&self) -> Option<&Span> {
        self.0.as_ref()
    }

    /// `future`, inside the span when there is one. Not an `async fn`: an
    /// `async fn` would keep its argument beside the future it awaits, and
    /// double the size of what it wraps.
    #[inline]
    pub(crate) fn run<F: Future>(&self, future: F) -> Either<F, Instrumented<F>> {
        match &self.0 {
            None => Either::Left(future),
            Some(span) => Either::Right(future.instrument(span.clone())),
        }
    }

    /// Runs `f` inside the span, when there is one.
    #[inline]
    pub(crate) fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.0 {
            None => f(),
            Some(span) => span.in_scope(f),
        }
    }

    /// Records how the operation ended (`hitbox.result`).
    #[inline]
    pub(crate) fn finish(&self, result: &'static str) {
        if let Some(span) = &self.0 {
            span.record("hitbox.result", result);
        }
    }

    /// Records that the operation failed, with the class of error.
    #[inline]
    pub(crate) fn fail(&self, error_type: &'static str) {
        if let Some(span) = &self.0 {
            span.record("hitbox.result", "error");
            span.record("error.type", error_type);
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// One engine read of its tier (`get`, `get_entry`, a loader's lookup).
#[inline(always)]
pub(crate) fn lookup(key: &CacheKey) -> Traced {
    Traced::new(|| {
        tracing::debug_span!(
            "hitbox.lookup",
            hitbox.key = %key.log_id(),
            hitbox.result = Empty,
            error.type = Empty,
            otel.status_code = Empty,
        )
    })
}

/// One engine read of many keys.
pub(crate) fn lookup_many(keys: usize) -> Traced {
    Traced::new(|| {
        tracing::debug_span!(
            "hitbox.lookup",
            hitbox.keys = keys,
            hitbox.result = Empty,
            error.type = Empty,
            otel.status_code = Empty,
        )
    })
}

/// One load of `key`: its loader (or its leading caller) and its store.
pub(crate) fn load(key: &CacheKey) -> Traced {
    Traced::new(|| {
        tracing::debug_span!(
            "hitbox.load",
            hitbox.key = %key.log_id(),
            hitbox.result = Empty,
            error.type = Empty,
            otel.status_code = Empty,
        )
    })
}

/// A background refresh of `key`: a root span that follows from the span
/// current now (the request that served the stale entry).
pub(crate) fn revalidate(key: &CacheKey) -> Traced {
    let traced = Traced::new(|| {
        tracing::debug_span!(
            parent: None,
            "hitbox.revalidate",
            hitbox.key = %key.log_id(),
            hitbox.result = Empty,
            error.type = Empty,
            otel.status_code = Empty,
        )
    });
    if let Some(span) = traced.span() {
        span.follows_from(Span::current());
    }
    traced
}

/// One value written by the engine.
pub(crate) fn store(key: &CacheKey) -> Traced {
    Traced::new(|| {
        tracing::debug_span!(
            "hitbox.store",
            hitbox.key = %key.log_id(),
            hitbox.result = Empty,
            error.type = Empty,
            otel.status_code = Empty,
        )
    })
}

/// One purge through the engine: what it targets (a key as its digest, a
/// tag as it is; a prefix is not recorded, since it is the raw beginning
/// of keys), its mode, and when it ends its result and how many entries it
/// purged.
pub(crate) fn purge(target: &PurgeTarget, mode: PurgeMode) -> Traced {
    Traced::new(|| {
        let span = tracing::debug_span!(
            "hitbox.purge",
            hitbox.purge.kind = target.kind(),
            hitbox.purge.mode = mode.as_str(),
            hitbox.key = Empty,
            hitbox.tag = Empty,
            hitbox.purged = Empty,
            hitbox.result = Empty,
            error.type = Empty,
            otel.status_code = Empty,
        );
        record_target(&span, target);
        span
    })
}

/// Records the key's digest or the tag of a purge's target in `span`.
pub(crate) fn record_target(span: &Span, target: &PurgeTarget) {
    match target {
        PurgeTarget::Key(key) => {
            span.record("hitbox.key", tracing::field::display(key.log_id()));
        }
        PurgeTarget::Tag(tag) => {
            span.record("hitbox.tag", tag.as_str());
        }
        PurgeTarget::Prefix(_) => {}
    }
}

impl Traced {
    /// Records how a purge ended: `ok` with the entries it purged
    /// (`hitbox.purged`), or the error.
    pub(crate) fn purged(&self, result: &Result<u64, crate::BackendError>) {
        match result {
            Ok(purged) => {
                if let Some(span) = &self.0 {
                    span.record("hitbox.purged", *purged);
                }
                self.finish("ok");
            }
            Err(error) => self.fail(error.kind()),
        }
    }
}
