//! Serving the application on a listener, over plain HTTP or TLS (HTTP/1.1 and HTTP/2),
//! until shutdown; then open connections get a moment to finish.
//!
//! Anyone who reaches the port may connect before logging in, so connections are bounded:
//! a cap on open connections (more are closed at once), deadlines for the TLS handshake, the
//! first bytes (the HTTP/2 preface, or enough of an HTTP/1 request to tell) and each HTTP/1
//! request head, pings that close dead HTTP/2 connections, and limits on head and body sizes
//! (a declared body too large is answered 413 before any of it is read).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

/// A client has this long to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Time to send a request head.
const HEADER_READ: Duration = Duration::from_secs(30);
/// Event streams never end by themselves, so the drain at shutdown is bounded.
const DRAIN: Duration = Duration::from_secs(1);
/// Connections open at once (browsers hold a few each, with their event streams).
const MAX_CONNECTIONS: usize = 512;
/// Largest request body: the console takes a login and small gRPC requests, nothing more.
const MAX_BODY: usize = 64 * 1024;
/// Largest HTTP/1 request head and HTTP/2 header block.
const MAX_HEAD: usize = 64 * 1024;
/// Streams open at once on one HTTP/2 connection.
const MAX_STREAMS: u32 = 128;
/// HTTP/2 pings: one every interval; no answer within the timeout closes the connection.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Warnings about closed connections: at most one per period, then a count.
const WARN_PERIOD: Duration = Duration::from_secs(60);

pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let busy = Busy::default();
    // Requests with bodies (login, gRPC) are read through axum's extractors: bound them all.
    let app = app.layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(error) => {
                    // Out of file descriptors, usually: let some close.
                    tracing::warn!(%error, "Cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(place) = open.clone().try_acquire_owned() else {
            drop(tcp);
            busy.closed(peer);
            continue;
        };
        let app = app.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _place = place;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                let too_large = declared_length(&req).is_some_and(|n| n > MAX_BODY as u64);
                let mut app = app.clone();
                async move {
                    if too_large {
                        // Before the body is polled, so no "100 Continue" goes out either.
                        return Ok(too_large_response());
                    }
                    app.call(req).await
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // A client that never finishes its request head does not hold a task forever.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ)
                .max_buf_size(MAX_HEAD);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(PING_INTERVAL)
                .keep_alive_timeout(PING_TIMEOUT)
                .max_concurrent_streams(MAX_STREAMS)
                .max_header_list_size(MAX_HEAD as u32);
            let result = match acceptor {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(prompt(tcp)), service)
                        .into_owned();
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(prompt(tls)), service)
                        .into_owned();
                    watcher.watch(conn).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "Connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

fn declared_length<B>(req: &hyper::Request<B>) -> Option<u64> {
    req.headers()
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn too_large_response() -> axum::response::Response {
    let mut r = axum::response::Response::new(axum::body::Body::from(format!(
        "{{\"error\":\"payload too large\",\"message\":\"request bodies have at most {MAX_BODY} bytes\"}}"
    )));
    *r.status_mut() = hyper::StatusCode::PAYLOAD_TOO_LARGE;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

/// Connections closed at the cap: the first warning per period, then how many followed.
#[derive(Default)]
struct Busy(Mutex<Option<(Instant, u64)>>);

impl Busy {
    fn closed(&self, peer: SocketAddr) {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match &mut *last {
            Some((since, n)) if now.duration_since(*since) < WARN_PERIOD => *n += 1,
            _ => {
                let before = last.map_or(0, |(_, n)| n);
                tracing::warn!(
                    %peer,
                    max_connections = MAX_CONNECTIONS,
                    closed_since_last_warning = before,
                    "Console at its connection limit: closed a new connection"
                );
                *last = Some((now, 0));
            }
        }
    }
}

/// The first bytes a client sends (HTTP/2's 24-byte preface, or that much of an HTTP/1
/// request) must arrive within [`HEADER_READ`]: telling the protocol apart has no deadline of
/// its own, and HTTP/1's head deadline starts only after it. Answering disarms it too.
fn prompt<T>(io: T) -> van_proto::grpc::Prompt<T> {
    van_proto::grpc::Prompt::new(io, 24, HEADER_READ).disarmed_by_answer()
}
