//! Stages: compression and encryption between the engine and a tier.

use std::sync::Arc;

use bytes::Bytes;
use hitbox_core::CacheKey;

use crate::codec::envelope::envelope_format_id;
use crate::error::CodecError;

const MAGIC: &[u8; 2] = b"HS";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 6;

/// Entries that claim to decompress to more than this are refused.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// A compressor.
///
/// ```
/// use hitbox_backend::Compression;
///
/// let choices = [Compression::None, Compression::zstd(3), Compression::Lz4];
/// assert_eq!(Compression::default(), Compression::None);
/// # let _ = choices;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// [zstd](https://docs.rs/zstd) at the given level (1 to 22; 3 is
    /// zstd's own default and a good trade-off for cache entries). Feature
    /// `zstd` (it builds zstd's C library).
    #[cfg(feature = "zstd")]
    Zstd {
        /// The compression level.
        level: i32,
    },
    /// [lz4](https://docs.rs/lz4_flex) blocks followed by a CRC32 of the
    /// plain bytes: about half zstd's ratio at a tenth of its cost on small
    /// entries (see `benches/README.md`), for tiers where CPU matters more
    /// than bytes. Feature `lz4`.
    #[cfg(feature = "lz4")]
    Lz4,
}

impl Compression {
    /// zstd at `level`.
    #[cfg(feature = "zstd")]
    pub const fn zstd(level: i32) -> Self {
        Compression::Zstd { level }
    }

    /// The id recorded in entries.
    pub const fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            #[cfg(feature = "zstd")]
            Compression::Zstd { .. } => 1,
            #[cfg(feature = "lz4")]
            Compression::Lz4 => 2,
        }
    }
}

/// What an encryptor binds a ciphertext to: a ciphertext copied under
/// another key (or stored with other stages) must fail to decrypt.
#[derive(Debug, Clone, Copy)]
pub struct EncryptionContext<'a> {
    /// The key the entry is stored under.
    pub key: &'a CacheKey,
    /// The format id of the envelope inside.
    pub format_id: u8,
    /// Whether the plaintext is compressed.
    pub compressed: bool,
}

/// An encryption stage.
///
/// Implemented by the AES-256-GCM encryptor of the `encryption` feature;
/// the trait lets a user plug in another scheme.
pub trait Encryptor: Send + Sync + 'static {
    /// The id recorded in entries (1 to 255; 0 means "not encrypted").
    fn id(&self) -> u8;

    /// Encrypts `plaintext`, binding it to `context`.
    fn encrypt(&self, context: &EncryptionContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CodecError>;

    /// Decrypts `ciphertext` written under the same `context`.
    fn decrypt(&self, context: &EncryptionContext<'_>, ciphertext: &[u8]) -> Result<Vec<u8>, CodecError>;
}

/// The stages a [`Staged`](crate::Staged) tier applies.
///
/// Why it exists: what a tier stores is not always what the engine framed.
/// [`Stages`] is the pipeline that turns a plain envelope into stored bytes
/// and back; [`Staged`](crate::Staged) applies it to
/// every envelope of one tier on its way
/// in and out: format first (in the engine), then compression, then
/// encryption on write; the reverse on read. Stages are per tier, so an
/// in-process tier can keep plain entries for speed while Redis stores them
/// compressed and encrypted.
///
/// A staged entry starts with a header of its own:
///
/// ```text
/// offset  size  field
/// 0       2     magic "HS"
/// 2       1     stage header version (1)
/// 3       1     format id of the envelope inside (bound by encryptors)
/// 4       1     compression id (0 none, 1 zstd, 2 lz4)
/// 5       1     encryptor id (0 none)
/// 6       4     when compressed: the uncompressed length, big-endian u32
/// ...     rest  the (compressed, encrypted) envelope
/// ```
///
/// An entry whose header names another compressor or encryptor than the
/// reader's, or that fails to decompress or decrypt, is a miss: it is logged
/// with the key's digest and the reason, and nothing panics.
///
/// The stage header has no checksum of its own. What it wraps checks
/// itself: zstd frames carry a checksum, lz4 blocks are followed by a CRC32,
/// AES-GCM authenticates the ciphertext, and the engine's envelope inside
/// carries a CRC-32 and its key. So a damaged header is caught by one of
/// them, except for opaque bytes written without an envelope and without
/// stages that check: a header whose compression byte is flipped to 0 then
/// hands back the compressed bytes as they are.
///
/// ```
/// use hitbox_backend::{Compression, Staged, Stages};
/// # use hitbox_backend::{Backend, BackendFuture, TierStats};
/// # struct MyTier;
/// # impl Backend for MyTier {
/// #   fn read<'a>(&'a self, _: &'a hitbox_core::CacheKey) -> BackendFuture<'a, Option<bytes::Bytes>> { Box::pin(async { Ok(None) }) }
/// #   fn write<'a>(&'a self, _: &'a hitbox_core::CacheKey, _: bytes::Bytes, _: std::time::Duration, _: &'a [hitbox_core::Tag]) -> BackendFuture<'a, ()> { Box::pin(async { Ok(()) }) }
/// #   fn remove<'a>(&'a self, _: &'a hitbox_core::CacheKey) -> BackendFuture<'a, bool> { Box::pin(async { Ok(false) }) }
/// #   fn invalidate_tag<'a>(&'a self, _: &'a hitbox_core::Tag) -> BackendFuture<'a, u64> { Box::pin(async { Ok(0) }) }
/// #   fn label(&self) -> &str { "mine" }
/// # }
/// let tier = Staged::new(MyTier, Stages::new().compression(Compression::zstd(3)).min_compress_size(512));
/// ```
///
/// ```
/// use hitbox_backend::{Compression, Stages};
///
/// let stages = Stages::new()
///     .compression(Compression::zstd(3))
///     .min_compress_size(512)
///     .max_decompressed(8 << 20);
/// ```
#[derive(Clone)]
pub struct Stages {
    compression: Compression,
    min_compress_size: usize,
    max_decompressed: usize,
    encryptor: Option<Arc<dyn Encryptor>>,
}

impl std::fmt::Debug for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stages")
            .field("compression", &self.compression)
            .field("min_compress_size", &self.min_compress_size)
            .field("max_decompressed", &self.max_decompressed)
            .field("encryptor", &self.encryptor.as_ref().map(|e| e.id()))
            .finish()
    }
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            compression: Compression::None,
            min_compress_size: 1024,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
            encryptor: None,
        }
    }
}

impl Stages {
    /// No compression, no encryption; compression threshold 1 KiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the compressor.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Entries smaller than `bytes` are stored uncompressed (compressing a
    /// few hundred bytes costs more time than it saves space).
    pub fn min_compress_size(mut self, bytes: usize) -> Self {
        self.min_compress_size = bytes;
        self
    }

    /// Refuse entries that would decompress to more than `bytes`.
    pub fn max_decompressed(mut self, bytes: usize) -> Self {
        self.max_decompressed = bytes;
        self
    }

    /// Sets the encryptor.
    pub fn encryptor(mut self, encryptor: impl Encryptor) -> Self {
        self.encryptor = Some(Arc::new(encryptor));
        self
    }

    /// Sets an encryptor shared with other tiers.
    pub fn shared_encryptor(mut self, encryptor: Arc<dyn Encryptor>) -> Self {
        self.encryptor = Some(encryptor);
        self
    }

    /// Applies the stages to an envelope stored under `key`.
    pub fn seal(&self, key: &CacheKey, envelope: &[u8]) -> Result<Vec<u8>, CodecError> {
        let compress = self.compression != Compression::None && envelope.len() >= self.min_compress_size;
        let compressed;
        let body: &[u8] = if compress {
            compressed = compress_with(self.compression, envelope)?;
            &compressed
        } else {
            envelope
        };
        let compression_id = if compress { self.compression.id() } else { 0 };
        let format_id = envelope_format_id(envelope).unwrap_or(0);
        let encrypted;
        let body = match &self.encryptor {
            Some(encryptor) => {
                let context = EncryptionContext {
                    key,
                    format_id,
                    compressed: compress,
                };
                encrypted = encryptor.encrypt(&context, body)?;
                &encrypted[..]
            }
            None => body,
        };
        let mut out = Vec::with_capacity(HEADER_LEN + 4 + body.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(format_id);
        out.push(compression_id);
        out.push(self.encryptor.as_ref().map_or(0, |e| e.id()));
        if compress {
            let len = u32::try_from(envelope.len()).map_err(|_| CodecError::TooLarge {
                size: envelope.len() as u64,
                limit: u64::from(u32::MAX),
            })?;
            out.extend_from_slice(&len.to_be_bytes());
        }
        out.extend_from_slice(body);
        Ok(out)
    }

    /// Undoes the stages on an entry read from under `key`.
    pub fn open(&self, key: &CacheKey, stored: &Bytes) -> Result<Bytes, CodecError> {
        self.open_within(key, stored, usize::MAX)
    }

    /// Undoes the stages on an entry read from under `key`, refusing one
    /// that would decompress to more than `limit` bytes (the tier's
    /// [`max_entry_size`](crate::Backend::max_entry_size)) or than
    /// [`Stages::max_decompressed`], whichever is smaller. The check reads
    /// the length the entry records, before any decompression.
    pub fn open_within(&self, key: &CacheKey, stored: &Bytes, limit: usize) -> Result<Bytes, CodecError> {
        let max_decompressed = self.max_decompressed.min(limit);
        if stored.len() < HEADER_LEN {
            return Err(CodecError::Truncated);
        }
        if &stored[..2] != MAGIC {
            return Err(CodecError::BadMagic);
        }
        if stored[2] != VERSION {
            return Err(CodecError::Version(stored[2]));
        }
        let format_id = stored[3];
        let compression_id = stored[4];
        let encryptor_id = stored[5];
        if compression_id != 0 && compression_id != self.compression.id() {
            return Err(CodecError::CompressionMismatch {
                expected: self.compression.id(),
                found: compression_id,
            });
        }
        let expected_encryptor = self.encryptor.as_ref().map_or(0, |e| e.id());
        if encryptor_id != expected_encryptor {
            return Err(CodecError::EncryptionMismatch {
                expected: expected_encryptor,
                found: encryptor_id,
            });
        }
        let compressed = compression_id != 0;
        let (plain_len, body_start) = if compressed {
            let raw = stored
                .get(HEADER_LEN..HEADER_LEN + 4)
                .ok_or(CodecError::Truncated)?;
            let len = u32::from_be_bytes(raw.try_into().expect("four bytes")) as usize;
            if len > max_decompressed {
                return Err(CodecError::TooLarge {
                    size: len as u64,
                    limit: max_decompressed as u64,
                });
            }
            (len, HEADER_LEN + 4)
        } else {
            (0, HEADER_LEN)
        };
        let body = stored.slice(body_start..);
        let body = match &self.encryptor {
            Some(encryptor) => {
                let context = EncryptionContext {
                    key,
                    format_id,
                    compressed,
                };
                Bytes::from(encryptor.decrypt(&context, &body)?)
            }
            None => body,
        };
        let plain = if compressed {
            let plain = decompress_with(self.compression, &body, plain_len)?;
            if plain.len() != plain_len {
                return Err(CodecError::Decompress(format!(
                    "expected {plain_len} bytes, got {}",
                    plain.len()
                )));
            }
            Bytes::from(plain)
        } else {
            body
        };
        // The header repeats the envelope's format id; a disagreement means
        // one of them was damaged.
        let inner_format = envelope_format_id(&plain).unwrap_or(0);
        if inner_format != format_id {
            return Err(CodecError::FormatMismatch {
                expected: format_id,
                found: inner_format,
            });
        }
        Ok(plain)
    }
}

fn compress_with(compression: Compression, plain: &[u8]) -> Result<Vec<u8>, CodecError> {
    match compression {
        Compression::None => Ok(plain.to_vec()),
        #[cfg(feature = "zstd")]
        Compression::Zstd { level } => {
            let fail = |e: std::io::Error| CodecError::Decompress(e.to_string());
            // The frame checksum turns corruption of the compressed bytes
            // into an error instead of a different value.
            let mut compressor = zstd::bulk::Compressor::new(level).map_err(fail)?;
            compressor.include_checksum(true).map_err(fail)?;
            compressor.compress(plain).map_err(fail)
        }
        #[cfg(feature = "lz4")]
        Compression::Lz4 => {
            let mut out = lz4_flex::block::compress(plain);
            out.extend_from_slice(&crc32fast::hash(plain).to_be_bytes());
            Ok(out)
        }
    }
}

/// Decompresses into exactly `plain_len` bytes, never more.
#[cfg_attr(not(any(feature = "zstd", feature = "lz4")), allow(unused_variables))]
fn decompress_with(compression: Compression, body: &[u8], plain_len: usize) -> Result<Vec<u8>, CodecError> {
    match compression {
        Compression::None => Ok(body.to_vec()),
        #[cfg(feature = "zstd")]
        Compression::Zstd { .. } => {
            zstd::bulk::decompress(body, plain_len).map_err(|e| CodecError::Decompress(e.to_string()))
        }
        #[cfg(feature = "lz4")]
        Compression::Lz4 => {
            let split = body.len().checked_sub(4).ok_or(CodecError::Truncated)?;
            let (block, checksum) = body.split_at(split);
            let plain = lz4_flex::block::decompress(block, plain_len)
                .map_err(|e| CodecError::Decompress(e.to_string()))?;
            if crc32fast::hash(&plain).to_be_bytes() != checksum {
                return Err(CodecError::Decompress("lz4 checksum mismatch".into()));
            }
            Ok(plain)
        }
    }
}
