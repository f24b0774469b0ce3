//! What a site tells the network about itself, and the network-wide view built from what
//! every site says: the services to listen for, who serves them, and which definitions
//! conflict.
//!
//! Each controller publishes one [`SiteRecord`] as its router's value on the topic
//! [`TOPIC`]; the routers carry it to every site and drop it when the site becomes
//! unreachable (docs/wire-protocol.md, "Network-wide topics").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::site::{ServiceDef, SiteConfig, SiteState};

pub const TOPIC: &str = van_proto::controller::TOPIC_SITES;

/// One site as the network sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct SiteRecord {
    pub id: String,
    pub name: String,
    pub mode: String,
    pub version: String,
    pub router_id: String,
    pub services: Vec<PublishedService>,
    pub links: Vec<PublishedLink>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct PublishedService {
    pub address: String,
    pub protocol: String,
    pub ports: Vec<u16>,
    pub created: u64,
    /// Number of targets the site delivers the service to.
    pub targets: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct PublishedLink {
    pub name: String,
    pub state: String,
    /// Router at the other end, when the link is up.
    pub peer_router: String,
    pub cost: u32,
}

impl SiteRecord {
    pub fn build(cfg: &SiteConfig, state: &SiteState, links: Vec<PublishedLink>) -> SiteRecord {
        SiteRecord {
            id: cfg.id.clone(),
            name: cfg.name.clone(),
            mode: cfg.mode.as_str().into(),
            version: crate::VERSION.into(),
            router_id: cfg.router_id(),
            services: state
                .services
                .values()
                .map(|s| PublishedService {
                    address: s.address.clone(),
                    protocol: s.protocol.clone(),
                    ports: s.ports.clone(),
                    created: s.created,
                    targets: s.targets.len() as u32,
                })
                .collect(),
            links,
        }
    }
}

/// The other sites, keyed by the router that carried each record (a site with several
/// routers appears once per router), as last heard from the router.
pub type Remote = BTreeMap<String, SiteRecord>;

/// Number of distinct sites in `remote`.
pub fn site_count(remote: &Remote) -> usize {
    remote
        .values()
        .map(|r| r.id.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// Decodes the values on the topic, keyed by the router that carried each, leaving out this
/// site's own. A value that does not parse is skipped (and reported).
pub fn decode(values: Vec<(String, Vec<u8>)>, self_site: &str) -> (Remote, Vec<String>) {
    let mut out = Remote::new();
    let mut bad = Vec::new();
    for (origin, payload) in values {
        match serde_json::from_slice::<SiteRecord>(&payload) {
            Ok(r) if r.id == self_site => {}
            Ok(mut r) => {
                // The router that carried it is the one links name.
                r.router_id = origin.clone();
                out.insert(origin, r);
            }
            Err(e) => bad.push(format!(
                "router {origin} published an unreadable record: {e}"
            )),
        }
    }
    (out, bad)
}

/// One address as this site sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// The definition in force (local if there is one, else the oldest).
    pub def: ServiceDef,
    pub origin_id: String,
    pub origin_name: String,
    pub local: bool,
    /// Names of sites that define it the same way and have targets.
    pub target_sites: Vec<String>,
    /// Definitions elsewhere that disagree, e.g. `east: tcp 9090`.
    pub conflicts: Vec<String>,
}

/// Merges this site's services with every other site's. Local definitions win; among other
/// sites the oldest definition wins (then the lowest site id); disagreeing definitions are
/// reported as conflicts, never merged.
pub fn services(cfg: &SiteConfig, state: &SiteState, remote: &Remote) -> Vec<ServiceView> {
    struct Cand<'a> {
        def: ServiceDef,
        site_id: &'a str,
        site_name: &'a str,
        targets: u32,
        local: bool,
    }
    let mut by_addr: BTreeMap<&str, Vec<Cand<'_>>> = BTreeMap::new();
    for s in state.services.values() {
        by_addr.entry(&s.address).or_default().push(Cand {
            def: s.clone(),
            site_id: &cfg.id,
            site_name: &cfg.name,
            targets: s.targets.len() as u32,
            local: true,
        });
    }
    // A site with several routers is heard once per router.
    let mut seen = std::collections::BTreeSet::new();
    for r in remote.values().filter(|r| seen.insert(r.id.as_str())) {
        for s in &r.services {
            by_addr.entry(&s.address).or_default().push(Cand {
                def: ServiceDef {
                    address: s.address.clone(),
                    protocol: s.protocol.clone(),
                    ports: s.ports.clone(),
                    created: s.created,
                    targets: Vec::new(),
                    source: String::new(),
                },
                site_id: &r.id,
                site_name: &r.name,
                targets: s.targets,
                local: false,
            });
        }
    }
    let mut out = Vec::new();
    for (_, mut cands) in by_addr {
        cands.sort_by(|a, b| {
            b.local
                .cmp(&a.local)
                .then(a.def.created.cmp(&b.def.created))
                .then(a.site_id.cmp(b.site_id))
        });
        let win = &cands[0];
        let mut v = ServiceView {
            def: win.def.clone(),
            origin_id: win.site_id.to_string(),
            origin_name: win.site_name.to_string(),
            local: win.local,
            target_sites: Vec::new(),
            conflicts: Vec::new(),
        };
        for c in &cands {
            if c.def.same_shape(&win.def) {
                if c.targets > 0 {
                    v.target_sites.push(c.site_name.to_string());
                }
            } else {
                v.conflicts
                    .push(format!("{}: {}", c.site_name, c.def.shape()));
            }
        }
        out.push(v);
    }
    out
}

/// The routing key of one port of a service.
pub fn routing_key(address: &str, port: u16) -> String {
    format!("{address}:{port}")
}
