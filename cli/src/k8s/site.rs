//! `init`, `delete`, `status`, `version`, `service status`, `network status` on kubernetes.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use serde_json::Value;
use van_proto::controller as pb;

use super::manifests::{self, RandomKind, Values};
use super::{FIELD_MANAGER, STATUS_CONFIGMAP, api_error, api_resource, is_not_found, pause};
use crate::args::InitArgs;
use crate::output::{self, Format};
use crate::usage;

/// Skupper's default wait for a site on Kubernetes (`--timeout 120s`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The Deployments that make a site; `init` waits for both.
pub const DEPLOYMENTS: [&str; 2] = ["skupper-router", "skupper-service-controller"];

/// A checked `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ingress: String,
    pub values: Values,
    /// None: do not wait.
    pub wait: Option<Duration>,
}

/// Checks every `init` flag for kubernetes and reports all problems at once.
pub fn plan(namespace: &str, a: &InitArgs) -> anyhow::Result<Plan> {
    let mut problems = Vec::new();
    for (flag, given) in [
        ("ingress-bind", a.ingress_bind.is_some()),
        ("listener-host", a.listener_host.is_some()),
        ("inter-router-port", a.inter_router_port.is_some()),
        ("edge-port", a.edge_port.is_some()),
        ("claims-port", a.claims_port.is_some()),
    ] {
        if given {
            problems.push(format!(
                "--{flag} is for the local platform; on kubernetes the chart's Services and ports are used"
            ));
        }
    }
    if a.enable_console || a.console_auth.is_some() || a.console_port.is_some() {
        problems.push(
            "--enable-console: on kubernetes the console comes with the Helm chart \
             (helm install ... --set console.enabled=true); `skupper init` does not add it yet"
                .into(),
        );
    }
    let site_name = a.site_name.clone().unwrap_or_else(|| namespace.to_string());
    if let Some(p) = van_controller::site::dns_label_problem(&site_name, 63) {
        problems.push(format!("--site-name: {p}"));
    }
    let ingress = a.ingress.clone().unwrap_or_else(|| "loadbalancer".into());
    if !manifests::INGRESSES.contains(&ingress.as_str()) {
        problems.push(format!(
            "--ingress: {ingress:?} is not one of {}",
            manifests::INGRESSES.join(", ")
        ));
    }
    let ingress_host = a.ingress_host.clone().unwrap_or_default();
    if !ingress_host.is_empty() && !is_dns_name(&ingress_host) {
        problems.push(format!(
            "--ingress-host: {ingress_host:?} is not a lower-case DNS name (e.g. sites.example.com)"
        ));
    }
    if ingress == "ingress" && ingress_host.is_empty() {
        problems.push(
            "--ingress ingress needs --ingress-host (hosts are <port-name>.<ingress-host>)".into(),
        );
    }
    let router_mode = a.router_mode.clone().unwrap_or_else(|| "interior".into());
    if !matches!(router_mode.as_str(), "interior" | "edge") {
        problems.push(format!(
            "--router-mode: {router_mode:?} is not a router mode (interior or edge)"
        ));
    }
    let image_registry = a
        .image_registry
        .clone()
        .unwrap_or_else(|| "localhost".into());
    if image_registry.chars().any(char::is_whitespace) {
        problems.push(format!(
            "--image-registry: {image_registry:?} holds white space"
        ));
    }
    let image_tag = a
        .image_tag
        .clone()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
    if !is_image_tag(&image_tag) {
        problems.push(format!(
            "--image-tag: {image_tag:?} is not an image tag (letters, digits, _ . -; at most 128)"
        ));
    }
    let timeout = match a.timeout.as_deref() {
        None => DEFAULT_TIMEOUT,
        Some(t) => crate::duration::parse_duration(t).unwrap_or_else(|e| {
            problems.push(format!("--timeout: {e}"));
            DEFAULT_TIMEOUT
        }),
    };
    if !problems.is_empty() {
        return Err(usage(format!("skupper init: {}", problems.join("; "))));
    }
    Ok(Plan {
        ingress,
        values: Values {
            namespace: namespace.to_string(),
            site_name,
            ingress_host,
            router_mode,
            image_registry,
            image_tag,
        },
        wait: (!a.no_wait).then_some(timeout),
    })
}

/// The chart's `ingressHost` pattern: lower-case DNS labels joined by dots.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The chart's `image.tag` pattern.
fn is_image_tag(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= 128
        && b.next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn dynamic_api(client: &kube::Client, ns: &str, obj: &Value) -> anyhow::Result<Api<DynamicObject>> {
    let ar = api_resource(
        obj["apiVersion"].as_str().unwrap_or_default(),
        obj["kind"].as_str().unwrap_or_default(),
    )?;
    Ok(Api::namespaced_with(client.clone(), ns, &ar))
}

fn plural_of(obj: &Value) -> String {
    api_resource(
        obj["apiVersion"].as_str().unwrap_or_default(),
        obj["kind"].as_str().unwrap_or_default(),
    )
    .map(|r| r.plural)
    .unwrap_or_default()
}

/// `skupper init`: applies every object of the chart, then waits for the Deployments unless
/// told not to.
pub async fn init(
    client: &kube::Client,
    namespace: &str,
    plan: &Plan,
    poll: Duration,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let templates = manifests::templates(&plan.ingress)?;
    apply(client, namespace, &templates, &plan.values).await?;
    if let Some(timeout) = plan.wait {
        wait_available(client, namespace, timeout, poll).await?;
    }
    writeln!(
        out,
        "Skupper is now installed in namespace {namespace:?}.  Use 'skupper status' to get more information."
    )?;
    Ok(())
}

/// Applies `templates` filled with `values` (server-side apply, field manager skupper-cli,
/// forced: the CLI owns these fields), in order. A Secret with random values that exists
/// already keeps its values: they are in use (tokens, passwords).
pub async fn apply(
    client: &kube::Client,
    namespace: &str,
    templates: &[Value],
    values: &Values,
) -> anyhow::Result<()> {
    let random_keys = manifests::random_keys(templates);
    let objects = manifests::render_templates(templates, values, &mut manifests::system_random)?;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    for mut obj in objects {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let api = dynamic_api(client, namespace, &obj)?;
        let plural = plural_of(&obj);
        let what = |verb: &str| format!("{verb} {plural} {name:?}");
        if let Some(keys) = random_keys.get(&name).filter(|_| obj["kind"] == "Secret") {
            // Generated once: an existing value (tokens, passwords in use) is kept.
            match api.get(&name).await {
                Ok(existing) => {
                    let data = existing.data.get("data").cloned().unwrap_or(Value::Null);
                    for k in keys {
                        if let Some(v) = data.get(k) {
                            obj["data"][k] = v.clone();
                        }
                    }
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_error(namespace, &what("get"), e)),
            }
        }
        api.patch(&name, &pp, &Patch::Apply(&obj))
            .await
            .map_err(|e| api_error(namespace, &what("apply"), e))?;
    }
    Ok(())
}

/// Polls the site's Deployments until each reports an available replica.
pub async fn wait_available(
    client: &kube::Client,
    namespace: &str,
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let mut waiting = Vec::new();
        for name in DEPLOYMENTS {
            match api.get(name).await {
                Ok(d) => {
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let have = d
                        .status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0);
                    if have < 1 {
                        waiting.push(format!(
                            "Deployment {name} ({have}/{want} replicas available)"
                        ));
                    }
                }
                Err(e) if is_not_found(&e) => waiting.push(format!("Deployment {name} (missing)")),
                Err(e) => {
                    return Err(api_error(
                        namespace,
                        &format!("get deployments {name:?}"),
                        e,
                    ));
                }
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the site in namespace {namespace:?} did not become ready within {}: {} not ready; \
                 see kubectl -n {namespace} get pods (images must be pullable by the cluster)",
                crate::duration::format_duration(timeout),
                waiting.join(", ")
            );
        }
        pause(poll).await;
    }
}

/// Every object of every `ingress` choice, once, in reverse apply order: what `delete`
/// deletes.
pub fn objects_to_delete() -> anyhow::Result<Vec<Value>> {
    let values = Values {
        namespace: "x".into(),
        site_name: "x".into(),
        ingress_host: "x".into(),
        router_mode: "interior".into(),
        image_registry: String::new(),
        image_tag: "x".into(),
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for ingress in manifests::INGRESSES {
        let mut none = |_: RandomKind, _: usize| Ok(String::new());
        for o in manifests::render(ingress, &values, &mut none)? {
            if seen.insert(manifests::describe(&o)) {
                out.push(o);
            }
        }
    }
    out.reverse();
    Ok(out)
}

/// `skupper delete`: deletes every object of the chart (any `ingress` choice) by kind and
/// name; the controller's objects go with the `skupper-site` ConfigMap, their owner.
pub async fn delete(
    client: &kube::Client,
    namespace: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    super::site_configmap(client, namespace).await?;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for obj in objects_to_delete()? {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let api = dynamic_api(client, namespace, &obj)?;
        match api.delete(name, &dp).await {
            Ok(_) => {}
            // Gone already, or a kind the cluster does not serve (Routes outside OpenShift).
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(api_error(
                    namespace,
                    &format!("delete {} {name:?}", plural_of(&obj)),
                    e,
                ));
            }
        }
    }
    writeln!(out, "Skupper is now removed from namespace {namespace:?}.")?;
    Ok(())
}

/// What the controller reported in `skupper-network-status`.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    pub site: pb::SiteStatus,
    pub links: pb::LinkList,
    pub services: pb::ServiceList,
    pub network: pb::Network,
    /// RFC 3339 time of the report.
    pub updated: String,
    /// The site's options (ConfigMap `skupper-site`), read first to tell "no site" apart.
    pub site_config: ConfigMap,
}

/// Reads the status ConfigMap; errors say whether the site or only its report is missing.
pub async fn reported(client: &kube::Client, namespace: &str) -> anyhow::Result<Reported> {
    let site_config = super::site_configmap(client, namespace).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = match api.get(STATUS_CONFIGMAP).await {
        Ok(cm) => cm,
        Err(e) if is_not_found(&e) => anyhow::bail!(
            "Skupper is enabled in namespace {namespace:?} but its controller has not reported \
             yet (no ConfigMap {STATUS_CONFIGMAP}); check kubectl -n {namespace} get pods"
        ),
        Err(e) => {
            return Err(api_error(
                namespace,
                &format!("get configmaps {STATUS_CONFIGMAP:?}"),
                e,
            ));
        }
    };
    let data = cm.data.unwrap_or_default();
    fn field<T: serde::de::DeserializeOwned + Default>(
        data: &std::collections::BTreeMap<String, String>,
        key: &str,
    ) -> anyhow::Result<T> {
        match data.get(key) {
            None => Ok(T::default()),
            Some(s) => serde_json::from_str(s).map_err(|e| {
                anyhow::anyhow!(
                    "ConfigMap {STATUS_CONFIGMAP} key {key:?} is not what this CLI reads: {e}"
                )
            }),
        }
    }
    Ok(Reported {
        site: field(&data, "site")?,
        links: field(&data, "links")?,
        services: field(&data, "services")?,
        network: field(&data, "network")?,
        updated: data.get("updated").cloned().unwrap_or_default(),
        site_config,
    })
}

/// `skupper status`.
pub async fn status(
    client: &kube::Client,
    namespace: &str,
    format: Format,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let r = reported(client, namespace).await?;
    if output::structured(format, &r.site, out)? {
        return Ok(());
    }
    writeln!(out, "{}", crate::site::status_sentence(namespace, &r.site))?;
    if !r.site.router_ready {
        writeln!(
            out,
            "Its router is not ready yet (config-sync has not reported); see kubectl -n {namespace} get pods"
        )?;
    }
    if !r.updated.is_empty() {
        writeln!(out, "(reported by the controller at {})", r.updated)?;
    }
    console_lines(namespace, &r.site_config, out)?;
    Ok(())
}

/// Skupper's lines about the console, when the chart runs one (`console.enabled`).
fn console_lines(
    namespace: &str,
    cm: &ConfigMap,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<bool> {
    let data = cm.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(String::as_str);
    if get("console") != Some("true") {
        return Ok(false);
    }
    writeln!(
        out,
        "The site console url is: https://skupper.{namespace}.svc:8010/ \
         (from outside the cluster: kubectl -n {namespace} port-forward service/skupper 8010, \
         then https://127.0.0.1:8010/)"
    )?;
    if get("console-authentication") != Some("unsecured") {
        writeln!(
            out,
            "The credentials for internal console-auth mode are held in secret: 'skupper-console-users'"
        )?;
    }
    Ok(true)
}

/// `skupper console` on kubernetes.
pub async fn console(
    client: &kube::Client,
    namespace: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let cm = super::site_configmap(client, namespace).await?;
    if !console_lines(namespace, &cm, out)? {
        anyhow::bail!(
            "the site in namespace {namespace:?} has no console; install the chart with \
             console.enabled=true"
        );
    }
    Ok(())
}

/// `skupper version`: the client's, and the controller's as it reported it.
pub async fn version(
    client: &kube::Client,
    namespace: &str,
    format: Format,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let controller = match reported(client, namespace).await {
        Ok(r) => Some(r.site.version),
        Err(e) => Some(format!("(unknown: {e})")),
    };
    crate::site::print_versions(controller, format, out)
}

/// `skupper service status`.
pub async fn service_status(
    client: &kube::Client,
    namespace: &str,
    format: Format,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let r = reported(client, namespace).await?;
    print(format, &r.services, crate::service::status_text, out)
}

/// `skupper network status`.
pub async fn network_status(
    client: &kube::Client,
    namespace: &str,
    format: Format,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let r = reported(client, namespace).await?;
    print(format, &r.network, crate::network::text, out)
}

/// One reported view: as JSON/YAML when asked, else as the local platform's text.
fn print<T: serde::Serialize>(
    format: Format,
    view: &T,
    text: fn(&T) -> String,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if !output::structured(format, view, out)? {
        write!(out, "{}", text(view))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_reports_every_problem() {
        let a = InitArgs {
            site_name: Some("Bad_Name".into()),
            ingress: Some("frob".into()),
            ingress_host: Some("Not A Host".into()),
            router_mode: Some("core".into()),
            image_tag: Some("-x".into()),
            timeout: Some("soon".into()),
            listener_host: Some("127.0.0.1".into()),
            ..Default::default()
        };
        let e = plan("west", &a).unwrap_err();
        assert!(e.downcast_ref::<crate::UsageError>().is_some());
        let m = e.to_string();
        for want in [
            "--site-name",
            "--ingress: \"frob\"",
            "--ingress-host",
            "--router-mode",
            "--image-tag",
            "--timeout",
            "--listener-host is for the local platform",
        ] {
            assert!(m.contains(want), "{want} missing from {m}");
        }
        let e = plan(
            "west",
            &InitArgs {
                ingress: Some("ingress".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs --ingress-host"), "{e}");
    }

    #[test]
    fn plan_defaults() {
        let p = plan("west", &InitArgs::default()).unwrap();
        assert_eq!(p.ingress, "loadbalancer");
        assert_eq!(p.values.site_name, "west");
        assert_eq!(p.values.router_mode, "interior");
        assert_eq!(p.values.image_registry, "localhost");
        assert_eq!(p.values.image_tag, env!("CARGO_PKG_VERSION"));
        assert_eq!(p.wait, Some(DEFAULT_TIMEOUT));
        let p = plan(
            "west",
            &InitArgs {
                no_wait: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.wait, None);
    }
}
