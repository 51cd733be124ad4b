//! A caching reverse proxy: hitbox in standards mode (an RFC 9111 shared
//! cache) in front of one upstream, over a pooled hyper client. The
//! `proxy` example is a thin `main` around this module; the integration
//! tests in `examples/tests/proxy.rs` drive it over real TCP.
//!
//! ```text
//! cargo run --release --example proxy -- --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080
//! cargo run --release --example proxy -- --upstream http://127.0.0.1:8000 --redis redis://127.0.0.1:6379
//! cargo run --release --example proxy -- --help
//! ```
//!
//! # Flags
//!
//! | flag | default | meaning |
//! |---|---|---|
//! | `--upstream URL` | required | the origin, `http://HOST[:PORT]` |
//! | `--listen ADDR:PORT` | `127.0.0.1:8080` | where the proxy accepts plain HTTP/1.1 |
//! | `--redis URL` | none (moka only) | a Redis tier behind the 256 MiB moka tier |
//! | `--config FILE` | none | the cache layer (tiers, standards options) from a TOML or YAML file, instead of `--redis` and `--stale-if-disconnected` (taken by the `proxy` example's `main`, see [`crate::config_arg`]) |
//! | `--trust-forwarded` | off | keep the client's forwarding fields, append to them, and key by them |
//! | `--drop-header NAME` | (repeatable) | one more request field to remove |
//! | `--no-default-drops` | off | start the drop list empty instead of with the four below |
//! | `--connect-timeout SECS` | `5` | longest TCP connect to the upstream |
//! | `--response-timeout SECS` | `30` | longest wait for the upstream's response head |
//! | `--idle-timeout SECS` | `30` | longest gap between two frames of the upstream's body |
//! | `--stale-if-disconnected SECS` | `10` | how stale a stored response may be to stand in for an upstream that fails (`0`: off) |
//! | `-h`, `--help` | | the usage, with defaults, on stdout; exit status 0 |
//!
//! Values may be given as `--flag VALUE` or `--flag=VALUE`. Timeouts are
//! seconds, fractions allowed (`0.5`), and must be above zero. A flag this
//! proxy does not know, a missing value or a bad value prints the usage on
//! stderr and exits with status 2.
//!
//! # Why the proxy rewrites requests before the cache sees them
//!
//! A shared cache stores one client's response and hands it to others. Any
//! request field the origin reads but the cache key ignores is a way for
//! one client to put content in front of everybody else (web cache
//! poisoning), or to read what was meant for someone else. So every
//! rewrite below happens *before* the request reaches the cache layer: the
//! key is built from exactly the request the origin will see. In order:
//!
//! 1. **Hop-by-hop fields are removed** (`Connection`, `Keep-Alive`, `TE`,
//!    `Transfer-Encoding`, `Upgrade`, `Proxy-Authorization`, ... and every
//!    field `Connection` names). Doing this first means a client cannot use
//!    `Connection: x-forwarded-for` to remove a field after it was keyed.
//! 2. **Dropped fields are removed.** By default `X-Original-URL`,
//!    `X-Rewrite-URL`, `X-HTTP-Method-Override` and `X-Forwarded-Server`:
//!    frameworks that honour them route or dispatch on them, so a cached
//!    `/` could carry the body of `/admin`, or a cached `GET` the effect of
//!    a `DELETE`. `--drop-header NAME` adds a field (any number of times);
//!    `--no-default-drops` starts from an empty list, so the flags combine
//!    as "the defaults unless `--no-default-drops`, plus every
//!    `--drop-header`", whatever their order. `Host` cannot be dropped: it
//!    is the key's host. The proxy cannot know every field an origin
//!    reads; other candidates are `X-Forwarded-Port`, `X-Forwarded-Scheme`,
//!    `X-Host` and `X-Real-IP`, and an origin that varies on a field should
//!    say so with `Vary`, which the cache obeys.
//! 3. **Forwarding fields are the proxy's own.** By default
//!    `X-Forwarded-For` is the client's socket address (IP only),
//!    `X-Forwarded-Host` the host the client asked for (below),
//!    `X-Forwarded-Proto` is `http` (all this proxy listens on), and
//!    `Forwarded` (RFC 7239) is one element saying the same:
//!    `for=192.0.2.7;host="example.com:8080";proto=http`, with an IPv6
//!    address quoted and bracketed (`for="[2001:db8::7]"`). Whatever the
//!    client sent in these four fields is *replaced*, not appended to: the
//!    client is not trusted to say where it comes from. This is stricter
//!    than the usual nginx setup, whose `$proxy_add_x_forwarded_for`
//!    appends the client's address to the client's own `X-Forwarded-For`,
//!    and than Varnish, which also appends in its built-in VCL and passes
//!    `X-Forwarded-Host`/`-Proto` through untouched; in both, the cache
//!    key ignores these fields.
//!
//!    With `--trust-forwarded` (for a proxy behind another proxy or a load
//!    balancer that is trusted to set them), the client's values are kept:
//!    the client's IP is appended to `X-Forwarded-For`, an element for this
//!    hop (`for`, `host`, `proto`) is appended to `Forwarded`, and
//!    `X-Forwarded-Host`/`-Proto` are set only when the client sent none.
//!    Then all four fields become part of every cache key
//!    ([`Rfc9111::key_field`]), so that requests which differ in them never
//!    share a stored response. Since `X-Forwarded-For` names the client,
//!    that mostly means one cache entry per client chain: the price of
//!    letting the origin read them. With `--config FILE`, the file's
//!    `[standards]` section must list the four in `key_fields`, or the
//!    proxy refuses to start ([`fits_config`]).
//! 4. **Host.** The key's host is the request's `Host` field, else the
//!    authority of an absolute-form target (`GET http://example.com/ ...`).
//!    The upstream is sent exactly that host, lowercased as the key has
//!    it: when the client gave no `Host` field, the proxy sets one from the
//!    original authority before it rewrites the target to the upstream's
//!    address (otherwise the HTTP client would send the upstream's own
//!    address). `X-Forwarded-Host` and `Forwarded`'s `host` are that host
//!    too. Requests whose host the key and the origin could read
//!    differently are refused with `400` before the cache sees them: more
//!    than one `Host` field, a `Host` that is not a plain `host[:port]`
//!    (user info, a path, bytes that are not ASCII), or one that
//!    disagrees with an absolute-form target. A request with no host at
//!    all (HTTP/1.0) keys with an empty host and reaches the upstream with
//!    the upstream's address as `Host`, the same for every such request.
//!
//! `Via` (`1.1 hitbox`, or `1.0`/`2` after the version received) is added
//! both ways, and hop-by-hop fields are removed from responses too.
//!
//! # What is cached
//!
//! What the upstream's headers say: `Cache-Control` (or
//! `CDN-Cache-Control` and `Surrogate-Control`, which take precedence;
//! `CDN-Cache-Control` is passed on to the next CDN, `Surrogate-Control`
//! is not), `Expires`, validators, `Vary`; responses without
//! freshness information only with a `Last-Modified` (heuristic freshness).
//! Entries live in moka (256 MiB), with Redis behind it with `--redis`.
//! Every response carries `Cache-Status`.
//!
//! # Upstream failures and timeouts
//!
//! - **Connect timeout** (default 5 s): the longest a TCP connection to the
//!   upstream may take. A connection that is refused fails at once.
//! - **Response-head timeout** (default 30 s): from handing the request to
//!   the client pool until the upstream's status line and headers arrive
//!   (so it includes connecting and sending the request body).
//! - **Idle-body timeout** (default 30 s): the longest the proxy waits for
//!   the next frame of the upstream's body. The body may take any total
//!   time as long as it keeps moving; a stall fails it. The status has been
//!   sent by then, so the client sees a cut-off response (the connection
//!   is closed before the body is complete), and nothing is stored.
//!   Long-lived streams (server-sent events) need a longer value.
//!
//! nginx waits 60 s by default for both `proxy_connect_timeout` and
//! `proxy_read_timeout` (the latter between two reads, like the idle
//! timeout here). This proxy connects to one upstream it is configured
//! for, usually nearby, so 5 s for a connect is generous and frees the
//! client sooner when the upstream is down; 30 s for the head and between
//! frames halves how long a stuck upstream holds a client.
//!
//! When the upstream fails before a response head, the cache layer answers
//! with the stored stale response where `stale-if-error` allows it, and
//! otherwise, by default, with one stale for at most 10 s
//! (`--stale-if-disconnected`, RFC 9111 section 4.2.4: `Cache-Status:
//! hitbox; fwd=stale; ttl=-N; detail=stale-if-disconnected`); a stored
//! response that forbids serving it stale (`must-revalidate`,
//! `proxy-revalidate`, `s-maxage`, `no-cache`) gets `504` from the layer.
//! Otherwise the proxy answers itself: `504 Gateway Timeout` for a
//! connect or response-head timeout (`Cache-Status: hitbox; fwd=miss;
//! detail=upstream-timeout`), `502 Bad Gateway` when the upstream cannot
//! be reached (`detail=unreachable`, such as a refused connection) or fails
//! otherwise (`detail=upstream-error`). The error's details go to the log,
//! not to the client.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hitbox_backend::{Cache, Compose, PurgeMode};
use hitbox_moka::MokaBackend;
use hitbox_redis::RedisBackend;
use hitbox_tower::headers::strip_hop_by_hop;
use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::rfc9111::host::{HostError, request_host};
use hitbox_tower::{CacheLayer, PurgeError, Purger};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service, ServiceExt};

/// The request fields removed by default: each makes some frameworks route
/// or dispatch differently from what the request line says.
pub const DEFAULT_DROPPED: [&str; 4] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-forwarded-server",
];

/// The forwarding fields the proxy sets, and keys by when it trusts them.
pub const FORWARDING_FIELDS: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
];

/// Whether a configuration file fits the command line: with
/// `--trust-forwarded` the proxy keeps the client's forwarding fields, so
/// the file's `[standards]` section must key every one of them
/// (`key_fields`), as the proxy's own layer does; otherwise one client
/// could make the origin write what it sent into a response that others
/// are then served. A file in rule mode cannot say so, and is refused with
/// that flag.
pub fn fits_config(config: &Config, file: &hitbox_config::Config) -> Result<(), String> {
    if !config.trust_forwarded {
        return Ok(());
    }
    let Some(standards) = &file.model().standards else {
        return Err(format!(
            "{}: --trust-forwarded keeps the forwarding fields, so they must be in the key: \
             give the file a [standards] section whose key_fields lists {}",
            file.file(),
            FORWARDING_FIELDS.join(", ")
        ));
    };
    let missing: Vec<&str> = FORWARDING_FIELDS
        .into_iter()
        .filter(|name| !standards.key_fields.iter().any(|field| field.0 == *name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}: --trust-forwarded keeps the forwarding fields, so they must be in the key: \
         [standards] key_fields lacks {}",
        file.file(),
        missing.join(", ")
    ))
}

/// The default `--listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default `--connect-timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `--response-timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default `--stale-if-disconnected`: the layer's own default.
pub const DEFAULT_STALE_IF_DISCONNECTED: Duration = hitbox_tower::rfc9111::DEFAULT_STALE_IF_DISCONNECTED;

const VIA: &str = "1.1 hitbox";
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The usage text `--help` prints, with every flag and its default.
pub const USAGE: &str = "\
usage: proxy --upstream http://HOST[:PORT] [OPTIONS]

A caching reverse proxy (an RFC 9111 shared cache) in front of one upstream.

options:
  --upstream URL          the origin to forward to, http:// only (required)
  --listen ADDR:PORT      where to accept HTTP/1.1 (default 127.0.0.1:8080)
  --redis URL             add a Redis tier behind moka (default: moka only)
  --config FILE           build the cache layer from a TOML or YAML file
                          instead of --redis and --stale-if-disconnected
                          (default: none; see examples/config/proxy.toml)
  --trust-forwarded       keep the client's X-Forwarded-For/-Host/-Proto and
                          Forwarded, append this hop, and key the cache by them
                          (default: off; the proxy replaces them with its own)
  --drop-header NAME      also remove this request header before caching and
                          forwarding (repeatable; default: none)
  --no-default-drops      do not remove X-Original-URL, X-Rewrite-URL,
                          X-HTTP-Method-Override, X-Forwarded-Server
                          (default: off; they are removed)
  --connect-timeout SECS  longest TCP connect to the upstream (default 5)
  --response-timeout SECS longest wait for the response head (default 30)
  --idle-timeout SECS     longest gap between two body frames (default 30)
  --stale-if-disconnected SECS
                          serve a stored response stale for at most SECS when
                          the upstream fails or times out (default 10; 0: off)
  --purge-allow LIST      client addresses or CIDRs allowed to send PURGE,
                          comma-separated, e.g. 127.0.0.1,10.0.0.0/8
                          (default: nobody; everyone else gets 405)
  -h, --help              print this help and exit

A connect or response-head timeout answers 504, an unreachable upstream 502,
unless a stale response may be served (stale-if-error, stale-if-disconnected).
";

/// The `Via` entry for a message received in `version`.
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 hitbox",
        Version::HTTP_2 => "2 hitbox",
        _ => VIA,
    })
}

/// Everything the proxy is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The origin, `http://HOST[:PORT]` (only its authority is used).
    pub upstream: Uri,
    /// Where to listen (used by `main`; [`app`] does not bind).
    pub listen: SocketAddr,
    /// The Redis URL of a second tier, if any (used by [`cache`]).
    pub redis: Option<String>,
    /// Whether the client's forwarding fields are kept, appended to and
    /// keyed by, rather than replaced.
    pub trust_forwarded: bool,
    /// The request fields removed before the cache layer.
    pub drop_headers: Vec<HeaderName>,
    /// The longest TCP connect to the upstream.
    pub connect_timeout: Duration,
    /// The longest wait from sending a request to the response head.
    pub response_timeout: Duration,
    /// The longest gap between two frames of a response body.
    pub idle_timeout: Duration,
    /// How stale a stored response may be to stand in for an upstream that
    /// fails (zero: never, beyond what `stale-if-error` allows).
    pub stale_if_disconnected: Duration,
    /// The clients allowed to send `PURGE` (empty: nobody).
    pub purge_allow: Vec<AddrRange>,
}

/// An address, or a CIDR block of addresses (`10.0.0.0/8`, `::1/128`).
/// An IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`) is matched as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    network: IpAddr,
    prefix: u8,
}

impl AddrRange {
    /// Whether `addr` is in the range.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for AddrRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an address or CIDR block");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(AddrRange { network, prefix })
    }
}

impl Config {
    /// The defaults, in front of `upstream`.
    pub fn new(upstream: Uri) -> Self {
        Config {
            upstream,
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
            redis: None,
            trust_forwarded: false,
            drop_headers: DEFAULT_DROPPED
                .iter()
                .map(|name| HeaderName::from_static(name))
                .collect(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            stale_if_disconnected: DEFAULT_STALE_IF_DISCONNECTED,
            purge_allow: Vec::new(),
        }
    }

    /// The standards-mode configuration: targeted fields, and the
    /// forwarding fields in the key when they are trusted.
    pub fn rfc9111(&self) -> Rfc9111 {
        let mut config = Rfc9111::new()
            .targeted_field("cdn-cache-control")
            .targeted_field("surrogate-control")
            .stale_if_disconnected(self.stale_if_disconnected);
        if self.trust_forwarded {
            for name in FORWARDING_FIELDS {
                config = config.key_field(name);
            }
        }
        config
    }
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Run the proxy.
    Run(Box<Config>),
    /// Print [`USAGE`] and exit successfully.
    Help,
}

/// A command line that cannot be used; the message says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn seconds(flag: &str, value: &str) -> Result<Duration, UsageError> {
    let bad = || {
        UsageError(format!(
            "{flag}: expected a number of seconds above zero, got {value:?}"
        ))
    };
    let secs: f64 = value.trim().parse().map_err(|_| bad())?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// Parses the arguments after the program name.
///
/// `--help` anywhere wins over everything else. The drop list is the
/// defaults (unless `--no-default-drops`) plus every `--drop-header`.
pub fn parse_args<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut upstream = None;
    let mut listen = DEFAULT_LISTEN.to_owned();
    let mut redis = None;
    let mut trust_forwarded = false;
    let mut extra_drops = Vec::new();
    let mut default_drops = true;
    let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    let mut response_timeout = DEFAULT_RESPONSE_TIMEOUT;
    let mut idle_timeout = DEFAULT_IDLE_TIMEOUT;
    let mut stale_if_disconnected = DEFAULT_STALE_IF_DISCONNECTED;
    let mut purge_allow = Vec::new();

    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg, None),
        };
        let takes_value = matches!(
            flag.as_str(),
            "--upstream"
                | "--listen"
                | "--redis"
                | "--drop-header"
                | "--connect-timeout"
                | "--response-timeout"
                | "--idle-timeout"
                | "--stale-if-disconnected"
                | "--purge-allow"
        );
        let value = if takes_value {
            match inline {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| UsageError(format!("{flag} needs a value")))?,
            }
        } else if inline.is_some() {
            return Err(UsageError(format!("{flag} takes no value")));
        } else {
            String::new()
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--upstream" => upstream = Some(value),
            "--listen" => listen = value,
            "--redis" => redis = Some(value),
            "--trust-forwarded" => trust_forwarded = true,
            "--no-default-drops" => default_drops = false,
            "--drop-header" => {
                let name = HeaderName::from_bytes(value.trim().as_bytes())
                    .map_err(|_| UsageError(format!("--drop-header: {value:?} is not a header name")))?;
                if name == header::HOST {
                    return Err(UsageError(
                        "--drop-header: Host cannot be dropped (it is the cache key's host)".to_owned(),
                    ));
                }
                extra_drops.push(name);
            }
            "--connect-timeout" => connect_timeout = seconds(&flag, &value)?,
            "--response-timeout" => response_timeout = seconds(&flag, &value)?,
            "--idle-timeout" => idle_timeout = seconds(&flag, &value)?,
            "--stale-if-disconnected" => {
                stale_if_disconnected = match value.trim() {
                    "0" => Duration::ZERO,
                    _ => seconds(&flag, &value)?,
                }
            }
            "--purge-allow" => {
                for item in value.split(',').filter(|item| !item.trim().is_empty()) {
                    purge_allow.push(
                        item.parse()
                            .map_err(|e| UsageError(format!("--purge-allow: {e}")))?,
                    );
                }
            }
            other => return Err(UsageError(format!("unknown argument {other:?}"))),
        }
    }

    let upstream: Uri = upstream
        .ok_or_else(|| UsageError("--upstream is required".to_owned()))?
        .parse()
        .map_err(|e| UsageError(format!("--upstream: {e}")))?;
    if upstream.scheme() != Some(&Scheme::HTTP) || upstream.authority().is_none() {
        return Err(UsageError(
            "--upstream must be an http:// URL with a host".to_owned(),
        ));
    }
    let listen = listen.parse().map_err(|e| UsageError(format!("--listen: {e}")))?;
    let mut config = Config::new(upstream);
    config.listen = listen;
    config.redis = redis;
    config.trust_forwarded = trust_forwarded;
    if !default_drops {
        config.drop_headers.clear();
    }
    for name in extra_drops {
        if !config.drop_headers.contains(&name) {
            config.drop_headers.push(name);
        }
    }
    config.connect_timeout = connect_timeout;
    config.response_timeout = response_timeout;
    config.idle_timeout = idle_timeout;
    config.stale_if_disconnected = stale_if_disconnected;
    config.purge_allow = purge_allow;
    Ok(Command::Run(Box::new(config)))
}

/// The command line as `main` handles it: the configuration to run with,
/// or the exit status after printing the usage (`0` for `--help`, on
/// `stdout`; `2` for a bad command line, with the reason, on `stderr`).
pub fn command_line<I, S>(args: I, stdout: &mut dyn Write, stderr: &mut dyn Write) -> Result<Config, u8>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    match parse_args(args) {
        Ok(Command::Run(config)) => Ok(*config),
        Ok(Command::Help) => {
            let _ = stdout.write_all(USAGE.as_bytes());
            Err(0)
        }
        Err(error) => {
            let _ = writeln!(stderr, "proxy: {error}\n");
            let _ = stderr.write_all(USAGE.as_bytes());
            Err(2)
        }
    }
}

/// How the upstream failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// The TCP connection was not established within the connect timeout.
    ConnectTimeout(Duration),
    /// The response head did not arrive within the response timeout.
    ResponseTimeout(Duration),
    /// The body stalled for longer than the idle timeout.
    IdleTimeout(Duration),
    /// No connection could be made (refused, no route, name not found).
    Unreachable(hyper_util::client::legacy::Error),
    /// The exchange failed after connecting (reset, malformed response).
    Failed(hyper_util::client::legacy::Error),
    /// Reading the response body failed.
    Body(hyper::Error),
}

impl UpstreamError {
    /// Whether the upstream was too slow (rather than absent or broken).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectTimeout(_)
                | UpstreamError::ResponseTimeout(_)
                | UpstreamError::IdleTimeout(_)
        )
    }

    /// The status the proxy answers with: `504` for a timeout, else `502`.
    pub fn status(&self) -> StatusCode {
        if self.is_timeout() {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        }
    }

    /// The `detail` of the `Cache-Status` the proxy answers with.
    pub fn detail(&self) -> &'static str {
        match self {
            _ if self.is_timeout() => "upstream-timeout",
            UpstreamError::Unreachable(_) => "unreachable",
            _ => "upstream-error",
        }
    }

    fn from_client(error: hyper_util::client::legacy::Error, connect_timeout: Duration) -> Self {
        if !error.is_connect() {
            return UpstreamError::Failed(error);
        }
        // hyper-util reports its connect timeout as an `io::Error` of kind
        // `TimedOut` somewhere down the source chain.
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::TimedOut
            {
                return UpstreamError::ConnectTimeout(connect_timeout);
            }
            source = cause.source();
        }
        UpstreamError::Unreachable(error)
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::ConnectTimeout(after) => write!(f, "upstream connect timed out after {after:?}"),
            UpstreamError::ResponseTimeout(after) => {
                write!(f, "upstream response head timed out after {after:?}")
            }
            UpstreamError::IdleTimeout(after) => write!(f, "upstream body stalled for {after:?}"),
            UpstreamError::Unreachable(_) => f.write_str("upstream unreachable"),
            UpstreamError::Failed(_) => f.write_str("upstream request failed"),
            UpstreamError::Body(_) => f.write_str("upstream body failed"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Unreachable(error) | UpstreamError::Failed(error) => Some(error),
            UpstreamError::Body(error) => Some(error),
            _ => None,
        }
    }
}

/// An upstream response body that fails with
/// [`UpstreamError::IdleTimeout`] when the next frame takes longer than the
/// idle timeout. Only time spent waiting on the upstream counts: a client
/// that reads slowly does not make it fire.
#[derive(Debug)]
pub struct IdleTimeout {
    inner: Incoming,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    waiting: bool,
    done: bool,
}

impl IdleTimeout {
    /// Wraps `inner`; must be called inside a Tokio runtime.
    pub fn new(inner: Incoming, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            done: false,
        }
    }
}

impl hyper::body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.waiting {
            // A new wait for the next frame starts now.
            let deadline = Instant::now() + this.idle;
            this.sleep.as_mut().reset(deadline);
            this.waiting = true;
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                match frame {
                    None => {
                        this.done = true;
                        Poll::Ready(None)
                    }
                    Some(Err(error)) => {
                        this.done = true;
                        Poll::Ready(Some(Err(UpstreamError::Body(error))))
                    }
                    Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
                }
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    Poll::Ready(Some(Err(UpstreamError::IdleTimeout(this.idle))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

/// Forwards requests to the upstream over a pooled hyper client, with the
/// connect, response-head and idle-body timeouts.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    authority: Authority,
    connect_timeout: Duration,
    response_timeout: Duration,
    idle_timeout: Duration,
}

impl Upstream {
    /// A client for `config.upstream`, with `config`'s timeouts.
    pub fn new(config: &Config) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        Upstream {
            client: Client::builder(TokioExecutor::new()).build(connector),
            authority: config
                .upstream
                .authority()
                .expect("an upstream with a host")
                .clone(),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            idle_timeout: config.idle_timeout,
        }
    }
}

impl Service<Request<Body>> for Upstream {
    type Response = Response<IdleTimeout>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The client queues requests in its own pool.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        // The host the key was built from goes upstream, lowercased as the
        // key has it: without this, the client would send the upstream's
        // own authority as `Host`.
        if !parts.headers.contains_key(header::HOST)
            && let Ok(host) = request_host(&parts.headers, &parts.uri)
            && let Ok(host) = HeaderValue::from_str(&host)
            && !host.is_empty()
        {
            parts.headers.insert(header::HOST, host);
        }
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some("/".parse().expect("a path"));
        }
        parts.uri = Uri::from_parts(uri).expect("an absolute URI");
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.append(header::VIA, via(parts.version));
        // The upstream connection is this proxy's own: HTTP/1.1.
        parts.version = Version::HTTP_11;
        let client = self.client.clone();
        let (connect_timeout, response_timeout, idle_timeout) =
            (self.connect_timeout, self.response_timeout, self.idle_timeout);
        Box::pin(async move {
            let sent = client.request(Request::from_parts(parts, body));
            let response = match tokio::time::timeout(response_timeout, sent).await {
                Err(_) => return Err(UpstreamError::ResponseTimeout(response_timeout)),
                Ok(Err(error)) => return Err(UpstreamError::from_client(error, connect_timeout)),
                Ok(Ok(response)) => response,
            };
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.headers.append(header::VIA, via(parts.version));
            parts.version = Version::HTTP_11;
            Ok(Response::from_parts(parts, IdleTimeout::new(body, idle_timeout)))
        })
    }
}

/// The cache: moka (256 MiB), with a Redis tier behind it when `redis` is
/// given. Redis may be down at start: moka serves alone until it is back.
pub async fn cache(redis: Option<&str>) -> Result<Cache, String> {
    let moka = MokaBackend::new(256 << 20);
    let Some(url) = redis else {
        eprintln!("proxy: cache tier moka");
        return Ok(Cache::new(moka));
    };
    let redis = RedisBackend::builder()
        .url(url)
        .key_prefix("hitbox-proxy:")
        .label("redis")
        .build()
        .map_err(|e| format!("--redis: {e}"))?;
    if let Err(error) = redis.wait_connected(Duration::from_secs(3)).await {
        eprintln!("proxy: Redis not reachable yet ({error}): moka serves alone until it is");
    }
    eprintln!("proxy: cache tiers moka + redis");
    Ok(Cache::new(moka.compose(redis)))
}

/// The request rewrites made before the cache layer sees a request.
#[derive(Debug)]
struct Front {
    trust_forwarded: bool,
    drop_headers: Vec<HeaderName>,
}

/// Whether `value` is an RFC 9110 token (else it must be quoted).
fn is_token(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `value` as an RFC 7239 value: a token as it is, anything else as a
/// quoted string with `"` and `\` escaped.
fn forwarded_value(value: &[u8], out: &mut Vec<u8>) {
    if is_token(value) {
        out.extend_from_slice(value);
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// The client's address as a forwarding field shows it: IPv4-mapped IPv6
/// addresses (a dual-stack listener) as the IPv4 address they are.
fn client_ip(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The RFC 7239 `Forwarded` element for one hop: `for`, `host`, `proto`.
/// An IPv6 address is bracketed and quoted; an unknown client is
/// `for=unknown`.
pub fn forwarded_element(peer: Option<IpAddr>, host: Option<&[u8]>) -> HeaderValue {
    let mut out = b"for=".to_vec();
    match peer.map(client_ip) {
        Some(IpAddr::V4(v4)) => out.extend_from_slice(v4.to_string().as_bytes()),
        Some(IpAddr::V6(v6)) => out.extend_from_slice(format!("\"[{v6}]\"").as_bytes()),
        None => out.extend_from_slice(b"unknown"),
    }
    if let Some(host) = host {
        out.extend_from_slice(b";host=");
        forwarded_value(host, &mut out);
    }
    out.extend_from_slice(b";proto=http");
    HeaderValue::from_bytes(&out).expect("built from header bytes and escapes")
}

/// Joins every line of `name` with `, `, then `, ` and `last`.
fn appended(headers: &HeaderMap, name: &HeaderName, last: &[u8]) -> HeaderValue {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        if !value.as_bytes().trim_ascii().is_empty() {
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(last);
    HeaderValue::from_bytes(&out).expect("built from header bytes")
}

impl Front {
    /// Rewrites the request the cache layer and the upstream see; `Err`
    /// says why a request is refused (`400`).
    fn rewrite(&self, request: &mut Request<Body>) -> Result<(), HostError> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let headers = request.headers_mut();
        strip_hop_by_hop(headers);
        for name in &self.drop_headers {
            headers.remove(name);
        }
        // Read after stripping, which removes `Host` if `Connection` names
        // it: what the key will see.
        let host = request_host(request.headers(), request.uri())?;
        let host =
            (!host.is_empty()).then(|| HeaderValue::from_str(&host).expect("an authority is a header value"));
        let headers = request.headers_mut();
        if let Some(host) = &host
            && headers.contains_key(header::HOST)
        {
            // The origin gets the host exactly as the key has it.
            headers.insert(header::HOST, host.clone());
        }
        let element = forwarded_element(peer, host.as_ref().map(HeaderValue::as_bytes));
        let ip = peer.map(|peer| client_ip(peer).to_string());

        if self.trust_forwarded {
            if let Some(ip) = &ip {
                let value = appended(headers, &X_FORWARDED_FOR, ip.as_bytes());
                headers.insert(X_FORWARDED_FOR, value);
            }
            let value = appended(headers, &header::FORWARDED, element.as_bytes());
            headers.insert(header::FORWARDED, value);
            if !headers.contains_key(X_FORWARDED_HOST)
                && let Some(host) = &host
            {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
            if !headers.contains_key(X_FORWARDED_PROTO) {
                headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
            }
        } else {
            match &ip {
                Some(ip) => {
                    headers.insert(X_FORWARDED_FOR, HeaderValue::from_str(ip).expect("an IP address"))
                }
                None => headers.remove(X_FORWARDED_FOR),
            };
            headers.insert(header::FORWARDED, element);
            match &host {
                Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
                None => headers.remove(X_FORWARDED_HOST),
            };
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        Ok(())
    }
}

/// The proxy's answer to a request whose host it refuses, as the cache
/// layer would answer it.
fn bad_request(reason: HostError) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("400 Bad Request: {reason}\n")));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let member = match reason {
        HostError::Ambiguous => "hitbox; detail=ambiguous-host",
        HostError::Invalid => "hitbox; detail=invalid-host",
    };
    response
        .headers_mut()
        .insert(CACHE_STATUS, HeaderValue::from_static(member));
    response
        .headers_mut()
        .insert(header::VIA, HeaderValue::from_static(VIA));
    response
}

/// The proxy's own answer when the upstream failed and nothing stored
/// could stand in: `504` for a timeout, `502` otherwise. The details go to
/// the log only.
fn upstream_failed(error: &UpstreamError) -> Response<Body> {
    tracing::warn!(error = %error, cause = ?std::error::Error::source(error), "upstream failed");
    let status = error.status();
    let mut response = Response::new(Body::from(format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )));
    *response.status_mut() = status;
    let cache_status = format!("hitbox; fwd=miss; detail={}", error.detail());
    response.headers_mut().insert(
        CACHE_STATUS,
        HeaderValue::from_str(&cache_status).expect("a header value"),
    );
    response
        .headers_mut()
        .insert(header::VIA, HeaderValue::from_static(VIA));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A plain-text answer of the proxy's own.
fn plain(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::VIA, HeaderValue::from_static(VIA));
    response
}

/// `PURGE URL`: from a client in `allow`, purges what the cache keeps for
/// the URL (every variant), soft with `Hitbox-Purge: soft`; `405` for
/// everyone else (and for a request without a peer address).
async fn purge(purger: &Purger, allow: &[AddrRange], request: Request<Body>) -> Response<Body> {
    // The body means nothing to a purge; only the head is kept.
    let (request, _) = request.into_parts();
    let peer = request
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if !peer.is_some_and(|peer| allow.iter().any(|range| range.contains(peer))) {
        tracing::info!(?peer, "PURGE refused");
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed\n".to_owned(),
        );
    }
    let mode = match request.headers.get("hitbox-purge").map(HeaderValue::as_bytes) {
        None => PurgeMode::Hard,
        Some(value) if value.eq_ignore_ascii_case(b"soft") => PurgeMode::Soft,
        Some(value) if value.eq_ignore_ascii_case(b"hard") => PurgeMode::Hard,
        Some(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: Hitbox-Purge is soft or hard\n".to_owned(),
            );
        }
    };
    match purger.purge_url(&request.uri, &request.headers, mode).await {
        Ok(purged) => plain(StatusCode::OK, format!("purged {purged}\n")),
        Err(PurgeError::Backend(error)) => {
            tracing::warn!(%error, "PURGE failed");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("503 purge failed: {}\n", error.kind()),
            )
        }
        Err(error) => plain(StatusCode::BAD_REQUEST, format!("400 Bad Request: {error}\n")),
    }
}

/// The proxy as an axum [`Router`]: request rewrites, then the cache layer
/// over `cache` in standards mode, then the upstream.
///
/// Serve it with [`serve`] (or
/// `into_make_service_with_connect_info::<SocketAddr>()`): the client's
/// address comes from [`ConnectInfo`]. Without it, `X-Forwarded-For` is
/// left out and `Forwarded` says `for=unknown`.
pub fn app(config: &Config, cache: Cache) -> Router {
    app_with_layer(
        config,
        CacheLayer::builder(cache).rfc9111(config.rfc9111()).build(),
    )
}

/// [`app`] over a cache layer built elsewhere, such as from a
/// configuration file (`--config`); the request rewrites are the same.
pub fn app_with_layer(config: &Config, layer: CacheLayer) -> Router {
    let front = Arc::new(Front {
        trust_forwarded: config.trust_forwarded,
        drop_headers: config.drop_headers.clone(),
    });
    let purger = layer.purger();
    let purge_allow: Arc<[AddrRange]> = config.purge_allow.clone().into();
    let cached = layer.layer(Upstream::new(config));
    let service = tower::service_fn(move |mut request: Request<Body>| {
        let cached = cached.clone();
        let front = front.clone();
        let purger = purger.clone();
        let purge_allow = purge_allow.clone();
        async move {
            if request.method().as_str() == "PURGE" {
                return Ok::<_, Infallible>(purge(&purger, &purge_allow, request).await);
            }
            if let Err(reason) = front.rewrite(&mut request) {
                return Ok(bad_request(reason));
            }
            let response = match cached.oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(error) => upstream_failed(&error),
            };
            Ok::<_, Infallible>(response)
        }
    });
    Router::new().fallback_service(service)
}

/// Serves `app` on `listener`, with the peer address each request needs.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn file(text: &str) -> hitbox_config::Config {
        let text = format!("[[tiers]]\nmoka = {{ max_bytes = \"1 MiB\" }}\n{text}");
        hitbox_config::Config::from_toml_str("proxy.toml", &text).expect("a valid file")
    }

    #[test]
    fn trusted_forwarding_fields_must_be_keyed_by_the_config_file() {
        let upstream = Uri::from_static("http://127.0.0.1:9");
        let trusting = Config {
            trust_forwarded: true,
            ..Config::new(upstream.clone())
        };
        let keyed = file(
            "[standards]\nkey_fields = [\"x-forwarded-for\", \"X-Forwarded-Host\", \"x-forwarded-proto\", \"forwarded\"]\n",
        );
        assert_eq!(fits_config(&trusting, &keyed), Ok(()));
        let partly = file("[standards]\nkey_fields = [\"x-forwarded-for\"]\n");
        let error = fits_config(&trusting, &partly).unwrap_err();
        assert!(error.starts_with("proxy.toml: "), "{error}");
        assert!(
            error.ends_with("key_fields lacks x-forwarded-host, x-forwarded-proto, forwarded"),
            "{error}"
        );
        let rules = file("[[rules]]\n");
        let error = fits_config(&trusting, &rules).unwrap_err();
        assert!(error.contains("give the file a [standards] section"), "{error}");
        // Without the flag the fields are dropped, and any file fits.
        let dropping = Config::new(upstream);
        assert_eq!(fits_config(&dropping, &rules), Ok(()));
        assert_eq!(fits_config(&dropping, &partly), Ok(()));
    }

    #[test]
    fn forwarded_quotes_ipv6_and_hosts_with_a_port() {
        let v4 = forwarded_element(
            Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
            Some(b"example.com"),
        );
        assert_eq!(v4, "for=192.0.2.7;host=example.com;proto=http");
        let v6 = forwarded_element(Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), Some(b"example.com:8080"));
        assert_eq!(v6, "for=\"[::1]\";host=\"example.com:8080\";proto=http");
        let mapped = forwarded_element(
            Some(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped())),
            None,
        );
        assert_eq!(mapped, "for=10.0.0.1;proto=http");
        assert_eq!(forwarded_element(None, None), "for=unknown;proto=http");
    }

    #[test]
    fn forwarded_escapes_quotes_in_a_host() {
        let value = forwarded_element(None, Some(br#"a"b\c"#));
        assert_eq!(value, r#"for=unknown;host="a\"b\\c";proto=http"#);
    }
}
