//! The main job until the control plane exists: two routers ("west" and "east") on this
//! machine, linked over mutual TLS, carrying a real HTTP service from one to the other.
//!
//! `cargo run --release -p van-router --example two_sites` prints each step; add `-- --serve`
//! to keep the routers running so you can try `curl` yourself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use van_router::config::{self, FileConfig, TlsProfile};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let serve = std::env::args().any(|a| a == "--serve");
    println!("1. Creating a certificate authority and a certificate for each router");
    let (west_tls, east_tls) = pki()?;

    println!("2. Starting an HTTP server for the service \"backend\" (east's side)");
    let http = http_server().await?;
    println!("   backend is listening on {http}");

    println!("3. Starting router \"east\": accepts links, has a connector for \"backend\"");
    let mut east = base("east", east_tls);
    east.entities.link_listeners.push(config::LinkListener {
        name: "inter-router".into(),
        role: config::LinkRole::InterRouter,
        host: "127.0.0.1".into(),
        port: 0,
        cost: 1,
        tls_profile: "link".into(),
    });
    east.entities.tcp_connectors.push(config::TcpConnector {
        name: "backend".into(),
        host: "127.0.0.1".into(),
        port: http.port(),
        routing_key: "backend".into(),
        protocol: config::Protocol::Tcp,
        host_override: None,
    });
    let east = start(east).await?;
    let link_addr = east
        .router
        .link_listener_addr("inter-router")
        .expect("bound");
    println!("   east accepts inter-router links on {link_addr}");

    println!("4. Starting router \"west\": links to east, listens for \"backend\"");
    let mut west = base("west", west_tls);
    west.entities.links.push(config::Link {
        name: "to-east".into(),
        role: config::LinkRole::InterRouter,
        host: "127.0.0.1".into(),
        port: link_addr.port(),
        cost: 1,
        tls_profile: "link".into(),
        server_name: None,
        proxy: None,
    });
    west.entities.tcp_listeners.push(config::TcpListener {
        name: "backend".into(),
        host: "127.0.0.1".into(),
        port: 0,
        routing_key: "backend".into(),
        protocol: config::Protocol::Tcp,
    });
    let t0 = Instant::now();
    let west = start(west).await?;

    println!("5. Waiting for the link and for \"backend\" to become reachable from west");
    let mut table = west.router.table_rx();
    tokio::time::timeout(
        Duration::from_secs(10),
        table.wait_for(|t| t.reachable("backend")),
    )
    .await
    .map_err(|_| anyhow::anyhow!("backend did not become reachable within 10 s"))??;
    let port = west.router.tcp_listener_port("backend").expect("listener");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr).await?;
    println!("   reachable after {:?}", t0.elapsed());
    for l in van_router::admin::links(&west.router).links {
        println!(
            "   link {}: {} to router {} (cost {})",
            l.name, l.state, l.peer_router, l.cost
        );
    }

    println!("6. Fetching http://{addr}/ through west -> east -> backend");
    let body = http_get(addr).await?;
    println!("   response: {}", body.lines().next().unwrap_or(""));
    println!(
        "   body: {}",
        body.split("\r\n\r\n").nth(1).unwrap_or("").trim()
    );
    anyhow::ensure!(
        body.starts_with("HTTP/1.1 200") && body.contains("hello from east"),
        "unexpected response: {body}"
    );

    for f in van_router::admin::nodes(&west.router).nodes {
        println!(
            "   west routes to {:<5} cost {} next hop {:?}",
            f.router_id, f.cost, f.next_hop
        );
    }
    println!("OK: the service in east answered through the link.");
    if serve {
        println!("Serving: try `curl http://{addr}/` (Ctrl-C to stop)");
        tokio::signal::ctrl_c().await?;
    }
    west.shutdown().await;
    east.shutdown().await;
    Ok(())
}

fn base(id: &str, tls: TlsProfile) -> FileConfig {
    let mut f = FileConfig::default();
    f.router.id = id.into();
    f.admin.listen = "127.0.0.1:0".into();
    f.log.level = "warn".into();
    f.entities.tls_profiles.push(tls);
    f
}

async fn start(f: FileConfig) -> anyhow::Result<van_router::Running> {
    let cfg = van_router::Config::from_file(f)?;
    let listeners = van_router::Listeners::bind(&cfg).await?;
    Ok(van_router::start(cfg, listeners).await?)
}

fn pki() -> anyhow::Result<(TlsProfile, TlsProfile)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "demo-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |cn: &str| -> anyhow::Result<TlsProfile> {
        let mut p = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        Ok(TlsProfile {
            name: "link".into(),
            ca_pem: Some(ca_pem.clone()),
            cert_pem: Some(cert.pem()),
            key_pem: Some(key.serialize_pem()),
            ..Default::default()
        })
    };
    Ok((leaf("west")?, leaf("east")?))
}

/// A minimal HTTP/1.1 server answering every request with a fixed page.
async fn http_server() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let body = "hello from east\n";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(addr)
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                anyhow::bail!("listener {addr} did not open: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn http_get(addr: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: backend\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await??;
    Ok(out)
}
