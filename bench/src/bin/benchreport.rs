//! Turns the raw results of `bench/run.sh` into the Markdown report:
//! `benchreport RAW_DIR [--out results.md]`.
//!
//! Reads `RAW_DIR/results.tsv` (`rep path metric value`), `status.tsv` (`path ok|failed
//! reason`), `notes.tsv` (`path note`) and `meta.tsv` (`key value`). Each figure is the
//! median over the repetitions; throughput also shows min–max. The ratio columns divide
//! each path's figure by each baseline's figure measured in the same run, and by the
//! skupper-tls reference figures of `shared/reference/baselines.md` (another run). The
//! slow-reader section checks the routers' peak RSS during one large transfer into a
//! rate-capped reader against the target of at most twice their idle RSS.

use std::collections::BTreeMap;
use std::fmt::Write as _;

const USAGE: &str = "RAW_DIR [--out FILE]";

const PATHS: [&str; 4] = ["direct", "van", "stunnel", "haproxy2"];
const BASELINES: [&str; 3] = ["direct", "stunnel", "haproxy2"];

/// Target of the slow-reader transfer: peak RSS at most this times the idle RSS before it.
const SLOW_MAX_GROWTH: f64 = 2.0;

struct Metric {
    key: &'static str,
    title: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    /// Skupper's router over a TLS 1.3 link, from baselines.md: the best end of each range.
    skupper_tls_ref: f64,
}

const METRICS: [Metric; 7] = [
    Metric {
        key: "tput1_gbps",
        title: "iperf3 1 stream",
        unit: "Gb/s",
        higher_is_better: true,
        skupper_tls_ref: 3.8,
    },
    Metric {
        key: "tputP8_gbps",
        title: "iperf3 -P 8",
        unit: "Gb/s",
        higher_is_better: true,
        skupper_tls_ref: 3.4,
    },
    Metric {
        key: "rtt_p50_us",
        title: "64 B RTT p50",
        unit: "µs",
        higher_is_better: false,
        skupper_tls_ref: 122.0,
    },
    Metric {
        key: "rtt_p99_us",
        title: "64 B RTT p99",
        unit: "µs",
        higher_is_better: false,
        skupper_tls_ref: 328.0,
    },
    Metric {
        key: "conn_p50_us",
        title: "connect + first echo p50",
        unit: "µs",
        higher_is_better: false,
        skupper_tls_ref: 533.0,
    },
    Metric {
        key: "conn_p99_us",
        title: "connect + first echo p99",
        unit: "µs",
        higher_is_better: false,
        skupper_tls_ref: 1831.0,
    },
    Metric {
        key: "cpu_s_per_gb",
        title: "relay CPU-s per GB (1 stream)",
        unit: "s/GB",
        higher_is_better: false,
        skupper_tls_ref: 3.5,
    },
];

#[derive(Default)]
struct Data {
    /// (path, metric) -> one value per repetition.
    values: BTreeMap<(String, String), Vec<f64>>,
    status: BTreeMap<String, (String, String)>,
    notes: Vec<(String, String)>,
    meta: Vec<(String, String)>,
}

fn read_tsv(path: &str) -> Vec<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => t
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn load(dir: &str) -> Data {
    let mut d = Data::default();
    for row in read_tsv(&format!("{dir}/results.tsv")) {
        if row.len() < 4 {
            continue;
        }
        if let Ok(v) = row[3].trim().parse::<f64>()
            && v.is_finite()
        {
            d.values
                .entry((row[1].clone(), row[2].clone()))
                .or_default()
                .push(v);
        }
    }
    for row in read_tsv(&format!("{dir}/status.tsv")) {
        if row.len() >= 2 {
            let reason = row.get(2).cloned().unwrap_or_default();
            d.status.insert(row[0].clone(), (row[1].clone(), reason));
        }
    }
    for row in read_tsv(&format!("{dir}/notes.tsv")) {
        if row.len() >= 2 {
            d.notes.push((row[0].clone(), row[1..].join(" ")));
        }
    }
    for row in read_tsv(&format!("{dir}/meta.tsv")) {
        if row.len() >= 2 {
            d.meta.push((row[0].clone(), row[1..].join(" ")));
        }
    }
    d
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn fmt_num(v: f64, unit: &str) -> String {
    match unit {
        "µs" if v >= 100.0 => format!("{v:.0}"),
        "µs" => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

impl Data {
    fn get(&self, path: &str, key: &str) -> Option<&Vec<f64>> {
        self.values
            .get(&(path.to_string(), key.to_string()))
            .filter(|v| !v.is_empty())
    }

    fn med(&self, path: &str, key: &str) -> Option<f64> {
        self.get(path, key).and_then(|v| median(v))
    }

    /// For a path that was not measured: its status (failed, skipped) and the reason.
    fn not_run(&self, path: &str) -> Option<(&str, &str)> {
        match self.status.get(path) {
            Some((s, reason)) if s != "ok" => Some((s.as_str(), reason.as_str())),
            _ => None,
        }
    }

    fn failed(&self, path: &str) -> Option<&str> {
        self.not_run(path).map(|(_, reason)| reason)
    }

    fn meta(&self, key: &str) -> &str {
        self.meta
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("?")
    }

    /// The cell of the summary table: median, with min–max for throughput.
    fn cell(&self, path: &str, m: &Metric) -> String {
        if path == "direct" && m.key == "cpu_s_per_gb" {
            return "—".into();
        }
        let Some(v) = self.get(path, m.key) else {
            return "n/a".into();
        };
        let med = median(v).unwrap_or(f64::NAN);
        let mut s = fmt_num(med, m.unit);
        if m.higher_is_better && v.len() > 1 {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let _ = write!(s, " ({}–{})", fmt_num(lo, m.unit), fmt_num(hi, m.unit));
        }
        s
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "n/a".into(),
    }
}

fn render(d: &Data) -> String {
    let mut o = String::new();
    let reps = d.meta("reps");
    let _ = writeln!(o, "# VAN router loopback benchmark\n");
    let _ = writeln!(
        o,
        "- Machine: {} CPUs (nproc), {}, kernel {}, {}",
        d.meta("nproc"),
        d.meta("cpu_model"),
        d.meta("kernel"),
        d.meta("os")
    );
    let _ = writeln!(
        o,
        "- Date: {}; van-router at {}",
        d.meta("date"),
        d.meta("git_rev")
    );
    let _ = writeln!(
        o,
        "- Settings: {reps} repetition(s), median shown (min–max for throughput); iperf3 -t {}; \
         ping-pong {} round trips of 64 B; {} new connections; {} idle flows; certificates {}; \
         slow reader {} GB at most {} MB/s",
        d.meta("seconds"),
        d.meta("rtt_count"),
        d.meta("conn_count"),
        d.meta("flows"),
        d.meta("key_type"),
        d.meta("slow_bytes")
            .parse::<f64>()
            .map_or("?".into(), |b| format!("{:.2}", b / 1e9)),
        d.meta("slow_mbps")
    );
    let _ = writeln!(o, "- Tools: {}", d.meta("tools"));
    let _ = writeln!(
        o,
        "- Background CPU busy (both cores, 1 s sample) before each path (! = still busy after waiting): {}",
        d.meta("idle_busy")
    );
    let _ = writeln!(o);

    // Summary table.
    let _ = writeln!(o, "## Figures\n");
    let mut header = String::from("| path |");
    let mut sep = String::from("| --- |");
    for m in &METRICS {
        let _ = write!(header, " {} ({}) |", m.title, m.unit);
        sep.push_str(" ---: |");
    }
    let _ = writeln!(o, "{header}\n{sep}");
    for p in PATHS {
        if let Some((status, _)) = d.not_run(p) {
            let mut row = format!("| {p} ({status}, see notes) |");
            for _ in &METRICS {
                row.push_str(" n/a |");
            }
            let _ = writeln!(o, "{row}");
            continue;
        }
        let mut row = format!("| {p} |");
        for m in &METRICS {
            let _ = write!(row, " {} |", d.cell(p, m));
        }
        let _ = writeln!(o, "{row}");
    }
    let mut row = String::from("| skupper-tls (reference, not run here) |");
    for m in &METRICS {
        let _ = write!(row, " {} |", fmt_num(m.skupper_tls_ref, m.unit));
    }
    let _ = writeln!(o, "{row}\n");

    // Ratios.
    let _ = writeln!(o, "## Ratios to each baseline\n");
    let _ = writeln!(
        o,
        "Each cell is the path's figure divided by the baseline's figure (medians, same run). \
         For throughput above 1× is better; for latency and CPU below 1× is better. The last \
         column divides by Skupper's router with a TLS link as given in \
         shared/reference/baselines.md (another run on a machine of the same kind, best end \
         of each range), so read it as indicative only.\n"
    );
    let _ = writeln!(
        o,
        "| figure | path | value | ÷ direct | ÷ stunnel | ÷ haproxy2 | ÷ skupper-tls (ref) |"
    );
    let _ = writeln!(o, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for m in &METRICS {
        for p in PATHS {
            if p == "direct" && m.key == "cpu_s_per_gb" {
                continue;
            }
            let v = if d.failed(p).is_some() {
                None
            } else {
                d.med(p, m.key)
            };
            let value = v.map_or("n/a".into(), |v| {
                format!("{} {}", fmt_num(v, m.unit), m.unit)
            });
            let mut row = format!("| {} | {p} | {value} |", m.title);
            for b in BASELINES {
                let bv = if d.failed(b).is_some() {
                    None
                } else {
                    d.med(b, m.key)
                };
                let cell = if b == p { "—".into() } else { ratio(v, bv) };
                let _ = write!(row, " {cell} |");
            }
            let _ = write!(row, " {} |", ratio(v, Some(m.skupper_tls_ref)));
            let _ = writeln!(o, "{row}");
        }
    }
    let _ = writeln!(o);

    // Router memory.
    let _ = writeln!(o, "## Router memory (van path)\n");
    if let Some(reason) = d.failed("van") {
        let _ = writeln!(o, "n/a: the van path was not measured ({reason}).\n");
    } else if d.get("van", "rss_idle_a_kib").is_none() {
        let _ = writeln!(o, "n/a: not measured (see notes).\n");
    } else {
        let flows = d.med("van", "flows_opened").unwrap_or(0.0);
        let _ = writeln!(
            o,
            "VmRSS from /proc/PID/status: idle (fresh start, before any other test), with \
             {flows:.0} idle flows open through both routers (each checked by one echo), and \
             again after those flows closed.\n"
        );
        let _ = writeln!(
            o,
            "| router | idle MiB | with {flows:.0} flows MiB | added MiB | added KiB per flow | after close MiB |"
        );
        let _ = writeln!(o, "| --- | ---: | ---: | ---: | ---: | ---: |");
        let mut tot = [0.0f64; 3];
        for (name, s) in [("A (tcp listener)", "a"), ("B (tcp connector)", "b")] {
            let idle = d.med("van", &format!("rss_idle_{s}_kib"));
            let with = d.med("van", &format!("rss_flows_{s}_kib"));
            let after = d.med("van", &format!("rss_closed_{s}_kib"));
            let mib = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{:.1}", v / 1024.0));
            let added = match (idle, with) {
                (Some(i), Some(w)) => Some(w - i),
                _ => None,
            };
            let per_flow = match added {
                Some(a) if flows > 0.0 => format!("{:.1}", a / flows),
                _ => "n/a".into(),
            };
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {per_flow} | {} |",
                mib(idle),
                mib(with),
                mib(added),
                mib(after)
            );
            tot[0] += idle.unwrap_or(f64::NAN);
            tot[1] += with.unwrap_or(f64::NAN);
            tot[2] += after.unwrap_or(f64::NAN);
        }
        let per_flow = if flows > 0.0 {
            format!("{:.1}", (tot[1] - tot[0]) / flows)
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            o,
            "| both | {:.1} | {:.1} | **{:.1}** | {per_flow} | {:.1} |\n",
            tot[0] / 1024.0,
            tot[1] / 1024.0,
            (tot[1] - tot[0]) / 1024.0,
            tot[2] / 1024.0
        );
        if let Some(e) = d.med("van", "flows_errors")
            && e > 0.0
        {
            let _ = writeln!(o, "{e:.0} of the flows could not be opened.\n");
        }
    }

    slow_reader_section(&mut o, d);

    // Relay CPU in cores, for reading the CPU figure.
    let mut cores = String::new();
    for p in ["van", "stunnel", "haproxy2"] {
        if let Some(c) = d.med(p, "relay_cores") {
            let _ = write!(cores, "{p} {c:.2}, ");
        }
    }
    if !cores.is_empty() {
        let _ = writeln!(
            o,
            "Relay CPU during the 1-stream iperf3 run, in cores busy (both middle processes \
             together): {}.\n",
            cores.trim_end_matches(", ")
        );
    }

    let failed: Vec<_> = PATHS
        .iter()
        .filter_map(|p| d.not_run(p).map(|(s, r)| format!("- {p}: {s}: {r}")))
        .collect();
    if !failed.is_empty() || !d.notes.is_empty() {
        let _ = writeln!(o, "## Notes\n");
        for f in failed {
            let _ = writeln!(o, "{f}");
        }
        for (p, n) in &d.notes {
            let _ = writeln!(o, "- {p}: {n}");
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(
        o,
        "Raw results: bench/out/raw/ (results.tsv, iperf3 JSON, latency samples in ns, \
         slow-rss.tsv: the RSS samples of the slow-reader transfer)."
    );
    o
}

/// The routers' memory during one large transfer into a slow reader, and the verdict.
fn slow_reader_section(o: &mut String, d: &Data) {
    let _ = writeln!(o, "## Router memory under a slow reader (van path)\n");
    let bytes: f64 = d.meta("slow_bytes").parse().unwrap_or(0.0);
    let cap = d.meta("slow_mbps");
    if let Some(reason) = d.failed("van") {
        let _ = writeln!(o, "n/a: the van path was not measured ({reason}).\n");
        return;
    }
    if d.meta("slow_bytes") == "?" {
        let _ = writeln!(o, "n/a: not part of this run.\n");
        return;
    }
    if bytes <= 0.0 {
        let _ = writeln!(o, "Not measured (BENCH_SLOW_GB=0).\n");
        return;
    }
    let (Some(sent), Some(idle_a)) = (
        d.med("van", "slow_sent_bytes"),
        d.med("van", "slow_rss_idle_a_kib"),
    ) else {
        let _ = writeln!(o, "n/a: not measured (see notes).\n");
        return;
    };
    let v = |k: &str| d.med("van", k);
    let gb = |b: f64| format!("{:.2}", b / 1e9);
    let received = v("slow_received_bytes");
    let count_ok = v("slow_count_ok") == Some(1.0);
    let content_ok = v("slow_content_ok") == Some(1.0);
    let _ = writeln!(
        o,
        "`slowsend` pushes {} GB (10^9 bytes) through router A's listener (routing key \
         `bench-slow`) and router B's connector to `slowsink`, which reads at most {cap} MB/s \
         and checks every byte against the pattern sent. VmRSS of both routers \
         (/proc/PID/status) is sampled every 100 ms during the transfer ({} samples); VmHWM \
         (peak RSS, reset through /proc/PID/clear_refs just before the transfer) is read \
         after it. Idle before = VmRSS right before the transfer, after every other van test; \
         fresh idle = right after the routers started. Target: peak ≤ {SLOW_MAX_GROWTH}× the \
         idle RSS before the transfer; the peak judged is the higher of the sampled peak and \
         VmHWM.\n",
        gb(bytes),
        v("slow_samples").map_or("n/a".into(), |n| format!("{n:.0}")),
    );
    let _ = writeln!(
        o,
        "- Transfer: sent {sent:.0} bytes, received {} bytes: count {}, content {}",
        received.map_or("n/a".into(), |r| format!("{r:.0}")),
        if count_ok {
            "matches"
        } else {
            "**does not match**"
        },
        if content_ok {
            "matches the pattern"
        } else {
            "**differs from the pattern (or unknown)**"
        },
    );
    if let (Some(secs), Some(rate)) = (v("slow_secs"), v("slow_mb_per_s")) {
        let _ = writeln!(
            o,
            "- Reader: {secs:.1} s, {rate:.0} MB/s (cap {cap} MB/s); waiting for data {} of the \
             time; the sender finished writing after {} s",
            v("slow_read_wait_pct").map_or("n/a".into(), |w| format!("{w:.0} %")),
            v("slow_send_secs").map_or("n/a".into(), |s| format!("{s:.1}")),
        );
        if let Ok(c) = cap.parse::<f64>()
            && rate < 0.9 * c
        {
            let _ = writeln!(
                o,
                "- **The reader got less than 90 % of its cap**: the path, not the reader, was \
                 the bottleneck at times, so the routers were not under full back-pressure."
            );
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| router | fresh idle MiB | idle before MiB | peak sampled MiB | VmHWM MiB | peak ÷ idle before | peak ÷ fresh idle | after (+3 s) MiB | ≤ {SLOW_MAX_GROWTH}× |"
    );
    let _ = writeln!(
        o,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    let mib = |x: Option<f64>| x.map_or("n/a".into(), |x| format!("{:.1}", x / 1024.0));
    let mut verdicts = Vec::new();
    for (name, s) in [("A (tcp listener)", "a"), ("B (tcp connector)", "b")] {
        let fresh = v(&format!("rss_idle_{s}_kib"));
        let idle = if s == "a" {
            Some(idle_a)
        } else {
            v("slow_rss_idle_b_kib")
        };
        let sampled = v(&format!("slow_rss_peak_{s}_kib"));
        let hwm = v(&format!("slow_hwm_{s}_kib"));
        let peak = match (sampled, hwm) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let pass = match (peak, idle) {
            (Some(p), Some(i)) if i > 0.0 => Some(p <= SLOW_MAX_GROWTH * i),
            _ => None,
        };
        verdicts.push(pass);
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            mib(fresh),
            mib(idle),
            mib(sampled),
            mib(hwm),
            ratio(peak, idle),
            ratio(peak, fresh),
            mib(v(&format!("slow_rss_after_{s}_kib"))),
            match pass {
                Some(true) => "pass",
                Some(false) => "**FAIL**",
                None => "n/a",
            },
        );
    }
    let _ = writeln!(o);
    let verdict = if v("slow_router_exited").is_some() {
        "**FAIL**: a router exited during the transfer".to_string()
    } else if !count_ok || !content_ok {
        "**FAIL**: the transfer did not arrive complete and unaltered".to_string()
    } else if verdicts.contains(&Some(false)) {
        format!("**FAIL**: a router grew beyond {SLOW_MAX_GROWTH}× its idle RSS")
    } else if verdicts.iter().all(|p| *p == Some(true)) {
        format!(
            "**pass**: {} GB arrived complete and both routers stayed within {SLOW_MAX_GROWTH}× \
             their idle RSS",
            gb(sent)
        )
    } else {
        "n/a: a figure is missing (see notes)".to_string()
    };
    let _ = writeln!(o, "Verdict (peak ≤ {SLOW_MAX_GROWTH}× idle): {verdict}.");
    if bytes < 10e9 {
        let _ = writeln!(
            o,
            "\nThis run moved {} GB; the target is stated for a 10 GB transfer (BENCH_SLOW_GB=10).",
            gb(bytes)
        );
    }
    let _ = writeln!(o);
}

fn main() {
    let args = van_bench::Args::parse(USAGE);
    let dir = args.positional(0, "raw results directory");
    let text = render(&load(&dir));
    print!("{text}");
    if let Some(out) = args.str_opt("out")
        && let Err(e) = std::fs::write(&out, &text)
    {
        van_bench::die(&format!("cannot write {out}: {e}"));
    }
}
