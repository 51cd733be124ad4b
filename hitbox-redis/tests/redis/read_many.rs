//! `Backend::read_many`: one `MGET` on a standalone server, one `GET` per
//! key (sent together) in a cluster, whose keys span slots.

use std::time::Duration;

use bytes::Bytes;
use hitbox_backend::Backend;

use crate::common::{backend, env, key, unique_prefix};

async fn reads_many_in_order(url: &str, test: &str) {
    let tier = backend(url, &unique_prefix(test)).await;
    // Enough ids that, in a cluster, they hash to slots on every node.
    let ids: Vec<u64> = (1..=40).collect();
    for id in ids.iter().filter(|id| *id % 3 != 0) {
        tier.write(
            &key(*id),
            Bytes::from(format!("v{id}")),
            Duration::from_secs(60),
            &[],
        )
        .await
        .unwrap();
    }
    let keys: Vec<_> = ids.iter().map(|id| key(*id)).collect();
    let before = tier.tier_stats()[0].timed_calls;
    let found = tier.read_many(&keys).await.unwrap();
    assert_eq!(tier.tier_stats()[0].timed_calls - before, 1, "one operation");
    for (id, value) in ids.iter().zip(found) {
        let expected = (id % 3 != 0).then(|| Bytes::from(format!("v{id}")));
        assert_eq!(value, expected, "id {id}");
    }
    assert!(tier.read_many(&[]).await.unwrap().is_empty());
    let one = tier.read_many(&keys[..1]).await.unwrap();
    assert_eq!(one, vec![Some(Bytes::from_static(b"v1"))]);
}

#[tokio::test]
async fn standalone_reads_many_with_one_mget() {
    reads_many_in_order(&env("HITBOX_TEST_REDIS_URL"), "read-many").await;
}

#[tokio::test]
async fn cluster_reads_many_across_slots() {
    reads_many_in_order(&env("HITBOX_TEST_REDIS_CLUSTER_URL"), "read-many-cluster").await;
}
