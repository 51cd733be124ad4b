//! The envelope: how the engine frames a value with its metadata.
//!
//! Every value the engine writes is stored as:
//!
//! ```text
//! offset  size  field
//! 0       2     magic "HB"
//! 2       1     envelope version (2)
//! 3       1     format id (see Format::id)
//! 4       4     CRC-32 (IEEE) of every byte from offset 8 on, big-endian
//! 8       8     the key's fingerprint (CacheKey::fingerprint)
//! 16      34+   EntryMeta (hitbox_core::EntryMeta::encode_into)
//! ...     rest  payload, in that format
//! ```
//!
//! Reading checks the whole entry before trusting any of it: a truncated or
//! bit-flipped entry fails the checksum, and an entry copied or renamed
//! under another key carries the other key's fingerprint. Either is an
//! error, which the engine logs and treats as a miss. This holds for plain
//! entries as for compressed or encrypted ones (whose stages check
//! themselves too). The checksum guards against damage, not against an
//! attacker who can write to the tier: that is what the encryption stage's
//! authentication is for.
//!
//! Stages ([`Staged`](crate::Staged)) wrap this whole envelope; tiers store
//! it as it is otherwise. Reading it back slices the payload out of the
//! stored bytes without copying. Entries of the first version (no checksum,
//! no key) read as [`CodecError::Version`]: a miss, rewritten by the next
//! load.

use bytes::Bytes;
use hitbox_core::{CacheKey, EntryMeta};

use crate::codec::format::{CacheableValue, Format};
use crate::error::CodecError;

const MAGIC: &[u8; 2] = b"HB";
const VERSION: u8 = 2;
/// Where the checksummed part starts: after magic, version, format and the
/// checksum itself.
const CHECKED_FROM: usize = 8;
const HEADER_LEN: usize = CHECKED_FROM + 8;

/// An entry as it comes out of a tier: metadata, format and the undecoded
/// payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The entry's metadata.
    pub meta: EntryMeta,
    /// The id of the format the payload is in.
    pub format_id: u8,
    /// The payload (a slice of the stored bytes).
    pub payload: Bytes,
}

impl RawEntry {
    /// Reads an envelope found under `key`, checking its checksum and that
    /// it was written under `key`.
    pub fn decode(bytes: Bytes, key: &CacheKey) -> Result<RawEntry, CodecError> {
        if bytes.len() < HEADER_LEN {
            return Err(if bytes.starts_with(&MAGIC[..bytes.len().min(2)]) {
                CodecError::Truncated
            } else {
                CodecError::BadMagic
            });
        }
        if &bytes[..2] != MAGIC {
            return Err(CodecError::BadMagic);
        }
        if bytes[2] != VERSION {
            return Err(CodecError::Version(bytes[2]));
        }
        let format_id = bytes[3];
        let recorded = u32::from_be_bytes(bytes[4..8].try_into().expect("four bytes"));
        if crc32fast::hash(&bytes[CHECKED_FROM..]) != recorded {
            return Err(CodecError::Checksum);
        }
        if bytes[CHECKED_FROM..HEADER_LEN] != key.fingerprint() {
            return Err(CodecError::KeyMismatch);
        }
        let (meta, used) = EntryMeta::decode(&bytes[HEADER_LEN..]).map_err(|e| match e {
            hitbox_core::MetaError::Truncated => CodecError::Truncated,
            other => CodecError::Meta(other),
        })?;
        let payload = bytes.slice(HEADER_LEN + used..);
        Ok(RawEntry {
            meta,
            format_id,
            payload,
        })
    }

    /// Decodes the payload as a `V`, checking that it is in `format`.
    pub fn value<V: CacheableValue>(&self, format: Format) -> Result<V, CodecError> {
        if self.format_id != format.id() {
            return Err(CodecError::FormatMismatch {
                expected: format.id(),
                found: self.format_id,
            });
        }
        V::decode(self.payload.clone(), format)
    }
}

impl RawEntry {
    /// The envelope of this entry under `key` again, with its metadata as
    /// it is now (changed by a soft purge, say) and its payload as it was:
    /// the value is not decoded.
    pub fn encode(&self, key: &CacheKey) -> Bytes {
        let mut out = Vec::with_capacity(HEADER_LEN + self.meta.encoded_len() + self.payload.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.format_id);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&key.fingerprint());
        self.meta.encode_into(&mut out);
        out.extend_from_slice(&self.payload);
        let checksum = crc32fast::hash(&out[CHECKED_FROM..]);
        out[4..8].copy_from_slice(&checksum.to_be_bytes());
        Bytes::from(out)
    }
}

/// Frames `value` and its metadata in an envelope bound to `key`.
///
/// The value is encoded into a buffer kept per thread and then copied into
/// an allocation of exactly its size: an in-process tier weighs an entry
/// by its length, so spare capacity it cannot see (a buffer grown by
/// doubling while a format wrote into it) would break its memory bound, and
/// trimming that buffer in place leaves holes the allocator cannot return.
/// The copy costs one `memcpy` per write, never one per read.
pub fn encode_entry<V: CacheableValue>(
    value: &V,
    meta: &EntryMeta,
    format: Format,
    key: &CacheKey,
) -> Result<Bytes, CodecError> {
    SCRATCH.with(|scratch| {
        let mut out = scratch.take();
        out.clear();
        let encoded = encode_into(&mut out, value, meta, format, key).map(|()| Bytes::copy_from_slice(&out));
        // A buffer that grew for one large entry is not kept for the
        // thread's lifetime.
        if out.capacity() <= MAX_SCRATCH {
            scratch.set(out);
        }
        encoded
    })
}

/// The largest per-thread encoding buffer kept between writes.
const MAX_SCRATCH: usize = 256 * 1024;

thread_local! {
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

fn encode_into<V: CacheableValue>(
    out: &mut Vec<u8>,
    value: &V,
    meta: &EntryMeta,
    format: Format,
    key: &CacheKey,
) -> Result<(), CodecError> {
    out.reserve(HEADER_LEN + meta.encoded_len() + 64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(format.id());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&key.fingerprint());
    meta.encode_into(out);
    value.encode(format, out)?;
    let checksum = crc32fast::hash(&out[CHECKED_FROM..]);
    out[4..8].copy_from_slice(&checksum.to_be_bytes());
    Ok(())
}

/// The format id of an envelope, if `bytes` looks like one.
pub fn envelope_format_id(bytes: &[u8]) -> Option<u8> {
    (bytes.len() >= HEADER_LEN && &bytes[..2] == MAGIC).then(|| bytes[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hitbox_core::{Tag, Timestamp};
    use std::time::Duration;

    fn meta() -> EntryMeta {
        let mut meta = EntryMeta::fresh_for(Timestamp::from_millis(5_000), Duration::from_secs(10));
        meta.tags.push(Tag::from("t1"));
        meta
    }

    fn key() -> CacheKey {
        CacheKey::builder("users").part("id", "1").build()
    }

    #[test]
    fn envelope_round_trips_and_slices_the_payload() {
        let bytes = encode_entry(&"hello".to_string(), &meta(), Format::Json, &key()).unwrap();
        let entry = RawEntry::decode(bytes.clone(), &key()).unwrap();
        assert_eq!(entry.meta, meta());
        assert_eq!(entry.format_id, Format::Json.id());
        assert_eq!(&entry.payload[..], b"\"hello\"");
        // The payload points into the stored buffer: no copy.
        let start = bytes.as_ptr() as usize;
        let payload = entry.payload.as_ptr() as usize;
        assert!(payload > start && payload < start + bytes.len());
        assert_eq!(entry.value::<String>(Format::Json).unwrap(), "hello");
        assert_eq!(envelope_format_id(&bytes), Some(Format::Json.id()));
    }

    #[test]
    fn the_stored_buffer_has_no_spare_capacity() {
        // A value large enough to make the buffer grow while encoding.
        let value = vec![7u8; 10_000];
        let bytes = encode_entry(&value, &meta(), Format::Postcard, &key()).unwrap();
        let vec: Vec<u8> = bytes.into();
        assert_eq!(vec.capacity(), vec.len());
    }

    #[test]
    fn another_format_is_a_mismatch_not_garbage() {
        let bytes = encode_entry(&42u32, &meta(), Format::Json, &key()).unwrap();
        let entry = RawEntry::decode(bytes, &key()).unwrap();
        assert_eq!(
            entry.value::<u32>(Format::Postcard).unwrap_err(),
            CodecError::FormatMismatch {
                expected: Format::Postcard.id(),
                found: Format::Json.id()
            }
        );
    }

    #[test]
    fn an_entry_under_another_key_is_refused() {
        let bytes = encode_entry(&"alice's".to_string(), &meta(), Format::Postcard, &key()).unwrap();
        let other = CacheKey::builder("users").part("id", "2").build();
        assert_eq!(
            RawEntry::decode(bytes, &other).unwrap_err(),
            CodecError::KeyMismatch
        );
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_an_error() {
        let bytes = encode_entry(&vec![1u8, 2, 3, 4, 5], &meta(), Format::Postcard, &key()).unwrap();
        for len in 0..bytes.len() {
            let err = RawEntry::decode(bytes.slice(..len), &key()).unwrap_err();
            assert!(
                matches!(
                    err,
                    CodecError::Truncated | CodecError::BadMagic | CodecError::Checksum
                ),
                "len {len}: {err:?}"
            );
        }
        // Any single flipped bit, in the header, the metadata or the
        // payload, is caught: by the magic, version or format checks, or
        // by the checksum.
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.to_vec();
                flipped[byte] ^= 1 << bit;
                let decoded = RawEntry::decode(flipped.into(), &key())
                    .and_then(|entry| entry.value::<Vec<u8>>(Format::Postcard));
                assert!(decoded.is_err(), "byte {byte} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn first_version_and_foreign_envelopes_are_errors() {
        let bytes = encode_entry(&vec![1u8, 2, 3], &meta(), Format::Postcard, &key()).unwrap();
        let mut first_version = bytes.to_vec();
        first_version[2] = 1;
        assert_eq!(
            RawEntry::decode(first_version.into(), &key()).unwrap_err(),
            CodecError::Version(1)
        );
        for foreign in [
            &b"{\"json\":true}"[..],
            b"",
            b"H",
            b"\x00\x00\x00\x00\x00",
            b"HB\x02",
            b"HB\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        ] {
            assert!(
                RawEntry::decode(Bytes::copy_from_slice(foreign), &key()).is_err(),
                "{foreign:?}"
            );
        }
    }

    #[test]
    fn damaged_metadata_with_a_matching_checksum_is_still_an_error() {
        // Rewrite the checksum after the damage: the metadata's own checks
        // still refuse it.
        let bytes = encode_entry(&vec![1u8, 2, 3], &meta(), Format::Postcard, &key()).unwrap();
        let mut damaged = bytes.to_vec();
        damaged[HEADER_LEN + 9] ^= 0xFF; // fresh_until high byte: out of order
        let checksum = crc32fast::hash(&damaged[CHECKED_FROM..]);
        damaged[4..8].copy_from_slice(&checksum.to_be_bytes());
        assert!(matches!(
            RawEntry::decode(damaged.into(), &key()).unwrap_err(),
            CodecError::Meta(hitbox_core::MetaError::OutOfOrder)
        ));
    }
}
