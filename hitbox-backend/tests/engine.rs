//! The engine's rules, each with a driven clock and real concurrency.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hitbox_backend::{Cache, Format, LoadError, MemoryBackend};
use hitbox_core::{CacheKey, CachePolicy, Clock, EntryOptions, ManualClock, Strategy, Tag, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64, name: &str) -> User {
    User {
        id,
        name: name.into(),
    }
}

fn key(id: &str) -> CacheKey {
    CacheKey::builder("engine").part("id", id).build()
}

/// fresh 10 s, stale-while-revalidate 10 s, stale-if-error 60 s.
fn policy() -> CachePolicy {
    CachePolicy::new(Duration::from_secs(10))
        .stale_while_revalidate(Duration::from_secs(10))
        .stale_if_error(Duration::from_secs(60))
}

fn setup() -> (Cache, MemoryBackend, ManualClock) {
    let clock = ManualClock::new();
    let backend = MemoryBackend::with_clock(clock.clone());
    let cache = Cache::builder(backend.clone())
        .clock(clock.clone())
        .policy(policy())
        .build();
    (cache, backend, clock)
}

/// Yields to the runtime until `done` holds, at most a bounded number of
/// times: waiting for other tasks to reach a point, without sleeping.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

#[derive(Debug, PartialEq)]
struct Boom(&'static str);

#[tokio::test]
async fn get_set_delete_exists() {
    let (cache, _, _) = setup();
    assert_eq!(cache.get::<User>(&key("1")).await, None);
    assert!(!cache.exists(&key("1")).await);
    cache.set(&key("1"), &user(1, "Ada")).await.unwrap();
    assert_eq!(cache.get::<User>(&key("1")).await, Some(user(1, "Ada")));
    assert!(cache.exists(&key("1")).await);
    assert!(cache.delete(&key("1")).await.unwrap());
    assert_eq!(cache.get::<User>(&key("1")).await, None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.invalidations), (1, 2, 1));
}

#[tokio::test]
async fn typed_views_are_namespaced() {
    let (cache, backend, _) = setup();
    let users = cache.typed::<User>("users");
    let names = cache.typed::<String>("names");
    users.set(7, &user(7, "Grace")).await.unwrap();
    names.set(7, &"seven".to_string()).await.unwrap();
    assert_eq!(users.get(7).await, Some(user(7, "Grace")));
    assert_eq!(names.get(7).await.as_deref(), Some("seven"));
    assert_eq!(users.key(7).as_str(), "users:v1:id=7");
    assert_eq!(backend.len(), 2);
    // A new version of the view never reads the old entries.
    assert_eq!(users.clone().version(2).get(7).await, None);
    assert!(users.delete(7).await.unwrap());
}

#[tokio::test]
async fn freshness_windows_follow_the_clock() {
    let (cache, _, clock) = setup();
    cache.set(&key("w"), &user(1, "old")).await.unwrap();
    clock.advance(Duration::from_secs(9));
    assert!(cache.get::<User>(&key("w")).await.is_some(), "fresh");
    clock.advance(Duration::from_secs(2));
    assert!(
        cache.get::<User>(&key("w")).await.is_some(),
        "stale, inside stale-while-revalidate"
    );
    assert_eq!(cache.stats().stale_hits, 1);
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        cache.get::<User>(&key("w")).await,
        None,
        "only usable if a load fails"
    );
    let entry = cache.get_entry::<User>(&key("w")).await.unwrap();
    assert_eq!(entry.freshness, hitbox_core::Freshness::StaleIfError);
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        cache.get_entry::<User>(&key("w")).await,
        None,
        "expired and dropped by the tier"
    );
}

#[tokio::test]
async fn per_entry_overrides_win_over_the_policy() {
    let (cache, _, clock) = setup();
    let options = EntryOptions::new()
        .ttl(Duration::from_secs(1))
        .stale_while_revalidate(Duration::ZERO);
    cache
        .set_with(&key("o"), &user(1, "short"), &options)
        .await
        .unwrap();
    clock.advance(Duration::from_millis(1_500));
    assert_eq!(cache.get::<User>(&key("o")).await, None);
}

#[tokio::test]
async fn a_backwards_clock_jump_does_not_keep_entries_alive() {
    let (cache, _, clock) = setup();
    let start = clock.now();
    cache.set(&key("j"), &user(1, "x")).await.unwrap();
    clock.set(Timestamp::from_millis(start.as_millis() - 3_600_000));
    assert_eq!(cache.get::<User>(&key("j")).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_run_the_loader_once() {
    let (cache, _, _) = setup();
    let calls = Arc::new(AtomicUsize::new(0));
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        let cache = cache.clone();
        let calls = Arc::clone(&calls);
        let released = Arc::clone(&released);
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_insert_with(&key("cold"), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let gate = released.lock().await.take().expect("the loader runs once");
                    gate.await.unwrap();
                    user(1, "loaded")
                })
                .await
        }));
    }
    // All 999 others have joined the one load before it may finish.
    until(|| cache.stats().joins == 999).await;
    release.send(()).unwrap();
    for task in tasks {
        assert_eq!(task.await.unwrap(), user(1, "loaded"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.joins), (1, 999));
    // One request loaded; the others were answered by its load.
    assert_eq!((stats.misses, stats.collapsed, stats.requests()), (1, 999, 1_000));
    assert_eq!(cache.get::<User>(&key("cold")).await, Some(user(1, "loaded")));
}

#[tokio::test]
async fn a_failed_load_is_shared_by_its_waiters_and_not_cached() {
    let (cache, backend, _) = setup();
    let gate = Arc::new(Notify::new());
    let leader = {
        let (cache, gate) = (cache.clone(), Arc::clone(&gate));
        tokio::spawn(async move {
            cache
                .try_get_or_insert_with(&key("f"), move || async move {
                    gate.notified().await;
                    Err::<User, _>(Boom("origin down"))
                })
                .await
        })
    };
    until(|| cache.stats().loads == 1).await;
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .try_get_or_insert_with(&key("f"), || async { Ok::<_, Boom>(user(0, "never runs")) })
                .await
        })
    };
    until(|| cache.stats().joins == 1).await;
    gate.notify_one();
    for result in [leader.await.unwrap(), follower.await.unwrap()] {
        match result {
            Err(LoadError::Failed(error)) => assert_eq!(*error, Boom("origin down")),
            other => panic!("expected the loader's error, got {other:?}"),
        }
    }
    assert_eq!(backend.writes(), 0, "a failure is not cached");
    let next = cache
        .try_get_or_insert_with(&key("f"), || async { Ok::<_, Boom>(user(2, "recovered")) })
        .await;
    assert_eq!(next.unwrap(), user(2, "recovered"));
    assert_eq!(cache.stats().load_errors, 1);
}

#[tokio::test]
async fn a_panicking_loader_releases_every_waiter() {
    let (cache, _, _) = setup();
    let gate = Arc::new(Notify::new());
    let leader = {
        let (cache, gate) = (cache.clone(), Arc::clone(&gate));
        tokio::spawn(async move {
            cache
                .try_get_or_insert_with(&key("p"), move || async move {
                    gate.notified().await;
                    if std::hint::black_box(true) {
                        panic!("loader bug");
                    }
                    Ok::<User, Boom>(user(0, "unreachable"))
                })
                .await
        })
    };
    until(|| cache.stats().loads == 1).await;
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .try_get_or_insert_with(&key("p"), || async { Ok::<_, Boom>(user(0, "never runs")) })
                .await
        })
    };
    until(|| cache.stats().joins == 1).await;
    gate.notify_one();
    assert!(matches!(leader.await.unwrap(), Err(LoadError::Panicked)));
    assert!(matches!(follower.await.unwrap(), Err(LoadError::Panicked)));
    // The key is usable again.
    let value = cache
        .get_or_insert_with(&key("p"), || async { user(3, "ok") })
        .await;
    assert_eq!(value, user(3, "ok"));
}

#[tokio::test]
async fn waiters_finish_the_load_when_the_first_caller_gives_up() {
    let (cache, _, _) = setup();
    let gate = Arc::new(Notify::new());
    let leader = {
        let (cache, gate) = (cache.clone(), Arc::clone(&gate));
        tokio::spawn(async move {
            cache
                .get_or_insert_with(&key("d"), move || async move {
                    gate.notified().await;
                    user(4, "finished by a waiter")
                })
                .await
        })
    };
    until(|| cache.stats().loads == 1).await;
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_insert_with(&key("d"), || async { user(0, "x") })
                .await
        })
    };
    until(|| cache.stats().joins == 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.notify_one();
    assert_eq!(follower.await.unwrap(), user(4, "finished by a waiter"));
    assert_eq!(
        cache.get::<User>(&key("d")).await,
        Some(user(4, "finished by a waiter"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_served_and_refreshed_once_in_the_background() {
    let (cache, backend, clock) = setup();
    cache.set(&key("s"), &user(1, "old")).await.unwrap();
    clock.advance(Duration::from_secs(12));
    let refreshes = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    for _ in 0..20 {
        let (refreshes, gate) = (Arc::clone(&refreshes), Arc::clone(&gate));
        let value = cache
            .get_or_insert_with(&key("s"), move || async move {
                refreshes.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                user(1, "new")
            })
            .await;
        assert_eq!(value, user(1, "old"), "the stale value is returned at once");
    }
    until(|| refreshes.load(Ordering::SeqCst) == 1).await;
    let writes = backend.writes();
    gate.notify_one();
    until(|| backend.writes() > writes).await;
    assert_eq!(cache.get::<User>(&key("s")).await, Some(user(1, "new")));
    assert_eq!(refreshes.load(Ordering::SeqCst), 1, "deduplicated");
    let stats = cache.stats();
    assert_eq!((stats.stale_hits, stats.background_refreshes), (20, 1));
}

#[tokio::test]
async fn background_refreshes_are_bounded() {
    let clock = ManualClock::new();
    let backend = MemoryBackend::with_clock(clock.clone());
    let cache = Cache::builder(backend)
        .clock(clock.clone())
        .policy(policy())
        .max_background_refreshes(1)
        .build();
    cache.set(&key("a"), &user(1, "a")).await.unwrap();
    cache.set(&key("b"), &user(2, "b")).await.unwrap();
    clock.advance(Duration::from_secs(12));
    let gate = Arc::new(Notify::new());
    let g = Arc::clone(&gate);
    cache
        .get_or_insert_with(&key("a"), move || async move {
            g.notified().await;
            user(1, "a2")
        })
        .await;
    let second_ran = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&second_ran);
    let value = cache
        .get_or_insert_with(&key("b"), move || async move {
            s.fetch_add(1, Ordering::SeqCst);
            user(2, "b2")
        })
        .await;
    assert_eq!(value, user(2, "b"));
    assert_eq!(
        cache.stats().background_refreshes,
        1,
        "the second refresh was skipped"
    );
    gate.notify_one();
    tokio::task::yield_now().await;
    assert_eq!(second_ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_value_only_inside_its_window() {
    let (cache, _, clock) = setup();
    cache.set(&key("e"), &user(1, "last good")).await.unwrap();
    clock.advance(Duration::from_secs(30)); // past fresh + stale-while-revalidate
    let result = cache
        .try_get_or_insert_with(&key("e"), || async { Err::<User, _>(Boom("down")) })
        .await;
    assert_eq!(result.unwrap(), user(1, "last good"));
    assert_eq!(cache.stats().stale_if_error_hits, 1);
    // A load that succeeds replaces it.
    let result = cache
        .try_get_or_insert_with(&key("e"), || async { Ok::<_, Boom>(user(1, "fresh again")) })
        .await;
    assert_eq!(result.unwrap(), user(1, "fresh again"));
    clock.advance(Duration::from_secs(10 + 60 + 1)); // past the error window
    let result = cache
        .try_get_or_insert_with(&key("e"), || async { Err::<User, _>(Boom("down")) })
        .await;
    assert!(matches!(result, Err(LoadError::Failed(_))));
}

#[tokio::test]
async fn a_load_racing_a_delete_does_not_store_and_is_not_joined() {
    let (cache, _, _) = setup();
    let gate = Arc::new(Notify::new());
    let load = {
        let (cache, gate) = (cache.clone(), Arc::clone(&gate));
        tokio::spawn(async move {
            cache
                .get_or_insert_with(&key("r"), move || async move {
                    gate.notified().await;
                    user(1, "loaded before the delete")
                })
                .await
        })
    };
    until(|| cache.stats().loads == 1).await;
    cache.delete(&key("r")).await.unwrap();
    // A caller after the delete does not join the doomed load.
    let fresh = cache
        .get_or_insert_with(&key("r"), || async { user(1, "after the delete") })
        .await;
    assert_eq!(fresh, user(1, "after the delete"));
    assert_eq!(cache.stats().joins, 0);
    gate.notify_one();
    assert_eq!(load.await.unwrap(), user(1, "loaded before the delete"));
    assert_eq!(
        cache.get::<User>(&key("r")).await,
        Some(user(1, "after the delete"))
    );
    assert_eq!(cache.stats().stale_loads_discarded, 1);
}

#[tokio::test]
async fn tags_invalidate_entries_and_racing_loads() {
    let (cache, _, _) = setup();
    let tagged = EntryOptions::new().tag("team:a");
    cache.set_with(&key("t1"), &user(1, "a"), &tagged).await.unwrap();
    cache.set_with(&key("t2"), &user(2, "a"), &tagged).await.unwrap();
    cache.set(&key("t3"), &user(3, "untagged")).await.unwrap();

    let gate = Arc::new(Notify::new());
    let load = {
        let (cache, gate, tagged) = (cache.clone(), Arc::clone(&gate), tagged.clone());
        tokio::spawn(async move {
            cache
                .try_get_or_insert_with_options(&key("t4"), &tagged, move || async move {
                    gate.notified().await;
                    Ok::<_, Boom>(user(4, "a"))
                })
                .await
        })
    };
    until(|| cache.stats().loads == 1).await;
    assert_eq!(cache.invalidate_tag(&Tag::from("team:a")).await.unwrap(), 2);
    gate.notify_one();
    assert_eq!(load.await.unwrap().unwrap(), user(4, "a"));
    for id in ["t1", "t2", "t4"] {
        assert_eq!(cache.get::<User>(&key(id)).await, None, "{id}");
    }
    assert_eq!(cache.get::<User>(&key("t3")).await, Some(user(3, "untagged")));
    assert_eq!(cache.stats().stale_loads_discarded, 1);
}

#[tokio::test]
async fn strategies_per_call() {
    let (cache, backend, _) = setup();
    cache.set(&key("s"), &user(1, "cached")).await.unwrap();
    let load = |name: &'static str| move || async move { Ok::<_, Boom>(user(1, name)) };

    let used = cache
        .try_get_or_insert_with_options(&key("s"), &EntryOptions::new(), load("loaded"))
        .await;
    assert_eq!(used.unwrap(), user(1, "cached"));

    let (reads, writes) = (backend.reads(), backend.writes());
    let bypass = EntryOptions::new().strategy(Strategy::Bypass);
    let bypassed = cache
        .try_get_or_insert_with_options(&key("s"), &bypass, load("bypassed"))
        .await;
    assert_eq!(bypassed.unwrap(), user(1, "bypassed"));
    assert_eq!(
        (backend.reads(), backend.writes()),
        (reads, writes),
        "bypass touches nothing"
    );

    let refresh = EntryOptions::new().strategy(Strategy::Refresh);
    let refreshed = cache
        .try_get_or_insert_with_options(&key("s"), &refresh, load("refreshed"))
        .await;
    assert_eq!(refreshed.unwrap(), user(1, "refreshed"));
    assert_eq!(cache.get::<User>(&key("s")).await, Some(user(1, "refreshed")));

    let invalidate = EntryOptions::new().strategy(Strategy::Invalidate);
    let value = cache
        .try_get_or_insert_with_options(&key("s"), &invalidate, load("uncached"))
        .await;
    assert_eq!(value.unwrap(), user(1, "uncached"));
    assert_eq!(
        cache.get::<User>(&key("s")).await,
        None,
        "invalidate removes and does not store"
    );
}

#[tokio::test]
async fn a_failing_tier_degrades_to_the_loader_and_is_counted() {
    let (cache, backend, _) = setup();
    backend.set_failing(true);
    assert_eq!(cache.get::<User>(&key("x")).await, None);
    let value = cache
        .get_or_insert_with(&key("x"), || async { user(9, "origin") })
        .await;
    assert_eq!(value, user(9, "origin"));
    assert!(cache.set(&key("x"), &user(9, "origin")).await.is_err());
    let stats = cache.stats();
    assert_eq!(
        stats.errors_of("memory"),
        4,
        "read, read, write in the load, write"
    );
    backend.set_failing(false);
    assert_eq!(stats.tiers.len(), 1);
}

#[tokio::test]
async fn corrupt_and_foreign_entries_are_misses_that_reload() {
    let (cache, backend, _) = setup();
    for junk in [&b""[..], b"HB", b"HB\x01\x01", b"\x00garbage", b"{\"id\":1}"] {
        backend.put_raw(&key("c"), junk.to_vec());
        assert_eq!(cache.get::<User>(&key("c")).await, None);
    }
    // The same value written with another format is a miss, not garbage.
    let json = Cache::builder(backend.clone()).format(Format::Json).build();
    json.set(&key("c"), &user(1, "json")).await.unwrap();
    assert_eq!(cache.get::<User>(&key("c")).await, None);
    let value = cache
        .get_or_insert_with(&key("c"), || async { user(1, "postcard") })
        .await;
    assert_eq!(value, user(1, "postcard"));
    assert_eq!(cache.get::<User>(&key("c")).await, Some(user(1, "postcard")));
    assert!(cache.stats().unreadable_entries >= 6);
}

#[tokio::test]
async fn truncated_flipped_and_swapped_entries_are_misses() {
    let (cache, backend, _) = setup();
    cache.set(&key("alice"), &user(1, "alice")).await.unwrap();
    cache.set(&key("bob"), &user(2, "bob")).await.unwrap();
    let alice = backend.raw(&key("alice")).unwrap();
    let bob = backend.raw(&key("bob")).unwrap();

    // Swapped between keys: each is a miss, never the other's value.
    backend.put_raw(&key("alice"), bob.clone());
    backend.put_raw(&key("bob"), alice.clone());
    assert_eq!(cache.get::<User>(&key("alice")).await, None);
    assert_eq!(cache.get::<User>(&key("bob")).await, None);

    // Truncated by one byte, or with one bit of the value flipped.
    backend.put_raw(&key("alice"), alice.slice(..alice.len() - 1));
    assert_eq!(cache.get::<User>(&key("alice")).await, None);
    let mut flipped = alice.to_vec();
    *flipped.last_mut().unwrap() ^= 0x01;
    backend.put_raw(&key("alice"), flipped);
    assert_eq!(cache.get::<User>(&key("alice")).await, None);

    // The untouched entry still reads.
    backend.put_raw(&key("alice"), alice);
    assert_eq!(cache.get::<User>(&key("alice")).await, Some(user(1, "alice")));
    assert_eq!(cache.stats().unreadable_entries, 4);
}

#[tokio::test]
async fn reading_another_type_under_a_key_is_a_miss() {
    let (cache, _, _) = setup();
    cache.set(&key("ty"), &user(1, "u")).await.unwrap();
    assert_eq!(cache.get::<Vec<u64>>(&key("ty")).await, None);
}

#[tokio::test]
async fn a_leading_caller_reports_and_its_waiters_receive_the_stored_value() {
    use hitbox_backend::LoadTicket;
    let (cache, _, _) = setup();
    let options = EntryOptions::new().tag("lead");
    let LoadTicket::Lead(lead) = cache.lead_or_join::<User, Boom>(&key("l"), &options) else {
        panic!("the first caller leads");
    };
    let LoadTicket::Join(join) = cache.lead_or_join::<User, Boom>(&key("l"), &options) else {
        panic!("the second caller joins");
    };
    let waiter = tokio::spawn(join.wait());
    assert_eq!(lead.finish(Ok(user(1, "led"))).await.unwrap(), user(1, "led"));
    assert_eq!(waiter.await.unwrap().unwrap(), user(1, "led"));
    assert_eq!(cache.get::<User>(&key("l")).await, Some(user(1, "led")));
    // The options (here a tag) apply to the stored entry.
    cache.invalidate_tag(&Tag::from("lead")).await.unwrap();
    assert_eq!(cache.get::<User>(&key("l")).await, None);
}

#[tokio::test]
async fn a_dropped_lead_releases_its_waiters_and_later_loaders_load_themselves() {
    use hitbox_backend::LoadTicket;
    let (cache, backend, _) = setup();
    let LoadTicket::Lead(lead) = cache.lead_or_join::<User, Infallible>(&key("a"), &EntryOptions::new())
    else {
        panic!("the first caller leads");
    };
    let LoadTicket::Join(join) = cache.lead_or_join::<User, Infallible>(&key("a"), &EntryOptions::new())
    else {
        panic!("the second caller joins");
    };
    let joiner = tokio::spawn(join.wait());
    let loader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_insert_with(&key("a"), || async { user(2, "own load") })
                .await
        })
    };
    until(|| cache.stats().joins == 2).await;
    drop(lead);
    assert!(matches!(joiner.await.unwrap(), Err(LoadError::Abandoned)));
    assert_eq!(loader.await.unwrap(), user(2, "own load"));
    assert_eq!(backend.writes(), 1);
    // A reported error is not stored and reaches the waiters.
    let LoadTicket::Lead(lead) = cache.lead_or_join::<User, Boom>(&key("b"), &EntryOptions::new()) else {
        panic!("leads");
    };
    assert!(matches!(
        lead.finish(Err(Boom("no"))).await,
        Err(LoadError::Failed(_))
    ));
    assert_eq!(backend.writes(), 1);
}

#[tokio::test]
async fn shared_reads_decode_once_and_follow_every_change() {
    let (cache, backend, clock) = setup();
    let k = key("shared");
    cache.set(&k, &user(1, "ada")).await.unwrap();
    let first = cache.get_entry::<User>(&k).await.unwrap();
    let second = cache.get_entry::<User>(&k).await.unwrap();
    assert_eq!(first.value(), &user(1, "ada"));
    // The second read shares the first one's decoding.
    assert!(std::ptr::eq(first.value(), second.value()));
    assert_eq!(second.freshness, hitbox_core::Freshness::Fresh);

    // Freshness is computed at each read, not remembered.
    clock.advance(Duration::from_secs(15));
    let stale = cache.get_entry::<User>(&k).await.unwrap();
    assert_eq!(stale.freshness, hitbox_core::Freshness::Stale);
    assert!(std::ptr::eq(first.value(), stale.value()));

    // A new value is a new buffer: read as itself.
    cache.set(&k, &user(1, "grace")).await.unwrap();
    let replaced = cache.get_entry::<User>(&k).await.unwrap();
    assert_eq!(replaced.value(), &user(1, "grace"));
    assert_eq!(replaced.clone().into_value(), user(1, "grace"));

    // Bytes written behind the engine's back, a removal, a tag
    // invalidation: each is seen at once.
    backend.put_raw(&k, &b"not an envelope"[..]);
    assert!(cache.get_entry::<User>(&k).await.is_none());
    assert_eq!(cache.stats().unreadable_entries, 1);
    let tagged = EntryOptions::new().tag(Tag::new("users"));
    cache.set_with(&k, &user(2, "linus"), &tagged).await.unwrap();
    assert_eq!(
        cache.get_entry::<User>(&k).await.unwrap().value(),
        &user(2, "linus")
    );
    cache.invalidate_tag(&Tag::new("users")).await.unwrap();
    assert!(cache.get_entry::<User>(&k).await.is_none());
    cache.set(&k, &user(3, "barbara")).await.unwrap();
    assert!(cache.get_entry::<User>(&k).await.is_some());
    cache.delete(&k).await.unwrap();
    assert!(cache.get_entry::<User>(&k).await.is_none());
}

#[tokio::test]
async fn engines_sharing_a_tier_never_share_decodings() {
    let backend = MemoryBackend::new();
    let json = Cache::builder(backend.clone()).format(Format::Json).build();
    let postcard = Cache::builder(backend.clone()).format(Format::Postcard).build();
    let k = key("formats");
    json.set(&k, &user(1, "ada")).await.unwrap();
    assert!(json.get_entry::<User>(&k).await.is_some());
    // The JSON engine's decoding is not the postcard engine's to use: for
    // it the entry is in a foreign format, a miss.
    assert!(postcard.get_entry::<User>(&k).await.is_none());
    // Nor is a decoding shared between value types.
    assert!(json.get_entry::<Vec<u8>>(&k).await.is_none());
    assert_eq!(json.get_entry::<User>(&k).await.unwrap().value(), &user(1, "ada"));
}
