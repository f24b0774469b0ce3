//! The claims endpoint (HTTPS) where claim tokens are redeemed, and the client that redeems
//! them. Protocol: docs/token-format.md.
//!
//! `POST /<claim name>` with the token's secret as the body and the redeeming site in the
//! `skupper-site-id` / `skupper-site-name` headers. 200 returns a cert token (YAML); any
//! other status returns JSON `{"reason": ..., "message": ...}`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::controller::Controller;
use crate::error::ClaimError;
use crate::token::{self, CertToken, ClaimToken, Token};

const TIMEOUT: Duration = Duration::from_secs(10);
/// A secret and two headers fit easily; anything bigger is not a claim.
const MAX_BODY: usize = 4096;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS for the endpoint, from the site's server certificate.
pub fn server_tls(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves claims until `shutdown` completes.
pub async fn serve(
    controller: Arc<Controller>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let state = controller.state();
    let certs = state.certs.as_ref().expect("opened with certificates");
    let tls = match server_tls(&certs.server_cert, &certs.server_key) {
        Ok(t) => tokio_rustls::TlsAcceptor::from(t),
        Err(e) => {
            warn!(error = %e, "Claims endpoint disabled: bad server certificate");
            return;
        }
    };
    info!(addr = ?listener.local_addr().ok(), "Claims endpoint listening");
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "Claims accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let tls = tls.clone();
        let c = controller.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "Claims TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper::service::service_fn(move |req| {
                let c = c.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&c, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = tokio::time::timeout(TIMEOUT * 3, conn)
                .await
                .unwrap_or(Ok(()))
            {
                debug!(%peer, error = %e, "Claims connection failed");
            }
        });
    }
}

fn reply(status: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "reason": reason, "message": message }).to_string();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

async fn handle(c: &Controller, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "protocol",
            "use POST /<claim name>",
        );
    }
    let claim = req.uri().path().trim_start_matches('/').to_string();
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let site_id = header("skupper-site-id");
    let site_name = header("skupper-site-name");
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "protocol", "body too large"),
    };
    let Ok(secret) = std::str::from_utf8(&body) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "protocol",
            "the secret is not text",
        );
    };
    // The certificate names the requesting site; only characters a site id may hold.
    if !site_id.bytes().all(|b| b.is_ascii_hexdigit()) || site_id.len() > 64 {
        return reply(
            StatusCode::BAD_REQUEST,
            "protocol",
            "bad skupper-site-id header",
        );
    }
    match c.redeem(&claim, secret.trim(), &site_id).await {
        Ok(t) => {
            info!(claim, requester = %site_name, "Claim redeemed");
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/yaml")
                .body(Full::new(Bytes::from(t.to_yaml())))
                .expect("valid response")
        }
        Err(e) => {
            info!(claim, requester = %site_name, reason = e.reason, "Claim refused");
            let status = match e.reason {
                "unknown" => StatusCode::NOT_FOUND,
                "tampered" => StatusCode::FORBIDDEN,
                "expired" | "used-up" => StatusCode::GONE,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            reply(status, e.reason, &e.detail)
        }
    }
}

/// Redeems a claim token at its issuing site for a cert token.
pub async fn redeem(
    t: &ClaimToken,
    site_id: &str,
    site_name: &str,
) -> Result<CertToken, ClaimError> {
    let fail = |reason: &'static str, detail: String, retry: bool| ClaimError {
        reason,
        detail,
        retry,
    };
    if let Some(e) = t.expires.filter(|e| *e <= crate::site::now_unix()) {
        // The issuer decides, but a token that says it has expired saves a round trip.
        return Err(fail(
            "expired",
            format!("the token expired at {}", crate::site::rfc3339(e)),
            false,
        ));
    }
    let rest = t.url.strip_prefix("https://").unwrap_or(&t.url);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:443")
    };
    let addrs: Vec<_> = tokio::time::timeout(TIMEOUT, tokio::net::lookup_host(&target))
        .await
        .map_err(|_| fail("dns", format!("looking up {host} timed out"), true))?
        .map_err(|e| fail("dns", format!("cannot resolve {host}: {e}"), true))?
        .collect();
    let mut tcp = None;
    let mut last = fail("dns", format!("{host} has no addresses"), true);
    for a in addrs {
        match tokio::time::timeout(TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = fail("refused", format!("connection to {a} refused"), true)
            }
            Ok(Err(e)) => last = fail("unreachable", format!("connect to {a}: {e}"), true),
            Err(_) => last = fail("timeout", format!("connect to {a} timed out"), true),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(t.ca_cert.as_bytes()) {
        let c = c.map_err(|e| fail("certificate", format!("token CA: {e}"), false))?;
        roots
            .add(c)
            .map_err(|e| fail("certificate", format!("token CA: {e}"), false))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| fail("tls", e.to_string(), false))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| fail("protocol", format!("bad host in claim URL: {e}"), false))?;
    let tls = tokio::time::timeout(
        TIMEOUT,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .map_err(|_| fail("timeout", "TLS handshake timed out".into(), true))?
    .map_err(|e| {
        let s = e.to_string();
        if s.contains("certificate") || s.contains("Certificate") {
            fail(
                "certificate",
                format!("the claims endpoint's certificate does not match the token's CA: {s}"),
                false,
            )
        } else {
            fail("tls", s, true)
        }
    })?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| fail("protocol", e.to_string(), true))?;
    tokio::spawn(conn);
    let req = Request::post(path)
        .header("host", authority)
        .header("skupper-site-id", site_id)
        .header("skupper-site-name", site_name)
        .body(Full::new(Bytes::from(t.secret.clone())))
        .map_err(|e| fail("protocol", e.to_string(), false))?;
    let resp = tokio::time::timeout(TIMEOUT, send.send_request(req))
        .await
        .map_err(|_| fail("timeout", "no answer from the claims endpoint".into(), true))?
        .map_err(|e| fail("protocol", e.to_string(), true))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| fail("protocol", e.to_string(), true))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if status != StatusCode::OK {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let message = v["message"].as_str().unwrap_or(&text).to_string();
        let reason = match v["reason"].as_str() {
            Some("unknown") => "unknown",
            Some("tampered") => "tampered",
            Some("expired") => "expired",
            Some("used-up") => "used-up",
            _ => "refused-by-site",
        };
        return Err(fail(reason, message, status.is_server_error()));
    }
    match token::parse(&text) {
        Ok(Token::Cert(c)) => Ok(c),
        Ok(Token::Claim(_)) => Err(fail(
            "protocol",
            "the claims endpoint answered with another claim token".into(),
            false,
        )),
        Err(e) => Err(fail(
            "protocol",
            format!("the claims endpoint answered with an unreadable token: {e}"),
            false,
        )),
    }
}
