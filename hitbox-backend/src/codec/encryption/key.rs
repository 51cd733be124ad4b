//! Master keys, per-tenant key derivation and key fingerprints.
//!
//! A master key is the one secret an operator configures; it is never used
//! to encrypt directly. Each tenant gets its own AES key, derived from the
//! master key with HKDF-SHA256, so that a ciphertext written for one tenant
//! cannot be opened under another even though both share the master key.

use std::fmt;

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::EncryptionError;

/// The length of a master key and of a derived key, in bytes.
pub const KEY_LEN: usize = 32;

/// The HKDF domain of the encryption keys; also the HKDF `info`.
const ENCRYPTION_DOMAIN: &[u8] = b"encryption";

/// The first bytes of every HKDF salt.
const SALT_PREFIX: &[u8] = b"cachekit_v1_";

/// What the fingerprint hash starts with, before the derived key.
const FINGERPRINT_LABEL: &[u8] = b"key_fingerprint_v1";

/// The tenant used when none is configured. Every cachekit SDK uses this
/// literal, so entries written without a tenant are shared between them.
pub const DEFAULT_TENANT: &str = "default";

/// The environment variable [`MasterKey::from_env`] reads.
pub const MASTER_KEY_ENV: &str = "CACHEKIT_MASTER_KEY";

/// The environment variable holding older master keys, comma-separated,
/// read by [`AesGcmEncryptor::from_env`](super::AesGcmEncryptor::from_env).
pub const PREVIOUS_MASTER_KEYS_ENV: &str = "CACHEKIT_PREVIOUS_MASTER_KEYS";

/// A 32-byte master key.
///
/// Built from the hex form operators put in `CACHEKIT_MASTER_KEY`
/// (`openssl rand -hex 32` prints one) or from exactly 32 raw bytes. The
/// bytes are wiped from memory when the key is dropped, and neither
/// [`Debug`] nor any error message ever shows them.
///
/// ```
/// use hitbox_backend::encryption::MasterKey;
///
/// let key = MasterKey::from_hex(&"61".repeat(32)).unwrap();
/// assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
/// assert!(MasterKey::from_hex("0x6161").is_err());
/// assert!(MasterKey::from_bytes(&[0u8; 16]).is_err());
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    bytes: [u8; KEY_LEN],
}

impl MasterKey {
    /// Parses a key written as exactly 64 hex digits (either case).
    ///
    /// Nothing is trimmed or skipped: white space, a `0x` prefix, a sign, an
    /// odd number of digits or any other length is refused, so a key is never
    /// silently read as a shorter or different one.
    pub fn from_hex(hex: &str) -> Result<Self, EncryptionError> {
        let digits = hex.as_bytes();
        if digits.len() != 2 * KEY_LEN {
            return Err(EncryptionError::HexLength {
                expected: 2 * KEY_LEN,
                found: digits.len(),
            });
        }
        let mut key = MasterKey { bytes: [0; KEY_LEN] };
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let high = hex_value(pair[0]).ok_or(EncryptionError::HexDigit { position: 2 * i })?;
            let low = hex_value(pair[1]).ok_or(EncryptionError::HexDigit { position: 2 * i + 1 })?;
            key.bytes[i] = (high << 4) | low;
        }
        Ok(key)
    }

    /// Takes exactly 32 raw key bytes.
    ///
    /// This entry point never interprets the bytes as text: 64 ASCII hex
    /// digits are 64 bytes, and refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EncryptionError> {
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| EncryptionError::KeyLength {
            expected: KEY_LEN,
            found: bytes.len(),
        })?;
        Ok(MasterKey { bytes })
    }

    /// Reads the hex key in `CACHEKIT_MASTER_KEY`.
    ///
    /// Only ever called explicitly: the variable being set never turns
    /// encryption on by itself.
    pub fn from_env() -> Result<Self, EncryptionError> {
        let value = read_env(MASTER_KEY_ENV)?.ok_or(EncryptionError::EnvMissing { var: MASTER_KEY_ENV })?;
        let key = MasterKey::from_hex(&value).map_err(|source| EncryptionError::EnvInvalid {
            var: MASTER_KEY_ENV,
            source: Box::new(source),
        });
        drop(zeroize::Zeroizing::new(value));
        key
    }

    /// Derives the AES key of `tenant` (see [`DerivedKey`]).
    pub fn derive(&self, tenant: &str) -> Result<DerivedKey, EncryptionError> {
        check_tenant(tenant)?;
        let mut salt = Vec::with_capacity(SALT_PREFIX.len() + 1 + ENCRYPTION_DOMAIN.len() + 2 + tenant.len());
        salt.extend_from_slice(SALT_PREFIX);
        salt.push(ENCRYPTION_DOMAIN.len() as u8);
        salt.extend_from_slice(ENCRYPTION_DOMAIN);
        salt.extend_from_slice(&(tenant.len() as u16).to_be_bytes());
        salt.extend_from_slice(tenant.as_bytes());
        let hkdf = Hkdf::<Sha256>::new(Some(&salt), &self.bytes);
        let mut derived = DerivedKey { bytes: [0; KEY_LEN] };
        hkdf.expand(ENCRYPTION_DOMAIN, &mut derived.bytes)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Ok(derived)
    }
}

/// Compares in constant time: how long a comparison takes says nothing
/// about where two keys differ.
impl PartialEq for MasterKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.bytes, &other.bytes)
    }
}

impl Eq for MasterKey {}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// A tenant's AES-256 key, derived from a [`MasterKey`].
///
/// HKDF-SHA256 with the master key as input key material,
/// `salt = "cachekit_v1_" || u8(len(domain)) || domain || u16be(len(tenant)) || tenant`,
/// `info = domain` and `domain = "encryption"`, 32 bytes out: the same key
/// every cachekit SDK derives. Wiped on drop; only its
/// [fingerprint](Self::fingerprint) can be shown.
///
/// ```
/// use hitbox_backend::encryption::MasterKey;
///
/// let master = MasterKey::from_hex(&"61".repeat(32)).unwrap();
/// let acme = master.derive("acme").unwrap();
/// let globex = master.derive("globex").unwrap();
/// assert_ne!(acme.fingerprint(), globex.fingerprint());
/// assert_eq!(acme.fingerprint().to_string().len(), 32);
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DerivedKey {
    bytes: [u8; KEY_LEN],
}

impl DerivedKey {
    /// The key's fingerprint: the first 16 bytes of
    /// `SHA-256("key_fingerprint_v1" || key)`. Safe to log; it tells keys
    /// apart without revealing them.
    pub fn fingerprint(&self) -> KeyFingerprint {
        let digest = Sha256::new()
            .chain_update(FINGERPRINT_LABEL)
            .chain_update(self.bytes)
            .finalize();
        let mut out = [0; 16];
        out.copy_from_slice(&digest[..16]);
        KeyFingerprint(out)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

/// Compares in constant time, like [`MasterKey`].
impl PartialEq for DerivedKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.bytes, &other.bytes)
    }
}

impl Eq for DerivedKey {}

impl fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DerivedKey").field(&self.fingerprint()).finish()
    }
}

/// A key's 16-byte fingerprint; [`Display`](fmt::Display) prints it as 32
/// lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyFingerprint([u8; 16]);

impl KeyFingerprint {
    /// The fingerprint's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({self})")
    }
}

/// A tenant id must fit the salt's 16-bit length; an empty one is refused
/// as a configuration mistake (the default is [`DEFAULT_TENANT`]).
pub(crate) fn check_tenant(tenant: &str) -> Result<(), EncryptionError> {
    if tenant.is_empty() {
        return Err(EncryptionError::Tenant {
            reason: "it is empty",
        });
    }
    if tenant.len() > usize::from(u16::MAX) {
        return Err(EncryptionError::Tenant {
            reason: "it is longer than 65535 bytes",
        });
    }
    Ok(())
}

/// Reads an environment variable; `None` when it is not set.
pub(crate) fn read_env(var: &'static str) -> Result<Option<String>, EncryptionError> {
    match std::env::var(var) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(EncryptionError::EnvNotUnicode { var }),
    }
}

fn constant_time_eq(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_raw_forms_agree() {
        let raw: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37)).collect();
        let hex: String = raw.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            MasterKey::from_hex(&hex).unwrap(),
            MasterKey::from_bytes(&raw).unwrap()
        );
    }

    #[test]
    fn errors_never_show_the_key() {
        let mut bad = "ab".repeat(32);
        bad.replace_range(10..11, "z");
        let error = MasterKey::from_hex(&bad).unwrap_err();
        assert_eq!(error, EncryptionError::HexDigit { position: 10 });
        assert!(!error.to_string().contains("abab"));
    }

    #[test]
    fn keys_compare_by_value() {
        let key = MasterKey::from_bytes(&[7; 32]).unwrap();
        let mut other = [7; 32];
        assert_eq!(key, MasterKey::from_bytes(&other).unwrap());
        other[31] = 8;
        assert_ne!(key, MasterKey::from_bytes(&other).unwrap());
        assert_eq!(key.derive("t").unwrap(), key.derive("t").unwrap());
        assert_ne!(key.derive("t").unwrap(), key.derive("u").unwrap());
    }

    #[test]
    fn tenants_are_checked() {
        let key = MasterKey::from_bytes(&[7; 32]).unwrap();
        assert!(key.derive("").is_err());
        assert!(key.derive(&"t".repeat(65_536)).is_err());
        assert!(key.derive(&"t".repeat(65_535)).is_ok());
    }
}
