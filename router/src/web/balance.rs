//! Per-request balancing: each request goes to a destination drawn with weights
//! proportional to its connectors (servers) and inversely proportional to its expected
//! wait, `(requests in flight per connector + 1) × (response time + path cost)`; one request
//! in [`EXPLORE`] is drawn uniformly instead.
//!
//! Response time is the median of a destination's last three samples, so one slow
//! response (the first, which also opened a connection) changes nothing while two in a row
//! are acted on at once; with no new samples it decays toward zero so an idle destination
//! gets tried again. A destination with no samples scores by path cost alone, so new
//! servers get traffic at once. The uniform draws keep every destination's estimate current.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::routing::Destination;

/// How fast old samples lose their weight.
const DECAY: Duration = Duration::from_secs(2);
/// Added to every expected wait: differences well under a millisecond (a first request that
/// also opened a connection, scheduling noise) shift the shares a little, not all of them,
/// while a server tens of milliseconds slower still gets only a few percent.
const FLOOR_MICROS: f64 = 1000.0;
/// Share of requests drawn uniformly among the destinations.
pub(crate) const EXPLORE: f64 = 0.1;
/// Estimates kept before stale ones are dropped.
const MAX_ENTRIES: usize = 4096;
/// Response time one unit of path cost stands for (a hop to another site).
const COST_MICROS: f64 = 250.0;

/// The last three response times of a destination; its estimate is their median (the
/// smaller of two, the only one at first), decaying toward zero while no sample comes.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    recent: [f64; 3],
    n: usize,
    at: Instant,
}

impl Estimate {
    fn push(&mut self, sample: f64, now: Instant) {
        self.recent[self.n % 3] = sample;
        self.n += 1;
        self.at = now;
    }

    fn value(&self) -> f64 {
        let r = self.recent;
        match self.n {
            0 => 0.0,
            1 => r[0],
            2 => r[0].min(r[1]),
            _ => r[0].max(r[1]).min(r[0].min(r[1]).max(r[2])),
        }
    }

    fn decayed(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        self.value() * (-age / DECAY.as_secs_f64()).exp()
    }
}

/// Response-time estimates per routing key and destination router.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    /// Routing key -> destination router -> estimate (looked up by `&str`, no allocation).
    by_key: Mutex<HashMap<String, HashMap<String, Estimate>>>,
}

impl Latency {
    /// Records the time a request to `dest` took to its response head.
    pub(crate) fn observe(&self, key: &str, dest: &str, took: Duration) {
        let now = Instant::now();
        let sample = took.as_secs_f64() * 1e6;
        let mut m = self.by_key.lock().expect("latency lock");
        if m.values().map(HashMap::len).sum::<usize>() >= MAX_ENTRIES {
            // Destinations gone from the table stop getting samples; forget the stale ones.
            for d in m.values_mut() {
                d.retain(|_, e| now.saturating_duration_since(e.at) < DECAY * 30);
            }
            m.retain(|_, d| !d.is_empty());
        }
        if !m.contains_key(key) {
            m.insert(key.to_string(), HashMap::new());
        }
        let dests = m.get_mut(key).expect("inserted");
        match dests.get_mut(dest) {
            Some(e) => e.push(sample, now),
            None => {
                let mut e = Estimate {
                    recent: [0.0; 3],
                    n: 0,
                    at: now,
                };
                e.push(sample, now);
                dests.insert(dest.to_string(), e);
            }
        }
    }

    fn estimate(&self, key: &str, dest: &str, now: Instant) -> f64 {
        self.by_key
            .lock()
            .expect("latency lock")
            .get(key)
            .and_then(|d| d.get(dest))
            .map_or(0.0, |e| e.decayed(now))
    }
}

/// Picks the destination for one request of `key`, skipping routers in `tried`. Each
/// destination's chance is inversely proportional to its expected wait, so equal servers
/// share requests and a much slower one gets a trickle, plus an equal part of the
/// [`EXPLORE`] share. `u` is uniform in [0, 1).
pub(crate) fn choose<'a>(
    dests: &'a [Destination],
    key: &str,
    in_flight: impl Fn(&str) -> u32,
    latency: &Latency,
    tried: &[String],
    u: f64,
) -> Option<&'a Destination> {
    let now = Instant::now();
    let weighted: Vec<(&Destination, f64)> = dests
        .iter()
        .filter(|d| !tried.contains(&d.router))
        .map(|d| {
            let per = f64::from(in_flight(&d.router)) / f64::from(d.connectors.max(1));
            let wait =
                latency.estimate(key, &d.router, now) + d.cost as f64 * COST_MICROS + FLOOR_MICROS;
            // A destination with more connectors (servers) takes a larger share.
            (d, f64::from(d.connectors.max(1)) / ((per + 1.0) * wait))
        })
        .collect();
    if weighted.is_empty() {
        return None;
    }
    let u = u.clamp(0.0, 1.0);
    if u < EXPLORE {
        let i = ((u / EXPLORE) * weighted.len() as f64) as usize;
        return Some(weighted[i.min(weighted.len() - 1)].0);
    }
    let total: f64 = weighted.iter().map(|(_, w)| w).sum();
    let mut at = (u - EXPLORE) / (1.0 - EXPLORE) * total;
    for (d, w) in &weighted {
        if at < *w {
            return Some(d);
        }
        at -= w;
    }
    weighted.last().map(|(d, _)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(router: &str, cost: u64) -> Destination {
        Destination {
            router: router.into(),
            cost,
            connectors: 1,
        }
    }

    /// How many of 1000 evenly spread draws go to `router`.
    fn share(
        ds: &[Destination],
        l: &Latency,
        in_flight: impl Fn(&str) -> u32,
        tried: &[String],
        router: &str,
    ) -> usize {
        (0..1000)
            .filter(|i| {
                let u = f64::from(*i) / 1000.0;
                choose(ds, "k", &in_flight, l, tried, u).unwrap().router == router
            })
            .count()
    }

    #[test]
    fn equal_destinations_share_requests() {
        let ds = [dest("east", 1), dest("south", 1)];
        let l = Latency::default();
        assert_eq!(share(&ds, &l, |_| 0, &[], "east"), 500);
        l.observe("k", "east", Duration::from_micros(400));
        l.observe("k", "south", Duration::from_micros(420));
        let east = share(&ds, &l, |_| 0, &[], "east");
        assert!((450..=550).contains(&east), "{east}");
    }

    #[test]
    fn a_slow_destination_gets_a_trickle() {
        let ds = [dest("east", 1), dest("south", 1)];
        let l = Latency::default();
        l.observe("k", "east", Duration::from_millis(20));
        l.observe("k", "south", Duration::from_micros(300));
        let east = share(&ds, &l, |_| 0, &[], "east");
        // 5% explored, and about 7% of the rest.
        assert!((80..=130).contains(&east), "{east}");
        // Another key has its own estimates.
        let other = (0..1000)
            .filter(|i| {
                choose(&ds, "other", |_| 0, &l, &[], f64::from(*i) / 1000.0)
                    .unwrap()
                    .router
                    == "east"
            })
            .count();
        assert_eq!(other, 500);
    }

    #[test]
    fn requests_in_flight_and_cost_count() {
        let ds = [dest("east", 1), dest("south", 1)];
        let l = Latency::default();
        l.observe("k", "east", Duration::from_millis(1));
        l.observe("k", "south", Duration::from_millis(1));
        let busy_east = |r: &str| if r == "east" { 3 } else { 0 };
        let east = share(&ds, &l, busy_east, &[], "east");
        assert!((200..=300).contains(&east), "{east}");
        let near = [dest("here", 0), dest("far", 4)];
        let here = share(&near, &Latency::default(), |_| 0, &[], "here");
        assert!((640..=660).contains(&here), "{here}");
    }

    #[test]
    fn one_slow_sample_is_forgotten_and_two_are_acted_on() {
        let l = Latency::default();
        let est = |l: &Latency| l.estimate("k", "east", Instant::now());
        l.observe("k", "east", Duration::from_millis(50));
        l.observe("k", "east", Duration::from_micros(400));
        assert!(est(&l) < 500.0, "{}", est(&l));
        l.observe("k", "east", Duration::from_micros(400));
        l.observe("k", "east", Duration::from_millis(30));
        assert!(
            est(&l) < 500.0,
            "one slow response among three: {}",
            est(&l)
        );
        l.observe("k", "east", Duration::from_millis(30));
        assert!(est(&l) > 25_000.0, "two in a row: {}", est(&l));
    }

    #[test]
    fn a_destination_with_more_servers_takes_more() {
        let two = Destination {
            connectors: 2,
            ..dest("south", 1)
        };
        let ds = [dest("east", 1), two];
        let south = share(&ds, &Latency::default(), |_| 0, &[], "south");
        // 5% explored, two thirds of the rest.
        assert!((640..=660).contains(&south), "{south}");
    }

    #[test]
    fn tried_destinations_are_skipped() {
        let ds = [dest("east", 1), dest("south", 1)];
        let l = Latency::default();
        let tried = ["east".to_string()];
        assert_eq!(share(&ds, &l, |_| 0, &tried, "south"), 1000);
        let all = ["east".to_string(), "south".to_string()];
        assert!(choose(&ds, "k", |_| 0, &l, &all, 0.5).is_none());
    }
}
