//! The site core shared by every platform: site options, the persisted state of a site
//! (identity, certificates, services, links, claim records) and its validation rules.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::error::{Invalid, StoreError};

/// Default ports, as Skupper uses them.
pub const DEFAULT_INTER_ROUTER_PORT: u16 = 55671;
pub const DEFAULT_EDGE_PORT: u16 = 45671;
pub const DEFAULT_CLAIMS_PORT: u16 = 8081;

/// Site options, chosen at `init` and fixed for the life of the site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SiteConfig {
    /// Network-unique id (random, 32 hex digits).
    pub id: String,
    pub name: String,
    pub mode: RouterMode,
    /// Host other sites dial for this site's link and claims endpoints.
    pub ingress_host: String,
    /// Address the link and claims endpoints bind to.
    #[serde(default = "any_host")]
    pub ingress_bind: String,
    /// Address service listeners bind to.
    pub listener_host: String,
    pub inter_router_port: u16,
    pub edge_port: u16,
    pub claims_port: u16,
    /// Ports other sites dial when they differ from the ports bound (a Kubernetes NodePort,
    /// or 443 behind an OpenShift Route or an Ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_ports: Option<Ports>,
    /// Host names other sites dial when each endpoint has its own (Routes, Ingress rules);
    /// else all are `ingress_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_hosts: Option<Hosts>,
    /// The site's web console (local platform; on Kubernetes the chart runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleSettings>,
}

/// Where the console serves and who may look.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsoleSettings {
    /// `internal` (users in the site's console-users directory) or `unsecured`.
    pub auth: String,
    /// Address it listens on.
    pub host: String,
    pub port: u16,
}

/// The console's port unless told otherwise (Skupper 1.x used 8010).
pub const DEFAULT_CONSOLE_PORT: u16 = 8010;

/// The console authentication modes.
pub const CONSOLE_AUTH: &[&str] = &["internal", "unsecured"];

/// The inter-router, edge and claims host names, as other sites see them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hosts {
    pub inter_router: String,
    pub edge: String,
    pub claims: String,
}

/// The inter-router, edge and claims ports, as other sites see them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Ports {
    pub inter_router: u16,
    pub edge: u16,
    pub claims: u16,
}

fn any_host() -> String {
    "0.0.0.0".into()
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RouterMode {
    Interior,
    Edge,
}

impl RouterMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RouterMode::Interior => "interior",
            RouterMode::Edge => "edge",
        }
    }

    pub fn parse(s: &str) -> Option<RouterMode> {
        match s {
            "interior" => Some(RouterMode::Interior),
            "edge" => Some(RouterMode::Edge),
            _ => None,
        }
    }
}

impl SiteConfig {
    /// The ports tokens carry.
    pub fn public_ports(&self) -> Ports {
        self.advertised_ports.unwrap_or(Ports {
            inter_router: self.inter_router_port,
            edge: self.edge_port,
            claims: self.claims_port,
        })
    }

    /// The host names tokens carry.
    pub fn public_hosts(&self) -> Hosts {
        self.advertised_hosts.clone().unwrap_or_else(|| Hosts {
            inter_router: self.ingress_host.clone(),
            edge: self.ingress_host.clone(),
            claims: self.ingress_host.clone(),
        })
    }

    /// The router's id: readable in logs, unique through the site id.
    pub fn router_id(&self) -> String {
        format!("{}-{}", self.name, &self.id[..8.min(self.id.len())])
    }

    /// Site `west`, interior or edge, for unit tests. Its bind and listener hosts differ,
    /// so a test sees which one an entity uses.
    #[cfg(test)]
    pub(crate) fn for_test(mode: RouterMode) -> SiteConfig {
        SiteConfig {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "west".into(),
            mode,
            ingress_host: "west.example".into(),
            ingress_bind: "10.0.0.1".into(),
            listener_host: "10.0.0.2".into(),
            inter_router_port: 55671,
            edge_port: 45671,
            claims_port: 8081,
            advertised_ports: None,
            advertised_hosts: None,
            console: None,
        }
    }

    /// Every problem with the options, at once.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut errs = Invalid::default();
        if self.id.len() < 8 || !self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            errs.push("id", "must be at least 8 hex digits");
        }
        if let Some(m) = dns_label_problem(&self.name, 40) {
            errs.push("name", m);
        }
        let hosts = self.public_hosts();
        for (field, host) in [
            ("ingress-host", &self.ingress_host),
            ("ingress-bind", &self.ingress_bind),
            ("listener-host", &self.listener_host),
            ("advertised-hosts.inter-router", &hosts.inter_router),
            ("advertised-hosts.edge", &hosts.edge),
            ("advertised-hosts.claims", &hosts.claims),
        ] {
            if let Some(m) = host_problem(host) {
                errs.push(field, m);
            }
        }
        for (field, port) in [
            ("inter-router-port", self.inter_router_port),
            ("edge-port", self.edge_port),
            ("claims-port", self.claims_port),
        ] {
            if port == 0 {
                errs.push(field, "must be a port number from 1 to 65535");
            }
        }
        if let Some(c) = &self.console {
            if !CONSOLE_AUTH.contains(&c.auth.as_str()) {
                errs.push(
                    "console.auth",
                    format!("{:?} is not internal or unsecured", c.auth),
                );
            }
            if let Some(m) = host_problem(&c.host) {
                errs.push("console.host", m);
            }
            if c.port == 0 {
                errs.push("console.port", "must be a port number from 1 to 65535");
            }
        }
        errs.into_result()
    }
}

/// Why `s` is not a DNS label of at most `max` characters (lowercase letters, digits, '-').
pub fn dns_label_problem(s: &str, max: usize) -> Option<String> {
    if s.is_empty() {
        Some("must not be empty".into())
    } else if s.len() > max {
        Some(format!("{s:?} is longer than {max} characters"))
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || s.starts_with('-')
        || s.ends_with('-')
    {
        Some(format!(
            "{s:?} may hold only lowercase letters, digits and '-', and must start and end with a letter or digit"
        ))
    } else {
        None
    }
}

/// Why `h` is not a host name or IP address.
pub fn host_problem(h: &str) -> Option<String> {
    if h.is_empty() {
        return Some("must not be empty".into());
    }
    if h.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let ok = h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    (!ok).then(|| format!("{h:?} is neither an IP address nor a host name"))
}

/// The default protocol: a byte stream, balanced per connection.
pub const PROTOCOL_TCP: &str = "tcp";
/// Every protocol a service may have. `http` and `http2` are balanced per request.
pub const PROTOCOLS: [&str; 3] = ["tcp", "http", "http2"];

/// A service: an address and ports other sites can reach, and where this site delivers it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceDef {
    pub address: String,
    pub protocol: String,
    pub ports: Vec<u16>,
    /// Unix seconds; the oldest of two conflicting definitions wins.
    pub created: u64,
    #[serde(default)]
    pub targets: Vec<Target>,
    /// What defined it: empty for the API and CLI, `service/<name>` for an annotated
    /// Kubernetes Service (which then owns it: removing the annotation removes it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Target {
    pub host: String,
    /// Target port per service port, in the order of `ServiceDef::ports`.
    pub ports: Vec<u16>,
}

impl ServiceDef {
    /// Same address, protocol and ports: two sites may both serve it.
    pub fn same_shape(&self, o: &ServiceDef) -> bool {
        self.address == o.address && self.protocol == o.protocol && self.ports == o.ports
    }

    pub fn shape(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        format!("{} {}", self.protocol, ports.join(","))
    }
}

/// Checks a service definition as a user gave it.
pub fn check_service(address: &str, ports: &[u32], protocol: &str) -> Result<Vec<u16>, Invalid> {
    let mut errs = Invalid::default();
    // Addresses become listener names and routing keys `<address>:<port>`.
    if let Some(m) = dns_label_problem(address, 48) {
        errs.push("address", m);
    }
    if !PROTOCOLS.contains(&protocol) {
        errs.push(
            "protocol",
            format!("{protocol:?} is not a protocol (tcp, http or http2)"),
        );
    }
    if ports.is_empty() {
        errs.push("port", "at least one port is required");
    }
    let mut out = Vec::new();
    for p in ports {
        match u16::try_from(*p) {
            Ok(p) if p > 0 => {
                if out.contains(&p) {
                    errs.push("port", format!("port {p} is given twice"));
                }
                out.push(p);
            }
            _ => errs.push("port", format!("{p} is not a port number (1-65535)")),
        }
    }
    errs.into_result().map(|()| out)
}

/// The protocol a request names, `tcp` when it names none.
pub fn default_protocol(p: &str) -> String {
    if p.is_empty() {
        PROTOCOL_TCP.into()
    } else {
        p.to_string()
    }
}

/// Checks a target as a user gave it for `svc`: no target ports means the service's own.
pub(crate) fn check_target(
    svc: &ServiceDef,
    host: &str,
    target_ports: &[u32],
) -> Result<Target, Invalid> {
    let mut errs = Invalid::default();
    if let Some(m) = host_problem(host) {
        errs.push("host", m);
    }
    let ports: Vec<u16> = if target_ports.is_empty() {
        svc.ports.clone()
    } else if target_ports.len() != svc.ports.len() {
        errs.push(
            "target-port",
            format!(
                "{} target port(s) given for {} service port(s)",
                target_ports.len(),
                svc.ports.len()
            ),
        );
        Vec::new()
    } else {
        target_ports
            .iter()
            .map(|p| match u16::try_from(*p) {
                Ok(p) if p > 0 => p,
                _ => {
                    errs.push("target-port", format!("{p} is not a port number (1-65535)"));
                    0
                }
            })
            .collect()
    };
    errs.into_result().map(|()| Target {
        host: host.to_string(),
        ports,
    })
}

/// A link to another site, made from a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LinkRecord {
    pub name: String,
    pub cost: u32,
    /// The cert token the link authenticates with, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<crate::token::CertToken>,
    /// A claim token not redeemed yet because its issuer could not be reached; retried in
    /// the background until it is redeemed or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<crate::token::ClaimToken>,
    /// Why the claim is not redeemed yet (`reason: detail`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub claim_error: String,
    /// The issuer refused the claim: retrying cannot help.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claim_refused: bool,
    /// What defined it: empty for the API and CLI, `secret/<name>` for a token Secret on
    /// Kubernetes (deleting the Secret deletes the link).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The HTTP CONNECT proxy the link (and its claim) goes through, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proxy: String,
}

impl LinkRecord {
    /// Id of the site at the other end.
    pub fn peer_id(&self) -> &str {
        match (&self.token, &self.claim) {
            (Some(t), _) => &t.generated_by,
            (None, Some(c)) => &c.generated_by,
            (None, None) => "",
        }
    }

    pub fn peer_name(&self) -> &str {
        match (&self.token, &self.claim) {
            (Some(t), _) => &t.site_name,
            (None, Some(c)) => &c.site_name,
            (None, None) => "",
        }
    }
}

/// The issuing side of a claim token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClaimRecord {
    pub name: String,
    pub secret: String,
    /// Unix seconds.
    pub expires: u64,
    pub uses_remaining: u32,
    pub uses_made: u32,
    pub cost: u32,
}

/// The site's certificate authority and the server certificate of its link endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SiteCerts {
    pub ca_cert: String,
    pub ca_key: String,
    pub server_cert: String,
    pub server_key: String,
    /// Host names the server certificate was issued for.
    pub server_hosts: Vec<String>,
    /// The client certificate a router of this site presents to the site's other routers
    /// (router pods linked to each other); issued on first start.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_cert: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_key: String,
}

/// Everything a controller persists. One document, written atomically.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SiteState {
    pub certs: Option<SiteCerts>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceDef>,
    #[serde(default)]
    pub links: BTreeMap<String, LinkRecord>,
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimRecord>,
}

impl SiteState {
    /// A stored state document, checked before the controller may use it. A document that
    /// exists but is empty, unreadable or without its certificates is refused: starting
    /// from it would mint a new CA and silently cut the site off from every linked site.
    pub fn parse(bytes: &[u8]) -> Result<SiteState, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err("it is empty".into());
        }
        let state: SiteState =
            serde_yaml_ng::from_slice(bytes).map_err(|e| format!("it is not a site state: {e}"))?;
        let Some(c) = &state.certs else {
            return Err("it holds no certificates (every started site has its CA there)".into());
        };
        let mut problems = Vec::new();
        for (field, pem, key) in [
            ("certs.ca-cert", &c.ca_cert, false),
            ("certs.ca-key", &c.ca_key, true),
            ("certs.server-cert", &c.server_cert, false),
            ("certs.server-key", &c.server_key, true),
            ("certs.peer-cert", &c.peer_cert, false),
            ("certs.peer-key", &c.peer_key, true),
        ] {
            if pem.is_empty() && field.starts_with("certs.peer") {
                continue;
            }
            if let Err(e) = pem_check(pem.as_bytes(), key) {
                problems.push(format!("{field}: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(state)
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Whether `pem` holds at least one certificate (or exactly one private key).
fn pem_check(pem: &[u8], key: bool) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let problem = |e: rustls::pki_types::pem::Error| van_telemetry::pem_problem(&e);
    if key {
        PrivateKeyDer::from_pem_slice(pem).map_err(problem)?;
    } else {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(problem)?;
        if certs.is_empty() {
            return Err("no certificate in it".into());
        }
    }
    Ok(())
}

/// What [`SiteStore`] calls return: I/O (a file, the API server) the caller awaits.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where a platform keeps a site's state. The controller makes one change at a time (load,
/// change, save), so a store needs no locking of its own.
pub trait SiteStore: Send + Sync + std::fmt::Debug {
    fn load(&self) -> StoreFuture<'_, SiteState>;
    fn save<'a>(&'a self, state: &'a SiteState) -> StoreFuture<'a, ()>;
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Random lowercase hex of `bytes` bytes.
pub fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A random secret of `n` letters and digits.
pub fn random_secret(n: usize) -> String {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system random source");
    // 256 is not a multiple of the alphabet size; the bias is negligible for a secret of
    // this length (still over 120 bits).
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

pub fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub fn parse_rfc3339(s: &str) -> Option<u64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
}
