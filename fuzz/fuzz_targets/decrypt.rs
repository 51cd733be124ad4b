//! Decryption (`AesGcmEncryptor::open` and the `Encryptor` trait the
//! stages call), with the current key and a previous one.
//!
//! Raw reading: any bytes open to an error, never a panic. Bytes that do
//! open are exactly the ciphertext the current or the previous key makes of
//! that plaintext with that nonce: no other bytes are accepted.
//!
//! Structured reading: an arbitrary plaintext sealed under an arbitrary
//! binding opens to itself, through the trait too; with another cache key,
//! format, compression flag, tenant or master key, or one flipped byte, it
//! does not open.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Unstructured;
use hitbox_backend::encryption::{AesGcmEncryptor, EntryBinding, NONCE_LEN, format_token};
use hitbox_backend::{EncryptionContext, Encryptor};
use hitbox_core::CacheKey;
use hitbox_fuzz::{TENANT, encryptor, fixed_encryptor, master_key};
use libfuzzer_sys::fuzz_target;

static ENCRYPTOR: LazyLock<AesGcmEncryptor> = LazyLock::new(encryptor);

fuzz_target!(|data: &[u8]| {
    raw(data);
    let _ = structured(&mut Unstructured::new(data));
});

fn raw(data: &[u8]) {
    let key = hitbox_fuzz::fuzz_key();
    for format_id in [0u8, 1, 5] {
        for compressed in [false, true] {
            let format = format_token(format_id);
            let binding = EntryBinding::new(key.as_str(), &format).compressed(compressed);
            let direct = ENCRYPTOR.open(&binding, data);
            let context = EncryptionContext {
                key: &key,
                format_id,
                compressed,
            };
            let through_trait = ENCRYPTOR.decrypt(&context, data);
            assert_eq!(direct, through_trait);
            let Ok(plain) = direct else {
                continue;
            };
            let nonce: [u8; NONCE_LEN] = data[..NONCE_LEN].try_into().unwrap();
            let remade =
                [0x61, 0x62].map(|master| fixed_encryptor(master, nonce).seal(&binding, &plain).unwrap());
            assert!(
                remade.iter().any(|sealed| sealed == data),
                "accepted bytes that no key makes of their plaintext"
            );
        }
    }
}

fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let plain: Vec<u8> = u.arbitrary()?;
    let key_text: String = u.arbitrary()?;
    let format_id: u8 = u.arbitrary()?;
    let compressed: bool = u.arbitrary()?;
    let format = format_token(format_id);
    let binding = EntryBinding::new(&key_text, &format).compressed(compressed);
    let sealed = ENCRYPTOR.seal(&binding, &plain).unwrap();
    assert_eq!(ENCRYPTOR.open(&binding, &sealed).unwrap(), plain);

    // Written with the previous key, it still opens (rotation).
    let old = AesGcmEncryptor::builder(master_key(0x62))
        .tenant(TENANT)
        .build()
        .unwrap();
    let sealed_old = old.seal(&binding, &plain).unwrap();
    assert_eq!(ENCRYPTOR.open(&binding, &sealed_old).unwrap(), plain);

    // Through the trait, bound to a cache key.
    let cache_key = CacheKey::from_encoded(key_text.as_str());
    let context = EncryptionContext {
        key: &cache_key,
        format_id,
        compressed,
    };
    let through_trait = ENCRYPTOR.encrypt(&context, &plain).unwrap();
    assert_eq!(ENCRYPTOR.decrypt(&context, &through_trait).unwrap(), plain);

    // Any other binding, tenant or key refuses it.
    let other_key = format!("{key_text}x");
    let other_format = format_token(format_id.wrapping_add(1));
    for other in [
        EntryBinding::new(&other_key, &format).compressed(compressed),
        EntryBinding::new(&key_text, &other_format).compressed(compressed),
        EntryBinding::new(&key_text, &format).compressed(!compressed),
        EntryBinding::new(&key_text, &format)
            .compressed(compressed)
            .original_type(""),
    ] {
        assert!(ENCRYPTOR.open(&other, &sealed).is_err(), "{other:?}");
    }
    let other_tenant = AesGcmEncryptor::builder(master_key(0x61))
        .tenant("other-tenant")
        .build()
        .unwrap();
    assert!(other_tenant.open(&binding, &sealed).is_err());
    let stranger = AesGcmEncryptor::new(master_key(0x63));
    assert!(stranger.open(&binding, &sealed).is_err());

    let mut flipped = sealed.clone();
    let at = u.choose_index(flipped.len())?;
    flipped[at] ^= u.int_in_range(1..=255)?;
    assert!(ENCRYPTOR.open(&binding, &flipped).is_err(), "byte {at} flipped");
    let cut = u.choose_index(sealed.len())?;
    assert!(ENCRYPTOR.open(&binding, &sealed[..cut]).is_err(), "cut at {cut}");
    Ok(())
}
