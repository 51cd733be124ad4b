//! A stored HTTP response and its byte layout.
//!
//! ```text
//! u16 status | u32 header count | per header: u16 name length, name,
//! u32 value length, value | body (the rest)
//! ```
//!
//! All integers are big-endian. Decoding slices header values and the body
//! out of the stored buffer: a hit copies no body byte, whatever its size.

use bytes::{BufMut, Bytes};
use hitbox_backend::{CacheableValue, DecodeError, Format};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// A response as the cache keeps it: status, end-to-end headers and the
/// whole body.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers, hop-by-hop ones removed.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl CacheableValue for CachedResponse {
    fn encode(&self, _format: Format, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let head: usize = self
            .headers
            .iter()
            .map(|(name, value)| 6 + name.as_str().len() + value.len())
            .sum();
        out.reserve(6 + head + self.body.len());
        out.put_u16(self.status.as_u16());
        out.put_u32(self.headers.len() as u32);
        for (name, value) in &self.headers {
            let name = name.as_str().as_bytes();
            out.put_u16(u16::try_from(name.len()).map_err(|_| too_long("header name"))?);
            out.put_slice(name);
            out.put_u32(u32::try_from(value.len()).map_err(|_| too_long("header value"))?);
            out.put_slice(value.as_bytes());
        }
        out.put_slice(&self.body);
        Ok(())
    }

    fn decode(payload: Bytes, _format: Format) -> Result<Self, DecodeError> {
        let mut pos = 0;
        let status = read_u16(&payload, &mut pos)?;
        let status = StatusCode::from_u16(status).map_err(|_| bad("status code out of range"))?;
        let count = read_u32(&payload, &mut pos)? as usize;
        // Every header takes at least six bytes: refuse counts the payload
        // cannot hold before reserving anything.
        if count > (payload.len() - pos) / 6 {
            return Err(DecodeError::Truncated);
        }
        let mut headers = HeaderMap::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(read_u16(&payload, &mut pos)?);
            let name = take(&payload, &mut pos, len)?;
            let name = HeaderName::from_bytes(&name).map_err(|_| bad("invalid header name"))?;
            let len = read_u32(&payload, &mut pos)? as usize;
            let value = take(&payload, &mut pos, len)?;
            let value = HeaderValue::from_maybe_shared(value).map_err(|_| bad("invalid header value"))?;
            headers.append(name, value);
        }
        Ok(CachedResponse {
            status,
            headers,
            body: payload.slice(pos..),
        })
    }
}

fn too_long(what: &str) -> DecodeError {
    DecodeError::Payload(format!("{what} too long to store"))
}

fn bad(what: &str) -> DecodeError {
    DecodeError::Payload(what.to_owned())
}

fn take(payload: &Bytes, pos: &mut usize, len: usize) -> Result<Bytes, DecodeError> {
    let end = pos.checked_add(len).ok_or(DecodeError::Truncated)?;
    if end > payload.len() {
        return Err(DecodeError::Truncated);
    }
    let slice = payload.slice(*pos..end);
    *pos = end;
    Ok(slice)
}

fn read_u16(payload: &Bytes, pos: &mut usize) -> Result<u16, DecodeError> {
    let raw = take(payload, pos, 2)?;
    Ok(u16::from_be_bytes([raw[0], raw[1]]))
}

fn read_u32(payload: &Bytes, pos: &mut usize) -> Result<u32, DecodeError> {
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
        CachedResponse {
            status: StatusCode::CREATED,
            headers,
            body: Bytes::from(vec![b'x'; 10_000]),
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
        bad_status[0..2].copy_from_slice(&9_999u16.to_be_bytes());
        assert!(CachedResponse::decode(bad_status.into(), Format::Postcard).is_err());
        let mut huge_count = out.clone();
        huge_count[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(CachedResponse::decode(huge_count.into(), Format::Postcard).is_err());
        let mut bad_name = out;
        bad_name[8] = b' ';
        assert!(CachedResponse::decode(bad_name.into(), Format::Postcard).is_err());
    }
}
