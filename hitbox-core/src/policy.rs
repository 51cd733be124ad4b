//! How long to cache: policies, presets and per-entry options.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::meta::{EntryMeta, Tag};

/// How long a new entry stays fresh and how long it may be served stale.
///
/// ```
/// use std::time::Duration;
/// use hitbox_core::CachePolicy;
///
/// let policy = CachePolicy::new(Duration::from_secs(30))
///     .stale_while_revalidate(Duration::from_secs(30))
///     .stale_if_error(Duration::from_secs(600));
/// assert_eq!(policy.ttl(), Duration::from_secs(30));
///
/// // Or pick a preset and forget about numbers.
/// let preset = CachePolicy::short_term();
/// assert!(preset.ttl() < CachePolicy::long_term().ttl());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    ttl: Duration,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
}

impl CachePolicy {
    /// Fresh for `ttl`, with no stale windows.
    pub const fn new(ttl: Duration) -> Self {
        CachePolicy {
            ttl,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        }
    }

    /// Data that changes every moment but can be shared for a second:
    /// fresh 1 s, no stale-while-revalidate, stale-if-error 10 s.
    pub const fn real_time() -> Self {
        CachePolicy {
            ttl: Duration::from_secs(1),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::from_secs(10),
        }
    }

    /// Data that changes often: fresh 1 min, stale-while-revalidate 1 min,
    /// stale-if-error 10 min.
    pub const fn short_term() -> Self {
        CachePolicy {
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(600),
        }
    }

    /// Data that rarely changes: fresh 1 h, stale-while-revalidate 10 min,
    /// stale-if-error 1 day.
    pub const fn long_term() -> Self {
        CachePolicy {
            ttl: Duration::from_secs(3_600),
            stale_while_revalidate: Duration::from_secs(600),
            stale_if_error: Duration::from_secs(86_400),
        }
    }

    /// Data that never changes once published (versioned assets): fresh
    /// 1 day, stale-while-revalidate 1 day, stale-if-error 7 days.
    pub const fn immutable() -> Self {
        CachePolicy {
            ttl: Duration::from_secs(86_400),
            stale_while_revalidate: Duration::from_secs(86_400),
            stale_if_error: Duration::from_secs(7 * 86_400),
        }
    }

    /// Sets how long an entry is fresh.
    pub const fn ttl_of(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets how long after it goes stale an entry may be served while it is
    /// refreshed in the background.
    pub const fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// Sets how long after it goes stale an entry may be served when
    /// refreshing it fails.
    pub const fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// How long an entry is fresh.
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The stale-while-revalidate window.
    pub const fn stale_while_revalidate_window(&self) -> Duration {
        self.stale_while_revalidate
    }

    /// The stale-if-error window.
    pub const fn stale_if_error_window(&self) -> Duration {
        self.stale_if_error
    }

    /// This policy with the overrides of `options` applied.
    pub fn with_overrides(mut self, options: &EntryOptions) -> Self {
        if let Some(ttl) = options.ttl {
            self.ttl = ttl;
        }
        if let Some(window) = options.stale_while_revalidate {
            self.stale_while_revalidate = window;
        }
        if let Some(window) = options.stale_if_error {
            self.stale_if_error = window;
        }
        self
    }

    /// The metadata of an entry stored at `now` under this policy.
    pub fn entry_meta(&self, now: Timestamp, tags: Vec<Tag>) -> EntryMeta {
        let fresh_until = now.add(self.ttl);
        EntryMeta {
            stored_at: now,
            fresh_until,
            stale_until: fresh_until.add(self.stale_while_revalidate),
            error_until: fresh_until.add(self.stale_if_error),
            tags,
        }
    }
}

impl Default for CachePolicy {
    /// The [`CachePolicy::short_term`] preset.
    fn default() -> Self {
        CachePolicy::short_term()
    }
}

/// What one call does with the cache.
///
/// ```
/// use hitbox_core::{EntryOptions, Strategy};
///
/// let reload = EntryOptions::new().strategy(Strategy::Refresh);
/// assert_eq!(reload.strategy_of(), Strategy::Refresh);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Serve from the cache; load and store on a miss.
    #[default]
    UseCache,
    /// Load, and overwrite whatever is stored.
    Refresh,
    /// Remove the stored entry, then load without storing.
    Invalidate,
    /// Load without reading or writing the cache.
    Bypass,
}

/// Per-call options: overrides of the policy, tags and strategy.
///
/// ```
/// use std::time::Duration;
/// use hitbox_core::{EntryOptions, Strategy};
///
/// let options = EntryOptions::new()
///     .ttl(Duration::from_secs(5))
///     .tag("users")
///     .tag("tenant:acme")
///     .strategy(Strategy::Refresh);
/// assert_eq!(options.tags().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryOptions {
    ttl: Option<Duration>,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
    tags: Vec<Tag>,
    strategy: Strategy,
}

impl EntryOptions {
    /// No overrides, no tags, [`Strategy::UseCache`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Overrides the time to live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Overrides the stale-while-revalidate window.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// Overrides the stale-if-error window.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<Tag>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the strategy for this call.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The tags.
    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }

    /// The strategy.
    pub fn strategy_of(&self) -> Strategy {
        self.strategy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Freshness;

    #[test]
    fn policy_builds_every_window() {
        let now = Timestamp::from_millis(10_000);
        let meta = CachePolicy::new(Duration::from_secs(10))
            .stale_while_revalidate(Duration::from_secs(5))
            .stale_if_error(Duration::from_secs(20))
            .entry_meta(now, vec![Tag::from("t")]);
        assert_eq!(meta.fresh_until, Timestamp::from_millis(20_000));
        assert_eq!(meta.stale_until, Timestamp::from_millis(25_000));
        assert_eq!(meta.error_until, Timestamp::from_millis(40_000));
        assert_eq!(meta.tags, vec![Tag::from("t")]);
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let base = CachePolicy::long_term();
        let options = EntryOptions::new().ttl(Duration::from_secs(1));
        let merged = base.with_overrides(&options);
        assert_eq!(merged.ttl(), Duration::from_secs(1));
        assert_eq!(
            merged.stale_while_revalidate_window(),
            base.stale_while_revalidate_window()
        );
        assert_eq!(merged.stale_if_error_window(), base.stale_if_error_window());
    }

    #[test]
    fn presets_are_ordered_and_usable() {
        let now = Timestamp::from_millis(0);
        for preset in [
            CachePolicy::real_time(),
            CachePolicy::short_term(),
            CachePolicy::long_term(),
            CachePolicy::immutable(),
        ] {
            let meta = preset.entry_meta(now, Vec::new());
            assert_eq!(meta.freshness(now), Freshness::Fresh);
            assert_eq!(meta.freshness(meta.expires_at()), Freshness::Expired);
        }
        assert!(CachePolicy::real_time().ttl() < CachePolicy::short_term().ttl());
        assert!(CachePolicy::long_term().ttl() < CachePolicy::immutable().ttl());
    }
}
