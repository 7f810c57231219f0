//! Slows down clients that keep presenting bad refresh tokens.
//!
//! Per instance and per client address: after `max_failures` failures in
//! `window`, further attempts get 429 with `Retry-After` until the window
//! that started with the first failure is over.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    windows: Cache<IpAddr, Window>,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Arc<Self> {
        let windows = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(window)
            .build();
        Arc::new(Self {
            max_failures,
            window,
            windows,
        })
    }

    /// `Some(seconds to wait)` when this address must wait.
    pub fn blocked(&self, addr: IpAddr) -> Option<u64> {
        let window = self.windows.get(&addr)?;
        let elapsed = window.started.elapsed();
        if window.failures < self.max_failures || elapsed >= self.window {
            return None;
        }
        Some((self.window - elapsed).as_secs().max(1))
    }

    pub fn record_failure(&self, addr: IpAddr) {
        let window = self.window;
        self.windows.entry(addr).and_upsert_with(|existing| {
            match existing.map(|e| e.into_value()) {
                Some(w) if w.started.elapsed() < window => Window {
                    failures: w.failures + 1,
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
    fn blocks_after_the_limit_and_only_that_address() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let bad: IpAddr = "192.0.2.1".parse().expect("ip");
        let good: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..2 {
            limiter.record_failure(bad);
        }
        assert_eq!(limiter.blocked(bad), None);
        limiter.record_failure(bad);
        let wait = limiter.blocked(bad).expect("blocked");
        assert!((1..=60).contains(&wait));
        assert_eq!(limiter.blocked(good), None);
    }
}
