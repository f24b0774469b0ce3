//! Routers as separate processes, started from YAML files as a user would: killing a router
//! in a redundant topology, and the memory a router holds for idle and slow flows.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p =
            std::env::temp_dir().join(format!("van-{tag}-{}-{}", std::process::id(), rand_u32()));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

fn free_port() -> u16 {
    closed_port().port()
}

/// A router process; killed on drop.
struct Proc {
    child: Child,
    admin: SocketAddr,
    name: String,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// Writes the router's PEM files and YAML config, and starts `van-router` on it.
fn spawn(dir: &Path, pki: &Pki, id: &str, body: &str) -> Proc {
    let (cert, key) = pki.issue(id);
    let (ca_f, cert_f, key_f) = (
        dir.join("ca.pem"),
        dir.join(format!("{id}.pem")),
        dir.join(format!("{id}.key")),
    );
    std::fs::write(&ca_f, pki.ca_pem()).unwrap();
    std::fs::write(&cert_f, cert).unwrap();
    std::fs::write(&key_f, key).unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = format!(
        "router: {{id: {id}}}\nadmin: {{listen: \"{admin}\"}}\nlog: {{level: info, format: json}}\n\
         timers: {{hello_interval_ms: 200, hello_max_age_ms: 1000}}\n\
         tls_profiles:\n  - {{name: link, ca_file: {}, cert_file: {}, key_file: {}}}\n{body}",
        ca_f.display(),
        cert_f.display(),
        key_f.display()
    );
    let cfg_path = dir.join(format!("{id}.yaml"));
    std::fs::write(&cfg_path, cfg).unwrap();
    let log = dir.join(format!("{id}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_van-router"))
        .arg("--config")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Proc {
        child,
        admin,
        name: id.into(),
        log,
    }
}

/// Polls the admin API until `ok` holds for the listener view.
async fn wait_for<F: Fn(&van_proto::admin::ListenerList) -> bool>(p: &Proc, what: &str, ok: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = van_router::admin::connect(&p.admin.to_string()).await
            && let Ok(l) = c.list_listeners(van_proto::admin::ListRequest {}).await
            && ok(&l.into_inner())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what} not reached; log:\n{}",
            p.name,
            std::fs::read_to_string(&p.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn listener_up(l: &van_proto::admin::ListenerList) -> bool {
    l.listeners.iter().all(|l| l.state == "up") && !l.listeners.is_empty()
}

fn link_listener_yaml(port: u16) -> String {
    format!("link_listeners:\n  - {{name: ir, host: 127.0.0.1, port: {port}, tls_profile: link}}\n")
}

fn links_yaml(links: &[(&str, u16, u32)]) -> String {
    let mut s = "links:\n".to_string();
    for (name, port, cost) in links {
        s += &format!(
            "  - {{name: {name}, host: 127.0.0.1, port: {port}, cost: {cost}, tls_profile: link}}\n"
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_transit_router_moves_new_connections_to_the_other_path() {
    let dir = Dir::new("kill");
    let pki = Pki::new("ca");
    let echo = echo_server().await;
    let (pb, pc, pd, svc) = (free_port(), free_port(), free_port(), free_port());
    let d = spawn(
        &dir.0,
        &pki,
        "d",
        &format!(
            "{}tcp_connectors:\n  - {{name: echo, host: 127.0.0.1, port: {}, routing_key: echo}}\n",
            link_listener_yaml(pd),
            echo.port()
        ),
    );
    let b = spawn(
        &dir.0,
        &pki,
        "b",
        &format!(
            "{}{}",
            link_listener_yaml(pb),
            links_yaml(&[("b-d", pd, 1)])
        ),
    );
    let c = spawn(
        &dir.0,
        &pki,
        "c",
        &format!(
            "{}{}",
            link_listener_yaml(pc),
            links_yaml(&[("c-d", pd, 1)])
        ),
    );
    let a = spawn(
        &dir.0,
        &pki,
        "a",
        &format!(
            "{}tcp_listeners:\n  - {{name: echo, host: 127.0.0.1, port: {svc}, routing_key: echo}}\n",
            links_yaml(&[("a-b", pb, 1), ("a-c", pc, 5)])
        ),
    );
    wait_for(&a, "listener up", listener_up).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], svc));
    // Wait until both paths are known, so the test is about failover, not start-up.
    let mut admin = van_router::admin::connect(&a.admin.to_string())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = admin
            .list_nodes(van_proto::admin::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes;
        if nodes.len() == 4
            && nodes
                .iter()
                .any(|n| n.router_id == "d" && n.next_hop == "b")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "topology did not converge: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(1), async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(b"after").await.ok()?;
            s.shutdown().await.ok()?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.ok()?;
            (got == b"after").then_some(())
        })
        .await;
        if let Ok(Some(())) = attempt {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "no failover within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("failover took {:?}", killed.elapsed());
    drop((c, d));
}

/// Two router processes a -> b with a listener on a for a service at `target`.
async fn pair(dir: &Path, pki: &Pki, target: SocketAddr) -> (Proc, Proc, SocketAddr) {
    let (pb, svc) = (free_port(), free_port());
    let b = spawn(
        dir,
        pki,
        "b",
        &format!(
            "{}tcp_connectors:\n  - {{name: svc, host: 127.0.0.1, port: {}, routing_key: svc}}\n",
            link_listener_yaml(pb),
            target.port()
        ),
    );
    let a = spawn(
        dir,
        pki,
        "a",
        &format!(
            "{}tcp_listeners:\n  - {{name: svc, host: 127.0.0.1, port: {svc}, routing_key: svc}}\n",
            links_yaml(&[("a-b", pb, 1)])
        ),
    );
    wait_for(&a, "listener up", listener_up).await;
    (a, b, SocketAddr::from(([127, 0, 0, 1], svc)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_flows_cost_little_memory() {
    let dir = Dir::new("idle");
    let pki = Pki::new("ca");
    let echo = echo_server().await;
    let (a, b, addr) = pair(&dir.0, &pki, echo).await;
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
    let dir = Dir::new("slow");
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
    let (a, b, addr) = pair(&dir.0, &pki, target).await;
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
