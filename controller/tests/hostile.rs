//! Probes of the controller's network endpoints with what a stranger can send: garbage,
//! oversized input, slow clients, wrong credentials, and many idle connections. Each endpoint
//! must refuse, stay within its limits, and go on serving a good client.
//!
//! The claims endpoint runs on its own (with short limits where a test waits for one) against
//! an issuer that counts what it is asked; the last tests run a whole controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;
use van_config_sync::BearerToken;
use van_controller::api::ApiToken;
use van_controller::claims::server::{self, Limits};
use van_controller::error::ClaimError;
use van_controller::token::CertToken;
use van_proto::controller::{self as pb, site_controller_client::SiteControllerClient};
use van_proto::grpc::ServerLimits;
use van_testkit::closed_within;
use van_testkit::site::{MemStore, kube_site};

const SITE_ID: &str = "0123456789abcdef";

// === the claims endpoint on its own ===

/// Honours claim `good` with secret `s3cret`; any other secret is tampered, any other claim
/// unknown. Counts the claims it checks.
#[derive(Debug)]
struct Issuer {
    token: CertToken,
    asked: AtomicUsize,
}

impl server::Issuer for Issuer {
    fn redeem(
        &self,
        claim: &str,
        secret: &str,
        _requester: &str,
    ) -> impl Future<Output = Result<CertToken, ClaimError>> + Send {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let refuse = |reason| ClaimError {
            reason,
            detail: format!("{reason} here"),
            retry: false,
        };
        std::future::ready(match (claim, secret) {
            ("good", "s3cret") => Ok(self.token.clone()),
            ("good", _) => Err(refuse("tampered")),
            _ => Err(refuse("unknown")),
        })
    }
}

struct Claims {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    issuer: Arc<Issuer>,
}

fn client_tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
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

/// A claims endpoint on loopback with `limits`.
async fn claims(limits: Limits) -> Claims {
    let certs = van_controller::certs::new_site_certs(
        SITE_ID,
        van_controller::certs::server_hosts(["127.0.0.1"]),
    )
    .unwrap();
    let tls = server::server_tls(&certs.server_cert, &certs.server_key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cert, key) = van_controller::certs::issue_client(SITE_ID, &certs, "east").unwrap();
    let issuer = Arc::new(Issuer {
        token: CertToken {
            name: "good".into(),
            ca_cert: certs.ca_cert.clone(),
            cert,
            key,
            inter_router_host: "west.example".into(),
            inter_router_port: 55671,
            edge_host: "west.example".into(),
            edge_port: 45671,
            generated_by: "west-id".into(),
            site_name: "west".into(),
            cost: 3,
        },
        asked: AtomicUsize::new(0),
    });
    tokio::spawn(server::serve_with(
        issuer.clone(),
        tls,
        listener,
        limits,
        std::future::pending(),
    ));
    Claims {
        addr,
        tls: client_tls(&certs.ca_cert),
        issuer,
    }
}

impl Claims {
    async fn tls(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        tls_to(self.addr, &self.tls, "127.0.0.1").await
    }

    async fn post(&self, claim: &str, secret: &str) -> Answer {
        post_to(self.addr, self.tls.clone(), claim.into(), secret.into()).await
    }

    fn asked(&self) -> usize {
        self.issuer.asked.load(Ordering::SeqCst)
    }
}

async fn tls_to(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .unwrap()
}

async fn post_to(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    claim: String,
    secret: String,
) -> Answer {
    let s = tls_to(addr, &tls, "127.0.0.1").await;
    exchange(s, &claim_request(&claim, &secret)).await
}

fn claim_request(claim: &str, secret: &str) -> Vec<u8> {
    format!(
        "POST /{claim} HTTP/1.1\r\nHost: test\r\nskupper-site-id: {SITE_ID}\r\n\
         skupper-site-name: east\r\nContent-Length: {}\r\n\r\n{secret}",
        secret.len()
    )
    .into_bytes()
}

/// What came back: the status of the last (final) response head, and the whole text.
#[derive(Debug)]
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let head = self
            .text
            .split("\r\n\r\n")
            .find(|h| h.starts_with("HTTP/") && !h.starts_with("HTTP/1.1 100"))?;
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Writes `bytes` and reads until the server closes (at most ten seconds).
async fn exchange(mut io: impl AsyncRead + AsyncWrite + Unpin, bytes: &[u8]) -> Answer {
    let _ = io.write_all(bytes).await;
    let _ = io.flush().await;
    read_answer(io).await
}

async fn read_answer(mut io: impl AsyncRead + Unpin) -> Answer {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close within 10 s");
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split("\r\n\r\n")
        .filter(|h| h.starts_with("HTTP/"))
        .filter_map(|h| h.split(' ').nth(1)?.parse::<u16>().ok())
        .filter(|s| *s != 100)
        .last()
        .unwrap_or(0);
    Answer { status, text }
}

#[tokio::test]
async fn claims_garbage_is_refused_and_a_good_claim_is_still_redeemed() {
    let c = claims(Limits::default()).await;
    // Not TLS at all.
    let mut tcp = TcpStream::connect(c.addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3])
        .await
        .unwrap();
    tcp.write_all(&[0xa5; 4096]).await.unwrap();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(10))
            .await
            .is_some()
    );
    // TLS, then bytes that are not HTTP.
    let a = exchange(c.tls().await, &[0u8, 159, 146, 150, 13, 10, 13, 10]).await;
    assert!(a.status == 400 || a.status == 0, "{a:?}");
    // HTTP, but not a claim.
    let a = exchange(c.tls().await, b"GET /good HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(a.status, 405, "{a:?}");
    // A header block larger than the endpoint reads.
    let big = format!(
        "POST /good HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nContent-Length: 6\r\n\r\ns3cret",
        "a".repeat(64 * 1024)
    );
    let a = exchange(c.tls().await, big.as_bytes()).await;
    assert!(a.status == 431 || a.status == 0, "{a:?}");
    assert_eq!(c.asked(), 0, "nothing of this reached the issuer");
    let a = c.post("good", "s3cret").await;
    assert_eq!(a.status, 200, "{a:?}");
}

#[tokio::test]
async fn claims_an_oversized_body_is_refused_413_before_any_of_it_is_read() {
    let c = claims(Limits::default()).await;
    // 50 MB announced, with `Expect: 100-continue`: 413 at once, and no "100 Continue".
    let head = format!(
        "POST /good HTTP/1.1\r\nHost: x\r\nskupper-site-id: {SITE_ID}\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        50 << 20
    );
    let a = exchange(c.tls().await, head.as_bytes()).await;
    assert_eq!(a.status, 413, "{a:?}");
    assert!(!a.text.contains(" 100 "), "no 100 Continue: {a:?}");
    // The same without the Expect header, body following: still 413.
    let mut s = c.tls().await;
    s.write_all(head.replace("Expect: 100-continue\r\n", "").as_bytes())
        .await
        .unwrap();
    let _ = s.write_all(&[b'x'; 64 * 1024]).await;
    let a = read_answer(s).await;
    assert_eq!(a.status, 413, "{a:?}");
    // A chunked body that runs past the limit.
    let mut chunked = format!(
        "POST /good HTTP/1.1\r\nHost: x\r\nskupper-site-id: {SITE_ID}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        chunked.extend_from_slice(format!("{:x}\r\n", 4000).as_bytes());
        chunked.extend_from_slice(&[b's'; 4000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let a = exchange(c.tls().await, &chunked).await;
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(c.asked(), 0);
    assert_eq!(c.post("good", "s3cret").await.status, 200);
}

#[tokio::test]
async fn claims_slow_and_silent_clients_are_cut_off_at_their_deadlines() {
    let c = claims(Limits {
        handshake: Duration::from_millis(500),
        header_read: Duration::from_millis(500),
        connection: Duration::from_secs(3),
        ..Limits::default()
    })
    .await;
    // Connects and says nothing: closed at the handshake deadline.
    let started = tokio::time::Instant::now();
    let mut tcp = TcpStream::connect(c.addr).await.unwrap();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5))
            .await
            .is_some()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // Sends its request head one byte every 100 ms (it needs ~15 s): cut off long before.
    let started = tokio::time::Instant::now();
    let s = c.tls().await;
    let (mut r, mut w) = tokio::io::split(s);
    let request = claim_request("good", "s3cret");
    let writer = tokio::spawn(async move {
        for b in request {
            if w.write_all(&[b]).await.is_err() || w.flush().await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    });
    assert!(
        closed_within(&mut r, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
    writer.abort();
    assert_eq!(c.asked(), 0);
    assert_eq!(c.post("good", "s3cret").await.status, 200);
}

#[tokio::test]
async fn claims_wrong_secrets_get_403_then_429_with_retry_after_and_the_issuer_is_spared() {
    let c = claims(Limits {
        backoff_min: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    for i in 0..5 {
        let a = c.post("good", &format!("guess-{i}")).await;
        assert_eq!(a.status, 403, "guess {i}: {a:?}");
    }
    assert_eq!(c.asked(), 5);
    // Held off now, right secret or not, without the issuer being asked.
    for secret in ["guess-5", "s3cret"] {
        let a = c.post("good", secret).await;
        assert_eq!(a.status, 429, "{a:?}");
        assert_eq!(a.header("retry-after"), Some("1"), "{a:?}");
        assert!(a.text.contains("rate-limited"), "{a:?}");
    }
    // A flood changes nothing either.
    let flood: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(post_to(
                c.addr,
                c.tls.clone(),
                "good".into(),
                "guess".into(),
            ))
        })
        .collect();
    for a in flood {
        let a = a.await.unwrap();
        assert_eq!(a.status, 429, "{a:?}");
    }
    assert_eq!(c.asked(), 5, "no claim reached the issuer while held off");
    // After the wait one more try is checked; failing it holds the source off again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(c.post("good", "guess-6").await.status, 403);
    assert_eq!(c.asked(), 6);
    let a = c.post("good", "s3cret").await;
    assert_eq!(a.status, 429, "{a:?}");
}

#[tokio::test]
async fn claims_successes_do_not_count_against_a_source() {
    let c = claims(Limits::default()).await;
    for _ in 0..12 {
        assert_eq!(c.post("good", "s3cret").await.status, 200);
    }
    assert_eq!(c.asked(), 12);
}

#[tokio::test]
async fn claims_connections_beyond_the_cap_are_closed_at_once_and_a_good_client_is_served_after() {
    let c = claims(Limits {
        max_connections: 8,
        ..Limits::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(c.addr).await.unwrap());
    }
    // The endpoint accepts in order: once an extra connection is closed, all eight hold a place.
    let mut extra = TcpStream::connect(c.addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(5))
            .await
            .is_some(),
        "a ninth connection must be closed at once, not at the 10 s handshake deadline"
    );
    // The idle ones are still open (they would be closed at the handshake deadline).
    let mut buf = [0u8; 1];
    assert!(
        matches!(idle[0].try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    );
    drop(idle);
    // Their places come back as they close.
    let mut ok = false;
    for _ in 0..100 {
        let tcp = TcpStream::connect(c.addr).await.unwrap();
        let conn = tokio_rustls::TlsConnector::from(c.tls.clone())
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await;
        if let Ok(s) = conn {
            let a = exchange(s, &claim_request("good", "s3cret")).await;
            if a.status == 200 {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "a good client is served once the idle connections are gone"
    );
}

// === the API server's limits ===

/// The API server with `limits`, serving gRPC health only.
async fn api_server(limits: ServerLimits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = van_proto::grpc::health_for::<
        pb::site_controller_server::SiteControllerServer<van_controller::api::Api>,
    >()
    .await;
    tokio::spawn(van_proto::grpc::serve_with(
        tonic::service::Routes::new(health),
        van_controller::ApiBind::Tcp(listener),
        limits,
        std::future::pending(),
    ));
    addr
}

async fn healthy(addr: SocketAddr) -> bool {
    let Ok(ch) = van_proto::grpc::channel(&addr.to_string(), Some(Duration::from_secs(5))).await
    else {
        return false;
    };
    van_testkit::grpc::health(ch, "").await.is_ok()
}

#[tokio::test]
async fn api_connections_without_a_preface_are_closed_and_the_cap_holds() {
    let addr = api_server(ServerLimits {
        max_connections: 4,
        preface: Duration::from_millis(500),
        ..ServerLimits::default()
    })
    .await;
    // Silent: closed at the preface deadline.
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The preface one byte every 100 ms (2.4 s in all): cut off at the deadline.
    let started = tokio::time::Instant::now();
    let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    let writer = tokio::spawn(async move {
        for b in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
            if w.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(
        closed_within(&mut r, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    writer.abort();
    // Garbage instead of a preface.
    let mut g = TcpStream::connect(addr).await.unwrap();
    g.write_all(&[0xde; 1000]).await.unwrap();
    assert!(
        closed_within(&mut g, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert!(healthy(addr).await);
}

#[tokio::test]
async fn api_connections_beyond_the_cap_are_closed_at_once() {
    let addr = api_server(ServerLimits {
        max_connections: 4,
        preface: Duration::from_secs(60),
        ..ServerLimits::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(5))
            .await
            .is_some(),
        "a fifth connection must be closed at once"
    );
    assert!(
        !healthy(addr).await,
        "no place for a good client while four are held"
    );
    drop(idle);
    van_testkit::eventually("a good client to be served", async || {
        healthy(addr).await.then_some(())
    })
    .await;
}

// === a whole controller ===

const API_TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Site {
    api: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn site() -> Site {
    let claims = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = van_controller::site::SiteConfig {
        ingress_host: "127.0.0.1".into(),
        claims_port: claims.local_addr().unwrap().port(),
        ..kube_site("west", &van_controller::site::random_hex(16))
    };
    let c = van_controller::Controller::open(cfg, Arc::new(MemStore::default()))
        .await
        .unwrap();
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = api.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(van_controller::serve(
        c,
        van_controller::Sockets {
            api: van_controller::ApiBind::Tcp(api),
            claims: Some(claims),
            api_token: Some(ApiToken::new(API_TOKEN).unwrap()),
        },
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    Site { api: addr, stop }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_refuses_wrong_credentials_oversized_calls_and_wrong_claims() {
    let site = site().await;
    let channel = van_proto::grpc::lazy_channel(&site.api.to_string()).unwrap();
    let mut client = SiteControllerClient::with_interceptor(
        channel.clone(),
        BearerToken::new(Some(API_TOKEN)).unwrap(),
    );
    // Garbage on the API port is dropped; the API still answers.
    let mut g = TcpStream::connect(site.api).await.unwrap();
    g.write_all(&[0x55; 4096]).await.unwrap();
    assert!(
        closed_within(&mut g, Duration::from_secs(10))
            .await
            .is_some()
    );
    // A wrong API token.
    let mut wrong = SiteControllerClient::with_interceptor(
        channel.clone(),
        BearerToken::new(Some("0123456789abcdef-guessed")).unwrap(),
    );
    let e = wrong.get_site(pb::GetSiteRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // A message larger than the API decodes.
    let e = client
        .create_token(pb::CreateTokenRequest {
            name: "x".repeat(van_controller::api::MAX_MESSAGE + 1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );

    // A claim token, and wrong secrets for it from one source.
    let token = client
        .create_token(pb::CreateTokenRequest {
            name: "for-east".into(),
            uses: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let van_controller::token::Token::Claim(claim) =
        van_controller::token::parse(&token.yaml).unwrap()
    else {
        panic!("a claim token: {}", token.yaml)
    };
    let url = claim.url.strip_prefix("https://").unwrap();
    let (host_port, name) = url.split_once('/').unwrap();
    let port: u16 = host_port.rsplit_once(':').unwrap().1.parse().unwrap();
    let claims_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tls = client_tls(&claim.ca_cert);
    let post = |secret: String| post_to(claims_addr, tls.clone(), name.to_string(), secret);
    for i in 0..5 {
        let a = post(format!("wrong-{i}")).await;
        assert_eq!(a.status, 403, "{a:?}");
    }
    let a = post(claim.secret.clone()).await;
    assert_eq!(a.status, 429, "even the right secret waits: {a:?}");
    let wait: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=300).contains(&wait), "{a:?}");
    // The API still answers.
    client.get_site(pb::GetSiteRequest {}).await.unwrap();
    site.stop.send(true).unwrap();
}
