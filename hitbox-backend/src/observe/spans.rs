//! The engine's spans, and the helpers every span of the crate goes
//! through.
//!
//! Every span is at `DEBUG`. A span that no subscriber wants is decided by
//! the level check inside the `span!` macros, before any field is
//! evaluated: the key's digest is not even computed. A disabled span is not
//! entered either ([`in_span`] awaits the future as it is), so the hit
//! path pays a level check per span and nothing else.
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
    span.record("hitbox.result", result);
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
    tracing::debug_span!(
        "hitbox.store",
        hitbox.key = %key.log_id(),
        hitbox.result = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    )
}
