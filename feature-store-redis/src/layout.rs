//! How feature rows are laid out in Redis, and the script that writes them.
//!
//! * Key: `{prefix}:{<project>:<entity key>}:<view>`, e.g.
//!   `fs:{demo:driver_id=1001}:driver_hourly_stats`. The braces are a Redis
//!   Cluster hash tag: every view of one entity lives in one slot, so a read of
//!   many views of an entity goes to one node. Entity keys are the text keys of
//!   [`feature_store_core::online::codec::entity_keys`] (`}` is escaped there).
//! * Value: a string: the event time in microseconds since the epoch as 20
//!   characters of signed decimal text (`+0001700000000000000`), then the
//!   row's feature values (nulls as empty values) as one name-prefixed record of
//!   tagged bytes ([`feature_store_core::online::codec::encode_full_record`]). A plain string
//!   lets a read of any number of keys be one `MGET` (per slot in a cluster),
//!   which measured faster than one `HMGET` per key of a hash layout.
//! * Expiry: with the view's ttl, the key expires at event time + ttl
//!   (`SET … PXAT`); a value past its ttl is withheld at read time anyway.
//!   Without a ttl, or with `expire: false`, keys persist.
//! * Writes go through [`WRITE_SCRIPT`], which keeps whichever of the stored
//!   and the new value has the newer event time (the new one on a tie),
//!   atomically per key.

/// Length of the event-time prefix of every value.
pub const TS_LEN: usize = 20;

/// The value stored for a row: the event time prefix, then the record.
pub fn value(event_ts_micros: i64, record: &[u8], out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.clear();
    let _ = write!(out, "{event_ts_micros:+020}");
    out.extend_from_slice(record);
}

/// Splits a stored value into its event time and record.
pub fn split_value(v: &[u8]) -> Option<(i64, &[u8])> {
    let (ts, record) = v.split_at_checked(TS_LEN)?;
    Some((std::str::from_utf8(ts).ok()?.parse().ok()?, record))
}

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
/// `KEYS`: one per row. `ARGV`: the view's ttl in milliseconds (`0`: keys do
/// not expire), then per row its expiry (ms since the epoch, `0` for none)
/// and its value ([`value`], which starts with the event time). Returns the
/// number written.
///
/// One command per row in the usual case: `SET … GET` writes and returns the
/// row it replaced; only when that row was newer (an out-of-order write) is
/// it put back, with the expiry its own event time gives. Checking first
/// (`GETRANGE`, then `SET`) costs the server a second command for every row,
/// and the server is what limits materialization. Needs Redis 6.2 or later.
pub const WRITE_SCRIPT: &str = r"
local ttl = tonumber(ARGV[1])
local written = 0
local p = 2
for k = 1, #KEYS do
  local key = KEYS[k]
  local value = ARGV[p + 1]
  local old
  if ARGV[p] ~= '0' then
    old = redis.call('SET', key, value, 'PXAT', ARGV[p], 'GET')
  else
    old = redis.call('SET', key, value, 'GET')
  end
  local kept = old and tonumber(string.sub(old, 1, 20))
  if kept and kept > tonumber(string.sub(value, 1, 20)) then
    if ttl > 0 then
      redis.call('SET', key, old, 'PXAT', math.max(1, math.floor(kept / 1000) + ttl))
    else
      redis.call('SET', key, old)
    end
  else
    written = written + 1
  end
  p = p + 2
end
return written
";

/// Swaps rows that are still the expected ones.
///
/// `KEYS`: one per row. `ARGV`: per row the expected value (`0` for no key,
/// or `1` followed by the stored value [`value`]), the new value, and its
/// expiry (ms since the epoch, `0` for none). Returns per row 1 if swapped.
pub const SWAP_SCRIPT: &str = r"
local out = {}
local p = 1
for k = 1, #KEYS do
  local key = KEYS[k]
  local want = ARGV[p]
  local cur = redis.call('GET', key)
  local same
  if want == '0' then
    same = not cur
  else
    same = cur and cur == string.sub(want, 2)
  end
  if same then
    if ARGV[p + 2] ~= '0' then
      redis.call('SET', key, ARGV[p + 1], 'PXAT', ARGV[p + 2])
    else
      redis.call('SET', key, ARGV[p + 1])
    end
    out[k] = 1
  else
    out[k] = 0
  end
  p = p + 3
end
return out
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

    #[test]
    fn values_carry_their_event_time() {
        let mut v = Vec::new();
        for ts in [0, -5, 1_700_000_000_000_000, i64::MIN + 1, i64::MAX] {
            value(ts, b"rec", &mut v);
            assert_eq!(split_value(&v), Some((ts, &b"rec"[..])), "{ts}");
        }
        assert_eq!(split_value(b"short"), None);
    }
}
