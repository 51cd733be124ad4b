//! Cache keys.

use std::fmt;
use std::sync::Arc;

use blake2::{Blake2b, Digest, digest::consts::U32};

type Blake2b256 = Blake2b<U32>;

/// Keys longer than this many bytes are stored under their digest.
pub const DEFAULT_MAX_KEY_LEN: usize = 250;

/// The key an entry is stored under.
///
/// A key is built from a namespace, a version and an ordered list of named
/// parts. Its encoding is stable (it is what lands in Redis and in every
/// other tier) and documented here:
///
/// ```text
/// key     = esc(namespace) ":v" version *( ":" part )
/// part    = esc(name) [ "=" esc(value) ]
/// digest  = esc(namespace) ":v" version ":#" hex(blake2b-256(key))
/// ```
///
/// `esc` keeps the printable ASCII bytes `!` to `~` except `%`, `:`, `=` and
/// `#`, and writes every other byte as `%XX` (upper-case hex). Because an
/// escaped segment never contains `:` or `=`, the encoding can be split back
/// into the exact parts it came from: two different part lists never give the
/// same key (`a:b` + `c` is `a%3Ab:c`, `a` + `b:c` is `a:b%3Ac`).
///
/// A key whose encoding is longer than the configured limit, or that holds a
/// part marked sensitive (an `Authorization` header, a session id), is stored
/// under its digest form instead. The namespace and version stay readable so
/// that an operator can still tell which family a key belongs to, while the
/// secret never leaves the process.
///
/// Cheap to clone (a reference-counted string). [`CacheKey::as_str`] is what
/// tiers see. The `Debug` and `Display` forms print only a short digest
/// ([`CacheKey::log_id`]), so a key is safe to put in logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    encoded: Arc<str>,
    digested: bool,
}

impl CacheKey {
    /// Starts a key in `namespace`, at version 1 with no parts.
    pub fn builder(namespace: impl AsRef<str>) -> KeyBuilder {
        KeyBuilder::new(namespace)
    }

    /// A key for the common shape `namespace`, then `tenant`, `entity` and
    /// `id` parts: `KeyBuilder::entity("app", "acme", "user", "42")`.
    pub fn entity(namespace: &str, tenant: &str, entity: &str, id: &str) -> CacheKey {
        KeyBuilder::new(namespace)
            .part("tenant", tenant)
            .part("entity", entity)
            .part("id", id)
            .build()
    }

    /// Takes an already encoded key as it is, for keys read back from a tier
    /// or handed over by another system. No escaping is applied.
    pub fn from_encoded(encoded: impl Into<Arc<str>>) -> CacheKey {
        CacheKey {
            encoded: encoded.into(),
            digested: false,
        }
    }

    /// The encoded key: what tiers store the entry under.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    /// Whether the key is stored under its digest (long or sensitive parts).
    pub fn is_digested(&self) -> bool {
        self.digested
    }

    /// A short, stable identifier for logs and traces: the first 16 hex
    /// digits of the BLAKE2b-256 digest of the encoded key. It is computed
    /// only when formatted, so a disabled log line costs nothing.
    pub fn log_id(&self) -> KeyLogId<'_> {
        KeyLogId(self)
    }

    /// The first eight bytes of the BLAKE2b-256 digest of the encoded key:
    /// what the engine's envelope records to bind an entry to the key it
    /// was written under (the bytes [`CacheKey::log_id`] prints in hex).
    ///
    /// ```
    /// use hitbox_core::CacheKey;
    ///
    /// let a = CacheKey::builder("users").part("id", "1").build();
    /// let b = CacheKey::builder("users").part("id", "2").build();
    /// assert_ne!(a.fingerprint(), b.fingerprint());
    /// assert_eq!(hex::encode(a.fingerprint()), a.log_id().to_string());
    /// ```
    pub fn fingerprint(&self) -> [u8; 8] {
        let digest = Blake2b256::digest(self.encoded.as_bytes());
        let mut out = [0; 8];
        out.copy_from_slice(&digest[..8]);
        out
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.log_id())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.log_id(), f)
    }
}

/// The log form of a key; see [`CacheKey::log_id`].
pub struct KeyLogId<'a>(&'a CacheKey);

impl fmt::Display for KeyLogId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.fingerprint()))
    }
}

impl fmt::Debug for KeyLogId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Builds a [`CacheKey`] part by part.
///
/// ```
/// use hitbox_core::CacheKey;
///
/// let key = CacheKey::builder("api")
///     .version(3)
///     .part("path", "/users/42")
///     .part("q", "a:b")
///     .build();
/// assert_eq!(key.as_str(), "api:v3:path=/users/42:q=a%3Ab");
///
/// // A sensitive part sends the whole key through BLAKE2b-256.
/// let private = CacheKey::builder("api").sensitive_part("authorization", "Bearer s3cr3t").build();
/// assert!(private.is_digested());
/// assert!(private.as_str().starts_with("api:v1:#"));
/// assert!(!private.as_str().contains("s3cr3t"));
/// ```
#[derive(Clone)]
pub struct KeyBuilder {
    /// The key as built so far: `esc(namespace) ":v" version`, then the
    /// parts. Only printable ASCII is ever written into it.
    encoded: Vec<u8>,
    namespace_end: usize,
    /// Where the parts begin (after the version).
    parts_start: usize,
    sensitive: bool,
    max_len: usize,
}

impl fmt::Debug for KeyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The parts may hold a credential: show only namespace and version.
        f.debug_struct("KeyBuilder")
            .field(
                "prefix",
                &String::from_utf8_lossy(&self.encoded[..self.parts_start]),
            )
            .field("sensitive", &self.sensitive)
            .finish_non_exhaustive()
    }
}

impl KeyBuilder {
    /// Starts a key in `namespace`, at version 1 with no parts.
    pub fn new(namespace: impl AsRef<str>) -> Self {
        let namespace = namespace.as_ref().as_bytes();
        // Room for a typical HTTP key (method, host, path, a query) without
        // growing, and not much more than the default digest threshold.
        let mut encoded = Vec::with_capacity(namespace.len() + 192);
        escape_into(&mut encoded, namespace);
        let namespace_end = encoded.len();
        encoded.extend_from_slice(b":v1");
        KeyBuilder {
            parts_start: encoded.len(),
            encoded,
            namespace_end,
            sensitive: false,
            max_len: DEFAULT_MAX_KEY_LEN,
        }
    }

    /// Sets the version: bump it when the shape of the cached value changes,
    /// so old entries are simply never read again.
    pub fn version(mut self, version: u32) -> Self {
        let written = format!(":v{version}");
        self.encoded
            .splice(self.namespace_end..self.parts_start, written.bytes());
        self.parts_start = self.namespace_end + written.len();
        self
    }

    /// Keys whose encoding is longer than `max_len` bytes are digested.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// Appends a named part with a value.
    pub fn part(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.push(name, Some(value.as_ref()));
        self
    }

    /// Appends a named part whose value must never be stored in the clear;
    /// the whole key is then stored under its digest.
    pub fn sensitive_part(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.push_sensitive(name, Some(value.as_ref()));
        self
    }

    /// Appends a part, in place: for extractors that add to a shared builder.
    /// `None` records the part's name alone (for "absent"), which differs
    /// from an empty value.
    pub fn push(&mut self, name: &str, value: Option<&[u8]>) {
        self.push_prefixed(name, b"", value);
    }

    /// Appends a part named `prefix` followed by `name`, in place: the same
    /// key as [`KeyBuilder::push`] with the two concatenated, without
    /// building the name first (`query.` and a parameter's name, say).
    ///
    /// ```
    /// use hitbox_core::CacheKey;
    ///
    /// let mut joined = CacheKey::builder("api");
    /// joined.push("query.page", Some(b"2"));
    /// let mut prefixed = CacheKey::builder("api");
    /// prefixed.push_prefixed("query.", b"page", Some(b"2"));
    /// assert_eq!(joined.build(), prefixed.build());
    /// ```
    pub fn push_prefixed(&mut self, prefix: &str, name: &[u8], value: Option<&[u8]>) {
        self.encoded.push(b':');
        // Escaping works byte by byte, so escaping the two halves apart
        // gives the escaping of their concatenation.
        escape_into(&mut self.encoded, prefix.as_bytes());
        escape_into(&mut self.encoded, name);
        if let Some(value) = value {
            self.encoded.push(b'=');
            escape_into(&mut self.encoded, value);
        }
    }

    /// Appends a sensitive part, in place; see [`KeyBuilder::sensitive_part`].
    pub fn push_sensitive(&mut self, name: &str, value: Option<&[u8]>) {
        self.sensitive = true;
        self.push(name, value);
    }

    /// Marks the key as sensitive without adding a part.
    pub fn mark_sensitive(&mut self) {
        self.sensitive = true;
    }

    /// The prefix every key that continues this one with more parts
    /// starts with: the encoding so far followed by the part separator
    /// `:`, for purging by prefix. Because it ends at a part boundary, the
    /// prefix of `tenant=a` does not match keys of `tenant=ab`. A key with
    /// exactly these parts and no more does not start with it (purge that
    /// one by key), and neither does a digested key, whose parts are
    /// hidden, unless the prefix is made of the namespace and version
    /// alone.
    ///
    /// ```
    /// use hitbox_core::CacheKey;
    ///
    /// let prefix = CacheKey::builder("users").part("tenant", "a").key_prefix();
    /// assert_eq!(prefix, "users:v1:tenant=a:");
    /// let mine = CacheKey::builder("users").part("tenant", "a").part("id", "7").build();
    /// let theirs = CacheKey::builder("users").part("tenant", "ab").part("id", "7").build();
    /// assert!(mine.as_str().starts_with(&prefix));
    /// assert!(!theirs.as_str().starts_with(&prefix));
    /// ```
    pub fn key_prefix(&self) -> String {
        let mut prefix =
            String::from_utf8(self.encoded.clone()).expect("escaped key bytes are printable ASCII");
        prefix.push(':');
        prefix
    }

    /// Finishes the key.
    pub fn build(self) -> CacheKey {
        let encoded = std::str::from_utf8(&self.encoded).expect("escaped key bytes are printable ASCII");
        if !self.sensitive && encoded.len() <= self.max_len {
            return CacheKey {
                encoded: Arc::from(encoded),
                digested: false,
            };
        }
        let digest = Blake2b256::digest(encoded.as_bytes());
        let prefix = &encoded[..self.parts_start];
        let mut digested = String::with_capacity(prefix.len() + 2 + 64);
        digested.push_str(prefix);
        digested.push_str(":#");
        digested.push_str(&hex::encode(digest));
        CacheKey {
            encoded: digested.into(),
            digested: true,
        }
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Whether each byte is written as it is (see the module documentation).
const RAW: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = b'!';
    while byte <= b'~' {
        table[byte as usize] = !matches!(byte, b'%' | b':' | b'=' | b'#');
        byte += 1;
    }
    table
};

/// Appends `bytes`, escaped. Inlined, so that the common case (nothing to
/// escape, often a short or empty part) is a scan and one copy, with no
/// call of its own.
#[inline]
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.iter().all(|&byte| RAW[usize::from(byte)]) {
        out.extend_from_slice(bytes);
    } else {
        escape_runs(out, bytes);
    }
}

/// [`escape_into`] for bytes that need escaping.
#[cold]
#[inline(never)]
fn escape_runs(out: &mut Vec<u8>, bytes: &[u8]) {
    // Copy runs of raw bytes whole, escape the bytes between them.
    let mut rest = bytes;
    while !rest.is_empty() {
        let run = rest.iter().take_while(|&&byte| RAW[usize::from(byte)]).count();
        out.extend_from_slice(&rest[..run]);
        let Some(&byte) = rest.get(run) else {
            return;
        };
        out.extend_from_slice(&[
            b'%',
            HEX_UPPER[usize::from(byte >> 4)],
            HEX_UPPER[usize::from(byte & 0x0f)],
        ]);
        rest = &rest[run + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[(&str, Option<&str>)]) -> String {
        let mut builder = KeyBuilder::new("ns");
        for (name, value) in parts {
            builder.push(name, value.map(str::as_bytes));
        }
        builder.build().as_str().to_owned()
    }

    #[test]
    fn encoding_is_stable() {
        assert_eq!(key(&[]), "ns:v1");
        assert_eq!(key(&[("id", Some("42"))]), "ns:v1:id=42");
        assert_eq!(key(&[("flag", None)]), "ns:v1:flag");
        assert_eq!(key(&[("flag", Some(""))]), "ns:v1:flag=");
        assert_eq!(
            CacheKey::builder("a b")
                .version(7)
                .part("x#", "é")
                .build()
                .as_str(),
            "a%20b:v7:x%23=%C3%A9"
        );
    }

    #[test]
    fn separators_inside_parts_never_collide() {
        let cases: Vec<Vec<(&str, Option<&str>)>> = vec![
            vec![("a:b", None), ("c", None)],
            vec![("a", None), ("b:c", None)],
            vec![("a", Some("b")), ("c", None)],
            vec![("a=b", None), ("c", None)],
            vec![("a", Some("b:c"))],
            vec![("a", Some("b=c"))],
            vec![("a", Some("b")), ("c", Some(""))],
            vec![("a", Some("b:c="))],
            vec![("a", Some("%3A"))],
            vec![("a", Some(":"))],
            vec![("", None)],
            vec![],
            vec![("", Some(""))],
            vec![("#00", None)],
        ];
        let encoded: Vec<String> = cases.iter().map(|c| key(c)).collect();
        for i in 0..encoded.len() {
            for j in (i + 1)..encoded.len() {
                assert_ne!(encoded[i], encoded[j], "{:?} vs {:?}", cases[i], cases[j]);
            }
        }
    }

    #[test]
    fn namespace_and_version_are_part_of_the_key() {
        let a = CacheKey::builder("users").part("id", "1").build();
        let b = CacheKey::builder("orders").part("id", "1").build();
        let c = CacheKey::builder("users").version(2).part("id", "1").build();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            CacheKey::builder("a:v1").build(),
            CacheKey::builder("a").part("v1", "").build()
        );
    }

    #[test]
    fn long_keys_are_digested_and_stay_distinct() {
        let long = "x".repeat(400);
        let a = CacheKey::builder("ns").part("q", &long).build();
        let b = CacheKey::builder("ns").part("q", format!("{long}y")).build();
        assert!(a.is_digested());
        assert_eq!(a.as_str().len(), "ns:v1:#".len() + 64);
        assert!(a.as_str().starts_with("ns:v1:#"));
        assert_ne!(a, b);
        let short = CacheKey::builder("ns").max_len(10).part("q", "abcdefgh").build();
        assert!(short.is_digested());
    }

    #[test]
    fn sensitive_parts_never_appear_in_the_key_or_logs() {
        let key = CacheKey::builder("ns")
            .part("path", "/me")
            .sensitive_part("authorization", "Bearer secret-token")
            .build();
        assert!(key.is_digested());
        assert!(!key.as_str().contains("secret"));
        assert!(!format!("{key:?} {key}").contains("secret"));
        let other = CacheKey::builder("ns")
            .part("path", "/me")
            .sensitive_part("authorization", "Bearer other-token")
            .build();
        assert_ne!(key, other);
    }

    #[test]
    fn digest_form_cannot_be_forged_by_a_part() {
        let digested = CacheKey::builder("ns").sensitive_part("a", "b").build();
        let suffix = &digested.as_str()["ns:v1:".len()..];
        let forged = CacheKey::builder("ns").part(suffix, "").build();
        assert_ne!(digested.as_str(), forged.as_str());
    }

    #[test]
    fn escaping_matches_its_byte_by_byte_definition() {
        fn reference(bytes: &[u8]) -> String {
            bytes
                .iter()
                .map(|&b| {
                    if (b'!'..=b'~').contains(&b) && !b"%:=#".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        }
        let every_byte: Vec<u8> = (0..=255).collect();
        let samples: [&[u8]; 6] = [
            b"",
            b"plain",
            b"a:b=c#d%e",
            b"  lead and trail  ",
            &every_byte,
            b"caf\xc3\xa9:\xff",
        ];
        for sample in samples {
            let mut out = Vec::new();
            escape_into(&mut out, sample);
            assert_eq!(String::from_utf8(out).unwrap(), reference(sample), "{sample:?}");
        }
    }

    #[test]
    fn version_may_be_set_after_the_parts() {
        let early = CacheKey::builder("ns").version(12).part("id", "1").build();
        let late = CacheKey::builder("ns").part("id", "1").version(12).build();
        assert_eq!(early.as_str(), "ns:v12:id=1");
        assert_eq!(early, late);
        let digested = CacheKey::builder("ns")
            .sensitive_part("a", "b")
            .version(3)
            .build();
        assert!(digested.as_str().starts_with("ns:v3:#"));
    }

    #[test]
    fn a_builder_debug_form_shows_no_part() {
        let builder = CacheKey::builder("ns").sensitive_part("authorization", "Bearer secret");
        let shown = format!("{builder:?}");
        assert!(shown.contains("ns:v1"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn entity_shape() {
        let key = CacheKey::entity("app", "acme", "user", "42");
        assert_eq!(key.as_str(), "app:v1:tenant=acme:entity=user:id=42");
    }

    #[test]
    fn log_id_is_short_hex() {
        let key = CacheKey::builder("ns").part("id", "1").build();
        let id = key.log_id().to_string();
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(format!("{key:?}"), format!("CacheKey({id})"));
    }
}
