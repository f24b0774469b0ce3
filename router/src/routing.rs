//! Link-state routing: the database of advertisements, shortest paths, and the table the
//! data path reads. Pure and synchronous; the task that drives it lives in `control.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use tokio::time::Instant;
use van_proto::wire;

/// A stored advertisement and when it was last refreshed.
#[derive(Debug, Clone)]
pub struct LsEntry {
    pub ls: wire::LinkState,
    pub received: Instant,
}

/// Link-state database of every router this one has heard of, itself included.
#[derive(Debug)]
pub struct Lsdb {
    self_id: String,
    entries: HashMap<String, LsEntry>,
}

/// Where a router can be reached from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoute {
    pub cost: u64,
    /// The neighbour to send to; equal to the router itself for neighbours, empty for self.
    pub next_hop: String,
    pub hops: u32,
    pub instance: u64,
    pub ls_seq: u64,
    pub neighbors: Vec<String>,
    /// The site the router belongs to, as it advertises it.
    pub site: String,
}

/// A router that holds connectors for a routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub router: String,
    pub cost: u64,
    pub connectors: u32,
}

/// What the data path consults: reachable routers and the destinations of each key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    pub nodes: BTreeMap<String, NodeRoute>,
    /// Destinations per routing key, cheapest first.
    pub addresses: BTreeMap<String, Vec<Destination>>,
    /// Multicast topics and the reachable routers subscribed to each.
    pub topics: BTreeMap<String, Vec<String>>,
    /// Values on network-wide topics: topic -> publishing router -> payload.
    pub values: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl RoutingTable {
    pub fn next_hop(&self, router: &str) -> Option<&str> {
        self.nodes.get(router).map(|n| n.next_hop.as_str())
    }

    pub fn reachable(&self, key: &str) -> bool {
        self.addresses.get(key).is_some_and(|d| !d.is_empty())
    }
}

/// Orders advertisements: a newer boot instance wins, then a higher sequence number.
fn newer(a: &wire::LinkState, b: &wire::LinkState) -> bool {
    (a.instance, a.seq) > (b.instance, b.seq)
}

impl Lsdb {
    pub fn new(self_id: impl Into<String>) -> Self {
        Lsdb {
            self_id: self_id.into(),
            entries: HashMap::new(),
        }
    }

    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// Stores `ls` if it is newer than what is held for its origin. Returns whether it was.
    pub fn accept(&mut self, ls: wire::LinkState, now: Instant) -> bool {
        match self.entries.get_mut(&ls.origin) {
            Some(e) if !newer(&ls, &e.ls) => {
                if ls.instance == e.ls.instance && ls.seq == e.ls.seq {
                    // A duplicate still proves the origin is alive.
                    e.received = now;
                }
                false
            }
            _ => {
                self.entries
                    .insert(ls.origin.clone(), LsEntry { ls, received: now });
                true
            }
        }
    }

    pub fn get(&self, origin: &str) -> Option<&wire::LinkState> {
        self.entries.get(origin).map(|e| &e.ls)
    }

    pub fn all(&self) -> impl Iterator<Item = &wire::LinkState> {
        self.entries.values().map(|e| &e.ls)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops advertisements of other routers not refreshed since `before`.
    /// Returns whether anything was dropped.
    pub fn expire(&mut self, before: Instant) -> bool {
        let n = self.entries.len();
        let me = self.self_id.clone();
        self.entries
            .retain(|id, e| *id == me || e.received >= before);
        n != self.entries.len()
    }

    /// Shortest paths from this router over links both ends advertise.
    pub fn compute(&self) -> RoutingTable {
        // Index the routers so the search works on integers.
        let mut ids: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        ids.sort_unstable();
        let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let Some(&root) = index.get(self.self_id.as_str()) else {
            return RoutingTable::default();
        };
        // Adjacency with the two-way check: u lists v and v lists u. Cost is the larger claim.
        let mut adj: Vec<Vec<(usize, u64)>> = vec![Vec::new(); ids.len()];
        for (u, id) in ids.iter().enumerate() {
            let ls = &self.entries[*id].ls;
            for n in &ls.neighbors {
                let Some(&v) = index.get(n.router_id.as_str()) else {
                    continue;
                };
                if v == u {
                    continue;
                }
                let back = self.entries[ids[v]]
                    .ls
                    .neighbors
                    .iter()
                    .find(|b| b.router_id == **id);
                if let Some(b) = back {
                    adj[u].push((v, u64::from(n.cost.max(b.cost).max(1))));
                }
            }
        }
        let mut dist = vec![u64::MAX; ids.len()];
        let mut hops = vec![0u32; ids.len()];
        let mut first = vec![usize::MAX; ids.len()];
        let mut heap = BinaryHeap::new();
        dist[root] = 0;
        first[root] = root;
        // Ties break on the router index (sorted ids), so every router computes the same tree.
        heap.push(Reverse((0u64, root)));
        while let Some(Reverse((d, u))) = heap.pop() {
            if d > dist[u] {
                continue;
            }
            for &(v, c) in &adj[u] {
                let nd = d + c;
                let hop = if u == root { v } else { first[u] };
                if nd < dist[v] || (nd == dist[v] && hop < first[v]) {
                    dist[v] = nd;
                    hops[v] = hops[u] + 1;
                    first[v] = hop;
                    heap.push(Reverse((nd, v)));
                }
            }
        }
        let mut table = RoutingTable::default();
        for (i, id) in ids.iter().enumerate() {
            if dist[i] == u64::MAX {
                continue;
            }
            let ls = &self.entries[*id].ls;
            table.nodes.insert(
                id.to_string(),
                NodeRoute {
                    cost: dist[i],
                    next_hop: if i == root {
                        String::new()
                    } else {
                        ids[first[i]].to_string()
                    },
                    hops: hops[i],
                    instance: ls.instance,
                    ls_seq: ls.seq,
                    neighbors: ls.neighbors.iter().map(|n| n.router_id.clone()).collect(),
                    site: ls.site.clone(),
                },
            );
            for a in &ls.addresses {
                if a.connectors == 0 {
                    continue;
                }
                table
                    .addresses
                    .entry(a.routing_key.clone())
                    .or_default()
                    .push(Destination {
                        router: id.to_string(),
                        cost: dist[i],
                        connectors: a.connectors,
                    });
            }
            for t in &ls.topics {
                table
                    .topics
                    .entry(t.clone())
                    .or_default()
                    .push(id.to_string());
            }
            for v in &ls.values {
                let origin = if v.origin.is_empty() {
                    *id
                } else {
                    v.origin.as_str()
                };
                table
                    .values
                    .entry(v.topic.clone())
                    .or_default()
                    .insert(origin.to_string(), v.payload.clone());
            }
        }
        for d in table.addresses.values_mut() {
            d.sort_by(|a, b| a.cost.cmp(&b.cost).then_with(|| a.router.cmp(&b.router)));
        }
        table
    }
}

/// Picks the destination for a new flow: the lowest `open flows + path cost`, where open
/// flows are spread over the destination's connectors. Ties go to the cheaper path, then
/// rotate with `tiebreak` so equal destinations share new flows.
pub fn choose(
    dests: &[Destination],
    open_flows: impl Fn(&str) -> u32,
    tiebreak: usize,
) -> Option<&Destination> {
    let score = |d: &Destination| {
        let per = u64::from(open_flows(&d.router)) / u64::from(d.connectors.max(1));
        (per + d.cost, d.cost)
    };
    let best = dests.iter().map(score).min()?;
    let tied: Vec<&Destination> = dests.iter().filter(|d| score(d) == best).collect();
    Some(tied[tiebreak % tied.len()])
}

/// Shared handle to the newest table.
pub type TableRx = tokio::sync::watch::Receiver<Arc<RoutingTable>>;

#[cfg(test)]
mod tests;
