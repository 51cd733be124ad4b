//! Slots changing masters while the cache reads them.
//!
//! The test starts a three-master cluster of its own (the shared cluster the
//! other tests use keeps its layout), writes entries through a [`Cache`]
//! over a clustered [`RedisBackend`], and keeps a reader going over every
//! entry while slots holding them move:
//!
//! 1. by hand, slot by slot (`CLUSTER SETSLOT ... IMPORTING` and
//!    `MIGRATING`, `MIGRATE`, `CLUSTER SETSLOT ... NODE`), stopping inside
//!    each migration, where the old owner answers `ASK` for the entry, and
//!    again once the slot is handed over, where it answers `MOVED`;
//! 2. with `redis-cli --cluster reshard`, several hundred slots at once from
//!    a third master, as an operator rebalancing a cluster does.
//!
//! What must hold:
//!
//! - no read, ever, returns a wrong value (nor bytes that are no entry at
//!   all), and the tier never says "no entry" for one that exists;
//! - no connection of the pool is lost: every read after the moves
//!   succeeds, and every connection routes the moved slots to their new
//!   owners;
//! - a read may fail, as a tier error the cache turns into a miss, only for
//!   an entry whose slot moves, and only before the moves are over: inside
//!   a migration window (between the `MIGRATE` of a slot's keys and its
//!   hand-over, when the old owner answers `ASK`), and at most once per
//!   connection when the old owner first answers `MOVED`. The tier lets
//!   fred follow no redirection, because fred 10.1 mishandles `ASK` (see
//!   the comment in `RedisBackendBuilder::build`); a `MOVED` still makes
//!   fred refresh its routing table, so the next read goes right.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::prelude::{Client, ClientLike, ClusterInterface, KeysInterface, Pool, Value};
use fred::types::cluster::ClusterRouting;
use hitbox_backend::{Backend, Cache};
use hitbox_redis::RedisBackend;

use crate::common::{
    Profile, SERVER_BIN, builder, cache, env, init_tracing, key, plain_client, poll_until, profile,
    unique_prefix,
};

/// Hash slots in a Redis cluster.
const SLOTS: usize = 16_384;
/// Entries written. Odd, so that a reader going round them over a pool of
/// two connections alternates which connection reads which entry.
const ENTRIES: u64 = 1_001;
/// Slots moved by hand, one migration at a time.
const HAND_MOVED: usize = 8;
/// Slots moved by `redis-cli --cluster reshard`: with 1001 entries spread
/// over 16384 slots, about 37 of them move, and the odds that none does
/// are below 1e-15.
const RESHARDED: usize = 600;
/// How long the cluster gets to settle after a change.
const SETTLE: Duration = Duration::from_secs(15);

/// Three masters on free loopback ports with their data in a directory of
/// their own; killed, and the directory removed, when dropped (a failing
/// assertion included).
pub(crate) struct OwnCluster {
    dir: PathBuf,
    pub(crate) servers: Vec<Child>,
    pub(crate) ports: Vec<u16>,
    cli: PathBuf,
}

impl OwnCluster {
    async fn start() -> OwnCluster {
        OwnCluster::start_with(0, 5_000).await
    }

    /// Three masters with `replicas` replicas each, and a node timeout of
    /// `node_timeout_ms` (how long a master may be silent before its
    /// replica takes over).
    pub(crate) async fn start_with(replicas: usize, node_timeout_ms: u32) -> OwnCluster {
        let server = PathBuf::from(env(SERVER_BIN));
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("hitbox-reshard-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster's data");
        let mut cluster = OwnCluster {
            dir,
            servers: Vec::new(),
            ports: Vec::new(),
            cli: redis_cli_beside(&server),
        };
        // Two ports a node (its clients', its bus') held at once, so that
        // none is handed out twice.
        let listeners: Vec<TcpListener> = (0..6 * (1 + replicas))
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("its address").port())
            .collect();
        drop(listeners);
        for pair in ports.chunks(2) {
            let (port, bus) = (pair[0], pair[1]);
            let data = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&data).expect("a directory for a node");
            let child = Command::new(&server)
                .args(["--port", &port.to_string(), "--cluster-port", &bus.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    &node_timeout_ms.to_string(),
                ])
                // A replica takes over however long its master was quiet
                // (with the default factor, one whose idle master had sent
                // nothing lately refuses, as "disconnected for too long").
                .args(["--cluster-replica-validity-factor", "0"])
                .arg("--cluster-config-file")
                .arg(data.join("nodes.conf"))
                .arg("--dir")
                .arg(&data)
                .arg("--logfile")
                .arg(data.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start {}: {error}", server.display()));
            cluster.servers.push(child);
            cluster.ports.push(port);
        }
        for port in cluster.ports.clone() {
            let up = poll_until(Duration::from_secs(10), || async {
                let out = cluster
                    .cli(&["-h", "127.0.0.1", "-p", &port.to_string(), "ping"])
                    .await;
                String::from_utf8_lossy(&out.stdout).trim() == "PONG"
            })
            .await;
            assert!(up.is_some(), "cluster node {port} did not answer PING");
        }
        let mut create = vec!["--cluster".to_string(), "create".to_string()];
        create.extend(cluster.ports.iter().map(|port| format!("127.0.0.1:{port}")));
        create.extend([
            "--cluster-replicas".to_string(),
            replicas.to_string(),
            "--cluster-yes".to_string(),
        ]);
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        expect_success("redis-cli --cluster create", &cluster.cli(&create).await);
        cluster
    }

    /// The URL a clustered backend is built from.
    pub(crate) fn url(&self) -> String {
        let [first, rest @ ..] = self.ports.as_slice() else {
            unreachable!("three ports")
        };
        let nodes: Vec<String> = rest.iter().map(|port| format!("node=127.0.0.1:{port}")).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", nodes.join("&"))
    }

    /// Runs redis-cli with `args`, for at most 20 s.
    pub(crate) async fn cli(&self, args: &[&str]) -> Output {
        let run = tokio::process::Command::new(&self.cli)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap_or_else(|_| panic!("redis-cli {args:?} did not finish within 20 s"))
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", self.cli.display()))
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// redis-cli from the directory of redis-server, or else from `PATH`.
fn redis_cli_beside(server: &Path) -> PathBuf {
    let beside = server.with_file_name("redis-cli");
    if beside.is_file() {
        beside
    } else {
        PathBuf::from("redis-cli")
    }
}

fn expect_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What one node says of the cluster in `CLUSTER NODES`.
#[derive(Debug, PartialEq)]
struct View {
    /// The id of every node, by port.
    ids: BTreeMap<u16, String>,
    /// The port of the master owning each slot.
    owners: Vec<Option<u16>>,
    /// Whether the node has a slot being imported or migrated.
    open_slots: bool,
}

fn parse_nodes(text: &str) -> View {
    let mut view = View {
        ids: BTreeMap::new(),
        owners: vec![None; SLOTS],
        open_slots: false,
    };
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let address = fields[1].split('@').next().unwrap_or_default();
        let port: u16 = address
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in the CLUSTER NODES line {line:?}"));
        view.ids.insert(port, fields[0].to_string());
        for range in fields.iter().skip(8) {
            if range.starts_with('[') {
                view.open_slots = true;
                continue;
            }
            let (start, end) = range.split_once('-').unwrap_or((range, range));
            let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
            for owner in &mut view.owners[start..=end] {
                *owner = Some(port);
            }
        }
    }
    view
}

async fn cluster_command(node: &Client, args: &[&str]) -> Value {
    node.custom::<Value, _>(fred::cmd!("CLUSTER"), args.to_vec())
        .await
        .unwrap_or_else(|error| panic!("CLUSTER {args:?}: {error}"))
}

async fn cluster_text(node: &Client, args: &[&str]) -> String {
    cluster_command(node, args)
        .await
        .into_string()
        .expect("a text answer")
}

/// The cluster's layout once every node reports `cluster_state:ok`, no open
/// slot, every slot served, and the same owners as the others; panics after
/// [`SETTLE`].
async fn settled(admins: &BTreeMap<u16, Client>) -> View {
    let started = Instant::now();
    loop {
        let mut views = Vec::new();
        for node in admins.values() {
            let ok = cluster_text(node, &["INFO"]).await.contains("cluster_state:ok");
            views.push((ok, parse_nodes(&cluster_text(node, &["NODES"]).await)));
        }
        let (_, first) = &views[0];
        let agreed = views.iter().all(|(ok, view)| {
            *ok && !view.open_slots && view.owners.iter().all(Option::is_some) && view.owners == first.owners
        });
        if agreed {
            return views.swap_remove(0).1;
        }
        if started.elapsed() > SETTLE {
            let states: Vec<String> = views
                .iter()
                .map(|(ok, view)| {
                    format!(
                        "state ok: {ok}, open slots: {}, unserved slots: {}, same owners as the first: {}",
                        view.open_slots,
                        view.owners.iter().filter(|owner| owner.is_none()).count(),
                        view.owners == first.owners
                    )
                })
                .collect();
            panic!("the cluster did not settle within {SETTLE:?}: {states:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The port each connection of `pool` routes `slot` to.
fn routes(pool: &Pool, slot: u16) -> Vec<Option<u16>> {
    pool.clients()
        .iter()
        .map(|client| {
            client
                .cached_cluster_state()
                .and_then(|routing| routing.get_server(slot).map(|server| server.port))
        })
        .collect()
}

/// Waits until every connection of `pool` routes each of `slots` where
/// `view` says it lives (fred learns of a move from a MOVED answer).
async fn wait_routed(pool: &Pool, view: &View, slots: impl Iterator<Item = u16> + Clone) {
    let routed = poll_until(Duration::from_secs(10), || {
        let slots = slots.clone();
        async move {
            slots.clone().all(|slot| {
                routes(pool, slot)
                    .iter()
                    .all(|port| *port == view.owners[slot as usize])
            })
        }
    })
    .await;
    let wrong: Vec<(u16, Vec<Option<u16>>)> = slots
        .map(|slot| (slot, routes(pool, slot)))
        .filter(|(slot, ports)| ports.iter().any(|port| *port != view.owners[*slot as usize]))
        .collect();
    assert!(
        routed.is_some(),
        "fred still routes these slots to their old owners: {wrong:?}"
    );
}

/// What the reader saw.
#[derive(Debug, Default)]
struct ReadLog {
    reads: u64,
    /// Misses, each with whether it was read after the moves were over.
    misses: Vec<(u64, bool)>,
    wrong: Vec<(u64, Profile)>,
}

/// What the test tells the reader, and the reader the test.
#[derive(Default)]
struct Signals {
    stop: AtomicBool,
    /// Set once every move is done and routed.
    settled: AtomicBool,
    /// Reads done so far.
    progress: AtomicU64,
}

impl Signals {
    fn progress(&self) -> u64 {
        self.progress.load(Ordering::SeqCst)
    }

    /// Waits until the reader has done `more` reads from now.
    async fn reader_moves_on(&self, more: u64) {
        let from = self.progress();
        let moved = poll_until(Duration::from_secs(10), || async {
            self.progress() >= from + more
        })
        .await;
        assert!(moved.is_some(), "the reader is stuck");
    }
}

/// Reads every entry in turn, again and again, until told to stop.
fn spawn_reader(cache: Cache, signals: Arc<Signals>) -> tokio::task::JoinHandle<ReadLog> {
    tokio::spawn(async move {
        let mut log = ReadLog::default();
        'passes: loop {
            for id in 0..ENTRIES {
                if signals.stop.load(Ordering::SeqCst) {
                    break 'passes;
                }
                let settled = signals.settled.load(Ordering::SeqCst);
                match cache.get::<Profile>(&key(id)).await {
                    Some(value) if value == profile(id) => {}
                    Some(other) => log.wrong.push((id, other)),
                    None => log.misses.push((id, settled)),
                }
                log.reads += 1;
                signals.progress.fetch_add(1, Ordering::SeqCst);
            }
        }
        log
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_slots_moved_by_hand_and_by_a_reshard() {
    init_tracing();
    let cluster = OwnCluster::start().await;
    let mut admins = BTreeMap::new();
    for &port in &cluster.ports {
        admins.insert(port, plain_client(&format!("redis://127.0.0.1:{port}")).await);
    }
    let view = settled(&admins).await;

    let redis: RedisBackend = builder(&cluster.url(), &unique_prefix("reshard"))
        .pool_size(2)
        .build()
        .expect("the backend builds");
    redis
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("the backend connects");
    assert!(redis.is_clustered());
    let cache = cache(redis.clone());
    for id in 0..ENTRIES {
        cache.set(&key(id), &profile(id)).await.expect("a write");
    }
    let slot_of = |id: u64| ClusterRouting::hash_key(redis.redis_key(&key(id)).as_bytes());
    let mut ids_in_slot: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
    for id in 0..ENTRIES {
        ids_in_slot.entry(slot_of(id)).or_default().push(id);
    }

    let signals = Arc::new(Signals::default());
    let reader = spawn_reader(cache.clone(), Arc::clone(&signals));
    signals.reader_moves_on(ENTRIES).await;

    // ---- 1. By hand, from the master of entry 0's slot to another one.
    let source = view.owners[slot_of(0) as usize].expect("an owner");
    let others: Vec<u16> = cluster.ports.iter().copied().filter(|&p| p != source).collect();
    let (target, third) = (others[0], others[1]);
    let (source_id, target_id) = (view.ids[&source].clone(), view.ids[&target].clone());
    let hand_slots: Vec<u16> = ids_in_slot
        .keys()
        .copied()
        .filter(|&slot| view.owners[slot as usize] == Some(source))
        .take(HAND_MOVED)
        .collect();
    assert_eq!(
        hand_slots.len(),
        HAND_MOVED,
        "entries in enough slots of {source}"
    );
    let before_hand = signals.progress();
    // Reads inside a migration window: (followed the ASK, failed).
    let (mut asks_followed, mut ask_errors) = (0u64, Vec::new());
    // Reads right after a hand-over that met MOVED and failed.
    let mut moved_misses = 0u64;
    for &slot in &hand_slots {
        let s = slot.to_string();
        cluster_command(&admins[&target], &["SETSLOT", &s, "IMPORTING", &source_id]).await;
        cluster_command(&admins[&source], &["SETSLOT", &s, "MIGRATING", &target_id]).await;
        let keys: Vec<String> = cluster_command(&admins[&source], &["GETKEYSINSLOT", &s, "1000"])
            .await
            .convert()
            .expect("a list of keys");
        let mut expected: Vec<String> = ids_in_slot[&slot]
            .iter()
            .map(|&id| redis.redis_key(&key(id)))
            .collect();
        let mut found = keys.clone();
        expected.sort();
        found.sort();
        assert_eq!(found, expected, "the keys of slot {slot}");
        let mut migrate = vec!["127.0.0.1".to_string(), target.to_string(), String::new()];
        migrate.extend(["0", "5000", "KEYS"].map(String::from));
        migrate.extend(keys);
        admins[&source]
            .custom::<Value, _>(fred::cmd!("MIGRATE"), migrate)
            .await
            .expect("MIGRATE");

        // Mid-migration: the old owner sends readers of the slot to the new
        // one, for one request at a time.
        let first = redis.redis_key(&key(ids_in_slot[&slot][0]));
        match admins[&source].get::<Value, _>(first.as_str()).await {
            Err(error) if error.is_ask() => {}
            other => panic!("slot {slot} migrating: expected ASK from {source}, got {other:?}"),
        }
        for &id in &ids_in_slot[&slot] {
            let redis_key = redis.redis_key(&key(id));
            match Backend::read(&redis, &key(id)).await {
                Ok(Some(bytes)) => {
                    let stored: Vec<u8> = admins[&target]
                        .get(redis_key.as_str())
                        .await
                        .expect("the entry on its new owner");
                    assert_eq!(bytes.as_ref(), stored.as_slice(), "entry {id} read through ASK");
                    asks_followed += 1;
                }
                Ok(None) => panic!("entry {id} reported absent while slot {slot} migrates"),
                Err(error) => ask_errors.push((id, error.to_string())),
            }
        }

        for node in [target, source, third] {
            cluster_command(&admins[&node], &["SETSLOT", &s, "NODE", &target_id]).await;
        }
        match admins[&source].get::<Value, _>(first.as_str()).await {
            Err(error) if error.is_moved() => {}
            other => panic!("slot {slot} handed over: expected MOVED from {source}, got {other:?}"),
        }
        // Handed over: a connection still routing the slot to the old
        // owner meets MOVED, refreshes its routing table and fails that one
        // read; after that it reads from the new owner.
        for &id in &ids_in_slot[&slot] {
            let mut failed = 0;
            while cache.get::<Profile>(&key(id)).await != Some(profile(id)) {
                failed += 1;
                assert!(
                    failed <= redis.pool().size(),
                    "entry {id} still unreadable after slot {slot} moved"
                );
            }
            moved_misses += failed as u64;
        }
    }
    let after_hand = settled(&admins).await;
    for &slot in &hand_slots {
        assert_eq!(after_hand.owners[slot as usize], Some(target), "slot {slot}");
    }
    wait_routed(redis.pool(), &after_hand, hand_slots.iter().copied()).await;
    assert!(
        signals.progress() > before_hand,
        "the reader read while slots moved by hand"
    );

    // ---- 2. With redis-cli, a range of slots from the third master to
    // the first one, while the reader goes on.
    let before_reshard = signals.progress();
    let resharded = RESHARDED.to_string();
    let reshard = cluster
        .cli(&[
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{source}"),
            "--cluster-from",
            &after_hand.ids[&third],
            "--cluster-to",
            &source_id,
            "--cluster-slots",
            &resharded,
            "--cluster-yes",
        ])
        .await;
    expect_success("redis-cli --cluster reshard", &reshard);
    let read_during_reshard = signals.progress() - before_reshard;
    assert!(read_during_reshard > 0, "the reader read during the reshard");
    let after_reshard = settled(&admins).await;
    let resharded_ids: Vec<u64> = (0..ENTRIES)
        .filter(|&id| after_hand.owners[slot_of(id) as usize] != after_reshard.owners[slot_of(id) as usize])
        .collect();
    assert!(
        !resharded_ids.is_empty(),
        "the reshard moved slots holding entries"
    );
    for &id in &resharded_ids {
        let slot = slot_of(id) as usize;
        assert_eq!(
            (after_hand.owners[slot], after_reshard.owners[slot]),
            (Some(third), Some(source)),
            "entry {id} moved from {third} to {source}"
        );
        match admins[&third].get::<Value, _>(redis.redis_key(&key(id))).await {
            Err(error) if error.is_moved() => {}
            other => panic!("entry {id} resharded: expected MOVED from {third}, got {other:?}"),
        }
    }
    let entry_slots: Vec<u16> = ids_in_slot.keys().copied().collect();
    wait_routed(redis.pool(), &after_reshard, entry_slots.iter().copied()).await;

    // ---- After the moves: a full pass of the reader, then stop it.
    signals.settled.store(true, Ordering::SeqCst);
    signals.reader_moves_on(ENTRIES + 1).await;
    signals.stop.store(true, Ordering::SeqCst);
    let log = reader.await.expect("the reader did not panic");
    let hand_ids: Vec<u64> = hand_slots
        .iter()
        .flat_map(|slot| ids_in_slot[slot].clone())
        .collect();
    println!(
        "{} reads ({read_during_reshard} during the reshard), {} misses; {} entries moved by hand \
         ({asks_followed} read through ASK, {} ASK reads failed: {:?}, {moved_misses} MOVED reads failed), \
         {} by the reshard",
        log.reads,
        log.misses.len(),
        hand_ids.len(),
        ask_errors.len(),
        ask_errors.first(),
        resharded_ids.len()
    );
    assert!(log.wrong.is_empty(), "wrong values read: {:?}", log.wrong);
    let unexplained: Vec<&(u64, bool)> = log
        .misses
        .iter()
        .filter(|(id, settled)| *settled || !(hand_ids.contains(id) || resharded_ids.contains(id)))
        .collect();
    assert!(
        unexplained.is_empty(),
        "misses of entries that did not move, or after the moves were over: {unexplained:?}"
    );
    for id in 0..ENTRIES {
        assert_eq!(
            cache.get::<Profile>(&key(id)).await,
            Some(profile(id)),
            "entry {id}"
        );
    }
    assert_eq!(
        cache.stats().unreadable_entries,
        0,
        "no read got bytes that are not an entry"
    );
    let stats = &redis.tier_stats()[0];
    assert_eq!(
        stats.misses, 0,
        "the tier never said an entry was absent: {stats:?}"
    );
    assert_eq!(
        stats.errors,
        ask_errors.len() as u64 + moved_misses + log.misses.len() as u64,
        "every tier error is a failed read of a moving entry: {stats:?}"
    );
    assert!(stats.timed_calls >= stats.hits, "every read timed: {stats:?}");
    assert!(
        stats.total_latency_micros > 0 && stats.max_latency_micros > 0,
        "{stats:?}"
    );

    redis.quit().await;
    for admin in admins.values() {
        let _ = admin.quit().await;
    }
}
