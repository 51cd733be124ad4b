//! A small circuit breaker: after a run of service failures the backend
//! stops asking cachekit.io for a cool-down, so a dead service costs the
//! engine nothing but a [`BackendError::Unavailable`](hitbox_backend::BackendError).
//!
//! Only failures that say something about the service count (timeouts,
//! transport errors, 5xx that outlived the retries); a 404, a refused key or
//! a quota denial do not. After the cool-down one call goes through as a
//! probe while the others are still refused; its success closes the
//! breaker, its failure opens it again. Time comes from a
//! [`Clock`](hitbox_core::Clock), so tests move it by hand.

use std::sync::Mutex;
use std::time::Duration;

use hitbox_core::{SharedClock, Timestamp};

/// The default run of failures that opens the breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// The default time the breaker stays open.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(10);

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go to the service.
    Closed,
    /// Calls are refused without a request.
    Open,
    /// One probe is in flight; other calls are refused until it ends.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Timestamp },
    HalfOpen,
}

pub(crate) struct Breaker {
    threshold: u32,
    cool_down: Duration,
    clock: SharedClock,
    state: Mutex<State>,
}

/// Whether a call may proceed, and whether it is the half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Go,
    Probe,
    Refused,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cool_down: Duration, clock: SharedClock) -> Self {
        Breaker {
            threshold,
            cool_down,
            clock,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    pub(crate) fn admit(&self) -> Admission {
        if self.threshold == 0 {
            return Admission::Go;
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admission::Go,
            State::HalfOpen => Admission::Refused,
            State::Open { until } => {
                if self.clock.now() >= until {
                    *state = State::HalfOpen;
                    Admission::Probe
                } else {
                    Admission::Refused
                }
            }
        }
    }

    /// Records the end of an admitted call: `failed` says whether the
    /// service failed it.
    pub(crate) fn record(&self, admission: Admission, failed: bool) {
        if self.threshold == 0 || admission == Admission::Refused {
            return;
        }
        let mut state = self.lock();
        let open = State::Open {
            until: self.clock.now().add(self.cool_down),
        };
        *state = match (&*state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::HalfOpen, true) => open,
            (State::Closed { failures }, true) => {
                let failures = failures + 1;
                if failures >= self.threshold {
                    tracing::warn!(failures, "cachekit circuit breaker opened");
                    open
                } else {
                    State::Closed { failures }
                }
            }
            // A call admitted before the breaker opened ends; the breaker
            // stays open.
            (State::Open { until }, true) => State::Open { until: *until },
        };
    }

    /// Releases a probe that ended without a verdict (cancelled).
    pub(crate) fn abandon(&self, admission: Admission) {
        if admission == Admission::Probe {
            let mut state = self.lock();
            if matches!(*state, State::HalfOpen) {
                *state = State::Open {
                    until: self.clock.now(),
                };
            }
        }
    }
}
