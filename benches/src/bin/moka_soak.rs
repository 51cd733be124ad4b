//! The moka tier's memory bound, measured as an operator would: the
//! process's resident set against the configured capacity.
//!
//! ```sh
//! cargo run --release -p hitbox-benches --bin moka_soak -- [KEYS] [CAPACITY_MIB] [string|bytes]
//! ```
//!
//! Defaults: 1,000,000 keys, 64 MiB, both value forms, each measured in a
//! process of its own. Values are 100 B to 8 KiB (a fixed pseudo-random
//! sequence), stored through the engine with one of 100 tags each, so the
//! tag index is counted too. The process's RSS is read from
//! `/proc/self/status` with the empty tier in place (the baseline), then
//! after every key was written and moka's maintenance ran. The run fails
//! (exit code 1) when RSS − baseline is more than 10 % over the capacity.
//!
//! It also prints the heap an entry costs beyond its key and value, from a
//! run of small values that all fit, to check the tier's `ENTRY_OVERHEAD`.

use std::time::{Duration, Instant};

use hitbox_backend::Cache;
use hitbox_core::{CacheKey, CachePolicy, EntryOptions};
use hitbox_moka::{ENTRY_OVERHEAD, MokaBackend};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of KiB");
    kib * 1024
}

/// A small deterministic generator (xorshift64*), so that every run stores
/// the same sizes.
struct Sizes(u64);

impl Sizes {
    fn next(&mut self, low: usize, high: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        low + (r % (high - low + 1) as u64) as usize
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Form {
    String,
    Bytes,
}

fn key(i: usize) -> CacheKey {
    CacheKey::builder("soak").part("id", i.to_string()).build()
}

fn options(i: usize) -> EntryOptions {
    EntryOptions::new().tag(format!("tag-{}", i % 100))
}

async fn fill(cache: &Cache, keys: usize, form: Form, low: usize, high: usize) {
    let mut sizes = Sizes(0x9E37_79B9_7F4A_7C15);
    for i in 0..keys {
        let len = sizes.next(low, high);
        let result = match form {
            Form::String => cache.set_with(&key(i), &"x".repeat(len), &options(i)).await,
            Form::Bytes => {
                cache
                    .set_with(&key(i), &vec![(i % 251) as u8; len], &options(i))
                    .await
            }
        };
        result.expect("an in-process write does not fail");
    }
}

async fn soak(keys: usize, capacity: u64, form: Form) -> bool {
    let tier = MokaBackend::new(capacity);
    let cache = Cache::builder(tier.clone())
        .policy(CachePolicy::new(Duration::from_secs(3_600)))
        .build();
    tier.run_pending_tasks().await;
    let baseline = rss_bytes();
    let started = Instant::now();
    fill(&cache, keys, form, 100, 8 * 1024).await;
    tier.run_pending_tasks().await;
    let rss = rss_bytes();
    let held = rss.saturating_sub(baseline);
    let ratio = held as f64 / capacity as f64;
    let name = if form == Form::String { "String" } else { "Vec<u8>" };
    println!(
        "{name:8} {keys} keys in {:.1?}: weighed {:.1} MiB in {} entries, RSS - baseline {:.1} MiB = {:.3} x capacity ({:.0} MiB)",
        started.elapsed(),
        tier.weighted_size() as f64 / 1048576.0,
        tier.entry_count(),
        held as f64 / 1048576.0,
        ratio,
        capacity as f64 / 1048576.0,
    );
    drop(cache);
    drop(tier);
    ratio <= 1.10
}

/// The heap an entry takes beyond its key and stored bytes, from entries
/// that all fit: (RSS growth − keys − stored bytes) / entries.
async fn overhead() {
    let entries = 200_000;
    let tier = MokaBackend::new(1 << 40);
    let cache = Cache::builder(tier.clone())
        .policy(CachePolicy::new(Duration::from_secs(3_600)))
        .build();
    let baseline = rss_bytes();
    fill(&cache, entries, Form::Bytes, 100, 100).await;
    tier.run_pending_tasks().await;
    let grown = rss_bytes().saturating_sub(baseline);
    let weighed_payload = tier.weighted_size() - (entries * ENTRY_OVERHEAD) as u64;
    println!(
        "per-entry overhead: {:.0} bytes measured (ENTRY_OVERHEAD is {ENTRY_OVERHEAD})",
        (grown.saturating_sub(weighed_payload)) as f64 / entries as f64
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keys = args.first().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let capacity_mib: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let form = match args.get(2).map(String::as_str) {
        Some("string") => Form::String,
        Some("bytes") => Form::Bytes,
        Some("overhead") => return overhead().await,
        _ => {
            // Each measurement in a process of its own: memory one run
            // freed stays in the allocator and would hide in the next
            // run's baseline.
            let mut ok = true;
            for part in ["overhead", "string", "bytes"] {
                let status = std::process::Command::new(std::env::current_exe().expect("this program"))
                    .args([keys.to_string(), capacity_mib.to_string(), part.to_owned()])
                    .status()
                    .expect("the measurement runs");
                ok &= status.success();
            }
            std::process::exit(if ok { 0 } else { 1 });
        }
    };
    if !soak(keys, capacity_mib * 1024 * 1024, form).await {
        eprintln!("RSS grew more than 10 % over the capacity");
        std::process::exit(1);
    }
}
