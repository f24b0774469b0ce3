//! HTTP services: routers terminate HTTP at the listener and route each request.
//!
//! The servers and clients here are hyper's, on real sockets; the routers are in-process
//! and linked over mutual TLS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use van_router::config::Protocol;
use van_testkit::router::*;

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A test HTTP server (HTTP/1.1 and HTTP/2) that says who it is.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Requests to /slow whose handling was dropped before it finished (cancelled).
    cancelled: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Counts a handler dropped before it finished.
struct CancelGuard(Arc<AtomicUsize>, bool);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Server {
    async fn start(name: &'static str, delay: Duration) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let cancelled = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (h, t, cx) = (hits.clone(), tasks.clone(), cancelled.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let (h, cx) = (h.clone(), cx.clone());
                let svc = hyper::service::service_fn(move |req| {
                    h.fetch_add(1, Ordering::Relaxed);
                    handle(name, delay, req, cx.clone())
                });
                let conn = tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(s), svc)
                        .await;
                });
                t.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Server {
            addr,
            hits,
            cancelled,
            tasks,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Closes the listening socket and every connection.
    fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

async fn handle(
    name: &'static str,
    delay: Duration,
    req: Request<Incoming>,
    cancelled: Arc<AtomicUsize>,
) -> Result<Response<Body>, hyper::Error> {
    tokio::time::sleep(delay).await;
    let path = req.uri().path().to_string();
    let mut resp = match path.as_str() {
        // A WebSocket handshake (RFC 6455's sample key), then an echo of raw bytes.
        "/ws" if req.headers().contains_key(http::header::UPGRADE) => {
            let mut req = req;
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(http::header::CONNECTION, "Upgrade")
                .header(http::header::UPGRADE, "websocket")
                .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                .body(full(""))
                .unwrap()
        }
        // Answers after 30 s unless the request is cancelled first.
        "/slow" => {
            let mut g = CancelGuard(cancelled, false);
            tokio::time::sleep(Duration::from_secs(30)).await;
            g.1 = true;
            Response::new(full("slow"))
        }
        // Echoes the body (and its trailers) back as it arrives.
        "/echo" => Response::new(req.into_body().boxed()),
        "/trailers" => {
            let frames = vec![
                Ok(Frame::data(Bytes::from_static(b"done"))),
                Ok(Frame::trailers({
                    let mut t = http::HeaderMap::new();
                    t.insert("x-checksum", "c0ffee".parse().unwrap());
                    t
                })),
            ];
            Response::new(StreamBody::new(futures_iter(frames)).boxed())
        }
        "/cached" => {
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r.headers_mut()
                .insert(http::header::ETAG, "\"v1\"".parse().unwrap());
            r
        }
        "/no-content" => {
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        "/host" => {
            let host = req
                .headers()
                .get(http::header::HOST)
                .map(|h| h.to_str().unwrap().to_string())
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_default();
            Response::new(full(host))
        }
        _ => Response::new(full(name)),
    };
    resp.headers_mut()
        .insert("x-server", http::HeaderValue::from_static(name));
    Ok(resp)
}

fn futures_iter(
    frames: Vec<Result<Frame<Bytes>, hyper::Error>>,
) -> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, hyper::Error>> + Send + Sync {
    tokio_stream::iter(frames)
}

/// A client connection of either version.
trait Client {
    async fn send(&mut self, req: Request<Body>) -> hyper::Result<Response<Incoming>>;
}

impl Client for hyper::client::conn::http1::SendRequest<Body> {
    async fn send(&mut self, req: Request<Body>) -> hyper::Result<Response<Incoming>> {
        self.ready().await?;
        self.send_request(req).await
    }
}

impl Client for hyper::client::conn::http2::SendRequest<Body> {
    async fn send(&mut self, req: Request<Body>) -> hyper::Result<Response<Incoming>> {
        self.ready().await?;
        self.send_request(req).await
    }
}

async fn send(c: &mut impl Client, req: Request<Body>) -> hyper::Result<Response<Incoming>> {
    c.send(req).await
}

/// One HTTP/1.1 keep-alive connection.
async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Body> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

/// One HTTP/2 connection (prior knowledge, no TLS).
async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    h2_client_task(addr).await.0
}

/// An HTTP/2 connection and the task driving it (aborting the task drops the connection).
async fn h2_client_task(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Body>,
    JoinHandle<()>,
) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (tx, task)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header(http::header::HOST, "svc.example")
        .body(full(""))
        .unwrap()
}

/// West holds the listener; east and south each hold a connector to their own server.
struct Net {
    west: TestRouter,
    _east: TestRouter,
    _south: TestRouter,
}

async fn three_sites(
    key: &str,
    protocol: Protocol,
    east_target: SocketAddr,
    south_target: SocketAddr,
) -> Net {
    let pki = Pki::new("ca");
    let mut fe = base_config("east", pki.profile("east"));
    link_listener(&mut fe);
    let east = start(fe).await;
    let mut fs = base_config("south", pki.profile("south"));
    link_listener(&mut fs);
    let south = start(fs).await;
    let mut fw = base_config("west", pki.profile("west"));
    link_to(&mut fw, "to-east", east.link_addr(), 1);
    link_to(&mut fw, "to-south", south.link_addr(), 1);
    let west = start(fw).await;
    west.apply(vec![service_listener_op("web", key, protocol)])
        .await;
    east.apply(vec![service_connector_op(
        "web",
        key,
        east_target,
        protocol,
    )])
    .await;
    south
        .apply(vec![service_connector_op(
            "web",
            key,
            south_target,
            protocol,
        )])
        .await;
    // Both destinations known before the first request.
    let mut rx = west.router().table_rx();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|t| t.addresses.get(key).is_some_and(|d| d.len() == 2)),
    )
    .await
    .expect("both sites reachable")
    .unwrap();
    west.wait_reachable(key).await;
    Net {
        west,
        _east: east,
        _south: south,
    }
}

async fn body_string(r: Response<Incoming>) -> String {
    String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_one_keepalive_connection_are_spread_over_two_sites() {
    let east = Server::start("east", Duration::ZERO).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("web", Protocol::Http, east.addr, south.addr).await;
    let mut c = h1_client(net.west.listener_addr("web")).await;
    let mut by: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        let r = send(&mut c, get("/")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        *by.entry(body_string(r).await).or_default() += 1;
    }
    assert_eq!(by.values().sum::<usize>(), 200);
    for site in ["east", "south"] {
        let n = by.get(site).copied().unwrap_or(0);
        assert!(n >= 20, "{site} served {n} of 200: {by:?}");
    }
    // Each request counted once, by the site that served it.
    let stats = van_router::admin::requests(net.west.router());
    let served: HashMap<&str, u64> = stats
        .requests
        .iter()
        .map(|r| (r.server_site.as_str(), r.requests))
        .collect();
    assert_eq!(served.values().sum::<u64>(), 200, "{stats:?}");
    for r in &stats.requests {
        assert_eq!((r.method.as_str(), r.code.as_str()), ("GET", "2xx"));
        assert_eq!(r.client_site, net.west.router().site());
        assert!(r.latency_p99_ms > 0.0, "{r:?}");
    }
    let text = net.west.router().render_metrics();
    assert!(
        text.contains("van_requests_total{") && text.contains("dest_site=\"east\""),
        "{text}"
    );
    // Every request's flow ended cleanly at both ends (not reset after its response).
    for r in [&net.west, &net._east, &net._south] {
        let text = r.router().render_metrics();
        assert!(!text.contains("outcome=\"reset\""), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_gets_few_requests() {
    let east = Server::start("east", Duration::from_millis(30)).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("web", Protocol::Http, east.addr, south.addr).await;
    let mut c = h1_client(net.west.listener_addr("web")).await;
    for _ in 0..200 {
        let r = send(&mut c, get("/")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        body_string(r).await;
    }
    assert!(
        east.hits() <= 40,
        "the slow server got {} of 200 requests",
        east.hits()
    );
    assert_eq!(east.hits() + south.hits(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_succeeds_when_one_sites_server_stops() {
    let east = Server::start("east", Duration::ZERO).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("web", Protocol::Http, east.addr, south.addr).await;
    let mut c = h1_client(net.west.listener_addr("web")).await;
    for i in 0..200 {
        if i == 50 {
            east.stop();
        }
        let r = send(&mut c, get("/")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "request {i}");
        body_string(r).await;
    }
    assert!(
        east.hits() >= 10 && east.hits() <= 50,
        "east: {}",
        east.hits()
    );
    assert!(south.hits() >= 150, "south: {}", south.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_byte_exact() {
    let east = Server::start("east", Duration::ZERO).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("web", Protocol::Http, east.addr, south.addr).await;
    let mut c = h1_client(net.west.listener_addr("web")).await;
    for n in [0usize, 1, 70_000, 3 << 20] {
        let data = payload(n);
        let req = Request::post("/echo")
            .header(http::header::HOST, "svc")
            .body(full(data.clone()))
            .unwrap();
        let r = send(&mut c, req).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let got = r.into_body().collect().await.unwrap().to_bytes();
        assert!(got == data, "{n} bytes came back as {}", got.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_and_servers_keep_trailers_and_authority() {
    let east = Server::start("east", Duration::ZERO).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("grpcish", Protocol::Http2, east.addr, south.addr).await;
    let mut c = h2_client(net.west.listener_addr("web")).await;
    let req = Request::get("http://svc.example:8080/trailers")
        .body(full(""))
        .unwrap();
    let r = send(&mut c, req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let all = r.into_body().collect().await.unwrap();
    assert_eq!(
        all.trailers().unwrap()["x-checksum"],
        "c0ffee",
        "trailers arrive intact"
    );
    assert_eq!(all.to_bytes(), "done");
    let req = Request::get("http://svc.example:8080/host")
        .body(full(""))
        .unwrap();
    let r = send(&mut c, req).await.unwrap();
    assert_eq!(body_string(r).await, "svc.example:8080");
    let r = c
        .send_request(Request::get("http://x/no-content").body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_works_on_an_http_listener() {
    let east = Server::start("east", Duration::ZERO).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("web", Protocol::Http, east.addr, south.addr).await;
    let mut c = h2_client(net.west.listener_addr("web")).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r = c
            .send_request(Request::get("http://svc/").body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        seen.insert(body_string(r).await);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_answers_503_and_502_naming_the_address() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    a.apply(vec![service_listener_op("web", "web", Protocol::Http)])
        .await;
    // Nothing serves the address: the listener still answers, with 503.
    let addr = eventually_listening(&a, "web").await;
    let mut c = h1_client(addr).await;
    let r = send(&mut c, get("/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = body_string(r).await;
    assert!(text.contains("\"web\""), "{text}");
    // A connector whose target refuses connections: 502.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    b.apply(vec![service_connector_op(
        "web",
        "web",
        dead,
        Protocol::Http,
    )])
    .await;
    a.wait_reachable("web").await;
    let r = send(&mut c, get("/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let text = body_string(r).await;
    assert!(
        text.contains("\"web\"") && text.contains("refused"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_400_and_431() {
    let east = Server::start("east", Duration::ZERO).await;
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    a.apply(vec![service_listener_op("web", "web", Protocol::Http)])
        .await;
    b.apply(vec![service_connector_op(
        "web",
        "web",
        east.addr,
        Protocol::Http,
    )])
    .await;
    a.wait_reachable("web").await;
    let addr = a.listener_addr("web");
    let status = |raw: Vec<u8>| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&raw).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        status(b"GARBAGE\x01\x02 / HTTP/1.1\r\n\r\n".to_vec())
            .await
            .contains("400"),
    );
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 200 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    assert!(status(big).await.contains("431"));
    assert!(
        status(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec())
            .await
            .contains("200")
    );
}

/// Waits until the HTTP listener `name` listens (it does with no reachable server too).
async fn eventually_listening(r: &TestRouter, name: &str) -> SocketAddr {
    van_testkit::eventually_ok("the HTTP listener listens", async || {
        let l = van_router::admin::listeners(r.router());
        let l = l
            .listeners
            .iter()
            .find(|l| l.name == name)
            .ok_or("no listener")?;
        if l.state == "up" {
            Ok(SocketAddr::from(([127, 0, 0, 1], l.port as u16)))
        } else {
            Err(format!("state {}", l.state))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_http2_request_is_cancelled_at_the_server() {
    let east = Server::start("east", Duration::ZERO).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("web", Protocol::Http2, east.addr, south.addr).await;
    let mut c = h2_client(net.west.listener_addr("web")).await;
    for _ in 0..4 {
        let call = send(
            &mut c,
            Request::get("http://svc/slow").body(full("")).unwrap(),
        );
        // The client gives up: its stream is reset, and the server's handler is dropped.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), call)
                .await
                .is_err()
        );
    }
    van_testkit::eventually("the server saw every request cancelled", async || {
        (east.cancelled.load(Ordering::Relaxed) + south.cancelled.load(Ordering::Relaxed) == 4)
            .then_some(())
    })
    .await;
    // The client's connection still works.
    let r = send(&mut c, Request::get("http://svc/").body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    van_testkit::eventually("no flow left open", async || {
        net.west.router().flows().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_bodies_stream_chunk_by_chunk() {
    let east = Server::start("east", Duration::ZERO).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("web", Protocol::Http2, east.addr, south.addr).await;
    let mut c = h2_client(net.west.listener_addr("web")).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(1);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    let r = send(&mut c, Request::post("http://svc/echo").body(body).unwrap())
        .await
        .unwrap();
    let mut resp = r.into_body();
    // Each chunk comes back before the next is sent: nothing waits for the whole body.
    for i in 0..5u8 {
        let chunk = Bytes::from(vec![i; 1000]);
        tx.send(Ok(Frame::data(chunk.clone()))).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 1000 {
            let f = tokio::time::timeout(Duration::from_secs(5), resp.frame())
                .await
                .expect("the echo of a chunk")
                .unwrap()
                .unwrap();
            got.extend_from_slice(&f.into_data().unwrap());
        }
        assert_eq!(got, chunk);
    }
    drop(tx);
    // The end (an empty final DATA frame may come first).
    while let Some(f) = resp.frame().await {
        assert!(f.unwrap().data_ref().is_some_and(|d| d.is_empty()));
    }
}

/// A gRPC channel to west's listener.
async fn grpc_channel(net: &Net) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", net.west.listener_addr("web")))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// gRPC health servers: east says SERVING for "who", south says NOT_SERVING.
async fn grpc_server(serving: bool) -> SocketAddr {
    use tonic_health::ServingStatus;
    let (reporter, svc) = tonic_health::server::health_reporter();
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("who", status).await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        // Keep the reporter alive with the server.
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
            .await
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_on_one_channel_are_spread_and_statuses_arrive_intact() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let east = grpc_server(true).await;
    let south = grpc_server(false).await;
    let net = three_sites("health", Protocol::Http2, east, south).await;
    let ch = grpc_channel(&net).await;
    let mut client = HealthClient::new(ch);
    let mut by: HashMap<i32, usize> = HashMap::new();
    for _ in 0..60 {
        let r = client
            .check(HealthCheckRequest {
                service: "who".into(),
            })
            .await
            .unwrap();
        *by.entry(r.into_inner().status).or_default() += 1;
    }
    for s in [ServingStatus::Serving, ServingStatus::NotServing] {
        let n = by.get(&(s as i32)).copied().unwrap_or(0);
        assert!(n >= 5, "{s:?} answered {n} of 60: {by:?}");
    }
    // An error status and its message travel in trailers.
    let e = client
        .check(HealthCheckRequest {
            service: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // Server streaming: the first update of a watch arrives.
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "who".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        first.status == ServingStatus::Serving as i32
            || first.status == ServingStatus::NotServing as i32
    );
}

/// Opens a WebSocket through `addr`, sends `data` after the handshake and returns what came
/// back before the server closed.
async fn websocket_echo(addr: SocketAddr, data: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "head so far: {head:?}");
        head.push(b[0]);
    }
    s.write_all(data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .expect("the echo and the server's close")
        .unwrap();
    (String::from_utf8(head).unwrap(), back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_becomes_one_tunnel_across_sites() {
    let east = Server::start("east", Duration::ZERO).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("web", Protocol::Http, east.addr, south.addr).await;
    let data = payload(300_000);
    let (head, back) = websocket_echo(net.west.listener_addr("web"), &data).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(
        back == data,
        "{} bytes came back of {}",
        back.len(),
        data.len()
    );
    assert_eq!(
        east.hits() + south.hits(),
        1,
        "one server took the whole tunnel"
    );
    van_testkit::eventually("the tunnel's flow ended", async || {
        net.west.router().flows().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_to_a_local_connector_tunnels_too() {
    let server = Server::start("local", Duration::ZERO).await;
    let pki = Pki::new("ca");
    let r = start(base_config("solo", pki.profile("solo"))).await;
    r.apply(vec![
        service_listener_op("web", "web", Protocol::Http),
        service_connector_op("web", "web", server.addr, Protocol::Http),
    ])
    .await;
    r.wait_reachable("web").await;
    let (head, back) = websocket_echo(r.listener_addr("web"), b"hello over the tunnel").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(back, b"hello over the tunnel");
    // Ordinary requests on the same listener still work.
    let mut c = h1_client(r.listener_addr("web")).await;
    let resp = send(&mut c, get("/")).await.unwrap();
    assert_eq!(body_string(resp).await, "local");
}

/// Writes `raw` to a new connection through `addr` and reads until the server closes it.
async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes after answering")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_semantics_pass_through_unchanged() {
    let east = Server::start("east", Duration::ZERO).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("web", Protocol::Http, east.addr, south.addr).await;
    let addr = net.west.listener_addr("web");
    // HEAD: the GET's length, no body.
    let r = raw_exchange(
        addr,
        b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let len = if r.contains("x-server: east") {
        "4"
    } else {
        "5"
    };
    assert!(
        r.to_ascii_lowercase()
            .contains(&format!("content-length: {len}\r\n")),
        "{r}"
    );
    assert!(r.ends_with("\r\n\r\n"), "a HEAD answer has no body: {r:?}");
    // 304 keeps its validator and has no body.
    let r = raw_exchange(
        addr,
        b"GET /cached HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 304"), "{r}");
    assert!(r.to_ascii_lowercase().contains("etag: \"v1\""), "{r}");
    assert!(r.ends_with("\r\n\r\n"), "{r:?}");
    // 204.
    let r = raw_exchange(
        addr,
        b"GET /no-content HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    // A chunked upload is echoed whole.
    let r = raw_exchange(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let body: String = r
        .split("\r\n\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\r\n\r\n");
    assert!(body.contains("hello") && body.contains(" world"), "{r:?}");
    // Expect: 100-continue: the client hears 100 before it sends its body.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut first = vec![0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut first))
        .await
        .expect("100 Continue before the body")
        .unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    s.write_all(b"12345").await.unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.unwrap();
    assert!(
        rest.starts_with("HTTP/1.1 200") && rest.ends_with("12345"),
        "{rest:?}"
    );
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_upload_and_download_cross_router_processes_in_bounded_memory() {
    use ring::digest::{Context, SHA256};
    use van_testkit::router::process::*;
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 256;
    let chunk = Bytes::from(payload(CHUNK));
    let mut want = Context::new(&SHA256);
    for _ in 0..CHUNKS {
        want.update(&chunk);
    }
    let want = want.finish().as_ref().to_vec();
    // The origin: hashes what is uploaded, streams the same bytes on download.
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = origin.local_addr().unwrap();
    let served = chunk.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = origin.accept().await else {
                continue;
            };
            let c = served.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let c = c.clone();
                async move {
                    let body: Body = if req.uri().path() == "/upload" {
                        let mut b = req.into_body();
                        let mut h = Context::new(&SHA256);
                        while let Some(f) = b.frame().await {
                            if let Ok(d) = f?.into_data() {
                                h.update(&d);
                            }
                        }
                        full(h.finish().as_ref().to_vec())
                    } else {
                        let frames = (0..CHUNKS).map(move |_| Ok(Frame::data(c.clone())));
                        StreamBody::new(tokio_stream::iter(frames)).boxed()
                    };
                    Ok::<_, hyper::Error>(Response::new(body))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let dir = van_testkit::temp_dir("http-big");
    let pki = Pki::new("ca");
    let exe = env!("CARGO_BIN_EXE_van-router");
    let b = spawn(
        exe,
        dir.path(),
        &pki,
        "b",
        &format!(
            "{}tcp_connectors:\n  - {{name: svc, host: 127.0.0.1, port: {}, routing_key: svc, protocol: http}}\n",
            link_listener_yaml(),
            target.port()
        ),
    );
    let pb = b.link_port().await;
    let a = spawn(
        exe,
        dir.path(),
        &pki,
        "a",
        &format!(
            "{}tcp_listeners:\n  - {{name: svc, host: 127.0.0.1, port: 0, routing_key: svc, protocol: http}}\n",
            links_yaml(&[("a-b", pb, 1)])
        ),
    );
    wait_for(&a, "listener up", listener_up).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], a.listener_port("svc").await));
    let mut c = h1_client(addr).await;
    van_testkit::eventually("the origin answers through both routers", async || {
        let r = send(&mut c, get("/ping")).await.ok()?;
        let ok = r.status() == StatusCode::OK;
        r.into_body().collect().await.ok()?;
        ok.then_some(())
    })
    .await;
    let pids = [a.child.id(), b.child.id()];
    let idle = pids.map(rss_kib);
    let peak = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                for (i, pid) in pids.iter().enumerate() {
                    peak[i].fetch_max(rss_kib(*pid) as usize, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Upload, chunked (no length known in advance).
    let up = chunk.clone();
    let frames = (0..CHUNKS).map(move |_| Ok::<_, hyper::Error>(Frame::data(up.clone())));
    let req = Request::post("/upload")
        .header(http::header::HOST, "svc")
        .body(StreamBody::new(tokio_stream::iter(frames)).boxed())
        .unwrap();
    let r = send(&mut c, req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.as_ref(), want.as_slice(), "the upload arrived intact");
    // Download, hashed as it streams.
    let r = send(&mut c, get("/download")).await.unwrap();
    let mut body = r.into_body();
    let mut h = Context::new(&SHA256);
    let mut n = 0;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            n += d.len();
            h.update(&d);
        }
    }
    assert_eq!(n, CHUNK * CHUNKS);
    assert_eq!(
        h.finish().as_ref(),
        want.as_slice(),
        "the download arrived intact"
    );
    sampler.abort();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let p = peak[i].load(Ordering::Relaxed) as u64;
        eprintln!("router {name}: idle {} KiB, peak {p} KiB", idle[i]);
        assert!(
            p.saturating_sub(idle[i]) < 32 * 1024,
            "router {name} grew from {} KiB to {p} KiB carrying 2 x 256 MiB",
            idle[i]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_vanish_with_streams_in_flight_leave_nothing_behind() {
    let east = Server::start("east", Duration::ZERO).await;
    let south = Server::start("south", Duration::ZERO).await;
    let net = three_sites("web", Protocol::Http2, east.addr, south.addr).await;
    let addr = net.west.listener_addr("web");
    const CONNS: usize = 4;
    const STREAMS: usize = 50;
    for round in 1..=2 {
        let mut tasks = Vec::new();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..CONNS {
            let (c, task) = h2_client_task(addr).await;
            tasks.push(task);
            for _ in 0..STREAMS {
                let mut c = c.clone();
                calls.spawn(async move {
                    let _ = send(
                        &mut c,
                        Request::get("http://svc/slow").body(full("")).unwrap(),
                    )
                    .await;
                });
            }
        }
        // Every request in flight at a server, then the clients' connections drop at once.
        van_testkit::eventually("every request reached a server", async || {
            (east.hits() + south.hits() >= round * CONNS * STREAMS).then_some(())
        })
        .await;
        for t in &tasks {
            t.abort();
        }
        calls.abort_all();
        van_testkit::eventually("every request cancelled at its server", async || {
            let n =
                east.cancelled.load(Ordering::Relaxed) + south.cancelled.load(Ordering::Relaxed);
            (n == round * CONNS * STREAMS).then_some(())
        })
        .await;
        for r in [&net.west, &net._east, &net._south] {
            van_testkit::eventually_ok("no flow left open", async || {
                let n = r.router().flows().len();
                if n == 0 {
                    Ok(())
                } else {
                    Err(format!("{} has {n} flows open", r.router().id()))
                }
            })
            .await;
        }
    }
    // The router still serves, and its pools did not grow past one connection per target
    // for 200 concurrent streams.
    let mut c = h2_client(addr).await;
    let r = send(&mut c, Request::get("http://svc/").body(full("")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for r in [&net._east, &net._south] {
        for c in van_router::admin::connectors(r.router()).connectors {
            assert!(c.pooled_connections <= 2, "{c:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_cross_edges_and_interiors_and_are_spread() {
    let pki = Pki::new("ca");
    let interior = |id: &'static str, peers: Vec<(&'static str, SocketAddr)>| {
        let mut f = base_config(id, pki.profile(id));
        link_listener(&mut f);
        edge_listener(&mut f);
        for (name, addr) in peers {
            link_to(&mut f, name, addr, 1);
        }
        start(f)
    };
    let b = interior("B", vec![]).await;
    let a = interior("A", vec![("A-B", b.link_addr())]).await;
    let e1 = edge_router(&pki, "e1", &[("up", &a, 1)]).await;
    let e2 = edge_router(&pki, "e2", &[("up", &b, 1)]).await;
    let e3 = edge_router(&pki, "e3", &[("up", &b, 1)]).await;
    let s2 = Server::start("e2", Duration::ZERO).await;
    let s3 = Server::start("e3", Duration::ZERO).await;
    e2.apply(vec![service_connector_op(
        "web",
        "web",
        s2.addr,
        Protocol::Http,
    )])
    .await;
    e3.apply(vec![service_connector_op(
        "web",
        "web",
        s3.addr,
        Protocol::Http,
    )])
    .await;
    e1.apply(vec![service_listener_op("web", "web", Protocol::Http)])
        .await;
    e1.wait_reachable("web").await;
    // Both edges' servers are known to B before the first request.
    let mut rx = b.router().table_rx();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|t| t.addresses.get("web").is_some_and(|d| d[0].connectors == 2)),
    )
    .await
    .expect("B serves web for both edges")
    .unwrap();
    let mut c = h1_client(e1.listener_addr("web")).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = send(&mut c, get("/")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        seen.insert(body_string(r).await);
    }
    // Edge e1 lets its interior pick; B then spreads requests over its two edges.
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_response_gets_504_and_a_host_override_reaches_the_server() {
    let server = Server::start("east", Duration::ZERO).await;
    let pki = Pki::new("ca");
    let mut fb = base_config("b", pki.profile("b"));
    link_listener(&mut fb);
    let b = start(fb).await;
    let mut fa = base_config("a", pki.profile("a"));
    fa.flow.request_timeout_ms = 300;
    link_to(&mut fa, "to-b", b.link_addr(), 1);
    let a = start(fa).await;
    a.apply(vec![service_listener_op("web", "web", Protocol::Http)])
        .await;
    b.apply(vec![van_router::config::EntityOp::PutTcpConnector(
        van_router::config::TcpConnector {
            name: "web".into(),
            host: "127.0.0.1".into(),
            port: server.addr.port(),
            routing_key: "web".into(),
            protocol: Protocol::Http,
            host_override: Some("reviews.internal:9080".into()),
        },
    )])
    .await;
    a.wait_reachable("web").await;
    let mut c = h1_client(a.listener_addr("web")).await;
    let r = send(&mut c, get("/host")).await.unwrap();
    assert_eq!(body_string(r).await, "reviews.internal:9080");
    // /slow answers after 30 s: the router gives up at 300 ms and the server sees the cancel.
    let started = std::time::Instant::now();
    let r = send(&mut c, get("/slow")).await.unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    let text = body_string(r).await;
    assert!(
        text.contains("\"web\"") && text.contains("300 ms"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    van_testkit::eventually("the server saw the request cancelled", async || {
        (server.cancelled.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    let l = van_router::admin::listeners(a.router());
    assert_eq!(l.listeners[0].request_errors, 1, "{l:?}");
}

/// A gRPC reflection server that knows one file descriptor set.
async fn reflection_server(fds: &'static [u8]) -> SocketAddr {
    let svc = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(fds)
        .build_v1()
        .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_grpc_streams_cross_sites_and_each_stays_with_one_server() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    // East knows the health service, south the reflection service: an answer says who.
    let east = reflection_server(tonic_health::pb::FILE_DESCRIPTOR_SET).await;
    let south = reflection_server(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET).await;
    let net = three_sites("reflect", Protocol::Http2, east, south).await;
    let ch = grpc_channel(&net).await;
    let mut client = ServerReflectionClient::new(ch);
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(list()).await.unwrap();
        let mut answers = client
            .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        // Each answer comes back before the next question is asked, on one stream.
        let mut names = Vec::new();
        for i in 0..3 {
            let a = tokio::time::timeout(Duration::from_secs(5), answers.message())
                .await
                .expect("an answer while the stream is open")
                .unwrap()
                .unwrap();
            let Some(MessageResponse::ListServicesResponse(l)) = a.message_response else {
                panic!("not a service list: {a:?}");
            };
            names.push(l.service.iter().map(|s| s.name.clone()).collect::<Vec<_>>());
            if i < 2 {
                tx.send(list()).await.unwrap();
            }
        }
        drop(tx);
        assert!(
            answers.message().await.unwrap().is_none(),
            "the stream ends"
        );
        assert!(
            names.windows(2).all(|w| w[0] == w[1]),
            "one server per stream: {names:?}"
        );
        seen.insert(names[0].join(","));
    }
    assert_eq!(seen.len(), 2, "streams went to both servers: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_server_behind_an_edge_gets_one_502_not_endless_retries() {
    let pki = Pki::new("ca");
    let mut fb = base_config("B", pki.profile("B"));
    edge_listener(&mut fb);
    let b = start(fb).await;
    let e = edge_router(&pki, "e", &[("up", &b, 1)]).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    e.apply(vec![service_connector_op(
        "web",
        "web",
        dead,
        Protocol::Http,
    )])
    .await;
    b.apply(vec![service_listener_op("web", "web", Protocol::Http)])
        .await;
    b.wait_reachable("web").await;
    let mut c = h1_client(b.listener_addr("web")).await;
    let r = tokio::time::timeout(Duration::from_secs(10), send(&mut c, get("/")))
        .await
        .expect("an answer, not a retry loop")
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let text = body_string(r).await;
    assert!(text.contains("refused"), "{text}");
    // Tried once: the edge is not asked again for a request it could not deliver.
    let failures = van_router::admin::connectors(e.router()).connectors[0].connect_failures;
    assert_eq!(failures, 1);
}
