//! Every engine operation is traced with the key's digest, never the raw key
//! or the value.

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
