//! The cachekit.io client's handling of what the service answers
//! (`hitbox_cachekit::CachekitBackend`), against a loopback fake server
//! that answers every request with bytes the fuzzer chose.
//!
//! The input's first byte picks the call (read, TTL, lock, health, exists,
//! delete, set, or a read through the cache engine); the second picks how
//! the answer is made:
//! - raw (odd): the rest of the input is written to the socket as the whole
//!   HTTP response, then the connection is closed. Anything may come back,
//!   but no panic, and no error that shows the API key.
//! - framed (even): the next two bytes pick a status, then come header lines
//!   (`name: value`), an empty line and the body; the server frames them
//!   with `Content-Length` and `Connection: close`. The client must then
//!   read the answer exactly as the protocol says: a 200 read returns the
//!   body byte for byte with the freshness its headers give, a 404 is a
//!   miss, JSON answers decode as a strict reader decodes them, and every
//!   other status is an error.
//!
//! Every call is made once (`max_attempts(1)`) with the circuit breaker
//! off, so that inputs do not depend on each other. Raw and framed calls
//! use two clients: a raw answer may leave a pooled connection behind,
//! framed ones never do.
#![no_main]

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hitbox_backend::Cache;
use hitbox_cachekit::{
    CachekitBackend, CachekitConfig, CachekitError, Health, RemoteTtl, SetOptions, parse_fresh_for,
    parse_freshness,
};
use http::{HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const API_KEY: &str = "ck_fuzz_SECRET_0d9e8f7a6b";
const KEY: &str = "fuzz-key";

/// What the server answers to the next requests.
static ANSWER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Fake {
    runtime: Runtime,
    raw: CachekitBackend,
    framed: CachekitBackend,
}

static FAKE: LazyLock<Fake> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(serve(listener));
    Fake {
        raw: client(addr),
        framed: client(addr),
        runtime,
    }
});

fn client(addr: SocketAddr) -> CachekitBackend {
    CachekitConfig::new()
        .api_key(API_KEY)
        .base_url(format!("http://{addr}"))
        .allow_insecure_loopback_for_tests(true)
        .max_attempts(1)
        .failure_threshold(0)
        .read_timeout(Duration::from_secs(5))
        .write_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream));
    }
}

/// Reads one whole request, writes the answer, closes.
async fn answer(mut stream: TcpStream) {
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    };
    let length = content_length(&request[..head]);
    while request.len() < head + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    let answer = ANSWER.lock().unwrap().clone();
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head);
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The statuses the protocol gives a meaning to, picked more often.
const STATUSES: [u16; 14] = [
    200, 404, 201, 204, 409, 429, 500, 503, 401, 403, 413, 302, 400, 100,
];

/// A framed answer: its status, headers (first value of each name) and body.
struct Framed {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

fn framed(rest: &[u8]) -> Option<(Framed, Vec<u8>)> {
    let (&a, rest) = rest.split_first()?;
    let (&b, rest) = rest.split_first()?;
    let status = if usize::from(a) < STATUSES.len() * 16 {
        STATUSES[usize::from(a) % STATUSES.len()]
    } else {
        100 + u16::from_be_bytes([a, b]) % 900
    };
    let status = StatusCode::from_u16(status).ok()?;
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (rest, &b""[..]),
    };
    let mut headers = http::HeaderMap::new();
    let mut wire = Vec::new();
    write!(wire, "HTTP/1.1 {} Fuzz\r\n", status.as_u16()).unwrap();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        // The server frames the message itself.
        if [
            "content-length",
            "transfer-encoding",
            "connection",
            "upgrade",
            "trailer",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
        headers.append(name, value);
    }
    write!(
        wire,
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    wire.extend_from_slice(body);
    let framed = Framed {
        status,
        headers,
        body: body.to_vec(),
    };
    Some((framed, wire))
}

fuzz_target!(|data: &[u8]| {
    let [op, mode, rest @ ..] = data else {
        return;
    };
    let fake = &*FAKE;
    if mode & 1 == 1 {
        *ANSWER.lock().unwrap() = rest.to_vec();
        fake.runtime.block_on(call(&fake.raw, *op, None));
    } else if let Some((expected, wire)) = framed(rest) {
        *ANSWER.lock().unwrap() = wire;
        fake.runtime.block_on(call(&fake.framed, *op, Some(&expected)));
    }
});

fn no_key<T: std::fmt::Debug>(result: &Result<T, CachekitError>) {
    if let Err(error) = result {
        assert!(!error.to_string().contains(API_KEY), "{error}");
        assert!(!format!("{error:?}").contains(API_KEY), "{error:?}");
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TtlAnswer {
    ttl: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockAnswer {
    lock_id: Option<String>,
}

async fn call(backend: &CachekitBackend, op: u8, expected: Option<&Framed>) {
    match op % 8 {
        0 => {
            let got = backend.read_with_freshness(KEY).await;
            no_key(&got);
            let Some(e) = expected else { return };
            match e.status {
                StatusCode::OK => {
                    let entry = got.unwrap().expect("a 200 is a hit");
                    assert_eq!(entry.bytes, Bytes::from(e.body.clone()));
                    let header = |name: &str| e.headers.get(name).map(HeaderValue::as_bytes);
                    assert_eq!(entry.freshness, parse_freshness(header("x-cachekit-freshness")));
                    assert_eq!(entry.fresh_for, parse_fresh_for(header("x-cachekit-fresh-for")));
                }
                StatusCode::NOT_FOUND => assert_eq!(got.unwrap(), None),
                _ => assert!(got.is_err(), "{} read as {got:?}", e.status),
            }
        }
        1 => {
            let got = backend.ttl(KEY).await;
            no_key(&got);
            let Some(e) = expected else { return };
            match e.status {
                StatusCode::OK => match serde_json::from_slice::<TtlAnswer>(&e.body) {
                    Ok(TtlAnswer { ttl: Some(secs) }) => assert_eq!(got.unwrap(), RemoteTtl::Seconds(secs)),
                    Ok(TtlAnswer { ttl: None }) => assert_eq!(got.unwrap(), RemoteTtl::NoExpiry),
                    Err(_) => assert!(matches!(got, Err(CachekitError::Protocol { .. })), "{got:?}"),
                },
                StatusCode::NOT_FOUND => assert_eq!(got.unwrap(), RemoteTtl::Absent),
                _ => assert!(got.is_err(), "{} read as {got:?}", e.status),
            }
        }
        2 => {
            let got = backend.lock(KEY, Duration::from_secs(1)).await;
            no_key(&got);
            let Some(e) = expected else { return };
            if !e.status.is_success() {
                assert!(got.is_err(), "{} read as {got:?}", e.status);
                return;
            }
            match serde_json::from_slice::<LockAnswer>(&e.body) {
                // An id that could not be sent back to release the lock
                // is refused where it arrives.
                Ok(LockAnswer { lock_id: Some(id) })
                    if id.trim().is_empty() || http::HeaderValue::from_str(&id).is_err() =>
                {
                    assert!(matches!(got, Err(CachekitError::Protocol { .. })), "{got:?}")
                }
                Ok(answer) => assert_eq!(got.unwrap().map(|id| id.as_str().to_owned()), answer.lock_id),
                Err(_) => assert!(matches!(got, Err(CachekitError::Protocol { .. })), "{got:?}"),
            }
        }
        3 => {
            let got = backend.health().await;
            no_key(&got);
            let Some(e) = expected else { return };
            if e.status != StatusCode::OK {
                assert!(got.is_err(), "{} read as {got:?}", e.status);
                return;
            }
            match serde_json::from_slice::<Health>(&e.body) {
                Ok(health) => assert_eq!(got.unwrap(), health),
                Err(_) => assert!(matches!(got, Err(CachekitError::Protocol { .. })), "{got:?}"),
            }
        }
        4 => {
            let got = backend.exists_key(KEY).await;
            no_key(&got);
            let Some(e) = expected else { return };
            match e.status {
                StatusCode::OK => assert!(got.unwrap()),
                StatusCode::NOT_FOUND => assert!(!got.unwrap()),
                _ => assert!(got.is_err(), "{} read as {got:?}", e.status),
            }
        }
        5 => {
            let got = backend.delete(KEY).await;
            no_key(&got);
            let Some(e) = expected else { return };
            assert_eq!(got.is_ok(), e.status.is_success(), "{} read as {got:?}", e.status);
        }
        6 => {
            let value = Bytes::from_static(b"fuzz value");
            let got = backend
                .set(KEY, value.clone(), SetOptions::ttl(Duration::from_secs(60)))
                .await;
            no_key(&got);
            let Some(e) = expected else { return };
            assert_eq!(got.is_ok(), e.status.is_success(), "{} read as {got:?}", e.status);
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                assert!(
                    matches!(got, Err(CachekitError::TooLarge { size, .. }) if size == value.len()),
                    "{got:?}"
                );
            }
        }
        _ => {
            // Through the engine: the answer is an entry to decode.
            let cache = Cache::new(backend.clone());
            let key = hitbox_core::CacheKey::from_encoded(KEY);
            let got = cache.get::<String>(&key).await;
            if let Some(e) = expected
                && e.status != StatusCode::OK
            {
                assert_eq!(got, None);
            }
        }
    }
}
