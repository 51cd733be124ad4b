//! `#[cached]`: an `async fn` whose results live in a hitbox
//! [`Cache`](https://docs.rs/hitbox-backend/latest/hitbox_backend/struct.Cache.html).
//!
//! Use it through the `hitbox` crate with the `macros` feature
//! (`hitbox::cached`), or through `hitbox-backend` with its `macros` feature
//! (`hitbox_backend::cached`). The code it generates reaches the engine
//! through whichever of the two the calling crate depends on (found in its
//! `Cargo.toml`, renamed or not), so that one dependency is all a user
//! needs:
//!
//! ```toml
//! [dependencies]
//! hitbox = { git = "https://github.com/hitbox-rs/hitbox", features = ["macros"] }
//! # or, on its own: hitbox-backend = { git = "…", features = ["macros"] }
//! ```
//!
//! # The smallest use
//!
//! Give the attribute a cache; every argument becomes part of the key, and
//! the function's path is the key's namespace. Callers that miss one key at
//! the same moment run the body once between them (single-flight).
//!
//! ```
//! use std::sync::LazyLock;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use hitbox_backend::{Cache, MemoryBackend, cached};
//!
//! static CACHE: LazyLock<Cache> = LazyLock::new(|| Cache::new(MemoryBackend::new()));
//! static CALLS: AtomicU32 = AtomicU32::new(0);
//!
//! #[cached(cache = CACHE)]
//! async fn square(n: u64) -> u64 {
//!     CALLS.fetch_add(1, Ordering::SeqCst);
//!     n * n
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! assert_eq!(square(7).await, 49);
//! assert_eq!(square(7).await, 49);
//! assert_eq!(CALLS.load(Ordering::SeqCst), 1);
//! # });
//! ```
//!
//! # Where the cache comes from
//!
//! `cache = <expr>` is any expression that gives a `Cache` by reference or
//! through `Deref`: a static (as above), a field of `self`, or an argument.
//! An argument named as the cache is left out of the key.
//!
//! ```
//! use hitbox_backend::{Cache, MemoryBackend, cached};
//!
//! struct Users { cache: Cache, prefix: String }
//!
//! impl Users {
//!     // `self` is never part of the key.
//!     #[cached(cache = self.cache)]
//!     async fn display_name(&self, id: u32) -> String {
//!         format!("{}{id}", self.prefix)
//!     }
//! }
//!
//! #[cached(cache = cache)]
//! async fn double(cache: &Cache, n: i64) -> i64 {
//!     n * 2
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let users = Users { cache: Cache::new(MemoryBackend::new()), prefix: "user-".into() };
//! assert_eq!(users.display_name(3).await, "user-3");
//! assert_eq!(double(&users.cache, 21).await, 42);
//! # });
//! ```
//!
//! # Options
//!
//! | option | what it sets | default |
//! |---|---|---|
//! | `cache = <expr>` | the cache (required) | |
//! | `key = "user:{id}"` | the key, from a template over the arguments | every argument |
//! | `skip = [db, trace]` | arguments left out of the default key | none |
//! | `tags = ["users", "user:{id}"]` | tags (templates too), for `Cache::invalidate_tag` | none |
//! | `namespace = "users"` | the key's namespace | `module_path!()::fn_name` |
//! | `version = 2` | the key's version: bump it when the value's shape changes | `1` |
//! | `policy = <preset or expr>` | TTL and stale windows: `real_time`, `short_term`, `long_term`, `immutable`, or any `CachePolicy` expression | the cache's policy |
//! | `cache_none = true` | for `Option` results, cache `None` too | `false` |
//!
//! Every argument in the key (all of them, less `self`, the cache argument
//! and the skipped ones, or those a template names) must implement
//! `hitbox_backend::memoize::KeyPart`: integers, `bool`, `char`, strings,
//! `Option` of those, and references or smart pointers to them do. A
//! template's placeholders are written as they are, side by side: choose
//! separators that keep two argument lists apart (`"{a}:{b}"`, not
//! `"{a}{b}"`). `{{` and `}}` are literal braces.
//!
//! ```
//! use std::time::Duration;
//! use hitbox_backend::{Cache, MemoryBackend, cached};
//! use hitbox_core::{CachePolicy, Tag};
//!
//! struct Db;
//! impl Db {
//!     async fn user_name(&self, id: u64) -> Result<String, String> {
//!         Ok(format!("user {id}"))
//!     }
//! }
//!
//! #[cached(
//!     cache = cache,
//!     key = "user:{id}",
//!     tags = ["users", "user:{id}"],
//!     namespace = "user-names",
//!     version = 2,
//!     policy = CachePolicy::new(Duration::from_secs(30)).stale_if_error(Duration::from_secs(600)),
//! )]
//! async fn user_name(cache: &Cache, db: &Db, id: u64) -> Result<String, String> {
//!     db.user_name(id).await
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = Cache::new(MemoryBackend::new());
//! assert_eq!(user_name(&cache, &Db, 1).await.unwrap(), "user 1");
//! let key = hitbox_core::CacheKey::builder("user-names").version(2).part("key", "user:1").build();
//! assert_eq!(cache.get::<String>(&key).await.as_deref(), Some("user 1"));
//! cache.invalidate_tag(&Tag::from("user:1")).await.unwrap();
//! assert_eq!(cache.get::<String>(&key).await, None);
//! # });
//! ```
//!
//! # What the result type decides
//!
//! The return type as written picks the behaviour (a type alias of
//! `Result` or `Option` that keeps the name, like `io::Result<T>`, counts):
//!
//! - `Result<T, E>`: only `Ok` is cached. An `Err` is returned to its
//!   caller, not cached, and `E` needs no bound. When an entry is still
//!   inside its stale-if-error window (or its stale-while-revalidate one),
//!   a failed call returns the stale value instead.
//! - `Option<T>`: `Some` is cached; `None` is cached only with
//!   `cache_none = true`.
//! - anything else: the value is cached.
//!
//! The cached type must be a `hitbox_backend::CacheableValue` (any `serde`
//! type that is `Clone + Send + Sync + 'static`).
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use hitbox_backend::{Cache, MemoryBackend, cached};
//!
//! static LOOKUPS: AtomicU32 = AtomicU32::new(0);
//!
//! #[cached(cache = cache, cache_none = true)]
//! async fn find(cache: &Cache, name: &str) -> Option<u32> {
//!     LOOKUPS.fetch_add(1, Ordering::SeqCst);
//!     (name == "ada").then_some(1)
//! }
//!
//! #[cached(cache = cache)]
//! async fn parse(cache: &Cache, text: &str) -> Result<u32, std::num::ParseIntError> {
//!     text.parse()
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cache = Cache::new(MemoryBackend::new());
//! assert_eq!(find(&cache, "nobody").await, None);
//! assert_eq!(find(&cache, "nobody").await, None);
//! assert_eq!(LOOKUPS.load(Ordering::SeqCst), 1, "None was cached");
//! assert!(parse(&cache, "x").await.is_err());
//! assert_eq!(parse(&cache, "12").await, Ok(12));
//! # });
//! ```
//!
//! # What it expands to
//!
//! The function keeps its signature, attributes and visibility; its body
//! becomes, for `#[cached(cache = self.cache, key = "user:{id}")]` on
//! `async fn user(&self, id: u64) -> Result<User, Error>`:
//!
//! ```text
//! async fn user(&self, id: u64) -> Result<User, Error> {
//!     let __hitbox_cache: &::hitbox_backend::Cache = &(self.cache);
//!     let __hitbox_key = {
//!         let mut __hitbox_key = KeyBuilder::new(concat!(module_path!(), "::", "user")).version(1);
//!         let mut __hitbox_part = Vec::new();
//!         __hitbox_part.extend_from_slice(b"user:");
//!         write_part(&id, &mut __hitbox_part);          // KeyPart, spanned at `id`
//!         __hitbox_key.push("key", Some(&__hitbox_part));
//!         __hitbox_key.build()
//!     };
//!     let __hitbox_options = ::hitbox_backend::memoize::entry_options(
//!         __hitbox_cache.policy(), vec![/* rendered tags */]);
//!     ::hitbox_backend::memoize::cached_result(
//!         __hitbox_cache, &__hitbox_key, &__hitbox_options,
//!         typed::<Result<User, Error>, _>(async { /* the original body */ }),
//!     ).await
//! }
//! ```
//!
//! (`KeyBuilder`, `write_part` and `typed` are reached through
//! `::hitbox_backend::memoize::__private`, or `::hitbox::backend::…` through
//! the facade.) Without a template each key
//! argument is one part named after it (`...:id=42:lang=en`); `Option`
//! results call `cached_option`, plain values `cached_value`. All three go
//! through `Cache::try_get_or_load_in_place`: the body runs in the caller's
//! own task (it may borrow `&self` and the arguments), while callers that
//! miss the same key meanwhile wait for it. Because the body cannot
//! outlive its call, a stale entry is refreshed in the call rather than in
//! the background, and callers that waited on a body that failed run it
//! themselves (the error is not shared: `E` needs no `Clone`).
//!
//! Methods: the default namespace is the module path and the function's
//! name, which the attribute sees without the type it belongs to. Two
//! types in one module with `#[cached]` methods of the same name must give
//! one of them a `namespace`.
//!
//! # Mistakes it reports
//!
//! Each is a compile error at the offending token: a function that is not
//! `async`, an unknown or repeated option, a missing `cache`, a template
//! placeholder or `skip` entry that is not an argument, an argument whose
//! type does not implement `KeyPart` (the error names the argument and the
//! three ways out), a destructuring pattern where the key needs a name, and
//! `cache_none` on a function that does not return `Option`.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod expand;
mod options;

use proc_macro::TokenStream;

/// Caches an `async fn`'s results; see the [crate documentation](crate)
/// for the options, what each result type does, and the expansion.
///
/// ```
/// use hitbox_backend::{Cache, MemoryBackend, cached};
///
/// #[cached(cache = cache, policy = long_term)]
/// async fn greeting(cache: &Cache, lang: &str) -> String {
///     if lang == "fr" { "bonjour".into() } else { "hello".into() }
/// }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(MemoryBackend::new());
/// assert_eq!(greeting(&cache, "fr").await, "bonjour");
/// # });
/// ```
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match expand::expand(args.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        // The function as written goes out beside the error, so that the
        // error is the only one reported (no knock-on "unused" warnings or
        // missing-function errors at its callers).
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(item);
            tokens.into()
        }
    }
}
