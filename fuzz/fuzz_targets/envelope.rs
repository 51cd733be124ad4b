//! The envelope (`hitbox_backend::envelope`): the frame every stored entry
//! is in, and the values inside it.
//!
//! Raw reading: any bytes decode to an entry or an error, never a panic. An
//! entry that decodes re-frames to exactly the input (the layout is
//! canonical), its payload is a slice of the input (not a copy), its times are in order,
//! and a payload that decodes as a value in its format re-frames and decodes
//! to the same value.
//!
//! Structured reading: an arbitrary metadata and value, framed in each
//! format, decode back unchanged.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use hitbox_backend::Format;
use hitbox_backend::envelope::envelope_format_id;
use hitbox_core::{EntryMeta, Tag, Timestamp};
use hitbox_fuzz::{FORMATS, Opaque, Sample, decode_envelope, encode_envelope, format_of, fuzz_key};
use hitbox_tower::CachedResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    raw(data);
    let _ = structured(&mut Unstructured::new(data));
});

fn raw(data: &[u8]) {
    let key = fuzz_key();
    let input = Bytes::copy_from_slice(data);
    let Ok(entry) = decode_envelope(input.clone(), &key) else {
        return;
    };
    let meta = &entry.meta;
    assert!(meta.stored_at <= meta.fresh_until);
    assert!(meta.fresh_until <= meta.stale_until);
    assert!(meta.fresh_until <= meta.error_until);
    assert_eq!(envelope_format_id(data), Some(entry.format_id));
    assert!(
        hitbox_fuzz::is_slice_of(&entry.payload, &input),
        "the payload is not copied"
    );
    let Some(format) = format_of(entry.format_id) else {
        return;
    };
    let again = encode_envelope(&Opaque(entry.payload.clone()), meta, format, &key).unwrap();
    assert_eq!(again, input, "an accepted envelope re-frames to itself");

    // The payload as the values the engine stores.
    values::<Sample>(&entry, format);
    values::<String>(&entry, format);
    values::<Vec<u8>>(&entry, format);
    values::<u64>(&entry, format);
    let _ = entry.value::<CachedResponse>(format);
    // Read in another format, it is a mismatch.
    for other in FORMATS.into_iter().filter(|f| *f != format) {
        assert!(entry.value::<Opaque>(other).is_err());
    }
}

fn values<V>(entry: &hitbox_backend::envelope::RawEntry, format: Format)
where
    V: hitbox_backend::CacheableValue + PartialEq + std::fmt::Debug,
{
    let key = fuzz_key();
    if let Ok(value) = entry.value::<V>(format) {
        let framed = encode_envelope(&value, &entry.meta, format, &key).unwrap();
        let back = decode_envelope(framed, &key).unwrap();
        assert_eq!(back.meta, entry.meta);
        assert_eq!(back.value::<V>(format).unwrap(), value);
    }
}

fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let key = fuzz_key();
    // Times in order, as the engine writes them.
    let stored: u64 = u.int_in_range(0..=u64::MAX / 4)?;
    let fresh = stored + u.int_in_range(0..=u64::MAX / 4)?;
    let stale = fresh + u.int_in_range(0..=u64::MAX / 4)?;
    let error = fresh + u.int_in_range(0..=u64::MAX / 4)?;
    // An entry keeps at most 65,535 tags of at most 65,535 bytes each
    // (both lengths are u16s); past that they are cut when it is written,
    // by design. Generate within the limits, so a round trip is exact.
    let mut tags: Vec<String> = u.arbitrary()?;
    tags.truncate(usize::from(u16::MAX));
    for tag in &mut tags {
        let mut end = tag.len().min(usize::from(u16::MAX));
        while !tag.is_char_boundary(end) {
            end -= 1;
        }
        tag.truncate(end);
    }
    let meta = EntryMeta {
        stored_at: Timestamp::from_millis(stored),
        fresh_until: Timestamp::from_millis(fresh),
        stale_until: Timestamp::from_millis(stale),
        error_until: Timestamp::from_millis(error),
        tags: tags.into_iter().map(Tag::from).collect(),
    };
    let value = Sample::arbitrary(u)?;
    for format in FORMATS {
        let framed = encode_envelope(&value, &meta, format, &key).unwrap();
        let entry = decode_envelope(framed.clone(), &key).unwrap();
        assert_eq!(entry.meta, meta);
        assert_eq!(entry.format_id, format.id());
        assert_eq!(entry.value::<Sample>(format).unwrap(), value, "{format:?}");
        // Cut anywhere inside the metadata, it is an error.
        let cut = u.int_in_range(0..=meta.encoded_len() + 3)?;
        assert!(
            decode_envelope(framed.slice(..cut), &key).is_err(),
            "cut at {cut}"
        );
    }
    Ok(())
}
