//! The errors of building a [`RedisBackend`](crate::RedisBackend).
//!
//! Operations on a built backend fail with
//! [`BackendError`](hitbox_backend::BackendError), like every tier's.

use std::time::Duration;

/// Building or connecting a [`RedisBackend`](crate::RedisBackend) failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL or the configuration is not one fred accepts.
    #[error("invalid Redis configuration: {0}")]
    Config(#[source] fred::error::Error),
    /// The builder was given no server (no URL, no nodes).
    #[error("no Redis server configured: call url, standalone, cluster or sentinel on the builder")]
    NoServer,
    /// A setting is out of range.
    #[error("invalid Redis backend setting: {0}")]
    Invalid(&'static str),
    /// The backend was built outside a Tokio runtime: its connections run
    /// as Tokio tasks.
    #[error("a RedisBackend must be built inside a Tokio runtime")]
    NoRuntime,
    /// Connecting failed.
    #[error("could not connect to Redis: {0}")]
    Connect(#[source] fred::error::Error),
    /// The connections were not up in time.
    #[error("Redis did not connect within {0:?}")]
    ConnectTimeout(Duration),
}
