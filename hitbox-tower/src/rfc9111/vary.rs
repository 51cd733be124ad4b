//! `Vary` (RFC 9111 section 4.1): which request fields select a response.

use http::header::{self, HeaderMap, HeaderName};

/// The field names a response's `Vary` lists, lower-cased, sorted and
/// deduplicated; `None` for `Vary: *`, which no request ever matches.
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in value.as_bytes().split(|&b| b == b',') {
            let name = name.trim_ascii();
            if name == b"*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// A request field's value as `Vary` compares it: its lines joined with
/// commas, each list member with its surrounding whitespace removed and
/// inner runs of whitespace folded to one space (RFC 9111 4.1 allows this
/// normalisation: it does not change what the field means). The bytes are
/// compared as they are, never decoded: two values that differ in any byte
/// outside that whitespace select different responses. An absent field is
/// `None`, which only matches absent.
///
/// `Accept-Language` is normalised further ([`language_preferences`]): its
/// language ranges lower-cased, in order of preference, without their
/// q-values, so that `en-US, fr;q=0.5` and `fr;q=0.1, EN-us` select the
/// same variant.
pub fn normalised(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    if name == header::ACCEPT_LANGUAGE {
        return language_preferences(headers).map(|ranges| ranges.join(&b","[..]));
    }
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = Vec::new();
    let mut first_member = true;
    for value in values {
        for member in value.as_bytes().split(|&b| b == b',') {
            if !first_member {
                out.push(b',');
            }
            first_member = false;
            let mut words = member
                .split(|b| b.is_ascii_whitespace())
                .filter(|word| !word.is_empty());
            if let Some(word) = words.next() {
                out.extend_from_slice(word);
            }
            for word in words {
                out.push(b' ');
                out.extend_from_slice(word);
            }
        }
    }
    Some(out)
}

/// The language ranges of a request's `Accept-Language`, lower-cased, most
/// preferred first (by q-value, then in the order written), each once;
/// ranges with `q=0` (not acceptable) are left out. A member whose q-value
/// is not a valid qvalue (`0` to `1`, three decimals at most) is kept as
/// written, unparsed, so that requests that differ in it never share a
/// variant. `None` when the field is absent.
///
/// ```
/// use hitbox_tower::rfc9111::vary::language_preferences;
/// use http::{HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("accept-language", HeaderValue::from_static("fr;q=0.5, EN-us, de;q=0"));
/// let ranges = language_preferences(&headers).unwrap();
/// assert_eq!(ranges, [b"en-us".to_vec(), b"fr".to_vec()]);
/// ```
pub fn language_preferences(headers: &HeaderMap) -> Option<Vec<Vec<u8>>> {
    let mut values = headers.get_all(header::ACCEPT_LANGUAGE).iter().peekable();
    values.peek()?;
    let mut ranges: Vec<(u16, Vec<u8>)> = Vec::new();
    for value in values {
        for member in value.as_bytes().split(|&b| b == b',') {
            let mut parts = member.split(|&b| b == b';');
            let tag = parts.next().unwrap_or_default().trim_ascii().to_ascii_lowercase();
            if tag.is_empty() {
                continue;
            }
            let mut weight = Some(1000);
            let mut raw = false;
            for param in parts {
                let param = param.trim_ascii();
                match param.strip_prefix(b"q=").or_else(|| param.strip_prefix(b"Q=")) {
                    Some(q) => weight = qvalue(q),
                    None => raw = true,
                }
            }
            let (weight, range) = match weight {
                Some(0) if !raw => continue,
                Some(weight) if !raw => (weight, tag),
                // Kept whole: the member itself, whitespace folded.
                _ => (1000, member.trim_ascii().to_vec()),
            };
            if !ranges.iter().any(|(_, known)| *known == range) {
                ranges.push((weight, range));
            }
        }
    }
    ranges.sort_by_key(|(weight, _)| std::cmp::Reverse(*weight));
    Some(ranges.into_iter().map(|(_, range)| range).collect())
}

/// A qvalue (RFC 9110 section 12.4.2) in thousandths.
fn qvalue(text: &[u8]) -> Option<u16> {
    let (whole, fraction) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &b""[..]),
    };
    if whole.len() != 1 || fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + fraction.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match whole[0] {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether a response in `Content-Language` is what a request's most
/// preferred language range asks for: equal to it, or a range that is a
/// prefix of it (`en` for `en-us`, RFC 4647 basic filtering), compared
/// without case.
pub fn language_served(response: &HeaderMap, request: &HeaderMap) -> bool {
    let mut languages = response.get_all(header::CONTENT_LANGUAGE).iter();
    let (Some(language), None) = (languages.next(), languages.next()) else {
        return false;
    };
    let language = language.as_bytes().trim_ascii().to_ascii_lowercase();
    if language.is_empty() || language.contains(&b',') {
        return false;
    }
    let Some(preferred) = language_preferences(request).and_then(|ranges| ranges.into_iter().next()) else {
        return false;
    };
    language == preferred
        || (language.starts_with(&preferred) && language.get(preferred.len()) == Some(&b'-'))
}

/// [`matches()`], and for `Accept-Language` also a request whose most
/// preferred language is the stored response's `Content-Language`
/// ([`language_served`]): the origin chose that language for a request that
/// preferred it, and would again.
pub fn matches_response(
    names: &[HeaderName],
    stored: &HeaderMap,
    request: &HeaderMap,
    response: &HeaderMap,
) -> bool {
    names.iter().all(|name| {
        normalised(stored, name) == normalised(request, name)
            || (name == header::ACCEPT_LANGUAGE && language_served(response, request))
    })
}

/// Whether a request with `request` headers may be served a response stored
/// for a request with `stored` headers, given the response's `names`.
pub fn matches(names: &[HeaderName], stored: &HeaderMap, request: &HeaderMap) -> bool {
    names
        .iter()
        .all(|name| normalised(stored, name) == normalised(request, name))
}

/// The request fields a stored response keeps for later `Vary` matching.
pub fn selecting_headers(names: &[HeaderName], request: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in names {
        for value in request.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
    fn star_is_none_and_names_are_normalised() {
        assert_eq!(vary_names(&map(&[("vary", "Accept, *")])), None);
        let names = vary_names(&map(&[("vary", "Accept-Encoding, accept"), ("vary", "ACCEPT")])).unwrap();
        assert_eq!(names, vec![header::ACCEPT, header::ACCEPT_ENCODING]);
    }

    #[test]
    fn matching_normalises_whitespace_and_lines_and_absent_only_matches_absent() {
        let names = [header::ACCEPT_LANGUAGE];
        let a = map(&[("accept-language", "en,  fr")]);
        let b = map(&[("accept-language", "en"), ("accept-language", " fr")]);
        assert!(matches(&names, &a, &b));
        assert!(!matches(&names, &a, &map(&[("accept-language", "fr, en")])));
        assert!(!matches(&names, &a, &HeaderMap::new()));
        assert!(matches(&names, &HeaderMap::new(), &HeaderMap::new()));
        assert!(!matches(
            &names,
            &HeaderMap::new(),
            &map(&[("accept-language", "")])
        ));
    }

    #[test]
    fn accept_language_is_compared_by_preference() {
        let names = [header::ACCEPT_LANGUAGE];
        let al = |v: &str| map(&[("accept-language", v)]);
        assert!(matches(&names, &al("en-US, fr;q=0.5"), &al("fr;q=0.1,EN-us")));
        assert!(matches(
            &names,
            &al("en-US, fr;q=0.5"),
            &al("en-us;q=1.0, fr;q=0.9, de;q=0")
        ));
        assert!(!matches(&names, &al("en-US, fr;q=0.5"), &al("fr, en-US;q=0.5")));
        assert!(!matches(&names, &al("en"), &al("en;level=1")));
        // An invalid q-value keeps the member apart, as written.
        assert!(!matches(&names, &al("en;q=2"), &al("en")));
        assert!(!matches(&names, &al("en;q=0.1234"), &al("en")));
        assert_eq!(qvalue(b"0.5"), Some(500));
        assert_eq!(qvalue(b"1.000"), Some(1000));
        assert_eq!(qvalue(b"1.001"), None);
        assert_eq!(qvalue(b""), None);
        let served = map(&[("content-language", "en-US")]);
        for (request, expected) in [
            ("en-US", true),
            ("en", true),
            ("EN-us;q=0.9, fr;q=0.1", true),
            ("fr, en-US", false),
            ("e", false),
            ("*", false),
        ] {
            assert_eq!(language_served(&served, &al(request)), expected, "{request}");
        }
        assert!(!language_served(
            &map(&[("content-language", "en, fr")]),
            &al("en")
        ));
        assert!(!language_served(&HeaderMap::new(), &al("en")));
    }

    #[test]
    fn values_are_compared_as_bytes_never_as_lossy_text() {
        let names = [header::ACCEPT_LANGUAGE];
        let bytes = |b: &[u8]| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_bytes(b).unwrap());
            m
        };
        // Both decode to U+FFFD as lossy UTF-8; as bytes they differ.
        let a = bytes(b"en-\xff");
        let b = bytes(b"en-\xfe");
        assert!(!matches(&names, &a, &b));
        assert!(matches(&names, &a, &bytes(b"  en-\xff ")));
        assert_eq!(normalised(&a, &header::ACCEPT_LANGUAGE).unwrap(), b"en-\xff");
    }
}
