//! Routers for tests: a test PKI, router configurations on port 0, in-process routers, echo
//! servers, and ([`process`]) routers as child processes.

pub mod process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use van_router::config::{self, TlsProfile};
use van_router::{Config, Listeners, Router, Running};

/// A certificate authority for tests.
pub struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A leaf certificate for `localhost` and 127.0.0.1, usable as client and server.
    pub fn issue(&self, cn: &str) -> (String, String) {
        self.issue_with(cn, |_| {})
    }

    pub fn issue_with(&self, cn: &str, f: impl FnOnce(&mut CertificateParams)) -> (String, String) {
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        f(&mut p);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS profile named "link" holding a fresh certificate from this CA.
    pub fn profile(&self, cn: &str) -> TlsProfile {
        let (cert, key) = self.issue(cn);
        self.profile_from(cert, key)
    }

    pub fn profile_from(&self, cert: String, key: String) -> TlsProfile {
        TlsProfile {
            name: "link".into(),
            ca_pem: Some(self.ca_pem.clone()),
            cert_pem: Some(cert),
            key_pem: Some(key),
            ..Default::default()
        }
    }
}

/// A router config with the admin API on an OS-chosen port and fast timers.
pub fn base_config(id: &str, tls: TlsProfile) -> config::FileConfig {
    let mut f = config::FileConfig::default();
    f.router.id = id.into();
    f.admin.listen = "127.0.0.1:0".into();
    f.timers.hello_interval_ms = 100;
    // Generous: tests run in parallel on two cores, and a busy runtime delays hellos.
    f.timers.hello_max_age_ms = 1500;
    f.timers.backoff_min_ms = 50;
    f.timers.backoff_max_ms = 500;
    f.flow.connect_timeout_ms = 2000;
    f.entities.tls_profiles.push(tls);
    f
}

pub fn link_listener(f: &mut config::FileConfig) {
    f.entities.link_listeners.push(config::LinkListener {
        name: "inter-router".into(),
        role: config::LinkRole::InterRouter,
        host: "127.0.0.1".into(),
        port: 0,
        cost: 1,
        tls_profile: "link".into(),
    });
}

/// A listener for edge routers, named "edge".
pub fn edge_listener(f: &mut config::FileConfig) {
    f.entities.link_listeners.push(config::LinkListener {
        name: "edge".into(),
        role: config::LinkRole::Edge,
        host: "127.0.0.1".into(),
        port: 0,
        cost: 1,
        tls_profile: "link".into(),
    });
}

/// An edge router with uplinks (name, interior, cost).
pub async fn edge_router(pki: &Pki, id: &str, uplinks: &[(&str, &TestRouter, u32)]) -> TestRouter {
    let mut f = base_config(id, pki.profile(id));
    f.router.mode = config::Mode::Edge;
    for (name, up, cost) in uplinks {
        let mut l = link_cfg(name, up.router().link_listener_addr("edge").unwrap(), *cost);
        l.role = config::LinkRole::Edge;
        f.entities.links.push(l);
    }
    start(f).await
}

pub fn link_to(f: &mut config::FileConfig, name: &str, addr: SocketAddr, cost: u32) {
    f.entities.links.push(link_cfg(name, addr, cost));
}

pub fn link_cfg(name: &str, addr: SocketAddr, cost: u32) -> config::Link {
    config::Link {
        name: name.into(),
        role: config::LinkRole::InterRouter,
        host: "127.0.0.1".into(),
        port: addr.port(),
        cost,
        tls_profile: "link".into(),
        server_name: None,
        proxy: None,
    }
}

pub fn tcp_listener(f: &mut config::FileConfig, name: &str, key: &str) {
    f.entities.tcp_listeners.push(config::TcpListener {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: 0,
        routing_key: key.into(),
        protocol: Default::default(),
    });
}

pub fn tcp_connector(f: &mut config::FileConfig, name: &str, key: &str, target: SocketAddr) {
    f.entities.tcp_connectors.push(config::TcpConnector {
        name: name.into(),
        host: target.ip().to_string(),
        port: target.port(),
        routing_key: key.into(),
        protocol: Default::default(),
        host_override: None,
    });
}

pub fn listener_op(name: &str, key: &str) -> van_router::config::EntityOp {
    van_router::config::EntityOp::PutTcpListener(config::TcpListener {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: 0,
        routing_key: key.into(),
        protocol: Default::default(),
    })
}

pub fn connector_op(name: &str, key: &str, target: SocketAddr) -> van_router::config::EntityOp {
    van_router::config::EntityOp::PutTcpConnector(config::TcpConnector {
        name: name.into(),
        host: target.ip().to_string(),
        port: target.port(),
        routing_key: key.into(),
        protocol: Default::default(),
        host_override: None,
    })
}

/// A listener for `key` whose clients speak `protocol` (HTTP listeners route each request).
pub fn service_listener_op(name: &str, key: &str, protocol: config::Protocol) -> config::EntityOp {
    config::EntityOp::PutTcpListener(config::TcpListener {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: 0,
        routing_key: key.into(),
        protocol,
    })
}

/// A connector for `key` to a target speaking `protocol`.
pub fn service_connector_op(
    name: &str,
    key: &str,
    target: SocketAddr,
    protocol: config::Protocol,
) -> config::EntityOp {
    config::EntityOp::PutTcpConnector(config::TcpConnector {
        name: name.into(),
        host: target.ip().to_string(),
        port: target.port(),
        routing_key: key.into(),
        protocol,
        host_override: None,
    })
}

/// An in-process router with its admin address.
pub struct TestRouter {
    pub running: Running,
    pub admin: SocketAddr,
}

impl TestRouter {
    pub fn router(&self) -> &Arc<Router> {
        &self.running.router
    }

    /// Applies configuration operations, panicking on error.
    pub async fn apply(&self, ops: Vec<van_router::config::EntityOp>) {
        self.router().apply_ops(ops, false, false).await.unwrap();
    }

    pub fn link_addr(&self) -> SocketAddr {
        self.router().link_listener_addr("inter-router").unwrap()
    }

    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        let port = self.router().tcp_listener_port(name).unwrap();
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Waits (event-driven, on the routing table) until `key` is reachable.
    pub async fn wait_reachable(&self, key: &str) {
        let mut rx = self.router().table_rx();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|t| t.reachable(key)))
            .await
            .unwrap_or_else(|_| panic!("{key} not reachable from {}", self.router().id()))
            .unwrap();
        // The listener task reacts to the same change; wait until it listens.
        let mut ch = self.router().subscribe_changes();
        let listening = |r: &Router| {
            van_router::admin::listeners(r)
                .listeners
                .iter()
                .filter(|l| l.routing_key == key)
                .all(|l| l.state == "up")
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while !listening(self.router()) {
                ch.changed().await.unwrap();
            }
        })
        .await
        .expect("listener did not open");
    }

    /// Waits until `key` is not reachable and its listeners are down.
    pub async fn wait_unreachable(&self, key: &str) {
        let mut ch = self.router().subscribe_changes();
        let down = |r: &Router| {
            !r.table().reachable(key)
                && van_router::admin::listeners(r)
                    .listeners
                    .iter()
                    .filter(|l| l.routing_key == key)
                    .all(|l| l.state != "up")
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while !down(self.router()) {
                ch.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{key} still reachable from {}", self.router().id()));
    }

    /// Waits until `peer` is in the routing table with the given next hop.
    pub async fn wait_route(&self, peer: &str, next_hop: &str) {
        self.wait_route_cost(peer, next_hop, None).await
    }

    /// Waits until `peer` is routed through `next_hop`, at `cost` if given.
    pub async fn wait_route_cost(&self, peer: &str, next_hop: &str, cost: Option<u64>) {
        let mut rx = self.router().table_rx();
        tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|t| {
                t.nodes
                    .get(peer)
                    .is_some_and(|n| n.next_hop == next_hop && cost.is_none_or(|c| n.cost == c))
            }),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} never routed to {peer} via {next_hop}; table: {:?}",
                self.router().id(),
                self.router().table().nodes
            )
        })
        .unwrap();
    }
}

/// Logs to stderr when VAN_TEST_LOG is set (an EnvFilter directive).
fn init_test_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("VAN_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .with_ansi(false)
                .try_init();
        }
    });
}

/// Starts a router in this process from `f`, whose admin API listens on TCP.
pub async fn start(f: config::FileConfig) -> TestRouter {
    init_test_logging();
    let cfg = Config::from_file(f).expect("valid test config");
    let listeners = Listeners::bind(&cfg).await.unwrap();
    let admin = match &listeners.admin {
        van_router::admin::AdminBind::Tcp(l) => l.local_addr().unwrap(),
        van_router::admin::AdminBind::Unix(_) => panic!("TestRouter wants a TCP admin API"),
    };
    let running = van_router::start(cfg, listeners).await.unwrap();
    TestRouter { running, admin }
}

/// An echo server: writes back everything, and shuts its write side when the client does.
pub async fn echo_server() -> SocketAddr {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    // Tests open up to a thousand connections at once.
    let l = sock.listen(4096).unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            // Accept errors (a connection aborted in the backlog) are not fatal.
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `data`, shuts the write side, and returns everything read until EOF.
pub async fn echo_roundtrip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let data = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    writer.await.unwrap();
    out
}

/// Deterministic test payload.
pub fn payload(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ n as u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Two linked routers with an echo service (key "echo") behind b and a listener for it
/// on a, reachable.
pub async fn echo_pair() -> (TestRouter, TestRouter) {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let echo = echo_server().await;
    a.apply(vec![listener_op("echo", "echo")]).await;
    b.apply(vec![connector_op("echo", "echo", echo)]).await;
    a.wait_reachable("echo").await;
    (a, b)
}

/// Two routers, A (dials) and B (listens), linked over mTLS.
pub async fn two_routers(pki: &Pki) -> (TestRouter, TestRouter) {
    dial_with(pki, pki.profile("a")).await
}

/// Starts B (listening, with a certificate from `pki_b`), then A dialing B with `a_profile`;
/// returns both, whether or not the link comes up.
pub async fn dial_with(pki_b: &Pki, a_profile: TlsProfile) -> (TestRouter, TestRouter) {
    let mut fb = base_config("b", pki_b.profile("b"));
    link_listener(&mut fb);
    let b = start(fb).await;
    let mut fa = base_config("a", a_profile);
    link_to(&mut fa, "to-b", b.link_addr(), 1);
    let a = start(fa).await;
    (a, b)
}

/// Starts a router in this process from its YAML configuration (its admin API on a unix
/// socket, as in a site).
pub async fn start_yaml(yaml: &str) -> Running {
    init_test_logging();
    let cfg = Config::from_yaml(yaml).expect("valid test config");
    let listeners = Listeners::bind(&cfg).await.unwrap();
    van_router::start(cfg, listeners).await.unwrap()
}
