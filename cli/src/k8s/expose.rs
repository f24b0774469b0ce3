//! `expose` and `unexpose` on kubernetes. A workload is exposed through a Service of ours
//! selecting its pods and annotated `skupper.io/proxy`; a user's Service is exposed by
//! annotating it. The controller does the rest (it never changes the user's Service).

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use van_controller::k8s::{ADDRESS, MANAGED_BY, PORT, PROXY};

use super::{FIELD_MANAGER, MANAGED_BY_VALUE, api_error, is_not_found};
use crate::args::{ExposeArgs, UnexposeArgs};
use crate::usage;

/// The workload a Service of ours was made for, e.g. `deployment/backend`.
pub const EXPOSED: &str = "skupper.io/exposed";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    StatefulSet,
    Service,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::Service => "service",
        }
    }
}

/// `TYPE NAME` or `TYPE/NAME`, for `command`.
pub fn resource(
    command: &str,
    resource: &str,
    name: Option<&str>,
) -> anyhow::Result<(Kind, String)> {
    let (kind, inline) = match resource.split_once('/') {
        Some((k, n)) => (k, Some(n)),
        None => (resource, None),
    };
    let kind = match kind {
        "deployment" => Kind::Deployment,
        "statefulset" => Kind::StatefulSet,
        "service" => Kind::Service,
        "host" => {
            return Err(usage(format!(
                "{command} host is only available on the local platform; on kubernetes \
                 {command} a deployment, statefulset or service"
            )));
        }
        other => {
            return Err(usage(format!(
                "{command}: unknown resource type {other:?}; on kubernetes: deployment, statefulset or service"
            )));
        }
    };
    let name = match (inline, name) {
        (Some(_), Some(n)) => {
            return Err(usage(format!(
                "{command}: give the name once, as `{}/{n}` or `{} {n}`",
                kind.as_str(),
                kind.as_str()
            )));
        }
        (Some(n), None) | (None, Some(n)) => n.to_string(),
        (None, None) => {
            return Err(usage(format!(
                "{command}: which {}? e.g. `{command} {} NAME`",
                kind.as_str(),
                kind.as_str()
            )));
        }
    };
    if let Some(p) = van_controller::site::dns_label_problem(&name, 253) {
        return Err(usage(format!("{command}: {} name {p}", kind.as_str())));
    }
    Ok((kind, name))
}

fn is_ours(s: &Service) -> bool {
    let labels = s.metadata.labels.as_ref();
    let ann = s.metadata.annotations.as_ref();
    labels
        .and_then(|l| l.get(MANAGED_BY))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
        && ann.is_some_and(|a| a.contains_key(EXPOSED))
}

pub(super) fn check_protocol(p: &str) -> anyhow::Result<()> {
    if matches!(p, "tcp" | "http" | "http2") {
        Ok(())
    } else {
        Err(usage(format!(
            "--protocol: {p:?} is not tcp, http or http2"
        )))
    }
}

fn check_target_ports(ports: &[u16], targets: &[u16]) -> anyhow::Result<()> {
    if !targets.is_empty() && targets.len() != ports.len() {
        return Err(usage(format!(
            "--target-port: {} target ports for {} ports; give one per port, in order, or none",
            targets.len(),
            ports.len()
        )));
    }
    Ok(())
}

/// `skupper expose deployment|statefulset|service NAME`.
pub async fn expose(
    client: &kube::Client,
    namespace: &str,
    a: &ExposeArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (kind, name) = resource("expose", &a.resource, a.name.as_deref())?;
    check_protocol(&a.protocol)?;
    check_target_ports(&a.port, &a.target_port)?;
    if let Some(addr) = &a.address
        && let Some(p) = van_controller::site::dns_label_problem(addr, 63)
    {
        return Err(usage(format!("--address: {p}")));
    }
    super::site_configmap(client, namespace).await?;
    match kind {
        Kind::Service => expose_service(client, namespace, &name, a, out).await,
        Kind::Deployment | Kind::StatefulSet => {
            expose_workload(client, namespace, kind, &name, a, out).await
        }
    }
}

async fn expose_workload(
    client: &kube::Client,
    namespace: &str,
    kind: Kind,
    name: &str,
    a: &ExposeArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if a.port.is_empty() {
        return Err(usage(format!(
            "expose {}: --port is required (the ports of the service)",
            kind.as_str()
        )));
    }
    let selector = workload_selector(client, namespace, kind, name).await?;
    let address = a.address.clone().unwrap_or_else(|| name.to_string());
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    match services.get(&address).await {
        Ok(s) if !is_ours(&s) => anyhow::bail!(
            "Service {address:?} already exists in namespace {namespace:?} and was not made by \
             skupper expose; expose it with `skupper expose service {address}`, or choose another --address"
        ),
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            return Err(api_error(
                namespace,
                &format!("get services {address:?}"),
                e,
            ));
        }
    }
    let ports: Vec<Value> = a
        .port
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "name": format!("port-{p}"),
                "port": p,
                "targetPort": a.target_port.get(i).copied().unwrap_or(*p),
                "protocol": "TCP",
            })
        })
        .collect();
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": address,
            "namespace": namespace,
            "labels": {MANAGED_BY: MANAGED_BY_VALUE},
            "annotations": {
                PROXY: a.protocol,
                EXPOSED: format!("{}/{name}", kind.as_str()),
            },
        },
        "spec": {"selector": selector, "ports": ports},
    });
    services
        .patch(
            &address,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&svc),
        )
        .await
        .map_err(|e| api_error(namespace, &format!("apply services {address:?}"), e))?;
    writeln!(out, "{} {name} exposed as {address}", kind.as_str())?;
    Ok(())
}

async fn expose_service(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    a: &ExposeArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    match services.get(name).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            anyhow::bail!("there is no Service {name:?} in namespace {namespace:?}")
        }
        Err(e) => return Err(api_error(namespace, &format!("get services {name:?}"), e)),
    }
    let mut ann = serde_json::Map::new();
    ann.insert(PROXY.into(), a.protocol.clone().into());
    if let Some(addr) = &a.address {
        ann.insert(ADDRESS.into(), addr.clone().into());
    }
    if !a.port.is_empty() {
        let spec: Vec<String> = a
            .port
            .iter()
            .enumerate()
            .map(|(i, p)| match a.target_port.get(i) {
                Some(t) => format!("{p}:{t}"),
                None => p.to_string(),
            })
            .collect();
        ann.insert(PORT.into(), spec.join(",").into());
    }
    let patch = json!({"metadata": {"annotations": ann}});
    services
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| api_error(namespace, &format!("patch services {name:?}"), e))?;
    let address = a.address.as_deref().unwrap_or(name);
    writeln!(out, "service {name} exposed as {address}")?;
    Ok(())
}

/// The labels a deployment's or statefulset's pods are selected by.
pub(super) async fn workload_selector(
    client: &kube::Client,
    namespace: &str,
    kind: Kind,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let (api_kind, plural) = match kind {
        Kind::Deployment => ("Deployment", "deployments"),
        _ => ("StatefulSet", "statefulsets"),
    };
    let ar = ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: api_kind.into(),
        plural: plural.into(),
    };
    let workloads: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let w = match workloads.get(name).await {
        Ok(w) => w,
        Err(e) if is_not_found(&e) => anyhow::bail!(
            "there is no {} {name:?} in namespace {namespace:?}",
            kind.as_str()
        ),
        Err(e) => return Err(api_error(namespace, &format!("get {plural} {name:?}"), e)),
    };
    let selector: BTreeMap<String, String> = w.data["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if selector.is_empty() {
        anyhow::bail!(
            "{} {name:?} has no spec.selector.matchLabels to select its pods by",
            kind.as_str()
        );
    }
    Ok(selector)
}

/// `skupper unexpose deployment|statefulset|service NAME [--address A]`.
pub async fn unexpose(
    client: &kube::Client,
    namespace: &str,
    a: &UnexposeArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (kind, name) = resource("unexpose", &a.resource, a.name.as_deref())?;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let svc_name = match kind {
        Kind::Service => name.clone(),
        _ => a.address.clone().unwrap_or_else(|| name.clone()),
    };
    let svc = match services.get(&svc_name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => anyhow::bail!(
            "there is no Service {svc_name:?} in namespace {namespace:?}: {} {name} is not exposed",
            kind.as_str()
        ),
        Err(e) => {
            return Err(api_error(
                namespace,
                &format!("get services {svc_name:?}"),
                e,
            ));
        }
    };
    if is_ours(&svc) {
        services
            .delete(&svc_name, &DeleteParams::default())
            .await
            .map_err(|e| api_error(namespace, &format!("delete services {svc_name:?}"), e))?;
    } else if kind == Kind::Service {
        let patch = json!({"metadata": {"annotations": {PROXY: null, ADDRESS: null, PORT: null}}});
        services
            .patch(&svc_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_error(namespace, &format!("patch services {svc_name:?}"), e))?;
    } else {
        anyhow::bail!(
            "Service {svc_name:?} was not made by skupper expose {}; to stop exposing it use \
             `skupper unexpose service {svc_name}`",
            kind.as_str()
        );
    }
    writeln!(out, "{} {name} unexposed", kind.as_str())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_forms() {
        assert_eq!(
            resource("expose", "deployment", Some("web")).unwrap(),
            (Kind::Deployment, "web".to_string())
        );
        assert_eq!(
            resource("expose", "statefulset/db", None).unwrap(),
            (Kind::StatefulSet, "db".to_string())
        );
        let e = resource("expose", "host", Some("10.0.0.1")).unwrap_err();
        assert!(
            e.to_string()
                .contains("only available on the local platform"),
            "{e}"
        );
        assert!(e.downcast_ref::<crate::UsageError>().is_some());
        assert!(resource("expose", "pods", Some("x")).is_err());
        assert!(resource("expose", "service", None).is_err());
        assert!(resource("expose", "service/a", Some("b")).is_err());
    }
}
