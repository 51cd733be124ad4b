//! What this tier stores in memcached, and under which keys.
//!
//! memcached has no sets, so a tag cannot list its entries. Instead each
//! tag has a *generation*: a counter stored under the tag's own key.
//! Invalidating the tag increments it. An entry records, in a small header
//! before the bytes the engine gave, the generation of each of its tags
//! when it was written; a read compares them with the current ones, and an
//! entry whose generations are not all current is a miss.
//!
//! ```text
//! entry  = "HBM1" count:u8 *( len:u16 tag generation:u64 ) payload
//! ```
//!
//! (integers big-endian). A counter that is missing (never created, or
//! evicted) matches no entry: entries of a tag whose counter was evicted
//! read as misses, which is safe. A new counter starts at a fresh random
//! value, so a counter evicted and created again never takes back a value
//! old entries recorded.

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use blake2::{Blake2b, Digest, digest::consts::U32};
use bytes::Bytes;
use hitbox_core::Tag;

/// memcached's limit on a key, in bytes.
pub const MAX_KEY_LEN: usize = 250;

const MAGIC: &[u8; 4] = b"HBM1";

/// Why stored bytes are not an entry of this tier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EntryError {
    #[error("not a hitbox memcached entry (bad magic)")]
    BadMagic,
    #[error("entry header is truncated")]
    Truncated,
    #[error("entry tag is not UTF-8")]
    TagNotUtf8,
}

/// A decoded entry: the tags it was written under, with their generations,
/// and the engine's bytes.
#[derive(Debug)]
pub(crate) struct StoredEntry {
    pub tags: Vec<(String, u64)>,
    pub payload: Bytes,
}

/// Frames `payload` with the generations of its tags.
pub(crate) fn encode(tags: &[(Tag, u64)], payload: &[u8]) -> Result<Vec<u8>, &'static str> {
    if tags.len() > usize::from(u8::MAX) {
        return Err("more than 255 tags on one entry");
    }
    let header: usize = tags.iter().map(|(tag, _)| 2 + tag.as_str().len() + 8).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + header + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(tags.len() as u8);
    for (tag, generation) in tags {
        let name = tag.as_str().as_bytes();
        let len = u16::try_from(name.len()).map_err(|_| "a tag longer than 65535 bytes")?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&generation.to_be_bytes());
    }
    out.extend_from_slice(payload);
    Ok(out)
}

/// Reads back what [`encode`] wrote.
pub(crate) fn decode(stored: Bytes) -> Result<StoredEntry, EntryError> {
    if stored.len() < MAGIC.len() + 1 || &stored[..MAGIC.len()] != MAGIC {
        return Err(if stored.starts_with(MAGIC) {
            EntryError::Truncated
        } else {
            EntryError::BadMagic
        });
    }
    let count = stored[MAGIC.len()];
    let mut at = MAGIC.len() + 1;
    let mut tags = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = stored.get(at..at + 2).ok_or(EntryError::Truncated)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        at += 2;
        let name = stored.get(at..at + len).ok_or(EntryError::Truncated)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| EntryError::TagNotUtf8)?
            .to_owned();
        at += len;
        let generation = stored.get(at..at + 8).ok_or(EntryError::Truncated)?;
        let generation = u64::from_be_bytes(generation.try_into().expect("eight bytes"));
        at += 8;
        tags.push((name, generation));
    }
    Ok(StoredEntry {
        tags,
        payload: stored.slice(at..),
    })
}

/// The memcached key for `name` under `prefix`: as it is when memcached
/// takes it (at most 250 bytes, no space or control byte), else
/// `prefix` + `#` + the hex BLAKE2b-256 digest of `name`.
pub(crate) fn memcached_key(prefix: &str, name: &str) -> String {
    let fits = prefix.len() + name.len() <= MAX_KEY_LEN && name.bytes().all(|byte| byte.is_ascii_graphic());
    if fits {
        return format!("{prefix}{name}");
    }
    let digest = Blake2b::<U32>::digest(name.as_bytes());
    format!("{prefix}#{}", hex::encode(digest))
}

/// A starting value for a new tag counter: random, and below 2^62 so that
/// increments never wrap.
pub(crate) fn fresh_generation() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(nanos);
    hasher.finish() >> 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let tags = vec![(Tag::from("users"), 7), (Tag::from("team:ops"), u64::MAX >> 2)];
        let stored = encode(&tags, b"payload").unwrap();
        let entry = decode(Bytes::from(stored)).unwrap();
        assert_eq!(
            entry.tags,
            vec![("users".to_owned(), 7), ("team:ops".to_owned(), u64::MAX >> 2)]
        );
        assert_eq!(&entry.payload[..], b"payload");
        let untagged = decode(Bytes::from(encode(&[], b"").unwrap())).unwrap();
        assert!(untagged.tags.is_empty() && untagged.payload.is_empty());
    }

    #[test]
    fn foreign_and_truncated_bytes_are_errors() {
        assert_eq!(decode(Bytes::from_static(b"")).unwrap_err(), EntryError::BadMagic);
        assert_eq!(
            decode(Bytes::from_static(b"hello world")).unwrap_err(),
            EntryError::BadMagic
        );
        assert_eq!(
            decode(Bytes::from_static(b"HBM1")).unwrap_err(),
            EntryError::Truncated
        );
        let stored = encode(&[(Tag::from("users"), 1)], b"x").unwrap();
        for len in 5..stored.len() - 1 {
            assert!(decode(Bytes::copy_from_slice(&stored[..len])).is_err(), "{len}");
        }
    }

    #[test]
    fn long_or_spaced_keys_are_digested() {
        assert_eq!(memcached_key("app:", "users:v1:id=1"), "app:users:v1:id=1");
        let long = "x".repeat(300);
        let digested = memcached_key("app:", &long);
        assert_eq!(digested.len(), "app:#".len() + 64);
        assert_ne!(digested, memcached_key("app:", &format!("{long}y")));
        assert!(memcached_key("", "a b").starts_with('#'));
        assert!(memcached_key("", "a\r\nb").starts_with('#'));
    }

    #[test]
    fn fresh_generations_leave_room_to_count() {
        for _ in 0..100 {
            assert!(fresh_generation() < u64::MAX >> 1);
        }
    }
}
