//! The objects `init` applies: the Helm chart rendered by `charts/tests/cli_manifests.py`
//! (one file per `ingress` choice, checked in under `cli/manifests/`), with placeholders in
//! string values that are filled in here. The script proves, against Helm, that these rules
//! give what Helm renders for the same values; keep the two in step.

use std::collections::BTreeMap;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use ring::rand::SecureRandom;
use serde_json::Value;

/// The `ingress` choices, in the chart's order.
pub const INGRESSES: [&str; 5] = ["loadbalancer", "nodeport", "route", "ingress", "none"];

/// The rendered chart for one `ingress` choice.
pub fn text(ingress: &str) -> Option<&'static str> {
    Some(match ingress {
        "loadbalancer" => include_str!("../../manifests/loadbalancer.yaml"),
        "nodeport" => include_str!("../../manifests/nodeport.yaml"),
        "route" => include_str!("../../manifests/route.yaml"),
        "ingress" => include_str!("../../manifests/ingress.yaml"),
        "none" => include_str!("../../manifests/none.yaml"),
        _ => return None,
    })
}

/// What the CLI fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    pub namespace: String,
    pub site_name: String,
    /// Empty: none (fields that are hosts under it are dropped).
    pub ingress_host: String,
    pub router_mode: String,
    /// Empty: no registry prefix.
    pub image_registry: String,
    pub image_tag: String,
}

impl Values {
    fn placeholders(&self) -> BTreeMap<&'static str, String> {
        let registry = self.image_registry.trim_end_matches('/');
        BTreeMap::from([
            ("NAMESPACE", self.namespace.clone()),
            ("SITE_NAME", self.site_name.clone()),
            ("INGRESS_HOST", self.ingress_host.clone()),
            ("ROUTER_MODE", self.router_mode.clone()),
            (
                "IMAGE_PREFIX",
                if registry.is_empty() {
                    String::new()
                } else {
                    format!("{registry}/")
                },
            ),
            ("IMAGE_TAG", self.image_tag.clone()),
            ("MANAGED_BY", super::MANAGED_BY_VALUE.to_string()),
        ])
    }
}

/// Parses a multi-document YAML file into objects (empty documents skipped).
pub fn parse(text: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc)
            .map_err(|e| anyhow::anyhow!("embedded manifests are not valid YAML: {e}"))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The objects of `ingress`, before substitution.
pub fn templates(ingress: &str) -> anyhow::Result<Vec<Value>> {
    parse(text(ingress).ok_or_else(|| anyhow::anyhow!("no manifests for ingress {ingress:?}"))?)
}

/// The objects of `ingress`, with every placeholder filled: random Secret values from
/// `random(kind, n)`, `${CONFIG_CHECKSUM}` from the ConfigMaps.
pub fn render(
    ingress: &str,
    values: &Values,
    random: &mut dyn FnMut(RandomKind, usize) -> anyhow::Result<String>,
) -> anyhow::Result<Vec<Value>> {
    render_templates(&templates(ingress)?, values, random)
}

/// [`render`] of any templates.
pub fn render_templates(
    templates: &[Value],
    values: &Values,
    random: &mut dyn FnMut(RandomKind, usize) -> anyhow::Result<String>,
) -> anyhow::Result<Vec<Value>> {
    let subs = values.placeholders();
    let mut objects = Vec::new();
    for obj in templates {
        objects.push(substitute(obj, &subs, random)?);
    }
    let sum = checksum(&objects);
    let sums = BTreeMap::from([("CONFIG_CHECKSUM", sum)]);
    let mut none = |_: RandomKind, _: usize| -> anyhow::Result<String> { unreachable_random() };
    let objects = objects
        .iter()
        .map(|o| substitute(o, &sums, &mut none))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for o in &objects {
        if let Some(p) = first_placeholder(o) {
            anyhow::bail!(
                "{} holds placeholder {p}, unknown to this CLI (manifests newer than the code?)",
                describe(o)
            );
        }
    }
    Ok(objects)
}

fn unreachable_random() -> anyhow::Result<String> {
    anyhow::bail!("random values are filled in the first pass")
}

/// `Kind/name`.
pub fn describe(o: &Value) -> String {
    format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// What a random placeholder stands for; both are base64 (Secret `data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomKind {
    /// `${RANDOM_ALNUM_n}`: n letters and digits (Helm's randAlphaNum).
    Alnum,
    /// `${RANDOM_BYTES_n}`: n bytes.
    Bytes,
}

/// Random values from the system's generator, base64-encoded.
pub fn system_random(kind: RandomKind, n: usize) -> anyhow::Result<String> {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut bytes = vec![0u8; n];
    match kind {
        RandomKind::Bytes => rng
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("no random bytes from the system"))?,
        RandomKind::Alnum => {
            let mut i = 0;
            while i < n {
                let mut b = [0u8; 1];
                rng.fill(&mut b)
                    .map_err(|_| anyhow::anyhow!("no random bytes from the system"))?;
                // Rejection sampling: 248 = 4 * 62, so every character is equally likely.
                if b[0] < 248 {
                    bytes[i] = ALNUM[usize::from(b[0]) % ALNUM.len()];
                    i += 1;
                }
            }
        }
    }
    Ok(BASE64_STANDARD.encode(bytes))
}

/// Fills placeholders in string values (never in keys). A value `<name>.${INGRESS_HOST}` with
/// an empty host is dropped with its key: the chart renders such hosts only when one is set.
/// Unknown placeholders are left for the caller to report.
pub fn substitute(
    v: &Value,
    subs: &BTreeMap<&'static str, String>,
    random: &mut dyn FnMut(RandomKind, usize) -> anyhow::Result<String>,
) -> anyhow::Result<Value> {
    Ok(match v {
        Value::Object(m) => {
            let no_host = subs.get("INGRESS_HOST").is_some_and(String::is_empty);
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                if no_host && v.as_str().is_some_and(|s| s.ends_with(".${INGRESS_HOST}")) {
                    continue;
                }
                out.insert(k.clone(), substitute(v, subs, random)?);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| substitute(v, subs, random))
                .collect::<anyhow::Result<_>>()?,
        ),
        Value::String(s) => Value::String(fill(s, subs, random)?),
        other => other.clone(),
    })
}

fn fill(
    s: &str,
    subs: &BTreeMap<&'static str, String>,
    random: &mut dyn FnMut(RandomKind, usize) -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        if let Some(v) = subs.get(name) {
            out.push_str(v);
        } else if let Some((kind, n)) = random_placeholder(name) {
            out.push_str(&random(kind, n)?);
        } else {
            out.push_str(&rest[start..start + 2 + end + 1]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn random_placeholder(name: &str) -> Option<(RandomKind, usize)> {
    let (kind, n) = if let Some(n) = name.strip_prefix("RANDOM_ALNUM_") {
        (RandomKind::Alnum, n)
    } else {
        (RandomKind::Bytes, name.strip_prefix("RANDOM_BYTES_")?)
    };
    Some((kind, n.parse().ok()?))
}

/// Whether `v` (a Secret's data value, before substitution) is random.
pub fn is_random(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.strip_prefix("${")
            .and_then(|s| s.strip_suffix('}'))
            .and_then(random_placeholder)
            .is_some()
    })
}

/// The first `${NAME}` left in a string value.
pub fn first_placeholder(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m.values().find_map(first_placeholder),
        Value::Array(a) => a.iter().find_map(first_placeholder),
        Value::String(s) => {
            let start = s.find("${")?;
            let end = s[start..].find('}')?;
            Some(s[start..start + end + 1].to_string())
        }
        _ => None,
    }
}

/// SHA-256 of the ConfigMaps' names and data, so pods roll when their configuration changes
/// (the role of the chart's `checksum/` annotations).
fn checksum(objects: &[Value]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for o in objects.iter().filter(|o| o["kind"] == "ConfigMap") {
        ctx.update(o["metadata"]["name"].to_string().as_bytes());
        ctx.update(o["data"].to_string().as_bytes());
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Names of the Secrets whose data holds random placeholders, with those keys.
pub fn random_keys(templates: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for o in templates {
        if o["kind"] != "Secret" {
            continue;
        }
        let keys: Vec<String> = o["data"]
            .as_object()
            .map(|d| {
                d.iter()
                    .filter(|(_, v)| is_random(v))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        if !keys.is_empty() {
            out.insert(
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                keys,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(host: &str) -> Values {
        Values {
            namespace: "west".into(),
            site_name: "w".into(),
            ingress_host: host.into(),
            router_mode: "edge".into(),
            image_registry: "registry.example.com/van/".into(),
            image_tag: "1.2".into(),
        }
    }

    fn fixed(kind: RandomKind, n: usize) -> anyhow::Result<String> {
        Ok(format!("{kind:?}{n}"))
    }

    #[test]
    fn substitutes_in_string_values_only() {
        let subs = values("sites.example.org").placeholders();
        let v = json!({
            "metadata": {"name": "x", "namespace": "${NAMESPACE}",
                         "labels": {"${NAMESPACE}": "${MANAGED_BY}"}},
            "image": "${IMAGE_PREFIX}van-router:${IMAGE_TAG}",
            "text": "mode: ${ROUTER_MODE}} ${UNKNOWN} ${",
            "host": "edge.${INGRESS_HOST}",
            "n": 3, "b": true,
            "data": {"token": "${RANDOM_ALNUM_24}", "k": "${RANDOM_BYTES_32}"},
        });
        let got = substitute(&v, &subs, &mut fixed).unwrap();
        assert_eq!(
            got,
            json!({
                "metadata": {"name": "x", "namespace": "west",
                             "labels": {"${NAMESPACE}": "skupper-cli"}},
                "image": "registry.example.com/van/van-router:1.2",
                "text": "mode: edge} ${UNKNOWN} ${",
                "host": "edge.sites.example.org",
                "n": 3, "b": true,
                "data": {"token": "Alnum24", "k": "Bytes32"},
            })
        );
        assert_eq!(first_placeholder(&got).as_deref(), Some("${UNKNOWN}"));
    }

    #[test]
    fn hosts_under_an_empty_ingress_host_are_dropped() {
        let mut v = values("");
        v.image_registry = String::new();
        let got = substitute(
            &json!({"spec": {"host": "edge.${INGRESS_HOST}", "to": "x"},
                    "env": "${INGRESS_HOST}", "image": "${IMAGE_PREFIX}van-router"}),
            &v.placeholders(),
            &mut fixed,
        )
        .unwrap();
        assert_eq!(
            got,
            json!({"spec": {"to": "x"}, "env": "", "image": "van-router"})
        );
    }

    #[test]
    fn every_manifest_renders_without_placeholders() {
        for ingress in INGRESSES {
            let objects = render(ingress, &values("h.example"), &mut fixed).unwrap();
            assert!(objects.len() > 5, "{ingress}");
            for o in &objects {
                assert!(first_placeholder(o).is_none(), "{}", describe(o));
                assert_eq!(o["metadata"]["namespace"], "west", "{}", describe(o));
                super::super::api_resource(
                    o["apiVersion"].as_str().unwrap(),
                    o["kind"].as_str().unwrap(),
                )
                .unwrap();
            }
        }
        assert!(render("frob", &values(""), &mut fixed).is_err());
    }

    #[test]
    fn system_random_is_base64_of_the_right_length() {
        let a = system_random(RandomKind::Alnum, 24).unwrap();
        assert_eq!(a.len(), 32);
        let raw = BASE64_STANDARD.decode(&a).unwrap();
        assert!(raw.iter().all(u8::is_ascii_alphanumeric), "{a}");
        assert_ne!(a, system_random(RandomKind::Alnum, 24).unwrap());
        assert_eq!(system_random(RandomKind::Bytes, 32).unwrap().len(), 44);
    }
}
