//! Cache keys for HTTP requests: which parts of a request select the stored
//! response.
//!
//! Each type here is an [`Extractor`] over [`http::request::Parts`] that
//! appends named parts to a [`KeyBuilder`]. They chain with the core
//! [`Extractor::and`] and fall back with [`Extractor::or`]. The key encoding
//! of `hitbox-core` escapes every part, so two different requests never give
//! the same key through an accident of spelling (`?a=1&b=2` and
//! `?a=1%26b%3D2` are different keys).
//!
//! [`default_key`] is what a layer uses when told nothing else: method,
//! scheme and host, path, and the whole query, normalised (parameters sorted
//! and percent-decoded). A key that should also depend on who asks adds a
//! [`Header::sensitive`] part, which makes the stored key a digest so that
//! the credential never reaches a cache tier.
//!
//! ```
//! use hitbox_core::{CacheKey, Extractor};
//! use hitbox_tower::extract::{Constant, Header, Method, Path, Query};
//! use http::{Request, header::ACCEPT_LANGUAGE};
//!
//! // Per route: a constant route name, the path, two query parameters that
//! // change the answer (the others, like `utm_source`, do not) and the
//! // language the client asks for.
//! let extractor = Constant("route", "search")
//!     .and(Method)
//!     .and(Path)
//!     .and(Query::named(["q", "page"]))
//!     .and(Header::named(ACCEPT_LANGUAGE));
//!
//! let (parts, ()) = Request::get("/search?utm_source=mail&page=2&q=rust%20cache")
//!     .header(ACCEPT_LANGUAGE, "fr")
//!     .body(())
//!     .unwrap()
//!     .into_parts();
//! let mut key = CacheKey::builder("shop");
//! extractor.extract(&parts, &mut key);
//! assert_eq!(
//!     key.build().as_str(),
//!     "shop:v1:route=search:method=GET:path=/search:query.q=rust%20cache:query.page=2:header.accept-language=fr"
//! );
//! ```
//!
//! Part names used here: `method`, `scheme`, `host` (and `host.raw` for a
//! `Host` header that is not a valid authority), `path`, `param.<name>`,
//! `query.<name>` (and `query~<hex>` for a parameter name that is not UTF-8
//! once decoded), `header.<name>`. Avoid them for [`Constant`] parts.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use hitbox_core::{Extractor, ExtractorAnd, KeyBuilder};
use http::header::{HOST, HeaderName};
use http::request::Parts;
use http::uri::Authority;

use crate::path::PathPattern;
use crate::rfc9111::host::plain_host;

#[cfg(feature = "axum")]
pub use crate::matched_path::MatchedRoute;
/// The request method, as part `method`.
///
/// ```
/// use hitbox_core::{CacheKey, Extractor};
/// use hitbox_tower::extract::Method;
///
/// let (parts, ()) = http::Request::post("/orders").body(()).unwrap().into_parts();
/// let mut key = CacheKey::builder("api");
/// assert!(Method.extract(&parts, &mut key));
/// assert_eq!(key.build().as_str(), "api:v1:method=POST");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Method;

impl Extractor<Parts> for Method {
    fn extract(&self, parts: &Parts, key: &mut KeyBuilder) -> bool {
        key.push("method", Some(parts.method.as_str().as_bytes()));
        true
    }
}

/// The scheme and host, as parts `scheme` and `host`.
///
/// The scheme comes from the URI (absolute-form requests, HTTP/2, clients),
/// else it is `http`. The host comes from the URI's authority, else from the
/// `Host` header; it is lower-cased and the scheme's default port (80 for
/// `http` and `ws`, 443 for `https` and `wss`) is dropped, so
/// `Example.COM:80` and `example.com` give one key. A host that is absent is
/// recorded as absent; a `Host` header that is not a valid authority (or
/// that is repeated) is recorded as it is, under `host.raw`, so it can never
/// pass for a valid one.
///
/// ```
/// use hitbox_core::{CacheKey, Extractor};
/// use hitbox_tower::extract::SchemeHost;
///
/// let (parts, ()) = http::Request::get("/").header("host", "API.example.com:80").body(()).unwrap().into_parts();
/// let mut key = CacheKey::builder("api");
/// SchemeHost.extract(&parts, &mut key);
/// assert_eq!(key.build().as_str(), "api:v1:scheme=http:host=api.example.com");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SchemeHost;

impl Extractor<Parts> for SchemeHost {
    fn extract(&self, parts: &Parts, key: &mut KeyBuilder) -> bool {
        let scheme = parts.uri.scheme_str().map_or(Cow::Borrowed("http"), lower_case);
        key.push("scheme", Some(scheme.as_bytes()));
        let default_port = match &*scheme {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        };
        if let Some(authority) = parts.uri.authority() {
            let host = normalise_host(authority, default_port);
            key.push("host", Some(host.as_bytes()));
            return true;
        }
        let mut values = parts.headers.get_all(HOST).iter();
        let Some(first) = values.next() else {
            key.push("host", None);
            return true;
        };
        let repeated = values.next().is_some();
        if !repeated && let Some((host, port)) = plain_host(first.as_bytes()) {
            // Already in normal form, but for a default port to drop.
            let normal = match port {
                Some(port) if Some(port) == default_port => host,
                _ => first.as_bytes(),
            };
            key.push("host", Some(normal));
            return true;
        }
        let parsed = Authority::try_from(first.as_bytes())
            .ok()
            .filter(|authority| !repeated && !authority.as_str().contains('@'));
        match parsed {
            Some(authority) => {
                let host = normalise_host(&authority, default_port);
                key.push("host", Some(host.as_bytes()));
            }
            None => {
                for value in &parts.headers.get_all(HOST) {
                    key.push("host.raw", Some(value.as_bytes()));
                }
            }
        }
        true
    }
}

fn lower_case(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

fn normalise_host(authority: &Authority, default_port: Option<u16>) -> Cow<'_, str> {
    let host = lower_case(authority.host());
    match authority.port_u16() {
        Some(port) if Some(port) != default_port => Cow::Owned(format!("{host}:{port}")),
        _ => host,
    }
}

/// The path exactly as the client sent it (percent-encoding kept), as part
/// `path`. The query is not part of it; see [`Query`].
///
/// ```
/// use hitbox_core::{CacheKey, Extractor};
/// use hitbox_tower::extract::Path;
///
/// let (parts, ()) = http::Request::get("/a%20b/c?x=1").body(()).unwrap().into_parts();
/// let mut key = CacheKey::builder("api");
/// Path.extract(&parts, &mut key);
/// assert_eq!(key.build().as_str(), "api:v1:path=/a%2520b/c");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Path;

impl Extractor<Parts> for Path {
    fn extract(&self, parts: &Parts, key: &mut KeyBuilder) -> bool {
        key.push("path", Some(parts.uri.path().as_bytes()));
        true
    }
}

/// The named parameters a [`PathPattern`] captures, as parts
/// `param.<name>`, in the order of the pattern.
///
/// Values are kept as they appear in the path (percent-encoded). When the
/// path does not match the pattern nothing is appended and the extractor
/// returns `false`, so [`Extractor::or`] can fall back to, say, [`Path`].
///
/// ```
/// use hitbox_core::{CacheKey, Extractor};
/// use hitbox_tower::extract::{Path, PathParams};
/// use hitbox_tower::path::PathPattern;
///
/// let extractor = PathParams::new(PathPattern::new("/users/{id}")).or(Path);
/// let key = |uri: &str| {
///     let (parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
///     let mut key = CacheKey::builder("api");
///     extractor.extract(&parts, &mut key);
///     key.build().as_str().to_owned()
/// };
/// assert_eq!(key("/users/42"), "api:v1:param.id=42");
/// assert_eq!(key("/health"), "api:v1:path=/health");
/// ```
#[derive(Clone)]
pub struct PathParams {
    pattern: PathPattern,
    part_names: Arc<[Box<str>]>,
}

impl PathParams {
    /// Extracts the parameters of `pattern`.
    pub fn new(pattern: PathPattern) -> Self {
        let part_names = pattern
            .param_names()
            .map(|name| format!("param.{name}").into())
            .collect();
        PathParams { pattern, part_names }
    }
}

impl fmt::Debug for PathParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathParams").field(&self.pattern).finish()
    }
}

impl Extractor<Parts> for PathParams {
    fn extract(&self, parts: &Parts, key: &mut KeyBuilder) -> bool {
        let Some(params) = self.pattern.matches(parts.uri.path()) else {
            return false;
        };
        let mut appended = false;
        for (part, (_, value)) in self.part_names.iter().zip(params) {
            key.push(part, Some(value.as_bytes()));
            appended = true;
        }
        appended
    }
}

/// Query parameters, percent-decoded, as parts `query.<name>`.
///
/// - [`Query::named`] keeps only the listed parameters, in the order they
///   are listed (not the order of the request). A repeated parameter gives
///   one part per value, in the request's order; a missing one is recorded
///   as absent, which differs from present and empty (`?page=`). Always
///   returns `true` (when the list is not empty).
/// - [`Query::all`] keeps every parameter, sorted by name only, so
///   `?b=2&a=1` and `?a=1&b=2` give one key; the values of a repeated
///   parameter keep their order, since an origin may read `?id=1&id=2` as
///   a list that differs from `?id=2&id=1`. Returns `false` when the query
///   has no parameter.
///
/// Names and values are decoded as `application/x-www-form-urlencoded`
/// (`+` is a space, `%41` is `A`), so `a=%41` and `a=A` give one key. A
/// parameter without `=` (`?flag`) counts as present and empty.
///
/// Decoding keeps bytes (through `percent-encoding`) rather than strings,
/// which would replace invalid UTF-8 with `U+FFFD`: `?a=%FF` and `?a=%FE`
/// would then share a key.
///
/// ```
/// use hitbox_core::{CacheKey, Extractor};
/// use hitbox_tower::extract::Query;
///
/// let key = |extractor: &Query, uri: &str| {
///     let (parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
///     let mut key = CacheKey::builder("api");
///     extractor.extract(&parts, &mut key);
///     key.build().as_str().to_owned()
/// };
/// let all = Query::all();
/// assert_eq!(key(&all, "/?b=2&a=%31"), "api:v1:query.a=1:query.b=2");
/// assert_eq!(key(&all, "/?b=2&a=%31"), key(&all, "/?a=1&b=2"));
///
/// let page = Query::named(["page", "size"]);
/// assert_eq!(key(&page, "/?size=10&page=2&page=3&x=y"), "api:v1:query.page=2:query.page=3:query.size=10");
/// assert_eq!(key(&page, "/?page="), "api:v1:query.page=:query.size");
/// ```
#[derive(Clone)]
pub struct Query {
    kind: QueryKind,
}

#[derive(Clone)]
enum QueryKind {
    All,
    Named(Arc<[NamedParam]>),
}

struct NamedParam {
    name: Box<str>,
    part: Box<str>,
}

impl Query {
    /// Only the parameters in `names`, in that order.
    pub fn named<I>(names: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let names = names
            .into_iter()
            .map(|name| {
                let name = name.as_ref();
                NamedParam {
                    name: name.into(),
                    part: format!("query.{name}").into(),
                }
            })
            .collect();
        Query {
            kind: QueryKind::Named(names),
        }
    }

    /// Every parameter, sorted by name; a repeated one keeps the order of
    /// its values.
    pub fn all() -> Self {
        Query { kind: QueryKind::All }
    }
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            QueryKind::All => f.write_str("Query::all()"),
            QueryKind::Named(names) => f
                .debug_tuple("Query::named")
                .field(&names.iter().map(|n| &*n.name).collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl Extractor<Parts> for Query {
    fn extract(&self, parts: &Parts, key: &mut KeyBuilder) -> bool {
        let query = parts.uri.query().unwrap_or("");
        match &self.kind {
            QueryKind::Named(names) => {
                for wanted in names.iter() {
                    let mut found = false;
                    for (name, value) in query_pairs(query) {
                        if *name == *wanted.name.as_bytes() {
                            key.push(&wanted.part, Some(&value));
                            found = true;
                        }
                    }
                    if !found {
                        key.push(&wanted.part, None);
                    }
                }
                !names.is_empty()
            }
            QueryKind::All => {
                // Most queries are short and need no decoding: sort
                // borrowed pairs on the stack then.
                const ON_STACK: usize = 8;
                if !query.bytes().any(|b| b == b'%' || b == b'+') {
                    let mut pairs = [(&[][..], &[][..]); ON_STACK];
                    let mut count = 0;
                    for pair in raw_query_pairs(query) {
                        if count == ON_STACK {
                            count = usize::MAX;
                            break;
                        }
                        pairs[count] = pair;
                        count += 1;
                    }
                    if count != usize::MAX {
                        let pairs = &mut pairs[..count];
                        // Stable, by name only: repeated names keep order.
                        pairs.sort_by(|a, b| a.0.cmp(b.0));
                        for (name, value) in pairs.iter() {
                            // Undecoded, a name is part of a `str`: UTF-8.
                            key.push_prefixed("query.", name, Some(value));
                        }
                        return count > 0;
                    }
                }
                let mut pairs: Vec<_> = query_pairs(query).collect();
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, value) in &pairs {
                    push_query_part(key, name, value);
                }
                !pairs.is_empty()
            }
        }
    }
}

/// Appends one decoded parameter of [`Query::all`].
fn push_query_part(key: &mut KeyBuilder, name: &[u8], value: &[u8]) {
    if std::str::from_utf8(name).is_ok() {
        key.push_prefixed("query.", name, Some(value));
    } else {
        key.push_prefixed("query~", hex::encode(name).as_bytes(), Some(value));
    }
}

/// Splits a query into `(name, value)` pairs as they are written.
fn raw_query_pairs(query: &str) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .as_bytes()
        .split(|&b| b == b'&')
        .filter(|sequence| !sequence.is_empty())
        .map(|sequence| match sequence.iter().position(|&b| b == b'=') {
            Some(at) => (&sequence[..at], &sequence[at + 1..]),
            None => (sequence, &[][..]),
        })
}

/// Splits a query into decoded `(name, value)` pairs, the way
/// `form_urlencoded::parse` does, but keeping the decoded bytes as they are.
/// Borrows when a component holds no `+` or `%`.
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, [u8]>, Cow<'_, [u8]>)> {
    raw_query_pairs(query).map(|(name, value)| (decode_component(name), decode_component(value)))
}

/// Decodes one component: `+` is a space, then `%XX` escapes (through the
/// `percent-encoding` crate; a `%` not followed by two hex digits stays as
/// it is). Borrows when there is nothing to decode.
fn decode_component(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&b'+') {
        return percent_encoding::percent_decode(input).into();
    }
    let spaced: Vec<u8> = input.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    Cow::Owned(percent_encoding::percent_decode(&spaced).collect())
}

/// A request header, as part `header.<name>`, its value taken as bytes.
///
/// A repeated header gives one part per value, in order. An absent header
/// is recorded as absent, which differs from a present empty value. Always
/// returns `true`.
///
/// [`Header::sensitive`] is for credentials (`Authorization`, a session
/// cookie, an API key): when the header is present the whole key is stored
/// as its BLAKE2b digest, so the value never reaches a cache tier or a log.
/// When it is absent nothing secret is in the key and it stays readable.
///
/// ```
/// use hitbox_core::{CacheKey, Extractor};
/// use hitbox_tower::extract::{Header, Path};
/// use http::header::AUTHORIZATION;
///
/// let extractor = Path.and(Header::sensitive(AUTHORIZATION));
/// let (parts, ()) = http::Request::get("/me")
///     .header(AUTHORIZATION, "Bearer s3cr3t")
///     .body(())
///     .unwrap()
///     .into_parts();
/// let mut key = CacheKey::builder("api");
/// extractor.extract(&parts, &mut key);
/// let key = key.build();
/// assert!(key.is_digested());
/// assert!(!key.as_str().contains("s3cr3t"));
/// ```
#[derive(Debug, Clone)]
pub struct Header {
    name: HeaderName,
    part: Arc<str>,
    sensitive: bool,
}

impl Header {
    /// The values of header `name`, in the clear.
    pub fn named(name: HeaderName) -> Self {
        let part = format!("header.{name}").into();
        Header {
            name,
            part,
            sensitive: false,
        }
    }

    /// The values of header `name`, making the key a digest when present.
    pub fn sensitive(name: HeaderName) -> Self {
        Header {
            sensitive: true,
            ..Header::named(name)
        }
    }
}

impl Extractor<Parts> for Header {
    fn extract(&self, parts: &Parts, key: &mut KeyBuilder) -> bool {
        let mut found = false;
        for value in &parts.headers.get_all(&self.name) {
            if self.sensitive {
                key.push_sensitive(&self.part, Some(value.as_bytes()));
            } else {
                key.push(&self.part, Some(value.as_bytes()));
            }
            found = true;
        }
        if !found {
            key.push(&self.part, None);
        }
        true
    }
}

/// A fixed part, the same for every request: a route name or a variant that
/// sets one family of keys apart from another within a namespace.
///
/// `Constant(name, value)` appends part `name=value`; any `AsRef<str>` name
/// and `AsRef<[u8]>` value will do.
///
/// ```
/// use hitbox_core::{CacheKey, Extractor};
/// use hitbox_tower::extract::{Constant, Path};
///
/// let extractor = Constant("route", "users").and(Path);
/// let (parts, ()) = http::Request::get("/users").body(()).unwrap().into_parts();
/// let mut key = CacheKey::builder("api");
/// extractor.extract(&parts, &mut key);
/// assert_eq!(key.build().as_str(), "api:v1:route=users:path=/users");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Constant<N = &'static str, V = &'static str>(pub N, pub V);

impl<N: AsRef<str>, V: AsRef<[u8]>> Extractor<Parts> for Constant<N, V> {
    fn extract(&self, _: &Parts, key: &mut KeyBuilder) -> bool {
        key.push(self.0.as_ref(), Some(self.1.as_ref()));
        true
    }
}

/// The type of [`default_key`].
pub type DefaultKey = ExtractorAnd<ExtractorAnd<ExtractorAnd<Method, SchemeHost>, Path>, Query>;

/// The default key: [`Method`], [`SchemeHost`], [`Path`] and
/// [`Query::all`].
///
/// Requests to different paths, hosts or methods never share a key, and the
/// order and percent-encoding of query parameters do not matter. Headers are
/// not part of it: add [`Header::named`] for a header the response varies
/// on.
///
/// ```
/// use hitbox_core::{CacheKey, Extractor};
/// use hitbox_tower::extract::default_key;
///
/// let key = |uri: &str| {
///     let (parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
///     let mut key = CacheKey::builder("http");
///     default_key().extract(&parts, &mut key);
///     key.build()
/// };
/// assert_eq!(
///     key("https://example.com/items?b=2&a=1").as_str(),
///     "http:v1:method=GET:scheme=https:host=example.com:path=/items:query.a=1:query.b=2"
/// );
/// assert_eq!(key("https://example.com/items?b=2&a=1"), key("https://example.com/items?a=1&b=2"));
/// assert_ne!(key("https://example.com/items"), key("https://example.com/item"));
/// ```
pub fn default_key() -> DefaultKey {
    Method.and(SchemeHost).and(Path).and(Query::all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hitbox_core::CacheKey;
    use http::header::{ACCEPT, AUTHORIZATION, HeaderValue};
    use http::{Request, Uri};

    fn parts(uri: &str) -> Parts {
        Request::get(uri).body(()).unwrap().into_parts().0
    }

    fn with_headers(uri: &str, headers: &[(&str, &[u8])]) -> Parts {
        let mut parts = parts(uri);
        for (name, value) in headers {
            parts.headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        parts
    }

    fn key_of(extractor: &impl Extractor<Parts>, parts: &Parts) -> (bool, CacheKey) {
        let mut key = CacheKey::builder("t");
        let appended = extractor.extract(parts, &mut key);
        (appended, key.build())
    }

    fn key(extractor: &impl Extractor<Parts>, parts: &Parts) -> String {
        key_of(extractor, parts).1.as_str().to_owned()
    }

    #[test]
    fn method_and_path() {
        let mut p = parts("/a%2Fb/c/?x=1");
        assert_eq!(key(&Method, &p), "t:v1:method=GET");
        p.method = http::Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(key(&Method, &p), "t:v1:method=PURGE");
        assert_eq!(key(&Path, &p), "t:v1:path=/a%252Fb/c/");
        assert_ne!(key(&Path, &parts("/a/b")), key(&Path, &parts("/a%2Fb")));
        assert_ne!(key(&Path, &parts("/a/")), key(&Path, &parts("/a")));
        assert_eq!(key(&Path, &parts("http://h")), "t:v1:path=/");
    }

    #[test]
    fn scheme_host_from_uri() {
        let k = |uri: &str| key(&SchemeHost, &parts(uri));
        assert_eq!(k("https://Example.COM/x"), "t:v1:scheme=https:host=example.com");
        assert_eq!(
            k("https://example.com:443/x"),
            "t:v1:scheme=https:host=example.com"
        );
        assert_eq!(
            k("https://example.com:80/x"),
            "t:v1:scheme=https:host=example.com%3A80"
        );
        assert_eq!(k("http://example.com:80/x"), "t:v1:scheme=http:host=example.com");
        assert_eq!(
            k("http://example.com:8080/"),
            "t:v1:scheme=http:host=example.com%3A8080"
        );
        assert_eq!(
            k("http://user:pw@example.com/"),
            "t:v1:scheme=http:host=example.com"
        );
        assert_eq!(k("http://[::1]:8080/"), "t:v1:scheme=http:host=[%3A%3A1]%3A8080");
        assert_eq!(
            k("ftp://example.com:21/"),
            "t:v1:scheme=ftp:host=example.com%3A21"
        );
    }

    #[test]
    fn host_headers_already_normal_take_a_short_cut_to_the_same_key() {
        // The key a `Host` header gives, through the parser alone.
        fn parsed(value: &[u8], default_port: Option<u16>) -> String {
            match Authority::try_from(value) {
                Ok(authority) if !authority.as_str().contains('@') => {
                    let mut key = CacheKey::builder("t");
                    key.push("host", Some(normalise_host(&authority, default_port).as_bytes()));
                    key.build().as_str().to_owned()
                }
                _ => "raw".to_owned(),
            }
        }
        let values: [&[u8]; 16] = [
            b"example.com",
            b"example.com:80",
            b"example.com:443",
            b"example.com:8080",
            b"example.com:08080",
            b"example.com:",
            b"example.com:65535",
            b"example.com:65536",
            b"example.com:99999",
            b"Example.com",
            b"a-b.c-d.",
            b"127.0.0.1:3000",
            b":80",
            b"",
            b"exa_mple.com",
            b"user@example.com",
        ];
        for value in values {
            for default_port in [Some(80), Some(443), None] {
                if let Some((host, port)) = plain_host(value) {
                    let normal = match port {
                        Some(port) if Some(port) == default_port => host,
                        _ => value,
                    };
                    let mut key = CacheKey::builder("t");
                    key.push("host", Some(normal));
                    let value = String::from_utf8_lossy(value);
                    assert_eq!(
                        key.build().as_str(),
                        parsed(value.as_bytes(), default_port),
                        "{value}"
                    );
                }
            }
        }
        assert!(plain_host(b"example.com:8080").is_some());
        assert!(plain_host(b"Example.com").is_none());
        assert!(plain_host(b"example.com:08080").is_none());
    }

    #[test]
    fn long_and_short_queries_are_keyed_alike() {
        // Eight parameters or fewer, none encoded, are sorted on the stack;
        // any others take the general path. Both must agree.
        let query = |n: usize| {
            (0..n)
                .rev()
                .map(|i| format!("p{i}=v{i}"))
                .collect::<Vec<_>>()
                .join("&")
        };
        for n in [1, 7, 8, 9, 11] {
            let plain = parts(&format!("/?{}", query(n)));
            let encoded = parts(&format!("/?{}&p%30=v0", query(n)));
            let expected: String = {
                let mut names: Vec<usize> = (0..n).collect();
                names.sort_by_key(|i| format!("p{i}"));
                names.iter().map(|i| format!(":query.p{i}=v{i}")).collect()
            };
            assert_eq!(key(&Query::all(), &plain), format!("t:v1{expected}"));
            // `p%30` decodes to `p0`: one more `p0=v0`, next to the first.
            let doubled = expected.replacen(":query.p0=v0", ":query.p0=v0:query.p0=v0", 1);
            assert_eq!(key(&Query::all(), &encoded), format!("t:v1{doubled}"));
        }
    }

    #[test]
    fn scheme_host_prefers_uri_then_host_header() {
        let with_host = with_headers("https://uri.example/x", &[("host", b"header.example")]);
        assert_eq!(key(&SchemeHost, &with_host), "t:v1:scheme=https:host=uri.example");
        let origin_form = with_headers("/x", &[("host", b"Header.Example:80")]);
        assert_eq!(
            key(&SchemeHost, &origin_form),
            "t:v1:scheme=http:host=header.example"
        );
        let port = with_headers("/x", &[("host", b"header.example:8443")]);
        assert_eq!(
            key(&SchemeHost, &port),
            "t:v1:scheme=http:host=header.example%3A8443"
        );
        assert_eq!(key(&SchemeHost, &parts("/x")), "t:v1:scheme=http:host");
    }

    #[test]
    fn invalid_or_repeated_host_headers_are_kept_raw() {
        let bad = with_headers("/x", &[("host", b"bad host")]);
        assert_eq!(key(&SchemeHost, &bad), "t:v1:scheme=http:host.raw=bad%20host");
        let userinfo = with_headers("/x", &[("host", b"evil@good.example")]);
        assert_eq!(
            key(&SchemeHost, &userinfo),
            "t:v1:scheme=http:host.raw=evil@good.example"
        );
        assert_ne!(
            key(&SchemeHost, &userinfo),
            key(&SchemeHost, &with_headers("/x", &[("host", b"good.example")]))
        );
        let twice = with_headers("/x", &[("host", b"a.example"), ("host", b"b.example")]);
        assert_eq!(
            key(&SchemeHost, &twice),
            "t:v1:scheme=http:host.raw=a.example:host.raw=b.example"
        );
        let non_utf8 = with_headers("/x", &[("host", b"caf\xe9.example")]);
        assert_eq!(
            key(&SchemeHost, &non_utf8),
            "t:v1:scheme=http:host.raw=caf%E9.example"
        );
    }

    #[test]
    fn path_params_follow_the_pattern_or_append_nothing() {
        let extractor = PathParams::new(PathPattern::new("/users/{id}/files/{*rest}"));
        assert_eq!(
            key_of(&extractor, &parts("/users/42/files/a/b.txt?x=1")),
            (
                true,
                CacheKey::from_encoded("t:v1:param.id=42:param.rest=a/b.txt")
            )
        );
        assert!(!key_of(&extractor, &parts("/users/42")).0);
        assert_eq!(key(&extractor, &parts("/users/42")), "t:v1");
        let literal = PathParams::new(PathPattern::new("/health"));
        assert!(!key_of(&literal, &parts("/health")).0);
        let fallback = PathParams::new(PathPattern::new("/users/{id}")).or(Path);
        assert_eq!(key(&fallback, &parts("/users/7")), "t:v1:param.id=7");
        assert_eq!(key(&fallback, &parts("/other")), "t:v1:path=/other");
        assert!(format!("{extractor:?}").contains("/users/{id}"));
    }

    #[test]
    fn query_all_is_sorted_and_decoded() {
        let all = Query::all();
        let k = |uri: &str| key(&all, &parts(uri));
        assert_eq!(k("/?b=2&a=1"), "t:v1:query.a=1:query.b=2");
        assert_eq!(k("/?b=2&a=1"), k("/?a=1&b=2"));
        assert_eq!(k("/?a=%41"), k("/?a=A"));
        assert_eq!(k("/?%61=A"), k("/?a=A"));
        assert_eq!(k("/?a=x+y"), k("/?a=x%20y"));
        assert_ne!(k("/?a=x%2By"), k("/?a=x+y"));
        // Sorted by name only: a repeated parameter keeps its order, on the
        // stack path and the decoding one alike.
        assert_eq!(
            k("/?a=2&b=0&a=1&a=10"),
            "t:v1:query.a=2:query.a=1:query.a=10:query.b=0"
        );
        assert_eq!(k("/?a=2&b=%30&a=1&a=10"), k("/?a=2&b=0&a=1&a=10"));
        assert_ne!(k("/?id=1&id=2"), k("/?id=2&id=1"));
        assert_eq!(k("/?flag"), "t:v1:query.flag=");
        assert_eq!(k("/?flag"), k("/?flag="));
        assert_eq!(k("/?&&a=1&"), k("/?a=1"));
        assert_eq!(k("/?a=1=2"), "t:v1:query.a=1%3D2");
        assert_eq!(k("/?a=%zz%4"), "t:v1:query.a=%25zz%254");
        assert_eq!(
            key_of(&all, &parts("/x")),
            (false, CacheKey::from_encoded("t:v1"))
        );
        assert!(!key_of(&all, &parts("/x?")).0);
        assert!(key_of(&all, &parts("/x?a")).0);
    }

    #[test]
    fn query_all_keeps_invalid_utf8_apart() {
        let all = Query::all();
        let k = |uri: &str| key(&all, &parts(uri));
        assert_ne!(k("/?a=%FF"), k("/?a=%FE"));
        assert_ne!(k("/?a=%FF"), k("/?a=%EF%BF%BD"));
        assert_eq!(k("/?a=%FF"), "t:v1:query.a=%FF");
        assert_eq!(k("/?%FF=1"), "t:v1:query~ff=1");
        assert_ne!(k("/?%FF=1"), k("/?%FE=1"));
        assert_ne!(k("/?%FF=1"), k("/?ff=1"));
    }

    #[test]
    fn query_named_keeps_listed_order_repeats_and_absence() {
        let named = Query::named(["page", "sort"]);
        let k = |uri: &str| key(&named, &parts(uri));
        assert_eq!(k("/?sort=asc&page=2&x=1"), "t:v1:query.page=2:query.sort=asc");
        assert_eq!(k("/?sort=asc&page=2&x=1"), k("/?page=2&sort=asc&x=9"));
        assert_eq!(k("/?page=2&page=1"), "t:v1:query.page=2:query.page=1:query.sort");
        assert_ne!(k("/?page=2&page=1"), k("/?page=1&page=2"));
        assert_eq!(k("/"), "t:v1:query.page:query.sort");
        assert_ne!(k("/?page="), k("/"));
        assert_eq!(k("/?pa%67e=%32"), k("/?page=2"));
        assert!(key_of(&named, &parts("/")).0);
        let empty = Query::named(Vec::<String>::new());
        assert_eq!(
            key_of(&empty, &parts("/?a=1")),
            (false, CacheKey::from_encoded("t:v1"))
        );
        assert_eq!(format!("{named:?}"), r#"Query::named(["page", "sort"])"#);
        assert_eq!(format!("{:?}", Query::all()), "Query::all()");
    }

    #[test]
    fn query_pairs_agree_with_form_urlencoded_on_text() {
        let cases = [
            "",
            "a=1&b=2",
            "&&a&=x&b==c",
            "a=%41%42+c%2B&%C3%A9=%E2%82%AC",
            "x=%zz&y=%4&z=%",
            "a+b=c+d",
        ];
        for query in cases {
            let ours: Vec<(Vec<u8>, Vec<u8>)> = query_pairs(query)
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
            let theirs: Vec<(Vec<u8>, Vec<u8>)> = form_urlencoded::parse(query.as_bytes())
                .map(|(n, v)| (n.into_owned().into_bytes(), v.into_owned().into_bytes()))
                .collect();
            assert_eq!(ours, theirs, "{query}");
        }
        assert!(matches!(
            query_pairs("a=1").next(),
            Some((Cow::Borrowed(_), Cow::Borrowed(_)))
        ));
    }

    #[test]
    fn header_named_records_values_repeats_and_absence() {
        let accept = Header::named(ACCEPT);
        assert_eq!(
            key(&accept, &with_headers("/", &[("accept", b"text/html")])),
            "t:v1:header.accept=text/html"
        );
        assert_eq!(key(&accept, &parts("/")), "t:v1:header.accept");
        assert_eq!(
            key(&accept, &with_headers("/", &[("accept", b"")])),
            "t:v1:header.accept="
        );
        let twice = with_headers("/", &[("accept", b"a"), ("accept", b"b")]);
        assert_eq!(key(&accept, &twice), "t:v1:header.accept=a:header.accept=b");
        let joined = with_headers("/", &[("accept", b"a, b")]);
        assert_ne!(key(&accept, &twice), key(&accept, &joined));
        let non_utf8 = with_headers("/", &[("accept", b"caf\xe9")]);
        assert_eq!(key(&accept, &non_utf8), "t:v1:header.accept=caf%E9");
        assert!(key_of(&accept, &parts("/")).0);
        assert!(!key_of(&accept, &non_utf8).1.is_digested());
    }

    #[test]
    fn header_sensitive_digests_the_key() {
        let auth = Header::sensitive(AUTHORIZATION);
        let alice = with_headers("/me", &[("authorization", b"Bearer alice-secret")]);
        let bob = with_headers("/me", &[("authorization", b"Bearer bob-secret")]);
        let (appended, alice_key) = key_of(&Path.and(auth.clone()), &alice);
        assert!(appended);
        assert!(alice_key.is_digested());
        assert!(alice_key.as_str().starts_with("t:v1:#"));
        assert!(!alice_key.as_str().contains("secret"));
        assert!(!alice_key.as_str().contains("/me"));
        assert!(!format!("{alice_key:?} {alice_key}").contains("secret"));
        let (_, bob_key) = key_of(&Path.and(auth.clone()), &bob);
        assert_ne!(alice_key, bob_key);
        assert_eq!(alice_key, key_of(&Path.and(auth.clone()), &alice).1);
        let (_, anonymous) = key_of(&Path.and(auth), &parts("/me"));
        assert!(!anonymous.is_digested());
        assert_eq!(anonymous.as_str(), "t:v1:path=/me:header.authorization");
    }

    #[test]
    fn constant_parts() {
        assert_eq!(key(&Constant("route", "users"), &parts("/")), "t:v1:route=users");
        let owned = Constant(String::from("variant"), vec![0u8, 1]);
        assert_eq!(key(&owned, &parts("/")), "t:v1:variant=%00%01");
        assert_ne!(
            key(&Constant("r", "a").and(Path), &parts("/x")),
            key(&Constant("r", "b").and(Path), &parts("/x"))
        );
    }

    #[test]
    fn combinators_chain_and_fall_back() {
        let extractor = Method.and(Path).and(Query::named(["q"]));
        assert_eq!(
            key(&extractor, &parts("/s?q=x")),
            "t:v1:method=GET:path=/s:query.q=x"
        );
        let fallback = Query::all().or(Constant("query", "none"));
        assert_eq!(key(&fallback, &parts("/s")), "t:v1:query=none");
        assert_eq!(key(&fallback, &parts("/s?a=1")), "t:v1:query.a=1");
    }

    #[test]
    fn default_key_normalises_and_separates() {
        let k = |uri: &str| key_of(&default_key(), &parts(uri)).1;
        assert_eq!(
            k("/users?b=2&a=1").as_str(),
            "t:v1:method=GET:scheme=http:host:path=/users:query.a=1:query.b=2"
        );
        assert_eq!(k("/users?b=2&a=1"), k("/users?a=1&b=2"));
        assert_eq!(k("/users?a=%41"), k("/users?a=A"));
        assert_eq!(k("http://EXAMPLE.com:80/users"), k("http://example.com/users"));
        let distinct = [
            "/users",
            "/users/",
            "/user",
            "/users?a=1&b=2",
            "/users?a=1%26b%3D2",
            "/users?a=1&b=2&b=2",
            "/users?a=&b=2",
            "/users?a",
            "/users?a=1:b=2",
            "/users?a%3D1=",
            "/users%3Fa=1",
            "http://a.example/users",
            "http://b.example/users",
            "https://a.example/users",
            "http://a.example:8080/users",
        ];
        for (i, a) in distinct.iter().enumerate() {
            for b in &distinct[i + 1..] {
                assert_ne!(k(a), k(b), "{a} vs {b}");
            }
        }
        let mut post = parts("/users");
        post.method = http::Method::POST;
        assert_ne!(key_of(&default_key(), &post).1, k("/users"));
    }

    #[test]
    fn default_key_with_header_fields() {
        let mut p = parts("/x");
        p.uri = Uri::from_static("/x?z=1");
        p.headers.insert(HOST, HeaderValue::from_static("Shop.Example"));
        assert_eq!(
            key(&default_key(), &p),
            "t:v1:method=GET:scheme=http:host=shop.example:path=/x:query.z=1"
        );
    }
}
