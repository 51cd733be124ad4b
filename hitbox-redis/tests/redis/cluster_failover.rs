//! A Redis Cluster primary killed under load, with a replica ready to take
//! over: no call fails, every value is the right one, and the slowest calls
//! are bounded by the origin plus the tier's timeouts. Once the replica is
//! promoted, the tier serves the failed-over slots again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hitbox_backend::{Backend, Cache};
use hitbox_core::CachePolicy;

use crate::cluster_reshard::OwnCluster;
use crate::common::{Profile, builder, init_tracing, key, poll_until, profile, unique_prefix};

const READ_TIMEOUT: Duration = Duration::from_millis(100);
const WRITE_TIMEOUT: Duration = Duration::from_millis(150);
/// What the "origin" (the loader) takes.
const ORIGIN: Duration = Duration::from_millis(2);
const KEYS: u64 = 300;

/// The ports of the nodes that are masters and not failed, by `node`'s view.
async fn masters(cluster: &OwnCluster, node: u16) -> Vec<u16> {
    let out = cluster
        .cli(&["-h", "127.0.0.1", "-p", &node.to_string(), "cluster", "nodes"])
        .await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| {
            let flags = line.split_whitespace().nth(2).unwrap_or_default();
            flags.contains("master") && !flags.contains("fail")
        })
        .filter_map(|line| {
            let address = line.split_whitespace().nth(1)?.split('@').next()?;
            address.rsplit(':').next()?.parse().ok()
        })
        .collect()
}

async fn call(cache: &Cache, id: u64) -> Profile {
    cache
        .try_get_or_insert_with(&key(id), move || async move {
            tokio::time::sleep(ORIGIN).await;
            Ok::<_, std::io::Error>(profile(id))
        })
        .await
        .expect("a call never fails because a Redis node does")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_fails_no_call() {
    init_tracing();
    let mut cluster = OwnCluster::start_with(1, 1_000).await;
    let settled = poll_until(Duration::from_secs(30), || async {
        let out = cluster
            .cli(&["--cluster", "check", &format!("127.0.0.1:{}", cluster.ports[0])])
            .await;
        let text = String::from_utf8_lossy(&out.stdout);
        out.status.success()
            && text.contains("All 16384 slots covered")
            && text.matches("1 additional replica(s)").count() == 3
    })
    .await;
    assert!(settled.is_some(), "the cluster with replicas did not settle");

    let redis = builder(&cluster.url(), &unique_prefix("failover"))
        .read_timeout(READ_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
        .build()
        .expect("the backend builds");
    redis
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    let cache = Cache::builder(redis.clone())
        .policy(CachePolicy::new(Duration::from_secs(600)))
        .build();
    for id in 0..KEYS {
        assert_eq!(call(&cache, id).await, profile(id));
    }

    // Load: four callers going round the keys until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|worker| {
            let (cache, stop, calls) = (cache.clone(), Arc::clone(&stop), Arc::clone(&calls));
            tokio::spawn(async move {
                let mut took = Vec::new();
                let mut id = worker * 71;
                while !stop.load(Ordering::Relaxed) {
                    id = (id + 7) % KEYS;
                    let start = Instant::now();
                    let value = call(&cache, id).await;
                    took.push(start.elapsed());
                    assert_eq!(value, profile(id), "a wrong body for key {id}");
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                took
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Kill one primary (SIGKILL: it dies at once, mid-traffic).
    let before = masters(&cluster, cluster.ports[0]).await;
    assert_eq!(before.len(), 3, "three masters: {before:?}");
    let victim = before[1];
    let index = cluster
        .ports
        .iter()
        .position(|port| *port == victim)
        .expect("a node of ours");
    let _ = cluster.servers[index].kill();
    let _ = cluster.servers[index].wait();
    let killed = Instant::now();

    // Its replica is promoted: three live masters again, none of them the
    // victim.
    let witness = *cluster
        .ports
        .iter()
        .find(|port| **port != victim)
        .expect("another node");
    let promoted = poll_until(Duration::from_secs(30), || async {
        let now = masters(&cluster, witness).await;
        now.len() == 3 && !now.contains(&victim)
    })
    .await;
    assert!(promoted.is_some(), "no replica took over within 30 s");
    let failed_over = killed.elapsed();

    // Two more seconds of load on the new layout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut took = Vec::new();
    for worker in workers {
        took.extend(worker.await.expect("no call failed or served a wrong body"));
    }
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    let max = *took.last().unwrap();
    let bound = ORIGIN + READ_TIMEOUT + WRITE_TIMEOUT + Duration::from_millis(250);
    println!(
        "{} calls, failover after {failed_over:?}, p99 {p99:?}, max {max:?}",
        calls.load(Ordering::Relaxed)
    );
    assert!(p99 <= bound, "p99 {p99:?} over {bound:?}");

    // The tier serves every slot again: each key written now reads back
    // from Redis.
    let back = poll_until(Duration::from_secs(15), || async {
        let mut all = true;
        for id in 0..KEYS {
            let entry = cache.set(&key(id), &profile(id)).await;
            let read = redis.read(&key(id)).await;
            all &= entry.is_ok() && matches!(read, Ok(Some(_)));
        }
        all
    })
    .await;
    assert!(
        back.is_some(),
        "the failed-over slots were not served again within 15 s"
    );
}
