//! Flow endpoints: an application socket on one side, a stream of a data connection on the
//! other. Two halves run side by side:
//!
//! - up: socket -> peer, sending DATA only within the credit the far end granted, and FIN
//!   when the application shuts its write side;
//! - down: peer -> socket, granting credit back as bytes are written to the socket, and
//!   shutting the socket's write side on FIN.
//!
//! A reset from either side ends both halves and resets the socket (RST), so the
//! application sees an abort rather than a clean close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use van_proto::wire::ResetCode;

use crate::mux::{DataConn, FlowInbound, INITIAL_WINDOW, Inbound, InboxRx};
use crate::wire::{Frame, MAX_DATA};

/// First read size for a new flow; grows while reads fill the buffer, so idle flows hold
/// no buffers and bulk flows read in large chunks.
const FIRST_CHUNK: usize = 16 * 1024;

/// Bookkeeping of one flow, shown by the admin API.
#[derive(Debug)]
pub struct FlowRecord {
    pub id: u64,
    pub routing_key: String,
    pub role: &'static str,
    pub client_addr: String,
    pub server_addr: std::sync::Mutex<String>,
    pub path: Vec<String>,
    pub started: Instant,
    /// Client -> server bytes.
    pub bytes_out: AtomicU64,
    /// Server -> client bytes.
    pub bytes_in: AtomicU64,
    /// "tcp", or "http" for a flow that carries one HTTP request.
    pub protocol: &'static str,
    /// HTTP flows: method and path, e.g. "GET /reviews/1".
    pub request: String,
    /// Microseconds from the start to the first server -> client byte; 0 before it.
    pub first_byte_us: AtomicU64,
}

/// A direction of a flow's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Client -> server.
    Out,
    /// Server -> client.
    In,
}

impl FlowRecord {
    /// A flow starting now, with no bytes yet. `server_addr` may be filled in later, when
    /// the flow reaches its server.
    pub(crate) fn new(
        id: u64,
        routing_key: String,
        role: &'static str,
        client_addr: String,
        server_addr: String,
        path: Vec<String>,
    ) -> FlowRecord {
        FlowRecord {
            id,
            routing_key,
            role,
            client_addr,
            server_addr: std::sync::Mutex::new(server_addr),
            path,
            started: Instant::now(),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            protocol: "tcp",
            request: String::new(),
            first_byte_us: AtomicU64::new(0),
        }
    }

    /// Counts `n` bytes moved in direction `dir`, noting when the first byte came back.
    pub(crate) fn add(&self, dir: Dir, n: u64) {
        match dir {
            Dir::Out => {
                self.bytes_out.fetch_add(n, Ordering::Relaxed);
            }
            Dir::In => {
                if self.bytes_in.fetch_add(n, Ordering::Relaxed) == 0 && n > 0 {
                    let us = self.started.elapsed().as_micros().max(1) as u64;
                    self.first_byte_us.store(us, Ordering::Relaxed);
                }
            }
        }
    }

    /// Marks the flow as one HTTP request.
    pub(crate) fn http(mut self, request: String) -> FlowRecord {
        self.protocol = "http";
        self.request = request;
        self
    }
}

/// How a flow ended, for logs, spans and metrics.
#[derive(Debug)]
pub enum Outcome {
    Closed,
    /// Its listener or connector was deleted with `drop_flows`.
    Deleted,
    ResetByPeer(ResetCode, String),
    LinkLost(String),
    SocketError(std::io::Error),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::Deleted => "deleted",
            Outcome::ResetByPeer(..) => "reset",
            Outcome::LinkLost(_) => "link-lost",
            Outcome::SocketError(_) => "socket-error",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Closed => f.write_str("closed"),
            Outcome::Deleted => f.write_str("closed: its listener or connector was deleted"),
            Outcome::ResetByPeer(c, r) => write!(f, "reset by peer ({}): {r}", c.as_str_name()),
            Outcome::LinkLost(r) => write!(f, "link lost: {r}"),
            Outcome::SocketError(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// Fired when one half fails, so the other stops too.
#[derive(Debug, Default)]
struct Abort {
    fired: AtomicBool,
    notify: Notify,
}

impl Abort {
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
    async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.fired.load(Ordering::Acquire) {
                return;
            }
            n.await;
        }
    }
}

/// Sets SO_LINGER to zero so that dropping the socket sends RST instead of FIN.
pub(crate) fn set_reset_on_close(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// Which direction of the flow the endpoint's socket reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    /// The socket is the client's: reads go toward the server.
    Ingress,
    /// The socket is the server's: reads go toward the client.
    Egress,
}

/// The link side of a flow endpoint: its stream on a data connection.
pub(crate) struct StreamEnd {
    pub(crate) conn: Arc<DataConn>,
    pub(crate) stream: u32,
    pub(crate) inbound: Arc<FlowInbound>,
    pub(crate) rx: InboxRx,
}

/// Runs a flow endpoint to completion.
pub(crate) async fn run_endpoint(
    sock: TcpStream,
    end: StreamEnd,
    record: Arc<FlowRecord>,
    side: Side,
    window: u32,
    cancel: &Notify,
) -> Outcome {
    let cancel = cancel.notified();
    tokio::pin!(cancel);
    // Registered now, so a deletion from here on is seen.
    cancel.as_mut().enable();
    let StreamEnd {
        conn,
        stream,
        inbound,
        mut rx,
    } = end;
    // Grant the rest of our receive window beyond the initial credit at once.
    if window > INITIAL_WINDOW {
        let extra = window - INITIAL_WINDOW;
        inbound.budget.fetch_add(i64::from(extra), Ordering::AcqRel);
        conn.send(Frame::Window {
            stream,
            increment: extra,
        });
    }
    let (sent, received) = match side {
        Side::Ingress => (Dir::Out, Dir::In),
        Side::Egress => (Dir::In, Dir::Out),
    };
    let (mut rd, mut wr) = sock.into_split();
    let abort = Abort::default();
    let up = async {
        let r = up(&mut rd, &conn, stream, &inbound, (&record, sent), &abort).await;
        if r.is_err() {
            abort.fire();
        }
        r
    };
    let down = async {
        let r = down(
            &mut wr,
            &conn,
            stream,
            &inbound,
            &mut rx,
            (&record, received),
            window,
            &abort,
        )
        .await;
        if r.is_err() {
            abort.fire();
        }
        r
    };
    let (u, d) = tokio::select! {
        r = async { tokio::join!(up, down) } => r,
        _ = cancel => (Err(Outcome::Deleted), Err(Outcome::Closed)),
    };
    conn.remove(stream);
    let outcome = match (u, d) {
        (Ok(()), Ok(())) => return Outcome::Closed,
        (Err(a), Err(b)) => {
            if matches!(a, Outcome::Closed) {
                b
            } else {
                a
            }
        }
        (Err(e), Ok(())) | (Ok(()), Err(e)) => e,
    };
    match &outcome {
        Outcome::SocketError(e) => conn.reset(
            stream,
            ResetCode::Aborted,
            format!("application socket: {e}"),
        ),
        Outcome::Deleted => conn.reset(stream, ResetCode::Deleted, "listener or connector deleted"),
        _ => {}
    }
    // Abort the application's connection so it does not mistake a failure for an end.
    if let Ok(s) = rd.reunite(wr) {
        set_reset_on_close(&s);
    }
    outcome
}

/// Socket -> peer. `Err(Outcome::Closed)` means "stopped because the other half failed".
async fn up(
    rd: &mut OwnedReadHalf,
    conn: &DataConn,
    stream: u32,
    inbound: &FlowInbound,
    (record, sent): (&FlowRecord, Dir),
    abort: &Abort,
) -> Result<(), Outcome> {
    let mut chunk = FIRST_CHUNK;
    loop {
        let credit = loop {
            let c = inbound.credit.load(Ordering::Acquire);
            if c > 0 {
                break c as usize;
            }
            tokio::select! {
                _ = inbound.credit_notify.notified() => {}
                _ = abort.wait() => return Err(Outcome::Closed),
            }
        };
        tokio::select! {
            r = rd.readable() => r.map_err(Outcome::SocketError)?,
            _ = abort.wait() => return Err(Outcome::Closed),
        }
        let want = chunk.min(credit);
        let mut buf = BytesMut::with_capacity(want);
        match rd.try_read_buf(&mut buf) {
            Ok(0) => {
                conn.send(Frame::Fin { stream });
                return Ok(());
            }
            Ok(n) => {
                inbound.credit.fetch_sub(n as i64, Ordering::AcqRel);
                record.add(sent, n as u64);
                if n == want && chunk < MAX_DATA {
                    chunk = (chunk * 2).min(MAX_DATA);
                }
                conn.send(Frame::Data {
                    stream,
                    data: buf.freeze(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(Outcome::SocketError(e)),
        }
    }
}

/// Peer -> socket.
#[allow(clippy::too_many_arguments)]
async fn down(
    wr: &mut OwnedWriteHalf,
    conn: &DataConn,
    stream: u32,
    inbound: &FlowInbound,
    rx: &mut InboxRx,
    (record, received): (&FlowRecord, Dir),
    window: u32,
    abort: &Abort,
) -> Result<(), Outcome> {
    // Grant credit back in quarter-window steps: few WINDOW frames, and the sender never
    // waits as long as the socket drains.
    let threshold = u64::from(window / 4);
    let mut consumed: u64 = 0;
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = abort.wait() => return Err(Outcome::Closed),
        };
        match ev {
            Some(Inbound::Data(b)) => {
                let n = b.len() as u64;
                tokio::select! {
                    r = wr.write_all(&b) => r.map_err(Outcome::SocketError)?,
                    _ = abort.wait() => return Err(Outcome::Closed),
                }
                record.add(received, n);
                consumed += n;
                if consumed >= threshold {
                    inbound.budget.fetch_add(consumed as i64, Ordering::AcqRel);
                    conn.send(Frame::Window {
                        stream,
                        increment: consumed as u32,
                    });
                    consumed = 0;
                }
            }
            Some(Inbound::Fin) => {
                let _ = wr.shutdown().await;
                return Ok(());
            }
            Some(Inbound::Reset(ResetCode::LinkLost, r)) => return Err(Outcome::LinkLost(r)),
            Some(Inbound::Reset(code, r)) => return Err(Outcome::ResetByPeer(code, r)),
            None => return Err(Outcome::LinkLost("connection gone".into())),
        }
    }
}

/// Relays between two local sockets (listener and connector on the same router),
/// propagating half-close and resets, and counting bytes as they pass.
pub(crate) async fn splice_local(
    client: TcpStream,
    server: TcpStream,
    record: &FlowRecord,
    cancel: [&Notify; 2],
) -> Outcome {
    let (c0, c1) = (cancel[0].notified(), cancel[1].notified());
    tokio::pin!(c0, c1);
    c0.as_mut().enable();
    c1.as_mut().enable();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let abort = Abort::default();
    async fn pump(
        r: &mut OwnedReadHalf,
        w: &mut OwnedWriteHalf,
        (rec, dir): (&FlowRecord, Dir),
        abort: &Abort,
    ) -> Result<(), Outcome> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let read = tokio::select! {
                r = tokio::io::AsyncReadExt::read(r, &mut buf) => r,
                _ = abort.wait() => return Err(Outcome::Closed),
            };
            match read {
                Ok(0) => {
                    let _ = w.shutdown().await;
                    return Ok(());
                }
                Ok(k) => {
                    tokio::select! {
                        r = w.write_all(&buf[..k]) => r.map_err(Outcome::SocketError)?,
                        _ = abort.wait() => return Err(Outcome::Closed),
                    }
                    rec.add(dir, k as u64);
                }
                Err(e) => return Err(Outcome::SocketError(e)),
            }
        }
    }
    let a = async {
        let r = pump(&mut cr, &mut sw, (record, Dir::Out), &abort).await;
        if r.is_err() {
            abort.fire();
        }
        r
    };
    let b = async {
        let r = pump(&mut sr, &mut cw, (record, Dir::In), &abort).await;
        if r.is_err() {
            abort.fire();
        }
        r
    };
    let (x, y) = tokio::select! {
        r = async { tokio::join!(a, b) } => r,
        _ = c0 => (Err(Outcome::Deleted), Err(Outcome::Closed)),
        _ = c1 => (Err(Outcome::Deleted), Err(Outcome::Closed)),
    };
    let outcome = match (x, y) {
        (Ok(()), Ok(())) => return Outcome::Closed,
        // `Closed` from one half means "stopped because the other failed".
        (Err(Outcome::Closed), Err(e)) | (Err(e), _) | (Ok(()), Err(e)) => e,
    };
    if let Ok(s) = cr.reunite(cw) {
        set_reset_on_close(&s);
    }
    if let Ok(s) = sr.reunite(sw) {
        set_reset_on_close(&s);
    }
    outcome
}
