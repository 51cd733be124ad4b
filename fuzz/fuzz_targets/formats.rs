//! Each value format (`Format::decode`): postcard, bitcode, JSON, bincode,
//! MessagePack.
//!
//! Raw reading: the first byte picks a format and a value type, the rest is
//! the payload. Any payload decodes to a value or an error, never a panic
//! or an abort (a huge length prefix must not allocate it). A value that
//! decodes encodes and decodes back to itself.
//!
//! Structured reading: an arbitrary value encodes and decodes to itself in
//! every format, and its encoding cut short is an error.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use hitbox_backend::Format;
use hitbox_fuzz::{FORMATS, Sample};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    if let Some((&selector, payload)) = data.split_first() {
        raw(selector, payload);
    }
    let _ = structured(&mut Unstructured::new(data));
});

fn raw(selector: u8, payload: &[u8]) {
    let format = FORMATS[usize::from(selector & 0x07) % FORMATS.len()];
    match (selector >> 3) % 6 {
        0 => round_trip::<Sample>(format, payload),
        1 => round_trip::<String>(format, payload),
        2 => round_trip::<Vec<u8>>(format, payload),
        3 => round_trip::<Vec<String>>(format, payload),
        4 => round_trip::<BTreeMap<String, Vec<u8>>>(format, payload),
        _ => round_trip::<(u64, i8, Option<bool>)>(format, payload),
    }
}

fn round_trip<T>(format: Format, payload: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(value) = format.decode::<T>(payload) else {
        return;
    };
    let mut again = Vec::new();
    format.encode_into(&value, &mut again).unwrap();
    assert_eq!(format.decode::<T>(&again).unwrap(), value, "{format:?}");
}

fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let value = Sample::arbitrary(u)?;
    let cut: usize = u.arbitrary()?;
    for format in FORMATS {
        let mut out = Vec::new();
        format.encode_into(&value, &mut out).unwrap();
        assert_eq!(format.decode::<Sample>(&out).unwrap(), value, "{format:?}");
        let cut = cut % out.len();
        assert!(
            format.decode::<Sample>(&out[..cut]).is_err(),
            "{format:?} cut at {cut}"
        );
    }
    Ok(())
}
