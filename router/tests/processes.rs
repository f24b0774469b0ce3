//! Routers as separate processes, started from YAML files as a user would: killing a router
//! in a redundant topology, and the memory a router holds for idle and slow flows.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use van_testkit::eventually;
use van_testkit::router::process::*;
use van_testkit::router::*;

const ROUTER: &str = env!("CARGO_BIN_EXE_van-router");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_transit_router_moves_new_connections_to_the_other_path() {
    let dir = van_testkit::temp_dir("kill");
    let pki = Pki::new("ca");
    let echo = echo_server().await;
    let d = spawn(
        ROUTER,
        dir.path(),
        &pki,
        "d",
        &format!(
            "{}tcp_connectors:\n  - {{name: echo, host: 127.0.0.1, port: {}, routing_key: echo}}\n",
            link_listener_yaml(),
            echo.port()
        ),
    );
    let pd = d.link_port().await;
    let b = spawn(
        ROUTER,
        dir.path(),
        &pki,
        "b",
        &format!("{}{}", link_listener_yaml(), links_yaml(&[("b-d", pd, 1)])),
    );
    let pb = b.link_port().await;
    let c = spawn(
        ROUTER,
        dir.path(),
        &pki,
        "c",
        &format!("{}{}", link_listener_yaml(), links_yaml(&[("c-d", pd, 1)])),
    );
    let pc = c.link_port().await;
    let a = spawn(
        ROUTER,
        dir.path(),
        &pki,
        "a",
        &format!(
            "{}tcp_listeners:\n  - {{name: echo, host: 127.0.0.1, port: 0, routing_key: echo}}\n",
            links_yaml(&[("a-b", pb, 1), ("a-c", pc, 5)])
        ),
    );
    wait_for(&a, "listener up", listener_up).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], a.listener_port("echo").await));
    // Wait until both paths are known, so the test is about failover, not start-up.
    a.wait_nodes("both paths to d", |nodes| {
        nodes.len() == 4
            && nodes
                .iter()
                .any(|n| n.router_id == "d" && n.next_hop == "b")
    })
    .await;
    // b, the transit router, must have converged too before the first flow.
    b.wait_nodes("a route to d", |nodes| {
        nodes
            .iter()
            .any(|n| n.router_id == "d" && n.next_hop == "d")
    })
    .await;
    assert_eq!(echo_roundtrip(addr, b"before").await, b"before");
    // A long-lived flow through b.
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    held.read_exact(&mut one).await.unwrap();

    drop(b); // SIGKILL
    let killed = Instant::now();
    // The flow that crossed b is closed promptly, not left hanging.
    let r = tokio::time::timeout(Duration::from_secs(5), held.read(&mut one)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "held flow: {r:?}");
    // New connections succeed through c within a few seconds.
    eventually("a new flow through c", async || {
        let attempt = tokio::time::timeout(Duration::from_secs(1), async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(b"after").await.ok()?;
            s.shutdown().await.ok()?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.ok()?;
            (got == b"after").then_some(())
        });
        attempt.await.ok().flatten()
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "no failover within 5 s: {:?}",
        killed.elapsed()
    );
    eprintln!("failover took {:?}", killed.elapsed());
    drop((c, d));
}

/// Two router processes a -> b with a listener on a for a service at `target`.
async fn pair(dir: &Path, pki: &Pki, target: SocketAddr) -> (Proc, Proc, SocketAddr) {
    let b = spawn(
        ROUTER,
        dir,
        pki,
        "b",
        &format!(
            "{}tcp_connectors:\n  - {{name: svc, host: 127.0.0.1, port: {}, routing_key: svc}}\n",
            link_listener_yaml(),
            target.port()
        ),
    );
    let pb = b.link_port().await;
    let a = spawn(
        ROUTER,
        dir,
        pki,
        "a",
        &format!(
            "{}tcp_listeners:\n  - {{name: svc, host: 127.0.0.1, port: 0, routing_key: svc}}\n",
            links_yaml(&[("a-b", pb, 1)])
        ),
    );
    wait_for(&a, "listener up", listener_up).await;
    let svc = a.listener_port("svc").await;
    (a, b, SocketAddr::from(([127, 0, 0, 1], svc)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_flows_cost_little_memory() {
    let dir = van_testkit::temp_dir("idle");
    let pki = Pki::new("ca");
    let echo = echo_server().await;
    let (a, b, addr) = pair(dir.path(), &pki, echo).await;
    // Warm up once so lazily built state is not counted as per-flow cost.
    assert_eq!(echo_roundtrip(addr, b"warm").await, b"warm");
    let before = a.rss_kib() + b.rss_kib();
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"hi").await.unwrap();
        let mut two = [0u8; 2];
        s.read_exact(&mut two).await.unwrap();
        conns.push(s);
    }
    let after = a.rss_kib() + b.rss_kib();
    let added_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "1000 idle flows added {added_mib:.1} MiB to both routers ({before} KiB -> {after} KiB)"
    );
    assert!(added_mib <= 64.0, "{added_mib:.1} MiB for 1000 idle flows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_byte_and_router_memory_stays_bounded() {
    const TOTAL: usize = 96 << 20;
    let dir = van_testkit::temp_dir("slow");
    let pki = Pki::new("ca");
    // A server that reads 64 KiB at a time with pauses, hashing what it gets.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = server.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let (mut n, mut sum) = (0usize, 0u64);
        loop {
            let k = s.read(&mut buf).await.unwrap();
            if k == 0 {
                return (n, sum);
            }
            for &x in &buf[..k] {
                sum = sum.wrapping_mul(31).wrapping_add(u64::from(x));
            }
            n += k;
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    });
    let (a, b, addr) = pair(dir.path(), &pki, target).await;
    let idle = (a.rss_kib(), b.rss_kib());
    let data = payload(1 << 20);
    let mut expect = 0u64;
    for _ in 0..TOTAL / data.len() {
        for &x in &data {
            expect = expect.wrapping_mul(31).wrapping_add(u64::from(x));
        }
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..TOTAL / data.len() {
            s.write_all(&data).await.unwrap();
        }
        s.shutdown().await.unwrap();
        s
    });
    let mut peak = idle;
    while !reader.is_finished() {
        peak.0 = peak.0.max(a.rss_kib());
        peak.1 = peak.1.max(b.rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (n, sum) = reader.await.unwrap();
    let _s = writer.await.unwrap();
    assert_eq!(n, TOTAL);
    assert_eq!(sum, expect, "bytes arrived intact and in order");
    eprintln!(
        "idle RSS a={} b={} KiB; peak a={} b={} KiB",
        idle.0, idle.1, peak.0, peak.1
    );
    // One flow may hold about one window per router; allow generous slack for allocator
    // behaviour in debug builds, but nothing like the 96 MiB sent.
    for (i, p) in [(idle.0, peak.0), (idle.1, peak.1)] {
        assert!(
            p.saturating_sub(i) < 24 * 1024,
            "router grew from {i} KiB to {p} KiB"
        );
    }
}
