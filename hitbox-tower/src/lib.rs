//! The HTTP side of hitbox: a `tower` layer that caches responses, for axum
//! routers (the whole router, one route, or `route_layer`) and for HTTP
//! clients (reqwest, hyper).
//!
//! # The simplest cache
//!
//! A [`CacheLayer`] over a [`Cache`](hitbox_backend::Cache) caches every
//! `GET` with safe defaults and the cache's own lifetimes:
//!
//! ```
//! use axum::{Router, routing::get};
//! use hitbox_backend::Cache;
//! use hitbox_moka::MokaBackend;
//! use hitbox_tower::CacheLayer;
//!
//! let cache = Cache::new(MokaBackend::new(64 << 20)); // 64 MiB in process
//! let app: Router = Router::new()
//!     .route("/products/{id}", get(|| async { "a product" }))
//!     .layer(CacheLayer::new(cache));
//! ```
//!
//! Every response says what happened in `Cache-Status` (RFC 9211):
//! `hitbox; hit; ttl=42`, `hitbox; fwd=miss; stored`, `hitbox; hit; ttl=-3`
//! (stale, refreshed in the background), `hitbox; fwd=miss; collapsed` (it
//! waited for another request's load), `hitbox; fwd=stale; ttl=-9;
//! detail=stale-if-error`, `hitbox; fwd=bypass`. `stored` is said only when
//! storing is sure; an upstream cache's member is kept before ours.
//!
//! # Rules: which requests, which key, how long
//!
//! A [`Rule`] picks requests with a [`predicate`], keys them with the
//! [`extract`] parts (by default method, scheme, host, path and the query
//! sorted by name), and gives them a lifetime
//! ([`CachePolicy`](hitbox_core::CachePolicy)) and tags. Rules are tried in
//! order; the first that matches applies, and a request that none matches
//! passes through. One layer can serve a whole router, or layers with other
//! rules can share one cache per route:
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use hitbox_backend::Cache;
//! use hitbox_core::CachePolicy;
//! use hitbox_moka::MokaBackend;
//! use hitbox_tower::{CacheLayer, Rule, predicate::Path};
//!
//! let cache = Cache::new(MokaBackend::new(64 << 20));
//! let layer = CacheLayer::builder(cache)
//!     .rule(Rule::new().when(Path::prefix("/prices")).policy(CachePolicy::real_time()))
//!     .rule(Rule::new().policy(
//!         CachePolicy::new(Duration::from_secs(300)).stale_while_revalidate(Duration::from_secs(60)),
//!     ))
//!     .build();
//! let app: Router = Router::new()
//!     .route("/prices/{id}", get(|| async { "a price" }))
//!     .route("/products/{id}", get(|| async { "a product" }))
//!     .layer(layer);
//! ```
//!
//! # Body predicates
//!
//! A rule can look into bodies, with the predicates over a
//! [`ReadBody`](predicate::ReadBody): a JSON value at a JSON Pointer
//! ([`Json`](predicate::Json): present, equal, one of several; feature
//! `json`), a regular expression ([`BodyRegex`](predicate::BodyRegex);
//! feature `regex`), the size as read ([`ReadSize`](predicate::ReadSize)),
//! or a closure.
//!
//! - [`Rule::when_body`]: the request body is read once, up to
//!   [`Rule::request_body_limit`] (64 KiB by default), judged, and handed
//!   on to the origin byte for byte. A body over the limit, or sent without
//!   a length (chunked), is not read: the predicate counts as false and the
//!   body streams on untouched.
//! - [`Rule::store_when_body`]: the response body streams to the client as
//!   it comes and is judged once whole (up to [`Rule::max_body_size`]);
//!   a body that fails is not stored, so `{"error": …}` answered with `200`
//!   never reaches the next client from the cache.
//!
//! Rules without body predicates or body keys never read a body: their
//! hits cost what they cost before.
//!
//! ```
//! # #[cfg(feature = "json")] {
//! use hitbox_backend::Cache;
//! use hitbox_core::Predicate;
//! use hitbox_moka::MokaBackend;
//! use hitbox_tower::{CacheLayer, Rule};
//! use hitbox_tower::predicate::{Json, Path};
//!
//! let layer = CacheLayer::builder(Cache::new(MokaBackend::new(64 << 20)))
//!     // An API that answers its errors with 200: store only the others.
//!     .rule(Rule::new().when(Path::prefix("/api")).store_when_body(Json::exists("/error").not()))
//!     .build();
//! # }
//! ```
//!
//! # Query-style `POST`s and GraphQL
//!
//! Search requests, JSON-RPC reads and GraphQL queries are `POST`s whose
//! body is the question. A rule caches them only when it says so, with
//! [`Rule::post_as_read`] and a [`BodyKey`]: the raw bytes, the body as
//! canonical JSON (member order and whitespace do not split entries, any
//! other difference does), or named JSON fields. [`Rule::graphql`] caches
//! GraphQL `query` operations, over `GET` and `POST`, and never a
//! `mutation` or `subscription` (see [`graphql`]). A body that cannot be
//! keyed (too large, not JSON, an operation that is not a query) passes
//! through to the origin: never an error of the cache's own.
//!
//! ```
//! # #[cfg(feature = "json")] {
//! use hitbox_backend::Cache;
//! use hitbox_moka::MokaBackend;
//! use hitbox_tower::graphql::GraphQl;
//! use hitbox_tower::predicate::{Json, Path};
//! use hitbox_tower::{BodyKey, CacheLayer, Rule};
//!
//! let layer = CacheLayer::builder(Cache::new(MokaBackend::new(64 << 20)))
//!     .rule(Rule::new().when(Path::exact("/graphql")).graphql(GraphQl::new()))
//!     .rule(Rule::new().when(Path::exact("/search")).post_as_read(BodyKey::json()))
//!     .rule(
//!         Rule::new()
//!             .when(Path::exact("/rpc"))
//!             .post_as_read(BodyKey::json_fields(["/method", "/params"]))
//!             .when_body(Json::one_of("/method", ["getBalance", "getBlock"])),
//!     )
//!     .rule(Rule::new())
//!     .build();
//! # }
//! ```
//!
//! # Invalidation by unsafe methods
//!
//! A `PUT`, `POST`, `DELETE` or `PATCH` (any method but `GET`, `HEAD`,
//! `OPTIONS` and `TRACE`) that no rule caches as a read, answered with a
//! status below 400, drops what rules stored for its host and path, and for
//! the URLs its `Location` and `Content-Location` name on the same host
//! (RFC 9111 section 4.4). Every entry a rule stores carries a tag of its
//! host and path, so what is dropped is:
//!
//! - every entry of that path, whatever its query (`PUT /items/1` drops
//!   `GET /items/1` and `GET /items/1?lang=fr`), its `Vary` variants and
//!   the extra parts of its key (headers, credentials), under every rule
//!   that stores with invalidation on (the default;
//!   [`Rule::invalidate_on_unsafe`] turns it off per rule);
//! - in every instance that shares the cache's tiers: the tag is
//!   invalidated through the [`Cache`](hitbox_backend::Cache), so a Redis
//!   tier and its invalidation bus drop it from every instance's L1.
//!
//! What is not dropped: other paths (`PUT /items/1` leaves `GET /items` and
//! `GET /items/1/reviews`), URLs on other hosts, entries of rules with
//! invalidation off, and anything when the response is an error. A `POST`
//! that a rule caches as a read (a search, a GraphQL query or mutation
//! under [`Rule::graphql`]) invalidates nothing. For other relations, tag
//! entries with [`Rule::tag`] and call `Cache::invalidate_tag`. The unsafe
//! request's response is returned once the invalidation is done.
//!
//! # Purge
//!
//! [`CacheLayer::purger`] purges what the layer stored, hard or soft: by
//! URL (the key the layer builds for it, with its `Vary` variants), by
//! tag, by key prefix or by rule namespace. Responses tag their entry in a
//! `Surrogate-Key` header ([`SurrogateKeys`]), which no client sees. With
//! the `axum` feature, [`admin::purge_router`] exposes the purges over
//! HTTP behind an authorisation hook. See [`purge`].
//!
//! # Safe by default
//!
//! Only `GET` is cached (and `HEAD` answered from it); `POST` only where a
//! rule says it is a read. Requests with
//! `Authorization` or `Cookie`, and responses with `Set-Cookie`,
//! `Cache-Control: private` or `no-store`, are not stored unless a rule
//! opts in, and then credentials become part of the key. Responses with an
//! unqualified `no-cache` or `Vary: *` are never stored; other `Vary`
//! fields keep variants apart. A `GET` with a body bypasses the cache. The
//! fill of a response into the cache runs at the origin's pace whatever the
//! client reads, and a request waits for another's load at most
//! [`CacheLayerBuilder::lock_timeout`]. The README's Security section lists
//! every default, beside those of Varnish and nginx.
//!
//! # Features
//!
//! None is on by default, so the default build stays small.
//!
//! - `regex`: [`Header::regex`](predicate::Header::regex) and
//!   [`BodyRegex`](predicate::BodyRegex).
//! - `json`: the [`Json`](predicate::Json) predicates,
//!   [`BodyKey::json`], [`BodyKey::json_fields`] and [`Rule::graphql`]
//!   (adds `sha2`, for persisted-query hashes).
//! - `targeted-fields`: [`Rfc9111::targeted_field`](rfc9111::Rfc9111::targeted_field)
//!   (`CDN-Cache-Control`, RFC 9213), parsed with `sfv`.
//! - `axum`: axum's `MatchedPath` as a predicate
//!   ([`MatchedPath`](predicate::MatchedPath)) and as key parts
//!   ([`MatchedRoute`](extract::MatchedRoute)), and the admin purge router
//!   ([`admin::purge_router`]).
//! - `reqwest`: [`client::ReqwestService`]. For reqwest-middleware, see the
//!   `hitbox-reqwest` crate.
//!
//! # Per-request modes
//!
//! A [`CacheMode`] in a request's extensions narrows what the cache does
//! for it: no cache at all, reload, only-if-cached, force-cache.
//!
//! # Standards mode
//!
//! With [`CacheLayerBuilder::rfc9111`] the layer is an RFC 9111 shared
//! cache instead, driven by the origin's headers (freshness, validation,
//! `Vary`, invalidation by unsafe methods): see [`rfc9111`].
//!
//! ```
//! use hitbox_backend::Cache;
//! use hitbox_moka::MokaBackend;
//! use hitbox_tower::{CacheLayer, rfc9111::Rfc9111};
//!
//! let layer = CacheLayer::builder(Cache::new(MokaBackend::new(64 << 20)))
//!     .rfc9111(Rfc9111::new().targeted_field("cdn-cache-control"))
//!     .build();
//! ```
//!
//! # Tiers
//!
//! The layer stores through its [`Cache`](hitbox_backend::Cache), so
//! everything the engine offers applies: an in-process tier in front of
//! Redis (`MokaBackend::new(..).compose(redis)`), compression and
//! encryption stages, tags (`Cache::invalidate_tag`), stats. See the
//! `hitbox-backend` crate.
//!
//! # Many instances: one origin call per key
//!
//! Within one process, requests for a key that is being loaded wait for
//! that load. Across instances (several processes behind a load balancer,
//! over one Redis), [`CacheLayerBuilder::distributed_lock`] does the same
//! with a lock per key: on a miss in every tier, the request this process
//! chose to lead the load tries the lock. The instance that takes it asks
//! the origin, stores the response and announces it; the others, already
//! listening (Redis pub/sub, no polling), serve what the shared tier then
//! holds for their own key (`Cache-Status: hitbox; fwd=miss; collapsed`).
//! The lock's lease is renewed while the origin's body streams into the
//! cache; an instance that dies mid-load lets another take over when its
//! lease runs out. A waiter waits at most the lock timeout, and goes to the
//! origin itself when the wait runs out, when the holder stored nothing, or
//! when the lock cannot be reached: the lock saves origin calls and never
//! fails a request. Hits never touch it. A rule opts out with
//! [`Rule::distributed_lock`].
//!
//! ```no_run
//! use std::time::Duration;
//! use hitbox_backend::{Cache, Compose};
//! use hitbox_moka::MokaBackend;
//! use hitbox_redis::{RedisBackend, RedisLock};
//! use hitbox_tower::{CacheLayer, Rule};
//!
//! # fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisBackend::from_url("redis://127.0.0.1:6379")?;
//! let cache = Cache::new(MokaBackend::new(64 << 20).compose(redis.clone()));
//! let layer = CacheLayer::builder(cache)
//!     .rule(Rule::new())
//!     .distributed_lock(RedisLock::new(&redis).lease(Duration::from_secs(10)))
//!     .lock_timeout(Duration::from_secs(5))
//!     .build();
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! # Clients
//!
//! The layer wraps any `tower::Service` of HTTP requests: a reqwest client
//! through [`client::ReqwestService`] (feature `reqwest`), or a hyper
//! client. What it asks of that service and its bodies is named once, in
//! [`Origin`], [`RequestBody`] and [`ResponseBody`].
//!
//! # How a request goes through
//!
//! Both modes run one flow over a pure policy (the rules, or RFC 9111):
//! decide (bypass, refuse, or key the request), look up (a fresh, stale or
//! revalidatable stored response, or nothing), load (once for every request
//! that may share the answer), store (while the response streams to the
//! client). [`CacheService`] tells it in detail.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

#[cfg(feature = "axum")]
pub mod admin;
mod body;
mod body_key;
#[cfg(feature = "reqwest")]
pub mod client;
mod distributed;
pub mod extract;
mod flow;
mod future;
#[cfg(feature = "json")]
pub mod graphql;
pub mod headers;
#[cfg(feature = "json")]
mod json;
mod layer;
#[cfg(feature = "axum")]
mod matched_path;
mod mode;
pub mod observe;
mod origin;
mod pass;
pub mod path;
mod policy;
pub mod predicate;
pub mod purge;
mod response;
pub mod rfc9111;
mod rule;
mod service;
mod store;

pub use body::CacheBody;
pub use body_key::BodyKey;
pub use future::ResponseFuture;
pub use layer::{CacheLayer, CacheLayerBuilder, DEFAULT_HIT_FOR_PASS, DEFAULT_LOCK_TIMEOUT};
pub use mode::CacheMode;
pub use origin::{Origin, RequestBody, ResponseBody};
pub use purge::{PurgeError, Purger, SurrogateKeys};
pub use response::CachedResponse;
pub use rule::{DEFAULT_MAX_BODY_SIZE, DEFAULT_REQUEST_BODY_LIMIT, Rule};
pub use service::CacheService;
pub use store::Uncacheable;
