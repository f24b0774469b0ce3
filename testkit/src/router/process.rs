//! Routers as child processes started from YAML files, as a user starts them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use van_proto::admin::router_admin_client::RouterAdminClient;
use van_proto::admin::{ListRequest, ListenerList};

use super::Pki;
use crate::eventually_ok;

/// A router process; killed on drop.
pub struct Proc {
    pub child: Child,
    /// Admin API target (`unix:/path`).
    pub admin: String,
    pub name: String,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the router's PEM files and YAML configuration into `dir` and starts `exe` (the
/// `van-router` binary: `env!("CARGO_BIN_EXE_van-router")` in the router's tests) on them.
pub fn spawn(exe: &str, dir: &Path, pki: &Pki, id: &str, body: &str) -> Proc {
    let (cert, key) = pki.issue(id);
    let (ca_f, cert_f, key_f) = (
        dir.join("ca.pem"),
        dir.join(format!("{id}.pem")),
        dir.join(format!("{id}.key")),
    );
    std::fs::write(&ca_f, pki.ca_pem()).unwrap();
    std::fs::write(&cert_f, cert).unwrap();
    std::fs::write(&key_f, key).unwrap();
    // A unix socket in the test's directory: no port to race for.
    let admin = format!("unix:{}", dir.join(format!("{id}.sock")).display());
    let cfg = format!(
        "router: {{id: {id}}}\nadmin: {{listen: \"{admin}\"}}\nlog: {{level: info, format: json}}\n\
         timers: {{hello_interval_ms: 200, hello_max_age_ms: 1000}}\n\
         tls_profiles:\n  - {{name: link, ca_file: {}, cert_file: {}, key_file: {}}}\n{body}",
        ca_f.display(),
        cert_f.display(),
        key_f.display()
    );
    let cfg_path = dir.join(format!("{id}.yaml"));
    std::fs::write(&cfg_path, cfg).unwrap();
    let log = dir.join(format!("{id}.log"));
    let child = Command::new(exe)
        // Export spans quickly when a test configures an OTLP endpoint.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .arg("--config")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Proc {
        child,
        admin,
        name: id.into(),
        log,
    }
}

/// Polls the admin API until `ok` holds for the listener view.
pub async fn wait_for<F: Fn(&ListenerList) -> bool>(p: &Proc, what: &str, ok: F) {
    eventually_ok(&format!("{}: {what}", p.name), async || {
        if let Ok(mut c) = van_router::admin::connect(&p.admin).await
            && let Ok(l) = c.list_listeners(ListRequest {}).await
            && ok(&l.into_inner())
        {
            return Ok(());
        }
        Err(p.log_text())
    })
    .await
}

pub fn listener_up(l: &ListenerList) -> bool {
    l.listeners.iter().all(|l| l.state == "up") && !l.listeners.is_empty()
}

/// A link listener on a port the OS chooses (read it back with `link_port`).
pub fn link_listener_yaml() -> String {
    "link_listeners:\n  - {name: ir, host: 127.0.0.1, port: 0, tls_profile: link}\n".into()
}

impl Proc {
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// What the router has logged so far.
    fn log_text(&self) -> String {
        format!(
            "log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// A client of the admin API, once it answers.
    pub async fn client(&self) -> RouterAdminClient<tonic::transport::Channel> {
        let what = format!("{}: the admin API", self.name);
        eventually_ok(&what, async || {
            van_router::admin::connect(&self.admin)
                .await
                .map_err(|_| self.log_text())
        })
        .await
    }

    /// The port of the link listener "ir".
    pub async fn link_port(&self) -> u16 {
        let mut c = self.client().await;
        let l = c
            .list_link_listeners(ListRequest {})
            .await
            .unwrap()
            .into_inner();
        l.link_listeners
            .iter()
            .find(|l| l.name == "ir" && l.state == "up")
            .map(|l| l.port as u16)
            .expect("link listener bound")
    }

    /// The bound port of TCP listener `name`.
    pub async fn listener_port(&self, name: &str) -> u16 {
        let mut c = self.client().await;
        let l = c.list_listeners(ListRequest {}).await.unwrap().into_inner();
        l.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.port as u16)
            .expect("listener")
    }

    /// Waits until the router's routing table satisfies `ok` (given its nodes).
    pub async fn wait_nodes(&self, what: &str, ok: impl Fn(&[van_proto::admin::Node]) -> bool) {
        let mut c = self.client().await;
        eventually_ok(&format!("{}: {what}", self.name), async || {
            let nodes = c
                .list_nodes(ListRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .nodes;
            if ok(&nodes) {
                Ok(())
            } else {
                Err(format!("{nodes:?}"))
            }
        })
        .await
    }
}

pub fn links_yaml(links: &[(&str, u16, u32)]) -> String {
    let mut s = "links:\n".to_string();
    for (name, port, cost) in links {
        s += &format!(
            "  - {{name: {name}, host: 127.0.0.1, port: {port}, cost: {cost}, tls_profile: link}}\n"
        );
    }
    s
}
