//! `skupper debug link [NAME]`: follows an outgoing link the way the router does, one step at
//! a time, and says which step fails, why, and what to do.
//!
//! Steps: the token (its own certificate, not one of this very site), name resolution, the
//! TCP connection (refused, timed out, unreachable), the TLS handshake (each side's certificate:
//! unknown CA, expired, not yet valid, names that do not match, or something in between that
//! does not speak TLS or presents a certificate of another CA), then the router: the probe
//! offers a protocol version no router speaks, and a router of this network answers with a
//! GoAway naming its own version, so the probe learns the peer is a router that accepted this
//! site's certificate without becoming its neighbour. A link still waiting for its claim is
//! checked up to the TLS handshake with the claims endpoint (the claim itself is not spent).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use van_controller::local::LocalStore;
use van_controller::site::{LinkRecord, RouterMode, SiteConfig, now_unix, rfc3339};
use van_controller::token::{CertToken, ClaimToken};
use van_proto::controller as pb;
use van_router::wire::{self, Frame};

use crate::Ctx;
use crate::client;

/// How long each network step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// A version no router speaks: the answer names the peer's own.
const PROBE_VERSION: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Worth knowing, neither pass nor fail.
    Note,
}

/// One step of the diagnosis.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    /// What to do, for a failed step (or a note).
    pub advice: Option<String>,
}

impl Step {
    fn pass(name: &'static str, detail: impl Into<String>) -> Step {
        Step {
            name,
            outcome: Outcome::Pass,
            detail: detail.into(),
            advice: None,
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, advice: impl Into<String>) -> Step {
        Step {
            name,
            outcome: Outcome::Fail,
            detail: detail.into(),
            advice: Some(advice.into()),
        }
    }
    fn note(name: &'static str, detail: impl Into<String>, advice: Option<String>) -> Step {
        Step {
            name,
            outcome: Outcome::Note,
            detail: detail.into(),
            advice,
        }
    }
}

/// `skupper debug link [NAME]` on the local platform.
pub async fn run(
    ctx: &Ctx,
    name: Option<&str>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let dir = ctx.site_dir();
    if !dir.exists() {
        return Err(client::not_enabled(ctx));
    }
    let cfg = dir.read_config()?;
    let state = LocalStore::new(&dir).load_now()?;
    let name = name.filter(|n| *n != "all");
    let links: Vec<&LinkRecord> = state
        .links
        .values()
        .filter(|l| name.is_none_or(|n| l.name == n))
        .collect();
    if links.is_empty() {
        match name {
            Some(n) => anyhow::bail!(
                "this site has no link named {n:?} (its links: {}); `debug link` follows links \
                 this site dials; for a link from another site, run it there",
                names(&state.links)
            ),
            None => {
                writeln!(
                    out,
                    "This site dials no links. `skupper debug link` follows links this site \
                     dials; for links from other sites, run it at those sites."
                )?;
                return Ok(());
            }
        }
    }
    // What the site itself says, when its controller answers.
    let reported = match client::connect(&dir.controller_target()).await {
        Ok(mut c) => c
            .list_links(pb::ListLinksRequest {})
            .await
            .map(|r| r.into_inner().links)
            .ok(),
        Err(_) => None,
    };
    let mut failed = Vec::new();
    for l in links {
        let status = reported.as_ref().and_then(|r| {
            r.iter()
                .find(|s| s.name == l.name && s.direction != "incoming")
        });
        let steps = diagnose(&cfg, l, status).await;
        render(l, &steps, out)?;
        if let Some(s) = steps.iter().find(|s| s.outcome == Outcome::Fail) {
            failed.push(format!("{}: {}", l.name, s.name));
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("failed steps: {}", failed.join(", "));
    }
    Ok(())
}

fn names(links: &std::collections::BTreeMap<String, LinkRecord>) -> String {
    if links.is_empty() {
        "none".into()
    } else {
        links.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn render(l: &LinkRecord, steps: &[Step], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    let to = match (&l.token, &l.claim) {
        (Some(t), _) => format!("site {}", t.site_name),
        (None, Some(c)) => format!("site {} (claim not redeemed yet)", c.site_name),
        (None, None) => "an unknown site".into(),
    };
    writeln!(out, "Link {} to {to}", l.name)?;
    for s in steps {
        let mark = match s.outcome {
            Outcome::Pass => "ok  ",
            Outcome::Fail => "FAIL",
            Outcome::Note => "note",
        };
        writeln!(out, "  {mark} {:<8} {}", s.name, s.detail)?;
        if let Some(a) = &s.advice {
            writeln!(out, "       {:<8} what to do: {a}", "")?;
        }
    }
    match steps.iter().find(|s| s.outcome == Outcome::Fail) {
        Some(s) => writeln!(out, "  The link fails at step {:?}.", s.name)?,
        None => writeln!(out, "  Every step works.")?,
    }
    Ok(())
}

/// The steps for one link; stops at the first failure.
pub async fn diagnose(
    cfg: &SiteConfig,
    l: &LinkRecord,
    reported: Option<&pb::LinkStatus>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(s) = reported {
        let detail = if s.state == "active" {
            "the site reports the link active".to_string()
        } else {
            format!(
                "the site reports the link {} ({}: {})",
                s.state, s.reason, s.detail
            )
        };
        steps.push(Step::note("site", detail, None));
    }
    if l.proxy.is_empty()
        && let Some(p) = proxy_note()
    {
        steps.push(p);
    }
    match (&l.token, &l.claim) {
        (Some(t), _) => link_steps(cfg, t, &l.proxy, &mut steps).await,
        (None, Some(c)) => claim_steps(cfg, l, c, &mut steps).await,
        (None, None) => steps.push(Step::fail(
            "token",
            "the link has neither a certificate nor a claim",
            "delete the link and create it again from a new token",
        )),
    }
    steps
}

/// Links dial directly; a proxy set for this shell is worth a word.
fn proxy_note() -> Option<Step> {
    let (var, value) = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|v| {
            std::env::var(v)
                .ok()
                .filter(|x| !x.is_empty())
                .map(|x| (*v, x))
        })?;
    Some(Step::note(
        "proxy",
        format!("{var} is set ({value}); links dial the other site directly, not through it"),
        Some(
            "if this host can reach the other site only through that proxy, the link cannot \
             come up until links can use one"
                .into(),
        ),
    ))
}

async fn link_steps(cfg: &SiteConfig, t: &CertToken, proxy: &str, steps: &mut Vec<Step>) {
    if t.generated_by == cfg.id {
        steps.push(Step::fail(
            "token",
            "the token was issued by this very site",
            "a site cannot link to itself: create the token at the other site",
        ));
        return;
    }
    let ours = match cert_info(t.cert.as_bytes()) {
        Ok(c) => c,
        Err(e) => {
            steps.push(Step::fail(
                "token",
                format!("the link's client certificate cannot be read: {e}"),
                "delete the link and create it again from a new token",
            ));
            return;
        }
    };
    let now = now_unix();
    if ours.not_after < now {
        steps.push(Step::fail(
            "token",
            format!(
                "this site's client certificate for the link expired at {}",
                rfc3339(ours.not_after)
            ),
            "get a new token from the other site and create the link again",
        ));
        return;
    }
    steps.push(Step::pass(
        "token",
        format!(
            "client certificate {:?} from the CA of site {}, valid until {}",
            ours.subject,
            t.site_name,
            rfc3339(ours.not_after)
        ),
    ));
    let (host, port, role) = match cfg.mode {
        RouterMode::Interior => (
            &t.inter_router_host,
            t.inter_router_port,
            van_proto::wire::Role::InterRouterControl,
        ),
        RouterMode::Edge => (
            &t.edge_host,
            t.edge_port,
            van_proto::wire::Role::EdgeControl,
        ),
    };
    let Some(tcp) = reach_via(proxy, host, port, steps).await else {
        return;
    };
    let tls = match client_tls(&t.ca_cert, Some((&t.cert, &t.key))) {
        Ok(c) => c,
        Err(e) => {
            steps.push(Step::fail(
                "tls",
                format!("the token's certificates cannot be used: {e}"),
                "delete the link and create it again from a new token",
            ));
            return;
        }
    };
    let Some(stream) = handshake(tls, tcp, host, port, &ours, steps).await else {
        return;
    };
    steps.push(router_probe(stream, cfg, role, &ours).await);
}

async fn claim_steps(cfg: &SiteConfig, l: &LinkRecord, c: &ClaimToken, steps: &mut Vec<Step>) {
    if c.generated_by == cfg.id {
        steps.push(Step::fail(
            "token",
            "the token was issued by this very site",
            "a site cannot link to itself: create the token at the other site",
        ));
        return;
    }
    if l.claim_refused {
        steps.push(Step::fail(
            "claim",
            format!("the issuing site refused the claim: {}", l.claim_error),
            "the token cannot be used again: get a new token and create the link again",
        ));
        return;
    }
    let why = if l.claim_error.is_empty() {
        "not tried yet".to_string()
    } else {
        format!("last attempt: {}", l.claim_error)
    };
    steps.push(Step::note(
        "claim",
        format!("the claim at {} is not redeemed yet ({why})", c.url),
        None,
    ));
    let Ok(uri) = c.url.parse::<hyper::Uri>() else {
        steps.push(Step::fail(
            "claim",
            format!("the claim URL {:?} cannot be parsed", c.url),
            "get a new token and create the link again",
        ));
        return;
    };
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let Some(tcp) = reach_via(&l.proxy, &host, port, steps).await else {
        return;
    };
    let tls = match client_tls(&c.ca_cert, None) {
        Ok(t) => t,
        Err(e) => {
            steps.push(Step::fail(
                "tls",
                format!("the token's CA cannot be used: {e}"),
                "get a new token and create the link again",
            ));
            return;
        }
    };
    let none = CertInfo::default();
    if handshake(tls, tcp, &host, port, &none, steps)
        .await
        .is_some()
    {
        steps.push(Step::note(
            "claim",
            "the claims endpoint answers with the certificate the token expects; the site \
             redeems the claim by itself within seconds",
            None,
        ));
    }
}

/// The TCP connection as the link makes it: through its proxy when it has one.
async fn reach_via(
    proxy: &str,
    host: &str,
    port: u16,
    steps: &mut Vec<Step>,
) -> Option<(TcpStream, SocketAddr)> {
    if proxy.is_empty() {
        return reach(host, port, steps).await;
    }
    use van_proto::tunnel::{Proxy, TunnelError as T};
    let p = match Proxy::parse(proxy) {
        Ok(p) => p,
        Err(e) => {
            steps.push(Step::fail(
                "proxy",
                e,
                "delete the link and create it again with a valid --proxy",
            ));
            return None;
        }
    };
    match van_proto::tunnel::connect(&p, host, port, STEP_TIMEOUT).await {
        Ok(s) => {
            let addr = s.peer_addr().ok()?;
            steps.push(Step::pass(
                "proxy",
                format!("proxy {p} opened a tunnel to {host}:{port}"),
            ));
            Some((s, addr))
        }
        Err(e) => {
            let advice = match &e {
                T::Connect { .. } | T::Timeout { .. } => {
                    "check the proxy's address and that this host may reach it"
                }
                T::AuthRequired { .. } => {
                    "create the link again with the credentials in --proxy (user:password@)"
                }
                T::Refused { .. } => {
                    "the proxy's rules forbid this destination or port: ask for the other \
                     site's link port to be allowed (CONNECT to any port, not only 443)"
                }
                T::Protocol { .. } => "the address given as proxy is not an HTTP proxy",
            };
            steps.push(Step::fail("proxy", e.to_string(), advice));
            None
        }
    }
}

/// Resolution and TCP connection; pushes their steps and returns the connection.
async fn reach(host: &str, port: u16, steps: &mut Vec<Step>) -> Option<(TcpStream, SocketAddr)> {
    let target = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host(&target)).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                steps.push(Step::fail(
                    "resolve",
                    format!("{host} does not resolve: {e}"),
                    "check the name in the token (the other site's --ingress-host) and this \
                     host's DNS; a name only the other network knows needs an address or a \
                     name both can resolve",
                ));
                return None;
            }
            Err(_) => {
                steps.push(Step::fail(
                    "resolve",
                    format!("resolving {host} took more than {STEP_TIMEOUT:?}"),
                    "check this host's DNS servers",
                ));
                return None;
            }
        };
    let list = addrs
        .iter()
        .map(|a| a.ip().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    steps.push(Step::pass("resolve", format!("{host} is {list}")));
    let mut failures = Vec::new();
    for a in &addrs {
        let started = Instant::now();
        match tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                steps.push(Step::pass(
                    "connect",
                    format!(
                        "TCP connection to {a} in {:.1} ms",
                        started.elapsed().as_secs_f64() * 1000.0
                    ),
                ));
                return Some((s, *a));
            }
            Ok(Err(e)) => failures.push(connect_failure(*a, &e)),
            Err(_) => failures.push((
                format!("no answer from {a} within {STEP_TIMEOUT:?}"),
                "something drops the packets (a firewall, a security group, or the host is \
                 down); allow TCP from this host to that port",
            )),
        }
    }
    let (detail, advice) = failures
        .pop()
        .expect("lookup_host gives at least one address");
    steps.push(Step::fail("connect", detail, advice));
    None
}

/// What a failed TCP connect means and what to do about it.
pub fn connect_failure(a: SocketAddr, e: &std::io::Error) -> (String, &'static str) {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => (
            format!("{a} refused the connection: nothing listens on that port"),
            "check that the other site is running (`skupper status` there) and that the port \
             in the token is still its link port; a firewall that rejects looks the same",
        ),
        K::HostUnreachable | K::NetworkUnreachable => (
            format!("{a} is unreachable from this host ({e})"),
            "this host has no route to that address: check the address in the token and this \
             host's network",
        ),
        K::PermissionDenied => (
            format!("connecting to {a} is not permitted ({e})"),
            "a firewall rule on this host blocks the connection",
        ),
        _ => (
            format!("connecting to {a} failed: {e}"),
            "check the network between the two hosts",
        ),
    }
}

/// What a certificate says about itself.
#[derive(Debug, Clone, Default)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub names: Vec<String>,
    pub not_before: u64,
    pub not_after: u64,
}

/// The first certificate of a PEM text.
fn cert_info(pem: &[u8]) -> Result<CertInfo, String> {
    let der = CertificateDer::from_pem_slice(pem).map_err(|e| van_telemetry::pem_problem(&e))?;
    der_info(&der)
}

fn der_info(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, c) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    let cn = |n: &x509_parser::x509::X509Name<'_>| {
        n.iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map_or_else(|| n.to_string(), str::to_string)
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).expect("4")).to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).expect("16")).to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let secs = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    Ok(CertInfo {
        subject: cn(c.subject()),
        issuer: cn(c.issuer()),
        names,
        not_before: secs(c.validity().not_before),
        not_after: secs(c.validity().not_after),
    })
}

/// Verifies as the router does (webpki against the token's CA), keeping what the server
/// presented so a refusal can say what it was.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().expect("seen") = Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    verifier: Arc<Recording>,
    ca: CertInfo,
}

fn client_tls(ca_pem: &str, client: Option<(&str, &str)>) -> Result<ClientTls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let mut ca = None;
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| format!("CA: {}", van_telemetry::pem_problem(&e)))?;
        ca.get_or_insert(der_info(&c)?);
        roots.add(c).map_err(|e| format!("CA: {e}"))?;
    }
    let ca = ca.ok_or("the token holds no CA certificate")?;
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let verifier = Arc::new(Recording {
        inner,
        seen: Mutex::new(None),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {}", van_telemetry::pem_problem(&e)))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| format!("client key: {}", van_telemetry::pem_problem(&e)))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(ClientTls {
        config: Arc::new(config),
        verifier,
        ca,
    })
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// The TLS handshake, as the router makes it (TLS 1.3, server name = the host dialled).
async fn handshake(
    tls: ClientTls,
    (tcp, addr): (TcpStream, SocketAddr),
    host: &str,
    port: u16,
    ours: &CertInfo,
    steps: &mut Vec<Step>,
) -> Option<Tls> {
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        steps.push(Step::fail(
            "tls",
            format!("{host:?} is not a valid TLS server name"),
            "the token names its host wrongly: get a new token",
        ));
        return None;
    };
    let connect = tokio_rustls::TlsConnector::from(tls.config.clone()).connect(name, tcp);
    let result = tokio::time::timeout(STEP_TIMEOUT, connect).await;
    let seen = tls.verifier.seen.lock().expect("seen").clone();
    let seen = seen.and_then(|c| der_info(&c).ok());
    match result {
        Ok(Ok(s)) => {
            let detail = match &seen {
                Some(c) => format!(
                    "{addr} presented {:?} from the token's CA, valid for {} until {}",
                    c.subject,
                    c.names.join(", "),
                    rfc3339(c.not_after)
                ),
                None => format!("{addr} completed the handshake"),
            };
            steps.push(Step::pass("tls", detail));
            Some(s)
        }
        Ok(Err(e)) => {
            let (detail, advice) = tls_failure(&e, host, port, seen.as_ref(), &tls.ca, ours);
            steps.push(Step::fail("tls", detail, advice));
            None
        }
        Err(_) => {
            steps.push(Step::fail(
                "tls",
                format!("{addr} accepted TCP but did not complete a TLS handshake within {STEP_TIMEOUT:?}"),
                "something other than a site's router listens there, or a proxy holds the \
                 connection: check what runs on that port",
            ));
            None
        }
    }
}

/// Which side refused which certificate, and why.
fn tls_failure(
    e: &std::io::Error,
    host: &str,
    port: u16,
    seen: Option<&CertInfo>,
    ca: &CertInfo,
    ours: &CertInfo,
) -> (String, String) {
    use rustls::{CertificateError as C, Error as E};
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return (
            format!("the TLS handshake with {host}:{port} failed: {e}"),
            "what answers there closed the connection: it may not be a site's link port, or a \
             proxy or firewall ends TLS connections"
                .into(),
        );
    };
    let now = now_unix();
    let presented = |c: &CertInfo| {
        format!(
            "{host}:{port} presented {:?} (issued by {:?}, for {})",
            c.subject,
            c.issuer,
            if c.names.is_empty() {
                "no names".to_string()
            } else {
                c.names.join(", ")
            }
        )
    };
    match (inner, seen) {
        (E::InvalidCertificate(C::UnknownIssuer | C::BadSignature), Some(c)) => {
            if c.issuer.starts_with("skupper-site-ca") {
                (
                    format!(
                        "{}, not by the token's CA {:?}: the site there is not the one that \
                         issued the token",
                        presented(c),
                        ca.subject
                    ),
                    "the other site was deleted and created again since the token was made, or \
                     another site now uses that host and port: get a new token from it"
                        .into(),
                )
            } else {
                (
                    format!("{}, which is not a site's CA", presented(c)),
                    "something between the sites (a TLS-inspecting proxy or firewall) or another \
                     service answers on that port: links need a direct TCP path or a proxy that \
                     passes TLS through"
                        .into(),
                )
            }
        }
        (E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }), Some(c)) => (
            format!(
                "{}, which expired at {} (now {})",
                presented(c),
                rfc3339(c.not_after),
                rfc3339(now)
            ),
            "the other site's certificate must be renewed; if it is recent, check both hosts' \
             clocks"
                .into(),
        ),
        (E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }), Some(c)) => (
            format!(
                "{}, which is valid only from {} (this host's time is {})",
                presented(c),
                rfc3339(c.not_before),
                rfc3339(now)
            ),
            "the two hosts' clocks differ: set them right (NTP)".into(),
        ),
        (E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }), Some(c)) => {
            (
                format!(
                    "{}; the link dials {host:?}, which is not among them",
                    presented(c)
                ),
                "the other site's host name changed since its certificate was made: make it use a \
             name its certificate holds (--ingress-host), or get a token naming one of those"
                    .into(),
            )
        }
        (E::AlertReceived(a), _) => {
            if ours.not_after != 0 && ours.not_after < now {
                (
                    format!(
                        "the other site refused this site's client certificate (alert {a:?}): it \
                         expired at {}",
                        rfc3339(ours.not_after)
                    ),
                    "get a new token from the other site and create the link again".into(),
                )
            } else {
                (
                    format!(
                        "the other site refused this site's client certificate {:?} (alert {a:?})",
                        ours.subject
                    ),
                    "the other site no longer trusts the CA that issued the token (it was \
                     created again, or its CA was replaced): get a new token from it"
                        .into(),
                )
            }
        }
        (E::InvalidMessage(_) | E::PeerIncompatible(_), _) => (
            format!("what answers on {host}:{port} does not speak TLS 1.3 ({inner})"),
            "another service (or an HTTP proxy) listens on that port: check the port in the \
             token against the other site's link port"
                .into(),
        ),
        (other, _) => (
            format!("the TLS handshake with {host}:{port} failed: {other}"),
            "check what listens on that port and the certificates of both sites".into(),
        ),
    }
}

/// Offers a version no router speaks; a router of this network answers with a GoAway naming
/// its own version.
async fn router_probe(
    mut s: Tls,
    cfg: &SiteConfig,
    role: van_proto::wire::Role,
    ours: &CertInfo,
) -> Step {
    let probe = Frame::Handshake(van_proto::wire::Handshake {
        version: PROBE_VERSION,
        router_id: format!("{}-debug-link", cfg.name),
        instance: 0,
        role: role as i32,
        link_id: 0,
        cost: 1,
        site_id: cfg.id.clone(),
        mode: cfg.mode.as_str().to_string(),
    });
    let mut bytes = BytesMut::new();
    probe.encode_to(&mut bytes);
    let exchange = async {
        s.write_all(&bytes).await?;
        s.flush().await?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            match wire::decode(&mut buf) {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e.to_string(),
                    ));
                }
            }
            if s.read_buf(&mut buf).await? == 0 {
                return Ok(None);
            }
        }
    };
    let answer = tokio::time::timeout(STEP_TIMEOUT, exchange).await;
    match answer {
        Ok(Ok(Some(Frame::GoAway(g)))) => match speaks(&g.reason) {
            Some(v) if v == wire::VERSION => Step::pass(
                "router",
                format!("a router of the network answers (protocol version {v}, as this site's)"),
            ),
            Some(v) => Step::fail(
                "router",
                format!(
                    "the router there speaks protocol version {v}; this site speaks {}",
                    wire::VERSION
                ),
                "run the same release at both sites",
            ),
            None => Step::fail(
                "router",
                format!("the router there refused the link: {}", g.reason),
                "see the other site's router log for this refusal",
            ),
        },
        Ok(Ok(Some(Frame::Handshake(h)))) => Step::note(
            "router",
            format!(
                "router {} of site {} answered a probe it should have refused (version {})",
                h.router_id, h.site_id, h.version
            ),
            None,
        ),
        Ok(Ok(Some(other))) => Step::fail(
            "router",
            format!("the other end answered with an unexpected frame {other:?}"),
            "something other than a site's router listens on that port",
        ),
        Ok(Ok(None)) => Step::fail(
            "router",
            "the other end closed the connection without a word",
            "it is not a router of this network, or it refused this site: see its log",
        ),
        Ok(Err(e)) => {
            if let Some(rustls::Error::AlertReceived(a)) =
                e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                // With TLS 1.3 a refused client certificate is told after the handshake.
                Step::fail(
                    "tls",
                    format!(
                        "the other site refused this site's client certificate {:?} (alert {a:?})",
                        ours.subject
                    ),
                    "the other site no longer trusts the CA that issued the token (it was \
                     created again, or its CA was replaced): get a new token from it",
                )
            } else {
                Step::fail(
                    "router",
                    format!("reading the router's answer failed: {e}"),
                    "see the other site's router log",
                )
            }
        }
        Err(_) => Step::fail(
            "router",
            format!("no answer to the router handshake within {STEP_TIMEOUT:?}"),
            "something other than a site's router holds that port",
        ),
    }
}

/// The version in a router's refusal "... (this router speaks N) ...".
fn speaks(reason: &str) -> Option<u32> {
    let rest = reason.split_once("this router speaks ")?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_a_refusal() {
        let r = "protocol version 4294967295 not supported (this router speaks 1) \
                 (listener inter-router takes inter-router links)";
        assert_eq!(speaks(r), Some(1));
        assert_eq!(speaks("peer uses this router's own id"), None);
    }

    #[test]
    fn refused_and_unreachable_connections_say_what_to_check() {
        let a: SocketAddr = "127.0.0.1:55671".parse().unwrap();
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let (d, advice) = connect_failure(a, &refused);
        assert!(d.contains("nothing listens"), "{d}");
        assert!(advice.contains("skupper status"), "{advice}");
        let unreachable = std::io::Error::from(std::io::ErrorKind::NetworkUnreachable);
        assert!(connect_failure(a, &unreachable).0.contains("unreachable"));
    }
}
