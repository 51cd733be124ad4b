//! Hit-for-pass: remembering, for a while, the keys whose last response
//! could not be stored, so that their requests go straight to the origin
//! instead of lining up behind a load that will store nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hitbox_core::{CacheKey, SharedClock, Timestamp};

/// At most this many keys are remembered as uncacheable; past it, expired
/// ones are dropped, and if that is not enough, all of them.
const MAX_REMEMBERED_PASSES: usize = 10_000;

/// The keys remembered as uncacheable, each until a deadline on the
/// cache's clock.
pub(crate) struct HitForPass {
    clock: SharedClock,
    duration: Duration,
    passes: Mutex<HashMap<CacheKey, Timestamp>>,
    /// How many keys are remembered: most caches remember none, and then a
    /// lookup takes no lock.
    count: AtomicUsize,
}

impl HitForPass {
    /// Remembers keys for `duration` (zero: never).
    pub fn new(clock: SharedClock, duration: Duration) -> Self {
        HitForPass {
            clock,
            duration,
            passes: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
        }
    }

    /// Remembers `key` as uncacheable.
    pub fn remember(&self, key: &CacheKey) {
        if self.duration.is_zero() {
            return;
        }
        let now = self.clock.now();
        let mut passes = self.passes.lock().unwrap_or_else(|p| p.into_inner());
        if passes.len() >= MAX_REMEMBERED_PASSES {
            passes.retain(|_, until| *until > now);
            if passes.len() >= MAX_REMEMBERED_PASSES {
                passes.clear();
            }
        }
        passes.insert(key.clone(), now.add(self.duration));
        self.count.store(passes.len(), Ordering::Relaxed);
    }

    /// Whether `key` is remembered as uncacheable.
    pub fn contains(&self, key: &CacheKey) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let now = self.clock.now();
        let mut passes = self.passes.lock().unwrap_or_else(|p| p.into_inner());
        let remembered = match passes.get(key) {
            Some(until) if *until > now => true,
            Some(_) => {
                passes.remove(key);
                false
            }
            None => false,
        };
        self.count.store(passes.len(), Ordering::Relaxed);
        remembered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hitbox_core::ManualClock;

    #[test]
    fn keys_are_remembered_for_the_duration_only() {
        let clock = ManualClock::new();
        let passes = HitForPass::new(std::sync::Arc::new(clock.clone()), Duration::from_secs(10));
        let key = CacheKey::from_encoded("k");
        assert!(!passes.contains(&key));
        passes.remember(&key);
        assert!(passes.contains(&key));
        clock.advance(Duration::from_secs(10));
        assert!(!passes.contains(&key));
        let never = HitForPass::new(std::sync::Arc::new(clock), Duration::ZERO);
        never.remember(&key);
        assert!(!never.contains(&key));
    }
}
