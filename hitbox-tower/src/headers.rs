//! The `Cache-Status` the layer reports (RFC 9211), and, re-exported from
//! [`rfc9111::connection`](crate::rfc9111::connection), the hop-by-hop
//! rule. (`Cache-Control` is parsed in one place,
//! [`rfc9111::directives`](crate::rfc9111::directives), for both modes.)

use std::cell::RefCell;

use http::header::HeaderValue;

pub use crate::rfc9111::connection::{HOP_BY_HOP, strip_hop_by_hop};

/// Why a request was forwarded to the origin (RFC 9211 `fwd`), when the
/// cache had something to say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Nothing usable was stored.
    Miss,
    /// A stored response was stale: it is being revalidated.
    Stale,
    /// The request's own directives (`no-cache`, `max-age`) asked for it.
    Request,
    /// A stored part lacked what the request needs: the rest was asked
    /// for.
    Partial,
}

impl Fwd {
    /// The parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::Miss => "miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
            Fwd::Partial => "partial",
        }
    }
}

/// Why a request went past the cache (`fwd=bypass; detail=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// The method is not cached.
    Method,
    /// The request carries `Authorization` and the rule does not accept it.
    Authorization,
    /// The request carries `Cookie` and the rule does not accept it.
    Cookie,
    /// A `GET` or `HEAD` with a body, which no key captures.
    RequestBody,
    /// A body the rule needs was not read: larger than the rule's limit,
    /// or of a length not known before it is read.
    Body,
    /// The request body did not pass the rule's body predicate.
    BodyPredicate,
    /// The body the key needs is not the JSON it expects (its media type,
    /// its encoding or its syntax).
    InvalidJson,
    /// A GraphQL request whose operation is not a query, or cannot be told
    /// (an unknown persisted-query hash, a document this cache cannot read).
    NotAQuery,
    /// The key's last response was not storable (hit-for-pass).
    Uncacheable,
    /// The request asked for no cache ([`CacheMode::NoStore`](crate::CacheMode::NoStore)).
    RequestMode,
}

impl BypassReason {
    /// The `detail` value.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Method => "method",
            BypassReason::Authorization => "authorization",
            BypassReason::Cookie => "cookie",
            BypassReason::RequestBody => "request-body",
            BypassReason::Body => "body",
            BypassReason::BodyPredicate => "body-predicate",
            BypassReason::InvalidJson => "invalid-json",
            BypassReason::NotAQuery => "not-a-query",
            BypassReason::Uncacheable => "uncacheable",
            BypassReason::RequestMode => "request-mode",
        }
    }
}

/// What happened to a request, as reported in `Cache-Status` (RFC 9211).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from a fresh entry; `ttl` is its remaining freshness.
    Hit {
        /// Seconds of freshness left.
        ttl: u64,
    },
    /// Served from a stale entry while it is revalidated in the background:
    /// this request was not forwarded, so it is a `hit`.
    StaleWhileRevalidate {
        /// Seconds since it went stale.
        stale_for: u64,
    },
    /// Forwarded, and served from a stale entry because the origin failed.
    StaleIfError {
        /// Seconds since it went stale.
        stale_for: u64,
        /// The origin's status, when it answered (a `5xx`); `None` when it
        /// could not be reached.
        status: Option<u16>,
    },
    /// Forwarded, and served from a stale entry because the origin could
    /// not be reached (RFC 9111 section 4.2.4), within the grace window.
    StaleIfDisconnected {
        /// Seconds since it went stale.
        stale_for: u64,
    },
    /// Forwarded, the origin could not be reached, and the stored response
    /// forbids serving it stale: answered `504`.
    StaleForbidden,
    /// Forwarded to the origin; `stored` when the response is being stored.
    Miss {
        /// Whether the response will be stored.
        stored: bool,
    },
    /// Served with the response another request was loading: it waited
    /// for that request's miss.
    Collapsed,
    /// Waited for another request's load longer than the lock timeout, then
    /// went to the origin itself.
    LockTimeout,
    /// Served stale, as the request allowed (`max-stale`).
    StaleAllowed {
        /// Seconds since it went stale.
        stale_for: u64,
    },
    /// Forwarded to the origin for a reason RFC 9211 names (`stale`:
    /// revalidation of a stored response, `request`: the request's
    /// directives); `status` is the origin's answer.
    Forwarded {
        /// The `fwd` reason.
        fwd: Fwd,
        /// The origin's status (`304` for a successful revalidation).
        status: u16,
        /// Whether the response is stored.
        stored: bool,
    },
    /// Not forwarded because the request said `only-if-cached`, and
    /// nothing usable was stored.
    OnlyIfCached,
    /// Not handled by the cache (by configuration, or remembered as
    /// uncacheable: `detail`).
    Bypass {
        /// Why, when it is not plain configuration.
        detail: Option<BypassReason>,
    },
    /// Refused by the cache without asking the origin: a request whose
    /// `Host` is ambiguous (`400`).
    Rejected {
        /// Why.
        detail: crate::rfc9111::host::HostError,
    },
}

impl CacheOutcome {
    /// The `Cache-Status` entry for this outcome, named `cache`.
    pub fn cache_status(&self, cache: &str) -> HeaderValue {
        // Built on the stack and copied once into the value: a hit pays
        // one allocation for its `Cache-Status`, and no formatting.
        let mut out = ValueWriter::new();
        out.put(cache.as_bytes());
        match *self {
            CacheOutcome::Hit { ttl } => {
                out.put(b"; hit; ttl=").decimal(ttl);
            }
            CacheOutcome::StaleWhileRevalidate { stale_for } => {
                out.put(b"; hit; ttl=-").decimal(stale_for);
            }
            CacheOutcome::StaleIfError { stale_for, status } => {
                out.put(b"; fwd=stale");
                if let Some(status) = status {
                    out.put(b"; fwd-status=").decimal(u64::from(status));
                }
                out.put(b"; ttl=-")
                    .decimal(stale_for)
                    .put(b"; detail=stale-if-error");
            }
            CacheOutcome::StaleIfDisconnected { stale_for } => {
                out.put(b"; fwd=stale; ttl=-")
                    .decimal(stale_for)
                    .put(b"; detail=stale-if-disconnected");
            }
            CacheOutcome::StaleForbidden => {
                out.put(b"; fwd=stale; detail=origin-unreachable");
            }
            CacheOutcome::Miss { stored } => {
                out.put(b"; fwd=miss");
                if stored {
                    out.put(b"; stored");
                }
            }
            CacheOutcome::Collapsed => {
                out.put(b"; fwd=miss; collapsed");
            }
            CacheOutcome::LockTimeout => {
                out.put(b"; fwd=miss; detail=lock-timeout");
            }
            CacheOutcome::StaleAllowed { stale_for } => {
                out.put(b"; hit; ttl=-").decimal(stale_for);
            }
            CacheOutcome::Forwarded { fwd, status, stored } => {
                out.put(b"; fwd=")
                    .put(fwd.as_str().as_bytes())
                    .put(b"; fwd-status=")
                    .decimal(u64::from(status));
                if stored {
                    out.put(b"; stored");
                }
            }
            CacheOutcome::OnlyIfCached => {
                out.put(b"; detail=only-if-cached");
            }
            CacheOutcome::Bypass { detail } => {
                out.put(b"; fwd=bypass");
                if let Some(detail) = detail {
                    out.put(b"; detail=").put(detail.as_str().as_bytes());
                }
            }
            CacheOutcome::Rejected { detail } => {
                out.put(b"; detail=").put(detail.as_str().as_bytes());
            }
        }
        out.value().unwrap_or_else(|| HeaderValue::from_static("hitbox"))
    }

    /// The outcome the request is counted under in
    /// [`Cache::stats`](hitbox_backend::Cache::stats) and
    /// `hitbox_requests_total`: `hit` for a fresh hit; `stale` for any
    /// stale response served (while revalidating, allowed by the request,
    /// standing in for an origin error or an unreachable origin);
    /// `collapsed` for an answer another request's load gave; `bypass` for
    /// a request the cache does not handle (or refuses); `error` when the
    /// origin is unreachable and nothing may stand in; `miss` for the rest,
    /// which the origin answered (revalidations included). A response the
    /// cache may not store is counted `uncacheable` where the flow knows it,
    /// not here.
    pub fn counted(&self) -> hitbox_backend::Outcome {
        use hitbox_backend::Outcome;
        match self {
            CacheOutcome::Hit { .. } => Outcome::Hit,
            CacheOutcome::StaleWhileRevalidate { .. }
            | CacheOutcome::StaleIfError { .. }
            | CacheOutcome::StaleIfDisconnected { .. }
            | CacheOutcome::StaleAllowed { .. } => Outcome::Stale,
            CacheOutcome::StaleForbidden => Outcome::Error,
            CacheOutcome::Collapsed => Outcome::Collapsed,
            CacheOutcome::Bypass { .. } | CacheOutcome::Rejected { .. } => Outcome::Bypass,
            CacheOutcome::Miss { .. }
            | CacheOutcome::LockTimeout
            | CacheOutcome::Forwarded { .. }
            | CacheOutcome::OnlyIfCached => Outcome::Miss,
        }
    }

    /// `HIT` or `MISS`, for the optional `X-Cache` header.
    pub fn x_cache(&self) -> HeaderValue {
        match self {
            CacheOutcome::Hit { .. }
            | CacheOutcome::StaleWhileRevalidate { .. }
            | CacheOutcome::StaleIfError { .. }
            | CacheOutcome::StaleIfDisconnected { .. }
            | CacheOutcome::StaleAllowed { .. }
            | CacheOutcome::Collapsed => HeaderValue::from_static("HIT"),
            CacheOutcome::Forwarded {
                fwd: Fwd::Stale,
                status: 304,
                ..
            } => HeaderValue::from_static("HIT"),
            CacheOutcome::Miss { .. }
            | CacheOutcome::LockTimeout
            | CacheOutcome::StaleForbidden
            | CacheOutcome::Bypass { .. }
            | CacheOutcome::Forwarded { .. }
            | CacheOutcome::Rejected { .. }
            | CacheOutcome::OnlyIfCached => HeaderValue::from_static("MISS"),
        }
    }
}

thread_local! {
    /// The last `Cache-Status` of a fresh hit built on this thread: cache
    /// name, TTL, value.
    static LAST_HIT_STATUS: RefCell<Option<(Box<str>, u64, HeaderValue)>> = const { RefCell::new(None) };
    /// The last `Age` value built on this thread.
    static LAST_AGE: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// The `Cache-Status` of a fresh hit. Hits on the same entry within the
/// same second report the same TTL, so the value is built once and then
/// shared (a reference count, no allocation), as servers do with `Date`.
pub(crate) fn hit_status(cache: &str, ttl: u64) -> HeaderValue {
    LAST_HIT_STATUS.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((name, last_ttl, value)) = &*last
            && *last_ttl == ttl
            && **name == *cache
        {
            return value.clone();
        }
        let value = CacheOutcome::Hit { ttl }.cache_status(cache);
        *last = Some((cache.into(), ttl, value.clone()));
        value
    })
}

/// An `Age` value, shared while it does not change; see [`hit_status`].
pub(crate) fn age_value(age: u64) -> HeaderValue {
    LAST_AGE.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((last_age, value)) = &*last
            && *last_age == age
        {
            return value.clone();
        }
        let value = decimal_value(age);
        *last = Some((age, value.clone()));
        value
    })
}

/// A number as a header value (`Age`, `Content-Length`), without the
/// formatting machinery.
pub(crate) fn decimal_value(n: u64) -> HeaderValue {
    let mut out = ValueWriter::new();
    out.decimal(n);
    out.value().expect("digits are a valid header value")
}

/// Builds a header value on the stack, spilling to the heap only past
/// [`ValueWriter::INLINE`] bytes.
struct ValueWriter {
    inline: [u8; ValueWriter::INLINE],
    len: usize,
    spilled: Option<Vec<u8>>,
}

impl ValueWriter {
    const INLINE: usize = 128;

    fn new() -> Self {
        ValueWriter {
            inline: [0; Self::INLINE],
            len: 0,
            spilled: None,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> &mut Self {
        if let Some(spilled) = &mut self.spilled {
            spilled.extend_from_slice(bytes);
        } else if self.len + bytes.len() <= Self::INLINE {
            self.inline[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            let mut spilled = Vec::with_capacity(self.len + bytes.len() + 64);
            spilled.extend_from_slice(&self.inline[..self.len]);
            spilled.extend_from_slice(bytes);
            self.spilled = Some(spilled);
        }
        self
    }

    fn decimal(&mut self, n: u64) -> &mut Self {
        self.put(itoa::Buffer::new().format(n).as_bytes())
    }

    /// The value, or `None` if it holds bytes a header value cannot.
    fn value(&self) -> Option<HeaderValue> {
        let bytes = self.spilled.as_deref().unwrap_or(&self.inline[..self.len]);
        HeaderValue::from_bytes(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_values() {
        let cases = [
            (CacheOutcome::Hit { ttl: 42 }, "hitbox; hit; ttl=42"),
            (CacheOutcome::Miss { stored: true }, "hitbox; fwd=miss; stored"),
            (CacheOutcome::Miss { stored: false }, "hitbox; fwd=miss"),
            (
                CacheOutcome::StaleWhileRevalidate { stale_for: 3 },
                "hitbox; hit; ttl=-3",
            ),
            (
                CacheOutcome::StaleIfError {
                    stale_for: 9,
                    status: None,
                },
                "hitbox; fwd=stale; ttl=-9; detail=stale-if-error",
            ),
            (
                CacheOutcome::StaleIfError {
                    stale_for: 9,
                    status: Some(503),
                },
                "hitbox; fwd=stale; fwd-status=503; ttl=-9; detail=stale-if-error",
            ),
            (CacheOutcome::Collapsed, "hitbox; fwd=miss; collapsed"),
            (
                CacheOutcome::StaleIfDisconnected { stale_for: 4 },
                "hitbox; fwd=stale; ttl=-4; detail=stale-if-disconnected",
            ),
            (
                CacheOutcome::StaleForbidden,
                "hitbox; fwd=stale; detail=origin-unreachable",
            ),
            (CacheOutcome::LockTimeout, "hitbox; fwd=miss; detail=lock-timeout"),
            (
                CacheOutcome::Rejected {
                    detail: crate::rfc9111::host::HostError::Invalid,
                },
                "hitbox; detail=invalid-host",
            ),
            (CacheOutcome::StaleAllowed { stale_for: 4 }, "hitbox; hit; ttl=-4"),
            (
                CacheOutcome::Forwarded {
                    fwd: Fwd::Stale,
                    status: 304,
                    stored: true,
                },
                "hitbox; fwd=stale; fwd-status=304; stored",
            ),
            (CacheOutcome::OnlyIfCached, "hitbox; detail=only-if-cached"),
            (CacheOutcome::Bypass { detail: None }, "hitbox; fwd=bypass"),
            (
                CacheOutcome::Bypass {
                    detail: Some(BypassReason::Uncacheable),
                },
                "hitbox; fwd=bypass; detail=uncacheable",
            ),
        ];
        for (outcome, expected) in cases {
            assert_eq!(outcome.cache_status("hitbox"), expected);
            // A name too long for the stack buffer gives the same value.
            let long = "c".repeat(300);
            let value = outcome.cache_status(&long);
            assert_eq!(
                value.to_str().unwrap(),
                format!("{long}{}", &expected["hitbox".len()..])
            );
        }
        assert_eq!(CacheOutcome::Hit { ttl: 1 }.cache_status("bad\nname"), "hitbox");
        for n in [0, 7, 10, 99, 3600, u64::MAX] {
            assert_eq!(decimal_value(n), n.to_string().as_str());
        }
        // The per-thread reuse gives the value it would build, whatever
        // came before.
        for (name, ttl) in [("a", 5), ("a", 5), ("b", 5), ("a", 6), ("a", 5)] {
            assert_eq!(
                hit_status(name, ttl),
                CacheOutcome::Hit { ttl }.cache_status(name)
            );
        }
        for age in [0, 0, 3, 0, 3] {
            assert_eq!(age_value(age), age.to_string().as_str());
        }
        assert_eq!(CacheOutcome::Collapsed.x_cache(), "HIT");
        assert_eq!(CacheOutcome::Miss { stored: true }.x_cache(), "MISS");
    }
}
