//! The errors of building a [`MemcachedBackend`](crate::MemcachedBackend).
//!
//! Operations on a built backend fail with
//! [`BackendError`](hitbox_backend::BackendError), like every tier's.

/// Building a [`MemcachedBackend`](crate::MemcachedBackend) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemcachedError {
    /// The builder was given no server.
    #[error("no memcached server configured: call server or url on the builder")]
    NoServer,
    /// The address is not `host:port`, `tcp://host:port` or `unix://path`.
    #[error("invalid memcached address `{0}`: expected host:port, tcp://host:port or unix://path")]
    Address(String),
    /// A setting is out of range.
    #[error("invalid memcached backend setting: {0}")]
    Invalid(&'static str),
}
