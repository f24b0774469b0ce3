//! The controller's API over TCP (as on Kubernetes) demands the bearer token, while the gRPC
//! health service stays open for kubelet's probes; config-sync holding the token keeps a real
//! router in step through it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::MemStore;
use tonic::Code;
use van_controller::api::ApiToken;
use van_proto::controller::{self as pb, site_controller_client::SiteControllerClient};

const TOKEN: &str = "0123456789abcdef-test-token";

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
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
    let dir =
        std::env::temp_dir().join(format!("van-auth-{}", van_controller::site::random_hex(4)));
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

    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = api.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(van_controller::run(
        van_controller::Options {
            site: cfg,
            store: Arc::new(MemStore::default()),
        },
        van_controller::Sockets {
            api: van_controller::ApiBind::Tcp(api),
            claims: None,
            api_token: Some(ApiToken::new(TOKEN).unwrap()),
        },
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    let target = addr.to_string();
    let channel = van_config_sync::lazy_channel(&target).unwrap();

    // kubelet's gRPC probe carries no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
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

    let mut anonymous = SiteControllerClient::new(channel.clone());
    let e = anonymous.get_site(pb::GetSiteRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("missing API token"), "{e:?}");
    // Streams are guarded too: they would leak the site's keys.
    let e = anonymous
        .watch_router_config(pb::WatchRouterConfigRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    let mut wrong = SiteControllerClient::with_interceptor(
        channel.clone(),
        van_config_sync::BearerToken::new(Some("0123456789abcdef-guessed")).unwrap(),
    );
    let e = wrong.get_site(pb::GetSiteRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("wrong API token"), "{e:?}");

    // config-sync with the token (as the chart mounts it) keeps the router in step.
    let (cs_stop, mut cs_stopped) = tokio::sync::watch::channel(false);
    let cs = tokio::spawn(van_config_sync::run(
        van_config_sync::Options {
            controller: target.clone(),
            router: format!("unix:{}", router_sock.display()),
            controller_token: Some(format!("{TOKEN}\n")),
        },
        async move {
            let _ = cs_stopped.wait_for(|s| *s).await;
        },
    ));
    let mut authed = SiteControllerClient::with_interceptor(
        channel,
        van_config_sync::BearerToken::new(Some(TOKEN)).unwrap(),
    );
    let site = eventually("config-sync's report through the token", async || {
        let s = authed
            .get_site(pb::GetSiteRequest {})
            .await
            .unwrap()
            .into_inner();
        s.router_ready.then_some(s)
    })
    .await;
    assert_eq!(site.site_name, "west");
    assert!(!site.router_id.is_empty());

    let _ = cs_stop.send(true);
    let _ = stop.send(true);
    cs.await.unwrap().unwrap();
    controller.await.unwrap().unwrap();
    router.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
