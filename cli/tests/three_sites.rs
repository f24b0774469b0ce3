//! Three sites through the CLI (two interior, one edge): service sync add, change and remove
//! seen from every site, and claim tokens refused for expiry, tampering and replay.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::net::TcpListener;
use van_testkit::site::LocalSites;
use van_testkit::{ReservedPort, eventually_ok};

const SKUPPER: &str = env!("CARGO_BIN_EXE_skupper");

async fn link(sites: &LocalSites, from: &str, to: &str) {
    let token = sites.home().join(format!("{to}-for-{from}.yaml"));
    let token = token.to_str().unwrap();
    sites.ok(to, &["token", "create", token]).await;
    sites
        .ok(from, &["link", "create", token, "--name", to])
        .await;
    sites
        .ok(from, &["link", "status", to, "--wait", "30s"])
        .await;
}

/// Waits until `ns`'s `service status -o json` satisfies `f`.
async fn services_until(
    sites: &LocalSites,
    ns: &str,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) {
    eventually_ok(&format!("{ns} {what}"), async || {
        let out = sites.ok(ns, &["service", "status", "-o", "json"]).await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if f(&v["services"]) { Ok(()) } else { Err(out) }
    })
    .await
}

fn has_port(services: &serde_json::Value, port: u16) -> bool {
    services.as_array().is_some_and(|s| {
        s.iter()
            .any(|s| s["address"] == "api" && s["ports"][0] == serde_json::json!(port))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_sync_across_three_sites() {
    let mut sites = LocalSites::new(SKUPPER);
    sites.names = vec!["west", "east", "north"];
    sites.init("west", "127.0.0.2", "interior").await;
    sites.init("east", "127.0.0.3", "interior").await;
    sites.init("north", "127.0.0.4", "edge").await;
    link(&sites, "east", "west").await;
    link(&sites, "north", "east").await;
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bport = backend.local_addr().unwrap().port().to_string();
    tokio::spawn(skupper::demo::serve_backend(backend, "north"));

    // Add: exposed at the edge, answered in both interiors (listening on 127.0.0.2, .3, .4).
    let ports = [(); 2].map(|_| ReservedPort::on(Ipv4Addr::UNSPECIFIED));
    let [p1, p2] = [ports[0].port(), ports[1].port()];
    let expose = |port: u16| {
        let port = port.to_string();
        let bport = bport.clone();
        let sites = &sites;
        async move {
            sites
                .ok(
                    "north",
                    &[
                        "expose",
                        "host",
                        "127.0.0.1",
                        "--port",
                        &port,
                        "--target-port",
                        &bport,
                        "--address",
                        "api",
                    ],
                )
                .await
        }
    };
    expose(p1).await;
    for (ns, host) in [("west", "127.0.0.2"), ("east", "127.0.0.3")] {
        services_until(&sites, ns, "listed api", |s| has_port(s, p1)).await;
        let body =
            skupper::demo::http_get_retrying(&format!("{host}:{p1}"), "/", Duration::from_secs(30))
                .await
                .unwrap();
        assert_eq!(body, "Hello from north (/)", "{ns}");
    }
    // Change: the same address on another port replaces it everywhere.
    sites
        .ok(
            "north",
            &["unexpose", "host", "127.0.0.1", "--address", "api"],
        )
        .await;
    expose(p2).await;
    for ns in ["west", "east"] {
        services_until(&sites, ns, "moved api", |s| {
            has_port(s, p2) && !has_port(s, p1)
        })
        .await;
    }
    let body =
        skupper::demo::http_get_retrying(&format!("127.0.0.2:{p2}"), "/", Duration::from_secs(30))
            .await
            .unwrap();
    assert_eq!(body, "Hello from north (/)");
    // Remove: gone from every site.
    sites
        .ok(
            "north",
            &["unexpose", "host", "127.0.0.1", "--address", "api"],
        )
        .await;
    for ns in ["west", "east", "north"] {
        services_until(&sites, ns, "dropped api", |s| {
            s.as_array().is_none_or(|a| a.is_empty())
        })
        .await;
    }
    // Every site is seen from the edge.
    let net = sites
        .ok("north", &["network", "status", "-o", "json"])
        .await;
    let v: serde_json::Value = serde_json::from_str(&net).unwrap();
    let mut names: Vec<&str> = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["siteName"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["east", "north", "west"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_tokens_refused_for_expiry_tampering_and_replay() {
    let mut sites = LocalSites::new(SKUPPER);
    sites.names = vec!["west", "east"];
    sites.init("west", "127.0.0.2", "interior").await;
    sites.init("east", "127.0.0.3", "interior").await;
    let file = |n: &str| sites.home().join(n).to_str().unwrap().to_string();
    let refused = async |token: &str, want: &str| {
        let o = sites.sk("east", &["link", "create", token]).await;
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{err}");
        assert!(err.contains(want), "wanted {want:?} in {err}");
    };
    // Expired: a token whose file says so is refused before west is asked. (That west's own
    // record decides when the file lies is shown in controller/tests/sites.rs, on a clock
    // the test moves instead of waiting for a token to expire.)
    let t = file("short.yaml");
    sites
        .ok("west", &["token", "create", &t, "--expiry", "1m"])
        .await;
    let yaml = std::fs::read_to_string(&t).unwrap();
    let expires = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("skupper.io/claim-expiration:"))
        .expect("a claim token carries its expiry")
        .trim()
        .to_string();
    std::fs::write(&t, yaml.replace(&expires, "'2020-01-01T00:00:00Z'")).unwrap();
    refused(&t, "expired").await;
    // Tampered: another secret in the file.
    let t = file("tampered.yaml");
    sites.ok("west", &["token", "create", &t]).await;
    let text = std::fs::read_to_string(&t).unwrap();
    let forged: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("password:") {
                "  password: Zm9yZ2VkLXNlY3JldA==".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&t, forged).unwrap();
    refused(&t, "tampered").await;
    // Replay: two uses, then refused.
    let t = file("twice.yaml");
    sites
        .ok("west", &["token", "create", &t, "--uses", "2"])
        .await;
    sites
        .ok("east", &["link", "create", &t, "--name", "first"])
        .await;
    sites.ok("east", &["link", "delete", "first"]).await;
    sites
        .ok("east", &["link", "create", &t, "--name", "second"])
        .await;
    sites.ok("east", &["link", "delete", "second"]).await;
    refused(&t, "used-up").await;
    // Garbage is named as such.
    let t = file("garbage.yaml");
    std::fs::write(&t, "kind: ConfigMap\n").unwrap();
    refused(&t, "kind").await;
    // Nothing was left half-made.
    let links = sites.ok("east", &["link", "status"]).await;
    assert!(links.contains("There are no links"), "{links}");
}
