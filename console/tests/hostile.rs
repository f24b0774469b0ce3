//! Probes of the console's port with what anyone who reaches it can send before logging in:
//! garbage, oversized requests, silent and slow clients, and more connections than the
//! console keeps. It must refuse, stay within its limits, and go on serving a good client.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use van_testkit::http::exchange;
use van_testkit::{ReservedPort, closed_within};

/// A console (no login) whose router is nowhere: the port is what is probed.
async fn console() -> (SocketAddr, oneshot::Sender<()>, ReservedPort) {
    let nowhere = ReservedPort::localhost();
    let options = van_console::Options::unsecured(&nowhere.addr().to_string());
    let config = van_console::Config::from_options(options).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(van_console::run(config, listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop, nowhere)
}

async fn served(addr: SocketAddr) -> bool {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let (status, _, body) = exchange(tcp, "GET", "/api/v1/openapi.json", "", "").await;
    status == 200 && body.contains("openapi")
}

#[tokio::test]
async fn garbage_and_oversized_requests_are_refused_and_a_good_client_is_served() {
    let (addr, _stop, _nowhere) = console().await;
    assert!(served(addr).await);
    // Not HTTP.
    let mut g = TcpStream::connect(addr).await.unwrap();
    g.write_all(&[0u8, 0xff, 13, 10, 13, 10, 1, 2, 3])
        .await
        .unwrap();
    let text = closed_within(&mut g, Duration::from_secs(10))
        .await
        .expect("closed");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    // 50 MB announced with `Expect: 100-continue`: 413 at once, without "100 Continue".
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            50 << 20
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let text = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("closed");
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    // A body over the limit, sent in full.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let big = format!(
        "{{\"username\":\"{}\",\"password\":\"x\"}}",
        "u".repeat(100_000)
    );
    let (status, _, _) = exchange(tcp, "POST", "/api/v1/login", "", &big).await;
    assert_eq!(status, 413);
    // A request head larger than the console reads.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let pad = format!("X-Pad: {}\r\n", "p".repeat(100_000));
    let (status, _, _) = exchange(tcp, "GET", "/api/v1/openapi.json", &pad, "").await;
    assert!(status == 431 || status == 0, "{status}");
    assert!(served(addr).await);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_a_good_client_is_served_after() {
    let (addr, _stop, _nowhere) = console().await;
    let mut idle = Vec::new();
    for _ in 0..512 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Accepted in order: the next one finds no place and is closed at once, not at the
    // 30 s deadline for a first request.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(5))
            .await
            .is_some(),
        "a connection beyond the cap must be closed at once"
    );
    assert!(!served(addr).await, "no place while 512 are held");
    drop(idle);
    van_testkit::eventually("a good client to be served", async || {
        served(addr).await.then_some(())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn silent_half_preface_and_slow_clients_are_cut_off_at_the_request_deadline() {
    let (addr, _stop, _nowhere) = console().await;
    // Says nothing.
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(60))
            .await
            .is_some()
    );
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(31), "closed after {took:?}");
    // Starts an HTTP/2 preface and stops: telling HTTP/1 from HTTP/2 must not wait forever.
    let started = tokio::time::Instant::now();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(
        closed_within(&mut half, Duration::from_secs(60))
            .await
            .is_some(),
        "a half preface must not hold the connection"
    );
    assert!(started.elapsed() <= Duration::from_secs(31));
    // Sends a request head one byte a second (it needs ~50 s).
    let started = tokio::time::Instant::now();
    let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    let slow = tokio::spawn(async move {
        for b in b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: slow.example\r\n\r\n" {
            if w.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let text = closed_within(&mut r, Duration::from_secs(120)).await;
    assert!(text.is_some_and(|t| !t.contains("200 OK")));
    assert!(
        started.elapsed() <= Duration::from_secs(31),
        "{:?}",
        started.elapsed()
    );
    slow.abort();
    assert!(served(addr).await);
}
