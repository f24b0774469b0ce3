//! The site's certificate authority and the certificates it issues: the server certificate
//! of the link and claims endpoints, and client certificates handed out in tokens.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::site::SiteCerts;

/// Certificates issued by a site CA are valid this long.
const LEAF_DAYS: i64 = 5 * 365;
const CA_DAYS: i64 = 10 * 365;

#[derive(Debug, thiserror::Error)]
#[error("certificate: {0}")]
pub struct CertError(String);

fn err(e: impl std::fmt::Display) -> CertError {
    CertError(e.to_string())
}

fn ca_params(site_id: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("skupper-site-ca {site_id}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    p.not_after = p.not_before + time::Duration::days(CA_DAYS);
    p
}

/// The issuer rebuilt from the stored key: its name and key match the stored CA certificate,
/// so what it signs chains to that certificate.
fn issuer(site_id: &str, certs: &SiteCerts) -> Result<Issuer<'static, KeyPair>, CertError> {
    let key = KeyPair::from_pem(&certs.ca_key).map_err(err)?;
    Ok(Issuer::new(ca_params(site_id), key))
}

fn leaf(
    cn: &str,
    hosts: &[String],
    client: bool,
    server: bool,
) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    for h in hosts {
        p.subject_alt_names
            .push(match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.clone().try_into().map_err(err)?),
            });
    }
    p.extended_key_usages = Vec::new();
    if server {
        p.extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if client {
        p.extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    p.not_after = p.not_before + time::Duration::days(LEAF_DAYS);
    Ok(p)
}

/// Host names the server certificate must hold: the hosts other sites dial, plus loopback
/// names so sites on one host can always reach each other.
pub fn server_hosts<'a>(public: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut h: Vec<String> = public.into_iter().map(str::to_string).collect();
    h.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    h.sort();
    h.dedup();
    h
}

/// A new CA and server certificate for a site.
pub fn new_site_certs(site_id: &str, hosts: Vec<String>) -> Result<SiteCerts, CertError> {
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca = ca_params(site_id).self_signed(&ca_key).map_err(err)?;
    let mut certs = SiteCerts {
        ca_cert: ca.pem(),
        ca_key: ca_key.serialize_pem(),
        server_cert: String::new(),
        server_key: String::new(),
        server_hosts: Vec::new(),
        peer_cert: String::new(),
        peer_key: String::new(),
    };
    reissue_server(site_id, &mut certs, hosts)?;
    Ok(certs)
}

/// Issues a new server certificate (e.g. after the ingress host changed).
pub fn reissue_server(
    site_id: &str,
    certs: &mut SiteCerts,
    hosts: Vec<String>,
) -> Result<(), CertError> {
    let issuer = issuer(site_id, certs)?;
    let key = KeyPair::generate().map_err(err)?;
    // Routers dial one another as clients with the same profile, so both usages.
    let cert = leaf(
        &format!("skupper-site-server {site_id}"),
        &hosts,
        true,
        true,
    )?
    .signed_by(&key, &issuer)
    .map_err(err)?;
    certs.server_cert = cert.pem();
    certs.server_key = key.serialize_pem();
    certs.server_hosts = hosts;
    Ok(())
}

/// A client certificate for a site that will link to this one.
pub fn issue_client(
    site_id: &str,
    certs: &SiteCerts,
    subject: &str,
) -> Result<(String, String), CertError> {
    let issuer = issuer(site_id, certs)?;
    let key = KeyPair::generate().map_err(err)?;
    let cert = leaf(subject, &[], true, false)?
        .signed_by(&key, &issuer)
        .map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the site issues verifies against its CA with rustls, as the routers will.
    #[test]
    fn issued_certificates_chain_to_the_site_ca() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let certs = new_site_certs("abcdef0123456789", server_hosts(["west.example"])).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(certs.ca_cert.as_bytes()).unwrap())
            .unwrap();
        let roots = std::sync::Arc::new(roots);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(certs.server_cert.as_bytes()).unwrap();
        for host in ["west.example", "localhost", "127.0.0.1"] {
            server
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from(host).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{host}: {e}"));
        }
        assert!(
            server
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from("east.example").unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .is_err()
        );
        let client = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        let (c, _) = issue_client("abcdef0123456789", &certs, "east").unwrap();
        let c = CertificateDer::from_pem_slice(c.as_bytes()).unwrap();
        client.verify_client_cert(&c, &[], UnixTime::now()).unwrap();
        // Another site's CA does not vouch for it.
        let other = new_site_certs("9999999999999999", server_hosts(["x"])).unwrap();
        let (o, _) = issue_client("9999999999999999", &other, "east").unwrap();
        let o = CertificateDer::from_pem_slice(o.as_bytes()).unwrap();
        assert!(client.verify_client_cert(&o, &[], UnixTime::now()).is_err());
    }
}
