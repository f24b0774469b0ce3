//! `vanstat`: prints a router's admin views as tables or JSON, like Skupper's `skstat`.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use van_proto::admin::{self as pb, ListRequest};

#[derive(Parser)]
#[command(version, about = "Show a VAN router's state")]
struct Args {
    /// Admin API address: host:port or unix:/path.
    #[arg(short, long, env = "VAN_ADMIN", default_value = "127.0.0.1:55680")]
    admin: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    view: View,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum View {
    /// Router id, mode, version, uptime and counters.
    General,
    /// Reachable routers with cost and next hop.
    Nodes,
    /// Inter-router links.
    Links,
    /// Where this router accepts links.
    LinkListeners,
    /// Service listeners (tcp, http, http2).
    Listeners,
    /// Service connectors.
    Connectors,
    /// Routing keys and where they are delivered.
    Addresses,
    /// Active flows (an HTTP request is a flow).
    Flows,
    /// HTTP requests answered, by address, method, status class and sites.
    Requests,
    /// The configuration in force.
    Config,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vanstat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut c = van_router::admin::connect(&args.admin).await?;
    let json = matches!(args.output, Output::Json);
    macro_rules! show {
        ($v:expr, $table:expr) => {{
            let v = $v;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", $table(&v));
            }
        }};
    }
    match args.view {
        View::General => show!(
            c.get_status(pb::GetStatusRequest {}).await?.into_inner(),
            |s: &pb::RouterStatus| table(
                &["FIELD", "VALUE"],
                vec![
                    vec!["router".into(), s.router_id.clone()],
                    vec!["site".into(), s.site_id.clone()],
                    vec!["mode".into(), s.mode.clone()],
                    vec!["version".into(), s.version.clone()],
                    vec!["uptime".into(), format!("{}s", s.uptime_seconds)],
                    vec!["reachable routers".into(), s.reachable_routers.to_string()],
                    vec!["active flows".into(), s.active_flows.to_string()],
                    vec!["flows total".into(), s.flows_total.to_string()],
                ]
            )
        ),
        View::Nodes => show!(
            c.list_nodes(ListRequest {}).await?.into_inner(),
            |l: &pb::NodeList| table(
                &["ROUTER", "NEXT-HOP", "COST", "HOPS", "NEIGHBORS"],
                l.nodes
                    .iter()
                    .map(|n| vec![
                        n.router_id.clone(),
                        if n.next_hop.is_empty() {
                            "(self)".into()
                        } else {
                            n.next_hop.clone()
                        },
                        n.cost.to_string(),
                        n.hops.to_string(),
                        n.neighbors.join(","),
                    ])
                    .collect()
            )
        ),
        View::LinkListeners => show!(
            c.list_link_listeners(ListRequest {}).await?.into_inner(),
            |l: &pb::LinkListenerList| table(
                &["NAME", "ROLE", "ADDRESS", "COST", "STATE"],
                l.link_listeners
                    .iter()
                    .map(|k| vec![
                        k.name.clone(),
                        k.role.clone(),
                        format!("{}:{}", k.host, k.port),
                        k.cost.to_string(),
                        k.state.clone(),
                    ])
                    .collect()
            )
        ),
        View::Links => show!(
            c.list_links(ListRequest {}).await?.into_inner(),
            |l: &pb::LinkList| table(
                &[
                    "NAME",
                    "DIR",
                    "STATE",
                    "PEER",
                    "ADDRESS",
                    "COST",
                    "FLOWS",
                    "BYTES-OUT",
                    "BYTES-IN",
                    "ERRORS",
                    "LAST-ERROR"
                ],
                l.links
                    .iter()
                    .map(|k| vec![
                        k.name.clone(),
                        k.direction.clone(),
                        k.state.clone(),
                        k.peer_router.clone(),
                        k.peer_address.clone(),
                        k.cost.to_string(),
                        k.active_flows.to_string(),
                        k.bytes_out.to_string(),
                        k.bytes_in.to_string(),
                        k.errors.to_string(),
                        k.last_error.clone(),
                    ])
                    .collect()
            )
        ),
        View::Listeners => show!(
            c.list_listeners(ListRequest {}).await?.into_inner(),
            |l: &pb::ListenerList| table(
                &[
                    "NAME",
                    "ADDRESS",
                    "KEY",
                    "PROTOCOL",
                    "STATE",
                    "REQUESTS",
                    "OPENED",
                    "CLOSED",
                    "REFUSED",
                    "BYTES-IN",
                    "BYTES-OUT",
                    "DETAIL"
                ],
                l.listeners
                    .iter()
                    .map(|k| vec![
                        k.name.clone(),
                        format!("{}:{}", k.host, k.port),
                        k.routing_key.clone(),
                        k.protocol.clone(),
                        k.state.clone(),
                        k.requests.to_string(),
                        k.connections_opened.to_string(),
                        k.connections_closed.to_string(),
                        k.connections_refused.to_string(),
                        k.bytes_in.to_string(),
                        k.bytes_out.to_string(),
                        k.detail.clone(),
                    ])
                    .collect()
            )
        ),
        View::Connectors => show!(
            c.list_connectors(ListRequest {}).await?.into_inner(),
            |l: &pb::ConnectorList| table(
                &[
                    "NAME",
                    "TARGET",
                    "KEY",
                    "PROTOCOL",
                    "POOLED",
                    "REQUESTS",
                    "ACTIVE",
                    "OPENED",
                    "CLOSED",
                    "FAILURES",
                    "BYTES-IN",
                    "BYTES-OUT",
                    "LAST-ERROR"
                ],
                l.connectors
                    .iter()
                    .map(|k| vec![
                        k.name.clone(),
                        format!("{}:{}", k.host, k.port),
                        k.routing_key.clone(),
                        k.protocol.clone(),
                        k.pooled_connections.to_string(),
                        k.requests.to_string(),
                        k.active_flows.to_string(),
                        k.connections_opened.to_string(),
                        k.connections_closed.to_string(),
                        k.connect_failures.to_string(),
                        k.bytes_in.to_string(),
                        k.bytes_out.to_string(),
                        k.detail.clone(),
                    ])
                    .collect()
            )
        ),
        View::Addresses => show!(
            c.list_addresses(ListRequest {}).await?.into_inner(),
            |l: &pb::AddressList| table(
                &["KEY", "LISTENERS", "DESTINATIONS (router:cost:connectors)"],
                l.addresses
                    .iter()
                    .map(|a| vec![
                        a.routing_key.clone(),
                        a.local_listeners.to_string(),
                        a.destinations
                            .iter()
                            .map(|d| format!("{}:{}:{}", d.router_id, d.cost, d.connectors))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ])
                    .collect()
            )
        ),
        View::Flows => show!(
            c.list_flows(ListRequest {}).await?.into_inner(),
            |l: &pb::FlowList| table(
                &[
                    "ID",
                    "KEY",
                    "ROLE",
                    "REQUEST",
                    "CLIENT",
                    "SERVER",
                    "PATH",
                    "BYTES-OUT",
                    "BYTES-IN",
                    "AGE"
                ],
                l.flows
                    .iter()
                    .map(|f| vec![
                        format!("{:016x}", f.flow_id),
                        f.routing_key.clone(),
                        f.role.clone(),
                        f.request.clone(),
                        f.client_addr.clone(),
                        f.server_addr.clone(),
                        f.path.join(">"),
                        f.bytes_out.to_string(),
                        f.bytes_in.to_string(),
                        format!("{:.1}s", f.age_ms as f64 / 1000.0),
                    ])
                    .collect()
            )
        ),
        View::Requests => show!(
            c.list_requests(ListRequest {}).await?.into_inner(),
            |l: &pb::RequestStatsList| table(
                &[
                    "ADDRESS",
                    "METHOD",
                    "CODE",
                    "FROM",
                    "TO",
                    "REQUESTS",
                    "MEAN-MS",
                    "P50",
                    "P90",
                    "P99",
                    "BYTES-OUT",
                    "BYTES-IN"
                ],
                l.requests
                    .iter()
                    .map(|r| vec![
                        r.address.clone(),
                        r.method.clone(),
                        r.code.clone(),
                        r.client_site.clone(),
                        if r.server_site.is_empty() {
                            "-".into()
                        } else {
                            r.server_site.clone()
                        },
                        r.requests.to_string(),
                        format!("{:.2}", r.latency_mean_ms),
                        bucket(r.latency_p50_ms),
                        bucket(r.latency_p90_ms),
                        bucket(r.latency_p99_ms),
                        r.bytes_out.to_string(),
                        r.bytes_in.to_string(),
                    ])
                    .collect()
            )
        ),
        View::Config => {
            let cfg = c.get_config(pb::GetConfigRequest {}).await?.into_inner();
            // The configuration is always shown as JSON: it is nested.
            println!("{}", serde_json::to_string_pretty(&cfg)?);
        }
    }
    Ok(())
}

/// A latency bucket bound in milliseconds ("≤1", or ">16384" beyond the last bucket).
fn bucket(ms: f64) -> String {
    if ms == 0.0 {
        ">16384".into()
    } else {
        format!("≤{ms}")
    }
}

/// Renders rows as left-aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, header.to_vec());
    for r in &rows {
        line(&mut out, r.iter().map(String::as_str).collect());
    }
    out
}
