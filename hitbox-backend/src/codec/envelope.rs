//! The envelope: how the engine frames a value with its metadata.
//!
//! Every value the engine writes is stored as:
//!
//! ```text
//! offset  size  field
//! 0       2     magic "HB"
//! 2       1     envelope version (1)
//! 3       1     format id (see Format::id)
//! 4       34+   EntryMeta (hitbox_core::EntryMeta::encode_into)
//! ...     rest  payload, in that format
//! ```
//!
//! Stages ([`Staged`](crate::Staged)) wrap this whole envelope; tiers store
//! it as it is otherwise. Reading it back slices the payload out of the
//! stored bytes without copying.

use bytes::Bytes;
use hitbox_core::EntryMeta;

use crate::codec::format::{CacheableValue, Format};
use crate::error::CodecError;

const MAGIC: &[u8; 2] = b"HB";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4;

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
    /// Reads an envelope.
    pub fn decode(bytes: Bytes) -> Result<RawEntry, CodecError> {
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

/// Frames `value` and its metadata in an envelope.
pub fn encode_entry<V: CacheableValue>(
    value: &V,
    meta: &EntryMeta,
    format: Format,
) -> Result<Bytes, CodecError> {
    let mut out = Vec::with_capacity(HEADER_LEN + meta.encoded_len() + 64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(format.id());
    meta.encode_into(&mut out);
    value.encode(format, &mut out)?;
    Ok(Bytes::from(out))
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

    #[test]
    fn envelope_round_trips_and_slices_the_payload() {
        let bytes = encode_entry(&"hello".to_string(), &meta(), Format::Json).unwrap();
        let entry = RawEntry::decode(bytes.clone()).unwrap();
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
    fn another_format_is_a_mismatch_not_garbage() {
        let bytes = encode_entry(&42u32, &meta(), Format::Json).unwrap();
        let entry = RawEntry::decode(bytes).unwrap();
        assert_eq!(
            entry.value::<u32>(Format::Postcard).unwrap_err(),
            CodecError::FormatMismatch {
                expected: Format::Postcard.id(),
                found: Format::Json.id()
            }
        );
    }

    #[test]
    fn truncated_corrupt_and_foreign_envelopes_are_errors() {
        let bytes = encode_entry(&vec![1u8, 2, 3], &meta(), Format::Postcard).unwrap();
        let header = HEADER_LEN + meta().encoded_len();
        for len in 0..header {
            let err = RawEntry::decode(bytes.slice(..len)).unwrap_err();
            assert!(
                matches!(err, CodecError::Truncated | CodecError::BadMagic),
                "len {len}: {err:?}"
            );
        }
        for len in header..bytes.len() {
            let entry = RawEntry::decode(bytes.slice(..len)).unwrap();
            assert!(entry.value::<Vec<u8>>(Format::Postcard).is_err(), "len {len}");
        }
        let mut wrong_version = bytes.to_vec();
        wrong_version[2] = 9;
        assert_eq!(
            RawEntry::decode(wrong_version.into()).unwrap_err(),
            CodecError::Version(9)
        );
        for foreign in [
            &b"{\"json\":true}"[..],
            b"",
            b"H",
            b"\x00\x00\x00\x00\x00",
            b"HB\x01",
        ] {
            assert!(
                RawEntry::decode(Bytes::copy_from_slice(foreign)).is_err(),
                "{foreign:?}"
            );
        }
        let mut flipped = bytes.to_vec();
        flipped[HEADER_LEN + 9] ^= 0xFF; // fresh_until high byte: out of order
        assert!(matches!(
            RawEntry::decode(flipped.into()).unwrap_err(),
            CodecError::Meta(hitbox_core::MetaError::OutOfOrder)
        ));
    }
}
