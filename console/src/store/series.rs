//! Per-service time series for the charts: 10-second buckets over the last 24 hours, each
//! with byte and connection counts, requests per status class and a latency histogram with
//! fixed log-spaced buckets (so percentiles can be merged across buckets without samples).

use std::collections::VecDeque;

use serde::Serialize;

/// Width of one bucket.
pub(crate) const SLOT_SECS: u64 = 10;
const SLOT_US: u64 = SLOT_SECS * 1_000_000;
/// Buckets kept: 24 hours.
pub(crate) const SLOTS: u64 = 24 * 3600 / SLOT_SECS;

/// Upper bounds of the latency buckets, in microseconds: 0.1 ms × √2ᵏ, up to about 74 s.
/// Percentiles read from them are within one bucket, a factor √2, of the true value.
pub(crate) const LATENCY_BOUNDS_US: [u64; 40] = latency_bounds();
/// One more bucket for anything slower than the last bound.
pub(crate) const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

const fn latency_bounds() -> [u64; 40] {
    let mut b = [0u64; 40];
    let mut k = 0;
    while k < 40 {
        let base = 100u64 << (k / 2);
        b[k] = if k % 2 == 0 { base } else { base * 1414 / 1000 };
        k += 1;
    }
    b
}

/// The bucket a latency falls in.
pub(crate) fn latency_bucket(us: u64) -> usize {
    LATENCY_BOUNDS_US.partition_point(|&b| b < us)
}

/// Index of a status in `Bucket::requests`: 2xx, 3xx, 4xx, 5xx, and no response (0).
/// Informational answers (101 for upgrades) are in no class.
pub(crate) fn status_index(status: u32) -> Option<usize> {
    match status {
        0 => Some(4),
        200..=599 => Some((status / 100 - 2) as usize),
        _ => None,
    }
}

/// Counts per latency bucket.
pub(crate) type LatencyCounts = [u32; LATENCY_BUCKETS];

/// Everything that happened to one service in one 10-second slot.
#[derive(Debug, Default, Clone)]
pub(crate) struct Bucket {
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) opened: u32,
    /// 2xx, 3xx, 4xx, 5xx, no response.
    pub(crate) requests: [u32; 5],
    /// Only slots that saw requests pay for a histogram.
    pub(crate) latency: Option<Box<LatencyCounts>>,
}

/// One service's buckets, oldest first, only the slots in which something happened.
#[derive(Debug, Default)]
pub(crate) struct Series {
    slots: VecDeque<(u64, Bucket)>,
}

/// One point of a chart; rates are per second over the step.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Point {
    /// Start of the step, Unix ms.
    pub(crate) time: u64,
    pub(crate) bytes_out: f64,
    pub(crate) bytes_in: f64,
    pub(crate) connections_opened: f64,
    pub(crate) requests2xx: f64,
    pub(crate) requests3xx: f64,
    pub(crate) requests4xx: f64,
    pub(crate) requests5xx: f64,
    pub(crate) requests_err: f64,
    /// 0 when no request answered in the step.
    pub(crate) latency_p50_ms: f64,
    pub(crate) latency_p90_ms: f64,
    pub(crate) latency_p99_ms: f64,
}

// === impl Series ===

impl Series {
    /// The bucket for `time_us`, or none when it is older than the series keeps.
    fn bucket(&mut self, time_us: u64) -> Option<&mut Bucket> {
        let slot = time_us / SLOT_US;
        let newest = self.slots.back().map_or(slot, |(s, _)| *s);
        if slot + SLOTS <= newest {
            return None;
        }
        let i = match self.slots.back() {
            Some((s, _)) if *s == slot => self.slots.len() - 1,
            Some((s, _)) if *s > slot => {
                // Late records: find (or make) their slot.
                let i = self.slots.partition_point(|(s, _)| *s < slot);
                if self.slots.get(i).is_none_or(|(s, _)| *s != slot) {
                    self.slots.insert(i, (slot, Bucket::default()));
                }
                i
            }
            _ => {
                self.slots.push_back((slot, Bucket::default()));
                while self.slots.front().is_some_and(|(s, _)| s + SLOTS <= slot) {
                    self.slots.pop_front();
                }
                self.slots.len() - 1
            }
        };
        self.slots.get_mut(i).map(|(_, b)| b)
    }

    pub(crate) fn add_bytes(&mut self, time_us: u64, out: u64, back: u64) {
        if out == 0 && back == 0 {
            return;
        }
        if let Some(b) = self.bucket(time_us) {
            b.bytes_out += out;
            b.bytes_in += back;
        }
    }

    pub(crate) fn add_opened(&mut self, time_us: u64) {
        if let Some(b) = self.bucket(time_us) {
            b.opened += 1;
        }
    }

    pub(crate) fn add_request(&mut self, time_us: u64, status: u32, latency_us: u64) {
        if let Some(b) = self.bucket(time_us) {
            if let Some(i) = status_index(status) {
                b.requests[i] += 1;
            }
            if status != 0 {
                let h = b
                    .latency
                    .get_or_insert_with(|| Box::new([0; LATENCY_BUCKETS]));
                h[latency_bucket(latency_us)] += 1;
            }
        }
    }

    /// Drops the slots older than 24 hours before `now_us`; true when nothing is left.
    pub(crate) fn prune(&mut self, now_us: u64) -> bool {
        let now = now_us / SLOT_US;
        while self.slots.front().is_some_and(|(s, _)| s + SLOTS <= now) {
            self.slots.pop_front();
        }
        self.slots.is_empty()
    }

    /// `window / step` points ending with the step that holds `now_us`. `step` is a multiple
    /// of the slot width.
    pub(crate) fn points(&self, now_us: u64, window: u64, step: u64) -> Vec<Point> {
        let n = (window / step).max(1);
        let now = now_us / 1_000_000;
        let last = now - now % step;
        let first = last.saturating_sub((n - 1) * step);
        let mut sums: Vec<(Bucket, LatencyCounts)> =
            vec![(Bucket::default(), [0; LATENCY_BUCKETS]); n as usize];
        let start = self.slots.partition_point(|(s, _)| s * SLOT_SECS < first);
        for (slot, b) in self.slots.range(start..) {
            let t = slot * SLOT_SECS;
            let Some((sum, lat)) = sums.get_mut(((t - first) / step) as usize) else {
                break;
            };
            sum.bytes_out += b.bytes_out;
            sum.bytes_in += b.bytes_in;
            sum.opened += b.opened;
            for (a, x) in sum.requests.iter_mut().zip(b.requests) {
                *a += x;
            }
            if let Some(h) = &b.latency {
                for (a, x) in lat.iter_mut().zip(h.iter()) {
                    *a += x;
                }
            }
        }
        let per_sec = |v: f64| v / step as f64;
        sums.iter()
            .enumerate()
            .map(|(i, (b, lat))| Point {
                time: (first + i as u64 * step) * 1000,
                bytes_out: per_sec(b.bytes_out as f64),
                bytes_in: per_sec(b.bytes_in as f64),
                connections_opened: per_sec(b.opened.into()),
                requests2xx: per_sec(b.requests[0].into()),
                requests3xx: per_sec(b.requests[1].into()),
                requests4xx: per_sec(b.requests[2].into()),
                requests5xx: per_sec(b.requests[3].into()),
                requests_err: per_sec(b.requests[4].into()),
                latency_p50_ms: quantile_ms(lat, 0.5),
                latency_p90_ms: quantile_ms(lat, 0.9),
                latency_p99_ms: quantile_ms(lat, 0.99),
            })
            .collect()
    }
}

/// The latency under which a fraction `q` of the counted requests fall, interpolated within
/// its bucket; 0 when nothing was counted.
pub(crate) fn quantile_ms(counts: &LatencyCounts, q: f64) -> f64 {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return 0.0;
    }
    let want = (total as f64 * q).max(1.0);
    let mut seen = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        let c = f64::from(c);
        if c > 0.0 && seen + c >= want {
            let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_US[i - 1] } as f64;
            let Some(&upper) = LATENCY_BOUNDS_US.get(i) else {
                return lower / 1000.0;
            };
            let frac = (want - seen) / c;
            return (lower + (upper as f64 - lower) * frac) / 1000.0;
        }
        seen += c;
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn bounds_grow_by_root_two() {
        assert_eq!(LATENCY_BOUNDS_US[0], 100);
        assert_eq!(LATENCY_BOUNDS_US[1], 141);
        assert_eq!(LATENCY_BOUNDS_US[2], 200);
        assert!(LATENCY_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(100), 0);
        assert_eq!(latency_bucket(101), 1);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn points_sum_slots_into_steps_as_rates() {
        let mut s = Series::default();
        let t0 = 1_699_999_980 * S; // a multiple of 60 s
        s.add_bytes(t0, 600, 60);
        s.add_bytes(t0 + 15 * S, 600, 0);
        s.add_opened(t0 + 20 * S);
        s.add_request(t0 + 30 * S, 200, 1_000);
        s.add_request(t0 + 30 * S, 503, 2_000);
        s.add_request(t0 + 30 * S, 0, 0);
        let now = t0 + 59 * S;
        let points = s.points(now, 300, 60);
        assert_eq!(points.len(), 5);
        let p = points.last().unwrap();
        assert_eq!(p.time, t0 / 1000);
        assert_eq!(p.bytes_out, 20.0);
        assert_eq!(p.bytes_in, 1.0);
        assert_eq!(p.connections_opened, 1.0 / 60.0);
        assert_eq!(p.requests2xx, 1.0 / 60.0);
        assert_eq!(p.requests5xx, 1.0 / 60.0);
        assert_eq!(p.requests_err, 1.0 / 60.0);
        // Two answered requests: 1 ms and 2 ms; the median is in the 1 ms bucket.
        assert!(p.latency_p50_ms > 0.7 && p.latency_p50_ms <= 1.131, "{p:?}");
        assert!(p.latency_p99_ms > 1.6 && p.latency_p99_ms <= 2.263, "{p:?}");
        assert!(
            points[..4]
                .iter()
                .all(|p| p.bytes_out == 0.0 && p.latency_p50_ms == 0.0)
        );
        // Ten-second steps see each slot on its own.
        let fine = s.points(now, 300, 10);
        assert_eq!(fine.len(), 30);
        assert_eq!(fine[24].bytes_out, 60.0);
        assert_eq!(fine[25].bytes_out, 60.0);
    }

    #[test]
    fn late_records_find_their_slot_and_old_ones_are_pruned() {
        let mut s = Series::default();
        let t0 = 1_700_000_000 * S;
        s.add_bytes(t0 + 100 * S, 1, 0);
        s.add_bytes(t0, 1, 0);
        s.add_bytes(t0 + 50 * S, 1, 0);
        assert_eq!(
            s.slots.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            vec![t0 / SLOT_US, t0 / SLOT_US + 5, t0 / SLOT_US + 10]
        );
        // Older than a day behind the newest: dropped.
        s.add_bytes(t0 + 100 * S - 86_400 * S, 1, 0);
        assert_eq!(s.slots.len(), 3);
        assert!(!s.prune(t0 + 86_400 * S + 60 * S));
        assert_eq!(s.slots.len(), 1);
        assert!(s.prune(t0 + 2 * 86_400 * S));
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let mut c = [0; LATENCY_BUCKETS];
        assert_eq!(quantile_ms(&c, 0.5), 0.0);
        c[latency_bucket(10_000)] = 100;
        let p50 = quantile_ms(&c, 0.5);
        assert!((8.0..=11.32).contains(&p50), "{p50}");
        c[LATENCY_BUCKETS - 1] = 1000;
        assert_eq!(
            quantile_ms(&c, 0.99),
            LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1] as f64 / 1000.0
        );
    }
}
