//! `link create|delete|status` on kubernetes: a link is a token Secret, which the controller
//! turns into a router link (and annotates with the outcome).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use van_controller::token::{COST, TYPE_CERT, TYPE_CLAIM, TYPE_LABEL};
use van_proto::controller as pb;

use super::{STATUS_ANNOTATION, api_error, is_not_found, pause};
use crate::args::{LinkCreateArgs, LinkStatusArgs};
use crate::usage;

/// The Secret of a link named `name` from the token file `yaml` (already parsed as a token).
pub fn link_secret(yaml: &str, name: Option<&str>, cost: Option<u32>) -> anyhow::Result<Secret> {
    let token: Secret = serde_yaml_ng::from_str(yaml)
        .map_err(|e| usage(format!("the token file is not a Secret: {e}")))?;
    let name = match name {
        Some(n) => n.to_string(),
        None => token.metadata.name.clone().unwrap_or_default(),
    };
    if let Some(p) = van_controller::site::dns_label_problem(&name, 253) {
        return Err(usage(format!("link name: {p} (give one with --name)")));
    }
    let mut annotations = token.metadata.annotations.clone().unwrap_or_default();
    if let Some(c) = cost {
        annotations.insert(COST.to_string(), c.to_string());
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name),
            labels: token.metadata.labels.clone(),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        type_: token.type_.clone(),
        data: token.data.clone(),
        ..Default::default()
    })
}

/// `skupper link create FILE`.
pub async fn create(
    client: &kube::Client,
    namespace: &str,
    a: &LinkCreateArgs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let yaml = crate::link::read_token_file(&a.file)?;
    let token = van_controller::token::parse(&yaml)
        .map_err(|e| usage(format!("{} is not a usable token: {e}", a.file.display())))?;
    let mut secret = link_secret(&yaml, a.name.as_deref(), a.cost)?;
    // Only an explicit --proxy: this shell's HTTPS_PROXY says nothing of the cluster's egress.
    if let Some(p) = &a.proxy {
        van_proto::tunnel::Proxy::parse(p).map_err(|e| usage(format!("--proxy: {e}")))?;
        secret
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("skupper.io/proxy-url".into(), p.clone());
    }
    let name = secret.metadata.name.clone().unwrap_or_default();
    super::site_configmap(client, namespace).await?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &secret)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => usage(format!(
                "a Secret named {name:?} already exists in namespace {namespace:?}; \
                 delete the link first (skupper link delete {name}) or choose another --name"
            )),
            e => api_error(namespace, &format!("create secrets {name:?}"), e),
        })?;
    let peer = match &token {
        van_controller::token::Token::Cert(t) => t.site_name.clone(),
        van_controller::token::Token::Claim(t) => t.site_name.clone(),
    };
    let peer = if peer.is_empty() {
        "the issuing site".to_string()
    } else {
        peer
    };
    writeln!(out, "Site configured to link to {peer} (name={name})")?;
    writeln!(
        out,
        "Check the status of the link using 'skupper link status'."
    )?;
    Ok(())
}

fn is_link(s: &Secret) -> bool {
    s.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TYPE_LABEL))
        .is_some_and(|t| t == TYPE_CERT || t == TYPE_CLAIM)
}

/// `skupper link delete NAME`.
pub async fn delete(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get(name).await {
        Ok(s) if is_link(&s) => {}
        Ok(_) => anyhow::bail!(
            "Secret {name:?} in namespace {namespace:?} is not a link (no label {TYPE_LABEL}: {TYPE_CERT} or {TYPE_CLAIM}); not deleted"
        ),
        Err(e) if is_not_found(&e) => {
            anyhow::bail!("there is no link named {name:?} in namespace {namespace:?}")
        }
        Err(e) => return Err(api_error(namespace, &format!("get secrets {name:?}"), e)),
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(api_error(namespace, &format!("delete secrets {name:?}"), e)),
    }
    writeln!(out, "Link '{name}' has been deleted")?;
    Ok(())
}

/// The reported links, plus a failed entry for every token Secret the controller could not
/// make a link of (its status annotation says why) and that has no live link.
pub async fn links(client: &kube::Client, namespace: &str) -> anyhow::Result<pb::LinkList> {
    let mut list = super::site::reported(client, namespace).await?.links;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{TYPE_LABEL} in ({TYPE_CERT},{TYPE_CLAIM})");
    let secrets = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| api_error(namespace, "list secrets", e))?;
    let empty = BTreeMap::new();
    for s in &secrets.items {
        let name = s.metadata.name.clone().unwrap_or_default();
        let ann = s.metadata.annotations.as_ref().unwrap_or(&empty);
        let Some(why) = ann.get(STATUS_ANNOTATION).filter(|w| *w != "linked") else {
            continue;
        };
        if list.links.iter().any(|l| l.name == name) {
            continue;
        }
        list.links.push(pb::LinkStatus {
            name,
            state: "failed".into(),
            detail: why.clone(),
            direction: "outgoing".into(),
            ..Default::default()
        });
    }
    Ok(list)
}

/// `skupper link status [NAME] [--wait D]`.
pub async fn status(
    client: &kube::Client,
    namespace: &str,
    a: &LinkStatusArgs,
    poll: Duration,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let name = a.name.as_deref().filter(|n| *n != "all");
    let deadline = a.wait.map(|w| Instant::now() + w);
    let list = loop {
        let list = links(client, namespace).await?;
        let Some(deadline) = deadline else {
            break list;
        };
        let Some(problem) = crate::link::not_active(&list, name) else {
            break list;
        };
        if Instant::now() >= deadline {
            let wait = crate::duration::format_duration(a.wait.unwrap_or_default());
            crate::link::render(&list, name, a.output.output, out)?;
            anyhow::bail!("{problem} (waited {wait})");
        }
        pause(poll).await;
    };
    if let Some(n) = name
        && !list.links.iter().any(|l| l.name == n)
    {
        anyhow::bail!("there is no link named {n:?}");
    }
    crate::link::render(&list, name, a.output.output, out)
}
