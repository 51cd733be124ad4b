//! [`PendingInvalidations`]: what an outage kept from a shared tier.
//!
//! Why it exists: an invalidation that does not reach a shared tier (Redis,
//! the cachekit.io service) because the tier is down, or because its
//! breaker refused the call, leaves the entry there. When the tier comes
//! back it would serve what was invalidated, for as long as the entry
//! lives. A tier that can go down records such invalidations here, and
//! replays them before it serves anything once it is reachable again:
//!
//! 1. a removal or a tag invalidation fails with a [tier
//!    failure](crate::BackendError::is_tier_failure): remember it
//!    ([`remember_key`](PendingInvalidations::remember_key),
//!    [`remember_tag`](PendingInvalidations::remember_tag)); so is the key
//!    of a write that timed out, since the tier may still carry it out;
//! 2. every later call that the breaker lets through first checks
//!    [`is_empty`](PendingInvalidations::is_empty) (one atomic load), and
//!    when something waits, takes a [`snapshot`](PendingInvalidations::snapshot),
//!    deletes those keys and invalidates those tags, and reports them
//!    [`replayed`](PendingInvalidations::replayed); a replay that fails fails
//!    the call, so the tier serves nothing until it succeeded.
//!
//! The record is bounded; past its limits an invalidation is counted as
//! [lost](PendingInvalidations::lost) and logged.
//!
//! ```
//! use hitbox_backend::PendingInvalidations;
//! use hitbox_core::Tag;
//!
//! let pending = PendingInvalidations::new();
//! assert!(pending.is_empty());
//! pending.remember_key("users:1");
//! pending.remember_tag(&Tag::from("team:7"));
//! let replay = pending.snapshot();
//! assert_eq!((replay.keys.len(), replay.tags.len()), (1, 1));
//! // ... delete replay.keys, invalidate replay.tags, then:
//! pending.replayed(&replay);
//! assert!(pending.is_empty());
//! ```

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hitbox_core::Tag;

/// The default limit on keys waiting for replay.
pub const DEFAULT_MAX_PENDING_KEYS: usize = 100_000;

/// The default limit on tags waiting for replay.
pub const DEFAULT_MAX_PENDING_TAGS: usize = 10_000;

/// Invalidations an outage kept from a tier; see the [module
/// documentation](self).
#[derive(Debug)]
pub struct PendingInvalidations {
    sets: Mutex<Sets>,
    waiting: AtomicBool,
    lost: AtomicU64,
    max_keys: usize,
    max_tags: usize,
}

#[derive(Debug, Default)]
struct Sets {
    keys: HashSet<String>,
    tags: HashSet<Tag>,
}

/// What waits to be replayed, taken by [`PendingInvalidations::snapshot`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The keys to delete, as the tier names them.
    pub keys: Vec<String>,
    /// The tags to invalidate.
    pub tags: Vec<Tag>,
}

impl Default for PendingInvalidations {
    fn default() -> Self {
        Self::new()
    }
}

impl PendingInvalidations {
    /// An empty record with the default limits
    /// ([`DEFAULT_MAX_PENDING_KEYS`], [`DEFAULT_MAX_PENDING_TAGS`]).
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_PENDING_KEYS, DEFAULT_MAX_PENDING_TAGS)
    }

    /// An empty record holding at most `max_keys` keys and `max_tags` tags.
    pub fn with_limits(max_keys: usize, max_tags: usize) -> Self {
        PendingInvalidations {
            sets: Mutex::new(Sets::default()),
            waiting: AtomicBool::new(false),
            lost: AtomicU64::new(0),
            max_keys,
            max_tags,
        }
    }

    fn sets(&self) -> std::sync::MutexGuard<'_, Sets> {
        self.sets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers that `key` (as the tier names it) must be deleted. Returns
    /// `false`, and counts it as lost, when the record is full.
    pub fn remember_key(&self, key: &str) -> bool {
        let mut sets = self.sets();
        if sets.keys.contains(key) {
            return true;
        }
        if sets.keys.len() >= self.max_keys {
            drop(sets);
            return self.lose("key");
        }
        sets.keys.insert(key.to_owned());
        self.waiting.store(true, Ordering::Release);
        true
    }

    /// Remembers that `tag` must be invalidated. Returns `false`, and
    /// counts it as lost, when the record is full.
    pub fn remember_tag(&self, tag: &Tag) -> bool {
        let mut sets = self.sets();
        if sets.tags.contains(tag) {
            return true;
        }
        if sets.tags.len() >= self.max_tags {
            drop(sets);
            return self.lose("tag");
        }
        sets.tags.insert(tag.clone());
        self.waiting.store(true, Ordering::Release);
        true
    }

    fn lose(&self, what: &str) -> bool {
        self.lost.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            what,
            "too many invalidations wait for a tier to return; one is lost"
        );
        false
    }

    /// Whether nothing waits: one atomic load, for every call's fast path.
    pub fn is_empty(&self) -> bool {
        !self.waiting.load(Ordering::Acquire)
    }

    /// How many keys and tags wait.
    pub fn len(&self) -> usize {
        let sets = self.sets();
        sets.keys.len() + sets.tags.len()
    }

    /// Invalidations that could not be remembered because the record was
    /// full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// What waits now. It stays recorded until [`replayed`](Self::replayed).
    pub fn snapshot(&self) -> Replay {
        let sets = self.sets();
        Replay {
            keys: sets.keys.iter().cloned().collect(),
            tags: sets.tags.iter().cloned().collect(),
        }
    }

    /// Forgets what `replay` held, once it reached the tier. What was
    /// remembered since the snapshot stays.
    pub fn replayed(&self, replay: &Replay) {
        let mut sets = self.sets();
        for key in &replay.keys {
            sets.keys.remove(key);
        }
        for tag in &replay.tags {
            sets.tags.remove(tag);
        }
        if sets.keys.is_empty() && sets.tags.is_empty() {
            self.waiting.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_forgets_only_what_it_took() {
        let pending = PendingInvalidations::new();
        pending.remember_key("a");
        let replay = pending.snapshot();
        pending.remember_key("b");
        pending.replayed(&replay);
        assert!(!pending.is_empty());
        assert_eq!(pending.snapshot().keys, vec!["b".to_string()]);
        pending.replayed(&pending.snapshot());
        assert!(pending.is_empty());
    }

    #[test]
    fn the_record_is_bounded_and_counts_what_it_loses() {
        let pending = PendingInvalidations::with_limits(2, 1);
        assert!(pending.remember_key("a"));
        assert!(pending.remember_key("b"));
        assert!(pending.remember_key("a"), "already there");
        assert!(!pending.remember_key("c"));
        assert!(pending.remember_tag(&Tag::from("t")));
        assert!(!pending.remember_tag(&Tag::from("u")));
        assert_eq!((pending.len(), pending.lost()), (3, 2));
    }
}
