//! axum's [`MatchedPath`](axum::extract::MatchedPath) as a predicate and as
//! key parts (feature `axum`), so that a route's pattern is written once, in
//! the router.
//!
//! axum records the pattern of the route a request matched in the request's
//! extensions before the route's middleware runs, so a layer added with
//! `Router::layer` or `route_layer` sees it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use hitbox_core::{Extractor, KeyBuilder, Predicate};
use http::request::Parts;

use crate::path::PathPattern;

/// The route pattern the request matched, if axum recorded one.
fn matched(parts: &Parts) -> Option<&str> {
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

/// Passes when the request matched one of the given axum route patterns,
/// written as in the router (`/users/{id}`). A request that matched no
/// route (axum's fallback) never passes.
///
/// ```
/// use axum::{Router, routing::get};
/// use hitbox_backend::{Cache, MemoryBackend};
/// use hitbox_core::CachePolicy;
/// use hitbox_tower::{CacheLayer, Rule, predicate::MatchedPath};
///
/// let layer = CacheLayer::builder(Cache::new(MemoryBackend::new()))
///     .rule(Rule::new().when(MatchedPath::is("/prices/{id}")).policy(CachePolicy::real_time()))
///     .rule(Rule::new())
///     .build();
/// let app: Router = Router::new()
///     .route("/prices/{id}", get(|| async { "a price" }))
///     .route("/products/{id}", get(|| async { "a product" }))
///     .layer(layer);
/// ```
#[derive(Debug, Clone)]
pub struct MatchedPath {
    patterns: Arc<[Box<str>]>,
}

impl MatchedPath {
    /// Passes for requests that matched `pattern`.
    pub fn is(pattern: impl Into<Box<str>>) -> Self {
        MatchedPath {
            patterns: Arc::from([pattern.into()]),
        }
    }

    /// Passes for requests that matched any of `patterns`.
    pub fn any_of<P: Into<Box<str>>>(patterns: impl IntoIterator<Item = P>) -> Self {
        MatchedPath {
            patterns: patterns.into_iter().map(Into::into).collect(),
        }
    }
}

impl Predicate<Parts> for MatchedPath {
    fn check(&self, parts: &Parts) -> bool {
        matched(parts).is_some_and(|route| self.patterns.iter().any(|pattern| **pattern == *route))
    }
}

/// Key parts from the axum route the request matched: `route=<pattern>`,
/// then each of the pattern's parameters as `param.<name>=<value>`, as
/// [`PathParams`](crate::extract::PathParams) would give them, without the
/// pattern written a second time. Returns `false` (nothing appended) for a
/// request that matched no route, so [`Extractor::or`] can fall back, say,
/// to [`Path`](crate::extract::Path).
///
/// ```
/// use hitbox_core::{CacheKey, Extractor};
/// use hitbox_tower::extract::{MatchedRoute, Path};
///
/// let extractor = MatchedRoute::new().or(Path);
/// let (parts, ()) = http::Request::get("/health").body(()).unwrap().into_parts();
/// let mut key = CacheKey::builder("api");
/// extractor.extract(&parts, &mut key); // no route recorded: the path
/// assert_eq!(key.build().as_str(), "api:v1:path=/health");
/// ```
///
/// Patterns are parsed once each and kept (an application has a bounded
/// number of routes); a pattern this crate cannot parse keys the route
/// alone.
#[derive(Clone, Default)]
pub struct MatchedRoute {
    parsed: Arc<RwLock<HashMap<Box<str>, Option<PathPattern>>>>,
}

impl MatchedRoute {
    /// Keys requests by their matched route and its parameters.
    pub fn new() -> Self {
        MatchedRoute::default()
    }

    fn with_pattern<R>(&self, route: &str, use_it: impl FnOnce(Option<&PathPattern>) -> R) -> R {
        if let Some(parsed) = self.parsed.read().unwrap_or_else(|e| e.into_inner()).get(route) {
            return use_it(parsed.as_ref());
        }
        let parsed = PathPattern::parse(route).ok();
        let result = use_it(parsed.as_ref());
        self.parsed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(route.into(), parsed);
        result
    }
}

impl fmt::Debug for MatchedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MatchedRoute")
    }
}

impl Extractor<Parts> for MatchedRoute {
    fn extract(&self, parts: &Parts, key: &mut KeyBuilder) -> bool {
        let Some(route) = matched(parts) else {
            return false;
        };
        key.push("route", Some(route.as_bytes()));
        self.with_pattern(route, |pattern| {
            let Some(params) = pattern.and_then(|pattern| pattern.matches(parts.uri.path())) else {
                return;
            };
            for (name, value) in params.iter() {
                key.push_prefixed("param.", name.as_bytes(), Some(value.as_bytes()));
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hitbox_core::CacheKey;

    fn parts(uri: &str, route: Option<&str>) -> Parts {
        let mut request = http::Request::get(uri).body(()).unwrap();
        if let Some(route) = route {
            // axum builds MatchedPath itself; go through a router to get one.
            let matched = matched_path_for(route, uri);
            request.extensions_mut().insert(matched);
        }
        request.into_parts().0
    }

    /// The `MatchedPath` axum records for `uri` under a route `route`.
    fn matched_path_for(route: &str, uri: &str) -> axum::extract::MatchedPath {
        use axum::extract::Request;
        use std::sync::Mutex;
        use tower::ServiceExt;
        let seen = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&seen);
        let router = axum::Router::new().route(
            route,
            axum::routing::get(move |request: Request| {
                let sink = Arc::clone(&sink);
                async move {
                    *sink.lock().unwrap() = request.extensions().get::<axum::extract::MatchedPath>().cloned();
                }
            }),
        );
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime
            .block_on(router.oneshot(http::Request::get(uri).body(axum::body::Body::empty()).unwrap()))
            .unwrap();
        seen.lock().unwrap().take().expect("axum recorded the route")
    }

    #[test]
    fn the_predicate_compares_the_route_not_the_path() {
        let users = parts("/users/42", Some("/users/{id}"));
        assert!(MatchedPath::is("/users/{id}").check(&users));
        assert!(!MatchedPath::is("/users/42").check(&users));
        assert!(MatchedPath::any_of(["/a", "/users/{id}"]).check(&users));
        assert!(!MatchedPath::is("/users/{id}").check(&parts("/users/42", None)));
    }

    #[test]
    fn the_key_holds_the_route_and_its_parameters() {
        let route = MatchedRoute::new();
        let key = |parts: &Parts| {
            let mut key = CacheKey::builder("api");
            let appended = route.extract(parts, &mut key);
            (appended, key.build().as_str().to_owned())
        };
        let first = parts("/users/42/posts/7", Some("/users/{id}/posts/{post}"));
        assert_eq!(
            key(&first),
            (
                true,
                "api:v1:route=/users/{id}/posts/{post}:param.id=42:param.post=7".to_owned()
            )
        );
        // Parsed once, then read from the kept patterns: the same key again.
        assert_eq!(
            key(&first).1,
            "api:v1:route=/users/{id}/posts/{post}:param.id=42:param.post=7"
        );
        let other = parts("/users/43/posts/7", Some("/users/{id}/posts/{post}"));
        assert_ne!(key(&first).1, key(&other).1);
        assert_eq!(key(&parts("/users/42", None)), (false, "api:v1".to_owned()));
    }
}
