//! The HTTP side of hitbox: a `tower` layer that caches responses, for axum
//! routers (whole router, one route, or `route_layer`) and for HTTP clients
//! (reqwest, hyper).
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use hitbox_backend::Cache;
//! use hitbox_core::CachePolicy;
//! use hitbox_moka::MokaBackend;
//! use hitbox_tower::{CacheLayer, Rule};
//!
//! # async fn run() {
//! let cache = Cache::new(MokaBackend::new(64 << 20));
//! let app: Router = Router::new()
//!     .route("/slow/{id}", get(|| async { "made slowly" }))
//!     .layer(
//!         CacheLayer::builder(cache)
//!             .rule(Rule::new().policy(
//!                 CachePolicy::new(Duration::from_secs(30)).stale_while_revalidate(Duration::from_secs(30)),
//!             ))
//!             .build(),
//!     );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! What the layer does with a request is told in [`CacheService`];
//! which requests it caches and under which key, in [`Rule`],
//! [`predicate`] and [`extract`]. Every response carries a `Cache-Status`
//! header (RFC 9211): `hitbox; hit; ttl=42`, `hitbox; fwd=miss; stored`,
//! `hitbox; hit; ttl=-3` (stale, refreshed in the background),
//! `hitbox; fwd=miss; collapsed` (it waited for another request's load),
//! `hitbox; fwd=stale; ttl=-9; detail=stale-if-error`, `hitbox; fwd=bypass`.
//! `stored` is said only when storing is sure; an upstream cache's member is
//! kept before ours.
//!
//! **Standards mode.** With
//! [`CacheLayerBuilder::rfc9111`] the layer is an RFC 9111 shared cache
//! instead, driven by the origin's headers: see [`rfc9111`].
//!
//! **Safe by default.** Only `GET` is cached (and `HEAD` answered from it);
//! requests with `Authorization` or `Cookie` and responses with
//! `Set-Cookie`, `Cache-Control: private` or `no-store` are not stored
//! unless a rule opts in, and then credentials become part of the key.
//! Responses with an unqualified `no-cache` or `Vary: *` are never stored;
//! other `Vary` fields keep variants apart. A `GET` with a body bypasses
//! the cache. The fill of a response into the cache runs at the origin's
//! pace whatever the client reads, and a request waits for another's load
//! at most [`CacheLayerBuilder::lock_timeout`]. The README's Security
//! section lists every default, beside those of Varnish and nginx.
#![warn(missing_docs)]

mod body;
#[cfg(feature = "reqwest")]
pub mod client;
pub mod extract;
mod flow;
mod future;
pub mod headers;
mod layer;
mod origin;
mod pass;
pub mod path;
mod policy;
pub mod predicate;
mod response;
pub mod rfc9111;
mod rule;
mod service;
mod store;

pub use body::CacheBody;
pub use future::ResponseFuture;
pub use layer::{CacheLayer, CacheLayerBuilder, DEFAULT_HIT_FOR_PASS, DEFAULT_LOCK_TIMEOUT};
pub use origin::{Origin, RequestBody, ResponseBody};
pub use response::CachedResponse;
pub use rule::{DEFAULT_MAX_BODY_SIZE, Rule};
pub use service::CacheService;
pub use store::Uncacheable;

/// The README's code, compiled as doctests so it stays true.
#[cfg(all(doctest, feature = "reqwest"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
