//! A per-request override of what the cache does.

use http::request::Parts;

/// What the cache does for one request, put in its extensions by the caller
/// (`request.extensions_mut().insert(CacheMode::Reload)`), or for a reqwest
/// client through the middleware chain's extensions. Without one, the
/// rules or the standards decide, as always.
///
/// A mode only narrows what the cache would do: no mode stores a response
/// the rules or the standards refuse, or serves one across keys.
///
/// ```
/// use hitbox_tower::CacheMode;
///
/// let mut request = http::Request::get("/report").body(()).unwrap();
/// request.extensions_mut().insert(CacheMode::Reload);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CacheMode {
    /// What the rules or the standards say.
    #[default]
    Default,
    /// As if there were no cache: nothing is read or stored for this
    /// request (`Cache-Status: …; fwd=bypass; detail=request-mode`). An
    /// unsafe request still invalidates what it changes.
    NoStore,
    /// Nothing stored is read; the origin's response is stored as usual,
    /// replacing what was there.
    Reload,
    /// Only the cache answers: a stored response, fresh or stale, is served
    /// without asking the origin; without one the answer is `504`.
    OnlyIfCached,
    /// A stored response, fresh or stale, is served without revalidation;
    /// without one the origin is asked and its response stored.
    ForceCache,
}

impl CacheMode {
    /// The mode a request asks for.
    pub(crate) fn of(parts: &Parts) -> CacheMode {
        parts.extensions.get::<CacheMode>().copied().unwrap_or_default()
    }

    /// Whether a stale stored response is served as it is.
    pub(crate) fn serves_stale(self) -> bool {
        matches!(self, CacheMode::OnlyIfCached | CacheMode::ForceCache)
    }
}
