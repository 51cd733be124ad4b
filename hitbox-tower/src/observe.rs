//! What the layer tells an operator about each request: its outcome,
//! counted in the cache's stats and (feature `metrics`) in
//! `hitbox_requests_total{layer,rule,outcome}`, and its `hitbox.request`
//! span, under which the engine's spans nest.
//!
//! Where a request is counted: where the flow makes its response (or
//! learns that the origin failed), once per request, with the label of
//! the rule that applied, chosen when the policy decided. The response is
//! made in the poll that resolves the request's future, so a request
//! whose future is dropped before it resolves (the client went away) is
//! counted nowhere.
//!
//! Cost when nobody looks: the span is made only when a subscriber may
//! want `DEBUG` (one level check, as the engine's spans), so a hit with
//! spans off pays that check, one stats increment and (with a recorder)
//! one counter increment through a handle registered when the layer was
//! built. Nothing is cloned per request for it.

use std::sync::Arc;

use hitbox_backend::{Cache, Outcome};
use hitbox_core::CacheKey;
use tracing::Span;
use tracing::field::Empty;

use crate::layer::LayerState;

/// The metric the layer exports (feature `metrics`): requests by outcome,
/// labels `layer` (the [cache name](crate::CacheLayerBuilder::cache_name)),
/// `rule` (the [rule's name](crate::Rule::name), `none` for a request no
/// rule matched, `rfc9111` in standards mode) and `outcome`.
pub const REQUESTS: &str = "hitbox_requests_total";

/// The name of the span the layer makes per request.
pub const SPAN_REQUEST: &str = "hitbox.request";

/// The `rule` label of requests no rule matched.
pub const NO_RULE: &str = "none";

/// The `rule` label of every request in standards mode.
pub const STANDARDS: &str = "rfc9111";

/// Whether `DEBUG` spans may be wanted: the level check the `span!`
/// macros make first, on the static and the current maximum level.
#[inline(always)]
pub(crate) fn wanted() -> bool {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    tracing::Level::DEBUG <= STATIC_MAX_LEVEL && tracing::Level::DEBUG <= LevelFilter::current()
}

/// The slot of an outcome among a rule's counters.
#[cfg(feature = "metrics")]
fn slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Hit => 0,
        Outcome::Miss => 1,
        Outcome::Stale => 2,
        Outcome::Collapsed => 3,
        Outcome::Bypass => 4,
        Outcome::Uncacheable => 5,
        Outcome::Error => 6,
    }
}

/// What one layer counts with: the cache (for its stats), the labels of
/// its rules, and their counters (registered once, when the layer is
/// built, with the recorder installed then).
pub(crate) struct LayerObserver {
    cache: Cache,
    /// One label per rule, then the label of requests no rule matched.
    rules: Box<[Arc<str>]>,
    #[cfg(feature = "metrics")]
    counters: Box<[[metrics::Counter; 7]]>,
}

impl LayerObserver {
    /// The observer of a layer named `layer` with these rule labels (the
    /// last one for requests no rule matched).
    pub(crate) fn new(cache: Cache, layer: &str, rules: Vec<Arc<str>>) -> Self {
        #[cfg(feature = "metrics")]
        let counters = rules
            .iter()
            .map(|rule| {
                Outcome::ALL.map(|outcome| {
                    metrics::counter!(
                        REQUESTS,
                        "layer" => layer.to_owned(),
                        "rule" => rule.to_string(),
                        "outcome" => outcome.as_str(),
                    )
                })
            })
            .collect();
        #[cfg(not(feature = "metrics"))]
        let _ = layer;
        LayerObserver {
            cache,
            rules: rules.into_boxed_slice(),
            #[cfg(feature = "metrics")]
            counters,
        }
    }

    /// The index of the label of `rule` (`None`: no rule).
    #[inline]
    pub(crate) fn index(&self, rule: Option<usize>) -> usize {
        rule.unwrap_or(self.rules.len() - 1).min(self.rules.len() - 1)
    }

    /// The label at `index`.
    pub(crate) fn label(&self, index: usize) -> &str {
        &self.rules[index]
    }

    /// Counts one request of the rule at `index`.
    #[inline]
    pub(crate) fn record(&self, index: usize, outcome: Outcome) {
        self.cache.record_outcome(outcome);
        #[cfg(feature = "metrics")]
        self.counters[index][slot(outcome)].increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = index;
    }
}

impl<P> LayerState<P> {
    /// Counts one request of the rule labelled `label` (see
    /// [`LayerObserver::index`]) that ends in `outcome`, with its
    /// response's `status` (`None`: the origin failed), and records both
    /// in the request's span, when spans may be wanted.
    #[inline]
    pub(crate) fn count(&self, label: usize, outcome: Outcome, status: Option<http::StatusCode>) {
        self.observer.record(label, outcome);
        if wanted() {
            record_end(&Span::current(), outcome, status.map(|status| status.as_u16()));
        }
    }

    /// The origin's `result`, an error counted as the request's outcome
    /// (`error`).
    #[inline]
    pub(crate) fn origin<T, E>(&self, label: usize, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            self.count(label, Outcome::Error, None);
        }
        result
    }

    /// The label of the rule at `rule` (`None`: no rule), recorded in the
    /// request's `span`, if it has one.
    #[inline]
    pub(crate) fn label(&self, rule: Option<usize>, span: Option<&Span>) -> usize {
        let label = self.observer.index(rule);
        if let Some(span) = span {
            record_rule(span, self.observer.label(label));
        }
        label
    }
}

/// Records the label of a request's rule in its span.
#[cold]
#[inline(never)]
fn record_rule(span: &Span, label: &str) {
    span.record("hitbox.rule", label);
}

/// Records a request's outcome and status in its span.
#[cold]
#[inline(never)]
fn record_end(span: &Span, outcome: Outcome, status: Option<u16>) {
    span.record("hitbox.outcome", outcome.as_str());
    if let Some(status) = status {
        span.record("http.response.status_code", status);
    }
    if outcome == Outcome::Error || status.is_some_and(|status| status >= 500) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The `hitbox.request` span of a request, when a subscriber takes it:
/// OpenTelemetry's `http.request.method` and `url.path` now; `hitbox.rule`,
/// `hitbox.key`, `hitbox.outcome`, `http.response.status_code` (and
/// `otel.status_code` = `ERROR` for an error or a `5xx`) as they are known.
#[inline(always)]
pub(crate) fn request_span(parts: &http::request::Parts) -> Option<Box<Span>> {
    if !wanted() {
        return None;
    }
    make_span(parts)
}

#[cold]
#[inline(never)]
fn make_span(parts: &http::request::Parts) -> Option<Box<Span>> {
    let span = tracing::debug_span!(
        "hitbox.request",
        http.request.method = parts.method.as_str(),
        url.path = parts.uri.path(),
        hitbox.rule = Empty,
        hitbox.key = Empty,
        hitbox.outcome = Empty,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    );
    (!span.is_disabled()).then(|| Box::new(span))
}

/// Enters a request's span, with a handle of its own.
#[cold]
#[inline(never)]
pub(crate) fn enter(span: &Span) -> tracing::span::EnteredSpan {
    span.clone().entered()
}

/// Leaves a span [`enter`] entered.
#[cold]
#[inline(never)]
pub(crate) fn leave(entered: tracing::span::EnteredSpan) {
    drop(entered);
}

/// Records the key's digest in the current span (the request's, inside
/// its future), when spans may be wanted.
#[inline(always)]
pub(crate) fn keyed(key: &CacheKey) {
    if wanted() {
        Span::current().record("hitbox.key", tracing::field::display(key.log_id()));
    }
}

/// Gives the installed recorder the unit and help text of
/// `hitbox_requests_total` and of every metric of hitbox-backend
/// ([`hitbox_backend::observe::describe_metrics`]): what a Prometheus
/// exporter prints as `# HELP`. Optional; call it once after installing
/// the recorder.
#[cfg(feature = "metrics")]
pub fn describe_metrics() {
    metrics::describe_counter!(
        REQUESTS,
        metrics::Unit::Count,
        "HTTP requests through a cache layer, by layer, rule and outcome (hit, miss, stale, collapsed, bypass, uncacheable, error)."
    );
    hitbox_backend::observe::describe_metrics();
}
