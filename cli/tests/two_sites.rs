//! Two sites on this host, driven through the `skupper` binary as a user would: init, token,
//! link, expose, a request through the other site, status views, unexpose, unlink, debug
//! dump, delete. Sites are deleted by a guard even when an assertion fails.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;
use van_testkit::site::{LocalSites, alive};
use van_testkit::{ReservedPort, eventually, eventually_ok, temp_dir};

const SKUPPER: &str = env!("CARGO_BIN_EXE_skupper");

fn pids_of(status: &str) -> Vec<u32> {
    status
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("pid="))
                .and_then(|p| p.parse().ok())
        })
        .collect()
}

async fn supervisor_status(site_dir: &Path) -> String {
    skupper::supervisor::request(
        &site_dir.join("run/supervisor.sock"),
        "status",
        Duration::from_secs(5),
    )
    .await
    .expect("supervisor status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_link_expose_and_reach_a_service() {
    let mut sites = LocalSites::new(SKUPPER);
    sites.names = vec!["west", "east"];
    for (ns, listener_host) in [("west", "127.0.0.2"), ("east", "127.0.0.3")] {
        let out = sites.init(ns, listener_host, "interior").await;
        assert_eq!(
            out,
            format!(
                "Skupper is now installed in namespace \"{ns}\".  Use 'skupper status' to get more information.\n"
            )
        );
    }
    let o = sites.sk("west", &["init"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already installed"));

    let out = sites.ok("west", &["status"]).await;
    assert!(
        out.contains("with site name \"west\" in interior mode. It is not connected to any other sites. It has no exposed services."),
        "{out}"
    );

    // Token and link.
    let token = sites.home().join("west.token");
    let token_s = token.to_str().unwrap();
    let out = sites
        .ok("west", &["token", "create", token_s, "--expiry", "5m"])
        .await;
    assert!(
        out.starts_with(&format!("Token written to {token_s} (claim expires at ")),
        "{out}"
    );
    assert!(out.trim_end().ends_with(", 1 use)"), "{out}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = sites.ok("east", &["link", "create", token_s]).await;
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("Site configured to link to west (name="),
        "{out}"
    );
    let link_name = first
        .trim_end_matches(')')
        .rsplit_once("(name=")
        .unwrap()
        .1
        .to_string();
    assert!(out.contains("Check the status of the link using 'skupper link status'."));
    let out = sites
        .ok("east", &["link", "status", &link_name, "--wait", "60s"])
        .await;
    assert_eq!(out, format!("Link {link_name} is active\n"));
    // The claim had one use.
    let o = sites
        .sk("east", &["link", "create", token_s, "--name", "again"])
        .await;
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("Error: cannot create the link"), "{err}");
    // Waiting for a link that does not exist fails when the wait ends.
    let o = sites
        .sk("east", &["link", "status", "nosuch", "--wait", "1s"])
        .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no link named \"nosuch\""));
    let out = sites.ok("west", &["link", "status"]).await;
    assert!(out.contains("Incoming link from site east"), "{out}");

    // A backend at east, reached through west.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = backend.local_addr().unwrap().port().to_string();
    let server = tokio::spawn(skupper::demo::serve_backend(backend, "east"));
    // Free on both sites' listener hosts, 127.0.0.2 and 127.0.0.3.
    let svc_port = ReservedPort::on(Ipv4Addr::UNSPECIFIED);
    let svc_port = svc_port.port().to_string();
    let out = sites
        .ok(
            "east",
            &[
                "expose",
                "host",
                "127.0.0.1",
                "--port",
                &svc_port,
                "--target-port",
                &backend_port,
                "--address",
                "backend",
            ],
        )
        .await;
    assert_eq!(out, "host 127.0.0.1 exposed as backend\n");
    eventually_ok("west listening for backend", async || {
        let out = sites.ok("west", &["service", "status", "-o", "json"]).await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let listening = v["services"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["address"] == "backend"
                    && s["listeners"].as_array().is_some_and(|l| !l.is_empty())
            })
        });
        if listening { Ok(()) } else { Err(out) }
    })
    .await;
    let out = sites.ok("west", &["service", "status"]).await;
    assert!(
        out.starts_with("Services exposed through Skupper:\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("╰─ backend:{svc_port} (tcp)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("listeners: 127.0.0.2:{svc_port}")),
        "{out}"
    );
    let body = skupper::demo::http_get_retrying(
        &format!("127.0.0.2:{svc_port}"),
        "/two-sites",
        Duration::from_secs(15),
    )
    .await
    .unwrap();
    assert_eq!(body, "Hello from east (/two-sites)");

    let out = sites.ok("west", &["status"]).await;
    assert!(out.contains("It is connected to 1 other site."), "{out}");
    let out = sites.ok("east", &["status"]).await;
    assert!(out.contains("It has 1 exposed service."), "{out}");
    let out = sites.ok("west", &["network", "status", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sites"].as_array().map(Vec::len), Some(2), "{out}");
    let out = sites.ok("west", &["network", "status"]).await;
    assert!(out.starts_with("Sites:\n"), "{out}");
    assert!(out.contains("[local]") && out.contains(" - west"), "{out}");
    assert!(out.contains("[remote]") && out.contains(" - east"), "{out}");
    let out = sites.ok("east", &["version", "-o", "yaml"]).await;
    assert!(out.contains("controller:"), "{out}");

    // Debug dump: configuration, logs and status, never the private keys.
    let dump = sites.home().join("west.tar.gz");
    let out = sites
        .ok("west", &["debug", "dump", dump.to_str().unwrap()])
        .await;
    assert!(out.starts_with("Debug dump written to"), "{out}");
    let list = std::process::Command::new("tar")
        .arg("tzf")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(list.status.success());
    let list = String::from_utf8_lossy(&list.stdout);
    for f in [
        "site.yaml",
        "router.yaml",
        "logs/router.log",
        "logs/controller.log",
        "status/site.json",
        "status/network.json",
    ] {
        assert!(
            list.contains(&format!("skupper-dump-west/{f}")),
            "{f} missing: {list}"
        );
    }
    assert!(!list.contains("state.yaml"), "{list}");

    // Unexpose: the service goes with its last target.
    let out = sites
        .ok(
            "east",
            &["unexpose", "host", "127.0.0.1", "--address", "backend"],
        )
        .await;
    assert_eq!(out, "host 127.0.0.1 unexposed\n");
    let out = sites.ok("east", &["service", "status", "-o", "json"]).await;
    assert!(!out.contains("\"backend\""), "{out}");

    let out = sites.ok("east", &["link", "delete", &link_name]).await;
    assert_eq!(out, format!("Link '{link_name}' has been deleted\n"));
    let out = sites.ok("east", &["link", "status"]).await;
    assert!(!out.contains(&format!("Link {link_name}")), "{out}");

    // Delete stops every process of the site and removes its directory.
    for ns in ["west", "east"] {
        let dir = sites.site_dir(ns);
        let mut pids = pids_of(&supervisor_status(&dir).await);
        pids.push(
            std::fs::read_to_string(dir.join("supervisor.pid"))
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
        );
        assert_eq!(pids.len(), 4);
        let out = sites.ok(ns, &["delete"]).await;
        assert_eq!(
            out,
            format!("Skupper is now removed from namespace \"{ns}\".\n")
        );
        assert!(!dir.exists());
        let what = format!("{ns}'s processes {pids:?} gone");
        eventually(&what, async || {
            (!pids.iter().any(|p| alive(*p))).then_some(())
        })
        .await;
    }
    server.abort();
}

/// Runs `skupper ARGS` (a demo) to success and returns what it printed.
async fn run_demo(args: &[&str]) -> String {
    let home = temp_dir("skupper-demo");
    let o = tokio::process::Command::new(SKUPPER)
        .args(args)
        // The demo makes its own temporary home; this one only keeps it off the user's.
        .env("SKUPPER_HOME", home.path())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// `skupper demo` runs the walkthrough end to end and cleans up after itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_and_cleans_up() {
    let out = run_demo(&["demo"]).await;
    for needle in [
        "$ skupper -n west token create",
        "$ skupper -n east link create",
        "$ skupper -n east link status --wait 60s",
        "$ curl http://127.0.0.2:8080/",
        "Hello from east (/)",
        "$ skupper -n west network status",
        "Skupper is now removed from namespace \"west\".",
    ] {
        assert!(out.contains(needle), "missing {needle:?}:\n{out}");
    }
    let demo_home = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Demo sites live in SKUPPER_HOME="))
        .unwrap();
    assert!(!Path::new(demo_home).exists(), "{demo_home} left behind");
}

/// `skupper demo --http`: Bookinfo over three sites; one keep-alive connection sees every
/// reviews version, and pages keep answering when one site's reviews stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_http_balances_bookinfo_per_request() {
    let out = run_demo(&["demo", "--http"]).await;
    let (before, after) = out
        .split_once("(south's reviews v2 and v3 stop)")
        .unwrap_or_else(|| panic!("no second round:\n{out}"));
    for v in [
        "reviews-v1 (east)",
        "reviews-v2 (south)",
        "reviews-v3 (south)",
    ] {
        assert!(before.contains(v), "{v} never answered:\n{out}");
    }
    let after = after
        .split("$ skupper -n west network status")
        .next()
        .unwrap();
    assert!(after.contains("30 × reviews-v1 (east)"), "{out}");
    assert!(out.contains("--protocol http"), "{out}");
    assert!(
        out.contains("Skupper is now removed from namespace \"south\"."),
        "{out}"
    );
}
