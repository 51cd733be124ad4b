//! The messages of the Redis invalidation bus
//! (`hitbox_redis::invalidation::InvalidationMessage::decode`).
//!
//! Raw reading: any message decodes to an invalidation or `None`, never a
//! panic, and a message that decodes encodes back to exactly its bytes.
//!
//! Structured reading: an arbitrary message from a valid origin encodes and
//! decodes to itself (a tag message needs a non-empty tag, a soft prefix a
//! non-empty prefix: an empty one is refused on both sides of the wire, so
//! it must read as `None`).
#![no_main]

use arbitrary::Unstructured;
use hitbox_redis::OriginId;
use hitbox_redis::invalidation::{Invalidation, InvalidationMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    raw(data);
    let _ = structured(&mut Unstructured::new(data));
});

fn raw(data: &[u8]) {
    if let Some(message) = InvalidationMessage::decode(data) {
        assert_eq!(message.encode().as_bytes(), data);
        if let Invalidation::Tag(tag) | Invalidation::SoftTag(tag) = &message.invalidation {
            assert!(!tag.is_empty());
        }
    }
}

fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let origin: String = u.arbitrary()?;
    let Ok(origin) = OriginId::new(&origin) else {
        return Ok(());
    };
    let invalidation = match u.int_in_range(0..=6u8)? {
        0 => Invalidation::Key(u.arbitrary()?),
        1 => Invalidation::Tag(u.arbitrary()?),
        2 => Invalidation::Prefix(u.arbitrary()?),
        3 => Invalidation::SoftKey(u.arbitrary()?),
        4 => Invalidation::SoftTag(u.arbitrary()?),
        5 => Invalidation::SoftPrefix(u.arbitrary()?),
        _ => Invalidation::Purge,
    };
    let message = InvalidationMessage { origin, invalidation };
    let decoded = InvalidationMessage::decode(message.encode().as_bytes());
    let refused = match &message.invalidation {
        Invalidation::Tag(name) | Invalidation::SoftTag(name) | Invalidation::SoftPrefix(name) => {
            name.is_empty()
        }
        _ => false,
    };
    if refused {
        assert_eq!(decoded, None);
    } else {
        assert_eq!(decoded, Some(message));
    }
    Ok(())
}
