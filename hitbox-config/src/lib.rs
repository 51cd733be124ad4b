//! Configuration files for hitbox: the tiers, their stages, the rules and
//! standards mode in a TOML (or YAML) file, built into the same
//! [`CacheLayer`] and [`Cache`] the code would build.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), hitbox_config::Error> {
//! let config = hitbox_config::Config::from_toml_str(
//!     "cache.toml",
//!     r#"
//!     [[tiers]]
//!     moka = { max_bytes = "64 MiB" }
//!
//!     [[rules]]
//!     when = { path_prefix = "/prices/" }
//!     policy = { preset = "real_time" }
//!
//!     [[rules]]
//!     policy = { ttl = "5m", stale_while_revalidate = "1m" }
//!     "#,
//! )?;
//! let built = config.build().await?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/prices/{id}", axum::routing::get(|| async { "a price" }))
//!     .layer(built.layer);
//! # let _ = (app, built.cache);
//! # Ok(()) }
//! ```
//!
//! Or from a file, whose name says its format (`.toml`, or `.yaml` and
//! `.yml` with feature `yaml`):
//!
//! ```no_run
//! # async fn run() -> Result<(), hitbox_config::Error> {
//! let built = hitbox_config::Config::from_file("hitbox.toml")?.build().await?;
//! # let _ = built; Ok(()) }
//! ```
//!
//! # What a file holds
//!
//! | section | what the code would call |
//! |---|---|
//! | `[cache]`: `name`, `format`, `policy`, `max_background_refreshes` | `Cache::builder` |
//! | `[[tiers]]`: `memory`, `moka` or `redis`, and `stages` | `MokaBackend::builder`, `RedisBackend::builder`, `Staged::new(.., Stages)` |
//! | `[composition]`: `read`, `write`, `refill`, ... | `CompositionBackend::builder` between each tier and those behind it |
//! | `[layer]`: `name`, `x_cache_header`, `hit_for_pass`, `lock_timeout`, `distributed_lock` | `CacheLayer::builder` |
//! | `[[rules]]`: `when`, `key`, `policy`, `tags`, body limits, ... | `Rule::new()` and its methods |
//! | `[standards]`: heuristics, targeted fields, grace, ... | `CacheLayerBuilder::rfc9111(Rfc9111)` |
//! | `[bus]`: `channel`, `origin_env`, `degraded_ttl`, `wait_subscribed`, ... | `InvalidationBus::builder(&redis)...start(l1)`, then `bus.broadcasting(bus.local_tier().compose(..))` over the tiers |
//!
//! The invalidation bus (feature `redis`) runs over the first Redis tier,
//! and the tiers in front of it are its L1: what one instance deletes,
//! invalidates by tag or purges leaves the in-process tiers of every other
//! instance built from the same file, through Redis pub/sub. The cache
//! holds the bus, so it runs as long as the layer or the cache does;
//! `Built::bus` gives its events and stats.
//!
//! ```toml
//! [[tiers]]
//! moka = { max_bytes = "256 MiB" }
//!
//! [[tiers]]
//! redis = { url = "redis://127.0.0.1:6379", key_prefix = "shop:" }
//!
//! [bus]                      # channel "shop:#invalidations" by default
//! origin_env = "HOSTNAME"    # this instance's id (default: a random one)
//! wait_subscribed = "5s"     # build waits for the subscription
//! ```
//!
//! The types of [`model`] document every field, with examples; the
//! `examples/config/` directory of the repository holds complete, commented
//! files (a moka setup, moka in front of Redis, a standards-mode proxy).
//! Durations are written with their unit (`"250ms"`, `"30s"`, `"5m"`,
//! `"1h"`, `"2d"`), sizes as bytes or with a unit (`"64 KiB"`, `"256 MiB"`).
//!
//! # Errors
//!
//! A configuration is checked whole before anything is built, and nothing
//! in it panics: every problem is an [`Error`] that names the file, the
//! line and the column, and what was expected, as
//! `hitbox.toml:12:11: unknown field `ttll`, expected one of ...`. Fields
//! a table does not know are refused everywhere (a misspelt field would
//! otherwise be silently ignored). Values that need no I/O (durations,
//! sizes, URLs, header names, path patterns, which features are on) are
//! checked while the file is parsed; what needs the environment (an
//! environment variable, a key file, the Redis client's own checks) is
//! checked by [`Config::build`], and its errors point at the field that
//! named it.
//!
//! # Secrets are never written in the file
//!
//! An encryption key comes from an environment variable (`key_env`) or a
//! file (`key_file`, such as a mounted secret); a Redis password from an
//! environment variable (`password_env`). A `key` or `password` field
//! written inline is refused with an error that says why: config files end
//! up in version control, backups, images and logs.
//!
//! # YAML
//!
//! With feature `yaml`, files ending in `.yaml` or `.yml` are read through
//! [serde_yaml_ng](https://docs.rs/serde_yaml_ng). `serde_yaml` itself is
//! archived and unmaintained, and its best-known fork, `serde_yml`, is
//! under RustSec advisories (RUSTSEC-2025-0067, RUSTSEC-2025-0068);
//! serde_yaml_ng is the fork those advisories point to, is maintained, has
//! no advisory of its own, and keeps serde_yaml's API and its error
//! locations (line and column), which the errors here need. It is off by
//! default: TOML needs nothing more than the `toml` crate.
//!
//! # Features
//!
//! None is on by default. `yaml`; `redis` (and `redis-tls`) for Redis
//! tiers, the distributed lock and the invalidation bus; `zstd`, `lz4` for
//! compression; `encryption`; `json` (the JSON format, JSON body keys, the
//! GraphQL preset), `msgpack`, `bitcode`; `targeted-fields`. A file that
//! uses what a feature that is off would give is refused with an error
//! naming the feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod build;
mod error;
pub mod model;
pub mod units;

use std::path::Path;

use hitbox_backend::Cache;
use hitbox_tower::{CacheLayer, Rule};

pub use error::{Error, ErrorKind};
use model::ConfigModel;

/// The format of a configuration text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// YAML (feature `yaml`).
    Yaml,
}

impl Format {
    /// The format a file's extension names, if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// A parsed, checked configuration; [`Config::build`] turns it into a
/// layer and its cache.
#[derive(Debug, Clone)]
pub struct Config {
    model: ConfigModel,
    file: String,
    text: String,
}

/// What [`Config::build`] makes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Built {
    /// The layer, in rule mode or in standards mode.
    pub layer: CacheLayer,
    /// The cache behind it (for stats, tags, the programmatic API).
    pub cache: Cache,
    /// The Redis tiers, in the order of the file.
    #[cfg(feature = "redis")]
    pub redis: Vec<hitbox_redis::RedisBackend>,
    /// The invalidation bus, when the file has a `[bus]` section: for its
    /// events, its stats and [`InvalidationBus::purge`](hitbox_redis::InvalidationBus::purge).
    /// The cache holds it too, so it runs as long as the layer or the cache
    /// does, whether or not this handle is kept.
    #[cfg(feature = "redis")]
    pub bus: Option<hitbox_redis::InvalidationBus>,
}

impl Config {
    /// Reads and checks the file at `path`: TOML for `.toml`, YAML for
    /// `.yaml` and `.yml` (feature `yaml`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, Error> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let format = Format::from_path(path).ok_or_else(|| {
            Error::new(
                ErrorKind::UnknownFormat,
                &file,
                None,
                "cannot tell the format from the file name: expected a name ending in .toml, .yaml or .yml",
            )
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Read,
                &file,
                None,
                format!("cannot read the config file: {e}"),
            )
        })?;
        Config::from_str_as(&file, &text, format)
    }

    /// Parses and checks TOML `text`; `file` names it in errors.
    pub fn from_toml_str(file: &str, text: &str) -> Result<Config, Error> {
        Config::from_str_as(file, text, Format::Toml)
    }

    /// Parses and checks YAML `text`; `file` names it in errors.
    #[cfg(feature = "yaml")]
    pub fn from_yaml_str(file: &str, text: &str) -> Result<Config, Error> {
        Config::from_str_as(file, text, Format::Yaml)
    }

    /// Parses and checks `text` in `format`; `file` names it in errors.
    pub fn from_str_as(file: &str, text: &str, format: Format) -> Result<Config, Error> {
        let model = match format {
            Format::Toml => parse_toml(file, text)?,
            Format::Yaml => parse_yaml(file, text)?,
        };
        let config = Config {
            model,
            file: file.to_owned(),
            text: text.to_owned(),
        };
        config.check()?;
        Ok(config)
    }

    /// The parsed model.
    pub fn model(&self) -> &ConfigModel {
        &self.model
    }

    /// The file name errors give.
    pub fn file(&self) -> &str {
        &self.file
    }

    fn error_at(
        &self,
        kind: ErrorKind,
        field: &str,
        value: Option<&str>,
        message: impl Into<String>,
    ) -> Error {
        Error::new(kind, &self.file, error::locate(&self.text, field, value), message)
    }

    /// Checks that need the whole file.
    fn check(&self) -> Result<(), Error> {
        let model = &self.model;
        if model.tiers.is_empty() {
            return Err(self.error_at(
                ErrorKind::Parse,
                "tiers",
                None,
                "the configuration needs at least one tier",
            ));
        }
        if model.standards.is_some() && !model.rules.is_empty() {
            let place = section_place(&self.text, "standards");
            return Err(Error::new(
                ErrorKind::Parse,
                &self.file,
                place,
                "`standards` and `rules` cannot both be given: in standards mode the origin's headers decide, and rules would be ignored",
            ));
        }
        if model.layer.distributed_lock.is_some()
            && !model
                .tiers
                .iter()
                .any(|t| matches!(t.kind, model::TierKind::Redis(_)))
        {
            return Err(self.error_at(
                ErrorKind::Parse,
                "distributed_lock",
                None,
                "`distributed_lock` is taken in a Redis tier, and this configuration has none",
            ));
        }
        if model.bus.is_some() {
            let first_redis = model
                .tiers
                .iter()
                .position(|t| matches!(t.kind, model::TierKind::Redis(_)));
            let problem = match first_redis {
                None => Some("`[bus]` runs over a Redis tier, and this configuration has none"),
                Some(0) => Some(
                    "`[bus]` keeps the tiers in front of the first Redis tier in step, and this configuration \
                     has none in front of it: put a `moka` (or `memory`) tier before the Redis tier",
                ),
                Some(_) => None,
            };
            if let Some(message) = problem {
                return Err(Error::new(
                    ErrorKind::Parse,
                    &self.file,
                    section_place(&self.text, "bus"),
                    message,
                ));
            }
        }
        Ok(())
    }

    /// The rules, as the code would build them (empty in standards mode).
    pub fn rules(&self) -> Result<Vec<Rule>, Error> {
        self.model
            .rules
            .iter()
            .map(|rule| build::rule(rule).map_err(|e| self.build_error(e)))
            .collect()
    }

    fn build_error(&self, error: build::BuildError) -> Error {
        // `[name]`: the error is about a whole section.
        if let Some(section) = error.field.strip_prefix('[').and_then(|f| f.strip_suffix(']')) {
            return Error::new(
                ErrorKind::Build,
                &self.file,
                section_place(&self.text, section),
                error.message,
            );
        }
        self.error_at(
            ErrorKind::Build,
            error.field,
            error.value.as_deref(),
            error.message,
        )
    }

    /// Builds the tiers, the cache and the layer. Must be called inside a
    /// Tokio runtime when the file has Redis tiers (their connections are
    /// Tokio tasks); it waits for them only where `wait_connected` says so.
    pub async fn build(&self) -> Result<Built, Error> {
        let model = &self.model;
        let rules = self.rules()?;
        let tiers = build::tiers(&model.tiers, &model.composition, model.bus.as_ref())
            .await
            .map_err(|e| self.build_error(e))?;
        let cache = build::cache(&model.cache, tiers.backend);
        let mut builder = CacheLayer::builder(cache.clone());
        for rule in rules {
            builder = builder.rule(rule);
        }
        if let Some(standards) = &model.standards {
            builder = builder.rfc9111(build::standards(standards));
        }
        let layer_config = &model.layer;
        if let Some(name) = &layer_config.name {
            builder = builder.cache_name(name.as_str());
        }
        builder = builder.x_cache_header(layer_config.x_cache_header);
        if let Some(duration) = layer_config.hit_for_pass {
            builder = builder.hit_for_pass(duration.0);
        }
        if let Some(timeout) = layer_config.lock_timeout {
            builder = builder.lock_timeout(timeout.0);
        }
        #[cfg(feature = "redis")]
        if let (Some(lock), Some(redis)) = (&layer_config.distributed_lock, tiers.redis.first()) {
            let mut redis_lock = hitbox_redis::RedisLock::new(redis);
            if let Some(lease) = lock.lease {
                redis_lock = redis_lock.lease(lease.0);
            }
            if let Some(interval) = lock.poll_interval {
                redis_lock = redis_lock.poll_interval(interval.0);
            }
            if let Some(timeout) = lock.command_timeout {
                redis_lock = redis_lock.command_timeout(timeout.0);
            }
            builder = builder.distributed_lock(redis_lock);
        }
        Ok(Built {
            layer: builder.build(),
            cache,
            #[cfg(feature = "redis")]
            redis: tiers.redis,
            #[cfg(feature = "redis")]
            bus: tiers.bus,
        })
    }
}

/// Where a top-level section starts: `[name]` in TOML, `name:` in YAML.
fn section_place(text: &str, name: &str) -> Option<(usize, usize)> {
    let header = format!("[{name}]");
    if let Some(at) = text.find(&header) {
        return Some(error::line_column(text, at));
    }
    error::locate(text, name, None)
}

fn parse_toml(file: &str, text: &str) -> Result<ConfigModel, Error> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let (place, message) = error::refine(text, e.span().map(|span| span.start), e.message().trim_end());
        Error::new(ErrorKind::Parse, file, place, message)
    })
}

#[cfg(feature = "yaml")]
fn parse_yaml(file: &str, text: &str) -> Result<ConfigModel, Error> {
    serde_yaml_ng::from_str(text).map_err(|e| {
        // The message without the " at line L column C" the crate appends.
        let mut message = e.to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        let (place, message) = error::refine(text, e.location().map(|l| l.index()), &message);
        Error::new(ErrorKind::Parse, file, place, message)
    })
}

#[cfg(not(feature = "yaml"))]
fn parse_yaml(file: &str, _text: &str) -> Result<ConfigModel, Error> {
    Err(Error::new(
        ErrorKind::UnknownFormat,
        file,
        None,
        "YAML files need the `yaml` feature of hitbox-config, which is off in this build",
    ))
}
