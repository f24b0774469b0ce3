use super::*;

use std::sync::OnceLock;

/// A CA, a leaf it signed (for `localhost`), the leaf's key and an unrelated key, as PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
    other_key: String,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "van test ca");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        Pki {
            ca: ca.pem(),
            cert: leaf.pem(),
            key: leaf_key.serialize_pem(),
            other_key: rcgen::KeyPair::generate().unwrap().serialize_pem(),
        }
    })
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn tls_yaml(name: &str) -> String {
    let p = pki();
    format!(
        "  - name: {name}\n    ca_pem: {}\n    cert_pem: {}\n    key_pem: {}\n",
        q(&p.ca),
        q(&p.cert),
        q(&p.key)
    )
}

fn full_yaml() -> String {
    format!(
        r#"
router:
  id: west-1
  site: west
  mode: interior
admin:
  listen: "127.0.0.1:55680"
metrics:
  listen: "0.0.0.0:9090"
log:
  format: json
  level: "van_router=debug,info"
tracing:
  otlp_endpoint: "http://127.0.0.1:4317"
timers:
  hello_interval_ms: 250
  hello_max_age_ms: 1000
  ls_refresh_ms: 10000
  ls_max_age_ms: 25000
  backoff_min_ms: 50
  backoff_max_ms: 2000
flow:
  window_bytes: 1048576
  connect_timeout_ms: 3000
tls_profiles:
{tls}
link_listeners:
  - name: inter-router
    host: 0.0.0.0
    port: 55671
    tls_profile: site
  - name: edge
    role: edge
    host: 0.0.0.0
    port: 45671
    cost: 10
    tls_profile: site
links:
  - name: to-east
    host: east.example.com
    port: 55671
    cost: 5
    tls_profile: site
    server_name: east-router.example.com
tcp_listeners:
  - name: backend
    host: 127.0.0.1
    port: 8080
    routing_key: backend
  - name: any-port
    host: 127.0.0.1
    port: 0
    routing_key: backend
tcp_connectors:
  - name: db
    host: db.local
    port: 5432
    routing_key: db
"#,
        tls = tls_yaml("site")
    )
}

fn errors(r: Result<Config, ConfigError>) -> ConfigError {
    match r {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    }
}

fn paths(e: &ConfigError) -> Vec<&str> {
    e.errors.iter().map(|f| f.path.as_str()).collect()
}

fn assert_paths(e: &ConfigError, want: &[&str]) {
    let got = paths(e);
    for w in want {
        assert!(got.contains(w), "no error at {w}; got:\n{e}");
    }
}

fn assert_only(e: &ConfigError, want: &[&str]) {
    let mut got = paths(e);
    got.sort_unstable();
    let mut want = want.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{e}");
}

fn minimal(rest: &str) -> String {
    format!("router:\n  id: a\n{rest}")
}

// === valid ===

#[test]
fn full_example_is_valid() {
    let c = Config::from_yaml(&full_yaml()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.router_id, "west-1");
    assert_eq!(c.site_id, "west");
    assert_eq!(c.mode, Mode::Interior);
    assert_eq!(
        c.admin,
        AdminListen::Tcp("127.0.0.1:55680".parse().unwrap())
    );
    assert_eq!(c.metrics, Some("0.0.0.0:9090".parse().unwrap()));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "van_router=debug,info");
    assert_eq!(c.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
    assert_eq!(c.timers.hello_interval(), Duration::from_millis(250));
    assert_eq!(c.timers.hello_max_age(), Duration::from_secs(1));
    assert_eq!(c.timers.ls_refresh(), Duration::from_secs(10));
    assert_eq!(c.timers.ls_max_age(), Duration::from_secs(25));
    assert_eq!(c.timers.backoff_min(), Duration::from_millis(50));
    assert_eq!(c.timers.backoff_max(), Duration::from_secs(2));
    assert_eq!(c.flow.window_bytes, 1 << 20);
    assert_eq!(c.flow.connect_timeout_ms, 3000);

    let e = &c.entities;
    assert_eq!(
        e.tls_profiles["site"].ca_pem.as_deref(),
        Some(pki().ca.as_str())
    );
    assert_eq!(
        e.link_listeners.keys().collect::<Vec<_>>(),
        ["edge", "inter-router"]
    );
    assert_eq!(e.link_listeners["inter-router"].role, LinkRole::InterRouter);
    assert_eq!(e.link_listeners["inter-router"].cost, 1, "default cost");
    assert_eq!(e.link_listeners["edge"].role, LinkRole::Edge);
    assert_eq!(e.link_listeners["edge"].cost, 10);
    let l = &e.links["to-east"];
    assert_eq!(
        (l.host.as_str(), l.port, l.cost),
        ("east.example.com", 55671, 5)
    );
    assert_eq!(l.server_name.as_deref(), Some("east-router.example.com"));
    assert_eq!(e.tcp_listeners.len(), 2);
    assert_eq!(e.tcp_connectors["db"].routing_key, "db");
}

#[test]
fn defaults_fill_a_minimal_file() {
    let c = Config::from_yaml("router:\n  id: solo\n").unwrap();
    assert_eq!(c.router_id, "solo");
    assert_eq!(c.site_id, "solo", "site defaults to the router id");
    assert_eq!(c.mode, Mode::Interior);
    assert_eq!(
        c.admin,
        AdminListen::Tcp("127.0.0.1:55680".parse().unwrap())
    );
    assert_eq!(c.metrics, None);
    assert_eq!(c.otlp_endpoint, None);
    assert_eq!(c.log, LogSection::default());
    assert_eq!(c.timers, Timers::default());
    assert_eq!(c.flow, FlowSection::default());
    assert_eq!(c.entities, Entities::default());
}

#[test]
fn admin_may_listen_on_a_unix_socket() {
    let c = Config::from_yaml(&minimal("admin:\n  listen: unix:/run/van/admin.sock\n")).unwrap();
    assert_eq!(c.admin, AdminListen::Unix("/run/van/admin.sock".into()));
}

#[test]
fn edge_router_with_edge_links_is_valid() {
    let y = format!(
        "router:\n  id: e1\n  mode: edge\ntls_profiles:\n{}links:\n  - name: up\n    role: edge\n    host: hub\n    port: 45671\n    tls_profile: t\n",
        tls_yaml("t")
    );
    let c = Config::from_yaml(&y).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.mode, Mode::Edge);
    assert_eq!(c.entities.links["up"].role, LinkRole::Edge);
}

#[test]
fn file_config_round_trips_through_yaml() {
    let file: FileConfig = serde_yaml_ng::from_str(&full_yaml()).unwrap();
    let again: FileConfig =
        serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&file).unwrap()).unwrap();
    assert_eq!(file, again);
}

// === invalid: every error at once ===

#[test]
fn all_errors_are_reported_at_once() {
    let y = r#"
router:
  id: ""
links:
  - name: out
    host: peer
    port: 0
    tls_profile: missing
link_listeners:
  - name: in
    host: 0.0.0.0
    port: 55671
    tls_profile: nowhere
tcp_listeners:
  - name: web
    host: 127.0.0.1
    port: 8080
    routing_key: web
  - name: web
    host: 127.0.0.1
    port: 8081
    routing_key: web2
"#;
    let e = errors(Config::from_yaml(y));
    assert_only(
        &e,
        &[
            "router.id",
            "links[out].port",
            "links[out].tls_profile",
            "link_listeners[in].tls_profile",
            "tcp_listeners[1].name",
        ],
    );
    let msg = e.to_string();
    assert!(msg.starts_with("invalid configuration (5 errors)"), "{msg}");
    assert!(msg.contains("no tls_profile named \"nowhere\""), "{msg}");
    assert!(msg.contains("duplicate name \"web\""), "{msg}");
}

#[test]
fn static_section_errors_are_all_reported() {
    let y = r#"
router:
  id: "bad id"
  site: "SITE"
  worker_threads: 5000
admin:
  listen: "localhost:55680"
metrics:
  listen: "nowhere"
log:
  level: "van_router=loud"
tracing:
  otlp_endpoint: "grpc://collector:4317"
timers:
  hello_interval_ms: 5
  hello_max_age_ms: 9
  ls_refresh_ms: 4
  ls_max_age_ms: 4
  backoff_min_ms: 0
flow:
  window_bytes: 1000
  connect_timeout_ms: 0
"#;
    let e = errors(Config::from_yaml(y));
    assert_only(
        &e,
        &[
            "router.id",
            "router.worker_threads",
            "admin.listen",
            "metrics.listen",
            "log.level",
            "tracing.otlp_endpoint",
            "timers.hello_interval_ms",
            "timers.hello_max_age_ms",
            "timers.ls_refresh_ms",
            "timers.ls_max_age_ms",
            "timers.backoff_min_ms",
            "flow.window_bytes",
            "flow.connect_timeout_ms",
        ],
    );
}

#[test]
fn worker_threads_default_to_one_per_cpu() {
    let c = Config::from_yaml("router: {id: a}\nadmin: {listen: \"127.0.0.1:0\"}\n").unwrap();
    assert_eq!(c.worker_threads, None);
    let c =
        Config::from_yaml("router: {id: a, worker_threads: 2}\nadmin: {listen: \"127.0.0.1:0\"}\n")
            .unwrap();
    assert_eq!(c.worker_threads, Some(2));
}

#[test]
fn site_is_bounded() {
    let y = format!("router:\n  id: a\n  site: {}\n", "s".repeat(254));
    assert_only(&errors(Config::from_yaml(&y)), &["router.site"]);
}

#[test]
fn backoff_min_above_max_is_rejected() {
    let y = minimal("timers:\n  backoff_min_ms: 6000\n  backoff_max_ms: 5000\n");
    assert_only(&errors(Config::from_yaml(&y)), &["timers.backoff_min_ms"]);
}

#[test]
fn huge_timer_values_are_errors_not_panics() {
    let y = minimal(&format!(
        "timers:\n  hello_interval_ms: {}\n  hello_max_age_ms: {}\n",
        u64::MAX,
        u64::MAX
    ));
    let e = errors(Config::from_yaml(&y));
    assert_paths(&e, &["timers.hello_max_age_ms"]);
}

#[test]
fn admin_listen_needs_a_numeric_address_or_socket_path() {
    for bad in ["localhost:1", "127.0.0.1", "unix:", ""] {
        let y = minimal(&format!("admin:\n  listen: {}\n", q(bad)));
        assert_only(&errors(Config::from_yaml(&y)), &["admin.listen"]);
    }
    let c = Config::from_yaml(&minimal("admin:\n  listen: \"[::1]:7000\"\n")).unwrap();
    assert_eq!(c.admin, AdminListen::Tcp("[::1]:7000".parse().unwrap()));
}

#[test]
fn names_hosts_and_keys_are_checked() {
    let long_name = "n".repeat(64);
    let long_key = "k".repeat(256);
    let y = format!(
        r#"
router:
  id: a
tcp_listeners:
  - name: "has space"
    host: "bad host"
    port: 1
    routing_key: "two words"
  - name: {long_name}
    host: ""
    port: 2
    routing_key: ""
  - name: ok
    host: "a/b"
    port: 3
    routing_key: {long_key}
tcp_connectors:
  - name: ""
    host: db
    port: 0
    routing_key: "tab\there"
"#
    );
    let e = errors(Config::from_yaml(&y));
    let ln = format!("tcp_listeners[{long_name}]");
    assert_only(
        &e,
        &[
            "tcp_listeners[has space].name",
            "tcp_listeners[has space].host",
            "tcp_listeners[has space].routing_key",
            &format!("{ln}.name"),
            &format!("{ln}.host"),
            &format!("{ln}.routing_key"),
            "tcp_listeners[ok].host",
            "tcp_listeners[ok].routing_key",
            "tcp_connectors[].name",
            "tcp_connectors[].port",
            "tcp_connectors[].routing_key",
        ],
    );
}

#[test]
fn longest_name_and_key_are_accepted() {
    let y = format!(
        "router:\n  id: {}\ntcp_listeners:\n  - name: a.b_c-D9\n    host: h\n    port: 1\n    routing_key: {}\n",
        "i".repeat(63),
        "k".repeat(MAX_ROUTING_KEY_LEN)
    );
    Config::from_yaml(&y).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn link_costs_are_bounded() {
    let y = format!(
        r#"
router:
  id: a
tls_profiles:
{}
links:
  - name: zero
    host: h
    port: 1
    cost: 0
    tls_profile: t
  - name: huge
    host: h
    port: 2
    cost: 1000001
    tls_profile: t
link_listeners:
  - name: free
    host: h
    port: 3
    cost: 0
    tls_profile: t
"#,
        tls_yaml("t")
    );
    assert_only(
        &errors(Config::from_yaml(&y)),
        &[
            "links[zero].cost",
            "links[huge].cost",
            "link_listeners[free].cost",
        ],
    );
}

#[test]
fn ports_used_twice_are_rejected() {
    let y = format!(
        r#"
router:
  id: a
tls_profiles:
{}
link_listeners:
  - name: ir
    host: 0.0.0.0
    port: 5000
    tls_profile: t
tcp_listeners:
  - name: clash
    host: 0.0.0.0
    port: 5000
    routing_key: k
  - name: os1
    host: 0.0.0.0
    port: 0
    routing_key: k
  - name: os2
    host: 0.0.0.0
    port: 0
    routing_key: k
"#,
        tls_yaml("t")
    );
    let e = errors(Config::from_yaml(&y));
    assert_only(&e, &["tcp_listeners[clash].port"]);
    assert!(
        e.errors[0].message.contains("link_listeners[ir].port"),
        "{e}"
    );
}

#[test]
fn mode_rules_for_links() {
    let y = format!(
        r#"
router:
  id: a
  mode: edge
tls_profiles:
{}
link_listeners:
  - name: in
    host: 0.0.0.0
    port: 1
    tls_profile: t
links:
  - name: default-role
    host: h
    port: 1
    tls_profile: t
"#,
        tls_yaml("t")
    );
    assert_only(
        &errors(Config::from_yaml(&y)),
        &["link_listeners[in].role", "links[default-role].role"],
    );

    let y = format!(
        "router:\n  id: a\ntls_profiles:\n{}links:\n  - name: e\n    role: edge\n    host: h\n    port: 1\n    tls_profile: t\n",
        tls_yaml("t")
    );
    assert_only(&errors(Config::from_yaml(&y)), &["links[e].role"]);
}

#[test]
fn bad_server_name_is_rejected() {
    let y = format!(
        "router:\n  id: a\ntls_profiles:\n{}links:\n  - name: l\n    host: h\n    port: 1\n    tls_profile: t\n    server_name: \"not a name\"\n",
        tls_yaml("t")
    );
    assert_only(&errors(Config::from_yaml(&y)), &["links[l].server_name"]);
}

// === TLS profiles ===

fn profile(name: &str) -> TlsProfile {
    let p = pki();
    TlsProfile {
        name: name.into(),
        ca_pem: Some(p.ca.clone()),
        cert_pem: Some(p.cert.clone()),
        key_pem: Some(p.key.clone()),
        ..TlsProfile::default()
    }
}

fn with_profiles(ps: Vec<TlsProfile>) -> Result<Config, ConfigError> {
    Config::from_file(FileConfig {
        router: RouterSection {
            id: "a".into(),
            ..RouterSection::default()
        },
        entities: EntityLists {
            tls_profiles: ps,
            ..EntityLists::default()
        },
        ..FileConfig::default()
    })
}

#[test]
fn tls_profile_needs_all_three_parts() {
    let e = errors(with_profiles(vec![TlsProfile {
        name: "empty".into(),
        ..TlsProfile::default()
    }]));
    // The missing parts, and no load error on top of them.
    assert_only(
        &e,
        &[
            "tls_profiles[empty].ca_file",
            "tls_profiles[empty].cert_file",
            "tls_profiles[empty].key_file",
        ],
    );
}

#[test]
fn tls_material_is_loaded_with_the_config() {
    let mut garbage = profile("garbage");
    garbage.cert_pem = Some("not pem at all".into());
    let mut no_file = profile("no-file");
    no_file.ca_pem = None;
    no_file.ca_file = Some("/nonexistent/van/ca.pem".into());
    let mut wrong_key = profile("wrong-key");
    wrong_key.key_pem = Some(pki().other_key.clone());
    let e = errors(with_profiles(vec![
        profile("good"),
        garbage,
        no_file,
        wrong_key,
    ]));
    assert_only(
        &e,
        &[
            "tls_profiles[garbage]",
            "tls_profiles[no-file]",
            "tls_profiles[wrong-key]",
        ],
    );
    let msg = e.to_string();
    assert!(msg.contains("/nonexistent/van/ca.pem"), "{msg}");
}

#[test]
fn tls_material_from_files() {
    let dir = std::env::temp_dir().join(format!("van-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = pki();
    for (f, pem) in [
        ("ca.pem", &p.ca),
        ("cert.pem", &p.cert),
        ("key.pem", &p.key),
    ] {
        std::fs::write(dir.join(f), pem).unwrap();
    }
    let r = with_profiles(vec![TlsProfile {
        name: "files".into(),
        ca_file: Some(dir.join("ca.pem")),
        cert_file: Some(dir.join("cert.pem")),
        key_file: Some(dir.join("key.pem")),
        ..TlsProfile::default()
    }]);
    std::fs::remove_dir_all(&dir).unwrap();
    let c = r.unwrap_or_else(|e| panic!("{e}"));
    assert!(c.entities.tls_profiles.contains_key("files"));
}

// === unknown keys ===

#[test]
fn unknown_yaml_keys_are_rejected() {
    let cases = [
        "router:\n  id: a\nrouters: {}\n",
        "router:\n  id: a\ntcp_listener: []\n",
        "router:\n  id: a\n  idd: b\n",
        "router:\n  id: a\nadmin:\n  listen: \"127.0.0.1:1\"\n  port: 2\n",
        "router:\n  id: a\nmetrics:\n  listen: \"127.0.0.1:1\"\n  path: /m\n",
        "router:\n  id: a\ntimers:\n  hello_ms: 100\n",
        "router:\n  id: a\nflow:\n  window: 100\n",
        "router:\n  id: a\ntcp_listeners:\n  - name: l\n    host: h\n    port: 1\n    routing_key: k\n    prot: 2\n",
        "router:\n  id: a\ntcp_connectors:\n  - name: c\n    host: h\n    port: 1\n    routing_key: k\n    tls: true\n",
        "router:\n  id: a\nlinks:\n  - name: l\n    host: h\n    port: 1\n    tls_profile: t\n    weight: 2\n",
        "router:\n  id: a\ntls_profiles:\n  - name: t\n    ca: x\n",
    ];
    for y in cases {
        let e = errors(Config::from_yaml(y));
        assert_eq!(e.errors.len(), 1, "{y}\n{e}");
        assert!(
            e.errors[0].message.contains("unknown field"),
            "{y}\n{}",
            e.errors[0].message
        );
    }
}

#[test]
fn malformed_yaml_is_one_error() {
    for y in [
        "router: [",
        "router:\n  id: a\n  mode: hub\n",
        "router:\n  id: a\ntcp_connectors:\n  - name: c\n    host: h\n    port: 70000\n    routing_key: k\n",
        "router:\n  id: a\ntcp_listeners:\n  - name: l\n    port: 1\n    routing_key: k\n",
    ] {
        let e = errors(Config::from_yaml(y));
        assert_eq!(e.errors.len(), 1, "{y}\n{e}");
        assert_eq!(e.errors[0].path, "");
    }
}

#[test]
fn load_names_the_file() {
    let path = std::env::temp_dir().join(format!("van-config-load-{}.yaml", std::process::id()));
    std::fs::write(&path, "router:\n  id: a\nbogus: 1\n").unwrap();
    let e = errors(Config::load(&path));
    std::fs::remove_file(&path).unwrap();
    assert_only(&e, &[path.display().to_string().as_str()]);

    let missing = Path::new("/nonexistent/van/router.yaml");
    let e = errors(Config::load(missing));
    assert_only(&e, &["/nonexistent/van/router.yaml"]);
    assert!(e.errors[0].message.starts_with("cannot read"));
}

// === Entities::with_ops ===

fn base() -> Entities {
    let y = format!(
        r#"
router:
  id: a
tls_profiles:
{}
links:
  - name: out
    host: peer
    port: 55671
    tls_profile: t
tcp_listeners:
  - name: web
    host: 127.0.0.1
    port: 8080
    routing_key: web
tcp_connectors:
  - name: db
    host: db
    port: 5432
    routing_key: db
"#,
        tls_yaml("t")
    );
    Config::from_yaml(&y)
        .unwrap_or_else(|e| panic!("{e}"))
        .entities
}

fn tcp_listener(name: &str, host: &str, port: u16) -> TcpListener {
    TcpListener {
        name: name.into(),
        host: host.into(),
        port,
        routing_key: "web".into(),
        protocol: Default::default(),
    }
}

#[test]
fn with_ops_applies_puts_and_deletes() {
    let before = base();
    let copy = before.clone();
    let next = before
        .with_ops(
            Mode::Interior,
            vec![
                EntityOp::PutTcpListener(tcp_listener("api", "127.0.0.1", 9090)),
                // A put of an existing name replaces it.
                EntityOp::PutTcpListener(tcp_listener("web", "127.0.0.1", 8081)),
                EntityOp::Delete(EntityKind::TcpConnector, "db".into()),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(before, copy);
    assert_eq!(
        next.tcp_listeners.keys().collect::<Vec<_>>(),
        ["api", "web"]
    );
    assert_eq!(next.tcp_listeners["web"].port, 8081);
    assert!(next.tcp_connectors.is_empty());
    assert_eq!(next.links, before.links);
}

#[test]
fn with_ops_leaves_original_untouched_on_error() {
    let before = base();
    let copy = before.clone();
    let e = before
        .with_ops(
            Mode::Interior,
            vec![
                EntityOp::PutTcpListener(tcp_listener("api", "127.0.0.1", 9090)),
                EntityOp::Delete(EntityKind::Link, "missing".into()),
                EntityOp::PutTcpListener(tcp_listener("bad", "", 9091)),
            ],
        )
        .unwrap_err();
    assert_eq!(before, copy);
    assert_only(&e, &["ops[1].delete", "tcp_listeners[bad].host"]);
    assert_eq!(e.errors[0].message, "no link named \"missing\"");
}

#[test]
fn with_ops_reports_every_missing_delete() {
    let kinds = [
        (EntityKind::TlsProfile, "tls_profile"),
        (EntityKind::LinkListener, "link_listener"),
        (EntityKind::Link, "link"),
        (EntityKind::TcpListener, "tcp_listener"),
        (EntityKind::TcpConnector, "tcp_connector"),
    ];
    let ops = kinds
        .iter()
        .map(|(k, _)| EntityOp::Delete(*k, "nope".into()))
        .collect();
    let e = base().with_ops(Mode::Interior, ops).unwrap_err();
    assert_eq!(e.errors.len(), kinds.len(), "{e}");
    for (i, (f, (_, kind))) in e.errors.iter().zip(kinds).enumerate() {
        assert_eq!(f.path, format!("ops[{i}].delete"));
        assert_eq!(f.message, format!("no {kind} named \"nope\""));
    }
}

#[test]
fn with_ops_validates_the_result_as_a_whole() {
    let before = base();
    // Deleting a profile that a link still uses.
    let e = before
        .with_ops(
            Mode::Interior,
            vec![EntityOp::Delete(EntityKind::TlsProfile, "t".into())],
        )
        .unwrap_err();
    assert_only(&e, &["links[out].tls_profile"]);
    // Deleting both in one batch is fine.
    let next = before
        .with_ops(
            Mode::Interior,
            vec![
                EntityOp::Delete(EntityKind::Link, "out".into()),
                EntityOp::Delete(EntityKind::TlsProfile, "t".into()),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(next.tls_profiles.is_empty() && next.links.is_empty());
    // A new listener on a port already taken.
    let e = before
        .with_ops(
            Mode::Interior,
            vec![EntityOp::PutTcpListener(tcp_listener(
                "dup",
                "127.0.0.1",
                8080,
            ))],
        )
        .unwrap_err();
    // Entities are checked in name order, so the clash is reported on whichever of the
    // two names sorts later, naming the other.
    assert_only(&e, &["tcp_listeners[web].port"]);
    assert!(
        e.errors[0].message.contains("tcp_listeners[dup].port"),
        "{e}"
    );
    // The same entities are invalid for an edge router (the link has role inter-router).
    let e = before.with_ops(Mode::Edge, vec![]).unwrap_err();
    assert_only(&e, &["links[out].role"]);
}

#[test]
fn with_ops_puts_every_kind() {
    let before = base();
    let next = before
        .with_ops(
            Mode::Interior,
            vec![
                EntityOp::PutTlsProfile(profile("t2")),
                EntityOp::PutLinkListener(LinkListener {
                    name: "in".into(),
                    role: LinkRole::Edge,
                    host: "0.0.0.0".into(),
                    port: 45671,
                    cost: 1,
                    tls_profile: "t2".into(),
                }),
                EntityOp::PutLink(Link {
                    name: "out2".into(),
                    role: LinkRole::InterRouter,
                    host: "peer2".into(),
                    port: 55671,
                    cost: 3,
                    tls_profile: "t2".into(),
                    server_name: None,
                    proxy: None,
                }),
                EntityOp::PutTcpConnector(TcpConnector {
                    name: "db2".into(),
                    host: "db".into(),
                    port: 5433,
                    routing_key: "db".into(),
                    protocol: Default::default(),
                    host_override: None,
                }),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.tls_profiles.len(), 2);
    assert_eq!(next.link_listeners.len(), 1);
    assert_eq!(next.links.len(), 2);
    assert_eq!(next.tcp_connectors.len(), 2);
}

#[test]
fn with_ops_rejects_bad_tls_material() {
    let mut bad = profile("t");
    bad.key_pem = Some(pki().other_key.clone());
    let e = base()
        .with_ops(Mode::Interior, vec![EntityOp::PutTlsProfile(bad)])
        .unwrap_err();
    assert_only(&e, &["tls_profiles[t]"]);
}

#[test]
fn link_role_parse() {
    assert_eq!(LinkRole::parse(""), Some(LinkRole::InterRouter));
    assert_eq!(LinkRole::parse("inter-router"), Some(LinkRole::InterRouter));
    assert_eq!(LinkRole::parse("edge"), Some(LinkRole::Edge));
    assert_eq!(LinkRole::parse("Edge"), None);
    for r in [LinkRole::InterRouter, LinkRole::Edge] {
        assert_eq!(LinkRole::parse(r.as_str()), Some(r));
    }
}

#[test]
fn keys_starting_with_a_dollar_are_the_routers_own() {
    let e = errors(Config::from_yaml(&minimal(
        "tcp_listeners:\n  - {name: l, host: 127.0.0.1, port: 1, routing_key: $van.records/x}\ntcp_connectors:\n  - {name: c, host: h, port: 1, routing_key: $x}\n",
    )));
    assert_only(
        &e,
        &[
            "tcp_listeners[l].routing_key",
            "tcp_connectors[c].routing_key",
        ],
    );
    assert!(e.to_string().contains("reserved for the router"), "{e}");
}

#[test]
fn a_config_file_that_never_ends_is_refused_not_read_into_memory() {
    let e = Config::load(std::path::Path::new("/dev/zero")).unwrap_err();
    assert!(e.to_string().contains("larger than 16 MiB"), "{e}");
}
