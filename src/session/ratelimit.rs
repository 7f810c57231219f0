//! Slows down a client that keeps presenting the same dead refresh token.
//!
//! Counted per presented token (its SHA-256), never per client address: a
//! 256-bit refresh token cannot be guessed, so failures from one address
//! say nothing about the next token it presents, and behind a NAT or a
//! corporate proxy one stale tab must not log everyone else out. A token
//! that failed `max_failures` times within `window` is answered 429 with
//! `Retry-After` until the window that began with its first failure is
//! over, without another store lookup. A token that never failed is never
//! limited, so a valid refresh token is never refused for what others did.
//! Per instance; entries are bounded in number and expire with the window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{digest, SHA256};
use moka::sync::Cache;

/// Most tokens tracked at once; the oldest are forgotten first.
const MAX_TRACKED: u64 = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// The key of a presented token: its SHA-256, so the limiter holds no
/// usable token and two different tokens never share a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn of(presented: &str) -> Self {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, presented.as_bytes()).as_ref());
        Self(key)
    }
}

pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    windows: Cache<TokenKey, Window>,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Arc<Self> {
        let windows = Cache::builder()
            .max_capacity(MAX_TRACKED)
            .time_to_live(window)
            .build();
        Arc::new(Self {
            max_failures,
            window,
            windows,
        })
    }

    /// `Some(seconds to wait)` when this token must wait.
    pub fn blocked(&self, token: &TokenKey) -> Option<u64> {
        let window = self.windows.get(token)?;
        let elapsed = window.started.elapsed();
        if window.failures < self.max_failures || elapsed >= self.window {
            return None;
        }
        Some((self.window - elapsed).as_secs().max(1))
    }

    /// Counts a refresh of this token that could not succeed.
    pub fn record_failure(&self, token: TokenKey) {
        let window = self.window;
        self.windows.entry(token).and_upsert_with(|existing| {
            match existing.map(|e| e.into_value()) {
                Some(w) if w.started.elapsed() < window => Window {
                    failures: w.failures.saturating_add(1),
                    ..w
                },
                _ => Window {
                    started: Instant::now(),
                    failures: 1,
                },
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_a_failing_token_after_the_limit_and_no_other() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let dead = TokenKey::of("prt_dead");
        let other = TokenKey::of("prt_other");
        for _ in 0..2 {
            limiter.record_failure(dead);
        }
        assert_eq!(limiter.blocked(&dead), None);
        limiter.record_failure(dead);
        let wait = limiter.blocked(&dead).expect("blocked");
        assert!((1..=60).contains(&wait));
        assert_eq!(limiter.blocked(&other), None);
    }
}
