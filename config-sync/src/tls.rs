//! TLS material from a Secret. On Kubernetes the controller sends TLS profiles by name only
//! and keeps their certificates and keys in a Secret (see `DesiredRouterConfig.tls_secret`);
//! config-sync fills them in from there before it compares and applies, so no key crosses
//! the network between the two pods.

use std::collections::BTreeMap;

use tokio::sync::watch;
use van_proto::admin as rpb;

/// A Secret's data, as it changes: `None` while it does not exist (or is not known yet).
pub type SecretData = Option<BTreeMap<String, Vec<u8>>>;

/// Where Secrets come from (the Kubernetes API in a pod; a channel in tests).
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// Follows Secret `name` of the site's namespace.
    fn watch(&self, name: &str) -> watch::Receiver<SecretData>;
}

/// Keys of a profile's CA, certificate and key (as the controller writes them).
fn keys(profile: &str) -> [String; 3] {
    [
        format!("{profile}.ca.crt"),
        format!("{profile}.tls.crt"),
        format!("{profile}.tls.key"),
    ]
}

/// `cfg` with every TLS profile's material taken from `data` (Secret `secret`). A profile
/// whose material is missing is left out, with the links and link listeners naming it, and
/// reported in the returned map (entity → why) until the Secret has it.
pub fn fill(
    mut cfg: rpb::RouterConfig,
    secret: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
) -> (rpb::RouterConfig, BTreeMap<String, String>) {
    let mut waiting = BTreeMap::new();
    let text = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .filter(|v| !v.is_empty())
    };
    cfg.tls_profiles.retain_mut(|p| {
        let [ca, cert, key] = keys(&p.name);
        match (text(&ca), text(&cert), text(&key)) {
            (Some(ca), Some(cert), Some(key)) => {
                p.ca_pem = ca;
                p.cert_pem = cert;
                p.key_pem = key;
                true
            }
            _ => {
                let why = match data {
                    None => format!("waiting for Secret {secret}"),
                    Some(_) => format!("waiting for keys {ca}, {cert}, {key} in Secret {secret}"),
                };
                waiting.insert(p.name.clone(), why);
                false
            }
        }
    });
    let missing = |profile: &str| waiting.contains_key(profile);
    cfg.links.retain(|l| !missing(&l.tls_profile));
    cfg.link_listeners.retain(|l| !missing(&l.tls_profile));
    (cfg, waiting)
}

/// A [`SecretSource`] fed by hand: tests, and hosts where something else reads the Secrets.
#[derive(Debug, Default)]
pub struct ManualSecrets {
    secrets: std::sync::Mutex<BTreeMap<String, watch::Sender<SecretData>>>,
}

impl ManualSecrets {
    fn sender(&self, name: &str) -> watch::Sender<SecretData> {
        self.secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }

    /// Sets (or with `None` removes) Secret `name`.
    pub fn set(&self, name: &str, data: SecretData) {
        self.sender(name).send_replace(data);
    }
}

impl SecretSource for ManualSecrets {
    fn watch(&self, name: &str) -> watch::Receiver<SecretData> {
        self.sender(name).subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> rpb::RouterConfig {
        rpb::RouterConfig {
            tls_profiles: vec![
                rpb::TlsProfileConfig {
                    name: "site-server".into(),
                    ..Default::default()
                },
                rpb::TlsProfileConfig {
                    name: "link-east".into(),
                    ..Default::default()
                },
            ],
            link_listeners: vec![rpb::LinkListenerConfig {
                name: "inter-router".into(),
                tls_profile: "site-server".into(),
                ..Default::default()
            }],
            links: vec![rpb::LinkConfig {
                name: "east".into(),
                tls_profile: "link-east".into(),
                ..Default::default()
            }],
            tcp_listeners: vec![rpb::TcpListenerConfig {
                name: "svc-db-5432".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn material(profile: &str) -> [(String, Vec<u8>); 3] {
        let [a, b, c] = keys(profile);
        [
            (a, b"CA".to_vec()),
            (b, b"CERT".to_vec()),
            (c, b"KEY".to_vec()),
        ]
    }

    #[test]
    fn profiles_are_filled_from_the_secret_and_what_lacks_material_waits() {
        let (out, waiting) = fill(cfg(), "skupper-router-tls", None);
        assert!(out.tls_profiles.is_empty() && out.links.is_empty());
        assert!(out.link_listeners.is_empty());
        assert_eq!(out.tcp_listeners.len(), 1, "services do not wait for TLS");
        assert_eq!(
            waiting["link-east"],
            "waiting for Secret skupper-router-tls"
        );

        // The server's material is there; the new link's is not yet.
        let data: BTreeMap<_, _> = material("site-server").into_iter().collect();
        let (out, waiting) = fill(cfg(), "skupper-router-tls", Some(&data));
        assert_eq!(out.tls_profiles.len(), 1);
        let p = &out.tls_profiles[0];
        assert_eq!(
            (p.ca_pem.as_str(), p.cert_pem.as_str(), p.key_pem.as_str()),
            ("CA", "CERT", "KEY")
        );
        assert_eq!(out.link_listeners.len(), 1);
        assert!(out.links.is_empty());
        assert!(
            waiting["link-east"].contains("link-east.tls.key"),
            "{waiting:?}"
        );
        assert!(!waiting.contains_key("site-server"));
    }
}
