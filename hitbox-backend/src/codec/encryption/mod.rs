//! The AES-256-GCM encryptor stage, wire-compatible with the cachekit SDKs
//! (feature `encryption`).
//!
//! An operator configures one 32-byte [`MasterKey`]. Each tenant's AES key
//! is derived from it with HKDF-SHA256 ([`DerivedKey`]), and every entry is
//! sealed as `nonce (12) || ciphertext || tag (16)` with an AAD ([`aad_v3`])
//! that binds it to the tenant, the full cache key, the format and the
//! compression flag. A reader that disagrees on any of these, holds the
//! wrong key, or finds a tampered byte gets [`CodecError::Decrypt`], which
//! a [`Staged`](crate::Staged) tier turns into a logged miss.
//!
//! Key rotation: the encryptor keeps up to three previous master keys that
//! it tries, in order, after the current one when decrypting; it always
//! encrypts with the current key. Nonces come from a [`NonceSource`]; the
//! default, [`CounterNonces`], is the reference scheme (a random 8-byte
//! instance id and a 4-byte counter).
//!
//! Encryption is switched on only by building an encryptor and handing it to
//! [`Stages::encryptor`](crate::Stages::encryptor).
//! [`MasterKey::from_env`] and [`AesGcmEncryptor::from_env`] read
//! `CACHEKIT_MASTER_KEY` and `CACHEKIT_PREVIOUS_MASTER_KEYS` when called,
//! and only then.
//!
//! Key material (master keys, derived keys, the ciphers' key schedules) is
//! wiped from memory on drop, and only key fingerprints ever reach `Debug`
//! output or logs.
//!
//! # Example
//!
//! ```
//! use hitbox_backend::encryption::{AesGcmEncryptor, MasterKey};
//! use hitbox_backend::{Cache, Compression, MemoryBackend, Staged, Stages};
//! use hitbox_core::CacheKey;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // In production: MasterKey::from_env(), or a key from a secret store.
//! let master = MasterKey::from_hex("6161616161616161616161616161616161616161616161616161616161616161")?;
//! let encryptor = AesGcmEncryptor::builder(master).tenant("acme").build()?;
//! println!("encrypting with key {}", encryptor.fingerprint());
//!
//! let memory = MemoryBackend::new();
//! let tier = Staged::new(memory.clone(), Stages::new().compression(Compression::zstd(3)).encryptor(encryptor));
//! let cache = Cache::new(tier);
//!
//! let key = CacheKey::from_encoded("acme:card:7");
//! cache.set(&key, &"4111 1111 1111 1111".to_string()).await?;
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("4111 1111 1111 1111"));
//!
//! // What the tier stores does not contain the plaintext.
//! let stored = memory.raw(&key).unwrap();
//! assert!(!stored.windows(4).any(|w| w == b"4111"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod aad;
mod encryptor;
mod key;
mod nonce;

pub use aad::{AAD_VERSION, EntryBinding, aad_v3, format_token};
pub use encryptor::{
    AES_GCM_ENCRYPTOR_ID, AesGcmEncryptor, AesGcmEncryptorBuilder, MAX_PREVIOUS_KEYS, TAG_LEN,
};
pub use key::{
    DEFAULT_TENANT, DerivedKey, KEY_LEN, KeyFingerprint, MASTER_KEY_ENV, MasterKey, PREVIOUS_MASTER_KEYS_ENV,
};
#[doc(hidden)]
pub use nonce::FixedNonces;
pub use nonce::{CounterNonces, NONCE_LEN, NonceSource, RandomNonces};

#[cfg(doc)]
use crate::CodecError;

/// Why a key, a tenant or an encryptor configuration was refused.
///
/// No variant carries key material: a bad hex digit is reported by its
/// position only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptionError {
    /// A hex master key does not have exactly 64 characters.
    #[error("a hex master key must have exactly {expected} hex digits, got {found} characters")]
    HexLength {
        /// The number of digits required.
        expected: usize,
        /// The number of characters given.
        found: usize,
    },
    /// A hex master key holds a character that is not a hex digit.
    #[error("the hex master key has a character that is not a hex digit at position {position}")]
    HexDigit {
        /// The character's byte offset.
        position: usize,
    },
    /// Raw master key bytes are not exactly 32 bytes.
    #[error("a raw master key must be exactly {expected} bytes, got {found}")]
    KeyLength {
        /// The number of bytes required.
        expected: usize,
        /// The number of bytes given.
        found: usize,
    },
    /// The tenant id cannot be used.
    #[error("invalid tenant id: {reason}")]
    Tenant {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More previous master keys than a keyring holds.
    #[error("at most {max} previous master keys are allowed, got {found}")]
    TooManyPreviousKeys {
        /// The limit.
        max: usize,
        /// The number given.
        found: usize,
    },
    /// A previous master key equals the current one.
    #[error("the previous master keys contain the current master key")]
    PreviousKeyIsCurrent,
    /// A required environment variable is not set.
    #[error("environment variable {var} is not set")]
    EnvMissing {
        /// The variable.
        var: &'static str,
    },
    /// An environment variable is not valid Unicode.
    #[error("environment variable {var} is not valid Unicode")]
    EnvNotUnicode {
        /// The variable.
        var: &'static str,
    },
    /// An environment variable holds an invalid key.
    #[error("environment variable {var} is invalid: {source}")]
    EnvInvalid {
        /// The variable.
        var: &'static str,
        /// What is wrong with its value.
        #[source]
        source: Box<EncryptionError>,
    },
    /// The nonce source has no fresh nonce left.
    #[error("the nonce source is exhausted")]
    NoncesExhausted,
}
