//! The web console in a real browser: `console/tests/browser.py` drives Debian's Chromium
//! through Playwright (login, topology, live connections, a service's page, history
//! navigation, no JavaScript errors) against a west site with the console and an east site
//! that serves `backend` from an HTTP server in this test.
//!
//! Needs python3 (with its venv module; `charts/tests/run_in_venv.py` installs
//! `console/tests/requirements-browser.txt` under the target dir the first time) and
//! `/usr/bin/chromium`, installed with apt-get when missing and running as root. Screenshots
//! land in `$CARGO_TARGET_TMPDIR/console-screenshots`; with `VAN_UPDATE_SCREENSHOT=1` the
//! topology one is also copied to `docs/console-topology.png` for the README.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use van_testkit::site::LocalSites;
use van_testkit::{ReservedPort, eventually_ok};

const SKUPPER: &str = env!("CARGO_BIN_EXE_skupper");
const CHROMIUM: &str = "/usr/bin/chromium";
/// What `/stream` sends: a chunk every 200 ms for 20 s.
const STREAM_CHUNK: usize = 1024;
const STREAM_CHUNKS: usize = 100;
/// The body of every other GET.
const BODY_LEN: usize = 4096;

/// Installs Debian's chromium when it is missing (as root, with apt-get).
fn ensure_chromium() {
    if Path::new(CHROMIUM).exists() {
        return;
    }
    assert!(
        rustix::process::getuid().is_root(),
        "this test needs {CHROMIUM}: install it (apt-get install chromium) or run the test as \
         root, which installs it"
    );
    let o = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    let ok = o.as_ref().is_ok_and(|o| o.status.success()) && Path::new(CHROMIUM).exists();
    assert!(
        ok,
        "this test needs {CHROMIUM}; apt-get install chromium failed: {}",
        match &o {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        }
    );
}

/// A tiny HTTP/1.1 server: `/stream` trickles bytes for about 20 s, any other GET answers
/// [`BODY_LEN`] bytes. One request per connection.
async fn serve(listener: TcpListener) {
    while let Ok((conn, _)) = listener.accept().await {
        tokio::spawn(answer(conn));
    }
}

async fn answer(mut conn: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    if path == "/stream" {
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
            .await?;
        for _ in 0..STREAM_CHUNKS {
            conn.write_all(&[b'.'; STREAM_CHUNK]).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        let body = "x".repeat(BODY_LEN);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {BODY_LEN}\r\n\
             Connection: close\r\n\r\n{body}"
        );
        conn.write_all(reply.as_bytes()).await?;
    }
    conn.shutdown().await
}

/// The text between `before` and the next `after` in `out`.
fn between<'a>(out: &'a str, before: &str, after: &str) -> &'a str {
    let rest = out
        .split_once(before)
        .unwrap_or_else(|| panic!("no {before:?} in:\n{out}"))
        .1;
    rest.split_once(after)
        .unwrap_or_else(|| panic!("no {after:?} after {before:?} in:\n{out}"))
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_shows_sites_services_and_live_connections() {
    ensure_chromium();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));

    let mut sites = LocalSites::new(SKUPPER);
    sites.names = vec!["west", "east"];
    let console_port = sites
        .init_with_console("west", "127.0.0.2", "internal")
        .await;
    sites.init("east", "127.0.0.3", "interior").await;

    // Where the console is and how to log in, as `status` tells a user.
    let out = sites.ok("west", &["status"]).await;
    let url = between(&out, "The site console url is: ", "\n");
    assert_eq!(url, format!("https://127.0.0.1:{console_port}/"), "{out}");
    let users = between(
        &out,
        "The credentials for internal console-auth mode are held in file: '",
        "' (user admin)",
    );
    let password = std::fs::read_to_string(users).unwrap();
    let password = password.trim();
    assert!(!password.is_empty(), "{users} is empty");

    let token = sites.home().join("west.token");
    let token = token.to_str().unwrap();
    sites.ok("west", &["token", "create", token]).await;
    let out = sites.ok("east", &["link", "create", token]).await;
    let link = between(&out, "(name=", ")");
    sites
        .ok("east", &["link", "status", link, "--wait", "60s"])
        .await;

    // `backend` served at east, reached through west's listener on 127.0.0.2.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = backend.local_addr().unwrap().port().to_string();
    let server = tokio::spawn(serve(backend));
    let svc_port = ReservedPort::on(Ipv4Addr::UNSPECIFIED);
    let svc_port = svc_port.port().to_string();
    let expose = format!(
        "expose host 127.0.0.1 --port {svc_port} --target-port {backend_port} --address backend"
    );
    let expose: Vec<&str> = expose.split_whitespace().collect();
    sites.ok("east", &expose).await;
    let through_west = format!("127.0.0.2:{svc_port}");
    eventually_ok("backend reachable through west", async || {
        skupper::demo::http_get(&through_west, "/ready")
            .await
            .map_err(|e| e.to_string())
            .and_then(|body| match body.len() {
                BODY_LEN => Ok(()),
                n => Err(format!("a body of {n} bytes, not {BODY_LEN}")),
            })
    })
    .await;

    let shots = tmp.join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let venv = tmp.join("browser-venv");
    let run = tokio::process::Command::new("python3")
        .arg(root.join("charts/tests/run_in_venv.py"))
        .arg("--requirements")
        .arg(root.join("console/tests/requirements-browser.txt"))
        .arg(&venv)
        .arg(root.join("console/tests/browser.py"))
        .args(["--url", url, "--password", password])
        .args(["--service", &format!("backend:{svc_port}")])
        .args(["--traffic", &through_west])
        .args(["--client-site", "west", "--server-site", "east"])
        .arg("--screenshots")
        .arg(&shots)
        .current_dir(root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .kill_on_drop(true)
        .output();
    // The script bounds itself (90 s); the rest is for installing Playwright the first time.
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("browser.py did not finish within 240 s")
        .unwrap_or_else(|e| panic!("cannot run python3 (needed for the browser test): {e}"));
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- browser.py stdout\n{stdout}--- browser.py stderr\n{stderr}");
    assert!(
        output.status.success(),
        "browser.py failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status,
        shots.display()
    );
    assert!(stdout.contains("all steps passed"), "{stdout}");
    for shot in ["topology.png", "connections.png", "service.png"] {
        let f = shots.join(shot);
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{} is missing or tiny", f.display());
    }
    if std::env::var_os("VAN_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let doc = root.join("docs/console-topology.png");
        std::fs::copy(shots.join("topology.png"), &doc).unwrap();
        println!("updated {}", doc.display());
    }
}
