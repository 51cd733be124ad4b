//! `Vary` (RFC 9111 section 4.1): which request fields select a response.

use http::header::{self, HeaderMap, HeaderName};

/// The field names a response's `Vary` lists, lower-cased, sorted and
/// deduplicated; `None` for `Vary: *`, which no request ever matches.
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in String::from_utf8_lossy(value.as_bytes()).split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// A request field's value as `Vary` compares it: its lines joined with
/// commas, with whitespace around list separators and at the ends removed
/// (RFC 9111 4.1 allows this normalisation: it does not change what the
/// field means). An absent field is `None`, which only matches absent.
pub fn normalised(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let joined: Vec<String> = values
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|part| part.split_ascii_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
        })
        .collect();
    Some(joined.join(","))
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
}
