//! The tier against a three-master cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{Config, KeysInterface, ServerConfig};
use hitbox_backend::Backend;
use hitbox_core::{EntryOptions, Tag};
use hitbox_redis::FENCE_MAGIC;

use crate::common::unique_prefix;
use crate::common::{CLUSTER, Profile, backend, cache, env, init_tracing, key, plain_client, profile};

/// The `redis://host:port` of every seed node in the cluster URL.
fn node_urls(url: &str) -> Vec<String> {
    let config = Config::from_url(url).expect("a valid cluster URL");
    match config.server {
        ServerConfig::Clustered { hosts, .. } => hosts
            .iter()
            .map(|server| format!("redis://{}:{}", server.host, server.port))
            .collect(),
        other => panic!("{CLUSTER} is not a cluster URL: {other:?}"),
    }
}

/// For each node, how many of `redis_keys` it holds, asked of each node
/// directly (a node answers MOVED, an error, for a key it does not own).
async fn keys_per_node(url: &str, redis_keys: &[String]) -> BTreeMap<String, usize> {
    let mut held = BTreeMap::new();
    for node in node_urls(url) {
        let client = plain_client(&node).await;
        let mut count = 0;
        for redis_key in redis_keys {
            if let Ok(1) = client.exists::<i64, _>(redis_key.as_str()).await {
                count += 1;
            }
        }
        held.insert(node, count);
    }
    held
}

#[tokio::test]
async fn round_trip_through_the_cache_on_a_cluster() {
    init_tracing();
    let url = env(CLUSTER);
    let redis = backend(&url, &unique_prefix("cluster-round-trip")).await;
    assert!(redis.is_clustered());
    let cache = cache(redis.clone());

    let value = cache
        .try_get_or_insert_with(&key(1), || async { Ok::<_, std::io::Error>(profile(1)) })
        .await
        .expect("the load");
    assert_eq!(value, profile(1));
    let again = cache
        .try_get_or_insert_with(&key(1), || async {
            Err::<Profile, _>(std::io::Error::other("the loader must not run on a hit"))
        })
        .await
        .expect("a hit");
    assert_eq!(again, profile(1));
    assert!(cache.delete(&key(1)).await.expect("DEL"));
    assert_eq!(cache.get::<Profile>(&key(1)).await, None);
    assert_eq!(redis.tier_stats()[0].errors, 0);
}

#[tokio::test]
async fn keys_spread_over_all_three_masters_work() {
    init_tracing();
    let url = env(CLUSTER);
    let redis = backend(&url, &unique_prefix("cluster-spread")).await;
    let cache = cache(redis.clone());
    let ids: Vec<u64> = (0..60).collect();

    for &id in &ids {
        cache.set(&key(id), &profile(id)).await.expect("write");
    }
    for &id in &ids {
        assert_eq!(
            cache.get::<Profile>(&key(id)).await,
            Some(profile(id)),
            "key {id}"
        );
    }

    let redis_keys: Vec<String> = ids.iter().map(|&id| redis.redis_key(&key(id))).collect();
    let held = keys_per_node(&url, &redis_keys).await;
    assert_eq!(held.len(), 3, "three masters: {held:?}");
    assert!(
        held.values().all(|&n| n > 0),
        "every master holds some of the keys: {held:?}"
    );
    assert_eq!(
        held.values().sum::<usize>(),
        ids.len(),
        "each key on exactly one master: {held:?}"
    );
}

#[tokio::test]
async fn tag_invalidation_works_across_slots() {
    init_tracing();
    let url = env(CLUSTER);
    let prefix = unique_prefix("cluster-tags");
    let first = backend(&url, &prefix).await;
    let second = backend(&url, &prefix).await;
    let writer = cache(first.clone());
    let tagged = EntryOptions::new().tag("catalog").ttl(Duration::from_secs(30));
    let ids: Vec<u64> = (100..130).collect();

    for &id in &ids {
        writer
            .set_with(&key(id), &profile(id), &tagged)
            .await
            .expect("tagged write");
    }
    writer
        .set(&key(999), &profile(999))
        .await
        .expect("untagged write");

    // The tagged keys really are spread over the masters (so over slots).
    let redis_keys: Vec<String> = ids.iter().map(|&id| first.redis_key(&key(id))).collect();
    let held = keys_per_node(&url, &redis_keys).await;
    assert!(
        held.values().filter(|&&n| n > 0).count() >= 2,
        "the tagged keys span several masters: {held:?}"
    );

    // A second instance, with its own connections, invalidates.
    let removed = second
        .invalidate_tag(&Tag::from("catalog"))
        .await
        .expect("the invalidation succeeds");
    assert_eq!(removed, ids.len() as u64);
    for &id in &ids {
        assert_eq!(writer.get::<Profile>(&key(id)).await, None, "key {id} survived");
    }
    assert_eq!(writer.get::<Profile>(&key(999)).await, Some(profile(999)));
    // What is left under the keys is the invalidation's fence, no entry.
    let plain = plain_client(&url).await;
    for (&id, redis_key) in ids.iter().zip(&redis_keys) {
        assert!(!first.exists(&key(id)).await.expect("EXISTS"), "key {id}");
        let left: Option<Bytes> = plain.get(redis_key.as_str()).await.expect("GET");
        assert!(
            left.is_none_or(|bytes| bytes.starts_with(FENCE_MAGIC)),
            "key {id} holds something else than a fence"
        );
    }
    assert_eq!(first.tier_stats()[0].errors, 0);
    assert_eq!(second.tier_stats()[0].errors, 0);
}
