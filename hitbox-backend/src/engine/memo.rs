//! Decoded entries, remembered by the stored buffer they were decoded from.
//!
//! An in-process tier (moka, [`MemoryBackend`](crate::MemoryBackend))
//! answers every read of an unchanged entry with the same buffer, and
//! decoding it again on every hit is wasted work: for an HTTP response,
//! parsing and validating every header. The memo keeps the last decoded
//! form of each buffer in a small two-way set-associative table, indexed by
//! the buffer's address: a buffer may sit in either way of its set, and the
//! one read least recently gives way, so two hot entries whose addresses
//! meet in one set do not evict each other on every hit.
//!
//! **Why an address is a safe key.** A slot holds a clone of the buffer it
//! was decoded from, so that allocation stays alive while the slot holds
//! it, and no other buffer can be placed at the same address. `Bytes` is
//! immutable, so a read that returns a buffer with the same address and
//! length returns the very bytes that were decoded. An entry that is
//! replaced or removed gets a new buffer; the old one can no longer be
//! returned by the tier, so its slot is never matched again and is
//! overwritten in time.
//!
//! **What it costs.** The table has [`SETS`] sets of two slots; a slot
//! remembers only buffers up to [`MAX_BYTES`], so at most
//! `2 * SETS * MAX_BYTES` bytes of
//! replaced or evicted entries are kept alive beyond their tier, until
//! their slots are reused. It is on only for tiers that say they hand out
//! their stored buffers ([`Backend::shares_buffers`](crate::Backend::shares_buffers)),
//! and it is per engine: another engine over the same tier (with another
//! format, say) never sees this one's decoded values.
//!
//! A set's lock is held for two address comparisons and a reference-count
//! increment. Threads reading one hot key meet on that lock, as they meet
//! on the entry's reference counts in the tier itself.

use std::any::Any;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hitbox_core::EntryMeta;

/// Sets in the table, of two slots each.
pub const SETS: usize = 1024;
/// The largest stored entry whose decoded form is remembered.
pub const MAX_BYTES: usize = 16 * 1024;

/// A decoded entry, shared by every hit on the same stored buffer.
#[derive(Debug)]
pub struct Decoded<V> {
    pub(crate) meta: EntryMeta,
    pub(crate) value: V,
}

struct Slot {
    bytes: Bytes,
    decoded: Arc<dyn Any + Send + Sync>,
}

pub(crate) struct DecodedMemo {
    sets: Box<[Mutex<Set>]>,
}

/// Two slots; the first is the one read most recently.
#[derive(Default)]
struct Set([Option<Slot>; 2]);

impl Set {
    fn position(&self, bytes: &Bytes) -> Option<usize> {
        self.0.iter().position(|slot| {
            slot.as_ref()
                .is_some_and(|slot| slot.bytes.as_ptr() == bytes.as_ptr() && slot.bytes.len() == bytes.len())
        })
    }
}

impl DecodedMemo {
    pub fn new() -> Self {
        DecodedMemo {
            sets: (0..SETS).map(|_| Mutex::new(Set::default())).collect(),
        }
    }

    fn set(&self, bytes: &Bytes) -> &Mutex<Set> {
        // Allocations are at least 16-byte aligned: skip the low bits, then
        // let a multiplication spread neighbouring addresses over the sets.
        let address = (bytes.as_ptr() as usize >> 4) as u64;
        let spread = address.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.sets[spread as usize % SETS]
    }

    /// The decoded form of exactly this buffer, if remembered as a `V`.
    pub fn get<V: Send + Sync + 'static>(&self, bytes: &Bytes) -> Option<Arc<Decoded<V>>> {
        let mut set = self.set(bytes).lock().unwrap_or_else(|p| p.into_inner());
        let position = set.position(bytes)?;
        if position == 1 {
            set.0.swap(0, 1);
        }
        let remembered = set.0[0].as_ref()?;
        Arc::clone(&remembered.decoded).downcast::<Decoded<V>>().ok()
    }

    /// Remembers `decoded` as the decoded form of `bytes`, in place of the
    /// buffer of its set read least recently.
    pub fn put<V: Send + Sync + 'static>(&self, bytes: &Bytes, decoded: &Arc<Decoded<V>>) {
        if bytes.len() > MAX_BYTES {
            return;
        }
        let decoded: Arc<dyn Any + Send + Sync> = Arc::clone(decoded) as _;
        let slot = Slot {
            bytes: bytes.clone(),
            decoded,
        };
        let evicted = {
            let mut set = self.set(bytes).lock().unwrap_or_else(|p| p.into_inner());
            match set.position(bytes) {
                // Another type's decoding of the same buffer: replaced.
                Some(position) => set.0[position].replace(slot),
                None => {
                    let evicted = set.0[1].take();
                    set.0[1] = set.0[0].take();
                    set.0[0] = Some(slot);
                    evicted
                }
            }
        };
        // Dropped outside the lock: it may free a large buffer.
        drop(evicted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hitbox_core::Timestamp;
    use std::time::Duration;

    fn meta() -> EntryMeta {
        hitbox_core::CachePolicy::new(Duration::from_secs(60))
            .entry_meta(Timestamp::from_millis(0), Vec::new())
    }

    #[test]
    fn only_the_same_buffer_matches() {
        let memo = DecodedMemo::new();
        let stored = Bytes::from(b"stored entry".to_vec());
        let decoded = Arc::new(Decoded {
            meta: meta(),
            value: String::from("decoded"),
        });
        memo.put(&stored, &decoded);
        let hit = memo.get::<String>(&stored.clone()).expect("same buffer");
        assert!(Arc::ptr_eq(&hit, &decoded));
        // Equal bytes in another buffer, a slice of the buffer, or another
        // type: none of them is the remembered decoding.
        assert!(
            memo.get::<String>(&Bytes::from(b"stored entry".to_vec()))
                .is_none()
        );
        assert!(memo.get::<String>(&stored.slice(..6)).is_none());
        assert!(memo.get::<Vec<u8>>(&stored).is_none());
    }

    #[test]
    fn two_buffers_of_one_set_are_both_remembered_and_the_least_recent_gives_way() {
        let memo = DecodedMemo::new();
        let decoded = |n: u8| {
            Arc::new(Decoded {
                meta: meta(),
                value: n,
            })
        };
        // Buffers until three meet in one set.
        let mut by_set: std::collections::HashMap<usize, Vec<Bytes>> = Default::default();
        let three = loop {
            let buffer = Bytes::from(vec![0u8; 32]);
            let set = memo.set(&buffer) as *const _ as usize;
            let group = by_set.entry(set).or_default();
            group.push(buffer);
            if group.len() == 3 {
                break group.clone();
            }
        };
        memo.put(&three[0], &decoded(0));
        memo.put(&three[1], &decoded(1));
        assert_eq!(memo.get::<u8>(&three[0]).unwrap().value, 0);
        assert_eq!(memo.get::<u8>(&three[1]).unwrap().value, 1);
        // 0 was read less recently than 1: it gives way to 2.
        memo.put(&three[2], &decoded(2));
        assert!(memo.get::<u8>(&three[0]).is_none());
        assert_eq!(memo.get::<u8>(&three[1]).unwrap().value, 1);
        assert_eq!(memo.get::<u8>(&three[2]).unwrap().value, 2);
    }

    #[test]
    fn large_buffers_are_not_remembered() {
        let memo = DecodedMemo::new();
        let stored = Bytes::from(vec![0u8; MAX_BYTES + 1]);
        memo.put(
            &stored,
            &Arc::new(Decoded {
                meta: meta(),
                value: 1u8,
            }),
        );
        assert!(memo.get::<u8>(&stored).is_none());
    }
}
