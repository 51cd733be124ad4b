//! Cross-SDK keys and values against the official cachekit vectors
//! (`tests/vectors/cachekit/interop-mode.json`).
#![cfg(feature = "msgpack")]

use std::collections::BTreeMap;

use hitbox_backend::Format;
use hitbox_cachekit::interop::{InteropArg, args_hash, canonical_args, interop_cache_key, interop_key};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

const VECTORS: &str = include_str!("vectors/cachekit/interop-mode.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("interop-mode.json parses")
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is a string in {value}"))
}

fn unhex(value: &Value, field: &str) -> Vec<u8> {
    hex::decode(text(value, field)).unwrap_or_else(|e| panic!("`{field}` is hex: {e}"))
}

/// How the entries of maps and sets are ordered before they reach the
/// encoder: canonical encoding must not depend on it.
#[derive(Clone, Copy, Debug)]
enum Order {
    AsParsed,
    Reversed,
}

/// The single `$tag` key of a typed-input object, with its value.
fn tagged(object: &serde_json::Map<String, Value>) -> Option<(&str, &Value)> {
    match object.iter().next() {
        Some((tag, value)) if object.len() == 1 && tag.starts_with('$') => Some((tag.as_str(), value)),
        _ => None,
    }
}

fn arrange<T>(mut items: Vec<T>, order: Order) -> Vec<T> {
    if let Order::Reversed = order {
        items.reverse();
    }
    items
}

/// Tagged JSON (see the file's `tagged_json` note) to an interop argument.
fn arg(value: &Value, order: Order) -> InteropArg {
    match value {
        Value::Null => InteropArg::Nil,
        Value::Bool(b) => InteropArg::Bool(*b),
        Value::Number(n) => InteropArg::Int(
            n.as_i64()
                .map(i128::from)
                .or(n.as_u64().map(i128::from))
                .expect("JSON numbers in the file are integers"),
        ),
        Value::String(s) => InteropArg::Str(s.clone()),
        Value::Array(items) => InteropArg::Array(items.iter().map(|v| arg(v, order)).collect()),
        Value::Object(object) => match tagged(object) {
            Some(("$int", Value::String(s))) => InteropArg::Int(s.parse().expect("$int fits i128")),
            Some(("$float", Value::String(s))) => InteropArg::Float(s.parse().expect("$float parses")),
            Some(("$bytes", Value::String(s))) => InteropArg::Bytes(hex::decode(s).unwrap()),
            Some(("$datetime", Value::String(s))) => InteropArg::DateTime(s.clone()),
            Some(("$uuid", Value::String(s))) => InteropArg::Uuid(s.clone()),
            Some(("$set", Value::Array(items))) => {
                InteropArg::Set(arrange(items.iter().map(|v| arg(v, order)).collect(), order))
            }
            Some((tag, _)) => panic!("unknown tag {tag}"),
            None => InteropArg::Map(arrange(
                object.iter().map(|(k, v)| (k.clone(), arg(v, order))).collect(),
                order,
            )),
        },
    }
}

fn args(vector: &Value, order: Order) -> Vec<InteropArg> {
    vector["args"]
        .as_array()
        .expect("`args` is an array")
        .iter()
        .map(|v| arg(v, order))
        .collect()
}

#[test]
fn key_vectors() {
    let v = vectors();
    let list = v["key_vectors"].as_array().unwrap();
    assert_eq!(list.len(), 33);
    for vector in list {
        let name = text(vector, "name");
        for order in [Order::AsParsed, Order::Reversed] {
            let args = args(vector, order);
            let canonical = canonical_args(&args).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                hex::encode(&canonical),
                text(vector, "canonical_args_hex"),
                "{name} ({order:?}): canonical bytes"
            );
            assert_eq!(
                args_hash(&args).unwrap(),
                text(vector, "args_hash"),
                "{name}: hash"
            );
            let key = interop_key(text(vector, "namespace"), text(vector, "operation"), &args).unwrap();
            assert_eq!(key, text(vector, "expected_key"), "{name}: key");
            let cache_key = interop_cache_key(text(vector, "namespace"), text(vector, "operation"), &args);
            assert_eq!(
                cache_key.unwrap().as_str(),
                text(vector, "expected_key"),
                "{name}"
            );
        }
    }
}

#[test]
fn error_vectors() {
    let v = vectors();
    let list = v["error_vectors"].as_array().unwrap();
    assert_eq!(list.len(), 8);
    for vector in list {
        let name = text(vector, "name");
        let args = args(vector, Order::AsParsed);
        match (vector["namespace"].as_str(), vector["operation"].as_str()) {
            (Some(namespace), Some(operation)) => {
                assert!(
                    interop_key(namespace, operation, &args).is_err(),
                    "{name} must be refused"
                );
                assert!(interop_cache_key(namespace, operation, &args).is_err(), "{name}");
            }
            (None, None) => {
                // An argument error: refused whatever the (valid) segments.
                assert!(canonical_args(&args).is_err(), "{name} must be refused");
                assert!(args_hash(&args).is_err(), "{name}");
                assert!(interop_key("users", "get_user", &args).is_err(), "{name}");
            }
            _ => panic!("{name}: namespace and operation come together"),
        }
    }
}

/// A MessagePack value as the value vectors describe it, serialized the way
/// a hitbox user's own types are: through serde, maps in key order.
#[derive(Debug, Clone, PartialEq)]
enum Doc {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Doc>),
    Map(BTreeMap<String, Doc>),
}

impl Serialize for Doc {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Doc::Nil => serializer.serialize_unit(),
            Doc::Bool(b) => serializer.serialize_bool(*b),
            Doc::Int(i) => serializer.serialize_i64(*i),
            Doc::Float(f) => serializer.serialize_f64(*f),
            Doc::Str(s) => serializer.serialize_str(s),
            Doc::Array(items) => serializer.collect_seq(items),
            Doc::Map(entries) => serializer.collect_map(entries),
        }
    }
}

fn doc(value: &Value) -> Doc {
    match value {
        Value::Null => Doc::Nil,
        Value::Bool(b) => Doc::Bool(*b),
        Value::Number(n) => Doc::Int(n.as_i64().expect("value vector integers fit i64")),
        Value::String(s) => Doc::Str(s.clone()),
        Value::Array(items) => Doc::Array(items.iter().map(doc).collect()),
        Value::Object(object) => match tagged(object) {
            Some(("$float", Value::String(s))) => Doc::Float(s.parse().unwrap()),
            Some((tag, _)) => panic!("unexpected tag {tag} in a value vector"),
            None => Doc::Map(object.iter().map(|(k, v)| (k.clone(), doc(v))).collect()),
        },
    }
}

/// The plain JSON a decoded document should equal (tags resolved).
fn plain_json(value: &Value) -> Value {
    serde_json::to_value(doc(value)).unwrap()
}

#[test]
fn value_vectors() {
    let v = vectors();
    let list = v["value_vectors"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    for vector in list {
        let name = text(vector, "name");
        let expected = unhex(vector, "canonical_msgpack_hex");
        let mut out = Vec::new();
        Format::MessagePack
            .encode_into(&doc(&vector["value"]), &mut out)
            .unwrap();
        assert_eq!(
            hex::encode(&out),
            text(vector, "canonical_msgpack_hex"),
            "{name}: encoding"
        );
        // Reading the other SDKs' bytes back.
        let decoded: Value = Format::MessagePack.decode(&expected).unwrap();
        assert_eq!(decoded, plain_json(&vector["value"]), "{name}: decoding");
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Person {
    age: u32,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct PersonOtherOrder {
    name: String,
    age: u8,
}

#[test]
fn structs_are_maps_with_field_names() {
    let v = vectors();
    let vector = v["value_vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "issue_example_object")
        .expect("the issue example is present");
    let expected = unhex(vector, "canonical_msgpack_hex");
    let person = Person {
        age: vector["value"]["age"].as_u64().unwrap() as u32,
        name: text(&vector["value"], "name").to_owned(),
    };
    let mut out = Vec::new();
    Format::MessagePack.encode_into(&person, &mut out).unwrap();
    assert_eq!(out, expected);
    assert_eq!(Format::MessagePack.decode::<Person>(&expected).unwrap(), person);
    let reordered: PersonOtherOrder = Format::MessagePack.decode(&expected).unwrap();
    assert_eq!(
        (reordered.name.as_str(), u32::from(reordered.age)),
        (person.name.as_str(), person.age)
    );
}

#[test]
fn message_pack_decoding_is_strict() {
    let mut out = Vec::new();
    Format::MessagePack
        .encode_into(
            &Person {
                age: 1,
                name: "a".into(),
            },
            &mut out,
        )
        .unwrap();
    for len in 0..out.len() {
        assert!(
            Format::MessagePack.decode::<Person>(&out[..len]).is_err(),
            "length {len}"
        );
    }
    out.push(0xc0);
    assert!(
        Format::MessagePack.decode::<Person>(&out).is_err(),
        "trailing byte"
    );
    assert_eq!(Format::MessagePack.id(), 5);
}

#[cfg(feature = "encryption")]
mod encrypted {
    use super::*;
    use hitbox_backend::encryption::{AesGcmEncryptor, EntryBinding, FixedNonces, MasterKey, aad_v3};

    fn binding(vector: &Value) -> EntryBinding<'_> {
        EntryBinding::new(text(vector, "cache_key"), text(vector, "format"))
            .compressed(vector["compressed"].as_bool().unwrap())
    }

    #[test]
    fn aad_vectors() {
        let v = vectors();
        let list = v["aad_vectors"].as_array().unwrap();
        assert!(!list.is_empty());
        for vector in list {
            assert_eq!(
                aad_v3(text(vector, "tenant_id"), &binding(vector)),
                unhex(vector, "aad_hex"),
                "{}",
                text(vector, "name")
            );
        }
    }

    #[test]
    fn encryption_vectors() {
        let v = vectors();
        let list = v["encryption_vectors"].as_array().unwrap();
        assert!(!list.is_empty());
        for vector in list {
            let name = text(vector, "name");
            let master = MasterKey::from_hex(text(vector, "master_key_hex")).unwrap();
            let nonce: [u8; 12] = unhex(vector, "nonce_hex").try_into().unwrap();
            let encryptor = AesGcmEncryptor::builder(master)
                .tenant(text(vector, "tenant_id"))
                .nonce_source(FixedNonces::new([nonce]))
                .build()
                .unwrap();
            assert_eq!(
                encryptor.fingerprint().to_string(),
                text(vector, "derived_key_fingerprint_hex"),
                "{name}"
            );
            let binding = binding(vector);
            assert_eq!(encryptor.aad(&binding), unhex(vector, "aad_hex"), "{name}");
            let plaintext = unhex(vector, "plaintext_hex");
            let ciphertext = unhex(vector, "ciphertext_hex");
            assert_eq!(
                encryptor.seal(&binding, &plaintext).unwrap(),
                ciphertext,
                "{name}"
            );
            assert_eq!(
                encryptor.open(&binding, &ciphertext).unwrap(),
                plaintext,
                "{name}"
            );
            // The key it is stored under is the interop key of a key vector,
            // and the plaintext is a value vector's document.
            let key_vector = v["key_vectors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["expected_key"] == vector["cache_key"])
                .expect("the cache key is a key vector's");
            let args = args(key_vector, Order::AsParsed);
            let key = interop_key(
                text(key_vector, "namespace"),
                text(key_vector, "operation"),
                &args,
            );
            assert_eq!(key.unwrap(), text(vector, "cache_key"));
        }
    }
}
