//! One GCRA decision on Redis (`rate_limit::Gcra`, the same arithmetic):
//! one Lua script, so reading and moving a key's TAT is atomic and takes
//! one round trip, and every instance enforces one limit.
//!
//! The script reads the server's clock (`TIME`), so instances whose clocks
//! disagree still share one timeline; scripts are replicated by their
//! effects (the default since Redis 5), which is what lets a script read
//! the time. The key expires when its TAT passes (`PX`), so no state
//! outlives its use. Keys carry no hash tag: on a Cluster they spread over
//! the slots, and a hot key loads one node, not every limit with it.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::rate_limit::{Gcra, Verdict};
use super::redis_link::Link;
use super::StoreError;

/// KEYS[1]: the TAT (µs, the server's clock). ARGV: emission (µs), burst.
/// Answers `{allowed, wait µs, backlog µs}`.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = emission * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
local ttl = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl)
return {1, 0, new_tat - now}
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA));

/// The Redis key of a limiter key: `{prefix}:ratelimit:{hex}`, the
/// deployment's prefix without the braces of its hash tag.
pub(super) fn key_of(prefix: Option<&str>, key: &[u8; 16]) -> String {
    format!(
        "{}:ratelimit:{}",
        prefix.unwrap_or("portcullis"),
        hex::encode(key)
    )
}

/// `EVALSHA`, and `EVAL` once when the node has not seen the script yet
/// (a restart, a failover, a new Cluster node): both route by the key.
/// Not `Script::invoke_async`: its fallback is a keyless `SCRIPT LOAD`,
/// which a Cluster connection may send to another node than the key's.
pub(super) async fn decide(
    conn: &mut Link,
    key: String,
    gcra: &Gcra,
) -> Result<Verdict, StoreError> {
    let sha = redis::cmd("EVALSHA")
        .arg(SCRIPT.get_hash())
        .arg(1)
        .arg(&key)
        .arg(gcra.emission_us)
        .arg(gcra.burst)
        .query_async::<Value>(conn)
        .await;
    let answer = match sha {
        Err(e) if e.code() == Some("NOSCRIPT") => {
            redis::cmd("EVAL")
                .arg(GCRA)
                .arg(1)
                .arg(&key)
                .arg(gcra.emission_us)
                .arg(gcra.burst)
                .query_async::<Value>(conn)
                .await?
        }
        other => other?,
    };
    let (allowed, wait, backlog): (i64, i64, i64) = redis::from_redis_value(answer)
        .map_err(|e| StoreError::Corrupt(format!("rate limit script answer: {e}")))?;
    let us = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(gcra.verdict(allowed == 1, us(wait), us(backlog)))
}

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn limiter_keys_carry_no_hash_tag() {
        let key = key_of(Some("shop"), &[0xab; 16]);
        assert_eq!(key, format!("shop:ratelimit:{}", "ab".repeat(16)));
        assert!(!key.contains('{'));
    }
}
