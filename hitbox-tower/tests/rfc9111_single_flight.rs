//! Standards mode keeps the layer's single-flight: concurrent plain
//! requests for one variant share one origin call, whether it is a miss or
//! the revalidation of a stale entry (RFC 9111 section 4 lets a cache
//! collapse requests it would forward).

mod support;

use support::{Proxy, setup, until};

async fn concurrently(p: &Proxy, n: usize, headers: &'static [(&'static str, &'static str)]) -> Vec<String> {
    let url = format!("http://{}/r", p.addr);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut request = client.get(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.unwrap();
            let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
            (status, response.text().await.unwrap())
        }));
    }
    let joins_before = p.cache.stats().joins;
    until(|| p.cache.stats().joins == joins_before + n as u64 - 1).await;
    p.origin.release();
    let mut statuses = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(body, "x");
        statuses.push(status);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_reach_the_origin_once() {
    let p = setup().await;
    p.origin.reply("/r", 200, &[("cache-control", "max-age=60")], "x");
    p.origin.hold();
    let statuses = concurrently(&p, 20, &[]).await;
    assert_eq!(p.origin.calls(), 1);
    assert_eq!(statuses.iter().filter(|s| s.ends_with("collapsed")).count(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revalidations_reach_the_origin_once() {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        "x",
    );
    p.get("/r", &[]).await;
    p.stores(1).await;
    p.advance(20);
    p.origin.reply(
        "/r",
        304,
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        "",
    );
    p.origin.hold();
    let statuses = concurrently(&p, 10, &[]).await;
    assert_eq!(p.origin.calls(), 2);
    assert_eq!(
        statuses.iter().filter(|s| s.contains("fwd-status=304")).count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_other_variants_do_not_share_a_response() {
    let p = setup().await;
    p.origin.reply(
        "/r",
        200,
        &[("cache-control", "max-age=60"), ("vary", "accept")],
        "{accept}",
    );
    p.get("/r", &[("accept", "a")]).await;
    p.stores(1).await;
    p.advance(61);
    // Stale now: "a" and "b" revalidate under keys of their own.
    assert_eq!(p.get("/r", &[("accept", "b")]).await.body, "b");
    assert_eq!(p.get("/r", &[("accept", "a")]).await.body, "a");
    assert_eq!(p.origin.calls(), 3);
}
