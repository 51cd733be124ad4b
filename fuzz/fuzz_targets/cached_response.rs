//! A stored HTTP response (`hitbox_tower::CachedResponse` as a
//! `CacheableValue`): layout byte, exchange, status, headers, the request
//! headers `Vary` selects on, body.
//!
//! Raw reading: any payload decodes to a response or an error, never a
//! panic. A response that decodes has its body sliced from the payload (not
//! copied) as the payload's tail, a response time not before its request
//! time, and encodes and decodes back to itself.
//!
//! Structured reading: (1) an arbitrary response encodes and decodes to
//! itself, and cut short it is an error; (2) a payload that claims more
//! headers than a `HeaderMap` holds, padded so that the count passes the
//! six-bytes-per-header check (up to 255 KiB, past libFuzzer's default
//! input size), is an error and not a panic.
#![no_main]

use arbitrary::Unstructured;
use bytes::{BufMut, Bytes};
use hitbox_backend::{CacheableValue, Format};
use hitbox_fuzz::{arbitrary_headers, is_slice_of};
use hitbox_tower::CachedResponse;
use hitbox_tower::rfc9111::freshness::Exchange;
use http::StatusCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    raw(data);
    let _ = structured(&mut Unstructured::new(data));
    let _ = claimed_count(&mut Unstructured::new(data));
});

fn decode(payload: Bytes) -> Result<CachedResponse, hitbox_backend::CodecError> {
    CachedResponse::decode(payload, Format::Postcard)
}

fn encode(response: &CachedResponse) -> Result<Bytes, hitbox_backend::CodecError> {
    let mut out = Vec::new();
    response.encode(Format::Postcard, &mut out)?;
    Ok(Bytes::from(out))
}

fn raw(data: &[u8]) {
    let payload = Bytes::copy_from_slice(data);
    let Ok(response) = decode(payload.clone()) else {
        return;
    };
    assert!(is_slice_of(&response.body, &payload), "the body is not copied");
    assert!(data.ends_with(&response.body));
    if let Some(exchange) = response.exchange {
        assert!(exchange.response_time >= exchange.request_time);
        // The age calculation runs on it without overflowing.
        let _ = exchange.current_age(u64::MAX);
    }
    // What decodes is storable as it is: it re-encodes, and reads back equal.
    assert_eq!(decode(encode(&response).unwrap()).unwrap(), response);
}

fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let status = StatusCode::from_u16(u.int_in_range(100..=999)?).unwrap();
    let headers = arbitrary_headers(u, 24)?;
    let request_headers = arbitrary_headers(u, 8)?;
    let exchange = if u.arbitrary()? {
        let request_time: u64 = u.arbitrary()?;
        let response_time = request_time.saturating_add(u.arbitrary()?);
        let date: Option<u64> = u.arbitrary()?;
        Some(Exchange {
            request_time,
            response_time,
            date: date.filter(|d| *d != u64::MAX),
            age: u.arbitrary()?,
        })
    } else {
        None
    };
    let body: Vec<u8> = u.arbitrary()?;
    let response = CachedResponse {
        status,
        headers,
        body: Bytes::from(body),
        exchange,
        request_headers,
    };
    // A response whose Content-Length disagrees with its body is refused
    // when stored (and would be when read); any other one round-trips.
    let stored = match encode(&response) {
        Ok(stored) => stored,
        Err(error) => {
            assert!(error.to_string().contains("Content-Length"), "{error}");
            return Ok(());
        }
    };
    assert_eq!(decode(stored.clone()).unwrap(), response);
    let head = stored.len() - response.body.len();
    let cut = u.int_in_range(0..=head.saturating_sub(1))?;
    assert!(
        decode(stored.slice(..cut)).is_err(),
        "cut at {cut} of a {head}-byte head"
    );
    Ok(())
}

fn claimed_count(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let count: u32 = u.arbitrary()?;
    let pad_kib: u8 = u.arbitrary()?;
    let mut payload = Vec::with_capacity(8 + usize::from(pad_kib) * 1024);
    payload.put_u8(2); // layout
    payload.put_u8(0); // no exchange
    payload.put_u16(200);
    payload.put_u32(count);
    payload.resize(payload.len() + usize::from(pad_kib) * 1024, 0);
    // Zero bytes are no header name: with any count at all, an error; with
    // none, the zeros are an empty list of request headers and a body.
    let result = decode(Bytes::from(payload));
    assert_eq!(
        result.is_err(),
        count > 0 || pad_kib == 0,
        "{count} headers claimed over {pad_kib} KiB"
    );
    Ok(())
}
