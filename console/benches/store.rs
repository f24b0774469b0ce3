//! Store figures: ingest rate (connection records per second on one core), resident memory
//! with 100,000 ended connections held, and list query latency over them through the HTTP
//! application (parse, filter, sort, page, JSON).
//!
//! `cargo bench -p van-console --bench store` prints them. Under `cargo test` (no `--bench`
//! argument) it runs a small smoke version so the target stays checked.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;
use van_console::{AuthMode, Console, Limits};
use van_proto::admin::{Connector, Link, Listener, RouterStatus};
use van_proto::records::{ConnectionRecord, RecordBatch, RequestRecord, RouterState};

const SITES: usize = 10;
/// Client hosts per site: each makes many connections, as pods and machines do.
const CLIENT_HOSTS: usize = 200;
const ADDRESSES: usize = 50;
/// Records per batch, about what a busy router sends each flush.
const BATCH: usize = 500;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn router(i: usize) -> String {
    format!("site{i}-router")
}

fn address(i: usize) -> String {
    format!("service-{i}")
}

fn states(t: u64) -> Vec<RecordBatch> {
    (0..SITES)
        .map(|i| RecordBatch {
            router_id: router(i),
            instance: 1,
            time_us: t,
            state: Some(RouterState {
                status: Some(RouterStatus {
                    router_id: router(i),
                    site_id: format!("site{i}"),
                    mode: "interior".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                links: vec![Link {
                    name: "uplink".into(),
                    direction: "outgoing".into(),
                    state: "up".into(),
                    peer_router: router((i + 1) % SITES),
                    ..Default::default()
                }],
                listeners: (0..ADDRESSES)
                    .map(|a| Listener {
                        name: address(a),
                        routing_key: address(a),
                        port: 8000 + a as u32,
                        ..Default::default()
                    })
                    .collect(),
                connectors: (0..ADDRESSES)
                    .filter(|a| a % SITES == i)
                    .map(|a| Connector {
                        name: address(a),
                        routing_key: address(a),
                        host: format!("backend-{a}"),
                        port: 8080,
                        ..Default::default()
                    })
                    .collect(),
                started_us: t,
                hostname: format!("host{i}"),
                published: Vec::new(),
            }),
            full: true,
            ..Default::default()
        })
        .collect()
}

/// The records of connections `first..first + n` of `total`, spread over `span_us` before
/// `t`: each one's two halves open, then both ended, as batches from the routers that made
/// them.
fn connection_batches(
    first: usize,
    n: usize,
    total: usize,
    t: u64,
    span_us: u64,
    distinct_hosts: bool,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut open: Vec<Vec<ConnectionRecord>> = vec![Vec::new(); SITES];
    let mut ended: Vec<Vec<ConnectionRecord>> = vec![Vec::new(); SITES];
    let flush = |out: &mut Vec<RecordBatch>, recs: &mut Vec<Vec<ConnectionRecord>>, end: bool| {
        for (site, r) in recs.iter_mut().enumerate() {
            if r.len() >= BATCH || (!r.is_empty() && end) {
                let (open, ended) = if r[0].end_us == 0 {
                    (std::mem::take(r), Vec::new())
                } else {
                    (Vec::new(), std::mem::take(r))
                };
                out.push(RecordBatch {
                    router_id: router(site),
                    instance: 1,
                    time_us: t,
                    open,
                    ended,
                    ..Default::default()
                });
            }
        }
    };
    for k in first..first + n {
        let flow = k as u64 + 1;
        let a = k % ADDRESSES;
        let src = k % SITES;
        let dst = a % SITES;
        let start = t - span_us + (k as u64 * span_us / total as u64);
        let ingress = ConnectionRecord {
            flow_id: flow,
            role: "ingress".into(),
            routing_key: address(a),
            client_addr: if distinct_hosts {
                format!(
                    "10.{src}.{}.{}:{}",
                    (k / 250) % 250,
                    k % 250,
                    30000 + k % 30000
                )
            } else {
                let h = (k / SITES) % CLIENT_HOSTS;
                format!("10.{src}.{}.{}:{}", h / 250, h % 250, 30000 + k % 30000)
            },
            dest_router: router(dst),
            path: vec![router(src)],
            start_us: start,
            bytes_out: 1000 + k as u64 % 5000,
            bytes_in: 20_000 + k as u64 % 100_000,
            first_byte_us: 800,
            ..Default::default()
        };
        let egress = ConnectionRecord {
            role: "egress".into(),
            server_addr: format!("10.200.{}.{}:8080", a, k % 4),
            path: vec![router(src), router(dst)],
            dest_router: String::new(),
            ..ingress.clone()
        };
        let end = |mut r: ConnectionRecord| {
            r.end_us = start + 1_000 + k as u64 % 5_000_000;
            r.outcome = "closed".into();
            r
        };
        ended[src].push(end(ingress.clone()));
        ended[dst].push(end(egress.clone()));
        open[src].push(ingress);
        open[dst].push(egress);
        flush(&mut out, &mut open, false);
        flush(&mut out, &mut ended, false);
    }
    flush(&mut out, &mut open, true);
    flush(&mut out, &mut ended, true);
    out
}

fn request_batches(first: usize, n: usize, total: usize, t: u64, span_us: u64) -> Vec<RecordBatch> {
    (first..first + n)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|ks| RecordBatch {
            router_id: router(ks[0] % SITES),
            instance: 1,
            time_us: t,
            requests: ks
                .iter()
                .map(|&k| RequestRecord {
                    flow_id: 1 << 40 | k as u64,
                    routing_key: address(k % ADDRESSES),
                    method: if k % 5 == 0 { "POST" } else { "GET" }.into(),
                    path: format!("/api/items/{}", k % 1000),
                    status: [200, 200, 200, 404, 503][k % 5],
                    client_addr: format!("10.0.{}.{}:4000", (k / 250) % 250, k % 250),
                    dest_router: router(k % ADDRESSES % SITES),
                    start_us: t - span_us + (k as u64 * span_us / total as u64),
                    latency_us: 500 + (k as u64 * 7919) % 200_000,
                    duration_us: 1_000 + (k as u64 * 7919) % 300_000,
                    bytes_out: 100,
                    bytes_in: 2_000,
                    version: "HTTP/1.1".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

fn records_in(batches: &[RecordBatch]) -> usize {
    batches
        .iter()
        .map(|b| b.open.len() + b.ended.len() + b.requests.len())
        .sum()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // `cargo bench … -- NAME` runs only the queries whose name holds NAME.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    // The worst case for the process lists: every connection from a host of its own.
    let distinct_hosts = std::env::var_os("BENCH_DISTINCT_HOSTS").is_some();
    let (conns, requests, runs) = if full {
        (100_000, 100_000, 50)
    } else {
        (2_000, 1_000, 2)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rss_start = rss_kib();
    let console = Console::new(Limits::default(), AuthMode::Unsecured, false);
    let t = now_us();
    let span = 10 * 60 * 1_000_000; // ten minutes, inside the 15 minute retention
    for b in states(t - span) {
        console.apply_at(b, t - span);
    }

    // Ingest: batches are made a chunk at a time (so they do not swell the memory figure);
    // only applying them is timed.
    const CHUNK: usize = 2_000;
    let (mut n, mut ingest) = (0, Duration::ZERO);
    for first in (0..conns).step_by(CHUNK) {
        let batches = connection_batches(
            first,
            CHUNK.min(conns - first),
            conns,
            t,
            span,
            distinct_hosts,
        );
        n += records_in(&batches);
        let started = Instant::now();
        for b in batches {
            console.apply_at(b, t);
        }
        ingest += started.elapsed();
    }
    let (mut nr, mut ingest_requests) = (0, Duration::ZERO);
    for first in (0..requests).step_by(CHUNK) {
        let batches = request_batches(first, CHUNK.min(requests - first), requests, t, span);
        nr += records_in(&batches);
        let started = Instant::now();
        for b in batches {
            console.apply_at(b, t);
        }
        ingest_requests += started.elapsed();
    }
    let rss = rss_kib();
    println!(
        "ingest: {n} connection records ({conns} connections, both halves open then ended) in {:.0} ms: {:.0} records/s",
        ms(ingest),
        n as f64 / ingest.as_secs_f64()
    );
    println!(
        "ingest: {nr} request records in {:.0} ms: {:.0} records/s",
        ms(ingest_requests),
        nr as f64 / ingest_requests.as_secs_f64()
    );
    println!(
        "memory: {conns} ended connections and {requests} requests held: RSS {:.1} MiB ({:.1} MiB at start)",
        rss as f64 / 1024.0,
        rss_start as f64 / 1024.0
    );

    let app = console.app();
    let start_ms = (t - span) / 1000;
    let queries: Vec<(&str, String)> = vec![
        ("connections, newest first", "/api/v1/connections".into()),
        (
            "connections sorted by bytesIn",
            "/api/v1/connections?sortBy=bytesIn.desc".into(),
        ),
        (
            "connections filtered, sorted, page 3",
            "/api/v1/connections?address=service-7&sourceSiteId=site7&sortBy=durationMs.asc&offset=200&limit=100"
                .into(),
        ),
        (
            "connections, q and a time range",
            format!(
                "/api/v1/connections?q=10.3.0.1&start={}&end={}",
                start_ms + 60_000,
                start_ms + 300_000
            ),
        ),
        ("connections, deep page", "/api/v1/connections?offset=90000&limit=1000".into()),
        ("requests sorted by latency", "/api/v1/requests?sortBy=latencyMs.desc&statusClass=2xx".into()),
        ("services", "/api/v1/services".into()),
        ("processes", "/api/v1/processes".into()),
        ("process pairs by bytes", "/api/v1/processpairs?sortBy=bytesOut.desc".into()),
        ("sitepairs", "/api/v1/sitepairs".into()),
        ("topology", "/api/v1/topology".into()),
        ("series, a day in minutes", "/api/v1/services/service-1/series?window=86400&step=60".into()),
    ];
    let mut all = Vec::new();
    println!("queries over them, {runs} runs each (p50 / p99 / max, ms):");
    for (name, uri) in &queries {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs {
            let req = Request::get(uri.as_str())
                .body(Body::empty())
                .expect("request");
            let started = Instant::now();
            let resp = rt.block_on(app.clone().oneshot(req)).expect("answer");
            let status = resp.status();
            let body = rt
                .block_on(axum::body::to_bytes(resp.into_body(), usize::MAX))
                .expect("body");
            times.push(started.elapsed());
            assert_eq!(
                status,
                StatusCode::OK,
                "{uri}: {}",
                String::from_utf8_lossy(&body)
            );
            bytes = body.len();
        }
        times.sort();
        println!(
            "  {name:<40} {:>7.2} {:>7.2} {:>7.2}   ({bytes} bytes)",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(times[times.len() - 1]),
        );
        all.extend(times);
    }
    all.sort();
    println!(
        "  {:<40} {:>7.2} {:>7.2} {:>7.2}",
        "all queries",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        ms(all[all.len() - 1]),
    );
    // BENCH_SERVE=127.0.0.1:PORT: then serve the page and API over what was loaded (no
    // login) until killed, for a browser to time (console/benches/page_load.py).
    if let Ok(addr) = std::env::var("BENCH_SERVE") {
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind(&addr)
                .await
                .expect("BENCH_SERVE");
            println!("serving on http://{addr}/");
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(l, app).await.expect("serve");
        });
    }
}
