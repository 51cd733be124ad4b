//! Standards mode: the layer as an RFC 9111 shared HTTP cache.
//!
//! In the default (policy) mode, rules say what is cached and for how long.
//! In standards mode, enabled with
//! [`CacheLayerBuilder::rfc9111`](crate::CacheLayerBuilder::rfc9111), the
//! origin's headers decide, as they would for a CDN or a caching reverse
//! proxy:
//!
//! ```
//! use std::time::Duration;
//! use hitbox_backend::Cache;
//! use hitbox_moka::MokaBackend;
//! use hitbox_tower::{CacheLayer, rfc9111::Rfc9111};
//!
//! let cache = Cache::new(MokaBackend::new(64 << 20));
//! let layer = CacheLayer::builder(cache)
//!     .rfc9111(Rfc9111::new().targeted_field("cdn-cache-control").heuristic_max(Duration::from_secs(3600)))
//!     .build();
//! ```
//!
//! The rules live in pure functions over headers and a `now` in seconds,
//! one module per area of the RFCs, each unit-tested; the service only
//! stores, looks up and calls the origin:
//!
//! - [`directives`]: `Cache-Control` parsing (RFC 9111 5.2): quoted
//!   arguments accepted, unknown extensions ignored, invalid or conflicting
//!   delta-seconds make the response stale, values capped at 2^31.
//! - [`storage`]: what a shared cache may store (section 3): `GET` (and a
//!   `POST` response whose `Content-Location` is its own target, with
//!   explicit freshness, for the `GET`s that follow); final statuses but
//!   `304` (a `206` as a part, see [`range`]); not `no-store` (request or
//!   response, unless `must-understand` with a status the cache
//!   understands; with one it does not, never), not unqualified `private`, not a
//!   request with `Authorization` unless `public`, `s-maxage` or
//!   `must-revalidate`; not `Vary: *`; only with explicit freshness or a
//!   heuristically cacheable status (200, 203, 204, 300, 301, 308, 404, 405,
//!   410, 414, 501), and, for a request with `Cookie` or `Authorization`,
//!   only with explicit freshness. `Set-Cookie`, and the fields named by
//!   qualified `no-cache` or `private`, are kept out of what is stored.
//! - [`freshness`]: lifetime (4.2.1: `s-maxage`, `max-age`, `Expires` minus
//!   `Date`), heuristics (4.2.2, only with `Last-Modified`, a fraction of
//!   its age, capped), age (4.2.3, with upstream `Age`, request and
//!   response times), and the verdict for a request (`no-cache`,
//!   `max-age`, `max-stale`, `min-fresh`; `must-revalidate`,
//!   `proxy-revalidate`, `s-maxage`; RFC 5861 `stale-while-revalidate` and
//!   `stale-if-error`); serving stale when the origin cannot be reached
//!   (4.2.4, [`Rfc9111::stale_if_disconnected`]).
//! - [`date`]: HTTP-dates in exactly the three forms of RFC 9110 5.6.7.
//! - [`range`]: single byte ranges answered from a stored `200` (`206`,
//!   `416`, `If-Range`), stored `206` parts completed from the origin.
//! - [`vary`]: secondary keys (4.1); several variants of one URL are stored
//!   side by side (the first under the URL's key, the others under keys
//!   derived from it and their `Vary` values); field values are compared
//!   byte for byte after joining lines and trimming whitespace; absent
//!   matches only absent; `Accept-Language` by preference, and a stored
//!   `Content-Language` that is a request's first choice serves it.
//! - [`validation`]: conditional requests with the stored `ETag` and
//!   `Last-Modified`, `304` selection and header update (4.3), `304`
//!   answers to the client's own `If-None-Match`/`If-Modified-Since`.
//! - [`invalidation`]: unsafe methods (4.4).
//! - [`host`]: the one host a request is for (RFC 9112 3.2); a request
//!   whose host is ambiguous is refused with `400`.
//!
//! `CDN-Cache-Control` (RFC 9213) and `Surrogate-Control`, when listed with
//! [`Rfc9111::targeted_field`], take precedence over `Cache-Control`.
//! Targeted fields are RFC 8941 dictionaries, parsed with the `sfv` crate
//! and ignored whole when invalid (`Surrogate-Control` keeps
//! `Cache-Control`'s syntax). `CDN-Cache-Control` is passed on to the
//! client (it is meant for every CDN in a chain); the others are removed. Every response
//! carries `Cache-Status` (RFC 9211); hop-by-hop fields, and those
//! `Connection` names, are never stored.
//!
//! Known gaps: several ranges get the whole `200` (no
//! `multipart/byteranges`); interim `1xx` responses are not passed on
//! (hyper's server cannot send them; they are never stored); a `304`
//! updates only the variant it was asked for; `max-stale` can only reach stale responses that are still kept
//! (those with validators, for [`Rfc9111::keep_stale`], and those inside
//! their RFC 5861 windows); the request directive `no-transform` and the response directive
//! `no-transform` have nothing to act on (the cache never transforms).

use std::time::Duration;

use http::HeaderMap;
use http::header::HeaderName;

pub mod connection;
pub mod date;
pub mod directives;
pub mod freshness;
pub mod host;
pub mod invalidation;
pub mod range;
pub mod storage;
pub mod validation;
pub mod vary;

use directives::CacheControl;

const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// The configuration of standards mode.
///
/// ```
/// use std::time::Duration;
/// use hitbox_tower::rfc9111::Rfc9111;
///
/// let config = Rfc9111::new()
///     .targeted_field("cdn-cache-control")
///     .heuristic_fraction(0.05)
///     .heuristic_max(Duration::from_secs(600))
///     .max_body_size(1 << 20)
///     .refuse_set_cookie(true);
/// ```
#[derive(Debug, Clone)]
pub struct Rfc9111 {
    pub(crate) heuristic_fraction: f64,
    pub(crate) heuristic_max: Duration,
    pub(crate) targeted: Vec<HeaderName>,
    pub(crate) keep_stale: Duration,
    pub(crate) max_body_size: usize,
    pub(crate) key_fields: Vec<HeaderName>,
    pub(crate) refuse_set_cookie: bool,
    pub(crate) stale_if_disconnected: Duration,
    pub(crate) private: bool,
}

/// How long a stale response may stand in for an origin that cannot be
/// reached, by default: short, as Varnish's default grace is.
pub const DEFAULT_STALE_IF_DISCONNECTED: Duration = Duration::from_secs(10);

impl Default for Rfc9111 {
    fn default() -> Self {
        Rfc9111::new()
    }
}

impl Rfc9111 {
    /// Heuristic freshness of 10% of the time since `Last-Modified`, capped
    /// at a day; no targeted fields; stale entries kept an hour for
    /// revalidation; bodies up to [`crate::DEFAULT_MAX_BODY_SIZE`].
    pub fn new() -> Self {
        Rfc9111 {
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(86_400),
            targeted: Vec::new(),
            keep_stale: Duration::from_secs(3_600),
            max_body_size: crate::DEFAULT_MAX_BODY_SIZE,
            key_fields: Vec::new(),
            refuse_set_cookie: false,
            stale_if_disconnected: DEFAULT_STALE_IF_DISCONNECTED,
            private: false,
        }
    }

    /// A private cache (RFC 9111 section 1) instead of a shared one: the
    /// cache of one client, such as a layer or middleware in front of an
    /// HTTP client. `Cache-Control: private` responses may be stored (and
    /// the fields a qualified `private` names kept); `s-maxage` and
    /// `proxy-revalidate`, which speak to shared caches, are ignored; and a
    /// request's `Authorization` or `Cookie` no longer keeps its response
    /// out of the cache.
    ///
    /// A client that sends requests for several users with one cache still
    /// never serves one user's response to another: in this mode the
    /// `Authorization` and `Cookie` fields are part of every key (as a
    /// digest, never in the clear), so responses are only shared between
    /// requests with the same credentials.
    ///
    /// ```
    /// use hitbox_backend::{Cache, MemoryBackend};
    /// use hitbox_tower::{CacheLayer, rfc9111::Rfc9111};
    ///
    /// let layer = CacheLayer::builder(Cache::new(MemoryBackend::new()))
    ///     .rfc9111(Rfc9111::new().private_cache(true))
    ///     .build();
    /// ```
    pub fn private_cache(mut self, private: bool) -> Self {
        self.private = private;
        self
    }

    /// Serve stale when disconnected (RFC 9111 section 4.2.4): when the
    /// origin cannot be reached (the service the layer wraps returns an
    /// error: connection refused, closed or reset, a timeout layered
    /// inside), a stored response stale for at most `grace` is served in
    /// place of the error, with `Cache-Status: …; fwd=stale; ttl=-N;
    /// detail=stale-if-disconnected`. A response that forbids serving it
    /// stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`, an
    /// unqualified `no-cache`) gets `504 Gateway Timeout` instead. Stale
    /// responses are kept at least this long. A `5xx` answer is not a
    /// disconnection: only `stale-if-error` (RFC 5861) covers it. Default
    /// [`DEFAULT_STALE_IF_DISCONNECTED`]; zero turns it off.
    pub fn stale_if_disconnected(mut self, grace: Duration) -> Self {
        self.stale_if_disconnected = grace;
        self
    }

    /// The fraction of the time since `Last-Modified` a response without
    /// explicit freshness is fresh for (zero turns heuristics off).
    pub fn heuristic_fraction(mut self, fraction: f64) -> Self {
        self.heuristic_fraction = fraction.max(0.0);
        self
    }

    /// The longest heuristic freshness.
    pub fn heuristic_max(mut self, max: Duration) -> Self {
        self.heuristic_max = max;
        self
    }

    /// Adds a targeted cache-control field (RFC 9213) this cache obeys,
    /// such as `cdn-cache-control` or `surrogate-control`. Fields are tried
    /// in the order added; the first present and valid one replaces
    /// `Cache-Control` for this cache. All but `CDN-Cache-Control` are
    /// removed from the responses sent to clients. Feature
    /// `targeted-fields` (RFC 8941 parsing, through `sfv`).
    #[cfg(feature = "targeted-fields")]
    pub fn targeted_field(mut self, name: &str) -> Self {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            self.targeted.push(name);
        }
        self
    }

    /// How long a stale response with validators is kept to be revalidated
    /// (its stale windows count on top).
    pub fn keep_stale(mut self, duration: Duration) -> Self {
        self.keep_stale = duration;
        self
    }

    /// Responses with larger bodies are passed through, not stored.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// With `true`, responses that carry `Set-Cookie`, or fields a
    /// qualified `no-cache` or `private` names, are not stored at all. By
    /// default they are stored without those fields: the client whose
    /// request reached the origin receives them, a response served from the
    /// cache never does. Either way no client ever sees a cookie set for
    /// another.
    pub fn refuse_set_cookie(mut self, refuse: bool) -> Self {
        self.refuse_set_cookie = refuse;
        self
    }

    /// Makes a request field part of every key, as if every response
    /// varied on it: requests that differ in it never share a stored
    /// response. For fields a trusted front end sets and the origin reads,
    /// such as `X-Forwarded-Proto` behind a proxy that trusts its clients'
    /// forwarding headers. Values are compared byte for byte, after the
    /// whitespace folding `Vary` does.
    pub fn key_field(mut self, name: &str) -> Self {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            self.key_fields.push(name);
        }
        self
    }

    /// The cache control this cache obeys for a response: the first
    /// targeted field that is present, valid, and holds a directive this
    /// cache understands, else `Cache-Control`. Targeted fields are RFC
    /// 8941 dictionaries ([`CacheControl::from_structured`]), ignored whole
    /// when invalid; `Surrogate-Control`, which predates RFC 9213, has
    /// `Cache-Control`'s syntax.
    pub fn response_cache_control(&self, headers: &HeaderMap) -> CacheControl {
        for name in &self.targeted {
            if !headers.contains_key(name) {
                continue;
            }
            let cc = if name == SURROGATE_CONTROL {
                Some(CacheControl::from_headers(headers, name.as_str()))
            } else {
                structured(headers, name.as_str())
            };
            if let Some(cc) = cc.filter(|cc| !cc.is_empty()) {
                return self.for_this_cache(cc);
            }
        }
        self.for_this_cache(CacheControl::from_headers(headers, "cache-control"))
    }

    /// What a private cache does not obey: the directives that speak to
    /// shared caches only (RFC 9111 sections 5.2.2.7, 5.2.2.8, 5.2.2.10).
    fn for_this_cache(&self, mut cc: CacheControl) -> CacheControl {
        if self.private {
            cc.private = None;
            cc.s_maxage = None;
            cc.proxy_revalidate = false;
        }
        cc
    }

    /// Removes the targeted fields meant for this cache alone before a
    /// response reaches a client. `CDN-Cache-Control` is passed on: it is
    /// meant for every CDN in a chain (RFC 9213 section 2.3), so one behind
    /// this cache obeys it too.
    pub fn strip_targeted(&self, headers: &mut HeaderMap) {
        for name in &self.targeted {
            if name != CDN_CACHE_CONTROL {
                headers.remove(name);
            }
        }
    }
}

/// A targeted field read as an RFC 8941 dictionary. Without the feature no
/// field can be added, so this is never reached.
#[cfg(feature = "targeted-fields")]
fn structured(headers: &HeaderMap, name: &str) -> Option<CacheControl> {
    CacheControl::from_structured(headers, name)
}

#[cfg(not(feature = "targeted-fields"))]
fn structured(_: &HeaderMap, _: &str) -> Option<CacheControl> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    #[cfg(feature = "targeted-fields")]
    fn a_valid_targeted_field_replaces_cache_control() {
        let config = Rfc9111::new()
            .targeted_field("cdn-cache-control")
            .targeted_field("surrogate-control");
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        headers.insert("surrogate-control", HeaderValue::from_static("max-age=30"));
        assert_eq!(
            config.response_cache_control(&headers).max_age,
            Some(directives::Delta::Secs(30))
        );
        headers.insert("cdn-cache-control", HeaderValue::from_static("max-age=60"));
        assert_eq!(
            config.response_cache_control(&headers).max_age,
            Some(directives::Delta::Secs(60))
        );
        // An invalid targeted field is ignored.
        for invalid in ["%%%", "max-age=\"60\"", "max-age=60, no-store=1"] {
            headers.insert("cdn-cache-control", HeaderValue::from_str(invalid).unwrap());
            assert_eq!(
                config.response_cache_control(&headers).max_age,
                Some(directives::Delta::Secs(30)),
                "{invalid}"
            );
        }
        // CDN-Cache-Control goes on to the client; Surrogate-Control does not.
        config.strip_targeted(&mut headers);
        assert_eq!(headers.len(), 2);
        assert!(headers.contains_key("cdn-cache-control"));
        headers.remove("cdn-cache-control");
        assert!(!Rfc9111::new().response_cache_control(&headers).is_empty());
    }
}
