//! Tag generations: how a tier shared by several processes keeps a load
//! that raced an invalidation in *another* process from storing what it
//! loaded.
//!
//! Why it exists: the engine already discards a load whose key or tags
//! were invalidated through the same [`Cache`](crate::Cache) while it ran
//! (it cancels its own flights). It cannot see an invalidation made by
//! another process over a shared tier (Redis). A tier that can do better
//! keeps a *generation* per tag, which every invalidation of the tag moves
//! on:
//!
//! 1. before a load runs its loader, the engine asks the tier for the
//!    generations of the load's tags ([`Backend::tag_generations`](crate::Backend::tag_generations)), and
//!    keeps the answer, a [`TagGenerations`];
//! 2. when the load is done, the engine stores the value with
//!    [`Backend::write_if_current`](crate::Backend::write_if_current), passing what it kept; the tier refuses
//!    the write, atomically with it, if a generation moved meanwhile.
//!
//! A refused write is no error: the loaded value still goes to its callers,
//! it is just not kept (the engine logs it and counts it in
//! [`CacheStats::stale_loads_discarded`](crate::CacheStats::stale_loads_discarded)).
//!
//! Tiers that keep no generations (in-process ones) answer `None` to the
//! first call and treat the second as a plain write; that is what the
//! trait's default methods do, so nothing changes for them. A composition
//! asks both of its tiers and writes the far one first, so that what the
//! shared tier refuses is not kept in the near one either.

use std::sync::atomic::{AtomicU64, Ordering};

use hitbox_core::Tag;

/// The generations of some tags, as the tiers that keep them reported them
/// when a load started; see the [module documentation](self).
///
/// Each generation is recorded under the *source* that reported it, a
/// number a tier takes once from [`TagGenerations::new_source`], so that the
/// tiers of a composition each find their own.
///
/// ```
/// use hitbox_backend::TagGenerations;
/// use hitbox_core::Tag;
///
/// let redis = TagGenerations::new_source();
/// let mut seen = TagGenerations::new();
/// seen.record(redis, Tag::from("team:7"), 41);
/// assert_eq!(seen.get(redis, &Tag::from("team:7")), Some(41));
/// assert_eq!(seen.get(redis, &Tag::from("team:8")), None);
/// assert_eq!(seen.get(TagGenerations::new_source(), &Tag::from("team:7")), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagGenerations {
    seen: Vec<(u64, Tag, u64)>,
}

impl TagGenerations {
    /// Nothing recorded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A source number no other caller in this process got: a tier that
    /// keeps generations takes one when it is built.
    pub fn new_source() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Records that `source` reported `generation` for `tag` (replacing
    /// what it reported before for that tag).
    pub fn record(&mut self, source: u64, tag: Tag, generation: u64) {
        match self.seen.iter_mut().find(|(s, t, _)| *s == source && *t == tag) {
            Some(entry) => entry.2 = generation,
            None => self.seen.push((source, tag, generation)),
        }
    }

    /// The generation `source` reported for `tag`, if it reported one.
    pub fn get(&self, source: u64, tag: &Tag) -> Option<u64> {
        self.seen
            .iter()
            .find(|(s, t, _)| *s == source && t == tag)
            .map(|(_, _, generation)| *generation)
    }

    /// Every recorded generation: its source, its tag, the generation.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Tag, u64)> {
        self.seen
            .iter()
            .map(|(source, tag, generation)| (*source, tag, *generation))
    }

    /// Adds what `other` recorded.
    pub fn merge(&mut self, other: TagGenerations) {
        for (source, tag, generation) in other.seen {
            self.record(source, tag, generation);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// How many generations were recorded (over every source).
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_keep_their_own_generations() {
        let (a, b) = (TagGenerations::new_source(), TagGenerations::new_source());
        assert_ne!(a, b);
        let tag = Tag::from("t");
        let mut first = TagGenerations::new();
        first.record(a, tag.clone(), 1);
        let mut second = TagGenerations::new();
        second.record(b, tag.clone(), 2);
        second.record(a, tag.clone(), 3);
        first.merge(second);
        assert_eq!(first.get(a, &tag), Some(3), "a later record replaces");
        assert_eq!(first.get(b, &tag), Some(2));
        assert_eq!(first.len(), 2);
        let listed: Vec<(u64, &Tag, u64)> = first.iter().collect();
        assert_eq!(listed, vec![(a, &tag, 3), (b, &tag, 2)]);
        assert!(!first.is_empty() && TagGenerations::new().is_empty());
    }
}
