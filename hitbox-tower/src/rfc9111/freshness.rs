//! Freshness lifetime (RFC 9111 section 4.2.1), heuristic freshness
//! (4.2.2), age (4.2.3) and whether a stored response may be served for a
//! request (section 4, 5.2.1 request directives, RFC 5861).

use http::StatusCode;
use http::header::{self, HeaderMap};

use super::Rfc9111;
use super::date::parse_http_date;
use super::directives::{CacheControl, Delta, MAX_DELTA, parse_delta};
use super::storage::heuristically_cacheable;

/// What the age calculation needs of one exchange with the origin, all in
/// seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// When the request that produced the response was sent.
    pub request_time: u64,
    /// When its response was received.
    pub response_time: u64,
    /// The response's `Date`, if valid.
    pub date: Option<u64>,
    /// The response's `Age` (zero when absent or invalid, capped at 2^31).
    pub age: u64,
}

impl Exchange {
    /// The exchange of a response received at `response_time` for a request
    /// sent at `request_time`.
    pub fn new(headers: &HeaderMap, request_time: u64, response_time: u64) -> Exchange {
        Exchange {
            request_time,
            response_time: response_time.max(request_time),
            date: date_of(headers),
            age: age_of(headers),
        }
    }

    /// `corrected_initial_age` of section 4.2.3: the larger of what the
    /// clocks say (apparent age) and what the upstream caches said plus the
    /// time the response took to arrive.
    pub fn corrected_initial_age(&self) -> u64 {
        let apparent_age = self
            .date
            .map_or(0, |date| self.response_time.saturating_sub(date));
        let response_delay = self.response_time - self.request_time;
        let corrected_age_value = self.age.saturating_add(response_delay);
        apparent_age.max(corrected_age_value)
    }

    /// `current_age` at `now`: the corrected initial age plus the time the
    /// response has spent in this cache.
    pub fn current_age(&self, now: u64) -> u64 {
        self.corrected_initial_age()
            .saturating_add(now.saturating_sub(self.response_time))
    }
}

/// The `Date` of a message, if present and valid.
pub fn date_of(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
}

/// The `Age` a message carries: its first member (`Age: 7200, 0`, or two
/// field lines, read as 7200), if it is delta-seconds; a negative or
/// otherwise invalid value counts as absent (zero), a huge one is capped at
/// 2^31 (RFC 9111 section 1.2.2).
pub fn age_of(headers: &HeaderMap) -> u64 {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| parse_delta(v.trim()))
        .unwrap_or(0)
        .min(MAX_DELTA)
}

/// A freshness lifetime and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Seconds.
    pub secs: u64,
    /// Whether it was guessed from `Last-Modified` (section 4.2.2).
    pub heuristic: bool,
}

/// The freshness lifetime of a response for a shared cache: `s-maxage`,
/// then `max-age`, then `Expires` minus `Date` (or the response time
/// without `Date`), then, only for heuristically cacheable statuses (or
/// `public`) with a `Last-Modified`, a fraction of the time since it was
/// last modified. Invalid values and several `Expires` lines give zero.
pub fn freshness_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    exchange: &Exchange,
    config: &Rfc9111,
) -> Lifetime {
    let explicit = |secs| Lifetime {
        secs,
        heuristic: false,
    };
    if let Some(delta) = cc.s_maxage {
        return explicit(delta.secs_or_zero());
    }
    if let Some(delta) = cc.max_age {
        return explicit(delta.secs_or_zero());
    }
    let mut expires = headers.get_all(header::EXPIRES).iter();
    if let Some(first) = expires.next() {
        if expires.next().is_some() {
            return explicit(0);
        }
        // An invalid date, `0` in particular, means "already expired".
        let Some(expires) = first.to_str().ok().and_then(parse_http_date) else {
            return explicit(0);
        };
        let date = exchange.date.unwrap_or(exchange.response_time);
        return explicit(expires.saturating_sub(date));
    }
    if config.heuristic_fraction > 0.0
        && (heuristically_cacheable(status) || cc.public)
        && let Some(modified) = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
    {
        let date = exchange.date.unwrap_or(exchange.response_time);
        let since = date.saturating_sub(modified) as f64;
        let secs = ((since * config.heuristic_fraction) as u64).min(config.heuristic_max.as_secs());
        return Lifetime {
            secs,
            heuristic: true,
        };
    }
    explicit(0)
}

/// Whether a stale response must not be served without validation:
/// `must-revalidate`, `proxy-revalidate`, or `s-maxage` (which implies
/// `proxy-revalidate` for shared caches).
pub fn forbids_stale(cc: &CacheControl) -> bool {
    cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some()
}

/// What a stale stored response may do when the origin cannot be reached
/// (RFC 9111 section 4.2.4): the connection refused, closed or reset, or a
/// timeout, which a layer sees as its inner service's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnected {
    /// Served stale, in place of the error.
    Serve,
    /// Not served: the response forbids serving it stale
    /// (`must-revalidate`, `proxy-revalidate`, `s-maxage`, an unqualified
    /// `no-cache`). The client gets `504 Gateway Timeout`.
    Forbidden,
    /// Stale for longer than the grace window: the error goes on.
    Error,
}

/// What `cc`'s response, stale for `stale_for` seconds, may do when the
/// origin cannot be reached, with a grace window of `grace` seconds (zero:
/// the feature is off, and the error goes on).
///
/// ```
/// use hitbox_tower::rfc9111::directives::CacheControl;
/// use hitbox_tower::rfc9111::freshness::{Disconnected, if_disconnected};
///
/// assert_eq!(if_disconnected(&CacheControl::parse("max-age=60"), 5, 10), Disconnected::Serve);
/// assert_eq!(if_disconnected(&CacheControl::parse("max-age=60"), 11, 10), Disconnected::Error);
/// let strict = CacheControl::parse("max-age=60, must-revalidate");
/// assert_eq!(if_disconnected(&strict, 5, 10), Disconnected::Forbidden);
/// ```
pub fn if_disconnected(cc: &CacheControl, stale_for: u64, grace: u64) -> Disconnected {
    if grace == 0 {
        Disconnected::Error
    } else if forbids_stale(cc) || cc.no_cache.as_ref().is_some_and(Vec::is_empty) {
        Disconnected::Forbidden
    } else if stale_for <= grace {
        Disconnected::Serve
    } else {
        Disconnected::Error
    }
}

/// How a stored response relates to a request, at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; `ttl` seconds of freshness left (negative when stale but
    /// allowed by `max-stale`).
    Serve {
        /// Remaining freshness (negative: stale by that much).
        ttl: i64,
    },
    /// Serve it now and revalidate it in the background
    /// (stale-while-revalidate); stale for `stale_for` seconds.
    ServeStaleAndRevalidate {
        /// Seconds since it went stale.
        stale_for: u64,
    },
    /// Ask the origin first; the stored response may be served with
    /// `stale_if_error` for `error_window` more seconds if it fails.
    Revalidate {
        /// Whether the stored response may answer an origin error.
        stale_if_error: bool,
        /// Seconds since it went stale (zero when still fresh).
        stale_for: u64,
    },
}

/// A stored response, what the decision reads of it.
#[derive(Debug, Clone, Copy)]
pub struct StoredView<'a> {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: &'a HeaderMap,
    /// Its effective cache control.
    pub cc: &'a CacheControl,
    /// The exchange that produced (or last revalidated) it.
    pub exchange: &'a Exchange,
}

/// Decides what to do with `stored` for a request with `request_cc`, at
/// `now` (seconds).
pub fn verdict(stored: StoredView<'_>, request_cc: &CacheControl, now: u64, config: &Rfc9111) -> Verdict {
    let lifetime = freshness_lifetime(stored.status, stored.headers, stored.cc, stored.exchange, config).secs;
    let age = stored.exchange.current_age(now);
    let ttl = lifetime as i64 - age as i64;
    let stale_for = age.saturating_sub(lifetime);
    let strict = forbids_stale(stored.cc);
    // Unqualified no-cache in the response: never without validation.
    let response_no_cache = stored.cc.no_cache.as_ref().is_some_and(Vec::is_empty);
    let stale_if_error = !strict
        && !response_no_cache
        && (stored.cc.stale_if_error.is_some_and(|w| stale_for <= w)
            || request_cc.stale_if_error.is_some_and(|w| stale_for <= w));
    let revalidate = Verdict::Revalidate {
        stale_if_error,
        stale_for,
    };
    if response_no_cache || request_cc.no_cache.is_some() {
        return revalidate;
    }
    if let Some(max) = request_cc.max_age.map(Delta::secs_or_zero)
        && age > max
    {
        return revalidate;
    }
    if let Some(min_fresh) = request_cc.min_fresh
        && ttl < min_fresh as i64
    {
        return revalidate;
    }
    if ttl > 0 {
        return Verdict::Serve { ttl };
    }
    if strict {
        return revalidate;
    }
    match request_cc.max_stale {
        Some(None) => return Verdict::Serve { ttl },
        Some(Some(max)) if stale_for <= max => return Verdict::Serve { ttl },
        _ => {}
    }
    if stored.cc.stale_while_revalidate.is_some_and(|w| stale_for < w) {
        return Verdict::ServeStaleAndRevalidate { stale_for };
    }
    revalidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const T: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z

    fn lifetime(pairs: &[(&str, &str)]) -> Lifetime {
        let h = headers(pairs);
        let cc = CacheControl::from_headers(&h, "cache-control");
        let ex = Exchange::new(&h, T, T);
        freshness_lifetime(StatusCode::OK, &h, &cc, &ex, &Rfc9111::new())
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let date = super::super::date::format_http_date(T);
        let expires = super::super::date::format_http_date(T + 500);
        let all = [
            ("cache-control", "max-age=100, s-maxage=50"),
            ("expires", expires.as_str()),
            ("date", date.as_str()),
        ];
        assert_eq!(lifetime(&all).secs, 50);
        assert_eq!(
            lifetime(&[("cache-control", "max-age=100"), all[1], all[2]]).secs,
            100
        );
        assert_eq!(lifetime(&all[1..]).secs, 500);
    }

    #[test]
    fn invalid_freshness_is_stale() {
        assert_eq!(lifetime(&[("cache-control", "max-age=+100")]).secs, 0);
        assert_eq!(lifetime(&[("expires", "0")]).secs, 0);
        let e = super::super::date::format_http_date(T + 500);
        assert_eq!(lifetime(&[("expires", &e), ("expires", &e)]).secs, 0);
    }

    #[test]
    fn heuristics_need_last_modified() {
        assert_eq!(
            lifetime(&[]),
            Lifetime {
                secs: 0,
                heuristic: false
            }
        );
        let modified = super::super::date::format_http_date(T - 1_000);
        let got = lifetime(&[("last-modified", &modified)]);
        assert_eq!(
            got,
            Lifetime {
                secs: 100,
                heuristic: true
            }
        );
    }

    #[test]
    fn age_follows_section_4_2_3() {
        let date = super::super::date::format_http_date(T - 100);
        // Apparent age 100 beats Age 10 + delay 2.
        let ex = Exchange::new(&headers(&[("date", &date), ("age", "10")]), T - 2, T);
        assert_eq!(ex.corrected_initial_age(), 100);
        assert_eq!(ex.current_age(T + 5), 105);
        // Age wins when the clocks agree.
        let now = super::super::date::format_http_date(T);
        let ex = Exchange::new(&headers(&[("date", &now), ("age", "30")]), T - 2, T);
        assert_eq!(ex.corrected_initial_age(), 32);
        // Negative Age is ignored, huge Age is capped.
        assert_eq!(age_of(&headers(&[("age", "-5")])), 0);
        assert_eq!(age_of(&headers(&[("age", "7200, 0")])), 7200);
        assert_eq!(age_of(&headers(&[("age", "7200"), ("age", "0")])), 7200);
        assert_eq!(age_of(&headers(&[("age", "1.5")])), 0);
        assert_eq!(age_of(&headers(&[("age", "abc, 10")])), 0);
        assert_eq!(age_of(&headers(&[("age", "99999999999999")])), MAX_DELTA);
        // A Date in the future gives no negative age.
        let future = super::super::date::format_http_date(T + 1_000);
        assert_eq!(
            Exchange::new(&headers(&[("date", &future)]), T, T).corrected_initial_age(),
            0
        );
    }

    fn decide(response: &[(&str, &str)], request: &str, now: u64) -> Verdict {
        let h = headers(response);
        let cc = CacheControl::from_headers(&h, "cache-control");
        let ex = Exchange::new(&h, T, T);
        let stored = StoredView {
            status: StatusCode::OK,
            headers: &h,
            cc: &cc,
            exchange: &ex,
        };
        verdict(stored, &CacheControl::parse(request), now, &Rfc9111::new())
    }

    #[test]
    fn request_directives() {
        let r = [("cache-control", "max-age=60")];
        assert_eq!(decide(&r, "", T + 10), Verdict::Serve { ttl: 50 });
        assert!(matches!(
            decide(&r, "no-cache", T + 10),
            Verdict::Revalidate { .. }
        ));
        assert!(matches!(
            decide(&r, "max-age=5", T + 10),
            Verdict::Revalidate { .. }
        ));
        assert!(matches!(
            decide(&r, "min-fresh=55", T + 10),
            Verdict::Revalidate { .. }
        ));
        assert_eq!(decide(&r, "max-stale", T + 100), Verdict::Serve { ttl: -40 });
        assert_eq!(decide(&r, "max-stale=50", T + 100), Verdict::Serve { ttl: -40 });
        assert!(matches!(
            decide(&r, "max-stale=10", T + 100),
            Verdict::Revalidate { .. }
        ));
    }

    #[test]
    fn must_revalidate_and_rfc_5861() {
        let strict = [("cache-control", "max-age=60, must-revalidate, stale-if-error=600")];
        assert_eq!(
            decide(&strict, "max-stale", T + 100),
            Verdict::Revalidate {
                stale_if_error: false,
                stale_for: 40
            }
        );
        let lax = [(
            "cache-control",
            "max-age=60, stale-while-revalidate=30, stale-if-error=600",
        )];
        assert_eq!(
            decide(&lax, "", T + 70),
            Verdict::ServeStaleAndRevalidate { stale_for: 10 }
        );
        assert_eq!(
            decide(&lax, "", T + 100),
            Verdict::Revalidate {
                stale_if_error: true,
                stale_for: 40
            }
        );
        let no_cache = [("cache-control", "max-age=60, no-cache, stale-if-error=60")];
        assert_eq!(
            decide(&no_cache, "", T + 1),
            Verdict::Revalidate {
                stale_if_error: false,
                stale_for: 0
            }
        );
        // The qualified form only concerns the fields it names.
        let qualified = [("cache-control", "max-age=60, no-cache=\"x-a\", stale-if-error=60")];
        assert_eq!(decide(&qualified, "", T + 1), Verdict::Serve { ttl: 59 });
        assert_eq!(
            decide(&qualified, "", T + 70),
            Verdict::Revalidate {
                stale_if_error: true,
                stale_for: 10
            }
        );
    }
}
