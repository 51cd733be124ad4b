//! Typed access to a single backend, without the engine.

use std::future::Future;
use std::time::{Duration, SystemTime};

use hitbox_core::{CacheKey, EntryMeta, Freshness, Timestamp};

use crate::codec::envelope::{RawEntry, encode_entry};
use crate::codec::format::{CacheableValue, Format};
use crate::error::BackendError;
use crate::tiers::backend::Backend;

/// `get` / `set` / `delete` of any serde type on any [`Backend`].
///
/// For direct use of one tier; the [`Cache`](crate::Cache) engine adds
/// single-flight, stale windows, tags and stats on top. Entries are written
/// in the engine's envelope, so the two can read each other's values.
///
/// ```
/// use std::time::Duration;
/// use hitbox_backend::{BackendExt, Format, MemoryBackend};
/// use hitbox_core::CacheKey;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let tier = MemoryBackend::new();
/// let key = CacheKey::builder("greeting").build();
/// tier.set(&key, &"hello".to_string(), Format::Json, Duration::from_secs(60)).await.unwrap();
/// let value: Option<String> = tier.get(&key, Format::Json).await.unwrap();
/// assert_eq!(value.as_deref(), Some("hello"));
/// assert!(tier.delete(&key).await.unwrap());
/// # });
/// ```
pub trait BackendExt: Backend {
    /// The value under `key` if it is fresh. An unreadable entry (corrupt,
    /// foreign, another format) is logged and reads as `None`.
    fn get<T: CacheableValue>(
        &self,
        key: &CacheKey,
        format: Format,
    ) -> impl Future<Output = Result<Option<T>, BackendError>> + Send {
        async move {
            let Some(bytes) = self.read(key).await? else {
                return Ok(None);
            };
            let decoded = RawEntry::decode(bytes, key).and_then(|raw| {
                let value = raw.value::<T>(format)?;
                Ok((raw.meta, value))
            });
            match decoded {
                Ok((meta, value)) => {
                    let now = Timestamp::from(SystemTime::now());
                    Ok((meta.freshness(now) == Freshness::Fresh).then_some(value))
                }
                Err(reason) => {
                    tracing::warn!(tier = self.label(), key = %key.log_id(), %reason, "unreadable entry, treated as a miss");
                    Ok(None)
                }
            }
        }
    }

    /// Stores `value` under `key`, fresh for `ttl`.
    fn set<T: CacheableValue>(
        &self,
        key: &CacheKey,
        value: &T,
        format: Format,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let encoded = encode_entry(
            value,
            &EntryMeta::fresh_for(Timestamp::from(SystemTime::now()), ttl),
            format,
            key,
        );
        async move {
            let bytes = encoded.map_err(|source| BackendError::Encode {
                tier: self.label().into(),
                source,
            })?;
            self.write(key, bytes, ttl, &[]).await
        }
    }

    /// Removes the entry under `key`.
    fn delete<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send + 'a {
        self.remove(key)
    }
}

impl<B: Backend + ?Sized> BackendExt for B {}
