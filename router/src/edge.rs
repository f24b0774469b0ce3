//! Edge mode. An edge router keeps uplinks to interior routers and uses one at a time (the
//! cheapest that is up). It takes no part in link-state routing: its interior router
//! advertises the edge's routing keys as its own, so edges coming and going never change the
//! network's topology. The interior tells each edge which keys are reachable; an edge sends
//! every flow it cannot serve locally up to its active uplink and never carries transit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use van_proto::wire;

use crate::control::ControlOut;
use crate::mux::DataConn;
use crate::router::Router;
use crate::routing::{Destination, NodeRoute, RoutingTable};
use crate::wire::Frame;

/// The other end of an edge link: an uplink (on an edge) or an attached edge (on an interior).
#[derive(Debug)]
pub struct EdgePeer {
    /// Link name (configured, or `accepted:...`).
    pub name: String,
    pub peer: String,
    pub cost: u32,
    pub conn: Arc<DataConn>,
    ctl: tokio::sync::mpsc::UnboundedSender<ControlOut>,
    /// Keys the peer advertised: reachable keys (from an interior) or served keys (from an edge).
    pub keys: Mutex<BTreeMap<String, u32>>,
    /// Topic values the peer sent: the network's (from an interior) or its own (from an
    /// edge), each with its origin filled in.
    values: Mutex<Vec<wire::TopicValue>>,
}

impl EdgePeer {
    pub(crate) fn new(
        name: String,
        peer: String,
        cost: u32,
        conn: Arc<DataConn>,
        ctl: tokio::sync::mpsc::UnboundedSender<ControlOut>,
    ) -> Arc<EdgePeer> {
        Arc::new(EdgePeer {
            name,
            peer,
            cost,
            conn,
            ctl,
            keys: Mutex::new(BTreeMap::new()),
            values: Mutex::new(Vec::new()),
        })
    }

    fn send_keys(&self, keys: &BTreeMap<String, u32>, values: Vec<wire::TopicValue>) {
        let set = wire::AddressSet {
            seq: 0,
            addresses: keys
                .iter()
                .map(|(k, n)| wire::AddressEntry {
                    routing_key: k.clone(),
                    connectors: *n,
                })
                .collect(),
            values,
        };
        let _ = self.ctl.send(ControlOut::Frame(Frame::AddressSet(set)));
    }

    pub(crate) fn has_key(&self, key: &str) -> bool {
        self.keys.lock().expect("edge keys").contains_key(key)
    }
}

fn keys_of(set: wire::AddressSet) -> BTreeMap<String, u32> {
    set.addresses
        .into_iter()
        // Keys a router could not have been configured with are dropped.
        .filter(|a| crate::config::valid_routing_key(&a.routing_key))
        .map(|a| (a.routing_key, a.connectors.max(1)))
        .collect()
}

impl Router {
    // --- on an edge router ---

    pub(crate) fn add_uplink(&self, e: Arc<EdgePeer>) {
        e.send_keys(&self.local_keys(), self.own_values());
        self.uplinks.lock().expect("uplinks").push(e);
        self.recompute_edge_table();
    }

    pub(crate) fn remove_uplink(&self, e: &Arc<EdgePeer>) {
        self.uplinks
            .lock()
            .expect("uplinks")
            .retain(|u| !Arc::ptr_eq(u, e));
        self.recompute_edge_table();
    }

    /// The uplink new flows use: the cheapest one that is up (ties by link name).
    pub fn active_uplink(&self) -> Option<Arc<EdgePeer>> {
        self.uplinks
            .lock()
            .expect("uplinks")
            .iter()
            .filter(|u| !u.conn.is_closed())
            .min_by(|a, b| (a.cost, &a.name).cmp(&(b.cost, &b.name)))
            .cloned()
    }

    /// Uplinks currently up (for status and tests).
    pub fn uplinks_up(&self) -> usize {
        self.uplinks
            .lock()
            .expect("uplinks")
            .iter()
            .filter(|u| !u.conn.is_closed())
            .count()
    }

    /// An edge's table: itself, and through its active uplink the keys the interior reported.
    pub(crate) fn recompute_edge_table(&self) {
        let Some(tx) = &self.edge_table else { return };
        let mut t = RoutingTable::default();
        t.nodes.insert(
            self.id.clone(),
            NodeRoute {
                cost: 0,
                next_hop: String::new(),
                hops: 0,
                instance: self.instance,
                ls_seq: 0,
                neighbors: Vec::new(),
            },
        );
        for (k, n) in self.local_keys() {
            t.addresses.entry(k).or_default().push(Destination {
                router: self.id.clone(),
                cost: 0,
                connectors: n,
            });
        }
        if let Some(up) = self.active_uplink() {
            t.nodes.insert(
                up.peer.clone(),
                NodeRoute {
                    cost: u64::from(up.cost),
                    next_hop: up.peer.clone(),
                    hops: 1,
                    instance: 0,
                    ls_seq: 0,
                    neighbors: Vec::new(),
                },
            );
            for (k, n) in up.keys.lock().expect("edge keys").iter() {
                t.addresses.entry(k.clone()).or_default().push(Destination {
                    router: up.peer.clone(),
                    cost: u64::from(up.cost),
                    connectors: *n,
                });
            }
            for v in up.values.lock().expect("edge values").iter() {
                t.values
                    .entry(v.topic.clone())
                    .or_default()
                    .insert(v.origin.clone(), v.payload.clone());
            }
        }
        // Our own values last: nobody else speaks for us.
        for v in self.own_values() {
            t.values
                .entry(v.topic)
                .or_default()
                .insert(self.id.clone(), v.payload);
        }
        tx.send_if_modified(|cur| {
            if **cur == t {
                false
            } else {
                *cur = Arc::new(t);
                true
            }
        });
    }

    // --- on an interior router ---

    pub(crate) fn add_edge(&self, e: Arc<EdgePeer>) {
        self.edges.lock().expect("edges").push(e);
    }

    pub(crate) fn remove_edge(&self, e: &Arc<EdgePeer>) {
        self.edges
            .lock()
            .expect("edges")
            .retain(|x| !Arc::ptr_eq(x, e));
        self.publish_addresses();
    }

    /// The attached edge that serves `key` with the fewest flows, other than `except`.
    pub(crate) fn edge_for(&self, key: &str, except: &str) -> Option<Arc<EdgePeer>> {
        self.edges
            .lock()
            .expect("edges")
            .iter()
            .filter(|e| e.peer != except && !e.conn.is_closed() && e.has_key(key))
            .min_by_key(|e| e.conn.active_streams())
            .cloned()
    }

    /// Values published by attached edges, advertised on their behalf with their origin.
    pub(crate) fn edge_values(&self) -> Vec<wire::TopicValue> {
        let mut out = Vec::new();
        for e in self.edges.lock().expect("edges").iter() {
            out.extend(e.values.lock().expect("edge values").iter().cloned());
        }
        out
    }

    /// Keys advertised by attached edges (served on their behalf by this router).
    pub(crate) fn edge_keys(&self) -> BTreeMap<String, u32> {
        let mut keys = BTreeMap::new();
        for e in self.edges.lock().expect("edges").iter() {
            for (k, n) in e.keys.lock().expect("edge keys").iter() {
                *keys.entry(k.clone()).or_default() += n;
            }
        }
        keys
    }

    // --- both ---

    /// An address set arrived on an edge link.
    pub(crate) fn edge_addresses(&self, e: &Arc<EdgePeer>, mut set: wire::AddressSet) {
        let mut values = std::mem::take(&mut set.values);
        if let Err(why) = crate::control::check_values(&values) {
            tracing::warn!(peer = %e.peer, %why, "Ignoring invalid topic values");
            values.clear();
        }
        for v in &mut values {
            // An edge speaks only for itself; an interior names each value's origin.
            if self.edge_table.is_none() || v.origin.is_empty() {
                v.origin = e.peer.clone();
            }
        }
        *e.values.lock().expect("edge values") = values;
        *e.keys.lock().expect("edge keys") = keys_of(set);
        if self.edge_table.is_some() {
            self.recompute_edge_table();
        } else {
            self.publish_addresses();
        }
        self.changed();
    }

    /// Sends this edge router's served keys to every uplink.
    pub(crate) fn announce_to_uplinks(&self) {
        let keys = self.local_keys();
        let values = self.own_values();
        for u in self.uplinks.lock().expect("uplinks").iter() {
            u.send_keys(&keys, values.clone());
        }
        self.recompute_edge_table();
    }
}

/// Keeps an attached edge told which keys it can reach through us: every reachable key
/// except those only that edge itself serves.
pub(crate) async fn feed_edge(router: Arc<Router>, e: Arc<EdgePeer>) {
    let mut table = router.table_rx();
    type Sent = (BTreeMap<String, u32>, Vec<wire::TopicValue>);
    let mut last: Option<Sent> = None;
    loop {
        let t = table.borrow_and_update().clone();
        let local = router.local_keys();
        let mut keys = BTreeMap::new();
        for (k, dests) in &t.addresses {
            let mut n = 0;
            for d in dests {
                if d.router != router.id {
                    n += d.connectors;
                    continue;
                }
                // Our own entry counts our connectors and other edges', not this edge's.
                n += local.get(k).copied().unwrap_or(0);
                n += router
                    .edges
                    .lock()
                    .expect("edges")
                    .iter()
                    .filter(|x| !Arc::ptr_eq(x, &e))
                    .filter_map(|x| x.keys.lock().expect("edge keys").get(k).copied())
                    .sum::<u32>();
            }
            if n > 0 {
                keys.insert(k.clone(), n);
            }
        }
        // Every value in the network but the edge's own.
        let mut values = Vec::new();
        for (topic, by_origin) in &t.values {
            for (origin, payload) in by_origin {
                if *origin != e.peer {
                    values.push(wire::TopicValue {
                        topic: topic.clone(),
                        payload: payload.clone(),
                        origin: origin.clone(),
                    });
                }
            }
        }
        let next = (keys, values);
        if last.as_ref() != Some(&next) {
            e.send_keys(&next.0, next.1.clone());
            last = Some(next);
        }
        if table.changed().await.is_err() {
            return;
        }
    }
}
