//! What an entry knows about its own lifetime.
//!
//! Every stored value carries an [`EntryMeta`]: when it was stored, until
//! when it is fresh, until when it may still be served while a refresh runs
//! (stale-while-revalidate), until when it may be served if the origin fails
//! (stale-if-error), and its tags. The tiers keep an entry until the later of
//! the two stale windows ends; the engine decides what to do with it by its
//! [`Freshness`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;

/// How far in the future an entry's `stored_at` may lie before the entry is
/// treated as expired.
///
/// Hosts sharing a tier never agree on the time to the millisecond, so a
/// little skew is tolerated. Beyond it the entry was written by a host whose
/// clock is far off (or ours jumped backwards): trusting it would keep it
/// fresh for as long as the clocks disagree, so it is treated as expired.
pub const CLOCK_SKEW_TOLERANCE: Duration = Duration::from_secs(5);

/// A label shared by entries that are invalidated together.
///
/// ```
/// use hitbox_core::Tag;
///
/// let tag = Tag::new("team:ops");
/// assert_eq!(tag, Tag::from("team:ops"));
/// assert_eq!(tag.as_str(), "team:ops");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Arc<str>);

impl Tag {
    /// A tag with the given name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Tag(name.into())
    }

    /// The tag's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({:?})", &*self.0)
    }
}

impl From<&str> for Tag {
    fn from(name: &str) -> Self {
        Tag::new(name)
    }
}

impl From<String> for Tag {
    fn from(name: String) -> Self {
        Tag::new(name)
    }
}

/// Where an entry stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it.
    Fresh,
    /// Serve it, and refresh it in the background.
    Stale,
    /// Serve it only if loading a new value fails.
    StaleIfError,
    /// Do not serve it.
    Expired,
}

impl Freshness {
    /// Whether this is [`Freshness::Stale`]: past its freshness, inside the
    /// window where it is served while it is refreshed.
    pub fn is_stale(self) -> bool {
        self == Freshness::Stale
    }
}

/// Lifetime and tags of a stored entry.
///
/// Its binary form ([`EntryMeta::encode_into`]) keeps at most 65,535 tags
/// of at most 65,535 bytes each (both lengths are 16-bit): more tags are
/// dropped and a longer tag is cut (at a character boundary) when the entry
/// is written, so such an entry reads back with fewer or shorter tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// When the value was stored.
    pub stored_at: Timestamp,
    /// Until when the value is fresh.
    pub fresh_until: Timestamp,
    /// Until when the value may be served while it is refreshed.
    pub stale_until: Timestamp,
    /// Until when the value may be served if refreshing it fails.
    pub error_until: Timestamp,
    /// The entry's tags.
    pub tags: Vec<Tag>,
}

/// Why bytes could not be read as entry metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The bytes end before the metadata does.
    #[error("entry metadata is truncated")]
    Truncated,
    /// The times are out of order (`stored_at <= fresh_until <= stale_until`,
    /// `fresh_until <= error_until` must hold).
    #[error("entry metadata times are out of order")]
    OutOfOrder,
    /// A tag is not UTF-8.
    #[error("entry tag is not UTF-8")]
    BadTag,
}

impl EntryMeta {
    /// Metadata for a value stored at `stored_at` that is fresh for `ttl`,
    /// with no stale windows and no tags.
    pub fn fresh_for(stored_at: Timestamp, ttl: Duration) -> Self {
        let fresh_until = stored_at.add(ttl);
        EntryMeta {
            stored_at,
            fresh_until,
            stale_until: fresh_until,
            error_until: fresh_until,
            tags: Vec::new(),
        }
    }

    /// The entry's state at `now`.
    pub fn freshness(&self, now: Timestamp) -> Freshness {
        if self.stored_at > now.add(CLOCK_SKEW_TOLERANCE) {
            Freshness::Expired
        } else if now < self.fresh_until {
            Freshness::Fresh
        } else if now < self.stale_until {
            Freshness::Stale
        } else if now < self.error_until {
            Freshness::StaleIfError
        } else {
            Freshness::Expired
        }
    }

    /// The metadata of this entry soft-purged at `now`: no longer fresh
    /// (`fresh_until` moved to `now`), with its stale-while-revalidate and
    /// stale-if-error windows kept at their lengths but counted from `now`,
    /// so that it is served stale while one load refreshes it, and on a
    /// failed load within its grace. An entry that is stale already at
    /// `now` is returned as it is: a purge never lengthens a life.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hitbox_core::{EntryMeta, Freshness, Timestamp};
    ///
    /// let t0 = Timestamp::from_millis(1_000_000);
    /// let mut meta = EntryMeta::fresh_for(t0, Duration::from_secs(60));
    /// meta.stale_until = meta.fresh_until.add(Duration::from_secs(30));
    /// let purged = meta.purged(t0.add(Duration::from_secs(10)));
    /// assert_eq!(purged.freshness(t0.add(Duration::from_secs(10))), Freshness::Stale);
    /// assert_eq!(purged.stale_until, t0.add(Duration::from_secs(40)));
    /// // Purging again changes nothing.
    /// assert_eq!(purged.purged(t0.add(Duration::from_secs(20))), purged);
    /// ```
    pub fn purged(&self, now: Timestamp) -> EntryMeta {
        if now >= self.fresh_until {
            return self.clone();
        }
        // `now` before `stored_at` (a clock behind the writer's) still
        // gives times in order.
        let from = now.max(self.stored_at);
        let swr = self.fresh_until.until(self.stale_until);
        let sie = self.fresh_until.until(self.error_until);
        EntryMeta {
            stored_at: self.stored_at,
            fresh_until: from,
            stale_until: from.add(swr),
            error_until: from.add(sie),
            tags: self.tags.clone(),
        }
    }

    /// When a tier may drop the entry: the end of the later stale window.
    pub fn expires_at(&self) -> Timestamp {
        self.stale_until.max(self.error_until)
    }

    /// How long a tier must keep the entry, counted from `now`.
    pub fn time_to_expiry(&self, now: Timestamp) -> Duration {
        now.until(self.expires_at())
    }

    /// How much freshness is left at `now` (zero once stale).
    pub fn time_to_stale(&self, now: Timestamp) -> Duration {
        now.until(self.fresh_until)
    }

    /// The entry's age at `now` (zero if it was stored "later").
    pub fn age(&self, now: Timestamp) -> Duration {
        now.since(self.stored_at)
    }

    /// Whether the entry carries `tag`.
    pub fn has_tag(&self, tag: &Tag) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// The number of bytes [`EntryMeta::encode_into`] writes.
    pub fn encoded_len(&self) -> usize {
        32 + 2
            + self
                .tags
                .iter()
                .map(|t| 2 + t.as_str().len().min(MAX_TAG_LEN))
                .sum::<usize>()
    }

    /// Appends the binary form: four big-endian `u64` times (stored, fresh,
    /// stale, error), a big-endian `u16` tag count, then each tag as a `u16`
    /// length and its UTF-8 bytes. Tags longer than 65,535 bytes are cut at
    /// a character boundary; more than 65,535 tags are cut to that many.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        for time in [
            self.stored_at,
            self.fresh_until,
            self.stale_until,
            self.error_until,
        ] {
            out.extend_from_slice(&time.as_millis().to_be_bytes());
        }
        let tags = &self.tags[..self.tags.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(tags.len() as u16).to_be_bytes());
        for tag in tags {
            let name = truncate_utf8(tag.as_str(), MAX_TAG_LEN);
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
        }
    }

    /// Reads the binary form from the front of `bytes`, returning the
    /// metadata and the number of bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(EntryMeta, usize), MetaError> {
        let mut cursor = Cursor { bytes, pos: 0 };
        let stored_at = Timestamp::from_millis(cursor.u64()?);
        let fresh_until = Timestamp::from_millis(cursor.u64()?);
        let stale_until = Timestamp::from_millis(cursor.u64()?);
        let error_until = Timestamp::from_millis(cursor.u64()?);
        if stored_at > fresh_until || fresh_until > stale_until || fresh_until > error_until {
            return Err(MetaError::OutOfOrder);
        }
        let count = cursor.u16()?;
        let mut tags = Vec::with_capacity(usize::from(count).min(64));
        for _ in 0..count {
            let len = usize::from(cursor.u16()?);
            let raw = cursor.take(len)?;
            let name = std::str::from_utf8(raw).map_err(|_| MetaError::BadTag)?;
            tags.push(Tag::new(name));
        }
        let meta = EntryMeta {
            stored_at,
            fresh_until,
            stale_until,
            error_until,
            tags,
        };
        Ok((meta, cursor.pos))
    }
}

const MAX_TAG_LEN: usize = u16::MAX as usize;

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], MetaError> {
        let end = self.pos.checked_add(len).ok_or(MetaError::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(MetaError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn u64(&mut self) -> Result<u64, MetaError> {
        let raw = self.take(8)?;
        Ok(u64::from_be_bytes(raw.try_into().expect("eight bytes")))
    }

    fn u16(&mut self) -> Result<u16, MetaError> {
        let raw = self.take(2)?;
        Ok(u16::from_be_bytes(raw.try_into().expect("two bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EntryMeta {
        let t0 = Timestamp::from_millis(1_704_067_200_000);
        EntryMeta {
            stored_at: t0,
            fresh_until: t0.add(Duration::from_secs(60)),
            stale_until: t0.add(Duration::from_secs(90)),
            error_until: t0.add(Duration::from_secs(300)),
            tags: vec![Tag::from("users"), Tag::from("tenant:acme")],
        }
    }

    #[test]
    fn freshness_walks_through_every_window() {
        let m = meta();
        let t0 = m.stored_at;
        assert_eq!(m.freshness(t0), Freshness::Fresh);
        assert_eq!(
            m.freshness(t0.add(Duration::from_millis(59_999))),
            Freshness::Fresh
        );
        assert_eq!(m.freshness(t0.add(Duration::from_secs(60))), Freshness::Stale);
        assert_eq!(
            m.freshness(t0.add(Duration::from_secs(90))),
            Freshness::StaleIfError
        );
        assert_eq!(m.freshness(t0.add(Duration::from_secs(300))), Freshness::Expired);
        assert_eq!(m.expires_at(), t0.add(Duration::from_secs(300)));
        assert_eq!(
            m.time_to_stale(t0.add(Duration::from_secs(18))),
            Duration::from_secs(42)
        );
    }

    #[test]
    fn a_backwards_clock_jump_does_not_make_entries_immortal() {
        let m = meta();
        // Small skew between hosts is tolerated...
        let slightly_behind = Timestamp::from_millis(m.stored_at.as_millis() - 2_000);
        assert_eq!(m.freshness(slightly_behind), Freshness::Fresh);
        // ...but an entry from far in "the future" is not trusted.
        let an_hour_behind = Timestamp::from_millis(m.stored_at.as_millis() - 3_600_000);
        assert_eq!(m.freshness(an_hour_behind), Freshness::Expired);
        assert_eq!(m.age(an_hour_behind), Duration::ZERO);
    }

    #[test]
    fn a_purge_makes_a_fresh_entry_stale_with_its_grace_counted_from_now() {
        let m = meta();
        let t0 = m.stored_at;
        let at = t0.add(Duration::from_secs(20));
        let purged = m.purged(at);
        assert_eq!(purged.freshness(at), Freshness::Stale);
        assert_eq!(purged.fresh_until, at);
        assert_eq!(purged.stale_until, at.add(Duration::from_secs(30)));
        assert_eq!(purged.error_until, at.add(Duration::from_secs(240)));
        assert_eq!(purged.tags, m.tags);
        assert_eq!(
            purged.freshness(at.add(Duration::from_secs(30))),
            Freshness::StaleIfError
        );
        // Stale already: untouched, never lengthened.
        let late = t0.add(Duration::from_secs(70));
        assert_eq!(m.purged(late), m);
        // A clock behind the writer's keeps the times in order.
        let behind = m.purged(Timestamp::from_millis(t0.as_millis() - 1_000));
        assert_eq!(behind.fresh_until, t0);
        let mut encoded = Vec::new();
        behind.encode_into(&mut encoded);
        assert_eq!(EntryMeta::decode(&encoded).unwrap().0, behind);
    }

    #[test]
    fn binary_form_round_trips() {
        let m = meta();
        let mut buf = vec![0xAA];
        m.encode_into(&mut buf);
        buf.extend_from_slice(b"payload");
        assert_eq!(buf.len(), 1 + m.encoded_len() + 7);
        let (decoded, used) = EntryMeta::decode(&buf[1..]).unwrap();
        assert_eq!(decoded, m);
        assert_eq!(&buf[1 + used..], b"payload");
    }

    #[test]
    fn truncated_and_corrupt_metadata_is_an_error() {
        let m = meta();
        let mut buf = Vec::new();
        m.encode_into(&mut buf);
        for len in 0..buf.len() {
            assert_eq!(
                EntryMeta::decode(&buf[..len]).unwrap_err(),
                MetaError::Truncated,
                "len {len}"
            );
        }
        let mut swapped = buf.clone();
        swapped[8..16].copy_from_slice(&0u64.to_be_bytes());
        assert_eq!(EntryMeta::decode(&swapped).unwrap_err(), MetaError::OutOfOrder);
        let mut bad_tag = buf.clone();
        let tag_start = 32 + 2 + 2;
        bad_tag[tag_start] = 0xFF;
        assert_eq!(EntryMeta::decode(&bad_tag).unwrap_err(), MetaError::BadTag);
        let mut huge_count = buf;
        huge_count[32..34].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(EntryMeta::decode(&huge_count).unwrap_err(), MetaError::Truncated);
    }
}
