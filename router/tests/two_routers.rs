//! Two real routers linked over mutual TLS carrying TCP flows.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use van_testkit::eventually;
use van_testkit::router::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carries_byte_exact_payloads_from_1_byte_to_16_mib() {
    let (a, _b) = echo_pair().await;
    let addr = a.listener_addr("echo");
    for n in [1usize, 100, 1024, 65_537, 500_000, 2 << 20, 16 << 20] {
        let data = payload(n);
        let got = echo_roundtrip(addr, &data).await;
        assert_eq!(got.len(), n, "length for {n} bytes");
        assert!(got == data, "content for {n} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_delivers_the_whole_reply_then_eof() {
    let (a, _b) = echo_pair().await;
    for n in [4usize, 40_019] {
        let data = payload(n);
        let mut s = TcpStream::connect(a.listener_addr("echo")).await.unwrap();
        s.write_all(&data).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .expect("EOF after the reply")
            .unwrap();
        assert_eq!(got, data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_half_close_reaches_the_client_while_it_keeps_sending() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    // A server that greets, shuts its write side, then reads until the client is done.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = server.local_addr().unwrap();
    let received = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        s.write_all(b"hello").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    a.apply(vec![listener_op("svc", "svc")]).await;
    b.apply(vec![connector_op("svc", "svc", target)]).await;
    a.wait_reachable("svc").await;
    let mut s = TcpStream::connect(a.listener_addr("svc")).await.unwrap();
    let mut greeting = Vec::new();
    s.read_to_end(&mut greeting).await.unwrap();
    assert_eq!(greeting, b"hello");
    // The client's direction is still open after the server's FIN.
    let data = payload(300_000);
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(received.await.unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_byte_connections_open_and_close_cleanly() {
    let (a, b) = echo_pair().await;
    for _ in 0..20 {
        let got = echo_roundtrip(a.listener_addr("echo"), &[]).await;
        assert!(got.is_empty());
    }
    // The router still carries data afterwards, and every flow was accounted for.
    assert_eq!(echo_roundtrip(a.listener_addr("echo"), b"ok").await, b"ok");
    let l = &van_router::admin::listeners(a.router()).listeners[0];
    assert_eq!(l.connections_opened, 21);
    let (l, c) = eventually("all flows closed", async || {
        let l = &van_router::admin::listeners(a.router()).listeners[0];
        let c = &van_router::admin::connectors(b.router()).connectors[0];
        (l.connections_closed == 21 && c.connections_closed == 21).then(|| (l.clone(), c.clone()))
    })
    .await;
    assert_eq!(l.bytes_in, 2);
    assert_eq!(l.bytes_out, 2);
    assert_eq!(c.bytes_in, 2);
    assert_eq!(c.bytes_out, 2);
    assert_eq!(c.active_flows, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_flows_through_two_routers() {
    let (a, b) = echo_pair().await;
    let addr = a.listener_addr("echo");
    // Open all thousand and send on each before finishing any.
    let mut conns = Vec::new();
    for i in 0..1000usize {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&payload(1000 + i)).await.unwrap();
        conns.push(s);
    }
    eventually("1000 flows open at the egress router at once", async || {
        (van_router::admin::flows(b.router()).flows.len() >= 1000).then_some(())
    })
    .await;
    assert_eq!(van_router::admin::flows(a.router()).flows.len(), 1000);
    let mut tasks = Vec::new();
    for (i, mut s) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got == payload(1000 + i)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_holds_up_only_its_own_flow() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let echo = echo_server().await;
    // A server that accepts and never reads.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_addr = stall.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stall.accept().await {
            held.push(s);
        }
    });
    a.apply(vec![
        listener_op("echo", "echo"),
        listener_op("stall", "stall"),
    ])
    .await;
    b.apply(vec![
        connector_op("echo", "echo", echo),
        connector_op("stall", "stall", stall_addr),
    ])
    .await;
    a.wait_reachable("echo").await;
    a.wait_reachable("stall").await;
    // Fill the stalled flow until the window and every buffer on the way are full.
    let mut stalled = TcpStream::connect(a.listener_addr("stall")).await.unwrap();
    let chunk = payload(64 * 1024);
    let mut sent = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_millis(300), stalled.write_all(&chunk)).await {
            Ok(r) => {
                r.unwrap();
                sent += chunk.len();
            }
            Err(_) => break,
        }
        assert!(sent < 256 << 20, "the stalled flow was never held back");
    }
    // The router holds about one window of it, not everything the client sent.
    let flows = van_router::admin::flows(a.router()).flows;
    let f = flows.iter().find(|f| f.routing_key == "stall").unwrap();
    assert!(f.bytes_out > 0);
    // Meanwhile another flow over the same link moves 32 MiB untroubled.
    let data = payload(32 << 20);
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        echo_roundtrip(a.listener_addr("echo"), &data),
    )
    .await
    .expect("the other flow is not held up");
    assert!(got == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_abort_reaches_the_server_as_an_abort() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = server.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        let _ = got_tx.send(());
        let mut more = [0u8; 16];
        let _ = tx.send(s.read(&mut more).await.map_err(|e| e.kind()));
    });
    a.apply(vec![listener_op("svc", "svc")]).await;
    b.apply(vec![connector_op("svc", "svc", target)]).await;
    a.wait_reachable("svc").await;
    let mut s = TcpStream::connect(a.listener_addr("svc")).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    // Once the server has the bytes, reset the connection (SO_LINGER 0, then close).
    got_rx.await.unwrap();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    let seen = tokio::time::timeout(Duration::from_secs(3), rx)
        .await
        .expect("the server learns of the abort promptly")
        .unwrap();
    assert_eq!(seen, Err(std::io::ErrorKind::ConnectionReset), "{seen:?}");
}
