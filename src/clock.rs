//! The gateway's one clock: Unix time, in the seconds of every JWT time
//! claim and the milliseconds of a session's rotation. Every rule that
//! asks the time asks here (the log line's timestamp is the log's own).
//!
//! A unit test runs code at a time of its choosing with [`frozen_at`]:
//! the time is read from a thread-local override in test builds only, so
//! the request path pays nothing for it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the Unix epoch.
#[cfg(not(test))]
pub fn unix_now_ms() -> u64 {
    system_ms()
}

/// Milliseconds since the Unix epoch, or the time a test froze.
#[cfg(test)]
pub fn unix_now_ms() -> u64 {
    FROZEN.with(std::cell::Cell::get).unwrap_or_else(system_ms)
}

/// A clock set before 1970 reads as the epoch rather than failing.
fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
thread_local! {
    static FROZEN: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the clock of this thread stopped at `ms` milliseconds
/// after the epoch; the real clock is back afterwards, even on a panic.
#[cfg(test)]
pub fn frozen_at<T>(ms: u64, f: impl FnOnce() -> T) -> T {
    struct Thaw(Option<u64>);
    impl Drop for Thaw {
        fn drop(&mut self) {
            FROZEN.with(|frozen| frozen.set(self.0));
        }
    }
    let _thaw = Thaw(FROZEN.with(|frozen| frozen.replace(Some(ms))));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_reads_the_chosen_time_and_thaws_after() {
        let chosen = 1_700_000_000_123;
        frozen_at(chosen, || {
            assert_eq!(unix_now_ms(), chosen);
            assert_eq!(unix_now(), 1_700_000_000);
        });
        // The real clock again: well after the chosen time.
        assert!(unix_now() > 1_700_000_000 + 3600);
    }
}
