//! Purging what the layer stored: by URL, by tag, by key prefix, hard or
//! soft, and tags that responses bring in a header (`Surrogate-Key`).
//!
//! A [`Purger`] ([`CacheLayer::purger`]) computes the key the layer builds
//! for a URL with the layer's own policy (the rule that matches it and its
//! key parts, or standards mode's URL key) and purges through the layer's
//! [`Cache`], so a Redis tier and its invalidation bus carry the purge to
//! every instance. See [`hitbox_backend::purge`] for what hard and soft
//! mean in each tier.
//!
//! What a URL purge reaches:
//!
//! - in standards mode, every entry of that URL (its `Vary` variants and
//!   the variants of [`key_field`](crate::rfc9111::Rfc9111::key_field)s):
//!   they all carry the URL's tag;
//! - in rule mode, the entry under the key the matching rule builds for the
//!   URL and the headers given, and its `Vary` variants (by their key
//!   prefix; a key stored as a digest has its variants left, which a hard
//!   purge makes unreachable anyway: a variant older than its primary entry
//!   is never served).

use std::time::Duration;

use hitbox_backend::{BackendError, Cache, PurgeMode, PurgeTarget};
use hitbox_core::{CacheKey, EntryOptions, KeyBuilder, Tag, Timestamp};
use http::header::{HeaderMap, HeaderName};
use http::{Method, Request, Uri};

use crate::layer::{CacheLayer, LayerState, Mode};
use crate::policy::{Decision, HttpPolicy, Storing};

/// The response header whose tags are added to a stored entry, by default.
pub const DEFAULT_SURROGATE_KEY_HEADER: HeaderName = HeaderName::from_static("surrogate-key");
/// How many tags one response may add, by default; further tags are ignored.
pub const DEFAULT_MAX_SURROGATE_KEYS: usize = 32;
/// The longest tag a response may add, in bytes, by default; longer ones are
/// ignored.
pub const DEFAULT_MAX_SURROGATE_KEY_LEN: usize = 128;

/// Tags that the origin's responses carry in a header (Fastly's
/// `Surrogate-Key` habit): space-separated, added to the stored entry's
/// tags, and removed from every response before a client sees it (on the
/// miss that stores it, on hits, and on responses that are not stored).
///
/// Only responses bring tags: a request header never becomes a tag. A tag
/// is visible ASCII; a tag that is longer than the limit is ignored, and
/// so is any tag past the count limit, so an origin's mistake cannot make
/// an entry's metadata grow without bound.
///
/// ```
/// use hitbox_backend::{Cache, MemoryBackend};
/// use hitbox_tower::CacheLayer;
/// use hitbox_tower::purge::SurrogateKeys;
///
/// let layer = CacheLayer::builder(Cache::new(MemoryBackend::new()))
///     .surrogate_keys(SurrogateKeys::new().header(http::HeaderName::from_static("x-cache-tags")).max_keys(8))
///     .build();
/// ```
#[derive(Debug, Clone)]
pub struct SurrogateKeys {
    pub(crate) header: HeaderName,
    pub(crate) max_keys: usize,
    pub(crate) max_len: usize,
}

impl Default for SurrogateKeys {
    fn default() -> Self {
        SurrogateKeys::new()
    }
}

impl SurrogateKeys {
    /// Tags from `Surrogate-Key`, at most 32 of at most 128 bytes each.
    pub fn new() -> Self {
        SurrogateKeys {
            header: DEFAULT_SURROGATE_KEY_HEADER,
            max_keys: DEFAULT_MAX_SURROGATE_KEYS,
            max_len: DEFAULT_MAX_SURROGATE_KEY_LEN,
        }
    }

    /// The response header that carries the tags.
    pub fn header(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }

    /// How many tags one response may add (further ones are ignored).
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// The longest tag, in bytes (longer ones are ignored).
    pub fn max_len(mut self, max: usize) -> Self {
        self.max_len = max;
        self
    }

    /// The tags `headers` carry, within the limits, without repeats.
    pub(crate) fn tags(&self, headers: &HeaderMap) -> Vec<Tag> {
        let mut tags: Vec<Tag> = Vec::new();
        let values = headers.get_all(&self.header).iter();
        let words = values
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split([' ', '\t', ',']).filter(|word| !word.is_empty()));
        for word in words {
            if tags.len() >= self.max_keys {
                tracing::debug!(max = self.max_keys, "surrogate keys past the limit ignored");
                break;
            }
            if word.len() > self.max_len || !word.bytes().all(|b| b.is_ascii_graphic()) {
                continue;
            }
            let tag = Tag::new(word.to_owned());
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        tags
    }
}

impl<P: HttpPolicy> LayerState<P> {
    /// Removes from a response's headers what its client must not see: the
    /// policy's own fields, and, on a response `forwarded` from the origin,
    /// the surrogate-key header. A stored response never holds that
    /// header (it is dropped before anything is stored, see
    /// [`LayerState::strip_surrogate`]), so a hit does not look for it.
    #[inline]
    pub(crate) fn for_client(&self, headers: &mut HeaderMap, forwarded: bool) {
        self.policy.for_client(headers, forwarded);
        if forwarded {
            self.strip_surrogate(headers);
        }
    }

    /// Drops the surrogate-key header, when the layer reads one, from
    /// headers about to be stored or passed on.
    pub(crate) fn strip_surrogate(&self, headers: &mut HeaderMap) {
        if let Some(surrogate) = &self.surrogate {
            headers.remove(&surrogate.header);
        }
    }

    /// Reads the response's surrogate keys into `storing` and its
    /// metadata's tags (stored in the one checked write), and drops the
    /// header from the stored headers. A policy that lets
    /// the engine store with the flight's `options` gets metadata of its
    /// own here (the same the engine would compute, with the tags), unless
    /// the options give no lifetime.
    pub(crate) fn tag_from_response(
        &self,
        storing: &mut Storing,
        response: &HeaderMap,
        options: &EntryOptions,
        now: Timestamp,
    ) {
        let Some(surrogate) = &self.surrogate else {
            return;
        };
        self.strip_surrogate(&mut storing.headers);
        storing.surrogate = surrogate.tags(response);
        if storing.meta.is_none() {
            let policy = self.cache.policy().with_overrides(options);
            let lives = !policy.ttl().is_zero()
                || !policy.stale_while_revalidate_window().is_zero()
                || !policy.stale_if_error_window().is_zero();
            if lives {
                storing.meta = Some(policy.entry_meta(now, options.tags().to_vec()));
            }
        }
        // Stored with the entry in its one checked write: a shared tier
        // registers the tags the load did not know when it started without
        // comparing generations, and a fence that an invalidation of one of
        // them left under the key still refuses the write.
        if let Some(meta) = &mut storing.meta {
            for tag in &storing.surrogate {
                if !meta.tags.contains(tag) {
                    meta.tags.push(tag.clone());
                }
            }
        }
    }

    /// The options a load or a background refresh hands the engine: with
    /// surrogate keys, the layer stores (with the response's tags), so the
    /// engine must not store the result again without them.
    pub(crate) fn engine_options(&self, options: &EntryOptions) -> EntryOptions {
        if self.surrogate.is_none() {
            return options.clone();
        }
        options
            .clone()
            .ttl(Duration::ZERO)
            .stale_while_revalidate(Duration::ZERO)
            .stale_if_error(Duration::ZERO)
    }

    /// What purging `uri` (a `GET` with `headers`) reaches.
    fn url_targets(&self, uri: &Uri, headers: &HeaderMap) -> Result<Vec<PurgeTarget>, PurgeError> {
        let mut request = Request::new(());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        let (mut parts, ()) = request.into_parts();
        match self.policy.decide(&mut parts, false) {
            Decision::Cache {
                key,
                body_limit: None,
                context,
                ..
            } => Ok(self.policy.purge_targets(&context, key.build())),
            Decision::Cache { .. } => Err(PurgeError::KeyedByBody),
            Decision::Reject(_) => Err(PurgeError::BadHost),
            Decision::Bypass { .. } | Decision::Invalidate(_) => Err(PurgeError::NotCached),
        }
    }
}

/// The targets of a URL purge in rule mode: the key, and the variants
/// stored beside it: by their tag ([`variants_tag`]), which reaches every
/// one, digested or not, and by the prefix their keys share with the
/// primary key (for variants stored before they were tagged).
pub(crate) fn key_and_variants(primary: CacheKey) -> Vec<PurgeTarget> {
    let mut targets = Vec::with_capacity(3);
    targets.push(PurgeTarget::Tag(variants_tag(&primary)));
    if !primary.is_digested() {
        let prefix = KeyBuilder::new("vary").part("of", primary.as_str()).key_prefix();
        targets.push(PurgeTarget::Prefix(prefix));
    }
    targets.insert(0, PurgeTarget::Key(primary));
    targets
}

/// The tag of the variants of the response stored under `primary` (rule
/// mode): `hitbox.variants.` and the primary key's log digest. A variant's
/// key may be a digest that no prefix reaches (the primary key's is, or
/// the response varies by credentials); its tag is how a purge of the URL
/// finds it. Two primary keys whose digests collided would only purge each
/// other's variants.
pub(crate) fn variants_tag(primary: &CacheKey) -> Tag {
    Tag::new(format!("hitbox.variants.{}", primary.log_id()))
}

/// Why a purge did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// The URL is not one the layer caches: no rule matches a `GET` of it,
    /// or the policy bypasses it.
    #[error("the layer does not cache this URL")]
    NotCached,
    /// The rule that matches the URL keys request bodies: a URL alone does
    /// not name its entries (purge by tag or prefix instead).
    #[error("the rule for this URL keys request bodies; purge by tag or prefix")]
    KeyedByBody,
    /// The URL's host is missing or ambiguous (standards mode).
    #[error("the URL has no usable host")]
    BadHost,
    /// The tag or prefix is empty, too long, or not visible ASCII.
    #[error("the tag or prefix is empty, too long or not visible ASCII")]
    BadTarget,
    /// A tier failed, or cannot do this purge ([`BackendError::kind`]
    /// tells which): some entries may be purged and others not; purges are
    /// idempotent, so retry.
    #[error("the purge failed: {0}")]
    Backend(#[from] BackendError),
}

/// The longest tag or prefix a purge accepts, in bytes.
pub const MAX_PURGE_TARGET_LEN: usize = 1024;

fn checked(target: &str) -> Result<(), PurgeError> {
    if target.is_empty()
        || target.len() > MAX_PURGE_TARGET_LEN
        || !target.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(PurgeError::BadTarget);
    }
    Ok(())
}

/// Purges what a [`CacheLayer`] stored; cheap to clone (see the [module
/// documentation](self)).
///
/// ```
/// use hitbox_backend::{Cache, MemoryBackend, PurgeMode};
/// use hitbox_tower::CacheLayer;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let layer = CacheLayer::new(Cache::new(MemoryBackend::new()));
/// let purger = layer.purger();
/// let uri = "http://shop.example/products/1".parse().unwrap();
/// let purged = purger.purge_url(&uri, &http::HeaderMap::new(), PurgeMode::Soft).await.unwrap();
/// assert_eq!(purged, 0); // nothing stored yet
/// purger.purge_tag("product-1", PurgeMode::Hard).await.unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct Purger {
    mode: Mode,
}

impl std::fmt::Debug for Purger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purger")
            .field("cache", self.cache())
            .finish_non_exhaustive()
    }
}

impl CacheLayer {
    /// A handle that purges what this layer stored, by URL, tag or prefix.
    pub fn purger(&self) -> Purger {
        Purger {
            mode: self.mode.clone(),
        }
    }
}

impl Purger {
    /// The cache the purges go through.
    pub fn cache(&self) -> &Cache {
        match &self.mode {
            Mode::Rules(shared) => &shared.cache,
            Mode::Standards(shared) => &shared.cache,
        }
    }

    /// Purges the entries the layer keeps for a `GET` of `uri` (absolute,
    /// or with a `Host` in `headers`) with the request `headers` (those the
    /// key is built from: the layer ignores the others). Returns how many
    /// entries were purged.
    pub async fn purge_url(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        mode: PurgeMode,
    ) -> Result<u64, PurgeError> {
        let targets = match &self.mode {
            Mode::Rules(shared) => shared.url_targets(uri, headers)?,
            Mode::Standards(shared) => shared.url_targets(uri, headers)?,
        };
        let mut purged = 0;
        for target in targets {
            match self.cache().purge(target, mode).await {
                Ok(count) => purged += count,
                // A tier that cannot list keys leaves variants to the
                // primary entry's purge (see the module documentation).
                Err(BackendError::Unsupported { .. }) if purged > 0 || mode == PurgeMode::Hard => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(purged)
    }

    /// Purges every entry tagged `tag`: by a rule ([`Rule::tag`](crate::Rule::tag))
    /// or by its response's surrogate keys.
    pub async fn purge_tag(&self, tag: &str, mode: PurgeMode) -> Result<u64, PurgeError> {
        checked(tag)?;
        Ok(self.cache().purge_tag(&Tag::new(tag.to_owned()), mode).await?)
    }

    /// Purges every entry whose key starts with `prefix` (see
    /// [`KeyBuilder::key_prefix`]).
    pub async fn purge_prefix(&self, prefix: &str, mode: PurgeMode) -> Result<u64, PurgeError> {
        checked(prefix)?;
        Ok(self.cache().purge_prefix(prefix, mode).await?)
    }

    /// Purges every entry of a rule's [namespace](crate::Rule::namespace).
    pub async fn purge_namespace(&self, namespace: &str, mode: PurgeMode) -> Result<u64, PurgeError> {
        checked(namespace)?;
        self.purge_prefix(&KeyBuilder::new(namespace).key_prefix(), mode)
            .await
    }
}
