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
//! - [`observe`]: request outcomes, metrics and spans (see "Observability"
//!   below).
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
//! # Observability
//!
//! The cache tells what it does three ways: [`Cache::stats`] (always),
//! metrics through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`), and `tracing` spans. The stats and the metrics are
//! the same counters: each event bumps both from one call site, so they
//! never disagree.
//!
//! ## Metrics (feature `metrics`)
//!
//! Any exporter of the facade works (Prometheus, StatsD, ...). Install it
//! **before** building caches, compositions and tiers: each registers its
//! metric handles once, when it is built, with the recorder installed then,
//! and keeps them, so that an event costs an increment and no label is
//! built on the hit path. Without a recorder the handles do nothing (a
//! branch per event), and tier latencies are not measured at all (no clock
//! read). Here a [`DebuggingRecorder`](https://docs.rs/metrics-util) is
//! installed for the building thread only; a service installs its exporter
//! globally instead (`metrics_exporter_prometheus::PrometheusBuilder`, for
//! one), then optionally calls `observe::describe_metrics` for units and
//! help texts.
//!
//! ```
//! # #[cfg(feature = "metrics")] {
//! use hitbox_backend::{Cache, MemoryBackend, Outcome};
//! use hitbox_core::CacheKey;
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! let cache = metrics::with_local_recorder(&recorder, || {
//!     Cache::builder(MemoryBackend::new().labelled("l1")).name("users").build()
//! });
//!
//! let key = CacheKey::builder("users").part("id", "7").build();
//! assert_eq!(cache.get::<String>(&key).await, None); // a miss
//! cache.set(&key, &"Ada".to_string()).await.unwrap();
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("Ada")); // a hit
//! cache.record_outcome(Outcome::Bypass); // what an HTTP layer reports
//!
//! let exported: Vec<(String, Vec<String>, u64)> = snapshotter
//!     .snapshot()
//!     .into_vec()
//!     .into_iter()
//!     .filter_map(|(key, _, _, value)| match value {
//!         DebugValue::Counter(n) if n > 0 => Some((
//!             key.key().name().to_owned(),
//!             key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect(),
//!             n,
//!         )),
//!         _ => None,
//!     })
//!     .collect();
//! let count = |name: &str, label: &str| {
//!     exported
//!         .iter()
//!         .find(|(n, labels, _)| n == name && labels.iter().any(|l| l == label))
//!         .map_or(0, |(_, _, n)| *n)
//! };
//! assert_eq!(count("hitbox_cache_requests_total", "outcome=hit"), 1);
//! assert_eq!(count("hitbox_cache_requests_total", "outcome=miss"), 1);
//! assert_eq!(count("hitbox_cache_requests_total", "outcome=bypass"), 1);
//! assert_eq!(count("hitbox_tier_reads_total", "result=hit"), 1);
//! assert_eq!(count("hitbox_tier_writes_total", "result=ok"), 1);
//! // The stats count the same events.
//! let stats = cache.stats();
//! assert_eq!((stats.hits, stats.misses, stats.bypassed, stats.stores), (1, 1, 1, 1));
//! # });
//! # }
//! ```
//!
//! Per cache (label `cache`: [`CacheBuilder::name`], by default the
//! backend's label), each with the field of [`CacheStats`] it equals:
//!
//! | metric | labels | `CacheStats` |
//! |---|---|---|
//! | `hitbox_cache_requests_total` | `cache`, `outcome` = `hit`, `miss`, `stale`, `collapsed`, `bypass`, `uncacheable`, `error` | `hits`, `misses`, `stale_hits`, `collapsed`, `bypassed`, `uncacheable`, `request_errors` |
//! | `hitbox_single_flight_joins_total` | `cache` | `joins` |
//! | `hitbox_background_refreshes_total` | `cache` | `background_refreshes` |
//! | `hitbox_loads_total` | `cache`, `result` = `ok`, `error` | `loads_succeeded`, `load_errors` (`loads` counts them when they start) |
//! | `hitbox_stale_loads_discarded_total` | `cache` | `stale_loads_discarded` |
//! | `hitbox_invalidations_total` | `cache`, `kind` = `key`, `tag` | `invalidations` (both), `tag_invalidations` (`delete`, `invalidate_tag`; purges are apart) |
//! | `hitbox_purges_total` | `cache`, `kind` = `key`, `prefix`, `tag`; `mode` = `hard`, `soft`; `result` = `ok`, `error` | `purges` (all), `purge_errors` (`result=error`), `soft_purges` (`mode=soft`), `key_purges`, `prefix_purges`, `tag_purges` (by `kind`) |
//! | `hitbox_purged_entries_total` | `cache`, `kind`, `mode` | `purged_entries` (all), `soft_purged_entries` (`mode=soft`) |
//! | `hitbox_stores_total` | `cache` | `stores` |
//! | `hitbox_unreadable_entries_total` | `cache` | `unreadable_entries` |
//!
//! Each request counts in exactly one outcome ([`Outcome`]), so the
//! outcomes add up to the requests. The engine counts its own (`get`, the
//! `get_or_insert` family, `get_many`, loads in place, the entity cache);
//! a caller that reads through [`Cache::get_entry`] and leads loads with
//! [`Cache::lead_or_join`] (the HTTP layer) counts its requests with
//! [`Cache::record_outcome`].
//!
//! Per tier (label `tier`: the tier's [label](Backend::label)), taken where
//! the tier is called: by the engine around its tier, by a
//! [`composition`] around each of its two (a composition itself is not a
//! series: its tiers are, see [`Backend::observes_tiers`]). Every tier has
//! them without doing anything; give each tier of a process its own label.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `hitbox_tier_reads_total` | `tier`, `result` = `hit`, `miss`, `error` | reads (a batch read counts each key) |
//! | `hitbox_tier_writes_total` | `tier`, `result` = `ok`, `error`, `refused` | writes, refills included; `refused`: too large ([`BackendError::Refused`]), or a tag moved ([`Backend::write_if_current`]) |
//! | `hitbox_tier_errors_total` | `tier`, `kind` = [`BackendError::kind`] | failed operations of any kind; `unavailable`: skipped by an open breaker |
//! | `hitbox_tier_read_seconds`, `hitbox_tier_write_seconds` | `tier` | latency histograms, on a monotonic clock, of calls that reached the tier |
//! | `hitbox_tier_breaker_state` | `tier` | gauge: 0 closed, 1 half-open, 2 open (every enabled [`CircuitBreaker`] that is [labelled](CircuitBreaker::labelled)) |
//! | `hitbox_tier_bytes`, `hitbox_tier_entries` | `tier` | gauges of an in-process tier (`observe::SizeGauges`: hitbox-moka with its `metrics` feature) |
//!
//! ## Spans
//!
//! Every span is at `DEBUG` (enable it for the target `hitbox_backend`),
//! and is a child of the span current when it starts: a caller that enters
//! its own span gets the cache's spans under it. When no subscriber wants
//! `DEBUG` a span is never made: the hit path pays one level check per
//! span, and no field is formatted. Subscribers time spans themselves
//! (`tracing-subscriber`'s `FmtSpan::CLOSE`, `tracing-opentelemetry`);
//! `hitbox.result` is recorded when the operation ends.
//!
//! | span | fields | one per |
//! |---|---|---|
//! | `hitbox.lookup` | `hitbox.key` (or `hitbox.keys`, a count), `hitbox.result` = `hit`, `stale`, `stale_if_error`, `expired`, `miss`, `unreadable`, `error` | engine read (`get`, `get_entry`, a loader's lookup, `get_many`) |
//! | `hitbox.load` | `hitbox.key`, `hitbox.result` = `ok`, `error` | load (a loader, or a caller leading with `lead_or_join`); spans from its start to its store |
//! | `hitbox.revalidate` | `hitbox.key`, `hitbox.result` | background refresh: a **root** span that *follows from* the span that started it |
//! | `hitbox.store` | `hitbox.key`, `hitbox.result` = `ok`, `refused`, `expired`, `error` | value the engine writes |
//! | `hitbox.tier.read` | `hitbox.tier`, `hitbox.key` (or `hitbox.keys`), `hitbox.result` = `hit`, `miss`, `error` (`ok` for a batch) | read of one tier |
//! | `hitbox.tier.write` | `hitbox.tier`, `hitbox.key`, `hitbox.result` = `ok`, `refused`, `error` | write of one tier (refills included) |
//! | `hitbox.tier.remove` | `hitbox.tier`, `hitbox.key`, `hitbox.result` | removal from one tier |
//! | `hitbox.tier.invalidate` | `hitbox.tier`, `hitbox.tag`, `hitbox.result` | tag invalidation in one tier |
//! | `hitbox.purge` | `hitbox.purge.kind` = `key`, `prefix`, `tag`; `hitbox.purge.mode` = `hard`, `soft`; `hitbox.key` (a key's) or `hitbox.tag` (a tag's; a prefix is not recorded); `hitbox.purged` (entries, when it succeeded); `hitbox.result` = `ok`, `error` | [`Cache::purge`] and its shorthands |
//! | `hitbox.tier.purge` | `hitbox.tier` and the fields of `hitbox.purge` | purge in one tier |
//!
//! A failed operation also records `error.type` ([`BackendError::kind`];
//! for a load: `failed`, `panicked`, `abandoned`) and `otel.status_code` =
//! `ERROR`. The names: OpenTelemetry's where one fits (`error.type`);
//! `otel.status_code` is what `tracing-opentelemetry` reads for the span's
//! status; the rest are `hitbox.*`, since OpenTelemetry has no conventions
//! for caches and its database ones (`db.*`) describe a query to one
//! database. `hitbox.key` is the key's digest ([`CacheKey::log_id`](hitbox_core::CacheKey::log_id)),
//! never the key. With an HTTP layer's `hitbox.request` span entered
//! around each request, the tree is:
//!
//! ```text
//! hitbox.request                      (the layer's)
//! ├── hitbox.lookup                   one per engine read
//! │   ├── hitbox.tier.read {tier=moka}    one per tier asked
//! │   ├── hitbox.tier.read {tier=redis}
//! │   └── hitbox.tier.write {tier=moka}   a refill of L1
//! ├── hitbox.load                     a miss the request leads
//! │   └── hitbox.store
//! │       ├── hitbox.tier.write {tier=moka}
//! │       └── hitbox.tier.write {tier=redis}
//! hitbox.revalidate                   root; follows from hitbox.request
//! └── hitbox.load
//!     └── hitbox.store
//!         └── hitbox.tier.write ...
//! hitbox.purge                        one per Cache::purge
//! ├── hitbox.tier.purge {tier=moka}
//! └── hitbox.tier.purge {tier=redis}
//! ```
//!
//! ## What the HTTP layer calls
//!
//! - [`Cache::record_outcome`] once per request, with the [`Outcome`] its
//!   own outcome maps to (a hit; a stale answer of any kind; a miss,
//!   forwarded or revalidated; a collapsed request; a bypass; a response
//!   that may not be stored; an error). Requests collapsed or bypassed by
//!   the layer are counted only there: the engine counts no outcome for
//!   `get_entry`, `lead_or_join` or `refresh_in_background`.
//! - Its `hitbox.request` span (OpenTelemetry's `http.request.method`,
//!   `url.path`, `http.response.status_code`, and `hitbox.rule`,
//!   `hitbox.key`, `hitbox.outcome`), entered around `get_entry`,
//!   `lead_or_join` and `refresh_in_background` (instrument the request's
//!   future with it): the engine's spans nest under it as above.
//! - Nothing for the per-tier metrics: they come with the tiers.
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
//! - `metrics`: metrics through the `metrics` facade; see
//!   "Observability" above. Off by default; without it nothing of it is
//!   compiled in.
//! - `msgpack`: the MessagePack format, the value format the cachekit SDKs
//!   share. (The cachekit interop key builder lives in `hitbox-cachekit`.)
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod codec;
mod engine;
pub mod entity;
mod error;
pub mod lock;
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
pub use tiers::purge;

pub use codec::format::{CacheableValue, Format, MAX_DECODED_BYTES};
pub use codec::stages::{Compression, DEFAULT_MAX_DECOMPRESSED, EncryptionContext, Encryptor, Stages};
#[cfg(feature = "encryption")]
pub use encryption::{AesGcmEncryptor, MasterKey};
pub use engine::{
    Cache, CacheBuilder, CacheStats, CachedEntry, DEFAULT_MAX_BACKGROUND_REFRESHES, LoadJoin, LoadLead,
    LoadTicket, RefreshStore, TypedCache,
};
pub use entity::{Entity, EntityCache, Repository};
pub use error::{BackendError, BoxError, CodecError, LoadError};
pub use lock::{DistributedLock, FillEvent, FillWatch, LoadEnd, LockAttempt, LockHold};
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
pub use tiers::purge::{Purge, PurgeMode, PurgeTarget};
pub use tiers::staged::Staged;
pub use tiers::typed::BackendExt;
