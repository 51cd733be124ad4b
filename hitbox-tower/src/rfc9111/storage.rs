//! Whether a response may be stored (RFC 9111 section 3), by a shared cache.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use super::directives::CacheControl;

/// Status codes that are heuristically cacheable (RFC 9110 section 15.1):
/// they may be stored without explicit freshness information.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Status codes whose semantics this cache implements well enough to store
/// them: every final status except `206` (ranges are not assembled) and
/// `304` (which updates a stored response instead).
pub fn understood(status: StatusCode) -> bool {
    let code = status.as_u16();
    (200..600).contains(&code) && code != 206 && code != 304
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// The request method is not cacheable here (only `GET`).
    Method,
    /// The status is not final or not understood (`206`, `304`, `1xx`).
    Status,
    /// `no-store` in the request or the response.
    NoStore,
    /// `private`: a shared cache must not store it.
    Private,
    /// The request carried `Authorization` and the response does not allow
    /// sharing it (`public`, `s-maxage` or `must-revalidate`).
    Authorization,
    /// `Vary: *`: no later request can ever match.
    VaryStar,
    /// No explicit freshness and a status that is not heuristically
    /// cacheable.
    NoFreshness,
}

impl NotStorable {
    /// A short name, for `Cache-Status` details and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::Status => "status",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => "authorization",
            NotStorable::VaryStar => "vary-star",
            NotStorable::NoFreshness => "no-freshness",
        }
    }
}

/// The storage rule of RFC 9111 section 3 for a shared cache. `response_cc`
/// is the response's effective cache control (a targeted field such as
/// `CDN-Cache-Control` when one applies).
pub fn check_storable(
    method: &Method,
    request_headers: &HeaderMap,
    request_cc: &CacheControl,
    status: StatusCode,
    response_headers: &HeaderMap,
    response_cc: &CacheControl,
) -> Result<(), NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    if !understood(status) {
        return Err(NotStorable::Status);
    }
    // must-understand lets a cache that understands the status ignore
    // no-store; every status reaching here is understood.
    if request_cc.no_store || (response_cc.no_store && !response_cc.must_understand) {
        return Err(NotStorable::NoStore);
    }
    // A qualified `private="field"` only keeps those fields out of storage.
    if response_cc.private.as_ref().is_some_and(Vec::is_empty) {
        return Err(NotStorable::Private);
    }
    if request_headers.contains_key(header::AUTHORIZATION)
        && !(response_cc.public || response_cc.s_maxage.is_some() || response_cc.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    if super::vary::vary_names(response_headers).is_none() {
        return Err(NotStorable::VaryStar);
    }
    let explicit = response_cc.public
        || response_cc.max_age.is_some()
        || response_cc.s_maxage.is_some()
        || response_headers.contains_key(header::EXPIRES);
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStorable::NoFreshness);
    }
    Ok(())
}

/// Removes what must not be stored although the response is: the fields a
/// qualified `no-cache` or `private` names (the cache would have to
/// revalidate before sending them, so it never keeps them).
pub fn strip_unstorable_fields(headers: &mut HeaderMap, response_cc: &CacheControl) {
    for list in [&response_cc.no_cache, &response_cc.private]
        .into_iter()
        .flatten()
    {
        for name in list {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(status: u16, request: &[(&str, &str)], response: &[(&str, &str)]) -> Result<(), NotStorable> {
        let mut req = HeaderMap::new();
        for (n, v) in request {
            req.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut resp = HeaderMap::new();
        for (n, v) in response {
            resp.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let req_cc = CacheControl::from_headers(&req, "cache-control");
        let resp_cc = CacheControl::from_headers(&resp, "cache-control");
        check_storable(
            &Method::GET,
            &req,
            &req_cc,
            StatusCode::from_u16(status).unwrap(),
            &resp,
            &resp_cc,
        )
    }

    #[test]
    fn default_cacheable_statuses_including_308_are_stored_without_freshness() {
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(check(status, &[], &[]), Ok(()), "{status}");
        }
        assert_eq!(check(302, &[], &[]), Err(NotStorable::NoFreshness));
        assert_eq!(check(302, &[], &[("cache-control", "max-age=5")]), Ok(()));
        assert_eq!(check(500, &[], &[("expires", "0")]), Ok(()));
        assert_eq!(
            check(206, &[], &[("cache-control", "max-age=5")]),
            Err(NotStorable::Status)
        );
        assert_eq!(check(304, &[], &[]), Err(NotStorable::Status));
    }

    #[test]
    fn no_store_private_and_authorization() {
        assert_eq!(
            check(200, &[("cache-control", "no-store")], &[]),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            check(200, &[], &[("cache-control", "no-store")]),
            Err(NotStorable::NoStore)
        );
        assert_eq!(
            check(200, &[], &[("cache-control", "private")]),
            Err(NotStorable::Private)
        );
        assert_eq!(
            check(200, &[], &[("cache-control", "private=\"x-user\"")]),
            Ok(())
        );
        let auth = [("authorization", "Bearer t")];
        assert_eq!(
            check(200, &auth, &[("cache-control", "max-age=5")]),
            Err(NotStorable::Authorization)
        );
        for allowing in ["public", "s-maxage=5", "must-revalidate"] {
            assert_eq!(
                check(200, &auth, &[("cache-control", allowing)]),
                Ok(()),
                "{allowing}"
            );
        }
        assert_eq!(check(200, &[], &[("vary", "*")]), Err(NotStorable::VaryStar));
        assert_eq!(
            check(
                200,
                &[],
                &[("cache-control", "no-store, must-understand, max-age=5")]
            ),
            Ok(())
        );
    }
}
