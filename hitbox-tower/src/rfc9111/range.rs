//! Range requests (RFC 9110 section 14) answered from stored responses,
//! and stored partial responses (RFC 9111 sections 3.3 and 3.4).
//!
//! A stored complete `200` answers a single byte range with `206`, sliced
//! out of the stored body (a reference-counted view: no byte is copied).
//! A request for several ranges gets the whole `200`: RFC 9110 lets a
//! server ignore `Range`, and a `multipart/byteranges` body would have to
//! be assembled (copied) for every such request, which is also how a
//! client makes a cache amplify its requests. A `Range` this cache cannot
//! read (another unit, bad syntax) is ignored the same way.
//!
//! A `206` from the origin is stored as a part: its `Content-Range` must be
//! a single range with a known complete length and its body exactly that
//! long. Parts of one representation are combined only when both carry the
//! same strong `ETag` and the same complete length; the new part's fields
//! win, the stored part's other fields stay.

use http::header::{self, HeaderMap, HeaderValue};

use super::date::parse_http_date;

/// One byte range as a request writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last` (both inclusive; `last` may be past the end).
    FromTo(u64, u64),
    /// `first-`: from `first` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Last(u64),
}

/// What a request's `Range` asks of a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// One byte range: answered `206` (or `416`).
    Single(ByteRange),
    /// Several ranges: answered with the whole response.
    Several,
}

/// A byte range resolved against a representation's length: `first..=last`,
/// both within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first byte.
    pub first: u64,
    /// The last byte (inclusive).
    pub last: u64,
}

impl Span {
    /// How many bytes it spans.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never: a span holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `other` lies within this span.
    pub fn contains(&self, other: Span) -> bool {
        self.first <= other.first && other.last <= self.last
    }
}

/// Digits as a number; a number too large for `u64` is `u64::MAX` (as a
/// position it is past any end; as a suffix length it is everything).
fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// Parses a `Range` field (`bytes=0-99`, `bytes=100-`, `bytes=-5`,
/// `bytes=0-1, 5-6`). `None` when the field is absent, repeated, in another
/// unit, or not valid syntax: then it is ignored, and the whole response is
/// the answer (RFC 9110 section 14.2).
///
/// ```
/// use hitbox_tower::rfc9111::range::{ByteRange, RangeRequest, parse_range};
/// use http::{HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("range", HeaderValue::from_static("bytes=-5"));
/// assert_eq!(parse_range(&headers), Some(RangeRequest::Single(ByteRange::Last(5))));
/// headers.insert("range", HeaderValue::from_static("bytes=9-1"));
/// assert_eq!(parse_range(&headers), None);
/// ```
pub fn parse_range(headers: &HeaderMap) -> Option<RangeRequest> {
    let mut fields = headers.get_all(header::RANGE).iter();
    let value = fields.next()?.to_str().ok()?;
    if fields.next().is_some() {
        return None;
    }
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut first = None;
    let mut count = 0usize;
    for spec in set.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        let (start, end) = spec.split_once('-')?;
        let range = match (start.is_empty(), end.is_empty()) {
            (true, true) => return None,
            (true, false) => ByteRange::Last(number(end)?),
            (false, true) => ByteRange::From(number(start)?),
            (false, false) => {
                let (start, end) = (number(start)?, number(end)?);
                if end < start {
                    return None;
                }
                ByteRange::FromTo(start, end)
            }
        };
        count += 1;
        first.get_or_insert(range);
    }
    match (count, first) {
        (1, Some(range)) => Some(RangeRequest::Single(range)),
        (0, _) | (_, None) => None,
        _ => Some(RangeRequest::Several),
    }
}

impl ByteRange {
    /// The bytes this range selects of a representation of `len` bytes;
    /// `None` when it selects none (unsatisfiable: `416`).
    pub fn resolve(self, len: u64) -> Option<Span> {
        let (first, last) = match self {
            ByteRange::FromTo(first, last) => (first, last.min(len.checked_sub(1)?)),
            ByteRange::From(first) => (first, len.checked_sub(1)?),
            ByteRange::Last(0) => return None,
            ByteRange::Last(n) => (len.saturating_sub(n), len.checked_sub(1)?),
        };
        (first <= last).then_some(Span { first, last })
    }
}

/// Whether a request's `If-Range` lets its `Range` apply to a response
/// with `stored` headers (RFC 9110 section 13.1.5): absent, or a strong
/// `ETag` equal to the stored strong one, or a date equal to the stored
/// `Last-Modified`. Anything else asks for the whole response.
pub fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(condition) = request.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(condition) = condition.to_str() else {
        return false;
    };
    let condition = condition.trim();
    if condition.starts_with('"') || condition.starts_with("W/") {
        return strong_etag(stored).is_some_and(|etag| etag == condition);
    }
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    matches!((parse_http_date(condition), modified), (Some(a), Some(b)) if a == b)
}

/// A response's `ETag` when it is strong (not `W/`).
pub fn strong_etag(headers: &HeaderMap) -> Option<&str> {
    let etag = headers.get(header::ETAG)?.to_str().ok()?.trim();
    (etag.starts_with('"') && etag.len() >= 2 && etag.ends_with('"')).then_some(etag)
}

/// The span and complete length a `206`'s `Content-Range` names
/// (`bytes 0-4/10`); `None` when it is absent, repeated, unsatisfied
/// (`bytes */10`), of unknown length (`/*`), or inconsistent.
pub fn content_range(headers: &HeaderMap) -> Option<(Span, u64)> {
    let mut fields = headers.get_all(header::CONTENT_RANGE).iter();
    let value = fields.next()?.to_str().ok()?;
    if fields.next().is_some() {
        return None;
    }
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, len) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, len) = (number(first)?, number(last)?, number(len)?);
    (first <= last && last < len).then_some((Span { first, last }, len))
}

/// The `Content-Range` of a `206` for `span` of `len` bytes. Written on
/// the stack: the value's own buffer is the one allocation (it is on the
/// range hit path).
pub fn content_range_value(span: Span, len: u64) -> HeaderValue {
    // "bytes " and three u64s of at most 20 digits, with their separators.
    let mut out = [0u8; 6 + 3 * 20 + 2];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    let mut digits = itoa::Buffer::new();
    put(b"bytes ");
    put(digits.format(span.first).as_bytes());
    put(b"-");
    put(digits.format(span.last).as_bytes());
    put(b"/");
    put(digits.format(len).as_bytes());
    HeaderValue::from_bytes(&out[..at]).expect("digits are a valid header value")
}

/// The `Content-Range` of a `416` for a representation of `len` bytes.
pub fn unsatisfied_value(len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes */{len}")).expect("digits are a valid header value")
}

/// The `Range` value asking for `span` of a representation of `len` bytes
/// (`bytes=5-` when it runs to the end).
pub fn range_value(span: Span, len: u64) -> HeaderValue {
    let value = if span.last + 1 == len {
        format!("bytes={}-", span.first)
    } else {
        format!("bytes={}-{}", span.first, span.last)
    };
    HeaderValue::from_str(&value).expect("digits are a valid header value")
}

/// What of `want` a stored part `have` lacks, when it is one contiguous
/// span; `None` when nothing is missing, or when two pieces are (one on
/// each side), which is left to a plain request.
pub fn missing(have: Span, want: Span) -> Option<Span> {
    if have.contains(want) {
        return None;
    }
    let before = want.first < have.first;
    let after = want.last > have.last;
    match (before, after) {
        (true, true) => None,
        // The missing piece must touch the stored part, so that the two
        // join up.
        (true, false) => (want.last + 1 >= have.first).then(|| Span {
            first: want.first,
            last: have.first - 1,
        }),
        (false, true) => (want.first <= have.last + 1).then(|| Span {
            first: have.last + 1,
            last: want.last,
        }),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str) -> Option<RangeRequest> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        parse_range(&headers)
    }

    fn span(first: u64, last: u64) -> Span {
        Span { first, last }
    }

    #[test]
    fn ranges_parse_and_resolve() {
        use ByteRange::*;
        assert_eq!(range("bytes=0-4"), Some(RangeRequest::Single(FromTo(0, 4))));
        assert_eq!(range("Bytes = 5-"), Some(RangeRequest::Single(From(5))));
        assert_eq!(range("bytes=-3"), Some(RangeRequest::Single(Last(3))));
        assert_eq!(range("bytes=0-1, 4-5"), Some(RangeRequest::Several));
        assert_eq!(range("bytes=0-1,"), Some(RangeRequest::Single(FromTo(0, 1))));
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=5-1",
            "bytes=a-b",
            "items=0-1",
            "bytes 0-1",
            "bytes=+1-2",
            "bytes=0-1, x",
            "bytes=--1",
            "",
        ] {
            assert_eq!(range(bad), None, "{bad}");
        }
        assert_eq!(FromTo(0, 4).resolve(10), Some(span(0, 4)));
        assert_eq!(FromTo(8, 100).resolve(10), Some(span(8, 9)));
        assert_eq!(From(5).resolve(10), Some(span(5, 9)));
        assert_eq!(Last(3).resolve(10), Some(span(7, 9)));
        assert_eq!(Last(30).resolve(10), Some(span(0, 9)));
        assert_eq!(From(10).resolve(10), None);
        assert_eq!(Last(0).resolve(10), None);
        assert_eq!(From(0).resolve(0), None);
        assert_eq!(Last(5).resolve(0), None);
    }

    #[test]
    fn huge_numbers_neither_overflow_nor_panic() {
        let huge = "bytes=99999999999999999999999-";
        assert_eq!(range(huge), Some(RangeRequest::Single(ByteRange::From(u64::MAX))));
        assert_eq!(ByteRange::From(u64::MAX).resolve(10), None);
        let to_huge = range("bytes=2-99999999999999999999999");
        assert_eq!(
            to_huge,
            Some(RangeRequest::Single(ByteRange::FromTo(2, u64::MAX)))
        );
        assert_eq!(ByteRange::FromTo(2, u64::MAX).resolve(10), Some(span(2, 9)));
        assert_eq!(ByteRange::Last(u64::MAX).resolve(10), Some(span(0, 9)));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-99999999999999999999999/99999999999999999999999"),
        );
        assert_eq!(content_range(&headers), None);
        assert!(missing(span(0, u64::MAX - 1), span(0, u64::MAX)).is_some());
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        stored.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        let holds = |value: &str, stored: &HeaderMap| {
            let mut request = HeaderMap::new();
            request.insert(header::IF_RANGE, HeaderValue::from_str(value).unwrap());
            if_range_holds(&request, stored)
        };
        let condition = |value: &str| holds(value, &stored);
        assert!(if_range_holds(&HeaderMap::new(), &stored));
        assert!(condition("\"v1\""));
        assert!(!condition("W/\"v1\""));
        assert!(!condition("\"v2\""));
        assert!(condition("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert!(!condition("Sun, 06 Nov 1994 08:49:38 GMT"));
        assert!(!condition("garbage"));
        stored.insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
        assert!(!holds("W/\"v1\"", &stored));
    }

    #[test]
    fn content_ranges_and_missing_pieces() {
        let parse = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(value).unwrap());
            content_range(&headers)
        };
        assert_eq!(parse("bytes 0-4/10"), Some((span(0, 4), 10)));
        for bad in [
            "bytes */10",
            "bytes 0-4/*",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "items 0-4/10",
            "bytes 0-4",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(content_range_value(span(0, 4), 10), "bytes 0-4/10");
        assert_eq!(
            content_range_value(span(u64::MAX - 2, u64::MAX - 1), u64::MAX),
            "bytes 18446744073709551613-18446744073709551614/18446744073709551615"
        );
        assert_eq!(unsatisfied_value(10), "bytes */10");
        assert_eq!(range_value(span(5, 9), 10), "bytes=5-");
        assert_eq!(range_value(span(5, 7), 10), "bytes=5-7");
        assert_eq!(missing(span(0, 4), span(0, 9)), Some(span(5, 9)));
        assert_eq!(missing(span(0, 4), span(2, 3)), None);
        assert_eq!(missing(span(5, 9), span(0, 6)), Some(span(0, 4)));
        assert_eq!(missing(span(3, 4), span(0, 9)), None);
        assert_eq!(missing(span(0, 4), span(7, 9)), None);
        assert_eq!(missing(span(0, 4), span(5, 9)), Some(span(5, 9)));
    }
}
