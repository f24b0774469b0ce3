//! The redeeming site's side of the claims endpoint.

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use super::{REFUSALS, SITE_ID_HEADER, SITE_NAME_HEADER, TIMEOUT, provider};
use crate::error::ClaimError;
use crate::token::{self, CertToken, ClaimToken, Token};

/// Redeems a claim token at its issuing site for a cert token; `now_unix` is the redeeming
/// site's time.
pub async fn redeem(
    t: &ClaimToken,
    site_id: &str,
    site_name: &str,
    now_unix: u64,
) -> Result<CertToken, ClaimError> {
    redeem_via(t, None, site_id, site_name, now_unix).await
}

/// [`redeem`], through an HTTP CONNECT proxy when one is given.
pub async fn redeem_via(
    t: &ClaimToken,
    proxy: Option<&van_proto::tunnel::Proxy>,
    site_id: &str,
    site_name: &str,
    now_unix: u64,
) -> Result<CertToken, ClaimError> {
    let fail = |reason: &'static str, detail: String, retry: bool| ClaimError {
        reason,
        detail,
        retry,
    };
    if let Some(e) = t.expires.filter(|e| *e <= now_unix) {
        // The issuer decides, but a token that says it has expired saves a round trip.
        return Err(fail(
            "expired",
            format!("the token expired at {}", crate::site::rfc3339(e)),
            false,
        ));
    }
    let url: hyper::Uri = t
        .url
        .parse()
        .map_err(|e| fail("protocol", format!("bad claim URL {:?}: {e}", t.url), false))?;
    let (Some(authority), Some(url_host)) = (url.authority(), url.host()) else {
        return Err(fail(
            "protocol",
            format!("claim URL {:?} names no host", t.url),
            false,
        ));
    };
    let authority = authority.as_str();
    let path = url.path();
    let target = format!("{url_host}:{}", url.port_u16().unwrap_or(443));
    // An IPv6 literal is bracketed in a URL, not in a server name.
    let host = url_host.trim_start_matches('[').trim_end_matches(']');
    let tcp = match proxy {
        Some(p) => {
            use van_proto::tunnel::TunnelError as T;
            let port = url.port_u16().unwrap_or(443);
            van_proto::tunnel::connect(p, host, port, TIMEOUT)
                .await
                .map_err(|e| {
                    // Credentials or a refusal by policy need the user; the rest may pass.
                    let retry = !matches!(e, T::AuthRequired { .. } | T::Refused { .. });
                    fail("proxy", e.to_string(), retry)
                })?
        }
        None => connect_direct(&target, host).await?,
    };
    tls_exchange(t, tcp, host, authority, path, site_id, site_name).await
}

/// A direct TCP connection to the claims endpoint.
async fn connect_direct(target: &str, host: &str) -> Result<TcpStream, ClaimError> {
    let fail = |reason: &'static str, detail: String, retry: bool| ClaimError {
        reason,
        detail,
        retry,
    };
    let addrs: Vec<_> = tokio::time::timeout(TIMEOUT, tokio::net::lookup_host(target))
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
    tcp.ok_or(last)
}

/// The claim over TLS on an open connection: POST, and the answer read.
async fn tls_exchange(
    t: &ClaimToken,
    tcp: TcpStream,
    host: &str,
    authority: &str,
    path: &str,
    site_id: &str,
    site_name: &str,
) -> Result<CertToken, ClaimError> {
    let fail = |reason: &'static str, detail: String, retry: bool| ClaimError {
        reason,
        detail,
        retry,
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(t.ca_cert.as_bytes()) {
        let c = c.map_err(|e| {
            let e = van_telemetry::pem_problem(&e);
            fail("certificate", format!("token CA: {e}"), false)
        })?;
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
        .header(SITE_ID_HEADER, site_id)
        .header(SITE_NAME_HEADER, site_name)
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
    read_answer(status, &body)
}

/// Reads the claims endpoint's answer: the cert token of a 200, else the refusal (JSON
/// `{"reason", "message"}`, or whatever text the endpoint sent).
pub fn read_answer(status: StatusCode, body: &[u8]) -> Result<CertToken, ClaimError> {
    let fail = |reason: &'static str, detail: String, retry: bool| ClaimError {
        reason,
        detail,
        retry,
    };
    let text = String::from_utf8_lossy(body);
    if status != StatusCode::OK {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let message = v["message"].as_str().unwrap_or(&text).to_string();
        // Held off after failed claims from this address (perhaps another site's behind the
        // same NAT): the hold ends by itself, so the claim is kept and tried again.
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(fail("rate-limited", message, true));
        }
        let reason = REFUSALS
            .into_iter()
            .find(|r| v["reason"].as_str() == Some(*r))
            .unwrap_or("refused-by-site");
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
