//! hitbox: caching for Rust services and clients, in one dependency.
//!
//! This crate gathers the hitbox crates behind features, so that one line in
//! `Cargo.toml` is enough. Each part stays a crate of its own (`hitbox-core`,
//! `hitbox-backend`, `hitbox-tower`, the tiers), re-exported here as a module,
//! and the names most programs use are re-exported at the top.
//!
//! | feature | what it adds | re-exported as |
//! |---|---|---|
//! | `tower` (default) | the HTTP layer for axum routers and HTTP clients | [`tower`], [`CacheLayer`], [`Rule`] |
//! | `moka` (default) | the in-process tier, bounded in bytes | [`moka`], [`MokaBackend`] |
//! | `reqwest` | reqwest clients: a reqwest-middleware middleware, and a tower `Service` around a `reqwest::Client` | [`reqwest`], `CacheMiddleware`, `tower::client` |
//! | `redis`, `redis-tls` | the Redis tier: standalone, cluster, sentinel | `redis`, `RedisBackend` |
//! | `memcached` | the memcached tier | `memcached` |
//! | `cachekit` | the cachekit.io remote tier | `cachekit` |
//! | `encryption` | the AES-256-GCM stage | `backend::AesGcmEncryptor` |
//! | `json` | the JSON value format; JSON body predicates, JSON-keyed query-style `POST`s and the GraphQL preset | `backend::Format::Json`, `tower::graphql` |
//! | `regex` | regular expressions in HTTP predicates | `tower::predicate::BodyRegex` |
//! | `targeted-fields` | `CDN-Cache-Control` and other targeted fields in standards mode | `tower::rfc9111::Rfc9111::targeted_field` |
//! | `zstd`, `lz4` | compression stages (zstd builds C code) | `backend::Compression` |
//! | `msgpack`, `bitcode`, `bincode` | more value formats (bincode is unmaintained: RUSTSEC-2025-0141) | `backend::Format` |
//! | `macros` | the `#[cached]` attribute | `cached` |
//! | `config`, `yaml` | configuration files (TOML; YAML with `yaml`) built into a layer | [`config`] |
//! | `metrics` | metrics through the `metrics` facade (layer, engine, tiers) | `tower::observe`, `backend::observe` |
//!
//! The engine ([`backend`]) and the keys and policies ([`core`]) are always
//! there.
//!
//! # An axum application
//!
//! With the default features:
//!
//! ```toml
//! [dependencies]
//! hitbox = { git = "https://github.com/hitbox-rs/hitbox" }
//! ```
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use hitbox::{Cache, CacheLayer, CachePolicy, MokaBackend, Rule};
//! use hitbox::tower::predicate::Path;
//!
//! let cache = Cache::new(MokaBackend::new(64 << 20)); // 64 MiB in process
//! let app: Router = Router::new()
//!     .route("/prices/{id}", get(|| async { "a price" }))
//!     .route("/products/{id}", get(|| async { "a product" }))
//!     .layer(
//!         CacheLayer::builder(cache)
//!             .rule(Rule::new().when(Path::prefix("/prices")).policy(CachePolicy::real_time()))
//!             .rule(Rule::new().policy(CachePolicy::new(Duration::from_secs(300))))
//!             .build(),
//!     );
//! ```
//!
//! # The programmatic cache
//!
//! ```
//! use hitbox::{Cache, CacheKey, MokaBackend};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cache = Cache::new(MokaBackend::new(64 << 20));
//! let key = CacheKey::builder("users").part("id", "42").build();
//! let name: String = cache.get_or_insert_with(&key, || async { "Ada".to_owned() }).await;
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("Ada"));
//! # let _ = name;
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

/// Cache keys, entry metadata, policies, and the predicate and extractor
/// traits (the `hitbox-core` crate).
pub use hitbox_core as core;

/// The engine, the `Backend` trait, value stages and tier composition (the
/// `hitbox-backend` crate).
pub use hitbox_backend as backend;

/// The in-process tier (the `hitbox-moka` crate).
#[cfg(feature = "moka")]
pub use hitbox_moka as moka;

/// The Redis tier (the `hitbox-redis` crate).
#[cfg(feature = "redis")]
pub use hitbox_redis as redis;

/// The memcached tier (the `hitbox-memcached` crate).
#[cfg(feature = "memcached")]
pub use hitbox_memcached as memcached;

/// The cachekit.io remote tier (the `hitbox-cachekit` crate).
#[cfg(feature = "cachekit")]
pub use hitbox_cachekit as cachekit;

/// Configuration files: tiers, stages, rules and standards mode in TOML or
/// YAML, built into a layer (the `hitbox-config` crate).
#[cfg(feature = "config")]
pub use hitbox_config as config;

/// reqwest clients through reqwest-middleware (the `hitbox-reqwest` crate).
#[cfg(feature = "reqwest")]
pub use hitbox_reqwest as reqwest;

/// The HTTP layer (the `hitbox-tower` crate).
#[cfg(feature = "tower")]
pub use hitbox_tower as tower;

pub use hitbox_backend::{
    Backend, BackendError, Cache, CacheBuilder, CacheStats, CacheableValue, Compression, Format,
    MemoryBackend, Stages,
};
pub use hitbox_core::{CacheKey, CachePolicy, EntryOptions, Tag};

#[cfg(feature = "macros")]
pub use hitbox_backend::cached;
#[cfg(feature = "moka")]
pub use hitbox_moka::MokaBackend;
#[cfg(feature = "redis")]
pub use hitbox_redis::RedisBackend;
#[cfg(feature = "reqwest")]
pub use hitbox_reqwest::CacheMiddleware;
#[cfg(feature = "tower")]
pub use hitbox_tower::{CacheLayer, Rule};

/// The README's code, compiled as doctests so it stays true (with every
/// feature it uses).
#[cfg(all(
    doctest,
    feature = "reqwest",
    feature = "redis",
    feature = "json",
    feature = "regex",
    feature = "macros",
    feature = "memcached",
    feature = "config",
    feature = "metrics",
    feature = "axum"
))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
