//! The AES-256-GCM stage against the official cachekit vectors
//! (`tests/vectors/cachekit/encryption.json`), and its behaviour as a stage:
//! every kind of mismatch or tampering is a clean miss.
#![cfg(feature = "encryption")]

use bytes::Bytes;
use hitbox_backend::encryption::{
    AesGcmEncryptor, DEFAULT_TENANT, EncryptionError, EntryBinding, FixedNonces, MASTER_KEY_ENV, MasterKey,
    PREVIOUS_MASTER_KEYS_ENV, aad_v3,
};
use hitbox_backend::{Backend, Cache, CodecError, Compression, MemoryBackend, Staged, Stages};
use hitbox_core::CacheKey;
use serde_json::Value;

const VECTORS: &str = include_str!("vectors/cachekit/encryption.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("encryption.json parses")
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is a string in {value}"))
}

fn unhex(value: &Value, field: &str) -> Vec<u8> {
    hex::decode(text(value, field)).unwrap_or_else(|e| panic!("`{field}` is hex: {e}"))
}

fn master(hex: &str) -> MasterKey {
    MasterKey::from_hex(hex).expect("the vector's master key is accepted")
}

fn binding(vector: &Value) -> EntryBinding<'_> {
    let mut binding = EntryBinding::new(text(vector, "cache_key"), text(vector, "format"))
        .compressed(vector["compressed"].as_bool().expect("`compressed` is a bool"));
    if let Some(original_type) = vector["original_type"].as_str() {
        binding = binding.original_type(original_type);
    }
    binding
}

fn nonce_of(ciphertext: &[u8]) -> [u8; 12] {
    ciphertext[..12].try_into().unwrap()
}

/// Checks one sealed vector against an encryptor for `master` and `tenant`:
/// the AAD, the ciphertext (re-made with the vector's nonce) and the
/// plaintext all match the vector.
fn check_sealed_vector(master_key: &MasterKey, tenant: &str, vector: &Value) {
    let name = text(vector, "name");
    let binding = binding(vector);
    let plaintext = unhex(vector, "plaintext_hex");
    let ciphertext = unhex(vector, "ciphertext_hex");
    let expected_aad = unhex(vector, "aad_hex");

    assert_eq!(aad_v3(tenant, &binding), expected_aad, "{name}: AAD");
    let encryptor = AesGcmEncryptor::builder(master_key.clone())
        .tenant(tenant)
        .nonce_source(FixedNonces::new([nonce_of(&ciphertext)]))
        .build()
        .unwrap();
    assert_eq!(encryptor.aad(&binding), expected_aad, "{name}: encryptor AAD");
    assert_eq!(
        encryptor.seal(&binding, &plaintext).unwrap(),
        ciphertext,
        "{name}: ciphertext"
    );
    assert_eq!(
        encryptor.open(&binding, &ciphertext).unwrap(),
        plaintext,
        "{name}: plaintext"
    );
}

#[test]
fn main_set_fingerprint() {
    let v = vectors();
    let derived = master(text(&v, "master_key_hex"))
        .derive(text(&v, "tenant_id"))
        .unwrap();
    assert_eq!(
        derived.fingerprint().to_string(),
        text(&v, "derived_key_fingerprint_hex")
    );
    let encryptor = AesGcmEncryptor::builder(master(text(&v, "master_key_hex")))
        .tenant(text(&v, "tenant_id"))
        .build()
        .unwrap();
    assert_eq!(
        encryptor.fingerprint().to_string(),
        text(&v, "derived_key_fingerprint_hex")
    );
}

#[test]
fn main_set_vectors() {
    let v = vectors();
    let key = master(text(&v, "master_key_hex"));
    let list = v["vectors"].as_array().unwrap();
    assert_eq!(list.len(), 7);
    for vector in list {
        check_sealed_vector(&key, text(&v, "tenant_id"), vector);
    }
}

#[test]
fn main_set_layout_constants() {
    let v = vectors();
    assert_eq!(v["nonce_size"], 12);
    assert_eq!(v["tag_size"], 16);
    assert_eq!(
        text(&v, "aad_version"),
        format!("0x{:02x}", hitbox_backend::encryption::AAD_VERSION)
    );
}

#[test]
fn keyring_fingerprints_and_vectors() {
    let v = vectors();
    let ring = &v["keyring"];
    let tenant = text(ring, "tenant_id");
    let key_of = |id: &str| {
        let entry = ring["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("keyring entry {id}"));
        master(text(entry, "master_key_hex"))
    };
    for entry in ring["entries"].as_array().unwrap() {
        let derived = master(text(entry, "master_key_hex")).derive(tenant).unwrap();
        assert_eq!(
            derived.fingerprint().to_string(),
            text(entry, "derived_key_fingerprint_hex")
        );
    }
    for vector in ring["vectors"].as_array().unwrap() {
        let key = key_of(text(vector, "encrypted_with"));
        assert_eq!(
            key.derive(tenant).unwrap().fingerprint().to_string(),
            text(vector, "key_fingerprint_hex")
        );
        check_sealed_vector(&key, tenant, vector);
    }
}

#[test]
fn keyring_rotation_decrypts_with_previous_keys_only_when_configured() {
    let v = vectors();
    let ring = &v["keyring"];
    let tenant = text(ring, "tenant_id");
    let entries = ring["entries"].as_array().unwrap();
    let k1 = master(text(&entries[0], "master_key_hex"));
    let k2 = master(text(&entries[1], "master_key_hex"));
    let vectors = ring["vectors"].as_array().unwrap();
    let by_key = |id: &str| vectors.iter().find(|x| x["encrypted_with"] == id).unwrap();
    let (v1, v2) = (by_key("k1"), by_key("k2"));

    // After rotating from k1 to k2: both entries open.
    let rotated = AesGcmEncryptor::builder(k2.clone())
        .tenant(tenant)
        .previous_key(k1.clone())
        .build()
        .unwrap();
    for vector in [v1, v2] {
        let opened = rotated.open(&binding(vector), &unhex(vector, "ciphertext_hex"));
        assert_eq!(
            opened.unwrap(),
            unhex(vector, "plaintext_hex"),
            "{}",
            text(vector, "name")
        );
    }
    // New entries are written with the current key only.
    let sealed = rotated.seal(&binding(v1), b"fresh").unwrap();
    let old_only = AesGcmEncryptor::builder(k1.clone())
        .tenant(tenant)
        .build()
        .unwrap();
    assert_eq!(old_only.open(&binding(v1), &sealed), Err(CodecError::Decrypt));

    // Without the previous key, the old entry is unreadable, and the other
    // way round.
    let new_only = AesGcmEncryptor::builder(k2).tenant(tenant).build().unwrap();
    assert_eq!(
        new_only.open(&binding(v1), &unhex(v1, "ciphertext_hex")),
        Err(CodecError::Decrypt)
    );
    assert_eq!(
        old_only.open(&binding(v2), &unhex(v2, "ciphertext_hex")),
        Err(CodecError::Decrypt)
    );
}

#[test]
fn default_tenant_vectors() {
    let v = vectors();
    let section = &v["default_tenant"];
    assert_eq!(DEFAULT_TENANT, text(section, "tenant_id"));
    // No tenant configured: the literal "default" is used.
    let encryptor = AesGcmEncryptor::new(master(text(&v, "master_key_hex")));
    assert_eq!(encryptor.tenant(), text(section, "tenant_id"));
    assert_eq!(
        encryptor.fingerprint().to_string(),
        text(section, "derived_key_fingerprint_hex")
    );
    for vector in section["vectors"].as_array().unwrap() {
        let opened = encryptor.open(&binding(vector), &unhex(vector, "ciphertext_hex"));
        assert_eq!(opened.unwrap(), unhex(vector, "plaintext_hex"));
        check_sealed_vector(&master(text(&v, "master_key_hex")), DEFAULT_TENANT, vector);
    }
}

#[test]
fn master_key_input_accept_rows() {
    let v = vectors();
    let section = &v["master_key_input"];
    let accept = section["accept_vectors"].as_array().unwrap();
    assert!(!accept.is_empty());
    for row in accept {
        let name = text(row, "name");
        // The hex entry point, no tenant given.
        let from_hex = MasterKey::from_hex(text(row, "master_key_hex")).unwrap();
        let encryptor = AesGcmEncryptor::new(from_hex.clone());
        assert_eq!(encryptor.tenant(), text(section, "tenant_id"));
        assert_eq!(
            encryptor.fingerprint().to_string(),
            text(row, "derived_key_fingerprint_hex"),
            "{name}"
        );
        let opened = encryptor.open(&binding(row), &unhex(row, "ciphertext_hex"));
        assert_eq!(opened.unwrap(), unhex(row, "plaintext_hex"), "{name}");
        check_sealed_vector(&from_hex, DEFAULT_TENANT, row);

        // The raw-bytes entry point, given the same 32 bytes.
        let from_bytes = MasterKey::from_bytes(&unhex(row, "master_key_hex")).unwrap();
        assert_eq!(from_bytes, from_hex, "{name}");
        assert_eq!(
            AesGcmEncryptor::new(from_bytes).fingerprint().to_string(),
            text(row, "derived_key_fingerprint_hex")
        );
    }
}

#[test]
fn master_key_input_reject_rows() {
    let v = vectors();
    let section = &v["master_key_input"];
    let rejects = section["reject_vectors"].as_array().unwrap();
    assert_eq!(rejects.len(), 11);
    for row in rejects {
        let result = MasterKey::from_hex(text(row, "master_key_hex"));
        assert!(result.is_err(), "{} must be refused", text(row, "name"));
        // The error never repeats the key.
        let message = result.unwrap_err().to_string();
        assert!(!message.contains("7f80ff"), "{message}");
    }
    let raw_rejects = section["raw_reject_vectors"].as_array().unwrap();
    assert_eq!(raw_rejects.len(), 5);
    for row in raw_rejects {
        let bytes = unhex(row, "raw_key_hex");
        assert!(
            matches!(
                MasterKey::from_bytes(&bytes),
                Err(EncryptionError::KeyLength { expected: 32, .. })
            ),
            "{} must be refused",
            text(row, "name")
        );
    }
}

#[test]
fn both_planted_entries_read_with_one_key_current_and_the_other_previous() {
    let v = vectors();
    let accept = &v["master_key_input"]["accept_vectors"][0];
    let default_entry = &v["default_tenant"]["vectors"][0];
    let accept_key = master(text(accept, "master_key_hex"));
    let main_key = master(text(&v, "master_key_hex"));
    for (current, previous) in [(&accept_key, &main_key), (&main_key, &accept_key)] {
        let encryptor = AesGcmEncryptor::builder(current.clone())
            .previous_key(previous.clone())
            .build()
            .unwrap();
        for row in [accept, default_entry] {
            let opened = encryptor.open(&binding(row), &unhex(row, "ciphertext_hex"));
            assert_eq!(
                opened.unwrap(),
                unhex(row, "plaintext_hex"),
                "{}",
                text(row, "name")
            );
        }
    }
}

#[test]
fn debug_output_never_shows_key_material() {
    let key = master(&"ab".repeat(32));
    assert!(!format!("{key:?}").contains("ab"));
    let derived = key.derive("t").unwrap();
    assert_eq!(
        format!("{derived:?}"),
        format!("DerivedKey({:?})", derived.fingerprint())
    );
    let encryptor = AesGcmEncryptor::new(key);
    assert!(!format!("{encryptor:?}").contains("abab"));
}

/// The only test that touches the process environment.
#[test]
fn from_env_reads_the_variables_only_when_called() {
    let v = vectors();
    let current = text(&v, "master_key_hex");
    let previous = text(&v["master_key_input"]["accept_vectors"][0], "master_key_hex");
    // SAFETY: no other test in this binary reads or writes the environment.
    unsafe {
        std::env::remove_var(MASTER_KEY_ENV);
        std::env::remove_var(PREVIOUS_MASTER_KEYS_ENV);
    }
    assert_eq!(
        MasterKey::from_env().unwrap_err(),
        EncryptionError::EnvMissing { var: MASTER_KEY_ENV }
    );
    unsafe { std::env::set_var(MASTER_KEY_ENV, format!("{current}\n")) };
    assert!(matches!(
        AesGcmEncryptor::from_env(),
        Err(EncryptionError::EnvInvalid {
            var: MASTER_KEY_ENV,
            ..
        })
    ));
    unsafe { std::env::set_var(MASTER_KEY_ENV, current) };
    let encryptor = AesGcmEncryptor::from_env().unwrap();
    assert_eq!(
        encryptor.fingerprint().to_string(),
        text(&v["default_tenant"], "derived_key_fingerprint_hex")
    );
    assert!(encryptor.previous_fingerprints().is_empty());

    unsafe {
        std::env::set_var(
            PREVIOUS_MASTER_KEYS_ENV,
            format!("{previous}, {}", "11".repeat(32)),
        )
    };
    let encryptor = AesGcmEncryptor::from_env().unwrap();
    assert_eq!(
        encryptor.previous_fingerprints()[0].to_string(),
        text(
            &v["master_key_input"]["accept_vectors"][0],
            "derived_key_fingerprint_hex"
        )
    );
    assert_eq!(encryptor.previous_fingerprints().len(), 2);

    unsafe { std::env::set_var(PREVIOUS_MASTER_KEYS_ENV, format!("{previous},{current}")) };
    assert_eq!(
        AesGcmEncryptor::from_env().unwrap_err(),
        EncryptionError::PreviousKeyIsCurrent
    );
    let four = ["11".repeat(32), "22".repeat(32), "33".repeat(32), "44".repeat(32)].join(",");
    unsafe { std::env::set_var(PREVIOUS_MASTER_KEYS_ENV, four) };
    assert!(matches!(
        AesGcmEncryptor::from_env(),
        Err(EncryptionError::TooManyPreviousKeys { max: 3, found: 4 })
    ));
    unsafe {
        std::env::remove_var(MASTER_KEY_ENV);
        std::env::remove_var(PREVIOUS_MASTER_KEYS_ENV);
    }
}

// --- The encryptor as a stage -------------------------------------------

const CANARY: &str = "hitbox-plaintext-canary-7d1f";

fn key_material(byte: u8) -> MasterKey {
    MasterKey::from_bytes(&[byte; 32]).unwrap()
}

fn encryptor(master: u8, tenant: &str) -> AesGcmEncryptor {
    AesGcmEncryptor::builder(key_material(master))
        .tenant(tenant)
        .build()
        .unwrap()
}

fn big_value() -> String {
    format!("{CANARY} compresses well. ").repeat(200)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn cache_over(memory: &MemoryBackend, stages: Stages) -> Cache {
    Cache::new(Staged::new(memory.clone(), stages))
}

#[tokio::test]
async fn round_trip_with_compression_and_encryption() {
    let memory = MemoryBackend::new();
    let stages = Stages::new()
        .compression(Compression::zstd(3))
        .encryptor(encryptor(1, "acme"));
    let cache = Cache::new(Staged::new(memory.clone(), stages));
    let small = CacheKey::from_encoded("acme:small");
    let big = CacheKey::from_encoded("acme:big");
    cache.set(&small, &CANARY.to_string()).await.unwrap();
    cache.set(&big, &big_value()).await.unwrap();
    assert_eq!(cache.get::<String>(&small).await.as_deref(), Some(CANARY));
    assert_eq!(cache.get::<String>(&big).await, Some(big_value()));

    let stored = memory.raw(&big).unwrap();
    assert_eq!(
        stored[4],
        Compression::zstd(3).id(),
        "the big entry is compressed"
    );
    assert_eq!(stored[5], hitbox_backend::encryption::AES_GCM_ENCRYPTOR_ID);
    assert!(
        stored.len() < big_value().len() / 4,
        "compression ran before encryption"
    );
}

#[tokio::test]
async fn stored_bytes_hold_no_plaintext_when_encryption_is_on() {
    let key = CacheKey::from_encoded("acme:secret");
    // Control: without encryption the canary is visible, so the search works.
    let plain = MemoryBackend::new();
    cache_over(&plain, Stages::new())
        .set(&key, &CANARY.to_string())
        .await
        .unwrap();
    assert!(contains(&plain.raw(&key).unwrap(), CANARY.as_bytes()));

    for stages in [
        Stages::new().encryptor(encryptor(1, "acme")),
        Stages::new()
            .compression(Compression::zstd(3))
            .min_compress_size(0)
            .encryptor(encryptor(1, "acme")),
    ] {
        let memory = MemoryBackend::new();
        let cache = cache_over(&memory, stages);
        cache.set(&key, &CANARY.to_string()).await.unwrap();
        let stored = memory.raw(&key).unwrap();
        assert!(!contains(&stored, CANARY.as_bytes()));
        assert!(!contains(&stored, &CANARY.as_bytes()[..8]));
        assert_eq!(cache.get::<String>(&key).await.as_deref(), Some(CANARY));
    }
}

#[tokio::test]
async fn the_same_value_twice_gets_fresh_nonces() {
    let memory = MemoryBackend::new();
    let cache = cache_over(&memory, Stages::new().encryptor(encryptor(1, "acme")));
    let key = CacheKey::from_encoded("acme:twice");
    cache.set(&key, &CANARY.to_string()).await.unwrap();
    let first = memory.raw(&key).unwrap();
    cache.set(&key, &CANARY.to_string()).await.unwrap();
    let second = memory.raw(&key).unwrap();
    assert_ne!(first, second);
    assert_ne!(first[6..18], second[6..18], "nonces differ");
}

#[tokio::test]
async fn a_tampered_byte_anywhere_is_a_clean_miss() {
    for stages in [
        Stages::new().encryptor(encryptor(1, "acme")),
        Stages::new()
            .compression(Compression::zstd(3))
            .min_compress_size(0)
            .encryptor(encryptor(1, "acme")),
    ] {
        let memory = MemoryBackend::new();
        let cache = cache_over(&memory, stages);
        let key = CacheKey::from_encoded("acme:tamper");
        cache.set(&key, &CANARY.to_string()).await.unwrap();
        let original = memory.raw(&key).unwrap();
        for position in 0..original.len() {
            for flip in [0x01, 0x80] {
                let mut damaged = original.to_vec();
                damaged[position] ^= flip;
                memory.put_raw(&key, damaged);
                assert_eq!(
                    cache.get::<String>(&key).await,
                    None,
                    "byte {position} flipped with {flip:#04x}"
                );
            }
        }
        // The untouched bytes still read: the misses came from the damage.
        memory.put_raw(&key, original);
        assert_eq!(cache.get::<String>(&key).await.as_deref(), Some(CANARY));
    }
}

#[tokio::test]
async fn the_body_alone_fails_with_decrypt_when_tampered() {
    let stages = Stages::new().encryptor(encryptor(1, "acme"));
    let key = CacheKey::from_encoded("acme:body");
    let memory = MemoryBackend::new();
    cache_over(&memory, stages.clone())
        .set(&key, &CANARY.to_string())
        .await
        .unwrap();
    let original = memory.raw(&key).unwrap();
    // Past the six-byte stage header: nonce, ciphertext and tag.
    for position in 6..original.len() {
        let mut damaged = original.to_vec();
        damaged[position] ^= 0x20;
        assert_eq!(
            stages.open(&key, &Bytes::from(damaged)),
            Err(CodecError::Decrypt),
            "byte {position}"
        );
    }
    // Truncation too.
    for len in 6..original.len() {
        assert!(stages.open(&key, &original.slice(..len)).is_err(), "length {len}");
    }
}

#[tokio::test]
async fn a_wrong_key_is_a_clean_miss() {
    let memory = MemoryBackend::new();
    let key = CacheKey::from_encoded("acme:key");
    cache_over(&memory, Stages::new().encryptor(encryptor(1, "acme")))
        .set(&key, &CANARY.to_string())
        .await
        .unwrap();
    let wrong = Stages::new().encryptor(encryptor(2, "acme"));
    assert_eq!(
        wrong.open(&key, &memory.raw(&key).unwrap()),
        Err(CodecError::Decrypt)
    );
    assert_eq!(cache_over(&memory, wrong).get::<String>(&key).await, None);
    let right = cache_over(&memory, Stages::new().encryptor(encryptor(1, "acme")));
    assert_eq!(right.get::<String>(&key).await.as_deref(), Some(CANARY));
}

#[tokio::test]
async fn an_entry_copied_under_another_cache_key_is_a_clean_miss() {
    let memory = MemoryBackend::new();
    let stages = Stages::new().encryptor(encryptor(1, "acme"));
    let cache = cache_over(&memory, stages.clone());
    let (alice, bob) = (
        CacheKey::from_encoded("acme:user:alice"),
        CacheKey::from_encoded("acme:user:bob"),
    );
    cache.set(&alice, &CANARY.to_string()).await.unwrap();
    cache.set(&bob, &"bob's own value".to_string()).await.unwrap();
    let alices = memory.raw(&alice).unwrap();
    memory.put_raw(&bob, alices.clone());
    assert_eq!(stages.open(&bob, &alices), Err(CodecError::Decrypt));
    assert_eq!(cache.get::<String>(&bob).await, None);
    assert_eq!(cache.get::<String>(&alice).await.as_deref(), Some(CANARY));
}

#[tokio::test]
async fn another_tenant_is_a_clean_miss() {
    let memory = MemoryBackend::new();
    let key = CacheKey::from_encoded("shared:key");
    cache_over(&memory, Stages::new().encryptor(encryptor(1, "acme")))
        .set(&key, &CANARY.to_string())
        .await
        .unwrap();
    let globex = Stages::new().encryptor(encryptor(1, "globex"));
    assert_eq!(
        globex.open(&key, &memory.raw(&key).unwrap()),
        Err(CodecError::Decrypt)
    );
    assert_eq!(cache_over(&memory, globex).get::<String>(&key).await, None);
}

#[tokio::test]
async fn rotation_through_a_staged_tier() {
    let memory = MemoryBackend::new();
    let key = CacheKey::from_encoded("acme:rotated");
    cache_over(&memory, Stages::new().encryptor(encryptor(1, "acme")))
        .set(&key, &CANARY.to_string())
        .await
        .unwrap();
    let rotated = AesGcmEncryptor::builder(key_material(2))
        .tenant("acme")
        .previous_key(key_material(1))
        .build()
        .unwrap();
    let cache = cache_over(&memory, Stages::new().encryptor(rotated));
    assert_eq!(cache.get::<String>(&key).await.as_deref(), Some(CANARY));
}

#[tokio::test]
async fn the_stage_binds_the_cache_key_format_and_compression() {
    let memory = MemoryBackend::new();
    let tier = Staged::new(memory.clone(), Stages::new().encryptor(encryptor(1, "acme")));
    let key = CacheKey::from_encoded("acme:bound");
    tier.write(
        &key,
        Bytes::from_static(b"raw bytes"),
        std::time::Duration::from_secs(60),
        &[],
    )
    .await
    .unwrap();
    let stored = memory.raw(&key).unwrap();
    // Raw bytes carry no envelope: format id 0, token "raw", uncompressed.
    assert_eq!(stored[3], 0);
    let body = &stored[6..];
    let opener = encryptor(1, "acme");
    let exact = EntryBinding::new(key.as_str(), "raw");
    assert_eq!(opener.open(&exact, body).unwrap(), b"raw bytes");
    for other in [
        EntryBinding::new(key.as_str(), "msgpack"),
        EntryBinding::new(key.as_str(), "raw").compressed(true),
        EntryBinding::new("acme:other", "raw"),
    ] {
        assert_eq!(opener.open(&other, body), Err(CodecError::Decrypt), "{other:?}");
    }
    assert_eq!(tier.read(&key).await.unwrap().as_deref(), Some(&b"raw bytes"[..]));
}

#[cfg(feature = "msgpack")]
#[tokio::test]
async fn message_pack_entries_are_bound_to_the_msgpack_token() {
    use hitbox_backend::Format;
    use hitbox_backend::encryption::format_token;

    assert_eq!(format_token(Format::MessagePack.id()), "msgpack");
    let memory = MemoryBackend::new();
    let cache = Cache::builder(Staged::new(
        memory.clone(),
        Stages::new().encryptor(encryptor(3, "acme")),
    ))
    .format(Format::MessagePack)
    .build();
    let key = CacheKey::from_encoded("acme:msgpack");
    cache.set(&key, &CANARY.to_string()).await.unwrap();
    let stored = memory.raw(&key).unwrap();
    assert_eq!(stored[3], Format::MessagePack.id());
    let opened = encryptor(3, "acme").open(&EntryBinding::new(key.as_str(), "msgpack"), &stored[6..]);
    assert!(contains(&opened.unwrap(), CANARY.as_bytes()));
    assert_eq!(cache.get::<String>(&key).await.as_deref(), Some(CANARY));
}
