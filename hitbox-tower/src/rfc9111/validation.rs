//! Validation (RFC 9111 section 4.3, RFC 9110 section 13): conditional
//! requests to the origin, `304` handling, and answering a client's own
//! conditional request from a stored response.

use http::header::{self, HeaderMap};

use super::date::parse_http_date;

/// Whether a stored response carries a validator the origin can check.
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// Whether a request is conditional in a way this cache answers.
pub fn is_conditional(request: &HeaderMap) -> bool {
    request.contains_key(header::IF_NONE_MATCH) || request.contains_key(header::IF_MODIFIED_SINCE)
}

/// Sets the validators of `stored` on a request to the origin: its `ETag`
/// as `If-None-Match` and its `Last-Modified` as `If-Modified-Since`. The
/// client's own conditions are replaced: their answer is computed from the
/// (revalidated) stored response instead.
pub fn add_validators(request: &mut HeaderMap, stored: &HeaderMap) {
    request.remove(header::IF_NONE_MATCH);
    request.remove(header::IF_MODIFIED_SINCE);
    request.remove(header::IF_MATCH);
    request.remove(header::IF_UNMODIFIED_SINCE);
    request.remove(header::IF_RANGE);
    if let Some(etag) = stored.get(header::ETAG) {
        request.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        request.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}

fn opaque(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/")
}

/// Weak comparison of entity tags (RFC 9110 section 8.8.3.2).
pub fn weak_eq(a: &str, b: &str) -> bool {
    opaque(a) == opaque(b)
}

/// The members of an `If-None-Match` (or `If-Match`) value: `*`, or
/// entity-tags (`"x"`, `W/"x"`) separated by commas. A comma inside the
/// quotes belongs to the tag (RFC 9110 section 8.8.3 allows it), so the
/// value is split between quoted strings, not at every comma.
fn entity_tags(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = value;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        let body = rest.strip_prefix("W/").unwrap_or(rest);
        let end = match body.strip_prefix('"') {
            // Up to the closing quote (or the end, for a broken tag).
            Some(quoted) => {
                let close = quoted.find('"').map_or(quoted.len(), |at| at + 1);
                rest.len() - body.len() + 1 + close
            }
            None => rest.find(',').unwrap_or(rest.len()),
        };
        let (tag, after) = rest.split_at(end);
        rest = after;
        Some(tag.trim())
    })
}

/// Whether a client's conditional `GET`/`HEAD` is answered `304 Not
/// Modified` by the stored response (RFC 9110 section 13.1.2 and 13.1.3):
/// `If-None-Match` decides when present, weakly matching the stored `ETag`
/// (or `*`); otherwise `If-Modified-Since` against `Last-Modified`, or
/// against `Date` when the stored response has no `Last-Modified`.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let etag = stored.get(header::ETAG).and_then(|v| v.to_str().ok());
    let mut inm = request.get_all(header::IF_NONE_MATCH).iter().peekable();
    if inm.peek().is_some() {
        return inm
            .filter_map(|v| v.to_str().ok())
            .flat_map(entity_tags)
            .any(|tag| tag == "*" || etag.is_some_and(|etag| weak_eq(tag, etag)));
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    // Without `Last-Modified`, the stored response's `Date` stands for it
    // (RFC 9111 section 4.3.2): it was current then.
    let modified = stored
        .get(header::LAST_MODIFIED)
        .or_else(|| stored.get(header::DATE))
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// Whether a `304` may update `stored` (RFC 9111 section 4.3.4): with a
/// strong `ETag` it must be the stored one's; else with a `Last-Modified`
/// it must equal the stored one's; without validators it selects the one
/// stored response.
pub fn selects(not_modified: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(tag) = get(not_modified, header::ETAG) {
        return get(stored, header::ETAG).is_some_and(|stored| weak_eq(tag, stored));
    }
    if let Some(modified) = get(not_modified, header::LAST_MODIFIED) {
        return get(stored, header::LAST_MODIFIED) == Some(modified);
    }
    true
}

fn get(map: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    map.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Updates a stored response's headers from a `304` (RFC 9111 section
/// 3.2): every field of the `304` replaces the stored one, but
/// `Content-Length` (the `304` has no body) and hop-by-hop fields.
pub fn update_headers(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    let mut fresh = not_modified.clone();
    super::connection::strip_hop_by_hop(&mut fresh);
    fresh.remove(header::CONTENT_LENGTH);
    fresh.remove("cache-status");
    let mut last = None;
    for (name, value) in fresh {
        match name {
            Some(name) => {
                stored.insert(name.clone(), value);
                last = Some(name);
            }
            None => {
                if let Some(name) = &last {
                    stored.append(name.clone(), value);
                }
            }
        }
    }
}

/// The headers of a `304` sent to a client from a stored response: the
/// fields RFC 9110 section 15.4.5 asks for, when present.
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for value in stored.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn if_none_match_is_split_between_quoted_tags() {
        let tags = |value| entity_tags(value).collect::<Vec<_>>();
        assert_eq!(tags(r#""a", W/"b,c" ,"d""#), [r#""a""#, r#"W/"b,c""#, r#""d""#]);
        assert_eq!(tags("*"), ["*"]);
        assert_eq!(tags(" , "), Vec::<&str>::new());
        assert_eq!(tags(r#""open"#), [r#""open"#]);
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, HeaderValue::from_static(r#""v1,2""#));
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static(r#""x", "v1,2""#));
        assert!(
            not_modified(&request, &stored),
            "a tag with a comma matches itself"
        );
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static(r#""v1""#));
        assert!(!not_modified(&request, &stored));
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn client_conditionals() {
        let stored = map(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(not_modified(&map(&[("if-none-match", "W/\"v1\"")]), &stored));
        assert!(not_modified(&map(&[("if-none-match", "\"x\", \"v1\"")]), &stored));
        assert!(not_modified(&map(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(&map(&[("if-none-match", "\"v2\"")]), &stored));
        // If-None-Match decides alone when present.
        let both = map(&[
            ("if-none-match", "\"v2\""),
            ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(!not_modified(&both, &stored));
        assert!(not_modified(
            &map(&[("if-modified-since", "Mon, 07 Nov 1994 08:49:37 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &map(&[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")]),
            &stored
        ));
        assert!(!not_modified(&map(&[("if-modified-since", "garbage")]), &stored));
        // No Last-Modified: the Date stands for it.
        let dated = map(&[("date", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        let since = |d: &str| map(&[("if-modified-since", d)]);
        assert!(not_modified(&since("Sun, 06 Nov 1994 08:49:37 GMT"), &dated));
        assert!(!not_modified(&since("Sat, 05 Nov 1994 08:49:37 GMT"), &dated));
        assert!(!not_modified(
            &since("Sun, 06 Nov 1994 08:49:37 GMT"),
            &HeaderMap::new()
        ));
    }

    #[test]
    fn a_304_updates_the_stored_headers_it_selects() {
        let mut stored = map(&[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=1"),
            ("content-length", "5"),
        ]);
        let fresh = map(&[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=60"),
            ("content-length", "0"),
            ("x-new", "1"),
        ]);
        assert!(selects(&fresh, &stored));
        assert!(!selects(&map(&[("etag", "\"v2\"")]), &stored));
        assert!(selects(&HeaderMap::new(), &stored));
        update_headers(&mut stored, &fresh);
        assert_eq!(stored["cache-control"], "max-age=60");
        assert_eq!(stored["content-length"], "5");
        assert_eq!(stored["x-new"], "1");
    }

    #[test]
    fn validators_replace_the_clients_conditions() {
        let mut request = map(&[("if-none-match", "\"old\""), ("accept", "*/*")]);
        add_validators(&mut request, &map(&[("etag", "\"v1\"")]));
        assert_eq!(request["if-none-match"], "\"v1\"");
        assert!(!request.contains_key("if-modified-since"));
    }
}
