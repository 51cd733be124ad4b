//! Cross-SDK keys and values: cachekit interop mode v1.
//!
//! Why it lives here: this is cachekit's wire format for sharing entries
//! between SDKs, not something every hitbox tier needs, so it sits beside
//! the cachekit.io tier rather than in `hitbox-backend`. The key builder
//! needs no feature; writing values in MessagePack needs this crate's
//! `msgpack` feature (which turns on `hitbox-backend/msgpack`).
//!
//! Programs written against different cachekit SDKs (Python, TypeScript,
//! Rust, ...) share entries when they agree on two things:
//!
//! - **the key**: `{namespace}:{operation}:{hash}`, where `hash` is the
//!   lowercase hex BLAKE2b-256 digest of the *canonical* MessagePack
//!   encoding of the call's argument array, built by [`interop_key`];
//! - **the value**: one plain MessagePack document, written with
//!   [`Format::MessagePack`](hitbox_backend::Format::MessagePack).
//!
//! Canonical encoding makes the same arguments hash the same in every
//! language: integers in their smallest MessagePack form (`-2^63` to
//! `2^64 - 1`), integral floats in that range collapsed to integers (so
//! `2.0` and `2` give one key), other floats always as float64, NaN and
//! infinities refused, map keys sorted by code point at every level, set
//! elements sorted by their encoded bytes and deduplicated, UTC-offset
//! datetimes as their Unix timestamp (floored to microseconds), and UUIDs
//! as lowercase hyphenated strings.
//!
//! # Writing an entry another SDK reads
//!
//! The bytes other SDKs store under an interop key are the value's plain
//! MessagePack document (`Format::MessagePack.encode_into`), encrypted, when
//! encryption is on, with `AesGcmEncryptor::seal` (feature `encryption`)
//! bound to `EntryBinding::new(key, "msgpack")` (interop mode never
//! compresses). The entries a [`Cache`](hitbox_backend::Cache) writes carry hitbox's
//! own envelope and stage header around that document, so a tier shared with
//! other SDKs must be written with these raw bytes, not through the engine.
//!
//! ```
//! use hitbox_cachekit::interop::{InteropArg, interop_key};
//!
//! let key = interop_key("users", "get_user", &[InteropArg::from(42)]).unwrap();
//! assert_eq!(key, "users:get_user:61598716255080080f6456eb065c2e51badfaa4320b0efe97469c29cffee8875");
//!
//! // 2.0 and 2 are the same argument.
//! assert_eq!(
//!     interop_key("m", "f", &[InteropArg::Float(2.0)]).unwrap(),
//!     interop_key("m", "f", &[InteropArg::Int(2)]).unwrap(),
//! );
//! // Segments are lowercase: `^[a-z0-9][a-z0-9._-]{0,63}$`, without `..`;
//! // the namespaces `ns` and `nsapi` are refused (the service would read
//! // them as its own namespace prefixes).
//! assert!(interop_key("Users", "get_user", &[]).is_err());
//! assert!(interop_key("users", "a..b", &[]).is_err());
//! assert!(interop_key("nsapi", "get_user", &[]).is_err());
//! ```

use blake2::{Blake2b256, Digest};
use hitbox_core::CacheKey;

/// A segment (namespace or operation) may be at most this long.
pub const MAX_SEGMENT_LEN: usize = 64;

/// One argument of a cross-SDK call, as every SDK sees it.
///
/// ```
/// use hitbox_cachekit::interop::{InteropArg, interop_key};
///
/// let args = [
///     InteropArg::from("acme"),
///     InteropArg::Map(vec![("page".into(), InteropArg::from(2)), ("active".into(), true.into())]),
///     InteropArg::from(None::<i64>),
/// ];
/// let key = interop_key("orders", "list", &args).unwrap();
/// assert!(key.starts_with("orders:list:"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum InteropArg {
    /// `None` / `null`.
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer; only `-2^63 ..= 2^64 - 1` can be encoded.
    Int(i128),
    /// A float; NaN and infinities are refused, integral values in the
    /// integer range are encoded as integers.
    Float(f64),
    /// A UTF-8 string (no Unicode normalization is applied).
    Str(String),
    /// A byte string (MessagePack `bin`).
    Bytes(Vec<u8>),
    /// A list or tuple.
    Array(Vec<InteropArg>),
    /// A map with string keys; keys must be distinct, their order does not
    /// matter.
    Map(Vec<(String, InteropArg)>),
    /// A set: order and duplicates (after canonical encoding) do not matter.
    Set(Vec<InteropArg>),
    /// An ISO 8601 datetime that must carry a UTC offset
    /// (`2024-01-01T12:30:45.123456+00:00`, `...Z`); naive ones are refused.
    DateTime(String),
    /// A UUID in hyphenated or simple hex form, any case.
    Uuid(String),
}

macro_rules! int_conversions {
    ($($t:ty),*) => {$(
        impl From<$t> for InteropArg {
            fn from(value: $t) -> Self {
                InteropArg::Int(i128::from(value))
            }
        }
    )*};
}
int_conversions!(i8, i16, i32, i64, i128, u8, u16, u32, u64);

impl From<bool> for InteropArg {
    fn from(value: bool) -> Self {
        InteropArg::Bool(value)
    }
}

impl From<f64> for InteropArg {
    fn from(value: f64) -> Self {
        InteropArg::Float(value)
    }
}

impl From<&str> for InteropArg {
    fn from(value: &str) -> Self {
        InteropArg::Str(value.to_owned())
    }
}

impl From<String> for InteropArg {
    fn from(value: String) -> Self {
        InteropArg::Str(value)
    }
}

impl<T: Into<InteropArg>> From<Option<T>> for InteropArg {
    fn from(value: Option<T>) -> Self {
        value.map_or(InteropArg::Nil, Into::into)
    }
}

/// Why arguments or a segment cannot form an interop key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InteropError {
    /// The namespace or the operation does not match
    /// `^[a-z0-9][a-z0-9._-]{0,63}$` (the whole string).
    #[error("the {segment} must match ^[a-z0-9][a-z0-9._-]{{0,63}}$")]
    InvalidSegment {
        /// `"namespace"` or `"operation"`.
        segment: &'static str,
    },
    /// The namespace or the operation contains `..`. The segment pattern
    /// allows it, but the service refuses every key holding `..` anywhere
    /// (its path-traversal rule), so such a key could never be stored.
    #[error("the {segment} must not contain `..`: the service refuses any key holding it")]
    DoubleDot {
        /// `"namespace"` or `"operation"`.
        segment: &'static str,
    },
    /// The namespace is exactly `ns` or `nsapi`. The service reads a key
    /// starting `ns:` or `nsapi:` as namespace-prefixed, so
    /// `ns:{operation}:{hash}` would be scoped to a namespace named after
    /// the operation instead of `default` (and refused when the operation
    /// holds a `.`). Both words stay valid as operations, and longer
    /// namespaces such as `nsx` are fine.
    #[error(
        "the namespace `{namespace}` is reserved: the service reads `{namespace}:` as a namespace prefix"
    )]
    ReservedNamespace {
        /// `"ns"` or `"nsapi"`.
        namespace: &'static str,
    },
    /// A float argument is NaN or infinite.
    #[error("NaN and infinite floats are not allowed")]
    NotFinite,
    /// An integer argument is outside `-2^63 ..= 2^64 - 1`.
    #[error("integer outside -2^63 ..= 2^64-1")]
    IntegerOutOfRange,
    /// A datetime argument has no UTC offset.
    #[error("datetime has no UTC offset")]
    NaiveDateTime,
    /// A datetime argument is not an ISO 8601 datetime.
    #[error("not an ISO 8601 datetime")]
    InvalidDateTime,
    /// A UUID argument is not a UUID.
    #[error("not a UUID")]
    InvalidUuid,
    /// A map argument has the same key twice.
    #[error("map key repeated")]
    DuplicateMapKey,
    /// A string, byte string, array or map is too long for MessagePack.
    #[error("value too long for MessagePack")]
    TooLong,
}

/// The namespaces the service reads as a namespace prefix (`ns:{name}:`,
/// `nsapi:{name}:`), refused by [`interop_key`].
pub const RESERVED_NAMESPACES: [&str; 2] = ["ns", "nsapi"];

/// Builds the interop v1 key `{namespace}:{operation}:{hash}`.
///
/// Both segments must fully match `^[a-z0-9][a-z0-9._-]{0,63}$` and hold no
/// `..`; the namespace may not be `ns` or `nsapi` (see
/// [`InteropError::ReservedNamespace`]). These are the rules of the Python
/// SDK, which refuses the same segments.
///
/// ```
/// use hitbox_cachekit::interop::{InteropError, interop_key};
///
/// assert_eq!(
///     interop_key("ns", "get_user", &[]),
///     Err(InteropError::ReservedNamespace { namespace: "ns" })
/// );
/// assert_eq!(
///     interop_key("users", "v1..get", &[]),
///     Err(InteropError::DoubleDot { segment: "operation" })
/// );
/// // `ns` is a fine operation, `nsx` a fine namespace, single dots are fine.
/// assert!(interop_key("users", "ns", &[]).is_ok());
/// assert!(interop_key("nsx", "v1.get", &[]).is_ok());
/// ```
pub fn interop_key(namespace: &str, operation: &str, args: &[InteropArg]) -> Result<String, InteropError> {
    check_segment(namespace, "namespace")?;
    check_segment(operation, "operation")?;
    if let Some(reserved) = RESERVED_NAMESPACES.iter().find(|r| **r == namespace) {
        return Err(InteropError::ReservedNamespace { namespace: reserved });
    }
    Ok(format!("{namespace}:{operation}:{}", args_hash(args)?))
}

/// [`interop_key`] as a [`CacheKey`], stored verbatim so that every SDK
/// finds the entry under the same string.
pub fn interop_cache_key(
    namespace: &str,
    operation: &str,
    args: &[InteropArg],
) -> Result<CacheKey, InteropError> {
    interop_key(namespace, operation, args).map(CacheKey::from_encoded)
}

/// The lowercase hex BLAKE2b-256 digest of [`canonical_args`].
pub fn args_hash(args: &[InteropArg]) -> Result<String, InteropError> {
    let digest = Blake2b256::digest(canonical_args(args)?);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// The canonical MessagePack encoding of the argument array.
pub fn canonical_args(args: &[InteropArg]) -> Result<Vec<u8>, InteropError> {
    let mut out = Vec::new();
    write_array_header(&mut out, args.len())?;
    for arg in args {
        write_canonical(&mut out, arg)?;
    }
    Ok(out)
}

fn check_segment(segment: &str, which: &'static str) -> Result<(), InteropError> {
    let bytes = segment.as_bytes();
    let lead_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .iter()
        .skip(1)
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if !(lead_ok && rest_ok && bytes.len() <= MAX_SEGMENT_LEN) {
        return Err(InteropError::InvalidSegment { segment: which });
    }
    if segment.contains("..") {
        return Err(InteropError::DoubleDot { segment: which });
    }
    Ok(())
}

/// The range of integers interop mode can encode.
const INT_MIN: i128 = i64::MIN as i128;
const INT_MAX: i128 = u64::MAX as i128;

fn write_canonical(out: &mut Vec<u8>, arg: &InteropArg) -> Result<(), InteropError> {
    match arg {
        InteropArg::Nil => out.push(0xc0),
        InteropArg::Bool(false) => out.push(0xc2),
        InteropArg::Bool(true) => out.push(0xc3),
        InteropArg::Int(value) => write_int(out, *value)?,
        InteropArg::Float(value) => write_number(out, *value)?,
        InteropArg::Str(text) => write_str(out, text)?,
        InteropArg::Bytes(bytes) => {
            write_len(out, bytes.len(), [None, Some(0xc4), Some(0xc5), Some(0xc6)], 0)?;
            out.extend_from_slice(bytes);
        }
        InteropArg::Array(items) => {
            write_array_header(out, items.len())?;
            for item in items {
                write_canonical(out, item)?;
            }
        }
        InteropArg::Map(entries) => {
            let mut sorted: Vec<&(String, InteropArg)> = entries.iter().collect();
            // Byte order of UTF-8 is code point order.
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            if sorted.windows(2).any(|pair| pair[0].0 == pair[1].0) {
                return Err(InteropError::DuplicateMapKey);
            }
            write_len(out, sorted.len(), [Some(0x80), None, Some(0xde), Some(0xdf)], 15)?;
            for (key, value) in sorted {
                write_str(out, key)?;
                write_canonical(out, value)?;
            }
        }
        InteropArg::Set(items) => {
            let mut encoded = items
                .iter()
                .map(|item| {
                    let mut buf = Vec::new();
                    write_canonical(&mut buf, item).map(|()| buf)
                })
                .collect::<Result<Vec<_>, _>>()?;
            encoded.sort();
            encoded.dedup();
            write_array_header(out, encoded.len())?;
            encoded.iter().for_each(|item| out.extend_from_slice(item));
        }
        InteropArg::DateTime(text) => {
            let micros = parse_datetime_micros(text)?;
            // One division, correctly rounded, as every SDK does it.
            write_number(out, micros as f64 / 1e6)?;
        }
        InteropArg::Uuid(text) => write_str(out, &normalize_uuid(text)?)?,
    }
    Ok(())
}

fn write_int(out: &mut Vec<u8>, value: i128) -> Result<(), InteropError> {
    if !(INT_MIN..=INT_MAX).contains(&value) {
        return Err(InteropError::IntegerOutOfRange);
    }
    if value >= 0 {
        let value = value as u64;
        match value {
            0..=0x7f => out.push(value as u8),
            0x80..=0xff => out.extend_from_slice(&[0xcc, value as u8]),
            0x100..=0xffff => {
                out.push(0xcd);
                out.extend_from_slice(&(value as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(0xce);
                out.extend_from_slice(&(value as u32).to_be_bytes());
            }
            _ => {
                out.push(0xcf);
                out.extend_from_slice(&value.to_be_bytes());
            }
        }
    } else {
        let value = value as i64;
        if value >= -32 {
            out.push(value as i8 as u8);
        } else if value >= i64::from(i8::MIN) {
            out.extend_from_slice(&[0xd0, value as i8 as u8]);
        } else if value >= i64::from(i16::MIN) {
            out.push(0xd1);
            out.extend_from_slice(&(value as i16).to_be_bytes());
        } else if value >= i64::from(i32::MIN) {
            out.push(0xd2);
            out.extend_from_slice(&(value as i32).to_be_bytes());
        } else {
            out.push(0xd3);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
    Ok(())
}

/// A float, collapsed to an integer when it is integral and in range.
fn write_number(out: &mut Vec<u8>, value: f64) -> Result<(), InteropError> {
    if !value.is_finite() {
        return Err(InteropError::NotFinite);
    }
    // -2^63 is inclusive, 2^64 exclusive: exactly the integers that fit.
    const LOW: f64 = -9_223_372_036_854_775_808.0;
    const HIGH: f64 = 18_446_744_073_709_551_616.0;
    if value.fract() == 0.0 && (LOW..HIGH).contains(&value) {
        // Exact: an integral f64 in this range is an integer that fits i128.
        return write_int(out, value as i128);
    }
    out.push(0xcb);
    out.extend_from_slice(&value.to_bits().to_be_bytes());
    Ok(())
}

fn write_str(out: &mut Vec<u8>, text: &str) -> Result<(), InteropError> {
    write_len(
        out,
        text.len(),
        [Some(0xa0), Some(0xd9), Some(0xda), Some(0xdb)],
        31,
    )?;
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn write_array_header(out: &mut Vec<u8>, len: usize) -> Result<(), InteropError> {
    write_len(out, len, [Some(0x90), None, Some(0xdc), Some(0xdd)], 15)
}

/// Writes a length header in the smallest form available: the fix form
/// (`markers[0]` or'ed with the length, up to `fix_max`), then 8, 16 and
/// 32-bit lengths, skipping forms a type does not have (`None`).
fn write_len(
    out: &mut Vec<u8>,
    len: usize,
    markers: [Option<u8>; 4],
    fix_max: usize,
) -> Result<(), InteropError> {
    match markers {
        [Some(fix), ..] if len <= fix_max => out.push(fix | len as u8),
        [_, Some(m8), ..] if len <= 0xff => out.extend_from_slice(&[m8, len as u8]),
        [_, _, Some(m16), _] if len <= 0xffff => {
            out.push(m16);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        [_, _, _, Some(m32)] => {
            let len = u32::try_from(len).map_err(|_| InteropError::TooLong)?;
            out.push(m32);
            out.extend_from_slice(&len.to_be_bytes());
        }
        _ => return Err(InteropError::TooLong),
    }
    Ok(())
}

/// Parses `YYYY-MM-DD(T| )HH:MM:SS[.fraction](Z|±HH:MM|±HHMM)` into
/// microseconds since the Unix epoch, flooring extra fraction digits.
fn parse_datetime_micros(text: &str) -> Result<i64, InteropError> {
    let bad = InteropError::InvalidDateTime;
    let s = text.as_bytes();
    if s.len() < 19 || !text.is_ascii() {
        return Err(bad);
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, InteropError> {
        let digits = &s[range];
        if digits.iter().all(u8::is_ascii_digit) {
            Ok(digits.iter().fold(0, |acc, d| acc * 10 + i64::from(d - b'0')))
        } else {
            Err(InteropError::InvalidDateTime)
        }
    };
    let separators_ok =
        s[4] == b'-' && s[7] == b'-' && matches!(s[10], b'T' | b't' | b' ') && s[13] == b':' && s[16] == b':';
    if !separators_ok {
        return Err(bad);
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(bad);
    }
    if year < 1 || hour > 23 || minute > 59 || second > 59 {
        return Err(bad);
    }
    let mut rest = &s[19..];
    let mut micros_part = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || len > 9 {
            return Err(bad);
        }
        // Keep six digits (pad or truncate): truncation floors, as the
        // fraction is never negative.
        micros_part = (0..6).fold(0, |acc, i| {
            acc * 10
                + fraction
                    .get(i)
                    .filter(|_| i < len)
                    .map_or(0, |d| i64::from(d - b'0'))
        });
        rest = &fraction[len..];
    }
    let offset_seconds = match rest {
        [] => return Err(InteropError::NaiveDateTime),
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (h, m) = match tail {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => (
                    digit_pair(*h1, *h2).ok_or(InteropError::InvalidDateTime)?,
                    digit_pair(*m1, *m2).ok_or(InteropError::InvalidDateTime)?,
                ),
                _ => return Err(bad),
            };
            if h > 23 || m > 59 {
                return Err(bad);
            }
            let seconds = h * 3600 + m * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return Err(bad),
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Ok(seconds * 1_000_000 + micros_part)
}

fn digit_pair(high: u8, low: u8) -> Option<i64> {
    (high.is_ascii_digit() && low.is_ascii_digit())
        .then(|| i64::from(high - b'0') * 10 + i64::from(low - b'0'))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known
/// era-based algorithm: 400-year eras of 146097 days, years starting in
/// March so that the leap day comes last).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Lowercase hyphenated form of a hyphenated or simple (32 digits) UUID.
fn normalize_uuid(text: &str) -> Result<String, InteropError> {
    let digits: Vec<u8> = match text.len() {
        32 => text.bytes().collect(),
        36 => {
            let hyphens_ok = text
                .bytes()
                .enumerate()
                .all(|(i, b)| matches!(i, 8 | 13 | 18 | 23) == (b == b'-'));
            if !hyphens_ok {
                return Err(InteropError::InvalidUuid);
            }
            text.bytes().filter(|b| *b != b'-').collect()
        }
        _ => return Err(InteropError::InvalidUuid),
    };
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(InteropError::InvalidUuid);
    }
    let lower: String = digits
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &lower[..8],
        &lower[8..12],
        &lower[12..16],
        &lower[16..20],
        &lower[20..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 1, 1), 19_723);
    }

    #[test]
    fn datetimes_parse_offsets_and_fractions() {
        let utc = parse_datetime_micros("2024-01-01T00:00:00Z").unwrap();
        assert_eq!(utc, 1_704_067_200_000_000);
        assert_eq!(parse_datetime_micros("2024-01-01T01:00:00+0100").unwrap(), utc);
        assert_eq!(parse_datetime_micros("2023-12-31T23:00:00-01:00").unwrap(), utc);
        assert_eq!(
            parse_datetime_micros("2024-01-01T00:00:00.5+00:00").unwrap(),
            utc + 500_000
        );
        assert_eq!(
            parse_datetime_micros("2024-01-01T00:00:00.123456789+00:00").unwrap(),
            utc + 123_456
        );
        assert_eq!(
            parse_datetime_micros("2024-01-01T00:00:00"),
            Err(InteropError::NaiveDateTime)
        );
        for bad in [
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00+25:00",
            "nope",
        ] {
            assert_eq!(
                parse_datetime_micros(bad),
                Err(InteropError::InvalidDateTime),
                "{bad}"
            );
        }
    }

    #[test]
    fn uuids_normalize() {
        let lower = "550e8400-e29b-41d4-a716-446655440000";
        assert_eq!(normalize_uuid("550E8400E29B41D4A716446655440000").unwrap(), lower);
        assert!(normalize_uuid("550e8400-e29b-41d4-a716-44665544000g").is_err());
        assert!(normalize_uuid("550e8400e-29b-41d4-a716-446655440000").is_err());
    }

    #[test]
    fn segments_are_full_matches() {
        assert!(check_segment(&"a".repeat(64), "namespace").is_ok());
        assert!(check_segment(&"a".repeat(65), "namespace").is_err());
        for bad in ["", "-a", ".a", "a b", "a\n", "A"] {
            assert!(check_segment(bad, "namespace").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn double_dots_are_refused_anywhere_in_a_segment() {
        for which in ["namespace", "operation"] {
            for bad in ["a..b", "a..", "0..", "a...b", "a.b..c"] {
                assert_eq!(
                    check_segment(bad, which),
                    Err(InteropError::DoubleDot { segment: which }),
                    "{bad:?}"
                );
            }
            // Single dots, even several, are fine.
            for good in ["a.b", "a.b.c", "v1.get_user", "a.", "0.1-2_3"] {
                assert_eq!(check_segment(good, which), Ok(()), "{good:?}");
            }
        }
        // A leading dot was already refused by the pattern, and stays so.
        assert_eq!(
            check_segment("..a", "namespace"),
            Err(InteropError::InvalidSegment { segment: "namespace" })
        );
        assert_eq!(
            interop_key("users", "get..user", &[]),
            Err(InteropError::DoubleDot { segment: "operation" })
        );
        assert_eq!(
            interop_key("us..ers", "get_user", &[]),
            Err(InteropError::DoubleDot { segment: "namespace" })
        );
    }

    #[test]
    fn the_namespaces_ns_and_nsapi_are_reserved() {
        for reserved in ["ns", "nsapi"] {
            let error = interop_key(reserved, "get_user", &[InteropArg::from(1)]).unwrap_err();
            assert_eq!(error, InteropError::ReservedNamespace { namespace: reserved });
            assert!(error.to_string().contains(&format!("`{reserved}`")), "{error}");
            assert!(interop_cache_key(reserved, "get_user", &[]).is_err());
        }
        // Their neighbours are ordinary namespaces.
        for namespace in ["nsx", "ns1", "ns-api", "ns_api", "nsapi2", "xns", "n", "nsap"] {
            let key = interop_key(namespace, "get_user", &[]).unwrap();
            assert!(key.starts_with(&format!("{namespace}:get_user:")), "{key}");
        }
        // As operations both words are fine: the key starts with the namespace.
        for operation in ["ns", "nsapi"] {
            let key = interop_key("users", operation, &[]).unwrap();
            assert!(key.starts_with(&format!("users:{operation}:")), "{key}");
        }
        // The segment pattern is checked first: `NS` is not lowercase.
        assert_eq!(
            interop_key("NS", "get_user", &[]),
            Err(InteropError::InvalidSegment { segment: "namespace" })
        );
    }

    #[test]
    fn duplicate_map_keys_are_refused() {
        let map = InteropArg::Map(vec![("a".into(), 1.into()), ("a".into(), 2.into())]);
        assert_eq!(canonical_args(&[map]), Err(InteropError::DuplicateMapKey));
    }
}
