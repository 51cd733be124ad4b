//! Formats: how a value becomes bytes.
//!
//! The format is the first stage. Its id is recorded in every entry's
//! envelope, so an entry written in one format and read in another is a
//! clean miss. Which one to choose:
//!
//! | format | id | notes |
//! |---|---|---|
//! | [`Format::Postcard`] | 1 | compact, fast, maintained; the default |
//! | [`Format::Bitcode`] | 2 | the smallest output; fast |
//! | [`Format::Json`] | 3 | readable with `redis-cli`, and by other languages |
//! | `Format::Bincode` | 4 | bincode 2, behind the `bincode` feature: bincode is unmaintained (RUSTSEC-2025-0141) |
//! | `Format::MessagePack` | 5 | MessagePack, behind the `msgpack` feature: the value format every cachekit SDK reads (see `hitbox_cachekit::interop`) |
//!
//! The default was chosen by the `formats` benchmark in `benches/`; see
//! `benches/README.md` for the numbers.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CodecError;

/// The most bytes a decoded value's length prefixes may claim in the
/// formats that trust them when reserving memory (bincode): a crafted
/// prefix of 2^40 is an error, not an allocation that aborts the process.
/// The same bound as the largest entry a tier decompresses by default.
pub const MAX_DECODED_BYTES: usize = crate::codec::stages::DEFAULT_MAX_DECOMPRESSED;

#[cfg(feature = "bincode")]
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODED_BYTES>()
}

/// A serialization format for cached values.
///
/// ```
/// use hitbox_backend::{Cache, Format, MemoryBackend};
///
/// assert_eq!(Format::default(), Format::Postcard);
/// let readable = Cache::builder(MemoryBackend::new()).format(Format::Json).build();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Format {
    /// [postcard](https://docs.rs/postcard): compact varint encoding.
    #[default]
    Postcard,
    /// [bitcode](https://docs.rs/bitcode) through its serde support
    /// (feature `bitcode`).
    #[cfg(feature = "bitcode")]
    Bitcode,
    /// JSON through serde_json (feature `json`).
    #[cfg(feature = "json")]
    Json,
    /// bincode 2 (standard configuration, length prefixes limited to
    /// [`MAX_DECODED_BYTES`]).
    #[cfg(feature = "bincode")]
    Bincode,
    /// MessagePack through rmp-serde, structs as maps with field names:
    /// the one plain document other cachekit SDKs read and write (see
    /// `hitbox_cachekit::interop`).
    #[cfg(feature = "msgpack")]
    MessagePack,
}

impl Format {
    /// The id recorded in entries written with this format.
    pub const fn id(self) -> u8 {
        match self {
            Format::Postcard => 1,
            #[cfg(feature = "bitcode")]
            Format::Bitcode => 2,
            #[cfg(feature = "json")]
            Format::Json => 3,
            #[cfg(feature = "bincode")]
            Format::Bincode => 4,
            #[cfg(feature = "msgpack")]
            Format::MessagePack => 5,
        }
    }

    /// Appends the encoding of `value` to `out`.
    pub fn encode_into<T: Serialize + ?Sized>(self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let fail = |e: &dyn std::fmt::Display| CodecError::Payload(e.to_string());
        match self {
            Format::Postcard => {
                let taken = std::mem::take(out);
                *out = postcard::to_extend(value, taken).map_err(|e| fail(&e))?;
            }
            #[cfg(feature = "bitcode")]
            Format::Bitcode => {
                let encoded = bitcode::serialize(value).map_err(|e| fail(&e))?;
                out.extend_from_slice(&encoded);
            }
            #[cfg(feature = "json")]
            Format::Json => serde_json::to_writer(&mut *out, value).map_err(|e| fail(&e))?,
            #[cfg(feature = "bincode")]
            Format::Bincode => {
                bincode::serde::encode_into_std_write(value, out, bincode_config()).map_err(|e| fail(&e))?;
            }
            #[cfg(feature = "msgpack")]
            Format::MessagePack => rmp_serde::encode::write_named(out, value).map_err(|e| fail(&e))?,
        }
        Ok(())
    }

    /// Decodes a value that must span all of `bytes`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        let fail = |e: &dyn std::fmt::Display| CodecError::Payload(e.to_string());
        match self {
            Format::Postcard => {
                let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| fail(&e))?;
                if !rest.is_empty() {
                    return Err(CodecError::Payload(format!("{} trailing bytes", rest.len())));
                }
                Ok(value)
            }
            #[cfg(feature = "bitcode")]
            Format::Bitcode => bitcode::deserialize(bytes).map_err(|e| fail(&e)),
            #[cfg(feature = "json")]
            Format::Json => serde_json::from_slice(bytes).map_err(|e| fail(&e)),
            #[cfg(feature = "bincode")]
            Format::Bincode => {
                let (value, used) =
                    bincode::serde::decode_from_slice(bytes, bincode_config()).map_err(|e| fail(&e))?;
                if used != bytes.len() {
                    return Err(CodecError::Payload(format!(
                        "{} trailing bytes",
                        bytes.len() - used
                    )));
                }
                Ok(value)
            }
            #[cfg(feature = "msgpack")]
            Format::MessagePack => {
                let mut rest = bytes;
                let value = serde::Deserialize::deserialize(&mut rmp_serde::Deserializer::new(&mut rest))
                    .map_err(|e: rmp_serde::decode::Error| fail(&e))?;
                if !rest.is_empty() {
                    return Err(CodecError::Payload(format!("{} trailing bytes", rest.len())));
                }
                Ok(value)
            }
        }
    }
}

/// A value the engine can store and share between the callers of one load.
///
/// Every `serde` type that is `Clone + Send + Sync` is one, encoded with the
/// cache's [`Format`]. A type with a layout of its own (an HTTP response
/// whose body should be handed back without a copy, for instance) implements
/// this trait directly and may ignore the format.
pub trait CacheableValue: Clone + Send + Sync + 'static {
    /// Appends the value's bytes to `out`.
    fn encode(&self, format: Format, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Reads a value back from `payload`, which the decoder may slice
    /// instead of copying.
    fn decode(payload: Bytes, format: Format) -> Result<Self, CodecError>;
}

impl<T> CacheableValue for T
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn encode(&self, format: Format, out: &mut Vec<u8>) -> Result<(), CodecError> {
        format.encode_into(self, out)
    }

    fn decode(payload: Bytes, format: Format) -> Result<Self, CodecError> {
        format.decode(&payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
        score: Option<f64>,
    }

    fn user() -> User {
        User {
            id: 42,
            name: "Ada".into(),
            tags: vec!["admin".into(), "ops".into()],
            score: Some(9.5),
        }
    }

    fn formats() -> Vec<Format> {
        vec![
            Format::Postcard,
            Format::Bitcode,
            Format::Json,
            #[cfg(feature = "bincode")]
            Format::Bincode,
            #[cfg(feature = "msgpack")]
            Format::MessagePack,
        ]
    }

    #[test]
    fn every_format_round_trips() {
        for format in formats() {
            let mut out = vec![9, 9];
            user().encode(format, &mut out).unwrap();
            assert_eq!(&out[..2], &[9, 9], "{format:?} must append");
            let back = User::decode(Bytes::copy_from_slice(&out[2..]), format).unwrap();
            assert_eq!(back, user(), "{format:?}");
        }
    }

    #[test]
    fn ids_are_distinct() {
        let ids: std::collections::HashSet<u8> = formats().iter().map(|f| f.id()).collect();
        assert_eq!(ids.len(), formats().len());
    }

    #[test]
    fn truncated_corrupt_and_foreign_payloads_are_errors() {
        for format in formats() {
            let mut out = Vec::new();
            user().encode(format, &mut out).unwrap();
            for len in 0..out.len() {
                assert!(
                    User::decode(Bytes::copy_from_slice(&out[..len]), format).is_err(),
                    "{format:?} len {len}"
                );
            }
            let mut trailing = out.clone();
            trailing.extend_from_slice(b"xx");
            assert!(
                User::decode(Bytes::from(trailing), format).is_err(),
                "{format:?} trailing"
            );
            let foreign = Bytes::from_static(b"\xff\xfe\xfd garbage that is no value \x00\x01");
            assert!(User::decode(foreign, format).is_err(), "{format:?} foreign");
        }
    }

    /// Length prefixes far beyond the input: each format must refuse them
    /// (or read past the end and fail) without reserving what they claim.
    #[test]
    fn a_crafted_length_prefix_is_an_error_not_an_abort() {
        let claim: u64 = 1 << 40;
        let mut crafted: Vec<(Format, Vec<u8>)> = Vec::new();
        // postcard: LEB128 varint.
        let mut leb = Vec::new();
        let mut n = claim;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                leb.push(byte);
                break;
            }
            leb.push(byte | 0x80);
        }
        crafted.push((Format::Postcard, leb));
        crafted.push((Format::Bitcode, [&[0xff; 16][..], &claim.to_le_bytes()].concat()));
        crafted.push((Format::Json, b"[1,2,3".to_vec()));
        #[cfg(feature = "bincode")]
        {
            // bincode standard varint: 253 then a little-endian u64.
            let mut prefix = vec![253u8];
            prefix.extend_from_slice(&claim.to_le_bytes());
            crafted.push((Format::Bincode, prefix));
        }
        #[cfg(feature = "msgpack")]
        crafted.push((Format::MessagePack, vec![0xc6, 0xff, 0xff, 0xff, 0xff]));
        for (format, prefix) in crafted {
            let mut payload = prefix.clone();
            payload.extend_from_slice(b"tail");
            assert!(
                Vec::<u8>::decode(Bytes::from(payload.clone()), format).is_err(),
                "{format:?} bytes"
            );
            assert!(
                String::decode(Bytes::from(payload.clone()), format).is_err(),
                "{format:?} string"
            );
            assert!(
                Vec::<u64>::decode(Bytes::from(payload), format).is_err(),
                "{format:?} seq"
            );
        }
    }
}
