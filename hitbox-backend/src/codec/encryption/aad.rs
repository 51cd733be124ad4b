//! The additional authenticated data (AAD) that binds a ciphertext to where
//! it is stored.
//!
//! AES-GCM authenticates these bytes without storing them: a reader rebuilds
//! them from what it knows (its tenant, the cache key it asked for, its
//! format and whether it decompresses) and decryption fails unless every
//! field matches what the writer used. A ciphertext copied to another key,
//! tenant or format therefore does not open.

use std::borrow::Cow;

/// The AAD layout version this module writes.
pub const AAD_VERSION: u8 = 0x03;

/// What an entry is bound to, besides the tenant (which belongs to the
/// encryptor).
///
/// ```
/// use hitbox_backend::encryption::{EntryBinding, aad_v3};
///
/// let binding = EntryBinding::new("users:42", "msgpack").compressed(true);
/// let aad = aad_v3("default", &binding);
/// assert_eq!(aad[0], 0x03);
/// assert!(aad.ends_with(b"\0\0\0\x04True"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryBinding<'a> {
    /// The full cache key the entry is stored under.
    pub cache_key: &'a str,
    /// The format token (see [`format_token`]).
    pub format: &'a str,
    /// Whether the plaintext is compressed.
    pub compressed: bool,
    /// The optional fifth field some SDKs add, naming the value's original
    /// type (`arrow`, `numpy`, ...). Hitbox itself never sets it.
    pub original_type: Option<&'a str>,
}

impl<'a> EntryBinding<'a> {
    /// An uncompressed entry under `cache_key` in the format `format`.
    pub fn new(cache_key: &'a str, format: &'a str) -> Self {
        EntryBinding {
            cache_key,
            format,
            compressed: false,
            original_type: None,
        }
    }

    /// Sets whether the plaintext is compressed.
    pub fn compressed(mut self, compressed: bool) -> Self {
        self.compressed = compressed;
        self
    }

    /// Sets the original-type field.
    pub fn original_type(mut self, original_type: &'a str) -> Self {
        self.original_type = Some(original_type);
        self
    }
}

/// Builds the version 3 AAD: the byte `0x03`, then the tenant id, the cache
/// key, the format token, the compressed token (the ASCII word `True` or
/// `False`) and, when set, the original type, each written as a big-endian
/// `u32` length followed by the bytes.
///
/// # Panics
///
/// When a field is longer than 4 GiB, which no cache key or tenant is.
pub fn aad_v3(tenant: &str, binding: &EntryBinding<'_>) -> Vec<u8> {
    let compressed: &str = if binding.compressed { "True" } else { "False" };
    let mut fields = vec![tenant, binding.cache_key, binding.format, compressed];
    fields.extend(binding.original_type);
    let len = 1 + fields.iter().map(|f| 4 + f.len()).sum::<usize>();
    let mut aad = Vec::with_capacity(len);
    aad.push(AAD_VERSION);
    for field in fields {
        let field_len = u32::try_from(field.len()).expect("an AAD field is shorter than 4 GiB");
        aad.extend_from_slice(&field_len.to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    aad
}

/// The format token bound into the AAD for a hitbox format id.
///
/// | id | format | token |
/// |---|---|---|
/// | 0 | no hitbox envelope (raw bytes given to a staged tier) | `raw` |
/// | 1 | postcard | `postcard` |
/// | 2 | bitcode | `bitcode` |
/// | 3 | JSON | `json` |
/// | 4 | bincode | `bincode` |
/// | 5 | MessagePack | `msgpack` (the token every cachekit SDK uses) |
/// | other | unknown | `format-<id>` |
pub fn format_token(format_id: u8) -> Cow<'static, str> {
    match format_id {
        0 => Cow::Borrowed("raw"),
        1 => Cow::Borrowed("postcard"),
        2 => Cow::Borrowed("bitcode"),
        3 => Cow::Borrowed("json"),
        4 => Cow::Borrowed("bincode"),
        5 => Cow::Borrowed("msgpack"),
        other => Cow::Owned(format!("format-{other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_length_prefixed() {
        let aad = aad_v3("t", &EntryBinding::new("k", "json").original_type("x"));
        let mut expected = vec![3];
        for field in ["t", "k", "json", "False", "x"] {
            expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
            expected.extend_from_slice(field.as_bytes());
        }
        assert_eq!(aad, expected);
    }

    #[test]
    fn tokens_are_distinct() {
        let tokens: std::collections::HashSet<_> = (0..=255).map(format_token).collect();
        assert_eq!(tokens.len(), 256);
    }
}
