//! Slows down failed logins without locking the user out (OWASP's
//! Authentication Cheat Sheet: exponentially growing delays, counted per
//! account and per source, rather than locking accounts).
//!
//! Two counts, both of the login backend's refusals: one per (user name,
//! client address) pair and one per client address (an IPv6 client by
//! its /64, which one host usually holds whole). Past `free` failures,
//! each further one doubles the wait before the next attempt, up to
//! `max_delay`. So a run of wrong passwords for one account from one
//! address slows down; so does one password sprayed over many accounts
//! from one address (the address count); and the real user, logging in
//! from their own address, meets neither count. A success clears its
//! pair (not its address: one valid account must not buy a sprayer fresh
//! attempts). Failures are forgotten `window` after the last one. An
//! attempt counts from the moment it is let through until its answer
//! says otherwise, so attempts sent in parallel see each other.
//!
//! A waiting client is answered at once (429 `rate_limited`, with
//! `Retry-After`), not held on a sleeping connection: holding connections
//! open is what an attacker with many of them wants. Per instance, like
//! the refresh limiter; N instances give a run that spreads over them
//! only log₂ N more doublings. Bounded: at most `MAX_TRACKED` pairs and
//! as many addresses, the least used forgotten first.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::store::rate_limit::{counted_address as address_of, limit_key};

/// Most pairs (and, apart, most addresses) tracked at once.
const MAX_TRACKED: u64 = 100_000;

/// An entry no failure touched for this long is dropped whatever the
/// window says (the window is checked on every read).
const KEPT_AT_MOST: Duration = Duration::from_secs(24 * 3600);

/// `[login] throttle…`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures of one pair before the first delay.
    pub pair_failures: u32,
    /// Failures from one address before the first delay.
    pub address_failures: u32,
    pub delay: Duration,
    pub max_delay: Duration,
    pub window: Duration,
    /// The form or JSON field that names the user.
    pub username_field: String,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

pub struct LoginThrottle {
    pairs: Cache<u128, Failures>,
    addresses: Cache<IpAddr, Failures>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            pairs: bounded(),
            addresses: bounded(),
        }
    }
}

fn bounded<K: std::hash::Hash + Eq + Send + Sync + 'static>() -> Cache<K, Failures> {
    Cache::builder()
        .max_capacity(MAX_TRACKED)
        .time_to_live(KEPT_AT_MOST)
        .build()
}

impl LoginThrottle {
    /// How long this attempt must wait; `None`: it may go to the backend,
    /// and is counted as a failure until its answer says otherwise
    /// ([`Self::succeeded`], [`Self::not_judged`]). Counted before the
    /// backend answers, so attempts sent in parallel see each other: the
    /// next one waits while this one is still out.
    pub fn begin(&self, settings: &ThrottleSettings, user: &str, ip: IpAddr) -> Option<Duration> {
        let wait = self.wait(settings, user, ip);
        if wait.is_none() {
            self.failed(settings, user, ip);
        }
        wait
    }

    /// How long an attempt of this pair must wait now.
    fn wait(&self, settings: &ThrottleSettings, user: &str, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let pair = self.pairs.get(&pair_key(user, ip));
        let address = self.addresses.get(&address_of(ip));
        let pair = pair.and_then(|f| pending(settings, f, settings.pair_failures, now));
        let address = address.and_then(|f| pending(settings, f, settings.address_failures, now));
        pair.max(address)
    }

    /// One more failure of this pair and this address.
    fn failed(&self, settings: &ThrottleSettings, user: &str, ip: IpAddr) {
        let window = settings.window;
        (self.pairs.entry(pair_key(user, ip))).and_upsert_with(|e| one_more(e, window));
        (self.addresses.entry(address_of(ip))).and_upsert_with(|e| one_more(e, window));
    }

    /// The backend accepted this user name from this address: the pair
    /// starts afresh, and the address loses the failure `begin` counted.
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        self.pairs.invalidate(&pair_key(user, ip));
        one_less(&self.addresses, address_of(ip));
    }

    /// The backend did not judge the credentials (it failed, timed out,
    /// or the attempt ended before asking it): `begin`'s count is undone.
    pub fn not_judged(&self, user: &str, ip: IpAddr) {
        one_less(&self.pairs, pair_key(user, ip));
        one_less(&self.addresses, address_of(ip));
    }
}

/// One failure fewer; none left, no entry.
fn one_less<K: std::hash::Hash + Eq + Send + Sync + 'static>(cache: &Cache<K, Failures>, key: K) {
    use moka::ops::compute::Op;
    cache
        .entry(key)
        .and_compute_with(|entry| match entry.map(moka::Entry::into_value) {
            Some(f) if f.count > 1 => Op::Put(Failures {
                count: f.count - 1,
                ..f
            }),
            Some(_) => Op::Remove,
            None => Op::Nop,
        });
}

/// A failure added to those still within the window.
fn one_more<K>(existing: Option<moka::Entry<K, Failures>>, window: Duration) -> Failures {
    let now = Instant::now();
    match existing.map(moka::Entry::into_value) {
        Some(f) if now.duration_since(f.last) < window => Failures {
            count: f.count.saturating_add(1),
            last: now,
        },
        _ => Failures {
            count: 1,
            last: now,
        },
    }
}

/// The wait left after `failures`, `free` of which cost nothing.
fn pending(
    settings: &ThrottleSettings,
    failures: Failures,
    free: u32,
    now: Instant,
) -> Option<Duration> {
    let since = now.duration_since(failures.last);
    if since >= settings.window {
        return None;
    }
    let delay = delay_after(settings, failures.count, free)?;
    delay.checked_sub(since).filter(|left| !left.is_zero())
}

/// `delay`, doubled for every failure past the first one beyond `free`,
/// capped at `max_delay`.
fn delay_after(settings: &ThrottleSettings, count: u32, free: u32) -> Option<Duration> {
    let beyond = count.checked_sub(free)?.checked_sub(1)?;
    let factor = 1u32.checked_shl(beyond.min(31)).unwrap_or(u32::MAX);
    Some(
        settings
            .delay
            .checked_mul(factor)
            .unwrap_or(settings.max_delay)
            .min(settings.max_delay),
    )
}

/// One user name in any case and without surrounding spaces, from one
/// address: `Alice` and `alice ` are one account to most backends.
fn pair_key(user: &str, ip: IpAddr) -> u128 {
    let user = user.trim().to_lowercase();
    u128::from_le_bytes(limit_key(&["login", &user, &address_of(ip).to_string()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ThrottleSettings {
        ThrottleSettings {
            pair_failures: 2,
            address_failures: 4,
            delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(60),
            window: Duration::from_secs(3600),
            username_field: "username".into(),
        }
    }

    #[test]
    fn delays_double_past_the_free_failures_up_to_the_cap() {
        let s = settings();
        assert_eq!(delay_after(&s, 2, 2), None);
        assert_eq!(delay_after(&s, 3, 2), Some(Duration::from_secs(10)));
        assert_eq!(delay_after(&s, 4, 2), Some(Duration::from_secs(20)));
        assert_eq!(delay_after(&s, 5, 2), Some(Duration::from_secs(40)));
        assert_eq!(delay_after(&s, 6, 2), Some(Duration::from_secs(60)));
        assert_eq!(delay_after(&s, 400, 2), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_pair_waits_and_others_do_not_and_success_clears_it() {
        let (s, throttle) = (settings(), LoginThrottle::default());
        let (home, away): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().expect("an address"),
            "198.51.100.7".parse().expect("an address"),
        );
        for _ in 0..3 {
            assert_eq!(throttle.begin(&s, "alice", away), None);
        }
        assert!(throttle.begin(&s, "Alice ", away).is_some());
        assert_eq!(throttle.wait(&s, "alice", home), None);
        assert_eq!(throttle.wait(&s, "bob", away), None);
        throttle.succeeded("alice", away);
        assert_eq!(throttle.wait(&s, "alice", away), None);
    }

    #[test]
    fn an_attempt_the_backend_did_not_judge_is_not_a_failure() {
        let (s, throttle) = (settings(), LoginThrottle::default());
        let ip: IpAddr = "192.0.2.9".parse().expect("an address");
        for _ in 0..10 {
            assert_eq!(throttle.begin(&s, "alice", ip), None);
            throttle.not_judged("alice", ip);
        }
        for _ in 0..10 {
            assert_eq!(throttle.begin(&s, "bob", ip), None, "a NAT's logins");
            throttle.succeeded("bob", ip);
        }
        assert_eq!(throttle.wait(&s, "carol", ip), None);
    }

    #[test]
    fn a_spray_over_accounts_from_one_address_waits() {
        let (s, throttle) = (settings(), LoginThrottle::default());
        let sprayer: IpAddr = "2001:db8::1".parse().expect("an address");
        for user in ["a", "b", "c", "d", "e"] {
            assert_eq!(throttle.begin(&s, user, sprayer), None);
        }
        let neighbour: IpAddr = "2001:db8::2".parse().expect("an address");
        assert!(throttle.wait(&s, "f", neighbour).is_some());
        assert_eq!(
            throttle.wait(&s, "f", "2001:db8:1::1".parse().expect("an address")),
            None
        );
    }
}
