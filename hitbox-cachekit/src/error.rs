//! The one error type of the crate.
//!
//! The crate's own calls (`read_with_freshness`, `set`, locks...) return
//! [`CachekitError`]; through the [`Backend`](hitbox_backend::Backend)
//! trait it becomes a [`BackendError`], which the engine turns into a miss
//! or a skipped write. Every other module builds on this one, and it
//! imports none of them.

use std::time::Duration;

use hitbox_backend::BackendError;

/// Everything that can go wrong talking to cachekit.io, or before a request
/// is built.
///
/// No variant ever holds the API key: text that comes from the HTTP stack is
/// scrubbed of it (and of the request URL, which holds the cache key) before
/// it is stored here. Convert to [`BackendError`] with `From` when the call
/// came through the [`Backend`](hitbox_backend::Backend) trait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CachekitError {
    /// The cache key cannot be sent (reserved, too long, control bytes).
    #[error("invalid cache key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The base URL was refused by the URL safety rules.
    #[error("refused API URL: {reason}")]
    InvalidUrl {
        /// Why. Never lists the allowed hosts.
        reason: &'static str,
    },
    /// The configuration is incomplete or inconsistent.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A TTL outside what the service accepts (0, or over 30 days).
    #[error("invalid TTL: {reason}")]
    InvalidTtl {
        /// What is wrong.
        reason: &'static str,
    },
    /// The body is over the service's limit; it was not sent.
    #[error("value of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The service refused the credentials (401): a missing or unknown API
    /// key, a revoked one, or one whose prefix is not `ck_sdk_`, `ck_api_`
    /// or `ck_live_`.
    #[error("authentication refused (HTTP {status})")]
    Auth {
        /// The status code.
        status: u16,
    },
    /// The API key is valid but may not do this with this cache key (403):
    /// its namespace grants do not include the key's namespace (`ns:{name}:`
    /// and `nsapi:{name}:` keys are in namespace `name`, other keys in
    /// `default`), or the write split forbids the mutation (`ck_sdk_` keys
    /// never write `nsapi:` keys, `ck_api_` keys never `ns:` keys).
    #[error(
        "forbidden (HTTP 403): the API key has no grant for this key's namespace, or may not write this key class"
    )]
    Forbidden,
    /// The service refused the request as malformed (400): a key outside its
    /// rules (at most 400 characters of `[A-Za-z0-9_.:-]`, no `..`, the
    /// `ns:{namespace}:` shape; the client sends keys it cannot know the
    /// service refuses), a TTL it does not accept, or a missing header.
    /// Permanent: not retried.
    #[error("bad request (HTTP 400): the service refused the key, a TTL or a header")]
    BadRequest,
    /// A 429 with `x-cachekit-deny-reason`: a quota, not retried.
    #[error("request denied by quota: {reason}")]
    Denied {
        /// The deny reason the service gave.
        reason: String,
    },
    /// A transient error (408, 429, 5xx) that persisted through every
    /// attempt.
    #[error("service unavailable (HTTP {status}) after {attempts} attempt(s)")]
    Transient {
        /// The last status code.
        status: u16,
        /// How many attempts were made.
        attempts: u32,
    },
    /// A permanent error status without a variant of its own (a 4xx other
    /// than 400, 401, 403 and 413, or an unexpected status such as a
    /// redirect, which is never followed).
    #[error("request refused (HTTP {status})")]
    Status {
        /// The status code.
        status: u16,
    },
    /// `PATCH .../ttl` on an entry that is already stale (409).
    #[error("the entry is already stale; its TTL cannot be refreshed")]
    AlreadyStale,
    /// The call did not finish within its budget.
    #[error("timed out after {after:?}")]
    Timeout {
        /// The budget.
        after: Duration,
    },
    /// The circuit breaker is open: the service was not asked.
    #[error("circuit breaker open: the service is not being asked")]
    CircuitOpen,
    /// The connection failed (scrubbed text of the HTTP stack's error).
    #[error("transport error: {message}")]
    Transport {
        /// What the HTTP stack said, with the URL and the key removed.
        message: String,
    },
    /// A response that does not follow the protocol (malformed JSON,
    /// unknown fields, a missing header).
    #[error("protocol violation: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
}

impl CachekitError {
    /// Whether the circuit breaker should count this error as the service
    /// being unhealthy (timeouts, transport errors, persistent 5xx). The
    /// same errors become tier failures
    /// ([`BackendError::is_tier_failure`]) through
    /// [`CachekitError::into_backend_error`]; the others (a refused key, a
    /// quota, a 4xx, a malformed answer) are about one request.
    pub fn is_service_failure(&self) -> bool {
        matches!(
            self,
            CachekitError::Timeout { .. } | CachekitError::Transport { .. } | CachekitError::Transient { .. }
        )
    }

    /// Converts to the error the engine understands, naming the tier: a
    /// service failure becomes a tier failure
    /// ([`BackendError::Client`], [`BackendError::Timeout`]), an open
    /// breaker [`BackendError::Unavailable`], a value or key refused before
    /// sending [`BackendError::Refused`], and any other error, about this
    /// one request, [`BackendError::Key`], which does not count towards a
    /// composition's breaker.
    pub fn into_backend_error(self, tier: &str) -> BackendError {
        match self {
            CachekitError::Timeout { after } => BackendError::Timeout {
                tier: tier.into(),
                after,
            },
            CachekitError::CircuitOpen => BackendError::Unavailable { tier: tier.into() },
            CachekitError::TooLarge { .. } => BackendError::Refused {
                tier: tier.into(),
                reason: "value over the 25 MB limit of cachekit.io",
            },
            CachekitError::InvalidKey { reason } => BackendError::Refused {
                tier: tier.into(),
                reason,
            },
            other if other.is_service_failure() => BackendError::client(tier, other),
            other => BackendError::key(tier, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_failures_become_tier_failures() {
        let failures = [
            CachekitError::Timeout {
                after: Duration::from_secs(1),
            },
            CachekitError::Transport {
                message: "connection refused".into(),
            },
            CachekitError::Transient {
                status: 503,
                attempts: 3,
            },
        ];
        for error in failures {
            assert!(error.is_service_failure(), "{error:?}");
            let backend = error.into_backend_error("cachekit");
            assert!(backend.is_tier_failure(), "{backend:?}");
        }
        let per_request = [
            CachekitError::Status { status: 404 },
            CachekitError::Auth { status: 401 },
            CachekitError::Forbidden,
            CachekitError::BadRequest,
            CachekitError::Denied {
                reason: "quota".into(),
            },
            CachekitError::AlreadyStale,
            CachekitError::Protocol {
                message: "malformed JSON".into(),
            },
            CachekitError::TooLarge { size: 2, limit: 1 },
            CachekitError::InvalidKey { reason: "reserved" },
        ];
        for error in per_request {
            assert!(!error.is_service_failure(), "{error:?}");
            let backend = error.into_backend_error("cachekit");
            assert!(!backend.is_tier_failure(), "{backend:?}");
        }
        assert!(matches!(
            CachekitError::Status { status: 404 }.into_backend_error("cachekit"),
            BackendError::Key { .. }
        ));
    }
}
