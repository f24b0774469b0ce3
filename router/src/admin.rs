//! The admin gRPC API (`van.admin.v1.RouterAdmin`), gRPC health and reflection.
//! Domain <-> protobuf conversion and error -> `tonic::Status` mapping happen here only.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use van_proto::admin::{self as pb, router_admin_server::RouterAdmin};

use crate::config::{self, EntityKind, EntityOp, LinkRole};
use crate::error::{AdminError, ConfigError, FieldError, LinkFailure};
use crate::link::Direction;
use crate::router::Router;

/// Where the admin API is served.
pub use van_proto::grpc::Bind as AdminBind;

#[derive(Debug, Clone)]
pub struct AdminService {
    router: Arc<Router>,
}

impl AdminService {
    pub fn new(router: Arc<Router>) -> Self {
        AdminService { router }
    }
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Status {
        match e {
            AdminError::Invalid(c) => Status::invalid_argument(c.to_string()),
            AdminError::NotFound { .. } => Status::not_found(e.to_string()),
            AdminError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

// --- views ---

fn link_failure(f: LinkFailure) -> pb::LinkFailure {
    use pb::LinkFailure as P;
    match f {
        LinkFailure::Dns => P::Dns,
        LinkFailure::ConnectRefused => P::ConnectRefused,
        LinkFailure::Unreachable => P::Unreachable,
        LinkFailure::Timeout => P::Timeout,
        LinkFailure::Certificate => P::Certificate,
        LinkFailure::Tls => P::Tls,
        LinkFailure::Protocol => P::Protocol,
        LinkFailure::HandshakeRefused => P::HandshakeRefused,
        LinkFailure::Io => P::Io,
        LinkFailure::Closed => P::Closed,
    }
}

pub fn status(r: &Router) -> pb::RouterStatus {
    let (active, total) = r.flow_counts();
    pb::RouterStatus {
        router_id: r.id().to_string(),
        site_id: r.site().to_string(),
        mode: r.mode().as_str().into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: r.uptime().as_secs(),
        instance: r.instance(),
        reachable_routers: r.table().nodes.len() as u32,
        active_flows: active as u32,
        flows_total: total,
    }
}

pub fn nodes(r: &Router) -> pb::NodeList {
    let t = r.table();
    pb::NodeList {
        nodes: t
            .nodes
            .iter()
            .map(|(id, n)| pb::Node {
                router_id: id.clone(),
                cost: n.cost.min(u64::from(u32::MAX)) as u32,
                next_hop: n.next_hop.clone(),
                hops: n.hops,
                instance: n.instance,
                ls_seq: n.ls_seq,
                neighbors: n.neighbors.clone(),
            })
            .collect(),
    }
}

pub fn links(r: &Router) -> pb::LinkList {
    let links = r.links();
    let active_uplink = r.active_uplink().map(|u| u.name.clone());
    pb::LinkList {
        links: links
            .iter()
            .map(|l| {
                let st = l.inner.lock().expect("link");
                pb::Link {
                    name: l.name.clone(),
                    role: l.role.as_str().into(),
                    direction: l.direction.as_str().into(),
                    state: st.state.into(),
                    peer_router: st.peer_router.clone(),
                    peer_address: l.peer_address.clone(),
                    cost: l.cost.load(Ordering::Relaxed) as u32,
                    bytes_out: st
                        .conn
                        .as_ref()
                        .map_or(0, |c| c.bytes_out.load(Ordering::Relaxed)),
                    bytes_in: st
                        .conn
                        .as_ref()
                        .map_or(0, |c| c.bytes_in.load(Ordering::Relaxed)),
                    errors: l.errors.load(Ordering::Relaxed),
                    last_error: st.last_error.clone(),
                    failure: st.failure.map_or(pb::LinkFailure::None, link_failure) as i32,
                    up_seconds: st.up_since.map_or(0, |t| t.elapsed().as_secs()),
                    active_flows: st.conn.as_ref().map_or(0, |c| c.active_streams() as u32),
                    // An edge uses one uplink at a time; other links are active while up.
                    active: st.state == "up"
                        && (l.role != LinkRole::Edge
                            || l.direction == Direction::Incoming
                            || active_uplink.as_deref() == Some(l.name.as_str())),
                }
            })
            .collect(),
    }
}

pub async fn link_listeners(r: &Router) -> pb::LinkListenerList {
    let e = r.entities().await;
    pb::LinkListenerList {
        link_listeners: e
            .link_listeners
            .values()
            .map(|l| {
                let bound = r.link_listener_addr(&l.name);
                pb::LinkListener {
                    name: l.name.clone(),
                    role: l.role.as_str().into(),
                    host: l.host.clone(),
                    port: u32::from(bound.map_or(l.port, |a| a.port())),
                    cost: l.cost,
                    state: if bound.is_some() { "up" } else { "down" }.into(),
                }
            })
            .collect(),
    }
}

pub fn listeners(r: &Router) -> pb::ListenerList {
    let ls = r.listeners();
    pb::ListenerList {
        listeners: ls
            .iter()
            .map(|l| {
                let (state, detail) = l.state.lock().expect("listener").clone();
                pb::Listener {
                    name: l.cfg.name.clone(),
                    host: l.cfg.host.clone(),
                    port: u32::from(l.port.load(Ordering::Relaxed)),
                    routing_key: l.cfg.routing_key.clone(),
                    state: state.into(),
                    detail,
                    connections_opened: l.opened.load(Ordering::Relaxed),
                    connections_closed: l.closed.load(Ordering::Relaxed),
                    bytes_in: l.bytes_in.load(Ordering::Relaxed),
                    bytes_out: l.bytes_out.load(Ordering::Relaxed),
                    connections_refused: l.refused.load(Ordering::Relaxed),
                    protocol: l.cfg.protocol.as_str().into(),
                    requests: l.requests.load(Ordering::Relaxed),
                    request_errors: l.request_errors.load(Ordering::Relaxed),
                }
            })
            .collect(),
    }
}

pub fn connectors(r: &Router) -> pb::ConnectorList {
    let cs = r.connectors();
    pb::ConnectorList {
        connectors: cs
            .iter()
            .map(|c| {
                let err = c.last_error.lock().expect("connector").clone();
                pb::Connector {
                    name: c.cfg.name.clone(),
                    host: c.cfg.host.clone(),
                    port: u32::from(c.cfg.port),
                    routing_key: c.cfg.routing_key.clone(),
                    state: "ok".into(),
                    detail: err,
                    connections_opened: c.opened.load(Ordering::Relaxed),
                    connections_closed: c.closed.load(Ordering::Relaxed),
                    bytes_in: c.bytes_in.load(Ordering::Relaxed),
                    bytes_out: c.bytes_out.load(Ordering::Relaxed),
                    connect_failures: c.failures.load(Ordering::Relaxed),
                    active_flows: c.active.load(Ordering::Relaxed),
                    protocol: c.cfg.protocol.as_str().into(),
                    pooled_connections: c.pool.as_ref().map_or(0, |p| p.open_connections()),
                    requests: c.requests.load(Ordering::Relaxed),
                    host_override: c.cfg.host_override.clone().unwrap_or_default(),
                }
            })
            .collect(),
    }
}

pub fn addresses(r: &Router) -> pb::AddressList {
    let t = r.table();
    let ls = r.listeners();
    // Keys starting with '$' are the routers' own (records), not services.
    let mut keys: std::collections::BTreeSet<&String> =
        t.addresses.keys().filter(|k| !k.starts_with('$')).collect();
    keys.extend(ls.iter().map(|l| &l.cfg.routing_key));
    pb::AddressList {
        addresses: keys
            .into_iter()
            .map(|k| pb::Address {
                routing_key: k.clone(),
                destinations: t
                    .addresses
                    .get(k)
                    .map(|ds| {
                        ds.iter()
                            .map(|d| pb::Destination {
                                router_id: d.router.clone(),
                                cost: d.cost.min(u64::from(u32::MAX)) as u32,
                                connectors: d.connectors,
                                open_flows: 0,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                local_listeners: ls.iter().filter(|l| l.cfg.routing_key == *k).count() as u32,
            })
            .collect(),
    }
}

pub fn flows(r: &Router) -> pb::FlowList {
    let fs = r.flows();
    let mut flows: Vec<pb::Flow> = fs
        .iter()
        .map(|f| pb::Flow {
            flow_id: f.id,
            routing_key: f.routing_key.clone(),
            role: f.role.into(),
            client_addr: f.client_addr.clone(),
            server_addr: f.server_addr.lock().expect("flow").clone(),
            path: f.path.clone(),
            bytes_out: f.bytes_out.load(Ordering::Relaxed),
            bytes_in: f.bytes_in.load(Ordering::Relaxed),
            age_ms: f.started.elapsed().as_millis() as u64,
            protocol: f.protocol.into(),
            request: f.request.clone(),
        })
        .collect();
    flows.sort_by_key(|f| std::cmp::Reverse(f.age_ms));
    pb::FlowList { flows }
}

pub fn requests(r: &Router) -> pb::RequestStatsList {
    let ms = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    pb::RequestStatsList {
        requests: r
            .metrics()
            .request_stats()
            .into_iter()
            .map(|(k, s)| pb::RequestStats {
                latency_mean_ms: s.latency_sum.as_secs_f64() * 1000.0 / s.requests.max(1) as f64,
                latency_p50_ms: ms(s.quantile(0.5)),
                latency_p90_ms: ms(s.quantile(0.9)),
                latency_p99_ms: ms(s.quantile(0.99)),
                address: k.address,
                method: k.method.into_owned(),
                code: k.code.into_owned(),
                client_site: k.source_site,
                server_site: k.dest_site,
                requests: s.requests,
                bytes_out: s.bytes_out,
                bytes_in: s.bytes_in,
            })
            .collect(),
    }
}

// --- configuration conversion ---

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn port(errs: &mut Vec<FieldError>, path: String, p: u32) -> u16 {
    u16::try_from(p).unwrap_or_else(|_| {
        errs.push(FieldError {
            path,
            message: format!("{p} is not a port number"),
        });
        0
    })
}

fn protocol(errs: &mut Vec<FieldError>, path: String, s: &str) -> config::Protocol {
    config::Protocol::parse(s).unwrap_or_else(|| {
        errs.push(FieldError {
            path,
            message: format!("{s:?} is not a protocol (tcp, http or http2)"),
        });
        config::Protocol::Tcp
    })
}

fn role(errs: &mut Vec<FieldError>, path: String, s: &str) -> LinkRole {
    LinkRole::parse(s).unwrap_or_else(|| {
        errs.push(FieldError {
            path,
            message: format!("{s:?} is not a role (inter-router or edge)"),
        });
        LinkRole::InterRouter
    })
}

/// Converts a change request, reporting every malformed field at once.
pub fn ops_from_pb(change: pb::ConfigChange) -> Result<Vec<EntityOp>, ConfigError> {
    use pb::config_op::Op;
    let mut errs = Vec::new();
    let mut ops = Vec::new();
    for (i, op) in change.ops.into_iter().enumerate() {
        let p = |f: &str| format!("ops[{i}].{f}");
        let Some(op) = op.op else {
            errs.push(FieldError {
                path: format!("ops[{i}]"),
                message: "empty operation".into(),
            });
            continue;
        };
        ops.push(match op {
            Op::PutTcpListener(l) => EntityOp::PutTcpListener(config::TcpListener {
                port: port(&mut errs, p("port"), l.port),
                protocol: protocol(&mut errs, p("protocol"), &l.protocol),
                name: l.name,
                host: l.host,
                routing_key: l.routing_key,
            }),
            Op::PutTcpConnector(c) => EntityOp::PutTcpConnector(config::TcpConnector {
                port: port(&mut errs, p("port"), c.port),
                protocol: protocol(&mut errs, p("protocol"), &c.protocol),
                host_override: opt(&c.host_override),
                name: c.name,
                host: c.host,
                routing_key: c.routing_key,
            }),
            Op::PutLinkListener(l) => EntityOp::PutLinkListener(config::LinkListener {
                role: role(&mut errs, p("role"), &l.role),
                port: port(&mut errs, p("port"), l.port),
                cost: if l.cost == 0 { 1 } else { l.cost },
                name: l.name,
                host: l.host,
                tls_profile: l.tls_profile,
            }),
            Op::PutLink(l) => EntityOp::PutLink(config::Link {
                role: role(&mut errs, p("role"), &l.role),
                port: port(&mut errs, p("port"), l.port),
                cost: if l.cost == 0 { 1 } else { l.cost },
                server_name: opt(&l.server_name),
                proxy: opt(&l.proxy),
                name: l.name,
                host: l.host,
                tls_profile: l.tls_profile,
            }),
            Op::PutTlsProfile(t) => EntityOp::PutTlsProfile(config::TlsProfile {
                ca_file: opt(&t.ca_file).map(Into::into),
                cert_file: opt(&t.cert_file).map(Into::into),
                key_file: opt(&t.key_file).map(Into::into),
                ca_pem: opt(&t.ca_pem),
                cert_pem: opt(&t.cert_pem),
                key_pem: opt(&t.key_pem),
                name: t.name,
            }),
            Op::Delete(d) => {
                let kind = match pb::Kind::try_from(d.kind) {
                    Ok(pb::Kind::TcpListener) => EntityKind::TcpListener,
                    Ok(pb::Kind::TcpConnector) => EntityKind::TcpConnector,
                    Ok(pb::Kind::LinkListener) => EntityKind::LinkListener,
                    Ok(pb::Kind::Link) => EntityKind::Link,
                    Ok(pb::Kind::TlsProfile) => EntityKind::TlsProfile,
                    _ => {
                        errs.push(FieldError {
                            path: p("delete.kind"),
                            message: format!("unknown kind {}", d.kind),
                        });
                        continue;
                    }
                };
                EntityOp::Delete(kind, d.name)
            }
        });
    }
    if errs.is_empty() {
        Ok(ops)
    } else {
        Err(ConfigError { errors: errs })
    }
}

fn s(p: &Option<std::path::PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

pub async fn config(r: &Router) -> pb::RouterConfig {
    let e = r.entities().await;
    pb::RouterConfig {
        router_id: r.id().to_string(),
        site_id: r.site().to_string(),
        mode: r.mode().as_str().into(),
        tls_profiles: e
            .tls_profiles
            .values()
            .map(|t| pb::TlsProfileConfig {
                name: t.name.clone(),
                ca_file: s(&t.ca_file),
                cert_file: s(&t.cert_file),
                key_file: s(&t.key_file),
                // Inline material is write-only: the private key never leaves the router.
                ca_pem: t.ca_pem.clone().unwrap_or_default(),
                cert_pem: t.cert_pem.clone().unwrap_or_default(),
                key_pem: if t.key_pem.is_some() {
                    "<redacted>".into()
                } else {
                    String::new()
                },
            })
            .collect(),
        link_listeners: e
            .link_listeners
            .values()
            .map(|l| pb::LinkListenerConfig {
                name: l.name.clone(),
                role: l.role.as_str().into(),
                host: l.host.clone(),
                port: u32::from(l.port),
                cost: l.cost,
                tls_profile: l.tls_profile.clone(),
            })
            .collect(),
        links: e
            .links
            .values()
            .map(|l| pb::LinkConfig {
                name: l.name.clone(),
                role: l.role.as_str().into(),
                host: l.host.clone(),
                port: u32::from(l.port),
                cost: l.cost,
                tls_profile: l.tls_profile.clone(),
                server_name: l.server_name.clone().unwrap_or_default(),
                // Credentials stay with the router: what is read back names the proxy only.
                proxy: l
                    .proxy
                    .as_deref()
                    .and_then(|p| van_proto::tunnel::Proxy::parse(p).ok())
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        tcp_listeners: e
            .tcp_listeners
            .values()
            .map(|l| pb::TcpListenerConfig {
                name: l.name.clone(),
                host: l.host.clone(),
                port: u32::from(l.port),
                routing_key: l.routing_key.clone(),
                protocol: l.protocol.as_str().into(),
            })
            .collect(),
        tcp_connectors: e
            .tcp_connectors
            .values()
            .map(|c| pb::TcpConnectorConfig {
                name: c.name.clone(),
                host: c.host.clone(),
                port: u32::from(c.port),
                routing_key: c.routing_key.clone(),
                protocol: c.protocol.as_str().into(),
                host_override: c.host_override.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;
type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::TopicSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl RouterAdmin for AdminService {
    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::RouterStatus>, Status> {
        Ok(Response::new(status(&self.router)))
    }
    async fn list_nodes(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::NodeList>, Status> {
        Ok(Response::new(nodes(&self.router)))
    }
    async fn list_links(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::LinkList>, Status> {
        Ok(Response::new(links(&self.router)))
    }
    async fn list_link_listeners(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::LinkListenerList>, Status> {
        Ok(Response::new(link_listeners(&self.router).await))
    }
    async fn list_listeners(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListenerList>, Status> {
        Ok(Response::new(listeners(&self.router)))
    }
    async fn list_connectors(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ConnectorList>, Status> {
        Ok(Response::new(connectors(&self.router)))
    }
    async fn list_addresses(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::AddressList>, Status> {
        Ok(Response::new(addresses(&self.router)))
    }
    async fn list_flows(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::FlowList>, Status> {
        Ok(Response::new(flows(&self.router)))
    }
    async fn list_requests(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::RequestStatsList>, Status> {
        Ok(Response::new(requests(&self.router)))
    }
    async fn get_config(
        &self,
        _: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::RouterConfig>, Status> {
        Ok(Response::new(config(&self.router).await))
    }
    async fn apply_config(
        &self,
        req: Request<pb::ConfigChange>,
    ) -> Result<Response<pb::ConfigChangeResult>, Status> {
        let change = req.into_inner();
        let (dry_run, drop_flows) = (change.dry_run, change.drop_flows);
        let ops = ops_from_pb(change).map_err(AdminError::Invalid)?;
        let generation = self.router.apply_ops(ops, dry_run, drop_flows).await?;
        Ok(Response::new(pb::ConfigChangeResult { generation }))
    }

    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let req = req.into_inner();
        let payload = (!req.payload.is_empty()).then_some(req.payload);
        self.router.publish(&req.topic, payload)?;
        Ok(Response::new(pb::PublishResponse {}))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let topic = req.into_inner().topic;
        if !config::valid_routing_key(&topic) {
            return Err(Status::invalid_argument(format!(
                "topic: {topic:?} is not a valid topic name"
            )));
        }
        let mut table = self.router.table_rx();
        let mut stopped = Box::pin(self.router.stopped());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let snap = {
                    let t = table.borrow_and_update();
                    pb::TopicSnapshot {
                        topic: topic.clone(),
                        values: t
                            .values
                            .get(&topic)
                            .into_iter()
                            .flatten()
                            .map(|(origin, payload)| pb::TopicValue {
                                origin: origin.clone(),
                                payload: payload.clone(),
                            })
                            .collect(),
                    }
                };
                if last.as_ref() != Some(&snap) {
                    last = Some(snap.clone());
                    if tx.send(Ok(snap)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    r = table.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = &mut stopped => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use pb::watch_event::View;
        let router = self.router.clone();
        let mut changes = router.subscribe_changes();
        let mut stopped = Box::pin(router.stopped());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            // Send each view when it differs from what this subscriber saw last.
            let mut last: Vec<Option<View>> = vec![None; 7];
            loop {
                changes.borrow_and_update();
                let views = [
                    View::Status(status(&router)),
                    View::Nodes(nodes(&router)),
                    View::Links(links(&router)),
                    View::Listeners(listeners(&router)),
                    View::Connectors(connectors(&router)),
                    View::Addresses(addresses(&router)),
                    View::Config(config(&router).await),
                ];
                for (i, v) in views.into_iter().enumerate() {
                    // Status changes every second (uptime); send it only with other changes.
                    if last[i].as_ref() == Some(&v) || (i == 0 && last[0].is_some()) {
                        continue;
                    }
                    last[i] = Some(v.clone());
                    if tx.send(Ok(pb::WatchEvent { view: Some(v) })).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = &mut stopped => return,
                }
                // Coalesce bursts of changes.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                last[0] = None;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The records API: every router's flow records, merged (docs/records.md).
#[derive(Debug)]
pub struct RecordsService {
    router: Arc<Router>,
}

type RecordsStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<van_proto::records::RecordBatch, Status>> + Send>,
>;

#[tonic::async_trait]
impl van_proto::records::records_server::Records for RecordsService {
    type WatchStream = RecordsStream;

    async fn watch(
        &self,
        _req: Request<van_proto::records::WatchRecordsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use tokio_stream::StreamExt;
        let rx = self.router.watch_records();
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok),
        )))
    }
}

/// Serves the admin API, health and reflection until `shutdown` completes.
pub async fn serve(
    router: Arc<Router>,
    bind: AdminBind,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    use van_proto::admin::router_admin_server::RouterAdminServer;
    use van_proto::grpc;
    let health = grpc::health_for::<RouterAdminServer<AdminService>>().await;
    use van_proto::records::records_server::RecordsServer;
    let routes = tonic::service::Routes::new(health)
        .add_service(RouterAdminServer::new(AdminService::new(router.clone())))
        .add_service(RecordsServer::new(RecordsService { router }));
    grpc::serve(
        grpc::with_reflection(
            routes,
            &[
                <RouterAdminServer<AdminService> as tonic::server::NamedService>::NAME,
                <RecordsServer<RecordsService> as tonic::server::NamedService>::NAME,
            ],
        ),
        bind,
        shutdown,
    )
    .await
}

/// Connects to a router's admin API at `host:port` or `unix:/path`.
pub async fn connect(
    target: &str,
) -> Result<
    pb::router_admin_client::RouterAdminClient<tonic::transport::Channel>,
    van_proto::grpc::ConnectError,
> {
    Ok(pb::router_admin_client::RouterAdminClient::new(
        van_proto::grpc::channel(target, None).await?,
    ))
}
