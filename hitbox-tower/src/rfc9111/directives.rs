//! `Cache-Control` (RFC 9111 section 5.2) parsed into a value.
//!
//! Directive names are case-insensitive; arguments may be tokens or quoted
//! strings (a recipient accepts `max-age="60"` although senders must not
//! write it). Unknown directives are ignored. A delta-seconds argument that
//! is not `1*DIGIT` (`+60`, `-1`, `1.5`) is invalid, and so are conflicting
//! duplicates: the RFC lets a cache consider such a response stale, which
//! is what [`Delta::Invalid`] means. Values past 2^31 are capped there, as
//! section 1.2.2 requires.

use http::HeaderMap;
use http::header::HeaderName;

/// The largest delta-seconds a cache has to represent (RFC 9111 1.2.2).
pub const MAX_DELTA: u64 = 2_147_483_648;

/// A delta-seconds argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// A valid number of seconds (capped at [`MAX_DELTA`]).
    Secs(u64),
    /// Present but unusable (missing, not digits, conflicting duplicates).
    Invalid,
}

impl Delta {
    /// The seconds, with an invalid value read as zero (stale).
    pub fn secs_or_zero(self) -> u64 {
        match self {
            Delta::Secs(secs) => secs,
            Delta::Invalid => 0,
        }
    }
}

/// Parses delta-seconds: digits only, capped at [`MAX_DELTA`].
pub fn parse_delta(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().map_or(MAX_DELTA, |v| v.min(MAX_DELTA)))
}

/// The directives of one message's `Cache-Control` field lines.
///
/// ```
/// use hitbox_tower::rfc9111::directives::{CacheControl, Delta};
///
/// let cc = CacheControl::parse("max-age=\"60\", private=\"set-cookie\", x-unknown");
/// assert_eq!(cc.max_age, Some(Delta::Secs(60)));
/// assert_eq!(cc.private.unwrap()[0], "set-cookie");
/// assert!(CacheControl::parse("max-age=+1").max_age == Some(Delta::Invalid));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age`.
    pub max_age: Option<Delta>,
    /// `s-maxage` (responses).
    pub s_maxage: Option<Delta>,
    /// `max-stale`, `Some(None)` when it has no argument (requests).
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh` (requests).
    pub min_fresh: Option<u64>,
    /// `no-cache`; field names when qualified, empty when not.
    pub no_cache: Option<Vec<HeaderName>>,
    /// `private`; field names when qualified, empty when not (responses).
    pub private: Option<Vec<HeaderName>>,
    /// `no-store`.
    pub no_store: bool,
    /// `public` (responses).
    pub public: bool,
    /// `must-revalidate` (responses).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (responses).
    pub proxy_revalidate: bool,
    /// `must-understand` (responses).
    pub must_understand: bool,
    /// `only-if-cached` (requests).
    pub only_if_cached: bool,
    /// `stale-while-revalidate` (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861).
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every line of `name` in `headers`.
    pub fn from_headers(headers: &HeaderMap, name: &str) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(name) {
            cc.add_line(&String::from_utf8_lossy(value.as_bytes()));
        }
        cc
    }

    /// Parses one field value.
    pub fn parse(value: &str) -> CacheControl {
        let mut cc = CacheControl::default();
        cc.add_line(value);
        cc
    }

    /// Whether the field held anything this parser understood.
    pub fn is_empty(&self) -> bool {
        *self == CacheControl::default()
    }

    fn add_line(&mut self, line: &str) {
        for (name, arg) in split_directives(line) {
            let name = name.to_ascii_lowercase();
            let delta = || arg.as_deref().and_then(parse_delta);
            match name.as_str() {
                "max-age" => merge_delta(&mut self.max_age, delta()),
                "s-maxage" => merge_delta(&mut self.s_maxage, delta()),
                "max-stale" => {
                    self.max_stale = Some(match (&arg, delta()) {
                        (None, _) => None,
                        (Some(_), Some(secs)) => Some(secs),
                        // An unreadable limit accepts no staleness at all.
                        (Some(_), None) => Some(0),
                    })
                }
                "min-fresh" => self.min_fresh = Some(delta().unwrap_or(0)),
                "no-cache" => merge_fields(&mut self.no_cache, arg.as_deref()),
                "private" => merge_fields(&mut self.private, arg.as_deref()),
                "no-store" => self.no_store = true,
                "public" => self.public = true,
                "must-revalidate" => self.must_revalidate = true,
                "proxy-revalidate" => self.proxy_revalidate = true,
                "must-understand" => self.must_understand = true,
                "only-if-cached" => self.only_if_cached = true,
                "stale-while-revalidate" => {
                    if let Some(secs) = delta() {
                        self.stale_while_revalidate = Some(secs);
                    }
                }
                "stale-if-error" => {
                    if let Some(secs) = delta() {
                        self.stale_if_error = Some(secs);
                    }
                }
                _ => {}
            }
        }
    }
}

impl CacheControl {
    /// Parses a targeted cache-control field (RFC 9213), such as
    /// `CDN-Cache-Control`: an RFC 8941 structured-field dictionary, read
    /// with the `sfv` crate. Its lines are one dictionary. `None` when the
    /// field is absent, is not a valid dictionary, or gives a directive a
    /// value of the wrong type (`max-age="60"`, `max-age=1.5`,
    /// `no-store=3`): then the whole field is ignored, as RFC 9213 section
    /// 2.1 asks. Delta-seconds are non-negative integers; directives
    /// without a value are `true` (and `?0` leaves them unset); `private`
    /// and `no-cache` may instead name fields as a string or an inner list
    /// of strings or tokens. Unknown directives are ignored.
    ///
    /// ```
    /// use hitbox_tower::rfc9111::directives::{CacheControl, Delta};
    /// use http::{HeaderMap, HeaderValue};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("cdn-cache-control", HeaderValue::from_static("max-age=60, must-revalidate"));
    /// let cc = CacheControl::from_structured(&headers, "cdn-cache-control").unwrap();
    /// assert_eq!(cc.max_age, Some(Delta::Secs(60)));
    /// headers.insert("cdn-cache-control", HeaderValue::from_static("max-age=\"60\""));
    /// assert!(CacheControl::from_structured(&headers, "cdn-cache-control").is_none());
    /// ```
    ///
    /// Feature `targeted-fields`.
    #[cfg(feature = "targeted-fields")]
    pub fn from_structured(headers: &HeaderMap, name: &str) -> Option<CacheControl> {
        use sfv::{BareItem, Dictionary, ListEntry, Parser};
        let mut lines = headers.get_all(name).iter();
        let first = lines.next()?;
        let joined;
        let input: &[u8] = match lines.next() {
            None => first.as_bytes(),
            Some(second) => {
                let mut all = Vec::from(first.as_bytes());
                for line in std::iter::once(second).chain(lines) {
                    all.extend_from_slice(b", ");
                    all.extend_from_slice(line.as_bytes());
                }
                joined = all;
                &joined
            }
        };
        let dictionary: Dictionary = Parser::new(input).parse().ok()?;
        let mut cc = CacheControl::default();
        for (key, entry) in &dictionary {
            let item = match entry {
                ListEntry::Item(item) => Some(&item.bare_item),
                ListEntry::InnerList(_) => None,
            };
            let flag = || match item {
                Some(BareItem::Boolean(value)) => Some(*value),
                _ => None,
            };
            let delta = || match item {
                Some(BareItem::Integer(value)) => {
                    let value = i64::from(*value);
                    u64::try_from(value).ok().map(|secs| secs.min(MAX_DELTA))
                }
                _ => None,
            };
            match key.as_str() {
                "max-age" => cc.max_age = Some(Delta::Secs(delta()?)),
                "s-maxage" => cc.s_maxage = Some(Delta::Secs(delta()?)),
                "stale-while-revalidate" => cc.stale_while_revalidate = Some(delta()?),
                "stale-if-error" => cc.stale_if_error = Some(delta()?),
                "no-store" => cc.no_store = flag()?,
                "public" => cc.public = flag()?,
                "must-revalidate" => cc.must_revalidate = flag()?,
                "proxy-revalidate" => cc.proxy_revalidate = flag()?,
                "must-understand" => cc.must_understand = flag()?,
                "private" | "no-cache" => {
                    let names = match (entry, item) {
                        (_, Some(BareItem::Boolean(false))) => continue,
                        (_, Some(BareItem::Boolean(true))) => Vec::new(),
                        (_, Some(BareItem::String(names))) => names
                            .as_str()
                            .split(',')
                            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                            .collect(),
                        (ListEntry::InnerList(list), _) => {
                            let mut names = Vec::new();
                            for item in &list.items {
                                let name = match &item.bare_item {
                                    BareItem::String(name) => name.as_str(),
                                    BareItem::Token(name) => name.as_str(),
                                    _ => return None,
                                };
                                names.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
                            }
                            names
                        }
                        _ => return None,
                    };
                    let slot = if key.as_str() == "private" {
                        &mut cc.private
                    } else {
                        &mut cc.no_cache
                    };
                    *slot = Some(names);
                }
                _ => {}
            }
        }
        Some(cc)
    }
}

fn merge_delta(slot: &mut Option<Delta>, new: Option<u64>) {
    let new = new.map_or(Delta::Invalid, Delta::Secs);
    *slot = match *slot {
        None => Some(new),
        Some(old) if old == new => Some(old),
        // Two different values: consider the response stale.
        Some(_) => Some(Delta::Invalid),
    };
}

/// `no-cache` and `private` take an optional list of field names; the
/// unqualified form wins over any qualified one.
fn merge_fields(slot: &mut Option<Vec<HeaderName>>, arg: Option<&str>) {
    let names: Vec<HeaderName> = arg
        .map(|list| {
            list.split(',')
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                .collect()
        })
        .unwrap_or_default();
    match slot {
        Some(existing) if existing.is_empty() => {}
        Some(_) if names.is_empty() => *slot = Some(Vec::new()),
        Some(existing) => existing.extend(names),
        None => *slot = Some(names),
    }
}

/// Splits a field value into `(name, argument)` pairs, honouring quoted
/// strings (commas inside them do not separate directives).
pub fn split_directives(line: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ',' || c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut arg = None;
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
                // Skip whatever follows the closing quote up to the comma.
                while chars.peek().is_some_and(|c| *c != ',') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_owned();
            }
            arg = Some(value);
        }
        let name = name.trim();
        if !name.is_empty() {
            out.push((name.to_owned(), arg));
        }
        if chars.next().is_none() {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_case_insensitive_and_take_quoted_arguments() {
        let cc = CacheControl::parse("Max-Age=\"60\", S-MAXAGE=30, no-cache=\"set-cookie, x-a\", public");
        assert_eq!(cc.max_age, Some(Delta::Secs(60)));
        assert_eq!(cc.s_maxage, Some(Delta::Secs(30)));
        assert_eq!(cc.no_cache.as_ref().unwrap().len(), 2);
        assert!(cc.public);
    }

    #[test]
    fn invalid_and_conflicting_deltas_are_invalid() {
        assert_eq!(CacheControl::parse("max-age=+60").max_age, Some(Delta::Invalid));
        assert_eq!(CacheControl::parse("max-age=-1").max_age, Some(Delta::Invalid));
        assert_eq!(CacheControl::parse("max-age").max_age, Some(Delta::Invalid));
        assert_eq!(
            CacheControl::parse("max-age=1, max-age=2").max_age,
            Some(Delta::Invalid)
        );
        assert_eq!(
            CacheControl::parse("max-age=5, max-age=5").max_age,
            Some(Delta::Secs(5))
        );
        assert_eq!(
            CacheControl::parse("max-age=99999999999999999999999").max_age,
            Some(Delta::Secs(MAX_DELTA))
        );
    }

    #[test]
    fn unknown_extensions_are_ignored() {
        let cc = CacheControl::parse("community=\"UCI, x\", max-age=5, foo");
        assert_eq!(cc.max_age, Some(Delta::Secs(5)));
        assert!(!cc.no_store);
    }

    #[test]
    fn request_directives() {
        let cc = CacheControl::parse("max-stale, min-fresh=10, only-if-cached");
        assert_eq!(cc.max_stale, Some(None));
        assert_eq!(cc.min_fresh, Some(10));
        assert!(cc.only_if_cached);
        assert_eq!(CacheControl::parse("max-stale=30").max_stale, Some(Some(30)));
    }

    #[test]
    #[cfg(feature = "targeted-fields")]
    fn targeted_fields_are_structured_dictionaries_ignored_whole_when_invalid() {
        let parse = |lines: &[&str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append("cdn-cache-control", http::HeaderValue::from_str(line).unwrap());
            }
            CacheControl::from_structured(&headers, "cdn-cache-control")
        };
        let cc = parse(&["max-age=60, no-store, private=(\"x-a\" x-b)", "s-maxage=5"]).unwrap();
        assert_eq!(cc.max_age, Some(Delta::Secs(60)));
        assert_eq!(cc.s_maxage, Some(Delta::Secs(5)));
        assert!(cc.no_store);
        assert_eq!(cc.private.unwrap().len(), 2);
        assert_eq!(parse(&["no-cache"]).unwrap().no_cache, Some(Vec::new()));
        assert!(!parse(&["no-store=?0"]).unwrap().no_store);
        assert_eq!(
            parse(&["max-age=99999999999999"]).unwrap().max_age,
            Some(Delta::Secs(MAX_DELTA))
        );
        // Unknown members, of any type, are ignored.
        assert!(parse(&["foo=\"bar\", max-age=1"]).unwrap().max_age.is_some());
        for bad in [
            "max-age=\"10000\"",
            "&&&",
            "max-age=1.5",
            "max-age=-1",
            "max-age=(1 2)",
            "no-store=3",
            "must-revalidate=\"yes\"",
            "private=5",
            "max-age=60, ",
            "Max-Age=60",
        ] {
            assert_eq!(parse(&[bad]), None, "{bad}");
        }
        assert_eq!(
            CacheControl::from_structured(&HeaderMap::new(), "cdn-cache-control"),
            None
        );
    }

    #[test]
    fn unqualified_no_cache_wins() {
        let cc = CacheControl::parse("no-cache=\"x-a\", no-cache");
        assert_eq!(cc.no_cache, Some(Vec::new()));
        let cc = CacheControl::parse("no-cache, no-cache=\"x-a\"");
        assert_eq!(cc.no_cache, Some(Vec::new()));
    }
}
