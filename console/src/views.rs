//! What the API shows, built from the store under its read lock: one struct per kind of item,
//! with the field names of docs/console-api.md.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use van_proto::records::RouterState;

use crate::store::{Conn, Request, Store, Str, status_class};

/// Items whose life `[start, end or now]` overlaps `[start_us, end_us]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) start_us: u64,
    pub(crate) end_us: u64,
}

impl Range {
    pub(crate) const ALL: Range = Range {
        start_us: 0,
        end_us: u64::MAX,
    };

    pub(crate) fn overlaps(&self, start_us: u64, end_us: u64) -> bool {
        start_us <= self.end_us && end_us >= self.start_us
    }

    pub(crate) fn has_conn(&self, c: &Conn, now_us: u64) -> bool {
        self.overlaps(c.start_us, conn_end(c, now_us))
    }

    pub(crate) fn has_request(&self, r: &Request) -> bool {
        self.overlaps(r.start_us, r.start_us + r.duration_us)
    }
}

fn conn_end(c: &Conn, now_us: u64) -> u64 {
    if c.terminated() {
        c.end_us
    } else {
        now_us.max(c.start_us)
    }
}

fn ms(us: u64) -> u64 {
    us / 1000
}

fn ms_f(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn or_empty(s: Option<&Str>) -> &str {
    s.map_or("", |s| s)
}

/// `host` of `host:port` or `[v6]:port`.
pub(crate) fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.as_bytes().iter().rposition(|&b| b == b':') {
        Some(i) if !addr.as_bytes()[..i].contains(&b':') => &addr[..i],
        _ => addr,
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SiteItem {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) mode: String,
    pub(crate) version: String,
    pub(crate) routers: Vec<String>,
    pub(crate) up: bool,
    pub(crate) links: u32,
    pub(crate) services_offered: Vec<String>,
    pub(crate) services_consumed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RouterItem {
    pub(crate) id: String,
    pub(crate) site_id: String,
    pub(crate) site_name: String,
    pub(crate) mode: String,
    pub(crate) version: String,
    pub(crate) hostname: String,
    pub(crate) start_time: u64,
    pub(crate) active_flows: u32,
    pub(crate) flows_total: u64,
    pub(crate) up: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LinkItem {
    pub(crate) id: String,
    pub(crate) router_id: String,
    pub(crate) site_id: String,
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) direction: String,
    pub(crate) state: String,
    pub(crate) peer_router_id: String,
    pub(crate) peer_site_id: String,
    pub(crate) cost: u32,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) errors: u64,
    pub(crate) last_error: String,
    pub(crate) up_seconds: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Endpoint {
    pub(crate) site_id: String,
    pub(crate) router_id: String,
    /// `connector` or `listener`: the name of the one on that router.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) connector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listener: Option<String>,
    pub(crate) host: String,
    pub(crate) port: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceItem {
    pub(crate) address: String,
    pub(crate) protocol: String,
    pub(crate) served_by: Vec<Endpoint>,
    pub(crate) reached_from: Vec<Endpoint>,
    pub(crate) open_connections: u64,
    pub(crate) connections: u64,
    pub(crate) requests: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
}

/// A listener or a connector.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PortItem {
    pub(crate) id: String,
    pub(crate) router_id: String,
    pub(crate) site_id: String,
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) protocol: String,
    pub(crate) host: String,
    pub(crate) port: u32,
    pub(crate) state: String,
    pub(crate) opened: u64,
    pub(crate) closed: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProcessItem {
    pub(crate) id: String,
    pub(crate) site_id: String,
    pub(crate) host: String,
    pub(crate) role: &'static str,
    pub(crate) addresses: Vec<String>,
    pub(crate) connections: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
}

/// Traffic between two sites (or two processes).
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PairItem {
    pub(crate) id: String,
    pub(crate) source_site_id: String,
    pub(crate) dest_site_id: String,
    /// Process pairs: the client's and the server's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dest_host: Option<String>,
    /// Only when narrowed to one service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) address: Option<String>,
    pub(crate) protocol: String,
    pub(crate) connections: u64,
    pub(crate) open_connections: u64,
    pub(crate) requests: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    /// Topology only: rates over about the last minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) connections_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) requests_per_second: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopologyLink {
    pub(crate) source_site_id: String,
    pub(crate) dest_site_id: String,
    pub(crate) state: String,
    pub(crate) cost: u32,
    pub(crate) role: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Topology {
    pub(crate) sites: Vec<SiteItem>,
    pub(crate) links: Vec<TopologyLink>,
    pub(crate) traffic: Vec<PairItem>,
}

/// The `update` event's data.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Summary {
    pub(crate) time: u64,
    pub(crate) sites: usize,
    pub(crate) routers: usize,
    pub(crate) links: usize,
    pub(crate) services: usize,
    pub(crate) open_connections: usize,
    /// Connections and requests heard of since the console started.
    pub(crate) connections_total: u64,
    pub(crate) requests_total: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConnItem<'a> {
    pub(crate) id: String,
    pub(crate) address: &'a str,
    pub(crate) protocol: &'a str,
    pub(crate) state: &'static str,
    pub(crate) source_site_id: &'a str,
    pub(crate) source_router_id: &'a str,
    pub(crate) client_addr: &'a str,
    pub(crate) dest_site_id: &'a str,
    pub(crate) dest_router_id: &'a str,
    pub(crate) server_addr: &'a str,
    pub(crate) path: Vec<&'a str>,
    pub(crate) start_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) end_time: Option<u64>,
    pub(crate) duration_ms: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_byte_ms: Option<f64>,
    pub(crate) outcome: &'a str,
    pub(crate) error: &'a str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestItem<'a> {
    pub(crate) id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) connection_id: Option<String>,
    pub(crate) address: &'a str,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: u32,
    pub(crate) status_class: &'static str,
    pub(crate) source_site_id: &'a str,
    pub(crate) client_addr: &'a str,
    pub(crate) dest_site_id: &'a str,
    pub(crate) dest_router_id: &'a str,
    pub(crate) start_time: u64,
    pub(crate) latency_ms: f64,
    pub(crate) duration_ms: f64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) error: &'a str,
    pub(crate) version: &'a str,
}

/// (source site, source host, dest site, dest host); hosts are empty for site pairs.
pub(crate) type PairKey<'a> = (&'a Str, &'a str, &'a Str, &'a str);
/// Pairs being counted, hashed by the interned sites' addresses rather than their text (and
/// site pairs without the empty hosts, which would cost a comparison each).
enum Pairs<'a> {
    Sites(HashMap<(usize, usize), (PairKey<'a>, Tally<'a>)>),
    Hosts(HashMap<(usize, &'a str, usize, &'a str), (PairKey<'a>, Tally<'a>)>),
}

impl<'a> Pairs<'a> {
    fn tally(&mut self, k @ (ss, sh, ds, dh): PairKey<'a>) -> &mut Tally<'a> {
        let new = || (k, Tally::default());
        let entry = match self {
            Pairs::Sites(m) => m
                .entry((interned_key(ss), interned_key(ds)))
                .or_insert_with(new),
            Pairs::Hosts(m) => m
                .entry((interned_key(ss), sh, interned_key(ds), dh))
                .or_insert_with(new),
        };
        &mut entry.1
    }
}

/// Interned strings are equal when they are the same allocation: a cheap hash key.
fn interned_key(s: &Str) -> usize {
    Arc::as_ptr(s).cast::<u8>() as usize
}

/// A client or a server: one host of one site, before it becomes an item.
#[derive(Debug)]
pub(crate) struct Process<'a> {
    pub(crate) site: &'a Str,
    pub(crate) host: &'a str,
    pub(crate) role: &'static str,
    pub(crate) addresses: Vec<&'a Str>,
    pub(crate) connections: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
}

impl Process<'_> {
    /// The parts of its id, `<siteId>/<host>`.
    pub(crate) fn id(&self) -> [&str; 3] {
        [self.site, "/", self.host]
    }

    pub(crate) fn item(&self) -> ProcessItem {
        let mut addresses: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        addresses.sort();
        ProcessItem {
            id: self.id().concat(),
            site_id: self.site.to_string(),
            host: self.host.to_string(),
            role: self.role,
            addresses,
            connections: self.connections,
            bytes_out: self.bytes_out,
            bytes_in: self.bytes_in,
        }
    }
}

/// Traffic between two sites or two processes, before it becomes an item.
#[derive(Debug)]
pub(crate) struct Pair<'a> {
    pub(crate) key: PairKey<'a>,
    pub(crate) processes: bool,
    pub(crate) address: Option<&'a str>,
    pub(crate) tally: Tally<'a>,
}

impl Pair<'_> {
    /// The parts of its id: `<source>><dest>` for sites, with `/<host>` after each site for
    /// processes.
    pub(crate) fn id(&self) -> [&str; 7] {
        let (ss, sh, ds, dh) = self.key;
        if self.processes {
            [ss, "/", sh, ">", ds, "/", dh]
        } else {
            [ss, ">", ds, "", "", "", ""]
        }
    }

    pub(crate) fn protocol(&self) -> &str {
        self.tally.protocol_str()
    }

    pub(crate) fn item(&self) -> PairItem {
        let (ss, sh, ds, dh) = self.key;
        let t = &self.tally;
        PairItem {
            id: self.id().concat(),
            source_site_id: ss.to_string(),
            dest_site_id: ds.to_string(),
            source_host: self.processes.then(|| sh.to_string()),
            dest_host: self.processes.then(|| dh.to_string()),
            address: self.address.map(str::to_string),
            protocol: self.protocol().to_string(),
            connections: t.connections,
            open_connections: t.open,
            requests: t.requests,
            bytes_out: t.bytes_out,
            bytes_in: t.bytes_in,
            ..PairItem::default()
        }
    }
}

/// Counts over connections and requests, for services and pairs.
#[derive(Debug, Default)]
pub(crate) struct Tally<'a> {
    protocol: Option<&'a str>,
    mixed: bool,
    pub(crate) connections: u64,
    pub(crate) open: u64,
    pub(crate) requests: u64,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
}

impl<'a> Tally<'a> {
    fn conn(&mut self, c: &'a Conn) {
        self.protocol(&c.protocol);
        self.connections += 1;
        if !c.terminated() {
            self.open += 1;
        }
        self.bytes_out += c.bytes_out;
        self.bytes_in += c.bytes_in;
    }

    fn request(&mut self, r: &'a Request) {
        self.protocol(&r.protocol);
        self.requests += 1;
    }

    fn protocol(&mut self, p: &'a str) {
        match self.protocol {
            None => self.protocol = Some(p),
            Some(q) if q != p => self.mixed = true,
            _ => {}
        }
    }

    fn protocol_str(&self) -> &str {
        if self.mixed {
            "mixed"
        } else {
            self.protocol.unwrap_or("tcp")
        }
    }

    fn protocol_name(&self) -> String {
        self.protocol_str().to_string()
    }
}

// === impl Store (views) ===

impl Store {
    fn up_routers(&self) -> impl Iterator<Item = (&Str, &RouterState)> {
        self.routers
            .iter()
            .filter(|(_, r)| r.up)
            .filter_map(|(id, r)| r.state.as_ref().map(|s| (id, s)))
    }

    /// The sites to show, with their up routers (sorted by id): those with a router up, and
    /// those only known from their published record. A site whose routers are all down is
    /// gone.
    fn live_sites(&self) -> BTreeMap<&str, Vec<(&Str, &RouterState)>> {
        let mut out: BTreeMap<&str, Vec<(&Str, &RouterState)>> = BTreeMap::new();
        for (id, state) in self.up_routers() {
            if let Some(site) = self.router_sites.get(id) {
                out.entry(site).or_default().push((id, state));
            }
        }
        let with_routers: HashSet<&str> = self.router_sites.values().map(|s| &**s).collect();
        for id in self.sites.keys() {
            if !with_routers.contains(&**id) {
                out.entry(id).or_default();
            }
        }
        for routers in out.values_mut() {
            routers.sort_by(|a, b| a.0.cmp(b.0));
        }
        out
    }

    pub(crate) fn site_items(&self) -> Vec<SiteItem> {
        self.live_sites()
            .into_iter()
            .map(|(id, routers)| self.site_item(id, &routers))
            .collect()
    }

    fn site_item(&self, id: &str, routers: &[(&Str, &RouterState)]) -> SiteItem {
        let record = self.sites.get(id);
        let status = routers.iter().find_map(|(_, s)| s.status.as_ref());
        let pick = |from_record: Option<&String>, from_status: Option<&String>| {
            from_record
                .filter(|s| !s.is_empty())
                .or(from_status)
                .cloned()
                .unwrap_or_default()
        };
        let mut offered = BTreeSet::new();
        let mut consumed = BTreeSet::new();
        let mut links = 0;
        for (_, s) in routers {
            offered.extend(s.connectors.iter().map(|c| c.routing_key.clone()));
            consumed.extend(s.listeners.iter().map(|l| l.routing_key.clone()));
            links += s
                .links
                .iter()
                .filter(|l| l.direction == "outgoing")
                .filter(|l| {
                    self.router_sites
                        .get(l.peer_router.as_str())
                        .is_none_or(|peer| &**peer != id)
                })
                .count() as u32;
        }
        if let Some(r) = record {
            // Routers and records name a service by its routing key, `address:port`.
            offered.extend(
                r.services
                    .iter()
                    .filter(|s| s.targets > 0)
                    .flat_map(|s| s.ports.iter().map(|p| format!("{}:{p}", s.address))),
            );
            if routers.is_empty() {
                links = r.links.len() as u32;
            }
        }
        offered.remove("");
        consumed.remove("");
        SiteItem {
            id: id.to_string(),
            name: self.site_name(id).to_string(),
            mode: pick(record.map(|r| &r.mode), status.map(|s| &s.mode)),
            version: pick(record.map(|r| &r.version), status.map(|s| &s.version)),
            routers: routers.iter().map(|(r, _)| r.to_string()).collect(),
            up: true,
            links,
            services_offered: offered.into_iter().collect(),
            services_consumed: consumed.into_iter().collect(),
        }
    }

    pub(crate) fn router_items(&self) -> Vec<RouterItem> {
        let mut out: Vec<RouterItem> = self
            .up_routers()
            .map(|(id, s)| {
                let status = s.status.clone().unwrap_or_default();
                let site = self.router_sites.get(id).map_or("", |s| s);
                RouterItem {
                    id: id.to_string(),
                    site_id: site.to_string(),
                    site_name: self.site_name(site).to_string(),
                    mode: status.mode,
                    version: status.version,
                    hostname: s.hostname.clone(),
                    start_time: ms(s.started_us),
                    active_flows: status.active_flows,
                    flows_total: status.flows_total,
                    up: true,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub(crate) fn link_items(&self) -> Vec<LinkItem> {
        let mut out = Vec::new();
        for (id, s) in self.up_routers() {
            let site = self.router_sites.get(id).map_or("", |s| s);
            for l in &s.links {
                out.push(LinkItem {
                    id: format!("{id}/{}", l.name),
                    router_id: id.to_string(),
                    site_id: site.to_string(),
                    name: l.name.clone(),
                    role: l.role.clone(),
                    direction: l.direction.clone(),
                    state: l.state.clone(),
                    peer_router_id: l.peer_router.clone(),
                    peer_site_id: self
                        .router_sites
                        .get(l.peer_router.as_str())
                        .map_or_else(String::new, |s| s.to_string()),
                    cost: l.cost,
                    bytes_out: l.bytes_out,
                    bytes_in: l.bytes_in,
                    errors: l.errors,
                    last_error: l.last_error.clone(),
                    up_seconds: l.up_seconds,
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn port_items(&self, connectors: bool) -> Vec<PortItem> {
        let mut out = Vec::new();
        for (id, s) in self.up_routers() {
            let site = self.router_sites.get(id).map_or("", |s| s);
            let item =
                |name: &str, key: &str, protocol: &str, host: &str, port, state: &str| PortItem {
                    id: format!("{id}/{name}"),
                    router_id: id.to_string(),
                    site_id: site.to_string(),
                    name: name.to_string(),
                    address: key.to_string(),
                    protocol: if protocol.is_empty() { "tcp" } else { protocol }.to_string(),
                    host: host.to_string(),
                    port,
                    state: state.to_string(),
                    opened: 0,
                    closed: 0,
                    bytes_out: 0,
                    bytes_in: 0,
                };
            if connectors {
                out.extend(s.connectors.iter().map(|c| PortItem {
                    opened: c.connections_opened,
                    closed: c.connections_closed,
                    bytes_out: c.bytes_out,
                    bytes_in: c.bytes_in,
                    ..item(
                        &c.name,
                        &c.routing_key,
                        &c.protocol,
                        &c.host,
                        c.port,
                        &c.state,
                    )
                }));
            } else {
                out.extend(s.listeners.iter().map(|l| PortItem {
                    opened: l.connections_opened,
                    closed: l.connections_closed,
                    bytes_out: l.bytes_out,
                    bytes_in: l.bytes_in,
                    ..item(
                        &l.name,
                        &l.routing_key,
                        &l.protocol,
                        &l.host,
                        l.port,
                        &l.state,
                    )
                }));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub(crate) fn listener_items(&self) -> Vec<PortItem> {
        self.port_items(false)
    }

    pub(crate) fn connector_items(&self) -> Vec<PortItem> {
        self.port_items(true)
    }

    /// Every address (routing key) the network defines, listens or connects for, or carried
    /// traffic for in the last day.
    fn addresses(&self) -> BTreeSet<&str> {
        let mut out: BTreeSet<&str> = self.series.keys().map(|a| &**a).collect();
        out.extend(self.defined.iter().map(|k| &**k));
        for (_, s) in self.up_routers() {
            out.extend(s.listeners.iter().map(|l| l.routing_key.as_str()));
            out.extend(s.connectors.iter().map(|c| c.routing_key.as_str()));
        }
        out.remove("");
        out
    }

    pub(crate) fn has_address(&self, address: &str) -> bool {
        self.addresses().contains(address)
    }

    pub(crate) fn service_items(&self, range: Range, now_us: u64) -> Vec<ServiceItem> {
        let mut tallies: HashMap<&str, Tally<'_>> = HashMap::new();
        for c in self.conns.values().filter(|c| range.has_conn(c, now_us)) {
            tallies.entry(&c.address).or_default().conn(c);
        }
        for r in self.requests.values().filter(|r| range.has_request(r)) {
            tallies.entry(&r.address).or_default().request(r);
        }
        let mut served: HashMap<&str, Vec<Endpoint>> = HashMap::new();
        let mut reached: HashMap<&str, Vec<Endpoint>> = HashMap::new();
        let mut port_protocols: HashMap<&str, &str> = HashMap::new();
        for (id, s) in self.up_routers() {
            let site = self.router_sites.get(id).map_or("", |s| s);
            let endpoint = |host: &str, port| Endpoint {
                site_id: site.to_string(),
                router_id: id.to_string(),
                connector: None,
                listener: None,
                host: host.to_string(),
                port,
            };
            for c in &s.connectors {
                served.entry(&c.routing_key).or_default().push(Endpoint {
                    connector: Some(c.name.clone()),
                    ..endpoint(&c.host, c.port)
                });
                port_protocols.entry(&c.routing_key).or_insert(&c.protocol);
            }
            for l in &s.listeners {
                reached.entry(&l.routing_key).or_default().push(Endpoint {
                    listener: Some(l.name.clone()),
                    ..endpoint(&l.host, l.port)
                });
                port_protocols.entry(&l.routing_key).or_insert(&l.protocol);
            }
        }
        let endpoint_order = |a: &Endpoint, b: &Endpoint| {
            (&a.site_id, &a.router_id, &a.connector, &a.listener).cmp(&(
                &b.site_id,
                &b.router_id,
                &b.connector,
                &b.listener,
            ))
        };
        self.addresses()
            .into_iter()
            .map(|address| {
                let t = tallies.remove(address).unwrap_or_default();
                let protocol = self
                    .protocol_of(address)
                    .map(|p| p.to_string())
                    .or_else(|| {
                        port_protocols
                            .get(address)
                            .filter(|p| !p.is_empty())
                            .map(|p| p.to_string())
                    })
                    .unwrap_or_else(|| t.protocol_name());
                let mut served_by = served.remove(address).unwrap_or_default();
                let mut reached_from = reached.remove(address).unwrap_or_default();
                served_by.sort_by(endpoint_order);
                reached_from.sort_by(endpoint_order);
                ServiceItem {
                    address: address.to_string(),
                    protocol,
                    served_by,
                    reached_from,
                    open_connections: t.open,
                    connections: t.connections,
                    requests: t.requests,
                    bytes_out: t.bytes_out,
                    bytes_in: t.bytes_in,
                }
            })
            .collect()
    }

    /// Clients and servers of the connections in `range`, in no particular order.
    pub(crate) fn processes(&self, range: Range, now_us: u64) -> Vec<Process<'_>> {
        let mut procs: HashMap<(usize, &str, bool), Process<'_>> = HashMap::new();
        for c in self.conns.values().filter(|c| range.has_conn(c, now_us)) {
            let (source, dest) = self.conn_sites(c);
            let sides = [
                (source, &*c.client_addr, true),
                (dest, &*c.server_addr, false),
            ];
            for (site, addr, client) in sides {
                let (Some(site), false) = (site, addr.is_empty()) else {
                    continue;
                };
                let host = host_of(addr);
                let p = procs
                    .entry((interned_key(site), host, client))
                    .or_insert_with(|| Process {
                        site,
                        host,
                        role: if client { "client" } else { "server" },
                        addresses: Vec::new(),
                        connections: 0,
                        bytes_out: 0,
                        bytes_in: 0,
                    });
                if !p.addresses.iter().any(|x| Arc::ptr_eq(x, &c.address)) {
                    p.addresses.push(&c.address);
                }
                p.connections += 1;
                p.bytes_out += c.bytes_out;
                p.bytes_in += c.bytes_in;
            }
        }
        procs.into_values().collect()
    }

    /// Traffic between sites, or (with `processes`) between client and server hosts,
    /// optionally for one address; in no particular order.
    pub(crate) fn pairs<'a>(
        &'a self,
        range: Range,
        now_us: u64,
        address: Option<&'a str>,
        processes: bool,
    ) -> Vec<Pair<'a>> {
        let mut pairs = if processes {
            Pairs::Hosts(HashMap::new())
        } else {
            Pairs::Sites(HashMap::new())
        };
        let wanted = |a: &str| address.is_none_or(|w| w == a);
        for c in self.conns.values() {
            if wanted(&c.address)
                && range.has_conn(c, now_us)
                && let Some(k) = self.pair_key(c, processes)
            {
                pairs.tally(k).conn(c);
            }
        }
        for r in self.requests.values() {
            if !wanted(&r.address) || !range.has_request(r) {
                continue;
            }
            let key = if processes {
                // A request's server is the one its flow reached, when that flow is known.
                self.conns
                    .get(&r.flow_id)
                    .and_then(|c| self.pair_key(c, true))
            } else {
                match self.request_sites(r) {
                    (Some(s), Some(d)) => Some((s, "", d, "")),
                    _ => None,
                }
            };
            if let Some(k) = key {
                pairs.tally(k).request(r);
            }
        }
        let pairs: Vec<(PairKey<'_>, Tally<'_>)> = match pairs {
            Pairs::Sites(m) => m.into_values().collect(),
            Pairs::Hosts(m) => m.into_values().collect(),
        };
        pairs
            .into_iter()
            .map(|(key, tally)| Pair {
                key,
                processes,
                address,
                tally,
            })
            .collect()
    }

    fn pair_key<'a>(&'a self, c: &'a Conn, processes: bool) -> Option<PairKey<'a>> {
        let (Some(source), Some(dest)) = self.conn_sites(c) else {
            return None;
        };
        if !processes {
            return Some((source, "", dest, ""));
        }
        if c.client_addr.is_empty() || c.server_addr.is_empty() {
            return None;
        }
        Some((
            source,
            host_of(&c.client_addr),
            dest,
            host_of(&c.server_addr),
        ))
    }

    /// Links between sites, one per pair and role: up when any of them is.
    fn site_links(&self) -> Vec<TopologyLink> {
        let mut out: BTreeMap<(&str, &str, &str), TopologyLink> = BTreeMap::new();
        for (id, s) in self.up_routers() {
            let Some(site) = self.router_sites.get(id) else {
                continue;
            };
            for l in s.links.iter().filter(|l| l.direction == "outgoing") {
                let Some(peer) = self.router_sites.get(l.peer_router.as_str()) else {
                    continue;
                };
                if peer == site {
                    continue;
                }
                let link = out.entry((site, peer, &l.role)).or_insert(TopologyLink {
                    source_site_id: site.to_string(),
                    dest_site_id: peer.to_string(),
                    state: l.state.clone(),
                    cost: l.cost,
                    role: l.role.clone(),
                });
                if l.state == "up" && link.state != "up" {
                    link.state = l.state.clone();
                    link.cost = l.cost;
                } else if l.state == link.state {
                    link.cost = link.cost.min(l.cost);
                }
            }
        }
        out.into_values().collect()
    }

    pub(crate) fn topology(&self, now_us: u64, address: Option<&str>) -> Topology {
        let sites = self.site_items();
        let shown: HashSet<&str> = sites.iter().map(|s| s.id.as_str()).collect();
        let links = self
            .site_links()
            .into_iter()
            .filter(|l| {
                shown.contains(l.source_site_id.as_str()) && shown.contains(l.dest_site_id.as_str())
            })
            .collect();
        let mut rates: HashMap<(&str, &str), (f64, f64, f64)> = HashMap::new();
        for t in &self.traffic {
            if address.is_some_and(|a| a != &*t.key.address) {
                continue;
            }
            let r = t.rates(now_us);
            let e = rates
                .entry((&t.key.source_site, &t.key.dest_site))
                .or_default();
            e.0 += r.bytes;
            e.1 += r.connections;
            e.2 += r.requests;
        }
        let mut pairs: Vec<PairItem> = self
            .pairs(Range::ALL, now_us, address, false)
            .iter()
            .map(Pair::item)
            .collect();
        pairs.sort_by(|a, b| a.id.cmp(&b.id));
        let traffic = pairs
            .into_iter()
            .filter(|p| {
                shown.contains(p.source_site_id.as_str()) && shown.contains(p.dest_site_id.as_str())
            })
            .map(|p| {
                let (b, c, r) = rates
                    .get(&(p.source_site_id.as_str(), p.dest_site_id.as_str()))
                    .copied()
                    .unwrap_or_default();
                PairItem {
                    bytes_per_second: Some(b),
                    connections_per_second: Some(c),
                    requests_per_second: Some(r),
                    ..p
                }
            })
            .collect();
        Topology {
            sites,
            links,
            traffic,
        }
    }

    pub(crate) fn summary(&self, now_us: u64) -> Summary {
        Summary {
            time: ms(now_us),
            sites: self.live_sites().len(),
            routers: self.up_routers().count(),
            links: self.up_routers().map(|(_, s)| s.links.len()).sum(),
            services: self.addresses().len(),
            open_connections: self.open_connections(),
            connections_total: self.counters.connections_seen,
            requests_total: self.counters.requests_seen,
        }
    }

    pub(crate) fn conn_item<'a>(&'a self, c: &'a Conn, now_us: u64) -> ConnItem<'a> {
        let (source, dest) = self.conn_sites(c);
        let over = c.terminated();
        ConnItem {
            id: flow_hex(c.flow_id),
            address: &c.address,
            protocol: &c.protocol,
            state: if over { "terminated" } else { "active" },
            source_site_id: or_empty(source),
            source_router_id: or_empty(c.source_router()),
            client_addr: &c.client_addr,
            dest_site_id: or_empty(dest),
            dest_router_id: or_empty(c.dest_router.as_ref()),
            server_addr: &c.server_addr,
            path: c.path.iter().map(|p| &**p).collect(),
            start_time: ms(c.start_us),
            end_time: over.then(|| ms(c.end_us)),
            duration_ms: ms(conn_end(c, now_us).saturating_sub(c.start_us)),
            bytes_out: c.bytes_out,
            bytes_in: c.bytes_in,
            first_byte_ms: (c.first_byte_us > 0).then(|| ms_f(c.first_byte_us)),
            outcome: &c.outcome,
            error: &c.error,
        }
    }

    pub(crate) fn request_item<'a>(&'a self, r: &'a Request) -> RequestItem<'a> {
        let (source, dest) = self.request_sites(r);
        RequestItem {
            id: r.seq.to_string(),
            connection_id: (r.flow_id != 0 && self.conns.contains_key(&r.flow_id))
                .then(|| flow_hex(r.flow_id)),
            address: &r.address,
            method: &r.method,
            path: &r.path,
            status: r.status,
            status_class: status_class(r.status),
            source_site_id: or_empty(source),
            client_addr: &r.client_addr,
            dest_site_id: or_empty(dest),
            dest_router_id: or_empty(r.dest_router.as_ref()),
            start_time: ms(r.start_us),
            latency_ms: ms_f(r.latency_us),
            duration_ms: ms_f(r.duration_us),
            bytes_out: r.bytes_out,
            bytes_in: r.bytes_in,
            error: &r.error,
            version: &r.version,
        }
    }
}

/// A flow id as the API shows it: 16 hex digits.
pub(crate) fn flow_hex(id: u64) -> String {
    format!("{id:016x}")
}
