//! The entity cache over a real database: SQLite (in memory, embedded in
//! the test through sqlx), read through the engine over the memory tier.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hitbox_backend::entity::{Entity, EntityCache, Repository};
use hitbox_backend::{Backend, BackendFuture, Cache, MemoryBackend};
use hitbox_core::{CacheKey, Strategy, Tag};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: i64,
    name: String,
}

impl Entity for User {
    type Id = i64;
    const NAMESPACE: &'static str = "users";
    const VERSION: u32 = 1;

    fn id(&self) -> i64 {
        self.id
    }
}

/// Users in SQLite. Counts its calls, remembers which ids `load_many` was
/// asked for, and can hold a load after its query ran (the row read) until
/// a test lets it go: the window in which a write races the load.
struct UserRepository {
    pool: SqlitePool,
    loads: AtomicU32,
    many_loads: AtomicU32,
    asked: Mutex<Vec<Vec<i64>>>,
    gate: Semaphore,
}

impl UserRepository {
    async fn new() -> UserRepository {
        // One connection: an in-memory database lives in its connection.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("an in-memory SQLite database");
        sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        for (id, name) in [(1, "Ada"), (2, "Grace"), (3, "Barbara"), (4, "Frances")] {
            sqlx::query("INSERT INTO users (id, name) VALUES (?, ?)")
                .bind(id)
                .bind(name)
                .execute(&pool)
                .await
                .unwrap();
        }
        UserRepository {
            pool,
            loads: AtomicU32::new(0),
            many_loads: AtomicU32::new(0),
            asked: Mutex::new(Vec::new()),
            gate: Semaphore::new(Semaphore::MAX_PERMITS),
        }
    }

    /// Later loads wait after their query until [`UserRepository::open`].
    fn hold(&self) {
        let _ = self.gate.forget_permits(Semaphore::MAX_PERMITS);
    }

    fn open(&self) {
        self.gate
            .add_permits(Semaphore::MAX_PERMITS - self.gate.available_permits());
    }

    async fn rename(&self, id: i64, name: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET name = ? WHERE id = ?")
            .bind(name)
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }
}

impl Repository<User> for UserRepository {
    type Error = sqlx::Error;

    async fn load(&self, id: &i64) -> Result<Option<User>, sqlx::Error> {
        let row: Option<(i64, String)> = sqlx::query_as("SELECT id, name FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        self.loads.fetch_add(1, Ordering::SeqCst);
        drop(self.gate.acquire().await.expect("the gate stays"));
        Ok(row.map(|(id, name)| User { id, name }))
    }

    async fn load_many(&self, ids: &[i64]) -> Result<Vec<User>, sqlx::Error> {
        let placeholders = vec!["?"; ids.len()].join(", ");
        let sql = format!("SELECT id, name FROM users WHERE id IN ({placeholders})");
        let mut query = sqlx::query_as::<_, (i64, String)>(&sql);
        for id in ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        self.many_loads.fetch_add(1, Ordering::SeqCst);
        self.asked.lock().unwrap().push(ids.to_vec());
        drop(self.gate.acquire().await.expect("the gate stays"));
        Ok(rows.into_iter().map(|(id, name)| User { id, name }).collect())
    }
}

/// A memory tier that counts how it is read.
#[derive(Clone, Default)]
struct CountingTier {
    inner: MemoryBackend,
    reads: Arc<AtomicU64>,
    read_manys: Arc<AtomicU64>,
}

impl Backend for CountingTier {
    fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(key)
    }
    fn read_many<'a>(&'a self, keys: &'a [CacheKey]) -> BackendFuture<'a, Vec<Option<Bytes>>> {
        self.read_manys.fetch_add(1, Ordering::SeqCst);
        self.inner.read_many(keys)
    }
    fn write<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Bytes,
        ttl: Duration,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        self.inner.write(key, value, ttl, tags)
    }
    fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
        self.inner.remove(key)
    }
    fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
        self.inner.invalidate_tag(tag)
    }
    fn label(&self) -> &str {
        "counting"
    }
}

async fn setup() -> (Arc<UserRepository>, EntityCache<User>, CountingTier) {
    let tier = CountingTier::default();
    let users = EntityCache::new(Cache::new(tier.clone()));
    (Arc::new(UserRepository::new().await), users, tier)
}

fn names(found: &[Option<User>]) -> Vec<Option<&str>> {
    found
        .iter()
        .map(|user| user.as_ref().map(|u| u.name.as_str()))
        .collect()
}

#[tokio::test]
async fn one_entity_is_loaded_once_and_absent_ones_are_not_cached() {
    let (db, users, _) = setup().await;
    assert_eq!(users.get(&*db, &1).await.unwrap().unwrap().name, "Ada");
    assert_eq!(users.get(&*db, &1).await.unwrap().unwrap().name, "Ada");
    assert_eq!(db.loads(), 1);
    assert_eq!(users.get(&*db, &99).await.unwrap(), None);
    assert_eq!(users.get(&*db, &99).await.unwrap(), None);
    assert_eq!(db.loads(), 3, "an absent row is asked for again");
}

#[tokio::test]
async fn many_ids_cost_one_tier_read_and_one_query_for_the_misses() {
    let (db, users, tier) = setup().await;
    users.get(&*db, &1).await.unwrap();
    users.get(&*db, &2).await.unwrap();
    let reads_before = tier.reads.load(Ordering::SeqCst);

    let found = users.get_many(&*db, &[1, 2, 3, 4, 99]).await.unwrap();
    assert_eq!(
        names(&found),
        vec![Some("Ada"), Some("Grace"), Some("Barbara"), Some("Frances"), None]
    );
    assert_eq!(tier.read_manys.load(Ordering::SeqCst), 1, "one tier round trip");
    assert_eq!(
        tier.reads.load(Ordering::SeqCst),
        reads_before,
        "and no single reads"
    );
    assert_eq!(
        *db.asked.lock().unwrap(),
        vec![vec![3, 4, 99]],
        "one query, misses only"
    );

    let again = users.get_many(&*db, &[4, 3, 2, 1]).await.unwrap();
    assert_eq!(
        names(&again),
        vec![Some("Frances"), Some("Barbara"), Some("Grace"), Some("Ada")]
    );
    assert_eq!(db.many_loads.load(Ordering::SeqCst), 1, "all cached now");
    let stats = users.cache().stats();
    assert_eq!((stats.hits, stats.misses), (2 + 4, 2 + 3), "{stats:?}");
}

#[tokio::test]
async fn strategies_per_call() {
    let (db, users, _) = setup().await;
    users.get(&*db, &1).await.unwrap();
    db.rename(1, "Ada L.").await.unwrap();
    assert_eq!(users.get(&*db, &1).await.unwrap().unwrap().name, "Ada", "cached");

    let bypassed = users.get_with(&*db, &1, Strategy::Bypass).await.unwrap().unwrap();
    assert_eq!(bypassed.name, "Ada L.");
    assert_eq!(
        users.get(&*db, &1).await.unwrap().unwrap().name,
        "Ada",
        "bypass stores nothing"
    );

    let refreshed = users
        .get_with(&*db, &1, Strategy::Refresh)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refreshed.name, "Ada L.");
    assert_eq!(
        users.get(&*db, &1).await.unwrap().unwrap().name,
        "Ada L.",
        "refresh stores"
    );

    db.rename(1, "Countess").await.unwrap();
    let invalidated = users
        .get_with(&*db, &1, Strategy::Invalidate)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(invalidated.name, "Countess");
    assert_eq!(
        users.cache().get::<User>(&users.key(&1)).await,
        None,
        "invalidate removes"
    );

    users.get_many(&*db, &[2, 3]).await.unwrap();
    db.rename(2, "Grace H.").await.unwrap();
    let refreshed = users
        .get_many_with(&*db, &[2, 3], Strategy::Refresh)
        .await
        .unwrap();
    assert_eq!(names(&refreshed), vec![Some("Grace H."), Some("Barbara")]);
    assert_eq!(users.get(&*db, &2).await.unwrap().unwrap().name, "Grace H.");
}

#[tokio::test]
async fn update_then_invalidate_beats_a_load_that_read_the_old_row() {
    let (db, users, _) = setup().await;
    db.hold();
    let racing = {
        let (db, users) = (Arc::clone(&db), users.clone());
        tokio::spawn(async move { users.get(&*db, &1).await })
    };
    // The racing load has read "Ada" and waits.
    while db.loads() == 0 {
        tokio::task::yield_now().await;
    }
    users
        .update_then_invalidate(&1, db.rename(1, "Ada Lovelace"))
        .await
        .unwrap();
    db.open();
    assert_eq!(
        racing.await.unwrap().unwrap().unwrap().name,
        "Ada",
        "its caller gets what it read"
    );
    assert_eq!(
        users.cache().get::<User>(&users.key(&1)).await,
        None,
        "but it is not stored"
    );
    assert_eq!(users.get(&*db, &1).await.unwrap().unwrap().name, "Ada Lovelace");
    assert_eq!(users.cache().stats().stale_loads_discarded, 1);
}

#[tokio::test]
async fn write_through_is_not_overwritten_by_a_racing_load() {
    let (db, users, _) = setup().await;
    db.hold();
    let racing = {
        let (db, users) = (Arc::clone(&db), users.clone());
        tokio::spawn(async move { users.get_many(&*db, &[2, 3]).await })
    };
    while db.many_loads.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let grace = User {
        id: 2,
        name: "Grace Hopper".into(),
    };
    users
        .write_through(&grace, db.rename(2, "Grace Hopper"))
        .await
        .unwrap();
    db.open();
    let raced = racing.await.unwrap().unwrap();
    assert_eq!(names(&raced), vec![Some("Grace"), Some("Barbara")]);
    let loads = db.loads() + db.many_loads.load(Ordering::SeqCst);
    assert_eq!(
        users.get(&*db, &2).await.unwrap(),
        Some(grace),
        "the written value stays"
    );
    assert_eq!(users.get(&*db, &3).await.unwrap().unwrap().name, "Barbara");
    assert_eq!(
        db.loads() + db.many_loads.load(Ordering::SeqCst),
        loads,
        "both from the cache"
    );
}

#[tokio::test]
async fn a_single_read_joins_a_many_read_that_is_loading_its_id() {
    let (db, users, _) = setup().await;
    db.hold();
    let many = {
        let (db, users) = (Arc::clone(&db), users.clone());
        tokio::spawn(async move { users.get_many(&*db, &[3, 4]).await })
    };
    while db.many_loads.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let one = {
        let (db, users) = (Arc::clone(&db), users.clone());
        tokio::spawn(async move { users.get(&*db, &4).await })
    };
    while users.cache().stats().joins == 0 {
        tokio::task::yield_now().await;
    }
    db.open();
    assert_eq!(one.await.unwrap().unwrap().unwrap().name, "Frances");
    assert_eq!(
        names(&many.await.unwrap().unwrap()),
        vec![Some("Barbara"), Some("Frances")]
    );
    assert_eq!(db.loads(), 0, "the single read asked the database nothing");
}

#[tokio::test]
async fn invalidate_all_drops_every_entity_of_the_type() {
    let (db, users, _) = setup().await;
    users.get_many(&*db, &[1, 2]).await.unwrap();
    users.invalidate_all().await.unwrap();
    assert_eq!(users.cache().get::<User>(&users.key(&1)).await, None);
    assert_eq!(users.cache().get::<User>(&users.key(&2)).await, None);
    assert!(users.invalidate(&1).await.is_ok());
}

#[tokio::test]
async fn a_deleted_row_is_not_hidden_by_a_stale_entry_but_a_failure_is() {
    let clock = hitbox_core::ManualClock::new();
    let cache = Cache::builder(MemoryBackend::new())
        .clock(clock.clone())
        .policy(
            hitbox_core::CachePolicy::new(Duration::from_secs(10)).stale_if_error(Duration::from_secs(600)),
        )
        .build();
    let users = EntityCache::<User>::new(cache);
    let db = UserRepository::new().await;
    users.get(&db, &1).await.unwrap();
    users.get(&db, &2).await.unwrap();
    clock.advance(Duration::from_secs(20));

    sqlx::query("DELETE FROM users WHERE id = 1")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(users.get(&db, &1).await.unwrap(), None, "the row is gone");

    // The database fails: the stale entry covers for it.
    sqlx::query("DROP TABLE users").execute(&db.pool).await.unwrap();
    assert_eq!(users.get(&db, &2).await.unwrap().unwrap().name, "Grace");
    // Past the window, the error shows.
    clock.advance(Duration::from_secs(600));
    assert!(users.get(&db, &2).await.is_err());
}
