//! Every engine operation is traced with the key's digest, never the raw key
//! or the value; and the spans the engine and its tiers open form the tree
//! the crate documentation describes ("Observability"), checked with a
//! capturing subscriber for a miss, a hit, a stale refresh and purges.

use std::io::Write;
use std::sync::{Arc, Mutex};

use hitbox_backend::{Cache, MemoryBackend};
use hitbox_core::{CacheKey, Tag};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn operations_log_the_key_digest_only() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let backend = MemoryBackend::new();
    let cache = Cache::new(backend.clone());
    let key = CacheKey::builder("sessions")
        .part("sid", "raw-session-id")
        .build();
    let value = "very-secret-value".to_string();
    assert_eq!(cache.get::<String>(&key).await, None);
    cache.set(&key, &value).await.unwrap();
    assert_eq!(
        cache.get::<String>(&key).await.as_deref(),
        Some("very-secret-value")
    );
    cache.delete(&key).await.unwrap();
    let _ = cache
        .get_or_insert_with(&key, || async { "very-secret-value".to_string() })
        .await;
    cache.invalidate_tag(&Tag::from("t")).await.unwrap();
    backend.put_raw(&key, b"garbage".to_vec());
    assert_eq!(cache.get::<String>(&key).await, None);

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let digest = key.log_id().to_string();
    for operation in [
        "cache get",
        "cache store",
        "cache delete",
        "cache load",
        "cache invalidate tag",
        "unreadable entry",
    ] {
        assert!(output.contains(operation), "no `{operation}` event in:\n{output}");
    }
    assert!(output.matches(&digest).count() >= 6, "{output}");
    assert!(!output.contains("raw-session-id"), "{output}");
    assert!(!output.contains("very-secret-value"), "{output}");
}

/// The span tree: every span the engine and its tiers open, with its
/// parent, the spans it follows from, and its fields as recorded.
mod spans {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use hitbox_backend::{Cache, CompositionBackend, MemoryBackend, PurgeMode};
    use hitbox_core::{CacheKey, CachePolicy, EntryOptions, ManualClock, Tag};
    use tracing::Subscriber;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;

    /// One span as the layer saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        name: &'static str,
        parent: Option<usize>,
        follows_from: Vec<usize>,
        fields: BTreeMap<String, String>,
    }

    /// Spans in the order they were opened; a span is known by its place
    /// here (span ids are reused once spans close).
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<Seen>>>);

    /// The place of a span in [`Captured`], kept in its extensions.
    struct Place(usize);

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Captured {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let span = ctx.span(id).expect("a new span is registered");
            let parent = span
                .parent()
                .and_then(|parent| parent.extensions().get::<Place>().map(|place| place.0));
            let mut fields = BTreeMap::new();
            attrs.record(&mut Fields(&mut fields));
            let mut seen = self.0.lock().unwrap();
            seen.push(Seen {
                name: attrs.metadata().name(),
                parent,
                follows_from: Vec::new(),
                fields,
            });
            span.extensions_mut().insert(Place(seen.len() - 1));
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            let span = ctx.span(id).expect("a recorded span is registered");
            let place = span.extensions().get::<Place>().map(|place| place.0).unwrap();
            values.record(&mut Fields(&mut self.0.lock().unwrap()[place].fields));
        }

        fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
            let place = |id: &Id| {
                ctx.span(id)
                    .and_then(|span| span.extensions().get::<Place>().map(|place| place.0))
                    .unwrap()
            };
            let (span, cause) = (place(id), place(follows));
            self.0.lock().unwrap()[span].follows_from.push(cause);
        }
    }

    impl Captured {
        fn take(&self) -> Vec<Seen> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// `a > b > c`: the names from the root down to the span at `place`.
    fn path(spans: &[Seen], place: usize) -> String {
        let mut names = vec![spans[place].name];
        let mut at = spans[place].parent;
        while let Some(parent) = at {
            names.push(spans[parent].name);
            at = spans[parent].parent;
        }
        names.reverse();
        names.join(" > ")
    }

    /// Every span as `path {field=value, ...}` with the fields named, in
    /// the order they were opened.
    fn tree(spans: &[Seen], fields: &[&str]) -> Vec<String> {
        (0..spans.len())
            .map(|place| {
                let shown: Vec<String> = fields
                    .iter()
                    .filter_map(|field| {
                        spans[place]
                            .fields
                            .get(*field)
                            .map(|value| format!("{field}={value}"))
                    })
                    .collect();
                format!("{} {{{}}}", path(spans, place), shown.join(", "))
            })
            .collect()
    }

    const SHOWN: &[&str] = &["hitbox.tier", "hitbox.result"];

    /// A cache over two memory tiers, and a subscriber that captures spans.
    fn setup() -> (Cache, ManualClock, Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
        let clock = ManualClock::new();
        let tiers = CompositionBackend::builder(
            MemoryBackend::with_clock(clock.clone()).labelled("near"),
            MemoryBackend::with_clock(clock.clone()).labelled("far"),
        )
        .clock(clock.clone())
        .build();
        let cache = Cache::builder(tiers)
            .clock(clock.clone())
            .policy(CachePolicy::new(Duration::from_secs(10)).stale_while_revalidate(Duration::from_secs(10)))
            .build();
        (cache, clock, captured, guard)
    }

    fn key() -> CacheKey {
        CacheKey::builder("spans").part("user", "raw-user-id").build()
    }

    #[tokio::test]
    async fn a_miss_is_a_lookup_of_each_tier_then_a_load_and_its_store() {
        let (cache, _, captured, _guard) = setup();
        let request = tracing::info_span!("request");
        let loaded = async { cache.get_or_insert_with(&key(), || async { 7u32 }).await };
        assert_eq!(tracing::Instrument::instrument(loaded, request).await, 7);

        let spans = captured.take();
        assert_eq!(
            tree(&spans, SHOWN),
            [
                "request {}",
                "request > hitbox.lookup {hitbox.result=miss}",
                "request > hitbox.lookup > hitbox.tier.read {hitbox.tier=near, hitbox.result=miss}",
                "request > hitbox.lookup > hitbox.tier.read {hitbox.tier=far, hitbox.result=miss}",
                "request > hitbox.load {hitbox.result=ok}",
                "request > hitbox.load > hitbox.store {hitbox.result=ok}",
                "request > hitbox.load > hitbox.store > hitbox.tier.write {hitbox.tier=near, hitbox.result=ok}",
                "request > hitbox.load > hitbox.store > hitbox.tier.write {hitbox.tier=far, hitbox.result=ok}",
            ]
        );
        // Keys are digests, never the key itself.
        let digest = key().log_id().to_string();
        for span in &spans[1..] {
            assert_eq!(span.fields.get("hitbox.key"), Some(&digest), "{span:?}");
            assert!(!format!("{span:?}").contains("raw-user-id"));
        }
    }

    #[tokio::test]
    async fn a_hit_is_a_lookup_and_one_tier_read_only() {
        let (cache, _, captured, _guard) = setup();
        cache.set(&key(), &7u32).await.unwrap();
        captured.take();

        let request = tracing::info_span!("request");
        let hit = async { cache.get_entry::<u32>(&key()).await };
        let entry = tracing::Instrument::instrument(hit, request)
            .await
            .expect("stored");
        assert_eq!(*entry.value(), 7);
        assert_eq!(
            tree(&captured.take(), SHOWN),
            [
                "request {}",
                "request > hitbox.lookup {hitbox.result=hit}",
                "request > hitbox.lookup > hitbox.tier.read {hitbox.tier=near, hitbox.result=hit}",
            ]
        );
    }

    #[tokio::test]
    async fn a_stale_hit_refreshes_in_a_root_span_that_follows_from_the_request() {
        let (cache, clock, captured, _guard) = setup();
        cache.set(&key(), &1u32).await.unwrap();
        clock.advance(Duration::from_secs(15));
        captured.take();

        let loads = Arc::new(AtomicUsize::new(0));
        let request = tracing::info_span!("request");
        let served = async {
            let loads = Arc::clone(&loads);
            cache
                .get_or_insert_with(&key(), move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    2u32
                })
                .await
        };
        assert_eq!(
            tracing::Instrument::instrument(served, request).await,
            1,
            "served stale"
        );
        // The refresh runs in a task of its own: wait for its store.
        for _ in 0..10_000 {
            if cache.stats().stores == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!((loads.load(Ordering::SeqCst), cache.stats().stores), (1, 2));

        let spans = captured.take();
        assert_eq!(
            tree(&spans, SHOWN),
            [
                "request {}",
                "request > hitbox.lookup {hitbox.result=stale}",
                "request > hitbox.lookup > hitbox.tier.read {hitbox.tier=near, hitbox.result=hit}",
                "hitbox.revalidate {hitbox.result=ok}",
                "hitbox.revalidate > hitbox.load {hitbox.result=ok}",
                "hitbox.revalidate > hitbox.load > hitbox.store {hitbox.result=ok}",
                "hitbox.revalidate > hitbox.load > hitbox.store > hitbox.tier.write {hitbox.tier=near, hitbox.result=ok}",
                "hitbox.revalidate > hitbox.load > hitbox.store > hitbox.tier.write {hitbox.tier=far, hitbox.result=ok}",
            ]
        );
        // Not a child of the request, which it outlives: it follows from it.
        let revalidate = spans.iter().position(|s| s.name == "hitbox.revalidate").unwrap();
        assert_eq!(spans[revalidate].parent, None);
        assert_eq!(spans[revalidate].follows_from, [0]);
    }

    #[tokio::test]
    async fn a_failing_tier_span_carries_the_error_type() {
        let captured = Captured::default();
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
        let tier = MemoryBackend::new().labelled("broken");
        let cache = Cache::new(tier.clone());
        tier.set_failing(true);
        assert_eq!(cache.get::<u32>(&key()).await, None);
        let spans = captured.take();
        assert_eq!(
            tree(
                &spans,
                &["hitbox.tier", "hitbox.result", "error.type", "otel.status_code"]
            ),
            [
                "hitbox.lookup {hitbox.result=error, error.type=client, otel.status_code=ERROR}",
                "hitbox.lookup > hitbox.tier.read {hitbox.tier=broken, hitbox.result=error, error.type=client, otel.status_code=ERROR}",
            ]
        );
    }

    /// The fields a purge span carries.
    const PURGE: &[&str] = &[
        "hitbox.tier",
        "hitbox.purge.kind",
        "hitbox.purge.mode",
        "hitbox.purged",
        "hitbox.result",
    ];

    #[tokio::test]
    async fn a_purge_is_one_span_over_the_purge_of_each_tier() {
        let (cache, _, captured, _guard) = setup();
        let users = CacheKey::builder("spans").part("tenant", "raw-tenant");
        for id in ["1", "2"] {
            cache
                .set(&users.clone().part("id", id).build(), &1u32)
                .await
                .unwrap();
        }
        captured.take();

        let request = tracing::info_span!("request");
        let prefix = users.key_prefix();
        let purge = cache.purge_prefix(&prefix, PurgeMode::Hard);
        assert_eq!(tracing::Instrument::instrument(purge, request).await.unwrap(), 2);
        let spans = captured.take();
        assert_eq!(
            tree(&spans, PURGE),
            [
                "request {}",
                "request > hitbox.purge {hitbox.purge.kind=prefix, hitbox.purge.mode=hard, hitbox.purged=2, hitbox.result=ok}",
                "request > hitbox.purge > hitbox.tier.purge {hitbox.tier=near, hitbox.purge.kind=prefix, hitbox.purge.mode=hard, hitbox.purged=2, hitbox.result=ok}",
                "request > hitbox.purge > hitbox.tier.purge {hitbox.tier=far, hitbox.purge.kind=prefix, hitbox.purge.mode=hard, hitbox.purged=2, hitbox.result=ok}",
            ]
        );
        // A prefix is the raw beginning of keys: not recorded.
        assert!(!format!("{spans:?}").contains("raw-tenant"), "{spans:?}");
    }

    #[tokio::test]
    async fn a_purge_by_tag_names_the_tag_and_a_soft_one_says_so() {
        let (cache, _, captured, _guard) = setup();
        let tagged = EntryOptions::new().tag("team");
        cache.set_with(&key(), &1u32, &tagged).await.unwrap();
        captured.take();

        assert_eq!(
            cache
                .purge_tag(&Tag::from("team"), PurgeMode::Soft)
                .await
                .unwrap(),
            1
        );
        let spans = captured.take();
        assert_eq!(
            tree(
                &spans,
                &["hitbox.tier", "hitbox.tag", "hitbox.purge.mode", "hitbox.purged"]
            ),
            [
                "hitbox.purge {hitbox.tag=team, hitbox.purge.mode=soft, hitbox.purged=1}",
                "hitbox.purge > hitbox.tier.purge {hitbox.tier=near, hitbox.tag=team, hitbox.purge.mode=soft, hitbox.purged=1}",
                "hitbox.purge > hitbox.tier.purge {hitbox.tier=far, hitbox.tag=team, hitbox.purge.mode=soft, hitbox.purged=1}",
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_purge_carries_the_error_type_and_the_key_digest_only() {
        let captured = Captured::default();
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
        let tier = MemoryBackend::new().labelled("broken");
        let cache = Cache::new(tier.clone());
        tier.set_failing(true);
        assert!(cache.purge_key(&key(), PurgeMode::Soft).await.is_err());
        let spans = captured.take();
        assert_eq!(
            tree(
                &spans,
                &[
                    "hitbox.tier",
                    "hitbox.purge.kind",
                    "hitbox.purge.mode",
                    "hitbox.purged",
                    "hitbox.result",
                    "error.type",
                    "otel.status_code"
                ]
            ),
            [
                "hitbox.purge {hitbox.purge.kind=key, hitbox.purge.mode=soft, hitbox.result=error, error.type=client, otel.status_code=ERROR}",
                "hitbox.purge > hitbox.tier.purge {hitbox.tier=broken, hitbox.purge.kind=key, hitbox.purge.mode=soft, hitbox.result=error, error.type=client, otel.status_code=ERROR}",
            ]
        );
        let digest = key().log_id().to_string();
        for span in &spans {
            assert_eq!(span.fields.get("hitbox.key"), Some(&digest), "{span:?}");
            assert!(!format!("{span:?}").contains("raw-user-id"));
        }
        // The engine's refusal of an empty prefix never reaches a tier.
        assert!(cache.purge_prefix("", PurgeMode::Hard).await.is_err());
        assert_eq!(
            tree(
                &captured.take(),
                &["hitbox.purge.kind", "hitbox.result", "error.type"]
            ),
            ["hitbox.purge {hitbox.purge.kind=prefix, hitbox.result=error, error.type=refused}"]
        );
    }

    #[tokio::test]
    async fn below_debug_no_span_is_made() {
        let captured = Captured::default();
        let filtered = captured
            .clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(filtered));
        let cache = Cache::new(MemoryBackend::new());
        cache.set(&key(), &1u32).await.unwrap();
        assert_eq!(cache.get::<u32>(&key()).await, Some(1));
        assert_eq!(cache.purge_key(&key(), PurgeMode::Hard).await.unwrap(), 1);
        let _ = tracing::info_span!("request");
        let names: Vec<&str> = captured.take().iter().map(|span| span.name).collect();
        assert_eq!(names, ["request"], "the engine's spans are at DEBUG");
    }
}
