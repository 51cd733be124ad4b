//! Which requests are cached and which responses are stored.
//!
//! Each type here is a [`Predicate`] over [`http::request::Parts`] (the
//! request, before its body is read) or [`http::response::Parts`] (the
//! response, before its body is read), or both: [`Header`] and [`BodySize`]
//! judge either side. They are small `Clone` values that do not allocate
//! when checking, and they combine with the core [`Predicate::and`],
//! [`Predicate::or`] and [`Predicate::not`], or with a closure.
//!
//! ```
//! use hitbox_core::Predicate;
//! use hitbox_tower::path::PathPattern;
//! use hitbox_tower::predicate::{BodySize, Header, Method, Path, Query, Status, StatusClass};
//! use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
//! use http::{Request, Response, request, response};
//!
//! // Cache GET and HEAD on the public API, but not the admin pages, not
//! // requests that carry credentials and not requests asking for a fresh copy.
//! let request_rule = Method::any_of([http::Method::GET, http::Method::HEAD])
//!     .and(Path::prefix("/api").or(Path::pattern(PathPattern::new("/users/{id}"))))
//!     .and(Path::prefix("/api/admin").not())
//!     .and(Header::present(AUTHORIZATION).not())
//!     .and(Query::equals("nocache", "1").not());
//!
//! // Store successful JSON responses of at most 1 MiB that do not forbid it.
//! let response_rule = Status::class(StatusClass::Success)
//!     .and(Header::contains(CONTENT_TYPE, "json"))
//!     .and(Header::contains(CACHE_CONTROL, "no-store").not())
//!     .and(BodySize::at_most(1024 * 1024));
//!
//! let (request, ()) = Request::get("/api/items?page=2").body(()).unwrap().into_parts();
//! assert!(request_rule.check(&request));
//! let (admin, ()) = Request::get("/api/admin/users").body(()).unwrap().into_parts();
//! assert!(!request_rule.check(&admin));
//!
//! let (response, ()) = Response::builder()
//!     .header(CONTENT_TYPE, "application/json")
//!     .header("content-length", "512")
//!     .body(())
//!     .unwrap()
//!     .into_parts();
//! assert!(response_rule.check(&response));
//! ```
//!
//! # Bodies
//!
//! [`ReadSize`], [`BodyRegex`] (feature `regex`) and [`Json`] (feature
//! `json`) judge a body read whole, a [`ReadBody`]: see
//! [`Rule::when_body`](crate::Rule::when_body) and
//! [`Rule::store_when_body`](crate::Rule::store_when_body). [`BodySize`]
//! reads only the length a head declares.
//!
//! # Types that judge both sides
//!
//! [`Header`] and [`BodySize`] implement `Predicate` for requests and for
//! responses, so the trait's combinators called on one of them could not
//! tell which side is meant. They have inherent `and`, `or` and `not`
//! methods that build the same core [`And`], [`Or`] and [`Not`] values
//! without asking, and the side is settled where the result is used. Only a
//! combination of two such types, combined again (`a.and(b).not()`), needs
//! the side named: `Predicate::<request::Parts>::not(a.and(b))`.
//!
//! # Header values
//!
//! Values are compared as bytes, so a value that is not UTF-8 never causes
//! an error: it can equal a configured byte string, and [`Header::contains`]
//! and [`Header::regex`] are simply false for it. When a header is repeated,
//! the predicate passes if **any** of its values passes; a comma-separated
//! list in one line is one value.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use bytes::Bytes;
use hitbox_core::{And, Not, Or, Predicate};
use http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{StatusCode, request, response};
#[cfg(feature = "regex")]
use regex::Regex;

use crate::path::PathPattern;

mod body;

#[cfg(feature = "axum")]
pub use crate::matched_path::MatchedPath;
#[cfg(feature = "regex")]
pub use body::BodyRegex;
#[cfg(feature = "json")]
pub use body::Json;
pub use body::{ReadBody, ReadSize};

/// The request method: one method, or any of a list.
///
/// ```
/// use hitbox_core::Predicate;
/// use hitbox_tower::predicate::Method;
///
/// let (get, ()) = http::Request::get("/").body(()).unwrap().into_parts();
/// let (post, ()) = http::Request::post("/").body(()).unwrap().into_parts();
/// assert!(Method::is(http::Method::GET).check(&get));
/// assert!(!Method::is(http::Method::GET).check(&post));
/// assert!(Method::any_of([http::Method::GET, http::Method::POST]).check(&post));
/// ```
#[derive(Debug, Clone)]
pub struct Method {
    methods: Methods,
}

#[derive(Debug, Clone)]
enum Methods {
    One(http::Method),
    Any(Arc<[http::Method]>),
}

impl Method {
    /// Passes for `method` only.
    pub fn is(method: http::Method) -> Self {
        Method {
            methods: Methods::One(method),
        }
    }

    /// Passes for any method in `methods` (none, when it is empty).
    pub fn any_of(methods: impl IntoIterator<Item = http::Method>) -> Self {
        Method {
            methods: Methods::Any(methods.into_iter().collect()),
        }
    }
}

impl Predicate<request::Parts> for Method {
    fn check(&self, parts: &request::Parts) -> bool {
        match &self.methods {
            Methods::One(method) => parts.method == *method,
            Methods::Any(methods) => methods.contains(&parts.method),
        }
    }
}

/// The request path (without the query): exact, prefix, or a
/// [`PathPattern`].
///
/// Paths are compared as the client sent them: case-sensitively and without
/// percent-decoding.
///
/// ```
/// use hitbox_core::Predicate;
/// use hitbox_tower::path::PathPattern;
/// use hitbox_tower::predicate::Path;
///
/// let parts = |uri: &str| http::Request::get(uri).body(()).unwrap().into_parts().0;
/// assert!(Path::exact("/health").check(&parts("/health?verbose=1")));
/// assert!(Path::prefix("/api").check(&parts("/api/users")));
/// assert!(!Path::prefix("/api").check(&parts("/apiary")));
/// assert!(Path::pattern(PathPattern::new("/users/{id}")).check(&parts("/users/42")));
/// ```
#[derive(Debug, Clone)]
pub struct Path {
    kind: PathKind,
}

#[derive(Debug, Clone)]
enum PathKind {
    Exact(Arc<str>),
    Prefix(Arc<str>),
    Pattern(PathPattern),
}

impl Path {
    /// Passes when the path is exactly `path`.
    pub fn exact(path: impl Into<Arc<str>>) -> Self {
        Path {
            kind: PathKind::Exact(path.into()),
        }
    }

    /// Passes when the path starts with `prefix` at a segment boundary:
    /// `/api` passes `/api`, `/api/` and `/api/users`, but not `/apiary`. A
    /// prefix that ends with `/` (`/api/`) needs that slash (so `/api`
    /// fails).
    pub fn prefix(prefix: impl Into<Arc<str>>) -> Self {
        Path {
            kind: PathKind::Prefix(prefix.into()),
        }
    }

    /// Passes when the path matches `pattern`.
    pub fn pattern(pattern: PathPattern) -> Self {
        Path {
            kind: PathKind::Pattern(pattern),
        }
    }
}

impl Predicate<request::Parts> for Path {
    fn check(&self, parts: &request::Parts) -> bool {
        let path = parts.uri.path();
        match &self.kind {
            PathKind::Exact(exact) => path == &**exact,
            PathKind::Prefix(prefix) => match path.strip_prefix(&**prefix) {
                Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
            PathKind::Pattern(pattern) => pattern.matches(path).is_some(),
        }
    }
}

/// A header, on a request or on a response: present, equal to a value, one
/// of several values, containing a substring, or matching a regular
/// expression.
///
/// A repeated header passes when any of its values passes. Values are
/// compared byte for byte and case-sensitively; use a regex with `(?i)` for
/// a case-insensitive match. [`Header::contains`] and [`Header::regex`] are
/// false for a value that is not UTF-8.
///
/// ```
/// use hitbox_core::Predicate;
/// use hitbox_tower::predicate::Header;
/// use http::header::{ACCEPT, CONTENT_TYPE};
/// use regex::Regex;
///
/// let (request, ()) = http::Request::get("/")
///     .header(ACCEPT, "text/html")
///     .header(ACCEPT, "application/json")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert!(Predicate::<http::request::Parts>::check(&Header::equals(ACCEPT, "application/json"), &request));
///
/// let (response, ()) = http::Response::builder()
///     .header(CONTENT_TYPE, "application/vnd.api+json; charset=utf-8")
///     .body(())
///     .unwrap()
///     .into_parts();
/// let json = Header::regex(CONTENT_TYPE, Regex::new(r"^application/([a-z.]+\+)?json\b").unwrap());
/// assert!(json.check(&response));
/// assert!(!Header::present(ACCEPT).check(&response));
/// ```
#[derive(Debug, Clone)]
pub struct Header {
    name: HeaderName,
    test: HeaderTest,
}

#[derive(Debug, Clone)]
enum HeaderTest {
    Present,
    Equals(Bytes),
    OneOf(Arc<[Bytes]>),
    Contains(Arc<str>),
    #[cfg(feature = "regex")]
    Regex(Regex),
}

impl Header {
    /// Passes when header `name` is present (even with an empty value).
    pub fn present(name: HeaderName) -> Self {
        Header {
            name,
            test: HeaderTest::Present,
        }
    }

    /// Passes when a value of header `name` is exactly `value` (as bytes).
    pub fn equals(name: HeaderName, value: impl Into<Bytes>) -> Self {
        Header {
            name,
            test: HeaderTest::Equals(value.into()),
        }
    }

    /// Passes when a value of header `name` is exactly one of `values`.
    pub fn one_of<V: Into<Bytes>>(name: HeaderName, values: impl IntoIterator<Item = V>) -> Self {
        Header {
            name,
            test: HeaderTest::OneOf(values.into_iter().map(Into::into).collect()),
        }
    }

    /// Passes when a value of header `name` is UTF-8 and contains `needle`.
    pub fn contains(name: HeaderName, needle: impl Into<Arc<str>>) -> Self {
        Header {
            name,
            test: HeaderTest::Contains(needle.into()),
        }
    }

    /// Passes when a value of header `name` is UTF-8 and `regex` matches it
    /// (anywhere, unless the expression is anchored). Feature `regex`.
    #[cfg(feature = "regex")]
    pub fn regex(name: HeaderName, regex: Regex) -> Self {
        Header {
            name,
            test: HeaderTest::Regex(regex),
        }
    }

    /// Passes when `self` and `other` pass; the inherent twin of
    /// [`Predicate::and`], usable on either side (see the
    /// [module documentation](self#types-that-judge-both-sides)).
    pub fn and<P>(self, other: P) -> And<Self, P> {
        And(self, other)
    }

    /// Passes when `self` or `other` passes; the inherent twin of
    /// [`Predicate::or`].
    pub fn or<P>(self, other: P) -> Or<Self, P> {
        Or(self, other)
    }

    /// Passes when `self` fails; the inherent twin of [`Predicate::not`].
    #[allow(
        clippy::should_implement_trait,
        reason = "mirrors Predicate::not, not boolean negation"
    )]
    pub fn not(self) -> Not<Self> {
        Not(self)
    }

    fn check_value(&self, value: &HeaderValue) -> bool {
        match &self.test {
            HeaderTest::Present => true,
            HeaderTest::Equals(expected) => value.as_bytes() == expected,
            HeaderTest::OneOf(expected) => expected.iter().any(|e| value.as_bytes() == e),
            HeaderTest::Contains(needle) => {
                std::str::from_utf8(value.as_bytes()).is_ok_and(|text| text.contains(&**needle))
            }
            #[cfg(feature = "regex")]
            HeaderTest::Regex(regex) => {
                std::str::from_utf8(value.as_bytes()).is_ok_and(|text| regex.is_match(text))
            }
        }
    }
}

impl Predicate<HeaderMap> for Header {
    fn check(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|value| self.check_value(value))
    }
}

impl Predicate<request::Parts> for Header {
    fn check(&self, parts: &request::Parts) -> bool {
        Predicate::<HeaderMap>::check(self, &parts.headers)
    }
}

impl Predicate<response::Parts> for Header {
    fn check(&self, parts: &response::Parts) -> bool {
        Predicate::<HeaderMap>::check(self, &parts.headers)
    }
}

/// A query parameter of the request: present, equal to a value, or one of
/// several values.
///
/// The query is parsed as `application/x-www-form-urlencoded`: names and
/// values are percent-decoded and `+` is a space, so `?lang=fr%2DCA` equals
/// `fr-CA`. A parameter without `=` is present with an empty value. A
/// repeated parameter passes when any of its values passes. Decoded bytes
/// are compared as they are, so `%FF` never equals `%FE`.
///
/// ```
/// use hitbox_core::Predicate;
/// use hitbox_tower::predicate::Query;
///
/// let (parts, ()) = http::Request::get("/search?q=rust+cache&format=json&preview").body(()).unwrap().into_parts();
/// assert!(Query::equals("q", "rust cache").check(&parts));
/// assert!(Query::one_of("format", ["json", "xml"]).check(&parts));
/// assert!(Query::present("preview").check(&parts));
/// assert!(!Query::present("page").check(&parts));
/// ```
#[derive(Debug, Clone)]
pub struct Query {
    name: Arc<str>,
    test: QueryTest,
}

#[derive(Debug, Clone)]
enum QueryTest {
    Present,
    Equals(Arc<str>),
    OneOf(Arc<[Box<str>]>),
}

impl Query {
    /// Passes when parameter `name` is present.
    pub fn present(name: impl Into<Arc<str>>) -> Self {
        Query {
            name: name.into(),
            test: QueryTest::Present,
        }
    }

    /// Passes when a value of parameter `name` is `value` (once decoded).
    pub fn equals(name: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Self {
        Query {
            name: name.into(),
            test: QueryTest::Equals(value.into()),
        }
    }

    /// Passes when a value of parameter `name` is one of `values`.
    pub fn one_of<V: Into<Box<str>>>(name: impl Into<Arc<str>>, values: impl IntoIterator<Item = V>) -> Self {
        Query {
            name: name.into(),
            test: QueryTest::OneOf(values.into_iter().map(Into::into).collect()),
        }
    }
}

impl Predicate<request::Parts> for Query {
    fn check(&self, parts: &request::Parts) -> bool {
        let Some(query) = parts.uri.query() else {
            return false;
        };
        crate::extract::query_pairs(query).any(|(name, value)| {
            *name == *self.name.as_bytes()
                && match &self.test {
                    QueryTest::Present => true,
                    QueryTest::Equals(expected) => *value == *expected.as_bytes(),
                    QueryTest::OneOf(expected) => expected.iter().any(|e| *value == *e.as_bytes()),
                }
        })
    }
}

/// The size of the body, as told by `Content-Length`, at most a limit.
///
/// On a request: a request with neither `Content-Length` nor
/// `Transfer-Encoding` has no body and passes. On a response: one whose
/// status allows no body (`1xx`, `204`, `304`) passes. Otherwise the size is
/// read from `Content-Length`; when it cannot be known that way (a chunked
/// body, where `Transfer-Encoding` overrides any `Content-Length`, or a
/// response without `Content-Length`) the predicate fails, unless
/// [`BodySize::allow_unknown`] says to let such bodies through, for a layer
/// that enforces the limit itself while reading the body. A malformed or
/// contradictory `Content-Length` always fails.
///
/// Responses built in-process (an axum handler returning a `String`) often
/// carry no `Content-Length`: the server adds it on the wire.
///
/// ```
/// use hitbox_core::Predicate;
/// use hitbox_tower::predicate::BodySize;
///
/// let (small, ()) = http::Response::builder().header("content-length", "100").body(()).unwrap().into_parts();
/// let (unknown, ()) = http::Response::builder().body(()).unwrap().into_parts();
/// assert!(BodySize::at_most(1024).check(&small));
/// assert!(!BodySize::at_most(99).check(&small));
/// assert!(!BodySize::at_most(1024).check(&unknown));
/// assert!(BodySize::at_most(1024).allow_unknown(true).check(&unknown));
///
/// let (get, ()) = http::Request::get("/").body(()).unwrap().into_parts();
/// assert!(Predicate::<http::request::Parts>::check(&BodySize::at_most(0), &get));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct BodySize {
    limit: u64,
    allow_unknown: bool,
}

impl BodySize {
    /// Passes bodies of at most `limit` bytes.
    pub fn at_most(limit: u64) -> Self {
        BodySize {
            limit,
            allow_unknown: false,
        }
    }

    /// With `true`, also passes bodies whose size the headers do not tell.
    pub fn allow_unknown(mut self, allow: bool) -> Self {
        self.allow_unknown = allow;
        self
    }

    /// Passes when `self` and `other` pass; the inherent twin of
    /// [`Predicate::and`], usable on either side (see the
    /// [module documentation](self#types-that-judge-both-sides)).
    pub fn and<P>(self, other: P) -> And<Self, P> {
        And(self, other)
    }

    /// Passes when `self` or `other` passes; the inherent twin of
    /// [`Predicate::or`].
    pub fn or<P>(self, other: P) -> Or<Self, P> {
        Or(self, other)
    }

    /// Passes when `self` fails; the inherent twin of [`Predicate::not`].
    #[allow(
        clippy::should_implement_trait,
        reason = "mirrors Predicate::not, not boolean negation"
    )]
    pub fn not(self) -> Not<Self> {
        Not(self)
    }

    fn check_headers(&self, headers: &HeaderMap, no_body: impl FnOnce() -> bool) -> bool {
        if headers.contains_key(TRANSFER_ENCODING) {
            return self.allow_unknown;
        }
        match content_length(headers) {
            Length::Known(length) => length <= self.limit,
            Length::Invalid => false,
            Length::Absent => no_body() || self.allow_unknown,
        }
    }
}

enum Length {
    Absent,
    Known(u64),
    Invalid,
}

/// Reads `Content-Length`, accepting repeated or comma-separated copies of
/// one value (RFC 9110, section 8.6) and nothing else.
fn content_length(headers: &HeaderMap) -> Length {
    let mut length = None;
    for value in &headers.get_all(CONTENT_LENGTH) {
        let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
            return Length::Invalid;
        };
        for item in text.split(',') {
            let item = item.trim_matches([' ', '\t']);
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Length::Invalid;
            }
            let Ok(parsed) = item.parse::<u64>() else {
                return Length::Invalid;
            };
            if length.is_some_and(|known| known != parsed) {
                return Length::Invalid;
            }
            length = Some(parsed);
        }
    }
    length.map_or(Length::Absent, Length::Known)
}

impl Predicate<request::Parts> for BodySize {
    fn check(&self, parts: &request::Parts) -> bool {
        self.check_headers(&parts.headers, || true)
    }
}

impl Predicate<response::Parts> for BodySize {
    fn check(&self, parts: &response::Parts) -> bool {
        let status = parts.status;
        self.check_headers(&parts.headers, || {
            status.is_informational()
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
        })
    }
}

/// The class of a status code, by its first digit.
///
/// ```
/// use hitbox_tower::predicate::StatusClass;
/// use http::StatusCode;
///
/// assert_eq!(StatusClass::of(StatusCode::NOT_FOUND), Some(StatusClass::ClientError));
/// assert!(StatusClass::Success.contains(StatusCode::NO_CONTENT));
/// assert_eq!(StatusClass::Redirection.codes(), 300..=399);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// `1xx`.
    Informational,
    /// `2xx`.
    Success,
    /// `3xx`.
    Redirection,
    /// `4xx`.
    ClientError,
    /// `5xx`.
    ServerError,
}

impl StatusClass {
    /// The class of `status`; `None` for codes of 600 and above.
    pub fn of(status: StatusCode) -> Option<Self> {
        match status.as_u16() / 100 {
            1 => Some(StatusClass::Informational),
            2 => Some(StatusClass::Success),
            3 => Some(StatusClass::Redirection),
            4 => Some(StatusClass::ClientError),
            5 => Some(StatusClass::ServerError),
            _ => None,
        }
    }

    /// Whether `status` is in this class.
    pub fn contains(self, status: StatusCode) -> bool {
        self.codes().contains(&status.as_u16())
    }

    /// The codes of this class (`200..=299` for [`StatusClass::Success`]).
    pub fn codes(self) -> std::ops::RangeInclusive<u16> {
        let first = match self {
            StatusClass::Informational => 100,
            StatusClass::Success => 200,
            StatusClass::Redirection => 300,
            StatusClass::ClientError => 400,
            StatusClass::ServerError => 500,
        };
        first..=first + 99
    }
}

/// The response status: one code, a class, or a range of codes.
///
/// ```
/// use hitbox_core::Predicate;
/// use hitbox_tower::predicate::{Status, StatusClass};
/// use http::StatusCode;
///
/// let response = |status: StatusCode| http::Response::builder().status(status).body(()).unwrap().into_parts().0;
/// let storable = Status::class(StatusClass::Success)
///     .and(Status::code(StatusCode::PARTIAL_CONTENT).not())
///     .or(Status::range(301..=301))
///     .or(Status::code(StatusCode::PERMANENT_REDIRECT));
/// assert!(storable.check(&response(StatusCode::OK)));
/// assert!(!storable.check(&response(StatusCode::PARTIAL_CONTENT)));
/// assert!(storable.check(&response(StatusCode::MOVED_PERMANENTLY)));
/// assert!(!storable.check(&response(StatusCode::FOUND)));
/// assert!(!storable.check(&response(StatusCode::NOT_FOUND)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    first: u16,
    last: u16,
}

impl Status {
    /// Passes for `status` only.
    pub fn code(status: StatusCode) -> Self {
        let code = status.as_u16();
        Status {
            first: code,
            last: code,
        }
    }

    /// Passes for every code in `class`.
    pub fn class(class: StatusClass) -> Self {
        let codes = class.codes();
        Status {
            first: *codes.start(),
            last: *codes.end(),
        }
    }

    /// Passes for every code in `range` (`200..300`, `200..=299`, `500..`).
    /// An empty range passes nothing.
    pub fn range(range: impl RangeBounds<u16>) -> Self {
        // An empty range is stored as first > last, which nothing satisfies.
        let first = match range.start_bound() {
            Bound::Included(&start) => Some(start),
            Bound::Excluded(&start) => start.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let last = match range.end_bound() {
            Bound::Included(&end) => Some(end),
            Bound::Excluded(&end) => end.checked_sub(1),
            Bound::Unbounded => Some(u16::MAX),
        };
        match (first, last) {
            (Some(first), Some(last)) => Status { first, last },
            _ => Status { first: 1, last: 0 },
        }
    }
}

impl Predicate<response::Parts> for Status {
    fn check(&self, parts: &response::Parts) -> bool {
        (self.first..=self.last).contains(&parts.status.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg_attr(not(feature = "regex"), allow(unused_imports))]
    use http::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE, VARY};
    use http::{Request, Response};

    fn req(uri: &str) -> request::Parts {
        Request::get(uri).body(()).unwrap().into_parts().0
    }

    fn req_with(uri: &str, headers: &[(HeaderName, &[u8])]) -> request::Parts {
        let mut parts = req(uri);
        for (name, value) in headers {
            parts
                .headers
                .append(name.clone(), HeaderValue::from_bytes(value).unwrap());
        }
        parts
    }

    fn resp(status: u16, headers: &[(HeaderName, &[u8])]) -> response::Parts {
        let mut parts = Response::builder()
            .status(status)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        for (name, value) in headers {
            parts
                .headers
                .append(name.clone(), HeaderValue::from_bytes(value).unwrap());
        }
        parts
    }

    fn on_request(p: &impl Predicate<request::Parts>, parts: &request::Parts) -> bool {
        p.check(parts)
    }

    fn on_response(p: &impl Predicate<response::Parts>, parts: &response::Parts) -> bool {
        p.check(parts)
    }

    #[test]
    fn method_one_and_any() {
        let mut post = req("/");
        post.method = http::Method::POST;
        let get = req("/");
        assert!(Method::is(http::Method::GET).check(&get));
        assert!(!Method::is(http::Method::GET).check(&post));
        let either = Method::any_of([http::Method::HEAD, http::Method::POST]);
        assert!(either.check(&post));
        assert!(!either.check(&get));
        assert!(!Method::any_of([]).check(&get));
        let mut custom = req("/");
        custom.method = http::Method::from_bytes(b"PURGE").unwrap();
        assert!(Method::is(http::Method::from_bytes(b"PURGE").unwrap()).check(&custom));
        assert!(!Method::is(http::Method::GET).check(&custom));
    }

    #[test]
    fn path_exact() {
        let p = Path::exact("/health");
        assert!(p.check(&req("/health")));
        assert!(p.check(&req("/health?x=1")));
        assert!(p.check(&req("http://example.com/health")));
        assert!(!p.check(&req("/health/")));
        assert!(!p.check(&req("/Health")));
        assert!(!p.check(&req("/healthz")));
        assert!(!Path::exact("/a b").check(&req("/a%20b")));
        assert!(Path::exact(String::from("/a%20b")).check(&req("/a%20b")));
    }

    #[test]
    fn path_prefix_respects_segments() {
        let api = Path::prefix("/api");
        assert!(api.check(&req("/api")));
        assert!(api.check(&req("/api/")));
        assert!(api.check(&req("/api/users?x=1")));
        assert!(!api.check(&req("/apiary")));
        assert!(!api.check(&req("/v1/api")));
        let slash = Path::prefix("/api/");
        assert!(slash.check(&req("/api/")));
        assert!(slash.check(&req("/api/users")));
        assert!(!slash.check(&req("/api")));
        assert!(Path::prefix("/").check(&req("/anything")));
        assert!(Path::prefix("").check(&req("/anything")));
    }

    #[test]
    fn path_pattern() {
        let p = Path::pattern(PathPattern::new("/users/{id}/files/{*rest}"));
        assert!(p.check(&req("/users/1/files/a/b")));
        assert!(!p.check(&req("/users/1/files/")));
        assert!(!p.check(&req("/users//files/a")));
        assert!(!p.check(&req("/users/1")));
    }

    #[test]
    fn header_present_equals_one_of() {
        let one = req_with("/", &[(ACCEPT, b"text/html")]);
        let empty = req_with("/", &[(ACCEPT, b"")]);
        let none = req("/");
        assert!(on_request(&Header::present(ACCEPT), &one));
        assert!(on_request(&Header::present(ACCEPT), &empty));
        assert!(!on_request(&Header::present(ACCEPT), &none));
        assert!(on_request(&Header::equals(ACCEPT, "text/html"), &one));
        assert!(!on_request(&Header::equals(ACCEPT, "TEXT/HTML"), &one));
        assert!(!on_request(&Header::equals(ACCEPT, "text/htm"), &one));
        assert!(on_request(&Header::equals(ACCEPT, ""), &empty));
        assert!(!on_request(&Header::equals(ACCEPT, ""), &none));
        let either = Header::one_of(ACCEPT, ["application/json", "text/html"]);
        assert!(on_request(&either, &one));
        assert!(!on_request(&either, &empty));
        assert!(!on_request(
            &Header::one_of(ACCEPT, Vec::<&'static str>::new()),
            &one
        ));
    }

    #[cfg(feature = "regex")]
    #[test]
    fn header_contains_and_regex() {
        let json = resp(200, &[(CONTENT_TYPE, b"application/json; charset=utf-8")]);
        assert!(on_response(&Header::contains(CONTENT_TYPE, "json"), &json));
        assert!(!on_response(&Header::contains(CONTENT_TYPE, "JSON"), &json));
        assert!(on_response(&Header::contains(CONTENT_TYPE, ""), &json));
        assert!(!on_response(
            &Header::contains(CONTENT_TYPE, "json"),
            &resp(200, &[])
        ));
        let anchored = Header::regex(CONTENT_TYPE, Regex::new("^application/json(;|$)").unwrap());
        assert!(on_response(&anchored, &json));
        assert!(!on_response(
            &anchored,
            &resp(200, &[(CONTENT_TYPE, b"text/application/json")])
        ));
        let insensitive = Header::regex(CONTENT_TYPE, Regex::new("(?i)JSON").unwrap());
        assert!(on_response(&insensitive, &json));
        let utf8 = req_with("/", &[(ACCEPT, "café".as_bytes())]);
        assert!(on_request(&Header::contains(ACCEPT, "é"), &utf8));
        assert!(on_request(
            &Header::regex(ACCEPT, Regex::new("^caf.$").unwrap()),
            &utf8
        ));
    }

    #[cfg(feature = "regex")]
    #[test]
    fn non_utf8_header_values_compare_as_bytes_and_never_panic() {
        let latin1 = req_with("/", &[(ACCEPT, b"caf\xe9")]);
        assert!(on_request(&Header::present(ACCEPT), &latin1));
        assert!(on_request(&Header::equals(ACCEPT, &b"caf\xe9"[..]), &latin1));
        assert!(!on_request(&Header::equals(ACCEPT, "café"), &latin1));
        assert!(on_request(
            &Header::one_of(ACCEPT, [&b"x"[..], &b"caf\xe9"[..]]),
            &latin1
        ));
        assert!(!on_request(&Header::contains(ACCEPT, "caf"), &latin1));
        assert!(!on_request(&Header::contains(ACCEPT, ""), &latin1));
        assert!(!on_request(
            &Header::regex(ACCEPT, Regex::new("").unwrap()),
            &latin1
        ));
        assert!(!on_request(
            &Header::regex(ACCEPT, Regex::new("caf").unwrap()),
            &latin1
        ));
        // A later UTF-8 value of the same header can still pass.
        let mixed = req_with("/", &[(ACCEPT, b"caf\xe9"), (ACCEPT, b"cafe")]);
        assert!(on_request(&Header::contains(ACCEPT, "caf"), &mixed));
    }

    #[cfg(feature = "regex")]
    #[test]
    fn repeated_headers_pass_when_any_value_passes() {
        let twice = resp(200, &[(VARY, b"accept"), (VARY, b"origin")]);
        assert!(on_response(&Header::equals(VARY, "accept"), &twice));
        assert!(on_response(&Header::equals(VARY, "origin"), &twice));
        assert!(on_response(&Header::one_of(VARY, ["x", "origin"]), &twice));
        assert!(on_response(&Header::contains(VARY, "rig"), &twice));
        assert!(on_response(
            &Header::regex(VARY, Regex::new("^acc").unwrap()),
            &twice
        ));
        assert!(!on_response(&Header::equals(VARY, "accept, origin"), &twice));
        let joined = resp(200, &[(VARY, b"accept, origin")]);
        assert!(!on_response(&Header::equals(VARY, "origin"), &joined));
        assert!(on_response(&Header::contains(VARY, "origin"), &joined));
        // "Not any value equals x" is the negation: every value differs.
        let not_accept = Header::equals(VARY, "accept").not();
        assert!(!on_response(&not_accept, &twice));
        assert!(on_response(&not_accept, &joined));
    }

    #[test]
    fn header_checks_a_header_map_directly() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1"));
        assert!(Header::present(COOKIE).check(&headers));
        assert!(!Header::present(AUTHORIZATION).check(&headers));
    }

    #[test]
    fn query_present_equals_one_of() {
        let parts = req("/s?q=rust+cache&lang=fr%2DCA&flag&tag=a&tag=b&%61%62=c&empty=");
        assert!(Query::present("q").check(&parts));
        assert!(Query::present("flag").check(&parts));
        assert!(Query::present("ab").check(&parts));
        assert!(!Query::present("missing").check(&parts));
        assert!(!Query::present("Q").check(&parts));
        assert!(Query::equals("q", "rust cache").check(&parts));
        assert!(!Query::equals("q", "rust+cache").check(&parts));
        assert!(Query::equals("lang", "fr-CA").check(&parts));
        assert!(Query::equals("flag", "").check(&parts));
        assert!(Query::equals("empty", "").check(&parts));
        assert!(Query::equals("tag", "a").check(&parts));
        assert!(Query::equals("tag", "b").check(&parts));
        assert!(!Query::equals("tag", "a&tag=b").check(&parts));
        assert!(Query::one_of("lang", ["en", "fr-CA"]).check(&parts));
        assert!(!Query::one_of("lang", ["en", "fr"]).check(&parts));
        assert!(Query::one_of("tag", [String::from("b")]).check(&parts));
        assert!(!Query::present("q").check(&req("/s")));
        assert!(!Query::present("q").check(&req("/s?")));
        assert!(Query::equals("a&b", "c=d").check(&req("/s?a%26b=c%3Dd")));
        assert!(!Query::equals("a", "1&b=2").check(&req("/s?a=1&b=2")));
        assert!(Query::equals("a", "1&b=2").check(&req("/s?a=1%26b%3D2")));
    }

    #[test]
    fn request_body_size() {
        let limit = BodySize::at_most(100);
        assert!(on_request(&limit, &req("/")));
        assert!(on_request(&BodySize::at_most(0), &req("/")));
        assert!(on_request(&limit, &req_with("/", &[(CONTENT_LENGTH, b"100")])));
        assert!(!on_request(&limit, &req_with("/", &[(CONTENT_LENGTH, b"101")])));
        assert!(on_request(&limit, &req_with("/", &[(CONTENT_LENGTH, b"0")])));
        let chunked = req_with("/", &[(TRANSFER_ENCODING, b"chunked")]);
        assert!(!on_request(&limit, &chunked));
        assert!(on_request(&limit.allow_unknown(true), &chunked));
        let both = req_with("/", &[(TRANSFER_ENCODING, b"chunked"), (CONTENT_LENGTH, b"5")]);
        assert!(!on_request(&limit, &both));
    }

    #[test]
    fn content_length_must_be_one_clean_number() {
        let limit = BodySize::at_most(100);
        let check = |values: &[&[u8]]| {
            let headers: Vec<_> = values.iter().map(|v| (CONTENT_LENGTH, *v)).collect();
            on_request(&limit, &req_with("/", &headers))
        };
        assert!(check(&[b"10", b"10"]));
        assert!(check(&[b"10, 10"]));
        assert!(check(&[b" 10 "]));
        assert!(check(&[b"007"]));
        assert!(!check(&[b"10", b"11"]));
        assert!(!check(&[b"10, 11"]));
        assert!(!check(&[b"-1"]));
        assert!(!check(&[b"+1"]));
        assert!(!check(&[b""]));
        assert!(!check(&[b"1e2"]));
        assert!(!check(&[b"99999999999999999999999"]));
        assert!(!check(&[b"1\xff"]));
        assert!(!on_request(
            &limit.allow_unknown(true),
            &req_with("/", &[(CONTENT_LENGTH, b"ten")])
        ));
        assert!(on_request(
            &BodySize::at_most(u64::MAX),
            &req_with("/", &[(CONTENT_LENGTH, b"18446744073709551615")])
        ));
    }

    #[test]
    fn response_body_size() {
        let limit = BodySize::at_most(10);
        assert!(on_response(&limit, &resp(200, &[(CONTENT_LENGTH, b"10")])));
        assert!(!on_response(&limit, &resp(200, &[(CONTENT_LENGTH, b"11")])));
        assert!(!on_response(&limit, &resp(200, &[])));
        assert!(on_response(&limit.allow_unknown(true), &resp(200, &[])));
        assert!(!on_response(
            &limit,
            &resp(200, &[(TRANSFER_ENCODING, b"chunked")])
        ));
        assert!(on_response(&limit, &resp(204, &[])));
        assert!(on_response(&limit, &resp(304, &[])));
        assert!(on_response(&limit, &resp(103, &[])));
        assert!(!on_response(&limit, &resp(304, &[(CONTENT_LENGTH, b"11")])));
    }

    #[test]
    fn status_class() {
        assert_eq!(
            StatusClass::of(StatusCode::CONTINUE),
            Some(StatusClass::Informational)
        );
        assert_eq!(StatusClass::of(StatusCode::OK), Some(StatusClass::Success));
        assert_eq!(StatusClass::of(StatusCode::FOUND), Some(StatusClass::Redirection));
        assert_eq!(StatusClass::of(StatusCode::GONE), Some(StatusClass::ClientError));
        assert_eq!(
            StatusClass::of(StatusCode::BAD_GATEWAY),
            Some(StatusClass::ServerError)
        );
        assert_eq!(StatusClass::of(StatusCode::from_u16(600).unwrap()), None);
        assert_eq!(StatusClass::of(StatusCode::from_u16(999).unwrap()), None);
        for code in 100..=999 {
            let status = StatusCode::from_u16(code).unwrap();
            for class in [
                StatusClass::Informational,
                StatusClass::Success,
                StatusClass::Redirection,
                StatusClass::ClientError,
                StatusClass::ServerError,
            ] {
                assert_eq!(
                    class.contains(status),
                    StatusClass::of(status) == Some(class),
                    "{code}"
                );
            }
        }
    }

    #[test]
    fn status_code_class_and_range() {
        let ok = resp(200, &[]);
        let partial = resp(206, &[]);
        let missing = resp(404, &[]);
        assert!(Status::code(StatusCode::OK).check(&ok));
        assert!(!Status::code(StatusCode::OK).check(&partial));
        assert!(Status::class(StatusClass::Success).check(&partial));
        assert!(!Status::class(StatusClass::Success).check(&missing));
        assert!(Status::class(StatusClass::Success).check(&resp(299, &[])));
        assert!(!Status::class(StatusClass::Success).check(&resp(300, &[])));
        assert!(!Status::class(StatusClass::Success).check(&resp(199, &[])));
        assert!(Status::range(200..300).check(&resp(299, &[])));
        assert!(!Status::range(200..300).check(&resp(300, &[])));
        assert!(Status::range(200..=300).check(&resp(300, &[])));
        assert!(Status::range(400..).check(&resp(599, &[])));
        assert!(!Status::range(400..).check(&resp(399, &[])));
        assert!(Status::range(..).check(&ok));
        assert!(Status::range(..=200).check(&ok));
        assert!(!Status::range(..200).check(&ok));
        assert!(!Status::range(200..200).check(&ok));
        assert!(!Status::range(..0).check(&resp(100, &[])));
        assert!(!Status::range((Bound::Excluded(u16::MAX), Bound::Unbounded)).check(&ok));
        assert!(!Status::range((Bound::Excluded(200), Bound::Included(200))).check(&ok));
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = Status::range(300..=200);
        assert!(!reversed.check(&ok));
        assert_eq!(Status::class(StatusClass::Success), Status::range(200..300));
    }

    #[test]
    fn combinators_with_core_and_or_not() {
        let cacheable = Method::is(http::Method::GET)
            .and(Path::prefix("/api"))
            .and(Header::present(AUTHORIZATION).not())
            .and(Query::equals("nocache", "1").not());
        assert!(cacheable.check(&req("/api/x")));
        assert!(!cacheable.check(&req("/web/x")));
        assert!(!cacheable.check(&req("/api/x?nocache=1")));
        assert!(cacheable.check(&req("/api/x?nocache=0")));
        assert!(!cacheable.check(&req_with("/api/x", &[(AUTHORIZATION, b"Bearer t")])));
        let mut post = req("/api/x");
        post.method = http::Method::POST;
        assert!(!cacheable.check(&post));

        let storable = Status::class(StatusClass::Success)
            .or(Status::code(StatusCode::MOVED_PERMANENTLY))
            .and(Header::present(SET_COOKIE).not())
            .and(Header::contains(CACHE_CONTROL, "no-store").not())
            .and(BodySize::at_most(1024));
        assert!(storable.check(&resp(200, &[(CONTENT_LENGTH, b"3")])));
        assert!(storable.check(&resp(301, &[(CONTENT_LENGTH, b"0")])));
        assert!(!storable.check(&resp(302, &[(CONTENT_LENGTH, b"0")])));
        assert!(!storable.check(&resp(200, &[(CONTENT_LENGTH, b"3"), (SET_COOKIE, b"a=1")])));
        assert!(!storable.check(&resp(
            200,
            &[(CONTENT_LENGTH, b"3"), (CACHE_CONTROL, b"public, no-store")]
        )));
        assert!(!storable.check(&resp(200, &[(CONTENT_LENGTH, b"4096")])));

        // Closures mix in, and one value works for both sides.
        let has_json = Header::contains(ACCEPT, "json");
        let not_root = |parts: &request::Parts| parts.uri.path() != "/";
        let rule = not_root.and(has_json.clone());
        assert!(rule.check(&req_with("/x", &[(ACCEPT, b"application/json")])));
        assert!(!rule.check(&req_with("/", &[(ACCEPT, b"application/json")])));
        assert!(on_response(&has_json, &resp(200, &[(ACCEPT, b"json")])));
    }

    #[test]
    fn two_sided_predicates_combine_without_naming_the_side() {
        let either = Header::present(AUTHORIZATION).or(Header::present(COOKIE));
        assert!(on_request(&either, &req_with("/", &[(COOKIE, b"a=1")])));
        assert!(!on_request(&either, &req("/")));
        assert!(on_response(&either, &resp(200, &[(AUTHORIZATION, b"x")])));
        let both = Header::present(ACCEPT).and(BodySize::at_most(10));
        assert!(on_request(&both, &req_with("/", &[(ACCEPT, b"*/*")])));
        assert!(!on_request(
            &both,
            &req_with("/", &[(ACCEPT, b"*/*"), (CONTENT_LENGTH, b"11")])
        ));
        assert!(!on_response(&both, &resp(200, &[(ACCEPT, b"*/*")])));
        let small = BodySize::at_most(5).not();
        assert!(on_response(&small, &resp(200, &[(CONTENT_LENGTH, b"6")])));
        assert!(!on_request(&small, &req("/")));
        let neither = Predicate::<request::Parts>::not(either);
        assert!(neither.check(&req("/")));
        assert!(!neither.check(&req_with("/", &[(AUTHORIZATION, b"x")])));
    }

    #[cfg(feature = "regex")]
    #[test]
    fn predicates_are_send_sync_clone_static() {
        fn usable<T: Clone + Send + Sync + 'static>(_: &T) {}
        usable(&Method::any_of([http::Method::GET]));
        usable(&Path::pattern(PathPattern::new("/{a}")));
        usable(&Header::regex(ACCEPT, Regex::new("x").unwrap()));
        usable(&Query::one_of("a", ["b"]));
        usable(&BodySize::at_most(1));
        usable(&Status::class(StatusClass::Success));
        let shared: std::sync::Arc<dyn Predicate<request::Parts> + Send + Sync> =
            std::sync::Arc::new(Method::is(http::Method::GET).and(Header::present(ACCEPT)));
        assert!(!shared.check(&req("/")));
    }
}
