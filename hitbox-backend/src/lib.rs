//! The storage side of hitbox: the [`Backend`] trait every tier implements,
//! the stages a value passes through on its way to a tier, and the
//! programmatic cache engine, [`Cache`].
//!
//! # The programmatic cache
//!
//! ```
//! use std::time::Duration;
//! use hitbox_backend::{Cache, MemoryBackend};
//! use hitbox_core::{CachePolicy, EntryOptions, Tag};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct User { id: u64, name: String }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = Cache::builder(MemoryBackend::new())
//!     .policy(CachePolicy::short_term())
//!     .build();
//!
//! // A typed, namespaced view: keys are `users:v1:id=<id>`.
//! let users = cache.typed::<User>("users");
//!
//! // Concurrent callers for one missing id run the loader once.
//! let ada = users
//!     .get_or_insert_with(1, || async { User { id: 1, name: "Ada".into() } })
//!     .await;
//! assert_eq!(users.get(1).await, Some(ada));
//!
//! // Tags invalidate groups of entries at once.
//! let options = EntryOptions::new().ttl(Duration::from_secs(30)).tag("team:ops");
//! users.set_with(2, &User { id: 2, name: "Grace".into() }, &options).await.unwrap();
//! cache.invalidate_tag(&Tag::from("team:ops")).await.unwrap();
//! assert_eq!(users.get(2).await, None);
//!
//! let stats = cache.stats();
//! assert_eq!(stats.loads, 1);
//! # });
//! ```
//!
//! # Tiers that stack, stages per tier
//!
//! A [`Cache`] talks to one [`Backend`]; a [`composition`] of two tiers is
//! one too, so tiers stack: an in-process L1 in front of a shared L2, each
//! with its own stages. (Here two memory tiers stand in for moka and
//! Redis.)
//!
//! ```
//! use hitbox_backend::{Cache, CompositionBackend, Compression, MemoryBackend, ReadPolicy, Staged, Stages, WritePolicy};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let l1 = MemoryBackend::new();
//! // L2 keeps its entries compressed; L1 stays plain.
//! let l2 = Staged::new(MemoryBackend::new(), Stages::new().compression(Compression::zstd(3)));
//! let tiers = CompositionBackend::builder(l1, l2)
//!     .read_policy(ReadPolicy::Sequential)
//!     .write_policy(WritePolicy::OptimisticParallel)
//!     .build();
//! let cache = Cache::new(tiers);
//! let key = hitbox_core::CacheKey::builder("greeting").part("lang", "en").build();
//! cache.set(&key, &"hello".to_string()).await.unwrap();
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("hello"));
//! # });
//! ```
//!
//! # How the crate is laid out
//!
//! - `engine`: the [`Cache`] engine (single-flight loads, the decoded-value
//!   memo, typed views, stats). It talks to exactly one [`Backend`].
//! - `tiers`: the [`Backend`] trait and what implements it:
//!   [`MemoryBackend`], [`Staged`], [`composition`] (L1 in front of L2),
//!   the typed [`BackendExt`], and the shared circuit [`breaker`].
//! - `codec`: how a value becomes stored bytes: [`Format`], the
//!   [`envelope`], the compression and encryption [`Stages`], and (feature
//!   `encryption`) the `encryption` module.
//!
//! - [`entity`]: entities cached by id between the application and its
//!   repository ([`EntityCache`]), one id or many (one tier read, one
//!   repository call for the misses), with writes that keep the cache
//!   right.
//! - [`memoize`]: the run-time half of `#[cached]` (feature `macros`): the
//!   [`KeyPart`](memoize::KeyPart) trait arguments implement, and the
//!   helpers the attribute expands to.
//!
//! Every public item is re-exported at the crate root; the modules
//! `composition`, `envelope`, `encryption`, `breaker` and `generations`
//! are also public under those names.
//!
//! # Tiers and stages
//!
//! A [`Backend`] stores bytes. The engine frames each value in an envelope
//! (see [`envelope`]) that records its [`Format`] and metadata; [`Staged`]
//! wraps a tier to compress ([`Compression`]) and encrypt ([`Encryptor`])
//! what it stores, each stage recorded in a header so that a value read with
//! other stages than it was written with is a clean miss.
//!
//! # Glossary
//!
//! - **Entry**: one stored value with its metadata (when it was stored, how
//!   long it stays fresh and then stale, its tags), framed in the
//!   [`envelope`]. [`CachedEntry`] is its decoded form.
//! - **Tier**: one place entries live, behind the [`Backend`] trait: memory,
//!   moka, Redis, cachekit.io, or a [`composition`] of two tiers,
//!   which is a tier too. A tier stores bytes and never sees values.
//! - **Stage**: a reversible transformation between the envelope and what a
//!   tier stores: compression, encryption ([`Stages`], applied by
//!   [`Staged`]). Stages are per tier and recorded in a header, so bytes
//!   written with other stages read as a miss.
//! - **Policy**: what is decided per call from settings made once, never
//!   by I/O: the engine's [`CachePolicy`](hitbox_core::CachePolicy) (TTL,
//!   stale windows, what to do on a loader error), a composition's
//!   [`ReadPolicy`], [`WritePolicy`] and [`RefillPolicy`], and, in
//!   `hitbox-tower`, the HTTP layer's rules or RFC 9111 deciding what an
//!   exchange does with the cache. (The cachekit.io tier's rules for the
//!   URLs it may call are a guard, `UrlGuard`, not a policy.)
//! - **Codec**: the bytes of an entry, both ways: a value's format, the
//!   envelope, the stages. Bytes it cannot read (or a value it cannot
//!   write) are a [`CodecError`]; a read that meets one is a logged miss.
//! - **Freshness**: where an entry stands on the injected clock
//!   ([`hitbox_core::Clock`]): fresh (served), stale (served while it is
//!   refreshed, or when the loader fails) or expired (a miss).
//! - **Breaker**: a [`CircuitBreaker`] in front of a tier (each tier of a
//!   composition, the Redis tier, the cachekit.io tier). After consecutive
//!   tier failures (timeouts, connection errors: see
//!   [`BackendError::is_tier_failure`]; errors about one key do not count)
//!   it opens, and the tier is not asked until a cool-down on the injected
//!   clock has passed; then one probe decides whether it closes or opens
//!   again. A late answer to a call made before it opened decides nothing.
//!
//! # Features
//!
//! - `bincode`: the bincode 2 format. Off by default: bincode is
//!   unmaintained (RUSTSEC-2025-0141).
//! - `encryption`: the AES-256-GCM [`Encryptor`] (`encryption` module), with
//!   per-tenant keys derived by HKDF-SHA256, wire-compatible with the
//!   cachekit SDKs.
//! - `macros`: the `#[cached]` attribute (crate `hitbox-macros`),
//!   re-exported as `hitbox_backend::cached`; see [`memoize`].
//! - `msgpack`: the MessagePack format, the value format the cachekit SDKs
//!   share. (The cachekit interop key builder lives in `hitbox-cachekit`.)
#![warn(missing_docs)]

mod codec;
mod engine;
pub mod entity;
mod error;
pub mod memoize;
pub mod observe;
mod tiers;

#[cfg(feature = "encryption")]
pub use codec::encryption;
pub use codec::envelope;
pub use tiers::breaker;
pub use tiers::composition;
pub use tiers::generations;
pub use tiers::pending;

pub use codec::format::{CacheableValue, Format, MAX_DECODED_BYTES};
pub use codec::stages::{Compression, DEFAULT_MAX_DECOMPRESSED, EncryptionContext, Encryptor, Stages};
#[cfg(feature = "encryption")]
pub use encryption::{AesGcmEncryptor, MasterKey};
pub use engine::{
    Cache, CacheBuilder, CacheStats, CachedEntry, DEFAULT_MAX_BACKGROUND_REFRESHES, LoadJoin, LoadLead,
    LoadTicket, TypedCache,
};
pub use entity::{Entity, EntityCache, Repository};
pub use error::{BackendError, BoxError, CodecError, LoadError};
#[cfg(feature = "macros")]
pub use memoize::cached;
pub use observe::Outcome;
pub use tiers::backend::{Backend, BackendFuture, TierStats};
pub use tiers::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use tiers::composition::{
    Compose, CompositionBackend, CompositionBuilder, ReadPolicy, RefillPolicy, WritePolicy,
};
pub use tiers::generations::TagGenerations;
pub use tiers::memory::MemoryBackend;
pub use tiers::pending::PendingInvalidations;
pub use tiers::staged::Staged;
pub use tiers::typed::BackendExt;
