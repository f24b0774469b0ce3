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

    pub(crate) fn send_keys(&self, keys: &BTreeMap<String, u32>, values: Vec<wire::TopicValue>) {
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

    /// Records what the peer advertised.
    pub(crate) fn set_advertised(
        &self,
        keys: BTreeMap<String, u32>,
        values: Vec<wire::TopicValue>,
    ) {
        *self.values.lock().expect("edge values") = values;
        *self.keys.lock().expect("edge keys") = keys;
    }

    pub(crate) fn has_key(&self, key: &str) -> bool {
        self.keys.lock().expect("edge keys").contains_key(key)
    }
}

pub(crate) fn keys_of(set: wire::AddressSet) -> BTreeMap<String, u32> {
    set.addresses
        .into_iter()
        // Keys a router could not have been configured with are dropped.
        .filter(|a| crate::config::valid_routing_key(&a.routing_key))
        .map(|a| (a.routing_key, a.connectors.max(1)))
        .collect()
}

/// The edge links of this router: uplinks to interior routers (on an edge) or edges attached
/// to it (on an interior).
#[derive(Debug, Default)]
pub(crate) struct Edges {
    uplinks: Mutex<Vec<Arc<EdgePeer>>>,
    attached: Mutex<Vec<Arc<EdgePeer>>>,
    /// Rotates among equally loaded edges, so one-at-a-time flows (HTTP requests) share.
    rotate: std::sync::atomic::AtomicUsize,
}

impl Edges {
    // --- on an edge router ---

    pub(crate) fn add_uplink(&self, e: Arc<EdgePeer>) {
        self.uplinks.lock().expect("uplinks").push(e);
    }

    pub(crate) fn remove_uplink(&self, e: &Arc<EdgePeer>) {
        self.uplinks
            .lock()
            .expect("uplinks")
            .retain(|u| !Arc::ptr_eq(u, e));
    }

    /// The uplink new flows use: the cheapest one that is up (ties by link name).
    pub(crate) fn active_uplink(&self) -> Option<Arc<EdgePeer>> {
        self.uplinks
            .lock()
            .expect("uplinks")
            .iter()
            .filter(|u| !u.conn.is_closed())
            .min_by(|a, b| (a.cost, &a.name).cmp(&(b.cost, &b.name)))
            .cloned()
    }

    pub(crate) fn uplinks_up(&self) -> usize {
        self.uplinks
            .lock()
            .expect("uplinks")
            .iter()
            .filter(|u| !u.conn.is_closed())
            .count()
    }

    /// Sends this edge router's served keys and values to every uplink.
    pub(crate) fn send_to_uplinks(
        &self,
        keys: &BTreeMap<String, u32>,
        values: &[wire::TopicValue],
    ) {
        for u in self.uplinks.lock().expect("uplinks").iter() {
            u.send_keys(keys, values.to_vec());
        }
    }

    // --- on an interior router ---

    pub(crate) fn attach(&self, e: Arc<EdgePeer>) {
        self.attached.lock().expect("edges").push(e);
    }

    pub(crate) fn detach(&self, e: &Arc<EdgePeer>) {
        self.attached
            .lock()
            .expect("edges")
            .retain(|x| !Arc::ptr_eq(x, e));
    }

    /// The attached edge that serves `key` with the fewest flows, other than `except`.
    pub(crate) fn edge_for(&self, key: &str, except: &str) -> Option<Arc<EdgePeer>> {
        let attached = self.attached.lock().expect("edges");
        let cands: Vec<(&Arc<EdgePeer>, usize)> = attached
            .iter()
            .filter(|e| e.peer != except && !e.conn.is_closed() && e.has_key(key))
            .map(|e| (e, e.conn.active_streams()))
            .collect();
        let least = cands.iter().map(|(_, n)| *n).min()?;
        let tied: Vec<&Arc<EdgePeer>> = cands
            .into_iter()
            .filter(|(_, n)| *n == least)
            .map(|(e, _)| e)
            .collect();
        let i = self
            .rotate
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(tied[i % tied.len()].clone())
    }

    /// Values published by attached edges, advertised on their behalf with their origin.
    pub(crate) fn attached_values(&self) -> Vec<wire::TopicValue> {
        let mut out = Vec::new();
        for e in self.attached.lock().expect("edges").iter() {
            out.extend(e.values.lock().expect("edge values").iter().cloned());
        }
        out
    }

    /// Keys advertised by attached edges other than `except` (served on their behalf by
    /// this router).
    pub(crate) fn attached_keys(&self, except: Option<&Arc<EdgePeer>>) -> BTreeMap<String, u32> {
        let mut keys = BTreeMap::new();
        for e in self.attached.lock().expect("edges").iter() {
            if except.is_some_and(|x| Arc::ptr_eq(x, e)) {
                continue;
            }
            for (k, n) in e.keys.lock().expect("edge keys").iter() {
                *keys.entry(k.clone()).or_default() += n;
            }
        }
        keys
    }
}

/// An edge router's table: itself, and through its active uplink the keys and values the
/// interior reported. `own_values` go last: nobody else speaks for this router.
pub(crate) fn edge_table(
    id: &str,
    instance: u64,
    local_keys: BTreeMap<String, u32>,
    own_values: Vec<wire::TopicValue>,
    uplink: Option<&EdgePeer>,
) -> RoutingTable {
    let mut t = RoutingTable::default();
    t.nodes.insert(
        id.to_string(),
        NodeRoute {
            cost: 0,
            next_hop: String::new(),
            hops: 0,
            instance,
            ls_seq: 0,
            neighbors: Vec::new(),
            site: String::new(),
        },
    );
    for (k, n) in local_keys {
        t.addresses.entry(k).or_default().push(Destination {
            router: id.to_string(),
            cost: 0,
            connectors: n,
        });
    }
    if let Some(up) = uplink {
        t.nodes.insert(
            up.peer.clone(),
            NodeRoute {
                cost: u64::from(up.cost),
                next_hop: up.peer.clone(),
                hops: 1,
                instance: 0,
                ls_seq: 0,
                neighbors: Vec::new(),
                site: String::new(),
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
    for v in own_values {
        t.values
            .entry(v.topic)
            .or_default()
            .insert(id.to_string(), v.payload);
    }
    t
}

/// What an attached edge is told it can reach through this router: every reachable key
/// except those only that edge itself serves, and every value but the edge's own.
/// `local_keys` are this router's own connectors; `others` the keys of its other edges.
pub(crate) fn keys_for_edge(
    table: &RoutingTable,
    self_id: &str,
    edge: &EdgePeer,
    local_keys: &BTreeMap<String, u32>,
    others: &BTreeMap<String, u32>,
) -> (BTreeMap<String, u32>, Vec<wire::TopicValue>) {
    let mut keys = BTreeMap::new();
    for (k, dests) in &table.addresses {
        let mut n = 0;
        for d in dests {
            if d.router != self_id {
                n += d.connectors;
                continue;
            }
            // Our own entry counts our connectors and other edges', not this edge's.
            n += local_keys.get(k).copied().unwrap_or(0);
            n += others.get(k).copied().unwrap_or(0);
        }
        if n > 0 {
            keys.insert(k.clone(), n);
        }
    }
    let mut values = Vec::new();
    for (topic, by_origin) in &table.values {
        for (origin, payload) in by_origin {
            if *origin != edge.peer {
                values.push(wire::TopicValue {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    origin: origin.clone(),
                });
            }
        }
    }
    (keys, values)
}
