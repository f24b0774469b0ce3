//! `service create|delete|bind|unbind` on kubernetes: entries of ConfigMap skupper-services,
//! which the controller reads (`van_controller::k8s::DEFINITIONS`). A service is defined by
//! its address and ports; its targets are Services of the namespace. Binding a deployment or
//! statefulset makes a Service of ours selecting its pods (`<address>-<workload>`), removed
//! again by unbind or delete.

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use van_controller::k8s::{DEFINITIONS, Definition, DefinitionTarget, MANAGED_BY};

use super::expose::{Kind, check_protocol, resource, workload_selector};
use super::{FIELD_MANAGER, MANAGED_BY_VALUE, api_error, is_not_found};
use crate::args::{ServiceBindArgs, ServiceCreateArgs, ServiceNameArgs, ServiceUnbindArgs};
use crate::usage;

/// Label of the Services made for a bound workload: the address they serve.
pub const BOUND_TO: &str = "skupper.io/bound-to";

/// The definitions, with the ConfigMap's existence.
async fn read(
    client: &kube::Client,
    namespace: &str,
) -> anyhow::Result<(Option<ConfigMap>, BTreeMap<String, Definition>)> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = match api.get_opt(DEFINITIONS).await {
        Ok(cm) => cm,
        Err(e) => {
            return Err(api_error(
                namespace,
                &format!("get configmaps {DEFINITIONS:?}"),
                e,
            ));
        }
    };
    let mut defs = BTreeMap::new();
    for (k, v) in cm.as_ref().and_then(|c| c.data.clone()).unwrap_or_default() {
        // An entry someone broke by hand is left as it is (the controller names it).
        if let Ok(d) = serde_json::from_str::<Definition>(&v) {
            defs.insert(k, d);
        }
    }
    Ok((cm, defs))
}

/// Writes one entry (`None`: removes it), creating the ConfigMap, owned by the site, if
/// there is none yet.
async fn write(
    client: &kube::Client,
    namespace: &str,
    exists: bool,
    address: &str,
    def: Option<&Definition>,
) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let value = def.map(|d| serde_json::to_string(d).expect("a definition serialises"));
    if !exists {
        let site = super::site_configmap(client, namespace).await?;
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {
                "name": DEFINITIONS,
                "namespace": namespace,
                "labels": {MANAGED_BY: MANAGED_BY_VALUE},
                // Deleting the site deletes its service definitions too.
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "name": super::SITE_CONFIGMAP,
                    "uid": site.metadata.uid.unwrap_or_default(),
                }],
            },
            "data": value.as_ref().map(|v| json!({address: v})).unwrap_or(json!({})),
        }))?;
        api.create(&PostParams::default(), &cm)
            .await
            .map_err(|e| api_error(namespace, &format!("create configmaps {DEFINITIONS:?}"), e))?;
        return Ok(());
    }
    let patch = json!({"data": {address: value}});
    api.patch(DEFINITIONS, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| api_error(namespace, &format!("patch configmaps {DEFINITIONS:?}"), e))?;
    Ok(())
}

fn not_defined(address: &str, namespace: &str) -> anyhow::Error {
    usage(format!(
        "no service {address:?} is defined in namespace {namespace:?} (skupper service create \
         defines one; services exposed with skupper expose are stopped with skupper unexpose)"
    ))
}

/// `skupper service create ADDRESS PORT...`.
pub async fn create(
    client: &kube::Client,
    namespace: &str,
    a: &ServiceCreateArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    if let Some(p) = van_controller::site::dns_label_problem(&a.name, 63) {
        problems.push(format!("service name: {p}"));
    }
    if let Err(e) = check_protocol(&a.protocol) {
        problems.push(e.to_string());
    }
    let mut ports = a.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    if ports.len() != a.ports.len() {
        problems.push("a port is given twice".into());
    }
    if !problems.is_empty() {
        return Err(usage(problems.join("; ")));
    }
    super::site_configmap(client, namespace).await?;
    let (cm, defs) = read(client, namespace).await?;
    if defs.contains_key(&a.name) {
        return Err(usage(format!(
            "service {:?} is already defined in namespace {namespace:?}",
            a.name
        )));
    }
    // Clients call the address: the controller makes a Service of that name, so it must be
    // free (a user's Service is exposed with `skupper expose service` instead).
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    if let Some(s) = services
        .get_opt(&a.name)
        .await
        .map_err(|e| api_error(namespace, &format!("get services {:?}", a.name), e))?
    {
        let managed = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY))
            .is_some_and(|m| m == van_controller::k8s::MANAGER);
        if !managed {
            return Err(usage(format!(
                "Service {:?} already exists in namespace {namespace:?}; expose it with \
                 `skupper expose service {}`, or choose another name",
                a.name, a.name
            )));
        }
    }
    let def = Definition {
        protocol: a.protocol.clone(),
        ports: a.ports.clone(),
        targets: Vec::new(),
    };
    write(client, namespace, cm.is_some(), &a.name, Some(&def)).await?;
    let ports: Vec<String> = a.ports.iter().map(u16::to_string).collect();
    writeln!(
        out,
        "Service {} created ({} {})",
        a.name,
        a.protocol,
        ports.join(",")
    )?;
    Ok(())
}

/// `skupper service delete ADDRESS`: the definition and the Services made for its targets.
pub async fn delete(
    client: &kube::Client,
    namespace: &str,
    a: &ServiceNameArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (cm, defs) = read(client, namespace).await?;
    if !defs.contains_key(&a.name) {
        return Err(not_defined(&a.name, namespace));
    }
    write(client, namespace, cm.is_some(), &a.name, None).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let made = services
        .list(&ListParams::default().labels(&format!(
            "{MANAGED_BY}={MANAGED_BY_VALUE},{BOUND_TO}={}",
            a.name
        )))
        .await
        .map_err(|e| api_error(namespace, "list services", e))?;
    for s in made.items {
        if let Some(n) = s.metadata.name {
            delete_service(&services, namespace, &n).await?;
        }
    }
    writeln!(out, "Service {} deleted", a.name)?;
    Ok(())
}

async fn delete_service(
    services: &Api<Service>,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    match services.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api_error(
            namespace,
            &format!("delete services {name:?}"),
            e,
        )),
    }
}

/// The Service a workload is bound through.
fn bound_service(address: &str, workload: &str) -> anyhow::Result<String> {
    let name = format!("{address}-{workload}");
    match van_controller::site::dns_label_problem(&name, 63) {
        None => Ok(name),
        Some(p) => Err(usage(format!(
            "the Service made for the workload would be named {name:?}, which {p}; bind a \
             Service of your own instead: skupper service bind {address} service NAME"
        ))),
    }
}

/// `skupper service bind ADDRESS service|deployment|statefulset NAME [--target-port]`.
pub async fn bind(
    client: &kube::Client,
    namespace: &str,
    a: &ServiceBindArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (kind, name) = resource("service bind", &a.resource, a.host.as_deref())?;
    let (cm, defs) = read(client, namespace).await?;
    let Some(mut def) = defs.get(&a.name).cloned() else {
        return Err(not_defined(&a.name, namespace));
    };
    if !a.target_port.is_empty() && a.target_port.len() != def.ports.len() {
        return Err(usage(format!(
            "--target-port: {} target ports for {} service ports; give one per port, in order, or none",
            a.target_port.len(),
            def.ports.len()
        )));
    }
    let target_ports = if a.target_port.is_empty() {
        def.ports.clone()
    } else {
        a.target_port.clone()
    };
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let target = match kind {
        Kind::Service => {
            if services
                .get_opt(&name)
                .await
                .map_err(|e| api_error(namespace, &format!("get services {name:?}"), e))?
                .is_none()
            {
                anyhow::bail!("there is no Service {name:?} in namespace {namespace:?}");
            }
            name.clone()
        }
        Kind::Deployment | Kind::StatefulSet => {
            let selector = workload_selector(client, namespace, kind, &name).await?;
            let svc_name = bound_service(&a.name, &name)?;
            let ports: Vec<serde_json::Value> = target_ports
                .iter()
                .map(|p| json!({"name": format!("port-{p}"), "port": p, "targetPort": p, "protocol": "TCP"}))
                .collect();
            let svc = json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": svc_name,
                    "namespace": namespace,
                    "labels": {MANAGED_BY: MANAGED_BY_VALUE, BOUND_TO: a.name},
                },
                "spec": {"selector": selector, "ports": ports},
            });
            services
                .patch(
                    &svc_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&svc),
                )
                .await
                .map_err(|e| api_error(namespace, &format!("apply services {svc_name:?}"), e))?;
            svc_name
        }
    };
    def.targets.retain(|t| t.service != target);
    def.targets.push(DefinitionTarget {
        service: target,
        ports: if a.target_port.is_empty() {
            Vec::new()
        } else {
            target_ports
        },
    });
    write(client, namespace, cm.is_some(), &a.name, Some(&def)).await?;
    writeln!(out, "Service {} bound to {} {name}", a.name, kind.as_str())?;
    Ok(())
}

/// `skupper service unbind ADDRESS service|deployment|statefulset NAME`.
pub async fn unbind(
    client: &kube::Client,
    namespace: &str,
    a: &ServiceUnbindArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (kind, name) = resource("service unbind", &a.resource, a.host.as_deref())?;
    let (cm, defs) = read(client, namespace).await?;
    let Some(mut def) = defs.get(&a.name).cloned() else {
        return Err(not_defined(&a.name, namespace));
    };
    let target = match kind {
        Kind::Service => name.clone(),
        Kind::Deployment | Kind::StatefulSet => bound_service(&a.name, &name)?,
    };
    let before = def.targets.len();
    def.targets.retain(|t| t.service != target);
    if def.targets.len() == before {
        return Err(usage(format!(
            "service {:?} is not bound to {} {name}",
            a.name,
            kind.as_str()
        )));
    }
    write(client, namespace, cm.is_some(), &a.name, Some(&def)).await?;
    if kind != Kind::Service {
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        delete_service(&services, namespace, &target).await?;
    }
    writeln!(
        out,
        "Service {} unbound from {} {name}",
        a.name,
        kind.as_str()
    )?;
    Ok(())
}
