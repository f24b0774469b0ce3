//! Flow records for the network observer (docs/records.md).
//!
//! Each router serves its records on a flow of the routing key `$van.records/<router id>`,
//! which it advertises like a connector's key: a batch with its state once a second, and
//! the connections and requests that ended in between. Records cost the data path nothing
//! while nobody reads them (one atomic load per flow), and never block it: a reader too
//! slow to keep up loses records, and is told how many.
//!
//! The router an observer attaches to opens one records flow to every router its table
//! lists (and reads its own records directly), and merges them into one gRPC stream.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, debug_span};
use van_proto::records as pb;
use van_proto::wire::ResetCode;

use crate::dispatch::Dispatch;
use crate::flow::{FlowRecord, Outcome};
use crate::mux::{INITIAL_WINDOW, Inbound, InboxRx};
use crate::router::Router;
use crate::routing::TableRx;
use crate::web::stream::{FlowTx, StreamHandle};
use crate::wire::Frame;

/// Ended records queued per reader; a reader further behind loses the oldest.
const QUEUE: usize = 16 * 1024;
/// How often a batch carries the router's state and its open connections.
const STATE_PERIOD: Duration = Duration::from_secs(1);
/// How often ended records go out between states.
const FLUSH_PERIOD: Duration = Duration::from_millis(200);
/// Every this many states list every open connection, not only those that changed.
const FULL_EVERY: u64 = 10;
/// A batch is sent early once it holds this many records.
const MAX_RECORDS: usize = 2000;
/// Wait before reopening a records flow that ended while its router is still listed.
const RETRY: Duration = Duration::from_secs(1);

/// Something that ended, as the readers get it.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// A TCP flow started (listed as open within a flush, not at the next state).
    Opened(Arc<FlowRecord>),
    Connection(Arc<pb::ConnectionRecord>),
    Request(Arc<pb::RequestRecord>),
}

/// This router's records: the queue ended flows go to, and what builds its state.
#[derive(Debug)]
pub(crate) struct Recorder {
    tx: broadcast::Sender<Event>,
    router: OnceLock<Weak<Router>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            tx: broadcast::channel(QUEUE).0,
            router: OnceLock::new(),
        }
    }
}

/// Unix time in microseconds.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The Unix time (µs) of an earlier instant.
pub(crate) fn unix_us(at: Instant) -> u64 {
    now_us().saturating_sub(at.elapsed().as_micros() as u64)
}

/// How an outcome reads in a record: closed, reset, refused, no-target, link-lost, deleted.
pub(crate) fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Closed => "closed",
        Outcome::Deleted => "deleted",
        Outcome::ResetByPeer(ResetCode::ConnectFailed, _) => "refused",
        Outcome::ResetByPeer(ResetCode::NoConnector | ResetCode::Unreachable, _) => "no-target",
        Outcome::ResetByPeer(..) | Outcome::SocketError(_) => "reset",
        Outcome::LinkLost(_) => "link-lost",
    }
}

/// A connection record of `rec`, open (`end` is `None`) or ended.
fn connection(rec: &FlowRecord, me: &str, end: Option<&Outcome>) -> pb::ConnectionRecord {
    use std::sync::atomic::Ordering::Relaxed;
    let server = rec.server_addr.lock().expect("flow lock").clone();
    let (server_addr, dest_router) = match rec.role {
        // An ingress record's server is the destination router until the far end says.
        "ingress" => (String::new(), server),
        _ => (server, me.to_string()),
    };
    pb::ConnectionRecord {
        flow_id: rec.id,
        role: rec.role.into(),
        routing_key: rec.routing_key.clone(),
        client_addr: rec.client_addr.clone(),
        server_addr,
        path: rec.path.clone(),
        dest_router,
        start_us: unix_us(rec.started),
        end_us: if end.is_some() { now_us() } else { 0 },
        bytes_out: rec.bytes_out.load(Relaxed),
        bytes_in: rec.bytes_in.load(Relaxed),
        first_byte_us: rec.first_byte_us.load(Relaxed),
        outcome: end.map(outcome_label).unwrap_or_default().into(),
        error: match end {
            Some(Outcome::Closed) | None => String::new(),
            Some(o) => o.to_string(),
        },
    }
}

impl Recorder {
    /// Gives the recorder the router whose state it reports.
    pub(crate) fn attach(&self, router: Weak<Router>) {
        let _ = self.router.set(router);
    }

    /// Whether anyone reads the records now.
    pub(crate) fn active(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A TCP flow started.
    pub(crate) fn flow_opened(&self, rec: &Arc<FlowRecord>) {
        if self.active() && rec.protocol == "tcp" {
            let _ = self.tx.send(Event::Opened(rec.clone()));
        }
    }

    /// A TCP flow ended. HTTP flows are reported as requests instead.
    pub(crate) fn flow_ended(&self, rec: &FlowRecord, me: &str, outcome: &Outcome) {
        if self.active() && rec.protocol == "tcp" {
            let r = connection(rec, me, Some(outcome));
            let _ = self.tx.send(Event::Connection(Arc::new(r)));
        }
    }

    /// A client connection was refused before it became a flow (no reachable target).
    pub(crate) fn refused(&self, id: u64, key: &str, client_addr: &str, me: &str, why: &str) {
        if !self.active() {
            return;
        }
        let now = now_us();
        let r = pb::ConnectionRecord {
            flow_id: id,
            role: "ingress".into(),
            routing_key: key.into(),
            client_addr: client_addr.into(),
            path: vec![me.to_string()],
            start_us: now,
            end_us: now,
            outcome: "no-target".into(),
            error: why.into(),
            ..Default::default()
        };
        let _ = self.tx.send(Event::Connection(Arc::new(r)));
    }

    /// An HTTP request ended.
    pub(crate) fn request(&self, r: pb::RequestRecord) {
        if self.active() {
            let _ = self.tx.send(Event::Request(Arc::new(r)));
        }
    }

    fn state(&self, full: bool, sent: &mut HashMap<u64, (u64, u64)>) -> Option<StateParts> {
        let router = self.router.get()?.upgrade()?;
        let me = router.id().to_string();
        let state = pb::RouterState {
            status: Some(crate::admin::status(&router)),
            links: crate::admin::links(&router).links,
            listeners: crate::admin::listeners(&router).listeners,
            connectors: crate::admin::connectors(&router).connectors,
            started_us: unix_us(router.started()),
            hostname: hostname(),
            published: if full {
                router.published_values()
            } else {
                Vec::new()
            },
        };
        let mut open = Vec::new();
        let mut seen = HashMap::with_capacity(sent.len());
        for f in router.flows() {
            if f.protocol != "tcp" {
                continue;
            }
            let bytes = (
                f.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
                f.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            );
            if full || sent.get(&f.id) != Some(&bytes) {
                open.push(connection(&f, &me, None));
            }
            seen.insert(f.id, bytes);
        }
        *sent = seen;
        Some(StateParts {
            id: me,
            instance: router.instance(),
            state,
            open,
        })
    }
}

struct StateParts {
    id: String,
    instance: u64,
    state: pb::RouterState,
    open: Vec<pb::ConnectionRecord>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// Where a router's batches go: a records flow toward the observer's router, or the
/// observer's gRPC stream when the observer is attached here.
pub(crate) enum Sink {
    Flow(FlowTx),
    Local(mpsc::Sender<pb::RecordBatch>),
}

impl Sink {
    /// Sends one batch, waiting for the reader's window; `false` once the reader is gone.
    async fn send(&mut self, b: pb::RecordBatch) -> bool {
        match self {
            Sink::Flow(tx) => {
                let len = b.encoded_len();
                let mut buf = BytesMut::with_capacity(4 + len);
                buf.put_u32(len as u32);
                b.encode(&mut buf).expect("buffer sized to the message");
                tx.send(buf.freeze()).await.is_ok()
            }
            Sink::Local(tx) => tx.send(b).await.is_ok(),
        }
    }

    async fn closed(&self) {
        match self {
            Sink::Flow(tx) => tx.handle().inbound.gone().await,
            Sink::Local(tx) => tx.closed().await,
        }
    }
}

/// Sends this router's records to `sink` until the reader goes away.
pub(crate) async fn produce(recorder: Arc<Recorder>, mut sink: Sink) {
    // Subscribe before the first state, so nothing ends unseen in between.
    let mut rx = recorder.tx.subscribe();
    let mut sent_open = HashMap::new();
    let mut states = 0u64;
    let mut seq = 0u64;
    let mut batch = pb::RecordBatch::default();
    let mut state_tick = tokio::time::interval(STATE_PERIOD);
    state_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush_tick = tokio::time::interval(FLUSH_PERIOD);
    flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let send_now = tokio::select! {
            _ = state_tick.tick() => {
                let full = states.is_multiple_of(FULL_EVERY);
                states += 1;
                let Some(s) = recorder.state(full, &mut sent_open) else { return };
                batch.router_id = s.id;
                batch.instance = s.instance;
                batch.state = Some(s.state);
                batch.open = s.open;
                batch.full = full;
                true
            }
            _ = flush_tick.tick() => {
                !(batch.ended.is_empty()
                    && batch.open.is_empty()
                    && batch.requests.is_empty()
                    && batch.dropped == 0)
            }
            ev = rx.recv() => {
                match ev {
                    Ok(Event::Opened(f)) => {
                        let me = recorder.router.get().and_then(Weak::upgrade);
                        let me = me.as_ref().map_or("", |r| r.id());
                        batch.open.push(connection(&f, me, None));
                    }
                    Ok(Event::Connection(r)) => batch.ended.push((*r).clone()),
                    Ok(Event::Request(r)) => batch.requests.push((*r).clone()),
                    Err(broadcast::error::RecvError::Lagged(n)) => batch.dropped += n,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                batch.ended.len() + batch.open.len() + batch.requests.len() >= MAX_RECORDS
            }
            _ = sink.closed() => return,
        };
        // Batches before the first state would name no router.
        if send_now && states > 0 {
            let mut b = std::mem::take(&mut batch);
            if b.router_id.is_empty()
                && let Some(r) = recorder.router.get().and_then(Weak::upgrade)
            {
                b.router_id = r.id().to_string();
                b.instance = r.instance();
            }
            b.seq = seq;
            seq += 1;
            b.time_us = now_us();
            if !sink.send(b).await {
                return;
            }
        }
    }
}

/// Why a records flow from another router ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("no route to router {0}")]
    NoRoute(String),
    #[error("record stream closed")]
    Closed,
    #[error("reset by peer ({code}): {reason}", code = .0.as_str_name(), reason = .1)]
    Reset(ResetCode, String),
    #[error("peer router sent a record batch of {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("peer router sent an undecodable record batch: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the observer stopped reading")]
    ReaderGone,
}

/// Reads length-prefixed batches from a records flow into `out`, returning window to the
/// sender only as batches are handed on, so a slow reader slows the sender (which then
/// drops records rather than waiting).
async fn read_flow(
    h: Arc<StreamHandle>,
    mut rx: InboxRx,
    out: &mpsc::Sender<pb::RecordBatch>,
) -> Result<(), ReadError> {
    let mut buf = BytesMut::new();
    let mut unacked = 0u32;
    loop {
        match rx.recv().await {
            Some(Inbound::Data(b)) => {
                unacked += b.len() as u32;
                buf.extend_from_slice(&b);
                while buf.len() >= 4 {
                    let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
                    if len > pb::MAX_BATCH {
                        h.reset(ResetCode::Protocol, "record batch over the limit");
                        return Err(ReadError::TooLarge(len));
                    }
                    if buf.len() < 4 + len {
                        break;
                    }
                    buf.advance(4);
                    let batch = pb::RecordBatch::decode(buf.split_to(len).freeze())
                        .inspect_err(|e| h.reset(ResetCode::Protocol, e.to_string()))?;
                    out.send(batch).await.map_err(|_| ReadError::ReaderGone)?;
                }
                if unacked >= INITIAL_WINDOW / 4 {
                    let n = std::mem::take(&mut unacked);
                    h.inbound
                        .budget
                        .fetch_add(i64::from(n), std::sync::atomic::Ordering::AcqRel);
                    h.conn.send(Frame::Window {
                        stream: h.stream,
                        increment: n,
                    });
                }
            }
            Some(Inbound::Reset(code, reason)) => return Err(ReadError::Reset(code, reason)),
            Some(Inbound::Fin) | None => return Err(ReadError::Closed),
        }
    }
}

/// Merges the records of every router in the network into one stream: this router's own,
/// and one records flow per other router its table lists (edges included). A router that
/// leaves, or whose flow fails, gets a batch with `ended_stream` set.
pub(crate) fn watch(
    dispatch: Arc<Dispatch>,
    recorder: Arc<Recorder>,
    mut table: TableRx,
    me: String,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> mpsc::Receiver<pb::RecordBatch> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(
        async move {
            let own = tokio::spawn(produce(recorder, Sink::Local(tx.clone())));
            let mut readers: HashMap<String, JoinHandle<()>> = HashMap::new();
            tokio::pin!(stopped);
            loop {
                let listed: BTreeSet<String> = table
                    .borrow_and_update()
                    .addresses
                    .keys()
                    .filter_map(|k| k.strip_prefix(pb::KEY_PREFIX))
                    .filter(|id| *id != me)
                    .map(str::to_string)
                    .collect();
                readers.retain(|id, task| {
                    if listed.contains(id) {
                        return true;
                    }
                    task.abort();
                    let _ = tx.try_send(ended(id));
                    false
                });
                for id in listed {
                    readers.entry(id.clone()).or_insert_with(|| {
                        tokio::spawn(read_router(dispatch.clone(), id, tx.clone()))
                    });
                }
                tokio::select! {
                    r = table.changed() => if r.is_err() { break },
                    _ = tx.closed() => break,
                    _ = &mut stopped => break,
                }
            }
            own.abort();
            for (_, t) in readers {
                t.abort();
            }
        }
        .instrument(debug_span!("records-watch")),
    );
    rx
}

fn ended(router_id: &str) -> pb::RecordBatch {
    pb::RecordBatch {
        router_id: router_id.to_string(),
        ended_stream: true,
        time_us: now_us(),
        ..Default::default()
    }
}

/// Reads one router's records for as long as it is listed, reopening the flow after a
/// failure.
async fn read_router(dispatch: Arc<Dispatch>, id: String, tx: mpsc::Sender<pb::RecordBatch>) {
    loop {
        let r = match dispatch.open_records(&id) {
            Some((h, rx)) => read_flow(h, rx, &tx).await,
            None => Err(ReadError::NoRoute(id.clone())),
        };
        if let Err(e) = &r {
            debug!(router = %id, error = %e, "Records flow ended");
        }
        if matches!(r, Err(ReadError::ReaderGone)) || tx.send(ended(&id)).await.is_err() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}
