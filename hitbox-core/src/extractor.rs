//! Keys: what parts of a subject select the cached value?

use crate::key::KeyBuilder;

/// Turns a subject `S` into parts of a cache key.
///
/// An [`Extractor`] appends parts to a [`KeyBuilder`]. Extractors chain with
/// [`Extractor::and`] (both contribute, in order) and fall back with
/// [`Extractor::or`] (the second contributes only when the first found
/// nothing). Any `Fn(&S, &mut KeyBuilder) -> bool` closure is an extractor.
///
/// ```
/// use hitbox_core::{CacheKey, Extractor, KeyBuilder};
///
/// struct Request { path: &'static str, lang: Option<&'static str> }
///
/// let path = |r: &Request, key: &mut KeyBuilder| {
///     key.push("path", Some(r.path.as_bytes()));
///     true
/// };
/// let lang = |r: &Request, key: &mut KeyBuilder| match r.lang {
///     Some(lang) => { key.push("lang", Some(lang.as_bytes())); true }
///     None => false,
/// };
/// let default_lang = |_: &Request, key: &mut KeyBuilder| {
///     key.push("lang", Some(b"en"));
///     true
/// };
/// let extractor = path.and(lang.or(default_lang));
///
/// let mut key = CacheKey::builder("pages");
/// extractor.extract(&Request { path: "/home", lang: None }, &mut key);
/// assert_eq!(key.build().as_str(), "pages:v1:path=/home:lang=en");
/// ```
pub trait Extractor<S: ?Sized> {
    /// Appends this extractor's parts to `key`; returns whether it appended
    /// anything.
    fn extract(&self, subject: &S, key: &mut KeyBuilder) -> bool;

    /// Both extractors, `self` first.
    fn and<E>(self, other: E) -> ExtractorAnd<Self, E>
    where
        Self: Sized,
        E: Extractor<S>,
    {
        ExtractorAnd(self, other)
    }

    /// `self`, or `other` when `self` appends nothing.
    fn or<E>(self, other: E) -> ExtractorOr<Self, E>
    where
        Self: Sized,
        E: Extractor<S>,
    {
        ExtractorOr(self, other)
    }
}

impl<S: ?Sized, F> Extractor<S> for F
where
    F: Fn(&S, &mut KeyBuilder) -> bool,
{
    fn extract(&self, subject: &S, key: &mut KeyBuilder) -> bool {
        self(subject, key)
    }
}

/// Both extractors; see [`Extractor::and`].
#[derive(Debug, Clone, Copy)]
pub struct ExtractorAnd<A, B>(pub A, pub B);

impl<S: ?Sized, A: Extractor<S>, B: Extractor<S>> Extractor<S> for ExtractorAnd<A, B> {
    fn extract(&self, subject: &S, key: &mut KeyBuilder) -> bool {
        let first = self.0.extract(subject, key);
        let second = self.1.extract(subject, key);
        first || second
    }
}

/// The first extractor that appends something; see [`Extractor::or`].
#[derive(Debug, Clone, Copy)]
pub struct ExtractorOr<A, B>(pub A, pub B);

impl<S: ?Sized, A: Extractor<S>, B: Extractor<S>> Extractor<S> for ExtractorOr<A, B> {
    fn extract(&self, subject: &S, key: &mut KeyBuilder) -> bool {
        self.0.extract(subject, key) || self.1.extract(subject, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::CacheKey;

    fn part(name: &'static str) -> impl Fn(&(), &mut KeyBuilder) -> bool + Copy {
        move |_: &(), key: &mut KeyBuilder| {
            key.push(name, None);
            true
        }
    }

    fn nothing(_: &(), _: &mut KeyBuilder) -> bool {
        false
    }

    fn run(extractor: impl Extractor<()>) -> (bool, String) {
        let mut key = CacheKey::builder("t");
        let appended = extractor.extract(&(), &mut key);
        (appended, key.build().as_str().to_owned())
    }

    #[test]
    fn and_keeps_order_and_or_falls_back() {
        assert_eq!(run(part("a").and(part("b"))), (true, "t:v1:a:b".into()));
        assert_eq!(run(part("a").or(part("b"))), (true, "t:v1:a".into()));
        assert_eq!(run(nothing.or(part("b"))), (true, "t:v1:b".into()));
        assert_eq!(run(nothing.and(nothing)), (false, "t:v1".into()));
        assert_eq!(run(nothing.or(nothing)), (false, "t:v1".into()));
    }
}
