//! What this router tells the network it serves: the routing keys of its connectors (and, on
//! an interior router, of its attached edges) and its values on network-wide topics. An
//! interior router hands them to its routing engine; an edge router sends them up its
//! uplinks and computes its own table from what its active uplink reports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use van_proto::wire;

use crate::config::{self, Mode};
use crate::control::{self, ControlEvent};
use crate::edge::{self, EdgePeer, Edges};
use crate::error::{AdminError, ConfigError};
use crate::routing::{RoutingTable, TableRx};
use crate::shared::{Changes, Identity};
use crate::tcp::ConnectorTable;

#[derive(Debug)]
pub(crate) struct Advertiser {
    me: Arc<Identity>,
    /// The routing engine (interior routers).
    engine: mpsc::UnboundedSender<ControlEvent>,
    /// Edge routers run no routing protocol: their table is computed here.
    edge_table: Option<watch::Sender<Arc<RoutingTable>>>,
    connectors: Arc<ConnectorTable>,
    edges: Arc<Edges>,
    /// This router's own values on network-wide topics.
    published: Mutex<BTreeMap<String, Vec<u8>>>,
    changes: Changes,
}

impl Advertiser {
    pub(crate) fn new(
        me: Arc<Identity>,
        engine: mpsc::UnboundedSender<ControlEvent>,
        edge_table: Option<watch::Sender<Arc<RoutingTable>>>,
        connectors: Arc<ConnectorTable>,
        edges: Arc<Edges>,
        changes: Changes,
    ) -> Advertiser {
        let a = Advertiser {
            me,
            engine,
            edge_table,
            connectors,
            edges,
            published: Mutex::new(BTreeMap::new()),
            changes,
        };
        // The records key is served from the start, with or without configuration.
        a.publish_addresses();
        a
    }

    /// Tells the network which keys this router serves, with its topic values.
    pub(crate) fn publish_addresses(&self) {
        if self.me.mode == Mode::Edge {
            self.edges
                .send_to_uplinks(&self.served_keys(), &self.own_values());
            self.recompute_edge_table();
            return;
        }
        let mut keys = self.served_keys();
        for (k, n) in self.edges.attached_keys(None) {
            *keys.entry(k).or_default() += n;
        }
        let _ = self.engine.send(ControlEvent::LocalAddresses(keys));
        let mut values = self.own_values();
        values.extend(self.edges.attached_values());
        let _ = self.engine.send(ControlEvent::LocalValues(values));
    }

    /// Sets (`Some`) or clears (`None`) this router's value on `topic`. The value reaches
    /// every router in the network with the next advertisement.
    pub(crate) fn publish(&self, topic: &str, payload: Option<Vec<u8>>) -> Result<(), AdminError> {
        let bad = |message: String| AdminError::Invalid(ConfigError::single("topic", message));
        if !config::valid_routing_key(topic) {
            return Err(bad(format!("{topic:?} is not a valid topic name")));
        }
        let max = control::MAX_TOPIC_PAYLOAD;
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

    /// The keys of this router's connectors, and of its own records (docs/records.md).
    fn served_keys(&self) -> BTreeMap<String, u32> {
        let mut keys = self.connectors.keys();
        keys.insert(van_proto::records::routing_key(&self.me.id), 1);
        keys
    }

    /// This router's own values on network-wide topics, topic by topic.
    pub(crate) fn published(&self) -> Vec<(String, Vec<u8>)> {
        let p = self.published.lock().expect("published");
        p.iter().map(|(t, v)| (t.clone(), v.clone())).collect()
    }

    /// This router's values, with the origin left empty (meaning the sender).
    fn own_values(&self) -> Vec<wire::TopicValue> {
        self.published
            .lock()
            .expect("published")
            .iter()
            .map(|(t, p)| wire::TopicValue {
                topic: t.clone(),
                payload: p.clone(),
                origin: String::new(),
            })
            .collect()
    }

    fn recompute_edge_table(&self) {
        let Some(tx) = &self.edge_table else { return };
        let t = edge::edge_table(
            &self.me.id,
            self.me.instance,
            self.served_keys(),
            self.own_values(),
            self.edges.active_uplink().as_deref(),
        );
        tx.send_if_modified(|cur| {
            if **cur == t {
                false
            } else {
                *cur = Arc::new(t);
                true
            }
        });
    }

    // --- edge links coming and going ---

    /// An uplink came up (edge routers).
    pub(crate) fn add_uplink(&self, e: Arc<EdgePeer>) {
        e.send_keys(&self.served_keys(), self.own_values());
        self.edges.add_uplink(e);
        self.recompute_edge_table();
    }

    pub(crate) fn remove_uplink(&self, e: &Arc<EdgePeer>) {
        self.edges.remove_uplink(e);
        self.recompute_edge_table();
    }

    /// An edge router attached (interior routers).
    pub(crate) fn add_edge(&self, e: Arc<EdgePeer>) {
        self.edges.attach(e);
    }

    pub(crate) fn remove_edge(&self, e: &Arc<EdgePeer>) {
        self.edges.detach(e);
        self.publish_addresses();
    }

    /// An address set arrived on an edge link.
    pub(crate) fn edge_addresses(&self, e: &Arc<EdgePeer>, mut set: wire::AddressSet) {
        let mut values = std::mem::take(&mut set.values);
        if let Err(why) = control::check_values(&values) {
            tracing::warn!(peer = %e.peer, %why, "Ignoring invalid topic values");
            values.clear();
        }
        for v in &mut values {
            // An edge speaks only for itself; an interior names each value's origin.
            if self.edge_table.is_none() || v.origin.is_empty() {
                v.origin = e.peer.clone();
            }
        }
        e.set_advertised(edge::keys_of(set), values);
        if self.edge_table.is_some() {
            self.recompute_edge_table();
        } else {
            self.publish_addresses();
        }
        self.changes.notify();
    }

    /// Keeps an attached edge told which keys and values it can reach through us.
    pub(crate) async fn feed_edge(self: Arc<Self>, mut table: TableRx, e: Arc<EdgePeer>) {
        type Sent = (BTreeMap<String, u32>, Vec<wire::TopicValue>);
        let mut last: Option<Sent> = None;
        loop {
            let t = table.borrow_and_update().clone();
            let next = edge::keys_for_edge(
                &t,
                &self.me.id,
                &e,
                &self.served_keys(),
                &self.edges.attached_keys(Some(&e)),
            );
            if last.as_ref() != Some(&next) {
                e.send_keys(&next.0, next.1.clone());
                last = Some(next);
            }
            if table.changed().await.is_err() {
                return;
            }
        }
    }
}
