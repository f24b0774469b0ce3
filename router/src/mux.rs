//! A data connection between two routers: many flows multiplexed over one TLS stream.
//!
//! Each flow is a stream id on each hop. Streams this side opens use its parity (odd for
//! the dialer, even for the acceptor). At the ends of a flow a stream is `Local`, feeding a
//! flow endpoint (`flow.rs`); at a transit router a stream is spliced to a stream on another
//! connection and frames are relabelled and passed on.
//!
//! Flow control is end to end: each endpoint grants its sender a window, and transit routers
//! only check that no sender exceeds what the far end granted, which bounds what any router
//! buffers per flow to one window in each direction.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};
use van_proto::wire::{self, ResetCode};

use crate::wire::{Frame, HEADER_LEN, WireError, decode};

/// Credit every flow starts with in each direction, before any WINDOW frame.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// What the writer task is asked to do.
#[derive(Debug)]
pub(crate) enum Out {
    Frame(Frame),
    Close,
}

/// Events for one flow endpoint.
#[derive(Debug)]
pub(crate) enum Inbound {
    Data(Bytes),
    Fin,
    Reset(ResetCode, String),
}

/// The shared half of a flow endpoint that the connection reader feeds.
#[derive(Debug)]
pub(crate) struct FlowInbound {
    /// Events for the endpoint, and the endpoint's waker while it waits for one. A queue
    /// under a lock rather than a channel: a tokio channel allocates about 1.8 KiB per flow
    /// up front, which every HTTP request and every TCP connection paid.
    inbox: Mutex<(VecDeque<Inbound>, Option<Waker>)>,
    /// Bytes this endpoint may still send (granted by the far end).
    pub(crate) credit: AtomicI64,
    pub(crate) credit_notify: Notify,
    /// Bytes the far end may still send us; a DATA frame beyond it is a protocol violation.
    pub(crate) budget: AtomicI64,
    /// The stream was reset or its connection closed: nothing more can be sent on it.
    gone: AtomicBool,
    gone_notify: Notify,
}

impl FlowInbound {
    pub(crate) fn new() -> (Arc<FlowInbound>, InboxRx) {
        let fi = Arc::new(FlowInbound {
            inbox: Mutex::new((VecDeque::new(), None)),
            credit: AtomicI64::new(i64::from(INITIAL_WINDOW)),
            credit_notify: Notify::new(),
            budget: AtomicI64::new(i64::from(INITIAL_WINDOW)),
            gone: AtomicBool::new(false),
            gone_notify: Notify::new(),
        });
        (fi.clone(), InboxRx(fi))
    }

    /// Hands an event to the endpoint.
    pub(crate) fn push(&self, ev: Inbound) {
        let waker = {
            let mut inbox = self.inbox.lock().expect("inbox lock");
            inbox.0.push_back(ev);
            inbox.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ends the stream for this endpoint: the event goes to its receiver, and a sender
    /// waiting for credit or for the end wakes up.
    fn end(&self, ev: Inbound) {
        self.push(ev);
        self.gone.store(true, Ordering::Release);
        self.credit_notify.notify_one();
        self.gone_notify.notify_waiters();
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Resolves once the stream is reset or its connection closed.
    pub(crate) async fn gone(&self) {
        loop {
            let n = self.gone_notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_gone() {
                return;
            }
            n.await;
        }
    }
}

/// The endpoint's side of its inbox.
#[derive(Debug)]
pub(crate) struct InboxRx(Arc<FlowInbound>);

impl InboxRx {
    /// The next event. Cancel safe: an event is taken only when it is returned.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let mut inbox = self.0.inbox.lock().expect("inbox lock");
        match inbox.0.pop_front() {
            Some(ev) => Poll::Ready(Some(ev)),
            None => {
                if !inbox.1.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    inbox.1 = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    pub(crate) async fn recv(&mut self) -> Option<Inbound> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next event if one is there.
    pub(crate) fn try_recv(&mut self) -> Option<Inbound> {
        self.0.inbox.lock().expect("inbox lock").0.pop_front()
    }
}

#[derive(Debug)]
struct Transit {
    other: Arc<DataConn>,
    other_stream: u32,
    /// Bytes the sender on this side may still send through us.
    budget: i64,
    /// A FIN arrived on this side.
    fin: bool,
}

#[derive(Debug)]
enum Entry {
    Local(Arc<FlowInbound>),
    Transit(Transit),
}

/// Decides what happens to a flow opened by a peer (egress or transit). Implemented by the router.
pub(crate) trait OpenHandler: Send + Sync + 'static {
    fn on_open(&self, conn: &Arc<DataConn>, stream: u32, open: wire::FlowOpen);
}

/// One multiplexed data connection to a neighbour.
#[derive(Debug)]
pub struct DataConn {
    pub peer: String,
    pub link_id: u64,
    pub cost: u32,
    /// The peer is an edge router attached to us; it may ask us to route its flows.
    pub from_edge: bool,
    tx: mpsc::UnboundedSender<Out>,
    streams: Mutex<HashMap<u32, Entry>>,
    next_stream: AtomicU32,
    closed: AtomicBool,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Frames from the peer for unknown streams (races with resets; counted, not fatal).
    pub stray_frames: AtomicU64,
}

impl DataConn {
    /// Creates the connection state; `dialer` picks the stream-id parity.
    pub(crate) fn new(
        peer: String,
        link_id: u64,
        cost: u32,
        dialer: bool,
        from_edge: bool,
    ) -> (Arc<DataConn>, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let c = DataConn {
            peer,
            link_id,
            cost,
            from_edge,
            tx,
            streams: Mutex::new(HashMap::new()),
            next_stream: AtomicU32::new(if dialer { 1 } else { 2 }),
            closed: AtomicBool::new(false),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            stray_frames: AtomicU64::new(0),
        };
        (Arc::new(c), rx)
    }

    fn ours(&self, stream: u32) -> bool {
        stream % 2 == self.next_stream.load(Ordering::Relaxed) % 2
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn active_streams(&self) -> usize {
        self.streams.lock().expect("streams lock").len()
    }

    pub(crate) fn send(&self, f: Frame) {
        let _ = self.tx.send(Out::Frame(f));
    }

    pub(crate) fn reset(&self, stream: u32, code: ResetCode, reason: impl Into<String>) {
        self.send(Frame::Reset {
            stream,
            reset: wire::FlowReset {
                code: code as i32,
                reason: reason.into(),
            },
        });
    }

    /// Allocates a stream id for a flow this router opens and registers its endpoint.
    /// Returns `None` when the connection is closed.
    pub(crate) fn open_local(&self, inbound: Arc<FlowInbound>) -> Option<u32> {
        let mut streams = self.streams.lock().expect("streams lock");
        if self.is_closed() {
            return None;
        }
        let id = self.alloc_id(&streams);
        streams.insert(id, Entry::Local(inbound));
        Some(id)
    }

    fn alloc_id(&self, streams: &HashMap<u32, Entry>) -> u32 {
        loop {
            // Wrapping keeps the parity; 0 is reserved for control frames.
            let id = self.next_stream.fetch_add(2, Ordering::Relaxed);
            if id != 0 && !streams.contains_key(&id) {
                return id;
            }
        }
    }

    /// Registers the endpoint of a flow the peer opened.
    pub(crate) fn accept_local(&self, stream: u32, inbound: Arc<FlowInbound>) -> bool {
        let mut streams = self.streams.lock().expect("streams lock");
        if self.is_closed() {
            return false;
        }
        streams.insert(stream, Entry::Local(inbound));
        true
    }

    pub(crate) fn remove(&self, stream: u32) {
        self.streams.lock().expect("streams lock").remove(&stream);
    }

    /// Splices `stream` on `self` (opened by the peer) to a new stream on `next` and forwards
    /// the OPEN. Fails when `next` is closed.
    pub(crate) fn splice(
        self: &Arc<Self>,
        stream: u32,
        next: &Arc<DataConn>,
        open: wire::FlowOpen,
    ) -> bool {
        let y = {
            let mut ns = next.streams.lock().expect("streams lock");
            if next.is_closed() {
                return false;
            }
            let y = next.alloc_id(&ns);
            ns.insert(
                y,
                Entry::Transit(Transit {
                    other: self.clone(),
                    other_stream: stream,
                    budget: i64::from(INITIAL_WINDOW),
                    fin: false,
                }),
            );
            y
        };
        {
            let mut s = self.streams.lock().expect("streams lock");
            s.insert(
                stream,
                Entry::Transit(Transit {
                    other: next.clone(),
                    other_stream: y,
                    budget: i64::from(INITIAL_WINDOW),
                    fin: false,
                }),
            );
        }
        next.send(Frame::Open { stream: y, open });
        true
    }

    /// Marks the connection closed and fails every flow on it: local endpoints get a reset,
    /// spliced streams are reset on their other connection.
    pub(crate) fn close(&self, reason: &str) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let streams: Vec<(u32, Entry)> =
            self.streams.lock().expect("streams lock").drain().collect();
        debug!(peer = %self.peer, flows = streams.len(), reason, "Data connection closed");
        for (_, e) in streams {
            match e {
                Entry::Local(fi) => {
                    fi.end(Inbound::Reset(ResetCode::LinkLost, reason.to_string()));
                }
                Entry::Transit(t) => {
                    t.other.remove(t.other_stream);
                    t.other.reset(
                        t.other_stream,
                        ResetCode::LinkLost,
                        format!("link lost: {reason}"),
                    );
                }
            }
        }
        let _ = self.tx.send(Out::Close);
    }

    /// Handles one frame from the peer. An error closes the connection.
    fn handle(self: &Arc<Self>, frame: Frame, opens: &dyn OpenHandler) -> Result<(), WireError> {
        match frame {
            Frame::Open { stream, open } => {
                if self.ours(stream) {
                    return Err(WireError::BadStream {
                        ty: crate::wire::ty::OPEN,
                        stream,
                        reason: "peer opened a stream with our parity",
                    });
                }
                if self
                    .streams
                    .lock()
                    .expect("streams lock")
                    .contains_key(&stream)
                {
                    return Err(WireError::BadStream {
                        ty: crate::wire::ty::OPEN,
                        stream,
                        reason: "stream already open",
                    });
                }
                opens.on_open(self, stream, open);
            }
            Frame::Data { stream, data } => self.on_data(stream, data),
            Frame::Window { stream, increment } => self.on_window(stream, increment),
            Frame::Fin { stream } => self.on_fin(stream),
            Frame::Reset { stream, reset } => {
                let e = self.streams.lock().expect("streams lock").remove(&stream);
                match e {
                    Some(Entry::Local(fi)) => {
                        let code = ResetCode::try_from(reset.code).unwrap_or(ResetCode::Aborted);
                        fi.end(Inbound::Reset(code, reset.reason));
                    }
                    Some(Entry::Transit(t)) => {
                        t.other.remove(t.other_stream);
                        t.other.send(Frame::Reset {
                            stream: t.other_stream,
                            reset,
                        });
                    }
                    None => {
                        self.stray_frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            other => {
                return Err(WireError::BadStream {
                    ty: other.encode().0[0],
                    stream: 0,
                    reason: "control frame on a data connection",
                });
            }
        }
        Ok(())
    }

    fn on_data(&self, stream: u32, data: Bytes) {
        let len = data.len() as i64;
        let mut streams = self.streams.lock().expect("streams lock");
        match streams.get_mut(&stream) {
            Some(Entry::Local(fi)) => {
                if fi.budget.fetch_sub(len, Ordering::AcqRel) - len < 0 {
                    let fi = fi.clone();
                    streams.remove(&stream);
                    drop(streams);
                    warn!(peer = %self.peer, stream, "Flow window overrun; resetting flow");
                    self.reset(stream, ResetCode::Protocol, "window exceeded");
                    fi.end(Inbound::Reset(
                        ResetCode::Protocol,
                        "window exceeded".into(),
                    ));
                } else {
                    fi.push(Inbound::Data(data));
                }
            }
            Some(Entry::Transit(t)) => {
                t.budget -= len;
                if t.budget < 0 {
                    let (other, os) = (t.other.clone(), t.other_stream);
                    streams.remove(&stream);
                    drop(streams);
                    warn!(peer = %self.peer, stream, "Flow window overrun in transit; resetting flow");
                    other.remove(os);
                    other.reset(os, ResetCode::Protocol, "window exceeded upstream");
                    self.reset(stream, ResetCode::Protocol, "window exceeded");
                } else {
                    t.other.send(Frame::Data {
                        stream: t.other_stream,
                        data,
                    });
                }
            }
            None => {
                self.stray_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_window(&self, stream: u32, increment: u32) {
        let streams = self.streams.lock().expect("streams lock");
        match streams.get(&stream) {
            Some(Entry::Local(fi)) => {
                fi.credit.fetch_add(i64::from(increment), Ordering::AcqRel);
                fi.credit_notify.notify_one();
            }
            Some(Entry::Transit(t)) => {
                let (other, os) = (t.other.clone(), t.other_stream);
                drop(streams);
                // The grant lets the sender on the other side send more through us.
                if let Some(Entry::Transit(ot)) =
                    other.streams.lock().expect("streams lock").get_mut(&os)
                {
                    ot.budget = ot.budget.saturating_add(i64::from(increment));
                }
                other.send(Frame::Window {
                    stream: os,
                    increment,
                });
            }
            None => {
                self.stray_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_fin(&self, stream: u32) {
        let mut streams = self.streams.lock().expect("streams lock");
        match streams.get_mut(&stream) {
            Some(Entry::Local(fi)) => {
                fi.push(Inbound::Fin);
            }
            Some(Entry::Transit(t)) => {
                t.fin = true;
                let (other, os) = (t.other.clone(), t.other_stream);
                drop(streams);
                other.send(Frame::Fin { stream: os });
                // Once both directions have finished, the splice is no longer needed.
                let done = {
                    let mut o = other.streams.lock().expect("streams lock");
                    let done = matches!(o.get(&os), Some(Entry::Transit(ot)) if ot.fin);
                    if done {
                        o.remove(&os);
                    }
                    done
                };
                if done {
                    self.remove(stream);
                }
            }
            None => {
                self.stray_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Largest single read from the socket. Reading many TLS records per system call, rather
/// than the 4 KiB rustls reads by itself, is most of what makes a link fast.
const READ_BUF: usize = 256 * 1024;
/// Reads per wake-up before giving the writer a turn.
const READS_PER_TURN: usize = 4;
/// A batch of outgoing frames is encrypted in one go up to these limits.
const BATCH_BYTES: usize = 512 * 1024;
const BATCH_FRAMES: usize = 64;

/// Splits an established tokio-rustls stream into its socket and TLS state, so one task can
/// drive both directions without a lock and with large reads and writes.
pub(crate) fn into_parts(s: tokio_rustls::TlsStream<TcpStream>) -> (TcpStream, rustls::Connection) {
    match s {
        tokio_rustls::TlsStream::Client(c) => {
            let (io, conn) = c.into_inner();
            (io, rustls::Connection::Client(conn))
        }
        tokio_rustls::TlsStream::Server(c) => {
            let (io, conn) = c.into_inner();
            (io, rustls::Connection::Server(conn))
        }
    }
}

/// Non-blocking writes to the socket, for `rustls::Connection::write_tls`.
struct SockWriter<'a>(&'a TcpStream);

impl std::io::Write for SockWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs a data connection until it closes: decrypts and dispatches incoming frames, encrypts
/// and sends queued ones. Returns why it ended; the connection is closed by then.
pub(crate) async fn run_data(
    conn: Arc<DataConn>,
    sock: TcpStream,
    mut tls: rustls::Connection,
    mut plain: BytesMut,
    mut rx: mpsc::UnboundedReceiver<Out>,
    opens: Arc<dyn OpenHandler>,
) -> String {
    // We bound what is queued ourselves (flow windows and write batches).
    tls.set_buffer_limit(None);
    let mut rbuf = vec![0u8; READ_BUF];
    let mut batch: Vec<Frame> = Vec::with_capacity(BATCH_FRAMES);
    let reason = loop {
        // Frames that arrived with the handshake, or are left from the last read.
        if let Err(e) = dispatch(&conn, &mut plain, opens.as_ref()) {
            warn!(peer = %conn.peer, error = %e, "Peer sent an invalid frame; closing data connection");
            break format!("protocol error: {e}");
        }
        let blocked = tls.wants_write();
        tokio::select! {
            r = sock.readable() => {
                if let Err(e) = r {
                    break format!("read failed: {e}");
                }
                match read_ready(&conn, &sock, &mut tls, &mut rbuf, &mut plain) {
                    Ok(true) => {}
                    Ok(false) => break "peer closed the connection".to_string(),
                    Err(reason) => break reason,
                }
            }
            r = sock.writable(), if blocked => {
                if let Err(e) = r.and_then(|()| flush(&conn, &sock, &mut tls)) {
                    break format!("write failed: {e}");
                }
            }
            out = rx.recv(), if !blocked => {
                let mut closing = out.is_none();
                let mut next = out;
                let mut bytes = 0;
                while let Some(o) = next.take() {
                    match o {
                        Out::Frame(f) => {
                            bytes += HEADER_LEN
                                + match &f {
                                    Frame::Data { data, .. } => data.len(),
                                    _ => 32,
                                };
                            batch.push(f);
                        }
                        Out::Close => {
                            closing = true;
                            break;
                        }
                    }
                    if batch.len() < BATCH_FRAMES && bytes < BATCH_BYTES {
                        next = rx.try_recv().ok();
                    }
                }
                if let Err(e) = encrypt(&mut tls, &mut batch).and_then(|()| flush(&conn, &sock, &mut tls)) {
                    break format!("write failed: {e}");
                }
                if closing {
                    tls.send_close_notify();
                    let _ = flush(&conn, &sock, &mut tls);
                    break "closed".to_string();
                }
            }
        }
    };
    conn.close(&reason);
    reason
}

/// Decodes and handles every complete frame in `plain`.
fn dispatch(
    conn: &Arc<DataConn>,
    plain: &mut BytesMut,
    opens: &dyn OpenHandler,
) -> Result<(), WireError> {
    while let Some(f) = decode(plain)? {
        conn.handle(f, opens)?;
    }
    Ok(())
}

/// Reads what the socket has (a few large reads), decrypts it into `plain`.
/// Returns `Ok(false)` when the peer closed.
fn read_ready(
    conn: &DataConn,
    sock: &TcpStream,
    tls: &mut rustls::Connection,
    rbuf: &mut [u8],
    plain: &mut BytesMut,
) -> Result<bool, String> {
    use std::io::BufRead;
    for _ in 0..READS_PER_TURN {
        let n = match sock.try_read(rbuf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(format!("read failed: {e}")),
        };
        conn.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let mut input = &rbuf[..n];
        while !input.is_empty() {
            tls.read_tls(&mut input)
                .map_err(|e| format!("TLS read failed: {e}"))?;
            let state = tls
                .process_new_packets()
                .map_err(|e| format!("TLS error: {e}"))?;
            // Move the plaintext out; rustls holds only a little before it refuses more.
            let mut reader = tls.reader();
            loop {
                match reader.fill_buf() {
                    Ok([]) => break,
                    Ok(chunk) => {
                        let k = chunk.len();
                        plain.extend_from_slice(chunk);
                        reader.consume(k);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("TLS read failed: {e}")),
                }
            }
            if state.peer_has_closed() {
                return Ok(false);
            }
        }
        if n < rbuf.len() {
            return Ok(true);
        }
    }
    Ok(true)
}

/// Encrypts a batch of frames in one vectored write, so small frames share TLS records and
/// DATA payloads are copied once, by the cipher.
fn encrypt(tls: &mut rustls::Connection, batch: &mut Vec<Frame>) -> std::io::Result<()> {
    use std::io::Write;
    let parts: Vec<([u8; HEADER_LEN], Bytes)> = batch.drain(..).map(|f| f.encode()).collect();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() * 2);
    for (h, p) in &parts {
        slices.push(IoSlice::new(h));
        if !p.is_empty() {
            slices.push(IoSlice::new(p));
        }
    }
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let n = tls.writer().write_vectored(rest)?;
        if n == 0 {
            return Err(std::io::Error::other("TLS writer accepted nothing"));
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Writes pending TLS records until done or the socket is full.
fn flush(conn: &DataConn, sock: &TcpStream, tls: &mut rustls::Connection) -> std::io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(&mut SockWriter(sock)) {
            Ok(n) => {
                conn.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
