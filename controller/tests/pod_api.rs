//! The controller and config-sync as they run in a Kubernetes site's two pods: the API over
//! TCP demands the bearer token (health and reflection stay open for kubelet's probes and
//! grpcurl), and the router's TLS material reaches config-sync through a Secret, never over
//! the API.
//! Real gRPC over TCP, a real router; the Secret is handed over by hand (`ManualSecrets`),
//! as the Kubernetes API would through config-sync's watch.

use std::path::PathBuf;
use std::sync::Arc;

use tonic::Code;
use tonic::transport::Channel;
use van_config_sync::BearerToken;
use van_config_sync::tls::{ManualSecrets, SecretSource};
use van_controller::Controller;
use van_controller::api::ApiToken;
use van_proto::admin::router_admin_client::RouterAdminClient;
use van_proto::controller::{self as pb, site_controller_client::SiteControllerClient};
use van_testkit::grpc::{self, ServingStatus};
use van_testkit::site::{MemStore, kube_site};
use van_testkit::{ReservedPort, TempDir, eventually, reserved_ports, temp_dir};

const TOKEN: &str = "0123456789abcdef-test-token";
const TLS_SECRET: &str = "skupper-router-tls";

/// A router, its controller serving the API on TCP with the token, and config-sync.
struct PodSite {
    c: Arc<Controller>,
    channel: Channel,
    router: Option<van_router::Running>,
    router_sock: PathBuf,
    _dir: TempDir,
    /// The site's link and claims ports, held while the site may bind them.
    _ports: Vec<ReservedPort>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl PodSite {
    async fn start(tls_in_secret: bool, secrets: Option<Arc<dyn SecretSource>>) -> PodSite {
        PodSite::start_with(tls_in_secret, secrets, None).await
    }

    async fn start_with(
        tls_in_secret: bool,
        secrets: Option<Arc<dyn SecretSource>>,
        peers: Option<van_config_sync::peers::Peers>,
    ) -> PodSite {
        let dir = temp_dir("pod");
        let ports = reserved_ports(3);
        let cfg = van_controller::site::SiteConfig {
            ingress_host: "127.0.0.1".into(),
            ingress_bind: "127.0.0.1".into(),
            listener_host: "127.0.0.1".into(),
            inter_router_port: ports[0].port(),
            edge_port: ports[1].port(),
            claims_port: ports[2].port(),
            ..kube_site("west", &van_controller::site::random_hex(16))
        };
        let router_sock = dir.path().join("router.sock");
        let router = van_testkit::router::start_yaml(&format!(
            "router: {{id: {}, site: {}, mode: interior}}\nadmin: {{listen: 'unix:{}'}}\n",
            cfg.router_id(),
            cfg.id,
            router_sock.display()
        ))
        .await;

        let c = Controller::open(cfg, Arc::new(MemStore::default()))
            .await
            .unwrap();
        if tls_in_secret {
            c.keep_router_tls_in_secret(TLS_SECRET);
        }
        if peers.is_some() {
            c.enable_router_peers();
        }
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = api.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tokio::spawn(van_controller::serve(
            c.clone(),
            van_controller::Sockets {
                api: van_controller::ApiBind::Tcp(api),
                claims: None,
                api_token: Some(ApiToken::new(TOKEN).unwrap()),
            },
            until(stopped.clone()),
        ));
        // config-sync with the token as the chart mounts it (a trailing newline included).
        tokio::spawn(van_config_sync::run(
            van_config_sync::Options {
                controller: target.clone(),
                router: format!("unix:{}", router_sock.display()),
                controller_token: Some(format!("{TOKEN}\n")),
                secrets,
                peers,
            },
            until(stopped),
        ));
        PodSite {
            c,
            channel: van_proto::grpc::lazy_channel(&target).unwrap(),
            router: Some(router),
            router_sock,
            _dir: dir,
            _ports: ports,
            stop,
        }
    }

    fn api(&self) -> van_config_sync::ControllerClient {
        SiteControllerClient::with_interceptor(
            self.channel.clone(),
            BearerToken::new(Some(TOKEN)).unwrap(),
        )
    }

    async fn router_config(&self) -> van_proto::admin::RouterConfig {
        let ch =
            van_proto::grpc::lazy_channel(&format!("unix:{}", self.router_sock.display())).unwrap();
        RouterAdminClient::new(ch)
            .get_config(van_proto::admin::GetConfigRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(r) = self.router.take() {
            r.shutdown().await;
        }
    }
}

#[test]
fn short_or_unprintable_tokens_are_refused() {
    let short = ApiToken::new("abc\n").unwrap_err();
    assert!(short.contains("at least 16"), "{short}");
    let spaced = ApiToken::new("0123456789 abcdef0123").unwrap_err();
    assert!(spaced.contains("printable"), "{spaced}");
    // A Secret's value often ends with a newline; it is not part of the token.
    let t = ApiToken::new(&format!("  {TOKEN}\n")).unwrap();
    assert_eq!(t.header(), format!("Bearer {TOKEN}"));
}

/// What an anonymous client (kubelet's probe, grpcurl) gets from the API over TCP: health and
/// reflection, and nothing of the controller's own API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_only_health_and_reflection_answer() {
    // The controller alone: the token guards its API whatever else runs.
    let c = Controller::open(
        kube_site("west", &van_controller::site::random_hex(16)),
        Arc::new(MemStore::default()),
    )
    .await
    .unwrap();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let channel = van_proto::grpc::lazy_channel(&api.local_addr().unwrap().to_string()).unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(van_controller::serve(
        c,
        van_controller::Sockets {
            api: van_controller::ApiBind::Tcp(api),
            claims: None,
            api_token: Some(ApiToken::new(TOKEN).unwrap()),
        },
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));

    let serving = grpc::health(channel.clone(), "").await.unwrap();
    assert_eq!(serving, ServingStatus::Serving);
    // Both reflection versions list what is served, and only that.
    grpc::assert_lists_exactly(channel.clone(), &["van.controller.v1.SiteController"]).await;

    let mut anonymous = SiteControllerClient::new(channel.clone());
    let e = anonymous.get_site(pb::GetSiteRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("missing API token"), "{e:?}");
    // Streams are guarded too.
    let e = anonymous
        .watch_router_config(pb::WatchRouterConfigRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    let mut wrong = SiteControllerClient::with_interceptor(
        channel,
        BearerToken::new(Some("0123456789abcdef-guessed")).unwrap(),
    );
    let e = wrong.get_site(pb::GetSiteRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("wrong API token"), "{e:?}");

    stop.send(true).unwrap();
    served.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_sync_keeps_the_router_in_step_through_the_token() {
    let site = PodSite::start(false, None).await;
    let mut api = site.api();
    let status = eventually("config-sync's report through the token", async || {
        let s = api
            .get_site(pb::GetSiteRequest {})
            .await
            .unwrap()
            .into_inner();
        s.router_ready.then_some(s)
    })
    .await;
    assert_eq!(status.site_name, "west");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_material_reaches_the_router_through_the_secret_only() {
    let secrets = Arc::new(ManualSecrets::default());
    let site = PodSite::start(true, Some(secrets.clone())).await;

    // What the API streams names the profiles and the Secret, and carries no PEM at all.
    let mut api = site.api();
    let desired = api
        .watch_router_config(pb::WatchRouterConfigRequest {})
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(desired.tls_secret, TLS_SECRET);
    let cfg = desired.config.unwrap();
    assert!(!cfg.tls_profiles.is_empty());
    for p in &cfg.tls_profiles {
        assert!(
            p.ca_pem.is_empty() && p.cert_pem.is_empty() && p.key_pem.is_empty(),
            "{} sent with its material",
            p.name
        );
    }

    // No Secret yet: the link listeners wait (and say why); services would not.
    let waiting = eventually("config-sync to report what waits", async || {
        let s = api
            .get_site(pb::GetSiteRequest {})
            .await
            .unwrap()
            .into_inner();
        s.router_ready.then_some(())?;
        let errs = site.c.apply_errors();
        errs.get("site-server").cloned()
    })
    .await;
    assert!(waiting.contains(TLS_SECRET), "{waiting}");
    assert!(site.router_config().await.link_listeners.is_empty());

    // The platform writes the Secret (the controller's own data for it): the router gets
    // its server profile and link listeners.
    let data = van_controller::desired::tls_secret_data(&site.c.desired().borrow());
    secrets.set(
        TLS_SECRET,
        Some(data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()),
    );
    let listeners = eventually("link listeners from the Secret's material", async || {
        let cfg = site.router_config().await;
        (cfg.link_listeners.len() == 2).then_some(cfg)
    })
    .await;
    assert!(
        listeners
            .tls_profiles
            .iter()
            .any(|p| p.name == "site-server" && !p.cert_pem.is_empty()),
        "{:?}",
        listeners.tls_profiles
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routers_of_one_site_link_to_each_other() {
    // This router pod is 127.0.0.2; its peer, a second router of the same site, 127.0.0.3.
    let own: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let other: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    let (peers_tx, addrs) = tokio::sync::watch::channel(std::collections::BTreeSet::new());
    // The routers listen for each other on this port at their own addresses.
    let port = ReservedPort::on([0, 0, 0, 0]);
    let site = PodSite::start_with(
        false,
        None,
        Some(van_config_sync::peers::Peers {
            own,
            port: port.port(),
            addrs,
        }),
    )
    .await;

    // The peer: the same site's server profile, listening on its own address.
    let dir = temp_dir("peer");
    let sock = dir.path().join("router.sock");
    let peer = van_testkit::router::start_yaml(&format!(
        "router: {{id: west-peer, site: {}, mode: interior}}\nadmin: {{listen: 'unix:{}'}}\n",
        site.c.cfg.id,
        sock.display()
    ))
    .await;
    let server = site
        .c
        .desired()
        .borrow()
        .tls_profiles
        .iter()
        .find(|p| p.name == "site-server")
        .cloned()
        .unwrap();
    use van_proto::admin::{self as rpb, config_op::Op};
    let mut peer_admin = RouterAdminClient::new(
        van_proto::grpc::lazy_channel(&format!("unix:{}", sock.display())).unwrap(),
    );
    peer_admin
        .apply_config(rpb::ConfigChange {
            ops: vec![
                rpb::ConfigOp {
                    op: Some(Op::PutTlsProfile(server)),
                },
                rpb::ConfigOp {
                    op: Some(Op::PutLinkListener(rpb::LinkListenerConfig {
                        name: "inter-router".into(),
                        role: "inter-router".into(),
                        host: other.to_string(),
                        port: u32::from(port.port()),
                        cost: 1,
                        tls_profile: "site-server".into(),
                    })),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap();

    // The peer appears: this router links to it with the site's peer certificate.
    peers_tx.send_replace([own, other].into_iter().collect());
    let ch =
        van_proto::grpc::lazy_channel(&format!("unix:{}", site.router_sock.display())).unwrap();
    let mut admin = RouterAdminClient::new(ch);
    let link = eventually("the link to the peer router", async || {
        let links = admin
            .list_links(rpb::ListRequest::default())
            .await
            .ok()?
            .into_inner();
        links
            .links
            .into_iter()
            .find(|l| l.name == "peer-127-0-0-3" && l.state == "up")
    })
    .await;
    assert_eq!(link.peer_router, "west-peer");
    // Plumbing, not a link of the site.
    assert!(
        site.c
            .link_statuses()
            .iter()
            .all(|l| !l.name.starts_with("peer-")),
        "{:?}",
        site.c.link_statuses()
    );

    peer.shutdown().await;
    site.stop().await;
}
