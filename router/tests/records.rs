//! Flow records over real routers: every router's records reach an observer attached to
//! any one of them (over the records gRPC API), with byte counts equal to what the
//! applications moved and the way each connection ended.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use van_proto::records::{self as pb, records_client::RecordsClient};
use van_testkit::router::*;

/// Everything an observer received, in order.
#[derive(Default)]
struct Seen {
    batches: Vec<pb::RecordBatch>,
}

impl Seen {
    fn ended(&self) -> impl Iterator<Item = (&str, &pb::ConnectionRecord)> {
        self.batches
            .iter()
            .flat_map(|b| b.ended.iter().map(move |c| (b.router_id.as_str(), c)))
    }

    fn half(&self, router: &str, role: &str, key: &str) -> Option<pb::ConnectionRecord> {
        self.ended()
            .find(|(r, c)| *r == router && c.role == role && c.routing_key == key)
            .map(|(_, c)| c.clone())
    }
}

/// Watches records through `r`'s gRPC API in the background.
async fn observe(r: &TestRouter) -> Arc<Mutex<Seen>> {
    let ch = van_proto::grpc::channel(&r.admin.to_string(), None)
        .await
        .unwrap();
    let mut stream = RecordsClient::new(ch)
        .watch(pb::WatchRecordsRequest {})
        .await
        .unwrap()
        .into_inner();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(Ok(b)) = stream.next().await {
            s.lock().unwrap().batches.push(b);
        }
    });
    seen
}

/// Polls `f` over what was seen until it gives a value (records come within a second or two).
async fn wait<T>(seen: &Mutex<Seen>, what: &str, f: impl Fn(&Seen) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f(&seen.lock().unwrap()) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects, retrying while the listener, gated on its key being reachable, catches up
/// with the routing table the test waited on.
async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{addr} does not accept connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_halves_of_a_connection_carry_the_bytes_the_applications_moved() {
    let (a, b) = echo_pair().await;
    let c = &van_router::admin::connectors(b.router()).connectors[0];
    let echo = format!("{}:{}", c.host, c.port);
    b.router()
        .publish("van.site.v1", Some(br#"{"name":"east"}"#.to_vec()))
        .unwrap();
    let seen = observe(&a).await;

    // Both routers report their state: listeners, connectors and the link between them.
    wait(&seen, "both routers' state", |s| {
        let has = |id: &str, f: &dyn Fn(&pb::RouterState) -> bool| {
            s.batches
                .iter()
                .any(|b| b.router_id == id && b.state.as_ref().is_some_and(f))
        };
        (has("a", &|st| {
            st.listeners.iter().any(|l| l.routing_key == "echo")
                && st
                    .links
                    .iter()
                    .any(|l| l.peer_router == "b" && l.state == "up")
        }) && has("b", &|st| {
            st.connectors.iter().any(|c| c.routing_key == "echo")
                && st.status.as_ref().is_some_and(|x| x.router_id == "b")
                // What the site's controller published: the site's name, for one.
                && st.published.iter().any(|p| {
                    p.topic == "van.site.v1" && p.payload == br#"{"name":"east"}"#
                })
        }))
        .then_some(())
    })
    .await;

    let sent = payload(300_001);
    let got = echo_roundtrip(a.listener_addr("echo"), &sent).await;
    assert_eq!(got.len(), sent.len());

    let (ingress, egress) = wait(&seen, "both halves", |s| {
        Some((
            s.half("a", "ingress", "echo")?,
            s.half("b", "egress", "echo")?,
        ))
    })
    .await;
    assert_eq!(ingress.flow_id, egress.flow_id);
    for half in [&ingress, &egress] {
        assert_eq!(half.bytes_out, 300_001, "{half:?}");
        assert_eq!(half.bytes_in, 300_001, "{half:?}");
        assert_eq!(half.outcome, "closed", "{half:?}");
        assert!(half.end_us >= half.start_us && half.start_us > 0);
        assert!(half.first_byte_us > 0, "{half:?}");
    }
    assert_eq!(ingress.dest_router, "b");
    assert_eq!(egress.server_addr, echo);
    assert_eq!(egress.path, ["a", "b"]);
    assert_eq!(ingress.client_addr, egress.client_addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reset_and_open_connections_are_told_apart() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    // Nothing listens on `closed`'s port: the connector's target refuses.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // A server that reads a little, then resets the connection.
    let rst = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rst_addr = rst.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = rst.accept().await {
            let mut b = [0u8; 4];
            let _ = s.read_exact(&mut b).await;
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        }
    });
    let echo = echo_server().await;
    a.apply(vec![
        listener_op("gone", "gone"),
        listener_op("rst", "rst"),
        listener_op("echo", "echo"),
    ])
    .await;
    b.apply(vec![
        connector_op("gone", "gone", closed),
        connector_op("rst", "rst", rst_addr),
        connector_op("echo", "echo", echo),
    ])
    .await;
    for k in ["gone", "rst", "echo"] {
        a.wait_reachable(k).await;
    }
    let seen = observe(&b).await;
    wait(&seen, "a's first batch", |s| {
        s.batches.iter().any(|b| b.router_id == "a").then_some(())
    })
    .await;

    // Refused by the target.
    let mut c = connect(a.listener_addr("gone")).await;
    let _ = c.read(&mut [0u8; 1]).await;
    // Reset by the server.
    let mut c = connect(a.listener_addr("rst")).await;
    c.write_all(b"ping").await.unwrap();
    let _ = c.read(&mut [0u8; 1]).await;
    // Open, moving bytes.
    let mut open = connect(a.listener_addr("echo")).await;
    open.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    open.read_exact(&mut buf).await.unwrap();

    let refused = wait(&seen, "refused", |s| s.half("b", "egress", "gone")).await;
    assert_eq!(refused.outcome, "refused", "{refused:?}");
    assert!(!refused.error.is_empty());
    let reset = wait(&seen, "reset", |s| s.half("b", "egress", "rst")).await;
    assert_eq!(reset.outcome, "reset", "{reset:?}");
    assert_eq!(reset.bytes_out, 4);
    let ingress_refused = wait(&seen, "ingress refused", |s| s.half("a", "ingress", "gone")).await;
    assert_eq!(ingress_refused.outcome, "refused");

    // The open connection is listed as open by both routers, with its bytes.
    wait(&seen, "open halves", |s| {
        let open_at = |r: &str| {
            s.batches
                .iter()
                .rev()
                .filter(|b| b.router_id == r)
                .any(|b| {
                    b.open
                        .iter()
                        .any(|c| c.routing_key == "echo" && c.bytes_in == 5 && c.end_us == 0)
                })
        };
        (open_at("a") && open_at("b")).then_some(())
    })
    .await;
    drop(open);
    let closed = wait(&seen, "echo ended", |s| s.half("a", "ingress", "echo")).await;
    assert_eq!((closed.bytes_out, closed.bytes_in), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_report_too_and_a_router_that_leaves_is_said_to() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let mut fc = base_config("c", pki.profile("c"));
    edge_listener(&mut fc);
    link_to(&mut fc, "to-b", b.link_addr(), 1);
    let c = start(fc).await;
    let e = edge_router(&pki, "e", &[("up", &c, 1)]).await;
    let seen = observe(&a).await;
    wait(&seen, "every router, edge included", |s| {
        ["a", "b", "c", "e"]
            .iter()
            .all(|id| {
                s.batches
                    .iter()
                    .any(|b| b.router_id == *id && b.state.is_some())
            })
            .then_some(())
    })
    .await;
    let mode = wait(&seen, "e's mode", |s| {
        s.batches
            .iter()
            .find_map(|b| {
                b.state
                    .as_ref()?
                    .status
                    .as_ref()
                    .filter(|st| st.router_id == "e")
            })
            .map(|st| st.mode.clone())
    })
    .await;
    assert_eq!(mode, "edge");

    // c leaves, and e with it (its only uplink).
    let before = seen.lock().unwrap().batches.len();
    drop(e);
    c.running.shutdown().await;
    wait(&seen, "c's stream ended", |s| {
        s.batches[before..]
            .iter()
            .any(|b| b.router_id == "c" && b.ended_stream)
            .then_some(())
    })
    .await;
    let _ = b;
}

/// A minimal HTTP/1.1 origin: answers every request on a connection with 200 and "ok".
async fn ok_server() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(r).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends one GET and returns the status line.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = connect(addr).await;
    let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_recorded_with_status_and_latency() {
    use van_router::config::Protocol;
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let origin = ok_server().await;
    a.apply(vec![
        service_listener_op("web", "web", Protocol::Http),
        service_listener_op("nobody", "nobody", Protocol::Http),
    ])
    .await;
    b.apply(vec![service_connector_op(
        "web",
        "web",
        origin,
        Protocol::Http,
    )])
    .await;
    a.wait_reachable("web").await;
    let seen = observe(&a).await;
    wait(&seen, "b's first batch", |s| {
        s.batches.iter().any(|b| b.router_id == "b").then_some(())
    })
    .await;

    assert_eq!(
        get(a.listener_addr("web"), "/reviews/1?x=2").await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        get(a.listener_addr("nobody"), "/").await,
        "HTTP/1.1 503 Service Unavailable"
    );
    let requests = |s: &Seen| -> Vec<pb::RequestRecord> {
        s.batches
            .iter()
            .filter(|b| b.router_id == "a")
            .flat_map(|b| b.requests.clone())
            .collect()
    };
    let ok = wait(&seen, "the answered request", |s| {
        requests(s).into_iter().find(|r| r.routing_key == "web")
    })
    .await;
    assert_eq!(
        (ok.method.as_str(), ok.path.as_str()),
        ("GET", "/reviews/1")
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.dest_router, "b");
    assert_eq!(ok.bytes_in, 2);
    assert!(
        ok.latency_us > 0 && ok.duration_us >= ok.latency_us,
        "{ok:?}"
    );
    assert!(ok.error.is_empty(), "{ok:?}");
    let refused = wait(&seen, "the 503", |s| {
        requests(s).into_iter().find(|r| r.routing_key == "nobody")
    })
    .await;
    assert_eq!(refused.status, 503);
    assert!(refused.error.contains("nobody"), "{refused:?}");
    // Requests are not also reported as connections.
    assert!(
        seen.lock()
            .unwrap()
            .ended()
            .all(|(_, c)| c.routing_key != "web")
    );
}
