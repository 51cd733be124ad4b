//! The [cachekit.io](https://cachekit.io) remote tier of hitbox.
//!
//! [`CachekitBackend`] implements [`Backend`](hitbox_backend::Backend) over
//! the cachekit.io HTTP API (`/v1/cache/{key}`), so it can sit under the
//! engine alone, behind an in-process L1 ([`CachekitTiered`], or
//! `l1.compose(cachekit)`), and inside a [`Staged`](hitbox_backend::Staged)
//! tier that encrypts every value before it leaves the process. Like every
//! tier it stores bytes and never sees values: the engine,
//! [`hitbox_backend::Cache`], encodes them (the entry's envelope, its
//! format) and the stages transform them.
//!
//! # The smallest cache
//!
//! Build the tier, put it under a [`Cache`](hitbox_backend::Cache), then
//! set and get. Building sends nothing; the first request goes out with the
//! first read or write (this example needs the service, so it only
//! compiles here).
//!
//! ```no_run
//! use hitbox_backend::Cache;
//! use hitbox_cachekit::CachekitBackend;
//! use hitbox_core::CacheKey;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let tier = CachekitBackend::builder().api_key("ck_live_example").build()?;
//! let cache = Cache::new(tier);
//!
//! let key = CacheKey::builder("greetings").part("lang", "en").build();
//! cache.set(&key, &"hello".to_string()).await?;
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("hello"));
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//!
//! [`CachekitBackend::builder`] returns a [`CachekitConfig`] to fill in and
//! end with [`CachekitConfig::build`]; [`CachekitBackend::from_env`] reads
//! `CACHEKIT_API_KEY`, `CACHEKIT_API_URL` and `CACHEKIT_DEFAULT_TTL`
//! ([`CachekitConfig::from_lookup`] reads them from elsewhere, a secret
//! store or a test). The settings a user meets next:
//!
//! - the URL ([`base_url`](CachekitConfig::base_url), production by
//!   default) and its safety switch
//!   ([`allow_custom_host`](CachekitConfig::allow_custom_host));
//! - the budgets of a read and a write, retries included
//!   ([`read_timeout`](CachekitConfig::read_timeout),
//!   [`write_timeout`](CachekitConfig::write_timeout)), the retries
//!   ([`max_attempts`](CachekitConfig::max_attempts),
//!   [`backoff`](CachekitConfig::backoff)) and the requests in flight
//!   ([`max_concurrency`](CachekitConfig::max_concurrency));
//! - the circuit breaker ([`failure_threshold`](CachekitConfig::failure_threshold),
//!   [`cool_down`](CachekitConfig::cool_down), or a whole [`BreakerConfig`]
//!   with [`breaker`](CachekitConfig::breaker)) and the clock it measures
//!   its cool-down on ([`clock`](CachekitConfig::clock));
//! - the lifetimes sent when a call names none
//!   ([`default_ttl`](CachekitConfig::default_ttl),
//!   [`stale_ttl`](CachekitConfig::stale_ttl)) and the tier's
//!   [`label`](CachekitConfig::label) in logs and stats.
//!
//! ```
//! use std::time::Duration;
//! use hitbox_cachekit::{BreakerConfig, CachekitBackend, CachekitError};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // Building sends nothing: the URL is only checked.
//! let backend = CachekitBackend::builder()
//!     .api_key("ck_live_example")
//!     .read_timeout(Duration::from_secs(2))
//!     .breaker(BreakerConfig { failure_threshold: 3, ..BreakerConfig::default() })
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
//! # What it follows from the protocol
//!
//! - **Keys**: one path segment, percent-encoded exactly once with only
//!   `A-Z a-z 0-9 - . _ ~` raw ([`encode_key_segment`]); the keys `""`, `.`,
//!   `..`, `health`, `ttl` and `lock`, keys over 1024 bytes and keys with
//!   control bytes are refused before a URL is built. The service itself
//!   stores only keys of at most 400 characters of `[A-Za-z0-9_.:-]`,
//!   without `..`, whose `ns:{namespace}:` / `nsapi:{namespace}:` prefix, if
//!   any, names 1 to 64 of `[A-Za-z0-9_-]` ([`is_service_key`]), and answers
//!   400 to others ([`CachekitError::BadRequest`]). Through the
//!   [`Backend`](hitbox_backend::Backend) trait every key goes through
//!   [`wire_key`]: as it is when the service accepts it, as a digest form
//!   otherwise, so hitbox's own keys (which hold `=`, `/`, `%`) are stored
//!   too and no two keys share an entry.
//! - **Access**: 401 ([`CachekitError::Auth`]) is a refused API key (only
//!   `ck_sdk_`, `ck_api_` and `ck_live_` keys authenticate); 403
//!   ([`CachekitError::Forbidden`]) a key whose namespace the API key is not
//!   granted, or a write across the split (`ck_sdk_` keys never write
//!   `nsapi:` keys, `ck_api_` keys never `ns:` keys). Every request carries
//!   `X-CacheKit-L1-Status`, which the service requires from `ck_sdk_` API
//!   keys.
//! - **Freshness**: `X-CacheKit-Freshness` is fresh only when absent or
//!   exactly `fresh`; `X-CacheKit-Fresh-For` is read strictly
//!   ([`parse_freshness`], [`parse_fresh_for`]). The service rounds
//!   `Fresh-For` down (`0` in the last second of freshness), and
//!   [`CachekitBackend::ttl`] up, to eviction, the end of the stale window
//!   ([`RemoteTtl::Seconds`]). An L1 never keeps a stale answer and keeps a
//!   fresh one for at most `Fresh-For` ([`RemoteEntry::l1_lifetime`]).
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
//!   `x-cachekit-deny-reason`; a circuit breaker (hitbox-backend's, the one
//!   every tier shares; [`BreakerConfig`] is re-exported here) stops asking
//!   a failing service; a semaphore bounds the requests in flight. Every
//!   failure reaches the engine as a
//!   [`BackendError`](hitbox_backend::BackendError), so it degrades to the
//!   next tier or the origin.
//! - **Locks**: [`CachekitBackend::lock`] never waits; a stale entry is
//!   revalidated by whoever takes the lock, and the others serve stale
//!   ([`CachekitBackend::revalidate`]). The id goes back in
//!   `X-CacheKit-Lock-Id`, never in the deprecated `?lock_id=` query, and
//!   an empty one is never sent.
//!
//! Tags: the API has none, so [`Backend::invalidate_tag`](hitbox_backend::Backend::invalidate_tag)
//! returns `Ok(0)` and tagged entries stay in cachekit.io until their TTL
//! ends.
//!
//! # Encryption
//!
//! `CACHEKIT_MASTER_KEY` alone switches nothing on: with the `encryption`
//! feature, `CachekitConfig::encryptor_from_env()` builds the AES-256-GCM
//! encryptor to put in a [`Staged`](hitbox_backend::Staged) tier, and that
//! is the only way this crate encrypts. The stage then seals every value
//! before it leaves the process, bound to its key.
//!
//! ```no_run
//! # #[cfg(feature = "encryption")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use hitbox_backend::{Cache, Staged, Stages};
//! use hitbox_cachekit::{CachekitBackend, CachekitConfig};
//!
//! let tier = CachekitBackend::from_env()?;
//! let encryptor = CachekitConfig::encryptor_from_env()?;
//! let cache = Cache::new(Staged::new(tier, Stages::new().encryptor(encryptor)));
//! # let _ = cache;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "encryption"))]
//! # fn main() {}
//! ```
//!
//! # An L1 in front
//!
//! A remote tier is a network round trip away; an in-process tier in front
//! of it serves the hot entries. [`CachekitTiered`] is that composition
//! following the service's rules for an L1: it never copies a stale answer,
//! keeps a fresh one for at most `X-CacheKit-Fresh-For`, and sends the L1's
//! counters with every request. hitbox-backend's generic composition,
//! `l1.compose(cachekit)` ([`Compose`](hitbox_backend::Compose)), also
//! works: it refills its L1 from the value's own metadata instead. The L1
//! here is hitbox-backend's [`MemoryBackend`](hitbox_backend::MemoryBackend)
//! so that the example runs anywhere; in practice it is
//! `hitbox_moka::MokaBackend::new(..)`.
//!
//! ```
//! use std::time::Duration;
//! use hitbox_backend::{Backend, Cache, Compose, MemoryBackend};
//! use hitbox_cachekit::{CachekitBackend, CachekitTiered};
//!
//! let remote = CachekitBackend::builder().api_key("ck_live_example").build().unwrap();
//!
//! // The service's L1 rules, with an L1 lifetime of at most one minute.
//! let tiered = CachekitTiered::new(MemoryBackend::new(), &remote, Duration::from_secs(60));
//! assert_eq!(tiered.label(), "memory+cachekit");
//! let cache = Cache::new(tiered);
//!
//! // Or the generic composition of hitbox-backend.
//! let composed = Cache::new(MemoryBackend::new().compose(remote));
//! # let _ = (cache, composed);
//! ```
//!
//! # Sharing entries with other SDKs
//!
//! [`interop`] builds the cross-SDK keys of cachekit interop mode v1
//! (BLAKE2b-256 over canonical MessagePack arguments); with the `msgpack`
//! feature, `hitbox_backend::Format::MessagePack` writes the values the
//! other SDKs read. Like the Python SDK it refuses segments holding `..`
//! and the namespaces `ns` and `nsapi`, which the service would read as its
//! own namespace prefixes. Interop keys are always keys the service accepts,
//! so [`wire_key`] sends them unchanged.
//!
//! # Features
//!
//! - `encryption`: `CachekitConfig::encryptor_from_env`, the AES-256-GCM
//!   encryptor of hitbox-backend built from `CACHEKIT_MASTER_KEY` on request
//!   (never switched on by the variable alone).
//! - `msgpack`: hitbox-backend's MessagePack format
//!   (`Format::MessagePack`), the value format the cachekit SDKs share. The
//!   interop key builder needs no feature.
//!
//! # How the crate is laid out
//!
//! Every public item is re-exported at the crate root; only [`interop`] is
//! a public module. Inside, the modules form layers, each importing only
//! those below it: `error` at the bottom; `key`, `safety` and `freshness`
//! (the protocol's rules, each alone); `config` (the settings);
//! `backend` (the HTTP client and the [`Backend`](hitbox_backend::Backend)
//! implementation, which also builds a backend from its configuration);
//! `tiered` on top.
//!
//! # Testing
//!
//! The hosted service cannot be reached from CI. This crate's tests run
//! against a loopback server (`tests/support/`) written from the protocol's
//! text (cachekit-io/protocol `spec/saas-api.md` and
//! `spec/cache-key-format.md`) as a stand-in for the hosted service, sharing
//! no code with the client: its authentication (the three key prefixes,
//! namespace grants, the write split), its key checks, its rounding of
//! `Fresh-For` and TTLs, its lock and TTL-refresh rules, each with a test of
//! its own (`tests/server_rules.rs`). The client reaches it through
//! [`CachekitConfig::allow_insecure_loopback_for_tests`], a switch meant for
//! tests only.
#![cfg_attr(docsrs, feature(doc_cfg))]
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
pub use key::{
    DIGEST_KEY_PREFIX, MAX_KEY_BYTES, MAX_SERVICE_KEY_LEN, MAX_SERVICE_NAMESPACE_LEN, RESERVED_KEYS,
    encode_key_segment, is_service_key, key_path_segment, wire_key,
};
pub use safety::{DEFAULT_API_URL, UrlGuard, check_base_url, is_forbidden_ip};
pub use tiered::CachekitTiered;
