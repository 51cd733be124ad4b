//! Entity caching: rows of a database (or any store of record) kept in the
//! cache by id, between the application and its repository.
//!
//! Three parts:
//!
//! - [`Entity`]: a cached type that knows its id, its namespace and its
//!   version (bump the version when its shape changes, and entries of the
//!   old shape are never read again).
//! - [`Repository`]: where entities come from: load one, load many.
//! - [`EntityCache`]: reads through the cache to the repository, one id or
//!   many, with a per-call [`Strategy`] (use the cache, refresh, invalidate,
//!   bypass), and writes that keep the cache right: update then invalidate,
//!   or write through.
//!
//! Loading many ids reads them all from the tier in one
//! [`read_many`](crate::Backend::read_many) (one `MGET` on Redis, one
//! multi-key `get` on memcached, a loop in process), then asks the
//! repository once, for the misses only.
//!
//! Loads go through the engine's single-flight: callers that miss one id at
//! the same moment, through [`EntityCache::get`] or
//! [`EntityCache::get_many`], share one load. A load that a write races
//! (it read the row before the write and finishes after it) hands its
//! result to its callers but does not store it: the write's invalidation
//! cancels it, as [`Cache::delete`] cancels any load of its key.
//!
//! ```
//! use std::collections::HashMap;
//! use hitbox_backend::entity::{Entity, EntityCache, Repository};
//! use hitbox_backend::{Cache, MemoryBackend};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct User { id: u64, name: String }
//!
//! impl Entity for User {
//!     type Id = u64;
//!     const NAMESPACE: &'static str = "users";
//!     fn id(&self) -> u64 { self.id }
//! }
//!
//! /// A stand-in for a database.
//! struct Users(HashMap<u64, String>);
//!
//! impl Repository<User> for Users {
//!     type Error = std::io::Error;
//!     async fn load(&self, id: &u64) -> Result<Option<User>, Self::Error> {
//!         Ok(self.0.get(id).map(|name| User { id: *id, name: name.clone() }))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let db = Users(HashMap::from([(1, "Ada".to_string()), (2, "Grace".to_string())]));
//! let users = EntityCache::<User>::new(Cache::new(MemoryBackend::new()));
//! assert_eq!(users.get(&db, &1).await.unwrap().unwrap().name, "Ada");
//! let many = users.get_many(&db, &[1, 2, 3]).await.unwrap();
//! assert_eq!(many.iter().map(|u| u.as_ref().map(|u| u.name.as_str())).collect::<Vec<_>>(),
//!            vec![Some("Ada"), Some("Grace"), None]);
//! # });
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;

use futures::future::join_all;
use hitbox_core::{CacheKey, EntryOptions, Freshness, KeyBuilder, Strategy, Tag};

use crate::codec::format::CacheableValue;
use crate::engine::in_place::InPlaceFailed;
use crate::engine::{Cache, LoadTicket};
use crate::error::BackendError;
use crate::memoize::KeyPart;
use crate::observe::Outcome;

/// A type cached by id.
///
/// Its entries live under `NAMESPACE:vVERSION:id=<id>` and carry the tag
/// [`EntityCache::tag`] (`entity:NAMESPACE`), which invalidates them all.
pub trait Entity: CacheableValue {
    /// The id: what the repository looks an entity up by.
    type Id: KeyPart + Clone + Eq + Hash + Send + Sync + 'static;

    /// The namespace of its keys: one per entity type.
    const NAMESPACE: &'static str;

    /// The version of its keys: bump it when the type changes shape.
    const VERSION: u32 = 1;

    /// This entity's id.
    fn id(&self) -> Self::Id;
}

/// Where entities of type `E` are loaded from: a database table, a service.
///
/// Implement [`load`](Repository::load); implement
/// [`load_many`](Repository::load_many) too when the store can answer many
/// ids in one query (`WHERE id IN (...)`), since that is what
/// [`EntityCache::get_many`] calls for its misses. Both may be written as
/// `async fn`, as long as their futures are `Send`.
pub trait Repository<E: Entity>: Send + Sync {
    /// What a failed load reports.
    type Error: Send + Sync + 'static;

    /// The entity with `id`, or `None` when there is none.
    fn load(&self, id: &E::Id) -> impl Future<Output = Result<Option<E>, Self::Error>> + Send;

    /// The entities with these `ids` that exist, in any order. The default
    /// loads them one by one.
    fn load_many(&self, ids: &[E::Id]) -> impl Future<Output = Result<Vec<E>, Self::Error>> + Send {
        async move {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(entity) = self.load(id).await? {
                    found.push(entity);
                }
            }
            Ok(found)
        }
    }
}

/// Why a load of one id produced no value to store.
enum Missing<Err> {
    /// The repository has no entity with that id.
    Absent,
    /// The repository failed.
    Failed(Err),
}

/// Entities of type `E` read through a [`Cache`] to a [`Repository`]; see
/// the [module documentation](self).
pub struct EntityCache<E> {
    cache: Cache,
    options: EntryOptions,
    _entity: PhantomData<fn() -> E>,
}

impl<E> Clone for EntityCache<E> {
    fn clone(&self) -> Self {
        EntityCache {
            cache: self.cache.clone(),
            options: self.options.clone(),
            _entity: PhantomData,
        }
    }
}

impl<E> std::fmt::Debug for EntityCache<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityCache")
            .field("entity", &std::any::type_name::<E>())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<E: Entity> EntityCache<E> {
    /// Entities of type `E` in `cache`, stored with the cache's policy.
    pub fn new(cache: Cache) -> Self {
        EntityCache {
            cache,
            options: EntryOptions::new(),
            _entity: PhantomData,
        }
    }

    /// Stores entities with these options (TTL, windows, extra tags)
    /// instead. Their strategy is ignored: each call gives its own.
    pub fn with_options(mut self, options: EntryOptions) -> Self {
        self.options = options;
        self
    }

    /// The cache behind it.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The key of the entity with `id`.
    ///
    /// ```
    /// # use hitbox_backend::entity::{Entity, EntityCache};
    /// # use hitbox_backend::{Cache, MemoryBackend};
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct User { id: u64 }
    /// # impl Entity for User { type Id = u64; const NAMESPACE: &'static str = "users"; const VERSION: u32 = 3; fn id(&self) -> u64 { self.id } }
    /// let users = EntityCache::<User>::new(Cache::new(MemoryBackend::new()));
    /// assert_eq!(users.key(&42).as_str(), "users:v3:id=42");
    /// ```
    pub fn key(&self, id: &E::Id) -> CacheKey {
        KeyBuilder::new(E::NAMESPACE)
            .version(E::VERSION)
            .part("id", id.key_part())
            .build()
    }

    /// The tag every entity of this type is stored with.
    pub fn tag() -> Tag {
        Tag::new(format!("entity:{}", E::NAMESPACE))
    }

    fn store_options(&self, strategy: Strategy) -> EntryOptions {
        self.options.clone().tag(Self::tag()).strategy(strategy)
    }

    /// The entity with `id`: from the cache when it is fresh there, else
    /// from `repository` (stored unless it is absent). See
    /// [`EntityCache::get_with`].
    pub async fn get<R: Repository<E>>(&self, repository: &R, id: &E::Id) -> Result<Option<E>, R::Error> {
        self.get_with(repository, id, Strategy::UseCache).await
    }

    /// [`EntityCache::get`] with a strategy for this call:
    /// [`UseCache`](Strategy::UseCache), [`Refresh`](Strategy::Refresh)
    /// (load and overwrite), [`Invalidate`](Strategy::Invalidate) (remove,
    /// then load without storing), [`Bypass`](Strategy::Bypass) (load,
    /// leave the cache alone). An absent entity is not cached. A failed
    /// load returns the repository's error, or a stale entry still inside
    /// its stale-if-error window.
    pub async fn get_with<R: Repository<E>>(
        &self,
        repository: &R,
        id: &E::Id,
        strategy: Strategy,
    ) -> Result<Option<E>, R::Error> {
        let key = self.key(id);
        let options = self.store_options(strategy);
        let load = async {
            match repository.load(id).await {
                Ok(Some(entity)) => Ok(entity),
                Ok(None) => Err(Missing::Absent),
                Err(error) => Err(Missing::Failed(error)),
            }
        };
        // An absent row is an answer: a stale entry does not hide it. A
        // failed repository may be covered by one (stale-if-error).
        let failed = |missing: &Missing<R::Error>| matches!(missing, Missing::Failed(_));
        match self
            .cache
            .get_or_load_in_place(&key, &options, load, failed)
            .await
        {
            Ok(entity) => Ok(Some(entity)),
            Err(Missing::Absent) => Ok(None),
            Err(Missing::Failed(error)) => Err(error),
        }
    }

    /// The entities with `ids`, in the same order (`None` where the
    /// repository has none). See [`EntityCache::get_many_with`].
    pub async fn get_many<R: Repository<E>>(
        &self,
        repository: &R,
        ids: &[E::Id],
    ) -> Result<Vec<Option<E>>, R::Error> {
        self.get_many_with(repository, ids, Strategy::UseCache).await
    }

    /// The entities with `ids`, in the same order: one read of the tier
    /// for all of them, then one [`Repository::load_many`] for those not
    /// fresh in the cache, whose results are stored. Ids that another
    /// caller is loading already are not asked again: this call waits for
    /// that load. The strategy applies to every id (`Refresh` removes the
    /// entries first, so every id is loaded and stored again).
    pub async fn get_many_with<R: Repository<E>>(
        &self,
        repository: &R,
        ids: &[E::Id],
        strategy: Strategy,
    ) -> Result<Vec<Option<E>>, R::Error> {
        let keys: Vec<CacheKey> = ids.iter().map(|id| self.key(id)).collect();
        let bypass = |cache: &Cache| {
            for _ in ids {
                cache.record_outcome(Outcome::Bypass);
            }
        };
        match strategy {
            Strategy::UseCache => {}
            Strategy::Bypass => {
                bypass(&self.cache);
                return Ok(align(ids, repository.load_many(ids).await?));
            }
            Strategy::Invalidate | Strategy::Refresh => {
                for key in &keys {
                    if let Err(error) = self.cache.delete(key).await {
                        tracing::warn!(key = %key.log_id(), %error, "entity invalidation failed");
                    }
                }
                if strategy == Strategy::Invalidate {
                    bypass(&self.cache);
                    return Ok(align(ids, repository.load_many(ids).await?));
                }
            }
        }

        let mut found: Vec<Option<E>> = ids.iter().map(|_| None).collect();
        let options = self.store_options(Strategy::UseCache);
        let mut leads = Vec::new();
        let mut joins = Vec::new();
        let entries = self.cache.get_many_entries::<E>(&keys).await;
        for (index, (key, entry)) in keys.iter().zip(entries).enumerate() {
            match entry {
                Some(entry) if entry.freshness == Freshness::Fresh => {
                    self.cache.record_outcome(Outcome::Hit);
                    found[index] = Some(entry.into_value());
                }
                _ => match self.cache.lead_or_join::<E, InPlaceFailed>(key, &options) {
                    LoadTicket::Lead(lead) => {
                        self.cache.record_outcome(Outcome::Miss);
                        leads.push((index, lead));
                    }
                    // Counted when it is known whether the load waited for
                    // served this id.
                    LoadTicket::Join(join) => joins.push((index, join)),
                },
            }
        }

        if !leads.is_empty() {
            let wanted: Vec<E::Id> = leads.iter().map(|(index, _)| ids[*index].clone()).collect();
            // The tags' generations are read before the repository is.
            join_all(leads.iter().map(|(_, lead)| lead.ready())).await;
            // On an error the leads are dropped on return, which releases
            // the callers waiting on them.
            let mut loaded: HashMap<E::Id, E> = repository
                .load_many(&wanted)
                .await?
                .into_iter()
                .map(|entity| (entity.id(), entity))
                .collect();
            let stores = leads.into_iter().map(|(index, lead)| {
                let entity = loaded.remove(&ids[index]);
                async move {
                    match entity {
                        Some(entity) => (index, lead.finish(Ok(entity)).await.ok()),
                        None => {
                            lead.complete(Err(InPlaceFailed));
                            (index, None)
                        }
                    }
                }
            });
            for (index, entity) in join_all(stores).await {
                found[index] = entity;
            }
        }

        // Loads other callers led: their result, or (when theirs failed or
        // found nothing) one more repository call for those ids.
        let mut again = Vec::new();
        for (index, join) in joins {
            match join.wait().await {
                Ok(entity) => {
                    self.cache.record_outcome(Outcome::Collapsed);
                    found[index] = Some(entity);
                }
                Err(_) => {
                    self.cache.record_outcome(Outcome::Miss);
                    again.push(index);
                }
            }
        }
        if !again.is_empty() {
            let wanted: Vec<E::Id> = again.iter().map(|index| ids[*index].clone()).collect();
            for (index, entity) in again
                .into_iter()
                .zip(align(&wanted, repository.load_many(&wanted).await?))
            {
                found[index] = entity;
            }
        }
        Ok(found)
    }

    /// Runs `write` (an update or delete of the entity with `id` in the
    /// store of record), then removes the entity from the cache, whether
    /// the write succeeded or not (a failed write may have changed the
    /// store). A load of `id` that was running (and may have read the row
    /// before the write) does not store its result.
    pub async fn update_then_invalidate<T, Err, Fut>(&self, id: &E::Id, write: Fut) -> Result<T, Err>
    where
        Fut: Future<Output = Result<T, Err>>,
    {
        let result = write.await;
        self.invalidate_logged(&self.key(id)).await;
        result
    }

    /// Runs `write` (which stores `entity` in the store of record), then,
    /// if it succeeded, stores `entity` in the cache, so that the next read
    /// needs no load. A load of the same id that was running does not store
    /// its (older) result over it. If the write fails the cached entry is
    /// removed and the error returned.
    pub async fn write_through<Err, Fut>(&self, entity: &E, write: Fut) -> Result<(), Err>
    where
        Fut: Future<Output = Result<(), Err>>,
    {
        let result = write.await;
        let key = self.key(&entity.id());
        // Cancels running loads of the key first: their result predates
        // the write.
        self.invalidate_logged(&key).await;
        if result.is_ok()
            && let Err(error) = self
                .cache
                .set_with(&key, entity, &self.store_options(Strategy::UseCache))
                .await
        {
            tracing::warn!(key = %key.log_id(), %error, "entity write-through to the cache failed");
        }
        result
    }

    /// Removes the entity with `id` from the cache.
    pub async fn invalidate(&self, id: &E::Id) -> Result<bool, BackendError> {
        self.cache.delete(&self.key(id)).await
    }

    /// Removes every entity of this type from the cache (through
    /// [`EntityCache::tag`]).
    pub async fn invalidate_all(&self) -> Result<u64, BackendError> {
        self.cache.invalidate_tag(&Self::tag()).await
    }

    async fn invalidate_logged(&self, key: &CacheKey) {
        if let Err(error) = self.cache.delete(key).await {
            tracing::warn!(key = %key.log_id(), %error, "entity invalidation failed");
        }
    }
}

/// `loaded` in the order of `ids`, `None` where an id was not found.
fn align<E: Entity>(ids: &[E::Id], loaded: Vec<E>) -> Vec<Option<E>> {
    let by_id: HashMap<E::Id, E> = loaded.into_iter().map(|entity| (entity.id(), entity)).collect();
    ids.iter().map(|id| by_id.get(id).cloned()).collect()
}
