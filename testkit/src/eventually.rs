use std::time::Duration;

use tokio::time::{Instant, sleep, timeout_at};

/// How long [`eventually`] waits: generous, because tests run in parallel on two cores and a
/// busy machine is slow, not broken.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// What a check that starts near the deadline still gets.
const GRACE: Duration = Duration::from_secs(5);

/// Calls `check` until it returns `Some`, and returns what it holds. Panics after
/// [`PATIENCE`], saying that `what` never happened.
///
/// For conditions nothing announces; where an event says it (a watch channel, a stream, a
/// join handle), wait for that instead.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    poll(what, async || check().await.ok_or(None)).await
}

/// As [`eventually`], for checks that can say what they saw instead: the panic shows the
/// last `Err`.
pub async fn eventually_ok<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    poll(what, async || check().await.map_err(Some)).await
}

async fn poll<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, Option<String>>) -> T {
    // Tokio's clock: under a paused clock the wait lasts as long as the timers it waits on.
    let deadline = Instant::now() + PATIENCE;
    let mut pause = Duration::from_millis(10);
    let mut seen = None;
    loop {
        // A check that hangs (a call to a server that never answers) ends the wait too; one
        // that starts near the deadline still gets a few seconds, so a slow check is not
        // taken for a hung one.
        let limit = deadline.max(Instant::now() + GRACE);
        match timeout_at(limit, check()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(s)) => seen = s,
            Err(_) => panic!(
                "timed out after {PATIENCE:?} waiting for {what}: the last check did not \
                 finish{}",
                last(&seen)
            ),
        }
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "timed out after {PATIENCE:?} waiting for {what}{}",
                last(&seen)
            );
        }
        // The last check runs at the deadline, not a pause after it.
        sleep(pause.min(deadline - now)).await;
        // Prompt for what happens at once, light on the CPU for what takes seconds.
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn last(seen: &Option<String>) -> String {
    seen.as_ref()
        .map(|s| format!("; last seen: {s}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_first_value_a_check_gives() {
        let mut calls = 0;
        let got = eventually("the third call", async || {
            calls += 1;
            (calls == 3).then_some(calls)
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 30s waiting for never; last seen: still 1")]
    async fn names_what_never_happened_and_the_last_thing_seen() {
        let mut n = 0;
        eventually_ok("never", async || -> Result<(), String> {
            n = (n + 1).min(1);
            Err(format!("still {n}"))
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 30s waiting for slow; last seen: no")]
    async fn a_slow_check_at_the_deadline_is_not_taken_for_a_hung_one() {
        eventually_ok("slow", async || -> Result<(), String> {
            sleep(Duration::from_millis(50)).await;
            Err("no".into())
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for an answer: the last check did not finish")]
    async fn a_check_that_hangs_ends_the_wait() {
        eventually("an answer", async || {
            std::future::pending::<Option<()>>().await
        })
        .await;
    }
}
