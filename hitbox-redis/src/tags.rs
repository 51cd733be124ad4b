//! Tags in Redis: the set of entries of each tag, the tag's generation, and
//! the fences an invalidation leaves on the keys it removed. The layout and
//! why it holds across processes are explained in the crate documentation
//! (*Tags* and *Tags that hold across processes*); this module is its
//! implementation: key names, Lua scripts and the calls that run them.

use std::sync::LazyLock;

use bytes::Bytes;
use fred::clients::{Client, WithOptions};
use fred::prelude::{Key, KeysInterface, LuaInterface, SortedSetsInterface, Value};
use fred::types::scripts::Script;
use futures::future::try_join_all;
use hitbox_backend::TagGenerations;
use hitbox_core::Tag;

use crate::{DELETE_BATCH, RedisBackend};

/// How long a tag's generation is kept after it last moved (24 hours).
/// Generations never repeat (each is at least the server's clock in
/// microseconds), so one that expired and comes back is still new to a
/// load that read the old one.
pub const GENERATION_TTL_MS: i64 = 24 * 3_600 * 1_000;

/// What a fence value starts with. A fence is what an invalidation leaves
/// under a key it removed: the tags it invalidated and their new
/// generations, so that a load that registered the key before the
/// invalidation but writes it after is refused. Reads see it as no entry.
/// Engine entries start with `HB` or `HS`; this starts with a zero byte.
pub const FENCE_MAGIC: &[u8] = b"\0hbfence1";

/// Whether a stored value is a fence rather than an entry.
pub(crate) fn is_fence(value: &[u8]) -> bool {
    value.starts_with(FENCE_MAGIC)
}

/// The tag's name in hexadecimal: how fences and the store script name a
/// tag (no character of it means anything to Lua patterns).
pub(crate) fn tag_hex(tag: &Tag) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(tag.as_str().len() * 2);
    for byte in tag.as_str().bytes() {
        hex.push(DIGITS[usize::from(byte >> 4)] as char);
        hex.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    hex
}

/// The tag's name as it appears between the braces of its keys' hash tag:
/// `%`, `{` and `}` percent-encoded (so the braces are ours), and the empty
/// name as a lone `%` (which no encoded name is), so that what is between
/// the braces is never empty.
pub(crate) fn hash_tag_of(tag: &Tag) -> String {
    let name = tag.as_str();
    if name.is_empty() {
        return "%".to_owned();
    }
    let mut encoded = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => encoded.push_str("%25"),
            '{' => encoded.push_str("%7B"),
            '}' => encoded.push_str("%7D"),
            other => encoded.push(other),
        }
    }
    encoded
}

/// Registers one key in one tag set, after checking the tag's generation
/// when the write is a load's. See the crate documentation.
///
/// KEYS[1]: the tag set, KEYS[2]: the tag's generation (same slot). ARGV:
/// the entry's Redis key, its TTL in ms, the grace period in ms, the
/// generation the load saw (or an empty string: no check). Returns 1, or 0
/// when the generation moved.
const REGISTER_TAG_LUA: &str = r#"
if ARGV[4] ~= '' then
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if current ~= tonumber(ARGV[4]) then return 0 end
end
-- Redis before 5 replicates scripts verbatim and refuses writes after TIME
-- unless told to replicate effects; later versions always do.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%d', now - grace))
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local keep = tonumber(last[2]) - now + grace
if keep < 1 then keep = 1 end
redis.call('PEXPIRE', KEYS[1], string.format('%d', keep))
return 1
"#;

/// Stores a load's entry unless a fence under its key says that one of its
/// tags was invalidated after the load read the tag's generation.
///
/// KEYS[1]: the entry. ARGV: the value, its TTL in ms, then for each tag its
/// name in hex and the generation the load saw. Returns 1 (stored) or 0.
const STORE_IF_CURRENT_LUA: &str = r#"
local magic = ARGV[#ARGV]
if redis.call('TYPE', KEYS[1]).ok == 'string' then
  local current = redis.call('GET', KEYS[1])
  if string.sub(current, 1, #magic) == magic then
    for i = 3, #ARGV - 1, 2 do
      local fenced = string.match(current, ' ' .. ARGV[i] .. '=(%d+)', #magic + 1)
      if fenced and tonumber(fenced) > tonumber(ARGV[i + 1]) then return 0 end
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// Moves a tag's generation on and lists the tag's members, in one step.
///
/// KEYS[1]: the tag set, KEYS[2]: the tag's generation. ARGV[1]: how long
/// the generation is kept, in ms. Returns the new generation followed by
/// the members.
const BUMP_TAG_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local old = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local new = old + 1
if now > new then new = now end
local generation = string.format('%d', new)
redis.call('SET', KEYS[2], generation, 'PX', ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
table.insert(members, 1, generation)
return members
"#;

/// Replaces each key (an entry, a fence or nothing) with a fence naming the
/// tag and its new generation, merged with what an earlier fence named.
///
/// KEYS: the entries' keys. ARGV: the tag in hex, its new generation, the
/// fence's lifetime in ms, the fence magic. Returns how many entries were
/// removed (fences and absent keys do not count).
const FENCE_LUA: &str = r#"
local magic = ARGV[4]
local removed = 0
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key).ok
  local earlier = ''
  local keep = tonumber(ARGV[3])
  if kind == 'string' then
    local current = redis.call('GET', key)
    if string.sub(current, 1, #magic) == magic then
      earlier = string.gsub(string.sub(current, #magic + 1), ' ' .. ARGV[1] .. '=%d+', '')
      local left = redis.call('PTTL', key)
      if left > keep then keep = left end
    else
      removed = removed + 1
    end
  elseif kind ~= 'none' then
    redis.call('DEL', key)
    removed = removed + 1
  end
  redis.call('SET', key, magic .. earlier .. ' ' .. ARGV[1] .. '=' .. ARGV[2], 'PX', string.format('%d', keep))
end
return removed
"#;

/// Whether a key holds an entry (not a fence).
///
/// KEYS[1]: the key. ARGV[1]: the fence magic.
const EXISTS_LUA: &str = r#"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return 0 end
if kind == 'string' and redis.call('GETRANGE', KEYS[1], 0, #ARGV[1] - 1) == ARGV[1] then return 0 end
return 1
"#;

static REGISTER_TAG: LazyLock<Script> = LazyLock::new(|| Script::from_lua(REGISTER_TAG_LUA));
static STORE_IF_CURRENT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(STORE_IF_CURRENT_LUA));
static BUMP_TAG: LazyLock<Script> = LazyLock::new(|| Script::from_lua(BUMP_TAG_LUA));
static FENCE: LazyLock<Script> = LazyLock::new(|| Script::from_lua(FENCE_LUA));
static EXISTS: LazyLock<Script> = LazyLock::new(|| Script::from_lua(EXISTS_LUA));

/// Runs a script by its hash, and by its text when the node does not know
/// it yet (which also caches it there for the next call).
async fn eval(
    client: &WithOptions<Client>,
    script: &Script,
    lua: &'static str,
    keys: Vec<Key>,
    args: Vec<Value>,
) -> Result<Value, fred::error::Error> {
    match client
        .evalsha::<Value, _, _, _>(script.sha1().clone(), keys.clone(), args.clone())
        .await
    {
        Err(error) if error.details().starts_with("NOSCRIPT") => {
            client.eval::<Value, _, _, _>(lua, keys, args).await
        }
        other => other,
    }
}

fn as_count(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn invalid(what: &'static str) -> fred::error::Error {
    fred::error::Error::new(fred::error::ErrorKind::Parse, what)
}

impl RedisBackend {
    /// Registers `member` in `tag`'s set; with `expected`, only if the
    /// tag's generation is still that one. Returns whether it registered.
    pub(crate) async fn register_tag(
        &self,
        client: &WithOptions<Client>,
        tag: &Tag,
        member: &str,
        px: i64,
        expected: Option<u64>,
    ) -> Result<bool, fred::error::Error> {
        let keys = vec![
            Key::from(self.tag_set_key(tag)),
            Key::from(self.tag_generation_key(tag)),
        ];
        let args = vec![
            Value::from(member),
            Value::from(px),
            Value::from(self.inner.tag_grace_ms),
            match expected {
                Some(generation) => Value::from(generation.to_string()),
                None => Value::from(""),
            },
        ];
        let registered = eval(client, &REGISTER_TAG, REGISTER_TAG_LUA, keys, args).await?;
        Ok(as_count(&registered) == 1)
    }

    /// The generations of `tags` as this tier records them now (0 for a tag
    /// never invalidated, or whose generation expired).
    pub(crate) async fn read_generations(&self, tags: &[Tag]) -> Result<TagGenerations, fred::error::Error> {
        let names: Vec<String> = tags.iter().map(|tag| self.tag_generation_key(tag)).collect();
        let pool = &self.inner.pool;
        // Each tag's generation lives in the tag's own slot: one GET each
        // in a cluster (sent together), one MGET otherwise.
        let values: Vec<Value> = if self.inner.clustered || names.len() == 1 {
            try_join_all(names.iter().map(|name| pool.get::<Value, _>(name.as_str()))).await?
        } else {
            let keys: Vec<Key> = names.into_iter().map(Key::from).collect();
            match pool.mget::<Value, _>(keys).await? {
                Value::Array(values) => values,
                single => vec![single],
            }
        };
        if values.len() != tags.len() {
            return Err(invalid("MGET answered another number of generations"));
        }
        let mut seen = TagGenerations::new();
        for (tag, value) in tags.iter().zip(values) {
            let generation = match value {
                Value::Null => 0,
                value => value
                    .as_string()
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or_else(|| invalid("a tag generation is not a number"))?,
            };
            seen.record(self.inner.source, tag.clone(), generation);
        }
        Ok(seen)
    }

    /// Registers a load's entry in its tags' sets (each only if its
    /// generation did not move), then stores it unless a fence refuses it.
    /// Returns whether it was stored.
    pub(crate) async fn store_if_current(
        &self,
        client: &WithOptions<Client>,
        redis_key: &str,
        value: Bytes,
        px: i64,
        expected: &[(&Tag, u64)],
    ) -> Result<bool, fred::error::Error> {
        let registered = try_join_all(
            expected
                .iter()
                .map(|(tag, generation)| self.register_tag(client, tag, redis_key, px, Some(*generation))),
        )
        .await?;
        if registered.contains(&false) {
            return Ok(false);
        }
        let mut args = Vec::with_capacity(3 + 2 * expected.len());
        args.push(Value::Bytes(value));
        args.push(Value::from(px));
        for (tag, generation) in expected {
            args.push(Value::from(tag_hex(tag)));
            args.push(Value::from(generation.to_string()));
        }
        args.push(Value::Bytes(Bytes::from_static(FENCE_MAGIC)));
        let stored = eval(
            client,
            &STORE_IF_CURRENT,
            STORE_IF_CURRENT_LUA,
            vec![Key::from(redis_key)],
            args,
        )
        .await?;
        Ok(as_count(&stored) == 1)
    }

    /// Invalidates `tag`: moves its generation on, fences its members (which
    /// removes their entries), then takes the members it read out of the
    /// set. Returns how many entries were removed and the new generation.
    pub(crate) async fn invalidate_tag_now(
        &self,
        client: &WithOptions<Client>,
        tag: &Tag,
    ) -> Result<(u64, u64), fred::error::Error> {
        let set = self.tag_set_key(tag);
        let keys = vec![Key::from(set.as_str()), Key::from(self.tag_generation_key(tag))];
        let bumped = eval(
            client,
            &BUMP_TAG,
            BUMP_TAG_LUA,
            keys,
            vec![Value::from(GENERATION_TTL_MS)],
        )
        .await?;
        let Value::Array(mut reply) = bumped else {
            return Err(invalid("the tag invalidation script answered no list"));
        };
        if reply.is_empty() {
            return Err(invalid("the tag invalidation script answered an empty list"));
        }
        let generation = reply
            .remove(0)
            .as_string()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| invalid("a tag generation is not a number"))?;
        let members: Vec<Bytes> = reply.into_iter().filter_map(Value::into_bytes).collect();
        if members.is_empty() {
            return Ok((0, generation));
        }
        let removed = self.fence_keys(client, &members, tag, generation).await?;
        for batch in members.chunks(DELETE_BATCH) {
            let batch: Vec<Value> = batch.iter().cloned().map(Value::Bytes).collect();
            client.zrem::<i64, _, _>(set.as_str(), batch).await?;
        }
        Ok((removed, generation))
    }

    /// Puts a fence for `tag` at `generation` under each of `keys`.
    async fn fence_keys(
        &self,
        client: &WithOptions<Client>,
        keys: &[Bytes],
        tag: &Tag,
        generation: u64,
    ) -> Result<u64, fred::error::Error> {
        let args = vec![
            Value::from(tag_hex(tag)),
            Value::from(generation.to_string()),
            Value::from(self.inner.fence_ms),
            Value::Bytes(Bytes::from_static(FENCE_MAGIC)),
        ];
        let mut removed = 0u64;
        for batch in keys.chunks(DELETE_BATCH) {
            if self.inner.clustered {
                // One script per key: a script may only name keys of one
                // slot. Sent together, so one round trip per node.
                let fences = batch.iter().map(|key| {
                    eval(
                        client,
                        &FENCE,
                        FENCE_LUA,
                        vec![Key::from(key.clone())],
                        args.clone(),
                    )
                });
                for count in try_join_all(fences).await? {
                    removed += as_count(&count).max(0) as u64;
                }
            } else {
                let batch: Vec<Key> = batch.iter().cloned().map(Key::from).collect();
                let count = eval(client, &FENCE, FENCE_LUA, batch, args.clone()).await?;
                removed += as_count(&count).max(0) as u64;
            }
        }
        Ok(removed)
    }

    /// Whether `redis_key` holds an entry (a fence is none).
    pub(crate) async fn holds_entry(
        &self,
        client: &WithOptions<Client>,
        redis_key: &str,
    ) -> Result<bool, fred::error::Error> {
        let found = eval(
            client,
            &EXISTS,
            EXISTS_LUA,
            vec![Key::from(redis_key)],
            vec![Value::Bytes(Bytes::from_static(FENCE_MAGIC))],
        )
        .await?;
        Ok(as_count(&found) == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_are_never_empty_and_never_hold_braces() {
        assert_eq!(hash_tag_of(&Tag::from("team:7")), "team:7");
        assert_eq!(hash_tag_of(&Tag::from("")), "%");
        assert_eq!(hash_tag_of(&Tag::from("%")), "%25");
        assert_eq!(hash_tag_of(&Tag::from("}{a}")), "%7D%7Ba%7D");
        // Distinct names, distinct keys.
        assert_ne!(hash_tag_of(&Tag::from("%7B")), hash_tag_of(&Tag::from("{")));
    }

    #[test]
    fn tag_names_in_hex() {
        assert_eq!(tag_hex(&Tag::from("a=1 ")), "613d3120");
        assert_eq!(tag_hex(&Tag::from("")), "");
    }

    #[test]
    fn fences_are_not_entries() {
        assert!(is_fence(b"\0hbfence1 74=5"));
        assert!(!is_fence(b"HB\x02..."));
        assert!(!is_fence(b""));
    }
}
