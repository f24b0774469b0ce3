//! `skupper debug dump FILE` on kubernetes: the site's objects, Events, status and the logs
//! of its pods in one .tar.gz. Secrets go in by name, type, labels and annotations only:
//! never their data (the site's CA key, the API token, tokens).

use std::io::Write;
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, LogParams};
use serde::Serialize;

use super::api_error;

/// How much of each container's log goes in: its last lines.
const LOG_LINES: i64 = 5000;

/// The archive's entries (path, bytes) and what could not be collected.
#[derive(Default)]
struct Dump {
    entries: Vec<(String, Vec<u8>)>,
    errors: Vec<String>,
}

impl Dump {
    fn yaml(&mut self, path: &str, v: &impl Serialize) {
        match serde_yaml_ng::to_string(v) {
            Ok(t) => self.entries.push((path.into(), t.into_bytes())),
            Err(e) => self.errors.push(format!("{path}: {e}")),
        }
    }
}

/// A Secret as it may be shown: everything but its data, and the keys it has.
fn redacted(s: &Secret) -> serde_json::Value {
    let mut meta = s.metadata.clone();
    meta.managed_fields = None;
    let keys: Vec<&String> = s.data.iter().flat_map(|d| d.keys()).collect();
    serde_json::json!({
        "metadata": meta,
        "type": s.type_,
        "dataKeys": keys,
    })
}

pub async fn dump(
    client: &kube::Client,
    namespace: &str,
    file: &Path,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    super::site_configmap(client, namespace).await?;
    let now = van_controller::site::now_unix();
    let mut d = Dump::default();

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in [
        super::SITE_CONFIGMAP,
        super::STATUS_CONFIGMAP,
        "skupper-router-config",
        van_controller::k8s::DEFINITIONS,
    ] {
        match cms.get_opt(name).await {
            Ok(Some(mut cm)) => {
                cm.metadata.managed_fields = None;
                d.yaml(&format!("configmaps/{name}.yaml"), &cm);
            }
            Ok(None) => {}
            Err(e) => d.errors.push(format!("configmap {name}: {e}")),
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for name in ["skupper-router", "skupper-service-controller"] {
        match deployments.get_opt(name).await {
            Ok(Some(mut dep)) => {
                dep.metadata.managed_fields = None;
                d.yaml(&format!("deployments/{name}.yaml"), &dep);
            }
            Ok(None) => d.errors.push(format!("deployment {name}: not found")),
            Err(e) => d.errors.push(format!("deployment {name}: {e}")),
        }
    }
    // Every Service: a clash between the user's and the network's is part of the picture.
    match Api::<Service>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => {
            for mut s in list.items {
                s.metadata.managed_fields = None;
                let name = s.metadata.name.clone().unwrap_or_default();
                d.yaml(&format!("services/{name}.yaml"), &s);
            }
        }
        Err(e) => d.errors.push(format!(
            "services: {}",
            api_error(namespace, "list services", e)
        )),
    }
    match Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => {
            let shown: Vec<serde_json::Value> = list
                .items
                .iter()
                .filter(|s| {
                    let name = s.metadata.name.as_deref().unwrap_or_default();
                    name.starts_with("skupper")
                        || s.metadata
                            .labels
                            .as_ref()
                            .is_some_and(|l| l.contains_key(van_controller::token::TYPE_LABEL))
                })
                .map(redacted)
                .collect();
            d.yaml("secrets.yaml", &shown);
        }
        Err(e) => d.errors.push(format!(
            "secrets: {}",
            api_error(namespace, "list secrets", e)
        )),
    }
    match Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => d.yaml("events.yaml", &list.items),
        Err(e) => d.errors.push(format!(
            "events: {}",
            api_error(namespace, "list events", e)
        )),
    }

    // The pods of the site, and the end of each container's log.
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match pods
        .list(&ListParams::default().labels("skupper.io/component in (router,controller)"))
        .await
    {
        Ok(list) => {
            for mut p in list.items {
                p.metadata.managed_fields = None;
                let name = p.metadata.name.clone().unwrap_or_default();
                let containers: Vec<String> = p
                    .spec
                    .iter()
                    .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
                    .collect();
                d.yaml(&format!("pods/{name}.yaml"), &p);
                for c in containers {
                    let lp = LogParams {
                        container: Some(c.clone()),
                        tail_lines: Some(LOG_LINES),
                        ..LogParams::default()
                    };
                    match pods.logs(&name, &lp).await {
                        Ok(text) => d
                            .entries
                            .push((format!("logs/{name}/{c}.log"), text.into_bytes())),
                        Err(e) => d.errors.push(format!("logs of {name}/{c}: {e}")),
                    }
                }
            }
        }
        Err(e) => d
            .errors
            .push(format!("pods: {}", api_error(namespace, "list pods", e))),
    }

    let mut summary = format!(
        "skupper {} debug dump of namespace {namespace:?} (kubernetes)\ncreated {}\n\
         Secrets are listed without their data.\n",
        env!("CARGO_PKG_VERSION"),
        van_controller::site::rfc3339(now)
    );
    if !d.errors.is_empty() {
        summary.push_str("\nnot collected:\n");
        for e in &d.errors {
            summary.push_str(&format!("  {e}\n"));
        }
    }
    d.entries
        .insert(0, ("README.txt".into(), summary.into_bytes()));
    crate::debug::write_archive(file, &format!("skupper-dump-{namespace}"), &d.entries, now)?;
    writeln!(
        out,
        "Debug dump written to {} ({} files{})",
        file.display(),
        d.entries.len(),
        if d.errors.is_empty() {
            String::new()
        } else {
            format!(
                "; {} could not be collected, see README.txt",
                d.errors.len()
            )
        }
    )?;
    Ok(())
}
