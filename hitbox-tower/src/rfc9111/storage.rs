//! Whether a response may be stored (RFC 9111 section 3), by a shared cache.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};

use super::directives::CacheControl;

/// Status codes that are heuristically cacheable (RFC 9110 section 15.1):
/// they may be stored without explicit freshness information.
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Final status codes whose semantics this cache implements (those RFC 9110
/// defines, and `429`, `431` and `451`): what `must-understand` asks about
/// (RFC 9111 section 5.2.2.3). A response with `must-understand` and
/// another status is not stored, whatever else it says; with one of these,
/// its `no-store` is overridden. `206` is left out (a part is stored as
/// what it is, not on `must-understand`'s word) and so is `304` (it
/// updates a stored response).
pub fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 429 | 431 | 451 | 500..=505
    )
}

/// Whether a status is final and stands for a whole response: every final
/// status but `206` (a part) and `304` (which updates a stored response).
pub fn final_whole(status: StatusCode) -> bool {
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
    /// The request carried credentials (`Cookie` or `Authorization`) and
    /// the response has no explicit freshness (`max-age`, `s-maxage`,
    /// `Expires`): it is never stored on a guess from `Last-Modified`.
    Credentials,
    /// The response carries fields meant for one client (`Set-Cookie`, or
    /// fields a qualified `no-cache` or `private` names), and the cache is
    /// configured to refuse such responses rather than store them without
    /// those fields ([`Rfc9111::refuse_set_cookie`](super::Rfc9111::refuse_set_cookie)).
    PersonalFields,
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
            NotStorable::Credentials => "credentials",
            NotStorable::PersonalFields => "personal-fields",
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
    if !final_whole(status) {
        return Err(NotStorable::Status);
    }
    // must-understand: a status this cache does not understand is not
    // stored (`no-store` applies, or would have); one it understands
    // overrides `no-store`.
    if response_cc.must_understand && !understood(status) {
        return Err(NotStorable::Status);
    }
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
    let explicit_lifetime = response_cc.max_age.is_some()
        || response_cc.s_maxage.is_some()
        || response_headers.contains_key(header::EXPIRES);
    // A response to one user's credentials is shared only when the origin
    // said for how long: a guess from `Last-Modified` would also store the
    // personal page an origin serves for `/account/profile.css` (web cache
    // deception).
    let credentials =
        request_headers.contains_key(header::AUTHORIZATION) || request_headers.contains_key(header::COOKIE);
    if credentials && !explicit_lifetime {
        return Err(NotStorable::Credentials);
    }
    if !(explicit_lifetime || response_cc.public || heuristically_cacheable(status)) {
        return Err(NotStorable::NoFreshness);
    }
    Ok(())
}

/// The fields of a response meant for the one client whose request
/// reached the origin: every `Set-Cookie`, and the fields a qualified
/// `no-cache` or `private` names (RFC 9111 5.2.2.4 and 5.2.2.7).
fn personal_names<'a>(
    headers: &'a HeaderMap,
    response_cc: &'a CacheControl,
) -> impl Iterator<Item = &'a HeaderName> {
    std::iter::once(&header::SET_COOKIE)
        .chain(response_cc.no_cache.iter().flatten())
        .chain(response_cc.private.iter().flatten())
        .filter(|name| headers.contains_key(*name))
}

/// Whether a response carries fields meant for one client only.
pub fn has_personal_fields(headers: &HeaderMap, response_cc: &CacheControl) -> bool {
    personal_names(headers, response_cc).next().is_some()
}

/// Removes the fields meant for one client from a response that is being
/// stored, and returns them: the client whose request went to the origin
/// gets them, a response served from the cache never does (as Apache
/// httpd's cache does with `Set-Cookie`).
pub fn take_personal_fields(headers: &mut HeaderMap, response_cc: &CacheControl) -> HeaderMap {
    let names: Vec<HeaderName> = personal_names(headers, response_cc).cloned().collect();
    let mut taken = HeaderMap::new();
    for name in names {
        if let header::Entry::Occupied(entry) = headers.entry(&name) {
            let (name, values) = entry.remove_entry_mult();
            for value in values {
                taken.append(name.clone(), value);
            }
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn personal_fields_are_taken_out_whole() {
        let mut headers = HeaderMap::new();
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        headers.append("x-user", HeaderValue::from_static("alice"));
        headers.append("x-kept", HeaderValue::from_static("1"));
        let cc = CacheControl::parse("max-age=60, private=\"x-user\", no-cache=\"x-absent\"");
        assert!(has_personal_fields(&headers, &cc));
        let taken = take_personal_fields(&mut headers, &cc);
        assert_eq!(taken.get_all("set-cookie").iter().count(), 2);
        assert_eq!(taken["x-user"], "alice");
        assert_eq!(headers.len(), 1);
        assert!(!has_personal_fields(&headers, &cc));
    }

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
        // Each allows sharing; credentials also need explicit freshness.
        for allowing in ["public, max-age=5", "s-maxage=5", "must-revalidate, max-age=5"] {
            assert_eq!(
                check(200, &auth, &[("cache-control", allowing)]),
                Ok(()),
                "{allowing}"
            );
        }
        assert_eq!(check(200, &[], &[("vary", "*")]), Err(NotStorable::VaryStar));
        // Credentials need explicit freshness: no heuristics, and `public`
        // alone says nothing of how long.
        let modified = [("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")];
        assert_eq!(check(200, &[], &modified), Ok(()));
        for credentials in [("cookie", "session=alice"), ("authorization", "Bearer t")] {
            // (`Authorization` without `public` is refused before that.)
            assert!(matches!(
                check(200, &[credentials], &modified),
                Err(NotStorable::Credentials | NotStorable::Authorization)
            ));
            assert_eq!(
                check(200, &[credentials], &[("cache-control", "public")]),
                Err(NotStorable::Credentials)
            );
            assert_eq!(
                check(200, &[credentials], &[("cache-control", "public, max-age=5")]),
                Ok(())
            );
            assert_eq!(
                check(
                    200,
                    &[credentials],
                    &[("expires", "Sun, 06 Nov 2094 08:49:37 GMT")]
                ),
                if credentials.0 == "cookie" {
                    Ok(())
                } else {
                    Err(NotStorable::Authorization)
                }
            );
        }
        assert_eq!(
            check(
                200,
                &[],
                &[("cache-control", "no-store, must-understand, max-age=5")]
            ),
            Ok(())
        );
        // A status this cache does not understand: not stored, with or
        // without `no-store`; without `must-understand` it is stored.
        for cc in [
            "no-store, must-understand, max-age=5",
            "must-understand, max-age=5",
        ] {
            assert_eq!(
                check(299, &[], &[("cache-control", cc)]),
                Err(NotStorable::Status)
            );
        }
        assert_eq!(check(299, &[], &[("cache-control", "max-age=5")]), Ok(()));
    }
}
