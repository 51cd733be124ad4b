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
//! backend uses, adds the service's limits on keys: at most
//! [`MAX_KEY_BYTES`] bytes and no control bytes (the vectors show how such
//! bytes would be encoded, but the service refuses those keys, so the
//! backend does not send them).

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

/// Checks `key` against every rule of the service, then encodes it: the
/// reserved keys, the length limit and control bytes (C0 and DEL) are
/// refused before a URL exists.
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
