//! The controller and config-sync as they run in a Kubernetes site's two pods: the API over
//! TCP demands the bearer token (the gRPC health service stays open for kubelet's probes), and
//! the router's TLS material reaches config-sync through a Secret, never over the API.
//! Real gRPC over TCP, a real router; the Secret is handed over by hand (`ManualSecrets`),
//! as the Kubernetes API would through config-sync's watch.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use support::MemStore;
use tonic::Code;
use tonic::transport::Channel;
use van_config_sync::BearerToken;
use van_config_sync::tls::{ManualSecrets, SecretSource};
use van_controller::Controller;
use van_controller::api::ApiToken;
use van_proto::admin::router_admin_client::RouterAdminClient;
use van_proto::controller::{self as pb, site_controller_client::SiteControllerClient};

const TOKEN: &str = "0123456789abcdef-test-token";
const TLS_SECRET: &str = "skupper-router-tls";

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A router, its controller serving the API on TCP with the token, and config-sync.
struct PodSite {
    c: Arc<Controller>,
    channel: Channel,
    router: Option<van_router::Running>,
    router_sock: PathBuf,
    dir: PathBuf,
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
        let dir =
            std::env::temp_dir().join(format!("van-pod-{}", van_controller::site::random_hex(4)));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = van_controller::site::SiteConfig {
            ingress_host: "127.0.0.1".into(),
            ingress_bind: "127.0.0.1".into(),
            listener_host: "127.0.0.1".into(),
            inter_router_port: support::free_port(),
            edge_port: support::free_port(),
            claims_port: support::free_port(),
            ..support::kube_site("west", &van_controller::site::random_hex(16))
        };
        let router_sock = dir.join("router.sock");
        let rcfg = van_router::Config::from_yaml(&format!(
            "router: {{id: {}, site: {}, mode: interior}}\nadmin: {{listen: 'unix:{}'}}\n",
            cfg.router_id(),
            cfg.id,
            router_sock.display()
        ))
        .unwrap();
        let listeners = van_router::Listeners::bind(&rcfg).await.unwrap();
        let router = van_router::start(rcfg, listeners).await.unwrap();

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
            dir,
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
        let _ = std::fs::remove_dir_all(&self.dir);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_tcp_needs_the_token_and_config_sync_uses_it() {
    let site = PodSite::start(false, None).await;

    // kubelet's gRPC probe carries no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(site.channel.clone());
    let serving = eventually("the health service", async || {
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .ok()
    })
    .await;
    assert_eq!(
        serving.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut anonymous = SiteControllerClient::new(site.channel.clone());
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
        site.channel.clone(),
        BearerToken::new(Some("0123456789abcdef-guessed")).unwrap(),
    );
    let e = wrong.get_site(pb::GetSiteRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("wrong API token"), "{e:?}");

    // config-sync, holding the token, keeps the router in step.
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
    let port = support::free_port();
    let site = PodSite::start_with(
        false,
        None,
        Some(van_config_sync::peers::Peers { own, port, addrs }),
    )
    .await;

    // The peer: the same site's server profile, listening on its own address.
    let dir =
        std::env::temp_dir().join(format!("van-peer-{}", van_controller::site::random_hex(4)));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("router.sock");
    let rcfg = van_router::Config::from_yaml(&format!(
        "router: {{id: west-peer, site: {}, mode: interior}}\nadmin: {{listen: 'unix:{}'}}\n",
        site.c.cfg.id,
        sock.display()
    ))
    .unwrap();
    let listeners = van_router::Listeners::bind(&rcfg).await.unwrap();
    let peer = van_router::start(rcfg, listeners).await.unwrap();
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
                        port: u32::from(port),
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
    let _ = std::fs::remove_dir_all(&dir);
}
