use van_proto::admin as rpb;

use super::*;
use crate::network::{PublishedService, SiteRecord};
use crate::site::{LinkRecord, ServiceDef, SiteCerts, Target};
use crate::token::CertToken;

/// Certificates as opaque text: the translation copies them, it never reads them.
fn certs() -> SiteCerts {
    SiteCerts {
        ca_cert: "CA".into(),
        ca_key: "CA-KEY".into(),
        server_cert: "SERVER".into(),
        server_key: "SERVER-KEY".into(),
        server_hosts: vec!["west.example".into()],
        peer_cert: "PEER".into(),
        peer_key: "PEER-KEY".into(),
    }
}

fn with_certs() -> SiteState {
    SiteState {
        certs: Some(certs()),
        ..Default::default()
    }
}

/// A site state without certificates that defines `services`.
fn serving(services: Vec<ServiceDef>) -> SiteState {
    SiteState {
        services: services
            .into_iter()
            .map(|s| (s.address.clone(), s))
            .collect(),
        ..Default::default()
    }
}

/// `state` with `links` added.
fn linked(mut state: SiteState, links: Vec<LinkRecord>) -> SiteState {
    state
        .links
        .extend(links.into_iter().map(|l| (l.name.clone(), l)));
    state
}

fn interior(state: &SiteState, remote: &Remote) -> rpb::RouterConfig {
    router_config(&SiteConfig::for_test(RouterMode::Interior), state, remote)
}

fn token(site: &str) -> CertToken {
    CertToken {
        name: format!("to-{site}"),
        ca_cert: format!("{site}-CA"),
        cert: format!("{site}-CERT"),
        key: format!("{site}-KEY"),
        inter_router_host: format!("{site}.example"),
        inter_router_port: 55671,
        edge_host: format!("edge.{site}.example"),
        edge_port: 45671,
        generated_by: format!("{site}-id"),
        site_name: site.into(),
        cost: 1,
    }
}

fn link(name: &str, cost: u32, token: Option<CertToken>) -> LinkRecord {
    LinkRecord {
        name: name.into(),
        cost,
        token,
        claim: None,
        claim_error: String::new(),
        claim_refused: false,
        source: String::new(),
        proxy: String::new(),
    }
}

fn service(address: &str, ports: &[u16], targets: &[(&str, &[u16])]) -> ServiceDef {
    ServiceDef {
        address: address.into(),
        protocol: "tcp".into(),
        ports: ports.to_vec(),
        created: 1,
        targets: targets
            .iter()
            .map(|(host, ports)| Target {
                host: (*host).into(),
                ports: ports.to_vec(),
            })
            .collect(),
        source: String::new(),
    }
}

/// Site `name` as its router `<name>-router` published it, serving `services`.
fn remote(name: &str, services: &[(&str, &[u16])]) -> Remote {
    let record = SiteRecord {
        id: format!("{name}-id"),
        name: name.into(),
        mode: "interior".into(),
        version: "test".into(),
        router_id: format!("{name}-router"),
        services: services
            .iter()
            .map(|(address, ports)| PublishedService {
                address: (*address).into(),
                protocol: "tcp".into(),
                ports: ports.to_vec(),
                created: 1,
                targets: 1,
            })
            .collect(),
        links: Vec::new(),
    };
    Remote::from([(format!("{name}-router"), record)])
}

fn profile(name: &str, ca: &str, cert: &str, key: &str) -> rpb::TlsProfileConfig {
    rpb::TlsProfileConfig {
        name: name.into(),
        ca_pem: ca.into(),
        cert_pem: cert.into(),
        key_pem: key.into(),
        ..Default::default()
    }
}

#[test]
fn the_router_is_named_after_the_site() {
    let out = router_config(
        &SiteConfig::for_test(RouterMode::Edge),
        &SiteState::default(),
        &Remote::new(),
    );
    assert_eq!(
        out,
        rpb::RouterConfig {
            router_id: "west-01234567".into(),
            site_id: "0123456789abcdef0123456789abcdef".into(),
            mode: "edge".into(),
            ..Default::default()
        }
    );
}

#[test]
fn an_interior_site_listens_for_inter_router_and_edge_links() {
    let out = interior(&with_certs(), &Remote::new());
    let listener = |name: &str, port: u32| rpb::LinkListenerConfig {
        name: name.into(),
        role: name.into(),
        host: "10.0.0.1".into(),
        port,
        cost: 1,
        tls_profile: "site-server".into(),
    };
    assert_eq!(
        out.link_listeners,
        [listener("inter-router", 55671), listener("edge", 45671)]
    );
    assert_eq!(
        out.tls_profiles,
        [profile("site-server", "CA", "SERVER", "SERVER-KEY")],
        "the listeners' profile holds the site CA and server certificate"
    );
}

#[test]
fn an_edge_site_or_one_without_certificates_listens_for_no_links() {
    for (mode, state) in [
        (RouterMode::Edge, with_certs()),
        (RouterMode::Interior, SiteState::default()),
    ] {
        let out = router_config(&SiteConfig::for_test(mode), &state, &Remote::new());
        assert!(out.link_listeners.is_empty(), "{mode:?}");
        assert!(out.tls_profiles.is_empty(), "{mode:?}");
    }
}

#[test]
fn a_link_dials_the_endpoint_of_the_sites_mode_with_its_cost_and_profile() {
    let state = linked(
        SiteState::default(),
        vec![link("to-east", 5, Some(token("east")))],
    );
    for (mode, role, host, port) in [
        (RouterMode::Interior, "inter-router", "east.example", 55671),
        (RouterMode::Edge, "edge", "edge.east.example", 45671),
    ] {
        let out = router_config(&SiteConfig::for_test(mode), &state, &Remote::new());
        assert_eq!(
            out.links,
            [rpb::LinkConfig {
                name: "to-east".into(),
                role: role.into(),
                host: host.into(),
                port,
                cost: 5,
                tls_profile: "link-to-east".into(),
                server_name: String::new(),
                proxy: String::new(),
            }],
            "{mode:?}"
        );
        assert_eq!(
            out.tls_profiles,
            [profile("link-to-east", "east-CA", "east-CERT", "east-KEY")],
            "the link's profile holds the token's CA and client certificate"
        );
    }
}

#[test]
fn links_come_in_name_order_after_the_server_profile() {
    let state = linked(
        with_certs(),
        vec![
            link("to-south", 1, Some(token("south"))),
            link("to-east", 1, Some(token("east"))),
        ],
    );
    let out = interior(&state, &Remote::new());
    let links: Vec<&str> = out.links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(links, ["to-east", "to-south"]);
    let profiles: Vec<&str> = out.tls_profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(profiles, ["site-server", "link-to-east", "link-to-south"]);
}

#[test]
fn a_link_whose_claim_is_not_redeemed_yet_is_left_out() {
    let state = linked(SiteState::default(), vec![link("pending", 1, None)]);
    let out = interior(&state, &Remote::new());
    assert!(out.links.is_empty());
    assert!(out.tls_profiles.is_empty());
}

#[test]
fn every_port_of_a_local_or_remote_service_gets_a_listener() {
    let state = serving(vec![service("db", &[5432, 5433], &[])]);
    let out = interior(&state, &remote("east", &[("reviews", &[9080])]));
    let listener = |address: &str, port: u16| rpb::TcpListenerConfig {
        name: format!("svc-{address}-{port}"),
        host: "10.0.0.2".into(),
        port: u32::from(port),
        routing_key: format!("{address}:{port}"),
        protocol: "tcp".into(),
    };
    assert_eq!(
        out.tcp_listeners,
        [
            listener("db", 5432),
            listener("db", 5433),
            listener("reviews", 9080)
        ]
    );
    assert_eq!(listener_name("db", 5432), out.tcp_listeners[0].name);
}

#[test]
fn a_service_defined_differently_elsewhere_listens_on_the_local_ports_only() {
    let state = serving(vec![service("db", &[5432], &[])]);
    let out = interior(&state, &remote("east", &[("db", &[3306])]));
    let names: Vec<&str> = out.tcp_listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["svc-db-5432"]);
}

#[test]
fn each_port_of_each_target_gets_a_connector() {
    let state = serving(vec![
        service(
            "db",
            &[5432, 5433],
            &[
                ("db-0.local", &[15432, 15433]),
                ("db-1.local", &[5432, 5433]),
            ],
        ),
        // Defined here without a target: listened for, delivered elsewhere.
        service("cache", &[6379], &[]),
    ]);
    let out = interior(&state, &remote("east", &[("reviews", &[9080])]));
    let connector = |name: &str, host: &str, port: u32, key: &str| rpb::TcpConnectorConfig {
        name: name.into(),
        host: host.into(),
        port,
        routing_key: key.into(),
        protocol: "tcp".into(),
        host_override: String::new(),
    };
    assert_eq!(
        out.tcp_connectors,
        [
            connector("tgt-db-5432-0", "db-0.local", 15432, "db:5432"),
            connector("tgt-db-5433-0", "db-0.local", 15433, "db:5433"),
            connector("tgt-db-5432-1", "db-1.local", 5432, "db:5432"),
            connector("tgt-db-5433-1", "db-1.local", 5433, "db:5433"),
        ]
    );
}

#[test]
fn an_http_service_gets_http_listeners_and_connectors() {
    let mut svc = service("reviews", &[9080], &[("reviews.local", &[9080])]);
    svc.protocol = "http2".into();
    let mut remote_svc = remote("east", &[("ratings", &[9080])]);
    for r in remote_svc.values_mut() {
        for v in &mut r.services {
            v.protocol = "http".into();
        }
    }
    let out = interior(&serving(vec![svc]), &remote_svc);
    let listeners: Vec<(&str, &str)> = out
        .tcp_listeners
        .iter()
        .map(|l| (l.routing_key.as_str(), l.protocol.as_str()))
        .collect();
    assert_eq!(
        listeners,
        [("ratings:9080", "http"), ("reviews:9080", "http2")]
    );
    assert_eq!(out.tcp_connectors.len(), 1);
    assert_eq!(out.tcp_connectors[0].protocol, "http2");
}

#[test]
fn only_an_interior_site_with_certificates_has_a_peer_profile() {
    assert_eq!(
        peer_profile(&SiteConfig::for_test(RouterMode::Interior), &with_certs()),
        Some(profile(PEER_PROFILE, "CA", "PEER", "PEER-KEY"))
    );
    assert_eq!(
        peer_profile(&SiteConfig::for_test(RouterMode::Edge), &with_certs()),
        None
    );
    assert_eq!(
        peer_profile(
            &SiteConfig::for_test(RouterMode::Interior),
            &SiteState::default()
        ),
        None
    );
}

#[test]
fn the_tls_secret_holds_each_profiles_material_under_its_keys() {
    let cfg = rpb::RouterConfig {
        tls_profiles: vec![
            profile("site-server", "CA", "SERVER", "SERVER-KEY"),
            profile("link-to-east", "east-CA", "east-CERT", "east-KEY"),
        ],
        ..Default::default()
    };
    assert_eq!(
        tls_secret_keys("link-to-east"),
        [
            "link-to-east.ca.crt",
            "link-to-east.tls.crt",
            "link-to-east.tls.key"
        ]
    );
    let expect: BTreeMap<String, String> = [
        ("site-server.ca.crt", "CA"),
        ("site-server.tls.crt", "SERVER"),
        ("site-server.tls.key", "SERVER-KEY"),
        ("link-to-east.ca.crt", "east-CA"),
        ("link-to-east.tls.crt", "east-CERT"),
        ("link-to-east.tls.key", "east-KEY"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(tls_secret_data(&cfg), expect);
}

#[test]
fn stripping_tls_material_keeps_the_profile_names_and_everything_else() {
    let mut state = linked(
        serving(vec![service("db", &[5432], &[("db.local", &[5432])])]),
        vec![link("to-east", 1, Some(token("east")))],
    );
    state.certs = Some(certs());
    let full = interior(&state, &Remote::new());
    let stripped = without_tls_material(full.clone());
    let named = |name: &str| rpb::TlsProfileConfig {
        name: name.into(),
        ..Default::default()
    };
    assert_eq!(
        stripped.tls_profiles,
        [named("site-server"), named("link-to-east")]
    );
    assert_eq!(
        rpb::RouterConfig {
            tls_profiles: full.tls_profiles.clone(),
            ..stripped
        },
        full
    );
}

#[test]
fn the_same_address_with_another_protocol_elsewhere_is_a_conflict_not_a_target() {
    let state = serving(vec![service("db", &[5432], &[("db.local", &[5432])])]);
    let mut other = remote("east", &[("db", &[5432])]);
    for r in other.values_mut() {
        for v in &mut r.services {
            v.protocol = "http".into();
        }
    }
    let cfg = SiteConfig::for_test(RouterMode::Interior);
    let views = crate::network::services(&cfg, &state, &other);
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].def.protocol, "tcp", "the local definition wins");
    assert_eq!(views[0].conflicts, ["east: http 5432"]);
    assert!(
        !views[0].target_sites.contains(&"east".to_string()),
        "{:?}",
        views[0].target_sites
    );
}
