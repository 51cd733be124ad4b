//! The serde model: what a configuration file may say.
//!
//! Every table refuses fields it does not know (`deny_unknown_fields`), and
//! every value that can be checked without I/O is checked while it is
//! parsed, so that its error carries the value's line and column.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::units::{ConfigDuration, ConfigSize};

/// Reads a string and maps it through `choose`, whose error becomes the
/// parser's (and so carries the value's place).
fn choice<'de, D, T>(deserializer: D, choose: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    choose(&text).map_err(de::Error::custom)
}

/// An error about one field of a table: the parser places errors of a
/// checked table at the table; the field's name, carried before the
/// message between two `\u{1}`, lets the error point at the field itself
/// (see `crate::error::refine`).
pub(crate) fn at_field(field: &str, message: impl fmt::Display) -> String {
    format!("\u{1}{field}\u{1}{message}")
}

/// Refuses the first of `fields` (name, value) set to zero, at its field.
fn longer_than_zero(fields: &[(&str, Option<ConfigDuration>)]) -> Result<(), String> {
    match fields
        .iter()
        .find(|(_, value)| value.is_some_and(|d| d.0.is_zero()))
    {
        Some((field, _)) => Err(at_field(field, format!("`{field}` must be longer than zero"))),
        None => Ok(()),
    }
}

fn feature_off(what: &str, feature: &str) -> String {
    format!("{what} needs the `{feature}` feature of hitbox-config, which is off in this build")
}

/// The whole file.
///
/// ```toml
/// [cache]        # the engine: name, value format, default policy
/// [[tiers]]      # one or more tiers, nearest first
/// [composition]  # how the tiers stack (read, write and refill policies)
/// [layer]        # the HTTP layer: Cache-Status name, locks
/// [[rules]]      # rule mode: which requests, which key, how long
/// [standards]    # or standards mode (RFC 9111) instead of rules
/// [bus]          # the invalidation bus between instances (Redis pub/sub)
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigModel {
    /// The engine's settings.
    #[serde(default)]
    pub cache: CacheSection,
    /// The tiers, nearest first; at least one.
    pub tiers: Vec<TierConfig>,
    /// How consecutive tiers are composed.
    #[serde(default)]
    pub composition: CompositionConfig,
    /// The HTTP layer's settings.
    #[serde(default)]
    pub layer: LayerSection,
    /// The rules, tried in order (rule mode). None: one rule with the safe
    /// defaults.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Standards mode (RFC 9111) instead of rules.
    #[serde(default)]
    pub standards: Option<StandardsConfig>,
    /// The invalidation bus that keeps the in-process tiers of every
    /// instance in step (feature `redis`).
    #[serde(default)]
    pub bus: Option<BusConfig>,
}

/// `[cache]`: the engine (`hitbox_backend::CacheBuilder`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// The cache's name, in stats and metrics.
    pub name: Option<String>,
    /// The value format.
    #[serde(default)]
    pub format: Option<FormatName>,
    /// The default policy (rules without a policy use it).
    pub policy: Option<PolicyConfig>,
    /// How many stale entries may be refreshed in the background at once.
    pub max_background_refreshes: Option<usize>,
}

/// A value format: `"postcard"` (the default), `"json"`, `"bitcode"`,
/// `"msgpack"`; the last three need the feature of the same name.
#[derive(Debug, Clone, Copy)]
pub struct FormatName(pub hitbox_backend::Format);

impl<'de> Deserialize<'de> for FormatName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use hitbox_backend::Format;
        choice(deserializer, |name| match name {
            "postcard" => Ok(FormatName(Format::Postcard)),
            #[cfg(feature = "json")]
            "json" => Ok(FormatName(Format::Json)),
            #[cfg(not(feature = "json"))]
            "json" => Err(feature_off("the json format", "json")),
            #[cfg(feature = "bitcode")]
            "bitcode" => Ok(FormatName(Format::Bitcode)),
            #[cfg(not(feature = "bitcode"))]
            "bitcode" => Err(feature_off("the bitcode format", "bitcode")),
            #[cfg(feature = "msgpack")]
            "msgpack" => Ok(FormatName(Format::MessagePack)),
            #[cfg(not(feature = "msgpack"))]
            "msgpack" => Err(feature_off("the msgpack format", "msgpack")),
            other => Err(format!(
                "unknown format {other:?}: expected one of \"postcard\", \"json\", \"bitcode\", \"msgpack\""
            )),
        })
    }
}

/// A policy: a preset, a TTL, or a preset with overrides.
///
/// ```toml
/// policy = { ttl = "30s", stale_while_revalidate = "30s", stale_if_error = "10m" }
/// policy = { preset = "short_term" }
/// policy = { preset = "long_term", ttl = "2h" }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PolicyRaw")]
pub struct PolicyConfig(pub hitbox_core::CachePolicy);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyRaw {
    preset: Option<Preset>,
    ttl: Option<ConfigDuration>,
    stale_while_revalidate: Option<ConfigDuration>,
    stale_if_error: Option<ConfigDuration>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Preset {
    RealTime,
    ShortTerm,
    LongTerm,
    Immutable,
}

impl TryFrom<PolicyRaw> for PolicyConfig {
    type Error = String;
    fn try_from(raw: PolicyRaw) -> Result<Self, String> {
        use hitbox_core::CachePolicy;
        let mut policy = match (raw.preset, raw.ttl) {
            (Some(Preset::RealTime), _) => CachePolicy::real_time(),
            (Some(Preset::ShortTerm), _) => CachePolicy::short_term(),
            (Some(Preset::LongTerm), _) => CachePolicy::long_term(),
            (Some(Preset::Immutable), _) => CachePolicy::immutable(),
            (None, Some(ttl)) => CachePolicy::new(ttl.0),
            (None, None) => {
                return Err(
                    "a policy needs a `ttl` or a `preset` (real_time, short_term, long_term, immutable)"
                        .into(),
                );
            }
        };
        if let Some(ttl) = raw.ttl {
            policy = policy.ttl_of(ttl.0);
        }
        if let Some(window) = raw.stale_while_revalidate {
            policy = policy.stale_while_revalidate(window.0);
        }
        if let Some(window) = raw.stale_if_error {
            policy = policy.stale_if_error(window.0);
        }
        Ok(PolicyConfig(policy))
    }
}

/// One tier, and the stages its entries pass through: exactly one of
/// `memory`, `moka` or `redis`.
///
/// ```toml
/// [[tiers]]
/// moka = { max_bytes = "256 MiB" }
///
/// [[tiers]]
/// redis = { url = "redis://127.0.0.1:6379", key_prefix = "app:" }
/// stages = { compression = "zstd", level = 3 }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "TierRaw")]
pub struct TierConfig {
    /// The tier.
    pub kind: TierKind,
    /// Its stages (compression, encryption), if any.
    pub stages: Option<StagesConfig>,
}

/// What a tier is.
#[derive(Debug, Clone)]
pub enum TierKind {
    /// `hitbox_backend::MemoryBackend`: unbounded, for tests.
    Memory(MemoryConfig),
    /// `hitbox_moka::MokaBackend`: in process, bounded in bytes.
    Moka(MokaConfig),
    /// `hitbox_redis::RedisBackend` (feature `redis`).
    Redis(Box<RedisConfig>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierRaw {
    memory: Option<MemoryConfig>,
    moka: Option<MokaConfig>,
    redis: Option<RedisConfig>,
    stages: Option<StagesConfig>,
}

impl TryFrom<TierRaw> for TierConfig {
    type Error = String;
    fn try_from(raw: TierRaw) -> Result<Self, String> {
        let kind = match (raw.memory, raw.moka, raw.redis) {
            (Some(memory), None, None) => TierKind::Memory(memory),
            (None, Some(moka), None) => TierKind::Moka(moka),
            (None, None, Some(redis)) => TierKind::Redis(Box::new(redis)),
            _ => return Err("a tier names exactly one of `memory`, `moka` or `redis`".into()),
        };
        Ok(TierConfig {
            kind,
            stages: raw.stages,
        })
    }
}

/// `memory = {}`: the engine's own unbounded tier (tests, tools).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// The tier's label in metrics and spans.
    pub label: Option<String>,
}

/// `moka = { ... }`: the in-process tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MokaConfig {
    /// The capacity (`"256 MiB"`, or bytes).
    pub max_bytes: ConfigSize,
    /// The largest entry it takes (default: an eighth of the capacity, at
    /// most 64 MiB).
    pub max_entry_size: Option<ConfigSize>,
    /// The tier's label in metrics and spans.
    pub label: Option<String>,
}

/// How the Redis servers are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// One server.
    Standalone,
    /// A cluster, through some of its nodes.
    Cluster,
    /// Sentinels that name the primary of `service_name`.
    Sentinel,
}

/// `redis = { ... }`: the Redis tier (feature `redis`). Either a `url`
/// (`redis://`, `redis-cluster://`, `redis-sentinel://`, or the `rediss`
/// forms with feature `redis-tls`), whose scheme says the mode, or a
/// `mode` with `nodes` (`"host:port"`) and, for sentinels, a
/// `service_name`.
///
/// ```toml
/// redis = { url = "redis://127.0.0.1:6379/0", key_prefix = "app:", read_timeout = "50ms" }
/// redis = { mode = "cluster", nodes = ["10.0.0.1:7000", "10.0.0.2:7000"] }
/// redis = { mode = "sentinel", nodes = ["10.0.0.1:26379"], service_name = "cache" }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RedisRaw")]
pub struct RedisConfig {
    /// The URL, if the servers are given by one.
    pub url: Option<String>,
    /// The mode (from the URL's scheme, or given).
    pub mode: RedisMode,
    /// The nodes, if not given by a URL.
    pub nodes: Vec<(String, u16)>,
    /// The sentinel service name.
    pub service_name: Option<String>,
    /// The user name.
    pub username: Option<String>,
    /// The environment variable that holds the password (never the
    /// password itself).
    pub password_env: Option<String>,
    /// The database number (standalone and sentinel).
    pub database: Option<u8>,
    /// The number of connections.
    pub pool_size: Option<usize>,
    /// The prefix of every key this tier writes.
    pub key_prefix: Option<String>,
    /// The tier's label in metrics and spans.
    pub label: Option<String>,
    /// The timeout of a read.
    pub read_timeout: Option<ConfigDuration>,
    /// The timeout of a write.
    pub write_timeout: Option<ConfigDuration>,
    /// The timeout of a tag invalidation.
    pub invalidate_timeout: Option<ConfigDuration>,
    /// The bound on one whole purge (scan and removals); default 30 s.
    pub purge_timeout: Option<ConfigDuration>,
    /// The timeout of a connection attempt.
    pub connection_timeout: Option<ConfigDuration>,
    /// How long a connection may stay silent before it is dropped.
    pub unresponsive_after: Option<ConfigDuration>,
    /// How long a tag set keeps a member after its entry expired.
    pub tag_grace: Option<ConfigDuration>,
    /// The largest entry it takes.
    pub max_entry_size: Option<ConfigSize>,
    /// Consecutive failures before the breaker opens.
    pub failure_threshold: Option<u32>,
    /// How long an open breaker keeps the tier out.
    pub cool_down: Option<ConfigDuration>,
    /// How long `build` waits for the connection (default: it does not
    /// wait; the breaker covers a Redis that is down).
    pub wait_connected: Option<ConfigDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisRaw {
    url: Option<String>,
    mode: Option<RedisMode>,
    #[serde(default)]
    nodes: Vec<String>,
    service_name: Option<String>,
    username: Option<String>,
    password_env: Option<String>,
    #[serde(default, alias = "pass", alias = "secret")]
    password: Option<InlineSecret>,
    database: Option<u8>,
    pool_size: Option<usize>,
    key_prefix: Option<String>,
    label: Option<String>,
    read_timeout: Option<ConfigDuration>,
    write_timeout: Option<ConfigDuration>,
    invalidate_timeout: Option<ConfigDuration>,
    purge_timeout: Option<ConfigDuration>,
    connection_timeout: Option<ConfigDuration>,
    unresponsive_after: Option<ConfigDuration>,
    tag_grace: Option<ConfigDuration>,
    max_entry_size: Option<ConfigSize>,
    failure_threshold: Option<u32>,
    cool_down: Option<ConfigDuration>,
    wait_connected: Option<ConfigDuration>,
}

/// The mode a Redis URL's scheme names, or why the URL is refused.
pub(crate) fn redis_url_mode(url: &str) -> Result<RedisMode, String> {
    let expected = "expected redis://HOST[:PORT][/DB], redis-cluster://HOST:PORT[?node=HOST:PORT...] \
                    or redis-sentinel://HOST:PORT?sentinelServiceName=NAME (rediss forms with TLS)";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("invalid Redis URL {url:?}: no scheme; {expected}"));
    };
    let (mode, tls) = match scheme {
        "redis" => (RedisMode::Standalone, false),
        "rediss" => (RedisMode::Standalone, true),
        "redis-cluster" => (RedisMode::Cluster, false),
        "rediss-cluster" => (RedisMode::Cluster, true),
        "redis-sentinel" => (RedisMode::Sentinel, false),
        "rediss-sentinel" => (RedisMode::Sentinel, true),
        other => return Err(format!("invalid Redis URL: unknown scheme {other:?}; {expected}")),
    };
    if tls && !cfg!(feature = "redis-tls") {
        return Err(feature_off("a TLS Redis URL (rediss)", "redis-tls"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err(format!("invalid Redis URL: no host; {expected}"));
    }
    if let Some((_, port)) = host_port.rsplit_once(':').filter(|_| !host_port.ends_with(']'))
        && port.parse::<u16>().is_err()
    {
        return Err(format!(
            "invalid Redis URL: the port {port:?} is not a number from 0 to 65535"
        ));
    }
    if mode == RedisMode::Sentinel && !rest.contains("sentinelServiceName=") {
        return Err("invalid Redis URL: a sentinel URL needs ?sentinelServiceName=NAME".into());
    }
    Ok(mode)
}

fn host_port(node: &str) -> Result<(String, u16), String> {
    let (host, port) = node
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid Redis node {node:?}: expected \"HOST:PORT\""))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("invalid Redis node {node:?}: the port is not a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("invalid Redis node {node:?}: no host"));
    }
    Ok((host.to_owned(), port))
}

impl TryFrom<RedisRaw> for RedisConfig {
    type Error = String;
    fn try_from(raw: RedisRaw) -> Result<Self, String> {
        if !cfg!(feature = "redis") {
            return Err(feature_off("a Redis tier", "redis"));
        }
        if raw.password.is_some() {
            return Err(at_field("password", InlineSecret::MESSAGE_PASSWORD));
        }
        let (mode, nodes) = match (&raw.url, raw.nodes.is_empty()) {
            (Some(_), false) => {
                return Err(at_field(
                    "nodes",
                    "give the Redis servers as a `url` or as `nodes`, not both",
                ));
            }
            (None, true) => return Err("a Redis tier needs a `url`, or a `mode` and `nodes`".into()),
            (Some(url), true) => {
                let from_url = redis_url_mode(url).map_err(|e| at_field("url", e))?;
                if let Some(mode) = raw.mode.filter(|mode| *mode != from_url) {
                    return Err(at_field(
                        "mode",
                        format!("the Redis URL's scheme says {from_url:?} mode but `mode` says {mode:?}"),
                    ));
                }
                (from_url, Vec::new())
            }
            (None, false) => {
                let mode = raw.mode.unwrap_or(RedisMode::Standalone);
                let nodes = raw
                    .nodes
                    .iter()
                    .map(|n| host_port(n))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| at_field("nodes", e))?;
                if mode == RedisMode::Standalone && nodes.len() != 1 {
                    return Err(at_field("nodes", "a standalone Redis tier has exactly one node"));
                }
                if mode == RedisMode::Sentinel && raw.service_name.is_none() {
                    return Err(at_field("mode", "a sentinel Redis tier needs a `service_name`"));
                }
                (mode, nodes)
            }
        };
        longer_than_zero(&[
            ("read_timeout", raw.read_timeout),
            ("write_timeout", raw.write_timeout),
            ("invalidate_timeout", raw.invalidate_timeout),
            ("purge_timeout", raw.purge_timeout),
        ])?;
        if raw.service_name.is_some() && !(mode == RedisMode::Sentinel && raw.url.is_none()) {
            return Err(at_field(
                "service_name",
                "`service_name` is for `mode = \"sentinel\"` with `nodes` (a URL names it itself)",
            ));
        }
        Ok(RedisConfig {
            url: raw.url,
            mode,
            nodes,
            service_name: raw.service_name,
            username: raw.username,
            password_env: raw.password_env,
            database: raw.database,
            pool_size: raw.pool_size,
            key_prefix: raw.key_prefix,
            label: raw.label,
            read_timeout: raw.read_timeout,
            write_timeout: raw.write_timeout,
            invalidate_timeout: raw.invalidate_timeout,
            purge_timeout: raw.purge_timeout,
            connection_timeout: raw.connection_timeout,
            unresponsive_after: raw.unresponsive_after,
            tag_grace: raw.tag_grace,
            max_entry_size: raw.max_entry_size,
            failure_threshold: raw.failure_threshold,
            cool_down: raw.cool_down,
            wait_connected: raw.wait_connected,
        })
    }
}

/// A secret written into the file itself: always refused, with the reason.
#[derive(Debug, Clone)]
pub(crate) struct InlineSecret;

impl InlineSecret {
    const MESSAGE_KEY: &'static str = "an encryption key written in the config file is refused: config files end up \
        in version control, backups, images and logs, where the key would leak with them; give the name of an \
        environment variable that holds it (`key_env = \"NAME\"`) or a file that holds it (`key_file = \"PATH\"`)";
    const MESSAGE_PASSWORD: &'static str = "a Redis password written in the config file is refused: config files \
        end up in version control, backups, images and logs; give the name of an environment variable that holds \
        it (`password_env = \"NAME\"`)";
}

impl<'de> Deserialize<'de> for InlineSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read the value whatever it is, so that the error is this one and
        // not a type error; never keep or show it.
        let _ = de::IgnoredAny::deserialize(deserializer)?;
        Ok(InlineSecret)
    }
}

/// A tier's stages.
///
/// ```toml
/// stages = { compression = "zstd", level = 3, min_compress_size = "1 KiB" }
/// stages = { encryption = { key_env = "HITBOX_MASTER_KEY" } }
/// stages = { encryption = { key_file = "/run/secrets/hitbox-key", tenant = "shop" } }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "StagesRaw")]
pub struct StagesConfig {
    /// The compressor.
    pub compression: hitbox_backend::Compression,
    /// Entries smaller than this are stored uncompressed.
    pub min_compress_size: Option<ConfigSize>,
    /// Entries that would decompress to more are refused.
    pub max_decompressed: Option<ConfigSize>,
    /// The encryption stage, if any.
    pub encryption: Option<EncryptionConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StagesRaw {
    compression: Option<CompressionName>,
    level: Option<i32>,
    min_compress_size: Option<ConfigSize>,
    max_decompressed: Option<ConfigSize>,
    encryption: Option<EncryptionConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompressionName {
    None,
    Zstd,
    Lz4,
}

impl<'de> Deserialize<'de> for CompressionName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        choice(deserializer, |name| match name {
            "none" => Ok(CompressionName::None),
            "zstd" if cfg!(feature = "zstd") => Ok(CompressionName::Zstd),
            "zstd" => Err(feature_off("zstd compression", "zstd")),
            "lz4" if cfg!(feature = "lz4") => Ok(CompressionName::Lz4),
            "lz4" => Err(feature_off("lz4 compression", "lz4")),
            other => Err(format!(
                "unknown compression {other:?}: expected one of \"none\", \"zstd\", \"lz4\""
            )),
        })
    }
}

impl TryFrom<StagesRaw> for StagesConfig {
    type Error = String;
    fn try_from(raw: StagesRaw) -> Result<Self, String> {
        use hitbox_backend::Compression;
        let name = raw.compression.unwrap_or(CompressionName::None);
        if raw.level.is_some() && name != CompressionName::Zstd {
            return Err(at_field("level", "`level` is for `compression = \"zstd\"`"));
        }
        let compression = match name {
            CompressionName::None => Compression::None,
            #[cfg(feature = "zstd")]
            CompressionName::Zstd => {
                let level = raw.level.unwrap_or(3);
                if !(1..=22).contains(&level) {
                    return Err(at_field(
                        "level",
                        format!("zstd `level` {level} is out of range: expected 1 to 22"),
                    ));
                }
                Compression::zstd(level)
            }
            #[cfg(feature = "lz4")]
            CompressionName::Lz4 => Compression::Lz4,
            #[allow(unreachable_patterns)]
            _ => unreachable!("names of compressions whose feature is off are refused while parsing"),
        };
        Ok(StagesConfig {
            compression,
            min_compress_size: raw.min_compress_size,
            max_decompressed: raw.max_decompressed,
            encryption: raw.encryption,
        })
    }
}

/// Where an encryption key comes from: never the file itself.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable holding 64 hex digits.
    Env(String),
    /// A file holding 64 hex digits (surrounding white space, such as a
    /// final newline, is ignored) or exactly 32 raw bytes.
    File(PathBuf),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(name) => write!(f, "Env({name:?})"),
            KeySource::File(path) => write!(f, "File({path:?})"),
        }
    }
}

/// `encryption = { key_env = "NAME" }` or `{ key_file = "PATH" }`, with an
/// optional `tenant`, and `previous_key_envs` / `previous_key_files` for
/// keys being rotated out (entries they sealed are still read). A `key`
/// written inline is refused (feature `encryption`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "EncryptionRaw")]
pub struct EncryptionConfig {
    /// The current key.
    pub key: KeySource,
    /// Keys that are still accepted to read entries.
    pub previous: Vec<KeySource>,
    /// The tenant the key is derived for.
    pub tenant: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionRaw {
    key_env: Option<String>,
    key_file: Option<PathBuf>,
    #[serde(default, alias = "master_key", alias = "key_hex", alias = "secret")]
    key: Option<InlineSecret>,
    tenant: Option<String>,
    #[serde(default)]
    previous_key_envs: Vec<String>,
    #[serde(default)]
    previous_key_files: Vec<PathBuf>,
}

impl TryFrom<EncryptionRaw> for EncryptionConfig {
    type Error = String;
    fn try_from(raw: EncryptionRaw) -> Result<Self, String> {
        if raw.key.is_some() {
            return Err(at_field("key", InlineSecret::MESSAGE_KEY));
        }
        if !cfg!(feature = "encryption") {
            return Err(at_field(
                "encryption",
                feature_off("the encryption stage", "encryption"),
            ));
        }
        let key = match (raw.key_env, raw.key_file) {
            (Some(name), None) if !name.is_empty() => KeySource::Env(name),
            (None, Some(path)) if !path.as_os_str().is_empty() => KeySource::File(path),
            (Some(_), Some(_)) => {
                return Err(at_field(
                    "key_file",
                    "give the key as `key_env` or as `key_file`, not both",
                ));
            }
            _ => {
                return Err(
                    "the encryption stage needs `key_env = \"NAME\"` or `key_file = \"PATH\"`".into(),
                );
            }
        };
        let previous = raw
            .previous_key_envs
            .into_iter()
            .map(KeySource::Env)
            .chain(raw.previous_key_files.into_iter().map(KeySource::File))
            .collect();
        Ok(EncryptionConfig {
            key,
            previous,
            tenant: raw.tenant,
        })
    }
}

/// `[composition]`: how tiers stack (`hitbox_backend::CompositionBuilder`),
/// applied between each tier and the ones behind it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositionConfig {
    /// `"sequential"` (L1, then L2), `"race"` or `"parallel"`.
    pub read: Option<ReadPolicyName>,
    /// `"sequential"`, `"optimistic_parallel"` or `"write_behind"`.
    pub write: Option<WritePolicyName>,
    /// `"always"`, `"never"` or `{ one_in = N }`.
    pub refill: Option<RefillConfig>,
    /// The longest TTL an entry copied into L1 gets.
    pub refill_max_ttl: Option<ConfigDuration>,
    /// Scales the TTL of what L1 stores.
    pub l1_ttl_scale: Option<f64>,
    /// Scales the TTL of what L2 stores.
    pub l2_ttl_scale: Option<f64>,
    /// Consecutive failures before a tier's breaker opens.
    pub failure_threshold: Option<u32>,
    /// How long an open breaker keeps a tier out.
    pub cool_down: Option<ConfigDuration>,
    /// The composition's label in metrics and spans.
    pub label: Option<String>,
}

/// A read policy.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPolicyName {
    /// L1, then L2 on a miss or an error.
    Sequential,
    /// Both at once; the first hit wins.
    Race,
    /// Both at once; the fresher entry wins.
    Parallel,
}

/// A write policy.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WritePolicyName {
    /// L1, then L2.
    Sequential,
    /// Both at once; succeeds if either does.
    OptimisticParallel,
    /// L1 now, L2 in the background.
    WriteBehind,
}

/// A refill policy.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RefillConfig {
    /// Every fresh L2 hit is copied into L1.
    Always,
    /// Nothing is copied.
    Never,
    /// One hit in N is copied.
    OneIn(u32),
}

/// `[layer]`: the HTTP layer (`hitbox_tower::CacheLayerBuilder`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSection {
    /// The name in `Cache-Status` (default `hitbox`).
    pub name: Option<String>,
    /// Also set `X-Cache`.
    #[serde(default)]
    pub x_cache_header: bool,
    /// How long a key whose response was not storable bypasses the cache.
    pub hit_for_pass: Option<ConfigDuration>,
    /// How long a request waits for another's load of the same key.
    pub lock_timeout: Option<ConfigDuration>,
    /// A lock per key shared by every instance, in the first Redis tier.
    pub distributed_lock: Option<LockConfig>,
}

/// `distributed_lock = { lease = "10s" }` (feature `redis`; needs a Redis
/// tier).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// How long a lock is held without renewal.
    pub lease: Option<ConfigDuration>,
    /// How often a waiter polls when it missed the announcement.
    pub poll_interval: Option<ConfigDuration>,
    /// The timeout of one lock command.
    pub command_timeout: Option<ConfigDuration>,
}

/// `[bus]`: the invalidation bus (`hitbox_redis::invalidation::InvalidationBus`,
/// feature `redis`). Deletes, tag invalidations and purges made by one
/// instance are published on a Redis channel, and every other instance
/// applies them to its in-process tiers, which would otherwise serve what
/// was invalidated until it expires.
///
/// The bus runs over the first Redis tier, through its connections (its
/// URL, password and timeouts), and keeps in step the tiers in front of
/// it: the file needs a `moka` (or `memory`) tier before its first Redis
/// tier. Every field is optional; `[bus]` alone starts it with the
/// defaults.
///
/// ```toml
/// [bus]
/// channel = "shop:invalidations"    # default: the Redis tier's key_prefix + "#invalidations"
/// origin_env = "HOSTNAME"           # this instance's id, from the environment (default: a random one)
/// degraded_ttl = "5s"               # L1 lifetimes while the subscription is down
/// purge_on_resubscribe = true       # empty L1 after a loss it cannot catch up on
/// publish_timeout = "1s"
/// retry_interval = "500ms"
/// stream_poll_interval = "1s"
/// wait_subscribed = "5s"            # build waits this long for the subscription (default: no wait)
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "BusRaw")]
pub struct BusConfig {
    /// The channel (default: the Redis tier's key prefix followed by
    /// `#invalidations`). Every instance that shares the cache uses the
    /// same one.
    pub channel: Option<String>,
    /// The environment variable that holds this instance's id (a host name,
    /// a pod name): the origin of its messages, of the first Redis tier's
    /// audit stream entries, and the name of its consumer group in that
    /// stream; 1 to 128 printable ASCII characters without spaces. Default:
    /// a random id per start. An id written in the
    /// file is refused: every instance reading the file would have the same
    /// one, and each would skip the others' messages as its own.
    pub origin_env: Option<String>,
    /// How long in-process entries are trusted while the subscription is
    /// down (default 5 s).
    pub degraded_ttl: Option<ConfigDuration>,
    /// Whether the in-process tiers are emptied when the subscription comes
    /// back after a loss that the audit stream cannot account for (default
    /// `true`).
    pub purge_on_resubscribe: Option<bool>,
    /// The timeout of one `PUBLISH` (default 1 s).
    pub publish_timeout: Option<ConfigDuration>,
    /// How often to subscribe again while the subscription is down
    /// (default 500 ms).
    pub retry_interval: Option<ConfigDuration>,
    /// How often, while subscribed, the audit stream is read for what
    /// pub/sub did not deliver (default 1 s).
    pub stream_poll_interval: Option<ConfigDuration>,
    /// How long `build` waits for the subscription (default: it does not
    /// wait; until it is up, in-process lifetimes are capped at
    /// `degraded_ttl`).
    pub wait_subscribed: Option<ConfigDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BusRaw {
    channel: Option<String>,
    origin_env: Option<String>,
    #[serde(default)]
    origin: Option<InlineOrigin>,
    degraded_ttl: Option<ConfigDuration>,
    purge_on_resubscribe: Option<bool>,
    publish_timeout: Option<ConfigDuration>,
    retry_interval: Option<ConfigDuration>,
    stream_poll_interval: Option<ConfigDuration>,
    wait_subscribed: Option<ConfigDuration>,
}

/// An origin id written in the file: refused, with the reason.
struct InlineOrigin;

impl<'de> Deserialize<'de> for InlineOrigin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _ = de::IgnoredAny::deserialize(deserializer)?;
        Ok(InlineOrigin)
    }
}

impl TryFrom<BusRaw> for BusConfig {
    type Error = String;
    fn try_from(raw: BusRaw) -> Result<Self, String> {
        if !cfg!(feature = "redis") {
            return Err(feature_off("the invalidation bus", "redis"));
        }
        if raw.origin.is_some() {
            return Err(at_field(
                "origin",
                "an origin id written in the config file is refused: every instance that reads the file \
                 would have the same one, and each would skip the others' messages as its own; give the \
                 name of an environment variable that holds it (`origin_env = \"HOSTNAME\"`), or leave it \
                 out for a random one",
            ));
        }
        if let Some(channel) = &raw.channel
            && (channel.is_empty() || channel.chars().any(char::is_control))
        {
            return Err(at_field(
                "channel",
                format!("invalid channel {channel:?}: expected a non-empty name without control characters"),
            ));
        }
        if raw.origin_env.as_deref() == Some("") {
            return Err(at_field(
                "origin_env",
                "`origin_env` names an environment variable: it is not empty",
            ));
        }
        longer_than_zero(&[
            ("degraded_ttl", raw.degraded_ttl),
            ("publish_timeout", raw.publish_timeout),
            ("retry_interval", raw.retry_interval),
            ("stream_poll_interval", raw.stream_poll_interval),
        ])?;
        Ok(BusConfig {
            channel: raw.channel,
            origin_env: raw.origin_env,
            degraded_ttl: raw.degraded_ttl,
            purge_on_resubscribe: raw.purge_on_resubscribe,
            publish_timeout: raw.publish_timeout,
            retry_interval: raw.retry_interval,
            stream_poll_interval: raw.stream_poll_interval,
            wait_subscribed: raw.wait_subscribed,
        })
    }
}

/// An HTTP method name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodName(pub http::Method);

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        choice(deserializer, |name| {
            http::Method::from_bytes(name.as_bytes())
                .map(MethodName)
                .map_err(|_| format!("invalid HTTP method {name:?}: expected a token such as \"GET\""))
        })
    }
}

/// A header name, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNameConfig(pub http::HeaderName);

impl<'de> Deserialize<'de> for HeaderNameConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        choice(deserializer, |name| {
            http::HeaderName::from_bytes(name.as_bytes())
                .map(HeaderNameConfig)
                .map_err(|_| format!("invalid header name {name:?}"))
        })
    }
}

/// A path pattern such as `/users/{id}` (`hitbox_tower::path::PathPattern`).
#[derive(Debug, Clone)]
pub struct PathPatternConfig(pub hitbox_tower::path::PathPattern);

impl<'de> Deserialize<'de> for PathPatternConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        choice(deserializer, |text| {
            hitbox_tower::path::PathPattern::parse(text)
                .map(PathPatternConfig)
                .map_err(|e| format!("invalid path pattern {text:?}: {e}"))
        })
    }
}

/// One rule (`hitbox_tower::Rule`). Every field is optional; a rule with
/// none caches every `GET` with the safe defaults.
///
/// ```toml
/// [[rules]]
/// namespace = "products"
/// when = { path_prefix = "/products/", headers = [{ name = "authorization", present = false }] }
/// key = ["method", "path", { query_named = ["page", "lang"] }, { header = "accept-language" }]
/// policy = { ttl = "5m", stale_while_revalidate = "1m" }
/// tags = ["catalog"]
/// max_body_size = "1 MiB"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RuleRaw")]
pub struct RuleConfig {
    /// Which requests the rule applies to.
    pub when: Option<WhenConfig>,
    /// Which responses are stored (instead of the default statuses).
    pub store_when: Option<StoreWhenConfig>,
    /// The key's parts, in order (default: method, scheme and host, path,
    /// query).
    pub key: Option<Vec<KeyPartConfig>>,
    /// The key namespace (default `http`).
    pub namespace: Option<String>,
    /// The policy (default: the cache's).
    pub policy: Option<PolicyConfig>,
    /// Tags on every stored response.
    pub tags: Vec<String>,
    /// The methods cached (default `GET`).
    pub methods: Option<Vec<MethodName>>,
    /// The largest response body stored.
    pub max_body_size: Option<ConfigSize>,
    /// Cache requests with `Authorization` (keyed by it, as a digest).
    pub cache_authorized: Option<bool>,
    /// Cache requests with `Cookie` (keyed by them, as a digest).
    pub cache_with_cookies: Option<bool>,
    /// Store responses that set a cookie.
    pub store_set_cookie: Option<bool>,
    /// Store `Cache-Control: private` responses.
    pub store_private: Option<bool>,
    /// Cache `POST`s as reads, keyed by their body.
    pub post_as_read: Option<BodyKeyConfig>,
    /// The GraphQL preset (feature `json`).
    pub graphql: bool,
    /// The largest request body read for a body key.
    pub request_body_limit: Option<ConfigSize>,
    /// Unsafe requests drop what this rule stored for their path.
    pub invalidate_on_unsafe: Option<bool>,
    /// Misses take the layer's distributed lock.
    pub distributed_lock: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleRaw {
    when: Option<WhenConfig>,
    store_when: Option<StoreWhenConfig>,
    key: Option<Vec<KeyPartConfig>>,
    namespace: Option<String>,
    policy: Option<PolicyConfig>,
    #[serde(default)]
    tags: Vec<String>,
    methods: Option<Vec<MethodName>>,
    max_body_size: Option<ConfigSize>,
    cache_authorized: Option<bool>,
    cache_with_cookies: Option<bool>,
    store_set_cookie: Option<bool>,
    store_private: Option<bool>,
    post_as_read: Option<BodyKeyConfig>,
    #[serde(default)]
    graphql: bool,
    request_body_limit: Option<ConfigSize>,
    invalidate_on_unsafe: Option<bool>,
    distributed_lock: Option<bool>,
}

impl TryFrom<RuleRaw> for RuleConfig {
    type Error = String;
    fn try_from(raw: RuleRaw) -> Result<Self, String> {
        if raw.graphql && !cfg!(feature = "json") {
            return Err(at_field("graphql", feature_off("the GraphQL preset", "json")));
        }
        if raw.graphql && raw.post_as_read.is_some() {
            return Err(at_field(
                "post_as_read",
                "`graphql` keys requests by their query: it cannot be combined with `post_as_read`",
            ));
        }
        if raw.graphql && raw.methods.is_some() {
            return Err(at_field(
                "methods",
                "`graphql` caches GET and POST: it cannot be combined with `methods`",
            ));
        }
        if matches!(
            raw.post_as_read,
            Some(BodyKeyConfig::Json | BodyKeyConfig::JsonFields(_))
        ) && !cfg!(feature = "json")
        {
            return Err(at_field("post_as_read", feature_off("a JSON body key", "json")));
        }
        if let Some(tag) = raw.tags.iter().find(|tag| tag.is_empty()) {
            return Err(at_field(
                "tags",
                format!("invalid tag {tag:?}: tags are not empty"),
            ));
        }
        Ok(RuleConfig {
            when: raw.when,
            store_when: raw.store_when,
            key: raw.key,
            namespace: raw.namespace,
            policy: raw.policy,
            tags: raw.tags,
            methods: raw.methods,
            max_body_size: raw.max_body_size,
            cache_authorized: raw.cache_authorized,
            cache_with_cookies: raw.cache_with_cookies,
            store_set_cookie: raw.store_set_cookie,
            store_private: raw.store_private,
            post_as_read: raw.post_as_read,
            graphql: raw.graphql,
            request_body_limit: raw.request_body_limit,
            invalidate_on_unsafe: raw.invalidate_on_unsafe,
            distributed_lock: raw.distributed_lock,
        })
    }
}

/// Which requests a rule applies to: every condition given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenConfig {
    /// The method is one of these.
    #[serde(default)]
    pub methods: Vec<MethodName>,
    /// The path is exactly this.
    pub path: Option<String>,
    /// The path starts with this.
    pub path_prefix: Option<String>,
    /// The path matches this pattern (`/users/{id}`).
    pub path_pattern: Option<PathPatternConfig>,
    /// The path starts with none of these.
    #[serde(default)]
    pub not_path_prefix: Vec<String>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HeaderCondition>,
    /// Query parameter conditions.
    #[serde(default)]
    pub query: Vec<QueryCondition>,
}

/// A condition on a header: exactly one of `present`, `equals`, `one_of`,
/// `contains`; `negate = true` turns it round.
///
/// ```toml
/// headers = [{ name = "authorization", present = false }, { name = "accept", contains = "json" }]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "HeaderConditionRaw")]
pub struct HeaderCondition {
    /// The header.
    pub name: HeaderNameConfig,
    /// The test.
    pub test: ValueTest,
    /// Whether the test is turned round.
    pub negate: bool,
}

/// What a header or query condition tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueTest {
    /// Present (`true`) or absent (`false`).
    Present(bool),
    /// Equal to this value.
    Equals(String),
    /// Equal to one of these.
    OneOf(Vec<String>),
    /// Contains this text (headers only).
    Contains(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderConditionRaw {
    name: HeaderNameConfig,
    present: Option<bool>,
    equals: Option<String>,
    one_of: Option<Vec<String>>,
    contains: Option<String>,
    #[serde(default)]
    negate: bool,
}

fn one_test(
    present: Option<bool>,
    equals: Option<String>,
    one_of: Option<Vec<String>>,
    contains: Option<String>,
    what: &str,
) -> Result<ValueTest, String> {
    let tests = [
        present.map(ValueTest::Present),
        equals.map(ValueTest::Equals),
        one_of.map(ValueTest::OneOf),
        contains.map(ValueTest::Contains),
    ];
    let mut given = tests.into_iter().flatten();
    match (given.next(), given.next()) {
        (Some(test), None) => Ok(test),
        _ => Err(format!(
            "a {what} condition has exactly one of {}",
            match what {
                "header" => "`present`, `equals`, `one_of`, `contains`",
                _ => "`present`, `equals`, `one_of`",
            }
        )),
    }
}

impl TryFrom<HeaderConditionRaw> for HeaderCondition {
    type Error = String;
    fn try_from(raw: HeaderConditionRaw) -> Result<Self, String> {
        Ok(HeaderCondition {
            name: raw.name,
            test: one_test(raw.present, raw.equals, raw.one_of, raw.contains, "header")?,
            negate: raw.negate,
        })
    }
}

/// A condition on a query parameter (after percent-decoding): exactly one
/// of `present`, `equals`, `one_of`; `negate = true` turns it round.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "QueryConditionRaw")]
pub struct QueryCondition {
    /// The parameter.
    pub name: String,
    /// The test.
    pub test: ValueTest,
    /// Whether the test is turned round.
    pub negate: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryConditionRaw {
    name: String,
    present: Option<bool>,
    equals: Option<String>,
    one_of: Option<Vec<String>>,
    #[serde(default)]
    negate: bool,
}

impl TryFrom<QueryConditionRaw> for QueryCondition {
    type Error = String;
    fn try_from(raw: QueryConditionRaw) -> Result<Self, String> {
        Ok(QueryCondition {
            name: raw.name,
            test: one_test(raw.present, raw.equals, raw.one_of, None, "query")?,
            negate: raw.negate,
        })
    }
}

/// Which responses a rule stores: the status is one of `status`, or in one
/// of `status_class` (when either is given), and every header condition
/// holds. Cookies, `private`, `no-store` and size are checked on top.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreWhenConfig {
    /// Status codes.
    #[serde(default)]
    pub status: Vec<u16>,
    /// Status classes: `"informational"`, `"success"`, `"redirection"`,
    /// `"client_error"`, `"server_error"`.
    #[serde(default)]
    pub status_class: Vec<StatusClassName>,
    /// Header conditions on the response.
    #[serde(default)]
    pub headers: Vec<HeaderCondition>,
}

/// A status class.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusClassName {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
}

/// One part of a key, in order.
///
/// ```toml
/// key = ["default"]                                   # method, scheme and host, path, query
/// key = ["method", "scheme_host", "path", "query"]    # the same, spelled out
/// key = ["method", "path", { query_named = ["q", "page"] }, { header = "accept-language" }]
/// key = [{ constant = { name = "route", value = "user" } }, { path_params = "/users/{id}" }]
/// key = ["default", { sensitive_header = "x-api-key" }]  # a digest, never the value
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyPartConfig {
    /// Method, scheme and host, path and the whole query.
    Default,
    /// The method.
    Method,
    /// The scheme and the host.
    SchemeHost,
    /// The path.
    Path,
    /// The whole query, sorted by name.
    Query,
    /// These query parameters only.
    QueryNamed(Vec<String>),
    /// A header's value.
    Header(HeaderNameConfig),
    /// A header's value, making the stored key a digest.
    SensitiveHeader(HeaderNameConfig),
    /// The parameters a path pattern captures.
    PathParams(PathPatternConfig),
    /// A constant part.
    Constant {
        /// The part's name.
        name: String,
        /// The part's value.
        value: String,
    },
}

/// What of a `POST` body enters the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BodyKeyConfig {
    /// The body's digest.
    Digest,
    /// The body as canonical JSON (feature `json`).
    Json,
    /// These JSON Pointers of the body (feature `json`).
    JsonFields(Vec<String>),
}

/// `[standards]`: the layer as an RFC 9111 shared cache
/// (`hitbox_tower::rfc9111::Rfc9111`); rules are then not allowed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandardsConfig {
    /// The fraction of the time since `Last-Modified` a response without
    /// explicit freshness is fresh for.
    pub heuristic_fraction: Option<f64>,
    /// The longest heuristic freshness.
    pub heuristic_max: Option<ConfigDuration>,
    /// Targeted fields obeyed first (feature `targeted-fields`).
    #[serde(default)]
    pub targeted_fields: Vec<TargetedField>,
    /// How long a stale response with validators is kept.
    pub keep_stale: Option<ConfigDuration>,
    /// The largest body stored.
    pub max_body_size: Option<ConfigSize>,
    /// Request fields in every key.
    #[serde(default)]
    pub key_fields: Vec<HeaderNameConfig>,
    /// Refuse responses with `Set-Cookie` instead of storing them without it.
    pub refuse_set_cookie: Option<bool>,
    /// How stale a response may be to stand in for an unreachable origin.
    pub stale_if_disconnected: Option<ConfigDuration>,
    /// A private cache instead of a shared one.
    pub private_cache: Option<bool>,
}

/// A targeted cache-control field name (feature `targeted-fields`).
#[derive(Debug, Clone)]
pub struct TargetedField(pub String);

impl<'de> Deserialize<'de> for TargetedField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        choice(deserializer, |name| {
            if !cfg!(feature = "targeted-fields") {
                return Err(feature_off("targeted fields", "targeted-fields"));
            }
            http::HeaderName::from_bytes(name.as_bytes())
                .map(|_| TargetedField(name.to_ascii_lowercase()))
                .map_err(|_| format!("invalid header name {name:?}"))
        })
    }
}
