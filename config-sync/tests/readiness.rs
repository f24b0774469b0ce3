//! config-sync's readiness, as kubelet's `grpc:` probe sees it: the gRPC health service is
//! NOT_SERVING until the router holds the controller's desired configuration, and again while
//! the router refuses part of it or is gone. A real router on a Unix socket, a fake
//! controller (real gRPC over TCP) that sends the desired configuration when the test says.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use van_proto::admin as rpb;
use van_proto::controller::{self as cpb, site_controller_server::SiteController};
use van_testkit::grpc::{self, ServingStatus};
use van_testkit::{ReservedPort, eventually_ok, temp_dir};

type Desired = watch::Sender<Option<cpb::DesiredRouterConfig>>;

/// A controller that only serves config-sync: the desired configuration from a channel,
/// and the last observed state into one. Its streams end when the channel's sender is
/// dropped, so that it can go away for good.
#[derive(Clone)]
struct FakeController {
    desired: watch::Receiver<Option<cpb::DesiredRouterConfig>>,
    observed: watch::Sender<Option<cpb::ObservedState>>,
}

/// A server stream of the fake.
type Feed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not used by config-sync"))
}

#[tonic::async_trait]
impl SiteController for FakeController {
    type WatchRouterConfigStream = Feed<cpb::DesiredRouterConfig>;
    type WatchPublicationStream = Feed<rpb::PublishRequest>;

    async fn watch_router_config(
        &self,
        _: Request<cpb::WatchRouterConfigRequest>,
    ) -> Result<Response<Self::WatchRouterConfigStream>, Status> {
        let s = tokio_stream::wrappers::WatchStream::new(self.desired.clone())
            .filter_map(|d| d.map(Ok));
        Ok(Response::new(Box::pin(s)))
    }
    async fn watch_publication(
        &self,
        _: Request<cpb::WatchPublicationRequest>,
    ) -> Result<Response<Self::WatchPublicationStream>, Status> {
        // Nothing to publish; open as long as the desired configuration's channel.
        let s = tokio_stream::wrappers::WatchStream::new(self.desired.clone()).filter_map(|_| None);
        Ok(Response::new(Box::pin(s)))
    }
    async fn report_observed(
        &self,
        r: Request<cpb::ObservedState>,
    ) -> Result<Response<cpb::Empty>, Status> {
        self.observed.send_replace(Some(r.into_inner()));
        Ok(Response::new(cpb::Empty {}))
    }
    async fn report_network(
        &self,
        _: Request<rpb::TopicSnapshot>,
    ) -> Result<Response<cpb::Empty>, Status> {
        Ok(Response::new(cpb::Empty {}))
    }
    async fn get_site(
        &self,
        _: Request<cpb::GetSiteRequest>,
    ) -> Result<Response<cpb::SiteStatus>, Status> {
        unused()
    }
    async fn create_token(
        &self,
        _: Request<cpb::CreateTokenRequest>,
    ) -> Result<Response<cpb::Token>, Status> {
        unused()
    }
    async fn create_link(
        &self,
        _: Request<cpb::CreateLinkRequest>,
    ) -> Result<Response<cpb::LinkStatus>, Status> {
        unused()
    }
    async fn delete_link(
        &self,
        _: Request<cpb::DeleteLinkRequest>,
    ) -> Result<Response<cpb::Empty>, Status> {
        unused()
    }
    async fn list_links(
        &self,
        _: Request<cpb::ListLinksRequest>,
    ) -> Result<Response<cpb::LinkList>, Status> {
        unused()
    }
    async fn create_service(
        &self,
        _: Request<cpb::CreateServiceRequest>,
    ) -> Result<Response<cpb::Service>, Status> {
        unused()
    }
    async fn delete_service(
        &self,
        _: Request<cpb::DeleteServiceRequest>,
    ) -> Result<Response<cpb::Empty>, Status> {
        unused()
    }
    async fn bind(&self, _: Request<cpb::BindRequest>) -> Result<Response<cpb::Service>, Status> {
        unused()
    }
    async fn unbind(
        &self,
        _: Request<cpb::UnbindRequest>,
    ) -> Result<Response<cpb::Service>, Status> {
        unused()
    }
    async fn expose(
        &self,
        _: Request<cpb::ExposeRequest>,
    ) -> Result<Response<cpb::Service>, Status> {
        unused()
    }
    async fn list_services(
        &self,
        _: Request<cpb::ListServicesRequest>,
    ) -> Result<Response<cpb::ServiceList>, Status> {
        unused()
    }
    async fn get_network(
        &self,
        _: Request<cpb::GetNetworkRequest>,
    ) -> Result<Response<cpb::Network>, Status> {
        unused()
    }
}

/// A router with its admin API on `sock` and nothing else configured.
async fn router(sock: &std::path::Path) -> van_router::Running {
    van_testkit::router::start_yaml(&format!(
        "router: {{id: r1, site: s1, mode: interior}}\nadmin: {{listen: 'unix:{}'}}\n",
        sock.display()
    ))
    .await
}

/// A desired configuration of one TCP listener on `port`.
fn listener_on(port: u16) -> cpb::DesiredRouterConfig {
    cpb::DesiredRouterConfig {
        config: Some(rpb::RouterConfig {
            tcp_listeners: vec![rpb::TcpListenerConfig {
                name: "backend".into(),
                host: "127.0.0.1".into(),
                port: u32::from(port),
                routing_key: "backend:8080".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        tls_secret: String::new(),
    }
}

async fn wait_status(h: &Channel, want: ServingStatus, why: &str) {
    eventually_ok(
        &format!("health {want:?}: {why}"),
        async || match grpc::health(h.clone(), "").await {
            Ok(s) if s == want => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_while_the_router_holds_the_desired_configuration() {
    let dir = temp_dir("sync-ready");
    let sock = dir.path().join("router.sock");
    let mut running = Some(router(&sock).await);

    let (desired, desired_rx): (Desired, _) = watch::channel(None);
    let (observed_tx, mut observed) = watch::channel(None);
    let fake = FakeController {
        desired: desired_rx,
        observed: observed_tx,
    };
    // Held to the end: once the controller is gone, the test listens at its address.
    let controller_port = ReservedPort::localhost();
    let api = tokio::net::TcpListener::bind(controller_port.addr())
        .await
        .unwrap();
    let controller = controller_port.addr().to_string();
    let (stop_controller, controller_stopped) = tokio::sync::oneshot::channel::<()>();
    let controller_served = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(cpb::site_controller_server::SiteControllerServer::new(fake))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(api),
                async {
                    let _ = controller_stopped.await;
                },
            ),
    );

    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health_addr = health.local_addr().unwrap();
    let (ready, ready_rx) = watch::channel(false);
    tokio::spawn(van_config_sync::health::serve(
        health,
        ready_rx,
        None,
        std::future::pending(),
    ));
    let (stop_sync, sync_stopped) = tokio::sync::oneshot::channel::<()>();
    let sync = tokio::spawn(van_config_sync::run_reporting(
        van_config_sync::Options {
            controller,
            router: format!("unix:{}", sock.display()),
            controller_token: None,
            secrets: None,
            peers: None,
        },
        ready,
        async {
            let _ = sync_stopped.await;
        },
    ));
    let h = van_proto::grpc::lazy_channel(&health_addr.to_string()).unwrap();

    // Connected to the router (it reports what it sees), but nothing desired yet.
    tokio::time::timeout(Duration::from_secs(10), observed.wait_for(Option::is_some))
        .await
        .expect("config-sync reports to the controller")
        .unwrap();
    assert_eq!(
        grpc::health(h.clone(), "").await.unwrap(),
        ServingStatus::NotServing
    );

    // The desired configuration arrives and is applied.
    let port = ReservedPort::localhost();
    desired.send_replace(Some(listener_on(port.port())));
    wait_status(&h, ServingStatus::Serving, "desired configuration applied").await;
    let mut admin = van_proto::admin::router_admin_client::RouterAdminClient::new(
        van_proto::grpc::lazy_channel(&format!("unix:{}", sock.display())).unwrap(),
    );
    let have = admin
        .get_config(rpb::GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(have.tcp_listeners.len(), 1, "{have:?}");
    assert_eq!(have.tcp_listeners[0].port, u32::from(port.port()));

    // A listener the router cannot bind is refused at every retry: not ready.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    desired.send_replace(Some(listener_on(taken)));
    wait_status(&h, ServingStatus::NotServing, "a refused listener").await;
    tokio::time::timeout(
        Duration::from_secs(10),
        observed.wait_for(|o| {
            o.as_ref()
                .is_some_and(|o| !o.in_sync && o.apply_errors.contains_key("backend"))
        }),
    )
    .await
    .expect("the refusal reported to the controller")
    .unwrap();
    desired.send_replace(Some(listener_on(port.port())));
    wait_status(&h, ServingStatus::Serving, "the listener fixed").await;

    // The controller goes away for good: its streams end, its connections and listener close.
    let _ = stop_controller.send(());
    drop(desired);
    tokio::time::timeout(Duration::from_secs(10), controller_served)
        .await
        .expect("the controller's connections close")
        .unwrap()
        .unwrap();
    // config-sync notices, as it dials the controller again; the port was held all along, so
    // what answers there is the test. The router keeps its configuration, and readiness stays.
    let redial = tokio::net::TcpListener::bind(controller_port.addr())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), redial.accept())
        .await
        .expect("config-sync dials the controller again")
        .unwrap();
    drop(redial);
    assert_eq!(
        grpc::health(h.clone(), "").await.unwrap(),
        ServingStatus::Serving
    );
    let have = admin
        .get_config(rpb::GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        have.tcp_listeners[0].port,
        u32::from(port.port()),
        "{have:?}"
    );

    // The router goes away: not ready; a new router is brought in step: ready again.
    running.take().unwrap().shutdown().await;
    wait_status(&h, ServingStatus::NotServing, "the router gone").await;
    let _ = std::fs::remove_file(&sock);
    let _again = router(&sock).await;
    wait_status(&h, ServingStatus::Serving, "a new router in step").await;

    // config-sync stops: not ready.
    let _ = stop_sync.send(());
    sync.await.unwrap().unwrap();
    wait_status(&h, ServingStatus::NotServing, "config-sync stopped").await;
}
