//! From the model to the objects the code would build: tiers, stages, the
//! cache, rules and the layer.

use std::sync::Arc;

use hitbox_backend::{
    Backend, Cache, CompositionBackend, MemoryBackend, ReadPolicy, RefillPolicy, Staged, Stages, WritePolicy,
};
use hitbox_core::{Extractor, KeyBuilder, Not, Predicate};
use hitbox_moka::MokaBackend;
use hitbox_tower::predicate::{self, Header};
use hitbox_tower::rfc9111::Rfc9111;
use hitbox_tower::{BodyKey, Rule, extract};
use http::{StatusCode, request, response};

use crate::model::*;

/// An error found while building, and where to point at it: the field and
/// (when it helps to tell occurrences apart) its value.
#[derive(Debug)]
pub(crate) struct BuildError {
    pub message: String,
    pub field: &'static str,
    pub value: Option<String>,
}

impl BuildError {
    fn at(field: &'static str, value: Option<&str>, message: impl Into<String>) -> Self {
        BuildError {
            message: message.into(),
            field,
            value: value.map(str::to_owned),
        }
    }
}

type BoxPredicate<S> = Box<dyn Predicate<S> + Send + Sync>;

/// Every predicate holds (an empty list always holds).
pub(crate) struct AllOf<S>(Vec<BoxPredicate<S>>);

impl<S> Predicate<S> for AllOf<S> {
    fn check(&self, subject: &S) -> bool {
        self.0.iter().all(|p| p.check(subject))
    }
}

/// Some predicate holds.
pub(crate) struct AnyOf<S>(Vec<BoxPredicate<S>>);

impl<S> Predicate<S> for AnyOf<S> {
    fn check(&self, subject: &S) -> bool {
        self.0.iter().any(|p| p.check(subject))
    }
}

/// Key parts in order: each appends its parts, as a chain of
/// `Extractor::and` does.
pub(crate) struct KeyParts(Vec<Box<dyn Extractor<request::Parts> + Send + Sync>>);

impl Extractor<request::Parts> for KeyParts {
    fn extract(&self, subject: &request::Parts, key: &mut KeyBuilder) -> bool {
        let mut appended = false;
        for part in &self.0 {
            appended |= part.extract(subject, key);
        }
        appended
    }
}

fn negated<S: 'static, P>(predicate: P, negate: bool) -> BoxPredicate<S>
where
    P: Predicate<S> + Send + Sync + 'static,
{
    if negate {
        Box::new(Not(predicate))
    } else {
        Box::new(predicate)
    }
}

fn header_condition<S: 'static>(condition: &HeaderCondition) -> BoxPredicate<S>
where
    Header: Predicate<S>,
{
    let name = condition.name.0.clone();
    match &condition.test {
        ValueTest::Present(present) => negated(Header::present(name), condition.negate == *present),
        ValueTest::Equals(value) => negated(Header::equals(name, value.clone()), condition.negate),
        ValueTest::OneOf(values) => negated(Header::one_of(name, values.clone()), condition.negate),
        ValueTest::Contains(needle) => negated(Header::contains(name, needle.as_str()), condition.negate),
    }
}

fn query_condition(condition: &QueryCondition) -> BoxPredicate<request::Parts> {
    let name = condition.name.as_str();
    match &condition.test {
        ValueTest::Present(present) => negated(predicate::Query::present(name), condition.negate == *present),
        ValueTest::Equals(value) => negated(predicate::Query::equals(name, value.as_str()), condition.negate),
        ValueTest::OneOf(values) => negated(predicate::Query::one_of(name, values.clone()), condition.negate),
        // Refused while parsing.
        ValueTest::Contains(_) => Box::new(|_: &request::Parts| false),
    }
}

/// The request predicate of a `when` table.
pub(crate) fn when_predicate(when: &WhenConfig) -> AllOf<request::Parts> {
    let mut all: Vec<BoxPredicate<request::Parts>> = Vec::new();
    if !when.methods.is_empty() {
        all.push(Box::new(predicate::Method::any_of(
            when.methods.iter().map(|m| m.0.clone()),
        )));
    }
    if let Some(path) = &when.path {
        all.push(Box::new(predicate::Path::exact(path.as_str())));
    }
    if let Some(prefix) = &when.path_prefix {
        all.push(Box::new(predicate::Path::prefix(prefix.as_str())));
    }
    if let Some(pattern) = &when.path_pattern {
        all.push(Box::new(predicate::Path::pattern(pattern.0.clone())));
    }
    for prefix in &when.not_path_prefix {
        all.push(Box::new(Not(predicate::Path::prefix(prefix.as_str()))));
    }
    all.extend(when.headers.iter().map(header_condition::<request::Parts>));
    all.extend(when.query.iter().map(query_condition));
    AllOf(all)
}

fn status_class(name: StatusClassName) -> predicate::StatusClass {
    match name {
        StatusClassName::Informational => predicate::StatusClass::Informational,
        StatusClassName::Success => predicate::StatusClass::Success,
        StatusClassName::Redirection => predicate::StatusClass::Redirection,
        StatusClassName::ClientError => predicate::StatusClass::ClientError,
        StatusClassName::ServerError => predicate::StatusClass::ServerError,
    }
}

/// The response predicate of a `store_when` table.
fn store_predicate(store: &StoreWhenConfig) -> Result<AllOf<response::Parts>, BuildError> {
    let mut all: Vec<BoxPredicate<response::Parts>> = Vec::new();
    let mut statuses: Vec<BoxPredicate<response::Parts>> = Vec::new();
    for &code in &store.status {
        let status = StatusCode::from_u16(code).map_err(|_| {
            BuildError::at(
                "status",
                None,
                format!("invalid status {code}: expected 100 to 999"),
            )
        })?;
        statuses.push(Box::new(predicate::Status::code(status)));
    }
    for &class in &store.status_class {
        statuses.push(Box::new(predicate::Status::class(status_class(class))));
    }
    if !statuses.is_empty() {
        all.push(Box::new(AnyOf(statuses)));
    }
    all.extend(store.headers.iter().map(header_condition::<response::Parts>));
    Ok(AllOf(all))
}

/// The extractor of a `key` list.
pub(crate) fn key_parts(parts: &[KeyPartConfig]) -> KeyParts {
    let parts = parts
        .iter()
        .map(|part| -> Box<dyn Extractor<request::Parts> + Send + Sync> {
            match part {
                KeyPartConfig::Default => Box::new(extract::default_key()),
                KeyPartConfig::Method => Box::new(extract::Method),
                KeyPartConfig::SchemeHost => Box::new(extract::SchemeHost),
                KeyPartConfig::Path => Box::new(extract::Path),
                KeyPartConfig::Query => Box::new(extract::Query::all()),
                KeyPartConfig::QueryNamed(names) => Box::new(extract::Query::named(names.clone())),
                KeyPartConfig::Header(name) => Box::new(extract::Header::named(name.0.clone())),
                KeyPartConfig::SensitiveHeader(name) => Box::new(extract::Header::sensitive(name.0.clone())),
                KeyPartConfig::PathParams(pattern) => Box::new(extract::PathParams::new(pattern.0.clone())),
                KeyPartConfig::Constant { name, value } => {
                    Box::new(extract::Constant(name.clone(), value.clone()))
                }
            }
        })
        .collect();
    KeyParts(parts)
}

/// The `Rule` a rule table describes.
pub(crate) fn rule(config: &RuleConfig) -> Result<Rule, BuildError> {
    let mut rule = Rule::new();
    if let Some(when) = &config.when {
        rule = rule.when(when_predicate(when));
    }
    if let Some(store) = &config.store_when {
        rule = rule.store_when(store_predicate(store)?);
    }
    if let Some(key) = &config.key {
        rule = rule.key(key_parts(key));
    }
    if let Some(namespace) = &config.namespace {
        rule = rule.namespace(namespace.as_str());
    }
    if let Some(policy) = config.policy {
        rule = rule.policy(policy.0);
    }
    for tag in &config.tags {
        rule = rule.tag(tag.as_str());
    }
    if let Some(methods) = &config.methods {
        rule = rule.methods(methods.iter().map(|m| m.0.clone()));
    }
    if let Some(size) = config.max_body_size {
        rule = rule.max_body_size(size.as_usize());
    }
    if let Some(enabled) = config.cache_authorized {
        rule = rule.cache_authorized(enabled);
    }
    if let Some(enabled) = config.cache_with_cookies {
        rule = rule.cache_with_cookies(enabled);
    }
    if let Some(enabled) = config.store_set_cookie {
        rule = rule.store_set_cookie(enabled);
    }
    if let Some(enabled) = config.store_private {
        rule = rule.store_private(enabled);
    }
    if let Some(body_key) = &config.post_as_read {
        rule = rule.post_as_read(match body_key {
            BodyKeyConfig::Digest => BodyKey::digest(),
            #[cfg(feature = "json")]
            BodyKeyConfig::Json => BodyKey::json(),
            #[cfg(feature = "json")]
            BodyKeyConfig::JsonFields(pointers) => BodyKey::json_fields(pointers.clone()),
            #[cfg(not(feature = "json"))]
            BodyKeyConfig::Json | BodyKeyConfig::JsonFields(_) => {
                return Err(BuildError::at(
                    "post_as_read",
                    None,
                    "a JSON body key needs the `json` feature",
                ));
            }
        });
    }
    #[cfg(feature = "json")]
    if config.graphql {
        rule = rule.graphql(hitbox_tower::graphql::GraphQl::new());
    }
    if let Some(limit) = config.request_body_limit {
        rule = rule.request_body_limit(limit.as_usize());
    }
    if let Some(enabled) = config.invalidate_on_unsafe {
        rule = rule.invalidate_on_unsafe(enabled);
    }
    if let Some(enabled) = config.distributed_lock {
        rule = rule.distributed_lock(enabled);
    }
    Ok(rule)
}

/// The standards-mode configuration.
pub(crate) fn standards(config: &StandardsConfig) -> Rfc9111 {
    let mut rfc = Rfc9111::new();
    if let Some(fraction) = config.heuristic_fraction {
        rfc = rfc.heuristic_fraction(fraction);
    }
    if let Some(max) = config.heuristic_max {
        rfc = rfc.heuristic_max(max.0);
    }
    #[cfg(feature = "targeted-fields")]
    for field in &config.targeted_fields {
        rfc = rfc.targeted_field(&field.0);
    }
    if let Some(keep) = config.keep_stale {
        rfc = rfc.keep_stale(keep.0);
    }
    if let Some(size) = config.max_body_size {
        rfc = rfc.max_body_size(size.as_usize());
    }
    for field in &config.key_fields {
        rfc = rfc.key_field(field.0.as_str());
    }
    if let Some(refuse) = config.refuse_set_cookie {
        rfc = rfc.refuse_set_cookie(refuse);
    }
    if let Some(grace) = config.stale_if_disconnected {
        rfc = rfc.stale_if_disconnected(grace.0);
    }
    if let Some(private) = config.private_cache {
        rfc = rfc.private_cache(private);
    }
    rfc
}

/// An environment variable's value, or an error pointing at `field`.
#[cfg(any(feature = "redis", feature = "encryption"))]
fn env_var(field: &'static str, name: &str, what: &str) -> Result<String, BuildError> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(std::env::VarError::NotPresent) => Err(BuildError::at(
            field,
            Some(name),
            format!("the environment variable {name} that should hold {what} is not set"),
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(BuildError::at(
            field,
            Some(name),
            format!("the environment variable {name} that should hold {what} is not UTF-8"),
        )),
    }
}

#[cfg(feature = "encryption")]
fn master_key(source: &KeySource, previous: bool) -> Result<hitbox_backend::MasterKey, BuildError> {
    use hitbox_backend::MasterKey;
    match source {
        KeySource::Env(name) => {
            let field = if previous { "previous_key_envs" } else { "key_env" };
            let value = zeroize::Zeroizing::new(env_var(field, name, "the encryption key")?);
            MasterKey::from_hex(value.trim()).map_err(|e| {
                BuildError::at(
                    field,
                    Some(name),
                    format!("the environment variable {name} does not hold a key of 64 hex digits: {e}"),
                )
            })
        }
        KeySource::File(path) => {
            let field = if previous {
                "previous_key_files"
            } else {
                "key_file"
            };
            let shown = path.display().to_string();
            let bytes = std::fs::read(path).map_err(|e| {
                BuildError::at(
                    field,
                    Some(&shown),
                    format!("cannot read the key file {shown}: {e}"),
                )
            })?;
            let bytes = zeroize::Zeroizing::new(bytes);
            let text = std::str::from_utf8(&bytes).ok().map(str::trim);
            match text.filter(|t| t.len() == 64) {
                Some(hex) => MasterKey::from_hex(hex),
                None => MasterKey::from_bytes(&bytes),
            }
            .map_err(|e| {
                BuildError::at(
                    field,
                    Some(&shown),
                    format!("the key file {shown} holds neither 64 hex digits nor 32 raw bytes: {e}"),
                )
            })
        }
    }
}

fn stages(config: &StagesConfig) -> Result<Stages, BuildError> {
    let mut stages = Stages::new().compression(config.compression);
    if let Some(size) = config.min_compress_size {
        stages = stages.min_compress_size(size.as_usize());
    }
    if let Some(size) = config.max_decompressed {
        stages = stages.max_decompressed(size.as_usize());
    }
    #[cfg(feature = "encryption")]
    if let Some(encryption) = &config.encryption {
        let mut builder = hitbox_backend::AesGcmEncryptor::builder(master_key(&encryption.key, false)?);
        if let Some(tenant) = &encryption.tenant {
            builder = builder.tenant(tenant.as_str());
        }
        for previous in &encryption.previous {
            builder = builder.previous_key(master_key(previous, true)?);
        }
        let encryptor = builder.build().map_err(|e| {
            BuildError::at(
                "tenant",
                encryption.tenant.as_deref(),
                format!("invalid encryption settings: {e}"),
            )
        })?;
        stages = stages.encryptor(encryptor);
    }
    Ok(stages)
}

/// The tiers that were built, the Redis ones among them, and the
/// invalidation bus.
pub(crate) struct Tiers {
    pub backend: Arc<dyn Backend>,
    #[cfg(feature = "redis")]
    pub redis: Vec<hitbox_redis::RedisBackend>,
    #[cfg(feature = "redis")]
    pub bus: Option<hitbox_redis::InvalidationBus>,
}

#[cfg(feature = "redis")]
async fn redis(
    config: &RedisConfig,
    instance_id: Option<&hitbox_redis::OriginId>,
) -> Result<hitbox_redis::RedisBackend, BuildError> {
    let (field, value) = match &config.url {
        Some(url) => ("url", Some(url.clone())),
        None => ("nodes", None),
    };
    let mut builder = hitbox_redis::RedisBackend::builder();
    builder = match (&config.url, config.mode) {
        (Some(url), _) => builder.url(url.as_str()),
        (None, RedisMode::Standalone) => builder.standalone(config.nodes[0].0.as_str(), config.nodes[0].1),
        (None, RedisMode::Cluster) => builder.cluster(config.nodes.iter().cloned()),
        (None, RedisMode::Sentinel) => builder.sentinel(
            config.nodes.iter().cloned(),
            config.service_name.clone().unwrap_or_default(),
        ),
    };
    if let Some(username) = &config.username {
        builder = builder.username(username.as_str());
    }
    if let Some(name) = &config.password_env {
        builder = builder.password(env_var("password_env", name, "the Redis password")?);
    }
    if let Some(database) = config.database {
        builder = builder.database(database);
    }
    if let Some(size) = config.pool_size {
        builder = builder.pool_size(size);
    }
    if let Some(prefix) = &config.key_prefix {
        builder = builder.key_prefix(prefix.as_str());
    }
    if let Some(label) = &config.label {
        builder = builder.label(label.as_str());
    }
    if let Some(t) = config.read_timeout {
        builder = builder.read_timeout(t.0);
    }
    if let Some(t) = config.write_timeout {
        builder = builder.write_timeout(t.0);
    }
    if let Some(t) = config.invalidate_timeout {
        builder = builder.invalidate_timeout(t.0);
    }
    if let Some(t) = config.purge_timeout {
        builder = builder.purge_timeout(t.0);
    }
    if let Some(t) = config.connection_timeout {
        builder = builder.connection_timeout(t.0);
    }
    if let Some(t) = config.unresponsive_after {
        builder = builder.unresponsive_after(Some(t.0));
    }
    if let Some(t) = config.tag_grace {
        builder = builder.tag_grace(t.0);
    }
    if let Some(size) = config.max_entry_size {
        builder = builder.max_entry_size(size.as_usize());
    }
    if let Some(failures) = config.failure_threshold {
        builder = builder.failure_threshold(failures);
    }
    if let Some(t) = config.cool_down {
        builder = builder.cool_down(t.0);
    }
    if let Some(id) = instance_id {
        builder = builder.instance_id(id.clone());
    }
    let backend = builder.build().map_err(|e| {
        BuildError::at(
            field,
            value.as_deref(),
            format!("cannot build the Redis tier: {e}"),
        )
    })?;
    if let Some(wait) = config.wait_connected {
        backend.wait_connected(wait.0).await.map_err(|e| {
            BuildError::at(
                "wait_connected",
                None,
                format!("the Redis tier did not connect: {e}"),
            )
        })?;
    }
    Ok(backend)
}

/// Builds the tiers, nearest first, each composed in front of the ones
/// behind it; with a bus, the tiers in front of the first Redis tier are
/// its L1.
pub(crate) async fn tiers(
    configs: &[TierConfig],
    composition: &CompositionConfig,
    bus: Option<&BusConfig>,
) -> Result<Tiers, BuildError> {
    let mut built: Vec<Arc<dyn Backend>> = Vec::new();
    #[cfg(feature = "redis")]
    let mut redis_tiers = Vec::new();
    // This instance's id, for the bus and the Redis tier it runs over, so
    // that the tier's audit stream entries and the bus's messages carry
    // the same origin.
    #[cfg(feature = "redis")]
    let origin = match bus.and_then(|bus| bus.origin_env.as_deref()) {
        Some(name) => Some(origin_from_env(name)?),
        None => None,
    };
    for tier in configs {
        let backend: Arc<dyn Backend> = match &tier.kind {
            TierKind::Memory(memory) => {
                let backend = MemoryBackend::new();
                let backend = match &memory.label {
                    Some(label) => backend.labelled(label),
                    None => backend,
                };
                with_stages(backend, tier.stages.as_ref())?
            }
            TierKind::Moka(moka) => {
                let mut builder = MokaBackend::builder().max_bytes(moka.max_bytes.0);
                if let Some(size) = moka.max_entry_size {
                    builder = builder.max_entry_size(size.as_usize());
                }
                if let Some(label) = &moka.label {
                    builder = builder.label(label.as_str());
                }
                with_stages(builder.build(), tier.stages.as_ref())?
            }
            #[cfg(feature = "redis")]
            TierKind::Redis(config) => {
                let instance_id = origin.as_ref().filter(|_| redis_tiers.is_empty());
                let backend = redis(config, instance_id).await?;
                redis_tiers.push(backend.clone());
                with_stages(backend, tier.stages.as_ref())?
            }
            #[cfg(not(feature = "redis"))]
            TierKind::Redis(_) => {
                return Err(BuildError::at(
                    "redis",
                    None,
                    "a Redis tier needs the `redis` feature",
                ));
            }
        };
        built.push(backend);
    }
    let first_redis = configs
        .iter()
        .position(|tier| matches!(tier.kind, TierKind::Redis(_)));
    let split = match (bus, first_redis) {
        (Some(_), Some(at)) if at > 0 => at,
        (Some(_), _) => {
            // Refused while checking the file.
            return Err(BuildError::at(
                "[bus]",
                None,
                "`[bus]` needs a Redis tier with a tier in front of it",
            ));
        }
        (None, _) => 0,
    };
    let back = compose_all(built.split_off(split), composition);
    let Some(front) = compose_all(built, composition) else {
        let backend =
            back.ok_or_else(|| BuildError::at("tiers", None, "the configuration needs at least one tier"))?;
        return Ok(Tiers {
            backend,
            #[cfg(feature = "redis")]
            redis: redis_tiers,
            #[cfg(feature = "redis")]
            bus: None,
        });
    };
    let back = back.ok_or_else(|| BuildError::at("[bus]", None, "`[bus]` needs a Redis tier"))?;
    #[cfg(feature = "redis")]
    {
        let (config, redis) = match (bus, redis_tiers.first()) {
            (Some(config), Some(redis)) => (config, redis),
            _ => return Err(BuildError::at("[bus]", None, "`[bus]` needs a Redis tier")),
        };
        let bus = start_bus(config, origin, redis, front).await?;
        let tiers: Arc<dyn Backend> = Arc::new(compose(Arc::new(bus.local_tier()), back, composition));
        let backend = Arc::new(WithBus {
            tiers: bus.broadcasting(tiers),
            _bus: bus.clone(),
        });
        Ok(Tiers {
            backend,
            redis: redis_tiers,
            bus: Some(bus),
        })
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (front, back);
        Err(BuildError::at("[bus]", None, "`[bus]` needs the `redis` feature"))
    }
}

/// The tiers composed, the nearest in front; `None` for none.
fn compose_all(
    mut tiers: Vec<Arc<dyn Backend>>,
    composition: &CompositionConfig,
) -> Option<Arc<dyn Backend>> {
    let mut backend = tiers.pop()?;
    while let Some(near) = tiers.pop() {
        backend = Arc::new(compose(near, backend, composition));
    }
    Some(backend)
}

/// The instance id the environment variable `name` holds.
#[cfg(feature = "redis")]
fn origin_from_env(name: &str) -> Result<hitbox_redis::OriginId, BuildError> {
    let id = env_var("origin_env", name, "this instance's id")?;
    hitbox_redis::OriginId::new(&id).map_err(|e| {
        BuildError::at(
            "origin_env",
            Some(name),
            format!("the environment variable {name} does not hold a usable instance id ({id:?}): {e}"),
        )
    })
}

/// Starts the bus over `redis`'s connections, with `l1` as its in-process
/// tier, and waits for its subscription when asked to.
#[cfg(feature = "redis")]
async fn start_bus(
    config: &BusConfig,
    origin: Option<hitbox_redis::OriginId>,
    redis: &hitbox_redis::RedisBackend,
    l1: Arc<dyn Backend>,
) -> Result<hitbox_redis::InvalidationBus, BuildError> {
    let mut builder = hitbox_redis::InvalidationBus::builder(redis);
    if let Some(channel) = &config.channel {
        builder = builder.channel(channel.as_str());
    }
    if let Some(origin) = origin {
        builder = builder.origin(origin);
    }
    if let Some(ttl) = config.degraded_ttl {
        builder = builder.degraded_ttl(ttl.0);
    }
    if let Some(purge) = config.purge_on_resubscribe {
        builder = builder.purge_on_resubscribe(purge);
    }
    if let Some(timeout) = config.publish_timeout {
        builder = builder.publish_timeout(timeout.0);
    }
    if let Some(interval) = config.retry_interval {
        builder = builder.retry_interval(interval.0);
    }
    if let Some(interval) = config.stream_poll_interval {
        builder = builder.stream_poll_interval(interval.0);
    }
    let bus = builder
        .start(l1)
        .map_err(|e| BuildError::at("[bus]", None, format!("cannot start the invalidation bus: {e}")))?;
    if let Some(wait) = config.wait_subscribed {
        bus.wait_subscribed(wait.0).await.map_err(|e| {
            BuildError::at(
                "wait_subscribed",
                None,
                format!("the invalidation bus did not subscribe: {e}"),
            )
        })?;
    }
    Ok(bus)
}

/// The tiers with removals, tag invalidations and purges published on the
/// bus, and the bus itself: the bus stops when its last handle is dropped,
/// and the cache holds this one, so that it runs as long as the cache does
/// (a caller that keeps only the layer keeps the bus).
#[cfg(feature = "redis")]
struct WithBus {
    tiers: hitbox_redis::Broadcasting<Arc<dyn Backend>>,
    _bus: hitbox_redis::InvalidationBus,
}

#[cfg(feature = "redis")]
mod with_bus {
    use std::time::Duration;

    use bytes::Bytes;
    use hitbox_backend::purge::{Purge, PurgeTarget};
    use hitbox_backend::{Backend, BackendFuture, TagGenerations, TierStats};
    use hitbox_core::{CacheKey, Tag};

    use super::WithBus;

    /// Every method goes to the broadcasting tiers, as `Cache::new(bus.broadcasting(..))`
    /// would call them.
    impl Backend for WithBus {
        fn read<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, Option<Bytes>> {
            self.tiers.read(key)
        }
        fn write<'a>(
            &'a self,
            key: &'a CacheKey,
            value: Bytes,
            ttl: Duration,
            tags: &'a [Tag],
        ) -> BackendFuture<'a, ()> {
            self.tiers.write(key, value, ttl, tags)
        }
        fn remove<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
            self.tiers.remove(key)
        }
        fn invalidate_tag<'a>(&'a self, tag: &'a Tag) -> BackendFuture<'a, u64> {
            self.tiers.invalidate_tag(tag)
        }
        fn purge<'a>(&'a self, purge: &'a Purge) -> BackendFuture<'a, u64> {
            self.tiers.purge(purge)
        }
        fn purge_keys<'a>(&'a self, target: &'a PurgeTarget) -> BackendFuture<'a, Vec<CacheKey>> {
            self.tiers.purge_keys(target)
        }
        fn exists<'a>(&'a self, key: &'a CacheKey) -> BackendFuture<'a, bool> {
            self.tiers.exists(key)
        }
        fn label(&self) -> &str {
            self.tiers.label()
        }
        fn tier_stats(&self) -> Vec<TierStats> {
            self.tiers.tier_stats()
        }
        fn has_breaker(&self) -> bool {
            self.tiers.has_breaker()
        }
        fn observes_tiers(&self) -> bool {
            self.tiers.observes_tiers()
        }
        fn max_entry_size(&self) -> usize {
            self.tiers.max_entry_size()
        }
        fn shares_buffers(&self) -> bool {
            self.tiers.shares_buffers()
        }
        fn tag_generations<'a>(&'a self, tags: &'a [Tag]) -> BackendFuture<'a, Option<TagGenerations>> {
            self.tiers.tag_generations(tags)
        }
        fn write_if_current<'a>(
            &'a self,
            key: &'a CacheKey,
            value: Bytes,
            ttl: Duration,
            tags: &'a [Tag],
            expected: &'a TagGenerations,
        ) -> BackendFuture<'a, bool> {
            self.tiers.write_if_current(key, value, ttl, tags, expected)
        }
        fn read_many<'a>(&'a self, keys: &'a [CacheKey]) -> BackendFuture<'a, Vec<Option<Bytes>>> {
            self.tiers.read_many(keys)
        }
    }
}

fn with_stages<B: Backend>(
    backend: B,
    config: Option<&StagesConfig>,
) -> Result<Arc<dyn Backend>, BuildError> {
    Ok(match config {
        Some(config) => Arc::new(Staged::new(backend, stages(config)?)),
        None => Arc::new(backend),
    })
}

fn compose(l1: Arc<dyn Backend>, l2: Arc<dyn Backend>, config: &CompositionConfig) -> CompositionBackend {
    let mut builder = CompositionBackend::builder_shared(l1, l2);
    if let Some(read) = config.read {
        builder = builder.read_policy(match read {
            ReadPolicyName::Sequential => ReadPolicy::Sequential,
            ReadPolicyName::Race => ReadPolicy::Race,
            ReadPolicyName::Parallel => ReadPolicy::Parallel,
        });
    }
    if let Some(write) = config.write {
        builder = builder.write_policy(match write {
            WritePolicyName::Sequential => WritePolicy::Sequential,
            WritePolicyName::OptimisticParallel => WritePolicy::OptimisticParallel,
            WritePolicyName::WriteBehind => WritePolicy::WriteBehind,
        });
    }
    if let Some(refill) = config.refill {
        builder = builder.refill_policy(match refill {
            RefillConfig::Always => RefillPolicy::Always,
            RefillConfig::Never => RefillPolicy::Never,
            RefillConfig::OneIn(one_in) => RefillPolicy::Probabilistic { one_in },
        });
    }
    if let Some(ttl) = config.refill_max_ttl {
        builder = builder.refill_max_ttl(ttl.0);
    }
    if let Some(factor) = config.l1_ttl_scale {
        builder = builder.l1_ttl_scale(factor);
    }
    if let Some(factor) = config.l2_ttl_scale {
        builder = builder.l2_ttl_scale(factor);
    }
    if let Some(failures) = config.failure_threshold {
        builder = builder.failure_threshold(failures);
    }
    if let Some(cool_down) = config.cool_down {
        builder = builder.cool_down(cool_down.0);
    }
    if let Some(label) = &config.label {
        builder = builder.label(label.as_str());
    }
    builder.build()
}

/// The cache over the built tiers.
pub(crate) fn cache(section: &CacheSection, backend: Arc<dyn Backend>) -> Cache {
    let mut builder = Cache::builder_shared(backend);
    if let Some(name) = &section.name {
        builder = builder.name(name.as_str());
    }
    if let Some(format) = section.format {
        builder = builder.format(format.0);
    }
    if let Some(policy) = section.policy {
        builder = builder.policy(policy.0);
    }
    if let Some(max) = section.max_background_refreshes {
        builder = builder.max_background_refreshes(max);
    }
    builder.build()
}
