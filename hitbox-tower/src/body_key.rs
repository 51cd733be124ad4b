//! What a request body adds to the key of a rule that caches it as a read
//! (a query-style `POST`: search, JSON-RPC reads, GraphQL queries).

#[cfg(feature = "json")]
use std::sync::Arc;

use blake2::{Blake2b, Digest, digest::consts::U32};
use hitbox_core::KeyBuilder;
use http::header;
#[cfg(feature = "json")]
use http::header::HeaderMap;
use http::request::Parts;

use crate::headers::BypassReason;
use crate::predicate::ReadBody;

/// How a request body becomes part of the key: see
/// [`Rule::post_as_read`](crate::Rule::post_as_read).
///
/// - [`BodyKey::digest`]: the bytes as they are (with the request's
///   `Content-Type` and `Content-Encoding`).
/// - [`BodyKey::json`]: the body as JSON, in a canonical form: member order,
///   whitespace and the spelling of string escapes do not split entries;
///   every other difference does (numbers are compared as written). A body
///   that is not JSON passes through uncached. Feature `json`.
/// - [`BodyKey::json_fields`]: only the values at the JSON Pointers named,
///   in canonical form. Two bodies that differ elsewhere share an entry:
///   name every field the response depends on. Feature `json`.
///
/// Every kind keys a `POST` by its body (an empty one when it has none),
/// and any other request that has a body; a `GET` or `HEAD` without one is
/// keyed by its URL alone, as under a rule without a body key. The key
/// holds a BLAKE2b-256 digest of what the body adds, never the body itself.
///
/// ```
/// use hitbox_tower::{BodyKey, Rule};
/// use hitbox_tower::predicate::Path;
///
/// let search = Rule::new().when(Path::exact("/search")).post_as_read(BodyKey::digest());
/// ```
#[derive(Clone)]
pub struct BodyKey {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Digest,
    #[cfg(feature = "json")]
    Json,
    #[cfg(feature = "json")]
    JsonFields(Arc<[Box<str>]>),
    #[cfg(feature = "json")]
    GraphQl(crate::graphql::GraphQl),
}

impl std::fmt::Debug for BodyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Digest => f.write_str("BodyKey::digest()"),
            #[cfg(feature = "json")]
            Kind::Json => f.write_str("BodyKey::json()"),
            #[cfg(feature = "json")]
            Kind::JsonFields(pointers) => f.debug_tuple("BodyKey::json_fields").field(pointers).finish(),
            #[cfg(feature = "json")]
            Kind::GraphQl(graphql) => f.debug_tuple("BodyKey::graphql").field(graphql).finish(),
        }
    }
}

impl BodyKey {
    /// The body's bytes, as they are, with its `Content-Type` and
    /// `Content-Encoding`.
    pub fn digest() -> Self {
        BodyKey { kind: Kind::Digest }
    }

    /// The body as JSON, normalised (see the [type documentation](BodyKey)),
    /// with its media type. Requests whose `Content-Type` is not JSON
    /// (`application/json` or a `+json` type, in UTF-8), whose body is
    /// compressed (`Content-Encoding`), or whose body is not strict JSON
    /// (see [`ReadBody::json`]) pass through uncached (`Cache-Status:
    /// fwd=bypass; detail=invalid-json`). Feature `json`.
    ///
    /// ```
    /// use hitbox_tower::{BodyKey, Rule};
    /// use hitbox_tower::predicate::Path;
    ///
    /// // `{"q": "rust", "page": 2}` and `{ "page":2, "q":"rust" }` share an entry.
    /// let rule = Rule::new().when(Path::exact("/search")).post_as_read(BodyKey::json());
    /// ```
    #[cfg(feature = "json")]
    pub fn json() -> Self {
        BodyKey { kind: Kind::Json }
    }

    /// Only the JSON values at `pointers` (RFC 6901: `/method`,
    /// `/params/0`), each normalised; a pointer that selects nothing is
    /// recorded as absent (which differs from `null`). Everything else in
    /// the body is left out of the key, so requests that differ only there
    /// share one entry: name every field the response depends on. The
    /// same requests as for [`BodyKey::json`] pass through. Feature `json`.
    ///
    /// ```
    /// use hitbox_tower::{BodyKey, Rule};
    /// use hitbox_tower::predicate::{Json, Path};
    ///
    /// // JSON-RPC: the request `id` is not part of the key; the method and
    /// // its parameters are. Only read methods are cached.
    /// let rule = Rule::new()
    ///     .when(Path::exact("/rpc"))
    ///     .post_as_read(BodyKey::json_fields(["/method", "/params"]))
    ///     .when_body(Json::one_of("/method", ["getBalance", "getBlock"]));
    /// ```
    #[cfg(feature = "json")]
    pub fn json_fields<I>(pointers: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let pointers = pointers.into_iter().map(|p| p.as_ref().into()).collect();
        BodyKey {
            kind: Kind::JsonFields(pointers),
        }
    }

    #[cfg(feature = "json")]
    pub(crate) fn graphql(graphql: crate::graphql::GraphQl) -> Self {
        BodyKey {
            kind: Kind::GraphQl(graphql),
        }
    }

    /// Whether a `GET` with a body may be cached under this key (the GraphQL
    /// preset reads a `GET`'s URL, never its body).
    pub(crate) fn keys_get_bodies(&self) -> bool {
        match self.kind {
            #[cfg(feature = "json")]
            Kind::GraphQl(_) => false,
            _ => true,
        }
    }

    /// Adds what the body selects to `key`; `Err` when the request must
    /// pass through uncached instead.
    pub(crate) fn apply(
        &self,
        parts: &Parts,
        body: &ReadBody,
        key: &mut KeyBuilder,
    ) -> Result<(), BypassReason> {
        let keyed_by_body = parts.method == http::Method::POST || !body.is_empty();
        match &self.kind {
            // A `GET` without a body, under a rule that also caches `POST`s:
            // its URL is its key.
            Kind::Digest if !keyed_by_body => Ok(()),
            #[cfg(feature = "json")]
            Kind::Json | Kind::JsonFields(_) if !keyed_by_body => Ok(()),
            Kind::Digest => {
                for (name, part) in [
                    (header::CONTENT_TYPE, "body.type"),
                    (header::CONTENT_ENCODING, "body.encoding"),
                ] {
                    for value in &parts.headers.get_all(name) {
                        key.push(part, Some(value.as_bytes()));
                    }
                }
                key.push("body", Some(digest_hex(&[body.bytes()]).as_bytes()));
                Ok(())
            }
            #[cfg(feature = "json")]
            Kind::Json => {
                let tree = json_body(&parts.headers, body, key)?;
                key.push("body.json", Some(digest_hex(&[&tree.canonical()]).as_bytes()));
                Ok(())
            }
            #[cfg(feature = "json")]
            Kind::JsonFields(pointers) => {
                let tree = json_body(&parts.headers, body, key)?;
                for pointer in pointers.iter() {
                    let value = tree.pointer(pointer).map(|node| digest_hex(&[&node.canonical()]));
                    key.push_prefixed(
                        "body.json",
                        pointer.as_bytes(),
                        value.as_deref().map(str::as_bytes),
                    );
                }
                Ok(())
            }
            #[cfg(feature = "json")]
            Kind::GraphQl(graphql) => {
                if parts.method == http::Method::POST {
                    let tree = json_body(&parts.headers, body, key)?;
                    graphql.check_body(tree)?;
                    key.push("graphql", Some(digest_hex(&[&tree.canonical()]).as_bytes()));
                    return Ok(());
                }
                // `GET` (and `HEAD`, looked up as it): the URL's parameters,
                // whatever else the rule's key takes.
                let fields = graphql.check_url(parts)?;
                let mut digest = Blake2b::<U32>::new();
                for field in &fields {
                    match field {
                        None => digest.update([0]),
                        Some(text) => {
                            digest.update([1]);
                            digest.update((text.len() as u64).to_be_bytes());
                            digest.update(text.as_bytes());
                        }
                    }
                }
                key.push("graphql.url", Some(hex::encode(digest.finalize()).as_bytes()));
                Ok(())
            }
        }
    }
}

fn digest_hex(pieces: &[&[u8]]) -> String {
    let mut digest = Blake2b::<U32>::new();
    for piece in pieces {
        digest.update(piece);
    }
    hex::encode(digest.finalize())
}

/// The body's strict JSON, once its headers say it is JSON as it is; its
/// media type goes into the key (`application/vnd.api.v2+json` may be
/// answered otherwise than `application/json`).
#[cfg(feature = "json")]
fn json_body<'b>(
    headers: &HeaderMap,
    body: &'b ReadBody,
    key: &mut KeyBuilder,
) -> Result<&'b crate::json::Node, BypassReason> {
    let media = json_media_type(headers).ok_or(BypassReason::InvalidJson)?;
    let identity = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .all(|value| value.as_bytes().eq_ignore_ascii_case(b"identity"));
    if !identity {
        return Err(BypassReason::InvalidJson);
    }
    let tree = body.tree().ok_or(BypassReason::InvalidJson)?;
    key.push("body.type", Some(media.as_bytes()));
    Ok(tree)
}

/// The media type of a JSON body, lower-cased, without parameters: one
/// `Content-Type`, `application/json` or `…+json`, and a `charset`, if any,
/// of UTF-8.
#[cfg(feature = "json")]
fn json_media_type(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let mut pieces = value.split(';');
    let media = pieces.next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = media.split_once('/')?;
    if kind != "application" || !(subtype == "json" || subtype.ends_with("+json")) {
        return None;
    }
    for parameter in pieces {
        let (name, value) = parameter.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("charset") {
            let value = value.trim().trim_matches('"');
            if !value.eq_ignore_ascii_case("utf-8") {
                return None;
            }
        }
    }
    Some(media)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn key_of(body_key: &BodyKey, headers: &[(&str, &str)], body: &str) -> Result<String, BypassReason> {
        let mut request = http::Request::post("/search");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (parts, ()) = request.body(()).unwrap().into_parts();
        let mut key = KeyBuilder::new("t");
        body_key.apply(
            &parts,
            &ReadBody::new(Bytes::copy_from_slice(body.as_bytes())),
            &mut key,
        )?;
        Ok(key.build().as_str().to_owned())
    }

    #[test]
    fn digest_keys_the_bytes_and_how_to_read_them() {
        let digest = BodyKey::digest();
        let plain = key_of(&digest, &[], "a=1").unwrap();
        assert!(plain.starts_with("t:v1:body="), "{plain}");
        assert_ne!(plain, key_of(&digest, &[], "a=2").unwrap());
        let form = key_of(
            &digest,
            &[("content-type", "application/x-www-form-urlencoded")],
            "a=1",
        )
        .unwrap();
        assert_ne!(plain, form);
        let gzip = key_of(&digest, &[("content-encoding", "gzip")], "a=1").unwrap();
        assert_ne!(plain, gzip);
        assert!(!plain.contains("a=1"), "the body itself never reaches the key");
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_keys_share_across_order_and_whitespace_only() {
        let json = BodyKey::json();
        let ct = [("content-type", "application/json")];
        let a = key_of(&json, &ct, r#"{"q":"rust","page":2}"#).unwrap();
        let b = key_of(&json, &ct, "{ \"page\" : 2 ,\n \"q\" : \"\\u0072ust\" }").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, key_of(&json, &ct, r#"{"q":"rust","page":3}"#).unwrap());
        assert_ne!(a, key_of(&json, &ct, r#"{"q":"rust","page":2.0}"#).unwrap());
        assert_ne!(
            a,
            key_of(&json, &ct, r#"{"q":"rust","page":2,"x":null}"#).unwrap()
        );
        let charset = [("content-type", "Application/JSON; charset=\"UTF-8\"")];
        assert_eq!(a, key_of(&json, &charset, r#"{"q":"rust","page":2}"#).unwrap());
        let vendor = [("content-type", "application/vnd.api+json")];
        assert_ne!(a, key_of(&json, &vendor, r#"{"q":"rust","page":2}"#).unwrap());
        for (headers, body) in [
            (&ct[..], r#"{"q":"rust","#),
            (&ct[..], r#"{"q":"rust","q":"go"}"#),
            (&ct[..], ""),
            (&[][..], r#"{"q":"rust"}"#),
            (&[("content-type", "text/plain")][..], r#"{"q":"rust"}"#),
            (
                &[("content-type", "application/json; charset=utf-16")][..],
                r#"{"q":"rust"}"#,
            ),
            (
                &[("content-type", "application/json"), ("content-encoding", "gzip")][..],
                r#"{"q":"rust"}"#,
            ),
            (
                &[
                    ("content-type", "application/json"),
                    ("content-type", "text/plain"),
                ][..],
                r#"{"q":"rust"}"#,
            ),
        ] {
            assert_eq!(
                key_of(&json, headers, body),
                Err(BypassReason::InvalidJson),
                "{headers:?} {body}"
            );
        }
        assert!(
            key_of(
                &json,
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "identity")
                ],
                "{}"
            )
            .is_ok()
        );
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_fields_key_only_what_they_name() {
        let fields = BodyKey::json_fields(["/method", "/params"]);
        let ct = [("content-type", "application/json")];
        let a = key_of(&fields, &ct, r#"{"method":"get","params":{"a":1,"b":2},"id":1}"#).unwrap();
        let b = key_of(&fields, &ct, r#"{"id":2,"params":{"b":2,"a":1},"method":"get"}"#).unwrap();
        assert_eq!(a, b, "the id is not part of the key");
        let other = key_of(&fields, &ct, r#"{"method":"get","params":{"a":1,"b":3},"id":1}"#).unwrap();
        assert_ne!(a, other);
        let absent = key_of(&fields, &ct, r#"{"method":"get"}"#).unwrap();
        let null = key_of(&fields, &ct, r#"{"method":"get","params":null}"#).unwrap();
        assert_ne!(absent, null, "absent differs from null");
        assert!(a.contains("body.json/method="), "{a}");
    }
}
