//! Two real routers linked over mutual TLS carrying TCP flows.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use van_router::config::{EntityOp, TcpConnector, TcpListener};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carries_byte_exact_payloads_from_1_byte_to_16_mib() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let echo = echo_server().await;
    a.running
        .router
        .apply_ops(
            vec![EntityOp::PutTcpListener(TcpListener {
                name: "echo".into(),
                host: "127.0.0.1".into(),
                port: 0,
                routing_key: "echo".into(),
            })],
            false,
            false,
        )
        .await
        .unwrap();
    b.running
        .router
        .apply_ops(
            vec![EntityOp::PutTcpConnector(TcpConnector {
                name: "echo".into(),
                host: "127.0.0.1".into(),
                port: echo.port(),
                routing_key: "echo".into(),
            })],
            false,
            false,
        )
        .await
        .unwrap();
    a.wait_reachable("echo").await;
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
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let echo = echo_server().await;
    let mut fa_ops = vec![];
    fa_ops.push(EntityOp::PutTcpListener(TcpListener {
        name: "svc".into(),
        host: "127.0.0.1".into(),
        port: 0,
        routing_key: "svc".into(),
    }));
    a.router().apply_ops(fa_ops, false, false).await.unwrap();
    b.router()
        .apply_ops(
            vec![EntityOp::PutTcpConnector(TcpConnector {
                name: "svc".into(),
                host: "127.0.0.1".into(),
                port: echo.port(),
                routing_key: "svc".into(),
            })],
            false,
            false,
        )
        .await
        .unwrap();
    a.wait_reachable("svc").await;
    for n in [4usize, 40_019] {
        let data = payload(n);
        let mut s = TcpStream::connect(a.listener_addr("svc")).await.unwrap();
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
async fn zero_byte_connections_open_and_close_cleanly() {
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let echo = echo_server().await;
    a.router()
        .apply_ops(
            vec![EntityOp::PutTcpListener(TcpListener {
                name: "svc".into(),
                host: "127.0.0.1".into(),
                port: 0,
                routing_key: "svc".into(),
            })],
            false,
            false,
        )
        .await
        .unwrap();
    b.router()
        .apply_ops(
            vec![EntityOp::PutTcpConnector(TcpConnector {
                name: "svc".into(),
                host: "127.0.0.1".into(),
                port: echo.port(),
                routing_key: "svc".into(),
            })],
            false,
            false,
        )
        .await
        .unwrap();
    a.wait_reachable("svc").await;
    for _ in 0..20 {
        let got = echo_roundtrip(a.listener_addr("svc"), &[]).await;
        assert!(got.is_empty());
    }
    // The router still carries data afterwards.
    assert_eq!(echo_roundtrip(a.listener_addr("svc"), b"ok").await, b"ok");
}
