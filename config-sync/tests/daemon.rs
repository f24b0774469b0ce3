//! The `van-config-sync` binary: `--health-listen` serves the health service kubelet probes,
//! and a port it cannot listen on is reported on one line, its OS error once.

use std::process::{Command, Stdio};

use van_testkit::grpc::{self, ServingStatus};
use van_testkit::{ReservedPort, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_van-config-sync");

/// Kills the daemon on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn health_listen_serves_not_serving_without_a_router() {
    let port = ReservedPort::localhost();
    let _daemon = Daemon(
        Command::new(BIN)
            .args(["--controller", "127.0.0.1:1", "--router", "127.0.0.1:1"])
            .args(["--health-listen", &port.addr().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let h = van_proto::grpc::lazy_channel(&port.addr().to_string()).unwrap();
    // Refused until the daemon listens.
    let answer = eventually("the health service", async || {
        grpc::health(h.clone(), "").await.ok()
    })
    .await;
    assert_eq!(answer, ServingStatus::NotServing);
}

#[test]
fn a_port_it_cannot_listen_on_is_reported_once() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let os = std::net::TcpListener::bind(addr).unwrap_err().to_string();
    for flag in [
        vec!["--health-listen".to_string(), addr.to_string()],
        vec![
            "--claims-forward".to_string(),
            format!("{addr}=127.0.0.1:1"),
        ],
    ] {
        let o = Command::new(BIN)
            .args(["--controller", "127.0.0.1:1", "--router", "127.0.0.1:1"])
            .args(&flag)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // Nothing but the error, on one line, its OS error once.
        let err = String::from_utf8_lossy(&o.stderr).trim_end().to_string();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with(&format!("van-config-sync: {}: ", flag[0])),
            "{err}"
        );
        assert_eq!(err.matches(&os).count(), 1, "{err}");
        assert!(!err.contains("  ") && !err.contains('\n'), "{err}");
    }
}
