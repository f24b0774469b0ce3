//! The router core: shared state of one router, flow dispatch (ingress, transit, egress),
//! and live configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};
use van_proto::wire::{self, ResetCode};

use crate::config::{Config, Entities, EntityOp, FlowSection, Mode, Timers};
use crate::control::{ControlEvent, Engine};
use crate::edge::EdgePeer;
use crate::error::{AdminError, ConfigError, StartError};
use crate::flow::{self, FlowRecord, Outcome, Side};
use crate::link::{self, LinkStatus};
use crate::metrics::Metrics;
use crate::mux::{DataConn, FlowInbound, OpenHandler};
use crate::routing::{self, RoutingTable, TableRx};
use crate::tcp::{self, ConnectorRt, LISTEN_BACKLOG, ListenerRt};
use crate::tls::TlsMaterial;

/// Hops a flow may cross before it is reset (guards against transient routing loops).
const FLOW_TTL: u32 = 64;

type PendingData = oneshot::Sender<(tokio_rustls::TlsStream<TcpStream>, bytes::BytesMut)>;

/// One router. Shared by every task through `Arc`.
pub struct Router {
    pub id: String,
    pub site: String,
    pub mode: Mode,
    /// Boot time in nanoseconds; tells peers we restarted.
    pub instance: u64,
    pub started: Instant,
    pub timers: Timers,
    pub flow_cfg: FlowSection,
    pub(crate) table: TableRx,
    pub(crate) engine: mpsc::UnboundedSender<ControlEvent>,
    neighbours: RwLock<HashMap<String, Vec<Arc<DataConn>>>>,
    pub(crate) links: Mutex<BTreeMap<String, Arc<LinkStatus>>>,
    pub(crate) pending_links: Mutex<HashMap<(String, u64), PendingData>>,
    pub(crate) listeners: Mutex<BTreeMap<String, Arc<ListenerRt>>>,
    /// Addresses link listeners are bound to (the port differs from the config when it was 0).
    link_listener_addrs: Mutex<BTreeMap<String, std::net::SocketAddr>>,
    pub(crate) connectors: RwLock<BTreeMap<String, Arc<ConnectorRt>>>,
    pub(crate) flows: Mutex<HashMap<u64, Arc<FlowRecord>>>,
    /// Ingress flows open toward each destination router (for balancing).
    open_to: Mutex<HashMap<String, u32>>,
    rng: AtomicU64,
    rotate: AtomicUsize,
    pub(crate) flows_total: AtomicU64,
    pub metrics: Metrics,
    config: tokio::sync::Mutex<ConfigState>,
    generation: watch::Sender<u64>,
    me: std::sync::Weak<Router>,
    /// Edge mode: uplinks to interior routers.
    pub(crate) uplinks: Mutex<Vec<Arc<EdgePeer>>>,
    /// Interior mode: edge routers attached to this one.
    pub(crate) edges: Mutex<Vec<Arc<EdgePeer>>>,
    /// Edge mode: the table is computed here rather than by the routing engine.
    pub(crate) edge_table: Option<watch::Sender<Arc<RoutingTable>>>,
    /// This router's own values on network-wide topics.
    published: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Set when the router shuts down; long-lived admin streams end on it.
    stopping: watch::Sender<bool>,
}

/// Entities in force and the tasks that serve them.
struct ConfigState {
    entities: Entities,
    tasks: HashMap<(&'static str, String), JoinHandle<()>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("id", &self.id).finish()
    }
}

impl Router {
    /// Builds the router and starts its routing engine. Entities are applied by `apply_initial`.
    pub fn new(cfg: &Config) -> Arc<Router> {
        let instance = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let (table_tx, table_rx) = watch::channel(Arc::new(RoutingTable::default()));
        let (engine_tx, engine_rx) = mpsc::unbounded_channel();
        let edge_table = match cfg.mode {
            Mode::Interior => {
                let engine = Engine::new(
                    cfg.router_id.clone(),
                    instance,
                    cfg.timers.clone(),
                    table_tx,
                );
                tokio::spawn(engine.run(engine_rx).instrument(info_span!("routing")));
                None
            }
            // Edges run no routing protocol.
            Mode::Edge => Some(table_tx),
        };
        let r = Arc::new_cyclic(|me| Router {
            me: me.clone(),
            uplinks: Mutex::new(Vec::new()),
            edges: Mutex::new(Vec::new()),
            edge_table,
            published: Mutex::new(BTreeMap::new()),
            stopping: watch::channel(false).0,
            id: cfg.router_id.clone(),
            site: cfg.site_id.clone(),
            mode: cfg.mode,
            instance,
            started: Instant::now(),
            timers: cfg.timers.clone(),
            flow_cfg: cfg.flow.clone(),
            table: table_rx,
            engine: engine_tx,
            neighbours: RwLock::new(HashMap::new()),
            links: Mutex::new(BTreeMap::new()),
            pending_links: Mutex::new(HashMap::new()),
            listeners: Mutex::new(BTreeMap::new()),
            link_listener_addrs: Mutex::new(BTreeMap::new()),
            connectors: RwLock::new(BTreeMap::new()),
            flows: Mutex::new(HashMap::new()),
            open_to: Mutex::new(HashMap::new()),
            rng: AtomicU64::new(instance | 1),
            rotate: AtomicUsize::new(0),
            flows_total: AtomicU64::new(0),
            metrics: Metrics::default(),
            config: tokio::sync::Mutex::new(ConfigState {
                entities: Entities::default(),
                tasks: HashMap::new(),
            }),
            generation: watch::channel(0).0,
        });
        r.recompute_edge_table();
        // Any routing change is a change of the admin views.
        let weak = Arc::downgrade(&r);
        let mut t = r.table.clone();
        tokio::spawn(async move {
            while t.changed().await.is_ok() {
                match weak.upgrade() {
                    Some(r) => r.changed(),
                    None => return,
                }
            }
        });
        r
    }

    /// A cheap xorshift generator for link ids, flow ids and jitter.
    pub(crate) fn random_u32(&self) -> u32 {
        (self.random_u64() >> 32) as u32
    }

    fn random_u64(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        loop {
            let mut y = x;
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            match self
                .rng
                .compare_exchange_weak(x, y, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return y,
                Err(cur) => x = cur,
            }
        }
    }

    /// Signals watchers of the admin API that some view changed.
    pub(crate) fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The links as they stand, for the admin API and metrics.
    pub(crate) fn link_statuses(&self) -> Vec<Arc<LinkStatus>> {
        self.links
            .lock()
            .expect("links lock")
            .values()
            .cloned()
            .collect()
    }

    /// Where a link listener is bound.
    pub fn link_listener_addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.link_listener_addrs
            .lock()
            .expect("addrs lock")
            .get(name)
            .copied()
    }

    /// The port a TCP listener holds.
    pub fn tcp_listener_port(&self, name: &str) -> Option<u16> {
        self.listeners
            .lock()
            .expect("listeners lock")
            .get(name)
            .map(|l| l.port.load(Ordering::Relaxed))
    }

    /// Marks the router as stopping: admin change feeds and subscriptions end.
    pub fn begin_stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Completes when the router begins to stop.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.borrow().clone()
    }

    pub fn table_rx(&self) -> TableRx {
        self.table.clone()
    }

    // --- neighbours ---

    pub(crate) fn add_neighbour(&self, conn: Arc<DataConn>) {
        let mut n = self.neighbours.write().expect("neighbours lock");
        let v = n.entry(conn.peer.clone()).or_default();
        v.push(conn);
        v.sort_by_key(|c| c.cost);
    }

    pub(crate) fn remove_neighbour(&self, conn: &Arc<DataConn>) {
        let mut n = self.neighbours.write().expect("neighbours lock");
        if let Some(v) = n.get_mut(&conn.peer) {
            v.retain(|c| !Arc::ptr_eq(c, conn));
            if v.is_empty() {
                n.remove(&conn.peer);
            }
        }
    }

    /// The cheapest open data connection to a neighbour.
    /// The data connection to use toward a neighbour: the cheapest, and among parallel links
    /// of that cost the one carrying the fewest flows, so parallel links share the load.
    fn neighbour_conn(&self, peer: &str) -> Option<Arc<DataConn>> {
        let n = self.neighbours.read().expect("neighbours lock");
        let open = n.get(peer)?.iter().filter(|c| !c.is_closed());
        let cheapest = open.clone().map(|c| c.cost).min()?;
        open.filter(|c| c.cost == cheapest)
            .min_by_key(|c| c.active_streams())
            .cloned()
    }

    // --- flows ---

    fn register_flow(&self, rec: FlowRecord) -> Arc<FlowRecord> {
        let rec = Arc::new(rec);
        self.flows
            .lock()
            .expect("flows lock")
            .insert(rec.id, rec.clone());
        self.flows_total.fetch_add(1, Ordering::Relaxed);
        rec
    }

    /// Accounts a finished flow. Runs inside the flow's span, whose fields it fills in.
    fn finish_flow(&self, rec: &FlowRecord, outcome: &Outcome) {
        self.flows.lock().expect("flows lock").remove(&rec.id);
        let span = tracing::Span::current();
        span.record("path", rec.path.join(" > "));
        span.record("role", rec.role);
        span.record("bytes_out", rec.bytes_out.load(Ordering::Relaxed));
        span.record("bytes_in", rec.bytes_in.load(Ordering::Relaxed));
        span.record("outcome", outcome.label());
        if !matches!(outcome, Outcome::Closed) {
            span.record("error", outcome.to_string());
        }
        self.metrics.flow_closed(
            rec.role,
            outcome.label(),
            rec.bytes_out.load(Ordering::Relaxed),
            rec.bytes_in.load(Ordering::Relaxed),
        );
        debug!(
            flow = rec.id,
            key = %rec.routing_key,
            outcome = %outcome,
            bytes_out = rec.bytes_out.load(Ordering::Relaxed),
            bytes_in = rec.bytes_in.load(Ordering::Relaxed),
            "Flow ended"
        );
    }

    /// Carries an accepted client connection to a connector of its routing key.
    pub(crate) async fn ingress(self: Arc<Self>, client: TcpStream, listener: Arc<ListenerRt>) {
        let key = listener.cfg.routing_key.clone();
        let client_addr = client
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let table = self.table();
        let dest = table.addresses.get(&key).and_then(|d| {
            let open = self.open_to.lock().expect("open_to lock");
            routing::choose(
                d,
                |r| open.get(r).copied().unwrap_or(0),
                self.rotate.fetch_add(1, Ordering::Relaxed),
            )
            .map(|d| d.router.clone())
        });
        let Some(dest) = dest else {
            // Raced with a withdrawal: refuse this client the way a closed listener would.
            debug!(key = %key, "No destination for a new connection; refusing it");
            listener.refused.fetch_add(1, Ordering::Relaxed);
            flow::set_reset_on_close(&client);
            return;
        };
        let id = self.random_u64();
        let span = flow_span(id, &key, "ingress", &self.id, &dest);
        async move {
            if dest != self.id {
                let next = table
                    .next_hop(&dest)
                    .and_then(|hop| self.neighbour_conn(hop));
                self.remote_flow(client, client_addr, listener, id, dest, next)
                    .await;
            } else if let Some(e) = self.edge_for(&listener.cfg.routing_key, "")
                && self.pick_connector_count(&listener.cfg.routing_key) == 0
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

    async fn local_flow(
        self: &Arc<Self>,
        client: TcpStream,
        client_addr: String,
        listener: Arc<ListenerRt>,
        id: u64,
    ) {
        let key = &listener.cfg.routing_key;
        let Some(conn) = self.pick_connector(key) else {
            debug!(key = %key, "No local connector; refusing");
            listener.refused.fetch_add(1, Ordering::Relaxed);
            flow::set_reset_on_close(&client);
            return;
        };
        let rec = self.register_flow(FlowRecord {
            id,
            routing_key: key.clone(),
            role: "local",
            client_addr,
            server_addr: Mutex::new(String::new()),
            path: vec![self.id.clone()],
            started: Instant::now(),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
        });
        listener.opened.fetch_add(1, Ordering::Relaxed);
        // Local flows count toward balancing too, so a busy local connector sheds new flows
        // to remote ones.
        let _open = self.count_open(&self.id);
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
                dest_router: if self.mode == Mode::Edge {
                    String::new()
                } else {
                    dest.clone()
                },
                origin_router: self.id.clone(),
                flow_id: id,
                client_addr: client_addr.clone(),
                ttl: FLOW_TTL,
                path: vec![self.id.clone()],
            },
        });
        let rec = self.register_flow(FlowRecord {
            id,
            routing_key: key,
            role: "ingress",
            client_addr,
            server_addr: Mutex::new(dest.clone()),
            path: vec![self.id.clone(), conn.peer.clone()],
            started: Instant::now(),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
        });
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

    /// Counts a flow open toward `dest` until the returned guard drops.
    fn count_open(self: &Arc<Self>, dest: &str) -> OpenGuard {
        *self
            .open_to
            .lock()
            .expect("open_to lock")
            .entry(dest.to_string())
            .or_default() += 1;
        OpenGuard {
            router: self.clone(),
            dest: dest.to_string(),
        }
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.flow_cfg.connect_timeout_ms)
    }

    fn pick_connector_count(&self, key: &str) -> usize {
        self.connectors
            .read()
            .expect("connectors lock")
            .values()
            .filter(|c| c.cfg.routing_key == key)
            .count()
    }

    /// The connector of `key` with the fewest open flows (rotating among equals).
    pub(crate) fn pick_connector(&self, key: &str) -> Option<Arc<ConnectorRt>> {
        let c = self.connectors.read().expect("connectors lock");
        // Snapshot the counts once: other flows change them concurrently.
        let cands: Vec<(&Arc<ConnectorRt>, u32)> = c
            .values()
            .filter(|c| c.cfg.routing_key == key)
            .map(|c| (c, c.active.load(Ordering::Relaxed)))
            .collect();
        let min = cands.iter().map(|(_, n)| *n).min()?;
        let tied: Vec<_> = cands.into_iter().filter(|(_, n)| *n == min).collect();
        let pick = tied[self.rotate.fetch_add(1, Ordering::Relaxed) % tied.len()]
            .0
            .clone();
        pick.active.fetch_add(1, Ordering::Relaxed);
        Some(pick)
    }

    /// Egress: a flow for one of our connectors arrived on `conn`.
    fn egress(self: &Arc<Self>, conn: &Arc<DataConn>, stream: u32, open: wire::FlowOpen) {
        let Some(connector) = self.pick_connector(&open.routing_key) else {
            // An attached edge may serve the key on our behalf.
            if let Some(e) = self.edge_for(&open.routing_key, &conn.peer) {
                let mut fwd = open.clone();
                fwd.dest_router = e.peer.clone();
                fwd.path.push(self.id.clone());
                if conn.splice(stream, &e.conn, fwd) {
                    return;
                }
            }
            conn.reset(
                stream,
                ResetCode::NoConnector,
                format!(
                    "router {} has no connector for {:?}",
                    self.id, open.routing_key
                ),
            );
            return;
        };
        let (inbound, rx) = FlowInbound::new();
        if !conn.accept_local(stream, inbound.clone()) {
            connector.active.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let mut path = open.path.clone();
        path.push(self.id.clone());
        let rec = self.register_flow(FlowRecord {
            id: open.flow_id,
            routing_key: open.routing_key.clone(),
            role: "egress",
            client_addr: open.client_addr.clone(),
            server_addr: Mutex::new(connector.target()),
            path,
            started: Instant::now(),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
        });
        let router = self.clone();
        let conn = conn.clone();
        let span = flow_span(
            open.flow_id,
            &open.routing_key,
            "egress",
            &open.origin_router,
            &self.id,
        );
        tokio::spawn(
            async move {
                let outcome = match connector.connect(router.connect_timeout()).await {
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
                            router.flow_cfg.window_bytes,
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
                router.finish_flow(&rec, &outcome);
            }
            .instrument(span),
        );
    }

    // --- configuration ---

    /// Applies the entities of the start-up configuration. Fails, binding nothing, when a
    /// port cannot be bound.
    pub async fn apply_initial(self: &Arc<Self>, entities: Entities) -> Result<(), StartError> {
        self.apply_entities(entities, false)
            .await
            .map_err(|e| match e {
                ApplyError::Bind { what, addr, source } => StartError::Bind { what, addr, source },
                ApplyError::Config(c) => StartError::Config(c),
            })
    }

    pub async fn entities(&self) -> Entities {
        self.config.lock().await.entities.clone()
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Validates and applies a batch of operations; all or nothing.
    pub async fn apply_ops(
        self: &Arc<Self>,
        ops: Vec<EntityOp>,
        dry_run: bool,
        drop_flows: bool,
    ) -> Result<u64, AdminError> {
        let current = self.config.lock().await.entities.clone();
        let next = current.with_ops(self.mode, ops)?;
        if dry_run {
            return Ok(self.generation());
        }
        self.apply_entities(next, drop_flows)
            .await
            .map_err(|e| match e {
                ApplyError::Config(c) => AdminError::Invalid(c),
                ApplyError::Bind { what, addr, source } => AdminError::Invalid(
                    ConfigError::single(what, format!("cannot bind {addr}: {source}")),
                ),
            })?;
        Ok(self.generation())
    }

    async fn apply_entities(
        self: &Arc<Self>,
        next: Entities,
        drop_flows: bool,
    ) -> Result<(), ApplyError> {
        let mut st = self.config.lock().await;
        let old = st.entities.clone();
        let tls_changed = |name: &str| old.tls_profiles.get(name) != next.tls_profiles.get(name);

        // 1. Work out what starts and stops, and bind every new port before changing anything.
        let mut new_link_listeners = Vec::new();
        for (n, l) in &next.link_listeners {
            if old.link_listeners.get(n) != Some(l) || tls_changed(&l.tls_profile) {
                new_link_listeners.push(l.clone());
            }
        }
        let mut new_links = Vec::new();
        for (n, l) in &next.links {
            if old.links.get(n) != Some(l) || tls_changed(&l.tls_profile) {
                new_links.push(l.clone());
            }
        }
        let mut new_tcp_listeners = Vec::new();
        for (n, l) in &next.tcp_listeners {
            if old.tcp_listeners.get(n) != Some(l) {
                new_tcp_listeners.push(l.clone());
            }
        }
        // A port an entity being replaced still holds is bound after that entity stops.
        let held = |host: &str, port: u16| {
            old.link_listeners
                .values()
                .any(|o| o.host == host && o.port == port && port != 0)
                || old
                    .tcp_listeners
                    .values()
                    .any(|o| o.host == host && o.port == port && port != 0)
        };
        let mut prebound_links = HashMap::new();
        for l in &new_link_listeners {
            if held(&l.host, l.port) {
                continue;
            }
            let s = bind_listener(&l.host, l.port).map_err(|source| ApplyError::Bind {
                what: format!("link_listeners[{}]", l.name),
                addr: format!("{}:{}", l.host, l.port),
                source,
            })?;
            prebound_links.insert(l.name.clone(), s);
        }
        let mut prebound_tcp = HashMap::new();
        for l in &new_tcp_listeners {
            if held(&l.host, l.port) {
                continue;
            }
            let s = tcp::reserve(&l.host, l.port).map_err(|source| ApplyError::Bind {
                what: format!("tcp_listeners[{}]", l.name),
                addr: format!("{}:{}", l.host, l.port),
                source,
            })?;
            prebound_tcp.insert(l.name.clone(), s);
        }
        let material = |profile: &str| -> Result<TlsMaterial, ApplyError> {
            TlsMaterial::load(&next.tls_profiles[profile]).map_err(|e| {
                ApplyError::Config(ConfigError::single(
                    format!("tls_profiles[{profile}]"),
                    e.to_string(),
                ))
            })
        };
        let mut link_tls = HashMap::new();
        for l in &new_links {
            link_tls.insert(
                l.name.clone(),
                material(&l.tls_profile)?.client_config().map_err(|e| {
                    ApplyError::Config(ConfigError::single(
                        format!("links[{}]", l.name),
                        e.to_string(),
                    ))
                })?,
            );
        }
        let mut listener_tls = HashMap::new();
        for l in &new_link_listeners {
            listener_tls.insert(
                l.name.clone(),
                material(&l.tls_profile)?.server_config().map_err(|e| {
                    ApplyError::Config(ConfigError::single(
                        format!("link_listeners[{}]", l.name),
                        e.to_string(),
                    ))
                })?,
            );
        }

        // 2. Stop what was removed or replaced.
        let mut stopped = Vec::new();
        let mut stop = |st: &mut ConfigState, kind: &'static str, name: &str| {
            if let Some(h) = st.tasks.remove(&(kind, name.to_string())) {
                h.abort();
                stopped.push(h);
            }
        };
        for (n, l) in &old.link_listeners {
            if next.link_listeners.get(n) != Some(l) || tls_changed(&l.tls_profile) {
                stop(&mut st, "link_listener", n);
                self.link_listener_addrs
                    .lock()
                    .expect("addrs lock")
                    .remove(n);
            }
        }
        for (n, l) in &old.links {
            if next.links.get(n) != Some(l) || tls_changed(&l.tls_profile) {
                stop(&mut st, "link", n);
                self.links.lock().expect("links lock").remove(n);
            }
        }
        for (n, l) in &old.tcp_listeners {
            if next.tcp_listeners.get(n) != Some(l) {
                stop(&mut st, "tcp_listener", n);
                if let Some(rt) = self.listeners.lock().expect("listeners lock").remove(n) {
                    rt.shut(drop_flows);
                }
            }
        }
        {
            let mut conns = self.connectors.write().expect("connectors lock");
            for (n, c) in &old.tcp_connectors {
                if next.tcp_connectors.get(n) != Some(c)
                    && let Some(rt) = conns.remove(n)
                {
                    rt.shut(drop_flows);
                }
            }
            for (n, c) in &next.tcp_connectors {
                if old.tcp_connectors.get(n) != Some(c) {
                    conns.insert(n.clone(), ConnectorRt::new(c.clone()));
                }
            }
        }
        // Wait until the stopped tasks are gone: their links are closed, their ports free,
        // and a deleted entity no longer shows when this call returns.
        for h in stopped {
            let _ = h.await;
        }

        // 3. Start what is new or changed.
        for l in new_link_listeners {
            let listener = match prebound_links.remove(&l.name) {
                Some(s) => s,
                None => match bind_listener_retry(&l.host, l.port).await {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(listener = %l.name, error = %e, "Cannot rebind link listener");
                        continue;
                    }
                },
            };
            if let Ok(a) = listener.local_addr() {
                self.link_listener_addrs
                    .lock()
                    .expect("addrs lock")
                    .insert(l.name.clone(), a);
            }
            let tls = listener_tls.remove(&l.name).expect("built above");
            let h = tokio::spawn(
                link::accept_loop(self.clone(), l.clone(), listener, tls)
                    .instrument(info_span!("link_listener", name = %l.name)),
            );
            st.tasks.insert(("link_listener", l.name.clone()), h);
        }
        for l in new_links {
            let status = LinkStatus::new(
                l.name.clone(),
                l.role,
                true,
                format!("{}:{}", l.host, l.port),
                l.cost,
            );
            self.links
                .lock()
                .expect("links lock")
                .insert(l.name.clone(), status.clone());
            let tls = link_tls.remove(&l.name).expect("built above");
            let h = tokio::spawn(
                link::dial_loop(self.clone(), l.clone(), tls, status)
                    .instrument(info_span!("link", name = %l.name)),
            );
            st.tasks.insert(("link", l.name.clone()), h);
        }
        for l in new_tcp_listeners {
            let rt = ListenerRt::new(l.clone());
            let reserved = prebound_tcp.remove(&l.name);
            if let Some(a) = reserved
                .as_ref()
                .and_then(|s| s.local_addr().ok())
                .and_then(|a| a.as_socket())
            {
                rt.port.store(a.port(), Ordering::Relaxed);
            }
            self.listeners
                .lock()
                .expect("listeners lock")
                .insert(l.name.clone(), rt.clone());
            let h = tokio::spawn(
                tcp::listener_task(self.clone(), rt, reserved)
                    .instrument(info_span!("tcp_listener", name = %l.name)),
            );
            st.tasks.insert(("tcp_listener", l.name.clone()), h);
        }
        st.entities = next;
        drop(st);
        self.publish_addresses();
        self.changed();
        info!("Configuration applied");
        Ok(())
    }

    /// Keys of this router's own connectors, with connector counts.
    pub(crate) fn local_keys(&self) -> BTreeMap<String, u32> {
        let mut keys: BTreeMap<String, u32> = BTreeMap::new();
        for c in self.connectors.read().expect("connectors lock").values() {
            *keys.entry(c.cfg.routing_key.clone()).or_default() += 1;
        }
        keys
    }

    /// Tells the network which keys this router serves: its own connectors, and on an
    /// interior router those of its attached edges. Topic values go with them.
    pub(crate) fn publish_addresses(&self) {
        if self.mode == Mode::Edge {
            self.announce_to_uplinks();
            return;
        }
        let mut keys = self.local_keys();
        for (k, n) in self.edge_keys() {
            *keys.entry(k).or_default() += n;
        }
        let _ = self.engine.send(ControlEvent::LocalAddresses(keys));
        let mut values = self.own_values();
        values.extend(self.edge_values());
        let _ = self.engine.send(ControlEvent::LocalValues(values));
    }

    /// Sets (`Some`) or clears (`None`) this router's value on `topic`. The value reaches
    /// every router in the network with the next advertisement.
    pub fn publish(&self, topic: &str, payload: Option<Vec<u8>>) -> Result<(), AdminError> {
        let bad = |message: String| {
            AdminError::Invalid(ConfigError {
                errors: vec![crate::error::FieldError {
                    path: "topic".into(),
                    message,
                }],
            })
        };
        if !crate::config::valid_routing_key(topic) {
            return Err(bad(format!("{topic:?} is not a valid topic name")));
        }
        let max = crate::control::MAX_TOPIC_PAYLOAD;
        if payload.as_ref().is_some_and(|p| p.len() > max) {
            return Err(bad(format!("payload larger than {max} bytes")));
        }
        {
            let mut p = self.published.lock().expect("published");
            match payload {
                Some(v) => p.insert(topic.to_string(), v),
                None => p.remove(topic),
            };
        }
        self.publish_addresses();
        Ok(())
    }

    /// This router's values, with the origin left empty (meaning the sender).
    pub(crate) fn own_values(&self) -> Vec<van_proto::wire::TopicValue> {
        self.published
            .lock()
            .expect("published")
            .iter()
            .map(|(t, p)| van_proto::wire::TopicValue {
                topic: t.clone(),
                payload: p.clone(),
                origin: String::new(),
            })
            .collect()
    }
}

/// Un-counts an open flow toward a destination.
struct OpenGuard {
    router: Arc<Router>,
    dest: String,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut open = self.router.open_to.lock().expect("open_to lock");
        if let Some(n) = open.get_mut(&self.dest) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.dest);
            }
        }
    }
}

/// The span of one flow at one router; `finish_flow` records how it went.
fn flow_span(id: u64, key: &str, role: &str, origin: &str, dest: &str) -> tracing::Span {
    use tracing::field::Empty;
    info_span!(
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

enum ApplyError {
    Config(ConfigError),
    Bind {
        what: String,
        addr: String,
        source: std::io::Error,
    },
}

fn bind_listener(host: &str, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let s = tcp::reserve(host, port)?;
    s.listen(LISTEN_BACKLOG)?;
    tokio::net::TcpListener::from_std(std::net::TcpListener::from(s))
}

async fn bind_listener_retry(host: &str, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for _ in 0..20 {
        match bind_listener(host, port) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.expect("tried"))
}

impl OpenHandler for Router {
    fn on_open(&self, conn: &Arc<DataConn>, stream: u32, mut open: wire::FlowOpen) {
        // `on_open` is called through `Arc<dyn OpenHandler>`; recover our Arc for spawning.
        let Some(me) = self.self_arc() else { return };
        if open.dest_router.is_empty() && conn.from_edge {
            // An attached edge asks us to route its flow.
            let table = self.table();
            let dest = table.addresses.get(&open.routing_key).and_then(|d| {
                let open_to = self.open_to.lock().expect("open_to lock");
                routing::choose(
                    d,
                    |r| open_to.get(r).copied().unwrap_or(0),
                    self.rotate.fetch_add(1, Ordering::Relaxed),
                )
                .map(|d| d.router.clone())
            });
            match dest {
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
        if open.dest_router == self.id {
            me.egress(conn, stream, open);
            return;
        }
        if self.mode == Mode::Edge {
            conn.reset(
                stream,
                ResetCode::Unreachable,
                format!("edge router {} carries no transit flows", self.id),
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
        let table = self.table();
        let next = table
            .next_hop(&open.dest_router)
            .and_then(|hop| self.neighbour_conn(hop));
        let Some(next) = next else {
            conn.reset(
                stream,
                ResetCode::Unreachable,
                format!("router {} has no route to {}", self.id, open.dest_router),
            );
            return;
        };
        open.path.push(self.id.clone());
        if !conn.splice(stream, &next, open) {
            conn.reset(stream, ResetCode::LinkLost, "next hop closed");
        }
    }
}

impl Router {
    fn self_arc(&self) -> Option<Arc<Router>> {
        self.me.upgrade()
    }
}
