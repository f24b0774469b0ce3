//! Connections from a connector to its target, kept open and reused.
//!
//! HTTP/1.1: a connection carries one request at a time and goes back to the idle list
//! when its response body has been read to the end. HTTP/2: requests share a connection
//! until it has [`MAX_STREAMS`] in flight; only then is another one opened.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tracing::debug;

use super::codec::Wire;
use super::stream::BoxError;

/// Requests in flight on one HTTP/2 connection before another is opened. Servers commonly
/// allow 100 or more (RFC 9113 recommends at least 100); hyper does not tell us the
/// server's own figure, so this is the conservative common value.
pub(crate) const MAX_STREAMS: usize = 100;
/// Idle HTTP/1.1 connections kept per target.
const MAX_IDLE: usize = 256;

pub(crate) type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why a request got no response.
pub(crate) enum SendError {
    /// No connection could be made: nothing reached the server, and the request comes
    /// back for another target.
    Connect(String, Box<http::Request<ReqBody>>),
    /// The request was (perhaps partly) sent, and the connection failed or the server reset it.
    Request(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e, _) => f.write_str(e),
            SendError::Request(e) => {
                write!(f, "target failed the request: {e}")?;
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    write!(f, ": {s}")?;
                    src = s.source();
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug)]
struct H2Conn {
    tx: http2::SendRequest<ReqBody>,
    in_flight: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct Conns {
    idle_h1: Vec<http1::SendRequest<ReqBody>>,
    h2: Vec<H2Conn>,
}

/// The pool of one connector.
#[derive(Debug)]
pub struct Pool {
    wire: Wire,
    conns: Mutex<Conns>,
    /// HTTP/2: held while a connection is being opened, so that requests arriving together
    /// share it instead of each opening their own.
    opening: tokio::sync::Mutex<()>,
    /// Connections open now (idle or busy), for the admin API.
    open: Arc<AtomicUsize>,
    this: Weak<Pool>,
}

impl Pool {
    pub(crate) fn new(wire: Wire) -> Arc<Pool> {
        Arc::new_cyclic(|this| Pool {
            wire,
            conns: Mutex::new(Conns::default()),
            opening: tokio::sync::Mutex::new(()),
            open: Arc::new(AtomicUsize::new(0)),
            this: this.clone(),
        })
    }

    pub(crate) fn wire(&self) -> Wire {
        self.wire
    }

    pub fn open_connections(&self) -> u32 {
        self.open.load(Ordering::Relaxed) as u32
    }

    /// Sends `req` on a pooled connection, or on a new one made with `connect`.
    pub(crate) async fn send<F>(
        &self,
        req: http::Request<ReqBody>,
        connect: impl Fn() -> F,
    ) -> Result<http::Response<PooledBody>, SendError>
    where
        F: Future<Output = Result<TcpStream, String>>,
    {
        match self.wire {
            Wire::Http1 => self.send_h1(req, connect).await,
            Wire::Http2 => self.send_h2(req, connect).await,
        }
    }

    async fn send_h1<F>(
        &self,
        mut req: http::Request<ReqBody>,
        connect: impl Fn() -> F,
    ) -> Result<http::Response<PooledBody>, SendError>
    where
        F: Future<Output = Result<TcpStream, String>>,
    {
        loop {
            let pooled = {
                let mut c = self.conns.lock().expect("pool lock");
                loop {
                    match c.idle_h1.pop() {
                        Some(tx) if tx.is_closed() => continue,
                        other => break other,
                    }
                }
            };
            let fresh = pooled.is_none();
            let mut tx = match pooled {
                Some(tx) => tx,
                None => match self.connect_h1(&connect).await {
                    Ok(tx) => tx,
                    Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                },
            };
            if tx.ready().await.is_err() {
                if fresh {
                    let e = "target closed the new connection".to_string();
                    return Err(SendError::Connect(e, Box::new(req)));
                }
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let ret = Return::H1 {
                        pool: self.this.clone(),
                        tx,
                    };
                    return Ok(resp.map(|b| PooledBody::new(b, ret)));
                }
                Err(e) => req = again(e, fresh)?,
            }
        }
    }

    async fn send_h2<F>(
        &self,
        mut req: http::Request<ReqBody>,
        connect: impl Fn() -> F,
    ) -> Result<http::Response<PooledBody>, SendError>
    where
        F: Future<Output = Result<TcpStream, String>>,
    {
        loop {
            let mut pooled = self.h2_with_room();
            let fresh = pooled.is_none();
            if fresh {
                let _opening = self.opening.lock().await;
                // Another request may have opened one while this one waited.
                pooled = self.h2_with_room();
                if pooled.is_none() {
                    let tx = match self.connect_h2(&connect).await {
                        Ok(tx) => tx,
                        Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                    };
                    let in_flight = Arc::new(AtomicUsize::new(0));
                    self.conns.lock().expect("pool lock").h2.push(H2Conn {
                        tx: tx.clone(),
                        in_flight: in_flight.clone(),
                    });
                    pooled = Some((tx, in_flight));
                }
            }
            let (mut tx, in_flight) = pooled.expect("a connection");
            in_flight.fetch_add(1, Ordering::Relaxed);
            let ret = Return::H2(InFlight(in_flight));
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(resp.map(|b| PooledBody::new(b, ret))),
                Err(e) => req = again(e, fresh)?,
            }
        }
    }

    /// The open HTTP/2 connection with the fewest requests in flight, below the limit.
    fn h2_with_room(&self) -> Option<(http2::SendRequest<ReqBody>, Arc<AtomicUsize>)> {
        let mut c = self.conns.lock().expect("pool lock");
        c.h2.retain(|h| !h.tx.is_closed());
        c.h2.iter()
            .filter(|h| h.in_flight.load(Ordering::Relaxed) < MAX_STREAMS)
            .min_by_key(|h| h.in_flight.load(Ordering::Relaxed))
            .map(|h| (h.tx.clone(), h.in_flight.clone()))
    }

    async fn connect_h1<F>(
        &self,
        connect: &impl Fn() -> F,
    ) -> Result<http1::SendRequest<ReqBody>, String>
    where
        F: Future<Output = Result<TcpStream, String>>,
    {
        let io = connect().await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake failed: {e}"))?;
        let open = OpenGuard::new(&self.open);
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "Target connection ended");
            }
            drop(open);
        });
        Ok(tx)
    }

    async fn connect_h2<F>(
        &self,
        connect: &impl Fn() -> F,
    ) -> Result<http2::SendRequest<ReqBody>, String>
    where
        F: Future<Output = Result<TcpStream, String>>,
    {
        let io = connect().await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1024 * 1024)
            .initial_connection_window_size(4 * 1024 * 1024)
            .max_frame_size(64 * 1024)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        let open = OpenGuard::new(&self.open);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "Target connection ended");
            }
            drop(open);
        });
        Ok(tx)
    }

    /// Sends a request that asks to switch protocols on a connection of its own: after a
    /// 101 the connection belongs to the tunnel, so it is never pooled.
    pub(crate) async fn send_upgrade<F>(
        &self,
        req: http::Request<ReqBody>,
        connect: impl Fn() -> F,
    ) -> Result<http::Response<Incoming>, SendError>
    where
        F: Future<Output = Result<TcpStream, String>>,
    {
        let mut tx = match self.connect_h1(&connect).await {
            Ok(tx) => tx,
            Err(e) => return Err(SendError::Connect(e, Box::new(req))),
        };
        if let Err(e) = tx.ready().await {
            return Err(SendError::Connect(e.to_string(), Box::new(req)));
        }
        tx.try_send_request(req).await.map_err(|mut e| {
            let m = e.take_message();
            not_sent(e.into_error(), m)
        })
    }

    fn give_back(&self, tx: http1::SendRequest<ReqBody>) {
        let mut c = self.conns.lock().expect("pool lock");
        if c.idle_h1.len() < MAX_IDLE && !tx.is_closed() {
            c.idle_h1.push(tx);
        }
    }
}

/// A request that did not go out: it comes back to be tried on another connection when it
/// was a pooled one (the server may have closed it while idle), and fails otherwise.
fn again(
    mut e: TrySendError<http::Request<ReqBody>>,
    fresh: bool,
) -> Result<http::Request<ReqBody>, SendError> {
    match e.take_message() {
        Some(r) if !fresh => Ok(r),
        m => Err(not_sent(e.into_error(), m)),
    }
}

/// A failed send: the request comes back when it never left.
fn not_sent(e: hyper::Error, req: Option<http::Request<ReqBody>>) -> SendError {
    match req {
        Some(r) => SendError::Connect(e.to_string(), Box::new(r)),
        None => SendError::Request(e),
    }
}

/// Counts an open connection until dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        OpenGuard(n.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Un-counts a request on an HTTP/2 connection.
#[derive(Debug)]
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What to do once a response body has been read to the end.
#[derive(Debug)]
enum Return {
    H1 {
        pool: Weak<Pool>,
        tx: http1::SendRequest<ReqBody>,
    },
    H2(InFlight),
}

/// A response body from a pooled connection; the connection is reusable once it ends.
/// Dropped early, an HTTP/1.1 connection closes (hyper cannot reuse it) and an HTTP/2
/// stream is reset.
#[derive(Debug)]
pub(crate) struct PooledBody {
    inner: Incoming,
    ret: Option<Return>,
}

impl PooledBody {
    fn new(inner: Incoming, ret: Return) -> Self {
        let mut b = PooledBody {
            inner,
            ret: Some(ret),
        };
        if b.inner.is_end_stream() {
            b.done();
        }
        b
    }

    fn done(&mut self) {
        match self.ret.take() {
            Some(Return::H1 { pool, tx }) => {
                if let Some(p) = pool.upgrade() {
                    p.give_back(tx);
                }
            }
            Some(Return::H2(f)) => drop(f),
            None => {}
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &r {
            None => self.done(),
            Some(Err(_)) => self.ret = None,
            Some(Ok(_)) if self.inner.is_end_stream() => self.done(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
