//! What the cache does with an exchange, decided from values alone.
//!
//! A layer runs one [`HttpPolicy`]: the rules ([`RulePolicy`]), or RFC 9111
//! ([`StandardsPolicy`]). The request flow asks it three questions
//! and does the I/O around the answers:
//!
//! 1. [`HttpPolicy::decide`]: how to key and look up this request, or why
//!    it bypasses the cache (or is refused);
//! 2. [`HttpPolicy::worth`]: what a stored response is worth for this
//!    request, now: fresh, stale and usable, to be revalidated, or unusable;
//! 3. [`HttpPolicy::storing`]: whether and how to store the origin's
//!    response.
//!
//! No answer reads a clock or touches the network: `now` is passed in, so
//! every branch is a unit test.

use hitbox_core::{CacheKey, EntryMeta, EntryOptions, Freshness, KeyBuilder, Tag, Timestamp};
use http::{HeaderMap, Method, request, response};

use crate::headers::{BypassReason, Fwd};
use crate::predicate::ReadBody;
use crate::response::{CachedResponse, HitResponse};
use crate::rfc9111::freshness::{Disconnected, Exchange};
use crate::rfc9111::host::HostError;
use crate::rule::BodyPredicate;

mod rules;
mod standards;

pub(crate) use rules::RulePolicy;
pub(crate) use standards::StandardsPolicy;

/// What a policy decides for a request before anything is looked up.
pub(crate) enum Decision<C> {
    /// Forwarded without the cache; `rule`: the index of the rule that
    /// applied, if any (for the request's `rule` label).
    Bypass {
        detail: Option<BypassReason>,
        rule: Option<usize>,
    },
    /// Answered `400` without asking the origin.
    Reject(HostError),
    /// Forwarded; what its response says changed is then invalidated.
    Invalidate(C),
    /// Looked up under the key `key` builds. When `body_limit` says so the
    /// request is read first (its body, up to that many bytes, or none) and
    /// [`HttpPolicy::with_body`] has the last word and adds to the key.
    Cache {
        key: KeyBuilder,
        body_limit: Option<usize>,
        /// A `HEAD`, looked up as the `GET` of the same URL.
        head: bool,
        context: C,
    },
}

/// What a stored response is worth for a request, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Worth {
    /// Fresh: served, with `ttl` seconds of freshness left.
    Fresh { ttl: u64, age: u64 },
    /// Stale, and the request accepts it as it is (`max-stale`).
    StaleAllowed { stale_for: u64, age: u64 },
    /// Stale: served while one background request refreshes it.
    StaleWhileRevalidate { stale_for: u64, age: u64 },
    /// Not served before the origin is asked (`fwd`); with the stored
    /// validators when `validate`; and it may stand in for an origin error
    /// when `stale_if_error` holds how long it has been stale. When the
    /// origin cannot be reached at all, `if_disconnected` says what to do.
    Revalidate {
        fwd: Fwd,
        validate: bool,
        stale_if_error: Option<u64>,
        if_disconnected: Disconnected,
    },
}

/// How a response is stored.
pub(crate) struct Storing {
    /// The status and headers kept: no hop-by-hop fields, none meant for
    /// one client only.
    pub headers: HeaderMap,
    /// The largest body stored.
    pub limit: usize,
    /// The metadata to store it with; `None`: the engine stores it with the
    /// flight's options ([`HttpPolicy::flight_options`]).
    pub meta: Option<EntryMeta>,
    /// The exchange kept with it, for the age calculation (standards mode).
    pub exchange: Option<Exchange>,
    /// What the whole body must pass to be stored (a rule's
    /// response-body predicate).
    pub accept: Option<BodyPredicate>,
    /// Tags the response brought (surrogate keys), also in `meta`'s tags
    /// once the layer has read them.
    pub surrogate: Vec<Tag>,
}

/// What a successful unsafe request makes unusable.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Invalidations {
    /// Entries removed by key.
    pub keys: Vec<CacheKey>,
    /// Tags whose entries are removed.
    pub tags: Vec<Tag>,
}

/// Why a response is passed on without being stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// The response may not be stored (its status or headers, or the
    /// request's credentials or directives).
    NotStorable,
    /// A `HEAD` response has no body to store.
    Head,
    /// Its declared length is over the limit.
    TooLarge,
    /// It would be stale at once.
    Stale,
}

/// A `304` applied to a stored response.
pub(crate) struct Merged {
    /// The stored response with the `304`'s fields, for the client.
    pub response: CachedResponse,
    /// What the `304` said to the requesting client alone.
    pub personal: HeaderMap,
    /// The metadata to store the merged response with, if it may still be
    /// stored (else the stored response is removed).
    pub meta: Option<EntryMeta>,
}

/// The three questions, and the few facts the flow needs beside them.
pub(crate) trait HttpPolicy: Send + Sync + 'static {
    /// What the policy keeps about a request between the questions.
    type Context: Clone + Send + Sync + 'static;

    /// The index of the rule that applies to a request, for its `rule`
    /// label (`None`: no rule, or standards mode).
    fn rule_index(&self, context: &Self::Context) -> Option<usize>;

    /// How to key and look up this request, or why not.
    fn decide(&self, parts: &mut request::Parts, has_body: bool) -> Decision<Self::Context>;

    /// For a request decided with a `body_limit`, read whole (`body` is
    /// empty when it had none): whether it is still looked up, and what it
    /// adds to `key`; `Err` forwards it uncached, for that reason.
    fn with_body(
        &self,
        context: &Self::Context,
        parts: &request::Parts,
        body: &ReadBody,
        key: &mut KeyBuilder,
    ) -> Result<(), BypassReason>;

    /// What `stored`, whose entry has `meta` and `freshness` on the engine's
    /// clock, is worth for `request` at `now`; `None`: nothing usable.
    fn worth(
        &self,
        context: &Self::Context,
        stored: &HitResponse,
        meta: &EntryMeta,
        freshness: Freshness,
        request: &HeaderMap,
        now: Timestamp,
    ) -> Option<Worth>;

    /// Whether a request waits for another's load of the same key (and
    /// leads one otherwise).
    fn joins_loads(&self, context: &Self::Context, request: &HeaderMap) -> bool;

    /// Whether a miss takes the layer's distributed lock, when it has one
    /// (after it was chosen to lead the load in this process).
    fn takes_distributed_lock(&self, _context: &Self::Context) -> bool {
        true
    }

    /// Whether the request may only be answered from the cache (`504`
    /// otherwise).
    fn only_if_cached(&self, context: &Self::Context) -> bool;

    /// Whether stored responses answer range requests (`206`, `416`), and
    /// stored parts are completed (standards mode).
    fn serves_ranges(&self) -> bool;

    /// Whether the policy works with validators: a stored response answers
    /// a client's own conditional request with `304`, and a refresh sends
    /// the stored `ETag` and `Last-Modified` to the origin.
    fn uses_validators(&self) -> bool;

    /// Whether the variants of a response that varies are tagged with
    /// their primary key's tag ([`crate::purge::variants_tag`]), so that a
    /// purge of the URL reaches them all (standards mode reaches them by
    /// the URL's own tag instead).
    fn tags_variants(&self) -> bool;

    /// The options of a load's single-flight for `request` (the engine
    /// stores the value with them, unless their lifetime is zero).
    fn flight_options(&self, context: &Self::Context, request: &request::Parts) -> EntryOptions;

    /// Whether and how to store `response`, received for a request with
    /// the `request` headers in `exchange`, at `now`.
    fn storing(
        &self,
        context: &Self::Context,
        request: &HeaderMap,
        response: &response::Parts,
        declared: Option<u64>,
        exchange: Exchange,
        now: Timestamp,
    ) -> Result<Storing, Skip>;

    /// Whether and how the response to an unsafe request is stored for
    /// later `GET`s of its target, and under which key: a `POST` response
    /// that names its own target in `Content-Location`, with explicit
    /// freshness (standards mode only).
    #[allow(clippy::too_many_arguments)]
    fn storing_unsafe(
        &self,
        context: &Self::Context,
        method: &Method,
        request: &HeaderMap,
        response: &response::Parts,
        declared: Option<u64>,
        exchange: Exchange,
        now: Timestamp,
    ) -> Option<(hitbox_core::CacheKey, Storing)>;

    /// Whether a response skipped for `skip` makes the next requests for
    /// its key go straight to the origin for a while (hit-for-pass).
    fn remembers(&self, skip: Skip) -> bool;

    /// Applies a `304` to `stored` (standards mode only: rules never
    /// revalidate).
    fn merge(
        &self,
        context: &Self::Context,
        stored: CachedResponse,
        not_modified: &HeaderMap,
        exchange: Exchange,
        request: &HeaderMap,
        now: Timestamp,
    ) -> Merged;

    /// What a successful unsafe request invalidates: the keys of the URLs
    /// it names, and the tags every variant of them carries.
    fn invalidations(
        &self,
        context: &Self::Context,
        request: &HeaderMap,
        response: &response::Parts,
    ) -> Invalidations;

    /// Removes from a response's headers what its client must not see:
    /// fields meant for this cache only, and, on a response `forwarded`
    /// from the origin, hop-by-hop fields.
    fn for_client(&self, headers: &mut HeaderMap, forwarded: bool);

    /// What a purge of the URL keyed `key` (with `context`) reaches.
    fn purge_targets(&self, context: &Self::Context, key: CacheKey) -> Vec<hitbox_backend::PurgeTarget>;
}
