//! The GraphQL preset over TCP: an axum origin that counts its calls and
//! answers with what it received, the layer with `Rule::graphql` in front,
//! reqwest clients.
//!
//! A mutation must never be answered from the cache, two clients whose
//! requests differ in anything but member order and spacing must never
//! share an answer, and persisted-query hashes are cached only for
//! documents known to be queries.

mod support;

use bytes::Bytes;
use hitbox_tower::Rule;
use hitbox_tower::graphql::GraphQl;
use hitbox_tower::predicate::Path;
use http::Method;
use serde_json::json;
use sha2::{Digest, Sha256};
use support::body_origin::{Answer, BodyOrigin, Site, site};

/// Answers `{"data": {"call": n, "got": <what it received>}}`.
fn graphql_origin() -> BodyOrigin {
    BodyOrigin::new(|received, n| {
        let got = if received.method == Method::GET {
            received.path.clone()
        } else {
            received.text()
        };
        Answer::json(json!({"data": {"call": n, "got": got}}).to_string())
    })
}

async fn graphql_site(graphql: GraphQl) -> Site {
    site(graphql_origin(), |layer| {
        layer
            .rule(Rule::new().when(Path::exact("/graphql")).graphql(graphql))
            .rule(Rule::new())
    })
    .await
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_is_never_served_from_the_cache() {
    let site = graphql_site(GraphQl::new()).await;
    let like = r#"{"query":"mutation Like($id: ID!) { like(id: $id) { count } }","variables":{"id":"p1"}}"#;
    for n in 1..=3 {
        let got = site.post_json("/graphql", like).await;
        assert_eq!(got.cache_status(), "hitbox; fwd=bypass; detail=not-a-query");
        assert!(got.body.contains(&format!("\"call\":{n}")), "{}", got.body);
        assert_eq!(site.origin.last().text(), like);
    }
    // Selected by name beside a query, hidden behind a comment and a
    // string that mention queries: still a mutation.
    let mixed = json!({
        "query": "# query Feed { posts }\nquery Feed { posts(q: \"mutation\") { id } }\nmutation Like { like }",
        "operationName": "Like",
    })
    .to_string();
    let anonymous = json!({"query": "mutation { like }"}).to_string();
    let subscription = json!({"query": "subscription { liked }"}).to_string();
    for body in [&mixed, &anonymous, &subscription, &mixed] {
        let got = site.post_json("/graphql", body).await;
        assert_eq!(
            got.cache_status(),
            "hitbox; fwd=bypass; detail=not-a-query",
            "{body}"
        );
    }
    // Over GET too.
    let get = format!("/graphql?query={}", encoded("mutation { like }"));
    for _ in 0..2 {
        assert_eq!(
            site.get(&get).await.cache_status(),
            "hitbox; fwd=bypass; detail=not-a-query"
        );
    }
    assert_eq!(site.origin.calls(), 9);
    assert_eq!(site.cache.stats().stores, 0);
    // The query of the same document is cached, and the mutation's answer
    // never stands in for it.
    let feed = json!({
        "query": "# query Feed { posts }\nquery Feed { posts(q: \"mutation\") { id } }\nmutation Like { like }",
        "operationName": "Feed",
    })
    .to_string();
    let first = site.post_json("/graphql", &feed).await;
    assert_eq!(first.cache_status(), "hitbox; fwd=miss");
    site.stores(1).await;
    let again = site.post_json("/graphql", &feed).await;
    assert!(again.cache_status().starts_with("hitbox; hit"));
    assert_eq!(again.body, first.body);
    let after = site.post_json("/graphql", &mixed).await;
    assert_eq!(after.cache_status(), "hitbox; fwd=bypass; detail=not-a-query");
    assert_ne!(after.body, first.body);
    // A mutation is a read of this rule's route: it invalidates nothing.
    assert!(
        site.post_json("/graphql", &feed)
            .await
            .cache_status()
            .starts_with("hitbox; hit")
    );
    assert_eq!(site.origin.calls(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_that_differ_only_in_member_order_share_an_entry() {
    let site = graphql_site(GraphQl::new()).await;
    let a = r#"{"query":"query User($id: ID!, $full: Boolean) { user(id: $id) { name } }","variables":{"id":"7","full":true},"operationName":"User"}"#;
    let b = "{\n  \"operationName\": \"User\",\n  \"variables\": { \"full\": true, \"id\": \"7\" },\n  \"query\": \"query User($id: ID!, $full: Boolean) { user(id: $id) { name } }\"\n}";
    let first = site.post_json("/graphql", a).await;
    assert_eq!(first.cache_status(), "hitbox; fwd=miss");
    site.stores(1).await;
    let second = site.post_json("/graphql", b).await;
    assert!(
        second.cache_status().starts_with("hitbox; hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(second.body, first.body);
    assert_eq!(site.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_variables_operation_names_or_documents_never_share() {
    let site = graphql_site(GraphQl::new()).await;
    let document = "query A { a } query B { b }";
    let bodies = [
        json!({"query": "query U($id: ID!) { user(id: $id) { name } }", "variables": {"id": "1"}}),
        json!({"query": "query U($id: ID!) { user(id: $id) { name } }", "variables": {"id": "2"}}),
        json!({"query": "query U($id: ID!) { user(id: $id) { name } }", "variables": {"id": 2}}),
        json!({"query": "query U($id: ID!) { user(id: $id) { name } }", "variables": {"id": "2", "x": null}}),
        json!({"query": "query U($id: ID!) { user(id: $id) { email } }", "variables": {"id": "2"}}),
        json!({"query": document, "operationName": "A"}),
        json!({"query": document, "operationName": "B"}),
    ];
    for (n, body) in bodies.iter().enumerate() {
        let text = body.to_string();
        let got = site.post_json("/graphql", &text).await;
        assert_eq!(got.cache_status(), "hitbox; fwd=miss", "{text}");
        let answer: serde_json::Value = serde_json::from_str(&got.body).unwrap();
        assert_eq!(answer["data"]["call"], n + 1);
        assert_eq!(
            answer["data"]["got"], text,
            "each client gets the answer to its own request"
        );
        site.stores(n as u64 + 1).await;
    }
    // Each is now cached under its own key.
    for (n, body) in bodies.iter().enumerate() {
        let got = site.post_json("/graphql", &body.to_string()).await;
        assert!(got.cache_status().starts_with("hitbox; hit"));
        let answer: serde_json::Value = serde_json::from_str(&got.body).unwrap();
        assert_eq!(answer["data"]["call"], n + 1);
    }
    assert_eq!(site.origin.calls(), bodies.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_query_hashes_are_keys_and_are_cached_once_known() {
    let site = graphql_site(GraphQl::new()).await;
    let feed = "query Feed { posts { id title } }";
    let like = "mutation Like { like }";
    let hash_only = |hash: &str| {
        json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}}).to_string()
    };
    let with_document = |document: &str, hash: &str| {
        json!({"query": document, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}})
            .to_string()
    };
    // Not known yet: passes through (the server would answer
    // PersistedQueryNotFound).
    let unknown = site.post_json("/graphql", &hash_only(&sha256(feed))).await;
    assert_eq!(unknown.cache_status(), "hitbox; fwd=bypass; detail=not-a-query");
    // A document under a hash that is not its own: not cached, teaches nothing.
    let lying = site
        .post_json("/graphql", &with_document(feed, &sha256(like)))
        .await;
    assert_eq!(lying.cache_status(), "hitbox; fwd=bypass; detail=not-a-query");
    // The document with its hash: cached, and the hash is learned.
    let registered = site
        .post_json("/graphql", &with_document(feed, &sha256(feed)))
        .await;
    assert_eq!(registered.cache_status(), "hitbox; fwd=miss");
    site.stores(1).await;
    // The hash alone is another key (its body differs), cached from now on.
    let by_hash = site.post_json("/graphql", &hash_only(&sha256(feed))).await;
    assert_eq!(by_hash.cache_status(), "hitbox; fwd=miss");
    site.stores(2).await;
    let again = site.post_json("/graphql", &hash_only(&sha256(feed))).await;
    assert!(again.cache_status().starts_with("hitbox; hit"));
    assert_eq!(again.body, by_hash.body);
    // A mutation's hash, even once its document is known, is never cached.
    let mutation = site
        .post_json("/graphql", &with_document(like, &sha256(like)))
        .await;
    assert_eq!(mutation.cache_status(), "hitbox; fwd=bypass; detail=not-a-query");
    for _ in 0..2 {
        let got = site.post_json("/graphql", &hash_only(&sha256(like))).await;
        assert_eq!(got.cache_status(), "hitbox; fwd=bypass; detail=not-a-query");
    }
    // Over GET, as Apollo sends hashed queries.
    let extensions = json!({"persistedQuery": {"version": 1, "sha256Hash": sha256(feed)}}).to_string();
    let get = format!("/graphql?extensions={}", encoded(&extensions));
    assert_eq!(site.get(&get).await.cache_status(), "hitbox; fwd=miss");
    site.stores(3).await;
    assert!(site.get(&get).await.cache_status().starts_with("hitbox; hit"));
    assert_eq!(site.origin.calls(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_given_up_front_are_cached_by_hash_from_the_first_request() {
    let feed = "query Feed { posts { id } }";
    let site = graphql_site(GraphQl::new().persisted_query(feed)).await;
    let body =
        json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256(feed)}}}).to_string();
    assert_eq!(
        site.post_json("/graphql", &body).await.cache_status(),
        "hitbox; fwd=miss"
    );
    site.stores(1).await;
    assert!(
        site.post_json("/graphql", &body)
            .await
            .cache_status()
            .starts_with("hitbox; hit")
    );
    assert_eq!(site.origin.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_queries_are_cached_and_bodies_that_are_not_json_pass() {
    let site = graphql_site(GraphQl::new()).await;
    let query = format!(
        "/graphql?query={}&variables={}",
        encoded("query U($id: ID!) { user(id: $id) { name } }"),
        encoded(r#"{"id":"1"}"#)
    );
    assert_eq!(site.get(&query).await.cache_status(), "hitbox; fwd=miss");
    site.stores(1).await;
    let hit = site.get(&query).await;
    assert!(hit.cache_status().starts_with("hitbox; hit"));
    assert!(hit.body.contains("\"call\":1"));
    let other = format!(
        "/graphql?query={}&variables={}",
        encoded("query U($id: ID!) { user(id: $id) { name } }"),
        encoded(r#"{"id":"2"}"#)
    );
    assert_eq!(site.get(&other).await.cache_status(), "hitbox; fwd=miss");
    // A parameter given twice could be read either way: not cached.
    let twice = format!("{query}&query={}", encoded("mutation { like }"));
    assert_eq!(
        site.get(&twice).await.cache_status(),
        "hitbox; fwd=bypass; detail=not-a-query"
    );
    // Bodies that are not GraphQL over JSON go through, never an error.
    for (content_type, body) in [
        ("application/json", "{\"query\":"),
        ("application/graphql", "{ user { name } }"),
        (
            "application/json",
            r#"[{"query":"{ a }"},{"query":"mutation { b }"}]"#,
        ),
    ] {
        let headers = [("content-type", content_type)];
        let got = site
            .send(Method::POST, "/graphql", &headers, body.to_owned())
            .await;
        assert_eq!(got.status, 200);
        assert!(
            got.cache_status().starts_with("hitbox; fwd=bypass; detail="),
            "{body}"
        );
        assert_eq!(site.origin.last().text(), body);
    }
    // A GET with a body is never cached by the preset.
    let with_body = site
        .send(Method::GET, &query, &[], Bytes::from_static(b"x"))
        .await;
    assert_eq!(
        with_body.cache_status(),
        "hitbox; fwd=bypass; detail=request-body"
    );
    assert_eq!(site.origin.calls(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_errors_are_passed_on_but_not_stored() {
    let origin = BodyOrigin::new(|_, n| {
        if n == 1 {
            Answer::json(r#"{"data":{"user":null},"errors":[{"message":"timeout"}]}"#)
        } else {
            Answer::json(format!(r#"{{"data":{{"user":{{"call":{n}}}}}}}"#))
        }
    });
    let site = site(origin, |layer| {
        layer.rule(Rule::new().when(Path::exact("/graphql")).graphql(GraphQl::new()))
    })
    .await;
    let query = r#"{"query":"{ user { name } }"}"#;
    let first = site.post_json("/graphql", query).await;
    assert_eq!(first.cache_status(), "hitbox; fwd=miss");
    assert!(first.body.contains("timeout"), "the client gets the errors");
    support::until(|| site.cache.stats().load_errors >= 1).await;
    assert_eq!(site.cache.stats().stores, 0);
    // Past hit-for-pass, the good answer is stored.
    site.clock.advance(std::time::Duration::from_secs(11));
    let second = site.post_json("/graphql", query).await;
    assert_eq!(second.cache_status(), "hitbox; fwd=miss");
    site.stores(1).await;
    let third = site.post_json("/graphql", query).await;
    assert!(third.cache_status().starts_with("hitbox; hit"));
    assert_eq!(third.body, second.body);
    assert_eq!(site.origin.calls(), 2);
}
