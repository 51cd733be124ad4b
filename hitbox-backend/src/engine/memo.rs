//! Decoded entries, remembered by the stored buffer they were decoded from.
//!
//! An in-process tier (moka, [`MemoryBackend`](crate::MemoryBackend))
//! answers every read of an unchanged entry with the same buffer, and
//! decoding it again on every hit is wasted work: for an HTTP response,
//! parsing and validating every header. The memo keeps the last decoded
//! form of each buffer in a small direct-mapped table, indexed by the
//! buffer's address.
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
//! **What it costs.** The table has [`SLOTS`] slots; a slot remembers only
//! buffers up to [`MAX_BYTES`], so at most `SLOTS * MAX_BYTES` bytes of
//! replaced or evicted entries are kept alive beyond their tier, until
//! their slots are reused. It is on only for tiers that say they hand out
//! their stored buffers ([`Backend::shares_buffers`](crate::Backend::shares_buffers)),
//! and it is per engine: another engine over the same tier (with another
//! format, say) never sees this one's decoded values.
//!
//! A slot's lock is held for an address comparison and a reference-count
//! increment. Threads reading one hot key meet on that lock, as they meet
//! on the entry's reference counts in the tier itself.

use std::any::Any;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hitbox_core::EntryMeta;

/// Slots in the table.
pub const SLOTS: usize = 1024;
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
    slots: Box<[Mutex<Option<Slot>>]>,
}

impl DecodedMemo {
    pub fn new() -> Self {
        DecodedMemo {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, bytes: &Bytes) -> &Mutex<Option<Slot>> {
        // Allocations are at least 16-byte aligned: skip the low bits, and
        // fold in higher ones so that neighbouring allocations spread.
        let address = bytes.as_ptr() as usize;
        &self.slots[((address >> 4) ^ (address >> 14)) % SLOTS]
    }

    /// The decoded form of exactly this buffer, if remembered as a `V`.
    pub fn get<V: Send + Sync + 'static>(&self, bytes: &Bytes) -> Option<Arc<Decoded<V>>> {
        let slot = self.slot(bytes).lock().unwrap_or_else(|p| p.into_inner());
        let remembered = slot.as_ref()?;
        if remembered.bytes.as_ptr() != bytes.as_ptr() || remembered.bytes.len() != bytes.len() {
            return None;
        }
        Arc::clone(&remembered.decoded).downcast::<Decoded<V>>().ok()
    }

    /// Remembers `decoded` as the decoded form of `bytes`.
    pub fn put<V: Send + Sync + 'static>(&self, bytes: &Bytes, decoded: &Arc<Decoded<V>>) {
        if bytes.len() > MAX_BYTES {
            return;
        }
        let decoded: Arc<dyn Any + Send + Sync> = Arc::clone(decoded) as _;
        let replaced = self
            .slot(bytes)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(Slot {
                bytes: bytes.clone(),
                decoded,
            });
        // Dropped outside the lock: it may free a large buffer.
        drop(replaced);
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
