//! Sites for tests: the controller's pieces in this process (an in-memory store, the options
//! of a Kubernetes-like site), and whole local sites run through the `skupper` binary.

use std::path::{Path, PathBuf};
use std::process::Output;

use van_controller::site::{RouterMode, SiteConfig, SiteState, SiteStore, StoreFuture};

use crate::{ReservedPort, TempDir, reserved_ports, temp_dir};

/// A site store in memory.
#[derive(Debug, Default)]
pub struct MemStore(pub std::sync::Mutex<SiteState>);

impl MemStore {
    /// What was saved last.
    pub fn saved(&self) -> SiteState {
        self.0.lock().unwrap().clone()
    }
}

impl SiteStore for MemStore {
    fn load(&self) -> StoreFuture<'_, SiteState> {
        Box::pin(std::future::ready(Ok(self.saved())))
    }
    fn save<'a>(&'a self, s: &'a SiteState) -> StoreFuture<'a, ()> {
        *self.0.lock().unwrap() = s.clone();
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Options of a Kubernetes-like site `name` with id `id` (32 hex digits).
pub fn kube_site(name: &str, id: &str) -> SiteConfig {
    SiteConfig {
        id: id.into(),
        name: name.into(),
        mode: RouterMode::Interior,
        ingress_host: format!("{name}.example"),
        ingress_bind: "0.0.0.0".into(),
        listener_host: "0.0.0.0".into(),
        inter_router_port: 55671,
        edge_port: 45671,
        claims_port: 8081,
        advertised_ports: None,
        advertised_hosts: None,
        console: None,
    }
}

/// A temporary SKUPPER_HOME for sites of the local platform, driven through the `skupper`
/// binary as a user would. The sites named in `names` are deleted (their processes stopped)
/// when it is dropped, however the test ends.
pub struct LocalSites {
    exe: PathBuf,
    home: TempDir,
    pub names: Vec<&'static str>,
    /// The sites' link and claims ports, held for as long as the sites may bind them.
    ports: Vec<ReservedPort>,
}

impl LocalSites {
    /// `exe` is the `skupper` binary (`env!("CARGO_BIN_EXE_skupper")` in the CLI's tests).
    pub fn new(exe: &str) -> LocalSites {
        LocalSites {
            exe: exe.into(),
            home: temp_dir("skupper-home"),
            names: Vec::new(),
            ports: Vec::new(),
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub async fn sk(&self, ns: &str, args: &[&str]) -> Output {
        tokio::process::Command::new(&self.exe)
            .arg("-n")
            .arg(ns)
            .args(args)
            .env("SKUPPER_HOME", self.home())
            .env_remove("SKUPPER_NAMESPACE")
            // A developer's kubeconfig must not send these tests to a cluster.
            .env("SKUPPER_PLATFORM", "local")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("run skupper")
    }

    /// Runs a command that must succeed; returns its standard output.
    pub async fn ok(&self, ns: &str, args: &[&str]) -> String {
        let o = self.sk(ns, args).await;
        assert!(
            o.status.success(),
            "skupper -n {ns} {} failed ({}):\n{}{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn site_dir(&self, ns: &str) -> PathBuf {
        self.home().join("namespaces").join(ns)
    }

    /// `skupper -n NS init` with loopback ingress, `listener_host` for services, reserved
    /// ports and router mode `mode`; returns what it printed.
    pub async fn init(&mut self, ns: &str, listener_host: &str, mode: &str) -> String {
        self.init_with(ns, listener_host, mode, &[]).await
    }

    /// As [`LocalSites::init`], with the site's console on a reserved port (`auth`:
    /// internal or unsecured); returns the port.
    pub async fn init_with_console(&mut self, ns: &str, listener_host: &str, auth: &str) -> u16 {
        let port = reserved_ports(1).remove(0);
        let p = port.port();
        self.ports.push(port);
        let ps = p.to_string();
        let extra = [
            "--enable-console",
            "--console-auth",
            auth,
            "--console-port",
            &ps,
        ];
        self.init_with(ns, listener_host, "interior", &extra).await;
        p
    }

    /// Exposes `127.0.0.1:target_port` from site `ns` as `address`, on a port held free on
    /// every local address (so every site's listener host can offer it); returns that port.
    pub async fn expose_host(&mut self, ns: &str, address: &str, target_port: u16) -> u16 {
        let held = ReservedPort::on(std::net::Ipv4Addr::UNSPECIFIED);
        let port = held.port();
        self.ports.push(held);
        let (p, t) = (port.to_string(), target_port.to_string());
        let args = [
            "expose",
            "host",
            "127.0.0.1",
            "--port",
            &p,
            "--target-port",
            &t,
            "--address",
            address,
        ];
        self.ok(ns, &args).await;
        port
    }

    /// As [`LocalSites::init`], with `extra` flags.
    pub async fn init_with(
        &mut self,
        ns: &str,
        listener_host: &str,
        mode: &str,
        extra: &[&str],
    ) -> String {
        let ports = reserved_ports(3);
        let p: Vec<String> = ports.iter().map(|p| p.port().to_string()).collect();
        self.ports.extend(ports);
        let mut args = vec![
            "init",
            "--router-mode",
            mode,
            "--ingress-host",
            "127.0.0.1",
            "--ingress-bind",
            "127.0.0.1",
            "--listener-host",
            listener_host,
            "--inter-router-port",
            &p[0],
            "--edge-port",
            &p[1],
            "--claims-port",
            &p[2],
        ];
        args.extend_from_slice(extra);
        self.ok(ns, &args).await
    }
}

impl Drop for LocalSites {
    fn drop(&mut self) {
        for ns in &self.names {
            if self.site_dir(ns).exists() {
                let _ = std::process::Command::new(&self.exe)
                    .args(["--platform", "local", "-n", ns, "delete"])
                    .env("SKUPPER_HOME", self.home())
                    .output();
            }
        }
    }
}

/// SIGKILL to a process this test did not spawn (std only kills its own children).
pub fn kill9(pid: u32) {
    let target = rustix::process::Pid::from_raw(pid as i32).expect("a process id");
    rustix::process::kill_process(target, rustix::process::Signal::KILL)
        .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));
}

/// Whether `pid` runs (a zombie, dead but not yet reaped, does not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
