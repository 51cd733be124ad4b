//! Standards mode: the layer as an RFC 9111 shared cache. The origin's
//! headers decide, through the pure rules of [`crate::rfc9111`].
//!
//! Keys are the request's host (one, unambiguous: [`host`]) and target,
//! exactly as sent, and the fields [`Rfc9111::key_field`] names. Before
//! anything is keyed, the hop-by-hop fields of the request, and those its
//! `Connection` names, are removed: the key is built from what the origin
//! will see. Every entry of a URL carries one tag, so that an unsafe method
//! invalidates every variant at once.
//!
//! When a response is stored, what its metadata says for a request without
//! directives is computed once: fresh for what is left of its lifetime,
//! then within its stale-while-revalidate window, then kept for
//! stale-if-error and revalidation. A plain request is answered from that
//! alone; one with `Cache-Control` of its own gets the whole verdict of
//! [`freshness::verdict`].

use std::time::Duration;

use hitbox_core::{CacheKey, EntryMeta, EntryOptions, Freshness, KeyBuilder, Tag, Timestamp};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header, request, response};

use super::{Decision, HttpPolicy, Invalidations, Merged, Skip, Storing, Worth};
use crate::headers::{BypassReason, Fwd, strip_hop_by_hop};
use crate::predicate::ReadBody;
use crate::response::{CachedResponse, HitResponse};
use crate::rfc9111::directives::CacheControl;
use crate::rfc9111::freshness::{self, Exchange, StoredView, Verdict};
use crate::rfc9111::storage::{self, NotStorable};
use crate::rfc9111::{Rfc9111, host, invalidation, range, validation};

/// The version of standards mode's keys. Version 3 began when a URL's
/// variants moved under its primary entry and stored responses stopped
/// carrying `Set-Cookie`: entries written before are never read.
const KEY_VERSION: u32 = 3;

/// Standards mode's policy: its configuration.
pub(crate) struct StandardsPolicy {
    pub config: Rfc9111,
}

/// What standards mode keeps about a request: its host and target (shared
/// with the request's own buffers, not copied) and its directives.
#[derive(Clone)]
pub(crate) struct Url {
    host: HeaderValue,
    path: Option<PathAndQuery>,
    request_cc: CacheControl,
}

impl Url {
    fn host(&self) -> &str {
        // A host value holds visible ASCII only (see `host::host_value`).
        self.host.to_str().unwrap_or_default()
    }

    fn path(&self) -> &str {
        self.path.as_ref().map_or("/", PathAndQuery::as_str)
    }
}

pub(crate) fn secs(time: Timestamp) -> u64 {
    time.as_millis() / 1000
}

/// The tag every entry of a URL carries, so invalidation reaches all its
/// variants.
fn url_tag(host: &str, path: &str) -> Tag {
    use blake2::{Blake2b, Digest, digest::consts::U16};
    let mut hasher = Blake2b::<U16>::new();
    hasher.update(host.as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    Tag::new(format!("rfc9111:{}", hex::encode(hasher.finalize())))
}

impl StandardsPolicy {
    /// The primary key of a URL: its host and target, and the request
    /// fields configured with [`Rfc9111::key_field`].
    fn url_key(&self, host: &str, path: &str, request: &HeaderMap) -> KeyBuilder {
        let mut key = KeyBuilder::new("rfc9111").version(KEY_VERSION);
        key.push("host", Some(host.as_bytes()));
        key.push("target", Some(path.as_bytes()));
        for name in &self.config.key_fields {
            key.push_prefixed(
                "field:",
                name.as_str().as_bytes(),
                crate::rfc9111::vary::normalised(request, name).as_deref(),
            );
        }
        // A private cache stores what credentials select: it keys them, so
        // that only requests with the same credentials share a response.
        if self.config.private {
            for name in [header::AUTHORIZATION, header::COOKIE] {
                let value = crate::rfc9111::vary::normalised(request, &name);
                key.push_sensitive(name.as_str(), value.as_deref());
            }
        }
        key
    }

    /// Whether a response may be stored for a request, by the RFC and by
    /// this cache's configuration.
    fn storable(
        &self,
        request: &HeaderMap,
        request_cc: &CacheControl,
        status: StatusCode,
        headers: &HeaderMap,
        cc: &CacheControl,
    ) -> Result<(), NotStorable> {
        if self.config.private
            && (request.contains_key(header::AUTHORIZATION) || request.contains_key(header::COOKIE))
        {
            // Credentials do not keep a response out of a private cache
            // (they are part of its keys instead).
            let mut without = request.clone();
            without.remove(header::AUTHORIZATION);
            without.remove(header::COOKIE);
            storage::check_storable(&Method::GET, &without, request_cc, status, headers, cc)?;
        } else {
            storage::check_storable(&Method::GET, request, request_cc, status, headers, cc)?;
        }
        if self.config.refuse_set_cookie && storage::has_personal_fields(headers, cc) {
            return Err(NotStorable::PersonalFields);
        }
        Ok(())
    }

    /// The metadata a response is stored with: fresh for what is left of
    /// its lifetime (nothing, with an unqualified `no-cache`), then kept for
    /// its stale windows (and, with validators, for revalidation), tagged
    /// with its URL.
    fn entry_meta(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        cc: &CacheControl,
        exchange: &Exchange,
        now: Timestamp,
        tag: Tag,
    ) -> EntryMeta {
        let config = &self.config;
        let lifetime = freshness::freshness_lifetime(status, headers, cc, exchange, config).secs;
        let must_revalidate = cc.no_cache.as_ref().is_some_and(Vec::is_empty);
        let left = if must_revalidate {
            0
        } else {
            lifetime.saturating_sub(exchange.corrected_initial_age())
        };
        let fresh_until = now.add(Duration::from_secs(left));
        let strict = freshness::forbids_stale(cc) || must_revalidate;
        let swr = if strict {
            0
        } else {
            cc.stale_while_revalidate.unwrap_or(0)
        };
        let mut keep = if strict { 0 } else { cc.stale_if_error.unwrap_or(0) };
        if validation::has_validator(headers) {
            keep = keep.max(config.keep_stale.as_secs());
        }
        // Kept through the grace window of an unreachable origin (even
        // when it forbids serving stale: then the answer is a `504`), if it
        // was ever fresh: one stale on arrival is not stored for it.
        if left > 0 {
            keep = keep.max(config.stale_if_disconnected.as_secs());
        }
        // A request may accept any staleness (`max-stale`): keep stale
        // entries a little while even without validators, within the same
        // bound.
        keep = keep.max(swr);
        EntryMeta {
            stored_at: now,
            fresh_until,
            stale_until: fresh_until.add(Duration::from_secs(swr)),
            error_until: fresh_until.add(Duration::from_secs(keep)),
            tags: vec![tag],
        }
    }
}

impl HttpPolicy for StandardsPolicy {
    type Context = Url;

    fn rule_index(&self, _url: &Url) -> Option<usize> {
        None
    }

    fn decide(&self, parts: &mut request::Parts, has_body: bool) -> Decision<Url> {
        // Keyed as the origin will see it: what the hop to this cache
        // carried never selects a response.
        strip_hop_by_hop(&mut parts.headers);
        let host = match host::host_value(&parts.headers, &parts.uri) {
            Ok(host) => host,
            Err(error) => return Decision::Reject(error),
        };
        let path = parts.uri.path_and_query().cloned();
        let request_cc = CacheControl::from_headers(&parts.headers, "cache-control");
        let url = Url {
            host,
            path,
            request_cc,
        };
        if invalidation::is_unsafe(&parts.method) {
            return Decision::Invalidate(url);
        }
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Decision::Bypass {
                detail: Some(BypassReason::Method),
                rule: None,
            };
        }
        // A body on a `GET` means nothing the key could capture: whatever
        // the origin makes of it must not be stored for requests without it.
        if has_body {
            return Decision::Bypass {
                detail: Some(BypassReason::RequestBody),
                rule: None,
            };
        }
        Decision::Cache {
            key: self.url_key(url.host(), url.path(), &parts.headers),
            body_limit: None,
            head: parts.method == Method::HEAD,
            context: url,
        }
    }

    /// Standards mode never reads a body before it looks a request up.
    fn with_body(
        &self,
        _url: &Url,
        _parts: &request::Parts,
        _body: &ReadBody,
        _key: &mut KeyBuilder,
    ) -> Result<(), BypassReason> {
        Ok(())
    }

    fn worth(
        &self,
        url: &Url,
        stored: &HitResponse,
        meta: &EntryMeta,
        engine: Freshness,
        _request: &HeaderMap,
        now: Timestamp,
    ) -> Option<Worth> {
        let exchange = stored.response.exchange?;
        let age = exchange.current_age(secs(now));
        // A request without directives: what was computed when the
        // response was stored says it all.
        if url.request_cc.is_empty() {
            match engine {
                Freshness::Fresh => {
                    return Some(Worth::Fresh {
                        ttl: meta.time_to_stale(now).as_secs(),
                        age,
                    });
                }
                Freshness::Stale => {
                    return Some(Worth::StaleWhileRevalidate {
                        stale_for: now.since(meta.fresh_until).as_secs(),
                        age,
                    });
                }
                Freshness::StaleIfError | Freshness::Expired => {}
            }
        }
        let headers = &stored.response.headers;
        let cc = self.config.response_cache_control(headers);
        let view = StoredView {
            status: stored.response.status,
            headers,
            cc: &cc,
            exchange: &exchange,
        };
        Some(
            match freshness::verdict(view, &url.request_cc, secs(now), &self.config) {
                // Fresh by its headers, but no longer by the engine's
                // metadata: the entry was soft-purged. It is not served
                // without asking the origin.
                Verdict::Serve { ttl } if ttl > 0 && engine != Freshness::Fresh => Worth::Revalidate {
                    if_disconnected: freshness::if_disconnected(
                        &cc,
                        0,
                        self.config.stale_if_disconnected.as_secs(),
                    ),
                    fwd: Fwd::Stale,
                    validate: validation::has_validator(headers),
                    stale_if_error: None,
                },
                Verdict::Serve { ttl } if ttl > 0 => Worth::Fresh { ttl: ttl as u64, age },
                Verdict::Serve { ttl } => Worth::StaleAllowed {
                    stale_for: ttl.unsigned_abs(),
                    age,
                },
                Verdict::ServeStaleAndRevalidate { stale_for } => {
                    Worth::StaleWhileRevalidate { stale_for, age }
                }
                Verdict::Revalidate {
                    stale_if_error,
                    stale_for,
                } => Worth::Revalidate {
                    if_disconnected: freshness::if_disconnected(
                        &cc,
                        stale_for,
                        self.config.stale_if_disconnected.as_secs(),
                    ),
                    fwd: if url.request_cc.no_cache.is_some() || url.request_cc.max_age.is_some() {
                        Fwd::Request
                    } else {
                        Fwd::Stale
                    },
                    validate: validation::has_validator(headers),
                    stale_if_error: stale_if_error.then_some(stale_for),
                },
            },
        )
    }

    /// A range request neither waits for another's load nor leads one: its
    /// answer may be a part, which must never be handed to a request for
    /// the whole response.
    fn joins_loads(&self, url: &Url, request: &HeaderMap) -> bool {
        !validation::is_conditional(request)
            && !request.contains_key(header::RANGE)
            && url.request_cc.no_cache.is_none()
            && !url.request_cc.no_store
    }

    fn only_if_cached(&self, url: &Url) -> bool {
        url.request_cc.only_if_cached
    }

    fn uses_validators(&self) -> bool {
        true
    }

    fn tags_variants(&self) -> bool {
        false
    }

    fn serves_ranges(&self) -> bool {
        true
    }

    /// The engine must not store the load's value: standards mode stores it
    /// with the lifetime its headers give ([`Storing::meta`]).
    fn flight_options(&self, url: &Url, _request: &request::Parts) -> EntryOptions {
        EntryOptions::new()
            .ttl(Duration::ZERO)
            .stale_while_revalidate(Duration::ZERO)
            .stale_if_error(Duration::ZERO)
            .tag(url_tag(url.host(), url.path()))
    }

    fn storing(
        &self,
        url: &Url,
        request: &HeaderMap,
        response: &response::Parts,
        declared: Option<u64>,
        exchange: Exchange,
        now: Timestamp,
    ) -> Result<Storing, Skip> {
        let cc = self.config.response_cache_control(&response.headers);
        // A part is judged as the whole response would be, once its
        // `Content-Range` is one span of a known length and its declared
        // length is that span's.
        let status = if response.status == StatusCode::PARTIAL_CONTENT {
            match range::content_range(&response.headers) {
                Some((span, _)) if declared == Some(span.len()) => StatusCode::OK,
                _ => return Err(Skip::NotStorable),
            }
        } else {
            response.status
        };
        if let Err(reason) = self.storable(request, &url.request_cc, status, &response.headers, &cc) {
            tracing::debug!(reason = reason.as_str(), "response not storable");
            return Err(Skip::NotStorable);
        }
        if declared.is_some_and(|len| len > self.config.max_body_size as u64) {
            return Err(Skip::TooLarge);
        }
        let tag = url_tag(url.host(), url.path());
        let meta = self.entry_meta(status, &response.headers, &cc, &exchange, now, tag);
        if meta.expires_at() <= meta.stored_at {
            return Err(Skip::Stale);
        }
        let mut headers = response.headers.clone();
        strip_hop_by_hop(&mut headers);
        storage::take_personal_fields(&mut headers, &cc);
        headers.remove("cache-status");
        Ok(Storing {
            headers,
            limit: self.config.max_body_size,
            meta: Some(meta),
            exchange: Some(exchange),
            accept: None,
            surrogate: Vec::new(),
        })
    }

    /// A `POST` response whose `Content-Location` is the request's own
    /// target (on the same host), with explicit freshness (`max-age`,
    /// `s-maxage` or `Expires`), is a representation of that target (RFC
    /// 9110 section 9.3.3): stored under the key a `GET` of it looks up,
    /// by the rules a `GET`'s response is stored by. A `POST` that carried
    /// `Cookie` or `Authorization` is stored only when the response is
    /// `public` or has `s-maxage`: its body, as much as its credentials,
    /// chose what it got.
    fn storing_unsafe(
        &self,
        url: &Url,
        method: &Method,
        request: &HeaderMap,
        response: &response::Parts,
        declared: Option<u64>,
        exchange: Exchange,
        now: Timestamp,
    ) -> Option<(CacheKey, Storing)> {
        if *method != Method::POST {
            return None;
        }
        let location = response.headers.get(header::CONTENT_LOCATION)?.to_str().ok()?;
        let (host, path) = invalidation::resolve(url.host(), url.path(), location.trim())?;
        if host != url.host() || path != url.path() {
            return None;
        }
        let cc = self.config.response_cache_control(&response.headers);
        let explicit =
            cc.max_age.is_some() || cc.s_maxage.is_some() || response.headers.contains_key(header::EXPIRES);
        if !explicit {
            return None;
        }
        // What a client sent with its credentials becomes what every `GET`
        // is served only when the origin says it is shared.
        let credentials = request.contains_key(header::COOKIE) || request.contains_key(header::AUTHORIZATION);
        if credentials && !(cc.public || cc.s_maxage.is_some() || self.config.private) {
            return None;
        }
        let storing = self
            .storing(url, request, response, declared, exchange, now)
            .ok()?;
        Some((self.url_key(url.host(), url.path(), request).build(), storing))
    }

    /// Only a body that outgrows the limit while it streams is remembered:
    /// whether a response is storable is the origin's word on each
    /// response, asked again every time.
    fn remembers(&self, _skip: Skip) -> bool {
        false
    }

    fn merge(
        &self,
        url: &Url,
        mut stored: CachedResponse,
        not_modified: &HeaderMap,
        exchange: Exchange,
        request: &HeaderMap,
        now: Timestamp,
    ) -> Merged {
        validation::update_headers(&mut stored.headers, not_modified);
        let cc = self.config.response_cache_control(&stored.headers);
        // The merged response is judged as if it had just arrived (a `304`
        // may have made it `private` or `no-store`), then loses what was
        // meant for its client alone.
        let verdict = self.storable(request, &url.request_cc, stored.status, &stored.headers, &cc);
        let personal = storage::take_personal_fields(&mut stored.headers, &cc);
        stored.exchange = Some(exchange);
        let tag = url_tag(url.host(), url.path());
        let meta = self.entry_meta(stored.status, &stored.headers, &cc, &exchange, now, tag);
        let keep = verdict.is_ok() && meta.expires_at() > meta.stored_at;
        Merged {
            response: stored,
            personal,
            meta: keep.then_some(meta),
        }
    }

    fn invalidations(&self, url: &Url, request: &HeaderMap, response: &response::Parts) -> Invalidations {
        let method = &Method::POST; // any unsafe method names the same targets
        let mut out = Invalidations::default();
        for (host, path) in
            invalidation::targets(method, response.status, url.host(), url.path(), &response.headers)
        {
            out.keys.push(self.url_key(&host, &path, request).build());
            out.tags.push(url_tag(&host, &path));
        }
        out
    }

    /// Every entry of the URL: they all carry its tag.
    fn purge_targets(&self, url: &Url, _key: CacheKey) -> Vec<hitbox_backend::PurgeTarget> {
        vec![hitbox_backend::PurgeTarget::Tag(url_tag(url.host(), url.path()))]
    }

    fn for_client(&self, headers: &mut HeaderMap, forwarded: bool) {
        if forwarded {
            strip_hop_by_hop(headers);
        }
        self.config.strip_targeted(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn policy() -> StandardsPolicy {
        StandardsPolicy {
            config: Rfc9111::new(),
        }
    }

    fn url(request_cc: &str) -> Url {
        Url {
            host: HeaderValue::from_static("a.example"),
            path: Some(PathAndQuery::from_static("/x")),
            request_cc: CacheControl::parse(request_cc),
        }
    }

    const T: u64 = 1_704_067_200;

    fn stored(cache_control: &str) -> (HitResponse, EntryMeta) {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_str(cache_control).unwrap());
        headers.insert("etag", HeaderValue::from_static("\"v1\""));
        let exchange = Exchange::new(&headers, T, T);
        let p = policy();
        let cc = CacheControl::parse(cache_control);
        let now = Timestamp::from_millis(T * 1000);
        let meta = p.entry_meta(
            StatusCode::OK,
            &headers,
            &cc,
            &exchange,
            now,
            url_tag("a.example", "/x"),
        );
        let mut response = CachedResponse::new(StatusCode::OK, headers, Bytes::new());
        response.exchange = Some(exchange);
        (HitResponse::new(response), meta)
    }

    fn worth_at(cache_control: &str, request_cc: &str, after: u64) -> Option<Worth> {
        let (hit, meta) = stored(cache_control);
        let now = Timestamp::from_millis((T + after) * 1000);
        let freshness = meta.freshness(now);
        policy().worth(&url(request_cc), &hit, &meta, freshness, &HeaderMap::new(), now)
    }

    #[test]
    fn a_plain_request_reads_what_was_computed_at_store_time_and_agrees_with_the_verdict() {
        for (cc, after) in [
            ("max-age=60", 10),
            ("max-age=60", 70),
            ("max-age=60, stale-while-revalidate=30", 70),
            ("max-age=60, stale-while-revalidate=30", 100),
            ("max-age=60, must-revalidate, stale-while-revalidate=30", 70),
            ("max-age=60, no-cache", 10),
        ] {
            let fast = worth_at(cc, "", after);
            // The same question with a directive that changes nothing takes
            // the whole verdict.
            let full = worth_at(cc, "x-unknown-but-parsed, max-stale=0", after);
            let simplify = |w: Option<Worth>| match w {
                Some(Worth::StaleAllowed { .. }) => None,
                other => other,
            };
            assert_eq!(simplify(fast), simplify(full), "{cc} after {after}");
        }
        assert_eq!(
            worth_at("max-age=60", "", 10),
            Some(Worth::Fresh { ttl: 50, age: 10 })
        );
        assert!(matches!(
            worth_at("max-age=60, no-cache", "", 1),
            Some(Worth::Revalidate { validate: true, .. })
        ));
    }

    #[test]
    fn a_request_with_directives_gets_the_whole_verdict() {
        assert!(matches!(
            worth_at("max-age=60", "no-cache", 10),
            Some(Worth::Revalidate {
                fwd: Fwd::Request,
                ..
            })
        ));
        assert_eq!(
            worth_at("max-age=60", "max-stale", 100),
            Some(Worth::StaleAllowed {
                stale_for: 40,
                age: 100
            })
        );
    }

    #[test]
    fn credentials_and_private_responses_are_not_stored_and_not_remembered() {
        let p = policy();
        let response = http::Response::builder()
            .header("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut cookie = HeaderMap::new();
        cookie.insert("cookie", HeaderValue::from_static("a=1"));
        let exchange = Exchange::new(&HeaderMap::new(), T, T);
        let now = Timestamp::from_millis(T * 1000);
        assert_eq!(
            p.storing(&url(""), &cookie, &response, None, exchange, now).err(),
            Some(Skip::NotStorable)
        );
        let private = http::Response::builder()
            .header("cache-control", "private")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(
            p.storing(&url(""), &HeaderMap::new(), &private, None, exchange, now)
                .err(),
            Some(Skip::NotStorable)
        );
        assert!(!p.remembers(Skip::NotStorable) && !p.remembers(Skip::TooLarge));
    }
}
