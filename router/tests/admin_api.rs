//! The admin API over real gRPC: views, all-or-nothing configuration changes, the change
//! feed, health checking, reflection, and the metrics endpoint.

use std::time::Duration;

use tokio_stream::StreamExt;
use van_proto::admin::{self as pb, config_op::Op};
use van_testkit::eventually;
use van_testkit::grpc::{self, ServingStatus};
use van_testkit::router::*;

async fn client(
    r: &TestRouter,
) -> pb::router_admin_client::RouterAdminClient<tonic::transport::Channel> {
    van_router::admin::connect(&r.admin.to_string())
        .await
        .unwrap()
}

fn put_listener(name: &str, port: u32, key: &str) -> pb::ConfigOp {
    pb::ConfigOp {
        op: Some(Op::PutTcpListener(pb::TcpListenerConfig {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            routing_key: key.into(),
            ..Default::default()
        })),
    }
}

fn put_connector(name: &str, port: u32, key: &str) -> pb::ConfigOp {
    pb::ConfigOp {
        op: Some(Op::PutTcpConnector(pb::TcpConnectorConfig {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            routing_key: key.into(),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_live_configuration_over_grpc() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let echo = echo_server().await;
    let mut ca = client(&a).await;
    let mut cb = client(&b).await;

    let st = ca
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.router_id, "a");
    assert_eq!(st.mode, "interior");
    assert_eq!(st.version, env!("CARGO_PKG_VERSION"));

    // Create a connector on b and a listener on a through the API, then use them.
    cb.apply_config(pb::ConfigChange {
        ops: vec![put_connector("echo", u32::from(echo.port()), "echo")],
        ..Default::default()
    })
    .await
    .unwrap();
    ca.apply_config(pb::ConfigChange {
        ops: vec![put_listener("echo", 0, "echo")],
        ..Default::default()
    })
    .await
    .unwrap();
    a.wait_reachable("echo").await;
    assert_eq!(
        echo_roundtrip(a.listener_addr("echo"), b"via api").await,
        b"via api"
    );

    let nodes = ca
        .list_nodes(pb::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let to_b = nodes
        .iter()
        .find(|n| n.router_id == "b")
        .expect("b is a node");
    assert_eq!((to_b.cost, to_b.next_hop.as_str(), to_b.hops), (1, "b", 1));
    let links = ca
        .list_links(pb::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links.len(), 1);
    assert_eq!(
        (links[0].state.as_str(), links[0].peer_router.as_str()),
        ("up", "b")
    );
    assert!(links[0].bytes_out > 0);
    let addrs = ca
        .list_addresses(pb::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .addresses;
    let echo_addr = addrs.iter().find(|x| x.routing_key == "echo").unwrap();
    assert_eq!(echo_addr.destinations[0].router_id, "b");
    assert_eq!(echo_addr.local_listeners, 1);
    let ls = ca
        .list_listeners(pb::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .listeners;
    assert_eq!(ls[0].state, "up");
    let cs = cb
        .list_connectors(pb::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .connectors;
    assert_eq!(cs[0].routing_key, "echo");

    // Flows are listed while open.
    let mut s = tokio::net::TcpStream::connect(a.listener_addr("echo"))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"x")
        .await
        .unwrap();
    let mut one = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut one)
        .await
        .unwrap();
    let flows = ca
        .list_flows(pb::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .flows;
    assert_eq!(flows.len(), 1);
    assert_eq!(
        (flows[0].role.as_str(), flows[0].routing_key.as_str()),
        ("ingress", "echo")
    );
    // The router counts a byte once its write to the client returned; the client may see it
    // a moment earlier.
    eventually("one byte counted each way", async || {
        let f = &van_router::admin::flows(a.router()).flows[0];
        ((f.bytes_out, f.bytes_in) == (1, 1)).then_some(())
    })
    .await;
    let egress = cb
        .list_flows(pb::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .flows;
    assert_eq!(egress[0].path, ["a", "b"]);
    assert_eq!(egress[0].flow_id, flows[0].flow_id, "one id end to end");
    drop(s);

    let cfg = ca
        .get_config(pb::GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cfg.tcp_listeners.len(), 1);
    assert_eq!(cfg.tls_profiles[0].key_pem, "<redacted>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_change_reports_every_error_and_applies_nothing() {
    let pki = Pki::new("ca");
    let r = start(base_config("solo", pki.profile("solo"))).await;
    let mut c = client(&r).await;
    let before = c
        .get_config(pb::GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    let err = c
        .apply_config(pb::ConfigChange {
            ops: vec![
                // Valid on its own: must not be applied because the batch is invalid.
                put_listener("good", 0, "good"),
                put_listener("", 0, "k"),
                put_connector("noport", 0, "k"),
                put_listener("badport", 70_000, "k"),
                pb::ConfigOp {
                    op: Some(Op::PutLink(pb::LinkConfig {
                        name: "l".into(),
                        role: "sideways".into(),
                        host: "127.0.0.1".into(),
                        port: 1,
                        tls_profile: "missing".into(),
                        ..Default::default()
                    })),
                },
                pb::ConfigOp {
                    op: Some(Op::Delete(pb::Delete {
                        kind: pb::Kind::TcpConnector as i32,
                        name: "ghost".into(),
                    })),
                },
                pb::ConfigOp { op: None },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let msg = err.message();
    for path in ["ops[3].port", "ops[4].role", "ops[6]"] {
        assert!(msg.contains(path), "{path} missing from: {msg}");
    }
    let after = c
        .get_config(pb::GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before, after);

    // Conversion passes, validation fails: the router reports all of those too.
    let err = c
        .apply_config(pb::ConfigChange {
            ops: vec![
                put_listener("good", 0, "good"),
                put_listener("", 0, "k"),
                put_connector("noport", 0, "k"),
                pb::ConfigOp {
                    op: Some(Op::Delete(pb::Delete {
                        kind: pb::Kind::TcpConnector as i32,
                        name: "ghost".into(),
                    })),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    let msg = err.message();
    for path in [
        "tcp_listeners[].name",
        "tcp_connectors[noport].port",
        "ops[3].delete",
    ] {
        assert!(msg.contains(path), "{path} missing from: {msg}");
    }
    assert_eq!(
        before,
        c.get_config(pb::GetConfigRequest {})
            .await
            .unwrap()
            .into_inner()
    );

    // A port that is taken is refused and nothing else is applied.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = c
        .apply_config(pb::ConfigChange {
            ops: vec![
                put_listener("good", 0, "good"),
                put_listener("taken", u32::from(taken.local_addr().unwrap().port()), "k"),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("tcp_listeners[taken]"),
        "{}",
        err.message()
    );
    assert_eq!(
        before,
        c.get_config(pb::GetConfigRequest {})
            .await
            .unwrap()
            .into_inner()
    );

    // A dry run validates without applying.
    c.apply_config(pb::ConfigChange {
        ops: vec![put_listener("good", 0, "good")],
        dry_run: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        before,
        c.get_config(pb::GetConfigRequest {})
            .await
            .unwrap()
            .into_inner()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_a_snapshot_then_changes() {
    let pki = Pki::new("ca");
    let r = start(base_config("solo", pki.profile("solo"))).await;
    let mut c = client(&r).await;
    let mut stream = c.watch(pb::WatchRequest {}).await.unwrap().into_inner();
    use pb::watch_event::View;
    // The first events are the snapshot of every view.
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let ev = stream.next().await.unwrap().unwrap();
        seen.push(std::mem::discriminant(&ev.view.unwrap()));
    }
    let mut c2 = client(&r).await;
    c2.apply_config(pb::ConfigChange {
        ops: vec![put_listener("web", 0, "web")],
        ..Default::default()
    })
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let ev = stream.next().await.unwrap().unwrap();
            if let Some(View::Listeners(l)) = ev.view
                && l.listeners.iter().any(|l| l.name == "web")
            {
                return l;
            }
        }
    })
    .await
    .expect("listener change is streamed");
    assert_eq!(got.listeners[0].state, "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_failing_is_streamed_with_its_kind() {
    let pki = Pki::new("ca");
    // Bound but not listening: every attempt is refused.
    let nowhere = van_testkit::ReservedPort::localhost();
    let mut f = base_config("solo", pki.profile("solo"));
    link_to(&mut f, "to-nowhere", nowhere.addr(), 1);
    let r = start(f).await;
    let mut stream = client(&r)
        .await
        .watch(pb::WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    use pb::watch_event::View;
    let mut failed = async || {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let ev = stream.next().await.unwrap().unwrap();
                if let Some(View::Links(l)) = ev.view
                    && let Some(l) = l.links.into_iter().find(|l| l.state == "failed")
                {
                    return l;
                }
            }
        })
        .await
        .expect("a failed attempt is streamed")
    };
    // The first failure may already be in the snapshot; nothing else changes on a lone
    // router, so only the next attempt failing can bring the next event.
    let first = failed().await;
    let next = failed().await;
    assert!(
        next.errors > first.errors,
        "{} then {}",
        first.errors,
        next.errors
    );
    assert_eq!(next.failure(), pb::LinkFailure::ConnectRefused);
    assert!(next.last_error.contains("refused"), "{}", next.last_error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_grpc_health_and_reflection() {
    let pki = Pki::new("ca");
    let r = start(base_config("solo", pki.profile("solo"))).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", r.admin))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = grpc::health(channel.clone(), "van.admin.v1.RouterAdmin").await;
    assert_eq!(status.unwrap(), ServingStatus::Serving);
    grpc::assert_lists_exactly(
        channel,
        &["van.admin.v1.RouterAdmin", "van.records.v1.Records"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_metrics_and_healthz_over_http() {
    let (a, _b) = echo_pair().await;
    assert_eq!(echo_roundtrip(a.listener_addr("echo"), b"m").await, b"m");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let r = a.router().clone();
    let app = van_router::metrics::app(move || r.render_metrics());
    tokio::spawn(async move { axum::serve(l, app).await });
    let get = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let h = get("/healthz").await;
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    let m = get("/metrics").await;
    assert!(m.contains("van_routers_reachable{router=\"a\"} 2"), "{m}");
    assert!(
        m.contains("van_link_up{router=\"a\",link=\"to-b\",peer=\"b\"} 1"),
        "{m}"
    );
    eventually("the closed flow counted", async || {
        get("/metrics")
            .await
            .contains("van_flows_closed_total{router=\"a\",role=\"ingress\",outcome=\"closed\"} 1")
            .then_some(())
    })
    .await;
}
