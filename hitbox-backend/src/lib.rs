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
//! # Tiers and stages
//!
//! A [`Backend`] stores bytes. The engine frames each value in an envelope
//! (see [`envelope`]) that records its [`Format`] and metadata; [`Staged`]
//! wraps a tier to compress ([`Compression`]) and encrypt ([`Encryptor`])
//! what it stores, each stage recorded in a header so that a value read with
//! other stages than it was written with is a clean miss.
//!
//! # Features
//!
//! - `bincode`: the bincode 2 format. Off by default: bincode is
//!   unmaintained (RUSTSEC-2025-0141).
//! - `encryption`: the AES-256-GCM [`Encryptor`] (`encryption` module), with
//!   per-tenant keys derived by HKDF-SHA256, wire-compatible with the
//!   cachekit SDKs.
//! - `msgpack`: the MessagePack format and the cachekit interop v1 key
//!   builder (`interop` module).
#![warn(missing_docs)]

mod backend;
mod cache;
pub mod composition;
#[cfg(feature = "encryption")]
pub mod encryption;
pub mod envelope;
mod error;
mod format;
#[cfg(feature = "msgpack")]
pub mod interop;
mod memory;
mod stage;
mod typed_backend;

pub use backend::{Backend, BackendFuture, TierStats};
pub use cache::{
    Cache, CacheBuilder, CacheStats, CachedEntry, DEFAULT_MAX_BACKGROUND_REFRESHES, LoadJoin, LoadLead,
    LoadTicket, SharedEntry, TypedCache,
};
pub use composition::{
    Compose, CompositionBackend, CompositionBuilder, ReadPolicy, RefillPolicy, WritePolicy,
};
#[cfg(feature = "encryption")]
pub use encryption::{AesGcmEncryptor, MasterKey};
pub use error::{BackendError, BoxError, DecodeError, LoadError};
pub use format::{CacheableValue, Format};
pub use memory::MemoryBackend;
pub use stage::{Compression, DEFAULT_MAX_DECOMPRESSED, EncryptionContext, Encryptor, Staged, Stages};
pub use typed_backend::BackendExt;
