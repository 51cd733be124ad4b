//! Rule mode: the layer's rules decide which requests are cached, under
//! which key, and for how long; the engine's freshness (from the rule's
//! [`CachePolicy`]) says what a stored response is worth.
//!
//! Unsafe requests invalidate: a rule stores each response with a tag of
//! its host and path ([`url_tag`]), and a non-error response to an unsafe
//! request (one no rule caches as a read) invalidates the tags of its own
//! host and path and of the same-host URLs its `Location` and
//! `Content-Location` name (RFC 9111 section 4.4), whatever their query.

use hitbox_core::{CachePolicy, EntryMeta, EntryOptions, Freshness, KeyBuilder, Tag, Timestamp};
use http::{HeaderMap, Method, header, request, response};

use super::{Decision, HttpPolicy, Invalidations, Merged, Skip, Storing, Worth};
use crate::headers::{BypassReason, Fwd, strip_hop_by_hop};
use crate::predicate::ReadBody;
use crate::response::{CachedResponse, HitResponse};
use crate::rfc9111::directives::CacheControl;
use crate::rfc9111::freshness::{Disconnected, Exchange};
use crate::rfc9111::{host, invalidation, vary};
use crate::rule::Rule;

/// The rules of a layer, tried in order, and the cache's own policy for the
/// rules that name none.
pub(crate) struct RulePolicy {
    pub rules: Vec<Rule>,
    pub fallback: CachePolicy,
}

/// What rule mode keeps about a request: the rule that applies, and, for an
/// unsafe request that may invalidate, its host and target.
#[derive(Clone)]
pub(crate) struct RuleContext {
    index: usize,
    /// Whether the rule at `index` matched the request (an unsafe request
    /// that no rule matches invalidates under the first rule's index).
    matched: bool,
    target: Option<Box<(String, String)>>,
}

/// The tag every entry a rule stores for a host and path carries (when the
/// rule is invalidated by unsafe methods): the query is left out, so that
/// an unsafe request reaches every query of its path.
pub(crate) fn url_tag(host: &str, path: &str) -> Tag {
    use blake2::{Blake2b, Digest, digest::consts::U16};
    let path = path.split('?').next().unwrap_or(path);
    let mut hasher = Blake2b::<U16>::new();
    hasher.update(host.as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    Tag::new(format!("rules-url:{}", hex::encode(hasher.finalize())))
}

impl RulePolicy {
    fn rule(&self, context: &RuleContext) -> &Rule {
        &self.rules[context.index]
    }

    /// Whether a response may be stored under a rule: its status, no
    /// cookie or `private` unless the rule accepts them, not `no-store`,
    /// not an unqualified `no-cache` (rules do not revalidate, so what must
    /// be revalidated before every use is not stored), and not `Vary: *`.
    fn is_storable(rule: &Rule, parts: &response::Parts, cc: &CacheControl) -> bool {
        rule.is_storable_status(parts)
            && (rule.store_set_cookie || !parts.headers.contains_key(header::SET_COOKIE))
            && !cc.no_store
            && !cc.no_cache.as_ref().is_some_and(Vec::is_empty)
            && (rule.store_private || cc.private.is_none())
            && vary::vary_names(&parts.headers).is_some()
    }

    /// The headers a rule stores: no hop-by-hop fields, none a qualified
    /// `no-cache` names (they would need revalidating), no `Cache-Status`.
    fn stored_headers(headers: &HeaderMap, cc: &CacheControl) -> HeaderMap {
        let mut stored = headers.clone();
        strip_hop_by_hop(&mut stored);
        for name in cc.no_cache.iter().flatten() {
            stored.remove(name);
        }
        stored.remove("cache-status");
        stored
    }

    /// An unsafe request that no rule caches: forwarded, then it
    /// invalidates, unless no rule's entries can be invalidated or its host
    /// cannot be told.
    fn unsafe_request(&self, index: usize, matched: bool, parts: &request::Parts) -> Decision<RuleContext> {
        let bypass = Decision::Bypass {
            detail: Some(BypassReason::Method),
            rule: matched.then_some(index),
        };
        if !invalidation::is_unsafe(&parts.method) || !self.rules.iter().any(|r| r.invalidate_on_unsafe) {
            return bypass;
        }
        let Ok(host) = host::request_host(&parts.headers, &parts.uri) else {
            return bypass;
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Decision::Invalidate(RuleContext {
            index,
            matched,
            target: Some(Box::new((host, path))),
        })
    }
}

impl HttpPolicy for RulePolicy {
    type Context = RuleContext;

    fn rule_index(&self, context: &RuleContext) -> Option<usize> {
        context.matched.then_some(context.index)
    }

    fn decide(&self, parts: &mut request::Parts, has_body: bool) -> Decision<RuleContext> {
        let Some(index) = self.rules.iter().position(|rule| rule.matches(parts)) else {
            return match self.unsafe_request(0, false, parts) {
                Decision::Bypass { .. } => Decision::Bypass {
                    detail: None,
                    rule: None,
                },
                invalidate => invalidate,
            };
        };
        let rule = &self.rules[index];
        let head = parts.method == Method::HEAD;
        let method = if head { &Method::GET } else { &parts.method };
        if !rule.methods.contains(method) {
            return self.unsafe_request(index, true, parts);
        }
        // A `GET` body the key does not capture could change the response
        // for everyone who shares the key.
        if has_body
            && *method == Method::GET
            && !rule.body_key.as_ref().is_some_and(|key| key.keys_get_bodies())
        {
            return Decision::Bypass {
                detail: Some(BypassReason::RequestBody),
                rule: Some(index),
            };
        }
        if parts.headers.contains_key(header::AUTHORIZATION) && !rule.cache_authorized {
            return Decision::Bypass {
                detail: Some(BypassReason::Authorization),
                rule: Some(index),
            };
        }
        if parts.headers.contains_key(header::COOKIE) && !rule.cache_with_cookies {
            return Decision::Bypass {
                detail: Some(BypassReason::Cookie),
                rule: Some(index),
            };
        }
        let mut key = KeyBuilder::new(&*rule.namespace);
        if head {
            parts.method = Method::GET;
            rule.key.extract(parts, &mut key);
            parts.method = Method::HEAD;
        } else {
            rule.key.extract(parts, &mut key);
        }
        if rule.cache_authorized {
            for value in parts.headers.get_all(header::AUTHORIZATION) {
                key.push_sensitive("authorization", Some(value.as_bytes()));
            }
        }
        if rule.cache_with_cookies {
            for value in parts.headers.get_all(header::COOKIE) {
                key.push_sensitive("cookie", Some(value.as_bytes()));
            }
        }
        Decision::Cache {
            key,
            body_limit: rule.reads_body().then_some(rule.request_body_limit),
            head,
            context: RuleContext {
                index,
                matched: true,
                target: None,
            },
        }
    }

    fn with_body(
        &self,
        context: &RuleContext,
        parts: &request::Parts,
        body: &ReadBody,
        key: &mut KeyBuilder,
    ) -> Result<(), BypassReason> {
        let rule = self.rule(context);
        if let Some(predicate) = &rule.when_body
            && !predicate.check(body)
        {
            return Err(BypassReason::BodyPredicate);
        }
        match &rule.body_key {
            Some(body_key) => body_key.apply(parts, body, key),
            None => Ok(()),
        }
    }

    fn worth(
        &self,
        _context: &RuleContext,
        _stored: &HitResponse,
        meta: &EntryMeta,
        freshness: Freshness,
        _request: &HeaderMap,
        now: Timestamp,
    ) -> Option<Worth> {
        let age = meta.age(now).as_secs();
        let stale_for = now.since(meta.fresh_until).as_secs();
        match freshness {
            Freshness::Fresh => Some(Worth::Fresh {
                ttl: meta.time_to_stale(now).as_secs(),
                age,
            }),
            Freshness::Stale => Some(Worth::StaleWhileRevalidate { stale_for, age }),
            Freshness::StaleIfError => Some(Worth::Revalidate {
                fwd: Fwd::Miss,
                validate: false,
                stale_if_error: Some(stale_for),
                if_disconnected: Disconnected::Error,
            }),
            Freshness::Expired => None,
        }
    }

    fn joins_loads(&self, _context: &RuleContext, _request: &HeaderMap) -> bool {
        true
    }

    fn takes_distributed_lock(&self, context: &RuleContext) -> bool {
        self.rule(context).distributed_lock
    }

    fn only_if_cached(&self, _context: &RuleContext) -> bool {
        false
    }

    fn serves_ranges(&self) -> bool {
        false
    }

    fn uses_validators(&self) -> bool {
        false
    }

    fn tags_variants(&self) -> bool {
        true
    }

    fn flight_options(&self, context: &RuleContext, request: &request::Parts) -> EntryOptions {
        let rule = self.rule(context);
        let policy = rule.policy.unwrap_or(self.fallback);
        let mut options = EntryOptions::new()
            .ttl(policy.ttl())
            .stale_while_revalidate(policy.stale_while_revalidate_window())
            .stale_if_error(policy.stale_if_error_window());
        for tag in &rule.tags {
            options = options.tag(tag.clone());
        }
        // Computed on a miss only: a hit never builds the tag.
        if rule.invalidate_on_unsafe
            && let Ok(host) = host::request_host(&request.headers, &request.uri)
        {
            options = options.tag(url_tag(&host, request.uri.path()));
        }
        options
    }

    fn storing(
        &self,
        context: &RuleContext,
        _request: &HeaderMap,
        response: &response::Parts,
        declared: Option<u64>,
        _exchange: Exchange,
        _now: Timestamp,
    ) -> Result<Storing, Skip> {
        let rule = self.rule(context);
        if declared.is_some_and(|len| len > rule.max_body_size as u64) {
            return Err(Skip::TooLarge);
        }
        let cc = CacheControl::from_headers(&response.headers, "cache-control");
        if !Self::is_storable(rule, response, &cc) {
            return Err(Skip::NotStorable);
        }
        Ok(Storing {
            headers: Self::stored_headers(&response.headers, &cc),
            limit: rule.max_body_size,
            meta: None,
            exchange: None,
            accept: rule.store_when_body.clone(),
            surrogate: Vec::new(),
        })
    }

    /// Rules never store what an unsafe method answers.
    fn storing_unsafe(
        &self,
        _rule: &Self::Context,
        _method: &Method,
        _request: &HeaderMap,
        _response: &response::Parts,
        _declared: Option<u64>,
        _exchange: Exchange,
        _now: Timestamp,
    ) -> Option<(hitbox_core::CacheKey, Storing)> {
        None
    }

    fn remembers(&self, skip: Skip) -> bool {
        matches!(skip, Skip::NotStorable | Skip::TooLarge)
    }

    fn merge(
        &self,
        _context: &RuleContext,
        stored: CachedResponse,
        _not_modified: &HeaderMap,
        _exchange: Exchange,
        _request: &HeaderMap,
        _now: Timestamp,
    ) -> Merged {
        // Rules never send validators, so no `304` ever refreshes an entry.
        Merged {
            response: stored,
            personal: HeaderMap::new(),
            meta: None,
        }
    }

    /// The tags of the request's own host and path, and of the same-host
    /// URLs its response's `Location` and `Content-Location` name, when the
    /// response is not an error (`2xx`, `3xx`).
    fn invalidations(
        &self,
        context: &RuleContext,
        _request: &HeaderMap,
        response: &response::Parts,
    ) -> Invalidations {
        let Some(target) = &context.target else {
            return Invalidations::default();
        };
        let (host, path) = &**target;
        let method = &Method::POST; // any unsafe method names the same targets
        let mut tags: Vec<Tag> = Vec::new();
        for (host, path) in invalidation::targets(method, response.status, host, path, &response.headers) {
            let tag = url_tag(&host, &path);
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        Invalidations {
            keys: Vec::new(),
            tags,
        }
    }

    fn for_client(&self, _headers: &mut HeaderMap, _forwarded: bool) {}

    /// The key and its variants.
    fn purge_targets(
        &self,
        _context: &RuleContext,
        key: hitbox_core::CacheKey,
    ) -> Vec<hitbox_backend::PurgeTarget> {
        crate::purge::key_and_variants(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> RulePolicy {
        RulePolicy {
            rules: vec![Rule::new()],
            fallback: CachePolicy::new(Duration::from_secs(10)),
        }
    }

    fn decide(request: http::Request<()>, has_body: bool) -> Decision<RuleContext> {
        let (mut parts, ()) = request.into_parts();
        policy().decide(&mut parts, has_body)
    }

    const FIRST: RuleContext = RuleContext {
        index: 0,
        matched: true,
        target: None,
    };

    #[test]
    fn decisions_are_values() {
        let bypass = |d: Decision<RuleContext>| match d {
            Decision::Bypass { detail, .. } => detail,
            _ => panic!("not a bypass"),
        };
        let get = || http::Request::get("http://a.example/x");
        assert_eq!(
            bypass(decide(http::Request::options("/x").body(()).unwrap(), false)),
            Some(BypassReason::Method)
        );
        assert_eq!(
            bypass(decide(get().body(()).unwrap(), true)),
            Some(BypassReason::RequestBody)
        );
        assert_eq!(
            bypass(decide(get().header("cookie", "a=1").body(()).unwrap(), false)),
            Some(BypassReason::Cookie)
        );
        match decide(http::Request::head("http://a.example/x").body(()).unwrap(), false) {
            Decision::Cache { head, body_limit, .. } => assert!(head && body_limit.is_none()),
            _ => panic!("HEAD is looked up"),
        }
    }

    fn invalidated_tags(
        policy: &RulePolicy,
        request: http::Request<()>,
        response: http::Response<()>,
    ) -> Vec<Tag> {
        let (mut parts, ()) = request.into_parts();
        let context = match policy.decide(&mut parts, false) {
            Decision::Invalidate(context) => context,
            _ => return Vec::new(),
        };
        let (response, ()) = response.into_parts();
        let out = policy.invalidations(&context, &parts.headers, &response);
        assert!(out.keys.is_empty());
        out.tags
    }

    #[test]
    fn unsafe_requests_invalidate_their_paths_and_same_host_locations() {
        let policy = policy();
        let put = |uri: &str| {
            http::Request::put(uri)
                .header("host", "A.example")
                .body(())
                .unwrap()
        };
        let ok = |pairs: &[(&str, &str)]| {
            let mut response = http::Response::builder().status(200);
            for (n, v) in pairs {
                response = response.header(*n, *v);
            }
            response.body(()).unwrap()
        };
        assert_eq!(
            invalidated_tags(&policy, put("/items/1?x=1"), ok(&[])),
            vec![url_tag("a.example", "/items/1")]
        );
        // The query does not matter to the tag.
        assert_eq!(
            url_tag("a.example", "/items/1?x=1"),
            url_tag("a.example", "/items/1")
        );
        assert_ne!(url_tag("a.example", "/items/1"), url_tag("b.example", "/items/1"));
        assert_ne!(url_tag("a.example", "/items/1"), url_tag("a.example", "/items/2"));
        let tags = invalidated_tags(
            &policy,
            put("/items/1"),
            ok(&[
                ("location", "/items/2?y=1"),
                ("content-location", "http://other.example/items/3"),
            ]),
        );
        assert_eq!(
            tags,
            vec![url_tag("a.example", "/items/1"), url_tag("a.example", "/items/2")]
        );
        let error = http::Response::builder().status(409).body(()).unwrap();
        assert!(invalidated_tags(&policy, put("/items/1"), error).is_empty());
        // Reads invalidate nothing, and no rule that invalidates: nothing either.
        assert!(
            invalidated_tags(&policy, http::Request::get("/items/1").body(()).unwrap(), ok(&[])).is_empty()
        );
        let keep = RulePolicy {
            rules: vec![Rule::new().invalidate_on_unsafe(false)],
            fallback: CachePolicy::new(Duration::from_secs(10)),
        };
        assert!(invalidated_tags(&keep, put("/items/1"), ok(&[])).is_empty());
        // A rule that caches `POST` as a read: its `POST`s are looked up.
        let reads = RulePolicy {
            rules: vec![Rule::new().post_as_read(crate::BodyKey::digest())],
            fallback: CachePolicy::new(Duration::from_secs(10)),
        };
        let (mut post, ()) = http::Request::post("/search").body(()).unwrap().into_parts();
        assert!(matches!(
            reads.decide(&mut post, true),
            Decision::Cache {
                body_limit: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn entries_carry_the_tag_of_their_path_unless_the_rule_says_not() {
        let (parts, ()) = http::Request::get("/items/1?page=2")
            .header("host", "a.example")
            .body(())
            .unwrap()
            .into_parts();
        let tags = |policy: &RulePolicy| policy.flight_options(&FIRST, &parts).tags().to_vec();
        assert_eq!(tags(&policy()), vec![url_tag("a.example", "/items/1")]);
        let keep = RulePolicy {
            rules: vec![Rule::new().invalidate_on_unsafe(false).tag("items")],
            fallback: CachePolicy::new(Duration::from_secs(10)),
        };
        assert_eq!(tags(&keep), vec![Tag::new("items")]);
    }

    #[test]
    fn body_predicates_and_keys_have_the_last_word() {
        use crate::predicate::ReadSize;
        let policy = RulePolicy {
            rules: vec![
                Rule::new()
                    .post_as_read(crate::BodyKey::digest())
                    .when_body(ReadSize::range(1..=4)),
            ],
            fallback: CachePolicy::new(Duration::from_secs(10)),
        };
        let (parts, ()) = http::Request::post("/q").body(()).unwrap().into_parts();
        let with = |bytes: &'static [u8]| {
            let mut key = KeyBuilder::new("t");
            let read = ReadBody::new(bytes::Bytes::from_static(bytes));
            policy
                .with_body(&FIRST, &parts, &read, &mut key)
                .map(|()| key.build())
        };
        assert_eq!(with(b"").err(), Some(BypassReason::BodyPredicate));
        assert_eq!(with(b"12345").err(), Some(BypassReason::BodyPredicate));
        assert_ne!(with(b"1").unwrap(), with(b"2").unwrap());
        assert_eq!(with(b"1").unwrap(), with(b"1").unwrap());
    }

    #[test]
    fn worth_follows_the_engines_freshness() {
        let now = Timestamp::from_millis(100_000);
        let meta = EntryMeta {
            stored_at: Timestamp::from_millis(90_000),
            fresh_until: Timestamp::from_millis(95_000),
            stale_until: Timestamp::from_millis(120_000),
            error_until: Timestamp::from_millis(200_000),
            tags: Vec::new(),
        };
        let stored = HitResponse::new(CachedResponse::new(
            http::StatusCode::OK,
            HeaderMap::new(),
            bytes::Bytes::new(),
        ));
        let worth = |freshness| policy().worth(&FIRST, &stored, &meta, freshness, &HeaderMap::new(), now);
        assert_eq!(
            worth(Freshness::Stale),
            Some(Worth::StaleWhileRevalidate {
                stale_for: 5,
                age: 10
            })
        );
        assert_eq!(
            worth(Freshness::StaleIfError),
            Some(Worth::Revalidate {
                fwd: Fwd::Miss,
                validate: false,
                stale_if_error: Some(5),
                if_disconnected: Disconnected::Error,
            })
        );
        assert_eq!(worth(Freshness::Expired), None);
    }

    #[test]
    fn storing_refuses_what_a_rule_must_not_keep() {
        let response = |pairs: &[(&str, &str)]| {
            let mut builder = http::Response::builder();
            for (n, v) in pairs {
                builder = builder.header(*n, *v);
            }
            builder.body(()).unwrap().into_parts().0
        };
        let store = |parts: &response::Parts, declared| {
            policy().storing(
                &FIRST,
                &HeaderMap::new(),
                parts,
                declared,
                Exchange::new(&HeaderMap::new(), 0, 0),
                Timestamp::from_millis(0),
            )
        };
        for refused in [
            &[("set-cookie", "a=1")][..],
            &[("cache-control", "no-cache")],
            &[("cache-control", "private")],
            &[("vary", "*")],
        ] {
            assert_eq!(
                store(&response(refused), None).err(),
                Some(Skip::NotStorable),
                "{refused:?}"
            );
        }
        assert_eq!(store(&response(&[]), Some(u64::MAX)).err(), Some(Skip::TooLarge));
        let kept = store(
            &response(&[
                ("cache-control", "no-cache=\"x-user\""),
                ("x-user", "a"),
                ("connection", "close"),
            ]),
            Some(5),
        )
        .unwrap();
        assert_eq!(kept.headers.len(), 1);
        assert!(kept.meta.is_none());
    }
}
