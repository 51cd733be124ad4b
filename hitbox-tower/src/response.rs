//! A stored HTTP response and its byte layout.
//!
//! ```text
//! u8 layout version (2) | u8 flags (bit 0: exchange present)
//! | exchange: u64 request time, u64 response time, u64 Date (MAX: none), u64 Age
//! | u16 status | headers | request headers named by Vary | body (the rest)
//! headers: u32 count | per header: u16 name length, name, u32 value length, value
//! ```
//!
//! All integers are big-endian. The first layout began with the status, so
//! its first byte was at most 3: an entry written in it fails to decode
//! (and is a miss) instead of being misread. Decoding slices header values and the body
//! out of the stored buffer: a hit copies no body byte, whatever its size.

use bytes::{BufMut, Bytes};
use hitbox_backend::{CacheableValue, CodecError, Format};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::rfc9111::freshness::Exchange;

/// The layout version written first.
const LAYOUT: u8 = 2;
/// How many headers serving a stored response may add.
const SERVED_HEADERS: usize = 4;
/// The most header fields a stored response (or the request fields its
/// `Vary` names) may have. Far above what origins send (hyper's server
/// refuses requests with more than 100), far below what `HeaderMap` can
/// hold, so that a crafted count is refused before anything is reserved.
pub(crate) const MAX_STORED_HEADERS: usize = 1024;

/// A response as the cache keeps it: status, end-to-end headers and the
/// whole body.
///
/// ```
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use hitbox_tower::CachedResponse;
///
/// let stored = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"hi"));
/// assert_eq!(stored.headers["content-length"], "2");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CachedResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers, hop-by-hop ones removed.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// Standards mode: the exchange that produced (or last revalidated) the
    /// response, for the age calculation.
    pub exchange: Option<Exchange>,
    /// Standards mode: the request fields the response's `Vary` names, as
    /// the request that produced it sent them.
    pub request_headers: HeaderMap,
}

impl CachedResponse {
    /// A response as it is stored. Its `Content-Length` is set to the
    /// body's length when the origin sent none (a streamed body, or one
    /// whose length only the server's connection would have written), so
    /// that a hit never computes it again.
    pub fn new(status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Self {
        if !headers.contains_key(http::header::CONTENT_LENGTH) {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        CachedResponse {
            status,
            headers,
            body,
            exchange: None,
            request_headers: HeaderMap::new(),
        }
    }
}

impl CachedResponse {
    /// Whether this response may answer a request with `request` headers:
    /// every field its `Vary` names has the value the request that stored
    /// it sent (never, for `Vary: *`).
    pub(crate) fn selects(&self, request: &HeaderMap) -> bool {
        let names = crate::rfc9111::vary::vary_names(&self.headers);
        selected(names.as_deref(), &self.request_headers, request, &self.headers)
    }
}

/// `Vary` selection: `names` (`None` for `*`) compared between the request
/// that stored a response and `request`.
fn selected(
    names: Option<&[HeaderName]>,
    stored: &HeaderMap,
    request: &HeaderMap,
    response: &HeaderMap,
) -> bool {
    match names {
        Some([]) => true,
        Some(names) => crate::rfc9111::vary::matches_response(names, stored, request, response),
        None => false,
    }
}

fn encoded_headers_len(headers: &HeaderMap) -> usize {
    4 + headers
        .iter()
        .map(|(name, value)| 6 + name.as_str().len() + value.len())
        .sum::<usize>()
}

fn encode_headers(headers: &HeaderMap, out: &mut Vec<u8>) -> Result<(), CodecError> {
    if headers.len() > MAX_STORED_HEADERS {
        return Err(too_long("header list"));
    }
    out.put_u32(headers.len() as u32);
    for (name, value) in headers {
        let name = name.as_str().as_bytes();
        out.put_u16(u16::try_from(name.len()).map_err(|_| too_long("header name"))?);
        out.put_slice(name);
        out.put_u32(u32::try_from(value.len()).map_err(|_| too_long("header value"))?);
        out.put_slice(value.as_bytes());
    }
    Ok(())
}

/// Decodes a header list into a map with room for `spare` more headers.
fn decode_headers(payload: &Bytes, pos: &mut usize, spare: usize) -> Result<HeaderMap, CodecError> {
    let count = read_u32(payload, pos)? as usize;
    if count > MAX_STORED_HEADERS {
        return Err(bad("more header fields than a stored response may have"));
    }
    // Every header takes at least six bytes: refuse counts the payload
    // cannot hold before reserving anything.
    if count > (payload.len() - *pos) / 6 {
        return Err(CodecError::Truncated);
    }
    let mut headers =
        HeaderMap::try_with_capacity(count + spare).map_err(|_| bad("header list too large"))?;
    for _ in 0..count {
        let len = usize::from(read_u16(payload, pos)?);
        let name = take(payload, pos, len)?;
        let name = HeaderName::from_bytes(&name).map_err(|_| bad("invalid header name"))?;
        let len = read_u32(payload, pos)? as usize;
        let value = take(payload, pos, len)?;
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| bad("invalid header value"))?;
        headers
            .try_append(name, value)
            .map_err(|_| bad("header list too large"))?;
    }
    Ok(headers)
}

impl CacheableValue for CachedResponse {
    fn encode(&self, _format: Format, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.reserve(
            2 + 32
                + 2
                + encoded_headers_len(&self.headers)
                + encoded_headers_len(&self.request_headers)
                + self.body.len(),
        );
        out.put_u8(LAYOUT);
        out.put_u8(u8::from(self.exchange.is_some()));
        if let Some(exchange) = &self.exchange {
            out.put_u64(exchange.request_time);
            out.put_u64(exchange.response_time);
            out.put_u64(exchange.date.unwrap_or(u64::MAX));
            out.put_u64(exchange.age);
        }
        check_content_length(&self.headers, self.body.len())?;
        out.put_u16(self.status.as_u16());
        encode_headers(&self.headers, out)?;
        encode_headers(&self.request_headers, out)?;
        out.put_slice(&self.body);
        Ok(())
    }

    fn decode(payload: Bytes, _format: Format) -> Result<Self, CodecError> {
        let mut pos = 0;
        let version = take(&payload, &mut pos, 1)?[0];
        if version != LAYOUT {
            return Err(bad("unknown response layout"));
        }
        let flags = take(&payload, &mut pos, 1)?[0];
        let exchange = if flags & 1 == 1 {
            let request_time = read_u64(&payload, &mut pos)?;
            let response_time = read_u64(&payload, &mut pos)?;
            let date = read_u64(&payload, &mut pos)?;
            let age = read_u64(&payload, &mut pos)?;
            if response_time < request_time {
                return Err(bad("response time before request time"));
            }
            Some(Exchange {
                request_time,
                response_time,
                date: (date != u64::MAX).then_some(date),
                age,
            })
        } else {
            None
        };
        let status = read_u16(&payload, &mut pos)?;
        let status = StatusCode::from_u16(status).map_err(|_| bad("status code out of range"))?;
        // Room for what serving adds (`Age`, `Cache-Status`, `X-Cache`,
        // `Content-Length`), so that it never grows the map.
        let headers = decode_headers(&payload, &mut pos, SERVED_HEADERS)?;
        let request_headers = decode_headers(&payload, &mut pos, 0)?;
        let body = payload.slice(pos..);
        check_content_length(&headers, body.len())?;
        Ok(CachedResponse {
            status,
            headers,
            body,
            exchange,
            request_headers,
        })
    }
}

/// A stored response read for serving as a hit (in either mode). Its headers
/// already hold `Age` and `Cache-Status` (with empty values, to be
/// replaced), so the copy each hit makes of them has room for the values
/// it sets. Decoded once per stored entry when the tier shares its
/// buffers ([`Cache::get_entry`](hitbox_backend::Cache::get_entry)),
/// with its `Vary` read then, not on every hit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HitResponse {
    pub response: CachedResponse,
    /// The fields the response's `Vary` names (empty: it does not vary);
    /// `None` for `Vary: *`, which no request matches.
    pub vary: Option<Vec<HeaderName>>,
}

impl HitResponse {
    /// A stored response ready for serving: its `Vary` read once.
    pub fn new(response: CachedResponse) -> Self {
        let vary = crate::rfc9111::vary::vary_names(&response.headers);
        HitResponse { response, vary }
    }

    /// The response as it is stored, without the placeholders.
    pub fn to_stored(&self) -> CachedResponse {
        let mut stored = self.response.clone();
        for name in &HIT_HEADERS {
            stored.headers.remove(name);
        }
        stored
    }

    /// Whether this response may answer a request with `request` headers
    /// (see [`CachedResponse::selects`]), by the `Vary` read at decoding.
    pub fn selects(&self, request: &HeaderMap) -> bool {
        let response = &self.response;
        selected(
            self.vary.as_deref(),
            &response.request_headers,
            request,
            &response.headers,
        )
    }
}

/// The headers a hit sets, present in a [`HitResponse`] as placeholders.
pub(crate) const HIT_HEADERS: [HeaderName; 2] = [http::header::AGE, HeaderName::from_static("cache-status")];

impl CacheableValue for HitResponse {
    fn encode(&self, format: Format, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.to_stored().encode(format, out)
    }

    fn decode(payload: Bytes, format: Format) -> Result<Self, CodecError> {
        let mut hit = HitResponse::new(CachedResponse::decode(payload, format)?);
        for name in HIT_HEADERS {
            hit.response.headers.insert(name, HeaderValue::from_static(""));
        }
        Ok(hit)
    }
}

/// A stored `Content-Length` must be the stored body's length: a response
/// served with a longer one would leave its client waiting for bytes that
/// never come, a shorter one would cut the body (and desynchronise a
/// connection that carries further responses). Checked when storing and
/// again when reading, so a damaged entry is a miss, never served.
fn check_content_length(headers: &HeaderMap, body_len: usize) -> Result<(), CodecError> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(value) = values.next() else {
        return Ok(());
    };
    let declared = value
        .to_str()
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse::<u64>().ok());
    if values.next().is_some() || declared != Some(body_len as u64) {
        return Err(bad("Content-Length disagrees with the stored body"));
    }
    Ok(())
}

fn too_long(what: &str) -> CodecError {
    CodecError::Payload(format!("{what} too long to store"))
}

fn bad(what: &str) -> CodecError {
    CodecError::Payload(what.to_owned())
}

fn take(payload: &Bytes, pos: &mut usize, len: usize) -> Result<Bytes, CodecError> {
    let end = pos.checked_add(len).ok_or(CodecError::Truncated)?;
    if end > payload.len() {
        return Err(CodecError::Truncated);
    }
    let slice = payload.slice(*pos..end);
    *pos = end;
    Ok(slice)
}

fn read_u16(payload: &Bytes, pos: &mut usize) -> Result<u16, CodecError> {
    let raw = take(payload, pos, 2)?;
    Ok(u16::from_be_bytes([raw[0], raw[1]]))
}

fn read_u64(payload: &Bytes, pos: &mut usize) -> Result<u64, CodecError> {
    let raw = take(payload, pos, 8)?;
    Ok(u64::from_be_bytes(raw[..].try_into().expect("eight bytes")))
}

fn read_u32(payload: &Bytes, pos: &mut usize) -> Result<u32, CodecError> {
    let raw = take(payload, pos, 4)?;
    Ok(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("vary", HeaderValue::from_static("accept"));
        headers.append("vary", HeaderValue::from_static("accept-encoding"));
        headers.insert("x-opaque", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let mut request_headers = HeaderMap::new();
        request_headers.insert("accept", HeaderValue::from_static("text/html"));
        CachedResponse {
            status: StatusCode::CREATED,
            headers,
            body: Bytes::from(vec![b'x'; 10_000]),
            exchange: Some(Exchange {
                request_time: 100,
                response_time: 101,
                date: None,
                age: 7,
            }),
            request_headers,
        }
    }

    #[test]
    fn round_trips_without_copying_the_body() {
        let mut out = Vec::new();
        response().encode(Format::Postcard, &mut out).unwrap();
        let stored = Bytes::from(out);
        let back = CachedResponse::decode(stored.clone(), Format::Postcard).unwrap();
        assert_eq!(back, response());
        let start = stored.as_ptr() as usize;
        assert!((back.body.as_ptr() as usize) > start);
        assert!((back.body.as_ptr() as usize) < start + stored.len());
        assert_eq!(back.headers.get_all("vary").iter().count(), 2);
    }

    #[test]
    fn truncated_and_corrupt_payloads_are_errors() {
        let mut out = Vec::new();
        response().encode(Format::Postcard, &mut out).unwrap();
        let body_start = out.len() - 10_000;
        for len in 0..body_start {
            let result = CachedResponse::decode(Bytes::copy_from_slice(&out[..len]), Format::Postcard);
            assert!(result.is_err(), "len {len}");
        }
        let mut bad_status = out.clone();
        bad_status[34..36].copy_from_slice(&9_999u16.to_be_bytes());
        assert!(CachedResponse::decode(bad_status.into(), Format::Postcard).is_err());
        let mut huge_count = out.clone();
        huge_count[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(CachedResponse::decode(huge_count.into(), Format::Postcard).is_err());
        let mut bad_name = out.clone();
        bad_name[42] = b' ';
        assert!(CachedResponse::decode(bad_name.into(), Format::Postcard).is_err());
        let mut backwards = out;
        backwards[2..10].copy_from_slice(&500u64.to_be_bytes());
        assert!(CachedResponse::decode(backwards.into(), Format::Postcard).is_err());
    }

    /// A payload with `count` headers `x-h: v`, then `body`, declaring no
    /// length.
    fn crafted(count: u32, body: &[u8]) -> Bytes {
        let mut out = vec![LAYOUT, 0];
        out.put_u16(200);
        out.put_u32(count);
        for _ in 0..count {
            out.put_u16(3);
            out.put_slice(b"x-h");
            out.put_u32(1);
            out.put_slice(b"v");
        }
        out.put_u32(0);
        out.put_slice(body);
        out.into()
    }

    #[test]
    fn a_crafted_header_count_is_refused_not_a_panic() {
        // 30,000 well-formed headers, all present in the payload: more than
        // a `HeaderMap` may hold once served headers are added.
        let err = CachedResponse::decode(crafted(30_000, b""), Format::Postcard).unwrap_err();
        assert!(err.to_string().contains("more header fields"), "{err}");
        let err = CachedResponse::decode(crafted(40_000, b""), Format::Postcard).unwrap_err();
        assert!(err.to_string().contains("more header fields"), "{err}");
        // At the cap, a thousand values of one name decode.
        let at_cap =
            CachedResponse::decode(crafted(MAX_STORED_HEADERS as u32, b"ok"), Format::Postcard).unwrap();
        assert_eq!(at_cap.headers.get_all("x-h").iter().count(), MAX_STORED_HEADERS);
        // Nor can one be stored.
        let mut headers = HeaderMap::new();
        for _ in 0..=MAX_STORED_HEADERS {
            headers.append("x-h", HeaderValue::from_static("v"));
        }
        let many = CachedResponse::new(StatusCode::OK, headers, Bytes::new());
        assert!(many.encode(Format::Postcard, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_content_length_that_disagrees_with_the_body_is_never_served() {
        let stored = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"hello"));
        let mut out = Vec::new();
        stored.encode(Format::Postcard, &mut out).unwrap();
        // Truncated inside the body: the declared 5 bytes are not there.
        let err = CachedResponse::decode(Bytes::copy_from_slice(&out[..out.len() - 1]), Format::Postcard)
            .unwrap_err();
        assert!(err.to_string().contains("Content-Length"), "{err}");
        // Extra bytes after it.
        let mut longer = out.clone();
        longer.push(b'!');
        assert!(CachedResponse::decode(longer.into(), Format::Postcard).is_err());
        // Two values, or one that is not a number.
        for values in [&["5", "5"][..], &["+5"], &["5 "], &[""], &["0x5"]] {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("content-length", HeaderValue::from_static(value));
            }
            let response = CachedResponse {
                status: StatusCode::OK,
                headers,
                body: Bytes::from_static(b"hello"),
                exchange: None,
                request_headers: HeaderMap::new(),
            };
            assert!(
                response.encode(Format::Postcard, &mut Vec::new()).is_err(),
                "{values:?}"
            );
        }
        // With no Content-Length at all, the body is what it is.
        assert_eq!(
            CachedResponse::decode(crafted(0, b"abc"), Format::Postcard)
                .unwrap()
                .body,
            "abc"
        );
    }

    #[test]
    fn the_first_layout_reads_as_an_error_not_garbage() {
        // u16 status 200, one header `a: b`, body "hello", as written
        // before the layout had a version byte.
        let mut old = Vec::new();
        old.put_u16(200);
        old.put_u32(1);
        old.put_u16(1);
        old.put_slice(b"a");
        old.put_u32(1);
        old.put_slice(b"b");
        old.put_slice(b"hello");
        assert!(CachedResponse::decode(old.into(), Format::Postcard).is_err());
    }

    #[test]
    fn a_hit_response_holds_placeholders_and_stores_without_them() {
        let plain = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"hi"));
        let mut out = Vec::new();
        plain.encode(Format::Postcard, &mut out).unwrap();
        let hit = HitResponse::decode(out.into(), Format::Postcard).unwrap();
        for name in &HIT_HEADERS {
            assert_eq!(hit.response.headers[name], "");
        }
        assert_eq!(hit.response.headers["content-length"], "2");
        let mut again = Vec::new();
        hit.encode(Format::Postcard, &mut again).unwrap();
        assert_eq!(
            CachedResponse::decode(again.into(), Format::Postcard).unwrap(),
            plain
        );
    }

    #[test]
    fn policy_mode_responses_round_trip_and_old_markers_do_not() {
        let plain = CachedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"hi"));
        let mut out = Vec::new();
        plain.encode(Format::Postcard, &mut out).unwrap();
        assert_eq!(
            CachedResponse::decode(out.into(), Format::Postcard).unwrap(),
            plain
        );
        // The byte of the `Vary` markers of earlier versions reads as an
        // error, not as a response.
        assert!(CachedResponse::decode(Bytes::from_static(b"\x56\x00\x01"), Format::Postcard).is_err());
    }
}
