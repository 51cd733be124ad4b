//! The spans of requests through the layer, as a subscriber sees them:
//! each request is one `hitbox.request` span with its rule, key digest,
//! outcome and OpenTelemetry's HTTP fields, and the engine's spans nest
//! under it; a stale-while-revalidate refresh is a root span of its own
//! that follows from the request that served the stale entry.
//!
//! Everything runs on one current-thread runtime (server, client and the
//! background refresh), so a subscriber set as the thread's default sees
//! all of it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hitbox_backend::Cache;
use hitbox_core::{CachePolicy, ManualClock};
use hitbox_moka::MokaBackend;
use hitbox_tower::{CacheLayer, Rule};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One span as the capturing layer saw it.
#[derive(Debug, Clone)]
struct Seen {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    follows: Vec<u64>,
    fields: HashMap<String, String>,
    closed: bool,
}

/// A layer that keeps every span: its name, parent, fields (as recorded
/// later too) and what it follows from.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.id().into_u64());
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Seen {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            parent,
            follows: Vec::new(),
            fields,
            closed: false,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        // Ids are reused once a span closes: the open one is meant.
        if let Some(seen) = spans
            .iter_mut()
            .rev()
            .find(|s| s.id == id.into_u64() && !s.closed)
        {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(seen) = spans
            .iter_mut()
            .rev()
            .find(|s| s.id == id.into_u64() && !s.closed)
        {
            seen.follows.push(follows.into_u64());
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(seen) = spans
            .iter_mut()
            .rev()
            .find(|s| s.id == id.into_u64() && !s.closed)
        {
            seen.closed = true;
        }
    }
}

impl Capture {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The spans a request made: its `hitbox.request` span and the names of
/// its descendants, parents before children.
fn tree(spans: &[Seen], root: &Seen) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut stack = vec![root.id];
    // Spans are kept in creation order, so a parent precedes its children.
    for span in spans {
        if span.parent.is_some_and(|parent| stack.contains(&parent)) {
            out.push(span.name);
            stack.push(span.id);
        }
    }
    out
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "current_thread")]
async fn a_miss_a_hit_and_a_stale_refresh_make_the_documented_span_trees() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    let clock = ManualClock::new();
    let cache = Cache::builder(MokaBackend::default())
        .clock(clock.clone())
        .build();
    let policy = CachePolicy::new(Duration::from_secs(10)).stale_while_revalidate(Duration::from_secs(60));
    let layer = CacheLayer::builder(cache.clone())
        .rule(Rule::new().namespace("api").name("items").policy(policy))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let app = Router::new().route(
        "/items/{id}",
        get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move { format!("item, call {n}") }
        })
        .layer(layer),
    );
    let addr = serve(app).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let response = client.get(format!("http://{addr}{path}")).send().await.unwrap();
            let status = response.headers()["cache-status"].to_str().unwrap().to_owned();
            (status, response.text().await.unwrap())
        }
    };

    // A miss: looked up, loaded and stored under the request's span.
    let (status, body) = get("/items/7").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("hitbox; fwd=miss; stored", "item, call 1")
    );
    wait_for(|| cache.stats().stores == 1).await;
    let spans = capture.take();
    let requests: Vec<&Seen> = spans.iter().filter(|s| s.name == "hitbox.request").collect();
    assert_eq!(requests.len(), 1, "{spans:#?}");
    let miss = requests[0];
    assert_eq!(miss.parent, None);
    assert_eq!(miss.fields["http.request.method"], "GET");
    assert_eq!(miss.fields["url.path"], "/items/7");
    assert_eq!(miss.fields["hitbox.rule"], "items");
    assert_eq!(miss.fields["hitbox.outcome"], "miss");
    assert_eq!(miss.fields["http.response.status_code"], "200");
    let key = miss.fields["hitbox.key"].clone();
    assert_eq!(key.len(), 16, "the key's digest, never the key: {key}");
    assert!(!miss.fields.contains_key("otel.status_code"));
    let children = tree(&spans, miss);
    assert_eq!(children.first(), Some(&"hitbox.lookup"), "{children:?}");
    assert!(children.contains(&"hitbox.load"), "{children:?}");
    assert!(children.contains(&"hitbox.store"), "{children:?}");
    // The engine's spans carry the same digest.
    let lookup = spans.iter().find(|s| s.name == "hitbox.lookup").unwrap();
    assert_eq!(lookup.fields["hitbox.key"], key);
    assert_eq!(lookup.parent, Some(miss.id));
    assert!(spans.iter().all(|s| s.closed), "every span ended: {spans:#?}");

    // A hit: one lookup, nothing loaded or stored.
    let (status, _) = get("/items/7").await;
    assert!(status.starts_with("hitbox; hit"), "{status}");
    let spans = capture.take();
    let hit = spans.iter().find(|s| s.name == "hitbox.request").unwrap();
    assert_eq!(hit.fields["hitbox.outcome"], "hit");
    assert_eq!(hit.fields["hitbox.key"], key);
    let children = tree(&spans, hit);
    assert!(children.contains(&"hitbox.lookup"), "{children:?}");
    assert!(
        !children.contains(&"hitbox.load") && !children.contains(&"hitbox.store"),
        "{children:?}"
    );
    assert_eq!(
        spans.iter().filter(|s| s.parent.is_none()).count(),
        1,
        "{spans:#?}"
    );

    // Stale inside its stale-while-revalidate window: served at once, and
    // refreshed in the background under a root span of its own.
    clock.advance(Duration::from_secs(15));
    let (status, body) = get("/items/7").await;
    assert!(status.starts_with("hitbox; hit; ttl=-"), "{status}");
    assert_eq!(body, "item, call 1");
    wait_for(|| cache.stats().stores == 2).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let spans = capture.take();
    let stale = spans.iter().find(|s| s.name == "hitbox.request").unwrap();
    assert_eq!(stale.fields["hitbox.outcome"], "stale");
    let children = tree(&spans, stale);
    assert!(!children.contains(&"hitbox.revalidate"), "{children:?}");
    let revalidate = spans
        .iter()
        .find(|s| s.name == "hitbox.revalidate")
        .expect("a revalidate span");
    assert_eq!(
        revalidate.parent, None,
        "the refresh outlives the request: a root"
    );
    assert_eq!(revalidate.follows, vec![stale.id], "it follows from the request");
    assert_eq!(revalidate.fields["hitbox.key"], key);
    let refresh = tree(&spans, revalidate);
    assert!(refresh.contains(&"hitbox.store"), "{refresh:?}");
    // The refresh's origin call went around the layer: no request span of
    // its own.
    assert_eq!(spans.iter().filter(|s| s.name == "hitbox.request").count(), 1);
    wait_for(|| spans_closed(&capture)).await;
}

/// Whether every span captured since the last `take` has ended.
fn spans_closed(capture: &Capture) -> bool {
    capture.0.lock().unwrap().iter().all(|s| s.closed)
}

#[tokio::test(flavor = "current_thread")]
async fn with_spans_off_no_request_span_is_made_and_nothing_changes() {
    // A subscriber that wants INFO only: the layer's and the engine's
    // spans (DEBUG) are never made.
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(capture.clone())
        .with(tracing_subscriber::filter::LevelFilter::INFO);
    let _default = tracing::subscriber::set_default(subscriber);
    let cache = Cache::new(MokaBackend::default());
    let layer = CacheLayer::new(cache.clone());
    let app = Router::new().route("/a", get(|| async { "a" }).layer(layer));
    let addr = serve(app).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..2 {
        let response = client.get(format!("http://{addr}/a")).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "a");
        wait_for(|| cache.stats().stores == 1).await;
    }
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.hits), (1, 1));
    let spans = capture.take();
    assert!(spans.iter().all(|s| !s.name.starts_with("hitbox.")), "{spans:#?}");
}

/// Waits until `done` holds, yielding to the runtime in between (the
/// stores and refreshes run in tasks of their own on this thread).
async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("not reached in 10 s");
}
