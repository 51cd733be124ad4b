//! The vocabulary of hitbox: what a cache key is, what an entry knows about
//! its own lifetime, how long things should be cached, and how requests are
//! judged and turned into keys.
//!
//! This crate does no I/O and knows nothing of HTTP or of any storage. The
//! engine (`hitbox-backend`), the tiers (`hitbox-moka`, `hitbox-redis`) and the
//! HTTP layer (`hitbox-tower`) all speak in these types.
//!
//! # A first key and a first lifetime
//!
//! ```
//! use std::time::Duration;
//! use hitbox_core::{CacheKey, CachePolicy, Clock, Freshness, ManualClock};
//!
//! // Keys are built from named parts; the byte encoding is stable and
//! // unambiguous, and sensitive parts are never stored in the clear.
//! let key = CacheKey::builder("users").version(2).part("id", "42").build();
//! assert_eq!(key.as_str(), "users:v2:id=42");
//!
//! // A policy turns "now" into the lifetime of a new entry.
//! let clock = ManualClock::new();
//! let policy = CachePolicy::new(Duration::from_secs(60))
//!     .stale_while_revalidate(Duration::from_secs(30));
//! let meta = policy.entry_meta(clock.now(), Vec::new());
//! assert_eq!(meta.freshness(clock.now()), Freshness::Fresh);
//!
//! clock.advance(Duration::from_secs(75));
//! assert_eq!(meta.freshness(clock.now()), Freshness::Stale);
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod clock;
mod extractor;
mod key;
mod meta;
mod policy;
mod predicate;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock, Timestamp};
pub use extractor::{Extractor, ExtractorAnd, ExtractorOr};
pub use key::{CacheKey, DEFAULT_MAX_KEY_LEN, KeyBuilder, KeyLogId};
pub use meta::{CLOCK_SKEW_TOLERANCE, EntryMeta, Freshness, MetaError, Tag};
pub use policy::{CachePolicy, EntryOptions, Strategy};
pub use predicate::{And, Not, Or, Predicate};
