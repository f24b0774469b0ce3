//! Multi-hop forwarding, lowest-cost path selection, listener gating and failure handling
//! with several real routers.

use std::io::ErrorKind;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use van_router::config::{EntityKind, EntityOp};
use van_testkit::eventually;
use van_testkit::router::*;

/// A router with a link listener plus outgoing links to `peers` (name, router, cost).
async fn router(pki: &Pki, id: &str, peers: &[(&str, &TestRouter, u32)]) -> TestRouter {
    let mut f = base_config(id, pki.profile(id));
    link_listener(&mut f);
    for (name, peer, cost) in peers {
        link_to(&mut f, name, peer.link_addr(), *cost);
    }
    start(f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carries_flows_across_zero_one_and_two_transit_routers() {
    let pki = Pki::new("ca");
    // Chain a - b - c - d, with the service behind d.
    let d = router(&pki, "d", &[]).await;
    let c = router(&pki, "c", &[("to-d", &d, 1)]).await;
    let b = router(&pki, "b", &[("to-c", &c, 1)]).await;
    let a = router(&pki, "a", &[("to-b", &b, 1)]).await;
    let echo = echo_server().await;
    d.router()
        .apply_ops(vec![connector_op("echo", "echo", echo)], false, false)
        .await
        .unwrap();
    for r in [&a, &b, &c, &d] {
        r.router()
            .apply_ops(vec![listener_op("echo", "echo")], false, false)
            .await
            .unwrap();
    }
    for r in [&a, &b, &c, &d] {
        r.wait_reachable("echo").await;
    }
    a.wait_route("d", "b").await;
    // From d itself (local), c (no transit), b (one transit), a (two transit).
    for r in [&d, &c, &b, &a] {
        for n in [1usize, 1000, 500_000, 16 << 20] {
            let data = payload(n);
            let got = echo_roundtrip(r.listener_addr("echo"), &data).await;
            assert!(got == data, "{n} bytes from {}", r.router().id());
        }
    }
    // Half-close across two transit routers.
    let mut s = TcpStream::connect(a.listener_addr("echo")).await.unwrap();
    s.write_all(&payload(40_019)).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, payload(40_019));
}

/// Opens a connection through `via`, and returns the path d's egress flow record shows.
async fn path_of_new_flow(via: &TestRouter, egress: &TestRouter) -> Vec<String> {
    let mut s = TcpStream::connect(via.listener_addr("svc")).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    let flows = van_router::admin::flows(egress.router()).flows;
    // Earlier flows may still be winding down: take the youngest.
    let f = flows
        .iter()
        .filter(|f| f.role == "egress")
        .min_by_key(|f| f.age_ms)
        .expect("egress flow at the destination");
    f.path.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reselects_the_lowest_cost_path_as_links_are_cut() {
    // Skupper's TopologyFailover mesh: AD=1, DC=1, CB=1, DB=20, AC=50, AB=100.
    let pki = Pki::new("ca");
    let b = router(&pki, "B", &[]).await;
    let c = router(&pki, "C", &[("C-B", &b, 1)]).await;
    let d = router(&pki, "D", &[("D-C", &c, 1), ("D-B", &b, 20)]).await;
    let a = router(
        &pki,
        "A",
        &[("A-D", &d, 1), ("A-C", &c, 50), ("A-B", &b, 100)],
    )
    .await;
    let echo = echo_server().await;
    b.router()
        .apply_ops(vec![connector_op("svc", "svc", echo)], false, false)
        .await
        .unwrap();
    a.router()
        .apply_ops(vec![listener_op("svc", "svc")], false, false)
        .await
        .unwrap();
    a.wait_reachable("svc").await;

    // Every router on the path must have converged, not only A.
    a.wait_route_cost("B", "D", Some(3)).await;
    d.wait_route_cost("B", "C", Some(2)).await;
    c.wait_route_cost("B", "B", Some(1)).await;
    assert_eq!(path_of_new_flow(&a, &b).await, ["A", "D", "C", "B"]);

    d.apply(vec![EntityOp::Delete(EntityKind::Link, "D-C".into())])
        .await;
    a.wait_route_cost("B", "D", Some(21)).await;
    d.wait_route_cost("B", "B", Some(20)).await;
    assert_eq!(path_of_new_flow(&a, &b).await, ["A", "D", "B"]);

    d.apply(vec![EntityOp::Delete(EntityKind::Link, "D-B".into())])
        .await;
    a.wait_route_cost("B", "C", Some(51)).await;
    c.wait_route_cost("B", "B", Some(1)).await;
    assert_eq!(path_of_new_flow(&a, &b).await, ["A", "C", "B"]);

    a.apply(vec![EntityOp::Delete(EntityKind::Link, "A-C".into())])
        .await;
    a.wait_route_cost("B", "B", Some(100)).await;
    assert_eq!(path_of_new_flow(&a, &b).await, ["A", "B"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_refuses_until_a_connector_is_reachable_and_after_it_goes() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    a.router()
        .apply_ops(vec![listener_op("svc", "svc")], false, false)
        .await
        .unwrap();
    let addr = a.listener_addr("svc");
    // The port is held but refuses connections.
    let e = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    let state = &van_router::admin::listeners(a.router()).listeners[0];
    assert_eq!(state.state, "down");

    let echo = echo_server().await;
    b.router()
        .apply_ops(vec![connector_op("svc", "svc", echo)], false, false)
        .await
        .unwrap();
    a.wait_reachable("svc").await;
    assert_eq!(a.listener_addr("svc"), addr, "the port does not change");
    assert_eq!(echo_roundtrip(addr, b"hello").await, b"hello");

    b.router()
        .apply_ops(
            vec![EntityOp::Delete(EntityKind::TcpConnector, "svc".into())],
            false,
            false,
        )
        .await
        .unwrap();
    a.wait_unreachable("svc").await;
    let e = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_whose_target_refuses_closes_the_client_promptly() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    // Bound, never listening: every connection to it is refused for as long as it is held.
    let refusing = van_testkit::ReservedPort::localhost();
    a.router()
        .apply_ops(vec![listener_op("svc", "svc")], false, false)
        .await
        .unwrap();
    b.router()
        .apply_ops(
            vec![connector_op("svc", "svc", refusing.addr())],
            false,
            false,
        )
        .await
        .unwrap();
    a.wait_reachable("svc").await;
    // The reset can arrive before `connect` even returns on loopback.
    match TcpStream::connect(a.listener_addr("svc")).await {
        Ok(mut s) => {
            let _ = s.write_all(b"hello").await;
            let mut buf = [0u8; 16];
            let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("client must not hang");
            match r {
                Ok(0) => panic!("a failed connect must look like an abort, not a clean close"),
                Ok(n) => panic!("unexpected {n} bytes"),
                Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
            }
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    let c = &van_router::admin::connectors(b.router()).connectors[0];
    assert_eq!(c.connect_failures, 1);
    assert!(c.detail.contains("refused"), "{}", c.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_over_a_failed_link_close_at_both_ends_and_new_ones_take_the_other_path() {
    let pki = Pki::new("ca");
    // a reaches the service at d through b or through c (more expensive).
    let d = router(&pki, "d", &[]).await;
    let b = router(&pki, "b", &[("b-d", &d, 1)]).await;
    let c = router(&pki, "c", &[("c-d", &d, 5)]).await;
    let a = router(&pki, "a", &[("a-b", &b, 1), ("a-c", &c, 5)]).await;
    // A server that holds each connection open and reports when its client goes away.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = server.local_addr().unwrap();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = server.accept().await.unwrap();
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = closed_tx.send(());
                            return;
                        }
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                let _ = closed_tx.send(());
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    d.router()
        .apply_ops(vec![connector_op("svc", "svc", target)], false, false)
        .await
        .unwrap();
    a.router()
        .apply_ops(vec![listener_op("svc", "svc")], false, false)
        .await
        .unwrap();
    a.wait_reachable("svc").await;
    a.wait_route_cost("d", "b", Some(2)).await;
    a.wait_route_cost("c", "c", Some(5)).await;
    // The transit routers must know their way too, not only a.
    b.wait_route_cost("d", "d", Some(1)).await;
    c.wait_route_cost("d", "d", Some(5)).await;
    let mut s = TcpStream::connect(a.listener_addr("svc")).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.unwrap();

    // Cut b-d at b: the flow crossed it.
    b.apply(vec![EntityOp::Delete(EntityKind::Link, "b-d".into())])
        .await;
    let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut one))
        .await
        .expect("client end must close promptly");
    assert!(matches!(r, Ok(0) | Err(_)), "client saw {r:?}");
    tokio::time::timeout(Duration::from_secs(3), closed_rx.recv())
        .await
        .expect("server end must close promptly");

    a.wait_route("d", "c").await;
    a.wait_reachable("svc").await;
    assert_eq!(echo_roundtrip_keep(a.listener_addr("svc")).await, b"again");
}

/// Sends "again" and reads it back (the test server echoes but never closes first).
async fn echo_roundtrip_keep(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"again").await.unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    buf.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_connector_keeps_or_drops_its_flows_as_asked() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let echo = echo_server().await;
    a.apply(vec![listener_op("svc", "svc")]).await;
    b.apply(vec![connector_op("svc", "svc", echo)]).await;
    a.wait_reachable("svc").await;
    let open = || async {
        let mut s = TcpStream::connect(a.listener_addr("svc")).await.unwrap();
        s.write_all(b"1").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        s
    };
    let delete = |drop_flows| {
        b.router().apply_ops(
            vec![EntityOp::Delete(EntityKind::TcpConnector, "svc".into())],
            false,
            drop_flows,
        )
    };

    // Kept: the flow goes on after its connector is gone.
    let mut kept = open().await;
    delete(false).await.unwrap();
    kept.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    kept.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");

    // Dropped: the client's connection is reset promptly.
    b.apply(vec![connector_op("svc", "svc", echo)]).await;
    a.wait_reachable("svc").await;
    let mut dropped = open().await;
    delete(true).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(3), dropped.read(&mut buf))
        .await
        .expect("the dropped flow must close");
    assert!(matches!(r, Err(_) | Ok(0)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_flows_spread_over_connectors_by_open_flows_and_cost() {
    let pki = Pki::new("ca");
    let c = router(&pki, "c", &[]).await;
    let b = router(&pki, "b", &[("b-c", &c, 1)]).await;
    let a = router(&pki, "a", &[("a-b", &b, 1)]).await;
    // Three echo servers behind connectors at a (local), b (cost 1) and c (cost 2).
    let mut targets = Vec::new();
    for r in [&a, &b, &c] {
        let echo = echo_server().await;
        r.apply(vec![connector_op("svc", "svc", echo)]).await;
        targets.push(r);
    }
    a.apply(vec![listener_op("svc", "svc")]).await;
    a.wait_route_cost("c", "b", Some(2)).await;
    b.wait_route_cost("c", "c", Some(1)).await;
    let mut rx = a.router().table_rx();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|t| t.addresses.get("svc").is_some_and(|d| d.len() == 3)),
    )
    .await
    .expect("three destinations")
    .unwrap();
    a.wait_reachable("svc").await;
    // Thirty long-lived flows, opened one after another.
    let mut held = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(a.listener_addr("svc")).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        held.push(s);
    }
    let per: Vec<u32> = targets
        .iter()
        .map(|r| van_router::admin::connectors(r.router()).connectors[0].active_flows)
        .collect();
    assert_eq!(per.iter().sum::<u32>(), 30, "{per:?}");
    // Every connector gets some; the cheaper ones get more (score = open flows + cost).
    assert!(per.iter().all(|n| *n >= 5), "{per:?}");
    assert!(per[0] >= per[1] && per[1] >= per[2], "{per:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_links_share_the_flows() {
    let pki = Pki::new("ca");
    let b = router(&pki, "b", &[]).await;
    let a = router(&pki, "a", &[("one", &b, 1), ("two", &b, 1)]).await;
    let echo = echo_server().await;
    b.apply(vec![connector_op("svc", "svc", echo)]).await;
    a.apply(vec![listener_op("svc", "svc")]).await;
    a.wait_reachable("svc").await;
    eventually("both links up", async || {
        let links = van_router::admin::links(a.router()).links;
        (links.iter().filter(|l| l.state == "up").count() == 2).then_some(())
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(a.listener_addr("svc")).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        held.push(s);
    }
    let per: Vec<u32> = van_router::admin::links(a.router())
        .links
        .iter()
        .map(|l| l.active_flows)
        .collect();
    assert_eq!(per, [5, 5], "flows per link");
}
