//! The kubernetes platform: a site is the objects of the Helm chart `charts/skupper` in one
//! namespace, and the CLI talks to the Kubernetes API only (never to the controller's gRPC
//! API): it applies the chart's manifests, creates Secrets the controller acts on, annotates
//! Services, and reads the status the controller writes into a ConfigMap.
//!
//! Every verb is a function taking a `kube::Client` and a namespace, so tests drive them
//! against scripted API exchanges.

pub mod debug;
pub mod expose;
pub mod link;
pub mod manifests;
pub mod service;
pub mod site;
pub mod token;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::args::{self, Command, Platform};
use crate::usage;

/// Field manager of everything the CLI applies.
pub const FIELD_MANAGER: &str = "skupper-cli";
/// `app.kubernetes.io/managed-by` of the objects the CLI creates.
pub const MANAGED_BY_VALUE: &str = "skupper-cli";
/// The site's options; its presence means Skupper is enabled in the namespace.
pub const SITE_CONFIGMAP: &str = "skupper-site";
/// What the controller reports: keys `site`, `links`, `services`, `network`, `updated`.
pub const STATUS_CONFIGMAP: &str = "skupper-network-status";
/// Label of a Secret that asks the controller for a token.
pub const TOKEN_REQUEST: &str = "connection-token-request";
/// Outcome the controller writes on token and link Secrets ("linked" when all is well).
pub const STATUS_ANNOTATION: &str = "internal.skupper.io/status";

/// How often the CLI polls while waiting (tests pass zero).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The platform to use: the flag (or SKUPPER_PLATFORM) when given; else kubernetes when the
/// user named a kubeconfig or context, or a kubeconfig with a current context exists; else
/// local.
pub fn choose_platform(
    flag: Option<Platform>,
    kubeconfig_flag: bool,
    context_flag: bool,
    kubeconfig_found: bool,
) -> Platform {
    match flag {
        Some(p) => p,
        None if kubeconfig_flag || context_flag || kubeconfig_found => Platform::Kubernetes,
        None => Platform::Local,
    }
}

/// Whether a kubeconfig with a current context exists: the files of `KUBECONFIG` (a
/// colon-separated list; the first current-context wins, as kubectl merges them), else
/// `~/.kube/config`.
pub fn kubeconfig_with_context(kubeconfig_env: Option<&OsStr>, home: Option<&Path>) -> bool {
    let files: Vec<PathBuf> = match kubeconfig_env.filter(|v| !v.is_empty()) {
        Some(v) => std::env::split_paths(v).collect(),
        None => home
            .map(|h| vec![h.join(".kube").join("config")])
            .unwrap_or_default(),
    };
    files.iter().any(|f| {
        // Kubeconfigs with many clusters reach a few MiB.
        van_controller::local::read_text(f, 64 << 20)
            .ok()
            .and_then(|t| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&t).ok())
            .and_then(|v| {
                v.get("current-context")
                    .and_then(|c| c.as_str())
                    .map(|c| !c.is_empty())
            })
            .unwrap_or(false)
    })
}

/// A client for the cluster of a kubeconfig context.
pub struct Connection {
    pub client: kube::Client,
    /// The context's namespace, else "default".
    pub default_namespace: String,
    /// The API server's URL, for error messages.
    pub server: String,
}

/// Loads the kubeconfig (`--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`) and
/// builds a client for `--context` (else the current context).
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<Connection> {
    let kc = match kubeconfig {
        Some(p) => Kubeconfig::read_from(p)
            .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", p.display()))?,
        None => Kubeconfig::read().map_err(|e| {
            anyhow::anyhow!("cannot read a kubeconfig ($KUBECONFIG or ~/.kube/config): {e}")
        })?,
    };
    let opts = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| match context {
            Some(c) => anyhow::anyhow!("kubeconfig context {c:?}: {e}"),
            None => anyhow::anyhow!("kubeconfig: {e}"),
        })?;
    let server = config.cluster_url.to_string();
    let default_namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config)
        .map_err(|e| anyhow::anyhow!("cannot make a client for {server}: {e}"))?;
    Ok(Connection {
        client,
        default_namespace,
        server,
    })
}

/// The API server could not be reached; the dispatcher adds the server's URL.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot reach the Kubernetes API server: {}", self.0)
    }
}

impl std::error::Error for Unreachable {}

/// Maps a failed call to a message naming what was refused. `what` is the operation, e.g.
/// `create secrets "west-token"`.
pub fn api_error(namespace: &str, what: &str, e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "cannot {what} in namespace {namespace:?}: forbidden by the cluster's RBAC \
             (ask for a Role that allows it): {}",
            s.message
        ),
        kube::Error::Api(s)
            if s.code == 404 && s.details.as_ref().is_some_and(|d| d.kind == "namespaces") =>
        {
            anyhow::anyhow!(
                "namespace {namespace:?} does not exist (kubectl create namespace {namespace})"
            )
        }
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.reason)
            };
            anyhow::anyhow!("cannot {what}: {}{reason}", s.message)
        }
        kube::Error::SerdeError(e) => {
            anyhow::anyhow!("cannot {what}: unexpected answer from the API server: {e}")
        }
        other => Unreachable(format!(
            "{what}: {}",
            van_telemetry::report::innermost(&other)
        ))
        .into(),
    }
}

/// Whether `e` is a 404 of the object itself (not of its namespace).
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404
        && s.details.as_ref().is_none_or(|d| d.kind != "namespaces"))
}

/// The resource of a kind the chart renders (plural names, since no discovery is done).
pub fn api_resource(api_version: &str, kind: &str) -> anyhow::Result<ApiResource> {
    let plural = match kind {
        "ServiceAccount" => "serviceaccounts",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "ConfigMap" => "configmaps",
        "Secret" => "secrets",
        "Service" => "services",
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "Route" => "routes",
        "Ingress" => "ingresses",
        "NetworkPolicy" => "networkpolicies",
        _ => anyhow::bail!(
            "the manifests hold a {kind} ({api_version}), a kind this CLI does not know; \
             add its plural name to skupper's kind table"
        ),
    };
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
    };
    Ok(ApiResource {
        group,
        version,
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        plural: plural.to_string(),
    })
}

/// Runs one command against the cluster in `namespace`; `poll` is the interval of every wait.
pub async fn run(
    client: &kube::Client,
    namespace: &str,
    command: Command,
    poll: Duration,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<()> {
    use args::{DebugCommand, LinkCommand, NetworkCommand, ServiceCommand, TokenCommand};
    match command {
        Command::Init(a) => {
            let plan = site::plan(namespace, &a)?;
            site::init(client, namespace, &plan, poll, out).await
        }
        Command::Status(a) => site::status(client, namespace, a.output, out).await,
        Command::Delete => site::delete(client, namespace, out).await,
        Command::Version(a) => site::version(client, namespace, a.output, out).await,
        Command::Token(TokenCommand::Create(a)) => {
            token::create(client, namespace, &a, poll, out).await
        }
        Command::Link(LinkCommand::Create(a)) => link::create(client, namespace, &a, out).await,
        Command::Link(LinkCommand::Status(a)) => {
            link::status(client, namespace, &a, poll, out).await
        }
        Command::Link(LinkCommand::Delete(a)) => {
            link::delete(client, namespace, &a.name, out).await
        }
        Command::Expose(a) => expose::expose(client, namespace, &a, out).await,
        Command::Unexpose(a) => expose::unexpose(client, namespace, &a, out).await,
        Command::Service(ServiceCommand::Status(a)) => {
            site::service_status(client, namespace, a.output, out).await
        }
        Command::Service(ServiceCommand::Create(a)) => {
            service::create(client, namespace, &a, out).await
        }
        Command::Service(ServiceCommand::Delete(a)) => {
            service::delete(client, namespace, &a, out).await
        }
        Command::Service(ServiceCommand::Bind(a)) => {
            service::bind(client, namespace, &a, out).await
        }
        Command::Service(ServiceCommand::Unbind(a)) => {
            service::unbind(client, namespace, &a, out).await
        }
        Command::Network(NetworkCommand::Status(a)) => {
            site::network_status(client, namespace, a.output, out).await
        }
        Command::Debug(DebugCommand::Dump(a)) => debug::dump(client, namespace, &a.file, out).await,
        // The probe must dial from where the router runs, inside the cluster.
        Command::Debug(DebugCommand::Link(_)) => Err(usage(
            "debug link runs on the local platform only; on Kubernetes, the link's state and \
             last error are in `skupper link status` and the router's log",
        )),
        Command::Console(_) => site::console(client, namespace, out).await,
        Command::Demo(_) | Command::System(_) => {
            Err(usage("this command runs on the local platform only"))
        }
    }
}

/// The `skupper-site` ConfigMap, or "not enabled".
pub async fn site_configmap(client: &kube::Client, namespace: &str) -> anyhow::Result<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get(SITE_CONFIGMAP).await {
        Ok(cm) => Ok(cm),
        Err(e) if is_not_found(&e) => Err(not_enabled(namespace)),
        Err(e) => Err(api_error(
            namespace,
            &format!("get configmaps {SITE_CONFIGMAP:?}"),
            e,
        )),
    }
}

pub fn not_enabled(namespace: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "Skupper is not enabled in namespace {namespace:?} (no ConfigMap {SITE_CONFIGMAP}; \
         run skupper init)"
    )
}

/// Sleeps between polls; zero in tests.
pub async fn pause(interval: Duration) {
    if interval.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_choice() {
        use Platform::{Kubernetes, Local};
        // The flag (or SKUPPER_PLATFORM) always wins.
        assert_eq!(choose_platform(Some(Local), true, true, true), Local);
        assert_eq!(
            choose_platform(Some(Kubernetes), false, false, false),
            Kubernetes
        );
        // Else any sign of a cluster.
        assert_eq!(choose_platform(None, true, false, false), Kubernetes);
        assert_eq!(choose_platform(None, false, true, false), Kubernetes);
        assert_eq!(choose_platform(None, false, false, true), Kubernetes);
        assert_eq!(choose_platform(None, false, false, false), Local);
    }

    #[test]
    fn kubeconfig_discovery() {
        let tmp = van_testkit::temp_dir("skupper-kc");
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join(".kube")).unwrap();
        let with = dir.join("with");
        let without = dir.join("without");
        std::fs::write(
            &with,
            "apiVersion: v1\nkind: Config\ncurrent-context: west\n",
        )
        .unwrap();
        std::fs::write(
            &without,
            "apiVersion: v1\nkind: Config\ncurrent-context: \"\"\n",
        )
        .unwrap();
        let missing = dir.join("missing");
        assert!(kubeconfig_with_context(Some(with.as_os_str()), None));
        assert!(!kubeconfig_with_context(Some(without.as_os_str()), None));
        assert!(!kubeconfig_with_context(
            Some(missing.as_os_str()),
            Some(dir)
        ));
        let list = std::env::join_paths([&missing, &with]).unwrap();
        assert!(kubeconfig_with_context(Some(&list), None));
        // No KUBECONFIG: ~/.kube/config.
        assert!(!kubeconfig_with_context(None, Some(dir)));
        std::fs::copy(&with, dir.join(".kube/config")).unwrap();
        assert!(kubeconfig_with_context(None, Some(dir)));
        assert!(kubeconfig_with_context(Some(OsStr::new("")), Some(dir)));
        assert!(!kubeconfig_with_context(None, None));
    }

    #[test]
    fn kinds_map_to_resources() {
        let r = api_resource("apps/v1", "Deployment").unwrap();
        assert_eq!(
            (r.group.as_str(), r.version.as_str(), r.plural.as_str()),
            ("apps", "v1", "deployments")
        );
        let r = api_resource("v1", "Secret").unwrap();
        assert_eq!((r.group.as_str(), r.plural.as_str()), ("", "secrets"));
        let e = api_resource("example.com/v1", "Widget").unwrap_err();
        assert!(e.to_string().contains("Widget"), "{e}");
    }
}
