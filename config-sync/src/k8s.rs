//! Secrets from the Kubernetes API: config-sync in the router pod follows the router's TLS
//! Secret with a watch, so a new link's material is applied as soon as the controller writes
//! it (a mounted Secret volume would lag by the kubelet's sync period, up to a minute or so).

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tracing::warn;

use crate::tls::{SecretData, SecretSource};

/// Secrets of one namespace, read with the pod's service account (RBAC: get, list and watch
/// on the Secrets named).
#[derive(Clone)]
pub struct KubeSecrets {
    client: kube::Client,
    namespace: String,
}

impl std::fmt::Debug for KubeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KubeSecrets({})", self.namespace)
    }
}

impl KubeSecrets {
    pub fn new(client: kube::Client, namespace: &str) -> KubeSecrets {
        KubeSecrets {
            client,
            namespace: namespace.to_string(),
        }
    }
}

fn data_of(s: &Secret) -> SecretData {
    Some(
        s.data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect(),
    )
}

impl SecretSource for KubeSecrets {
    fn watch(&self, name: &str) -> watch::Receiver<SecretData> {
        let (tx, rx) = watch::channel(None);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        // Only this Secret: the service account may be allowed no other.
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let name = name.to_string();
        tokio::spawn(async move {
            let set = |data: SecretData| {
                tx.send_if_modified(|cur| {
                    let changed = *cur != data;
                    *cur = data;
                    changed
                });
            };
            // Watch errors (API server restarts, expired versions) back off and re-list.
            let mut events = watcher(api, config).default_backoff().boxed();
            let mut seen = false;
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(watcher::Event::Init) => seen = false,
                    Ok(watcher::Event::InitApply(s) | watcher::Event::Apply(s)) => {
                        seen = true;
                        set(data_of(&s));
                    }
                    Ok(watcher::Event::InitDone) if !seen => set(None),
                    Ok(watcher::Event::InitDone) => {}
                    Ok(watcher::Event::Delete(_)) => set(None),
                    Err(e) => warn!(secret = %name, error = %e, "Cannot watch the Secret"),
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }
}
