//! Whole sites in one process: router, controller and config-sync of each site, talking
//! real gRPC, real TLS links and real HTTPS claims on loopback. The CLI tests in cli/ run the
//! same parts as separate processes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;
use van_controller::site::{RouterMode, SiteConfig, SiteState, SiteStore};
use van_proto::controller::{self as pb, site_controller_client::SiteControllerClient};

#[derive(Debug, Default)]
struct MemStore(std::sync::Mutex<SiteState>);

impl SiteStore for MemStore {
    fn load(&self) -> Result<SiteState, van_controller::error::StoreError> {
        Ok(self.0.lock().unwrap().clone())
    }
    fn save(&self, s: &SiteState) -> Result<(), van_controller::error::StoreError> {
        *self.0.lock().unwrap() = s.clone();
        Ok(())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Site {
    api: SiteControllerClient<Channel>,
    cfg: SiteConfig,
    router: Option<van_router::Running>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Site {
    /// The whole site goes away: controller, config-sync and router.
    async fn leave(mut self) {
        let _ = self.stop.send(true);
        if let Some(r) = self.router.take() {
            r.shutdown().await;
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn site(name: &str, listener_host: &str, mode: RouterMode) -> Site {
    let cfg = SiteConfig {
        id: van_controller::site::random_hex(16),
        name: name.into(),
        mode,
        ingress_host: "127.0.0.1".into(),
        ingress_bind: "127.0.0.1".into(),
        listener_host: listener_host.into(),
        inter_router_port: free_port(),
        edge_port: free_port(),
        claims_port: 0,
    };
    let claims = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = SiteConfig {
        claims_port: claims.local_addr().unwrap().port(),
        ..cfg
    };
    // The router starts empty, with only its identity, as on a real site.
    let rcfg = van_router::Config::from_yaml(&format!(
        "router: {{id: {}, site: {}, mode: {}}}\nadmin: {{listen: '127.0.0.1:0'}}\n\
         timers: {{hello_interval_ms: 100, hello_max_age_ms: 600}}\n",
        cfg.router_id(),
        cfg.id,
        cfg.mode.as_str()
    ))
    .unwrap();
    let listeners = van_router::Listeners::bind(&rcfg).await.unwrap();
    let router_admin = match &listeners.admin {
        van_router::admin::AdminBind::Tcp(l) => l.local_addr().unwrap().to_string(),
        _ => unreachable!(),
    };
    let router = van_router::start(rcfg, listeners).await.unwrap();
    let api_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api_l.local_addr().unwrap().to_string();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let opts = van_controller::Options {
        site: cfg.clone(),
        store: Arc::new(MemStore::default()),
        router: router_admin.clone(),
    };
    let sockets = van_controller::Sockets {
        api: van_controller::ApiBind::Tcp(api_l),
        claims: (mode == RouterMode::Interior).then_some(claims),
    };
    tokio::spawn(van_controller::run(opts, sockets, stopped(stop_rx.clone())));
    tokio::spawn(van_config_sync::run(
        van_config_sync::Options {
            controller: api_addr.clone(),
            router: router_admin,
        },
        stopped(stop_rx),
    ));
    let api = SiteControllerClient::new(van_config_sync::lazy_channel(&api_addr).unwrap());
    Site {
        api,
        cfg,
        router: Some(router),
        stop,
    }
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn link_active(s: &Site, name: &str) {
    let mut api = s.api.clone();
    eventually(&format!("link {name} active"), async || {
        let links = api
            .list_links(pb::ListLinksRequest {})
            .await
            .ok()?
            .into_inner();
        links
            .links
            .iter()
            .any(|l| l.name == name && l.state == "active")
            .then_some(())
    })
    .await
}

async fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    (!out.is_empty()).then_some(out)
}

/// A minimal HTTP server answering `body`.
async fn http_server(body: &'static str) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.0 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

async fn services_of(s: &Site) -> Vec<pb::Service> {
    s.api
        .clone()
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_token_link_and_a_service_across_sites() {
    let west = site("west", "127.0.0.2", RouterMode::Interior).await;
    let east = site("east", "127.0.0.3", RouterMode::Interior).await;
    let token = west
        .api
        .clone()
        .create_token(pb::CreateTokenRequest {
            name: "to-west".into(),
            r#type: pb::TokenType::Claim as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let link = east
        .api
        .clone()
        .create_link(pb::CreateLinkRequest {
            token_yaml: token.yaml.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(link.peer_site_name, "west");
    link_active(&east, "to-west").await;
    // The token had one use.
    let err = west
        .api
        .clone()
        .create_link(pb::CreateLinkRequest {
            token_yaml: token.yaml.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("itself"), "{}", err.message());

    let backend = http_server("hello from east").await;
    east.api
        .clone()
        .expose(pb::ExposeRequest {
            address: "backend".into(),
            ports: vec![18080],
            host: "127.0.0.1".into(),
            target_ports: vec![u32::from(backend.port())],
            ..Default::default()
        })
        .await
        .unwrap();
    // West learns the service and listens for it; a request crosses the link.
    let body = eventually("backend reachable from west", async || {
        http_get("127.0.0.2:18080").await
    })
    .await;
    assert!(body.ends_with("hello from east"), "{body}");
    let svc = services_of(&west).await;
    assert_eq!(svc.len(), 1);
    assert_eq!(svc[0].origin_site_name, "east");
    assert_eq!(svc[0].target_sites, ["east"]);
    // Network status from either side lists both sites with the link.
    let net = west
        .api
        .clone()
        .get_network(pb::GetNetworkRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = net.sites.iter().map(|s| s.site_name.as_str()).collect();
    assert_eq!(names, ["west", "east"]);
    let east_in_west = &net.sites[1];
    assert_eq!(east_in_west.services[0].address, "backend");
    let incoming = west
        .api
        .clone()
        .list_links(pb::ListLinksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        incoming
            .links
            .iter()
            .any(|l| l.direction == "incoming" && l.peer_site_name == "east"),
        "{incoming:?}"
    );

    // A conflicting definition in west (same address, other port) is reported, not merged.
    west.api
        .clone()
        .create_service(pb::CreateServiceRequest {
            address: "backend".into(),
            ports: vec![19090],
            ..Default::default()
        })
        .await
        .unwrap();
    let svc = eventually("conflict reported", async || {
        let s = services_of(&west).await;
        (!s[0].conflicts.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(svc[0].ports, [19090]);
    assert!(
        svc[0].conflicts[0].starts_with("east: tcp 18080"),
        "{:?}",
        svc[0].conflicts
    );
    west.api
        .clone()
        .delete_service(pb::DeleteServiceRequest {
            address: "backend".into(),
        })
        .await
        .unwrap();

    // Unexpose withdraws it from west too.
    east.api
        .clone()
        .unbind(pb::UnbindRequest {
            address: "backend".into(),
            host: "127.0.0.1".into(),
            delete_if_unbound: true,
        })
        .await
        .unwrap();
    eventually("service withdrawn from west", async || {
        services_of(&west).await.is_empty().then_some(())
    })
    .await;
    eventually("west stops listening", async || {
        TcpStream::connect("127.0.0.2:18080")
            .await
            .is_err()
            .then_some(())
    })
    .await;

    // A site that leaves takes its services with it, within seconds.
    east.api
        .clone()
        .expose(pb::ExposeRequest {
            address: "db".into(),
            ports: vec![15432],
            host: "127.0.0.1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    eventually("db known in west", async || {
        (!services_of(&west).await.is_empty()).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    east.leave().await;
    eventually("db withdrawn after east left", async || {
        services_of(&west).await.is_empty().then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let _ = west.cfg.id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_with_a_reason() {
    let west = site("west", "127.0.0.2", RouterMode::Interior).await;
    let east = site("east", "127.0.0.3", RouterMode::Interior).await;
    let mut w = west.api.clone();
    let mut e = east.api.clone();
    let claim = |uses: u32, expiry: u64, name: &str| pb::CreateTokenRequest {
        name: name.into(),
        r#type: pb::TokenType::Claim as i32,
        uses,
        expiry_seconds: expiry,
        cost: 0,
    };
    let link = |yaml: &str| pb::CreateLinkRequest {
        token_yaml: yaml.into(),
        ..Default::default()
    };
    // Tampered: the secret altered.
    let t = w
        .create_token(claim(1, 0, "t1"))
        .await
        .unwrap()
        .into_inner();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&t.yaml).unwrap();
    let pw = doc["data"]["password"].as_str().unwrap().to_string();
    let forged = t.yaml.replace(&pw, "Zm9yZ2Vk");
    let err = e.create_link(link(&forged)).await.unwrap_err();
    assert!(err.message().contains("tampered"), "{}", err.message());
    // Unknown claim name (the URL points at a claim that was never issued).
    let unknown = t.yaml.replace("/t1", "/nope");
    let err = e.create_link(link(&unknown)).await.unwrap_err();
    assert!(err.message().contains("unknown"), "{}", err.message());
    // Use count: a one-use token links one site; replaying it is refused.
    let t2 = w
        .create_token(claim(1, 0, "t2"))
        .await
        .unwrap()
        .into_inner();
    e.create_link(link(&t2.yaml)).await.unwrap();
    let third = site("north", "127.0.0.4", RouterMode::Interior).await;
    let err = third
        .api
        .clone()
        .create_link(link(&t2.yaml))
        .await
        .unwrap_err();
    assert!(err.message().contains("used-up"), "{}", err.message());
    // Expiry: the issuer's record decides (a one-second token, redeemed late).
    let t3 = w
        .create_token(claim(1, 1, "t3"))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = third
        .api
        .clone()
        .create_link(link(&t3.yaml))
        .await
        .unwrap_err();
    assert!(err.message().contains("expired"), "{}", err.message());
    // Nothing half-made: the refused links do not exist.
    let links = third
        .api
        .clone()
        .list_links(pb::ListLinksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(links.links.is_empty(), "{links:?}");
    // An edge site cannot issue tokens; bad requests name the field.
    let edge = site("edge", "127.0.0.5", RouterMode::Edge).await;
    let err = edge
        .api
        .clone()
        .create_token(claim(0, 0, ""))
        .await
        .unwrap_err();
    assert!(err.message().contains("edge"), "{}", err.message());
    let err = w
        .expose(pb::ExposeRequest {
            address: "Bad_Name".into(),
            ports: vec![0],
            protocol: "udp".into(),
            host: "".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let m = err.message();
    assert!(
        m.contains("address") && m.contains("protocol") && m.contains("port"),
        "{m}"
    );
}
