//! Rate limits by the generic cell rate algorithm (GCRA): one number per
//! key, its theoretical arrival time (TAT), and no background refill.
//!
//! A policy lets `burst` requests through at once and one more every
//! `emission` after that. A request arriving at `now` moves the key's TAT
//! to `max(TAT, now) + emission`; it passes if that is no further than
//! `burst × emission` ahead of `now`. The state of a key is worth keeping
//! only until its TAT has passed, so it expires then, by itself.
//!
//! [`LocalLimits`] keeps the TATs of this instance in a bounded moka cache
//! (the embedded store, and the fallback when a shared one is down); the
//! Redis store decides the same arithmetic in one Lua script
//! (`redis_rate_limit`), so every instance shares one limit. Times are
//! microseconds: `"3/s"` is 333,333 µs, not a rounded 333 ms.

use std::time::{Duration, Instant};

use aws_lc_rs::digest::{digest, SHA256};
use moka::sync::Cache;
use moka::Expiry;

/// The address a limit counts: an IPv6 client by its /64, the block one
/// host is usually given, so rotating addresses inside it buys nothing.
pub fn counted_address(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// The compiled arithmetic of one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Microseconds between two requests at the sustained rate.
    pub emission_us: u64,
    /// Requests that may arrive at once.
    pub burst: u64,
}

/// What a limiter said about one request, in the units the response
/// fields speak (whole seconds, rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Requests that could still pass right now (`RateLimit: r`).
    pub remaining: u64,
    /// Seconds until the next request may pass; 0 when this one did.
    pub retry_after: u64,
    /// Seconds until the whole burst is available again (`RateLimit: t`).
    pub reset: u64,
}

impl Gcra {
    /// How far ahead of now a TAT may be and a request still pass.
    fn tolerance(&self) -> u64 {
        self.emission_us.saturating_mul(self.burst)
    }

    /// One request at `now` against the key's TAT (`None`: never seen, or
    /// expired). Returns the verdict and the TAT to store when it passed.
    pub fn decide(&self, tat: Option<u64>, now: u64) -> (Verdict, Option<u64>) {
        let tat = tat.unwrap_or(now).max(now);
        let next = tat.saturating_add(self.emission_us);
        let allow_at = next.saturating_sub(self.tolerance());
        if now < allow_at {
            return (self.verdict(false, allow_at - now, tat - now), None);
        }
        (self.verdict(true, 0, next - now), Some(next))
    }

    /// The verdict from the script's raw answer: `wait` µs until the next
    /// request may pass, `backlog` µs between now and the key's TAT.
    pub fn verdict(&self, allowed: bool, wait: u64, backlog: u64) -> Verdict {
        let room = self.tolerance().saturating_sub(backlog);
        Verdict {
            allowed,
            remaining: if allowed {
                room / self.emission_us.max(1)
            } else {
                0
            },
            retry_after: if allowed { 0 } else { ceil_secs(wait).max(1) },
            reset: ceil_secs(backlog),
        }
    }
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// The key a limiter stores a caller under: the first 128 bits of the
/// SHA-256 of its parts (policy, route, caller), so the table holds no
/// user name or address and every key has one small size.
pub fn limit_key(parts: &[&str]) -> [u8; 16] {
    let mut joined = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        // Each part's length after it keeps ("ab", "c") apart from ("a", "bc").
        joined.extend_from_slice(part.as_bytes());
        joined.extend_from_slice(&(part.len() as u64).to_le_bytes());
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest(&SHA256, &joined).as_ref()[..16]);
    key
}

/// Each entry lives until its TAT: past it, the key is as good as new.
struct UntilTat {
    epoch: Instant,
}

impl UntilTat {
    fn left(&self, tat: u64, at: Instant) -> Duration {
        (self.epoch + Duration::from_micros(tat)).saturating_duration_since(at)
    }
}

impl Expiry<u128, u64> for UntilTat {
    fn expire_after_create(&self, _key: &u128, tat: &u64, at: Instant) -> Option<Duration> {
        Some(self.left(*tat, at))
    }

    fn expire_after_update(
        &self,
        _key: &u128,
        tat: &u64,
        at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.left(*tat, at))
    }
}

/// The TATs this instance keeps: at most `capacity` keys (moka evicts the
/// least useful first), each forgotten when its TAT passes.
pub struct LocalLimits {
    tats: Cache<u128, u64>,
    epoch: Instant,
}

impl LocalLimits {
    pub fn new(capacity: u64) -> Self {
        let epoch = Instant::now();
        let tats = Cache::builder()
            .max_capacity(capacity)
            .expire_after(UntilTat { epoch })
            .build();
        Self { tats, epoch }
    }

    /// One request of `key` under `gcra`, decided and recorded atomically
    /// (moka computes one key at a time).
    pub fn decide(&self, key: &[u8; 16], gcra: &Gcra) -> Verdict {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut verdict = None;
        self.tats
            .entry(u128::from_le_bytes(*key))
            .and_compute_with(|entry| {
                let (decided, next) = gcra.decide(entry.map(|e| e.into_value()), now);
                verdict = Some(decided);
                match next {
                    Some(tat) => moka::ops::compute::Op::Put(tat),
                    None => moka::ops::compute::Op::Nop,
                }
            });
        verdict.unwrap_or_else(|| gcra.decide(None, now).0)
    }

    /// Keys held now (after pending evictions ran).
    pub fn len(&self) -> u64 {
        self.tats.run_pending_tasks();
        self.tats.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_SECOND_3: Gcra = Gcra {
        emission_us: 333_333,
        burst: 3,
    };

    #[test]
    fn a_burst_passes_then_one_per_emission() {
        let mut tat = None;
        for i in 0..3 {
            let (verdict, next) = PER_SECOND_3.decide(tat, 0);
            assert!(verdict.allowed, "request {i}");
            assert_eq!(verdict.remaining, 2 - i);
            tat = next;
        }
        let (refused, none) = PER_SECOND_3.decide(tat, 0);
        assert!(!refused.allowed);
        assert_eq!(none, None);
        assert_eq!(refused.retry_after, 1);
        assert_eq!(refused.reset, 1);
        // One emission later, exactly one more passes.
        let (later, next) = PER_SECOND_3.decide(tat, 333_333);
        assert!(later.allowed);
        assert!(!PER_SECOND_3.decide(next, 333_334).0.allowed);
    }

    #[test]
    fn the_local_table_limits_each_key_alone() {
        let limits = LocalLimits::new(1000);
        let gcra = Gcra {
            emission_us: 60_000_000,
            burst: 2,
        };
        let (a, b) = (limit_key(&["p", "a"]), limit_key(&["p", "b"]));
        assert!(limits.decide(&a, &gcra).allowed);
        assert!(limits.decide(&a, &gcra).allowed);
        let refused = limits.decide(&a, &gcra);
        assert!(!refused.allowed);
        assert!((59..=60).contains(&refused.retry_after));
        assert!(limits.decide(&b, &gcra).allowed);
        assert_ne!(limit_key(&["ab", "c"]), limit_key(&["a", "bc"]));
    }

    /// The figure the README states: the resident memory a full table of
    /// `capacity` keys adds, read from `/proc/self/statm` around filling
    /// it with 1,000,000 distinct keys (so it also shows the cap holds).
    /// Printed, not asserted against a threshold: run with
    /// `cargo test --release --lib store::rate_limit -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; prints the memory a million keys take"]
    fn memory_of_a_million_distinct_keys() {
        for capacity in [100_000u64, 1_000_000] {
            let before = resident_bytes();
            let limits = LocalLimits::new(capacity);
            let gcra = Gcra {
                emission_us: 60_000_000,
                burst: 10,
            };
            for i in 0u32..1_000_000 {
                limits.decide(&limit_key(&["api", &i.to_string()]), &gcra);
            }
            let held = limits.len();
            let grown = resident_bytes().saturating_sub(before);
            println!(
                "capacity {capacity}: {held} keys held, RSS grew {} MiB ({} bytes per key)",
                grown / (1 << 20),
                grown / held.max(1)
            );
            assert!(held <= capacity + capacity / 10);
        }
    }

    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }
}
