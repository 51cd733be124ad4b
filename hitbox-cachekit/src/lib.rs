//! The [cachekit.io](https://cachekit.io) remote tier of hitbox.
//!
//! [`CachekitBackend`] implements [`Backend`](hitbox_backend::Backend) over
//! the cachekit.io HTTP API (`/v1/cache/{key}`), so it can sit under the
//! engine alone, behind an in-process L1 ([`CachekitTiered`], or
//! `l1.compose(cachekit)`), and inside a [`Staged`](hitbox_backend::Staged)
//! tier that encrypts every value before it leaves the process.
//!
//! What it follows from the protocol:
//!
//! - **Keys**: one path segment, percent-encoded exactly once with only
//!   `A-Z a-z 0-9 - . _ ~` raw ([`encode_key_segment`]); the keys `""`, `.`,
//!   `..`, `health`, `ttl` and `lock`, keys over 1024 bytes and keys with
//!   control bytes are refused before a URL is built.
//! - **Freshness**: `X-CacheKit-Freshness` is fresh only when absent or
//!   exactly `fresh`; `X-CacheKit-Fresh-For` is read strictly
//!   ([`parse_freshness`], [`parse_fresh_for`]). An L1 never keeps a stale
//!   answer and keeps a fresh one for at most `Fresh-For`
//!   ([`RemoteEntry::l1_lifetime`]).
//! - **Safety**: `https` to the official hosts only, unless
//!   [`CachekitConfig::allow_custom_host`]; private, loopback and
//!   link-local IP literals (IPv4-mapped ones included) are always refused
//!   ([`check_base_url`]). Redirects are never followed. The API key is an
//!   [`ApiKey`] that prints as `<redacted>`, travels in a header marked
//!   sensitive, and is scrubbed from error text. Bodies over 25 MB are
//!   refused before sending.
//! - **Reliability**: reads have 5 s and writes 10 s, retries included;
//!   connection failures, 408, 429 and 5xx are retried (3 attempts, `100 ms × 2^n` backoff with
//!   jitter, at most 5 s each) except a 429 carrying
//!   `x-cachekit-deny-reason`; a circuit breaker stops asking a failing
//!   service; a semaphore bounds the requests in flight. Every failure
//!   reaches the engine as a [`BackendError`](hitbox_backend::BackendError),
//!   so it degrades to the next tier or the origin.
//! - **Locks**: [`CachekitBackend::lock`] never waits; a stale entry is
//!   revalidated by whoever takes the lock, and the others serve stale
//!   ([`CachekitBackend::revalidate`]).
//!
//! Tags: the API has none, so [`Backend::invalidate_tag`](hitbox_backend::Backend::invalidate_tag)
//! returns `Ok(0)` and tagged entries stay in cachekit.io until their TTL
//! ends.
//!
//! # Configuration
//!
//! [`CachekitBackend::from_env`] reads `CACHEKIT_API_KEY`,
//! `CACHEKIT_API_URL` and `CACHEKIT_DEFAULT_TTL`. `CACHEKIT_MASTER_KEY`
//! alone switches nothing on: with the `encryption` feature,
//! `CachekitConfig::encryptor_from_env()` builds the AES-256-GCM encryptor
//! to put in a [`Staged`](hitbox_backend::Staged) tier, and that is the only
//! way this crate encrypts.
//!
//! ```
//! use std::time::Duration;
//! use hitbox_cachekit::{CachekitBackend, CachekitError};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // Building sends nothing: the URL is only checked.
//! let backend = CachekitBackend::builder()
//!     .api_key("ck_live_example")
//!     .read_timeout(Duration::from_secs(2))
//!     .build()
//!     .unwrap();
//! assert_eq!(backend.origin(), "https://api.cachekit.io");
//! // The key never shows.
//! assert!(!format!("{backend:?}").contains("ck_live_example"));
//!
//! // URL safety: plain http, private addresses and unknown hosts are refused.
//! for url in ["http://api.cachekit.io", "https://10.0.0.8", "https://[::ffff:127.0.0.1]", "https://evil.example"] {
//!     let error = CachekitBackend::builder().api_key("k").base_url(url).build().unwrap_err();
//!     assert!(matches!(error, CachekitError::InvalidUrl { .. }));
//! }
//! // Reserved keys never become a URL.
//! let error = backend.read_with_freshness("health").await.unwrap_err();
//! assert!(matches!(error, CachekitError::InvalidKey { .. }));
//! # });
//! ```
//!
//! # Sharing entries with other SDKs
//!
//! [`interop`] builds the cross-SDK keys of cachekit interop mode v1
//! (BLAKE2b-256 over canonical MessagePack arguments); with the `msgpack`
//! feature, `hitbox_backend::Format::MessagePack` writes the values the
//! other SDKs read.
//!
//! # Testing
//!
//! The hosted service cannot be reached from CI. This crate's tests run
//! against a loopback server (`tests/support/`) written from the protocol
//! description as a stand-in for the hosted service; the client reaches it
//! through [`CachekitConfig::allow_insecure_loopback_for_tests`], a switch
//! meant for tests only.
#![warn(missing_docs)]

mod backend;
mod config;
mod error;
mod freshness;
pub mod interop;
mod key;
mod safety;
mod tiered;

pub use backend::{
    CachekitBackend, DENY_REASON_HEADER, FRESH_FOR_HEADER, FRESHNESS_HEADER, Health, L1_HIT_RATE_HEADER,
    L1_HITS_HEADER, L1_STATUS_HEADER, L1Counters, L1Status, L2_HITS_HEADER, LOCK_ID_HEADER, LockId,
    MISSES_HEADER, RemoteEntry, RemoteTtl, RevalidateError, Revalidation, SESSION_ID_HEADER,
    SESSION_START_HEADER, STALE_TTL_HEADER, Session, SetOptions, TTL_HEADER, ttl_header_secs,
};
pub use config::{
    API_KEY_ENV, API_URL_ENV, ApiKey, CachekitConfig, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_CONCURRENCY, DEFAULT_READ_TIMEOUT, DEFAULT_TTL_ENV,
    DEFAULT_WRITE_TIMEOUT, MAX_BODY_BYTES,
};
pub use error::CachekitError;
pub use freshness::{Freshness, MAX_FRESH_FOR_SECS, parse_fresh_for, parse_freshness};
/// The circuit breaker is hitbox-backend's, shared by every tier; its
/// types are re-exported here.
pub use hitbox_backend::breaker::{
    BreakerConfig, BreakerState, DEFAULT_COOL_DOWN, DEFAULT_FAILURE_THRESHOLD,
};
pub use key::{MAX_KEY_BYTES, RESERVED_KEYS, encode_key_segment, key_path_segment};
pub use safety::{DEFAULT_API_URL, UrlGuard, check_base_url, is_forbidden_ip};
pub use tiered::CachekitTiered;
