//! Whole sites in one process: router, controller and config-sync of each site, talking
//! real gRPC, real TLS links and real HTTPS claims on loopback. The CLI tests in cli/ run the
//! same parts as separate processes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use van_controller::clock::ManualClock;
use van_controller::site::{RouterMode, SiteConfig};
use van_proto::controller::{self as pb, site_controller_client::SiteControllerClient};
use van_testkit::site::MemStore;
use van_testkit::{ReservedPort, TempDir, eventually, eventually_ok, reserved_ports, temp_dir};

struct Site {
    api: SiteControllerClient<Channel>,
    cfg: SiteConfig,
    dir: TempDir,
    /// The site's link and claims ports, held for as long as the site may bind them.
    _ports: Vec<ReservedPort>,
    router_yaml: String,
    router: Option<van_router::Running>,
    store: Arc<MemStore>,
    /// The controller's clock, which only the test moves.
    clock: Arc<ManualClock>,
    /// Stops the controller.
    controller_stop: tokio::sync::watch::Sender<bool>,
    /// The controller's task; it ends once everything it served is closed.
    controller: Option<JoinHandle<Result<(), van_controller::RunError>>>,
    /// Stops config-sync.
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.controller_stop.send(true);
    }
}

fn stopper() -> (
    tokio::sync::watch::Sender<bool>,
    impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let f = move || {
        let mut rx = rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    };
    (tx, f)
}

impl Site {
    /// The whole site goes away: controller, config-sync and router.
    async fn leave(mut self) {
        let _ = self.stop.send(true);
        let _ = self.controller_stop.send(true);
        if let Some(r) = self.router.take() {
            r.shutdown().await;
        }
    }

    fn router_sock(&self) -> String {
        format!("unix:{}", self.dir.path().join("router.sock").display())
    }

    async fn start_router(&mut self) {
        self.router = Some(van_testkit::router::start_yaml(&self.router_yaml).await);
    }

    /// A claim token named `name`, with the defaults (15 minutes, one use).
    async fn claim_token(&self, name: &str) -> pb::Token {
        self.api
            .clone()
            .create_token(pb::CreateTokenRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Stops the router and starts a new, empty one in its place.
    async fn restart_router(&mut self) {
        if let Some(r) = self.router.take() {
            r.shutdown().await;
        }
        self.start_router().await;
    }

    async fn start_controller(&mut self) {
        let sock = self.dir.path().join("controller.sock");
        let _ = std::fs::remove_file(&sock);
        let api_l = tokio::net::UnixListener::bind(&sock).unwrap();
        let claims = match self.cfg.mode {
            RouterMode::Interior => Some(
                TcpListener::bind(("127.0.0.1", self.cfg.claims_port))
                    .await
                    .unwrap(),
            ),
            RouterMode::Edge => None,
        };
        let (stop, stopped) = stopper();
        self.controller_stop = stop;
        let opts = van_controller::Options {
            site: self.cfg.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
        };
        let sockets = van_controller::Sockets {
            api: van_controller::ApiBind::Unix(api_l),
            claims,
            api_token: None,
        };
        self.controller = Some(tokio::spawn(van_controller::run(opts, sockets, stopped())));
    }

    /// Stops the controller and waits until it has let go of its sockets.
    async fn stop_controller(&mut self) {
        let _ = self.controller_stop.send(true);
        if let Some(c) = self.controller.take() {
            c.await.unwrap().unwrap();
        }
    }

    async fn restart_controller(&mut self) {
        self.stop_controller().await;
        self.start_controller().await;
    }
}

async fn site(name: &str, listener_host: &str, mode: RouterMode) -> Site {
    let dir = temp_dir(&format!("sites-{name}"));
    let ports = reserved_ports(3);
    let cfg = SiteConfig {
        id: van_controller::site::random_hex(16),
        name: name.into(),
        mode,
        ingress_host: "127.0.0.1".into(),
        ingress_bind: "127.0.0.1".into(),
        listener_host: listener_host.into(),
        inter_router_port: ports[0].port(),
        edge_port: ports[1].port(),
        claims_port: ports[2].port(),
        advertised_ports: None,
        advertised_hosts: None,
        console: None,
    };
    // The router starts empty, with only its identity, as on a real site.
    let router_yaml = format!(
        "router: {{id: {}, site: {}, mode: {}}}\nadmin: {{listen: 'unix:{}'}}\n\
         timers: {{hello_interval_ms: 100, hello_max_age_ms: 600}}\n",
        cfg.router_id(),
        cfg.id,
        cfg.mode.as_str(),
        dir.path().join("router.sock").display()
    );
    let (cs_stop, cs_stopped) = stopper();
    let api_target = format!("unix:{}", dir.path().join("controller.sock").display());
    let mut site = Site {
        api: SiteControllerClient::new(van_proto::grpc::lazy_channel(&api_target).unwrap()),
        cfg,
        dir,
        _ports: ports,
        router_yaml,
        router: None,
        store: Arc::new(MemStore::default()),
        clock: ManualClock::starting_now(),
        controller_stop: tokio::sync::watch::channel(false).0,
        controller: None,
        stop: cs_stop,
    };
    site.start_router().await;
    site.start_controller().await;
    tokio::spawn(van_config_sync::run(
        van_config_sync::Options {
            controller: api_target,
            router: site.router_sock(),
            controller_token: None,
            secrets: None,
            peers: None,
        },
        cs_stopped(),
    ));
    site
}

/// Waits until the site's router listens for links: config-sync has brought it the site's
/// configuration.
async fn listening_for_links(s: &Site) {
    use van_proto::admin::{ListRequest, router_admin_client::RouterAdminClient};
    let ch = van_proto::grpc::lazy_channel(&s.router_sock()).unwrap();
    let mut admin = RouterAdminClient::new(ch);
    eventually_ok(&format!("{} listening for links", s.cfg.name), async || {
        let l = admin
            .list_link_listeners(ListRequest {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let up = l.link_listeners.iter().all(|l| l.state == "up");
        if up && !l.link_listeners.is_empty() {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    })
    .await
}

async fn link_active(s: &Site, name: &str) {
    let mut api = s.api.clone();
    eventually_ok(&format!("link {name} active"), async || {
        let links = api
            .list_links(pb::ListLinksRequest {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let up = links
            .links
            .iter()
            .any(|l| l.name == name && l.state == "active");
        if up {
            Ok(())
        } else {
            Err(format!("{links:?}"))
        }
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
    // Expiry: the issuer's record decides (a one-second token, redeemed when the issuer's
    // clock says it is two seconds old; the redeemer's clock has not moved).
    let t3 = w
        .create_token(claim(1, 1, "t3"))
        .await
        .unwrap()
        .into_inner();
    west.clock.advance(Duration::from_secs(2));
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

async fn link(from: &Site, to: &Site, ty: pb::TokenType, name: &str) {
    let token = to
        .api
        .clone()
        .create_token(pb::CreateTokenRequest {
            name: name.into(),
            r#type: ty as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    from.api
        .clone()
        .create_link(pb::CreateLinkRequest {
            token_yaml: token.yaml,
            ..Default::default()
        })
        .await
        .unwrap();
    link_active(from, name).await;
}

async fn expose(s: &Site, address: &str, port: u32, target: std::net::SocketAddr) {
    s.api
        .clone()
        .expose(pb::ExposeRequest {
            address: address.into(),
            ports: vec![port],
            host: target.ip().to_string(),
            target_ports: vec![u32::from(target.port())],
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn unexpose(s: &Site, address: &str, host: &str) {
    s.api
        .clone()
        .unbind(pb::UnbindRequest {
            address: address.into(),
            host: host.into(),
            delete_if_unbound: true,
        })
        .await
        .unwrap();
}

async fn reaches(addr: &str, body: &str) {
    let got = eventually(&format!("{body:?} at {addr}"), async || {
        http_get(addr).await.filter(|b| b.ends_with(body))
    })
    .await;
    assert!(got.ends_with(body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_and_an_edge_follow_service_changes() {
    let west = site("west", "127.0.0.2", RouterMode::Interior).await;
    let east = site("east", "127.0.0.3", RouterMode::Interior).await;
    let north = site("north", "127.0.0.4", RouterMode::Edge).await;
    link(&east, &west, pb::TokenType::Claim, "east-west").await;
    link(&north, &east, pb::TokenType::Cert, "north-east").await;
    let v1 = http_server("north v1").await;
    // Add: a service on the edge is reachable from both interiors, two hops away in west.
    expose(&north, "api", 17001, v1).await;
    reaches("127.0.0.2:17001", "north v1").await;
    reaches("127.0.0.3:17001", "north v1").await;
    reaches("127.0.0.4:17001", "north v1").await;
    // Change: the service moves to another port; the old listeners go everywhere.
    unexpose(&north, "api", "127.0.0.1").await;
    expose(&north, "api", 17002, v1).await;
    reaches("127.0.0.2:17002", "north v1").await;
    for a in ["127.0.0.2:17001", "127.0.0.3:17001"] {
        eventually(&format!("{a} closed"), async || {
            TcpStream::connect(a).await.is_err().then_some(())
        })
        .await;
    }
    // A second target in west for the same service: both sites serve it.
    let v2 = http_server("west v2").await;
    expose(&west, "api", 17002, v2).await;
    let svc = eventually("two target sites", async || {
        let s = services_of(&east).await;
        (s.len() == 1 && s[0].target_sites.len() == 2).then_some(s)
    })
    .await;
    assert_eq!(svc[0].address, "api");
    // Remove both: gone from every site.
    unexpose(&north, "api", "127.0.0.1").await;
    unexpose(&west, "api", "127.0.0.1").await;
    for s in [&west, &east, &north] {
        eventually("no services", async || {
            services_of(s).await.is_empty().then_some(())
        })
        .await;
    }
    // Network status from the edge shows all three sites and the links between them.
    let net = north
        .api
        .clone()
        .get_network(pb::GetNetworkRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<&str> = net.sites.iter().map(|s| s.site_name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["east", "north", "west"]);
    let east_rec = net.sites.iter().find(|s| s.site_name == "east").unwrap();
    assert_eq!(east_rec.links[0].peer_site_name, "west");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_routers_and_controllers_lose_nothing() {
    if std::env::var_os("VAN_LOG").is_some() {
        let _ = van_telemetry::init(&Default::default(), None, "test").map(std::mem::forget);
    }
    let mut west = site("west", "127.0.0.2", RouterMode::Interior).await;
    let mut east = site("east", "127.0.0.3", RouterMode::Interior).await;
    link(&east, &west, pb::TokenType::Claim, "east-west").await;
    let backend = http_server("east backend").await;
    expose(&east, "backend", 17101, backend).await;
    reaches("127.0.0.2:17101", "east backend").await;

    // A router restarts empty; config-sync puts everything back with no manual step.
    let started = std::time::Instant::now();
    east.restart_router().await;
    link_active(&east, "east-west").await;
    reaches("127.0.0.2:17101", "east backend").await;
    west.restart_router().await;
    reaches("127.0.0.2:17101", "east backend").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A controller restart keeps links, services and outstanding tokens.
    let before = west.store.saved();
    let token = west.claim_token("later").await;
    west.restart_controller().await;
    east.restart_controller().await;
    link_active(&east, "east-west").await;
    reaches("127.0.0.2:17101", "east backend").await;
    // config-sync follows the new controllers: a change made now reaches the routers.
    let second = http_server("second service").await;
    expose(&east, "second", 17102, second).await;
    reaches("127.0.0.2:17102", "second service").await;
    let after = west.store.saved();
    assert_eq!(after.certs, before.certs, "same CA after a restart");
    assert!(after.claims.contains_key("later"));
    // The token issued before the restart still redeems.
    let north = site("north", "127.0.0.4", RouterMode::Interior).await;
    north
        .api
        .clone()
        .create_link(pb::CreateLinkRequest {
            token_yaml: token.yaml,
            ..Default::default()
        })
        .await
        .unwrap();
    link_active(&north, "later").await;
    reaches("127.0.0.4:17101", "east backend").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_status_names_why_a_link_is_down() {
    use van_controller::token::{self, Token};
    let west = site("west", "127.0.0.2", RouterMode::Interior).await;
    let east = site("east", "127.0.0.3", RouterMode::Interior).await;
    let other = site("other", "127.0.0.4", RouterMode::Interior).await;
    // West listens before east dials it: a link's later failures do not always reach the
    // router's change feed, so a first "refused" could stand in for "certificate".
    listening_for_links(&west).await;
    let cert = |s: &Site, name: &str| {
        let mut api = s.api.clone();
        let name = name.to_string();
        async move {
            let t = api
                .create_token(pb::CreateTokenRequest {
                    name,
                    r#type: pb::TokenType::Cert as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            match token::parse(&t.yaml).unwrap() {
                Token::Cert(c) => c,
                Token::Claim(_) => unreachable!(),
            }
        }
    };
    let mut wrong_host = cert(&west, "wrong-host").await;
    wrong_host.inter_router_host = "no-such-host.invalid".into();
    let mut closed_port = cert(&west, "closed-port").await;
    closed_port.generated_by = "1111111111111111".into();
    // Bound, never listening: refused for as long as the test holds it.
    let refusing = ReservedPort::localhost();
    closed_port.inter_router_port = refusing.port();
    // Signed by west, but claiming another site's CA: west's server certificate fails.
    let mut bad_ca = cert(&west, "bad-ca").await;
    bad_ca.generated_by = "2222222222222222".into();
    bad_ca.ca_cert = cert(&other, "x").await.ca_cert;
    for t in [&wrong_host, &closed_port, &bad_ca] {
        east.api
            .clone()
            .create_link(pb::CreateLinkRequest {
                token_yaml: t.to_yaml(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut api = east.api.clone();
    for (name, reason) in [
        ("wrong-host", "dns"),
        ("closed-port", "refused"),
        ("bad-ca", "certificate"),
    ] {
        let l = eventually_ok(&format!("{name} failing with {reason}"), async || {
            let links = api
                .list_links(pb::ListLinksRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let seen = format!("{links:?}");
            links
                .links
                .into_iter()
                .find(|l| l.name == name && l.reason == reason)
                .ok_or(seen)
        })
        .await;
        assert_ne!(l.state, "active");
        assert!(!l.detail.is_empty(), "{l:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_issuer_is_down_is_redeemed_when_it_comes_back() {
    let mut west = site("west", "127.0.0.2", RouterMode::Interior).await;
    let east = site("east", "127.0.0.3", RouterMode::Interior).await;
    let token = west.claim_token("later").await;
    // West's controller (and with it the claims endpoint) is down when east links.
    west.stop_controller().await;
    let st = east
        .api
        .clone()
        .create_link(pb::CreateLinkRequest {
            token_yaml: token.yaml,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (st.state.as_str(), st.reason.as_str()),
        ("connecting", "claim")
    );
    assert!(st.detail.starts_with("refused"), "{st:?}");
    // West comes back: the claim is redeemed in the background and the link comes up.
    west.start_controller().await;
    link_active(&east, "later").await;
}
