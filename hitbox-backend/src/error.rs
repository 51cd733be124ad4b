//! Errors of the storage layer and of the engine.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The boxed source of an error raised by a tier's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A tier failed to do what it was asked.
///
/// Every variant names the tier (its [`label`](crate::Backend::label)); the
/// engine logs these and degrades (a failed read is a miss, a failed write
/// is skipped), so a user's request never fails because a tier did.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The tier did not answer in time.
    #[error("tier `{tier}` timed out after {after:?}")]
    Timeout {
        /// The tier's label.
        tier: Arc<str>,
        /// How long it was given.
        after: Duration,
    },
    /// The tier is known to be down (its circuit breaker is open) and was
    /// not asked at all.
    #[error("tier `{tier}` is unavailable")]
    Unavailable {
        /// The tier's label.
        tier: Arc<str>,
    },
    /// The tier's client reported an error about the tier itself: the
    /// connection was refused or reset, an I/O error, the server cannot be
    /// reached. A [tier failure](BackendError::is_tier_failure). An error
    /// about one key is [`BackendError::Key`] instead.
    #[error("tier `{tier}` failed: {source}")]
    Client {
        /// The tier's label.
        tier: Arc<str>,
        /// What the client said.
        #[source]
        source: BoxError,
    },
    /// The tier answered, but failed this one operation on this one key: a
    /// value of the wrong type (Redis `WRONGTYPE`), a cluster redirection
    /// (`MOVED`, `ASK`) that outlived the client's retries, a command or
    /// value the server would not take, a reply that does not parse, a
    /// request the service refused for this key. The tier itself is
    /// reachable: this is not a [tier failure](BackendError::is_tier_failure).
    #[error("tier `{tier}` failed this operation: {source}")]
    Key {
        /// The tier's label.
        tier: Arc<str>,
        /// What the client said.
        #[source]
        source: BoxError,
    },
    /// The tier refused the value (too large, for instance).
    #[error("tier `{tier}` refused the value: {reason}")]
    Refused {
        /// The tier's label.
        tier: Arc<str>,
        /// Why.
        reason: &'static str,
    },
    /// The value could not be encoded for storage.
    #[error("tier `{tier}` could not encode the value: {source}")]
    Encode {
        /// The tier's label (or `engine` when the engine's format failed).
        tier: Arc<str>,
        /// What went wrong.
        #[source]
        source: CodecError,
    },
    /// The tier cannot do what was asked: a purge by prefix (or a soft
    /// purge by prefix or tag) of a tier that cannot list its keys. Not a
    /// [tier failure](BackendError::is_tier_failure).
    #[error("tier `{tier}` does not support {operation}")]
    Unsupported {
        /// The tier's label.
        tier: Arc<str>,
        /// What it was asked to do.
        operation: &'static str,
    },
}

impl BackendError {
    /// The label of the tier that failed.
    pub fn tier(&self) -> &str {
        match self {
            BackendError::Timeout { tier, .. }
            | BackendError::Unavailable { tier }
            | BackendError::Client { tier, .. }
            | BackendError::Key { tier, .. }
            | BackendError::Refused { tier, .. }
            | BackendError::Encode { tier, .. }
            | BackendError::Unsupported { tier, .. } => tier,
        }
    }

    /// The class of the error, a short constant: `timeout`, `unavailable`,
    /// `client`, `key`, `refused`, `codec` (for
    /// [`Encode`](BackendError::Encode)) or `unsupported`. It is the `kind` label of
    /// `hitbox_tier_errors_total` and the `error.type` field of a failed
    /// tier span; see [`BackendError::KINDS`].
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }

    /// Every value [`BackendError::kind`] takes.
    pub const KINDS: [&'static str; 7] = [
        "timeout",
        "unavailable",
        "client",
        "key",
        "refused",
        "codec",
        "unsupported",
    ];

    pub(crate) fn kind_index(&self) -> usize {
        match self {
            BackendError::Timeout { .. } => 0,
            BackendError::Unavailable { .. } => 1,
            BackendError::Client { .. } => 2,
            BackendError::Key { .. } => 3,
            BackendError::Refused { .. } => 4,
            BackendError::Encode { .. } => 5,
            BackendError::Unsupported { .. } => 6,
        }
    }

    /// Whether this error says the tier is unhealthy, and so counts towards
    /// opening its [circuit breaker](crate::CircuitBreaker): it timed out
    /// ([`Timeout`](BackendError::Timeout)), could not be reached or lost
    /// its connection ([`Client`](BackendError::Client)), or is already
    /// known to be down ([`Unavailable`](BackendError::Unavailable)).
    ///
    /// Errors about one key or one value are not: the tier answered
    /// ([`Key`](BackendError::Key): a wrong type, a cluster redirection, a
    /// reply that does not parse), or was never asked because of the value
    /// ([`Refused`](BackendError::Refused): too large;
    /// [`Encode`](BackendError::Encode): a value the stages cannot encode).
    /// An entry that does not decode is a miss, not an error.
    pub fn is_tier_failure(&self) -> bool {
        match self {
            BackendError::Timeout { .. } | BackendError::Unavailable { .. } | BackendError::Client { .. } => {
                true
            }
            BackendError::Key { .. }
            | BackendError::Refused { .. }
            | BackendError::Encode { .. }
            | BackendError::Unsupported { .. } => false,
        }
    }

    /// A per-key error of `tier` ([`BackendError::Key`]): the tier answered,
    /// but not with what was asked for.
    pub fn key(tier: impl Into<Arc<str>>, source: impl Into<BoxError>) -> Self {
        BackendError::Key {
            tier: tier.into(),
            source: source.into(),
        }
    }

    /// A client error of `tier` (connection-level: a tier failure).
    pub fn client(tier: impl Into<Arc<str>>, source: impl Into<BoxError>) -> Self {
        BackendError::Client {
            tier: tier.into(),
            source: source.into(),
        }
    }
}

/// Bytes that are not a value this reader can use.
///
/// Raised when an entry is truncated, corrupted, written by a foreign
/// program or with other stages (format, compression, encryption) than the
/// reader's. Readers turn it into a logged miss; it never reaches a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes do not start with the expected magic number.
    #[error("not a hitbox entry (bad magic)")]
    BadMagic,
    /// The entry was written by a newer or unknown envelope version.
    #[error("unsupported entry version {0}")]
    Version(u8),
    /// The entry ends early.
    #[error("entry is truncated")]
    Truncated,
    /// The entry's checksum does not match its bytes: it was truncated or
    /// damaged after it was written.
    #[error("entry checksum mismatch (truncated or damaged)")]
    Checksum,
    /// The entry was written under another key (copied, renamed or swapped
    /// in the tier).
    #[error("entry was written under another key")]
    KeyMismatch,
    /// The entry's metadata is invalid.
    #[error("entry metadata is invalid: {0}")]
    Meta(#[from] hitbox_core::MetaError),
    /// The entry was written with another format.
    #[error("entry format {found} does not match the reader's format {expected}")]
    FormatMismatch {
        /// The reader's format id.
        expected: u8,
        /// The id found in the entry.
        found: u8,
    },
    /// The entry was written with a compressor this reader does not use.
    #[error("entry compression {found} does not match the reader's compression {expected}")]
    CompressionMismatch {
        /// The reader's compression id.
        expected: u8,
        /// The id found in the entry.
        found: u8,
    },
    /// The entry was written with another encryptor, or none, or this
    /// reader has none.
    #[error("entry encryption {found} does not match the reader's encryption {expected}")]
    EncryptionMismatch {
        /// The reader's encryptor id (0: none).
        expected: u8,
        /// The id found in the entry.
        found: u8,
    },
    /// Decompression failed or the size did not match.
    #[error("entry does not decompress: {0}")]
    Decompress(String),
    /// The entry would decompress to more than the reader allows.
    #[error("entry would decompress to {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The size the entry claims.
        size: u64,
        /// The reader's limit.
        limit: u64,
    },
    /// Decryption failed: wrong key, wrong cache key or tenant, or tampering.
    #[error("entry does not decrypt")]
    Decrypt,
    /// Encryption failed.
    #[error("value could not be encrypted: {0}")]
    Encrypt(String),
    /// The payload is not a valid value of the requested type.
    #[error("payload does not decode: {0}")]
    Payload(String),
}

/// Why a loader passed to `get_or_insert_with` produced no value.
///
/// Cheap to clone: every caller that joined the load receives the same
/// error.
#[derive(Debug)]
pub enum LoadError<E> {
    /// The loader returned an error.
    Failed(Arc<E>),
    /// The loader panicked. The panic is caught so that the callers waiting
    /// on the same load do not hang.
    Panicked,
    /// The caller leading the load (see [`Cache::lead_or_join`](crate::Cache::lead_or_join))
    /// gave up without a result: the waiters should load for themselves.
    Abandoned,
}

impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        match self {
            LoadError::Failed(error) => LoadError::Failed(Arc::clone(error)),
            LoadError::Panicked => LoadError::Panicked,
            LoadError::Abandoned => LoadError::Abandoned,
        }
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Failed(error) => write!(f, "loader failed: {error}"),
            LoadError::Panicked => f.write_str("loader panicked"),
            LoadError::Abandoned => f.write_str("the load was abandoned by its leader"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Failed(error) => Some(&**error),
            LoadError::Panicked | LoadError::Abandoned => None,
        }
    }
}

impl<E> LoadError<E> {
    /// The loader's own error, if it returned one.
    pub fn loader_error(&self) -> Option<&E> {
        match self {
            LoadError::Failed(error) => Some(error),
            LoadError::Panicked | LoadError::Abandoned => None,
        }
    }
}
