//! The router configuration a site wants: a pure function of the site's options, its state
//! and the network's services. The controller recomputes it after every change; config-sync
//! applies it to the router.
//!
//! Entity names are part of the contract: config-sync adds and removes entities by name, and
//! the router reports what it could not apply by name (see [`listener_name`]).

use std::collections::BTreeMap;

use van_proto::admin as rpb;

use crate::network::{self, Remote, routing_key};
use crate::site::{RouterMode, SiteConfig, SiteState};

/// The TLS profile of the link listeners: the site CA and the site's server certificate.
const SERVER_PROFILE: &str = "site-server";
/// The TLS profile a site's routers link to each other with (client certificate of the site,
/// server certificate checked against [`PEER_SERVER_NAME`]); config-sync makes those links.
pub use van_proto::controller::{PEER_PROFILE, PEER_SERVER_NAME};

/// The router configuration that follows from the site's state and the network's services.
pub fn router_config(cfg: &SiteConfig, state: &SiteState, remote: &Remote) -> rpb::RouterConfig {
    let mut out = rpb::RouterConfig {
        router_id: cfg.router_id(),
        site_id: cfg.id.clone(),
        mode: cfg.mode.as_str().into(),
        ..Default::default()
    };
    if let (RouterMode::Interior, Some(c)) = (cfg.mode, &state.certs) {
        out.tls_profiles.push(tls_profile(
            SERVER_PROFILE.into(),
            &c.ca_cert,
            &c.server_cert,
            &c.server_key,
        ));
        for (name, role, port) in [
            ("inter-router", "inter-router", cfg.inter_router_port),
            ("edge", "edge", cfg.edge_port),
        ] {
            out.link_listeners.push(rpb::LinkListenerConfig {
                name: name.into(),
                role: role.into(),
                host: cfg.ingress_bind.clone(),
                port: u32::from(port),
                cost: 1,
                tls_profile: SERVER_PROFILE.into(),
            });
        }
    }
    for l in state.links.values() {
        // A link whose claim is not redeemed yet has nothing to dial with.
        let Some(token) = &l.token else { continue };
        let profile = format!("link-{}", l.name);
        out.tls_profiles.push(tls_profile(
            profile.clone(),
            &token.ca_cert,
            &token.cert,
            &token.key,
        ));
        let (role, host, port) = match cfg.mode {
            RouterMode::Interior => (
                "inter-router",
                &token.inter_router_host,
                token.inter_router_port,
            ),
            RouterMode::Edge => ("edge", &token.edge_host, token.edge_port),
        };
        out.links.push(rpb::LinkConfig {
            name: l.name.clone(),
            role: role.into(),
            host: host.clone(),
            port: u32::from(port),
            cost: l.cost,
            tls_profile: profile,
            server_name: String::new(),
            proxy: l.proxy.clone(),
        });
    }
    for v in network::services(cfg, state, remote) {
        for p in &v.def.ports {
            out.tcp_listeners.push(rpb::TcpListenerConfig {
                name: listener_name(&v.def.address, *p),
                host: cfg.listener_host.clone(),
                port: u32::from(*p),
                routing_key: routing_key(&v.def.address, *p),
                protocol: v.def.protocol.clone(),
            });
        }
    }
    for s in state.services.values() {
        for (i, t) in s.targets.iter().enumerate() {
            for (sp, tp) in s.ports.iter().zip(&t.ports) {
                out.tcp_connectors.push(rpb::TcpConnectorConfig {
                    name: format!("tgt-{}-{sp}-{i}", s.address),
                    host: t.host.clone(),
                    port: u32::from(*tp),
                    routing_key: routing_key(&s.address, *sp),
                    protocol: s.protocol.clone(),
                    host_override: String::new(),
                });
            }
        }
    }
    out
}

/// The [`PEER_PROFILE`] of an interior site, for a site that runs several routers.
pub fn peer_profile(cfg: &SiteConfig, state: &SiteState) -> Option<rpb::TlsProfileConfig> {
    let c = state
        .certs
        .as_ref()
        .filter(|_| cfg.mode == RouterMode::Interior)?;
    Some(tls_profile(
        PEER_PROFILE.into(),
        &c.ca_cert,
        &c.peer_cert,
        &c.peer_key,
    ))
}

fn tls_profile(name: String, ca: &str, cert: &str, key: &str) -> rpb::TlsProfileConfig {
    rpb::TlsProfileConfig {
        name,
        ca_pem: ca.into(),
        cert_pem: cert.into(),
        key_pem: key.into(),
        ..Default::default()
    }
}

/// The name of the router's listener for one port of a service.
pub fn listener_name(address: &str, port: u16) -> String {
    format!("svc-{address}-{port}")
}

/// Keys of a TLS profile's material in the router's TLS Secret.
pub fn tls_secret_keys(profile: &str) -> [String; 3] {
    [
        format!("{profile}.ca.crt"),
        format!("{profile}.tls.crt"),
        format!("{profile}.tls.key"),
    ]
}

/// The router's TLS Secret's data for `cfg`: every profile's CA, certificate and key.
pub fn tls_secret_data(cfg: &rpb::RouterConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in &cfg.tls_profiles {
        let [ca, cert, key] = tls_secret_keys(&p.name);
        out.insert(ca, p.ca_pem.clone());
        out.insert(cert, p.cert_pem.clone());
        out.insert(key, p.key_pem.clone());
    }
    out
}

/// `cfg` with its TLS profiles reduced to their names.
pub fn without_tls_material(mut cfg: rpb::RouterConfig) -> rpb::RouterConfig {
    for p in &mut cfg.tls_profiles {
        *p = rpb::TlsProfileConfig {
            name: std::mem::take(&mut p.name),
            ..Default::default()
        };
    }
    cfg
}

#[cfg(test)]
mod tests;
