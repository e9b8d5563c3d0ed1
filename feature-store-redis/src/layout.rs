//! How feature rows are laid out in Redis, and the script that writes them.
//!
//! * Key: `{prefix}:{<project>:<entity key>}:<view>`, e.g.
//!   `fs:{demo:driver_id=1001}:driver_hourly_stats`. The braces are a Redis
//!   Cluster hash tag: every view of one entity lives in one slot, so a read of
//!   many views of an entity goes to one node. Entity keys are the text keys of
//!   [`feature_store_core::online::codec::entity_keys`] (`}` is escaped there).
//! * Value: a hash with two fields: `_ts`, the event time in microseconds
//!   since the epoch as decimal text (compared by the write script), and `_v`,
//!   the row's non-null feature values as one name-prefixed record of tagged
//!   bytes ([`feature_store_core::online::codec::encode_record`]). One field
//!   instead of one per feature makes a read of a view one small reply and a
//!   write one `HSET` of two fields, measured faster for both.
//! * Expiry: with the view's ttl, the key expires at event time + ttl
//!   (`PEXPIREAT`); a value past its ttl is withheld at read time anyway.
//!   Without a ttl, or with `expire: false`, keys persist.
//! * Writes go through [`WRITE_SCRIPT`], which compares `_ts` and replaces
//!   both fields only when the new event time is not older, atomically per key.

/// Hash field holding the event time.
pub const TS_FIELD: &str = "_ts";

/// Hash field holding the values record.
pub const VALUES_FIELD: &str = "_v";

/// The key of one view's row for one entity.
pub fn key(prefix: &str, project: &str, entity: &str, view: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + project.len() + entity.len() + view.len() + 6);
    k.push_str(prefix);
    k.push_str(":{");
    k.push_str(project);
    k.push(':');
    k.push_str(entity);
    k.push_str("}:");
    k.push_str(view);
    k
}

/// A `SCAN MATCH` pattern for every key of `view` in `project`.
pub fn view_pattern(prefix: &str, project: &str, view: &str) -> String {
    format!("{}:{{{}:*}}:{}", glob_escape(prefix), glob_escape(project), glob_escape(view))
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Writes rows, skipping any whose event time is older than the stored one.
///
/// `KEYS`: one per row. `ARGV`: per row its event time (µs), its expiry (ms
/// since the epoch, `0` for none) and its values record. Returns the number written.
pub const WRITE_SCRIPT: &str = r"
local written = 0
local p = 1
for k = 1, #KEYS do
  local key = KEYS[k]
  local ts = ARGV[p]
  local cur = redis.call('HGET', key, '_ts')
  if (not cur) or tonumber(cur) <= tonumber(ts) then
    redis.call('HSET', key, '_ts', ts, '_v', ARGV[p + 2])
    if ARGV[p + 1] ~= '0' then redis.call('PEXPIREAT', key, ARGV[p + 1]) end
    written = written + 1
  end
  p = p + 3
end
return written
";

/// The Redis Cluster slot of `key` (CRC16/XMODEM of the hash tag, mod 16384).
pub fn slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let close = b[open + 1..].iter().position(|&c| c == b'}')?;
        (close > 0).then(|| &b[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(b)) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Reference values from the Redis Cluster specification's CRC16.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        let a = key("fs", "demo", "driver_id=1", "stats");
        let b = key("fs", "demo", "driver_id=1", "profile");
        assert_eq!(slot(&a), slot(&b), "views of one entity share a slot");
        assert_eq!(a, "fs:{demo:driver_id=1}:stats");
    }
}
