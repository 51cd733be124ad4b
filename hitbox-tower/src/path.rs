//! Route-shaped path patterns: `/users/{id}`, `/files/{*rest}`.
//!
//! A [`PathPattern`] is parsed once, when routes are configured, and then
//! matched against request paths. Matching walks the pattern and the path
//! side by side and never allocates: [`PathPattern::matches`] returns a
//! [`PathParams`] that borrows both, and hands out the captured values as
//! slices of the path.
//!
//! The syntax follows axum's router, so a route and its cache rule can share
//! one string:
//!
//! - a literal segment matches itself, case-sensitively;
//! - `{name}` matches exactly one non-empty segment;
//! - `{*name}`, allowed only as the last segment, matches the non-empty rest
//!   of the path, slashes included.
//!
//! Captured values are the path as the client sent it: percent-encoding is
//! kept (`/users/a%2Fb` captures `a%2Fb`), so two different paths never
//! capture the same value. A trailing slash is significant: `/users/{id}`
//! does not match `/users/42/`.
//!
//! ```
//! use hitbox_tower::path::PathPattern;
//!
//! let pattern = PathPattern::parse("/users/{id}/files/{*rest}")?;
//! let params = pattern.matches("/users/42/files/a/b.txt").expect("matches");
//! assert_eq!(params.get("id"), Some("42"));
//! assert_eq!(params.get("rest"), Some("a/b.txt"));
//! assert!(pattern.matches("/users/42").is_none());
//! # Ok::<(), hitbox_tower::path::PathPatternError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Why a path pattern was refused by [`PathPattern::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathPatternError {
    /// The pattern does not start with `/`.
    #[error("path pattern {pattern:?} must start with '/'")]
    MissingLeadingSlash {
        /// The pattern as given.
        pattern: String,
    },
    /// A segment mixes literal text and a parameter (`/files/{name}.txt`), or
    /// has an unbalanced brace.
    #[error("path pattern {pattern:?}: segment {segment:?} must be either literal text or a whole {{param}}")]
    InvalidSegment {
        /// The pattern as given.
        pattern: String,
        /// The offending segment.
        segment: String,
    },
    /// A parameter name is empty or holds something other than ASCII
    /// letters, digits and `_`.
    #[error(
        "path pattern {pattern:?}: parameter name {name:?} must be non-empty ASCII letters, digits or '_'"
    )]
    InvalidName {
        /// The pattern as given.
        pattern: String,
        /// The offending name.
        name: String,
    },
    /// Two parameters share a name.
    #[error("path pattern {pattern:?}: parameter {name:?} appears twice")]
    DuplicateName {
        /// The pattern as given.
        pattern: String,
        /// The repeated name.
        name: String,
    },
    /// A `{*tail}` parameter is followed by more segments.
    #[error("path pattern {pattern:?}: tail parameter {name:?} must be the last segment")]
    TailNotLast {
        /// The pattern as given.
        pattern: String,
        /// The tail parameter's name.
        name: String,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param(Box<str>),
    Tail(Box<str>),
}

#[derive(Debug, PartialEq, Eq)]
struct Inner {
    source: Box<str>,
    segments: Box<[Segment]>,
}

/// A parsed path pattern such as `/users/{id}` or `/files/{*rest}`; see the
/// [module documentation](self) for the syntax.
///
/// Cheap to clone (reference-counted).
///
/// ```
/// use hitbox_tower::path::PathPattern;
///
/// let pattern = PathPattern::new("/users/{id}");
/// assert_eq!(pattern.as_str(), "/users/{id}");
/// assert_eq!(pattern.param_names().collect::<Vec<_>>(), ["id"]);
/// assert!(pattern.matches("/users/7").is_some());
/// assert!(pattern.matches("/users/").is_none());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern {
    inner: Arc<Inner>,
}

impl PathPattern {
    /// Parses and validates `pattern`.
    ///
    /// ```
    /// use hitbox_tower::path::{PathPattern, PathPatternError};
    ///
    /// assert!(PathPattern::parse("/files/{*rest}").is_ok());
    /// assert!(matches!(
    ///     PathPattern::parse("/files/{*rest}/meta"),
    ///     Err(PathPatternError::TailNotLast { .. })
    /// ));
    /// assert!(matches!(
    ///     PathPattern::parse("users/{id}"),
    ///     Err(PathPatternError::MissingLeadingSlash { .. })
    /// ));
    /// ```
    pub fn parse(pattern: &str) -> Result<Self, PathPatternError> {
        let Some(body) = pattern.strip_prefix('/') else {
            return Err(PathPatternError::MissingLeadingSlash {
                pattern: pattern.to_owned(),
            });
        };
        let mut segments: Vec<Segment> = Vec::new();
        for raw in body.split('/') {
            if let Some(Segment::Tail(name)) = segments.last() {
                return Err(PathPatternError::TailNotLast {
                    pattern: pattern.to_owned(),
                    name: name.to_string(),
                });
            }
            let segment = if let Some(inside) = raw.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let (tail, name) = match inside.strip_prefix('*') {
                    Some(name) => (true, name),
                    None => (false, inside),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(PathPatternError::InvalidName {
                        pattern: pattern.to_owned(),
                        name: name.to_owned(),
                    });
                }
                let duplicate = segments.iter().any(|s| match s {
                    Segment::Param(n) | Segment::Tail(n) => &**n == name,
                    Segment::Literal(_) => false,
                });
                if duplicate {
                    return Err(PathPatternError::DuplicateName {
                        pattern: pattern.to_owned(),
                        name: name.to_owned(),
                    });
                }
                if tail {
                    Segment::Tail(name.into())
                } else {
                    Segment::Param(name.into())
                }
            } else if raw.contains(['{', '}']) {
                return Err(PathPatternError::InvalidSegment {
                    pattern: pattern.to_owned(),
                    segment: raw.to_owned(),
                });
            } else {
                Segment::Literal(raw.into())
            };
            segments.push(segment);
        }
        Ok(PathPattern {
            inner: Arc::new(Inner {
                source: pattern.into(),
                segments: segments.into_boxed_slice(),
            }),
        })
    }

    /// Parses `pattern`, for patterns written in the source code.
    ///
    /// # Panics
    ///
    /// When the pattern is invalid; use [`PathPattern::parse`] for patterns
    /// that come from configuration.
    ///
    /// ```
    /// use hitbox_tower::path::PathPattern;
    ///
    /// let pattern = PathPattern::new("/orders/{order}/items/{item}");
    /// let params = pattern.matches("/orders/9/items/3").unwrap();
    /// assert_eq!(params.iter().collect::<Vec<_>>(), [("order", "9"), ("item", "3")]);
    /// ```
    #[track_caller]
    pub fn new(pattern: &str) -> Self {
        match Self::parse(pattern) {
            Ok(pattern) => pattern,
            Err(error) => panic!("{error}"),
        }
    }

    /// The pattern as it was written.
    pub fn as_str(&self) -> &str {
        &self.inner.source
    }

    /// The parameter names, in the order they appear.
    pub fn param_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.segments.iter().filter_map(|segment| match segment {
            Segment::Param(name) | Segment::Tail(name) => Some(&**name),
            Segment::Literal(_) => None,
        })
    }

    /// Matches `path` (the path alone, without the query) and returns its
    /// captured parameters, or `None` when it does not match. Does not
    /// allocate.
    ///
    /// ```
    /// use hitbox_tower::path::PathPattern;
    ///
    /// let pattern = PathPattern::new("/static/{*file}");
    /// assert_eq!(pattern.matches("/static/css/site.css").unwrap().get("file"), Some("css/site.css"));
    /// assert!(pattern.matches("/static/").is_none());
    /// assert!(pattern.matches("/other/site.css").is_none());
    /// ```
    pub fn matches<'p, 'a>(&'p self, path: &'a str) -> Option<PathParams<'p, 'a>> {
        let mut rest = path.strip_prefix('/')?;
        let segments = &self.inner.segments;
        for (index, segment) in segments.iter().enumerate() {
            let last = index + 1 == segments.len();
            if let Segment::Tail(_) = segment {
                // Parsing guarantees a tail is the last segment.
                return (!rest.is_empty()).then_some(PathParams { pattern: self, path });
            }
            let (current, after) = match rest.split_once('/') {
                Some((current, after)) if !last => (current, after),
                Some(_) => return None,
                None if last => (rest, ""),
                None => return None,
            };
            let ok = match segment {
                Segment::Literal(literal) => current == &**literal,
                Segment::Param(_) => !current.is_empty(),
                Segment::Tail(_) => unreachable!("handled above"),
            };
            if !ok {
                return None;
            }
            rest = after;
        }
        Some(PathParams { pattern: self, path })
    }
}

impl FromStr for PathPattern {
    type Err = PathPatternError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        Self::parse(pattern)
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathPattern").field(&self.as_str()).finish()
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parameters a [`PathPattern`] captured from a path; see
/// [`PathPattern::matches`].
///
/// It borrows the pattern and the path, and finds values by walking them
/// again, so it costs nothing to make and values are slices of the path.
///
/// ```
/// use hitbox_tower::path::PathPattern;
///
/// let pattern = PathPattern::new("/{tenant}/reports/{year}");
/// let params = pattern.matches("/acme/reports/2024").unwrap();
/// assert_eq!(params.len(), 2);
/// assert_eq!(params.get("tenant"), Some("acme"));
/// assert_eq!(params.get("month"), None);
/// ```
#[derive(Clone, Copy)]
pub struct PathParams<'p, 'a> {
    pattern: &'p PathPattern,
    path: &'a str,
}

impl<'p, 'a> PathParams<'p, 'a> {
    /// The value captured for `name`, if the pattern has such a parameter.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, value)| value)
    }

    /// The `(name, value)` pairs in the order the parameters appear in the
    /// pattern.
    pub fn iter(&self) -> PathParamsIter<'p, 'a> {
        PathParamsIter {
            segments: self.pattern.inner.segments.iter(),
            rest: self.path.strip_prefix('/').unwrap_or(self.path),
        }
    }

    /// How many parameters were captured.
    pub fn len(&self) -> usize {
        self.pattern.param_names().count()
    }

    /// Whether the pattern has no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'p, 'a> IntoIterator for PathParams<'p, 'a> {
    type Item = (&'p str, &'a str);
    type IntoIter = PathParamsIter<'p, 'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'p, 'a> IntoIterator for &PathParams<'p, 'a> {
    type Item = (&'p str, &'a str);
    type IntoIter = PathParamsIter<'p, 'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for PathParams<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Iterator over captured parameters; see [`PathParams::iter`].
#[derive(Debug, Clone)]
pub struct PathParamsIter<'p, 'a> {
    segments: std::slice::Iter<'p, Segment>,
    rest: &'a str,
}

impl<'p, 'a> Iterator for PathParamsIter<'p, 'a> {
    type Item = (&'p str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        // The path is known to match, so segments line up one to one.
        for segment in self.segments.by_ref() {
            if let Segment::Tail(name) = segment {
                let value = std::mem::take(&mut self.rest);
                return Some((name, value));
            }
            let (current, after) = self.rest.split_once('/').unwrap_or((self.rest, ""));
            self.rest = after;
            if let Segment::Param(name) = segment {
                return Some((name, current));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captures(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        let pattern = PathPattern::new(pattern);
        pattern
            .matches(path)
            .map(|p| p.iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect())
    }

    fn pairs(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }

    #[test]
    fn literal_patterns_match_exactly() {
        assert_eq!(captures("/", "/"), pairs(&[]));
        assert_eq!(captures("/", "/a"), None);
        assert_eq!(captures("/users", "/users"), pairs(&[]));
        assert_eq!(captures("/users", "/users/"), None);
        assert_eq!(captures("/users/", "/users/"), pairs(&[]));
        assert_eq!(captures("/users/", "/users"), None);
        assert_eq!(captures("/users", "/Users"), None);
        assert_eq!(captures("/users", "/users/1"), None);
        assert_eq!(captures("/a/b", "/a"), None);
        assert_eq!(captures("/users", "users"), None);
        assert_eq!(captures("/users", ""), None);
    }

    #[test]
    fn params_capture_one_non_empty_segment() {
        assert_eq!(captures("/users/{id}", "/users/42"), pairs(&[("id", "42")]));
        assert_eq!(captures("/users/{id}", "/users/"), None);
        assert_eq!(captures("/users/{id}", "/users"), None);
        assert_eq!(captures("/users/{id}", "/users/42/"), None);
        assert_eq!(captures("/users/{id}", "/users/42/x"), None);
        assert_eq!(captures("/{a}/x/{b}", "/1/x/2"), pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!(captures("/{a}/x/{b}", "/1/y/2"), None);
        assert_eq!(captures("/{a}/", "/1/"), pairs(&[("a", "1")]));
        assert_eq!(captures("/{a}/", "/1"), None);
    }

    #[test]
    fn values_keep_percent_encoding() {
        assert_eq!(captures("/u/{id}", "/u/a%2Fb"), pairs(&[("id", "a%2Fb")]));
        assert_eq!(captures("/u/{id}", "/u/%C3%A9"), pairs(&[("id", "%C3%A9")]));
        assert_eq!(captures("/u/{id}", "/u/é"), pairs(&[("id", "é")]));
    }

    #[test]
    fn tail_takes_the_non_empty_rest() {
        assert_eq!(captures("/f/{*rest}", "/f/a"), pairs(&[("rest", "a")]));
        assert_eq!(captures("/f/{*rest}", "/f/a/b/c"), pairs(&[("rest", "a/b/c")]));
        assert_eq!(captures("/f/{*rest}", "/f/a/"), pairs(&[("rest", "a/")]));
        assert_eq!(captures("/f/{*rest}", "/f//x"), pairs(&[("rest", "/x")]));
        assert_eq!(captures("/f/{*rest}", "/f/"), None);
        assert_eq!(captures("/f/{*rest}", "/f"), None);
        assert_eq!(captures("/f/{*rest}", "/g/a"), None);
        assert_eq!(captures("/{*all}", "/x/y"), pairs(&[("all", "x/y")]));
        assert_eq!(captures("/{*all}", "/"), None);
        assert_eq!(
            captures("/{t}/f/{*rest}", "/acme/f/a/b"),
            pairs(&[("t", "acme"), ("rest", "a/b")])
        );
    }

    #[test]
    fn params_get_len_and_debug() {
        let pattern = PathPattern::new("/{a}/{*b}");
        let params = pattern.matches("/1/2/3").unwrap();
        assert_eq!(params.get("a"), Some("1"));
        assert_eq!(params.get("b"), Some("2/3"));
        assert_eq!(params.get("c"), None);
        assert_eq!(params.len(), 2);
        assert!(!params.is_empty());
        assert_eq!(format!("{params:?}"), r#"{"a": "1", "b": "2/3"}"#);
        let literal = PathPattern::new("/x");
        assert!(literal.matches("/x").unwrap().is_empty());
        let collected: Vec<_> = (&params).into_iter().collect();
        assert_eq!(collected, [("a", "1"), ("b", "2/3")]);
    }

    #[test]
    fn invalid_patterns_are_refused_with_context() {
        let err = |p: &str| PathPattern::parse(p).unwrap_err();
        assert_eq!(
            err("users"),
            PathPatternError::MissingLeadingSlash {
                pattern: "users".into()
            }
        );
        assert_eq!(
            err(""),
            PathPatternError::MissingLeadingSlash { pattern: "".into() }
        );
        assert_eq!(
            err("/f/{name}.txt"),
            PathPatternError::InvalidSegment {
                pattern: "/f/{name}.txt".into(),
                segment: "{name}.txt".into()
            }
        );
        assert!(matches!(err("/f/{id"), PathPatternError::InvalidSegment { .. }));
        assert!(matches!(err("/f/id}"), PathPatternError::InvalidSegment { .. }));
        assert!(matches!(err("/f/{{id}}"), PathPatternError::InvalidName { .. }));
        assert_eq!(
            err("/f/{}"),
            PathPatternError::InvalidName {
                pattern: "/f/{}".into(),
                name: "".into()
            }
        );
        assert!(matches!(err("/f/{*}"), PathPatternError::InvalidName { .. }));
        assert!(matches!(err("/f/{a-b}"), PathPatternError::InvalidName { .. }));
        assert_eq!(
            err("/{id}/x/{id}"),
            PathPatternError::DuplicateName {
                pattern: "/{id}/x/{id}".into(),
                name: "id".into()
            }
        );
        assert!(matches!(
            err("/{id}/{*id}"),
            PathPatternError::DuplicateName { .. }
        ));
        assert_eq!(
            err("/{*rest}/x"),
            PathPatternError::TailNotLast {
                pattern: "/{*rest}/x".into(),
                name: "rest".into()
            }
        );
        assert!(matches!(err("/{*rest}/"), PathPatternError::TailNotLast { .. }));
        let message = err("/{*rest}/x").to_string();
        assert!(
            message.contains("/{*rest}/x") && message.contains("rest"),
            "{message}"
        );
    }

    #[test]
    fn from_str_display_and_equality() {
        let pattern: PathPattern = "/users/{id}".parse().unwrap();
        assert_eq!(pattern.to_string(), "/users/{id}");
        assert_eq!(format!("{pattern:?}"), r#"PathPattern("/users/{id}")"#);
        assert_eq!(pattern, PathPattern::new("/users/{id}"));
        assert_ne!(pattern, PathPattern::new("/users/{key}"));
        assert!("nope".parse::<PathPattern>().is_err());
    }

    #[test]
    #[should_panic(expected = "must start with '/'")]
    fn new_panics_on_invalid_pattern() {
        let _ = PathPattern::new("nope");
    }
}
