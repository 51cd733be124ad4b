//! The circuit breaker every tier that can go down shares: a composition
//! skipping one of its tiers, the Redis tier, the cachekit.io tier.
//!
//! Why it exists: a tier that is down costs every call its timeout. After
//! [`BreakerConfig::failure_threshold`] consecutive *tier failures* (see
//! [`BackendError::is_tier_failure`]: timeouts, connection errors, a tier
//! already known to be down) the breaker **opens** and the tier is not asked
//! at all until [`BreakerConfig::cool_down`] has passed on the injected
//! [`Clock`](hitbox_core::Clock). The next call then goes through as the
//! **probe** (the breaker is **half-open**, and every other call is still
//! refused while the probe runs): its success **closes** the breaker, its
//! failure opens it for another cool-down. A probe that is dropped before
//! it ends (its caller gave up) lets the next call probe at once.
//!
//! What does not count as a failure: errors about one key or one value. A
//! [`BackendError::Key`] (a Redis `WRONGTYPE`, a cluster redirection, a
//! reply that does not parse) says the tier answered, so it counts as a
//! success: it resets the count, and closes the breaker if it answered the
//! probe. A value refused before it reached the tier
//! ([`BackendError::Refused`], [`BackendError::Encode`]) says nothing either
//! way: no count, and a probe that ends in one is released so the next call
//! probes. See [`Permit::record`].
//!
//! Only the probe decides. A call admitted before the breaker opened that
//! ends after it did (a straggler) changes nothing, whether it failed or
//! succeeded: closing on a straggler's success would make the breaker flap
//! open and closed on answers that say nothing about the tier now, and
//! reopening on a straggler's failure would punish a tier the probe found
//! healthy. The breaker tells them apart by an epoch that changes every
//! time it opens or closes; a [`Permit`] remembers the epoch it was issued
//! in.
//!
//! The defaults are the same everywhere: [`DEFAULT_FAILURE_THRESHOLD`]
//! failures in a row, a cool-down of [`DEFAULT_COOL_DOWN`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use hitbox_backend::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
//! use hitbox_core::ManualClock;
//!
//! let clock = ManualClock::new();
//! let breaker = CircuitBreaker::new(
//!     BreakerConfig::default().failure_threshold(2).cool_down(Duration::from_secs(5)),
//!     Arc::new(clock.clone()),
//! );
//! for _ in 0..2 {
//!     breaker.try_acquire().expect("closed").failure();
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! assert!(breaker.try_acquire().is_none(), "refused without asking the tier");
//!
//! clock.advance(Duration::from_secs(5));
//! let probe = breaker.try_acquire().expect("the cool-down is over");
//! assert!(probe.is_probe());
//! assert!(breaker.try_acquire().is_none(), "one probe at a time");
//! probe.success();
//! assert_eq!(breaker.state(), BreakerState::Closed);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hitbox_core::{SharedClock, Timestamp};

use crate::error::BackendError;

/// The default number of consecutive tier failures that opens a breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;

/// The default time an open breaker refuses calls before it lets a probe
/// through: 1 second, for every tier (composition, Redis, cachekit.io).
///
/// A tier that is down then costs one call per second: nothing when its
/// connections are refused (the call fails at once), one timeout when it
/// hangs. A tier that comes back is used again within about a second
/// (with Redis, whose client reconnects within a quarter of a second,
/// within 1.5 s in the outage tests).
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(1);

/// How a [`CircuitBreaker`] behaves; see the [module documentation](self).
///
/// A plain `Copy` value: set the fields, or start from `default()` and
/// chain the setters.
///
/// ```
/// use std::time::Duration;
/// use hitbox_backend::breaker::BreakerConfig;
///
/// let patient = BreakerConfig::default().failure_threshold(10).cool_down(Duration::from_secs(2));
/// assert_eq!(patient.failure_threshold, 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive tier failures that open the breaker (default
    /// [`DEFAULT_FAILURE_THRESHOLD`]). Zero turns the breaker off: every
    /// call then goes to the tier.
    pub failure_threshold: u32,
    /// How long the breaker stays open before one probe is let through
    /// (default [`DEFAULT_COOL_DOWN`]).
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            cool_down: DEFAULT_COOL_DOWN,
        }
    }
}

impl BreakerConfig {
    /// A breaker that never opens.
    pub const fn disabled() -> Self {
        BreakerConfig {
            failure_threshold: 0,
            cool_down: DEFAULT_COOL_DOWN,
        }
    }

    /// Sets [`failure_threshold`](Self::failure_threshold).
    pub const fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// Sets [`cool_down`](Self::cool_down).
    pub const fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// Whether the breaker can open at all (a threshold above zero).
    pub const fn is_enabled(&self) -> bool {
        self.failure_threshold > 0
    }
}

/// Where a [`CircuitBreaker`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go to the tier; consecutive failures are counted.
    Closed,
    /// Calls are refused without asking the tier, until the cool-down ends
    /// (an open breaker whose cool-down is over reads as open until a call
    /// probes).
    Open,
    /// One probe is running; other calls are refused until it ends.
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Timestamp },
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Changes every time the breaker opens or closes.
    epoch: u64,
}

/// A circuit breaker in front of one tier; see the [module documentation](self).
///
/// Shared by every call to the tier (put it in an `Arc`, or in the tier's
/// shared state). A healthy tier costs two atomic loads per call: the lock
/// is taken only once something failed.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use hitbox_backend::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
/// use hitbox_core::ManualClock;
///
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::new(BreakerConfig::default().failure_threshold(1), Arc::new(clock.clone()));
/// breaker.try_acquire().expect("closed").failure();
/// assert_eq!(breaker.state(), BreakerState::Open);
/// assert!(breaker.try_acquire().is_none());
/// clock.advance(Duration::from_secs(5));
/// let probe = breaker.try_acquire().expect("a probe after the cool-down");
/// assert!(probe.is_probe());
/// probe.success();
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// ```
pub struct CircuitBreaker {
    config: BreakerConfig,
    clock: SharedClock,
    label: Arc<str>,
    /// True while the breaker is closed with no failure counted: the fast
    /// path of [`CircuitBreaker::try_acquire`] and [`Permit::success`].
    quiet: AtomicBool,
    /// A copy of `Inner::epoch`, for permits issued on the fast path.
    epoch: AtomicU64,
    inner: Mutex<Inner>,
    /// `hitbox_tier_breaker_state{tier}`, once labelled (feature
    /// `metrics`); set on every change of state, never on the fast path.
    #[cfg(feature = "metrics")]
    gauge: Option<metrics::Gauge>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("label", &self.label)
            .field("config", &self.config)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A closed breaker that reads time from `clock` (the same clock the
    /// engine and the composition use; a
    /// [`ManualClock`](hitbox_core::ManualClock) in tests).
    pub fn new(config: BreakerConfig, clock: SharedClock) -> Self {
        CircuitBreaker {
            config,
            clock,
            label: Arc::from("tier"),
            quiet: AtomicBool::new(true),
            epoch: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                state: State::Closed { failures: 0 },
                epoch: 0,
            }),
            #[cfg(feature = "metrics")]
            gauge: None,
        }
    }

    /// Names the tier in the breaker's log lines (default `"tier"`) and,
    /// with the `metrics` feature, in the gauge of its state,
    /// `hitbox_tier_breaker_state{tier}` (0 closed, 1 half-open, 2 open),
    /// registered here. A breaker that is turned off
    /// ([`BreakerConfig::disabled`]) has no gauge: it never opens, and the
    /// tier it stands in front of may have a breaker of its own, with the
    /// same label.
    pub fn labelled(mut self, label: impl Into<Arc<str>>) -> Self {
        self.label = label.into();
        #[cfg(feature = "metrics")]
        if self.config.is_enabled() {
            let gauge = crate::observe::breaker_gauge(&self.label);
            gauge.set(0.0);
            self.gauge = Some(gauge);
        }
        self
    }

    /// Publishes `state` in the gauge.
    fn publish(&self, state: BreakerState) {
        let _ = state;
        #[cfg(feature = "metrics")]
        if let Some(gauge) = &self.gauge {
            gauge.set(match state {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen => 1.0,
                BreakerState::Open => 2.0,
            });
        }
    }

    /// The configuration.
    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where the breaker stands now.
    pub fn state(&self) -> BreakerState {
        if !self.config.is_enabled() || self.quiet.load(Ordering::Acquire) {
            return BreakerState::Closed;
        }
        match self.lock().state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Whether a call made now would be let through: the breaker is closed,
    /// or open with its cool-down over (the call would be the probe).
    /// Changes nothing.
    pub fn is_available(&self) -> bool {
        if !self.config.is_enabled() || self.quiet.load(Ordering::Acquire) {
            return true;
        }
        match self.lock().state {
            State::Closed { .. } => true,
            State::Open { until } => self.clock.now() >= until,
            State::HalfOpen => false,
        }
    }

    /// Asks to run one call. `None`: the breaker is open (or half-open with
    /// a probe running) and the tier must not be asked. Report the call's
    /// outcome on the permit; see [`Permit`].
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        if !self.config.is_enabled() {
            return Some(self.permit(false, 0));
        }
        if self.quiet.load(Ordering::Acquire) {
            return Some(self.permit(false, self.epoch.load(Ordering::Acquire)));
        }
        let mut inner = self.lock();
        match inner.state {
            State::Closed { .. } => Some(self.permit(false, inner.epoch)),
            State::Open { until } if self.clock.now() >= until => {
                inner.state = State::HalfOpen;
                self.publish(BreakerState::HalfOpen);
                tracing::info!(tier = &*self.label, "circuit breaker half-open: probing");
                Some(self.permit(true, inner.epoch))
            }
            State::Open { .. } | State::HalfOpen => None,
        }
    }

    /// A permit for a call that must reach the tier whatever the breaker
    /// says (an invalidation: skipping it would let the tier serve what was
    /// invalidated once it is back). It is never the probe: its outcome
    /// counts only while the breaker is closed.
    pub fn bypass(&self) -> Permit<'_> {
        let epoch = if self.config.is_enabled() {
            self.lock().epoch
        } else {
            0
        };
        self.permit(false, epoch)
    }

    fn permit(&self, probe: bool, epoch: u64) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            epoch,
            settled: false,
        }
    }

    /// Moves to `state`, starting a new epoch.
    fn transition(&self, inner: &mut Inner, state: State) {
        inner.state = state;
        inner.epoch = inner.epoch.wrapping_add(1);
        self.epoch.store(inner.epoch, Ordering::Release);
        let quiet = matches!(state, State::Closed { failures: 0 });
        self.quiet.store(quiet, Ordering::Release);
        self.publish(match state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        });
    }

    fn open(&self, inner: &mut Inner) {
        let until = self.clock.now().add(self.config.cool_down);
        self.transition(inner, State::Open { until });
    }

    fn succeeded(&self, probe: bool, epoch: u64) {
        if !self.config.is_enabled() || self.quiet.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.lock();
        if inner.epoch != epoch {
            // A straggler: it was admitted before the breaker last opened
            // or closed. Only the probe of this epoch decides.
            return;
        }
        match inner.state {
            State::Closed { failures: 0 } => {}
            State::Closed { .. } => {
                inner.state = State::Closed { failures: 0 };
                self.quiet.store(true, Ordering::Release);
            }
            State::HalfOpen if probe => {
                self.transition(&mut inner, State::Closed { failures: 0 });
                tracing::info!(tier = &*self.label, "circuit breaker closed: the probe succeeded");
            }
            // A call that bypassed the breaker: it says nothing the probe
            // should not say.
            State::HalfOpen | State::Open { .. } => {}
        }
    }

    fn failed(&self, probe: bool, epoch: u64) {
        if !self.config.is_enabled() {
            return;
        }
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        match inner.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    self.open(&mut inner);
                    tracing::warn!(
                        tier = &*self.label,
                        failures,
                        cool_down = ?self.config.cool_down,
                        "circuit breaker open: the tier is not asked until a probe succeeds"
                    );
                } else {
                    inner.state = State::Closed { failures };
                    self.quiet.store(false, Ordering::Release);
                }
            }
            State::HalfOpen if probe => {
                self.open(&mut inner);
                tracing::warn!(
                    tier = &*self.label,
                    cool_down = ?self.config.cool_down,
                    "circuit breaker probe failed: open again"
                );
            }
            State::HalfOpen | State::Open { .. } => {}
        }
    }

    /// A probe ended without a verdict (dropped, or a per-key error): the
    /// next call probes at once.
    fn released(&self, probe: bool, epoch: u64) {
        if !probe || !self.config.is_enabled() {
            return;
        }
        let mut inner = self.lock();
        if inner.epoch == epoch && matches!(inner.state, State::HalfOpen) {
            inner.state = State::Open {
                until: self.clock.now(),
            };
            self.publish(BreakerState::Open);
        }
    }
}

/// The right to run one call through a [`CircuitBreaker`].
///
/// Report how the call ended with [`success`](Permit::success),
/// [`failure`](Permit::failure), [`neutral`](Permit::neutral), or
/// [`record`](Permit::record) with the call's result. A permit dropped
/// without an outcome (its caller gave up on the call) counts for nothing,
/// except that a dropped probe lets the next call probe.
#[derive(Debug)]
#[must_use = "report the call's outcome on the permit"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    epoch: u64,
    settled: bool,
}

impl Permit<'_> {
    /// Whether this call is the probe of a half-open breaker.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The tier answered: resets the failure count of a closed breaker, and
    /// closes a half-open one if this is its probe.
    pub fn success(mut self) {
        self.settled = true;
        self.breaker.succeeded(self.probe, self.epoch);
    }

    /// The tier failed (timed out, could not be reached): counts towards
    /// opening a closed breaker, and opens a half-open one again if this is
    /// its probe.
    pub fn failure(mut self) {
        self.settled = true;
        self.breaker.failed(self.probe, self.epoch);
    }

    /// The call ended in a way that says nothing about the tier's health
    /// (an error about one key or one value): no count either way; a probe
    /// is released so that the next call probes.
    pub fn neutral(mut self) {
        self.settled = true;
        self.breaker.released(self.probe, self.epoch);
    }

    /// Reports `result`: `Ok` is a success; an error for which
    /// [`BackendError::is_tier_failure`] holds is a failure; a
    /// [`BackendError::Key`] error is a success too (the tier answered,
    /// about this one key); any other error (a value refused before it
    /// reached the tier) is [neutral](Permit::neutral).
    pub fn record<T>(self, result: &Result<T, BackendError>) {
        match result {
            Ok(_) | Err(BackendError::Key { .. }) => self.success(),
            Err(error) if error.is_tier_failure() => self.failure(),
            Err(_) => self.neutral(),
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.released(self.probe, self.epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use hitbox_core::ManualClock;

    use super::*;

    fn breaker(threshold: u32, cool_down_secs: u64) -> (CircuitBreaker, ManualClock) {
        let clock = ManualClock::new();
        let config = BreakerConfig::default()
            .failure_threshold(threshold)
            .cool_down(Duration::from_secs(cool_down_secs));
        (CircuitBreaker::new(config, Arc::new(clock.clone())), clock)
    }

    fn fail(breaker: &CircuitBreaker, times: u32) {
        for _ in 0..times {
            breaker.try_acquire().expect("the breaker is closed").failure();
        }
    }

    #[test]
    fn the_defaults_are_five_failures_and_one_second() {
        let config = BreakerConfig::default();
        assert_eq!(config.failure_threshold, 5);
        assert_eq!(config.cool_down, Duration::from_secs(1));
        assert!(config.is_enabled());
        assert!(!BreakerConfig::disabled().is_enabled());
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures() {
        let (b, _) = breaker(3, 10);
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_none());
        assert!(!b.is_available());
    }

    #[test]
    fn a_success_resets_the_count() {
        let (b, _) = breaker(3, 10);
        fail(&b, 2);
        b.try_acquire().expect("closed").success();
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn after_the_cool_down_on_the_clock_one_probe_goes_through_and_its_success_closes() {
        let (b, clock) = breaker(1, 10);
        fail(&b, 1);
        clock.advance(Duration::from_millis(9_999));
        assert!(b.try_acquire().is_none(), "still cooling down");
        assert!(!b.is_available());
        clock.advance(Duration::from_millis(1));
        assert!(b.is_available(), "the next call would probe");
        assert_eq!(b.state(), BreakerState::Open, "nothing probed yet");
        let probe = b.try_acquire().expect("the cool-down is over");
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire().is_none(), "only one probe at a time");
        assert!(!b.is_available());
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        let next = b.try_acquire().expect("closed again");
        assert!(!next.is_probe());
        next.success();
    }

    #[test]
    fn a_failed_probe_opens_for_another_cool_down() {
        let (b, clock) = breaker(2, 5);
        fail(&b, 2);
        clock.advance(Duration::from_secs(5));
        b.try_acquire().expect("probe").failure();
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_millis(4_999));
        assert!(b.try_acquire().is_none());
        clock.advance(Duration::from_millis(1));
        assert!(b.try_acquire().expect("second probe").is_probe());
    }

    #[test]
    fn a_dropped_probe_lets_the_next_call_probe() {
        let (b, clock) = breaker(1, 1);
        fail(&b, 1);
        clock.advance(Duration::from_secs(1));
        drop(b.try_acquire().expect("probe"));
        assert_eq!(b.state(), BreakerState::Open);
        let again = b.try_acquire().expect("a new probe, without waiting again");
        assert!(again.is_probe());
    }

    #[test]
    fn a_late_success_does_not_close_an_open_breaker() {
        let (b, clock) = breaker(1, 10);
        // Admitted while closed; it will answer well after the breaker opens.
        let straggler = b.try_acquire().expect("closed");
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        straggler.success();
        assert_eq!(b.state(), BreakerState::Open, "the straggler does not close it");
        assert!(b.try_acquire().is_none(), "and calls are still refused");

        // The probe decides.
        clock.advance(Duration::from_secs(10));
        let probe = b.try_acquire().expect("probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_late_success_does_not_decide_for_a_running_probe() {
        let (b, clock) = breaker(1, 10);
        let straggler = b.try_acquire().expect("closed");
        fail(&b, 1);
        clock.advance(Duration::from_secs(10));
        let probe = b.try_acquire().expect("probe");
        straggler.success();
        assert_eq!(b.state(), BreakerState::HalfOpen, "only the probe decides");
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_late_failure_does_not_reopen_a_breaker_the_probe_closed() {
        let (b, clock) = breaker(1, 10);
        let straggler = b.try_acquire().expect("closed");
        fail(&b, 1);
        clock.advance(Duration::from_secs(10));
        b.try_acquire().expect("probe").success();
        assert_eq!(b.state(), BreakerState::Closed);
        straggler.failure();
        assert_eq!(b.state(), BreakerState::Closed, "a failure from before the probe");
    }

    #[test]
    fn a_bypassing_call_counts_only_while_closed() {
        let (b, clock) = breaker(2, 10);
        b.bypass().failure();
        b.bypass().failure();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "bypassing failures count while closed"
        );
        b.bypass().success();
        assert_eq!(b.state(), BreakerState::Open, "its success does not close");
        clock.advance(Duration::from_secs(10));
        let probe = b.try_acquire().expect("probe");
        b.bypass().success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    fn client_error() -> BackendError {
        BackendError::client("t", "connection reset")
    }

    fn key_error() -> BackendError {
        BackendError::key(
            "t",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        )
    }

    fn refused() -> BackendError {
        BackendError::Refused {
            tier: "t".into(),
            reason: "too large",
        }
    }

    #[test]
    fn a_per_key_error_does_not_open_the_breaker_and_resets_the_count() {
        let (b, _) = breaker(2, 10);
        for _ in 0..10 {
            b.try_acquire().expect("closed").record::<()>(&Err(key_error()));
        }
        assert_eq!(b.state(), BreakerState::Closed, "per-key errors do not open it");
        // The tier answered: the run of failures starts again.
        b.try_acquire()
            .expect("closed")
            .record::<()>(&Err(client_error()));
        b.try_acquire().expect("closed").record::<()>(&Err(key_error()));
        b.try_acquire()
            .expect("closed")
            .record::<()>(&Err(client_error()));
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire()
            .expect("closed")
            .record::<()>(&Err(client_error()));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_refused_value_neither_counts_nor_resets() {
        let (b, _) = breaker(2, 10);
        for _ in 0..10 {
            b.try_acquire().expect("closed").record::<()>(&Err(refused()));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire()
            .expect("closed")
            .record::<()>(&Err(client_error()));
        b.try_acquire().expect("closed").record::<()>(&Err(refused()));
        b.try_acquire()
            .expect("closed")
            .record::<()>(&Err(client_error()));
        assert_eq!(b.state(), BreakerState::Open, "the count was not reset");
        let encode = BackendError::Encode {
            tier: "t".into(),
            source: crate::CodecError::Payload("bad".into()),
        };
        assert!(!encode.is_tier_failure());
        assert!(!refused().is_tier_failure());
        assert!(!key_error().is_tier_failure());
        assert!(client_error().is_tier_failure());
        assert!(BackendError::Unavailable { tier: "t".into() }.is_tier_failure());
    }

    #[test]
    fn a_probe_answered_with_a_per_key_error_closes_and_a_refused_one_is_released() {
        let (b, clock) = breaker(1, 10);
        fail(&b, 1);
        clock.advance(Duration::from_secs(10));
        b.try_acquire().expect("probe").record::<()>(&Err(refused()));
        assert_eq!(b.state(), BreakerState::Open, "released, not decided");
        let next = b.try_acquire().expect("the next call probes at once");
        assert!(next.is_probe());
        next.record::<()>(&Err(key_error()));
        assert_eq!(b.state(), BreakerState::Closed, "the tier answered the probe");
    }

    #[test]
    fn a_zero_threshold_turns_the_breaker_off() {
        let (b, _) = breaker(0, 10);
        fail(&b, 100);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.is_available());
        b.try_acquire().expect("never refused").success();
    }
}
