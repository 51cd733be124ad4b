//! The freshness headers of a `GET` answer.
//!
//! Both parsers take the header's raw bytes (`None` when the response does
//! not carry it) and are strict on purpose: the protocol's
//! `freshness-headers.json` lists the lenient readings (case folding,
//! trimming, sign or exponent parsing, wrapping integers) that they must
//! not make.

/// Whether the service still considers an entry fresh: the engine's own
/// [`Freshness`], of which the service uses `Fresh` and `Stale` (usable
/// while it is revalidated, never copied into an L1).
pub use hitbox_core::Freshness;

/// The largest `X-CacheKit-Fresh-For` (and TTL) the protocol allows: 30 days.
pub const MAX_FRESH_FOR_SECS: u32 = 2_592_000;

/// Reads `X-CacheKit-Freshness`: fresh when the header is absent or exactly
/// `fresh`; any other value, empty included, is stale.
pub fn parse_freshness(value: Option<&[u8]>) -> Freshness {
    match value {
        None | Some(b"fresh") => Freshness::Fresh,
        Some(_) => Freshness::Stale,
    }
}

/// Reads `X-CacheKit-Fresh-For`: `None` when absent (no server-side bound),
/// the number when the value is 1 to 7 ASCII digits and at most
/// [`MAX_FRESH_FOR_SECS`], and `Some(0)` for anything else.
pub fn parse_fresh_for(value: Option<&[u8]>) -> Option<u32> {
    let value = value?;
    if value.is_empty() || value.len() > 7 || !value.iter().all(u8::is_ascii_digit) {
        return Some(0);
    }
    // Seven digits fit in a u32 without overflow.
    let secs = value.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    Some(if secs > MAX_FRESH_FOR_SECS { 0 } else { secs })
}
