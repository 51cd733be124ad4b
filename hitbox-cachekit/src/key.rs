//! Cache keys as one URL path segment.
//!
//! The protocol's rule: percent-encode the key's UTF-8 bytes, leaving only
//! `A-Z a-z 0-9 - . _ ~` raw, exactly once (an existing `%2e` is data and
//! becomes `%252e`). The keys `""`, `.`, `..`, `health`, `ttl` and `lock`
//! would address another route or collapse in a URL parser, so they are
//! refused before any URL is built.
//!
//! [`encode_key_segment`] is the encoder alone and reproduces every row of
//! the protocol's `path-encoding.json`. [`key_path_segment`], which the
//! backend uses for every call, adds the limits cachekit's own Rust SDK
//! applies before sending: at most [`MAX_KEY_BYTES`] bytes and no control
//! bytes (the vectors show how such bytes would be encoded, but no key
//! holding them can ever be stored, so the backend does not send them).
//!
//! The service's own rules are stricter (protocol `cache-key-format.md`,
//! Server-Side Requirements): after decoding the segment once, a key is at
//! most [`MAX_SERVICE_KEY_LEN`] characters of `[A-Za-z0-9_.:-]`, holds no
//! `..`, and a key starting `ns:` or `nsapi:` names a namespace of 1 to 64
//! `[A-Za-z0-9_-]` before its next `:`. It answers 400 otherwise. The
//! crate's own calls (`set`, `read_with_freshness`, ...) send what they are
//! given, as the protocol asks of a client (`a:..` is sent, and refused by
//! the service), and report that 400 as
//! [`CachekitError::BadRequest`].
//!
//! hitbox's own keys often hold other characters (`=`, `/`, `%`, `#` from
//! [`CacheKey`](hitbox_core::CacheKey) encoding), so the
//! [`Backend`](hitbox_backend::Backend) implementation sends every key
//! through [`wire_key`]: a key the service accepts goes as it is (interop
//! keys, `user:42`), any other as [`DIGEST_KEY_PREFIX`] followed by the hex
//! BLAKE2b-256 digest of the key. Keys that already start with that prefix
//! are digested too, so a key sent as it is never equals another key's
//! digest form.

use std::borrow::Cow;

use blake2::{Blake2b256, Digest};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::CachekitError;

/// Everything but `A-Z a-z 0-9 - . _ ~` is escaped.
const KEY_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The keys that can never be sent: they are empty, dot segments, or the
/// names of the API's own routes.
pub const RESERVED_KEYS: [&str; 6] = ["", ".", "..", "health", "ttl", "lock"];

/// The longest key the service accepts, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The `{key}` path segment for `key`, or an error for a reserved key.
///
/// ```
/// use hitbox_cachekit::encode_key_segment;
/// assert_eq!(encode_key_segment("User:Key").unwrap(), "User%3AKey");
/// assert_eq!(encode_key_segment("100%").unwrap(), "100%25");
/// assert!(encode_key_segment("health").is_err());
/// ```
pub fn encode_key_segment(key: &str) -> Result<String, CachekitError> {
    if RESERVED_KEYS.contains(&key) {
        return Err(CachekitError::InvalidKey {
            reason: "the key is empty, a dot segment or a reserved route name",
        });
    }
    Ok(utf8_percent_encode(key, KEY_SEGMENT).to_string())
}

/// Checks `key` against the client-side rules, then encodes it: the
/// reserved keys, the length limit ([`MAX_KEY_BYTES`]) and control bytes (C0
/// and DEL) are refused before a URL exists. The service's stricter rules
/// are its to apply ([`is_service_key`] says whether a key passes them).
pub fn key_path_segment(key: &str) -> Result<String, CachekitError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(CachekitError::InvalidKey {
            reason: "the key is longer than 1024 bytes",
        });
    }
    if key.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(CachekitError::InvalidKey {
            reason: "the key holds a control byte",
        });
    }
    encode_key_segment(key)
}

/// The longest key the service stores, in characters, after its one
/// percent-decode (its keys are ASCII, so bytes and characters agree).
pub const MAX_SERVICE_KEY_LEN: usize = 400;

/// The longest namespace in an `ns:{namespace}:` or `nsapi:{namespace}:`
/// key.
pub const MAX_SERVICE_NAMESPACE_LEN: usize = 64;

/// What [`wire_key`] puts before the digest of a key the service would
/// refuse. It starts with `_`, which no interop key can (their namespace
/// starts with `[a-z0-9]`), so interop keys always travel unchanged.
pub const DIGEST_KEY_PREFIX: &str = "_hitbox-digest:";

/// Whether the service stores `key` as it is: it is not a reserved key
/// ([`RESERVED_KEYS`]), it is 1 to [`MAX_SERVICE_KEY_LEN`] characters of
/// `[A-Za-z0-9_.:-]` without `..`, and when it starts `ns:` or `nsapi:`,
/// the namespace up to the next `:` (or the end) is 1 to 64 characters of
/// `[A-Za-z0-9_-]`.
///
/// The namespace rule is read strictly: the protocol speaks of keys
/// starting `ns:{namespace}:`, and a key such as `ns:a.b`, with no second
/// `:`, could be read either way, so it counts as refused.
///
/// ```
/// use hitbox_cachekit::is_service_key;
///
/// assert!(is_service_key("users:get_user:61598716"));
/// assert!(is_service_key("ns:users:profile:42"));
/// assert!(!is_service_key("ns:my.app:profile:42"));
/// assert!(!is_service_key("users:v1:id=7"));
/// assert!(!is_service_key("a:..b"));
/// assert!(!is_service_key(&"k".repeat(401)));
/// ```
pub fn is_service_key(key: &str) -> bool {
    let charset_ok = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if !charset_ok || key.is_empty() || key.len() > MAX_SERVICE_KEY_LEN || key.contains("..") {
        return false;
    }
    if RESERVED_KEYS.contains(&key) {
        return false;
    }
    let prefixed = key.strip_prefix("ns:").or_else(|| key.strip_prefix("nsapi:"));
    match prefixed {
        None => true,
        Some(rest) => {
            let namespace = rest.split(':').next().unwrap_or_default();
            (1..=MAX_SERVICE_NAMESPACE_LEN).contains(&namespace.len())
                && namespace
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        }
    }
}

/// The key the [`Backend`](hitbox_backend::Backend) implementation sends
/// for `key`: `key` itself when the service stores it as it is
/// ([`is_service_key`]) and it does not start with [`DIGEST_KEY_PREFIX`];
/// otherwise [`DIGEST_KEY_PREFIX`] followed by the lowercase hex
/// BLAKE2b-256 digest of `key`, which the service always accepts.
///
/// Two different keys never share a wire key (short of a BLAKE2b
/// collision): a key sent as it is never starts with the prefix, and every
/// key that does is digested. Use this to reach, through the crate's own
/// calls, an entry the engine wrote.
///
/// ```
/// use hitbox_cachekit::{DIGEST_KEY_PREFIX, is_service_key, wire_key};
///
/// // Interop keys and plain keys travel as they are.
/// assert_eq!(wire_key("users:get_user:0a1b"), "users:get_user:0a1b");
/// // hitbox keys with `=` (or `/`, `%`, `#`) are digested.
/// let digested = wire_key("users:v1:id=7");
/// assert!(digested.starts_with(DIGEST_KEY_PREFIX));
/// assert_eq!(digested.len(), DIGEST_KEY_PREFIX.len() + 64);
/// assert!(is_service_key(&digested));
/// // A key that looks like a digest form is digested again.
/// assert_ne!(wire_key(&digested), digested);
/// ```
pub fn wire_key(key: &str) -> Cow<'_, str> {
    if is_service_key(key) && !key.starts_with(DIGEST_KEY_PREFIX) {
        return Cow::Borrowed(key);
    }
    let digest = Blake2b256::digest(key.as_bytes());
    let mut out = String::with_capacity(DIGEST_KEY_PREFIX.len() + 64);
    out.push_str(DIGEST_KEY_PREFIX);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    Cow::Owned(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_key_rules() {
        for good in [
            "a",
            "user:42",
            "User_Key-1.2:x",
            "ns:users:",
            "ns:users:profile:42",
            "nsapi:Users-2_b:x",
            "ns:key",
            "nsx:a.b",
            "ns",
            "nsapi",
            &"k".repeat(400),
            &format!("ns:{}:x", "n".repeat(64)),
        ] {
            assert!(is_service_key(good), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "health",
            "ttl",
            "lock",
            "a..b",
            "..a",
            "a:..",
            "a b",
            "a/b",
            "a%2Fb",
            "a~b",
            "a=b",
            "caf\u{e9}",
            "a\nb",
            &"k".repeat(401),
            "ns::x",
            "ns:a.b:x",
            "ns:a.b",
            "nsapi:",
            &format!("ns:{}:x", "n".repeat(65)),
        ] {
            assert!(!is_service_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn wire_keys_are_distinct_and_always_accepted() {
        let keys = [
            "users:v1:id=7",
            "api:v1:path=/a/b",
            "..",
            "health",
            &"k".repeat(401),
            "plain",
        ];
        let mut seen = std::collections::HashSet::new();
        for key in keys {
            let wire = wire_key(key);
            assert!(is_service_key(&wire), "{key:?} -> {wire:?}");
            assert!(seen.insert(wire.into_owned()), "{key:?}");
        }
        assert!(matches!(wire_key("plain"), Cow::Borrowed("plain")));
        // Interop keys never look like a digest form.
        let interop = crate::interop::interop_key("hitbox-digest", "get", &[]).unwrap();
        assert_eq!(wire_key(&interop), interop);
        // Forging a digest form gets a different wire key.
        let digested = wire_key("users:v1:id=7").into_owned();
        assert_eq!(wire_key(&digested).len(), digested.len());
        assert_ne!(wire_key(&digested), digested);
        // Deterministic across calls (and processes: no seed).
        assert_eq!(wire_key("users:v1:id=7"), digested);
    }
}
