//! How a value becomes the bytes a tier stores, and back.
//!
//! Why it exists: every tier stores bytes, and every reader must be able to
//! tell whether the bytes it found are a value it can use. The codec is the
//! one place that decides how, in layers applied in this order on write and
//! undone in reverse on read:
//!
//! 1. [`format`]: a value to payload bytes ([`Format`](crate::Format):
//!    postcard, bitcode, JSON, ...), chosen by the engine.
//! 2. [`envelope`]: the payload framed with its metadata (freshness, tags,
//!    format id). Every tier of a composition stores this same envelope.
//! 3. [`stages`]: per-tier compression and encryption behind a small
//!    header, applied by a [`Staged`](crate::Staged) tier.
//! 4. `encryption` (feature `encryption`): the AES-256-GCM
//!    [`Encryptor`](crate::Encryptor) the stages call.
//!
//! Whatever does not decode (another format, other stages, a wrong key,
//! corruption) is a [`CodecError`](crate::CodecError), which readers turn
//! into a logged miss. Nothing here does I/O.

#[cfg(feature = "encryption")]
pub mod encryption;
pub mod envelope;
pub(crate) mod format;
pub(crate) mod stages;
