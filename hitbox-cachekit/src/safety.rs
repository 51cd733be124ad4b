//! URL safety: which base URLs the backend will send an API key to.
//!
//! The rules, from the protocol:
//!
//! - the URL must parse and use `https`;
//! - a host that is an IP literal is refused when it is loopback, private,
//!   link-local, unspecified, in `0.0.0.0/8`, in IPv6 `fe80::/10` or
//!   `fc00::/7`, or an IPv4-mapped IPv6 address of any of those, even when
//!   custom hosts are allowed;
//! - without [`UrlGuard::allow_custom_host`], the host must be one of the
//!   two official hosts (production and staging).
//!
//! The error never names the allowed hosts. Beyond the protocol, a base
//! URL that carries credentials, a query, a fragment or a path is refused:
//! the backend builds every request path itself.
//!
//! [`UrlGuard::allow_insecure_loopback_for_tests`] is a switch for tests and
//! local development only: it lets `http://127.0.0.1:PORT` (or `[::1]`)
//! through, for the loopback stand-in of the service. Nothing else changes
//! with it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

use crate::error::CachekitError;

/// The production API.
pub const DEFAULT_API_URL: &str = "https://api.cachekit.io";

/// The official hosts, production and staging.
const OFFICIAL_HOSTS: [&str; 2] = ["api.cachekit.io", "api.staging.cachekit.io"];

/// The switches of the URL safety rules. The default is the strict policy.
/// [`CachekitConfig::allow_custom_host`](crate::CachekitConfig::allow_custom_host)
/// sets them on a configuration; [`check_base_url`] applies them.
///
/// ```
/// use hitbox_cachekit::{UrlGuard, check_base_url};
///
/// let proxied = UrlGuard { allow_custom_host: true, ..UrlGuard::default() };
/// assert!(check_base_url("https://cache.internal.example", proxied).is_ok());
/// assert!(check_base_url("https://cache.internal.example", UrlGuard::default()).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlGuard {
    /// Accept any `https` host name or public IP, not only the official
    /// hosts (for a self-hosted or proxied deployment).
    pub allow_custom_host: bool,
    /// **For tests and local development only**: accept plain `http` to a
    /// loopback IP literal (`127.0.0.0/8`, `::1`), as the loopback stand-in
    /// of the service in this crate's tests needs. Never set in production:
    /// the API key would travel in clear text.
    pub allow_insecure_loopback_for_tests: bool,
}

/// Checks `url` against `policy`; returns the parsed URL when it is safe.
///
/// ```
/// use hitbox_cachekit::{UrlGuard, check_base_url};
/// assert!(check_base_url("https://api.cachekit.io", UrlGuard::default()).is_ok());
/// assert!(check_base_url("http://api.cachekit.io", UrlGuard::default()).is_err());
/// assert!(check_base_url("https://169.254.169.254", UrlGuard { allow_custom_host: true, ..Default::default() }).is_err());
/// ```
pub fn check_base_url(url: &str, policy: UrlGuard) -> Result<Url, CachekitError> {
    let refuse = |reason| Err(CachekitError::InvalidUrl { reason });
    let Ok(parsed) = Url::parse(url) else {
        return refuse("the URL does not parse");
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return refuse("the URL must not carry credentials");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return refuse("the URL must not carry a query or a fragment");
    }
    if !matches!(parsed.path(), "" | "/") {
        return refuse("the URL must not carry a path");
    }
    let Some(host) = parsed.host_str() else {
        return refuse("the URL has no host");
    };
    let ip = parse_ip_literal(host);
    if parsed.scheme() == "http" && policy.allow_insecure_loopback_for_tests {
        return match ip {
            Some(ip) if is_loopback(ip) => Ok(parsed),
            _ => refuse("plain http is only accepted for a loopback address in tests"),
        };
    }
    if parsed.scheme() != "https" {
        return refuse("the URL must use https");
    }
    if let Some(ip) = ip {
        if is_forbidden_ip(ip) {
            return refuse("the host is a loopback, private, link-local or unspecified address");
        }
        if !policy.allow_custom_host {
            return refuse("the host is not an official cachekit host");
        }
        return Ok(parsed);
    }
    if !policy.allow_custom_host && !OFFICIAL_HOSTS.contains(&host) {
        return refuse("the host is not an official cachekit host");
    }
    Ok(parsed)
}

/// The IP address of an IP-literal host (`host_str` keeps IPv6 brackets).
fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Whether an IP literal is refused whatever the switches.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified() || ip.octets()[0] == 0
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || (first & 0xffc0) == 0xfe80 // fe80::/10, link-local
        || (first & 0xfe00) == 0xfc00 // fc00::/7, unique local
}
