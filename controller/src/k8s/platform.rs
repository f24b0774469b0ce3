//! Running a site's controller on Kubernetes: the site options from the `skupper-site`
//! ConfigMap (its UID is the site id), the state in the Secret `skupper-site-state`, the API
//! and claims endpoint on the pod's ports, and the reconcilers driven by watchers on Services
//! and Secrets, with a periodic resync and backoff after errors.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::warn;

use crate::error::StoreError;
use crate::site::{RouterMode, SiteConfig, SiteState, SiteStore, StoreFuture};
use crate::{Controller, RunError};

pub const SITE_CONFIGMAP: &str = "skupper-site";
pub const STATE_SECRET: &str = "skupper-site-state";
pub const API_PORT: u16 = 8080;
const RESYNC: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The wait before retrying API writes that failed: none while they work, then 1 s doubling
/// up to [`BACKOFF_MAX`] while they keep failing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Backoff(Duration);

impl Backoff {
    fn succeeded(&mut self) {
        self.0 = Duration::ZERO;
    }

    /// Records a failure; returns the wait before the next try.
    fn failed(&mut self) -> Duration {
        self.0 = (self.0 * 2).clamp(Duration::from_secs(1), BACKOFF_MAX);
        self.0
    }

    /// Zero while nothing is failing.
    fn delay(self) -> Duration {
        self.0
    }
}

/// Site options from the `skupper-site` ConfigMap, the way Skupper 1.x keeps them.
pub fn site_config(cm: &ConfigMap, namespace: &str) -> Result<SiteConfig, crate::error::Invalid> {
    let data = cm.data.clone().unwrap_or_default();
    let get = |k: &str| data.get(k).cloned().unwrap_or_default();
    let mut errs = crate::error::Invalid::default();
    let uid = cm.metadata.uid.clone().unwrap_or_default().replace('-', "");
    let mode = match get("router-mode").as_str() {
        "" | "interior" => RouterMode::Interior,
        "edge" => RouterMode::Edge,
        other => {
            errs.push(
                "skupper-site router-mode",
                format!("{other:?} is not interior or edge"),
            );
            RouterMode::Interior
        }
    };
    let name = match get("name") {
        n if n.is_empty() => namespace.to_string(),
        n => n,
    };
    // Without an explicit host, other sites can reach this one only from inside the cluster.
    let ingress_host = match get("ingress-host") {
        h if h.is_empty() => format!("skupper-router.{namespace}.svc.cluster.local"),
        h => h,
    };
    errs.into_result()?;
    let cfg = SiteConfig {
        id: uid,
        name,
        mode,
        ingress_host,
        ingress_bind: "0.0.0.0".into(),
        listener_host: "0.0.0.0".into(),
        inter_router_port: crate::site::DEFAULT_INTER_ROUTER_PORT,
        edge_port: crate::site::DEFAULT_EDGE_PORT,
        claims_port: crate::site::DEFAULT_CLAIMS_PORT,
        advertised_ports: None,
        advertised_hosts: None,
        console: None,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The router Service other sites dial.
pub const ROUTER_SERVICE: &str = "skupper-router";
/// How long to wait for a load balancer's address before giving up for now.
/// The chart's startup probe allows 180 s before the controller must answer.
const LB_WAIT: Duration = Duration::from_secs(120);

/// The router Service's port names; behind Routes and Ingress rules each is also the first
/// label of the endpoint's own host name (`claims.<ingress-host>`).
pub const ENDPOINTS: [&str; 3] = ["inter-router", "edge", "claims"];

/// `cfg` reached through a TLS-passthrough proxy on port 443, one host per endpoint.
fn behind_proxy(cfg: &SiteConfig, host: impl Fn(&str) -> Option<String>) -> Option<SiteConfig> {
    let mut out = cfg.clone();
    out.advertised_hosts = Some(crate::site::Hosts {
        inter_router: host(ENDPOINTS[0])?,
        edge: host(ENDPOINTS[1])?,
        claims: host(ENDPOINTS[2])?,
    });
    out.advertised_ports = Some(crate::site::Ports {
        inter_router: 443,
        edge: 443,
        claims: 443,
    });
    Some(out)
}

/// Where other sites reach this one through OpenShift Routes `skupper-<endpoint>` (TLS
/// passthrough on 443): each Route's host, as OpenShift admitted it or as it was asked for.
/// `None` while a Route is missing or has no host yet.
pub fn routes_of(routes: &[kube::api::DynamicObject], cfg: &SiteConfig) -> Option<SiteConfig> {
    behind_proxy(cfg, |endpoint| {
        let r = routes
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(&format!("skupper-{endpoint}")))?;
        let admitted = r.data["status"]["ingress"][0]["host"].as_str();
        let asked = r.data["spec"]["host"].as_str();
        admitted
            .or(asked)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
    })
}

/// Where other sites reach this one, from the `skupper-router` Service as the `ingress`
/// option exposes it: a load balancer's address, or with `nodeport` the node ports (on
/// `ingress-host`); with `ingress`, the Ingress rules' hosts `<endpoint>.<ingress-host>` on
/// 443. `route` (see [`routes_of`]) and `none` keep the configured host and the standard
/// ports. `None` while a load balancer has no address yet.
pub fn ingress_of(ingress: &str, svc: &Service, cfg: &SiteConfig) -> Option<SiteConfig> {
    let mut out = cfg.clone();
    let spec = svc.spec.clone().unwrap_or_default();
    let port_of = |name: &str, node: bool| -> Option<u16> {
        spec.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| {
                let v = if node { p.node_port? } else { p.port };
                u16::try_from(v).ok()
            })
    };
    match ingress {
        "loadbalancer" => {
            let lb = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .and_then(|i| i.first())?;
            out.ingress_host = lb.ip.clone().or_else(|| lb.hostname.clone())?;
        }
        "nodeport" => {
            // The pods still listen on the standard ports; tokens carry the node ports.
            out.advertised_ports = Some(crate::site::Ports {
                inter_router: port_of("inter-router", true)?,
                edge: port_of("edge", true)?,
                claims: port_of("claims", true)?,
            });
        }
        "ingress" => {
            return behind_proxy(cfg, |endpoint| {
                Some(format!("{endpoint}.{}", cfg.ingress_host))
            });
        }
        _ => {}
    }
    Some(out)
}

/// `cfg` with the ingress the `skupper-router` Service gives, waiting (a while) for a load
/// balancer's address; on timeout the configured host is kept and a warning logged.
async fn resolve_ingress(
    client: &kube::Client,
    ns: &str,
    ingress: &str,
    cfg: SiteConfig,
) -> SiteConfig {
    if !matches!(ingress, "loadbalancer" | "nodeport" | "ingress" | "route") {
        return cfg;
    }
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let gvk = kube::api::GroupVersionKind::gvk("route.openshift.io", "v1", "Route");
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "routes"),
    );
    let deadline = tokio::time::Instant::now() + LB_WAIT;
    loop {
        if ingress == "route" {
            match routes.list(&ListParams::default()).await {
                Ok(list) => {
                    if let Some(c) = routes_of(&list.items, &cfg) {
                        return c;
                    }
                }
                Err(e) => warn!(error = %e, "Cannot read the router's Routes"),
            }
        } else {
            match api.get_opt(ROUTER_SERVICE).await {
                Ok(Some(svc)) => {
                    if let Some(c) = ingress_of(ingress, &svc, &cfg) {
                        return c;
                    }
                }
                Ok(None) => warn!(service = ROUTER_SERVICE, "Router Service not found"),
                Err(e) => warn!(error = %e, "Cannot read the router Service"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(
                ingress,
                "No ingress address yet; tokens carry the configured host"
            );
            return cfg;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The site's state in a Secret, applied with server-side apply and owned by the site.
#[derive(Debug, Clone)]
pub struct KubeStore {
    api: Api<Secret>,
    owner: OwnerReference,
}

impl KubeStore {
    pub fn new(client: kube::Client, namespace: &str, owner: OwnerReference) -> KubeStore {
        KubeStore {
            api: Api::namespaced(client, namespace),
            owner,
        }
    }
}

impl SiteStore for KubeStore {
    fn load(&self) -> StoreFuture<'_, SiteState> {
        Box::pin(async move {
            let Some(s) = self.api.get_opt(STATE_SECRET).await.map_err(store_error)? else {
                return Ok(SiteState::default());
            };
            let bytes = s
                .data
                .and_then(|d| d.get("state.yaml").cloned())
                .map(|b| b.0)
                .unwrap_or_default();
            // Never a fresh CA in place of a Secret that lost its contents.
            SiteState::parse(&bytes).map_err(|e| {
                store_error(format!(
                    "key state.yaml: {e}; the controller will not start \
                     from it (a new CA would cut the site off from its links): restore the \
                     Secret from a backup, or delete it to start the site anew"
                ))
            })
        })
    }

    fn save<'a>(&'a self, state: &'a SiteState) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let text = serde_yaml_ng::to_string(state).map_err(store_error)?;
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(STATE_SECRET.into()),
                    labels: Some(
                        [(super::MANAGED_BY.to_string(), super::MANAGER.to_string())].into(),
                    ),
                    owner_references: Some(vec![self.owner.clone()]),
                    ..Default::default()
                },
                data: Some([("state.yaml".to_string(), ByteString(text.into_bytes()))].into()),
                ..Default::default()
            };
            self.api
                .patch(
                    STATE_SECRET,
                    &PatchParams::apply(super::MANAGER).force(),
                    &Patch::Apply(&secret),
                )
                .await
                .map_err(store_error)?;
            Ok(())
        })
    }
}

fn store_error(e: impl std::fmt::Display) -> StoreError {
    StoreError {
        what: format!("secret/{STATE_SECRET}"),
        message: e.to_string(),
    }
}

/// Runs the controller of the site in `namespace` until `shutdown`: [`open_site`], the API
/// on port 8080 and the claims endpoint bound on all addresses, then [`serve_site`].
pub async fn run(
    client: kube::Client,
    namespace: String,
    api_token: crate::api::ApiToken,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let (c, owner) = open_site(&client, &namespace).await?;
    let bind = |port: u16| async move {
        tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .map_err(|source| RunError::Bind {
                what: "controller",
                addr: format!("0.0.0.0:{port}"),
                source,
            })
    };
    let api = bind(API_PORT).await?;
    let claims = match c.cfg.mode {
        RouterMode::Interior => Some(bind(c.cfg.claims_port).await?),
        RouterMode::Edge => None,
    };
    let sockets = crate::Sockets {
        api: crate::ApiBind::Tcp(api),
        claims,
        api_token: Some(api_token),
    };
    serve_site(client, namespace, c, owner, sockets, shutdown).await
}

/// The site of `namespace`: its options from the `skupper-site` ConfigMap (whose UID is the
/// site id and which owns everything the controller creates), the address other sites
/// reach it at, and its state from Secret `skupper-site-state`.
pub async fn open_site(
    client: &kube::Client,
    namespace: &str,
) -> Result<(Arc<Controller>, OwnerReference), RunError> {
    let unavailable = |e: kube::Error| {
        RunError::Controller(crate::ControllerError::Unavailable(format!(
            "reading configmap/{SITE_CONFIGMAP}: {e}"
        )))
    };
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(SITE_CONFIGMAP)
        .await
        .map_err(unavailable)?;
    let site = site_config(&cm, namespace).map_err(crate::ControllerError::from)?;
    let ingress = cm
        .data
        .as_ref()
        .and_then(|d| d.get("ingress").cloned())
        .unwrap_or_default();
    let site = resolve_ingress(client, namespace, &ingress, site).await;
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: SITE_CONFIGMAP.into(),
        uid: cm.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    };
    let store = Arc::new(KubeStore::new(client.clone(), namespace, owner.clone()));
    let c = Controller::open(site, store).await?;
    c.keep_router_tls_in_secret(ROUTER_TLS_SECRET);
    // Router pods link to each other (config-sync's --peers): give them the peer profile.
    c.enable_router_peers();
    Ok((c, owner))
}

/// Serves an opened site until `shutdown`: the API and claims endpoint on `sockets`, the
/// reconcilers, the status ConfigMap and the router's TLS Secret.
pub async fn serve_site(
    client: kube::Client,
    namespace: String,
    c: Arc<Controller>,
    owner: OwnerReference,
    sockets: crate::Sockets,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let tls = tokio::spawn(router_tls_forever(
        client.clone(),
        namespace.clone(),
        c.clone(),
        owner.clone(),
    ));
    let status = tokio::spawn(status_forever(
        client.clone(),
        namespace.clone(),
        c.clone(),
        owner.clone(),
    ));
    let reconciler = tokio::spawn(reconcile_forever(client, namespace, c.clone(), owner));
    let r = crate::serve(c, sockets, shutdown).await;
    reconciler.abort();
    status.abort();
    tls.abort();
    r
}

/// The Secret config-sync reads the router's TLS material from (certificates and keys do not
/// travel over the controller's API on Kubernetes).
pub const ROUTER_TLS_SECRET: &str = "skupper-router-tls";

/// Writes the router's TLS Secret (server-side apply, owned by the site).
pub async fn write_router_tls(
    client: kube::Client,
    ns: &str,
    owner: &OwnerReference,
    data: &std::collections::BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(ROUTER_TLS_SECRET.into()),
            namespace: Some(ns.into()),
            labels: Some([(super::MANAGED_BY.to_string(), super::MANAGER.to_string())].into()),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client, ns)
        .patch(
            ROUTER_TLS_SECRET,
            &PatchParams::apply(super::MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// Keeps the router's TLS Secret equal to the TLS profiles the router should have.
async fn router_tls_forever(
    client: kube::Client,
    ns: String,
    c: Arc<Controller>,
    owner: OwnerReference,
) {
    let mut desired = c.desired();
    let mut written = None;
    let mut backoff = Backoff::default();
    loop {
        let data = crate::desired::tls_secret_data(&desired.borrow_and_update());
        if written.as_ref() != Some(&data) {
            match write_router_tls(client.clone(), &ns, &owner, &data).await {
                Ok(()) => {
                    written = Some(data);
                    backoff.succeeded();
                }
                Err(e) => {
                    let delay = backoff.failed();
                    warn!(error = %e, retry_in = ?delay, "Cannot write the router's TLS Secret");
                }
            }
        }
        if backoff.delay().is_zero() {
            if desired.changed().await.is_err() {
                return;
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(backoff.delay()) => {}
                r = desired.changed() => if r.is_err() { return },
            }
        }
    }
}

/// How often the status is looked at (it is written only when due, see [`super::status`]).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Keeps ConfigMap `skupper-network-status` showing the site's status.
async fn status_forever(
    client: kube::Client,
    ns: String,
    c: Arc<Controller>,
    owner: OwnerReference,
) {
    use super::status::{Snapshot, Writer, now_rfc3339, write};
    let mut writer = Writer::default();
    let mut backoff = Backoff::default();
    loop {
        tokio::time::sleep(STATUS_EVERY.max(backoff.delay())).await;
        let snap = Snapshot::of(&c);
        let now = tokio::time::Instant::now();
        if !writer.due(&snap, now) {
            continue;
        }
        match write(client.clone(), &ns, &owner, &snap, &now_rfc3339()).await {
            Ok(()) => {
                writer.wrote(snap, now);
                backoff.succeeded();
            }
            Err(e) => {
                writer.forget();
                let delay = backoff.failed();
                warn!(error = %e, retry_in = ?delay, "Cannot write the status ConfigMap");
            }
        }
    }
}

/// Reconciles after every change to Services or Secrets, after every network change, and at
/// least every 30 s; after an error, again with exponential backoff (the error policy).
async fn reconcile_forever(
    client: kube::Client,
    ns: String,
    c: Arc<Controller>,
    owner: OwnerReference,
) {
    // Reflectors keep the namespace's Services and token Secrets in memory, so a pass reads
    // no list from the API server; watch errors (an API server restart, an expired resource
    // version) back off and resume, and a re-list replaces a store whole.
    let (service_store, writer) = reflector::store::<Service>();
    let services = reflector(
        writer,
        watcher(
            Api::<Service>::namespaced(client.clone(), &ns),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    let (secret_store, writer) = reflector::store::<Secret>();
    let secrets = reflector(
        writer,
        watcher(
            Api::<Secret>::namespaced(client.clone(), &ns),
            watcher::Config::default().labels(&super::token_selector()),
        ),
    )
    .default_backoff();
    let (definition_store, writer) = reflector::store::<ConfigMap>();
    let definitions = reflector(
        writer,
        watcher(
            Api::<ConfigMap>::namespaced(client.clone(), &ns),
            watcher::Config::default().fields(&format!("metadata.name={}", super::DEFINITIONS)),
        ),
    )
    .default_backoff();
    let mut events = futures_util::stream::select_all([
        services.map(|_| ()).boxed(),
        secrets.map(|_| ()).boxed(),
        definitions.map(|_| ()).boxed(),
    ]);
    // An empty store before the first list would withdraw every exposure: wait for both.
    {
        let ready = async {
            let _ = service_store.wait_until_ready().await;
            let _ = secret_store.wait_until_ready().await;
            let _ = definition_store.wait_until_ready().await;
        };
        tokio::pin!(ready);
        loop {
            tokio::select! {
                _ = &mut ready => break,
                _ = events.next() => {}
            }
        }
    }
    fn snapshot<K: kube::Resource + Clone>(store: &Store<K>) -> Vec<K>
    where
        K::DynamicType: std::hash::Hash + Eq + Clone,
    {
        store.state().iter().map(|o| (**o).clone()).collect()
    }
    let mut desired = c.desired();
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: super::MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let mut backoff = Backoff::default();
    let mut retries = super::SecretRetries::default();
    loop {
        let pass = async {
            let services = super::reconcile_services(
                client.clone(),
                &ns,
                &c,
                &owner,
                &snapshot(&service_store),
                // Absent: no services defined there (any defined before are withdrawn).
                Some(&snapshot(&definition_store).pop().unwrap_or_default()),
            )
            .await?;
            let secrets = super::reconcile_token_secrets(
                client.clone(),
                &ns,
                &c,
                &mut retries,
                &snapshot(&secret_store),
            )
            .await?;
            Ok::<_, super::ReconcileError>((services, secrets))
        };
        match pass.await {
            Ok((services, secrets)) => {
                backoff.succeeded();
                for (name, why) in &secrets.failed {
                    warn!(secret = %name, %why, "Token Secret not used");
                }
                if let Err(e) = super::report_events(&recorder, &ns, &services, &secrets).await {
                    warn!(error = %e, "Cannot record events");
                }
            }
            Err(e) => {
                let delay = backoff.failed();
                warn!(error = %van_telemetry::Report(&e), retry_in = ?delay, "Reconcile failed");
            }
        }
        let failing = !backoff.delay().is_zero();
        tokio::select! {
            _ = tokio::time::sleep(if failing { backoff.delay() } else { RESYNC }) => {}
            _ = events.next(), if !failing => {}
            _ = desired.changed(), if !failing => {}
        }
        // Coalesce a burst of events into one pass.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Some(Some(_)) = futures_util::FutureExt::now_or_never(events.next()) {}
        tracing::debug!("Reconciling");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_writes_back_off_from_one_second_to_the_max_and_success_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.delay(), Duration::ZERO);
        let waits: Vec<u64> = (0..8).map(|_| b.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.succeeded();
        assert_eq!(b.delay(), Duration::ZERO);
        assert_eq!(b.failed(), Duration::from_secs(1));
    }
}
