//! Probes of a link listener with what a stranger can send: garbage, a certificate from
//! another CA, an oversized first frame, slow and silent connections, and more connections
//! in their handshake than the router keeps. The router must refuse, say that the refused
//! connection was incoming (from where, at which step), keep its warnings few, and go on
//! linking with a good peer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use van_router::tls::TlsMaterial;
use van_router::wire::Frame;
use van_testkit::closed_within;
use van_testkit::router::*;

async fn listening_router(pki: &Pki) -> TestRouter {
    let mut fb = base_config("b", pki.profile("b"));
    link_listener(&mut fb);
    start(fb).await
}

/// A router that dials `b`, and a wait until the two are linked.
async fn good_peer_links(pki: &Pki, b: &TestRouter) -> TestRouter {
    let mut fa = base_config("a", pki.profile("a"));
    link_to(&mut fa, "to-b", b.link_addr(), 1);
    let a = start(fa).await;
    b.wait_route("a", "a").await;
    a
}

fn handshake_frame() -> Vec<u8> {
    let mut b = BytesMut::new();
    Frame::Handshake(van_proto::wire::Handshake {
        version: van_router::wire::VERSION,
        router_id: "intruder".into(),
        instance: 1,
        role: van_proto::wire::Role::InterRouterControl as i32,
        link_id: 7,
        cost: 1,
        site_id: "x".into(),
        mode: "interior".into(),
    })
    .encode_to(&mut b);
    b.to_vec()
}

async fn trusted_tls(pki: &Pki, b: &TestRouter) -> tokio_rustls::client::TlsStream<TcpStream> {
    let m = TlsMaterial::load(&pki.profile("intruder")).unwrap();
    let tcp = TcpStream::connect(b.link_addr()).await.unwrap();
    tokio_rustls::TlsConnector::from(m.client_config().unwrap())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_a_foreign_ca_and_an_oversized_first_frame_are_refused_and_a_good_peer_links() {
    let pki = Pki::new("ca");
    let b = listening_router(&pki).await;
    // Not TLS.
    let mut tcp = TcpStream::connect(b.link_addr()).await.unwrap();
    tcp.write_all(&[0x16, 3, 1, 0xff, 0xff]).await.unwrap();
    tcp.write_all(&[0x5a; 8192]).await.unwrap();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5))
            .await
            .is_some()
    );
    // A client certificate another CA signed.
    let rogue = Pki::new("rogue-ca");
    let (cert, key) = rogue.issue("rogue");
    let mut profile = pki.profile_from(cert, key);
    profile.ca_pem = Some(pki.ca_pem().to_string());
    let m = TlsMaterial::load(&profile).unwrap();
    let tcp = TcpStream::connect(b.link_addr()).await.unwrap();
    if let Ok(mut s) = tokio_rustls::TlsConnector::from(m.client_config().unwrap())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        // TLS 1.3: the client's side finishes first; the refusal shows on first use.
        let _ = s.write_all(&handshake_frame()).await;
        assert!(
            closed_within(&mut s, Duration::from_secs(5))
                .await
                .is_some()
        );
    }
    // A trusted peer whose first frame announces 1 MB: refused on the header alone.
    let mut s = trusted_tls(&pki, &b).await;
    s.write_all(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0])
        .await
        .unwrap();
    s.flush().await.unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(5))
            .await
            .is_some()
    );
    van_testkit::eventually("refusals counted", async || {
        let m = b.router().metrics();
        (m.link_failure_count("tls") >= 2 && m.link_failure_count("protocol") >= 1).then_some(())
    })
    .await;
    let _a = good_peer_links(&pki, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_handshake_cap_are_closed_at_once_and_a_good_peer_links_after() {
    let pki = Pki::new("ca");
    let b = listening_router(&pki).await;
    // 128 connections that never start TLS hold every place.
    let mut idle = Vec::new();
    for _ in 0..128 {
        idle.push(TcpStream::connect(b.link_addr()).await.unwrap());
    }
    // The listener accepts in order, so the next one finds no place: closed at once, long
    // before the 10 s handshake deadline.
    let mut extra = TcpStream::connect(b.link_addr()).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(5))
            .await
            .is_some(),
        "a connection beyond the cap must be closed at once"
    );
    assert!(b.router().metrics().link_failure_count("busy") >= 1);
    let mut buf = [0u8; 1];
    assert!(
        matches!(idle[0].try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the first ones still hold their places"
    );
    drop(idle);
    let _a = good_peer_links(&pki, &b).await;
}

/// Log lines, captured for one test (the subscriber is this thread's, and a current-thread
/// runtime runs every task of the test on it).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn matching(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

fn capture() -> (Lines, tracing::subscriber::DefaultGuard) {
    let lines = Lines::default();
    let sink = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    (lines, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn silent_and_slow_incoming_connections_time_out_and_are_logged_as_incoming_and_few() {
    let (lines, _guard) = capture();
    let pki = Pki::new("ca");
    let b = listening_router(&pki).await;

    // Twenty connections that never start TLS.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(b.link_addr()).await.unwrap());
    }
    let first_port = silent[0].local_addr().unwrap().port();
    let started = tokio::time::Instant::now();
    for s in &mut silent {
        assert!(closed_within(s, Duration::from_secs(15)).await.is_some());
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(12),
        "closed after {took:?}"
    );
    assert_eq!(b.router().metrics().link_failure_count("timeout"), 20);

    // A trusted peer that sends its handshake frame one byte a second (it needs ~40 s).
    let s = trusted_tls(&pki, &b).await;
    let (mut r, mut w) = tokio::io::split(s);
    let slow = tokio::spawn(async move {
        for byte in handshake_frame() {
            if w.write_all(&[byte]).await.is_err() || w.flush().await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        true
    });
    let started = tokio::time::Instant::now();
    assert!(
        closed_within(&mut r, Duration::from_secs(30))
            .await
            .is_some()
    );
    assert!(
        started.elapsed() <= Duration::from_secs(11),
        "{:?}",
        started.elapsed()
    );
    slow.abort();

    // One warning for the 21 timeouts (the slow hello's is of the same kind), which says what
    // happened and to whom.
    let refused = lines.matching("Refused incoming link");
    assert_eq!(refused.len(), 1, "{}", lines.text());
    let line = &refused[0];
    assert!(
        line.contains(&format!("incoming connection from 127.0.0.1:{first_port}"))
            && line.contains("timed out after 10s waiting for the TLS handshake"),
        "{line}"
    );
    assert!(!lines.text().contains("connect to"), "{}", lines.text());
    // At the next minute, the rest are summed up in one line.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let summary = lines.matching("more incoming connections refused");
    assert_eq!(summary.len(), 1, "{}", lines.text());
    assert!(summary[0].contains("20 more"), "{}", summary[0]);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_sends_its_hello_is_refused_at_that_step() {
    let (lines, _guard) = capture();
    let pki = Pki::new("ca");
    let b = listening_router(&pki).await;
    let mut s = trusted_tls(&pki, &b).await;
    let port = s.get_ref().0.local_addr().unwrap().port();
    assert!(
        closed_within(&mut s, Duration::from_secs(15))
            .await
            .is_some()
    );
    let refused = lines.matching("Refused incoming link");
    assert_eq!(refused.len(), 1, "{}", lines.text());
    assert!(
        refused[0].contains(&format!(
            "incoming connection from 127.0.0.1:{port}: timed out after 10s waiting for the handshake frame (hello)"
        )),
        "{}",
        refused[0]
    );
}
