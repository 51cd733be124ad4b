//! The engine's spans, and the helpers every span of the crate goes
//! through.
//!
//! Every span is at `DEBUG`. Each is made only when the level check says a
//! subscriber may want `DEBUG` ([`wanted`]: one atomic load); otherwise it
//! is [`Span::none`], which nothing is recorded on and whose drop does
//! nothing, and no field is evaluated: the key's digest is not even
//! computed. A disabled span is not entered either ([`in_span`] awaits the
//! future as it is), so the hit path pays a level check per span and
//! nothing else. (The `span!` macros alone would hand out a disabled span
//! that still carries its metadata, and with `tracing`'s `log` feature and
//! no subscriber, recording on it or dropping it goes through the `log`
//! crate: a cost the hit path does not need. For the same reason, spans
//! are not turned into `log` records when there is no subscriber.)
//!
//! Spans are children of whatever span is current when they are made, so a
//! caller that enters its own span (the HTTP layer's `hitbox.request`) gets
//! the engine's spans under it. The one exception is
//! [`revalidate`]: a background refresh outlives the request that started
//! it, so it is a root span that *follows from* that request.
//!
//! Field names: OpenTelemetry's where one fits (`error.type`, the class of
//! error an operation ended with), `otel.status_code` (the field
//! `tracing-opentelemetry` turns into the span's status), and `hitbox.*`
//! for the rest: OpenTelemetry has no conventions for caches, and the
//! database ones (`db.*`) describe a query to a database, which a cache
//! lookup across tiers is not.

use std::future::Future;

use hitbox_core::CacheKey;
use tracing::field::Empty;
use tracing::{Instrument, Span};

/// Whether `DEBUG` spans may be wanted: the level check the `span!` macros
/// make first, on the static and the current maximum level.
#[inline]
pub(crate) fn wanted() -> bool {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    tracing::Level::DEBUG <= STATIC_MAX_LEVEL && tracing::Level::DEBUG <= LevelFilter::current()
}

/// Awaits `future` inside `span`, or plainly when the span is disabled.
pub(crate) async fn in_span<F: Future>(span: &Span, future: F) -> F::Output {
    if span.is_disabled() {
        future.await
    } else {
        future.instrument(span.clone()).await
    }
}

/// Records how the operation of `span` ended (`hitbox.result`).
pub(crate) fn finish(span: &Span, result: &'static str) {
    if !span.is_disabled() {
        span.record("hitbox.result", result);
    }
}

/// Records that the operation of `span` failed, with the class of error.
pub(crate) fn fail(span: &Span, error_type: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.record("hitbox.result", "error");
    span.record("error.type", error_type);
    span.record("otel.status_code", "ERROR");
}

/// One engine read of its tier (`get`, `get_entry`, a loader's lookup).
pub(crate) fn lookup(key: &CacheKey) -> Span {
    if !wanted() {
        return Span::none();
    }
    tracing::debug_span!(
        "hitbox.lookup",
        hitbox.key = %key.log_id(),
        hitbox.result = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// One engine read of many keys.
pub(crate) fn lookup_many(keys: usize) -> Span {
    if !wanted() {
        return Span::none();
    }
    tracing::debug_span!(
        "hitbox.lookup",
        hitbox.keys = keys,
        hitbox.result = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// One load of `key`: its loader (or its leading caller) and its store.
pub(crate) fn load(key: &CacheKey) -> Span {
    if !wanted() {
        return Span::none();
    }
    tracing::debug_span!(
        "hitbox.load",
        hitbox.key = %key.log_id(),
        hitbox.result = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// A background refresh of `key`: a root span that follows from the span
/// current now (the request that served the stale entry).
pub(crate) fn revalidate(key: &CacheKey) -> Span {
    if !wanted() {
        return Span::none();
    }
    let span = tracing::debug_span!(
        parent: None,
        "hitbox.revalidate",
        hitbox.key = %key.log_id(),
        hitbox.result = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    );
    if !span.is_disabled() {
        span.follows_from(Span::current());
    }
    span
}

/// One value written by the engine.
pub(crate) fn store(key: &CacheKey) -> Span {
    if !wanted() {
        return Span::none();
    }
    tracing::debug_span!(
        "hitbox.store",
        hitbox.key = %key.log_id(),
        hitbox.result = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}
