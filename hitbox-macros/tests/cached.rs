//! `#[cached]` against the real engine over the in-memory tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::join_all;
use hitbox_backend::{Cache, MemoryBackend, cached};
use hitbox_core::{CacheKey, CachePolicy, ManualClock, Tag};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// A stand-in for a database that counts its queries and can be held
/// shut until a test opens it.
struct Db {
    queries: AtomicU32,
    gate: Semaphore,
    fail: std::sync::atomic::AtomicBool,
}

impl Db {
    fn open() -> Db {
        Db {
            queries: AtomicU32::new(0),
            gate: Semaphore::new(Semaphore::MAX_PERMITS),
            fail: false.into(),
        }
    }

    fn shut() -> Db {
        Db {
            gate: Semaphore::new(0),
            ..Db::open()
        }
    }

    async fn user(&self, id: u64) -> Result<User, String> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let _permit = self.gate.acquire().await.expect("the gate stays open");
        if self.fail.load(Ordering::SeqCst) {
            return Err(format!("database down while loading {id}"));
        }
        Ok(User {
            id,
            name: format!("user-{id}"),
        })
    }

    fn queries(&self) -> u32 {
        self.queries.load(Ordering::SeqCst)
    }
}

struct Users {
    cache: Cache,
    db: Db,
}

impl Users {
    #[cached(cache = self.cache, key = "user:{id}", tags = ["users", "user:{id}"], namespace = "users")]
    async fn get(&self, id: u64) -> Result<User, String> {
        self.db.user(id).await
    }
}

#[cached(cache = cache, skip = [db])]
async fn user_by_args(cache: &Cache, db: &Db, id: u64, lang: &str) -> Result<User, String> {
    let mut user = db.user(id).await?;
    user.name.push_str(lang);
    Ok(user)
}

#[cached(cache = cache, skip = [db], cache_none = true)]
async fn find_cached_none(cache: &Cache, db: &Db, id: u64) -> Option<User> {
    db.user(id).await.ok().filter(|user| user.id != 0)
}

#[cached(cache = cache, skip = [db])]
async fn find(cache: &Cache, db: &Db, id: u64) -> Option<User> {
    db.user(id).await.ok().filter(|user| user.id != 0)
}

#[cached(cache = cache, skip = [db], policy = CachePolicy::new(Duration::from_secs(10)))]
async fn ten_seconds(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.user(id).await.map(|user| user.id).unwrap_or_default()
}

fn users(db: Db) -> Users {
    Users {
        cache: Cache::new(MemoryBackend::new()),
        db,
    }
}

#[tokio::test]
async fn a_stampede_on_one_key_runs_the_body_once() {
    let users = users(Db::shut());
    let calls = join_all((0..10).map(|_| users.get(7)));
    let open_when_all_wait = async {
        // Every caller but the leader joins the leader's load; then the
        // database answers.
        while users.cache.stats().joins < 9 {
            tokio::task::yield_now().await;
        }
        users.db.gate.add_permits(1);
    };
    let (results, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(calls, open_when_all_wait)
    })
    .await
    .expect("the callers did not all join one load");
    for result in results {
        assert_eq!(result.unwrap().name, "user-7");
    }
    assert_eq!(users.db.queries(), 1);
    assert_eq!(users.cache.stats().loads, 1);
}

#[tokio::test]
async fn the_key_template_and_tags_name_the_entry() {
    let users = users(Db::open());
    users.get(3).await.unwrap();
    let key = CacheKey::builder("users").part("key", "user:3").build();
    assert_eq!(users.cache.get::<User>(&key).await.map(|u| u.id), Some(3));
    users.get(3).await.unwrap();
    assert_eq!(users.db.queries(), 1);

    users.cache.invalidate_tag(&Tag::from("user:3")).await.unwrap();
    assert_eq!(users.cache.get::<User>(&key).await, None);
    users.get(3).await.unwrap();
    assert_eq!(users.db.queries(), 2);
}

#[tokio::test]
async fn only_ok_results_are_cached() {
    let users = users(Db::open());
    users.db.fail.store(true, Ordering::SeqCst);
    assert!(users.get(1).await.is_err());
    assert!(users.get(1).await.is_err());
    assert_eq!(users.db.queries(), 2, "an Err is not cached");
    users.db.fail.store(false, Ordering::SeqCst);
    assert!(users.get(1).await.is_ok());
    assert!(users.get(1).await.is_ok());
    assert_eq!(users.db.queries(), 3);
}

#[tokio::test]
async fn every_unskipped_argument_is_part_of_the_default_key() {
    let cache = Cache::new(MemoryBackend::new());
    let db = Db::open();
    assert_eq!(
        user_by_args(&cache, &db, 1, "-en").await.unwrap().name,
        "user-1-en"
    );
    assert_eq!(
        user_by_args(&cache, &db, 1, "-fr").await.unwrap().name,
        "user-1-fr"
    );
    assert_eq!(
        user_by_args(&cache, &db, 1, "-en").await.unwrap().name,
        "user-1-en"
    );
    assert_eq!(db.queries(), 2);
    let key = CacheKey::builder(concat!(module_path!(), "::user_by_args"))
        .part("id", "1")
        .part("lang", "-en")
        .build();
    assert!(
        cache.get::<User>(&key).await.is_some(),
        "the default key is namespace, id and lang"
    );
}

#[tokio::test]
async fn none_is_cached_only_when_asked() {
    let cache = Cache::new(MemoryBackend::new());
    let db = Db::open();
    assert_eq!(find(&cache, &db, 0).await, None);
    assert_eq!(find(&cache, &db, 0).await, None);
    assert_eq!(db.queries(), 2, "None is loaded again");
    assert!(find(&cache, &db, 5).await.is_some());
    assert!(find(&cache, &db, 5).await.is_some());
    assert_eq!(db.queries(), 3, "Some is cached");

    let db = Db::open();
    assert_eq!(find_cached_none(&cache, &db, 0).await, None);
    assert_eq!(find_cached_none(&cache, &db, 0).await, None);
    assert_eq!(db.queries(), 1, "None is cached with cache_none");
}

#[tokio::test]
async fn the_policy_sets_the_lifetime() {
    let clock = ManualClock::new();
    let cache = Cache::builder(MemoryBackend::new())
        .clock(clock.clone())
        .policy(CachePolicy::long_term())
        .build();
    let db = Db::open();
    ten_seconds(&cache, &db, 4).await;
    clock.advance(Duration::from_secs(9));
    ten_seconds(&cache, &db, 4).await;
    assert_eq!(db.queries(), 1, "fresh for 10 s");
    clock.advance(Duration::from_secs(2));
    ten_seconds(&cache, &db, 4).await;
    assert_eq!(db.queries(), 2, "expired after 10 s, not the cache's hour");
}

#[tokio::test]
async fn a_failed_refresh_serves_the_stale_value() {
    let clock = ManualClock::new();
    let cache = Cache::builder(MemoryBackend::new())
        .clock(clock.clone())
        .policy(CachePolicy::new(Duration::from_secs(10)).stale_if_error(Duration::from_secs(60)))
        .build();
    let users = Users {
        cache,
        db: Db::open(),
    };
    assert_eq!(users.get(2).await.unwrap().name, "user-2");
    clock.advance(Duration::from_secs(20));
    users.db.fail.store(true, Ordering::SeqCst);
    assert_eq!(users.get(2).await.unwrap().name, "user-2", "stale-if-error");
    assert_eq!(users.db.queries(), 2);
    clock.advance(Duration::from_secs(60));
    assert!(users.get(2).await.is_err(), "past the window the error shows");
}

#[tokio::test]
async fn an_invalidation_during_the_body_keeps_its_result_out_of_the_cache() {
    let users = Arc::new(users(Db::shut()));
    let loading = {
        let users = Arc::clone(&users);
        tokio::spawn(async move { users.get(9).await })
    };
    // Wait until the body runs, invalidate, then let it finish.
    while users.db.queries() == 0 {
        tokio::task::yield_now().await;
    }
    users.cache.invalidate_tag(&Tag::from("users")).await.unwrap();
    users.db.gate.add_permits(1);
    assert_eq!(
        loading.await.unwrap().unwrap().id,
        9,
        "the caller still gets its value"
    );
    let key = CacheKey::builder("users").part("key", "user:9").build();
    assert_eq!(users.cache.get::<User>(&key).await, None, "but it was not stored");
    assert_eq!(users.cache.stats().stale_loads_discarded, 1);
}

#[cached(cache = cache, skip = [present])]
async fn maybe(cache: &Cache, present: &std::sync::atomic::AtomicBool, id: u64) -> Option<u64> {
    present.load(Ordering::SeqCst).then_some(id)
}

#[tokio::test]
async fn a_none_is_an_answer_that_no_stale_value_hides() {
    let clock = ManualClock::new();
    let cache = Cache::builder(MemoryBackend::new())
        .clock(clock.clone())
        .policy(CachePolicy::new(Duration::from_secs(10)).stale_if_error(Duration::from_secs(600)))
        .build();
    let present = std::sync::atomic::AtomicBool::new(true);
    assert_eq!(maybe(&cache, &present, 1).await, Some(1));
    clock.advance(Duration::from_secs(20));
    present.store(false, Ordering::SeqCst);
    assert_eq!(
        maybe(&cache, &present, 1).await,
        None,
        "gone is gone, even with a stale entry"
    );
}
