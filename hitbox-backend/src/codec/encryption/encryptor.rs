//! The AES-256-GCM encryptor stage.

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use super::EncryptionError;
use super::aad::{EntryBinding, aad_v3, format_token};
use super::key::{DEFAULT_TENANT, KeyFingerprint, MasterKey, PREVIOUS_MASTER_KEYS_ENV, read_env};
use super::nonce::{CounterNonces, NONCE_LEN, NonceSource};
use crate::codec::stages::{EncryptionContext, Encryptor};
use crate::error::CodecError;

/// The encryptor id recorded in staged entries written by [`AesGcmEncryptor`].
pub const AES_GCM_ENCRYPTOR_ID: u8 = 1;

/// How many previous master keys a keyring may hold.
pub const MAX_PREVIOUS_KEYS: usize = 3;

/// The length of the GCM authentication tag, in bytes.
pub const TAG_LEN: usize = 16;

/// One derived key, ready to use.
struct KeySlot {
    cipher: Aes256Gcm,
    fingerprint: KeyFingerprint,
}

impl KeySlot {
    fn new(master: &MasterKey, tenant: &str) -> Result<Self, EncryptionError> {
        let derived = master.derive(tenant)?;
        let cipher = Aes256Gcm::new_from_slice(derived.as_bytes()).expect("a derived key is 32 bytes");
        Ok(KeySlot {
            cipher,
            fingerprint: derived.fingerprint(),
        })
    }
}

/// AES-256-GCM with per-tenant keys, wire-compatible with the cachekit SDKs.
///
/// Stored bytes are `nonce (12) || ciphertext || tag (16)`. The AAD (see
/// [`aad_v3`]) binds each ciphertext to the tenant, the full cache key, the
/// format and whether the plaintext is compressed, so an entry copied under
/// another key or read by another tenant does not decrypt: it is a miss.
///
/// Encryption is on only where one is built and given to
/// [`Stages::encryptor`](crate::Stages::encryptor); nothing turns it on from
/// the environment.
///
/// ```
/// use hitbox_backend::encryption::{AesGcmEncryptor, EntryBinding, MasterKey};
///
/// let master = MasterKey::from_hex(&"61".repeat(32)).unwrap();
/// let encryptor = AesGcmEncryptor::builder(master).tenant("acme").build().unwrap();
///
/// let binding = EntryBinding::new("users:42", "msgpack");
/// let sealed = encryptor.seal(&binding, b"secret").unwrap();
/// assert_eq!(sealed.len(), 12 + 6 + 16);
/// assert_eq!(encryptor.open(&binding, &sealed).unwrap(), b"secret");
/// assert!(encryptor.open(&EntryBinding::new("users:43", "msgpack"), &sealed).is_err());
/// ```
pub struct AesGcmEncryptor {
    tenant: Arc<str>,
    current: KeySlot,
    previous: Vec<KeySlot>,
    nonces: Box<dyn NonceSource>,
}

impl AesGcmEncryptor {
    /// An encryptor for the tenant `"default"` with no previous keys.
    pub fn new(master: MasterKey) -> Self {
        Self::builder(master)
            .build()
            .expect("the default tenant and an empty keyring are valid")
    }

    /// Starts configuring an encryptor whose current key is `master`.
    pub fn builder(master: MasterKey) -> AesGcmEncryptorBuilder {
        AesGcmEncryptorBuilder {
            master,
            tenant: DEFAULT_TENANT.to_owned(),
            previous: Vec::new(),
            nonces: None,
        }
    }

    /// An encryptor for the tenant `"default"` whose current key is
    /// `CACHEKIT_MASTER_KEY` and whose previous keys are
    /// `CACHEKIT_PREVIOUS_MASTER_KEYS` (optional; comma-separated hex keys,
    /// white space around each ignored, at most three, not the current one).
    ///
    /// Only ever called explicitly: the variables being set never turn
    /// encryption on by themselves. Use [`builder`](Self::builder) with
    /// [`MasterKey::from_env`] to choose another tenant.
    pub fn from_env() -> Result<Self, EncryptionError> {
        let mut builder = Self::builder(MasterKey::from_env()?);
        if let Some(list) = read_env(PREVIOUS_MASTER_KEYS_ENV)? {
            let list = zeroize::Zeroizing::new(list);
            let keys = parse_key_list(&list).map_err(|source| EncryptionError::EnvInvalid {
                var: PREVIOUS_MASTER_KEYS_ENV,
                source: Box::new(source),
            })?;
            builder = builder.previous_keys(keys);
        }
        builder.build()
    }

    /// The tenant whose keys this encryptor uses.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The fingerprint of the current derived key (safe to log).
    pub fn fingerprint(&self) -> KeyFingerprint {
        self.current.fingerprint
    }

    /// The fingerprints of the previous keys, in the order they are tried.
    pub fn previous_fingerprints(&self) -> Vec<KeyFingerprint> {
        self.previous.iter().map(|slot| slot.fingerprint).collect()
    }

    /// The AAD this encryptor binds `binding` to (its tenant comes first).
    pub fn aad(&self, binding: &EntryBinding<'_>) -> Vec<u8> {
        aad_v3(&self.tenant, binding)
    }

    /// Encrypts `plaintext` under the current key: `nonce || ciphertext || tag`.
    pub fn seal(&self, binding: &EntryBinding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CodecError> {
        let nonce = self
            .nonces
            .next_nonce()
            .map_err(|e| CodecError::Encrypt(e.to_string()))?;
        let aad = self.aad(binding);
        let body = self
            .current
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CodecError::Encrypt("AES-GCM refused the input (too long)".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + body.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts what [`seal`](Self::seal) (or another cachekit SDK) wrote
    /// under the same binding, trying the current key, then each previous
    /// key. Any failure is [`CodecError::Decrypt`].
    pub fn open(&self, binding: &EntryBinding<'_>, sealed: &[u8]) -> Result<Vec<u8>, CodecError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CodecError::Decrypt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        let nonce = Nonce::from(nonce);
        let aad = self.aad(binding);
        let payload = || Payload { msg: body, aad: &aad };
        if let Ok(plain) = self.current.cipher.decrypt(&nonce, payload()) {
            return Ok(plain);
        }
        for slot in &self.previous {
            if let Ok(plain) = slot.cipher.decrypt(&nonce, payload()) {
                tracing::debug!(fingerprint = %slot.fingerprint, "entry decrypted with a previous key");
                return Ok(plain);
            }
        }
        Err(CodecError::Decrypt)
    }
}

impl fmt::Debug for AesGcmEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesGcmEncryptor")
            .field("tenant", &self.tenant)
            .field("fingerprint", &self.current.fingerprint)
            .field("previous", &self.previous_fingerprints())
            .finish_non_exhaustive()
    }
}

impl Encryptor for AesGcmEncryptor {
    fn id(&self) -> u8 {
        AES_GCM_ENCRYPTOR_ID
    }

    fn encrypt(&self, context: &EncryptionContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CodecError> {
        let format = format_token(context.format_id);
        let binding = EntryBinding::new(context.key.as_str(), &format).compressed(context.compressed);
        self.seal(&binding, plaintext)
    }

    fn decrypt(&self, context: &EncryptionContext<'_>, ciphertext: &[u8]) -> Result<Vec<u8>, CodecError> {
        let format = format_token(context.format_id);
        let binding = EntryBinding::new(context.key.as_str(), &format).compressed(context.compressed);
        self.open(&binding, ciphertext)
    }
}

/// Configures an [`AesGcmEncryptor`]; made by [`AesGcmEncryptor::builder`].
///
/// ```
/// use hitbox_backend::{AesGcmEncryptor, MasterKey};
///
/// let master = MasterKey::from_hex(&"2b".repeat(32)).unwrap();
/// let encryptor = AesGcmEncryptor::builder(master).tenant("acme").build().unwrap();
/// ```
pub struct AesGcmEncryptorBuilder {
    master: MasterKey,
    tenant: String,
    previous: Vec<MasterKey>,
    nonces: Option<Box<dyn NonceSource>>,
}

impl fmt::Debug for AesGcmEncryptorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesGcmEncryptorBuilder")
            .field("tenant", &self.tenant)
            .field("previous", &self.previous.len())
            .finish_non_exhaustive()
    }
}

impl AesGcmEncryptorBuilder {
    /// The tenant whose keys are derived (default `"default"`). Every SDK
    /// reading the same entries must use the same tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// Adds an older master key, used only to decrypt entries written
    /// before a rotation. Keys are tried in the order they are added.
    pub fn previous_key(mut self, key: MasterKey) -> Self {
        self.previous.push(key);
        self
    }

    /// Adds several older master keys (see [`previous_key`](Self::previous_key)).
    pub fn previous_keys(mut self, keys: impl IntoIterator<Item = MasterKey>) -> Self {
        self.previous.extend(keys);
        self
    }

    /// Replaces the default nonce source ([`CounterNonces`]).
    ///
    /// [`RandomNonces`](super::RandomNonces) is the other safe choice; the
    /// fixed source exists only to reproduce published test vectors.
    pub fn nonce_source(mut self, nonces: impl NonceSource) -> Self {
        self.nonces = Some(Box::new(nonces));
        self
    }

    /// Derives the keys. Fails on an empty or over-long tenant, more than
    /// [`MAX_PREVIOUS_KEYS`] previous keys, or a previous key equal to the
    /// current one.
    pub fn build(self) -> Result<AesGcmEncryptor, EncryptionError> {
        if self.previous.len() > MAX_PREVIOUS_KEYS {
            return Err(EncryptionError::TooManyPreviousKeys {
                max: MAX_PREVIOUS_KEYS,
                found: self.previous.len(),
            });
        }
        if self.previous.contains(&self.master) {
            return Err(EncryptionError::PreviousKeyIsCurrent);
        }
        let current = KeySlot::new(&self.master, &self.tenant)?;
        let previous = self
            .previous
            .iter()
            .map(|key| KeySlot::new(key, &self.tenant))
            .collect::<Result<_, _>>()?;
        Ok(AesGcmEncryptor {
            tenant: self.tenant.into(),
            current,
            previous,
            nonces: self.nonces.unwrap_or_else(|| Box::new(CounterNonces::new())),
        })
    }
}

/// Parses `CACHEKIT_PREVIOUS_MASTER_KEYS`: hex keys separated by commas,
/// white space around each ignored; an empty list is no keys.
fn parse_key_list(list: &str) -> Result<Vec<MasterKey>, EncryptionError> {
    if list.trim().is_empty() {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|item| MasterKey::from_hex(item.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn keyring_rules() {
        let too_many = AesGcmEncryptor::builder(key(1)).previous_keys([key(2), key(3), key(4), key(5)]);
        assert!(matches!(
            too_many.build(),
            Err(EncryptionError::TooManyPreviousKeys { max: 3, found: 4 })
        ));
        let current_again = AesGcmEncryptor::builder(key(1)).previous_key(key(1));
        assert!(matches!(
            current_again.build(),
            Err(EncryptionError::PreviousKeyIsCurrent)
        ));
        let three = AesGcmEncryptor::builder(key(1))
            .previous_keys([key(2), key(3), key(4)])
            .build()
            .unwrap();
        assert_eq!(three.previous_fingerprints().len(), 3);
    }

    #[test]
    fn previous_keys_decrypt_but_never_encrypt() {
        let old = AesGcmEncryptor::new(key(1));
        let binding = EntryBinding::new("k", "msgpack");
        let sealed = old.seal(&binding, b"value").unwrap();
        let rotated = AesGcmEncryptor::builder(key(2))
            .previous_key(key(1))
            .build()
            .unwrap();
        assert_eq!(rotated.open(&binding, &sealed).unwrap(), b"value");
        let fresh = rotated.seal(&binding, b"value").unwrap();
        assert_eq!(old.open(&binding, &fresh), Err(CodecError::Decrypt));
        let without = AesGcmEncryptor::new(key(2));
        assert_eq!(without.open(&binding, &sealed), Err(CodecError::Decrypt));
    }

    #[test]
    fn short_inputs_are_decrypt_errors() {
        let encryptor = AesGcmEncryptor::new(key(1));
        let binding = EntryBinding::new("k", "msgpack");
        for len in 0..=NONCE_LEN + TAG_LEN {
            assert_eq!(encryptor.open(&binding, &vec![0; len]), Err(CodecError::Decrypt));
        }
    }

    #[test]
    fn key_lists() {
        let a = "11".repeat(32);
        let b = "22".repeat(32);
        assert_eq!(parse_key_list("").unwrap().len(), 0);
        assert_eq!(
            parse_key_list(&format!("{a}, {b}")).unwrap(),
            vec![key(0x11), key(0x22)]
        );
        assert!(parse_key_list(&format!("{a},")).is_err());
        assert!(parse_key_list(&format!("{a},0x{b}")).is_err());
    }

    #[test]
    fn debug_shows_fingerprints_only() {
        let encryptor = AesGcmEncryptor::new(key(0xab));
        let debug = format!("{encryptor:?}");
        assert!(debug.contains(&encryptor.fingerprint().to_string()));
        assert!(!debug.contains("abab"));
    }
}
