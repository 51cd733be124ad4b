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
use http::header::{self, HeaderMap, HeaderValue};
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

/// A `Host` value already in normal form (what the key extractors and
/// [`request_host`] would make of it):
/// a lower-case name of letters, digits, `-` and `.`, then perhaps a port
/// written without leading zeros. Returns the name and the port.
pub(crate) fn plain_host(value: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (host, port) = match value.iter().position(|&b| b == b':') {
        Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
        None => (value, None),
    };
    let name_byte = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.';
    if host.is_empty() || !host.iter().all(name_byte) {
        return None;
    }
    let port = match port {
        None => None,
        Some(digits) => {
            if digits.is_empty()
                || digits.len() > 5
                || digits[0] == b'0'
                || !digits.iter().all(u8::is_ascii_digit)
            {
                return None;
            }
            let port = digits.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            Some(u16::try_from(port).ok()?)
        }
    };
    Some((host, port))
}

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
    host_value(headers, uri).map(|host| String::from_utf8_lossy(host.as_bytes()).into_owned())
}

/// [`request_host`] as a header value: the request's own `Host` value,
/// shared rather than copied, when it is already in normal form.
pub(crate) fn host_value(headers: &HeaderMap, uri: &Uri) -> Result<HeaderValue, HostError> {
    let mut fields = headers.get_all(header::HOST).iter();
    let field = fields.next().filter(|value| !value.is_empty());
    if fields.next().is_some() {
        return Err(HostError::Ambiguous);
    }
    let target = uri.authority();
    let lower =
        |text: &str| HeaderValue::from_str(&text.to_ascii_lowercase()).map_err(|_| HostError::Invalid);
    let Some(field) = field else {
        return match target {
            None => Ok(HeaderValue::from_static("")),
            // A target must name a host (`http://:0/` names none).
            Some(authority) if authority.host().is_empty() => Err(HostError::Invalid),
            Some(authority) => match authority.port_u16() {
                Some(port) => lower(&format!("{}:{port}", authority.host())),
                None => lower(authority.host()),
            },
        };
    };
    // The common case, without parsing: one `Host` already in normal form,
    // and an origin-form target.
    if target.is_none() && plain_host(field.as_bytes()).is_some() {
        return Ok(field.clone());
    }
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
    lower(authority.as_str())
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
    fn a_target_authority_without_a_host_is_invalid() {
        assert_eq!(host_of("http://:0/", &[]), Err(HostError::Invalid));
        assert_eq!(
            host_of("http://Example.com:8080/", &[]).as_deref(),
            Ok("example.com:8080")
        );
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
