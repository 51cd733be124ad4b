//! What the tests share: the servers' addresses, unique prefixes, a plain
//! fred client, and a redis-server of a test's own.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::prelude::{Builder, ClientLike, Config};
use hitbox_backend::Cache;
use hitbox_core::{CacheKey, CachePolicy};
use hitbox_redis::{RedisBackend, RedisBackendBuilder};
use serde::{Deserialize, Serialize};

pub const STANDALONE: &str = "HITBOX_TEST_REDIS_URL";
pub const CLUSTER: &str = "HITBOX_TEST_REDIS_CLUSTER_URL";
pub const SENTINEL: &str = "HITBOX_TEST_REDIS_SENTINEL_URL";
pub const SERVER_BIN: &str = "HITBOX_TEST_REDIS_SERVER_BIN";

/// The value the tests cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: u64,
    pub name: String,
}

pub fn profile(id: u64) -> Profile {
    Profile {
        id,
        name: format!("user {id}"),
    }
}

/// The value of `var`; panics, saying how to start the servers, when it is
/// missing. Tests never skip silently.
pub fn env(var: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{var} is not set: the Redis tests need the servers that ./scripts/test.sh starts \
             (or run `source scripts/services.sh && start_services` first, in the same shell)"
        ),
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A key prefix no other test (nor an earlier run) uses.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "hitbox-test:{test}:{}-{nanos}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A builder for the server(s) at `url` under a fresh prefix, with
/// timeouts loose enough for a busy CI machine.
pub fn builder(url: &str, prefix: &str) -> RedisBackendBuilder {
    RedisBackend::builder()
        .url(url)
        .key_prefix(prefix)
        .read_timeout(Duration::from_secs(2))
        .write_timeout(Duration::from_secs(2))
}

/// A connected backend.
pub async fn backend(url: &str, prefix: &str) -> RedisBackend {
    connected(builder(url, prefix)).await
}

/// The backend `builder` makes, once it is connected.
pub async fn connected(builder: RedisBackendBuilder) -> RedisBackend {
    let backend = builder.build().expect("the backend builds");
    backend
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("the backend connects");
    backend
}

/// A cache over `backend` whose entries live 60 s with no stale windows.
pub fn cache(backend: RedisBackend) -> Cache {
    Cache::builder(backend)
        .policy(CachePolicy::new(Duration::from_secs(60)))
        .build()
}

/// Reads `id` through `cache`, loading it (and counting the load in
/// `loads`) on a miss; the call itself must never fail.
pub async fn load(cache: &Cache, id: u64, loads: &Arc<AtomicU32>) -> Profile {
    let loads = Arc::clone(loads);
    cache
        .try_get_or_insert_with(&key(id), move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(profile(id))
        })
        .await
        .expect("a call never fails because of Redis or of what it holds")
}

pub fn key(id: u64) -> CacheKey {
    CacheKey::entity("profiles", "acme", "user", &id.to_string())
}

/// A plain fred client (no hitbox in between) connected to `url`.
pub async fn plain_client(url: &str) -> fred::prelude::Client {
    let config = Config::from_url(url).expect("a valid URL");
    let client = Builder::from_config(config).build().expect("the client builds");
    tokio::time::timeout(Duration::from_secs(10), client.init())
        .await
        .expect("the plain client connects in time")
        .expect("the plain client connects");
    client
}

/// Polls `check` every 10 ms until it returns true or `deadline` passes;
/// returns how long it took, or `None` on timeout.
pub async fn poll_until<F, Fut>(deadline: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A redis-server of a test's own, on a free loopback port, killed when
/// dropped.
pub struct OwnServer {
    child: Option<Child>,
    pub port: u16,
}

impl OwnServer {
    /// Starts one on a free port and waits until it answers.
    pub async fn start() -> OwnServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        drop(listener);
        OwnServer::start_on(port).await
    }

    /// Starts one on `port` and waits until it answers.
    pub async fn start_on(port: u16) -> OwnServer {
        let bin = env(SERVER_BIN);
        let child = Command::new(&bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {bin}: {error}"));
        let server = OwnServer {
            child: Some(child),
            port,
        };
        let url = server.url();
        let up = poll_until(Duration::from_secs(10), || async {
            let Ok(config) = Config::from_url(&url) else {
                return false;
            };
            let Ok(client) = Builder::from_config(config).build() else {
                return false;
            };
            let ok = matches!(
                tokio::time::timeout(Duration::from_millis(500), client.init()).await,
                Ok(Ok(_))
            );
            let _ = client.quit().await;
            ok
        })
        .await;
        assert!(
            up.is_some(),
            "the test's own redis-server did not come up on port {port}"
        );
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freezes the server (SIGSTOP): its connections stay open but nothing
    /// answers, as with a hung server or a network that drops packets.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server runs");
        // The shell's own `kill`: /bin/kill (procps) may not be installed.
        let status = Command::new("sh")
            .args(["-c", "kill \"$0\" \"$1\"", signal, &child.id().to_string()])
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills the server (SIGKILL: it dies, it does not shut down).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused (stopped) server too.
        self.kill();
    }
}
