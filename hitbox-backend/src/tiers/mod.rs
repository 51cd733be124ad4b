//! Where entries live: the [`Backend`](crate::Backend) trait and the tiers
//! built on it.
//!
//! Why it exists: the engine ([`crate::engine`]) only ever talks to one
//! `Backend`, which stores bytes under keys. Everything that decides *where*
//! and *whether* bytes are stored is a tier that implements that trait:
//!
//! - [`backend`]: the trait itself, its boxed future and per-tier stats.
//! - [`memory`]: the unbounded in-memory reference tier (tests, examples).
//! - [`staged`]: a tier behind compression and encryption stages.
//! - [`composition`]: two tiers acting as one (L1 in front of L2), nested
//!   for more; it skips a failing tier with a [`breaker`].
//! - [`breaker`]: the circuit breaker every tier that can go down uses
//!   (composition, Redis, cachekit.io), on the injected clock.
//! - [`generations`]: tag generations, which keep a load that raced an
//!   invalidation in another process from storing its result.
//! - [`purge`]: purges by key, prefix or tag, hard or soft, through
//!   every tier.
//! - [`pending`]: the invalidations an outage kept from a tier, replayed
//!   when it returns.
//! - [`typed`]: typed `get`/`set` on one tier, without the engine.
//!
//! Because a composition is itself a `Backend`, the engine does not know
//! how many tiers it has: `moka.compose(redis).compose(remote)` is one tier
//! to it.

pub(crate) mod backend;
pub mod breaker;
pub mod composition;
pub mod generations;
pub(crate) mod memory;
pub mod pending;
pub mod purge;
pub(crate) mod staged;
pub(crate) mod typed;
