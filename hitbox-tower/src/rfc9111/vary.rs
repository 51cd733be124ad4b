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
pub fn normalised(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
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
