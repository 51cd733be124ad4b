//! Predicates over a body read whole: a JSON value at a pointer, a regular
//! expression, the size as read.
//!
//! A rule reads a request body for [`Rule::when_body`](crate::Rule::when_body)
//! (up to [`Rule::request_body_limit`](crate::Rule::request_body_limit)),
//! and judges a response body for
//! [`Rule::store_when_body`](crate::Rule::store_when_body) (up to
//! [`Rule::max_body_size`](crate::Rule::max_body_size)), as a
//! [`ReadBody`]. The bytes go on unchanged either way; a body over the
//! limit is never read (or stored) and the predicate counts as false.

use std::ops::{Bound, RangeBounds};
#[cfg(feature = "json")]
use std::sync::Arc;
#[cfg(feature = "json")]
use std::sync::OnceLock;

use bytes::Bytes;
use hitbox_core::Predicate;

/// A body as it was read, whole, for body predicates.
///
/// Its JSON is parsed at most once, however many predicates ask for it, and
/// only when one does.
///
/// ```
/// use bytes::Bytes;
/// use hitbox_core::Predicate;
/// use hitbox_tower::predicate::ReadBody;
///
/// let body = ReadBody::new(Bytes::from_static(b"{\"error\": \"not found\"}"));
/// let is_error = |body: &ReadBody| body.bytes().starts_with(b"{\"error\"");
/// assert!(is_error.check(&body));
/// assert_eq!(body.len(), 22);
/// ```
pub struct ReadBody {
    bytes: Bytes,
    #[cfg(feature = "json")]
    tree: OnceLock<Option<crate::json::Node>>,
    #[cfg(feature = "json")]
    value: OnceLock<Option<serde_json::Value>>,
}

impl std::fmt::Debug for ReadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBody")
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl ReadBody {
    /// A body of `bytes`.
    pub fn new(bytes: Bytes) -> Self {
        ReadBody {
            bytes,
            #[cfg(feature = "json")]
            tree: OnceLock::new(),
            #[cfg(feature = "json")]
            value: OnceLock::new(),
        }
    }

    /// The bytes, as they were received.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// How many bytes were read.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the body is empty (or there was none).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The body as UTF-8 text, if it is.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// The body as JSON, read strictly: `None` when it is not one JSON text
    /// by RFC 8259, or when it could be read two ways (an object with a
    /// name twice, which parsers resolve differently). Feature `json`.
    #[cfg(feature = "json")]
    pub fn json(&self) -> Option<&serde_json::Value> {
        self.value
            .get_or_init(|| self.tree().and_then(crate::json::Node::to_value))
            .as_ref()
    }

    /// The strict parse, with numbers as written: what keys are built from.
    #[cfg(feature = "json")]
    pub(crate) fn tree(&self) -> Option<&crate::json::Node> {
        self.tree.get_or_init(|| crate::json::parse(&self.bytes)).as_ref()
    }
}

/// The size of a body as it was read (not as declared), within a range.
///
/// A body larger than the rule's limit is never read: the predicate is then
/// false, whatever the range.
///
/// ```
/// use bytes::Bytes;
/// use hitbox_core::Predicate;
/// use hitbox_tower::predicate::{ReadBody, ReadSize};
///
/// let body = ReadBody::new(Bytes::from_static(b"hello"));
/// assert!(ReadSize::at_most(5).check(&body));
/// assert!(!ReadSize::at_most(4).check(&body));
/// assert!(ReadSize::range(1..).check(&body));
/// assert!(!ReadSize::range(1..).check(&ReadBody::new(Bytes::new())));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSize {
    first: usize,
    last: usize,
}

impl ReadSize {
    /// Passes bodies of at most `bytes` bytes.
    pub fn at_most(bytes: usize) -> Self {
        ReadSize {
            first: 0,
            last: bytes,
        }
    }

    /// Passes bodies whose size is in `range` (`1..`, `..=1024`). An empty
    /// range passes nothing.
    pub fn range(range: impl RangeBounds<usize>) -> Self {
        let first = match range.start_bound() {
            Bound::Included(&n) => Some(n),
            Bound::Excluded(&n) => n.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let last = match range.end_bound() {
            Bound::Included(&n) => Some(n),
            Bound::Excluded(&n) => n.checked_sub(1),
            Bound::Unbounded => Some(usize::MAX),
        };
        match (first, last) {
            (Some(first), Some(last)) => ReadSize { first, last },
            _ => ReadSize { first: 1, last: 0 },
        }
    }
}

impl Predicate<ReadBody> for ReadSize {
    fn check(&self, body: &ReadBody) -> bool {
        (self.first..=self.last).contains(&body.len())
    }
}

/// A regular expression that matches somewhere in the body (anchor it with
/// `^` and `$` to match the whole). A body that is not UTF-8 fails.
/// Feature `regex`.
///
/// ```
/// use bytes::Bytes;
/// use hitbox_core::Predicate;
/// use hitbox_tower::predicate::{BodyRegex, ReadBody};
/// use regex::Regex;
///
/// let search = BodyRegex::new(Regex::new(r#""kind"\s*:\s*"(search|lookup)""#).unwrap());
/// assert!(search.check(&ReadBody::new(Bytes::from_static(br#"{"kind": "lookup"}"#))));
/// assert!(!search.check(&ReadBody::new(Bytes::from_static(br#"{"kind": "delete"}"#))));
/// assert!(!search.check(&ReadBody::new(Bytes::from_static(b"\xff\"kind\":\"search\""))));
/// ```
#[cfg(feature = "regex")]
#[derive(Debug, Clone)]
pub struct BodyRegex {
    regex: regex::Regex,
}

#[cfg(feature = "regex")]
impl BodyRegex {
    /// Passes bodies that `regex` matches.
    pub fn new(regex: regex::Regex) -> Self {
        BodyRegex { regex }
    }
}

#[cfg(feature = "regex")]
impl Predicate<ReadBody> for BodyRegex {
    fn check(&self, body: &ReadBody) -> bool {
        body.text().is_some_and(|text| self.regex.is_match(text))
    }
}

/// A JSON value in the body, at a JSON Pointer (RFC 6901, as
/// `serde_json::Value::pointer` reads it: `""` is the whole body,
/// `/user/name` a member of a member, `/items/0` the first of an array,
/// `~1` a `/` and `~0` a `~` in a name): present, equal to a value, or one
/// of several. Feature `json`.
///
/// False when the body is not JSON (read strictly, as for
/// [`ReadBody::json`]: RFC 8259, no name twice in an object) or the pointer
/// selects nothing (a missing member, an
/// index past the end, a pointer that does not start with `/`). Values are
/// compared as `serde_json` values: `1` and `1.0` differ, and object member
/// order does not matter.
///
/// ```
/// use bytes::Bytes;
/// use hitbox_core::Predicate;
/// use hitbox_tower::predicate::{Json, ReadBody};
/// use serde_json::json;
///
/// let body = ReadBody::new(Bytes::from_static(
///     br#"{"method": "getBalance", "params": {"account": "a1"}, "id": 7}"#,
/// ));
/// assert!(Json::exists("/params/account").check(&body));
/// assert!(Json::equals("/method", "getBalance").check(&body));
/// assert!(Json::one_of("/method", ["getBalance", "getBlock"]).check(&body));
/// assert!(Json::equals("/id", 7).check(&body));
/// assert!(!Json::equals("/id", json!(7.0)).check(&body));
/// assert!(!Json::exists("/error").check(&body));
///
/// // Error bodies with a 200 status are not stored:
/// let not_an_error = Json::exists("/error").not();
/// assert!(!not_an_error.check(&ReadBody::new(Bytes::from_static(br#"{"error": "timeout"}"#))));
/// // Not JSON at all: every JSON predicate is false.
/// assert!(!Json::exists("").check(&ReadBody::new(Bytes::from_static(b"<html>"))));
/// ```
#[cfg(feature = "json")]
#[derive(Debug, Clone)]
pub struct Json {
    pointer: Arc<str>,
    test: JsonTest,
}

#[cfg(feature = "json")]
#[derive(Debug, Clone)]
enum JsonTest {
    Exists,
    Equals(serde_json::Value),
    OneOf(Arc<[serde_json::Value]>),
}

#[cfg(feature = "json")]
impl Json {
    /// Passes when `pointer` selects a value (`null` included).
    pub fn exists(pointer: impl Into<Arc<str>>) -> Self {
        Json {
            pointer: pointer.into(),
            test: JsonTest::Exists,
        }
    }

    /// Passes when the value at `pointer` equals `value`.
    pub fn equals(pointer: impl Into<Arc<str>>, value: impl Into<serde_json::Value>) -> Self {
        Json {
            pointer: pointer.into(),
            test: JsonTest::Equals(value.into()),
        }
    }

    /// Passes when the value at `pointer` equals one of `values` (none,
    /// when it is empty).
    pub fn one_of<V: Into<serde_json::Value>>(
        pointer: impl Into<Arc<str>>,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        Json {
            pointer: pointer.into(),
            test: JsonTest::OneOf(values.into_iter().map(Into::into).collect()),
        }
    }
}

/// Judged on the strict parse itself, not on a `serde_json::Value` made
/// from it: a predicate costs one parse and no copy of the body's values.
#[cfg(feature = "json")]
impl Predicate<ReadBody> for Json {
    fn check(&self, body: &ReadBody) -> bool {
        let Some(found) = body.tree().and_then(|tree| tree.pointer(&self.pointer)) else {
            return false;
        };
        match &self.test {
            JsonTest::Exists => true,
            JsonTest::Equals(expected) => found.equals(expected),
            JsonTest::OneOf(expected) => expected.iter().any(|e| found.equals(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(bytes: &'static [u8]) -> ReadBody {
        ReadBody::new(Bytes::from_static(bytes))
    }

    #[test]
    fn read_size_ranges() {
        let five = body(b"12345");
        assert!(ReadSize::range(5..=5).check(&five));
        assert!(!ReadSize::range(..5).check(&five));
        assert!(ReadSize::range(..).check(&five));
        assert!(!ReadSize::range((Bound::Excluded(usize::MAX), Bound::Unbounded)).check(&five));
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = ReadSize::range(6..=4);
        assert!(!reversed.check(&five));
        assert!(ReadSize::at_most(0).check(&body(b"")));
    }

    #[cfg(feature = "regex")]
    #[test]
    fn regex_on_text_only() {
        let digits = BodyRegex::new(regex::Regex::new(r"^\d+$").unwrap());
        assert!(digits.check(&body(b"123")));
        assert!(!digits.check(&body(b"12a")));
        assert!(!digits.check(&body(b"")));
        assert!(!digits.check(&body(b"1\xff")));
        let empty = BodyRegex::new(regex::Regex::new("").unwrap());
        assert!(empty.check(&body(b"")));
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_pointers_equal_one_of_exist() {
        use serde_json::json;
        let order = body(br#"{"kind":"order","lines":[{"sku":"a","qty":2}],"note":null,"a/b":1,"m~n":2}"#);
        assert!(Json::exists("").check(&order));
        assert!(Json::exists("/note").check(&order));
        assert!(Json::equals("/note", json!(null)).check(&order));
        assert!(Json::exists("/lines/0/sku").check(&order));
        assert!(Json::equals("/lines/0/qty", 2).check(&order));
        assert!(!Json::equals("/lines/0/qty", 2.0).check(&order));
        assert!(!Json::equals("/lines/0/qty", "2").check(&order));
        assert!(Json::equals("/lines", json!([{"qty": 2, "sku": "a"}])).check(&order));
        assert!(Json::equals("/a~1b", 1).check(&order));
        assert!(Json::equals("/m~0n", 2).check(&order));
        assert!(Json::one_of("/kind", ["quote", "order"]).check(&order));
        assert!(!Json::one_of("/kind", ["quote"]).check(&order));
        assert!(!Json::one_of("/kind", Vec::<String>::new()).check(&order));
        // Unknown pointers select nothing.
        for pointer in ["/missing", "/lines/1", "/lines/01", "/kind/x", "kind", "/lines/-"] {
            assert!(!Json::exists(pointer).check(&order), "{pointer}");
            assert!(!Json::equals(pointer, json!(null)).check(&order), "{pointer}");
        }
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_predicates_are_false_for_what_is_not_strict_json() {
        for text in [
            &b""[..],
            b"<html></html>",
            b"{\"kind\":\"order\"",
            b"{\"kind\":\"quote\",\"kind\":\"order\"}",
            b"{\"kind\":\"order\"} trailing",
            b"\xef\xbb\xbf{\"kind\":\"order\"}",
            b"{\"kind\":\"order\",}",
        ] {
            let read = ReadBody::new(Bytes::copy_from_slice(text));
            assert!(read.json().is_none(), "{text:?}");
            assert!(!Json::exists("").check(&read));
            assert!(!Json::equals("/kind", "order").check(&read));
            // `not` of a false predicate passes: "not an error" holds for a body
            // that is not JSON.
            assert!(Json::exists("/error").not().check(&read));
        }
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_is_parsed_once() {
        let read = body(br#"{"a":1}"#);
        let first = read.json().unwrap() as *const serde_json::Value;
        let again = read.json().unwrap() as *const serde_json::Value;
        assert_eq!(first, again);
        assert!(read.tree().is_some());
    }

    #[test]
    fn predicates_combine_and_are_send_sync() {
        fn usable<T: Clone + Send + Sync + 'static>(_: &T) {}
        usable(&ReadSize::at_most(1));
        let small_text = ReadSize::at_most(4).and(|body: &ReadBody| body.text().is_some());
        assert!(small_text.check(&body(b"abc")));
        assert!(!small_text.check(&body(b"abcde")));
        assert!(!small_text.check(&body(b"\xff")));
        #[cfg(feature = "json")]
        usable(&Json::equals("/a", 1));
        #[cfg(feature = "regex")]
        usable(&BodyRegex::new(regex::Regex::new("a").unwrap()));
    }
}
