//! Token files: YAML shaped like a Kubernetes Secret, so one file works on every platform.
//! The format is described in docs/token-format.md.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::Invalid;
use crate::site::{host_problem, parse_rfc3339, rfc3339};

pub const TYPE_LABEL: &str = "skupper.io/type";
pub const TYPE_CERT: &str = "connection-token";
pub const TYPE_CLAIM: &str = "token-claim";
pub const GENERATED_BY: &str = "skupper.io/generated-by";
pub const SITE_NAME: &str = "skupper.io/site-name";
pub const SITE_VERSION: &str = "skupper.io/site-version";
pub const COST: &str = "skupper.io/cost";
pub const CLAIM_URL: &str = "skupper.io/url";
pub const CLAIM_EXPIRATION: &str = "skupper.io/claim-expiration";
pub const INTER_ROUTER_HOST: &str = "inter-router-host";
pub const INTER_ROUTER_PORT: &str = "inter-router-port";
pub const EDGE_HOST: &str = "edge-host";
pub const EDGE_PORT: &str = "edge-port";

/// A token that carries a client certificate: it can be used to link at once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CertToken {
    pub name: String,
    pub ca_cert: String,
    pub cert: String,
    pub key: String,
    pub inter_router_host: String,
    pub inter_router_port: u16,
    pub edge_host: String,
    pub edge_port: u16,
    /// Id of the issuing site.
    pub generated_by: String,
    pub site_name: String,
    pub cost: u32,
}

/// A token that must be redeemed at its issuer's claims endpoint for a cert token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClaimToken {
    pub name: String,
    pub url: String,
    pub secret: String,
    pub ca_cert: String,
    /// Unix seconds, as the issuer wrote it (the issuer's record is what counts).
    pub expires: Option<u64>,
    pub generated_by: String,
    pub site_name: String,
    pub cost: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Cert(CertToken),
    Claim(ClaimToken),
}

impl Token {
    pub fn name(&self) -> &str {
        match self {
            Token::Cert(t) => &t.name,
            Token::Claim(t) => &t.name,
        }
    }

    pub fn generated_by(&self) -> &str {
        match self {
            Token::Cert(t) => &t.generated_by,
            Token::Claim(t) => &t.generated_by,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Secret {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn secret(
    name: &str,
    ty: &str,
    annotations: Vec<(&str, String)>,
    data: Vec<(&str, &str)>,
) -> String {
    let s = Secret {
        api_version: "v1".into(),
        kind: "Secret".into(),
        metadata: Metadata {
            name: name.into(),
            labels: [(TYPE_LABEL.to_string(), ty.to_string())].into(),
            annotations: annotations
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        },
        ty: Some("Opaque".into()),
        data: data
            .into_iter()
            .map(|(k, v)| (k.to_string(), b64(v)))
            .collect(),
    };
    serde_yaml_ng::to_string(&s).expect("a Secret serialises")
}

impl CertToken {
    pub fn to_yaml(&self) -> String {
        secret(
            &self.name,
            TYPE_CERT,
            vec![
                (INTER_ROUTER_HOST, self.inter_router_host.clone()),
                (INTER_ROUTER_PORT, self.inter_router_port.to_string()),
                (EDGE_HOST, self.edge_host.clone()),
                (EDGE_PORT, self.edge_port.to_string()),
                (GENERATED_BY, self.generated_by.clone()),
                (SITE_NAME, self.site_name.clone()),
                (SITE_VERSION, crate::VERSION.to_string()),
                (COST, self.cost.to_string()),
            ],
            vec![
                ("ca.crt", &self.ca_cert),
                ("tls.crt", &self.cert),
                ("tls.key", &self.key),
            ],
        )
    }
}

impl ClaimToken {
    pub fn to_yaml(&self) -> String {
        let mut ann = vec![
            (CLAIM_URL, self.url.clone()),
            (GENERATED_BY, self.generated_by.clone()),
            (SITE_NAME, self.site_name.clone()),
            (SITE_VERSION, crate::VERSION.to_string()),
            (COST, self.cost.to_string()),
        ];
        if let Some(e) = self.expires {
            ann.push((CLAIM_EXPIRATION, rfc3339(e)));
        }
        secret(
            &self.name,
            TYPE_CLAIM,
            ann,
            vec![("ca.crt", &self.ca_cert), ("password", &self.secret)],
        )
    }
}

/// Reads a token file, reporting every problem with it at once.
pub fn parse(text: &str) -> Result<Token, Invalid> {
    let s: Secret = serde_yaml_ng::from_str(text)
        .map_err(|e| Invalid::one("token", format!("is not a token file (YAML Secret): {e}")))?;
    let mut errs = Invalid::default();
    if s.kind != "Secret" {
        errs.push("kind", format!("is {:?}, expected \"Secret\"", s.kind));
    }
    let ann = |k: &str| s.metadata.annotations.get(k).cloned().unwrap_or_default();
    let data = |k: &str, errs: &mut Invalid| -> String {
        let Some(v) = s.data.get(k) else {
            errs.push(&format!("data.{k}"), "is missing");
            return String::new();
        };
        match base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(t) => t,
            None => {
                errs.push(&format!("data.{k}"), "is not base64-encoded text");
                String::new()
            }
        }
    };
    let port = |k: &str, errs: &mut Invalid| -> u16 {
        match ann(k).parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                errs.push(
                    &format!("annotations.{k}"),
                    format!("{:?} is not a port number", ann(k)),
                );
                0
            }
        }
    };
    let cost = match ann(COST).as_str() {
        "" => 1,
        c => c.parse::<u32>().unwrap_or_else(|_| {
            errs.push(
                &format!("annotations.{COST}"),
                format!("{c:?} is not a number"),
            );
            1
        }),
    };
    let generated_by = ann(GENERATED_BY);
    if generated_by.is_empty() {
        errs.push(&format!("annotations.{GENERATED_BY}"), "is missing");
    }
    let ty = s
        .metadata
        .labels
        .get(TYPE_LABEL)
        .cloned()
        .unwrap_or_default();
    let name = s.metadata.name.clone();
    if crate::site::dns_label_problem(&name, 63).is_some() {
        errs.push(
            "metadata.name",
            format!("{name:?} is not a valid token name"),
        );
    }
    let token = match ty.as_str() {
        TYPE_CERT => {
            let t = CertToken {
                name,
                ca_cert: data("ca.crt", &mut errs),
                cert: data("tls.crt", &mut errs),
                key: data("tls.key", &mut errs),
                inter_router_host: ann(INTER_ROUTER_HOST),
                inter_router_port: port(INTER_ROUTER_PORT, &mut errs),
                edge_host: ann(EDGE_HOST),
                edge_port: port(EDGE_PORT, &mut errs),
                generated_by,
                site_name: ann(SITE_NAME),
                cost,
            };
            for (k, h) in [
                (INTER_ROUTER_HOST, &t.inter_router_host),
                (EDGE_HOST, &t.edge_host),
            ] {
                if let Some(m) = host_problem(h) {
                    errs.push(&format!("annotations.{k}"), m);
                }
            }
            for (k, v, what) in [
                ("ca.crt", &t.ca_cert, "CERTIFICATE"),
                ("tls.crt", &t.cert, "CERTIFICATE"),
                ("tls.key", &t.key, "PRIVATE KEY"),
            ] {
                if !v.is_empty() && !v.contains(&format!("-----BEGIN {what}")) {
                    errs.push(&format!("data.{k}"), format!("holds no PEM {what}"));
                }
            }
            Token::Cert(t)
        }
        TYPE_CLAIM => {
            let expires = match ann(CLAIM_EXPIRATION).as_str() {
                "" => None,
                e => match parse_rfc3339(e) {
                    Some(t) => Some(t),
                    None => {
                        errs.push(
                            &format!("annotations.{CLAIM_EXPIRATION}"),
                            format!("{e:?} is not an RFC 3339 time"),
                        );
                        None
                    }
                },
            };
            let url = ann(CLAIM_URL);
            if !url.starts_with("https://") {
                errs.push(
                    &format!("annotations.{CLAIM_URL}"),
                    format!("{url:?} is not an https:// URL"),
                );
            }
            let t = ClaimToken {
                name,
                url,
                secret: data("password", &mut errs),
                ca_cert: data("ca.crt", &mut errs),
                expires,
                generated_by,
                site_name: ann(SITE_NAME),
                cost,
            };
            if !t.ca_cert.is_empty() && !t.ca_cert.contains("-----BEGIN CERTIFICATE") {
                errs.push("data.ca.crt", "holds no PEM CERTIFICATE");
            }
            Token::Claim(t)
        }
        other => {
            errs.push(
                &format!("labels.{TYPE_LABEL}"),
                format!("{other:?} is not {TYPE_CERT:?} or {TYPE_CLAIM:?}"),
            );
            return Err(errs);
        }
    };
    errs.into_result().map(|()| token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_token() -> CertToken {
        CertToken {
            name: "west-link".into(),
            ca_cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            cert: "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n".into(),
            key: "-----BEGIN PRIVATE KEY-----\nCCCC\n-----END PRIVATE KEY-----\n".into(),
            inter_router_host: "west.example".into(),
            inter_router_port: 55671,
            edge_host: "west.example".into(),
            edge_port: 45671,
            generated_by: "0123456789abcdef".into(),
            site_name: "west".into(),
            cost: 3,
        }
    }

    #[test]
    fn tokens_round_trip() {
        let t = cert_token();
        assert_eq!(parse(&t.to_yaml()).unwrap(), Token::Cert(t));
        let c = ClaimToken {
            name: "tok".into(),
            url: "https://10.0.0.1:8081/tok".into(),
            secret: "s3cret".into(),
            ca_cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            expires: Some(1_900_000_000),
            generated_by: "0123456789abcdef".into(),
            site_name: "west".into(),
            cost: 1,
        };
        assert_eq!(parse(&c.to_yaml()).unwrap(), Token::Claim(c));
    }

    #[test]
    fn every_problem_is_named() {
        let y = cert_token()
            .to_yaml()
            .replace("inter-router-port: '55671'", "inter-router-port: 'x'")
            .replace("edge-host: west.example", "edge-host: 'bad host'");
        let y = y.replace("kind: Secret", "kind: ConfigMap");
        let e = parse(&y).unwrap_err().to_string();
        assert!(e.contains("kind"), "{e}");
        assert!(e.contains("inter-router-port"), "{e}");
        assert!(e.contains("edge-host"), "{e}");
        let e = parse("not: [yaml").unwrap_err().to_string();
        assert!(e.contains("not a token file"), "{e}");
        let e = parse("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("skupper.io/type"), "{e}");
    }
}
