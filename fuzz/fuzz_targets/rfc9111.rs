//! The standards-mode header parsers and rules (`hitbox_tower::rfc9111`):
//! HTTP dates, delta-seconds, `Cache-Control`, `Vary`, `Host`, hop-by-hop
//! fields, the age and freshness calculation, the storage rule,
//! validation and invalidation.
//!
//! The input is an exchange as text: the request target on the first line,
//! request fields (`name: value`, one a line), an empty line, the response
//! status on its own line, response fields. Nothing may panic, and:
//! - a date that parses formats and parses back to the same instant;
//! - delta-seconds are digits only and capped at 2^31;
//! - one `Cache-Control` line reads the same as a field as on its own;
//! - `Vary` names are sorted and unique, `None` exactly for a `*` member,
//!   and a request always matches itself and the fields kept of it;
//! - a host is lower case and reads back to itself;
//! - no hop-by-hop field survives stripping, and stripping twice changes
//!   nothing more;
//! - the age never decreases with time; `s-maxage` is the lifetime;
//! - a storable response has no `Vary: *`; taking the personal fields
//!   leaves none;
//! - a response's validators select it, and a `304` update leaves every
//!   field it carried as it was sent;
//! - invalidation only ever targets the request's own host, itself first.
#![no_main]

use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::rfc9111::connection::{HOP_BY_HOP, strip_hop_by_hop};
use hitbox_tower::rfc9111::date::{format_http_date, parse_http_date};
use hitbox_tower::rfc9111::directives::{CacheControl, Delta, MAX_DELTA, parse_delta, split_directives};
use hitbox_tower::rfc9111::freshness::{
    Exchange, StoredView, age_of, date_of, forbids_stale, freshness_lifetime, verdict,
};
use hitbox_tower::rfc9111::host::request_host;
use hitbox_tower::rfc9111::invalidation::{is_unsafe, targets};
use hitbox_tower::rfc9111::storage::{check_storable, has_personal_fields, take_personal_fields};
use hitbox_tower::rfc9111::validation::{
    add_validators, has_validator, is_conditional, not_modified, not_modified_headers, selects,
    update_headers, weak_eq,
};
use hitbox_tower::rfc9111::vary::{matches, normalised, selecting_headers, vary_names};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri};
use libfuzzer_sys::fuzz_target;

const REQUEST_TIME: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let (request, response) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &b""[..]),
    };
    let (target, request_fields) = first_line(request);
    let (status, response_fields) = first_line(response);
    let uri = std::str::from_utf8(target)
        .ok()
        .and_then(|t| t.parse::<Uri>().ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let status = StatusCode::from_bytes(status.trim_ascii()).unwrap_or(StatusCode::OK);
    let request = hitbox_fuzz::headers_from_lines(request_fields);
    let response = hitbox_fuzz::headers_from_lines(response_fields);

    for value in request.values().chain(response.values()) {
        field_value(value);
    }
    vary(&request, &response);
    host(&request, &uri);
    hop_by_hop(&response);
    freshness(status, &request, &response);
    validation(&request, &response);
    invalidation(status, &uri, &response);
});

fn first_line(text: &[u8]) -> (&[u8], &[u8]) {
    match text.iter().position(|&b| b == b'\n') {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, &b""[..]),
    }
}

fn field_value(value: &HeaderValue) {
    let text = String::from_utf8_lossy(value.as_bytes());
    if let Some(secs) = parse_http_date(&text) {
        assert_eq!(parse_http_date(&format_http_date(secs)), Some(secs), "{text:?}");
    }
    let trimmed = text.trim();
    match parse_delta(trimmed) {
        Some(secs) => {
            assert!(secs <= MAX_DELTA);
            assert!(trimmed.bytes().all(|b| b.is_ascii_digit()));
        }
        None => assert!(trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit())),
    }
    let parsed = CacheControl::parse(&text);
    let mut one = HeaderMap::new();
    one.insert(header::CACHE_CONTROL, value.clone());
    if value.to_str().is_ok() {
        assert_eq!(CacheControl::from_headers(&one, "cache-control"), parsed);
    }
    for delta in [parsed.max_age, parsed.s_maxage].into_iter().flatten() {
        if let Delta::Secs(secs) = delta {
            assert!(secs <= MAX_DELTA);
        }
    }
    let _ = split_directives(&text);
    assert!(weak_eq(&text, &text));
}

fn vary(request: &HeaderMap, response: &HeaderMap) {
    let star = response
        .get_all(header::VARY)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|m| m.trim_ascii() == b"*"));
    let Some(names) = vary_names(response) else {
        assert!(star);
        return;
    };
    assert!(!star);
    assert!(names.windows(2).all(|w| w[0].as_str() < w[1].as_str()));
    assert!(matches(&names, request, request));
    let kept = selecting_headers(&names, request);
    assert!(matches(&names, &kept, request));
    for name in &names {
        assert_eq!(normalised(&kept, name), normalised(request, name));
    }
}

fn host(request: &HeaderMap, uri: &Uri) {
    let Ok(host) = request_host(request, uri) else {
        return;
    };
    assert_eq!(host, host.to_ascii_lowercase());
    // A target authority with an empty host (`:0`, `http://:80/`) is
    // refused, so every host given back reads back as a `Host` field.
    assert!(!host.starts_with(':'), "{host:?}");
    let mut again = HeaderMap::new();
    again.insert(header::HOST, HeaderValue::from_str(&host).unwrap());
    assert_eq!(request_host(&again, &Uri::from_static("/")), Ok(host));
}

fn hop_by_hop(response: &HeaderMap) {
    let mut stripped = response.clone();
    strip_hop_by_hop(&mut stripped);
    for name in &HOP_BY_HOP {
        assert!(!stripped.contains_key(name), "{name}");
    }
    let mut twice = stripped.clone();
    strip_hop_by_hop(&mut twice);
    assert_eq!(twice, stripped);
}

fn freshness(status: StatusCode, request: &HeaderMap, response: &HeaderMap) {
    let config = Rfc9111::new()
        .targeted_field("cdn-cache-control")
        .targeted_field("surrogate-control");
    let exchange = Exchange::new(response, REQUEST_TIME, REQUEST_TIME + 1);
    assert_eq!(exchange.date, date_of(response));
    assert!(age_of(response) <= MAX_DELTA);
    let initial = exchange.corrected_initial_age();
    let mut last = initial;
    for now in [REQUEST_TIME, REQUEST_TIME + 1, REQUEST_TIME + 86_400, u64::MAX] {
        let age = exchange.current_age(now);
        assert!(age >= last, "the age went back at {now}");
        last = age;
    }
    let cc = config.response_cache_control(response);
    let request_cc = CacheControl::from_headers(request, "cache-control");
    let lifetime = freshness_lifetime(status, response, &cc, &exchange, &config);
    if let Some(s_maxage) = cc.s_maxage {
        assert_eq!(lifetime.secs, s_maxage.secs_or_zero());
        assert!(forbids_stale(&cc));
    }
    let stored = StoredView {
        status,
        headers: response,
        cc: &cc,
        exchange: &exchange,
    };
    for now in [REQUEST_TIME + 1, REQUEST_TIME + 100_000] {
        let _ = verdict(stored, &request_cc, now, &config);
    }
    for method in [Method::GET, Method::POST] {
        if check_storable(&method, request, &request_cc, status, response, &cc).is_ok() {
            assert_eq!(method, Method::GET);
            assert!(vary_names(response).is_some());
            assert!(!request_cc.no_store);
        }
    }
    let mut stored = response.clone();
    let taken = take_personal_fields(&mut stored, &cc);
    assert!(!has_personal_fields(&stored, &cc));
    assert_eq!(has_personal_fields(response, &cc), !taken.is_empty());
    // Surrogate-Control is for this cache alone; CDN-Cache-Control goes on
    // to the CDNs behind it, untouched.
    let mut targeted = response.clone();
    config.strip_targeted(&mut targeted);
    assert!(!targeted.contains_key("surrogate-control"));
    assert_eq!(
        targeted.get_all("cdn-cache-control").iter().collect::<Vec<_>>(),
        response.get_all("cdn-cache-control").iter().collect::<Vec<_>>()
    );
}

/// `[W/] DQUOTE *etagc DQUOTE` (RFC 9110 section 8.8.3), visible ASCII
/// other than DQUOTE inside.
fn well_formed_etag(tag: &str) -> bool {
    let tag = tag.trim();
    let opaque = tag.strip_prefix("W/").unwrap_or(tag);
    opaque.len() >= 2
        && opaque.starts_with('"')
        && opaque.ends_with('"')
        && opaque[1..opaque.len() - 1]
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
}

fn validation(request: &HeaderMap, response: &HeaderMap) {
    let _ = (has_validator(response), is_conditional(request));
    let _ = not_modified(request, response);
    assert!(selects(response, response));
    let mut conditional = request.clone();
    add_validators(&mut conditional, response);
    let etag = response.get(header::ETAG).and_then(|v| v.to_str().ok());
    // A well-formed entity tag (commas inside included) matches itself
    // when a client sends it back; a malformed one may not.
    if etag.is_some_and(well_formed_etag) {
        assert!(not_modified(&conditional, response), "{etag:?}");
    }
    let mut updated = request.clone();
    update_headers(&mut updated, response);
    let mut sent = response.clone();
    strip_hop_by_hop(&mut sent);
    sent.remove(header::CONTENT_LENGTH);
    sent.remove("cache-status");
    for name in sent.keys() {
        let after: Vec<_> = updated.get_all(name).iter().collect();
        let before: Vec<_> = sent.get_all(name).iter().collect();
        assert_eq!(after, before, "{name}");
    }
    let short = not_modified_headers(response);
    assert!(short.len() <= response.len());
}

fn invalidation(status: StatusCode, uri: &Uri, response: &HeaderMap) {
    let host = uri.host().unwrap_or("a.example");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    for method in [Method::GET, Method::POST, Method::DELETE] {
        let found = targets(&method, status, host, path, response);
        if found.is_empty() {
            continue;
        }
        assert!(is_unsafe(&method));
        assert_eq!(found[0], (host.to_owned(), path.to_owned()));
        assert!(found.iter().all(|(h, _)| h == host));
    }
}
