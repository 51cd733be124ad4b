//! Typed, namespaced views of a cache.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use hitbox_core::{CacheKey, EntryOptions, KeyBuilder};

use super::Cache;
use crate::codec::format::CacheableValue;
use crate::error::{BackendError, LoadError};

/// A view of a [`Cache`] for values of one type under one namespace, keyed
/// by an id: `cache.typed::<User>("users")`.
///
/// The key of id `42` is `users:v1:id=42`. Bump [`TypedCache::version`]
/// when `T` changes shape, and old entries are never read again.
pub struct TypedCache<T> {
    cache: Cache,
    namespace: Arc<str>,
    version: u32,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for TypedCache<T> {
    fn clone(&self) -> Self {
        TypedCache {
            cache: self.cache.clone(),
            namespace: Arc::clone(&self.namespace),
            version: self.version,
            _value: PhantomData,
        }
    }
}

impl<T: CacheableValue> TypedCache<T> {
    pub(crate) fn new(cache: Cache, namespace: &str) -> Self {
        TypedCache {
            cache,
            namespace: namespace.into(),
            version: 1,
            _value: PhantomData,
        }
    }

    /// The same view at another key version.
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// The key of `id`.
    pub fn key(&self, id: impl Display) -> CacheKey {
        KeyBuilder::new(&*self.namespace)
            .version(self.version)
            .part("id", id.to_string())
            .build()
    }

    /// The cache behind the view.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// See [`Cache::get`].
    pub async fn get(&self, id: impl Display) -> Option<T> {
        self.cache.get(&self.key(id)).await
    }

    /// See [`Cache::set`].
    pub async fn set(&self, id: impl Display, value: &T) -> Result<(), BackendError> {
        self.cache.set(&self.key(id), value).await
    }

    /// See [`Cache::set_with`].
    pub async fn set_with(
        &self,
        id: impl Display,
        value: &T,
        options: &EntryOptions,
    ) -> Result<(), BackendError> {
        self.cache.set_with(&self.key(id), value, options).await
    }

    /// See [`Cache::delete`].
    pub async fn delete(&self, id: impl Display) -> Result<bool, BackendError> {
        self.cache.delete(&self.key(id)).await
    }

    /// See [`Cache::get_or_insert_with`].
    pub async fn get_or_insert_with<F, Fut>(&self, id: impl Display, loader: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.cache.get_or_insert_with(&self.key(id), loader).await
    }

    /// See [`Cache::try_get_or_insert_with`].
    pub async fn try_get_or_insert_with<E, F, Fut>(
        &self,
        id: impl Display,
        loader: F,
    ) -> Result<T, LoadError<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.cache.try_get_or_insert_with(&self.key(id), loader).await
    }

    /// See [`Cache::try_get_or_insert_with_options`].
    pub async fn try_get_or_insert_with_options<E, F, Fut>(
        &self,
        id: impl Display,
        options: &EntryOptions,
        loader: F,
    ) -> Result<T, LoadError<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.cache
            .try_get_or_insert_with_options(&self.key(id), options, loader)
            .await
    }
}
