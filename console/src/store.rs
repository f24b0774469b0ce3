//! The joined, in-memory model of the network: what every router says about itself, the
//! sites' records, the connections (both halves joined by flow id), the HTTP requests, and
//! the totals and time series derived from them.
//!
//! Every change comes through [`Store::apply_batch`], [`Store::apply_sites`],
//! [`Store::stream_lost`] and [`Store::evict`], each with the current time as a parameter, so
//! tests decide what time it is. Reading it is in `views`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use van_proto::admin::TopicSnapshot;
use van_proto::records::{ConnectionRecord, RecordBatch, RequestRecord, RouterState};

mod series;
#[cfg(test)]
pub(crate) mod tests;

pub(crate) use series::{SLOT_SECS, Series};

/// An interned string: addresses, router and site ids, outcomes.
pub(crate) type Str = Arc<str>;

/// Outcome the console gives a connection whose end record never came.
pub(crate) const OUTCOME_UNKNOWN: &str = "unknown";

/// How much history the store keeps. Live state (routers, open connections) is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Ended connections and requests older than this are dropped.
    pub retention: Duration,
    /// At most this many ended connections; the oldest go first.
    pub max_connections: usize,
    /// At most this many requests; the oldest go first.
    pub max_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Long enough to look back at an incident, short enough to stay small.
            retention: Duration::from_secs(15 * 60),
            // About 40 MB each at the sizes the benchmark measures.
            max_connections: 200_000,
            max_requests: 200_000,
        }
    }
}

/// A site as its controller publishes it on `van.site.v1`; fields this console does not use
/// are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub(crate) struct SiteRecord {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) mode: String,
    pub(crate) version: String,
    pub(crate) router_id: String,
    pub(crate) services: Vec<SiteService>,
    pub(crate) links: Vec<SiteLink>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub(crate) struct SiteService {
    pub(crate) address: String,
    pub(crate) protocol: String,
    pub(crate) ports: Vec<u16>,
    pub(crate) created: u64,
    pub(crate) targets: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub(crate) struct SiteLink {
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) peer_router: String,
    pub(crate) cost: u32,
}

/// One router, as its records say.
#[derive(Debug)]
pub(crate) struct RouterEntry {
    pub(crate) instance: u64,
    /// Its stream is flowing; false once it ended (the router left or restarted).
    pub(crate) up: bool,
    /// The last state it sent, while up.
    pub(crate) state: Option<RouterState>,
    /// Flows whose half this router holds and that are open: true for the client half
    /// (ingress or local), false for the egress half.
    open: HashMap<u64, bool>,
}

/// What the console knows of one half of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Unknown,
    Open,
    Ended,
    /// Ended by the console: its router went away or its full state no longer listed it.
    /// A later open record from the same router revives it.
    Lost,
}

impl Half {
    fn is_over(self) -> bool {
        matches!(self, Half::Ended | Half::Lost)
    }
}

/// One TCP connection, both halves joined.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) flow_id: u64,
    pub(crate) address: Str,
    pub(crate) protocol: Str,
    pub(crate) source_router: Option<Str>,
    pub(crate) source_site: Option<Str>,
    pub(crate) dest_router: Option<Str>,
    pub(crate) dest_site: Option<Str>,
    pub(crate) client_addr: Box<str>,
    pub(crate) server_addr: Box<str>,
    pub(crate) path: Box<[Str]>,
    pub(crate) start_us: u64,
    /// 0 while active.
    pub(crate) end_us: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) first_byte_us: u64,
    pub(crate) outcome: Str,
    pub(crate) error: Box<str>,
    /// Index into `Store::traffic`: where its bytes and its end are counted.
    traffic: u32,
    client: Half,
    server: Half,
    /// The byte figures are the client half's (the egress half's stand in until it comes).
    bytes_from_client: bool,
    counted_closed: bool,
}

impl Conn {
    /// The client half decides; a connection known only by its egress half ends with it.
    pub(crate) fn terminated(&self) -> bool {
        match self.client {
            Half::Unknown => self.server.is_over(),
            c => c.is_over(),
        }
    }

    pub(crate) fn source_router(&self) -> Option<&Str> {
        self.source_router.as_ref()
    }
}

/// One HTTP request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) seq: u64,
    pub(crate) flow_id: u64,
    pub(crate) address: Str,
    pub(crate) protocol: Str,
    pub(crate) method: Str,
    pub(crate) path: Box<str>,
    pub(crate) status: u32,
    pub(crate) client_addr: Box<str>,
    pub(crate) source_router: Str,
    pub(crate) source_site: Option<Str>,
    pub(crate) dest_router: Option<Str>,
    pub(crate) dest_site: Option<Str>,
    pub(crate) start_us: u64,
    pub(crate) latency_us: u64,
    pub(crate) duration_us: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) error: Box<str>,
    pub(crate) version: Str,
}

/// Traffic between two sites for one service, the unit the metrics count in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TrafficKey {
    /// Empty when not (yet) known.
    pub(crate) source_site: Str,
    pub(crate) dest_site: Str,
    pub(crate) address: Str,
    pub(crate) protocol: Str,
}

/// Totals since the console started, and the last minute in 10-second slots for rates.
#[derive(Debug)]
pub(crate) struct Traffic {
    pub(crate) key: TrafficKey,
    pub(crate) opened: u64,
    pub(crate) closed: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) requests: u64,
    recent: [Recent; RECENT_SLOTS],
}

const RECENT_SLOTS: usize = 7;

#[derive(Debug, Default, Clone, Copy)]
struct Recent {
    slot: u64,
    bytes: u64,
    opened: u64,
    requests: u64,
}

/// Rates over about the last minute.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Rates {
    pub(crate) bytes: f64,
    pub(crate) connections: f64,
    pub(crate) requests: f64,
}

/// Request counts by traffic, method and status class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RequestKey {
    pub(crate) traffic: u32,
    pub(crate) method: Str,
    pub(crate) code: Str,
}

/// Latency counts for one address and status class, in the metric's buckets.
#[derive(Debug, Default, Clone)]
pub(crate) struct LatencyHistogram {
    pub(crate) counts: [u64; METRIC_LATENCY_BOUNDS.len() + 1],
    pub(crate) sum_seconds: f64,
}

/// Upper bounds of the `skupper_request_latency_seconds` buckets (0.5 ms to ~16 s), as the
/// router uses.
pub(crate) const METRIC_LATENCY_BOUNDS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096, 8.192, 16.384,
];

/// Counts of what arrived, for the console's own metrics and the live summary.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    /// Router states, connection and request records.
    pub(crate) records: u64,
    /// Records the router's streams lost.
    pub(crate) dropped: u64,
    pub(crate) connections_seen: u64,
    pub(crate) requests_seen: u64,
}

/// The joined model. See the module documentation.
#[derive(Debug, Default)]
pub struct Store {
    pub(crate) limits: Limits,
    strings: HashSet<Str>,
    pub(crate) routers: HashMap<Str, RouterEntry>,
    /// Every router ever heard of, with its site, so old records still name their sites.
    pub(crate) router_sites: HashMap<Str, Str>,
    /// Site records by site id: those routers that are up publish (in their full states),
    /// then those of the last topic snapshot.
    pub(crate) sites: BTreeMap<Str, SiteRecord>,
    /// The site record each router published, from its last full state.
    published: HashMap<Str, SiteRecord>,
    /// The last snapshot of the topic, by site id.
    topic_sites: BTreeMap<Str, SiteRecord>,
    /// Every site name ever heard of.
    pub(crate) site_names: HashMap<Str, Str>,
    /// Protocol of each address, from site records, listeners and connectors.
    protocols: HashMap<Str, Str>,
    /// The routing keys (`address:port`) of the services the sites' records define.
    pub(crate) defined: BTreeSet<Str>,
    pub(crate) conns: HashMap<u64, Conn>,
    /// Connections ordered by start time.
    pub(crate) by_start: BTreeSet<(u64, u64)>,
    /// (end, flow id) in the order connections ended; may hold stale entries.
    ended: VecDeque<(u64, u64)>,
    ended_count: usize,
    /// Requests ordered by start time.
    pub(crate) requests: BTreeMap<(u64, u64), Request>,
    request_seq: u64,
    pub(crate) series: HashMap<Str, Series>,
    pub(crate) traffic: Vec<Traffic>,
    traffic_index: HashMap<TrafficKey, u32>,
    pub(crate) request_totals: HashMap<RequestKey, u64>,
    pub(crate) latency: HashMap<(Str, Str), LatencyHistogram>,
    pub(crate) counters: Counters,
}

/// Which half a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ingress,
    Egress,
    Local,
}

/// What one record says, resolved against the store before the connection is touched.
struct Resolved {
    address: Str,
    protocol: Str,
    source_router: Option<Str>,
    source_site: Option<Str>,
    dest_router: Option<Str>,
    dest_site: Option<Str>,
    path: Box<[Str]>,
    outcome: Str,
}

/// What a change to one connection did, for the totals.
struct Change {
    created: bool,
    traffic: u32,
    bytes: (u64, u64),
    was_over: bool,
    is_over: bool,
    /// The end time before and after.
    old_end_us: u64,
    end_us: u64,
    first_close: bool,
}

// === impl Store ===

impl Store {
    pub fn new(limits: Limits) -> Store {
        Store {
            limits,
            ..Store::default()
        }
    }

    pub(crate) fn intern(&mut self, s: &str) -> Str {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Str = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    fn intern_opt(&mut self, s: &str) -> Option<Str> {
        (!s.is_empty()).then(|| self.intern(s))
    }

    /// The site of `router`, if it was ever heard of.
    pub(crate) fn site_of(&self, router: Option<&Str>) -> Option<&Str> {
        router.and_then(|r| self.router_sites.get(r))
    }

    /// Sites of a connection, resolved now when they were not known at its records' time.
    pub(crate) fn conn_sites<'a>(&'a self, c: &'a Conn) -> (Option<&'a Str>, Option<&'a Str>) {
        (
            c.source_site
                .as_ref()
                .or_else(|| self.site_of(c.source_router())),
            c.dest_site
                .as_ref()
                .or_else(|| self.site_of(c.dest_router.as_ref())),
        )
    }

    pub(crate) fn request_sites<'a>(
        &'a self,
        r: &'a Request,
    ) -> (Option<&'a Str>, Option<&'a Str>) {
        (
            r.source_site
                .as_ref()
                .or_else(|| self.site_of(Some(&r.source_router))),
            r.dest_site
                .as_ref()
                .or_else(|| self.site_of(r.dest_router.as_ref())),
        )
    }

    pub(crate) fn site_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.site_names.get(id).map_or(id, |n| n)
    }

    pub(crate) fn protocol_of(&self, address: &str) -> Option<&Str> {
        self.protocols.get(address)
    }

    pub(crate) fn open_connections(&self) -> usize {
        self.conns.len() - self.ended_count
    }

    /// Applies one batch of records from one router.
    pub fn apply_batch(&mut self, batch: RecordBatch, now_us: u64) {
        let router = self.intern(&batch.router_id);
        if batch.ended_stream {
            self.router_down(&router, now_us, "the router's record stream stopped");
            return;
        }
        self.counters.dropped += batch.dropped;
        let restarted = self
            .routers
            .get(&router)
            .is_some_and(|r| r.instance != batch.instance);
        if restarted {
            self.lose_open_halves(&router, now_us, "the router restarted");
        }
        let entry = self
            .routers
            .entry(router.clone())
            .or_insert_with(|| RouterEntry {
                instance: batch.instance,
                up: true,
                state: None,
                open: HashMap::new(),
            });
        entry.instance = batch.instance;
        entry.up = true;
        if restarted {
            entry.state = None;
        }
        let full = batch.full && batch.state.is_some();
        if let Some(state) = batch.state {
            self.counters.records += 1;
            self.apply_state(&router, state, full);
        }
        let time_us = if batch.time_us == 0 {
            now_us
        } else {
            batch.time_us
        };
        let listed: HashSet<u64> = if full {
            batch.open.iter().map(|r| r.flow_id).collect()
        } else {
            HashSet::new()
        };
        for rec in batch.open {
            self.apply_connection(&router, rec, false, time_us);
        }
        for rec in batch.ended {
            self.apply_connection(&router, rec, true, time_us);
        }
        for rec in batch.requests {
            self.apply_request(&router, rec);
        }
        if full {
            let gone: Vec<(u64, bool)> = self.routers.get(&router).map_or_else(Vec::new, |r| {
                r.open
                    .iter()
                    .filter(|(f, _)| !listed.contains(f))
                    .map(|(f, c)| (*f, *c))
                    .collect()
            });
            for (flow, client) in gone {
                self.lose_half(
                    &router,
                    flow,
                    client,
                    now_us,
                    "not in the router's full list of open connections",
                );
            }
        }
        self.enforce_caps();
    }

    fn apply_state(&mut self, router: &Str, mut state: RouterState, full: bool) {
        if full {
            // Only full states say what the router published; none means it cleared it.
            let record = state
                .published
                .iter()
                .find(|p| p.topic == van_proto::controller::TOPIC_SITES)
                .and_then(|p| serde_json::from_slice::<SiteRecord>(&p.payload).ok())
                .filter(|r| !r.id.is_empty());
            let changed = match record {
                Some(r) => {
                    self.published.insert(router.clone(), r);
                    true
                }
                None => self.published.remove(router).is_some(),
            };
            if changed {
                self.merge_sites();
            }
        }
        // Kept in `published`, not again with every state.
        state.published.clear();
        if let Some(status) = &state.status
            && !status.site_id.is_empty()
        {
            let site = self.intern(&status.site_id);
            self.router_sites.insert(router.clone(), site.clone());
            self.site_names.entry(site.clone()).or_insert(site);
        }
        let keys: Vec<(String, String)> = state
            .listeners
            .iter()
            .map(|l| (l.routing_key.clone(), l.protocol.clone()))
            .chain(
                state
                    .connectors
                    .iter()
                    .map(|c| (c.routing_key.clone(), c.protocol.clone())),
            )
            .collect();
        for (address, protocol) in keys {
            if !address.is_empty() && !self.protocols.contains_key(address.as_str()) {
                let (a, p) = (self.intern(&address), self.intern(norm_protocol(&protocol)));
                self.protocols.insert(a, p);
            }
        }
        if let Some(r) = self.routers.get_mut(router) {
            r.state = Some(state);
        }
    }

    /// Applies one topic snapshot of `van.site.v1`: it replaces every site record.
    pub fn apply_sites(&mut self, snapshot: TopicSnapshot) -> Vec<String> {
        let mut bad = Vec::new();
        let mut sites = BTreeMap::new();
        for v in snapshot.values {
            match serde_json::from_slice::<SiteRecord>(&v.payload) {
                Ok(rec) if rec.id.is_empty() => {
                    bad.push(format!(
                        "router {} published a site without an id",
                        v.origin
                    ));
                }
                Ok(rec) => {
                    let id = self.intern(&rec.id);
                    sites.entry(id).or_insert(rec);
                }
                Err(e) => bad.push(format!(
                    "router {} published an unreadable site record: {e}",
                    v.origin
                )),
            }
        }
        self.topic_sites = sites;
        self.merge_sites();
        bad
    }

    /// Rebuilds `sites` from what routers published and the topic, and learns names and
    /// protocols from them.
    fn merge_sites(&mut self) {
        let mut sites = BTreeMap::new();
        let mut published: Vec<&SiteRecord> = self.published.values().collect();
        published.sort_by(|a, b| a.id.cmp(&b.id));
        for rec in published.into_iter().chain(self.topic_sites.values()) {
            sites.entry(rec.id.clone()).or_insert_with(|| rec.clone());
        }
        let mut merged = BTreeMap::new();
        let mut defined = BTreeSet::new();
        for (id, rec) in sites {
            let id = self.intern(&id);
            if !rec.name.is_empty() {
                let name = self.intern(&rec.name);
                self.site_names.insert(id.clone(), name);
            }
            // A record names a service; routers and flows use one key per port.
            for s in rec.services.iter().filter(|s| !s.address.is_empty()) {
                let protocol = self.intern(norm_protocol(&s.protocol));
                for port in &s.ports {
                    let key = self.intern(&format!("{}:{port}", s.address));
                    if !s.protocol.is_empty() {
                        self.protocols.insert(key.clone(), protocol.clone());
                    }
                    defined.insert(key);
                }
            }
            merged.insert(id, rec);
        }
        self.defined = defined;
        self.sites = merged;
    }

    /// The console's own stream from its router broke: nothing it knew is current. Every
    /// router is down until it is heard of again (its first batch holds its whole state).
    pub fn stream_lost(&mut self, now_us: u64) {
        let routers: Vec<Str> = self.routers.keys().cloned().collect();
        for r in routers {
            self.router_down(&r, now_us, "the console lost its record stream");
        }
    }

    fn router_down(&mut self, router: &Str, now_us: u64, why: &str) {
        self.lose_open_halves(router, now_us, why);
        if self.published.remove(router).is_some() {
            self.merge_sites();
        }
        if let Some(r) = self.routers.get_mut(router) {
            r.up = false;
            r.state = None;
        }
    }

    fn lose_open_halves(&mut self, router: &Str, now_us: u64, why: &str) {
        let open: Vec<(u64, bool)> = self
            .routers
            .get(router)
            .map_or_else(Vec::new, |r| r.open.iter().map(|(f, c)| (*f, *c)).collect());
        for (flow, client) in open {
            self.lose_half(router, flow, client, now_us, why);
        }
    }

    /// Ends an open half whose end record will never come.
    fn lose_half(&mut self, router: &Str, flow: u64, client: bool, now_us: u64, why: &str) {
        if let Some(r) = self.routers.get_mut(router) {
            r.open.remove(&flow);
        }
        let outcome = self.intern(OUTCOME_UNKNOWN);
        let Some(c) = self.conns.get_mut(&flow) else {
            return;
        };
        let (was_over, old_end_us) = (c.terminated(), c.end_us);
        let half = if client { &mut c.client } else { &mut c.server };
        if *half != Half::Open {
            return;
        }
        *half = Half::Lost;
        if client || c.client == Half::Unknown {
            c.end_us = now_us.max(c.start_us);
            c.outcome = outcome;
            c.error = why.into();
        }
        let is_over = c.terminated();
        let first_close = is_over && !c.counted_closed;
        c.counted_closed |= is_over;
        let change = Change {
            created: false,
            traffic: c.traffic,
            bytes: (0, 0),
            was_over,
            is_over,
            old_end_us,
            end_us: c.end_us,
            first_close,
        };
        self.account(flow, change, now_us);
    }

    /// Looks up what a record names before its connection is borrowed.
    fn resolve(&mut self, router: &Str, role: Role, rec: &ConnectionRecord) -> Resolved {
        let address = self.intern(&rec.routing_key);
        let protocol = self
            .protocols
            .get(&address)
            .cloned()
            .unwrap_or_else(|| self.intern("tcp"));
        let path: Box<[Str]> = rec.path.iter().map(|p| self.intern(p)).collect();
        let here = Some(router.clone());
        let (source_router, dest_router) = match role {
            Role::Ingress => (here, self.intern_opt(&rec.dest_router)),
            Role::Local => (here.clone(), here),
            Role::Egress => (path.first().cloned(), here),
        };
        let outcome = self.intern(&rec.outcome);
        Resolved {
            source_site: self.site_of(source_router.as_ref()).cloned(),
            dest_site: self.site_of(dest_router.as_ref()).cloned(),
            address,
            protocol,
            source_router,
            dest_router,
            path,
            outcome,
        }
    }

    fn traffic_for(&mut self, key: TrafficKey) -> u32 {
        if let Some(i) = self.traffic_index.get(&key) {
            return *i;
        }
        let i = self.traffic.len() as u32;
        self.traffic.push(Traffic {
            key: key.clone(),
            opened: 0,
            closed: 0,
            bytes_out: 0,
            bytes_in: 0,
            requests: 0,
            recent: [Recent::default(); RECENT_SLOTS],
        });
        self.traffic_index.insert(key, i);
        i
    }

    fn empty(&mut self) -> Str {
        self.intern("")
    }

    fn apply_connection(&mut self, router: &Str, rec: ConnectionRecord, ended: bool, time_us: u64) {
        let role = match rec.role.as_str() {
            "ingress" => Role::Ingress,
            "egress" => Role::Egress,
            "local" => Role::Local,
            _ => return,
        };
        self.counters.records += 1;
        let client = role != Role::Egress;
        let flow = rec.flow_id;
        // A half that really ended stays ended: an open record for it is stale.
        if let Some(c) = self.conns.get(&flow) {
            let half = if client { c.client } else { c.server };
            if half == Half::Ended {
                return;
            }
        }
        if let Some(r) = self.routers.get_mut(router) {
            if ended {
                r.open.remove(&flow);
            } else {
                r.open.insert(flow, client);
            }
        }
        let res = self.resolve(router, role, &rec);
        let created = !self.conns.contains_key(&flow);
        if created {
            let empty = self.empty();
            let key = TrafficKey {
                source_site: res.source_site.clone().unwrap_or_else(|| empty.clone()),
                dest_site: res.dest_site.clone().unwrap_or_else(|| empty.clone()),
                address: res.address.clone(),
                protocol: res.protocol.clone(),
            };
            let traffic = self.traffic_for(key);
            self.conns.insert(
                flow,
                Conn {
                    flow_id: flow,
                    address: res.address.clone(),
                    protocol: res.protocol.clone(),
                    source_router: None,
                    source_site: None,
                    dest_router: None,
                    dest_site: None,
                    client_addr: "".into(),
                    server_addr: "".into(),
                    path: Box::new([]),
                    start_us: rec.start_us,
                    end_us: 0,
                    bytes_out: 0,
                    bytes_in: 0,
                    first_byte_us: 0,
                    outcome: empty,
                    error: "".into(),
                    traffic,
                    client: Half::Unknown,
                    server: Half::Unknown,
                    bytes_from_client: false,
                    counted_closed: false,
                },
            );
            self.by_start.insert((rec.start_us, flow));
            self.counters.connections_seen += 1;
        }
        let empty = self.empty();
        let Some(c) = self.conns.get_mut(&flow) else {
            return;
        };
        let (was_over, old_end_us) = (c.terminated(), c.end_us);
        let new_half = if ended { Half::Ended } else { Half::Open };
        if client {
            c.client = new_half;
            if role == Role::Local {
                c.server = new_half;
            }
            if c.start_us != rec.start_us {
                self.by_start.remove(&(c.start_us, flow));
                self.by_start.insert((rec.start_us, flow));
                c.start_us = rec.start_us;
            }
            c.source_router = res.source_router;
            c.source_site = res.source_site;
            if c.dest_router.is_none() || role == Role::Local {
                c.dest_router = res.dest_router;
                c.dest_site = res.dest_site;
            }
            c.client_addr = rec.client_addr.into();
            if role == Role::Local {
                c.server_addr = rec.server_addr.into();
            }
            if c.path.is_empty() || role == Role::Local {
                c.path = if res.path.is_empty() {
                    Box::new([router.clone()])
                } else {
                    res.path
                };
            }
        } else {
            c.server = new_half;
            c.dest_router = res.dest_router;
            c.dest_site = res.dest_site;
            if c.source_router.is_none() {
                c.source_router = res.source_router;
                c.source_site = res.source_site;
            }
            if c.client_addr.is_empty() {
                c.client_addr = rec.client_addr.into();
            }
            c.server_addr = rec.server_addr.into();
            if !res.path.is_empty() {
                c.path = res.path;
            }
        }
        let mut bytes = (0, 0);
        if client || !c.bytes_from_client {
            bytes = (
                rec.bytes_out.saturating_sub(c.bytes_out),
                rec.bytes_in.saturating_sub(c.bytes_in),
            );
            c.bytes_out = rec.bytes_out;
            c.bytes_in = rec.bytes_in;
            c.first_byte_us = rec.first_byte_us;
            c.bytes_from_client = client;
        }
        // The client half says how it ended; the egress half only while it is all we know.
        if client || c.client == Half::Unknown {
            if ended {
                c.end_us = rec.end_us.max(c.start_us);
                c.outcome = res.outcome;
                c.error = rec.error.into();
            } else {
                c.end_us = 0;
                c.outcome = empty;
                c.error = "".into();
            }
        }
        let is_over = c.terminated();
        let first_close = is_over && !c.counted_closed;
        if first_close {
            c.counted_closed = true;
        }
        let change = Change {
            created,
            traffic: c.traffic,
            bytes,
            was_over,
            is_over,
            old_end_us,
            end_us: c.end_us,
            first_close,
        };
        if created {
            self.series_for(&res.address).add_opened(rec.start_us);
        }
        if bytes != (0, 0) {
            self.series_for(&res.address)
                .add_bytes(time_us, bytes.0, bytes.1);
        }
        self.account(flow, change, time_us);
    }

    fn series_for(&mut self, address: &Str) -> &mut Series {
        self.series.entry(address.clone()).or_default()
    }

    /// Totals and the ended list after a connection changed.
    fn account(&mut self, flow: u64, change: Change, time_us: u64) {
        if let Some(t) = self.traffic.get_mut(change.traffic as usize) {
            t.opened += u64::from(change.created);
            t.closed += u64::from(change.first_close);
            t.bytes_out += change.bytes.0;
            t.bytes_in += change.bytes.1;
            let recent = t.recent_slot(time_us);
            recent.opened += u64::from(change.created);
            recent.bytes += change.bytes.0 + change.bytes.1;
        }
        match (change.was_over, change.is_over) {
            (false, true) => self.ended_count += 1,
            (true, false) => self.ended_count -= 1,
            _ => {}
        }
        // Eviction goes by the end time in force; an entry with an older one is skipped.
        if change.is_over && (!change.was_over || change.old_end_us != change.end_us) {
            self.ended.push_back((change.end_us, flow));
        }
    }

    fn apply_request(&mut self, router: &Str, rec: RequestRecord) {
        self.counters.records += 1;
        self.counters.requests_seen += 1;
        let address = self.intern(&rec.routing_key);
        let protocol = self
            .protocols
            .get(&address)
            .cloned()
            .unwrap_or_else(|| self.intern("http"));
        let dest_router = self.intern_opt(&rec.dest_router);
        let source_site = self.site_of(Some(router)).cloned();
        let dest_site = self.site_of(dest_router.as_ref()).cloned();
        let method = self.intern(&rec.method);
        let version = self.intern(&rec.version);
        let code = self.intern(status_class(rec.status));
        let empty = self.empty();
        let traffic = self.traffic_for(TrafficKey {
            source_site: source_site.clone().unwrap_or_else(|| empty.clone()),
            dest_site: dest_site.clone().unwrap_or_else(|| empty.clone()),
            address: address.clone(),
            protocol: protocol.clone(),
        });
        let end_us = rec.start_us + rec.duration_us;
        if let Some(t) = self.traffic.get_mut(traffic as usize) {
            t.requests += 1;
            t.recent_slot(end_us).requests += 1;
        }
        *self
            .request_totals
            .entry(RequestKey {
                traffic,
                method: method.clone(),
                code: code.clone(),
            })
            .or_default() += 1;
        if rec.status != 0 {
            let h = self.latency.entry((address.clone(), code)).or_default();
            let secs = rec.latency_us as f64 / 1e6;
            let i = METRIC_LATENCY_BOUNDS.partition_point(|&b| b < secs);
            h.counts[i] += 1;
            h.sum_seconds += secs;
        }
        self.series_for(&address)
            .add_request(end_us, rec.status, rec.latency_us);
        self.request_seq += 1;
        let seq = self.request_seq;
        self.requests.insert(
            (rec.start_us, seq),
            Request {
                seq,
                flow_id: rec.flow_id,
                address,
                protocol,
                method,
                path: rec.path.into(),
                status: rec.status,
                client_addr: rec.client_addr.into(),
                source_router: router.clone(),
                source_site,
                dest_router,
                dest_site,
                start_us: rec.start_us,
                latency_us: rec.latency_us,
                duration_us: rec.duration_us,
                bytes_out: rec.bytes_out,
                bytes_in: rec.bytes_in,
                error: rec.error.into(),
                version,
            },
        );
    }

    /// Removes one ended connection, the one that ended first.
    fn evict_oldest_ended(&mut self, cutoff_us: Option<u64>) -> bool {
        while let Some(&(end, flow)) = self.ended.front() {
            if cutoff_us.is_some_and(|c| end >= c) {
                return false;
            }
            self.ended.pop_front();
            // Entries are stale when the connection came back to life or ended again later.
            let current = self
                .conns
                .get(&flow)
                .is_some_and(|c| c.terminated() && c.end_us == end);
            if current {
                if let Some(c) = self.conns.remove(&flow) {
                    self.by_start.remove(&(c.start_us, flow));
                    self.ended_count -= 1;
                }
                return true;
            }
        }
        false
    }

    fn enforce_caps(&mut self) {
        while self.ended_count > self.limits.max_connections && self.evict_oldest_ended(None) {}
        while self.requests.len() > self.limits.max_requests {
            self.requests.pop_first();
        }
    }

    /// Drops ended connections and requests older than the retention, and series slots
    /// older than a day.
    pub fn evict(&mut self, now_us: u64) {
        let cutoff = now_us.saturating_sub(self.limits.retention.as_micros() as u64);
        while self.evict_oldest_ended(Some(cutoff)) {}
        while self
            .requests
            .first_key_value()
            .is_some_and(|(_, r)| r.start_us + r.duration_us < cutoff)
        {
            self.requests.pop_first();
        }
        self.enforce_caps();
        self.series.retain(|_, s| !s.prune(now_us));
    }
}

// === impl Traffic ===

impl Traffic {
    fn recent_slot(&mut self, time_us: u64) -> &mut Recent {
        let slot = time_us / (SLOT_SECS * 1_000_000);
        let r = &mut self.recent[(slot % RECENT_SLOTS as u64) as usize];
        if r.slot != slot {
            *r = Recent {
                slot,
                ..Recent::default()
            };
        }
        r
    }

    /// Rates over the last six slots, the current one included (so about the last minute).
    pub(crate) fn rates(&self, now_us: u64) -> Rates {
        let now = now_us / (SLOT_SECS * 1_000_000);
        let elapsed = (SLOT_SECS * (RECENT_SLOTS as u64 - 2)) as f64
            + (now_us % (SLOT_SECS * 1_000_000)) as f64 / 1e6;
        let mut r = Rates::default();
        for s in &self.recent {
            if s.slot + (RECENT_SLOTS as u64 - 2) >= now && s.slot <= now {
                r.bytes += s.bytes as f64;
                r.connections += s.opened as f64;
                r.requests += s.requests as f64;
            }
        }
        let per = elapsed.max(1.0);
        Rates {
            bytes: r.bytes / per,
            connections: r.connections / per,
            requests: r.requests / per,
        }
    }
}

/// "tcp" when nothing is said.
fn norm_protocol(p: &str) -> &str {
    if p.is_empty() { "tcp" } else { p }
}

/// "2xx" … "5xx", "1xx", or "error" when no response came.
pub(crate) fn status_class(status: u32) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "error",
    }
}
