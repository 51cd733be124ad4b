//! The circuit breaker that keeps a dead Redis from slowing every request.
//!
//! The breaker counts consecutive failures (timeouts and connection errors).
//! At [`BreakerConfig::failure_threshold`] it opens: every operation is
//! refused at once with [`BackendError::Unavailable`](hitbox_backend::BackendError)
//! without touching Redis. After [`BreakerConfig::cool_down`] the next
//! operation goes through as a probe (the breaker is half-open: the others
//! are still refused while it runs). A probe that succeeds closes the
//! breaker; one that fails opens it for another cool-down.
//!
//! Time is read from [`tokio::time::Instant`], so tests drive the cool-down
//! with Tokio's paused clock instead of sleeping.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The default number of consecutive failures that opens the breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;

/// The default time the breaker stays open before it lets a probe through.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(1);

/// How the circuit breaker behaves; see the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 5). Zero turns
    /// the breaker off: every operation then goes to Redis.
    pub failure_threshold: u32,
    /// How long the breaker stays open before one probe is let through
    /// (default 1 s).
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

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Operations go to Redis.
    Closed,
    /// Operations are refused without touching Redis.
    Open,
    /// One probe is running; the other operations are refused until it ends.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// A circuit breaker shared by every operation of one backend.
#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

/// The breaker refused the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejected;

/// The right to run one operation. Report its outcome with
/// [`Permit::success`] or [`Permit::failure`]; a permit dropped without an
/// outcome (the caller gave up on the operation) counts for nothing, except
/// that an abandoned probe lets the next operation probe again.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where the breaker stands now. An open breaker whose cool-down is
    /// over still reads as open until an operation probes.
    pub(crate) fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Asks to run one operation.
    pub(crate) fn acquire(&self) -> Result<Permit<'_>, Rejected> {
        if self.config.failure_threshold == 0 {
            return Ok(self.permit(false));
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(self.permit(false)),
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                tracing::info!("redis circuit breaker half-open: probing");
                Ok(self.permit(true))
            }
            State::Open { .. } | State::HalfOpen => Err(Rejected),
        }
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            settled: false,
        }
    }

    fn succeeded(&self, probe: bool) {
        if self.config.failure_threshold == 0 {
            return;
        }
        let mut state = self.lock();
        match *state {
            State::Closed { failures: 0 } => {}
            State::Closed { .. } => *state = State::Closed { failures: 0 },
            State::HalfOpen if probe => {
                *state = State::Closed { failures: 0 };
                tracing::info!("redis circuit breaker closed: the probe succeeded");
            }
            // An operation started before the breaker opened ended well
            // after it did: the probe decides, not this late answer.
            State::HalfOpen | State::Open { .. } => {}
        }
    }

    fn failed(&self, probe: bool) {
        if self.config.failure_threshold == 0 {
            return;
        }
        let mut state = self.lock();
        let until = Instant::now() + self.config.cool_down;
        match *state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    *state = State::Open { until };
                    tracing::warn!(
                        failures,
                        cool_down = ?self.config.cool_down,
                        "redis circuit breaker open: operations are refused until a probe succeeds"
                    );
                } else {
                    *state = State::Closed { failures };
                }
            }
            State::HalfOpen if probe => {
                *state = State::Open { until };
                tracing::warn!(cool_down = ?self.config.cool_down, "redis circuit breaker probe failed");
            }
            State::HalfOpen | State::Open { .. } => {}
        }
    }

    fn abandoned(&self, probe: bool) {
        if !probe {
            return;
        }
        let mut state = self.lock();
        if let State::HalfOpen = *state {
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }
}

impl Permit<'_> {
    /// Whether this operation is the probe of a half-open breaker.
    #[cfg(test)]
    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }

    /// The operation reached Redis and got an answer.
    pub(crate) fn success(mut self) {
        self.settled = true;
        self.breaker.succeeded(self.probe);
    }

    /// The operation timed out or could not reach Redis.
    pub(crate) fn failure(mut self) {
        self.settled = true;
        self.breaker.failed(self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.abandoned(self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, cool_down_ms: u64) -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: threshold,
            cool_down: Duration::from_millis(cool_down_ms),
        })
    }

    fn fail(breaker: &Breaker, times: u32) {
        for _ in 0..times {
            breaker.acquire().expect("the breaker is closed").failure();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_of_consecutive_failures() {
        let b = breaker(3, 1_000);
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.acquire().err(), Some(Rejected));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = breaker(3, 1_000);
        fail(&b, 2);
        b.acquire().expect("closed").success();
        fail(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cool_down_one_probe_goes_through_and_its_success_closes() {
        let b = breaker(1, 1_000);
        fail(&b, 1);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(b.acquire().err(), Some(Rejected), "still cooling down");
        tokio::time::advance(Duration::from_millis(1)).await;
        let probe = b.acquire().expect("the cool-down is over");
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.acquire().err(), Some(Rejected), "only one probe at a time");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        let next = b.acquire().expect("closed again");
        assert!(!next.is_probe());
        next.success();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_for_another_cool_down() {
        let b = breaker(2, 500);
        fail(&b, 2);
        tokio::time::advance(Duration::from_millis(500)).await;
        b.acquire().expect("probe").failure();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(499)).await;
        assert_eq!(b.acquire().err(), Some(Rejected));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.acquire().expect("second probe").is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_operation_probe() {
        let b = breaker(1, 100);
        fail(&b, 1);
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(b.acquire().expect("probe"));
        assert_eq!(b.state(), BreakerState::Open);
        let again = b.acquire().expect("a new probe, without waiting again");
        assert!(again.is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn late_answers_do_not_decide_for_the_probe() {
        let b = breaker(1, 100);
        let slow = b.acquire().expect("closed");
        fail(&b, 1);
        tokio::time::advance(Duration::from_millis(100)).await;
        let probe = b.acquire().expect("probe");
        slow.success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_threshold_turns_the_breaker_off() {
        let b = breaker(0, 100);
        fail(&b, 100);
        assert_eq!(b.state(), BreakerState::Closed);
        b.acquire().expect("never refused").success();
    }
}
