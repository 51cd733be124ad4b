//! Time, as the cache sees it.
//!
//! Every freshness decision takes "now" from a [`Clock`] so that tests can
//! drive time by hand ([`ManualClock`]) and production code can be protected
//! from the wall clock jumping around ([`SystemClock`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point in time: milliseconds since the Unix epoch.
///
/// Milliseconds are precise enough for cache lifetimes (Redis `PX` works in
/// milliseconds too) and fit in eight bytes of entry metadata.
///
/// ```
/// use std::time::Duration;
/// use hitbox_core::Timestamp;
///
/// let start = Timestamp::from_millis(1_000);
/// let later = start.add(Duration::from_secs(2));
/// assert_eq!(later.since(start), Duration::from_secs(2));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The timestamp `duration` later, saturating at the end of time (the
    /// same as `self + duration`; kept as a method so no import is needed).
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// The time from `self` until `later`, or zero when `later` has passed.
    pub fn until(self, later: Timestamp) -> Duration {
        later.since(self)
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    /// Saturates at the end of time instead of overflowing.
    fn add(self, duration: Duration) -> Timestamp {
        Timestamp::add(self, duration)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp(millis)
    }
}

/// A source of "now".
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// A clock shared between the engine, its tiers and the tests that drive it.
pub type SharedClock = Arc<dyn Clock>;

/// The production clock: wall time that never jumps.
///
/// It reads the wall clock once, when it is created, and from then on adds
/// the time measured by the monotonic clock ([`Instant`]). If the system
/// clock is later stepped backwards (or forwards) by NTP or an operator,
/// entries neither become immortal nor expire all at once.
///
/// ```
/// use hitbox_core::{Clock, SystemClock};
///
/// let clock = SystemClock::new();
/// assert!(clock.now().as_millis() > 0);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    anchor_wall: Timestamp,
    anchor_instant: Instant,
}

impl SystemClock {
    /// A clock anchored at the current wall time.
    pub fn new() -> Self {
        SystemClock {
            anchor_wall: Timestamp::from(SystemTime::now()),
            anchor_instant: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        self.anchor_wall.add(self.anchor_instant.elapsed())
    }
}

/// A clock that moves only when told to: for tests.
///
/// Clones share the same time, so a test can keep one handle and give
/// another to the cache.
///
/// ```
/// use std::time::Duration;
/// use hitbox_core::{Clock, ManualClock, Timestamp};
///
/// let clock = ManualClock::at(Timestamp::from_millis(1_000));
/// clock.advance(Duration::from_millis(500));
/// assert_eq!(clock.now(), Timestamp::from_millis(1_500));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock set to a fixed, arbitrary date (2024-01-01T00:00:00Z).
    pub fn new() -> Self {
        Self::at(Timestamp::from_millis(1_704_067_200_000))
    }

    /// A clock set to `time`.
    pub fn at(time: Timestamp) -> Self {
        ManualClock {
            millis: Arc::new(AtomicU64::new(time.as_millis())),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to any time, earlier ones included (a wall-clock jump).
    pub fn set(&self, time: Timestamp) {
        self.millis.store(time.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.add(Duration::from_secs(1)).as_millis(), 2_000);
        assert_eq!(t + Duration::from_secs(1), t.add(Duration::from_secs(1)));
        assert_eq!(t.since(Timestamp::from_millis(2_000)), Duration::ZERO);
        assert_eq!(
            t.until(Timestamp::from_millis(2_500)),
            Duration::from_millis(1_500)
        );
        assert_eq!(
            Timestamp::from_millis(u64::MAX - 1)
                .add(Duration::MAX)
                .as_millis(),
            u64::MAX
        );
    }

    #[test]
    fn system_clock_follows_wall_time_and_never_goes_back() {
        let clock = SystemClock::new();
        let wall = Timestamp::from(SystemTime::now());
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(a.since(wall) < Duration::from_secs(5) && wall.since(a) < Duration::from_secs(5));
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::at(Timestamp::from_millis(10));
        let other = clock.clone();
        other.advance(Duration::from_millis(5));
        assert_eq!(clock.now().as_millis(), 15);
        clock.set(Timestamp::from_millis(3));
        assert_eq!(other.now().as_millis(), 3);
    }
}
