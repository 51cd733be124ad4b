//! The tier behind a sentinel.

use hitbox_core::{EntryOptions, Tag};

use crate::common::{Profile, SENTINEL, backend, cache, env, init_tracing, key, profile, unique_prefix};

#[tokio::test]
async fn round_trip_and_tags_through_a_sentinel() {
    init_tracing();
    let url = env(SENTINEL);
    let prefix = unique_prefix("sentinel");
    let cache = cache(backend(&url, &prefix).await);
    let tagged = EntryOptions::new().tag("s");

    cache
        .set_with(&key(1), &profile(1), &tagged)
        .await
        .expect("write");
    assert_eq!(cache.get::<Profile>(&key(1)).await, Some(profile(1)));
    assert_eq!(
        cache.invalidate_tag(&Tag::from("s")).await.expect("invalidate"),
        1
    );
    assert_eq!(cache.get::<Profile>(&key(1)).await, None);
}
