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

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    pub(crate) tx: mpsc::UnboundedSender<Inbound>,
    /// Bytes this endpoint may still send (granted by the far end).
    pub(crate) credit: AtomicI64,
    pub(crate) credit_notify: Notify,
    /// Bytes the far end may still send us; a DATA frame beyond it is a protocol violation.
    pub(crate) budget: AtomicI64,
}

impl FlowInbound {
    pub(crate) fn new() -> (Arc<FlowInbound>, mpsc::UnboundedReceiver<Inbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fi = FlowInbound {
            tx,
            credit: AtomicI64::new(i64::from(INITIAL_WINDOW)),
            credit_notify: Notify::new(),
            budget: AtomicI64::new(i64::from(INITIAL_WINDOW)),
        };
        (Arc::new(fi), rx)
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
                    let _ = fi
                        .tx
                        .send(Inbound::Reset(ResetCode::LinkLost, reason.to_string()));
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
                        let _ = fi.tx.send(Inbound::Reset(code, reset.reason));
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
                    let _ = fi.tx.send(Inbound::Reset(
                        ResetCode::Protocol,
                        "window exceeded".into(),
                    ));
                } else {
                    let _ = fi.tx.send(Inbound::Data(data));
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
                let _ = fi.tx.send(Inbound::Fin);
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

/// Reads frames until the peer closes or misbehaves, then closes the connection.
pub(crate) async fn run_reader<R: AsyncRead + Unpin>(
    conn: Arc<DataConn>,
    mut rd: R,
    mut buf: BytesMut,
    opens: Arc<dyn OpenHandler>,
) -> String {
    let reason = loop {
        // `buf` may already hold frames that arrived with the handshake.
        let mut err = None;
        loop {
            match decode(&mut buf) {
                Ok(Some(f)) => {
                    if let Err(e) = conn.handle(f, opens.as_ref()) {
                        err = Some(e);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = err {
            warn!(peer = %conn.peer, error = %e, "Peer sent an invalid frame; closing data connection");
            break format!("protocol error: {e}");
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "peer closed the connection".to_string(),
            Ok(n) => {
                conn.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => break format!("read failed: {e}"),
        }
    };
    conn.close(&reason);
    reason
}

/// Writes queued frames in batches with vectored writes, so DATA payloads are not copied
/// before TLS encrypts them.
pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(
    conn: Arc<DataConn>,
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
) {
    const BATCH_BYTES: usize = 512 * 1024;
    const BATCH_FRAMES: usize = 64;
    let mut headers: Vec<[u8; HEADER_LEN]> = Vec::with_capacity(BATCH_FRAMES);
    let mut payloads: Vec<Bytes> = Vec::with_capacity(BATCH_FRAMES);
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut bytes = 0;
        let mut closing = false;
        while let Some(out) = next.take() {
            match out {
                Out::Frame(f) => {
                    let (h, p) = f.encode();
                    bytes += HEADER_LEN + p.len();
                    headers.push(h);
                    payloads.push(p);
                }
                Out::Close => {
                    closing = true;
                    break;
                }
            }
            if headers.len() < BATCH_FRAMES && bytes < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !headers.is_empty() {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(headers.len() * 2);
            for (h, p) in headers.iter().zip(&payloads) {
                slices.push(IoSlice::new(h));
                if !p.is_empty() {
                    slices.push(IoSlice::new(p));
                }
            }
            let mut rest: &mut [IoSlice<'_>] = &mut slices;
            while !rest.is_empty() {
                match wr.write_vectored(rest).await {
                    Ok(0) => {
                        conn.close("write returned zero");
                        break 'outer;
                    }
                    Ok(n) => IoSlice::advance_slices(&mut rest, n),
                    Err(e) => {
                        conn.close(&format!("write failed: {e}"));
                        break 'outer;
                    }
                }
            }
            drop(slices);
            if let Err(e) = wr.flush().await {
                conn.close(&format!("flush failed: {e}"));
                break;
            }
            conn.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
            headers.clear();
            payloads.clear();
        }
        if closing {
            break;
        }
    }
    let _ = wr.shutdown().await;
}
