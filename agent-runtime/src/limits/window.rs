//! Fixed one-minute windows: the unix minute every pod agrees on, and the
//! in-memory counters used when the database is not shared (SQLite) or cannot
//! be reached. Same rule as the shared counters in `crate::db::RateWindows`: a
//! key is counted while its count is below its limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::db::WindowCount;

/// Length of a window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The current unix minute and the time left in it.
pub fn current_minute() -> (i64, Duration) {
    minute_at(SystemTime::now())
}

/// The unix minute of `at` and the time left in it.
pub fn minute_at(at: SystemTime) -> (i64, Duration) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let minute = since.as_secs() / WINDOW.as_secs();
    let start = Duration::from_secs(minute * WINDOW.as_secs());
    (
        i64::try_from(minute).unwrap_or(i64::MAX),
        WINDOW.saturating_sub(since - start),
    )
}

/// Per-key counts of the current minute, in this process.
#[derive(Default)]
pub struct MemoryWindows {
    counts: Mutex<HashMap<String, (i64, i64)>>,
}

impl MemoryWindows {
    /// Counts one request against every key of `counts` in `minute` when each
    /// is below its limit (all or nothing); else the index of the first key
    /// at its limit.
    pub fn count(&self, minute: i64, counts: &[WindowCount]) -> Result<(), usize> {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let current = |map: &HashMap<String, (i64, i64)>, key: &str| match map.get(key) {
            Some((m, c)) if *m == minute => *c,
            _ => 0,
        };
        if let Some(full) = counts.iter().position(|c| current(&map, &c.key) >= c.limit) {
            return Err(full);
        }
        for c in counts {
            let entry = map.entry(c.key.clone()).or_insert((minute, 0));
            if entry.0 != minute {
                *entry = (minute, 0);
            }
            entry.1 = entry.1.saturating_add(c.add);
        }
        if map.len() > 10_000 {
            map.retain(|_, (m, _)| *m >= minute - 1);
        }
        Ok(())
    }

    /// Adds `delta` to `key`'s count of `minute` (never below zero); nothing
    /// once that minute's count is gone.
    pub fn adjust(&self, key: &str, minute: i64, delta: i64) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((m, c)) = map.get_mut(key)
            && *m == minute
        {
            *c = c.saturating_add(delta).max(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(key: &str, limit: i64, add: i64) -> WindowCount {
        WindowCount {
            key: key.to_owned(),
            limit,
            add,
        }
    }

    #[test]
    fn minutes_are_unix_minutes() {
        let at = UNIX_EPOCH + Duration::from_millis(120_500);
        assert_eq!(minute_at(at), (2, Duration::from_millis(59_500)));
    }

    #[test]
    fn counts_all_or_nothing_up_to_each_limit() {
        let windows = MemoryWindows::default();
        let both = [want("a", 2, 1), want("b", 1, 1)];
        assert_eq!(windows.count(7, &both), Ok(()));
        // b is full: a is not counted either.
        assert_eq!(windows.count(7, &both), Err(1));
        assert_eq!(windows.count(7, &[want("a", 2, 1)]), Ok(()));
        assert_eq!(windows.count(7, &[want("a", 2, 1)]), Err(0));
        // A new minute starts from zero.
        assert_eq!(windows.count(8, &both), Ok(()));
    }

    #[test]
    fn a_reservation_is_given_back_by_adjusting() {
        let windows = MemoryWindows::default();
        assert_eq!(windows.count(1, &[want("tokens", 100, 90)]), Ok(()));
        assert_eq!(windows.count(1, &[want("tokens", 100, 90)]), Ok(()));
        assert_eq!(windows.count(1, &[want("tokens", 100, 1)]), Err(0));
        windows.adjust("tokens", 1, -150);
        assert_eq!(windows.count(1, &[want("tokens", 100, 1)]), Ok(()));
        // An old minute's adjustment does not touch the current one.
        windows.adjust("tokens", 0, 1000);
        assert_eq!(windows.count(1, &[want("tokens", 100, 1)]), Ok(()));
    }
}
