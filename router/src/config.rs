//! Router configuration: the YAML file read at start and the live-changeable entities.
//!
//! Everything is parsed and validated before any port is bound, and validation reports
//! every problem at once, each named by its field path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, FieldError};
pub use crate::tls::TlsProfile;
pub use van_telemetry::{LogFormat, LogSection};

/// Default hello interval. Half of Skupper's 1 s, so a silent neighbour is noticed in 2 s.
pub const DEFAULT_HELLO_INTERVAL_MS: u64 = 500;
/// A neighbour is lost after this long without a hello (four missed hellos).
pub const DEFAULT_HELLO_MAX_AGE_MS: u64 = 2_000;
/// Own link state is re-flooded this often even when nothing changed.
pub const DEFAULT_LS_REFRESH_MS: u64 = 30_000;
/// Link state not refreshed for this long is dropped (two refreshes missed).
pub const DEFAULT_LS_MAX_AGE_MS: u64 = 75_000;
/// First and largest delay between attempts of an outgoing link.
pub const DEFAULT_BACKOFF_MIN_MS: u64 = 100;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 5_000;
/// Per-flow window: bytes a sender may have in flight before the far end grants more.
/// 2 MiB keeps a single stream at full speed on loopback while bounding memory per flow.
pub const DEFAULT_FLOW_WINDOW: u32 = 2 * 1024 * 1024;
/// How long a connector waits for its target to accept before failing the flow.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Upper bound of `router.worker_threads`.
pub const MAX_WORKER_THREADS: usize = 1024;
/// Largest routing key, in bytes.
pub const MAX_ROUTING_KEY_LEN: usize = 255;

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub router: RouterSection,
    pub admin: AdminSection,
    pub metrics: Option<MetricsSection>,
    pub log: LogSection,
    pub tracing: Option<TracingSection>,
    pub timers: Timers,
    pub flow: FlowSection,
    #[serde(flatten)]
    pub entities: EntityLists,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSection {
    pub id: String,
    pub site: String,
    pub mode: Mode,
    /// Threads that run flows and links; 0 (the default) means one per CPU. As Skupper's
    /// router's `workerThreads`: fewer threads spend less CPU waking each other.
    pub worker_threads: usize,
}

impl Default for RouterSection {
    fn default() -> Self {
        RouterSection {
            id: String::new(),
            site: String::new(),
            mode: Mode::Interior,
            worker_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Interior,
    Edge,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Interior => "interior",
            Mode::Edge => "edge",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// `host:port` or `unix:/path/to/socket`.
    pub listen: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:55680".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `host:port` serving `/metrics` and `/healthz`.
    pub listen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    /// OTLP/gRPC endpoint, such as `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    pub hello_interval_ms: u64,
    pub hello_max_age_ms: u64,
    pub ls_refresh_ms: u64,
    pub ls_max_age_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            hello_interval_ms: DEFAULT_HELLO_INTERVAL_MS,
            hello_max_age_ms: DEFAULT_HELLO_MAX_AGE_MS,
            ls_refresh_ms: DEFAULT_LS_REFRESH_MS,
            ls_max_age_ms: DEFAULT_LS_MAX_AGE_MS,
            backoff_min_ms: DEFAULT_BACKOFF_MIN_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
        }
    }
}

impl Timers {
    pub fn hello_interval(&self) -> Duration {
        Duration::from_millis(self.hello_interval_ms)
    }
    pub fn hello_max_age(&self) -> Duration {
        Duration::from_millis(self.hello_max_age_ms)
    }
    pub fn ls_refresh(&self) -> Duration {
        Duration::from_millis(self.ls_refresh_ms)
    }
    pub fn ls_max_age(&self) -> Duration {
        Duration::from_millis(self.ls_max_age_ms)
    }
    pub fn backoff_min(&self) -> Duration {
        Duration::from_millis(self.backoff_min_ms)
    }
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowSection {
    pub window_bytes: u32,
    pub connect_timeout_ms: u64,
    /// HTTP services: how long a request may wait for its response head before the client
    /// gets 504. 0 (the default) waits as long as the client does.
    pub request_timeout_ms: u64,
}

impl Default for FlowSection {
    fn default() -> Self {
        FlowSection {
            window_bytes: DEFAULT_FLOW_WINDOW,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            request_timeout_ms: 0,
        }
    }
}

/// The entities that can be created, updated and deleted while the router runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EntityLists {
    pub tls_profiles: Vec<TlsProfile>,
    pub link_listeners: Vec<LinkListener>,
    pub links: Vec<Link>,
    pub tcp_listeners: Vec<TcpListener>,
    pub tcp_connectors: Vec<TcpConnector>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum LinkRole {
    #[default]
    InterRouter,
    Edge,
}

impl LinkRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkRole::InterRouter => "inter-router",
            LinkRole::Edge => "edge",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inter-router" | "" => Some(LinkRole::InterRouter),
            "edge" => Some(LinkRole::Edge),
            _ => None,
        }
    }
}

fn default_cost() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LinkListener {
    pub name: String,
    #[serde(default)]
    pub role: LinkRole,
    pub host: String,
    pub port: u16,
    #[serde(default = "default_cost")]
    pub cost: u32,
    pub tls_profile: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub name: String,
    #[serde(default)]
    pub role: LinkRole,
    pub host: String,
    pub port: u16,
    #[serde(default = "default_cost")]
    pub cost: u32,
    pub tls_profile: String,
    /// Name to verify in the peer's certificate; defaults to `host`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Dial through this HTTP CONNECT proxy (`http://[user:password@]host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

/// What a service's traffic is, which decides how the router carries it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A byte stream: each connection goes to one server.
    #[default]
    Tcp,
    /// HTTP/1.1 (and HTTP/2 cleartext with prior knowledge): each request is routed.
    Http,
    /// HTTP/2 cleartext only (gRPC): each stream is routed.
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
        }
    }

    /// Parses the names the APIs use; empty means `tcp`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" | "" => Some(Protocol::Tcp),
            "http" => Some(Protocol::Http),
            "http2" => Some(Protocol::Http2),
            _ => None,
        }
    }

    pub fn is_http(self) -> bool {
        self != Protocol::Tcp
    }
}

fn is_tcp(p: &Protocol) -> bool {
    *p == Protocol::Tcp
}

/// A service address clients connect to. (The name predates HTTP: a `protocol` of `http`
/// or `http2` makes it an HTTP listener.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TcpListener {
    pub name: String,
    pub host: String,
    /// 0 lets the OS choose; the admin API reports the bound port.
    pub port: u16,
    pub routing_key: String,
    #[serde(default, skip_serializing_if = "is_tcp")]
    pub protocol: Protocol,
}

/// A target (server) of a service address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TcpConnector {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub routing_key: String,
    #[serde(default, skip_serializing_if = "is_tcp")]
    pub protocol: Protocol,
    /// HTTP only: the `Host` (HTTP/2 `:authority`) sent to the target instead of the
    /// client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_override: Option<String>,
}

/// Live entities keyed by name, in the order the admin API lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entities {
    pub tls_profiles: BTreeMap<String, TlsProfile>,
    pub link_listeners: BTreeMap<String, LinkListener>,
    pub links: BTreeMap<String, Link>,
    pub tcp_listeners: BTreeMap<String, TcpListener>,
    pub tcp_connectors: BTreeMap<String, TcpConnector>,
}

/// A validated configuration: the static settings plus the initial entities.
#[derive(Debug, Clone)]
pub struct Config {
    pub router_id: String,
    pub site_id: String,
    pub mode: Mode,
    /// `None`: one per CPU.
    pub worker_threads: Option<usize>,
    pub admin: AdminListen,
    pub metrics: Option<SocketAddr>,
    pub log: LogSection,
    pub otlp_endpoint: Option<String>,
    pub timers: Timers,
    pub flow: FlowSection,
    pub entities: Entities,
}

/// Where the admin gRPC API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A change to the live entities, as the admin API receives it.
#[derive(Debug, Clone)]
pub enum EntityOp {
    PutTlsProfile(TlsProfile),
    PutLinkListener(LinkListener),
    PutLink(Link),
    PutTcpListener(TcpListener),
    PutTcpConnector(TcpConnector),
    Delete(EntityKind, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    TlsProfile,
    LinkListener,
    Link,
    TcpListener,
    TcpConnector,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::TlsProfile => "tls_profile",
            EntityKind::LinkListener => "link_listener",
            EntityKind::Link => "link",
            EntityKind::TcpListener => "tcp_listener",
            EntityKind::TcpConnector => "tcp_connector",
        }
    }
}

// === impl Config ===

impl Config {
    /// Reads and validates a YAML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, |_| {})
    }

    /// Loads `path`, letting `adjust` change the file's contents (e.g. the router id from the
    /// environment) before validation.
    pub fn load_with(
        path: &Path,
        adjust: impl FnOnce(&mut FileConfig),
    ) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = read_file(path, MAX_CONFIG_FILE)
            .and_then(|b| {
                String::from_utf8(b).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")
                })
            })
            .map_err(|e| ConfigError::single(name.clone(), format!("cannot read: {e}")))?;
        let mut file: FileConfig = serde_yaml_ng::from_str(&text)
            .map_err(|e| ConfigError::single(name.clone(), e.to_string()))?;
        adjust(&mut file);
        Self::from_file(file).map_err(|mut e| {
            for f in &mut e.errors {
                if f.path.is_empty() {
                    f.path = name.clone();
                }
            }
            e
        })
    }

    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = serde_yaml_ng::from_str(text)
            .map_err(|e| ConfigError::single(String::new(), e.to_string()))?;
        Self::from_file(file)
    }

    pub fn from_file(file: FileConfig) -> Result<Config, ConfigError> {
        let mut errs = Errors::default();
        let r = &file.router;
        check_name(&mut errs, "router.id", &r.id);
        if r.site.len() > 253 {
            errs.push("router.site", "must be at most 253 characters");
        }
        let admin = match parse_admin_listen(&file.admin.listen) {
            Ok(a) => Some(a),
            Err(m) => {
                errs.push("admin.listen", m);
                None
            }
        };
        let metrics = file.metrics.as_ref().and_then(|m| {
            m.listen
                .parse::<SocketAddr>()
                .map_err(|_| errs.push("metrics.listen", "must be host:port with a numeric IP"))
                .ok()
        });
        // The filter check also refuses what tracing-subscriber handles badly (found by
        // fuzzing: fuzz/README.md).
        if let Err(e) = file.log.check() {
            errs.push("log.level", e);
        }
        let otlp_endpoint = file.tracing.as_ref().map(|t| t.otlp_endpoint.clone());
        if let Some(ep) = &otlp_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            errs.push(
                "tracing.otlp_endpoint",
                "must start with http:// or https://",
            );
        }
        let t = &file.timers;
        if !(10..=60_000).contains(&t.hello_interval_ms) {
            errs.push("timers.hello_interval_ms", "must be between 10 and 60000");
        }
        if t.hello_max_age_ms > 600_000 {
            errs.push("timers.hello_max_age_ms", "must be at most 600000");
        }
        if t.ls_max_age_ms > 86_400_000 {
            errs.push("timers.ls_max_age_ms", "must be at most 86400000 (a day)");
        }
        if t.backoff_max_ms > 600_000 {
            errs.push("timers.backoff_max_ms", "must be at most 600000");
        }
        if t.hello_max_age_ms < t.hello_interval_ms.saturating_mul(2) {
            errs.push(
                "timers.hello_max_age_ms",
                "must be at least twice timers.hello_interval_ms",
            );
        }
        if t.ls_refresh_ms < t.hello_interval_ms {
            errs.push(
                "timers.ls_refresh_ms",
                "must not be below the hello interval",
            );
        }
        if t.ls_max_age_ms <= t.ls_refresh_ms {
            errs.push("timers.ls_max_age_ms", "must be above timers.ls_refresh_ms");
        }
        if t.backoff_min_ms == 0 || t.backoff_min_ms > t.backoff_max_ms {
            errs.push(
                "timers.backoff_min_ms",
                "must be positive and at most timers.backoff_max_ms",
            );
        }
        let min_window = crate::mux::INITIAL_WINDOW;
        if !(min_window..=256 * 1024 * 1024).contains(&file.flow.window_bytes) {
            errs.push(
                "flow.window_bytes",
                format!("must be between {min_window} and 268435456"),
            );
        }
        if file.flow.connect_timeout_ms == 0 {
            errs.push("flow.connect_timeout_ms", "must be positive");
        }
        if r.worker_threads > MAX_WORKER_THREADS {
            errs.push(
                "router.worker_threads",
                format!("must be at most {MAX_WORKER_THREADS} (0: one per CPU)"),
            );
        }
        let entities = entities_from_lists(&mut errs, file.entities);
        validate_entities(&mut errs, r.mode, &entities);
        errs.finish()?;
        Ok(Config {
            router_id: r.id.clone(),
            site_id: if r.site.is_empty() {
                r.id.clone()
            } else {
                r.site.clone()
            },
            mode: r.mode,
            worker_threads: (r.worker_threads > 0).then_some(r.worker_threads),
            admin: admin.expect("validated"),
            metrics,
            log: file.log,
            otlp_endpoint,
            timers: file.timers,
            flow: file.flow,
            entities,
        })
    }
}

fn parse_admin_listen(s: &str) -> Result<AdminListen, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        if p.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        return Ok(AdminListen::Unix(PathBuf::from(p)));
    }
    s.parse::<SocketAddr>()
        .map(AdminListen::Tcp)
        .map_err(|_| "must be host:port with a numeric IP, or unix:/path".into())
}

/// Collects field errors.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
    fn finish(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { errors: self.0 })
        }
    }
}

/// What is wrong with a router or entity name, if anything. The same rules apply to names
/// that peers send.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".into())
    } else if name.len() > 63 {
        Some("must be at most 63 characters".into())
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Some(format!(
            "{name:?} may hold only letters, digits, '-', '_' and '.'"
        ))
    } else {
        None
    }
}

/// What is wrong with a routing key, if anything (also applied to keys peers advertise).
fn routing_key_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        Some("must not be empty".into())
    } else if key.len() > MAX_ROUTING_KEY_LEN {
        Some(format!("must be at most {MAX_ROUTING_KEY_LEN} bytes"))
    } else if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("must not contain spaces or control characters".into())
    } else {
        None
    }
}

/// Whether `name` is a valid router or entity name.
pub fn valid_name(name: &str) -> bool {
    name_problem(name).is_none()
}

/// Whether `key` is a valid routing key.
pub fn valid_routing_key(key: &str) -> bool {
    routing_key_problem(key).is_none()
}

fn check_name(errs: &mut Errors, path: &str, name: &str) {
    if let Some(m) = name_problem(name) {
        errs.push(path, m);
    }
}

fn check_host(errs: &mut Errors, path: &str, host: &str) {
    if host.is_empty() {
        errs.push(path, "must not be empty");
    } else if host.len() > 253 || host.contains(|c: char| c.is_whitespace() || c == '/') {
        errs.push(path, format!("{host:?} is not a host name or address"));
    }
}

/// A configured key (listener or connector); keys starting with '$' are the router's own.
fn check_routing_key(errs: &mut Errors, path: &str, key: &str) {
    if let Some(m) = routing_key_problem(key) {
        errs.push(path, m);
    } else if key.starts_with('$') {
        errs.push(
            path,
            format!("{key:?}: keys starting with '$' are reserved for the router"),
        );
    }
}

fn check_cost(errs: &mut Errors, path: &str, cost: u32) {
    if cost == 0 || cost > 1_000_000 {
        errs.push(path, "must be between 1 and 1000000");
    }
}

/// Turns the file's lists into maps, reporting duplicate names.
fn entities_from_lists(errs: &mut Errors, lists: EntityLists) -> Entities {
    fn into_map<T>(
        errs: &mut Errors,
        kind: &str,
        items: Vec<T>,
        name: impl Fn(&T) -> &str,
    ) -> BTreeMap<String, T> {
        let mut map = BTreeMap::new();
        for (i, item) in items.into_iter().enumerate() {
            let n = name(&item).to_string();
            match map.entry(n) {
                std::collections::btree_map::Entry::Occupied(e) => errs.push(
                    format!("{kind}[{i}].name"),
                    format!("duplicate name {:?}", e.key()),
                ),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(item);
                }
            }
        }
        map
    }
    Entities {
        tls_profiles: into_map(errs, "tls_profiles", lists.tls_profiles, |t| &t.name),
        link_listeners: into_map(errs, "link_listeners", lists.link_listeners, |t| &t.name),
        links: into_map(errs, "links", lists.links, |t| &t.name),
        tcp_listeners: into_map(errs, "tcp_listeners", lists.tcp_listeners, |t| &t.name),
        tcp_connectors: into_map(errs, "tcp_connectors", lists.tcp_connectors, |t| &t.name),
    }
}

/// Validates the live entities as a whole (names, references, ports, mode rules).
fn validate_entities(errs: &mut Errors, mode: Mode, e: &Entities) {
    for (n, t) in &e.tls_profiles {
        let p = format!("tls_profiles[{n}]");
        check_name(errs, &format!("{p}.name"), n);
        let has = |file: &Option<PathBuf>, pem: &Option<String>| file.is_some() || pem.is_some();
        if !has(&t.ca_file, &t.ca_pem) {
            errs.push(
                format!("{p}.ca_file"),
                "a CA (ca_file or ca_pem) is required",
            );
        }
        if !has(&t.cert_file, &t.cert_pem) {
            errs.push(
                format!("{p}.cert_file"),
                "a certificate (cert_file or cert_pem) is required",
            );
        }
        if !has(&t.key_file, &t.key_pem) {
            errs.push(
                format!("{p}.key_file"),
                "a private key (key_file or key_pem) is required",
            );
        }
        // Load the material now, so a bad file is reported with the config, not at first use.
        if errs.0.iter().all(|f| !f.path.starts_with(&p))
            && let Err(err) = crate::tls::TlsMaterial::load(t)
        {
            errs.push(p.clone(), van_telemetry::Report(&err).to_string());
        }
    }
    let mut binds: BTreeMap<(String, u16), String> = BTreeMap::new();
    let mut bind = |errs: &mut Errors, path: String, host: &str, port: u16| {
        if port == 0 {
            return;
        }
        if let Some(other) = binds.insert((host.to_string(), port), path.clone()) {
            errs.push(path, format!("{host}:{port} is already used by {other}"));
        }
    };
    for (n, l) in &e.link_listeners {
        let p = format!("link_listeners[{n}]");
        check_name(errs, &format!("{p}.name"), n);
        check_host(errs, &format!("{p}.host"), &l.host);
        check_cost(errs, &format!("{p}.cost"), l.cost);
        if !e.tls_profiles.contains_key(&l.tls_profile) {
            errs.push(
                format!("{p}.tls_profile"),
                format!("no tls_profile named {:?}", l.tls_profile),
            );
        }
        if mode == Mode::Edge {
            errs.push(
                format!("{p}.role"),
                "an edge router accepts no links; link listeners need mode interior",
            );
        }
        bind(errs, format!("{p}.port"), &l.host, l.port);
    }
    for (n, l) in &e.links {
        let p = format!("links[{n}]");
        check_name(errs, &format!("{p}.name"), n);
        check_host(errs, &format!("{p}.host"), &l.host);
        check_cost(errs, &format!("{p}.cost"), l.cost);
        if l.port == 0 {
            errs.push(format!("{p}.port"), "must be between 1 and 65535");
        }
        if !e.tls_profiles.contains_key(&l.tls_profile) {
            errs.push(
                format!("{p}.tls_profile"),
                format!("no tls_profile named {:?}", l.tls_profile),
            );
        }
        if let Some(sn) = &l.server_name
            && rustls::pki_types::ServerName::try_from(sn.as_str()).is_err()
        {
            errs.push(
                format!("{p}.server_name"),
                format!("{sn:?} is not a valid name"),
            );
        }
        if let Some(Err(e)) = l.proxy.as_deref().map(van_proto::tunnel::Proxy::parse) {
            errs.push(format!("{p}.proxy"), e);
        }
        match (mode, l.role) {
            (Mode::Edge, LinkRole::InterRouter) => errs.push(
                format!("{p}.role"),
                "an edge router links to interior routers with role edge",
            ),
            (Mode::Interior, LinkRole::Edge) => errs.push(
                format!("{p}.role"),
                "an interior router links to other interior routers with role inter-router",
            ),
            _ => {}
        }
    }
    for (n, l) in &e.tcp_listeners {
        let p = format!("tcp_listeners[{n}]");
        check_name(errs, &format!("{p}.name"), n);
        check_host(errs, &format!("{p}.host"), &l.host);
        check_routing_key(errs, &format!("{p}.routing_key"), &l.routing_key);
        bind(errs, format!("{p}.port"), &l.host, l.port);
    }
    for (n, c) in &e.tcp_connectors {
        let p = format!("tcp_connectors[{n}]");
        check_name(errs, &format!("{p}.name"), n);
        check_host(errs, &format!("{p}.host"), &c.host);
        check_routing_key(errs, &format!("{p}.routing_key"), &c.routing_key);
        if c.port == 0 {
            errs.push(format!("{p}.port"), "must be between 1 and 65535");
        }
        if let Some(h) = &c.host_override {
            if !c.protocol.is_http() {
                errs.push(
                    format!("{p}.host_override"),
                    "applies only to connectors with protocol http or http2",
                );
            } else if http::HeaderValue::from_str(h).is_err() || h.is_empty() {
                errs.push(
                    format!("{p}.host_override"),
                    format!("{h:?} is not a valid Host header value"),
                );
            }
        }
    }
}

// === impl Entities ===

impl Entities {
    /// Applies a batch of operations to a copy and validates the result as a whole.
    /// On error nothing changes: the caller keeps `self`.
    pub fn with_ops(&self, mode: Mode, ops: Vec<EntityOp>) -> Result<Entities, ConfigError> {
        let mut next = self.clone();
        let mut errs = Errors::default();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                EntityOp::PutTlsProfile(t) => {
                    next.tls_profiles.insert(t.name.clone(), t);
                }
                EntityOp::PutLinkListener(t) => {
                    next.link_listeners.insert(t.name.clone(), t);
                }
                EntityOp::PutLink(t) => {
                    next.links.insert(t.name.clone(), t);
                }
                EntityOp::PutTcpListener(t) => {
                    next.tcp_listeners.insert(t.name.clone(), t);
                }
                EntityOp::PutTcpConnector(t) => {
                    next.tcp_connectors.insert(t.name.clone(), t);
                }
                EntityOp::Delete(kind, name) => {
                    let found = match kind {
                        EntityKind::TlsProfile => next.tls_profiles.remove(&name).is_some(),
                        EntityKind::LinkListener => next.link_listeners.remove(&name).is_some(),
                        EntityKind::Link => next.links.remove(&name).is_some(),
                        EntityKind::TcpListener => next.tcp_listeners.remove(&name).is_some(),
                        EntityKind::TcpConnector => next.tcp_connectors.remove(&name).is_some(),
                    };
                    if !found {
                        errs.push(
                            format!("ops[{i}].delete"),
                            format!("no {} named {name:?}", kind.as_str()),
                        );
                    }
                }
            }
        }
        validate_entities(&mut errs, mode, &next);
        errs.finish()?;
        Ok(next)
    }
}

/// A router's configuration file is KiBs; PEM files a few KiB each.
pub(crate) const MAX_CONFIG_FILE: u64 = 16 << 20;

/// Reads at most `max` bytes of `path`: a file named by mistake (or /dev/zero) is an error,
/// not a reason to fill memory.
pub(crate) fn read_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {} MiB", max >> 20),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests;
