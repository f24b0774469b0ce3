use super::*;

fn listener(name: &str, port: u32) -> rpb::TcpListenerConfig {
    rpb::TcpListenerConfig {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        routing_key: format!("{name}:{port}"),
        protocol: "tcp".into(),
    }
}

fn profile(name: &str, cert: &str) -> rpb::TlsProfileConfig {
    rpb::TlsProfileConfig {
        name: name.into(),
        ca_pem: "CA".into(),
        cert_pem: cert.into(),
        key_pem: "KEY".into(),
        ..Default::default()
    }
}

fn link(name: &str) -> rpb::LinkConfig {
    rpb::LinkConfig {
        name: name.into(),
        role: "inter-router".into(),
        host: "west".into(),
        port: 55671,
        cost: 1,
        tls_profile: format!("link-{name}"),
        server_name: String::new(),
        proxy: String::new(),
    }
}

fn names(ops: &[rpb::ConfigOp]) -> Vec<String> {
    ops.iter()
        .map(|o| match &o.op {
            Some(Op::Delete(d)) => format!("-{}", d.name),
            _ => format!("+{}", op_name(o)),
        })
        .collect()
}

#[test]
fn equal_configurations_need_nothing() {
    let mut have = rpb::RouterConfig::default();
    have.tcp_listeners.push(listener("a", 1));
    // The router redacts private keys and fills in the server name it verifies.
    let mut p = profile("link-x", "CERT");
    p.key_pem = "<redacted>".into();
    have.tls_profiles.push(p);
    let mut l = link("x");
    l.server_name = "west".into();
    have.links.push(l);
    let mut want = rpb::RouterConfig::default();
    want.tcp_listeners.push(listener("a", 1));
    want.tls_profiles.push(profile("link-x", "CERT"));
    want.links.push(link("x"));
    assert!(diff(&have, &want).is_empty());
}

#[test]
fn deletes_come_first_and_profiles_are_deleted_last_and_put_first() {
    let mut have = rpb::RouterConfig::default();
    have.tls_profiles.push(profile("link-old", "C1"));
    have.links.push(link("old"));
    have.tcp_listeners.push(listener("a", 1));
    have.tcp_listeners.push(listener("b", 2));
    let mut want = rpb::RouterConfig::default();
    want.tls_profiles.push(profile("link-new", "C2"));
    want.links.push(link("new"));
    want.tcp_listeners.push(listener("a", 1));
    want.tcp_listeners.push(listener("b", 3));
    assert_eq!(
        names(&diff(&have, &want)),
        ["-old", "-link-old", "+link-new", "+new", "+b"]
    );
    // A changed certificate is a put; a changed key alone cannot be seen (and never happens).
    let mut want2 = have.clone();
    want2.tls_profiles[0].cert_pem = "C9".into();
    assert_eq!(names(&diff(&have, &want2)), ["+link-old"]);
}

#[test]
fn a_restarted_router_gets_everything() {
    let mut want = rpb::RouterConfig::default();
    want.tls_profiles.push(profile("p", "C"));
    want.links.push(link("l"));
    want.tcp_listeners.push(listener("a", 1));
    let ops = diff(&rpb::RouterConfig::default(), &want);
    assert_eq!(names(&ops), ["+p", "+l", "+a"]);
}
