//! Not a fuzz target: writes the seed corpus, `fuzz/corpus/<target>/`,
//! from the real encoders, then exits:
//!
//! ```text
//! cargo +nightly fuzz run -O seeds -- -runs=0
//! ```
//!
//! It is a `cargo fuzz` binary only so that it is built with the targets'
//! flags and their build is reused (a plain example would build every
//! dependency again). Every seed is made with fixed times, keys and nonces,
//! so running it again rewrites the same bytes. It only adds or overwrites
//! the files it names (`seed-*`); inputs the fuzzer found are left alone.
#![no_main]

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Unstructured;
use bytes::Bytes;
use hitbox_backend::encryption::{EntryBinding, format_token};
use hitbox_backend::{CacheableValue, Format};
use hitbox_core::{EntryMeta, Tag, Timestamp};
use hitbox_fuzz::{
    FORMATS, Opaque, Sample, encode_envelope, fixed_encryptor, fuzz_key, lines_from_headers,
    stage_configs_with,
};
use hitbox_redis::OriginId;
use hitbox_redis::invalidation::{Invalidation, InvalidationMessage};
use hitbox_tower::CachedResponse;
use hitbox_tower::rfc9111::freshness::Exchange;
use http::{HeaderMap, HeaderValue, StatusCode};

const NONCE: [u8; 12] = *b"fuzz-nonce-1";

libfuzzer_sys::fuzz_target!(
    init: write_all(),
    |_data: &[u8]| {}
);

fn write_all() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    envelope(&Seeds::new(&root, "envelope"));
    stages(&Seeds::new(&root, "stages"));
    decrypt(&Seeds::new(&root, "decrypt"));
    formats(&Seeds::new(&root, "formats"));
    cached_response(&Seeds::new(&root, "cached_response"));
    invalidation_message(&Seeds::new(&root, "invalidation_message"));
    rfc9111(&Seeds::new(&root, "rfc9111"));
    cachekit_response(&Seeds::new(&root, "cachekit_response"));
    request_body(&Seeds::new(&root, "request_body"));
    println!("seeds written under {}", root.display());
}

struct Seeds(PathBuf);

impl Seeds {
    fn new(root: &Path, target: &str) -> Seeds {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        Seeds(dir)
    }

    fn put(&self, name: &str, bytes: impl AsRef<[u8]>) {
        fs::write(self.0.join(format!("seed-{name}")), bytes).unwrap();
    }
}

fn meta() -> EntryMeta {
    let mut meta = EntryMeta::fresh_for(Timestamp::from_millis(1_704_067_200_000), Duration::from_secs(60));
    meta.stale_until = meta.fresh_until.add(Duration::from_secs(30));
    meta.error_until = meta.fresh_until.add(Duration::from_secs(300));
    meta.tags = vec![Tag::from("users"), Tag::from("tenant:acme")];
    meta
}

fn response() -> CachedResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("cache-control", HeaderValue::from_static("max-age=60, public"));
    headers.append("vary", HeaderValue::from_static("accept"));
    headers.insert("etag", HeaderValue::from_static("\"v1\""));
    let mut request_headers = HeaderMap::new();
    request_headers.insert("accept", HeaderValue::from_static("text/html"));
    CachedResponse {
        status: StatusCode::OK,
        headers,
        body: Bytes::from_static(b"{\"id\":42}"),
        exchange: Some(Exchange {
            request_time: 1_704_067_200,
            response_time: 1_704_067_201,
            date: Some(1_704_067_200),
            age: 3,
        }),
        request_headers,
    }
}

fn envelope(seeds: &Seeds) {
    let key = fuzz_key();
    for format in FORMATS {
        let id = format.id();
        seeds.put(
            &format!("sample-{id}"),
            encode_envelope(&Sample::example(), &meta(), format, &key).unwrap(),
        );
        seeds.put(
            &format!("string-{id}"),
            encode_envelope(&"hello".to_string(), &meta(), format, &key).unwrap(),
        );
    }
    let plain = EntryMeta::fresh_for(Timestamp::from_millis(5_000), Duration::from_secs(10));
    seeds.put(
        "bytes-postcard-no-tags",
        encode_envelope(&vec![1u8, 2, 3], &plain, Format::Postcard, &key).unwrap(),
    );
    seeds.put(
        "u64-json",
        encode_envelope(&42u64, &plain, Format::Json, &key).unwrap(),
    );
    seeds.put(
        "http-response",
        encode_envelope(&response(), &meta(), Format::Postcard, &key).unwrap(),
    );
    let full = encode_envelope(&Sample::example(), &meta(), Format::Postcard, &key).unwrap();
    seeds.put("truncated", &full[..20]);
    seeds.put("unknown-format", {
        let mut other = full.to_vec();
        other[3] = 77;
        other
    });
    seeds.put("foreign-json", b"{\"json\":true}");
}

fn stages(seeds: &Seeds) {
    let key = fuzz_key();
    let shared: Arc<dyn hitbox_backend::Encryptor> = Arc::new(fixed_encryptor(0x61, NONCE));
    let envelope = encode_envelope(&Sample::example(), &meta(), Format::Postcard, &key).unwrap();
    let long = encode_envelope(&"cache ".repeat(200), &meta(), Format::Json, &key).unwrap();
    for (name, stages, _) in stage_configs_with(shared) {
        seeds.put(&format!("{name}-envelope"), stages.seal(&key, &envelope).unwrap());
        seeds.put(&format!("{name}-long"), stages.seal(&key, &long).unwrap());
        seeds.put(
            &format!("{name}-raw"),
            stages.seal(&key, b"raw bytes, no envelope").unwrap(),
        );
    }
}

fn decrypt(seeds: &Seeds) {
    let key = fuzz_key();
    let envelope = encode_envelope(&Sample::example(), &meta(), Format::Postcard, &key).unwrap();
    for (format_id, compressed) in [(0u8, false), (1, false), (1, true), (5, false)] {
        let format = format_token(format_id);
        let binding = EntryBinding::new(key.as_str(), &format).compressed(compressed);
        let sealed = fixed_encryptor(0x61, NONCE).seal(&binding, &envelope).unwrap();
        seeds.put(&format!("format-{format_id}-compressed-{compressed}"), sealed);
    }
    let format = format_token(1);
    let binding = EntryBinding::new(key.as_str(), &format);
    seeds.put(
        "previous-key",
        fixed_encryptor(0x62, NONCE).seal(&binding, b"rotated").unwrap(),
    );
    seeds.put(
        "empty-plaintext",
        fixed_encryptor(0x61, NONCE).seal(&binding, b"").unwrap(),
    );
}

fn formats(seeds: &Seeds) {
    // Selector: format index in the low three bits, value type above.
    for (index, format) in FORMATS.into_iter().enumerate() {
        let put = |kind: u8, name: &str, encode: &dyn Fn(&mut Vec<u8>)| {
            let mut out = vec![(kind << 3) | index as u8];
            encode(&mut out);
            seeds.put(&format!("{name}-{}", format.id()), out);
        };
        put(0, "sample", &|out| {
            format.encode_into(&Sample::example(), out).unwrap()
        });
        put(1, "string", &|out| format.encode_into("héllo", out).unwrap());
        put(2, "bytes", &|out| {
            format.encode_into(&vec![0u8, 1, 255], out).unwrap()
        });
        put(3, "strings", &|out| {
            format.encode_into(&vec!["a", "bc"], out).unwrap()
        });
        put(5, "tuple", &|out| {
            format.encode_into(&(7u64, -1i8, Some(true)), out).unwrap()
        });
    }
}

fn cached_response(seeds: &Seeds) {
    let encode = |response: &CachedResponse| {
        let mut out = Vec::new();
        response.encode(Format::Postcard, &mut out).unwrap();
        out
    };
    seeds.put("standards-mode", encode(&response()));
    seeds.put(
        "policy-mode",
        encode(&CachedResponse::new(
            StatusCode::NOT_FOUND,
            HeaderMap::new(),
            Bytes::from_static(b"missing"),
        )),
    );
    let mut opaque = response();
    opaque
        .headers
        .insert("x-opaque", HeaderValue::from_bytes(b"caf\xe9").unwrap());
    opaque.exchange = None;
    opaque.body = Bytes::new();
    seeds.put("opaque-no-body", encode(&opaque));
    // Read structurally: a count of 30,000 headers over 200 KiB of zeros
    // (the `HeaderMap::with_capacity` panic of issue 17).
    seeds.put("claimed-30000-headers", claimed_count_seed(30_000, 200));
}

/// Bytes that `Unstructured` reads as a `u32` then a `u8` of these values.
fn claimed_count_seed(count: u32, pad_kib: u8) -> Vec<u8> {
    for candidate in [count.to_le_bytes(), count.to_be_bytes()] {
        let mut bytes = candidate.to_vec();
        bytes.push(pad_kib);
        let mut u = Unstructured::new(&bytes);
        let read: (u32, u8) = (u.arbitrary().unwrap(), u.arbitrary().unwrap());
        if read == (count, pad_kib) {
            return bytes;
        }
    }
    panic!("no byte order of arbitrary matches");
}

fn invalidation_message(seeds: &Seeds) {
    let origin = OriginId::new("web-3.pid-4711").unwrap();
    for (name, invalidation) in [
        ("key", Invalidation::Key("users:v1:id=42".into())),
        ("key-with-spaces", Invalidation::Key("a key with spaces".into())),
        ("tag", Invalidation::Tag("team:ops".into())),
        ("purge", Invalidation::Purge),
        ("prefix", Invalidation::Prefix("users:v1:tenant=a:".into())),
        ("soft-key", Invalidation::SoftKey("users:v1:id=42".into())),
        ("soft-tag", Invalidation::SoftTag("team:ops".into())),
        (
            "soft-prefix",
            Invalidation::SoftPrefix("users:v1:tenant=a:".into()),
        ),
    ] {
        let message = InvalidationMessage {
            origin: origin.clone(),
            invalidation,
        };
        seeds.put(name, message.encode());
    }
    seeds.put("other-version", b"hbinv9 web-3 purge");
}

fn rfc9111(seeds: &Seeds) {
    let exchange = |request: &str, status: u16, response: &HeaderMap| {
        let mut out = Vec::new();
        out.extend_from_slice(request.as_bytes());
        write!(out, "\n\n{status}\n").unwrap();
        out.extend_from_slice(&lines_from_headers(response));
        out
    };
    let mut ok = response().headers;
    ok.insert("date", HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
    ok.insert(
        "last-modified",
        HeaderValue::from_static("Sunday, 06-Nov-94 08:49:37 GMT"),
    );
    ok.insert("expires", HeaderValue::from_static("Sun Nov  6 08:49:37 1994"));
    ok.insert("age", HeaderValue::from_static("30"));
    ok.insert(
        "cdn-cache-control",
        HeaderValue::from_static("s-maxage=\"600\", stale-while-revalidate=30, stale-if-error=300"),
    );
    seeds.put(
        "get-ok",
        exchange(
            "/items/7\nhost: Shop.Example:8080\naccept: text/html\nif-none-match: W/\"v1\", \"v2\"\ncookie: a=b",
            200,
            &ok,
        ),
    );
    let mut private = HeaderMap::new();
    private.insert(
        "cache-control",
        HeaderValue::from_static("private=\"set-cookie, x-user\", no-cache, max-age=5, max-age=6"),
    );
    private.insert("set-cookie", HeaderValue::from_static("session=1"));
    private.insert("x-user", HeaderValue::from_static("ada"));
    private.insert("vary", HeaderValue::from_static("Accept-Encoding, *"));
    private.insert("connection", HeaderValue::from_static("close, x-hop"));
    private.insert("x-hop", HeaderValue::from_static("1"));
    seeds.put(
        "private-vary-star",
        exchange(
            "http://a.example/x\nhost: a.example:80\nauthorization: Bearer t",
            200,
            &private,
        ),
    );
    let mut created = HeaderMap::new();
    created.insert("location", HeaderValue::from_static("/items/8"));
    created.insert(
        "content-location",
        HeaderValue::from_static("http://evil.example/items"),
    );
    seeds.put(
        "post-created",
        exchange("http://a.example/dir/items?x=1", 201, &created),
    );
    let mut not_modified = HeaderMap::new();
    not_modified.insert("etag", HeaderValue::from_static("\"v1\""));
    not_modified.insert("cache-control", HeaderValue::from_static("max-age=120"));
    seeds.put(
        "not-modified",
        exchange(
            "/items/7\nif-modified-since: Sun, 06 Nov 1994 08:49:37 GMT",
            304,
            &not_modified,
        ),
    );
}

fn cachekit_response(seeds: &Seeds) {
    // Byte 0: the call (0 read, 1 ttl, 2 lock, 3 health, 4 exists, 5 delete,
    // 6 set, 7 engine read); byte 1: even = framed, odd = raw; framed: a
    // status byte (index into the target's table below 224), a spare byte,
    // header lines, an empty line, the body.
    let framed = |op: u8, status_index: u8, head: &str, body: &[u8]| {
        let mut out = vec![op, 0, status_index, 0];
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(b"\n\n");
        out.extend_from_slice(body);
        out
    };
    let key = fuzz_key();
    let entry = encode_envelope(&"hello".to_string(), &meta(), Format::Postcard, &key).unwrap();
    seeds.put(
        "read-fresh",
        framed(
            0,
            0,
            "x-cachekit-freshness: fresh\nx-cachekit-fresh-for: 30",
            b"value",
        ),
    );
    seeds.put(
        "read-stale",
        framed(
            0,
            0,
            "x-cachekit-freshness: stale\nx-cachekit-fresh-for: 2592001",
            b"",
        ),
    );
    seeds.put("read-miss", framed(0, 1, "", b""));
    seeds.put(
        "ttl",
        framed(1, 0, "content-type: application/json", b"{\"ttl\":42}"),
    );
    seeds.put("ttl-null", framed(1, 0, "", b"{\"ttl\":null}"));
    seeds.put("lock", framed(2, 0, "", b"{\"lock_id\":\"abc\"}"));
    seeds.put("lock-held", framed(2, 2, "", b"{\"lock_id\":null}"));
    seeds.put(
        "health",
        framed(
            3,
            0,
            "",
            b"{\"status\":\"ok\",\"cache_entries\":3,\"active_locks\":0}",
        ),
    );
    seeds.put("exists", framed(4, 0, "", b""));
    seeds.put("delete-no-content", framed(5, 3, "", b""));
    seeds.put("set-too-large", framed(6, 10, "", b""));
    seeds.put(
        "denied-with-key",
        framed(
            6,
            5,
            "x-cachekit-deny-reason: quota for ck_fuzz_SECRET_0d9e8f7a6b exceeded",
            b"",
        ),
    );
    seeds.put("server-error", framed(0, 6, "retry-after: 1", b"oops"));
    seeds.put("engine-hit", framed(7, 0, "", &entry));
    let raw = |op: u8, wire: &[u8]| {
        let mut out = vec![op, 1];
        out.extend_from_slice(wire);
        out
    };
    seeds.put(
        "raw-chunked",
        raw(
            0,
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    );
    seeds.put(
        "raw-until-close",
        raw(
            1,
            b"HTTP/1.1 200 OK\r\nx-cachekit-freshness: fresh\r\n\r\n{\"ttl\":1}",
        ),
    );
    seeds.put(
        "raw-short-body",
        raw(0, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"),
    );
    seeds.put("raw-garbage", raw(3, b"SSH-2.0-OpenSSH_9.6\r\n"));
    // Written through the opaque type too, so the envelope seeds cover a
    // payload in a format the engine does not decode.
    seeds.put(
        "engine-opaque",
        framed(
            7,
            0,
            "",
            &encode_envelope(
                &Opaque(Bytes::from_static(b"\x00\x01")),
                &meta(),
                Format::Json,
                &key,
            )
            .unwrap(),
        ),
    );
}

/// The bodies the layer keys: JSON texts (with escapes, nesting, numbers
/// written several ways, a duplicate name) and GraphQL documents (`@` and
/// the operation name on the first line).
fn request_body(seeds: &Seeds) {
    for (name, body) in REQUEST_BODIES {
        seeds.put(name, body);
    }
}

/// The request-body seeds: file name (after `seed-`) and content.
const REQUEST_BODIES: &[(&str, &str)] = &[
    (
        "json-rpc",
        r#"{"jsonrpc":"2.0","method":"getBalance","params":["0xabc",{"block":"latest"}],"id":7}"#,
    ),
    (
        "json-numbers",
        r#"[0, -0, 1.5e3, 1E-2, 12345678901234567890123, 0.10000000000000000001]"#,
    ),
    (
        "json-escapes",
        r#"{"a\u00e9\n":"\ud83d\ude00","b":[true,false,null],"c":{"d":{}}}"#,
    ),
    ("json-duplicate", r#"{"a":1,"a":2}"#),
    (
        "json-deep",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ),
    (
        "graphql-query",
        "@\nquery Items($first: Int = 10) { items(first: $first) { id name } }",
    ),
    (
        "graphql-named",
        "@Update\nquery Read { a } mutation Update { b(x: \"q\") }",
    ),
    (
        "graphql-shorthand",
        "@\n# a comment\n{ a { b ... on T { c } } } fragment F on T { d }",
    ),
    (
        "graphql-block-string",
        "@\nsubscription S { s(text: \"\"\"block \\\"\"\" string\"\"\") }",
    ),
];
