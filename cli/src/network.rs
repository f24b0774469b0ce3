//! `skupper network status`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use van_proto::controller as pb;

use crate::Ctx;
use crate::client::{self, rpc_error};
use crate::output::{self, Format, Tree};
use crate::service;

/// Every site of the network as this site sees it.
pub async fn get(ctx: &Ctx) -> anyhow::Result<pb::Network> {
    let mut c = client::site_client(ctx).await?;
    Ok(c.get_network(pb::GetNetworkRequest {})
        .await
        .map_err(|e| rpc_error("cannot get the network", e))?
        .into_inner())
}

pub async fn status(ctx: &Ctx, format: Format, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let net = get(ctx).await?;
    if output::structured(format, &net, out)? {
        return Ok(());
    }
    let routers: Vec<String> = net.sites.iter().map(|s| s.router_id.clone()).collect();
    let traffic = traffic(&ctx.site_dir().router_target(), &routers, TRAFFIC_WAIT).await;
    write!(out, "{}", text_with_traffic(&net, &traffic))?;
    Ok(())
}

/// How long `network status` waits for the routers' states.
const TRAFFIC_WAIT: Duration = Duration::from_millis(1500);

/// What the clients of one site's listeners moved since its router started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    pub connections: u64,
    pub requests: u64,
    /// Client -> server bytes, and back.
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// Each of `routers`' traffic, from the first state it reports on the local router's
/// records stream; routers not heard from within `wait` are left out (no figures is better
/// than a slow status).
pub async fn traffic(router: &str, routers: &[String], wait: Duration) -> HashMap<String, Traffic> {
    use van_proto::records::{WatchRecordsRequest, records_client::RecordsClient};
    let mut out = HashMap::new();
    let collect = async {
        let ch = van_proto::grpc::channel(router, Some(wait)).await.ok()?;
        let mut stream = RecordsClient::new(ch)
            .watch(WatchRecordsRequest {})
            .await
            .ok()?
            .into_inner();
        while out.len() < routers.len() {
            let Ok(Some(b)) = stream.message().await else {
                break;
            };
            let Some(state) = b.state else { continue };
            let t = state
                .listeners
                .iter()
                .fold(Traffic::default(), |t, l| Traffic {
                    connections: t.connections + l.connections_opened,
                    requests: t.requests + l.requests,
                    bytes_out: t.bytes_out + l.bytes_in,
                    bytes_in: t.bytes_in + l.bytes_out,
                });
            out.insert(b.router_id, t);
        }
        Some(())
    };
    let _ = tokio::time::timeout(wait, collect).await;
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The other end of a link: its site's name, else where it connects, else the link's name.
fn peer_label(l: &pb::LinkStatus, name_from_id: &str) -> String {
    if !l.peer_site_name.is_empty() {
        l.peer_site_name.clone()
    } else if !name_from_id.is_empty() {
        name_from_id.to_string()
    } else if !l.host.is_empty() && l.port != 0 {
        format!("{}:{}", l.host, l.port)
    } else if !l.host.is_empty() {
        l.host.clone()
    } else {
        format!("link {}", l.name)
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(7)]
}

/// The network as a tree: the local site first, then the others by name.
pub fn text(net: &pb::Network) -> String {
    text_with_traffic(net, &HashMap::new())
}

/// As [`text`], with each site's traffic where its router reported it.
pub fn text_with_traffic(net: &pb::Network, traffic: &HashMap<String, Traffic>) -> String {
    if net.sites.is_empty() {
        return "No sites are known yet\n".into();
    }
    let mut sites: Vec<&pb::NetworkSite> = net.sites.iter().collect();
    sites.sort_by(|a, b| {
        b.local
            .cmp(&a.local)
            .then_with(|| a.site_name.cmp(&b.site_name))
    });
    let name_of = |id: &str| -> String {
        net.sites
            .iter()
            .find(|s| s.site_id == id)
            .map(|s| s.site_name.clone())
            .unwrap_or_default()
    };
    let nodes: Vec<Tree> = sites
        .iter()
        .map(|s| {
            let mut kids = vec![Tree::leaf(format!(
                "mode: {}, version: {}, router: {}",
                s.mode, s.version, s.router_id
            ))];
            if let Some(t) = traffic.get(&s.router_id) {
                let requests = if t.requests > 0 {
                    format!(" ({} requests)", t.requests)
                } else {
                    String::new()
                };
                let plural = if t.connections == 1 { "" } else { "s" };
                kids.push(Tree::leaf(format!(
                    "traffic from its clients: {} connection{plural}{requests}, {} sent, {} received",
                    t.connections,
                    bytes(t.bytes_out),
                    bytes(t.bytes_in)
                )));
            }
            if !s.links.is_empty() {
                kids.push(Tree::node(
                    "links:",
                    s.links
                        .iter()
                        .map(|l| {
                            let peer = peer_label(l, &name_of(&l.peer_site_id));
                            let dir = if l.direction == "incoming" {
                                "from"
                            } else {
                                "to"
                            };
                            let mut label = format!("{dir} {peer} ({}", l.state);
                            if l.cost > 1 {
                                label.push_str(&format!(", cost {}", l.cost));
                            }
                            label.push(')');
                            Tree::leaf(label)
                        })
                        .collect(),
                ));
            }
            if !s.services.is_empty() {
                kids.push(Tree::node(
                    "services:",
                    s.services
                        .iter()
                        .map(|svc| {
                            let targets: Vec<String> =
                                svc.targets.iter().map(service::target_label).collect();
                            let mut label = service::label(svc);
                            if !targets.is_empty() {
                                label.push_str(&format!(" → {}", targets.join(", ")));
                            }
                            Tree::leaf(label)
                        })
                        .collect(),
                ));
            }
            let tag = if s.local { "[local]" } else { "[remote]" };
            Tree::node(
                format!("{tag} {} - {}", short(&s.site_id), s.site_name),
                kids,
            )
        })
        .collect();
    format!("Sites:\n{}", output::render_tree(&nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_site_first_with_links_and_services() {
        let net = pb::Network {
            sites: vec![
                pb::NetworkSite {
                    site_id: "bbbbbbbbbbbb".into(),
                    site_name: "east".into(),
                    mode: "interior".into(),
                    version: "0.1.0".into(),
                    router_id: "east-bbbbbbbb".into(),
                    links: vec![],
                    services: vec![pb::Service {
                        address: "backend".into(),
                        protocol: "tcp".into(),
                        ports: vec![8080],
                        targets: vec![pb::Target {
                            host: "127.0.0.1".into(),
                            ports: vec![9090],
                        }],
                        ..Default::default()
                    }],
                    local: false,
                },
                pb::NetworkSite {
                    site_id: "aaaaaaaaaaaa".into(),
                    site_name: "west".into(),
                    mode: "interior".into(),
                    version: "0.1.0".into(),
                    router_id: "west-aaaaaaaa".into(),
                    links: vec![pb::LinkStatus {
                        name: "l1".into(),
                        state: "active".into(),
                        peer_site_id: "bbbbbbbbbbbb".into(),
                        direction: "outgoing".into(),
                        ..Default::default()
                    }],
                    services: vec![],
                    local: true,
                },
            ],
        };
        assert_eq!(
            text(&net),
            "Sites:\n\
             ├─ [local] aaaaaaa - west\n\
             │  ├─ mode: interior, version: 0.1.0, router: west-aaaaaaaa\n\
             │  ╰─ links:\n\
             │     ╰─ to east (active)\n\
             ╰─ [remote] bbbbbbb - east\n\
             \x20  ├─ mode: interior, version: 0.1.0, router: east-bbbbbbbb\n\
             \x20  ╰─ services:\n\
             \x20     ╰─ backend:8080 (tcp) → 127.0.0.1:9090\n"
        );
    }
}
