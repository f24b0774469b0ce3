//! Flow dispatch: where each flow goes and how it is accounted.
//!
//! - ingress: a client accepted by a listener becomes a local flow (a connector on this
//!   router) or a remote flow (opened over the data connection toward the destination);
//! - transit and egress: a flow a neighbour opened is passed on toward its destination,
//!   or connected to one of this router's connectors.
//!
//! Every flow is registered in the flow table while it runs and accounted once when it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{Instrument, debug, debug_span};
use van_proto::wire::{self, ResetCode};

use crate::config::{FlowSection, Mode};
use crate::edge::Edges;
use crate::flow::{self, FlowRecord, Outcome, Side};
use crate::metrics::Metrics;
use crate::mux::{DataConn, FlowInbound, InboxRx, OpenHandler};
use crate::neighbours::Neighbours;
use crate::records::Recorder;
use crate::routing::{self, RoutingTable, TableRx};
use crate::shared::{Identity, Rng};
use crate::tcp::{Accept, ConnectorRt, ConnectorTable, ListenerRt};
use crate::web::balance::Latency;
use crate::web::stream::{FlowTx, StreamHandle};

mod http;
mod upgrade;

/// Hops a flow may cross before it is reset (guards against transient routing loops).
const FLOW_TTL: u32 = 64;

/// The flows open on this router.
#[derive(Debug, Default)]
pub(crate) struct FlowTable {
    open: Mutex<HashMap<u64, Arc<FlowRecord>>>,
    total: AtomicU64,
}

impl FlowTable {
    fn register(&self, rec: FlowRecord) -> Arc<FlowRecord> {
        let rec = Arc::new(rec);
        self.open
            .lock()
            .expect("flows lock")
            .insert(rec.id, rec.clone());
        self.total.fetch_add(1, Ordering::Relaxed);
        rec
    }

    fn remove(&self, id: u64) {
        self.open.lock().expect("flows lock").remove(&id);
    }

    pub(crate) fn list(&self) -> Vec<Arc<FlowRecord>> {
        self.open
            .lock()
            .expect("flows lock")
            .values()
            .cloned()
            .collect()
    }

    /// Flows open now, and flows started since the router started.
    pub(crate) fn counts(&self) -> (usize, u64) {
        (
            self.open.lock().expect("flows lock").len(),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// Decides where flows go. Shared by listeners (as `Accept`) and data connections (as
/// `OpenHandler`).
pub(crate) struct Dispatch {
    me: Arc<Identity>,
    flow_cfg: FlowSection,
    table: TableRx,
    neighbours: Arc<Neighbours>,
    connectors: Arc<ConnectorTable>,
    edges: Arc<Edges>,
    metrics: Arc<Metrics>,
    rng: Arc<Rng>,
    pub(crate) flows: FlowTable,
    /// Records of ended flows and requests, for observers.
    pub(crate) recorder: Arc<Recorder>,
    /// Flows open toward each destination router (ingress and local), for balancing.
    /// An HTTP request is a flow, so for HTTP these are requests in flight.
    open_to: Mutex<HashMap<Arc<str>, u32>>,
    /// Response times of HTTP requests per destination, for balancing.
    latency: Latency,
    rotate: AtomicUsize,
    /// Our own `Arc`, for the tasks spawned from `&self` trait methods.
    this: Weak<Dispatch>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch").field("id", &self.me.id).finish()
    }
}

/// Un-counts an open flow toward a destination.
struct OpenGuard {
    dispatch: Arc<Dispatch>,
    dest: Arc<str>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut open = self.dispatch.open_to.lock().expect("open_to lock");
        if let Some(n) = open.get_mut(&self.dest) {
            *n -= 1;
            // Entries stay at zero (one-at-a-time flows would otherwise add and remove the
            // same key each time); the idle ones go when there are many.
            if open.len() > MAX_OPEN_ENTRIES {
                open.retain(|_, n| *n > 0);
            }
        }
    }
}

/// Destinations counted in `open_to` before those with no open flow are dropped.
const MAX_OPEN_ENTRIES: usize = 4096;

/// The span of one flow at one router; `finish_flow` records how it went.
///
/// At debug level: the OTLP exporter takes flow spans at any level, but the log layer at its
/// usual `info` then ignores them. A span it keeps costs its fields formatted on every
/// record (about 15 µs per HTTP request, measured), for logs that would not show them.
fn flow_span(id: u64, key: &str, role: &str, origin: &str, dest: &str) -> tracing::Span {
    use tracing::field::Empty;
    debug_span!(
        "flow",
        flow_id = %format_args!("{id:016x}"),
        routing_key = %key,
        role,
        origin = %origin,
        dest = %dest,
        path = Empty,
        bytes_out = Empty,
        bytes_in = Empty,
        outcome = Empty,
        error = Empty,
    )
}

/// The trace context of the current flow span, for the OPEN that carries the flow on: the
/// next routers' spans join its trace. Empty when spans are not exported.
fn current_traceparent() -> String {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return String::new();
    }
    van_telemetry::traceparent(&span).unwrap_or_default()
}

/// Makes `span` (an egress flow span) continue the trace the flow's OPEN carried.
fn continue_flow_trace(span: &tracing::Span, open: &wire::FlowOpen) {
    if !span.is_disabled() && !open.traceparent.is_empty() {
        van_telemetry::continue_trace(span, |name| {
            (name == "traceparent").then(|| open.traceparent.clone())
        });
    }
}

impl Dispatch {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: Arc<Identity>,
        flow_cfg: FlowSection,
        table: TableRx,
        neighbours: Arc<Neighbours>,
        connectors: Arc<ConnectorTable>,
        edges: Arc<Edges>,
        metrics: Arc<Metrics>,
        rng: Arc<Rng>,
    ) -> Arc<Dispatch> {
        Arc::new_cyclic(|this| Dispatch {
            me,
            flow_cfg,
            table,
            neighbours,
            connectors,
            edges,
            metrics,
            rng,
            flows: FlowTable::default(),
            recorder: Arc::default(),
            open_to: Mutex::new(HashMap::new()),
            latency: Latency::default(),
            rotate: AtomicUsize::new(0),
            this: this.clone(),
        })
    }

    fn table(&self) -> Arc<RoutingTable> {
        self.table.borrow().clone()
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.flow_cfg.connect_timeout_ms)
    }

    /// The destination router for a new flow of `key`: the one with the fewest flows open
    /// from here plus path cost.
    fn choose_destination(&self, table: &RoutingTable, key: &str) -> Option<String> {
        let d = table.addresses.get(key)?;
        let open = self.open_to.lock().expect("open_to lock");
        routing::choose(
            d,
            |r| open.get(r).copied().unwrap_or(0),
            self.rotate.fetch_add(1, Ordering::Relaxed),
        )
        .map(|d| d.router.clone())
    }

    /// Registers a flow starting now in the flow table, telling observers of TCP flows.
    fn register(&self, rec: FlowRecord) -> Arc<FlowRecord> {
        let rec = self.flows.register(rec);
        self.recorder.flow_opened(&rec);
        rec
    }

    /// Counts a flow open toward `dest` until the returned guard drops.
    fn count_open(self: &Arc<Self>, dest: &str) -> OpenGuard {
        let mut open = self.open_to.lock().expect("open_to lock");
        let dest: Arc<str> = match open.get_key_value(dest) {
            Some((k, _)) => k.clone(),
            None => Arc::from(dest),
        };
        *open.entry(dest.clone()).or_default() += 1;
        OpenGuard {
            dispatch: self.clone(),
            dest,
        }
    }

    /// Accounts a finished flow. Runs inside the flow's span, whose fields it fills in.
    fn finish_flow(&self, rec: &FlowRecord, outcome: &Outcome) {
        self.flows.remove(rec.id);
        let (bytes_out, bytes_in) = (
            rec.bytes_out.load(Ordering::Relaxed),
            rec.bytes_in.load(Ordering::Relaxed),
        );
        let span = tracing::Span::current();
        // Formatting costs even for a span nobody records.
        if !span.is_disabled() {
            span.record("path", rec.path.join(" > "));
            span.record("role", rec.role);
            span.record("bytes_out", bytes_out);
            span.record("bytes_in", bytes_in);
            span.record("outcome", outcome.label());
            if !matches!(outcome, Outcome::Closed) {
                span.record("error", outcome.to_string());
            }
        }
        self.metrics
            .flow_closed(rec.role, outcome.label(), bytes_out, bytes_in);
        self.recorder.flow_ended(rec, &self.me.id, outcome);
        debug!(
            flow = rec.id,
            key = %rec.routing_key,
            outcome = %outcome,
            bytes_out,
            bytes_in,
            "Flow ended"
        );
    }

    // --- ingress ---

    /// Carries an accepted client connection to a connector of its routing key.
    async fn ingress(self: Arc<Self>, client: TcpStream, listener: Arc<ListenerRt>) {
        let key = listener.cfg.routing_key.clone();
        let client_addr = client
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let table = self.table();
        let Some(dest) = self.choose_destination(&table, &key) else {
            // Raced with a withdrawal: refuse this client the way a closed listener would.
            debug!(key = %key, "No destination for a new connection; refusing it");
            listener.refused.fetch_add(1, Ordering::Relaxed);
            let why = format!("no reachable server for {key:?}");
            self.recorder
                .refused(self.rng.u64(), &key, &client_addr, &self.me.id, &why);
            flow::set_reset_on_close(&client);
            return;
        };
        let id = self.rng.u64();
        let span = flow_span(id, &key, "ingress", &self.me.id, &dest);
        async move {
            if dest != self.me.id {
                let next = table
                    .next_hop(&dest)
                    .and_then(|hop| self.neighbours.best(hop));
                self.remote_flow(client, client_addr, listener, id, dest, next)
                    .await;
            } else if let Some(e) = self.edges.edge_for(&key, "")
                && self.connectors.count(&key) == 0
            {
                // Served by an attached edge on our behalf.
                let conn = e.conn.clone();
                self.remote_flow(
                    client,
                    client_addr,
                    listener,
                    id,
                    e.peer.clone(),
                    Some(conn),
                )
                .await;
            } else {
                self.local_flow(client, client_addr, listener, id).await;
            }
        }
        .instrument(span)
        .await
    }

    /// Listener and connector on this router: the bytes never leave it.
    async fn local_flow(
        self: &Arc<Self>,
        client: TcpStream,
        client_addr: String,
        listener: Arc<ListenerRt>,
        id: u64,
    ) {
        let key = &listener.cfg.routing_key;
        let Some(conn) = self.connectors.pick(key) else {
            debug!(key = %key, "No local connector; refusing");
            listener.refused.fetch_add(1, Ordering::Relaxed);
            let why = format!("no local connector for {key:?}");
            self.recorder
                .refused(id, key, &client_addr, &self.me.id, &why);
            flow::set_reset_on_close(&client);
            return;
        };
        let rec = self.register(FlowRecord::new(
            id,
            key.clone(),
            "local",
            client_addr,
            String::new(),
            vec![self.me.id.clone()],
        ));
        listener.opened.fetch_add(1, Ordering::Relaxed);
        // Local flows count toward balancing too, so a busy local connector sheds new flows
        // to remote ones.
        let _open = self.count_open(&self.me.id);
        let outcome = match conn.connect(self.connect_timeout()).await {
            Ok(server) => {
                *rec.server_addr.lock().expect("flow lock") = conn.target();
                flow::splice_local(
                    client,
                    server,
                    &rec,
                    [&listener.drop_flows, &conn.drop_flows],
                )
                .await
            }
            Err(e) => {
                flow::set_reset_on_close(&client);
                Outcome::ResetByPeer(ResetCode::ConnectFailed, e)
            }
        };
        conn.finish(&rec);
        listener.finish(&rec);
        self.finish_flow(&rec, &outcome);
    }

    /// Opens the flow over `next` toward `dest` and relays the client's bytes.
    async fn remote_flow(
        self: &Arc<Self>,
        client: TcpStream,
        client_addr: String,
        listener: Arc<ListenerRt>,
        id: u64,
        dest: String,
        next: Option<Arc<DataConn>>,
    ) {
        let Some(conn) = next else {
            debug!(dest = %dest, "No open link toward the destination; refusing");
            listener.refused.fetch_add(1, Ordering::Relaxed);
            let why = format!("no open link toward router {dest}");
            let key = &listener.cfg.routing_key;
            self.recorder
                .refused(id, key, &client_addr, &self.me.id, &why);
            flow::set_reset_on_close(&client);
            return;
        };
        let (inbound, rx) = FlowInbound::new();
        let Some(stream) = conn.open_local(inbound.clone()) else {
            flow::set_reset_on_close(&client);
            return;
        };
        let key = listener.cfg.routing_key.clone();
        conn.send(crate::wire::Frame::Open {
            stream,
            open: wire::FlowOpen {
                routing_key: key.clone(),
                // An edge lets its interior router pick the destination.
                dest_router: if self.me.mode == Mode::Edge {
                    String::new()
                } else {
                    dest.clone()
                },
                origin_router: self.me.id.clone(),
                flow_id: id,
                client_addr: client_addr.clone(),
                ttl: FLOW_TTL,
                path: vec![self.me.id.clone()],
                protocol: wire::FlowProtocol::FlowTcp as i32,
                traceparent: current_traceparent(),
            },
        });
        let rec = self.register(FlowRecord::new(
            id,
            key,
            "ingress",
            client_addr,
            dest.clone(),
            vec![self.me.id.clone(), conn.peer.clone()],
        ));
        listener.opened.fetch_add(1, Ordering::Relaxed);
        let _open = self.count_open(&dest);
        let end = flow::StreamEnd {
            conn,
            stream,
            inbound,
            rx,
        };
        let outcome = flow::run_endpoint(
            client,
            end,
            rec.clone(),
            Side::Ingress,
            self.flow_cfg.window_bytes,
            &listener.drop_flows,
        )
        .await;
        listener.finish(&rec);
        self.finish_flow(&rec, &outcome);
    }

    // --- egress ---

    /// A flow for a key we hold no connector for: an attached edge may serve it on our
    /// behalf, else the flow is reset.
    fn no_connector(&self, conn: &Arc<DataConn>, stream: u32, open: wire::FlowOpen) {
        if let Some(e) = self.edges.edge_for(&open.routing_key, &conn.peer) {
            let mut fwd = open.clone();
            fwd.dest_router = e.peer.clone();
            fwd.path.push(self.me.id.clone());
            if conn.splice(stream, &e.conn, fwd) {
                return;
            }
        }
        conn.reset(
            stream,
            ResetCode::NoConnector,
            format!(
                "router {} has no connector for {:?}",
                self.me.id, open.routing_key
            ),
        );
    }

    /// Takes a flow a neighbour opened for `connector` and registers it; `None` when the
    /// connection has closed meanwhile.
    fn accept_egress(
        &self,
        conn: &Arc<DataConn>,
        stream: u32,
        open: &wire::FlowOpen,
        connector: &ConnectorRt,
        http: bool,
    ) -> Option<(Arc<FlowInbound>, crate::mux::InboxRx, Arc<FlowRecord>)> {
        let (inbound, rx) = FlowInbound::new();
        if !conn.accept_local(stream, inbound.clone()) {
            connector.active.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let mut path = open.path.clone();
        path.push(self.me.id.clone());
        let mut rec = FlowRecord::new(
            open.flow_id,
            open.routing_key.clone(),
            "egress",
            open.client_addr.clone(),
            connector.target(),
            path,
        );
        if http {
            rec = rec.http(String::new());
        }
        Some((inbound, rx, self.register(rec)))
    }

    /// A flow for one of our connectors arrived on `conn`.
    fn egress(self: &Arc<Self>, conn: &Arc<DataConn>, stream: u32, open: wire::FlowOpen) {
        let Some(connector) = self.connectors.pick(&open.routing_key) else {
            self.no_connector(conn, stream, open);
            return;
        };
        let Some((inbound, rx, rec)) = self.accept_egress(conn, stream, &open, &connector, false)
        else {
            return;
        };
        let dispatch = self.clone();
        let conn = conn.clone();
        let span = flow_span(
            open.flow_id,
            &open.routing_key,
            "egress",
            &open.origin_router,
            &self.me.id,
        );
        continue_flow_trace(&span, &open);
        tokio::spawn(
            async move {
                let outcome = match connector.connect(dispatch.connect_timeout()).await {
                    Ok(server) => {
                        let end = flow::StreamEnd {
                            conn,
                            stream,
                            inbound,
                            rx,
                        };
                        flow::run_endpoint(
                            server,
                            end,
                            rec.clone(),
                            Side::Egress,
                            dispatch.flow_cfg.window_bytes,
                            &connector.drop_flows,
                        )
                        .await
                    }
                    Err(e) => {
                        conn.remove(stream);
                        conn.reset(stream, ResetCode::ConnectFailed, e.clone());
                        Outcome::ResetByPeer(ResetCode::ConnectFailed, e)
                    }
                };
                connector.finish(&rec);
                dispatch.finish_flow(&rec, &outcome);
            }
            .instrument(span),
        );
    }
}

// --- records ---

impl Dispatch {
    /// A records flow for this router (or, on an interior router, for an attached edge).
    fn serve_records(self: &Arc<Self>, conn: &Arc<DataConn>, stream: u32, open: wire::FlowOpen) {
        if open.routing_key != van_proto::records::routing_key(&self.me.id) {
            self.no_connector(conn, stream, open);
            return;
        }
        let (inbound, _rx) = FlowInbound::new();
        if !conn.accept_local(stream, inbound.clone()) {
            return;
        }
        let tx = FlowTx::new(StreamHandle::new(conn.clone(), stream, inbound));
        let span = debug_span!("records", reader = %open.origin_router);
        tokio::spawn(
            crate::records::produce(self.recorder.clone(), crate::records::Sink::Flow(tx))
                .instrument(span),
        );
    }

    /// Opens a records flow toward router `id`; `None` when there is no path to it.
    pub(crate) fn open_records(&self, id: &str) -> Option<(Arc<StreamHandle>, InboxRx)> {
        let key = van_proto::records::routing_key(id);
        let http::Route::Remote {
            dest_field, conn, ..
        } = self.http_route(&key, &[], &[])?
        else {
            return None;
        };
        let (inbound, rx) = FlowInbound::new();
        let stream = conn.open_local(inbound.clone())?;
        conn.send(crate::wire::Frame::Open {
            stream,
            open: wire::FlowOpen {
                routing_key: key,
                dest_router: dest_field,
                origin_router: self.me.id.clone(),
                flow_id: self.rng.u64(),
                client_addr: String::new(),
                ttl: FLOW_TTL,
                path: vec![self.me.id.clone()],
                protocol: wire::FlowProtocol::FlowRecords as i32,
                traceparent: String::new(),
            },
        });
        Some((StreamHandle::new(conn, stream, inbound), rx))
    }
}

impl Accept for Dispatch {
    fn accepted(&self, client: TcpStream, listener: Arc<ListenerRt>) {
        if let Some(me) = self.this.upgrade() {
            if listener.cfg.protocol.is_http() {
                tokio::spawn(me.serve_http(client, listener));
            } else {
                tokio::spawn(me.ingress(client, listener));
            }
        }
    }
}

impl OpenHandler for Dispatch {
    /// Transit or egress for a flow a neighbour opened.
    fn on_open(&self, conn: &Arc<DataConn>, stream: u32, mut open: wire::FlowOpen) {
        let Some(me) = self.this.upgrade() else {
            return;
        };
        if open.dest_router.is_empty() && conn.from_edge {
            // An attached edge asks us to route its flow.
            let table = self.table();
            match self.choose_destination(&table, &open.routing_key) {
                Some(d) => open.dest_router = d,
                None => {
                    conn.reset(
                        stream,
                        ResetCode::NoConnector,
                        format!("no reachable connector for {:?}", open.routing_key),
                    );
                    return;
                }
            }
        }
        if open.dest_router == self.me.id {
            if open.protocol == wire::FlowProtocol::FlowRecords as i32 {
                me.serve_records(conn, stream, open);
            } else if open.protocol == wire::FlowProtocol::FlowHttp as i32 {
                me.egress_http(conn, stream, open);
            } else {
                me.egress(conn, stream, open);
            }
            return;
        }
        if self.me.mode == Mode::Edge {
            conn.reset(
                stream,
                ResetCode::Unreachable,
                format!("edge router {} carries no transit flows", self.me.id),
            );
            return;
        }
        if open.ttl <= 1 {
            conn.reset(
                stream,
                ResetCode::TtlExpired,
                "flow crossed too many routers",
            );
            return;
        }
        open.ttl -= 1;
        let next = self
            .table()
            .next_hop(&open.dest_router)
            .and_then(|hop| self.neighbours.best(hop));
        let Some(next) = next else {
            conn.reset(
                stream,
                ResetCode::Unreachable,
                format!("router {} has no route to {}", self.me.id, open.dest_router),
            );
            return;
        };
        open.path.push(self.me.id.clone());
        if !conn.splice(stream, &next, open) {
            conn.reset(stream, ResetCode::LinkLost, "next hop closed");
        }
    }
}
