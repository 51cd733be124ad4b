//! Every row of the protocol's `path-encoding.json` and
//! `freshness-headers.json`, on the pure functions and over the wire.

mod support;

use bytes::Bytes;
use hitbox_cachekit::{
    CachekitError, Freshness, SetOptions, encode_key_segment, key_path_segment, parse_fresh_for,
    parse_freshness,
};
use serde_json::Value;
use support::LoopbackServer;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/cachekit/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A vector's header value: each character stands for one byte.
fn latin1(value: &Value) -> Option<Vec<u8>> {
    value.as_str().map(|s| {
        s.chars()
            .map(|c| u8::try_from(u32::from(c)).expect("vector characters are bytes"))
            .collect()
    })
}

fn path_rows() -> Vec<Value> {
    load("path-encoding.json")["vectors"].as_array().unwrap().clone()
}

#[test]
fn path_encoding_reproduces_every_vector() {
    let rows = path_rows();
    assert_eq!(rows.len(), 28);
    for row in rows {
        let key = row["key"].as_str().unwrap();
        if row["reject"].as_bool() == Some(true) {
            assert!(
                matches!(encode_key_segment(key), Err(CachekitError::InvalidKey { .. })),
                "{key:?} must be refused"
            );
            assert!(key_path_segment(key).is_err());
            continue;
        }
        let mut allowed = vec![row["encoded"].as_str().unwrap().to_owned()];
        if let Some(alternates) = row["encoded_alternates"].as_array() {
            allowed.extend(alternates.iter().map(|a| a.as_str().unwrap().to_owned()));
        }
        let encoded = encode_key_segment(key).unwrap();
        assert!(
            allowed.contains(&encoded),
            "{key:?} encoded as {encoded:?}, expected {allowed:?}"
        );
        // Our encoder is the reference one: always the first form.
        assert_eq!(encoded, row["encoded"].as_str().unwrap());
        // Decoding once gives the key back.
        let decoded = percent_encoding::percent_decode_str(&encoded)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, row["decoded"].as_str().unwrap());
    }
}

#[test]
fn control_byte_rows_are_encoded_but_not_sent() {
    let mut refused = 0;
    for row in path_rows() {
        let key = row["key"].as_str().unwrap();
        if key.bytes().any(|b| b < 0x20 || b == 0x7f) {
            assert!(encode_key_segment(key).is_ok());
            assert!(matches!(
                key_path_segment(key),
                Err(CachekitError::InvalidKey { .. })
            ));
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    assert!(key_path_segment(&"k".repeat(1024)).is_ok());
    assert!(key_path_segment(&"k".repeat(1025)).is_err());
}

/// The rows whose decoded key the service stores: the others break its
/// charset (`/`, `%`, `~`, space, non-ASCII...) or its `..` rule.
const STORED_BY_THE_SERVICE: [&str; 3] = [
    "ns:test:func:__main__.get_user:args:3870b2ea5735ae639ded9450ef117768db676f037bec636503796c5b81095153:1s",
    "ns:key",
    "User:Key",
];

#[tokio::test]
async fn transmittable_keys_reach_the_wire_encoded_once() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    let mut sent = 0;
    for row in path_rows() {
        let key = row["key"].as_str().unwrap();
        let Ok(_) = key_path_segment(key) else { continue };
        // The client sends every transmittable key as the protocol asks
        // (`a:..` included); the service judges it.
        let result = backend
            .set(key, Bytes::from_static(b"v"), SetOptions::default())
            .await;
        let expected = format!("/v1/cache/{}", row["encoded"].as_str().unwrap());
        let last = server.requests().pop().unwrap();
        assert_eq!(last.path, expected, "wire path of {key:?}");
        let decoded = row["decoded"].as_str().unwrap();
        assert_eq!(decoded, key);
        if STORED_BY_THE_SERVICE.contains(&key) {
            result.unwrap_or_else(|e| panic!("{key:?}: {e}"));
            // The server decoded it once, to the key itself.
            assert!(server.stored(decoded).is_some(), "{key:?}");
        } else {
            assert_eq!(result, Err(CachekitError::BadRequest), "{key:?}");
            assert!(server.stored(decoded).is_none(), "{key:?}");
        }
        sent += 1;
    }
    assert_eq!(sent, 19);
    // Refused keys never produced a request.
    assert_eq!(server.requests().len(), sent);
}

#[test]
fn freshness_parser_reproduces_every_vector() {
    let vectors = load("freshness-headers.json");
    let rows = vectors["freshness_vectors"].as_array().unwrap();
    assert_eq!(rows.len(), 9);
    for row in rows {
        let value = latin1(&row["value"]);
        let expected = row["stale"].as_bool().unwrap();
        assert_eq!(
            parse_freshness(value.as_deref()).is_stale(),
            expected,
            "{}",
            row["name"]
        );
    }
    let rows = vectors["fresh_for_vectors"].as_array().unwrap();
    assert_eq!(rows.len(), 22);
    for row in rows {
        let value = latin1(&row["value"]);
        let expected = row["fresh_for"].as_u64().map(|n| u32::try_from(n).unwrap());
        assert_eq!(parse_fresh_for(value.as_deref()), expected, "{}", row["name"]);
    }
}

#[tokio::test]
async fn freshness_vectors_through_the_http_stack() {
    let server = LoopbackServer::start().await;
    let backend = support::backend(&server).build().unwrap();
    backend
        .set("k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap();
    let vectors = load("freshness-headers.json");
    for row in vectors["freshness_vectors"].as_array().unwrap() {
        server.freshness_override(Some((latin1(&row["value"]), Some(b"5".to_vec()))));
        let entry = backend.read_with_freshness("k").await.unwrap().unwrap();
        let expected = if row["stale"].as_bool().unwrap() {
            Freshness::Stale
        } else {
            Freshness::Fresh
        };
        assert_eq!(entry.freshness, expected, "{}", row["name"]);
    }
    for row in vectors["fresh_for_vectors"].as_array().unwrap() {
        server.freshness_override(Some((Some(b"fresh".to_vec()), latin1(&row["value"]))));
        let entry = backend.read_with_freshness("k").await.unwrap().unwrap();
        let expected = row["fresh_for"].as_u64().map(|n| u32::try_from(n).unwrap());
        assert_eq!(entry.fresh_for, expected, "{}", row["name"]);
    }
}
