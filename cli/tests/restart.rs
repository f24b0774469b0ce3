//! Killed processes come back on their own: SIGKILL the router of a running site and its
//! supervisor restarts it, config-sync gives it back its links and listeners, and the service
//! answers again — no manual step. Same for the controller, which loses nothing.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use van_testkit::site::{LocalSites, kill9};
use van_testkit::{ReservedPort, eventually, eventually_ok};

async fn pid_of(site_dir: &Path, child: &str) -> u32 {
    skupper::supervisor::child_pid(&site_dir.join("run/supervisor.sock"), child)
        .await
        .unwrap_or_else(|| panic!("no running {child} in {}", site_dir.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_router_and_controller_are_restarted_with_their_configuration() {
    let mut sites = LocalSites::new(env!("CARGO_BIN_EXE_skupper"));
    sites.names = vec!["west", "east"];
    sites.init("west", "127.0.0.2", "interior").await;
    sites.init("east", "127.0.0.3", "interior").await;
    let token = sites.home().join("west.yaml");
    let token = token.to_str().unwrap();
    sites.ok("west", &["token", "create", token]).await;
    sites
        .ok("east", &["link", "create", token, "--name", "to-west"])
        .await;
    sites
        .ok("east", &["link", "status", "to-west", "--wait", "30s"])
        .await;
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = backend.local_addr().unwrap().port().to_string();
    tokio::spawn(skupper::demo::serve_backend(backend, "east"));
    // West listens for the service on 127.0.0.2.
    let svc = ReservedPort::on(Ipv4Addr::UNSPECIFIED);
    let svc = svc.port().to_string();
    sites
        .ok(
            "east",
            &[
                "expose",
                "host",
                "127.0.0.1",
                "--port",
                &svc,
                "--target-port",
                &backend_port,
                "--address",
                "backend",
            ],
        )
        .await;
    let addr = format!("127.0.0.2:{svc}");
    let get = |within| skupper::demo::http_get_retrying(&addr, "/", within);
    assert_eq!(
        get(Duration::from_secs(30)).await.unwrap(),
        "Hello from east (/)"
    );

    for (site, child) in [
        ("east", "router"),
        ("west", "router"),
        ("west", "controller"),
    ] {
        let dir = sites.site_dir(site);
        let old = pid_of(&dir, child).await;
        kill9(old);
        let started = Instant::now();
        // Back with a new pid, the link up again and the service answering through west.
        eventually_ok(&format!("{site}'s {child} restarted"), async || {
            let status = skupper::supervisor::request(
                &dir.join("run/supervisor.sock"),
                "status",
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_default();
            let running = status.contains(&format!("{child} running"));
            if running && !status.contains(&format!("pid={old} ")) {
                Ok(())
            } else {
                Err(status)
            }
        })
        .await;
        sites
            .ok("east", &["link", "status", "to-west", "--wait", "30s"])
            .await;
        let body = get(Duration::from_secs(30)).await;
        assert_eq!(
            body.as_deref().ok(),
            Some("Hello from east (/)"),
            "after killing {site}'s {child}"
        );
        eprintln!(
            "{site} {child}: service back {:?} after SIGKILL",
            started.elapsed()
        );
    }
    // The controller's restart lost nothing: the link and the service are still defined.
    let links = sites.ok("east", &["link", "status"]).await;
    assert!(links.contains("to-west"), "{links}");
    // West's new controller hears the network from config-sync within moments.
    eventually("backend in west's service status", async || {
        let services = sites.ok("west", &["service", "status"]).await;
        services.contains("backend").then_some(())
    })
    .await;
}
