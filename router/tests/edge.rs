//! Edge routers: flows through interior routers to and from edges, address proxying without
//! topology churn, and uplink failover.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use van_router::config::{EntityKind, EntityOp};
use van_testkit::eventually;
use van_testkit::router::*;

/// An interior router with inter-router and edge listeners, linked to `peers`.
async fn interior(pki: &Pki, id: &str, peers: &[(&str, &TestRouter, u32)]) -> TestRouter {
    let mut f = base_config(id, pki.profile(id));
    link_listener(&mut f);
    edge_listener(&mut f);
    for (name, peer, cost) in peers {
        link_to(&mut f, name, peer.link_addr(), *cost);
    }
    start(f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_between_edges_cross_two_interiors() {
    let pki = Pki::new("ca");
    let b = interior(&pki, "B", &[]).await;
    let a = interior(&pki, "A", &[("A-B", &b, 1)]).await;
    let e1 = edge_router(&pki, "e1", &[("up", &a, 1)]).await;
    let e2 = edge_router(&pki, "e2", &[("up", &b, 1)]).await;
    let echo = echo_server().await;
    e2.apply(vec![connector_op("echo", "echo", echo)]).await;
    for r in [&e1, &a, &b, &e2] {
        r.apply(vec![listener_op("echo", "echo")]).await;
    }
    for r in [&e1, &a, &b, &e2] {
        r.wait_reachable("echo").await;
    }
    // From the other edge (edge - interior - interior - edge), both interiors, and e2 itself.
    for r in [&e1, &a, &b, &e2] {
        for n in [1usize, 70_000, 4 << 20] {
            let data = payload(n);
            assert!(
                echo_roundtrip(r.listener_addr("echo"), &data).await == data,
                "{n} bytes from {}",
                r.router().id()
            );
        }
    }
    // Half-close from edge to edge.
    let mut s = TcpStream::connect(e1.listener_addr("echo")).await.unwrap();
    s.write_all(&payload(40_019)).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, payload(40_019));

    // Edges are not part of the interior topology: B advertises e2's key as its own.
    let nodes: Vec<String> = a.router().table().nodes.keys().cloned().collect();
    assert_eq!(nodes, ["A", "B"]);
    assert_eq!(a.router().table().addresses["echo"][0].router, "B");
    let edge_links = van_router::admin::links(e1.router()).links;
    assert!(edge_links[0].active && edge_links[0].role == "edge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_key_is_withdrawn_when_the_edge_leaves() {
    let pki = Pki::new("ca");
    let b = interior(&pki, "B", &[]).await;
    let a = interior(&pki, "A", &[("A-B", &b, 1)]).await;
    let e2 = edge_router(&pki, "e2", &[("up", &b, 1)]).await;
    let echo = echo_server().await;
    e2.apply(vec![connector_op("echo", "echo", echo)]).await;
    a.apply(vec![listener_op("echo", "echo")]).await;
    a.wait_reachable("echo").await;
    e2.apply(vec![EntityOp::Delete(EntityKind::Link, "up".into())])
        .await;
    a.wait_unreachable("echo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_fails_over_to_its_other_uplink() {
    let pki = Pki::new("ca");
    let b = interior(&pki, "B", &[]).await;
    let a = interior(&pki, "A", &[("A-B", &b, 1)]).await;
    let echo = echo_server().await;
    b.apply(vec![connector_op("echo", "echo", echo)]).await;
    let e = edge_router(&pki, "e", &[("to-a", &a, 1), ("to-b", &b, 5)]).await;
    e.apply(vec![listener_op("echo", "echo")]).await;
    e.wait_reachable("echo").await;
    let active = |r: &TestRouter| r.router().active_uplink().map(|u| u.name.clone());
    // Wait for both uplinks, then check the cheaper one is used.
    eventually("both uplinks up", async || {
        (e.router().uplinks_up() >= 2).then_some(())
    })
    .await;
    assert_eq!(active(&e).as_deref(), Some("to-a"));
    assert_eq!(
        echo_roundtrip(e.listener_addr("echo"), b"via a").await,
        b"via a"
    );
    let path = van_router::admin::flows(b.router()).flows;
    assert!(path.is_empty() || path[0].path.contains(&"A".to_string()));

    e.apply(vec![EntityOp::Delete(EntityKind::Link, "to-a".into())])
        .await;
    assert_eq!(active(&e).as_deref(), Some("to-b"));
    e.wait_reachable("echo").await;
    assert_eq!(
        echo_roundtrip(e.listener_addr("echo"), b"via b").await,
        b"via b"
    );
}
