//! Helpers shared by the CLI's end-to-end tests: a temporary SKUPPER_HOME whose sites are
//! deleted when the test ends, however it ends.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Output;

pub struct Sites {
    pub home: PathBuf,
    pub names: Vec<&'static str>,
}

impl Sites {
    pub fn new() -> Sites {
        let home = std::env::temp_dir().join(format!(
            "skupper-two-sites-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&home).unwrap();
        Sites {
            home,
            names: Vec::new(),
        }
    }

    pub async fn sk(&self, ns: &str, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_skupper"))
            .arg("-n")
            .arg(ns)
            .args(args)
            .env("SKUPPER_HOME", &self.home)
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
        self.home.join("namespaces").join(ns)
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        for ns in &self.names {
            if self.site_dir(ns).exists() {
                let _ = std::process::Command::new(env!("CARGO_BIN_EXE_skupper"))
                    .args(["--platform", "local", "-n", ns, "delete"])
                    .env("SKUPPER_HOME", &self.home)
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// `n` distinct free ports on 127.0.0.1, chosen by the OS.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Sites {
    /// `skupper -n NS init` with loopback ingress, `listener_host` for services, OS-chosen
    /// free ports and router mode `mode`; returns what it printed.
    pub async fn init(&self, ns: &str, listener_host: &str, mode: &str) -> String {
        let p: Vec<String> = free_ports(3).iter().map(u16::to_string).collect();
        self.ok(
            ns,
            &[
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
            ],
        )
        .await
    }
}

/// SIGKILL to a process this test did not spawn (std only kills its own children).
pub fn kill9(pid: u32) {
    let target = rustix::process::Pid::from_raw(pid as i32).expect("a process id");
    rustix::process::kill_process(target, rustix::process::Signal::KILL)
        .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));
}
