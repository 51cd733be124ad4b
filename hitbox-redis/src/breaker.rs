//! The circuit breaker that keeps a dead Redis from slowing every request.
//!
//! This is hitbox-backend's [`CircuitBreaker`](hitbox_backend::CircuitBreaker),
//! the one every tier uses (see [`hitbox_backend::breaker`]); its types are
//! re-exported here so that `hitbox_redis::breaker::BreakerState` and
//! `hitbox_redis::BreakerConfig` keep working.
//!
//! The breaker counts consecutive *tier failures*: commands that time out,
//! and fred errors that say Redis could not be reached or the connection
//! broke (I/O, connection refused or reset, a cancelled command, no route to
//! a node). At [`BreakerConfig::failure_threshold`] it opens: every
//! operation is refused at once with
//! [`BackendError::Unavailable`](hitbox_backend::BackendError) without
//! touching Redis. After [`BreakerConfig::cool_down`] (on the clock given to
//! [`RedisBackendBuilder::clock`](crate::RedisBackendBuilder::clock), the
//! system clock by default) the next operation goes through as a probe
//! while the others are still refused. A probe that succeeds closes the
//! breaker; one that fails opens it for another cool-down. A late answer to
//! a command sent before the breaker opened decides nothing.
//!
//! Errors Redis sends back about one key do not count: `WRONGTYPE`, `MOVED`
//! and `ASK` redirections fred could not follow, a value over the server's
//! limit, any other `ERR` reply, a reply that does not parse. They reach
//! the engine as [`BackendError::Key`](hitbox_backend::BackendError::Key).

pub use hitbox_backend::breaker::{
    BreakerConfig, BreakerState, DEFAULT_COOL_DOWN, DEFAULT_FAILURE_THRESHOLD,
};
