//! The issuing site's side of the claims endpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::{SITE_ID_HEADER, SITE_NAME_HEADER, TIMEOUT, provider};
use crate::error::ClaimError;
use crate::token::CertToken;

/// A secret and two headers fit easily; anything bigger is not a claim.
const MAX_BODY: usize = 4096;

/// What the endpoint asks of the site: check a claim and, if it holds, issue a cert token for
/// the site `requester`. A refused claim must change nothing.
pub trait Issuer: Send + Sync + 'static {
    fn redeem(
        &self,
        claim: &str,
        secret: &str,
        requester: &str,
    ) -> impl Future<Output = Result<CertToken, ClaimError>> + Send;
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

/// Serves claims on `listener` with `tls` until `shutdown` completes.
pub async fn serve<I: Issuer>(
    issuer: Arc<I>,
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tokio_rustls::TlsAcceptor::from(tls);
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
        let issuer = issuer.clone();
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
                let issuer = issuer.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&*issuer, req).await) }
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

async fn handle(
    issuer: &impl Issuer,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
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
    let site_id = header(SITE_ID_HEADER);
    let site_name = header(SITE_NAME_HEADER);
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
    match issuer.redeem(&claim, secret.trim(), &site_id).await {
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
