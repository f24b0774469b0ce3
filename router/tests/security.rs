//! Peers that must be refused (wrong CA, expired or missing client certificate) and peers
//! that misbehave after a good TLS handshake. The router must refuse, count, log, and keep
//! serving everyone else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use van_router::tls::TlsMaterial;
use van_router::wire::Frame;
use van_testkit::eventually;
use van_testkit::router::*;

/// Waits until `r` has counted at least `n` link failures of `kind`.
async fn wait_failures(r: &TestRouter, kind: &str, n: u64) {
    let what = format!("{} to count {n} {kind} link failures", r.router().id());
    eventually(&what, async || {
        (r.router().metrics().link_failure_count(kind) >= n).then_some(())
    })
    .await;
}

async fn link_state(r: &TestRouter) -> (String, String) {
    let l = &van_router::admin::links(r.router()).links[0];
    (l.state.clone(), l.last_error.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_client_certificate_from_another_ca() {
    let good = Pki::new("good-ca");
    let rogue = Pki::new("rogue-ca");
    // A trusts B's CA, but presents a certificate the rogue CA signed.
    let (cert, key) = rogue.issue("a");
    let mut profile = good.profile_from(cert, key);
    profile.ca_pem = Some(good.ca_pem().to_string());
    let (a, b) = dial_with(&good, profile).await;
    wait_failures(&b, "tls", 1).await;
    assert!(b.router().table().nodes.len() == 1, "b must not learn a");
    let (state, err) = link_state(&a).await;
    assert_ne!(state, "up");
    assert!(
        err.contains("alert") || err.contains("certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_expired_client_certificate() {
    let pki = Pki::new("ca");
    let (cert, key) = pki.issue_with("a", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (_a, b) = dial_with(&pki, pki.profile_from(cert, key)).await;
    wait_failures(&b, "tls", 1).await;
    assert_eq!(b.router().table().nodes.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_server_whose_certificate_another_ca_signed() {
    let good = Pki::new("good-ca");
    let rogue = Pki::new("rogue-ca");
    let (a, _b) = dial_with(&rogue, good.profile("a")).await;
    wait_failures(&a, "tls", 1).await;
    let (state, err) = link_state(&a).await;
    assert_eq!(state, "failed");
    assert!(err.contains("not signed by a trusted CA"), "{err}");
    let l = &van_router::admin::links(a.router()).links[0];
    assert_eq!(l.failure(), van_proto::admin::LinkFailure::Certificate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_port_nobody_listens_on_fails_as_connect_refused() {
    let pki = Pki::new("ca");
    // Bound but not listening: connections are refused, and no other process can take it.
    let nowhere = van_testkit::ReservedPort::localhost();
    let mut fa = base_config("a", pki.profile("a"));
    link_to(&mut fa, "to-nowhere", nowhere.addr(), 1);
    let a = start(fa).await;
    wait_failures(&a, "connect", 1).await;
    let l = &van_router::admin::links(a.router()).links[0];
    assert_eq!(l.state, "failed");
    assert_eq!(l.failure(), van_proto::admin::LinkFailure::ConnectRefused);
    assert_eq!(l.direction, "outgoing");
    // The OS's reason appears once.
    assert_eq!(
        l.last_error.matches("refused").count(),
        1,
        "{}",
        l.last_error
    );
}

/// A TLS client that presents no certificate at all.
fn anonymous_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    use rustls::pki_types::pem::PemObject;
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_peer_without_a_client_certificate() {
    let pki = Pki::new("ca");
    let mut fb = base_config("b", pki.profile("b"));
    link_listener(&mut fb);
    let b = start(fb).await;
    let tcp = TcpStream::connect(b.link_addr()).await.unwrap();
    let conn = tokio_rustls::TlsConnector::from(anonymous_client(&pki))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    // TLS 1.3 finishes the client's side first; the refusal shows on first use.
    if let Ok(mut s) = conn {
        let _ = s.write_all(b"hello").await;
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    }
    wait_failures(&b, "tls", 1).await;
}

/// A TLS client with a valid certificate, speaking whatever bytes a test gives it.
async fn trusted_raw_client(
    pki: &Pki,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let m = TlsMaterial::load(&pki.profile("intruder")).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(m.client_config().unwrap())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn handshake(role: van_proto::wire::Role, link_id: u64) -> Vec<u8> {
    let mut b = BytesMut::new();
    Frame::Handshake(van_proto::wire::Handshake {
        version: van_router::wire::VERSION,
        router_id: "intruder".into(),
        instance: 1,
        role: role as i32,
        link_id,
        cost: 1,
        site_id: "x".into(),
        mode: "interior".into(),
    })
    .encode_to(&mut b);
    b.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_frames_after_a_good_handshake_do_not_hurt_the_router() {
    use van_proto::wire::Role;
    let pki = Pki::new("ca");
    let (a, b) = two_routers(&pki).await;
    let echo = echo_server().await;
    b.apply(vec![connector_op("svc", "svc", echo)]).await;
    a.apply(vec![listener_op("svc", "svc")]).await;
    a.wait_reachable("svc").await;

    let attacks: Vec<Vec<u8>> = vec![
        // Not a frame at all.
        payload(10_000),
        // A handshake, then garbage.
        [handshake(Role::InterRouterControl, 7), payload(5000)].concat(),
        // A header announcing a huge frame.
        [
            handshake(Role::InterRouterControl, 8),
            vec![0x03, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat(),
        // A truncated frame, then the connection closes.
        [
            handshake(Role::InterRouterControl, 9),
            vec![0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50, 1, 2],
        ]
        .concat(),
        // A data connection for a link that does not exist.
        handshake(Role::InterRouterData, 10),
        // A handshake claiming to be b itself.
        {
            let mut b2 = BytesMut::new();
            Frame::Handshake(van_proto::wire::Handshake {
                version: van_router::wire::VERSION,
                router_id: "b".into(),
                role: Role::InterRouterControl as i32,
                ..Default::default()
            })
            .encode_to(&mut b2);
            b2.to_vec()
        },
        // A future protocol version.
        {
            let mut b2 = BytesMut::new();
            Frame::Handshake(van_proto::wire::Handshake {
                version: 99,
                router_id: "future".into(),
                role: Role::InterRouterControl as i32,
                ..Default::default()
            })
            .encode_to(&mut b2);
            b2.to_vec()
        },
    ];
    for bytes in attacks {
        let mut s = trusted_raw_client(&pki, b.link_addr()).await;
        let _ = s.write_all(&bytes).await;
        let _ = s.flush().await;
        let mut sink = Vec::new();
        // The router closes the connection (or keeps waiting on a truncated frame until we go).
        let _ = tokio::time::timeout(Duration::from_millis(500), s.read_to_end(&mut sink)).await;
    }
    // b's link to a is unaffected, and traffic still flows.
    let data = payload(1 << 20);
    assert!(echo_roundtrip(a.listener_addr("svc"), &data).await == data);
    assert!(b.router().metrics().link_failure_count("protocol") >= 1);
    assert!(b.router().metrics().link_failure_count("refused") >= 3);
}

/// Reads frames until one satisfies `want`.
async fn read_until<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    want: impl Fn(&Frame) -> bool,
) -> Frame {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            while let Some(f) = van_router::wire::decode(buf).unwrap() {
                if want(&f) {
                    return f;
                }
            }
            assert!(s.read_buf(buf).await.unwrap() > 0, "closed");
        }
    })
    .await
    .expect("frame did not arrive")
}

fn frame(f: Frame) -> Vec<u8> {
    let mut b = BytesMut::new();
    f.encode_to(&mut b);
    b.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_link_that_breaks_the_protocol_is_cut_and_nothing_else_is() {
    use van_proto::wire::{FlowOpen, Role};
    let pki = Pki::new("ca");
    // The intruder sends no hellos: give b a max age that outlasts the test.
    let mut fb = base_config("b", pki.profile("b"));
    fb.timers.hello_max_age_ms = 30_000;
    link_listener(&mut fb);
    let b = start(fb).await;
    let mut fa = base_config("a", pki.profile("a"));
    link_to(&mut fa, "to-b", b.link_addr(), 1);
    let a = start(fa).await;
    let echo = echo_server().await;
    // A server that accepts and never reads, so the router's window is not replenished.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = sink.accept().await {
            held.push(s);
        }
    });
    b.apply(vec![
        connector_op("svc", "svc", echo),
        connector_op("sink", "sink", sink_addr),
    ])
    .await;
    a.apply(vec![listener_op("svc", "svc")]).await;
    a.wait_reachable("svc").await;

    // A full link (control + data) from a peer with a valid certificate.
    let mut ctl = trusted_raw_client(&pki, b.link_addr()).await;
    ctl.write_all(&handshake(Role::InterRouterControl, 42))
        .await
        .unwrap();
    let mut cbuf = BytesMut::new();
    read_until(&mut ctl, &mut cbuf, |f| matches!(f, Frame::Handshake(_))).await;
    let mut data = trusted_raw_client(&pki, b.link_addr()).await;
    data.write_all(&handshake(Role::InterRouterData, 42))
        .await
        .unwrap();
    let mut dbuf = BytesMut::new();
    read_until(&mut data, &mut dbuf, |f| matches!(f, Frame::Handshake(_))).await;

    // A flow that overruns its window is reset; the link stays.
    let open = |stream| {
        frame(Frame::Open {
            stream,
            open: FlowOpen {
                routing_key: "sink".into(),
                dest_router: "b".into(),
                origin_router: "intruder".into(),
                flow_id: 1,
                ttl: 8,
                ..Default::default()
            },
        })
    };
    data.write_all(&open(1)).await.unwrap();
    // Far more than the window plus what the kernel buffers can absorb.
    let chunk = bytes::Bytes::from(payload(200_000));
    let writer = async {
        for _ in 0..200 {
            if data
                .write_all(&frame(Frame::Data {
                    stream: 1,
                    data: chunk.clone(),
                }))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    writer.await;
    let reset = read_until(&mut data, &mut dbuf, |f| {
        matches!(f, Frame::Reset { stream: 1, .. })
    })
    .await;
    let Frame::Reset { reset, .. } = reset else {
        unreachable!()
    };
    assert_eq!(
        reset.code,
        van_proto::wire::ResetCode::Protocol as i32,
        "{reset:?}"
    );
    // Frames for streams that do not exist are ignored.
    data.write_all(&frame(Frame::Window {
        stream: 99,
        increment: 5,
    }))
    .await
    .unwrap();
    data.write_all(&frame(Frame::Fin { stream: 77 }))
        .await
        .unwrap();

    // An OPEN using b's own stream parity is a protocol error: b cuts this link.
    data.write_all(&open(2)).await.unwrap();
    let mut sink = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), data.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "b must close the data connection");
    let r = tokio::time::timeout(Duration::from_secs(5), ctl.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "b must close the control connection too");

    let data = payload(1 << 20);
    assert!(echo_roundtrip(a.listener_addr("svc"), &data).await == data);
}
