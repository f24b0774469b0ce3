//! config-sync: keeps a router's configuration equal to what its site controller wants, and
//! tells the controller what the router reports.
//!
//! It follows the controller's desired configuration (a stream), compares it with the
//! router's configuration in force, and applies the difference through the router's admin
//! API: all of it in one change when it can, else one operation at a time so that one bad
//! entity (a listener whose port is taken) does not hold back the rest. It watches the
//! router too, so a restarted router (empty configuration) is fully resynchronised at once.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::{debug, info, warn};
use van_proto::admin::{self as rpb, config_op::Op, router_admin_client::RouterAdminClient};
use van_proto::controller::{self as cpb, site_controller_client::SiteControllerClient};

pub mod forward;
pub mod health;
pub mod k8s;
pub mod peers;
pub mod records;
pub mod tls;

use std::sync::Arc;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
// Both ends are on this host (or pod): retrying often is cheap and brings a restarted
// router back into service sooner.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Observed state is re-sent at least this often, so the controller knows we are alive.
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// Entities that failed to apply are retried this often.
const RETRY_EVERY: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Options {
    /// gRPC target of the controller (`host:port` or `unix:/path`).
    pub controller: String,
    /// gRPC target of the router's admin API.
    pub router: String,
    /// Bearer token for the controller's API (required when it listens on TCP).
    pub controller_token: Option<String>,
    /// Where TLS material comes from when the controller keeps it in a Secret (Kubernetes).
    pub secrets: Option<Arc<dyn tls::SecretSource>>,
    /// The site's other routers, to link to (Kubernetes, several router pods).
    pub peers: Option<peers::Peers>,
}

/// The controller's client, sending the API token with every call when there is one.
pub type ControllerClient = SiteControllerClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone, Default)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    /// A token from the text of a file (surrounding whitespace ignored).
    pub fn new(token: Option<&str>) -> Result<BearerToken, Error> {
        match token.map(str::trim) {
            None => Ok(BearerToken(None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| BearerToken(Some(v)))
                .map_err(|_| Error::Token),
        }
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the controller API token is not printable ASCII")]
    Token,
    #[error(transparent)]
    Target(#[from] van_proto::grpc::ConnectError),
}

/// Runs until `shutdown` completes.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    run_reporting(opts, watch::channel(false).0, shutdown).await
}

/// As [`run`], keeping `ready` true while the router holds the controller's desired
/// configuration (see [`health`]).
pub async fn run_reporting(
    opts: Options,
    ready: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let controller = SiteControllerClient::with_interceptor(
        van_proto::grpc::lazy_channel(&opts.controller)?,
        BearerToken::new(opts.controller_token.as_deref())?,
    );
    let router = RouterAdminClient::new(van_proto::grpc::lazy_channel(&opts.router)?);
    let (desired_tx, desired_rx) = watch::channel(None);
    let (publication_tx, publication_rx) = watch::channel(None);
    let follow = tokio::spawn(follow_controller(controller.clone(), desired_tx));
    let follow_pub = tokio::spawn(follow_publication(controller.clone(), publication_tx));
    let sync = tokio::spawn(sync_router(
        router,
        controller,
        desired_rx,
        publication_rx,
        opts.secrets,
        opts.peers,
        ready,
    ));
    shutdown.await;
    follow.abort();
    follow_pub.abort();
    sync.abort();
    info!("config-sync stopped");
    Ok(())
}

/// Keeps `tx` holding the controller's newest desired configuration.
async fn follow_controller(
    mut c: ControllerClient,
    tx: watch::Sender<Option<cpb::DesiredRouterConfig>>,
) {
    let mut delay = BACKOFF_MIN;
    loop {
        match c
            .watch_router_config(cpb::WatchRouterConfigRequest {})
            .await
        {
            Ok(s) => {
                info!("Following the controller's configuration");
                let mut s = s.into_inner();
                while let Some(item) = s.next().await {
                    match item {
                        Ok(cfg) => {
                            delay = BACKOFF_MIN;
                            tx.send_replace(Some(cfg));
                        }
                        Err(e) => {
                            debug!(error = %e, "Controller stream failed");
                            break;
                        }
                    }
                }
            }
            Err(e) => debug!(error = %e, "Controller not reachable"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// Keeps `tx` holding what the controller wants published on the network-wide topic.
async fn follow_publication(
    mut c: ControllerClient,
    tx: watch::Sender<Option<rpb::PublishRequest>>,
) {
    let mut delay = BACKOFF_MIN;
    loop {
        if let Ok(s) = c.watch_publication(cpb::WatchPublicationRequest {}).await {
            let mut s = s.into_inner();
            while let Some(Ok(p)) = s.next().await {
                delay = BACKOFF_MIN;
                // Sent even when equal: the first item of a new stream means the controller
                // (re)started and must hear the network again.
                tx.send_replace(Some(p));
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// Router sessions, one after another: each lasts while the router's change feed does.
async fn sync_router(
    router: RouterAdminClient<Channel>,
    controller: ControllerClient,
    mut desired: watch::Receiver<Option<cpb::DesiredRouterConfig>>,
    mut publication: watch::Receiver<Option<rpb::PublishRequest>>,
    secrets: Option<Arc<dyn tls::SecretSource>>,
    mut peers: Option<peers::Peers>,
    ready: watch::Sender<bool>,
) {
    let mut delay = BACKOFF_MIN;
    loop {
        match router_session(
            router.clone(),
            controller.clone(),
            &mut desired,
            &mut publication,
            secrets.as_deref(),
            peers.as_mut(),
            &ready,
        )
        .await
        {
            Ok(()) => delay = BACKOFF_MIN,
            Err(e) => debug!(error = %e, "Router session ended"),
        }
        // Without a session nothing says the router (maybe restarted, empty) is in step.
        set(&ready, false);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// The Secret holding the TLS material, followed while the controller names one.
type TlsFeed = Option<(String, watch::Receiver<tls::SecretData>)>;

/// The router configuration `want` stands for, with its TLS material filled in when it is
/// kept in a Secret; plus the entities still waiting for their material.
fn resolve(
    want: cpb::DesiredRouterConfig,
    secrets: Option<&dyn tls::SecretSource>,
    feed: &mut TlsFeed,
) -> (rpb::RouterConfig, BTreeMap<String, String>) {
    let cfg = want.config.unwrap_or_default();
    let name = want.tls_secret;
    if name.is_empty() {
        *feed = None;
        return (cfg, BTreeMap::new());
    }
    let Some(src) = secrets else {
        let (cfg, mut waiting) = tls::fill(cfg, &name, None);
        for why in waiting.values_mut() {
            *why = format!(
                "the controller keeps TLS material in Secret {name}, but config-sync was \
                 started without access to Secrets (--secrets-namespace)"
            );
        }
        return (cfg, waiting);
    };
    if feed.as_ref().map(|(n, _)| n) != Some(&name) {
        *feed = Some((name.clone(), src.watch(&name)));
    }
    let data = feed
        .as_mut()
        .map(|(_, rx)| rx.borrow_and_update().clone())
        .unwrap_or_default();
    tls::fill(cfg, &name, data.as_ref())
}

async fn router_session(
    mut router: RouterAdminClient<Channel>,
    mut controller: ControllerClient,
    desired: &mut watch::Receiver<Option<cpb::DesiredRouterConfig>>,
    publication: &mut watch::Receiver<Option<rpb::PublishRequest>>,
    secrets: Option<&dyn tls::SecretSource>,
    mut peers: Option<&mut peers::Peers>,
    ready: &watch::Sender<bool>,
) -> Result<(), tonic::Status> {
    let mut tls_feed: TlsFeed = None;
    let mut feed = router.watch(rpb::WatchRequest {}).await?.into_inner();
    // The site's record goes out through this router; every site's comes back. A restarted
    // router has forgotten what it published, so each session publishes again.
    let topic = van_proto::controller::TOPIC_SITES;
    let mut network = router
        .subscribe(rpb::SubscribeRequest {
            topic: topic.into(),
        })
        .await?
        .into_inner();
    publication.mark_changed();
    let mut last_network: Option<rpb::TopicSnapshot> = None;
    let status = router
        .get_status(rpb::GetStatusRequest {})
        .await?
        .into_inner();
    info!(router = %status.router_id, instance = status.instance, "Connected to the router");
    let mut actual: Option<rpb::RouterConfig> = None;
    let mut links = rpb::LinkList::default();
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let mut in_sync = false;
    let mut report = tokio::time::interval(REPORT_EVERY);
    let mut retry = tokio::time::interval(RETRY_EVERY);
    desired.mark_changed();
    loop {
        let mut dirty = false;
        tokio::select! {
            ev = feed.next() => {
                let Some(ev) = ev else { return Err(tonic::Status::unavailable("router feed ended")) };
                match ev?.view {
                    Some(rpb::watch_event::View::Config(c)) => {
                        actual = Some(c);
                        dirty = true;
                    }
                    Some(rpb::watch_event::View::Links(l)) => links = l,
                    _ => continue,
                }
            }
            r = desired.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                dirty = true;
            }
            r = publication.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                let p = publication.borrow_and_update().clone();
                if let Some(p) = p {
                    router.publish(p).await?;
                }
                // A new publication may come from a restarted controller, which knows
                // nothing of the network yet: tell it what the router last said.
                if let Some(snap) = last_network.clone()
                    && let Err(e) = controller.report_network(snap).await
                {
                    debug!(error = %e, "Cannot report the network to the controller");
                }
                continue;
            }
            snap = network.next() => {
                let Some(snap) = snap else {
                    return Err(tonic::Status::unavailable("router subscription ended"));
                };
                let snap = snap?;
                last_network = Some(snap.clone());
                if let Err(e) = controller.report_network(snap).await {
                    debug!(error = %e, "Cannot report the network to the controller");
                }
                continue;
            }
            r = async {
                match peers.as_mut() {
                    Some(p) => p.addrs.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if r.is_err() {
                    peers = None;
                }
                dirty = true;
            }
            r = async {
                match &mut tls_feed {
                    Some((_, rx)) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if r.is_err() {
                    tls_feed = None;
                }
                dirty = true;
            }
            _ = retry.tick() => dirty = !errors.is_empty(),
            _ = report.tick() => {}
        }
        // Marked seen only when acted on: a change that arrives while another branch is
        // handled must still wake the next `desired.changed()`, or it would wait for the
        // next change to be applied.
        let want = if dirty {
            desired.borrow_and_update().clone()
        } else {
            None
        };
        if let (Some(want), Some(have)) = (want, actual.as_ref()) {
            let (mut want, waiting) = resolve(want, secrets, &mut tls_feed);
            if let Some(p) = peers.as_mut() {
                let addrs = p.addrs.borrow_and_update().clone();
                peers::add_links(&mut want, p.own, p.port, &addrs);
            }
            let ops = diff(have, &want);
            errors = if ops.is_empty() {
                BTreeMap::new()
            } else {
                // The router's feed brings the new configuration; compare again then.
                apply(&mut router, ops).await?
            };
            errors.extend(waiting);
            in_sync = errors.is_empty();
            set(ready, in_sync);
        }
        // Status is not in the change feed's every event (it changes each second).
        let now = router
            .get_status(rpb::GetStatusRequest {})
            .await?
            .into_inner();
        if now.instance != status.instance {
            return Err(tonic::Status::unavailable("the router restarted"));
        }
        let obs = cpb::ObservedState {
            links: Some(links.clone()),
            router_instance: now.instance,
            apply_errors: errors.clone().into_iter().collect(),
            in_sync,
            active_flows: now.active_flows,
            router_id: now.router_id.clone(),
        };
        if let Err(e) = controller.report_observed(obs).await {
            debug!(error = %e, "Cannot report to the controller");
        }
    }
}

/// Sets `ready` to `now`, waking its followers only on a change.
fn set(ready: &watch::Sender<bool>, now: bool) {
    ready.send_if_modified(|r| std::mem::replace(r, now) != now);
}

/// Applies `ops` in one change; if the router refuses it, one by one. Returns the entities
/// that could not be applied, with why. Errors only when the router is unreachable.
async fn apply(
    router: &mut RouterAdminClient<Channel>,
    ops: Vec<rpb::ConfigOp>,
) -> Result<BTreeMap<String, String>, tonic::Status> {
    let n = ops.len();
    let all = rpb::ConfigChange {
        ops: ops.clone(),
        dry_run: false,
        drop_flows: true,
    };
    match router.apply_config(all).await {
        Ok(r) => {
            info!(
                ops = n,
                generation = r.into_inner().generation,
                "Router configuration updated"
            );
            return Ok(BTreeMap::new());
        }
        Err(e) if e.code() != tonic::Code::InvalidArgument => return Err(e),
        Err(e) => warn!(error = %e.message(), "Router refused the change; applying one at a time"),
    }
    let mut errors = BTreeMap::new();
    // Deletes first, then profiles before what uses them (the order `diff` produces).
    for op in ops {
        let name = op_name(&op);
        let one = rpb::ConfigChange {
            ops: vec![op],
            dry_run: false,
            drop_flows: true,
        };
        match router.apply_config(one).await {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::InvalidArgument => {
                warn!(entity = %name, error = %e.message(), "Cannot apply");
                errors.insert(name, e.message().to_string());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(errors)
}

fn op_name(op: &rpb::ConfigOp) -> String {
    match &op.op {
        Some(Op::PutTcpListener(x)) => x.name.clone(),
        Some(Op::PutTcpConnector(x)) => x.name.clone(),
        Some(Op::PutLinkListener(x)) => x.name.clone(),
        Some(Op::PutLink(x)) => x.name.clone(),
        Some(Op::PutTlsProfile(x)) => x.name.clone(),
        Some(Op::Delete(d)) => d.name.clone(),
        None => String::new(),
    }
}

/// What turns `have` into `want`: deletes of what is not wanted, then puts of what is new
/// or different (TLS profiles first, as links and link listeners name them).
pub fn diff(have: &rpb::RouterConfig, want: &rpb::RouterConfig) -> Vec<rpb::ConfigOp> {
    let mut deletes = Vec::new();
    let mut puts = Vec::new();
    fn by_name<T: Clone>(v: &[T], name: impl Fn(&T) -> &str) -> HashMap<String, T> {
        v.iter().map(|x| (name(x).to_string(), x.clone())).collect()
    }
    macro_rules! kind {
        ($field:ident, $kind:expr, $put:expr, $same:expr) => {{
            let have = by_name(&have.$field, |x| &x.name);
            let wanted = by_name(&want.$field, |x| &x.name);
            let mut names: Vec<&String> =
                have.keys().filter(|n| !wanted.contains_key(*n)).collect();
            names.sort();
            for n in names {
                deletes.push(rpb::ConfigOp {
                    op: Some(Op::Delete(rpb::Delete {
                        kind: $kind as i32,
                        name: n.clone(),
                    })),
                });
            }
            for w in &want.$field {
                let same: fn(&_, &_) -> bool = $same;
                if !have.get(&w.name).is_some_and(|h| same(h, w)) {
                    puts.push(rpb::ConfigOp {
                        op: Some($put(w.clone())),
                    });
                }
            }
        }};
    }
    kind!(
        tls_profiles,
        rpb::Kind::TlsProfile,
        Op::PutTlsProfile,
        // The router never shows private keys; a new key always comes with a new certificate.
        |h: &rpb::TlsProfileConfig, w: &rpb::TlsProfileConfig| h.ca_pem == w.ca_pem
            && h.cert_pem == w.cert_pem
            && h.ca_file == w.ca_file
            && h.cert_file == w.cert_file
            && h.key_file == w.key_file
    );
    kind!(
        link_listeners,
        rpb::Kind::LinkListener,
        Op::PutLinkListener,
        |h: &rpb::LinkListenerConfig, w: &rpb::LinkListenerConfig| h == w
    );
    kind!(
        links,
        rpb::Kind::Link,
        Op::PutLink,
        |h: &rpb::LinkConfig, w: &rpb::LinkConfig| {
            let mut w = w.clone();
            // The router reports the server name it will verify, defaulted to the host.
            if w.server_name.is_empty() {
                w.server_name = h.server_name.clone();
            }
            // ... and its proxy without the password (a changed password alone is not seen).
            if let Ok(p) = van_proto::tunnel::Proxy::parse(&w.proxy) {
                w.proxy = p.to_string();
            }
            *h == w
        }
    );
    kind!(
        tcp_listeners,
        rpb::Kind::TcpListener,
        Op::PutTcpListener,
        |h: &rpb::TcpListenerConfig, w: &rpb::TcpListenerConfig| {
            let mut w = w.clone();
            // The router reports the protocol it defaulted to.
            w.protocol = default_protocol(&w.protocol);
            *h == w
        }
    );
    kind!(
        tcp_connectors,
        rpb::Kind::TcpConnector,
        Op::PutTcpConnector,
        |h: &rpb::TcpConnectorConfig, w: &rpb::TcpConnectorConfig| {
            let mut w = w.clone();
            w.protocol = default_protocol(&w.protocol);
            *h == w
        }
    );
    // Profiles go last among deletes: links and link listeners may still name them.
    let tls = rpb::Kind::TlsProfile as i32;
    let (mut ops, profiles): (Vec<_>, Vec<_>) = deletes
        .into_iter()
        .partition(|o| !matches!(&o.op, Some(Op::Delete(d)) if d.kind == tls));
    ops.extend(profiles);
    ops.extend(puts);
    ops
}

/// The protocol an empty field means, as the router reports it.
fn default_protocol(p: &str) -> String {
    if p.is_empty() {
        "tcp".into()
    } else {
        p.to_string()
    }
}

#[cfg(test)]
mod tests;
