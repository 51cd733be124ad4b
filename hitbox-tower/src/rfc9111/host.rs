//! Which host a request is for (RFC 9112 3.2), refusing every request
//! whose host a cache and an origin could read differently.
//!
//! A cache keys a response by the host it was asked for; if the origin can
//! read another host from the same request, one host's response can be
//! stored under another's key. So the host must be unambiguous: one `Host`
//! field, a valid `host[:port]` without user information, and, for an
//! absolute-form target (`GET http://a.example/ HTTP/1.1`), naming the
//! same host and port as the target. Anything else gets `400`, as RFC 9112
//! asks of a server for repeated or invalid `Host` fields.

use http::Uri;
use http::header::{self, HeaderMap};
use http::uri::{Authority, Scheme};

/// Why a request's host is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// More than one `Host` field, or a `Host` at odds with the
    /// absolute-form target.
    Ambiguous,
    /// A `Host` that is not a `host[:port]` (a path, user information,
    /// bytes no authority holds, an empty host).
    Invalid,
}

impl HostError {
    /// A short name, for `Cache-Status` details and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HostError::Ambiguous => "ambiguous-host",
            HostError::Invalid => "invalid-host",
        }
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostError::Ambiguous => "the request names more than one host",
            HostError::Invalid => "the Host field is not host[:port]",
        })
    }
}

impl std::error::Error for HostError {}

/// The port an authority names, or the scheme's default.
fn port_or_default(authority: &Authority, scheme: Option<&Scheme>) -> u16 {
    authority.port_u16().unwrap_or(match scheme {
        Some(scheme) if *scheme == Scheme::HTTPS => 443,
        _ => 80,
    })
}

/// The host a request is for, lower-cased, as a cache must key it and as it
/// must be forwarded: its one `Host` field; else the target's authority
/// (host and port, without user information); else empty (an HTTP/1.0
/// request with neither).
///
/// ```
/// use hitbox_tower::rfc9111::host::{HostError, request_host};
/// use http::{HeaderMap, HeaderValue, Uri};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("host", HeaderValue::from_static("Shop.example"));
/// assert_eq!(request_host(&headers, &Uri::from_static("/cart")), Ok("shop.example".into()));
/// let other = Uri::from_static("http://evil.example/cart");
/// assert_eq!(request_host(&headers, &other), Err(HostError::Ambiguous));
/// ```
pub fn request_host(headers: &HeaderMap, uri: &Uri) -> Result<String, HostError> {
    let mut fields = headers.get_all(header::HOST).iter();
    let field = fields.next().filter(|value| !value.is_empty());
    if fields.next().is_some() {
        return Err(HostError::Ambiguous);
    }
    let target = uri.authority();
    let Some(field) = field else {
        return Ok(target.map_or_else(String::new, |authority| {
            let host = authority.host().to_ascii_lowercase();
            match authority.port_u16() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        }));
    };
    let authority = Authority::try_from(field.as_bytes()).map_err(|_| HostError::Invalid)?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(HostError::Invalid);
    }
    if let Some(target) = target {
        let scheme = uri.scheme();
        if !target.host().eq_ignore_ascii_case(authority.host())
            || port_or_default(target, scheme) != port_or_default(&authority, scheme)
        {
            return Err(HostError::Ambiguous);
        }
    }
    Ok(authority.as_str().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn host_of(uri: &str, hosts: &[&[u8]]) -> Result<String, HostError> {
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(header::HOST, HeaderValue::from_bytes(host).unwrap());
        }
        request_host(&headers, &uri.parse().unwrap())
    }

    #[test]
    fn one_unambiguous_host_or_an_error() {
        use HostError::{Ambiguous, Invalid};
        assert_eq!(
            host_of("/x", &[b"Example.COM:8080"]),
            Ok("example.com:8080".into())
        );
        assert_eq!(host_of("/x", &[]), Ok(String::new()));
        assert_eq!(host_of("/x", &[b""]), Ok(String::new()));
        assert_eq!(host_of("http://A.example/x", &[]), Ok("a.example".into()));
        assert_eq!(
            host_of("http://u:p@a.example:81/x", &[]),
            Ok("a.example:81".into())
        );
        // Repeated, even when equal.
        assert_eq!(host_of("/x", &[b"a.example", b"a.example"]), Err(Ambiguous));
        // At odds with the absolute-form target; default ports agree.
        assert_eq!(host_of("http://a.example/x", &[b"b.example"]), Err(Ambiguous));
        assert_eq!(
            host_of("http://a.example/x", &[b"a.example:8080"]),
            Err(Ambiguous)
        );
        assert_eq!(
            host_of("http://a.example/x", &[b"A.example:80"]),
            Ok("a.example:80".into())
        );
        assert_eq!(
            host_of("https://a.example/x", &[b"a.example:443"]),
            Ok("a.example:443".into())
        );
        assert_eq!(host_of("https://a.example/x", &[b"a.example:80"]), Err(Ambiguous));
        // Not an authority, or with user information, or no host.
        assert_eq!(host_of("/x", &[b"a.example/evil"]), Err(Invalid));
        assert_eq!(host_of("/x", &[b"user@a.example"]), Err(Invalid));
        assert_eq!(host_of("/x", &[b"a b"]), Err(Invalid));
        assert_eq!(host_of("/x", &[b":80"]), Err(Invalid));
        assert_eq!(host_of("/x", &[b"caf\xc3\xa9.example"]), Err(Invalid));
    }
}
