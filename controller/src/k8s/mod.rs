//! The Kubernetes platform's reconcilers, on top of the same site core as the local platform.
//!
//! - Exposure: a Service annotated `skupper.io/proxy` (optionally `skupper.io/address`,
//!   `skupper.io/port`, `skupper.io/target`) becomes a service of this site whose target is
//!   that Service (or the `target` one); removing the annotation or the Service withdraws it.
//!   The user's Service is never changed.
//! - Network services: for every service in the network that is not local, a Service of that
//!   name and ports selecting the router pods, created with server-side apply, owned by the
//!   site (owner reference) and labelled as ours. Drift is repaired; Services we did not create
//!   are never touched (a name clash is reported instead).
//!
//! Both run from one list of the namespace's Services, so one reconciliation is one GET plus
//! the writes it needs, in a fixed order (deletes, then applies, by name).

pub mod platform;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use tracing::{info, warn};

use crate::controller::Controller;
use crate::error::{ControllerError, Invalid};
use crate::site::{PROTOCOL_TCP, ServiceDef, Target, check_service, default_protocol};
use van_proto::controller as pb;

pub const PROXY: &str = "skupper.io/proxy";
pub const ADDRESS: &str = "skupper.io/address";
pub const PORT: &str = "skupper.io/port";
pub const TARGET: &str = "skupper.io/target";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "skupper-controller";
/// Labels of the router pods, which network Services select.
pub const ROUTER_SELECTOR: (&str, &str) = ("skupper.io/component", "router");

/// What one annotated Service asks this site to expose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// `service/<name>` of the annotated Service.
    pub source: String,
    pub address: String,
    /// tcp, http or http2.
    pub protocol: String,
    pub ports: Vec<u16>,
    /// Where it is delivered (none: defined here, served by other sites).
    pub targets: Vec<Target>,
}

/// Reads the exposure annotations of `svc`; `None` when it has none.
pub fn exposure(svc: &Service, namespace: &str) -> Option<Result<Exposure, Invalid>> {
    let ann = svc.metadata.annotations.as_ref()?;
    let proxy = ann.get(PROXY)?;
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut errs = Invalid::default();
    if !matches!(proxy.as_str(), "tcp" | "http" | "http2") {
        errs.push(
            &format!("service/{name} {PROXY}"),
            format!("{proxy:?} is not tcp, http or http2"),
        );
    }
    let address = ann.get(ADDRESS).cloned().unwrap_or_else(|| name.clone());
    // `skupper.io/port: "8080"` or `"8080:9080"` (service port : target port), comma-separated;
    // without it, the Service's own ports.
    let mut ports = Vec::new();
    let mut target_ports = Vec::new();
    match ann.get(PORT) {
        Some(spec) => {
            for part in spec.split(',').map(str::trim) {
                let (p, t) = part.split_once(':').unwrap_or((part, part));
                match (p.parse::<u16>(), t.parse::<u16>()) {
                    (Ok(p), Ok(t)) if p > 0 && t > 0 => {
                        ports.push(u32::from(p));
                        target_ports.push(t);
                    }
                    _ => errs.push(
                        &format!("service/{name} {PORT}"),
                        format!("{part:?} is not PORT or PORT:TARGET_PORT"),
                    ),
                }
            }
        }
        None => {
            for p in svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
            {
                if let Ok(p) = u16::try_from(p.port) {
                    ports.push(u32::from(p));
                    target_ports.push(p);
                }
            }
        }
    }
    let target_name = ann.get(TARGET).cloned().unwrap_or_else(|| name.clone());
    let protocol = if matches!(proxy.as_str(), "http" | "http2") {
        proxy.clone()
    } else {
        PROTOCOL_TCP.to_string()
    };
    let ports = match check_service(&address, &ports, &protocol) {
        Ok(p) => p,
        Err(e) => {
            for (f, m) in e.errors {
                errs.push(&format!("service/{name} {f}"), m);
            }
            Vec::new()
        }
    };
    if let Err(e) = errs.into_result() {
        return Some(Err(e));
    }
    Some(Ok(Exposure {
        source: format!("service/{name}"),
        address,
        protocol,
        ports,
        targets: vec![Target {
            // The Service's DNS name inside the cluster; the router resolves it.
            host: format!("{target_name}.{namespace}.svc"),
            ports: target_ports,
        }],
    }))
}

/// ConfigMap of the services defined at this site without an annotated Service (what
/// `skupper service create|bind` write on Kubernetes): one key per address, whose value is
/// JSON `{"protocol": "tcp", "ports": [8080], "targets": [{"service": "backend", "ports": [8080]}]}`
/// (`protocol` and a target's `ports` optional).
pub const DEFINITIONS: &str = "skupper-services";
const DEFINITIONS_SOURCE: &str = "configmap/skupper-services";

/// One service of [`DEFINITIONS`], as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    pub ports: Vec<u16>,
    #[serde(default)]
    pub targets: Vec<DefinitionTarget>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionTarget {
    /// A Service of this namespace.
    pub service: String,
    /// Target port per service port [default: the same ports].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// The services [`DEFINITIONS`] defines, and what is wrong with the entries that cannot be
/// used (each named; the others are used).
pub fn definitions(cm: &ConfigMap, namespace: &str) -> (Vec<Exposure>, Vec<String>) {
    let mut out = Vec::new();
    let mut invalid = Vec::new();
    for (address, text) in cm.data.iter().flatten() {
        let field = format!("configmap/{DEFINITIONS} {address}");
        let d: Definition = match serde_json::from_str(text) {
            Ok(d) => d,
            Err(e) => {
                invalid.push(format!("{field}: {e}"));
                continue;
            }
        };
        let mut errs = Invalid::default();
        if !matches!(d.protocol.as_str(), "" | "tcp" | "http" | "http2") {
            errs.push(
                &field,
                format!("protocol {:?} is not tcp, http or http2", d.protocol),
            );
        }
        let wide: Vec<u32> = d.ports.iter().map(|p| u32::from(*p)).collect();
        let ports = match check_service(address, &wide, PROTOCOL_TCP) {
            Ok(p) => p,
            Err(e) => {
                for (f, m) in e.errors {
                    errs.push(&format!("{field} {f}"), m);
                }
                Vec::new()
            }
        };
        let mut targets = Vec::new();
        for t in &d.targets {
            if let Some(m) = crate::site::dns_label_problem(&t.service, 63) {
                errs.push(&format!("{field} target {:?}", t.service), m);
                continue;
            }
            let target_ports = if t.ports.is_empty() {
                ports.clone()
            } else {
                t.ports.clone()
            };
            if target_ports.len() != ports.len() {
                errs.push(
                    &format!("{field} target {:?}", t.service),
                    format!(
                        "{} ports for {} service ports",
                        target_ports.len(),
                        ports.len()
                    ),
                );
                continue;
            }
            targets.push(Target {
                host: format!("{}.{namespace}.svc", t.service),
                ports: target_ports,
            });
        }
        match errs.into_result() {
            Ok(()) => out.push(Exposure {
                source: DEFINITIONS_SOURCE.into(),
                address: address.clone(),
                protocol: default_protocol(&d.protocol),
                ports,
                targets,
            }),
            Err(e) => invalid.push(e.to_string()),
        }
    }
    (out, invalid)
}

/// The Service this site keeps for a network service that is not local.
pub fn network_service(
    address: &str,
    ports: &[u16],
    namespace: &str,
    owner: &OwnerReference,
) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(address.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.to_string(), MANAGER.to_string()),
                ("skupper.io/address".to_string(), address.to_string()),
            ])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(
                ROUTER_SELECTOR.0.to_string(),
                ROUTER_SELECTOR.1.to_string(),
            )])),
            ports: Some(
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(format!("port{p}")),
                        port: i32::from(*p),
                        target_port: Some(IntOrString::Int(i32::from(*p))),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn managed(svc: &Service) -> bool {
    svc.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY))
        .is_some_and(|m| m == MANAGER)
}

/// Whether the parts of `have` we own equal `want` (what the API server adds is ignored).
fn same(have: &Service, want: &Service) -> bool {
    let ports = |s: &Service| -> Vec<(Option<String>, i32, Option<IntOrString>)> {
        s.spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .map(|p| (p.name.clone(), p.port, p.target_port.clone()))
            .collect()
    };
    let selector = |s: &Service| s.spec.as_ref().and_then(|s| s.selector.clone());
    let owners = |s: &Service| s.metadata.owner_references.clone().unwrap_or_default();
    ports(have) == ports(want) && selector(have) == selector(want) && owners(have) == owners(want)
}

/// What one reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<String>,
    pub deleted: Vec<String>,
    /// Network services whose name is taken by a Service we did not create.
    pub clashes: Vec<String>,
    /// Annotated Services whose annotations are wrong, with why.
    pub invalid: Vec<String>,
    /// Exposures taken into, or dropped from, the site's services.
    pub exposed_changed: bool,
}

/// One pass over the namespace's Services, listed first: see [`reconcile_services`].
pub async fn reconcile(
    client: kube::Client,
    namespace: &str,
    controller: &Controller,
    owner: &OwnerReference,
) -> Result<Outcome, ReconcileError> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default()).await?;
    reconcile_services(client, namespace, controller, owner, &list.items, None).await
}

/// One pass over the namespace's Services (`services`: all of them, from a list or a
/// reflector's store): exposures into the site core, then the network services out to
/// Kubernetes.
pub async fn reconcile_services(
    client: kube::Client,
    namespace: &str,
    controller: &Controller,
    owner: &OwnerReference,
    services: &[Service],
    definitions: Option<&ConfigMap>,
) -> Result<Outcome, ReconcileError> {
    let api: Api<Service> = Api::namespaced(client, namespace);
    let mut out = Outcome::default();

    // Exposures: every annotated Service, as a whole set (absent ones are withdrawn), and the
    // services of ConfigMap skupper-services when it is known (`None`: left as they are).
    let mut exposures = Vec::new();
    for svc in services {
        match exposure(svc, namespace) {
            Some(Ok(e)) => exposures.push(e),
            Some(Err(e)) => out.invalid.push(e.to_string()),
            None => {}
        }
    }
    if let Some(cm) = definitions {
        let (defined, invalid) = self::definitions(cm, namespace);
        exposures.extend(defined);
        out.invalid.extend(invalid);
    }
    out.exposed_changed = controller
        .sync_exposures(exposures, definitions.is_none())
        .await?;

    // A Service selecting the router pods for every network service that is not local, and
    // for every one defined in skupper-services (its name is the address clients call).
    let defined: Vec<pb::Service> = {
        let state = controller.state();
        controller
            .services()
            .into_iter()
            .filter(|s| {
                s.local
                    && state
                        .services
                        .get(&s.address)
                        .is_some_and(|d| d.source == DEFINITIONS_SOURCE)
            })
            .collect()
    };
    let want: BTreeMap<String, Service> = controller
        .services()
        .into_iter()
        .filter(|s| !s.local)
        .chain(defined)
        .map(|s| {
            let ports: Vec<u16> = s
                .ports
                .iter()
                .filter_map(|p| u16::try_from(*p).ok())
                .collect();
            let svc = network_service(&s.address, &ports, namespace, owner);
            (s.address, svc)
        })
        .collect();
    let have: BTreeMap<String, &Service> = services
        .iter()
        .filter_map(|s| s.metadata.name.clone().map(|n| (n, s)))
        .collect();
    let dp = DeleteParams::default();
    for (name, svc) in &have {
        if managed(svc) && !want.contains_key(name) {
            api.delete(name, &dp).await?;
            info!(service = %name, "Withdrawn network Service deleted");
            out.deleted.push(name.clone());
        }
    }
    let pp = PatchParams::apply(MANAGER).force();
    for (name, svc) in &want {
        match have.get(name) {
            Some(h) if !managed(h) => {
                warn!(service = %name, "A Service of this name exists and is not ours; not touching it");
                out.clashes.push(name.clone());
                continue;
            }
            Some(h) if same(h, svc) => continue,
            _ => {}
        }
        api.patch(name, &pp, &Patch::Apply(svc)).await?;
        info!(service = %name, "Network Service applied");
        out.applied.push(name.clone());
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API server refused or could not be reached; the next pass retries.
    #[error("Kubernetes API")]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Site(#[from] ControllerError),
}

impl Controller {
    /// Makes the site's annotation-defined services equal `exposures` (one change: all or
    /// nothing). Services defined through the API or CLI are left alone; an annotation that
    /// clashes with one of them is reported in the log and skipped. Returns whether anything
    /// changed.
    pub async fn sync_exposures(
        &self,
        exposures: Vec<Exposure>,
        keep_defined: bool,
    ) -> Result<bool, ControllerError> {
        let before = self.state();
        let now = self.now_unix();
        self.change(|s| {
            s.services
                .retain(|_, d| {
                    let ours = d.source.starts_with("service/")
                        || (d.source == DEFINITIONS_SOURCE && !keep_defined);
                    !ours
                        || exposures
                            .iter()
                            .any(|e| e.source == d.source && e.address == d.address)
                });
            for e in &exposures {
                if let Some(cur) = s.services.get(&e.address)
                    && cur.source != e.source
                {
                    warn!(address = %e.address, source = %e.source, "Address already defined otherwise; skipping");
                    continue;
                }
                let created = s
                    .services
                    .get(&e.address)
                    .map_or(now, |d| d.created);
                s.services.insert(
                    e.address.clone(),
                    ServiceDef {
                        address: e.address.clone(),
                        protocol: e.protocol.clone(),
                        ports: e.ports.clone(),
                        created,
                        targets: e.targets.clone(),
                        source: e.source.clone(),
                    },
                );
            }
            Ok(())
        })
        .await?;
        Ok(self.state().services != before.services)
    }
}

// --- tokens and links as Secrets ---

use k8s_openapi::api::core::v1::Secret;

/// `skupper.io/type` of a Secret the controller fills in with a cert token (the kubectl-only
/// way to issue a token).
pub const TOKEN_REQUEST: &str = "connection-token-request";
/// Annotation where the outcome of using a token Secret is reported.
pub const STATUS: &str = "internal.skupper.io/status";

/// What one pass over the token Secrets did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SecretsOutcome {
    /// Token requests filled in.
    pub filled: Vec<String>,
    /// Links created from Secrets.
    pub linked: Vec<String>,
    /// Links whose Secret is gone, deleted.
    pub unlinked: Vec<String>,
    /// Secrets that could not be used, with why (also written to their status annotation).
    pub failed: Vec<(String, String)>,
}

fn secret_type(s: &Secret) -> Option<&str> {
    s.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::token::TYPE_LABEL))
        .map(String::as_str)
}

/// The token file a Secret is (the token format is a Secret, so this is its YAML).
fn token_yaml(s: &Secret) -> String {
    let mut s = s.clone();
    // Server-side fields have no place in a token.
    s.metadata = ObjectMeta {
        name: s.metadata.name.clone(),
        labels: s.metadata.labels.clone(),
        annotations: s.metadata.annotations.clone(),
        ..Default::default()
    };
    serde_yaml_ng::to_string(&s).unwrap_or_default()
}

/// Annotations of a token request: `cert` (the default, as in Skupper's kubectl flow) or
/// `claim`; a claim's lifetime (seconds, or a number ending in s, m, h or d) and use count.
pub const TOKEN_TYPE: &str = "skupper.io/token-type";
pub const TOKEN_EXPIRY: &str = "skupper.io/token-expiry";
pub const TOKEN_USES: &str = "skupper.io/token-uses";
/// Annotation of a token Secret: the cost of the link it makes.
pub const COST: &str = "skupper.io/cost";
/// Optional annotation of a token Secret: the HTTP CONNECT proxy its link goes through.
pub const LINK_PROXY: &str = "skupper.io/proxy-url";

/// The first wait before a token Secret that could not be used is tried again; it doubles
/// up to [`RETRY_MAX`]. Changing the Secret makes it be tried at the next pass.
pub const RETRY_MIN: Duration = Duration::from_secs(30);
pub const RETRY_MAX: Duration = Duration::from_secs(600);

/// Token Secrets that failed, so that a refused claim is not presented again every pass.
#[derive(Debug, Default)]
pub struct SecretRetries {
    failed: HashMap<String, Retry>,
}

#[derive(Debug)]
struct Retry {
    /// resourceVersion of the Secret once its failure was written on it.
    version: String,
    next: tokio::time::Instant,
    delay: Duration,
}

impl SecretRetries {
    fn waiting(&self, name: &str, version: &str) -> bool {
        self.failed
            .get(name)
            .is_some_and(|r| r.version == version && tokio::time::Instant::now() < r.next)
    }

    fn failed(&mut self, name: &str, version: String) {
        let delay = match self.failed.get(name) {
            Some(r) => (r.delay * 2).min(RETRY_MAX),
            None => RETRY_MIN,
        };
        let next = tokio::time::Instant::now() + delay;
        self.failed.insert(
            name.to_string(),
            Retry {
                version,
                next,
                delay,
            },
        );
    }

    fn succeeded(&mut self, name: &str) {
        self.failed.remove(name);
    }
}

fn version(s: &Secret) -> String {
    s.metadata.resource_version.clone().unwrap_or_default()
}

fn annotation<'a>(s: &'a Secret, key: &str) -> Option<&'a str> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// `30`, `30s`, `15m`, `2h`, `7d` as seconds.
fn parse_seconds(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().last()? {
        (i, c @ ('s' | 'm' | 'h' | 'd')) => (&t[..i], c),
        _ => (t, 's'),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => 1,
    };
    n.checked_mul(mult).filter(|s| *s > 0)
}

/// The token a request Secret asks for, or every problem with its annotations.
fn token_request(
    s: &Secret,
    name: &str,
) -> Result<van_proto::controller::CreateTokenRequest, Invalid> {
    use van_proto::controller::TokenType;
    let mut errs = Invalid::default();
    let field = |k: &str| format!("secret/{name} {k}");
    let r#type = match annotation(s, TOKEN_TYPE).unwrap_or("cert") {
        "cert" => TokenType::Cert,
        "claim" => TokenType::Claim,
        other => {
            errs.push(
                &field(TOKEN_TYPE),
                format!("{other:?} is not cert or claim"),
            );
            TokenType::Cert
        }
    };
    let expiry_seconds = match annotation(s, TOKEN_EXPIRY) {
        None => 0,
        Some(t) => parse_seconds(t).unwrap_or_else(|| {
            errs.push(
                &field(TOKEN_EXPIRY),
                format!("{t:?} is not a duration such as 900, 15m, 2h or 1d"),
            );
            0
        }),
    };
    let uses = match annotation(s, TOKEN_USES) {
        None => 0,
        Some(t) => match t.trim().parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                errs.push(
                    &field(TOKEN_USES),
                    format!("{t:?} is not a positive number"),
                );
                0
            }
        },
    };
    errs.into_result()?;
    Ok(van_proto::controller::CreateTokenRequest {
        name: name.to_string(),
        r#type: r#type as i32,
        expiry_seconds,
        uses,
        cost: 0,
    })
}

/// One pass over the namespace's token Secrets: fills in token requests, makes a link of every
/// token Secret issued elsewhere, and deletes links whose Secret is gone. A Secret that could
/// not be used is tried again with backoff (`retries`), or at once when it changes.
pub async fn reconcile_secrets(
    client: kube::Client,
    namespace: &str,
    controller: &Controller,
    retries: &mut SecretRetries,
) -> Result<SecretsOutcome, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&token_selector()))
        .await?;
    reconcile_token_secrets(client, namespace, controller, retries, &list.items).await
}

/// The label selector of the Secrets the controller acts on.
pub fn token_selector() -> String {
    use crate::token::{TYPE_CERT, TYPE_CLAIM, TYPE_LABEL};
    format!("{TYPE_LABEL} in ({TOKEN_REQUEST},{TYPE_CERT},{TYPE_CLAIM})")
}

/// [`reconcile_secrets`] over `secrets` (those matching [`token_selector`], from a list or a
/// reflector's store).
pub async fn reconcile_token_secrets(
    client: kube::Client,
    namespace: &str,
    controller: &Controller,
    retries: &mut SecretRetries,
    secrets: &[Secret],
) -> Result<SecretsOutcome, ReconcileError> {
    use crate::token::{TYPE_CERT, TYPE_CLAIM};
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let mut out = SecretsOutcome::default();
    let pp = PatchParams::default();
    let mut secrets: Vec<&Secret> = secrets.iter().collect();
    secrets.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut wanted = Vec::new();
    for s in secrets {
        let Some(name) = s.metadata.name.clone() else {
            continue;
        };
        match secret_type(s) {
            Some(TOKEN_REQUEST) => {
                if retries.waiting(&name, &version(s)) {
                    continue;
                }
                let made = match token_request(s, &name) {
                    Ok(req) => controller.create_token(req).await.map(|(t, _)| t),
                    Err(e) => Err(e.into()),
                };
                // The user's Secret keeps its name; it becomes the token (data, labels,
                // annotations) so that `kubectl get secret -o yaml` is the token file.
                match made {
                    Ok(t) => {
                        let filled: Secret = serde_yaml_ng::from_str(&t.yaml)
                            .map_err(|e| ControllerError::Unavailable(e.to_string()))?;
                        let patch = serde_json::json!({
                            "metadata": {
                                "labels": filled.metadata.labels,
                                "annotations": filled.metadata.annotations,
                            },
                            "data": filled.data,
                        });
                        api.patch(&name, &pp, &Patch::Merge(&patch)).await?;
                        retries.succeeded(&name);
                        info!(secret = %name, "Token request filled in");
                        out.filled.push(name);
                    }
                    Err(e) => {
                        let why = e.to_string();
                        let v = report(&api, s, &name, &why).await?;
                        retries.failed(&name, v);
                        out.failed.push((name, why));
                    }
                }
            }
            Some(TYPE_CERT | TYPE_CLAIM) => wanted.push((name, s)),
            _ => {}
        }
    }
    // Links from Secrets: create the missing, delete those whose Secret is gone.
    let state = controller.state();
    let sources: Vec<String> = wanted.iter().map(|(n, _)| format!("secret/{n}")).collect();
    for l in state.links.values() {
        if l.source.starts_with("secret/") && !sources.contains(&l.source) {
            controller.delete_link(&l.name).await?;
            out.unlinked.push(l.name.clone());
        }
    }
    for (name, s) in wanted {
        let source = format!("secret/{name}");
        if state.links.values().any(|l| l.source == source) {
            continue;
        }
        let yaml = token_yaml(s);
        // A token this site issued (a filled request, or one applied here by mistake) is
        // not a link to make.
        if let Ok(t) = crate::token::parse(&yaml)
            && t.generated_by() == controller.cfg.id
        {
            continue;
        }
        if retries.waiting(&name, &version(s)) {
            continue;
        }
        let cost = match annotation(s, COST).map(|c| c.trim().parse::<u32>()) {
            None => Ok(0),
            Some(Ok(c)) if c > 0 => Ok(c),
            Some(_) => {
                let mut e = Invalid::default();
                e.push(
                    &format!("secret/{name} {COST}"),
                    "not a positive number".to_string(),
                );
                Err(ControllerError::from(e))
            }
        };
        let made = match cost {
            Ok(cost) => {
                let req = van_proto::controller::CreateLinkRequest {
                    token_yaml: yaml,
                    name: name.clone(),
                    cost,
                    proxy: annotation(s, LINK_PROXY).unwrap_or_default().to_string(),
                };
                controller.create_link_from(req, source).await
            }
            Err(e) => Err(e),
        };
        match made {
            Ok(_) => {
                report(&api, s, &name, "linked").await?;
                retries.succeeded(&name);
                out.linked.push(name);
            }
            Err(e) => {
                let why = e.to_string();
                let v = report(&api, s, &name, &why).await?;
                retries.failed(&name, v);
                out.failed.push((name, why));
            }
        }
    }
    Ok(out)
}

/// Writes `status` on the Secret unless it already says so; returns its resourceVersion after.
async fn report(
    api: &Api<Secret>,
    s: &Secret,
    name: &str,
    status: &str,
) -> Result<String, kube::Error> {
    if annotation(s, STATUS) == Some(status) {
        return Ok(version(s));
    }
    let patch = serde_json::json!({"metadata": {"annotations": {STATUS: status}}});
    let after = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(version(&after))
}

// --- events ---

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

fn object(kind: &str, namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some(kind.into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Tells users, on the objects concerned, what a reconciliation could not do (as Kubernetes
/// Events; the recorder folds repeats into a series).
pub async fn report_events(
    recorder: &Recorder,
    namespace: &str,
    services: &Outcome,
    secrets: &SecretsOutcome,
) -> Result<(), kube::Error> {
    let warn = |reason: &str, note: String| Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    for name in &services.clashes {
        let ev = warn(
            "ServiceNameTaken",
            format!(
                "the network service {name:?} needs this name; this Service is not managed by Skupper, so it was left alone"
            ),
        );
        recorder
            .publish(&ev, &object("Service", namespace, name))
            .await?;
    }
    for why in &services.invalid {
        if why.starts_with(&format!("configmap/{DEFINITIONS} ")) {
            recorder
                .publish(
                    &warn("InvalidDefinition", why.clone()),
                    &object("ConfigMap", namespace, DEFINITIONS),
                )
                .await?;
            continue;
        }
        // `service/<name> <annotation>: problem`
        let name = why
            .strip_prefix("service/")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_default();
        if !name.is_empty() {
            recorder
                .publish(
                    &warn("InvalidAnnotation", why.clone()),
                    &object("Service", namespace, name),
                )
                .await?;
        }
    }
    for (name, why) in &secrets.failed {
        recorder
            .publish(
                &warn("TokenNotUsed", why.clone()),
                &object("Secret", namespace, name),
            )
            .await?;
    }
    for name in &secrets.linked {
        let ev = Event {
            type_: EventType::Normal,
            reason: "Linked".into(),
            note: Some("a link was made from this token".into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        recorder
            .publish(&ev, &object("Secret", namespace, name))
            .await?;
    }
    Ok(())
}
