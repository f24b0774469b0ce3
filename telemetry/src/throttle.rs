//! Warnings that anyone on the network can cause (a refused connection, a wrong claim) must
//! not grow the logs without bound. A [`Throttle`] lets the first occurrence of each key
//! through per period, and no more than a few lines per period in all; it counts the rest so
//! that the owner can log one summary line ("N more ... in the last 60 s").
//!
//! Time is Tokio's, so tests can pause the clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// How many keys a throttle remembers unless told otherwise: a spray of sources cannot grow it
/// beyond this.
pub const DEFAULT_MAX_KEYS: usize = 1024;
/// How many lines a throttle lets through per period, all keys together, unless told otherwise.
pub const DEFAULT_MAX_LINES: u32 = 10;

/// Decides which occurrences of a repeated warning are logged. Not synchronised: owners that
/// share one put it behind a mutex.
#[derive(Debug)]
pub struct Throttle<K> {
    period: Duration,
    max_keys: usize,
    max_lines: u32,
    /// When each key was last let through.
    logged: HashMap<K, Instant>,
    /// The line budget's current period, and the lines it let through.
    budget_since: Instant,
    lines: u32,
    /// Occurrences not logged since the last summary, and when the first of them happened.
    suppressed: u64,
    suppressed_since: Option<Instant>,
    /// When the last summary was given (or the throttle made): at most one per period.
    summarised: Instant,
}

/// What a summary line reports: `count` occurrences were not logged over the last `over`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    pub count: u64,
    pub over: Duration,
}

impl Suppressed {
    /// `over` in whole seconds, rounded up, for the log line.
    pub fn secs(&self) -> u64 {
        self.over.as_secs() + u64::from(self.over.subsec_nanos() > 0)
    }
}

impl<K: Eq + Hash> Throttle<K> {
    /// One line per key per `period`, at most [`DEFAULT_MAX_LINES`] lines per period and
    /// [`DEFAULT_MAX_KEYS`] keys remembered.
    pub fn new(period: Duration) -> Throttle<K> {
        Throttle::with_limits(period, DEFAULT_MAX_KEYS, DEFAULT_MAX_LINES)
    }

    pub fn with_limits(period: Duration, max_keys: usize, max_lines: u32) -> Throttle<K> {
        Throttle {
            period,
            max_keys: max_keys.max(1),
            max_lines: max_lines.max(1),
            logged: HashMap::new(),
            budget_since: Instant::now(),
            lines: 0,
            suppressed: 0,
            suppressed_since: None,
            summarised: Instant::now(),
        }
    }

    /// The period this throttle was made with.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// One more occurrence of `key`: whether to log it now. When not, it is counted for the
    /// next [`summary`](Self::summary).
    pub fn allow(&mut self, key: K) -> bool {
        let now = Instant::now();
        if now.duration_since(self.budget_since) >= self.period {
            self.budget_since = now;
            self.lines = 0;
        }
        let fresh = self
            .logged
            .get(&key)
            .is_none_or(|t| now.duration_since(*t) >= self.period);
        if fresh && self.lines < self.max_lines && self.room_for(&key, now) {
            self.lines += 1;
            self.logged.insert(key, now);
            return true;
        }
        self.suppressed += 1;
        self.suppressed_since.get_or_insert(now);
        false
    }

    /// Whether `key` has, or can be given, a place in the table: keys whose period is over
    /// are forgotten first; a new key that still does not fit is not logged.
    fn room_for(&mut self, key: &K, now: Instant) -> bool {
        if self.logged.contains_key(key) || self.logged.len() < self.max_keys {
            return true;
        }
        let period = self.period;
        self.logged.retain(|_, t| now.duration_since(*t) < period);
        self.logged.len() < self.max_keys
    }

    /// What was not logged since the last summary, counted from the first of it; `None`
    /// while there is nothing to report or a period has not passed since the last summary.
    /// Owners call this on a timer of the same period (and may after
    /// [`allow`](Self::allow)), so the last of a burst is reported too.
    pub fn summary(&mut self) -> Option<Suppressed> {
        let since = self.suppressed_since?;
        let now = Instant::now();
        if now.duration_since(self.summarised) < self.period {
            return None;
        }
        self.summarised = now;
        let count = std::mem::take(&mut self.suppressed);
        self.suppressed_since = None;
        Some(Suppressed {
            count,
            over: now.duration_since(since),
        })
    }

    /// How many occurrences are waiting for a summary.
    pub fn pending(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn the_first_of_each_key_is_logged_and_repeats_wait_for_the_next_period() {
        let mut t = Throttle::new(MINUTE);
        assert!(t.allow("tls"));
        assert!(t.allow("timeout"), "another key has its own line");
        for _ in 0..1000 {
            assert!(!t.allow("tls"));
        }
        assert!(!t.allow("timeout"));
        assert_eq!(t.pending(), 1001);
        tokio::time::advance(MINUTE).await;
        assert!(t.allow("tls"), "a new period logs the key again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_summary_counts_what_was_left_out_once_a_period_has_passed() {
        let mut t = Throttle::new(MINUTE);
        assert_eq!(t.summary(), None, "nothing to report");
        assert!(t.allow(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..5 {
            t.allow(1);
        }
        assert_eq!(t.summary(), None, "not before the period is over");
        tokio::time::advance(Duration::from_secs(30)).await;
        t.allow(1);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            t.summary(),
            Some(Suppressed {
                count: 6,
                over: MINUTE
            })
        );
        assert_eq!(t.summary(), None, "reported once");
        assert_eq!(t.pending(), 0);
        // At most one summary per period.
        assert!(t.allow(1), "a new period for key 1");
        assert!(!t.allow(1));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(t.summary(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.summary().map(|s| s.count), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_spray_of_keys_is_bounded_in_lines_and_in_memory() {
        let mut t = Throttle::with_limits(MINUTE, 100, 10);
        let logged = (0..100_000u32).filter(|k| t.allow(*k)).count();
        assert_eq!(
            logged, 10,
            "at most max_lines per period, whatever the keys"
        );
        assert!(t.logged.len() <= 100);
        assert_eq!(t.pending(), 100_000 - 10);
        tokio::time::advance(MINUTE).await;
        // Old keys are forgotten to make room for new ones.
        let logged = (200_000..300_000u32).filter(|k| t.allow(*k)).count();
        assert_eq!(logged, 10);
        assert!(t.logged.len() <= 100);
        let s = t.summary().expect("a summary");
        assert_eq!(s.count, 2 * (100_000 - 10));
        assert_eq!(s.secs(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_of_recent_keys_turns_new_keys_away() {
        let mut t = Throttle::with_limits(MINUTE, 2, 100);
        assert!(t.allow("a"));
        assert!(t.allow("b"));
        assert!(!t.allow("c"), "no room while a and b are recent");
        tokio::time::advance(MINUTE).await;
        assert!(t.allow("c"), "room once their period is over");
        assert!(t.logged.len() <= 2);
    }
}
