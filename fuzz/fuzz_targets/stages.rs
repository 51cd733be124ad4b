//! The stage header and what it wraps (`Stages::open`): the `HS` header,
//! zstd, lz4 with its CRC, AES-256-GCM, and their combinations, each as a
//! tier would configure them.
//!
//! Raw reading, for every configuration: any bytes open to an envelope or
//! an error, never a panic or an allocation past the decompression cap. What
//! opens is no larger than the cap, carries the format id the header
//! names, seals and opens again to itself, and (encrypted) does not open
//! under another key.
//!
//! Structured reading: an arbitrary envelope (or raw value) seals and opens
//! to itself under every configuration. With compression or encryption, a
//! flipped byte or a cut entry opens to an error or to the very same
//! envelope, never to other bytes, and an encrypted entry does not open
//! under another key.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Unstructured;
use bytes::Bytes;
use hitbox_backend::envelope::envelope_format_id;
use hitbox_backend::{DEFAULT_MAX_DECOMPRESSED, Stages};
use hitbox_core::{CacheKey, EntryMeta, Timestamp};
use hitbox_fuzz::{FORMATS, Sample, encode_envelope, fuzz_key, is_slice_of, stage_configs};
use libfuzzer_sys::fuzz_target;

static CONFIGS: LazyLock<Vec<(&'static str, Stages, bool)>> = LazyLock::new(stage_configs);

fuzz_target!(|data: &[u8]| {
    raw(data);
    let _ = structured(&mut Unstructured::new(data));
});

fn other_key() -> CacheKey {
    CacheKey::from_encoded("fuzz:v1:id=43")
}

fn raw(data: &[u8]) {
    let key = fuzz_key();
    let stored = Bytes::copy_from_slice(data);
    for (name, stages, transformed) in CONFIGS.iter() {
        let Ok(plain) = stages.open(&key, &stored) else {
            continue;
        };
        assert!(plain.len() <= DEFAULT_MAX_DECOMPRESSED, "{name}");
        assert_eq!(envelope_format_id(&plain).unwrap_or(0), data[3], "{name}");
        if !transformed {
            assert_eq!(&plain[..], &data[6..], "{name}");
            assert!(
                is_slice_of(&plain, &stored),
                "{name}: the plain body is not copied"
            );
        }
        let sealed = Bytes::from(stages.seal(&key, &plain).unwrap());
        assert_eq!(stages.open(&key, &sealed).unwrap(), plain, "{name}");
        if name.ends_with("aes") {
            assert!(stages.open(&other_key(), &stored).is_err(), "{name}");
        }
    }
}

fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let key = fuzz_key();
    let is_envelope: bool = u.arbitrary()?;
    let envelope = if is_envelope {
        let meta = EntryMeta::fresh_for(
            Timestamp::from_millis(u.arbitrary()?),
            std::time::Duration::from_millis(u.int_in_range(0..=1 << 40)?),
        );
        let format = FORMATS[u.choose_index(FORMATS.len())?];
        let value: Sample = u.arbitrary()?;
        encode_envelope(&value, &meta, format, &key).unwrap()
    } else {
        // Bytes given to a staged tier as they are (format id 0).
        let raw: Vec<u8> = u.arbitrary()?;
        if raw.starts_with(b"HB") {
            return Ok(());
        }
        Bytes::from(raw)
    };
    let flip_at: usize = u.arbitrary()?;
    let flip_with: u8 = u.int_in_range(1..=255)?;
    let cut_at: usize = u.arbitrary()?;
    for (name, stages, transformed) in CONFIGS.iter() {
        let sealed = stages.seal(&key, &envelope).unwrap();
        let stored = Bytes::from(sealed.clone());
        assert_eq!(stages.open(&key, &stored).unwrap(), envelope, "{name}");
        // Raw bytes (format id 0) have no check of their own: a flipped
        // compression id hands the compressed bytes back as the value.
        // Only envelopes are held to the flip and cut rules here.
        if !transformed || !is_envelope {
            continue;
        }
        let mut flipped = sealed.clone();
        let at = flip_at % flipped.len();
        flipped[at] ^= flip_with;
        if let Ok(plain) = stages.open(&key, &Bytes::from(flipped)) {
            assert_eq!(plain, envelope, "{name}: byte {at} flipped opened to other bytes");
        }
        let cut = cut_at % sealed.len();
        if let Ok(plain) = stages.open(&key, &stored.slice(..cut)) {
            assert_eq!(plain, envelope, "{name}: cut at {cut} opened to other bytes");
        }
        if name.ends_with("aes") {
            assert!(
                stages.open(&other_key(), &stored).is_err(),
                "{name}: opened under another key"
            );
        }
    }
    Ok(())
}
