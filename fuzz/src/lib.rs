//! What the fuzz targets and the seed generator share: the values the
//! format targets round-trip, the fixed keys, the stage configurations, and
//! small readers that turn fuzz bytes into headers.
//!
//! Every target reads its input two ways where that helps: as the raw bytes
//! a tier or a server could hand back (the decoder must return an error,
//! never panic or abort, and what it accepts must re-encode to itself), and
//! through `arbitrary` as a structured value that must survive
//! encode-then-decode unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use hitbox_backend::encryption::{AesGcmEncryptor, EncryptionError, MasterKey, NONCE_LEN, NonceSource};
use hitbox_backend::envelope::RawEntry;
use hitbox_backend::{CacheableValue, CodecError, Compression, Format, Stages};
use hitbox_core::{CacheKey, EntryMeta};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// The key every envelope and staged entry of the targets is stored under.
pub fn fuzz_key() -> CacheKey {
    CacheKey::from_encoded("fuzz:v1:id=42")
}

/// Reads an envelope stored under `key` (checked whole and bound to it).
pub fn decode_envelope(bytes: Bytes, key: &CacheKey) -> Result<RawEntry, CodecError> {
    RawEntry::decode(bytes, key)
}

/// Frames `value` in an envelope stored under `key`.
pub fn encode_envelope<V: CacheableValue>(
    value: &V,
    meta: &EntryMeta,
    format: Format,
    key: &CacheKey,
) -> Result<Bytes, CodecError> {
    hitbox_backend::envelope::encode_entry(value, meta, format, key)
}

/// Every format, in id order.
pub const FORMATS: [Format; 5] = [
    Format::Postcard,
    Format::Bitcode,
    Format::Json,
    Format::Bincode,
    Format::MessagePack,
];

/// The format with this id, if any.
pub fn format_of(id: u8) -> Option<Format> {
    FORMATS.into_iter().find(|f| f.id() == id)
}

/// Payload bytes taken as they are: lets a target re-frame a decoded
/// envelope's payload without knowing its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opaque(pub Bytes);

impl CacheableValue for Opaque {
    fn encode(&self, _format: Format, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(&self.0);
        Ok(())
    }

    fn decode(payload: Bytes, _format: Format) -> Result<Self, CodecError> {
        Ok(Opaque(payload))
    }
}

/// A value with a bit of everything serde has: integers, text, bytes,
/// sequences, maps, options, every kind of enum variant. No floats: NaN
/// would make equal round trips compare unequal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Arbitrary)]
pub struct Sample {
    pub id: u64,
    pub delta: i32,
    pub flag: bool,
    pub letter: char,
    pub name: String,
    pub blob: Vec<u8>,
    pub tags: Vec<String>,
    pub score: Option<u32>,
    pub kind: Kind,
    pub counts: BTreeMap<String, u16>,
    pub children: Vec<Child>,
}

/// Every enum variant shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Arbitrary)]
pub enum Kind {
    Unit,
    Newtype(i64),
    Tuple(u8, String),
    Struct { a: u128, b: Vec<i16> },
}

/// A nested struct (flat, so that decoding depth stays bounded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Arbitrary)]
pub struct Child {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

impl Sample {
    /// A fixed value for seeds.
    pub fn example() -> Sample {
        Sample {
            id: 42,
            delta: -7,
            flag: true,
            letter: 'é',
            name: "Ada".into(),
            blob: vec![0, 1, 2, 255],
            tags: vec!["admin".into(), "ops".into()],
            score: Some(9),
            kind: Kind::Struct {
                a: u128::MAX,
                b: vec![-1, 2],
            },
            counts: [("a".to_owned(), 1), ("b".to_owned(), 2)].into_iter().collect(),
            children: vec![Child {
                key: "k".into(),
                value: Some(b"v".to_vec()),
            }],
        }
    }
}

/// The master keys of the encryption targets (never real keys).
pub fn master_key(byte: u8) -> MasterKey {
    MasterKey::from_bytes(&[byte; 32]).expect("32 bytes")
}

/// The tenant of the encryption targets.
pub const TENANT: &str = "fuzz-tenant";

/// The encryptor the targets decrypt with: the current key `0x61…`, one
/// previous key `0x62…` (so that rotation is tried too).
pub fn encryptor() -> AesGcmEncryptor {
    AesGcmEncryptor::builder(master_key(0x61))
        .tenant(TENANT)
        .previous_key(master_key(0x62))
        .build()
        .expect("a valid encryptor")
}

/// A nonce source that hands out one chosen nonce forever: lets a target
/// recompute the exact ciphertext of a plaintext it decrypted.
pub struct SameNonce(pub [u8; NONCE_LEN]);

impl NonceSource for SameNonce {
    fn next_nonce(&self) -> Result<[u8; NONCE_LEN], EncryptionError> {
        Ok(self.0)
    }
}

/// An encryptor with only `master` (tenant [`TENANT`]) and always `nonce`.
pub fn fixed_encryptor(master: u8, nonce: [u8; NONCE_LEN]) -> AesGcmEncryptor {
    AesGcmEncryptor::builder(master_key(master))
        .tenant(TENANT)
        .nonce_source(SameNonce(nonce))
        .build()
        .expect("a valid encryptor")
}

/// The stage configurations a tier may use, by name. Compression always
/// applies (threshold 0) so that short inputs reach the decompressors.
pub fn stage_configs() -> Vec<(&'static str, Stages, bool)> {
    stage_configs_with(Arc::new(encryptor()))
}

/// [`stage_configs`] with another encryptor (the seed generator's, whose
/// nonces are fixed so that seeds are reproducible).
pub fn stage_configs_with(shared: Arc<dyn hitbox_backend::Encryptor>) -> Vec<(&'static str, Stages, bool)> {
    let base = || Stages::new().min_compress_size(0);
    vec![
        ("plain", base(), false),
        ("zstd", base().compression(Compression::zstd(3)), true),
        ("lz4", base().compression(Compression::Lz4), true),
        ("aes", base().shared_encryptor(shared.clone()), true),
        (
            "zstd-aes",
            base()
                .compression(Compression::zstd(3))
                .shared_encryptor(shared.clone()),
            true,
        ),
        (
            "lz4-aes",
            base().compression(Compression::Lz4).shared_encryptor(shared),
            true,
        ),
    ]
}

/// Reads `name: value` lines (separated by `\n`) into a header map, skipping
/// lines that are not a valid field. Values keep every byte a
/// `HeaderValue` accepts (obs-text included).
pub fn headers_from_lines(text: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(value.trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}

/// Writes headers as [`headers_from_lines`] reads them.
pub fn lines_from_headers(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// An arbitrary header map: names from a list of fields that matter to a
/// cache plus arbitrary valid tokens, values any bytes a field may carry.
pub fn arbitrary_headers(u: &mut Unstructured<'_>, max: usize) -> arbitrary::Result<HeaderMap> {
    const KNOWN: [&str; 14] = [
        "cache-control",
        "vary",
        "date",
        "expires",
        "age",
        "etag",
        "last-modified",
        "content-type",
        "content-length",
        "set-cookie",
        "connection",
        "accept",
        "host",
        "x-opaque",
    ];
    let mut headers = HeaderMap::new();
    let count = u.int_in_range(0..=max)?;
    for _ in 0..count {
        let name = if u.arbitrary()? {
            HeaderName::from_static(KNOWN[u.choose_index(KNOWN.len())?])
        } else {
            let raw: Vec<u8> = u.arbitrary()?;
            match HeaderName::from_bytes(&raw) {
                Ok(name) => name,
                Err(_) => continue,
            }
        };
        let raw: Vec<u8> = u.arbitrary()?;
        let Ok(value) = HeaderValue::from_bytes(&raw) else {
            continue;
        };
        headers.append(name, value);
    }
    Ok(headers)
}

/// Whether `part` points into `whole`'s buffer (a slice, not a copy).
pub fn is_slice_of(part: &Bytes, whole: &Bytes) -> bool {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    part.is_empty() || (at >= start && at + part.len() <= start + whole.len())
}
