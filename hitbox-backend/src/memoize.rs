//! Memoized functions: what `#[cached]` expands to, and the trait its
//! key arguments implement.
//!
//! The attribute itself lives in the `hitbox-macros` crate and is
//! re-exported here as `cached` with the `macros` feature, so that one
//! dependency (`hitbox-backend` with `macros`) is all a user needs. Its
//! manual (options, result types, the expansion) is the documentation of
//! `hitbox-macros`.
//!
//! This module holds the run-time half, which can be used by hand as well:
//!
//! - [`KeyPart`]: how an argument becomes bytes of a [`CacheKey`]. By
//!   default every argument of a `#[cached]` function must implement it.
//! - [`cached_result`], [`cached_option`], [`cached_value`]: a function
//!   body (a future that may borrow) run through
//!   [`Cache::try_get_or_load_in_place`], with what the return type says
//!   about caching: only `Ok` is cached, `None` is cached or not, a plain
//!   value always is.
//! - [`entry_options`]: the per-call options of a policy and tags.
//!
//! ```
//! use hitbox_backend::memoize::{KeyPart, cached_result, entry_options};
//! use hitbox_backend::{Cache, MemoryBackend};
//! use hitbox_core::{CacheKey, CachePolicy};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = Cache::new(MemoryBackend::new());
//! let id = 7u64;
//! let key = CacheKey::builder("square").part("id", id.key_part()).build();
//! let options = entry_options(CachePolicy::short_term(), Vec::new());
//! let square: Result<u64, String> = cached_result(&cache, &key, &options, async { Ok(id * id) }).await;
//! assert_eq!(square, Ok(49));
//! assert_eq!(cache.get::<u64>(&key).await, Some(49));
//! # });
//! ```

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use hitbox_core::{CacheKey, CachePolicy, EntryOptions, Tag};

use crate::codec::format::CacheableValue;
use crate::engine::Cache;

#[cfg(feature = "macros")]
pub use hitbox_macros::cached;

/// A value that can be part of a cache key: an argument of a `#[cached]`
/// function, or a placeholder of its key template.
///
/// The bytes written must identify the value: two values that should not
/// share an entry must write different bytes. Integers and `bool` write
/// their decimal or `true`/`false` form, strings their UTF-8 bytes, a
/// reference or smart pointer what it points to, and `Option` a `0` byte
/// for `None` and a `1` byte before the value for `Some`, so that `None`
/// and `Some("")` differ. The key escapes the bytes, so any byte may be
/// written.
///
/// Implement it for an id type of your own by writing what identifies it:
///
/// ```
/// use hitbox_backend::memoize::KeyPart;
///
/// struct UserId(u64);
///
/// impl KeyPart for UserId {
///     fn write_key_part(&self, out: &mut Vec<u8>) {
///         self.0.write_key_part(out);
///     }
/// }
/// assert_eq!(UserId(42).key_part(), b"42");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key",
    label = "this argument cannot be keyed",
    note = "implement `hitbox_backend::memoize::KeyPart` for `{Self}`, leave the argument out of the key with `skip = [name]`, or give the key as a template: `key = \"...\"`"
)]
pub trait KeyPart {
    /// Appends the bytes that identify this value.
    fn write_key_part(&self, out: &mut Vec<u8>);

    /// The bytes that identify this value.
    fn key_part(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_key_part(&mut out);
        out
    }
}

macro_rules! key_part_by_display {
    ($($ty:ty),*) => {$(
        impl KeyPart for $ty {
            fn write_key_part(&self, out: &mut Vec<u8>) {
                use std::io::Write;
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

key_part_by_display!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, bool, char
);

impl KeyPart for str {
    fn write_key_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl KeyPart for String {
    fn write_key_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl KeyPart for [u8] {
    fn write_key_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl KeyPart for Cow<'_, str> {
    fn write_key_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl<T: KeyPart> KeyPart for Option<T> {
    fn write_key_part(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                value.write_key_part(out);
            }
        }
    }
}

macro_rules! key_part_through_pointer {
    ($($ty:ty),*) => {$(
        impl<T: KeyPart + ?Sized> KeyPart for $ty {
            fn write_key_part(&self, out: &mut Vec<u8>) {
                (**self).write_key_part(out);
            }
        }
    )*};
}

key_part_through_pointer!(&T, &mut T, Box<T>, Arc<T>, Rc<T>);

/// The options of one memoized call: the lifetime of `policy`, and `tags`.
///
/// ```
/// use std::time::Duration;
/// use hitbox_backend::memoize::entry_options;
/// use hitbox_core::{CachePolicy, Tag};
///
/// let options = entry_options(CachePolicy::new(Duration::from_secs(5)), vec![Tag::from("users")]);
/// assert_eq!(options.tags(), &[Tag::from("users")]);
/// ```
pub fn entry_options(policy: CachePolicy, tags: Vec<Tag>) -> EntryOptions {
    let mut options = EntryOptions::new()
        .ttl(policy.ttl())
        .stale_while_revalidate(policy.stale_while_revalidate_window())
        .stale_if_error(policy.stale_if_error_window());
    for tag in tags {
        options = options.tag(tag);
    }
    options
}

/// Runs `body` through the cache for a function returning `Result`: an
/// `Ok` value is cached, an `Err` is returned as it is and not cached. See
/// [`Cache::try_get_or_load_in_place`].
pub async fn cached_result<V, E, Fut>(
    cache: &Cache,
    key: &CacheKey,
    options: &EntryOptions,
    body: Fut,
) -> Result<V, E>
where
    V: CacheableValue,
    Fut: Future<Output = Result<V, E>>,
{
    cache.try_get_or_load_in_place(key, options, body).await
}

/// Runs `body` through the cache for a function returning `Option`: `Some`
/// is cached; `None` is cached too when `cache_none` is set, else returned
/// and loaded again by the next call.
pub async fn cached_option<V, Fut>(
    cache: &Cache,
    key: &CacheKey,
    options: &EntryOptions,
    cache_none: bool,
    body: Fut,
) -> Option<V>
where
    V: CacheableValue,
    Option<V>: CacheableValue,
    Fut: Future<Output = Option<V>>,
{
    if cache_none {
        let loaded = cache
            .try_get_or_load_in_place::<Option<V>, Infallible, _>(key, options, async { Ok(body.await) })
            .await;
        match loaded {
            Ok(value) => value,
            Err(never) => match never {},
        }
    } else {
        // A None is an answer, not a failure: no stale value replaces it.
        cache
            .get_or_load_in_place(key, options, async { body.await.ok_or(NothingToCache) }, |_| {
                false
            })
            .await
            .ok()
    }
}

/// What a body that returned `None` reports when `None` is not cached.
struct NothingToCache;

/// Runs `body` through the cache for a function returning a plain value,
/// which is always cached.
pub async fn cached_value<V, Fut>(cache: &Cache, key: &CacheKey, options: &EntryOptions, body: Fut) -> V
where
    V: CacheableValue,
    Fut: Future<Output = V>,
{
    let loaded = cache
        .try_get_or_load_in_place::<V, Infallible, _>(key, options, async { Ok(body.await) })
        .await;
    match loaded {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// Names the generated code uses, so that it needs `hitbox_backend` only.
/// Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use hitbox_core::{CacheKey, CachePolicy, KeyBuilder, Tag};

    /// Pins a body's output to the function's declared return type, so
    /// that `?` and `return` inside it infer as they do in the function.
    pub fn typed<R, F: std::future::Future<Output = R>>(body: F) -> F {
        body
    }

    /// Appends a template's placeholder value.
    pub fn write_part<T: super::KeyPart + ?Sized>(value: &T, out: &mut Vec<u8>) {
        value.write_key_part(out);
    }

    /// A rendered template as a tag.
    pub fn tag(rendered: Vec<u8>) -> Tag {
        Tag::new(String::from_utf8_lossy(&rendered).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_their_readable_forms() {
        assert_eq!(42u64.key_part(), b"42");
        assert_eq!((-3i32).key_part(), b"-3");
        assert_eq!(true.key_part(), b"true");
        assert_eq!("ada".key_part(), b"ada");
        assert_eq!(String::from("ada").key_part(), b"ada");
        assert_eq!((&&"ada").key_part(), b"ada");
        assert_eq!(Arc::new(7u8).key_part(), b"7");
    }

    #[test]
    fn none_and_some_empty_differ() {
        assert_ne!(None::<&str>.key_part(), Some("").key_part());
        assert_ne!(None::<String>.key_part(), Some(String::from("\0")).key_part());
        assert_eq!(Some(5u8).key_part(), b"\x015");
    }
}
