//! The console against a fake router: a real tonic server on port 0 that serves `Records`
//! and `RouterAdmin::subscribe` from channels the test feeds, and `van_console::run` on
//! port 0, read through its REST API over real sockets (plain HTTP and HTTPS).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use van_proto::admin::router_admin_server::{RouterAdmin, RouterAdminServer};
use van_proto::admin::*;
use van_proto::records::records_server::{Records, RecordsServer};
use van_proto::records::{ConnectionRecord, RecordBatch, RouterState, WatchRecordsRequest};
use van_testkit::http::exchange;

type Sender<T> = mpsc::Sender<Result<T, Status>>;

/// Hands the test a sender for each call, so it decides what every stream says and when it
/// ends.
#[derive(Clone)]
struct FakeRouter {
    watches: mpsc::UnboundedSender<Sender<RecordBatch>>,
    subscribes: mpsc::UnboundedSender<Sender<TopicSnapshot>>,
}

#[tonic::async_trait]
impl Records for FakeRouter {
    type WatchStream = ReceiverStream<Result<RecordBatch, Status>>;

    async fn watch(
        &self,
        _: Request<WatchRecordsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let _ = self.watches.send(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in this fake"))
}

#[tonic::async_trait]
impl RouterAdmin for FakeRouter {
    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;
    type SubscribeStream = ReceiverStream<Result<TopicSnapshot, Status>>;

    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<RouterStatus>, Status> {
        unimplemented()
    }
    async fn list_nodes(&self, _: Request<ListRequest>) -> Result<Response<NodeList>, Status> {
        unimplemented()
    }
    async fn list_links(&self, _: Request<ListRequest>) -> Result<Response<LinkList>, Status> {
        unimplemented()
    }
    async fn list_link_listeners(
        &self,
        _: Request<ListRequest>,
    ) -> Result<Response<LinkListenerList>, Status> {
        unimplemented()
    }
    async fn list_listeners(
        &self,
        _: Request<ListRequest>,
    ) -> Result<Response<ListenerList>, Status> {
        unimplemented()
    }
    async fn list_connectors(
        &self,
        _: Request<ListRequest>,
    ) -> Result<Response<ConnectorList>, Status> {
        unimplemented()
    }
    async fn list_addresses(
        &self,
        _: Request<ListRequest>,
    ) -> Result<Response<AddressList>, Status> {
        unimplemented()
    }
    async fn list_flows(&self, _: Request<ListRequest>) -> Result<Response<FlowList>, Status> {
        unimplemented()
    }
    async fn list_requests(
        &self,
        _: Request<ListRequest>,
    ) -> Result<Response<RequestStatsList>, Status> {
        unimplemented()
    }
    async fn get_config(
        &self,
        _: Request<GetConfigRequest>,
    ) -> Result<Response<RouterConfig>, Status> {
        unimplemented()
    }
    async fn apply_config(
        &self,
        _: Request<ConfigChange>,
    ) -> Result<Response<ConfigChangeResult>, Status> {
        unimplemented()
    }
    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        unimplemented()
    }
    async fn publish(
        &self,
        _: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        unimplemented()
    }
    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if req.get_ref().topic != "van.site.v1" {
            return Err(Status::invalid_argument("unexpected topic"));
        }
        let (tx, rx) = mpsc::channel(8);
        let _ = self.subscribes.send(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Fake {
    addr: SocketAddr,
    watches: mpsc::UnboundedReceiver<Sender<RecordBatch>>,
    subscribes: mpsc::UnboundedReceiver<Sender<TopicSnapshot>>,
    _stop: oneshot::Sender<()>,
}

async fn fake_router() -> Fake {
    fake_router_with(None).await
}

/// With `token`: only `Records`, for callers sending that bearer token, as config-sync serves
/// it on Kubernetes.
async fn fake_router_with(token: Option<&'static str>) -> Fake {
    let (wtx, watches) = mpsc::unbounded_channel();
    let (stx, subscribes) = mpsc::unbounded_channel();
    let fake = FakeRouter {
        watches: wtx,
        subscribes: stx,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = match token {
        None => tonic::service::Routes::new(RecordsServer::new(fake.clone()))
            .add_service(RouterAdminServer::new(fake)),
        Some(token) => tonic::service::Routes::new(RecordsServer::with_interceptor(
            fake,
            move |req: Request<()>| {
                let want = format!("Bearer {token}");
                match req.metadata().get("authorization") {
                    Some(v) if v.as_bytes() == want.as_bytes() => Ok(req),
                    _ => Err(Status::unauthenticated("token")),
                }
            },
        )),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(van_proto::grpc::serve(
        routes,
        van_proto::grpc::Bind::Tcp(listener),
        async move {
            let _ = stopped.await;
        },
    ));
    Fake {
        addr,
        watches,
        subscribes,
        _stop: stop,
    }
}

/// Runs the console against `router`; it stops when the returned sender is dropped.
async fn console(
    router: SocketAddr,
    auth: van_console::AuthKind,
    extra: impl FnOnce(&mut van_console::Options),
) -> (SocketAddr, oneshot::Sender<()>) {
    let mut options = van_console::Options {
        auth,
        ..van_console::Options::unsecured(&router.to_string())
    };
    extra(&mut options);
    let config = van_console::Config::from_options(options).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(van_console::run(config, listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (status, _, body) = exchange(tcp, "GET", path, "", "").await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Polls until `check` passes, failing after ten seconds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 10 s"))
        .unwrap_or_else(|| panic!("{what}: channel closed"))
}

fn router_state(router: &str, site: &str) -> RecordBatch {
    RecordBatch {
        router_id: router.into(),
        instance: 1,
        state: Some(RouterState {
            status: Some(RouterStatus {
                router_id: router.into(),
                site_id: site.into(),
                mode: "interior".into(),
                ..Default::default()
            }),
            links: vec![Link {
                name: "l".into(),
                direction: "outgoing".into(),
                state: "up".into(),
                peer_router: if router == "west-r" {
                    "east-r"
                } else {
                    "west-r"
                }
                .into(),
                role: "inter-router".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        full: true,
        ..Default::default()
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn site_ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_api_reflects_what_the_router_streams() {
    let mut fake = fake_router().await;
    let (addr, _stop) = console(fake.addr, van_console::AuthKind::Unsecured, |_| {}).await;
    let records = next(&mut fake.watches, "records watch").await;
    let sites = next(&mut fake.subscribes, "site subscription").await;

    sites
        .send(Ok(TopicSnapshot {
            topic: "van.site.v1".into(),
            values: vec![TopicValue {
                origin: "west-r".into(),
                payload: br#"{"id":"west","name":"West","mode":"interior","version":"2.0","router-id":"west-r","services":[{"address":"backend","protocol":"tcp","ports":[8080],"created":1,"targets":0}],"links":[]}"#.to_vec(),
            }],
        }))
        .await
        .unwrap();
    records
        .send(Ok(router_state("west-r", "west")))
        .await
        .unwrap();
    records
        .send(Ok(router_state("east-r", "east")))
        .await
        .unwrap();
    let t = now_us();
    let ingress = ConnectionRecord {
        flow_id: 0xabc,
        role: "ingress".into(),
        routing_key: "backend".into(),
        client_addr: "10.0.0.1:5555".into(),
        dest_router: "east-r".into(),
        start_us: t,
        bytes_out: 42,
        ..Default::default()
    };
    let egress = ConnectionRecord {
        role: "egress".into(),
        server_addr: "10.1.0.9:8080".into(),
        path: vec!["west-r".into(), "east-r".into()],
        dest_router: String::new(),
        ..ingress.clone()
    };
    records
        .send(Ok(RecordBatch {
            router_id: "west-r".into(),
            instance: 1,
            time_us: t,
            open: vec![ingress],
            ..Default::default()
        }))
        .await
        .unwrap();
    records
        .send(Ok(RecordBatch {
            router_id: "east-r".into(),
            instance: 1,
            time_us: t,
            open: vec![egress],
            ..Default::default()
        }))
        .await
        .unwrap();

    eventually("both sites, named", || async {
        let (status, v) = get(addr, "/api/v1/sites?sortBy=id.asc").await;
        status == 200 && site_ids(&v) == ["east", "west"] && v["items"][1]["name"] == "West"
    })
    .await;
    eventually("the joined connection", || async {
        let (_, v) = get(addr, "/api/v1/connections").await;
        let c = &v["items"][0];
        c["id"] == "0000000000000abc"
            && c["serverAddr"] == "10.1.0.9:8080"
            && c["sourceSiteId"] == "west"
            && c["destSiteId"] == "east"
            && c["state"] == "active"
            && c["bytesOut"] == 42
    })
    .await;
    let (status, topo) = get(addr, "/api/v1/topology").await;
    assert_eq!(status, 200);
    assert_eq!(topo["links"].as_array().unwrap().len(), 2, "{topo}");

    // The same views over gRPC, with the same filters and errors.
    let ch = van_proto::grpc::channel(&addr.to_string(), None)
        .await
        .unwrap();
    let mut views = van_proto::console::console_client::ConsoleClient::new(ch);
    let query = |sort: &str, filters: &[(&str, &str)]| van_proto::console::ListQuery {
        sort_by: sort.into(),
        filters: filters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let sites = views
        .list_sites(query("id.asc", &[]))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = sites.items.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["east", "west"]);
    assert_eq!((sites.total, sites.items[1].name.as_str()), (2, "West"));
    let conns = views
        .list_connections(query("", &[("destSiteId", "east")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(conns.total, 1);
    let c = &conns.items[0];
    assert_eq!(
        (
            c.id.as_str(),
            c.server_addr.as_str(),
            c.bytes_out,
            c.path.len()
        ),
        ("0000000000000abc", "10.1.0.9:8080", 42, 2)
    );
    let none = views
        .list_connections(query("", &[("destSiteId", "nowhere")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((none.total, none.items.len()), (0, 0));
    let e = views
        .list_services(query("nosuchfield.asc", &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("sortBy"), "{e}");

    // A site that leaves is gone from the topology at once.
    records
        .send(Ok(RecordBatch {
            router_id: "east-r".into(),
            ended_stream: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    eventually("east to leave", || async {
        let (_, v) = get(addr, "/api/v1/topology").await;
        site_ids(&serde_json::json!({"items": v["sites"]})) == ["west"]
            && v["links"].as_array().is_some_and(Vec::is_empty)
    })
    .await;

    // The router goes away: the console calls again and takes the state it is sent.
    drop(records);
    let records = next(&mut fake.watches, "records watch after the stream ended").await;
    let (_, v) = get(addr, "/api/v1/routers").await;
    assert_eq!(
        v["total"], 0,
        "nothing is current once the stream is lost: {v}"
    );
    records
        .send(Ok(router_state("east-r", "east")))
        .await
        .unwrap();
    eventually("east to come back", || async {
        let (_, v) = get(addr, "/api/v1/routers").await;
        v["total"] == 1 && v["items"][0]["id"] == "east-r"
    })
    .await;
    let (status, metrics) = {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (s, _, body) = exchange(tcp, "GET", "/metrics", "", "").await;
        (s, body)
    };
    assert_eq!(status, 200);
    assert!(
        metrics.contains("skupper_connections_opened_total{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn https_with_login_once_the_certificate_appears() {
    let fake = fake_router().await;
    let dir = std::env::temp_dir().join(format!("van-console-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let users = format!(
        "# test users\n{}\n",
        van_console::users_file_line("admin", "pw").unwrap()
    );
    std::fs::write(dir.join("users"), users).unwrap();
    let (addr, _stop) = console(fake.addr, van_console::AuthKind::Internal, |o| {
        o.users_file = Some(dir.join("users"));
        o.tls_cert = Some(dir.join("cert.pem"));
        o.tls_key = Some(dir.join("key.pem"));
        // The files come later, as a Secret projected after the pod started.
        o.tls_wait = true;
    })
    .await;
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let https = |method: &'static str, path: &'static str, headers: String, body: &'static str| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            exchange(tls, method, path, &headers, body).await
        }
    };
    let (status, _, _) = https("GET", "/api/v1/sites", String::new(), "").await;
    assert_eq!(status, 401);
    let (status, head, body) = https(
        "POST",
        "/api/v1/login",
        String::new(),
        r#"{"username":"admin","password":"pw"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let set_cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no cookie in {head}"));
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let (status, _, body) = https("GET", "/api/v1/user", format!("Cookie: {cookie}\r\n"), "").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"username": "admin", "authMode": "internal"})
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn records_alone_behind_a_token_are_enough() {
    let mut fake = fake_router_with(Some("t0ken")).await;
    let dir = std::env::temp_dir().join(format!("van-console-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "t0ken\n").unwrap();
    let (addr, _stop) = console(fake.addr, van_console::AuthKind::Unsecured, |o| {
        o.router_token_file = Some(dir.join("token"));
    })
    .await;
    let records = next(&mut fake.watches, "records watch with the token").await;
    let mut state = router_state("west-r", "west");
    if let Some(s) = state.state.as_mut() {
        s.published.push(van_proto::records::Published {
            topic: "van.site.v1".into(),
            payload: br#"{"id":"west","name":"West Site","mode":"interior","version":"2.0","router-id":"west-r","services":[],"links":[]}"#.to_vec(),
        });
    }
    records.send(Ok(state)).await.unwrap();
    eventually("the published site name", || async {
        let (_, v) = get(addr, "/api/v1/sites").await;
        v["items"][0]["name"] == "West Site"
    })
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn grpc_views_need_the_same_login() {
    let fake = fake_router().await;
    let dir = std::env::temp_dir().join(format!("van-console-grpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = van_console::users_file_line("admin", "pw").unwrap();
    std::fs::write(dir.join("users"), format!("{users}\n")).unwrap();
    let (addr, _stop) = console(fake.addr, van_console::AuthKind::Internal, |o| {
        o.users_file = Some(dir.join("users"));
    })
    .await;
    let ch = van_proto::grpc::channel(&addr.to_string(), None)
        .await
        .unwrap();
    let mut views = van_proto::console::console_client::ConsoleClient::new(ch);
    let e = views
        .list_sites(van_proto::console::ListQuery::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (status, head, _) = exchange(
        tcp,
        "POST",
        "/api/v1/login",
        "",
        r#"{"username":"admin","password":"pw"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let mut req = tonic::Request::new(van_proto::console::ListQuery::default());
    req.metadata_mut().insert("cookie", cookie.parse().unwrap());
    let sites = views.list_sites(req).await.unwrap().into_inner();
    assert_eq!(sites.count, sites.items.len() as u64);
    std::fs::remove_dir_all(&dir).unwrap();
}
