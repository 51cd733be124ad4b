//! The invalidation audit stream: every invalidation made through the Redis
//! tier (a key deleted, a tag invalidated, a purge or prefix invalidation
//! published through an [`InvalidationBus`](crate::InvalidationBus)),
//! appended to one Redis Stream.
//!
//! Why it exists: pub/sub delivers a message once, to whoever listens at
//! that moment. The stream keeps the recent invalidations (capped with
//! `XADD ... MAXLEN ~ N`), so that they can be audited, replayed from any
//! entry id, and followed by consumer groups: an instance whose bus lost
//! its subscription catches up from its group's position instead of
//! purging its whole L1 (see the [`invalidation`](crate::invalidation)
//! module).
//!
//! # Entries
//!
//! Each entry is a stream entry (its id, `<milliseconds>-<sequence>`, from
//! the server's clock) with these fields:
//!
//! | field    | value                                                              |
//! |----------|--------------------------------------------------------------------|
//! | `v`      | `1`, the format                                                    |
//! | `origin` | the [`OriginId`] of the instance that invalidated                  |
//! | `at`     | when, in milliseconds since the Unix epoch, on the tier's clock    |
//! | `kind`   | `key`, `tag`, `prefix` or `purge`                                  |
//! | `target` | the key (as the tiers store it, without the Redis key prefix), the tag or the prefix; absent for a purge |
//! | `gen`    | for a tag: its generation after the invalidation                   |
//! | `mode`   | `soft` for a soft purge (entries marked stale); absent otherwise   |
//! | `reason` | `purge` for a [purge](hitbox_backend::purge); absent for an invalidation |
//!
//! `mode` and `reason` came later in format `1`: a reader that does not
//! know them reads a soft purge as the (hard) invalidation of the same
//! key, tag or prefix, which errs on the side of forgetting.
//!
//! [`AuditEntry`] is the typed form. Entries that do not read as one
//! (another format, a field missing) are reported apart, never as a panic.
//!
//! The stream is one key (`<key prefix>#audit` unless
//! [`RedisBackendBuilder::audit_key`](crate::RedisBackendBuilder::audit_key)
//! says otherwise), so in a cluster it lives in one slot, on one node: every
//! instance appends there, which is fine for invalidations (far rarer than
//! reads), and is what gives the entries one order.
//!
//! ```no_run
//! use hitbox_redis::RedisBackend;
//! use hitbox_redis::audit::{AuditId, GroupStart};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisBackend::builder()
//!     .url("redis://127.0.0.1:6379")
//!     .audit_max_len(50_000)
//!     .build()?;
//! let audit = redis.audit().expect("on by default");
//!
//! // Everything still in the stream, oldest first, 100 at a time.
//! let mut after = AuditId::ZERO;
//! loop {
//!     let batch = audit.entries_after(after, 100).await?;
//!     for entry in &batch.entries {
//!         println!("{} {} {:?} at {:?}", entry.id, entry.origin, entry.invalidation, entry.at);
//!     }
//!     match batch.last_id() {
//!         Some(last) => after = last,
//!         None => break,
//!     }
//! }
//!
//! // A consumer group: each entry once, acknowledged when handled.
//! audit.create_group("auditor", GroupStart::Beginning).await?;
//! let batch = audit.read_group("auditor", "auditor-1", 100).await?;
//! audit.ack("auditor", &batch.ids()).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{Pool, StreamsInterface, Value};
use hitbox_backend::BackendError;
use hitbox_core::{SharedClock, Timestamp};

use crate::invalidation::{Invalidation, OriginId};

/// The default cap on the stream's length (`MAXLEN ~`): about this many
/// recent invalidations are kept.
pub const DEFAULT_AUDIT_MAX_LEN: u64 = 10_000;

/// What the default stream key adds to the key prefix.
pub const AUDIT_SUFFIX: &str = "#audit";

/// The value of the `v` field of the entries this version writes.
pub const AUDIT_FORMAT: &str = "1";

/// The id of a stream entry: the milliseconds of the server's clock when it
/// was appended, and a sequence number within that millisecond. Ids grow
/// with every entry.
///
/// ```
/// use hitbox_redis::audit::AuditId;
///
/// let id: AuditId = "1700000000000-3".parse().unwrap();
/// assert_eq!((id.millis(), id.seq()), (1_700_000_000_000, 3));
/// assert_eq!(id.to_string(), "1700000000000-3");
/// assert!(id < "1700000000001-0".parse().unwrap());
/// assert!("not an id".parse::<AuditId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AuditId {
    millis: u64,
    seq: u64,
}

impl AuditId {
    /// `0-0`, before every entry.
    pub const ZERO: AuditId = AuditId { millis: 0, seq: 0 };

    /// The id `millis-seq`.
    pub const fn new(millis: u64, seq: u64) -> AuditId {
        AuditId { millis, seq }
    }

    /// Its milliseconds part.
    pub const fn millis(self) -> u64 {
        self.millis
    }

    /// Its sequence part.
    pub const fn seq(self) -> u64 {
        self.seq
    }

    /// The smallest id after this one.
    fn next(self) -> AuditId {
        match self.seq.checked_add(1) {
            Some(seq) => AuditId::new(self.millis, seq),
            None => AuditId::new(self.millis.saturating_add(1), 0),
        }
    }
}

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

/// Why a text is not an [`AuditId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream entry id (expected <milliseconds>-<sequence>)")]
pub struct InvalidAuditId;

impl FromStr for AuditId {
    type Err = InvalidAuditId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (millis, seq) = text.split_once('-').ok_or(InvalidAuditId)?;
        Ok(AuditId {
            millis: millis.parse().map_err(|_| InvalidAuditId)?,
            seq: seq.parse().map_err(|_| InvalidAuditId)?,
        })
    }
}

/// One invalidation, as read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its id in the stream.
    pub id: AuditId,
    /// The instance that invalidated.
    pub origin: OriginId,
    /// When, on that instance's tier clock.
    pub at: Timestamp,
    /// What was invalidated.
    pub invalidation: Invalidation,
    /// For a tag: its generation after the invalidation.
    pub generation: Option<u64>,
    /// Whether it was a purge (field `reason` = `purge`) rather than an
    /// invalidation.
    pub purge: bool,
}

/// Entries read in one call: those that read as entries, and the ids of
/// those that did not (another format, a field missing), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditBatch {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// The ids of the entries that could not be read.
    pub unreadable: Vec<AuditId>,
}

impl AuditBatch {
    /// Whether the call found nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.unreadable.is_empty()
    }

    /// Every id read, readable or not (what a consumer acknowledges).
    pub fn ids(&self) -> Vec<AuditId> {
        let mut ids: Vec<AuditId> = self.entries.iter().map(|entry| entry.id).collect();
        ids.extend_from_slice(&self.unreadable);
        ids.sort();
        ids
    }

    /// The last id read: where the next read starts after.
    pub fn last_id(&self) -> Option<AuditId> {
        let last_entry = self.entries.iter().map(|entry| entry.id).max();
        last_entry.max(self.unreadable.iter().copied().max())
    }
}

/// Where a new consumer group starts, or where
/// [`AuditLog::set_group_position`] puts one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStart {
    /// Before the oldest entry: the group reads everything kept.
    Beginning,
    /// After the newest entry: the group reads what is appended from now on.
    End,
    /// After this entry.
    After(AuditId),
}

impl GroupStart {
    fn as_id(self) -> String {
        match self {
            GroupStart::Beginning => "0".to_owned(),
            GroupStart::End => "$".to_owned(),
            GroupStart::After(id) => id.to_string(),
        }
    }
}

/// Where a consumer group stands; see [`AuditLog::group_position`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPosition {
    /// The last entry delivered to the group.
    pub last_delivered: AuditId,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// Entries appended after `last_delivered`, when the server can tell
    /// (Redis 7 and later).
    pub lag: Option<u64>,
    /// Whether entries the group has not read were trimmed away (the
    /// stream's cap went past it): what it reads next is not all it missed.
    /// When the server cannot tell exactly, `true` whenever it may be so.
    pub trimmed_past: bool,
}

/// The audit stream of a [`RedisBackend`](crate::RedisBackend): appends,
/// replays and consumer groups. Made by the backend (see
/// [`RedisBackend::audit`](crate::RedisBackend::audit)); a cheap `Clone`
/// handle. See the [module documentation](self).
///
/// Every call runs under the backend's invalidation timeout, on the
/// backend's connections, and fails with a [`BackendError`].
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<AuditState>,
}

struct AuditState {
    pool: Pool,
    key: String,
    max_len: u64,
    origin: OriginId,
    clock: SharedClock,
    timeout: Duration,
    label: Arc<str>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("key", &self.inner.key)
            .field("max_len", &self.inner.max_len)
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.to_string()),
        Value::Bytes(bytes) => std::str::from_utf8(bytes).ok().map(str::to_owned),
        Value::Integer(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A map or a flat list of alternating names and values, as pairs.
fn pairs_of(value: Value) -> Vec<(String, Value)> {
    match value {
        Value::Map(map) => map
            .inner()
            .into_iter()
            .filter_map(|(key, value)| key.as_str().map(|key| (key.to_string(), value)))
            .collect(),
        Value::Array(items) => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                if let Some(name) = text_of(&name) {
                    pairs.push((name, value));
                }
            }
            pairs
        }
        _ => Vec::new(),
    }
}

/// Reads one entry's fields; `None` when they are not an entry of ours.
fn entry_of(id: AuditId, fields: Value) -> Option<AuditEntry> {
    let fields = pairs_of(fields);
    let field = |name: &str| {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .and_then(|(_, value)| text_of(value))
    };
    if field("v")? != AUDIT_FORMAT {
        return None;
    }
    let origin = OriginId::new(&field("origin")?).ok()?;
    let at = Timestamp::from_millis(field("at")?.parse().ok()?);
    let target = field("target");
    let soft = match field("mode").as_deref() {
        None => false,
        Some("soft") => true,
        Some(_) => return None,
    };
    let invalidation = match (field("kind")?.as_str(), target, soft) {
        ("key", Some(key), false) => Invalidation::Key(key),
        ("tag", Some(tag), false) => Invalidation::Tag(tag),
        ("prefix", Some(prefix), false) => Invalidation::Prefix(prefix),
        ("purge", None, false) => Invalidation::Purge,
        ("key", Some(key), true) => Invalidation::SoftKey(key),
        ("tag", Some(tag), true) => Invalidation::SoftTag(tag),
        ("prefix", Some(prefix), true) => Invalidation::SoftPrefix(prefix),
        _ => return None,
    };
    let purge = field("reason").as_deref() == Some("purge");
    let generation = match field("gen") {
        Some(generation) => Some(generation.parse().ok()?),
        None => None,
    };
    Some(AuditEntry {
        id,
        origin,
        at,
        invalidation,
        generation,
        purge,
    })
}

/// Reads a list of stream entries (`[id, [field, value, ...]]` each).
fn batch_of(entries: Value) -> AuditBatch {
    let mut batch = AuditBatch::default();
    let Value::Array(entries) = entries else {
        return batch;
    };
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let fields = parts.pop().unwrap_or(Value::Null);
        let Some(id) = parts
            .pop()
            .as_ref()
            .and_then(text_of)
            .and_then(|id| id.parse().ok())
        else {
            continue;
        };
        match entry_of(id, fields) {
            Some(entry) => batch.entries.push(entry),
            None => {
                tracing::warn!(%id, "unreadable audit stream entry");
                batch.unreadable.push(id);
            }
        }
    }
    batch
}

impl AuditLog {
    pub(crate) fn new(
        pool: Pool,
        key: String,
        max_len: u64,
        origin: OriginId,
        clock: SharedClock,
        timeout: Duration,
        label: Arc<str>,
    ) -> AuditLog {
        AuditLog {
            inner: Arc::new(AuditState {
                pool,
                key,
                max_len,
                origin,
                clock,
                timeout,
                label,
            }),
        }
    }

    /// The stream's key.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The cap on its length (`MAXLEN ~`).
    pub fn max_len(&self) -> u64 {
        self.inner.max_len
    }

    /// The origin id appends carry (the backend's
    /// [instance id](crate::RedisBackend::instance_id)).
    pub fn origin(&self) -> &OriginId {
        &self.inner.origin
    }

    async fn run<T>(
        &self,
        op: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, BackendError> {
        match tokio::time::timeout(self.inner.timeout, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(crate::backend_error(&self.inner.label, error)),
            Err(_) => Err(BackendError::Timeout {
                tier: Arc::clone(&self.inner.label),
                after: self.inner.timeout,
            }),
        }
    }

    /// Appends `invalidation`, made by this instance by other means than
    /// the tier (a script that deleted keys, say), and returns its id.
    pub async fn append(&self, invalidation: &Invalidation) -> Result<AuditId, BackendError> {
        self.run(self.append_with(&self.inner.pool, &self.inner.origin, invalidation, None))
            .await
    }

    /// Appends on behalf of `origin`, through `client`.
    pub(crate) async fn append_with<C: StreamsInterface + Sync>(
        &self,
        client: &C,
        origin: &OriginId,
        invalidation: &Invalidation,
        generation: Option<u64>,
    ) -> Result<AuditId, fred::error::Error> {
        self.append_entry(client, origin, invalidation, generation, false)
            .await
    }

    /// Appends on behalf of `origin`, through `client`, with `reason` =
    /// `purge` when `purge` is set.
    pub(crate) async fn append_entry<C: StreamsInterface + Sync>(
        &self,
        client: &C,
        origin: &OriginId,
        invalidation: &Invalidation,
        generation: Option<u64>,
        purge: bool,
    ) -> Result<AuditId, fred::error::Error> {
        let (kind, target) = match invalidation {
            Invalidation::Key(key) | Invalidation::SoftKey(key) => ("key", Some(key.as_str())),
            Invalidation::Tag(tag) | Invalidation::SoftTag(tag) => ("tag", Some(tag.as_str())),
            Invalidation::Prefix(prefix) | Invalidation::SoftPrefix(prefix) => {
                ("prefix", Some(prefix.as_str()))
            }
            Invalidation::Purge => ("purge", None),
        };
        let at = self.inner.clock.now().as_millis();
        let mut fields: Vec<(&str, Value)> = vec![
            ("v", Value::from(AUDIT_FORMAT)),
            ("origin", Value::from(origin.as_str())),
            ("at", Value::from(at.to_string())),
            ("kind", Value::from(kind)),
        ];
        if let Some(target) = target {
            fields.push(("target", Value::from(target)));
        }
        if let Some(generation) = generation {
            fields.push(("gen", Value::from(generation.to_string())));
        }
        if invalidation.is_soft() {
            fields.push(("mode", Value::from("soft")));
        }
        if purge {
            fields.push(("reason", Value::from("purge")));
        }
        let cap = (
            "MAXLEN",
            "~",
            i64::try_from(self.inner.max_len).unwrap_or(i64::MAX),
        );
        let id: String = client
            .xadd(self.inner.key.as_str(), false, cap, "*", fields)
            .await?;
        id.parse()
            .map_err(|_| fred::error::Error::new(fred::error::ErrorKind::Parse, "XADD answered no entry id"))
    }

    /// Up to `count` entries appended after `after`, oldest first: a replay
    /// from any id ([`AuditId::ZERO`] for everything kept).
    pub async fn entries_after(&self, after: AuditId, count: usize) -> Result<AuditBatch, BackendError> {
        let start = after.next().to_string();
        let client = &self.inner.pool;
        let entries: Value = self
            .run(client.xrange(self.inner.key.as_str(), start, "+", Some(count as u64)))
            .await?;
        Ok(batch_of(entries))
    }

    /// The id of the newest entry, if there is one.
    pub async fn last_id(&self) -> Result<Option<AuditId>, BackendError> {
        let client = &self.inner.pool;
        let entries: Value = self
            .run(client.xrevrange(self.inner.key.as_str(), "+", "-", Some(1)))
            .await?;
        Ok(batch_of(entries).last_id())
    }

    /// How many entries the stream holds.
    pub async fn len(&self) -> Result<u64, BackendError> {
        let client = &self.inner.pool;
        let len: i64 = self.run(client.xlen(self.inner.key.as_str())).await?;
        Ok(len.max(0) as u64)
    }

    /// Whether the stream holds no entry (or does not exist).
    pub async fn is_empty(&self) -> Result<bool, BackendError> {
        Ok(self.len().await? == 0)
    }

    /// Creates the consumer group `group` at `start` (and the stream, if it
    /// does not exist yet: `MKSTREAM`). `Ok(false)` when the group exists
    /// already (it is left where it is).
    pub async fn create_group(&self, group: &str, start: GroupStart) -> Result<bool, BackendError> {
        let client = &self.inner.pool;
        let created = client
            .xgroup_create::<Value, _, _, _>(self.inner.key.as_str(), group, start.as_id(), true)
            .await;
        match created {
            Ok(_) => Ok(true),
            Err(error) if error.details().starts_with("BUSYGROUP") => Ok(false),
            Err(error) => Err(crate::backend_error(&self.inner.label, error)),
        }
    }

    /// Moves the group `group` to `start`.
    pub async fn set_group_position(&self, group: &str, start: GroupStart) -> Result<(), BackendError> {
        let client = &self.inner.pool;
        let _: Value = self
            .run(client.xgroup_setid(self.inner.key.as_str(), group, start.as_id()))
            .await?;
        Ok(())
    }

    /// Deletes the group `group`; whether there was one.
    pub async fn destroy_group(&self, group: &str) -> Result<bool, BackendError> {
        let client = &self.inner.pool;
        let destroyed: i64 = self
            .run(client.xgroup_destroy(self.inner.key.as_str(), group))
            .await?;
        Ok(destroyed > 0)
    }

    /// Up to `count` entries not yet delivered to `group`, for its member
    /// `consumer` (`XREADGROUP ... >`, without blocking). They are pending
    /// in the group until [acknowledged](AuditLog::ack).
    pub async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<AuditBatch, BackendError> {
        let client = &self.inner.pool;
        let reply: Value = self
            .run(client.xreadgroup(
                group,
                consumer,
                Some(count as u64),
                None,
                false,
                self.inner.key.as_str(),
                ">",
            ))
            .await?;
        // One stream asked: `[[key, entries]]` (or a map key -> entries);
        // nothing new: nil.
        let entries = match reply {
            Value::Map(map) => map.inner().into_iter().next().map(|(_, entries)| entries),
            Value::Array(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            },
            _ => None,
        };
        Ok(entries.map(batch_of).unwrap_or_default())
    }

    /// Acknowledges `ids` for `group`; how many were pending.
    pub async fn ack(&self, group: &str, ids: &[AuditId]) -> Result<u64, BackendError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let client = &self.inner.pool;
        let ids: Vec<String> = ids.iter().map(AuditId::to_string).collect();
        let acked: i64 = self.run(client.xack(self.inner.key.as_str(), group, ids)).await?;
        Ok(acked.max(0) as u64)
    }

    /// Where the group `group` stands, or `None` when there is no such
    /// group (or no stream).
    pub async fn group_position(&self, group: &str) -> Result<Option<GroupPosition>, BackendError> {
        let client = &self.inner.pool;
        let key = self.inner.key.as_str();
        let groups: Value = match self.run(client.xinfo_groups(key)).await {
            Ok(groups) => groups,
            Err(error) if error.to_string().contains("no such key") => return Ok(None),
            Err(error) => return Err(error),
        };
        let Value::Array(groups) = groups else {
            return Ok(None);
        };
        let Some(fields) = groups.into_iter().map(pairs_of).find(|fields| {
            fields
                .iter()
                .any(|(name, value)| name == "name" && text_of(value).as_deref() == Some(group))
        }) else {
            return Ok(None);
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value)
        };
        let last_delivered = field("last-delivered-id")
            .and_then(text_of)
            .and_then(|id| id.parse().ok())
            .unwrap_or(AuditId::ZERO);
        let pending = field("pending").and_then(Value::as_u64).unwrap_or(0);
        let lag = field("lag").and_then(Value::as_u64);
        let entries_read_known = field("entries-read").and_then(Value::as_u64).is_some();
        let trimmed_past = self
            .trimmed_past(last_delivered, lag.filter(|_| entries_read_known))
            .await?;
        Ok(Some(GroupPosition {
            last_delivered,
            pending,
            lag,
            trimmed_past,
        }))
    }

    /// Whether entries after `last` were trimmed away. Trimming drops the
    /// oldest entries first, so if `last` itself is still there, nothing
    /// after it went. Otherwise the server's counters decide where they can
    /// (`lag`, when the group's read counter is exact; for a group that
    /// never read anything, whether every entry ever appended is still
    /// there), and when they cannot, the answer is yes.
    async fn trimmed_past(&self, last: AuditId, exact_lag: Option<u64>) -> Result<bool, BackendError> {
        let client = &self.inner.pool;
        let key = self.inner.key.as_str();
        if last != AuditId::ZERO {
            let at: Value = self
                .run(client.xrange(key, last.to_string(), last.to_string(), Some(1)))
                .await?;
            if batch_of(at).last_id() == Some(last) {
                return Ok(false);
            }
        }
        let info: Value = self.run(client.xinfo_stream(key, false, None)).await?;
        let info = pairs_of(info);
        let field = |name: &str| {
            info.iter()
                .find(|(field, _)| field == name)
                .and_then(|(_, value)| value.as_u64())
        };
        let length = field("length").unwrap_or(0);
        Ok(match (exact_lag, field("entries-added")) {
            (Some(lag), _) => lag > length,
            (None, Some(added)) if last == AuditId::ZERO => added > length,
            _ => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(fields: &[(&str, &str)]) -> Value {
        Value::Array(
            fields
                .iter()
                .flat_map(|(name, value)| [Value::from(*name), Value::from(*value)])
                .collect(),
        )
    }

    #[test]
    fn entries_read_back_as_written() {
        let id = AuditId::new(5, 1);
        let tag = entry_of(
            id,
            flat(&[
                ("v", "1"),
                ("origin", "web-3"),
                ("at", "1700"),
                ("kind", "tag"),
                ("target", "team:7"),
                ("gen", "42"),
            ]),
        )
        .expect("an entry");
        assert_eq!(tag.invalidation, Invalidation::Tag("team:7".into()));
        assert_eq!(tag.generation, Some(42));
        assert_eq!(tag.at, Timestamp::from_millis(1700));
        assert_eq!(tag.origin.as_str(), "web-3");
        let purge = entry_of(
            id,
            flat(&[("v", "1"), ("origin", "a"), ("at", "1"), ("kind", "purge")]),
        );
        assert_eq!(purge.map(|e| e.invalidation), Some(Invalidation::Purge));
    }

    #[test]
    fn foreign_entries_are_not_entries() {
        let id = AuditId::new(5, 1);
        for fields in [
            flat(&[("v", "2"), ("origin", "a"), ("at", "1"), ("kind", "purge")]),
            flat(&[("v", "1"), ("origin", "a b"), ("at", "1"), ("kind", "purge")]),
            flat(&[("v", "1"), ("origin", "a"), ("at", "soon"), ("kind", "purge")]),
            flat(&[("v", "1"), ("origin", "a"), ("at", "1"), ("kind", "key")]),
            flat(&[
                ("v", "1"),
                ("origin", "a"),
                ("at", "1"),
                ("kind", "purge"),
                ("target", "x"),
            ]),
            flat(&[
                ("v", "1"),
                ("origin", "a"),
                ("at", "1"),
                ("kind", "drop"),
                ("target", "x"),
            ]),
            flat(&[
                ("v", "1"),
                ("origin", "a"),
                ("at", "1"),
                ("kind", "tag"),
                ("target", "x"),
                ("gen", "-"),
            ]),
            Value::Null,
        ] {
            assert_eq!(entry_of(id, fields.clone()), None, "{fields:?}");
        }
        let batch = batch_of(Value::Array(vec![
            Value::Array(vec![Value::from("1-0"), flat(&[("v", "9")])]),
            Value::Array(vec![Value::from("not-an-id"), flat(&[("v", "1")])]),
        ]));
        assert_eq!(batch.unreadable, vec![AuditId::new(1, 0)]);
        assert!(batch.entries.is_empty());
        assert_eq!(batch.last_id(), Some(AuditId::new(1, 0)));
    }

    #[test]
    fn ids_order_and_step() {
        assert_eq!(AuditId::new(7, 2).next(), AuditId::new(7, 3));
        assert_eq!(AuditId::new(7, u64::MAX).next(), AuditId::new(8, 0));
        assert!(AuditId::ZERO < AuditId::new(0, 1));
        assert_eq!(GroupStart::After(AuditId::new(3, 4)).as_id(), "3-4");
    }
}
