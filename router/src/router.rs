//! The router: owns its parts, wires them together at start, and gives the admin API and
//! metrics read-only views of them.
//!
//! - `dispatch`: where flows go (ingress, transit, egress) and the flow table;
//! - `apply`: live configuration (listeners, connectors, links);
//! - `advertise`: what this router tells the network it serves;
//! - `link`, `edge`, `tcp`: links, edge links, service listeners and connectors.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::{Instrument, info_span};

use crate::advertise::Advertiser;
use crate::apply::Configurator;
use crate::config::{Config, Entities, EntityOp, Mode};
use crate::control::Engine;
use crate::dispatch::Dispatch;
use crate::edge::{EdgePeer, Edges};
use crate::error::{AdminError, StartError};
use crate::flow::FlowRecord;
use crate::link::{LinkEnv, LinkStatus, LinkTable};
use crate::metrics::{LinkSample, Metrics, Snapshot};
use crate::neighbours::Neighbours;
use crate::routing::{RoutingTable, TableRx};
use crate::shared::{Changes, Identity, Rng};
use crate::tcp::{ConnectorRt, ConnectorTable, ListenerEnv, ListenerRt, ListenerTable};

/// One router. Shared by the admin API and metrics through `Arc`.
pub struct Router {
    me: Arc<Identity>,
    table: TableRx,
    changes: Changes,
    dispatch: Arc<Dispatch>,
    config: Configurator,
    advertiser: Arc<Advertiser>,
    edges: Arc<Edges>,
    links: Arc<LinkTable>,
    listeners: Arc<ListenerTable>,
    connectors: Arc<ConnectorTable>,
    metrics: Arc<Metrics>,
    /// Set when the router shuts down; long-lived admin streams end on it.
    stopping: watch::Sender<bool>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("id", &self.me.id).finish()
    }
}

impl Router {
    /// Builds the router and starts its routing engine. Entities are applied by `apply_initial`.
    pub fn new(cfg: &Config) -> Arc<Router> {
        let me = Arc::new(Identity::new(
            cfg.router_id.clone(),
            cfg.site_id.clone(),
            cfg.mode,
        ));
        let (table_tx, table) = watch::channel(Arc::new(RoutingTable::default()));
        let (engine_tx, engine_rx) = mpsc::unbounded_channel();
        let edge_table = match cfg.mode {
            Mode::Interior => {
                let engine = Engine::new(
                    me.id.clone(),
                    me.site.clone(),
                    me.instance,
                    cfg.timers.clone(),
                    table_tx,
                );
                tokio::spawn(engine.run(engine_rx).instrument(info_span!("routing")));
                None
            }
            // Edges run no routing protocol.
            Mode::Edge => Some(table_tx),
        };
        let changes = Changes::default();
        let rng = Arc::new(Rng::new(me.instance));
        let metrics = Arc::new(Metrics::new(&me.id));
        let neighbours = Arc::new(Neighbours::default());
        let edges = Arc::new(Edges::default());
        let links = Arc::new(LinkTable::default());
        let listeners = Arc::new(ListenerTable::default());
        let connectors = Arc::new(ConnectorTable::default());
        let advertiser = Arc::new(Advertiser::new(
            me.clone(),
            engine_tx.clone(),
            edge_table,
            connectors.clone(),
            edges.clone(),
            changes.clone(),
        ));
        let dispatch = Dispatch::new(
            me.clone(),
            cfg.flow.clone(),
            table.clone(),
            neighbours.clone(),
            connectors.clone(),
            edges.clone(),
            metrics.clone(),
            rng.clone(),
        );
        let link_env = LinkEnv {
            me: me.clone(),
            timers: cfg.timers.clone(),
            rng,
            engine: engine_tx,
            table: table.clone(),
            neighbours,
            links: links.clone(),
            advertiser: advertiser.clone(),
            metrics: metrics.clone(),
            changes: changes.clone(),
            opens: dispatch.clone(),
        };
        let listener_env = ListenerEnv {
            table: table.clone(),
            changes: changes.clone(),
            accept: dispatch.clone(),
        };
        let config = Configurator::new(
            cfg.mode,
            listeners.clone(),
            connectors.clone(),
            advertiser.clone(),
            link_env,
            listener_env,
        );
        // Any routing change is a change of the admin views.
        let mut t = table.clone();
        let c = changes.clone();
        tokio::spawn(async move {
            while t.changed().await.is_ok() {
                c.notify();
            }
        });
        let router = Arc::new(Router {
            me,
            table,
            changes,
            dispatch,
            config,
            advertiser,
            edges,
            links,
            listeners,
            connectors,
            metrics,
            stopping: watch::channel(false).0,
        });
        router.dispatch.recorder.attach(Arc::downgrade(&router));
        router
    }

    // --- identity ---

    pub fn id(&self) -> &str {
        &self.me.id
    }

    pub fn site(&self) -> &str {
        &self.me.site
    }

    pub fn mode(&self) -> Mode {
        self.me.mode
    }

    /// Boot time in nanoseconds; tells peers we restarted.
    pub fn instance(&self) -> u64 {
        self.me.instance
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.me.started.elapsed()
    }

    /// The values this router published on network-wide topics.
    pub(crate) fn published_values(&self) -> Vec<van_proto::records::Published> {
        self.advertiser
            .published()
            .into_iter()
            .map(|(topic, payload)| van_proto::records::Published { topic, payload })
            .collect()
    }

    pub(crate) fn started(&self) -> std::time::Instant {
        self.me.started.into_std()
    }

    /// Every router's flow records, merged, until the receiver is dropped or the router
    /// stops (docs/records.md).
    pub fn watch_records(&self) -> mpsc::Receiver<van_proto::records::RecordBatch> {
        crate::records::watch(
            self.dispatch.clone(),
            self.dispatch.recorder.clone(),
            self.table.clone(),
            self.me.id.clone(),
            self.stopped(),
        )
    }

    // --- start and stop ---

    /// Applies the entities of the start-up configuration. Fails, binding nothing, when a
    /// port cannot be bound.
    pub async fn apply_initial(&self, entities: Entities) -> Result<(), StartError> {
        self.config.apply_initial(entities).await
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

    // --- live configuration ---

    /// Validates and applies a batch of operations; all or nothing.
    pub async fn apply_ops(
        &self,
        ops: Vec<EntityOp>,
        dry_run: bool,
        drop_flows: bool,
    ) -> Result<u64, AdminError> {
        self.config.apply_ops(ops, dry_run, drop_flows).await
    }

    pub async fn entities(&self) -> Entities {
        self.config.entities().await
    }

    /// Sets (`Some`) or clears (`None`) this router's value on `topic`. The value reaches
    /// every router in the network with the next advertisement.
    pub fn publish(&self, topic: &str, payload: Option<Vec<u8>>) -> Result<(), AdminError> {
        self.advertiser.publish(topic, payload)
    }

    // --- views ---

    pub fn generation(&self) -> u64 {
        self.changes.generation()
    }

    /// Ticks whenever some admin view may have changed.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.borrow().clone()
    }

    pub fn table_rx(&self) -> TableRx {
        self.table.clone()
    }

    pub fn links(&self) -> Vec<Arc<LinkStatus>> {
        self.links.list()
    }

    pub fn listeners(&self) -> Vec<Arc<ListenerRt>> {
        self.listeners.list()
    }

    pub fn connectors(&self) -> Vec<Arc<ConnectorRt>> {
        self.connectors.list()
    }

    pub fn flows(&self) -> Vec<Arc<FlowRecord>> {
        self.dispatch.flows.list()
    }

    /// Flows open now, and flows started since the router started.
    pub fn flow_counts(&self) -> (usize, u64) {
        self.dispatch.flows.counts()
    }

    /// Where a link listener is bound.
    pub fn link_listener_addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.config.link_listener_addr(name)
    }

    /// The port a TCP listener holds.
    pub fn tcp_listener_port(&self, name: &str) -> Option<u16> {
        self.listeners.port(name)
    }

    /// Edge mode: the uplink new flows use, the cheapest one that is up.
    pub fn active_uplink(&self) -> Option<Arc<EdgePeer>> {
        self.edges.active_uplink()
    }

    /// Edge mode: uplinks currently up.
    pub fn uplinks_up(&self) -> usize {
        self.edges.uplinks_up()
    }

    /// Counters that are not derived from live state.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What a metrics scrape reports of the live state.
    pub fn metrics_snapshot(&self) -> Snapshot {
        let table = self.table();
        let (active, total) = self.flow_counts();
        Snapshot {
            uptime_seconds: self.uptime().as_secs(),
            routers_reachable: table.nodes.len() as u64,
            addresses: table.addresses.len() as u64,
            flows_active: active as u64,
            flows_total: total,
            links: self
                .links()
                .iter()
                .map(|l| {
                    let st = l.inner.lock().expect("link");
                    LinkSample {
                        name: l.name.clone(),
                        peer: st.peer_router.clone(),
                        up: st.state == "up",
                        bytes: st.conn.as_ref().map(|c| {
                            (
                                c.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
                                c.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
                            )
                        }),
                    }
                })
                .collect(),
        }
    }

    /// The Prometheus exposition of this router.
    pub fn render_metrics(&self) -> String {
        crate::metrics::render(&self.metrics_snapshot(), &self.metrics)
    }
}
