//! The site console on the local platform, as a user meets it: `init --enable-console`, the
//! lines `status` and `console` print, HTTPS with the site's certificate, the login, and the
//! whole network's sites, services and connections, byte for byte as the client counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use van_testkit::eventually_ok;
use van_testkit::site::LocalSites;

const SKUPPER: &str = env!("CARGO_BIN_EXE_skupper");

/// HTTPS to the console, trusting only the site's CA.
struct Console {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    cookie: String,
}

impl Console {
    /// Trusts the CA of the site in `site_dir` (from the controller's state).
    fn new(site_dir: &std::path::Path, port: u16) -> Console {
        let state: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(site_dir.join("state.yaml")).unwrap())
                .unwrap();
        let ca = state["certs"]["ca-cert"].as_str().expect("the site's CA");
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Console {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            cookie: String::new(),
        }
    }

    /// One request; the status, headers and body.
    async fn call(&self, method: &str, path: &str, body: &str) -> (u16, String, String) {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        // The certificate holds 127.0.0.1 among the site's names.
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .expect("TLS with the site CA");
        let cookie = if self.cookie.is_empty() {
            String::new()
        } else {
            format!("Cookie: {}\r\n", self.cookie)
        };
        van_testkit::http::exchange(tls, method, path, &cookie, body).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.call("GET", path, "").await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn login(&mut self, password: &str) -> u16 {
        let body = serde_json::json!({"username": "admin", "password": password}).to_string();
        let (status, head, _) = self.call("POST", "/api/v1/login", &body).await;
        if let Some(c) = head.lines().find_map(|l| l.strip_prefix("set-cookie: ")) {
            self.cookie = c.split(';').next().unwrap().to_string();
        }
        status
    }
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["up"] != false)
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    n.sort();
    n
}

/// Connects through west, retrying while west's listener comes up.
async fn connect_west(port: u16) -> TcpStream {
    eventually_ok("west's listener", async || {
        TcpStream::connect(("127.0.0.2", port))
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_network_and_its_connections_byte_for_byte() {
    let mut sites = LocalSites::new(SKUPPER);
    sites.names = vec!["west", "east"];
    let port = sites
        .init_with_console("west", "127.0.0.2", "internal")
        .await;
    sites.init("east", "127.0.0.3", "interior").await;

    // Where the console is and how to log in, as Skupper said it.
    let users = sites.site_dir("west").join("console-users/admin");
    let lines = [
        format!("The site console url is: https://127.0.0.1:{port}/"),
        format!(
            "The credentials for internal console-auth mode are held in file: '{}' (user admin)",
            users.display()
        ),
    ];
    let status = sites.ok("west", &["status"]).await;
    let console_out = sites.ok("west", &["console"]).await;
    for l in &lines {
        assert!(status.contains(l.as_str()), "{status}");
        assert!(console_out.contains(l.as_str()), "{console_out}");
    }
    assert!(!sites.ok("east", &["status"]).await.contains("console"));
    let o = sites.sk("east", &["console"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--enable-console"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&users).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the password is the user's only");
    }
    let password = std::fs::read_to_string(&users).unwrap();

    // HTTPS with the site's certificate; nothing without a login.
    let mut console = Console::new(&sites.site_dir("west"), port);
    let (status, _, _) = eventually_ok("the console answering", async || match TcpStream::connect(
        console.addr,
    )
    .await
    {
        Ok(_) => Ok(console.call("GET", "/api/v1/sites", "").await),
        Err(e) => Err(e.to_string()),
    })
    .await;
    assert_eq!(status, 401);
    assert_eq!(console.login("not-the-password").await, 401);
    assert_eq!(console.login(password.trim()).await, 200);
    assert_eq!(
        console.get("/api/v1/user").await["username"],
        "admin",
        "logged in"
    );

    // Link, and both sites appear with the link between them.
    let token = sites.home().join("west.token");
    let token_s = token.to_str().unwrap();
    sites.ok("west", &["token", "create", token_s]).await;
    sites.ok("east", &["link", "create", token_s]).await;
    eventually_ok("both sites and the link", async || {
        let t = console.get("/api/v1/topology").await;
        let sites_up = names(&serde_json::json!({"items": t["sites"]}));
        let link_up = t["links"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["state"] == "up"));
        if sites_up == ["east", "west"] && link_up {
            Ok(())
        } else {
            Err(t.to_string())
        }
    })
    .await;

    // A connection through west to an echo server in east: both ends' figures are what the
    // client sent and received.
    let echo = van_testkit::router::echo_server().await;
    let svc = sites.expose_host("east", "echo", echo.port()).await;
    let svc_echo = svc;
    let data = van_testkit::router::payload(123_457);
    let mut s = connect_west(svc).await;
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert!(back == data, "echoed");
    let key = format!("echo:{svc}");
    let conn = eventually_ok("the connection, ended", async || {
        let v = console
            .get(&format!(
                "/api/v1/connections?address={key}&state=terminated"
            ))
            .await;
        match v["items"].as_array().and_then(|i| i.first()) {
            // Both halves: the server's end reports the target.
            Some(c) if c["bytesIn"] == 123_457 && c["serverAddr"] != "" => Ok(c.clone()),
            _ => Err(v.to_string()),
        }
    })
    .await;
    assert_eq!(conn["bytesOut"], 123_457, "{conn}");
    assert_eq!(conn["outcome"], "closed", "{conn}");
    assert_eq!(conn["serverAddr"], echo.to_string(), "{conn}");
    for (field, want) in [("sourceSiteId", "west"), ("destSiteId", "east")] {
        let id = conn[field].as_str().unwrap();
        let site = console.get(&format!("/api/v1/sites/{id}")).await;
        assert_eq!(site["name"], want, "{field}: {site}");
    }
    // `network status` shows what each site's clients moved, from the same records.
    let net = sites.ok("west", &["network", "status"]).await;
    assert!(
        net.contains("traffic from its clients: 1 connection, 120.6 KiB sent, 120.6 KiB received"),
        "{net}"
    );
    let services = console.get("/api/v1/services").await;
    assert!(
        services["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["address"] == key.as_str() && s["connections"] == 1),
        "{services}"
    );

    // A target that refuses: the connection is shown as refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let svc = sites.expose_host("east", "gone", closed_port).await;
    let refused_key = format!("gone:{svc}");
    eventually_ok("a refused connection shown as refused", async || {
        let mut s = connect_west(svc).await;
        let _ = s.read(&mut [0u8; 1]).await;
        let v = console
            .get(&format!(
                "/api/v1/connections?address={refused_key}&outcome=refused"
            ))
            .await;
        if v["total"].as_u64() > Some(0) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;

    // The network-wide metrics count the echo connection between the two sites.
    let (status, _, metrics) = console.call("GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("skupper_connections_closed_total")
                && l.contains("source_site_name=\"west\"")
                && l.contains("dest_site_name=\"east\"")
                && l.contains(&format!("routing_key=\"{key}\""))),
        "{metrics}"
    );

    // East's router is killed and restarted by its supervisor: its records resume, nothing
    // counted twice, and new connections are recorded.
    let total = |v: Value| v["total"].as_u64().unwrap();
    let before = total(console.get("/api/v1/connections?limit=1").await);
    let sock = sites.site_dir("east").join("run/supervisor.sock");
    let old = skupper::supervisor::child_pid(&sock, "router")
        .await
        .unwrap();
    van_testkit::site::kill9(old);
    let data = van_testkit::router::payload(1000);
    eventually_ok("an echo through the restarted router", async || {
        let mut s = connect_west(svc_echo).await;
        let mut back = Vec::new();
        let r = async {
            s.write_all(&data).await?;
            s.shutdown().await?;
            s.read_to_end(&mut back).await
        };
        match tokio::time::timeout(Duration::from_secs(3), r).await {
            Ok(Ok(_)) if back == data => Ok(()),
            r => Err(format!("{r:?}, {} bytes back", back.len())),
        }
    })
    .await;
    assert_ne!(
        skupper::supervisor::child_pid(&sock, "router").await,
        Some(old),
        "restarted"
    );
    eventually_ok("the new connection, once", async || {
        let v = console
            .get(&format!(
                "/api/v1/connections?address={key}&state=terminated&bytesIn=1000"
            ))
            .await;
        let ended = v["items"].as_array().map_or(0, Vec::len);
        if ended >= 1 && v["items"][0]["serverAddr"] != "" {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    let after = total(console.get("/api/v1/connections?limit=1").await);
    // The echo that worked, and any attempts before it that reached the router; never the
    // old connections again.
    assert!(after > before, "{before} -> {after}");
    let echo_conns = console
        .get(&format!("/api/v1/connections?address={key}&bytesIn=123457"))
        .await;
    assert_eq!(total(echo_conns), 1, "the first echo is listed once");

    // A site that leaves disappears within seconds.
    sites.ok("east", &["delete"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = console.get("/api/v1/sites").await;
        if names(&v) == ["west"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "east still shown: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
