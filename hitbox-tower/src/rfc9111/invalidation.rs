//! Invalidation (RFC 9111 section 4.4): a successful unsafe request makes
//! the stored responses for its target, and for the `Location` and
//! `Content-Location` it names on the same origin, unusable.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri};

/// Whether a method is unsafe (RFC 9110 section 9.2.1).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The targets, as `(host, path-and-query)`, whose stored responses an
/// exchange invalidates: none unless the method is unsafe and the status
/// is `2xx` or `3xx`; otherwise the request's own target and the URIs in
/// `Location` and `Content-Location` that resolve to the same host.
pub fn targets(
    method: &Method,
    status: StatusCode,
    host: &str,
    path: &str,
    response: &HeaderMap,
) -> Vec<(String, String)> {
    if !is_unsafe(method) || !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut out = vec![(host.to_owned(), path.to_owned())];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = response.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(target) = resolve(host, path, value.trim())
            && !out.contains(&target)
        {
            out.push(target);
        }
    }
    out
}

/// Resolves a URI reference against the request target; `None` for other
/// hosts (which must not be invalidated, to keep one origin from purging
/// another's responses).
pub(crate) fn resolve(host: &str, path: &str, reference: &str) -> Option<(String, String)> {
    if reference.starts_with("//") || reference.contains("://") {
        let uri: Uri = reference.parse().ok()?;
        let authority = uri.authority()?.as_str();
        if !authority.eq_ignore_ascii_case(host) {
            return None;
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        return Some((host.to_owned(), path.to_owned()));
    }
    if reference.starts_with('/') {
        return Some((host.to_owned(), reference.to_owned()));
    }
    // A relative path: replace the last segment of the request's path.
    let base = path.split('?').next().unwrap_or("/");
    let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
    Some((host.to_owned(), format!("{dir}{reference}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn unsafe_successes_invalidate_same_host_locations_only() {
        let mut headers = HeaderMap::new();
        headers.insert("location", HeaderValue::from_static("/items/7"));
        headers.insert(
            "content-location",
            HeaderValue::from_static("http://evil.example/items"),
        );
        let got = targets(&Method::POST, StatusCode::CREATED, "a.test", "/items", &headers);
        assert_eq!(
            got,
            vec![
                ("a.test".to_owned(), "/items".to_owned()),
                ("a.test".to_owned(), "/items/7".to_owned())
            ]
        );
        assert!(targets(&Method::GET, StatusCode::OK, "a.test", "/items", &headers).is_empty());
        assert!(targets(&Method::DELETE, StatusCode::NOT_FOUND, "a.test", "/x", &headers).is_empty());
        headers.insert("location", HeaderValue::from_static("http://A.test/y?q=1"));
        headers.insert("content-location", HeaderValue::from_static("z"));
        let got = targets(&Method::PUT, StatusCode::NO_CONTENT, "a.test", "/dir/x", &headers);
        assert_eq!(got[1], ("a.test".to_owned(), "/y?q=1".to_owned()));
        assert_eq!(got[2], ("a.test".to_owned(), "/dir/z".to_owned()));
    }
}
