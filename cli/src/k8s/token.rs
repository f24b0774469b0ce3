//! `token create` on kubernetes: a Secret labelled `connection-token-request`, which the
//! controller fills in with the token (or annotates with why it refused).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};

use super::{STATUS_ANNOTATION, TOKEN_REQUEST, api_error, is_not_found, pause};
use crate::args::{TokenCreateArgs, TokenType};
use crate::usage;

pub const TOKEN_TYPE: &str = "skupper.io/token-type";
pub const TOKEN_EXPIRY: &str = "skupper.io/token-expiry";
pub const TOKEN_USES: &str = "skupper.io/token-uses";
/// Skupper's claim defaults: 15 minutes, one use.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(15 * 60);
const DEFAULT_USES: u32 = 1;
/// How long the controller may take to fill a request in.
pub const FILL_TIMEOUT: Duration = Duration::from_secs(60);

/// The request Secret for `a`, named `name`.
pub fn request(name: &str, a: &TokenCreateArgs) -> Secret {
    let mut annotations = BTreeMap::new();
    match a.token_type {
        TokenType::Claim => {
            annotations.insert(TOKEN_TYPE.to_string(), "claim".to_string());
            let expiry = a.expiry.unwrap_or(DEFAULT_EXPIRY).as_secs();
            annotations.insert(TOKEN_EXPIRY.to_string(), expiry.to_string());
            let uses = a.uses.unwrap_or(DEFAULT_USES);
            annotations.insert(TOKEN_USES.to_string(), uses.to_string());
        }
        TokenType::Cert => {
            annotations.insert(TOKEN_TYPE.to_string(), "cert".to_string());
        }
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                van_controller::token::TYPE_LABEL.to_string(),
                TOKEN_REQUEST.to_string(),
            )])),
            annotations: Some(annotations),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The token file of a filled-in Secret: name, labels, annotations, type and data, as the
/// controller's `token_yaml` writes it, without the request's own annotations.
pub fn token_yaml(s: &Secret) -> anyhow::Result<String> {
    let annotations = s.metadata.annotations.clone().map(|a| {
        a.into_iter()
            .filter(|(k, _)| {
                ![TOKEN_TYPE, TOKEN_EXPIRY, TOKEN_USES].contains(&k.as_str())
                    && !k.starts_with("internal.skupper.io/")
                    && k != "kubectl.kubernetes.io/last-applied-configuration"
            })
            .collect::<BTreeMap<_, _>>()
    });
    let t = Secret {
        metadata: ObjectMeta {
            name: s.metadata.name.clone(),
            labels: s.metadata.labels.clone(),
            annotations: annotations.filter(|a| !a.is_empty()),
            ..Default::default()
        },
        type_: s.type_.clone(),
        data: s.data.clone(),
        ..Default::default()
    };
    // k8s-openapi omits apiVersion/kind from a typed object's fields; a token file has them.
    let mut v = serde_json::to_value(&t)?;
    v["apiVersion"] = "v1".into();
    v["kind"] = "Secret".into();
    Ok(serde_yaml_ng::to_string(&v)?)
}

/// `skupper token create FILE`: asks the controller for a token and writes it (mode 0600).
pub async fn create(
    client: &kube::Client,
    namespace: &str,
    a: &TokenCreateArgs,
    poll: Duration,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if a.token_type == TokenType::Cert && (a.expiry.is_some() || a.uses.is_some()) {
        return Err(usage(
            "--expiry and --uses apply to claim tokens only; cert tokens do not expire and can be used any number of times",
        ));
    }
    if a.cost.is_some() {
        return Err(usage(
            "token create --cost is not available on kubernetes; give the cost when linking: skupper link create FILE --cost N",
        ));
    }
    let to_stdout = a.file.as_os_str() == "-";
    if !to_stdout {
        crate::token::check_writable_target(&a.file)?;
    }
    super::site_configmap(client, namespace).await?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("token-{}", van_controller::site::random_hex(4)));
    if let Some(p) = van_controller::site::dns_label_problem(&name, 63) {
        return Err(usage(format!("--name: {p}")));
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &request(&name, a))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => usage(format!(
                "a Secret named {name:?} already exists in namespace {namespace:?}; choose another --name"
            )),
            e => api_error(namespace, &format!("create secrets {name:?}"), e),
        })?;
    let filled = wait_filled(&api, namespace, &name, FILL_TIMEOUT, poll).await;
    let filled = match filled {
        Ok(s) => s,
        Err(e) => {
            // The request is of no use now; do not leave it for the controller.
            let _ = api.delete(&name, &DeleteParams::default()).await;
            return Err(e);
        }
    };
    let yaml = token_yaml(&filled)?;
    let token = van_controller::token::parse(&yaml).map_err(|e| {
        anyhow::anyhow!(
            "the controller filled Secret {name:?} with something that is not a token: {e}"
        )
    })?;
    let shown = if to_stdout {
        write!(out, "{yaml}")?;
        "standard output".to_string()
    } else {
        crate::token::write_secret(&a.file, yaml.as_bytes())?;
        a.file.display().to_string()
    };
    // The token lives in the file now (and a claim's record in the controller's state).
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(api_error(namespace, &format!("delete secrets {name:?}"), e)),
    }
    let message = match (&token, a.token_type) {
        (van_controller::token::Token::Claim(_), _) | (_, TokenType::Claim) => format!(
            "Token written to {shown} (claim token: expires in {}, {})",
            crate::duration::format_duration(a.expiry.unwrap_or(DEFAULT_EXPIRY)),
            crate::output::plural(u64::from(a.uses.unwrap_or(DEFAULT_USES)), "use", "uses")
        ),
        _ => format!("Connection token written to {shown}"),
    };
    if to_stdout {
        eprintln!("{message}");
    } else {
        writeln!(out, "{message}")?;
    }
    Ok(())
}

/// Polls the request until the controller relabels it (filled) or annotates why it refused.
async fn wait_filled(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<Secret> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = api
            .get(name)
            .await
            .map_err(|e| api_error(namespace, &format!("get secrets {name:?}"), e))?;
        let label = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(van_controller::token::TYPE_LABEL))
            .map(String::as_str);
        if label != Some(TOKEN_REQUEST) {
            return Ok(s);
        }
        if let Some(why) = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(STATUS_ANNOTATION))
        {
            anyhow::bail!("the site controller refused the token: {why}");
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the site controller did not fill in token request Secret {name:?} within {}; \
                 is it running? (kubectl -n {namespace} get pods)",
                crate::duration::format_duration(timeout)
            );
        }
        pause(poll).await;
    }
}
