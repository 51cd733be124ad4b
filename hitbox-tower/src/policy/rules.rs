//! Rule mode: the layer's rules decide which requests are cached, under
//! which key, and for how long; the engine's freshness (from the rule's
//! [`CachePolicy`]) says what a stored response is worth.

use hitbox_core::{CachePolicy, EntryMeta, EntryOptions, Freshness, KeyBuilder, Tag, Timestamp};
use http::{HeaderMap, Method, header, request, response};

use super::{Decision, HttpPolicy, Merged, Skip, Storing, Worth};
use crate::headers::{BypassReason, Fwd, strip_hop_by_hop};
use crate::response::{CachedResponse, HitResponse};
use crate::rfc9111::directives::CacheControl;
use crate::rfc9111::freshness::{Disconnected, Exchange};
use crate::rfc9111::vary;
use crate::rule::Rule;

/// The rules of a layer, tried in order, and the cache's own policy for the
/// rules that name none.
pub(crate) struct RulePolicy {
    pub rules: Vec<Rule>,
    pub fallback: CachePolicy,
}

/// The index of the rule that applies.
#[derive(Clone, Copy)]
pub(crate) struct RuleIndex(pub usize);

impl RulePolicy {
    fn rule(&self, context: &RuleIndex) -> &Rule {
        &self.rules[context.0]
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
}

impl HttpPolicy for RulePolicy {
    type Context = RuleIndex;

    fn decide(&self, parts: &mut request::Parts, has_body: bool) -> Decision<RuleIndex> {
        let Some(index) = self.rules.iter().position(|rule| rule.matches(parts)) else {
            return Decision::Bypass(None);
        };
        let rule = &self.rules[index];
        let head = parts.method == Method::HEAD;
        let method = if head { &Method::GET } else { &parts.method };
        if !rule.methods.contains(method) {
            return Decision::Bypass(Some(BypassReason::Method));
        }
        // A `GET` body the key does not capture could change the response
        // for everyone who shares the key.
        if has_body && *method == Method::GET && rule.body_key_limit.is_none() {
            return Decision::Bypass(Some(BypassReason::RequestBody));
        }
        if parts.headers.contains_key(header::AUTHORIZATION) && !rule.cache_authorized {
            return Decision::Bypass(Some(BypassReason::Authorization));
        }
        if parts.headers.contains_key(header::COOKIE) && !rule.cache_with_cookies {
            return Decision::Bypass(Some(BypassReason::Cookie));
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
            body_limit: if head { None } else { rule.body_key_limit },
            head,
            context: RuleIndex(index),
        }
    }

    fn worth(
        &self,
        _context: &RuleIndex,
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

    fn joins_loads(&self, _context: &RuleIndex, _request: &HeaderMap) -> bool {
        true
    }

    fn only_if_cached(&self, _context: &RuleIndex) -> bool {
        false
    }

    fn serves_ranges(&self) -> bool {
        false
    }

    fn uses_validators(&self) -> bool {
        false
    }

    fn flight_options(&self, context: &RuleIndex) -> EntryOptions {
        let rule = self.rule(context);
        let policy = rule.policy.unwrap_or(self.fallback);
        let mut options = EntryOptions::new()
            .ttl(policy.ttl())
            .stale_while_revalidate(policy.stale_while_revalidate_window())
            .stale_if_error(policy.stale_if_error_window());
        for tag in &rule.tags {
            options = options.tag(tag.clone());
        }
        options
    }

    fn storing(
        &self,
        context: &RuleIndex,
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
        _context: &RuleIndex,
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

    fn invalidations(
        &self,
        _context: &RuleIndex,
        _request: &HeaderMap,
        _response: &response::Parts,
    ) -> Vec<(hitbox_core::CacheKey, Tag)> {
        Vec::new()
    }

    fn for_client(&self, _headers: &mut HeaderMap, _forwarded: bool) {}
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

    fn decide(request: http::Request<()>, has_body: bool) -> Decision<RuleIndex> {
        let (mut parts, ()) = request.into_parts();
        policy().decide(&mut parts, has_body)
    }

    #[test]
    fn decisions_are_values() {
        let bypass = |d: Decision<RuleIndex>| match d {
            Decision::Bypass(reason) => reason,
            _ => panic!("not a bypass"),
        };
        let get = || http::Request::get("http://a.example/x");
        assert_eq!(
            bypass(decide(http::Request::post("/x").body(()).unwrap(), false)),
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
        let worth =
            |freshness| policy().worth(&RuleIndex(0), &stored, &meta, freshness, &HeaderMap::new(), now);
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
                &RuleIndex(0),
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
