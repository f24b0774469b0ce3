//! A site's own routers linked to each other. On Kubernetes a site may run several router
//! pods; a link from another site reaches only one of them (through the router Service), so
//! the pods link to each other to carry each other's traffic. Each config-sync learns the
//! other pods' addresses (a headless Service's DNS name) and adds a link to each pod whose
//! address sorts after its own, so every pair is linked once.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;
use van_proto::admin as rpb;

pub use van_proto::controller::{PEER_PROFILE, PEER_SERVER_NAME};
/// How often the peers' addresses are looked up again.
const RESOLVE_EVERY: Duration = Duration::from_secs(2);

/// Where this router's peers are.
#[derive(Debug, Clone)]
pub struct Peers {
    /// This pod's address.
    pub own: IpAddr,
    /// The other routers' inter-router port.
    pub port: u16,
    /// Their addresses, as they change.
    pub addrs: watch::Receiver<BTreeSet<IpAddr>>,
}

impl Peers {
    /// Peers found by looking `name` (e.g. `skupper-router-peers.west.svc`) up every 2 s.
    pub fn resolve(name: String, port: u16, own: IpAddr) -> Peers {
        let (tx, addrs) = watch::channel(BTreeSet::new());
        tokio::spawn(async move {
            loop {
                match tokio::net::lookup_host((name.as_str(), port)).await {
                    Ok(found) => {
                        let set: BTreeSet<IpAddr> = found.map(|a| a.ip()).collect();
                        tx.send_if_modified(|cur| {
                            let changed = *cur != set;
                            *cur = set;
                            changed
                        });
                    }
                    // Before the first pod is ready the name may not resolve at all.
                    Err(e) => debug!(%name, error = %e, "Cannot look the router peers up"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(RESOLVE_EVERY).await;
            }
        });
        Peers { own, port, addrs }
    }
}

/// Adds to `cfg` a link to each peer whose address sorts after `own`, when `cfg` has the
/// peer profile (the controller provides it only where routers may have peers).
pub fn add_links(cfg: &mut rpb::RouterConfig, own: IpAddr, port: u16, peers: &BTreeSet<IpAddr>) {
    if !cfg.tls_profiles.iter().any(|p| p.name == PEER_PROFILE) {
        return;
    }
    for ip in peers.iter().filter(|ip| **ip > own) {
        let name: String = format!("peer-{ip}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        cfg.links.push(rpb::LinkConfig {
            name,
            role: "inter-router".into(),
            host: ip.to_string(),
            port: u32::from(port),
            cost: 1,
            tls_profile: PEER_PROFILE.into(),
            server_name: PEER_SERVER_NAME.into(),
            proxy: String::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pair_of_routers_is_linked_once() {
        let ips: BTreeSet<IpAddr> = ["10.0.0.5", "10.0.0.7", "10.0.0.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let with_profile = || rpb::RouterConfig {
            tls_profiles: vec![rpb::TlsProfileConfig {
                name: PEER_PROFILE.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut links = Vec::new();
        for own in &ips {
            let mut cfg = with_profile();
            add_links(&mut cfg, *own, 55671, &ips);
            links.extend(cfg.links.into_iter().map(|l| (own.to_string(), l.host)));
        }
        assert_eq!(
            links,
            [
                ("10.0.0.5".to_string(), "10.0.0.7".to_string()),
                ("10.0.0.5".to_string(), "10.0.0.9".to_string()),
                ("10.0.0.7".to_string(), "10.0.0.9".to_string()),
            ]
        );
        let mut cfg = with_profile();
        add_links(&mut cfg, "10.0.0.5".parse().unwrap(), 55671, &ips);
        let l = &cfg.links[0];
        assert_eq!(
            (l.name.as_str(), l.server_name.as_str(), l.port),
            ("peer-10-0-0-7", PEER_SERVER_NAME, 55671)
        );
        // Without the controller's peer profile (local sites, edges): no peer links.
        let mut plain = rpb::RouterConfig::default();
        add_links(&mut plain, "10.0.0.5".parse().unwrap(), 55671, &ips);
        assert!(plain.links.is_empty());
    }
}
