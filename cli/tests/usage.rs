//! Usage errors and failures the CLI reports without a running site: each names what is
//! wrong on one line, exits 2 for usage and 1 for failures, and creates nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use van_testkit::TempDir;

/// A temporary SKUPPER_HOME, removed on drop.
struct Home(TempDir);

impl Home {
    fn new(tag: &str) -> Home {
        Home(van_testkit::temp_dir(&format!("skupper-usage-{tag}")))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn skupper(&self, args: &[&str]) -> Output {
        // A developer's kubeconfig must not send these tests to a cluster.
        self.skupper_env(args, &[("SKUPPER_PLATFORM", "local")])
    }

    /// Runs skupper with no kubeconfig (KUBECONFIG names a missing file) and `env`.
    fn skupper_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_skupper"));
        c.args(args)
            .env("SKUPPER_HOME", self.path())
            .env("KUBECONFIG", self.path().join("no-kubeconfig"))
            .env_remove("SKUPPER_NAMESPACE")
            .env_remove("SKUPPER_PLATFORM");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run skupper")
    }

    fn namespaces(&self) -> Vec<String> {
        match std::fs::read_dir(self.path().join("namespaces")) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code `code`, and stderr holds every one of `needles`.
#[track_caller]
fn fails(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code; stderr: {err}\nstdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// Our own errors (not clap's) are one line: `Error: ...`.
#[track_caller]
fn one_line(o: &Output) {
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("Error: "), "{err}");
    assert!(!err.contains("  "), "a run of spaces: {err}");
}

#[test]
fn init_reports_every_bad_flag_at_once_and_creates_nothing() {
    let h = Home::new("init");
    let o = h.skupper(&[
        "-n",
        "west",
        "init",
        "--site-name",
        "Bad_Name",
        "--router-mode",
        "core",
        "--inter-router-port",
        "70000",
        "--edge-port",
        "x",
        "--claims-port",
        "0",
        "--ingress-host",
        "not a host",
        "--timeout",
        "soon",
    ]);
    fails(
        &o,
        2,
        &[
            "--site-name",
            "Bad_Name",
            "--router-mode: \"core\" is not a router mode",
            "--inter-router-port: \"70000\" is not a port number",
            "--edge-port: \"x\"",
            "--claims-port: \"0\"",
            "--ingress-host",
            "--timeout",
        ],
    );
    one_line(&o);
    assert!(h.namespaces().is_empty(), "created {:?}", h.namespaces());
}

#[test]
fn init_console_flags_are_checked_together() {
    let h = Home::new("init-console");
    let o = h.skupper(&["init", "--console-auth", "internal", "--console-port", "9"]);
    fails(
        &o,
        2,
        &[
            "--console-auth needs --enable-console",
            "--console-port needs --enable-console",
        ],
    );
    let o = h.skupper(&[
        "init",
        "--enable-console",
        "--console-auth",
        "open",
        "--console-port",
        "http",
    ]);
    fails(
        &o,
        2,
        &[
            "--console-auth: \"open\" is not internal or unsecured",
            "--console-port: \"http\" is not a port number",
        ],
    );
    one_line(&o);
    assert!(h.namespaces().is_empty(), "created {:?}", h.namespaces());
}

#[test]
fn init_rejects_zero_timeout_and_repeated_ports() {
    let h = Home::new("init2");
    let o = h.skupper(&["init", "--timeout", "0"]);
    fails(&o, 2, &["--timeout", "longer than zero"]);
    one_line(&o);
    let o = h.skupper(&[
        "init",
        "--inter-router-port",
        "40001",
        "--edge-port",
        "40001",
    ]);
    fails(
        &o,
        2,
        &["--inter-router-port and --edge-port are both 40001"],
    );
    one_line(&o);
    assert!(h.namespaces().is_empty());
}

#[test]
fn init_rejects_ports_and_hosts_it_cannot_listen_on() {
    let h = Home::new("init3");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let o = h.skupper(&[
        "init",
        "--ingress-bind",
        "127.0.0.1",
        "--claims-port",
        &port,
    ]);
    fails(&o, 2, &["--claims-port: cannot listen on 127.0.0.1:"]);
    one_line(&o);
    // TEST-NET-1: never an address of this host, so binding fails locally.
    let o = h.skupper(&["init", "--listener-host", "192.0.2.1"]);
    fails(&o, 2, &["--listener-host: cannot listen on 192.0.2.1"]);
    one_line(&o);
    assert!(h.namespaces().is_empty());
}

#[test]
fn bad_durations() {
    let h = Home::new("dur");
    for (flag, value, needle) in [
        ("--expiry", "0", "longer than zero"),
        ("--expiry", "5x", "unknown unit"),
        ("--expiry", "-5m", "negative"),
        ("--expiry", "15", "no unit"),
        ("--expiry", "soon", "not a duration"),
    ] {
        let o = h.skupper(&["token", "create", "t.yaml", &format!("{flag}={value}")]);
        fails(&o, 2, &["--expiry", needle]);
    }
    let o = h.skupper(&["link", "status", "--wait", "0s"]);
    fails(&o, 2, &["--wait", "longer than zero"]);
    let o = h.skupper(&["token", "create", "t.yaml", "--uses", "0"]);
    fails(&o, 2, &["--uses"]);
}

#[test]
fn bad_ports_and_router_mode_in_other_commands() {
    let h = Home::new("ports");
    let o = h.skupper(&["service", "create", "db", "65536"]);
    fails(&o, 2, &["65536"]);
    let o = h.skupper(&[
        "expose",
        "host",
        "127.0.0.1",
        "--port",
        "0",
        "--address",
        "x",
    ]);
    fails(&o, 2, &["--port"]);
    let o = h.skupper(&["link", "create", "t.yaml", "--cost", "0"]);
    fails(&o, 2, &["--cost"]);
}

#[test]
fn expose_checks_resource_and_flags_before_needing_a_site() {
    let h = Home::new("expose");
    let o = h.skupper(&["expose", "deployment", "backend", "--port", "8080"]);
    fails(
        &o,
        2,
        &["expose deployment is only available on the kubernetes platform"],
    );
    one_line(&o);
    let o = h.skupper(&["expose", "deployment/backend", "--port", "8080"]);
    fails(&o, 2, &["kubernetes platform"]);
    let o = h.skupper(&["expose", "gizmo", "x", "--port", "8080"]);
    fails(&o, 2, &["unknown resource type \"gizmo\""]);
    let o = h.skupper(&["expose", "host", "127.0.0.1", "--port", "8080"]);
    fails(&o, 2, &["--address is required"]);
    one_line(&o);
    let o = h.skupper(&["expose", "host", "127.0.0.1", "--address", "b"]);
    fails(&o, 2, &["--port is required"]);
    let o = h.skupper(&[
        "expose",
        "host",
        "127.0.0.1",
        "--address",
        "b",
        "--port",
        "1,2",
        "--target-port",
        "3",
    ]);
    fails(
        &o,
        2,
        &["--target-port: 1 target ports for 2 service ports"],
    );
    let o = h.skupper(&["unexpose", "host", "127.0.0.1"]);
    fails(&o, 2, &["--address is required"]);
    let o = h.skupper(&["service", "bind", "db", "statefulset", "x"]);
    fails(
        &o,
        2,
        &["service bind statefulset is only available on the kubernetes platform"],
    );
}

#[test]
fn missing_and_unwritable_files() {
    let h = Home::new("files");
    let missing = h.path().join("nope.yaml");
    let o = h.skupper(&["link", "create", missing.to_str().unwrap()]);
    fails(
        &o,
        2,
        &["cannot read token file", "nope.yaml", "No such file"],
    );
    one_line(&o);
    let empty = h.path().join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    let o = h.skupper(&["link", "create", empty.to_str().unwrap()]);
    fails(&o, 2, &["is empty"]);
    let o = h.skupper(&["token", "create", "/nonexistent-dir/t.yaml"]);
    fails(&o, 2, &["directory /nonexistent-dir does not exist"]);
    one_line(&o);
    let o = h.skupper(&["token", "create", h.path().to_str().unwrap()]);
    fails(&o, 2, &["is a directory"]);
    let o = h.skupper(&[
        "token",
        "create",
        "t.yaml",
        "--token-type",
        "cert",
        "--expiry",
        "1h",
    ]);
    fails(&o, 2, &["apply to claim tokens only"]);
}

#[test]
fn platforms_and_namespaces() {
    let h = Home::new("platform");
    // No kubeconfig: local is chosen, and kubernetes when asked for says why it cannot be.
    let o = h.skupper_env(&["status"], &[]);
    fails(&o, 1, &["Skupper is not enabled in namespace \"default\""]);
    let o = h.skupper_env(&["--platform", "kubernetes", "status"], &[]);
    fails(&o, 1, &["cannot read a kubeconfig"]);
    one_line(&o);
    let o = h.skupper(&["--kubeconfig", "/nonexistent/kc", "status"]);
    fails(
        &o,
        2,
        &["--kubeconfig and --context are for the kubernetes platform"],
    );
    // A kubeconfig with a current context selects kubernetes; its API server is down here
    // (a held port: nothing listens on it, nor can anything else start to).
    let down = van_testkit::ReservedPort::localhost();
    let port = down.port();
    let kc = h.path().join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: west\n\
             clusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: west, context: {{cluster: c, user: u, namespace: west}}}}]\n"
        ),
    )
    .unwrap();
    let o = h.skupper_env(&["status"], &[("KUBECONFIG", kc.to_str().unwrap())]);
    fails(
        &o,
        1,
        &[
            &format!("cannot reach the Kubernetes API server at https://127.0.0.1:{port}/"),
            "; check the kubeconfig context (kubectl config current-context)",
        ],
    );
    one_line(&o);
    let o = h.skupper_env(
        &[
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--context",
            "east",
            "status",
        ],
        &[],
    );
    fails(&o, 1, &["context \"east\""]);
    let o = h.skupper(&["--platform", "podman", "status"]);
    fails(&o, 2, &["podman", "--platform"]);
    let o = h.skupper(&["-n", "../etc", "status"]);
    fails(&o, 2, &["namespace"]);
    one_line(&o);
}

#[test]
fn commands_on_a_missing_site() {
    let h = Home::new("missing");
    let not_enabled = "Skupper is not enabled in namespace \"west\"";
    let token = h.path().join("t.yaml");
    let token = token.to_str().unwrap();
    std::fs::write(h.path().join("token.yaml"), "kind: Secret\n").unwrap();
    let token_in = h.path().join("token.yaml");
    let dump = h.path().join("d.tar.gz");
    for args in [
        vec!["status"],
        vec!["delete"],
        vec!["link", "status"],
        vec!["link", "delete", "x"],
        vec!["link", "create", token_in.to_str().unwrap()],
        vec!["token", "create", token],
        vec!["service", "status"],
        vec!["service", "create", "db", "5432"],
        vec![
            "expose",
            "host",
            "127.0.0.1",
            "--port",
            "80",
            "--address",
            "web",
        ],
        vec!["network", "status"],
        vec!["debug", "dump", dump.to_str().unwrap()],
    ] {
        let mut full = vec!["-n", "west"];
        full.extend(&args);
        let o = h.skupper(&full);
        fails(&o, 1, &[not_enabled]);
        one_line(&o);
    }
    assert!(!Path::new(token).exists());
    assert!(!dump.exists());
    assert!(h.namespaces().is_empty());
}

#[test]
fn version_without_a_site() {
    let h = Home::new("version");
    let o = h.skupper(&["version"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "client version                 {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    let o = h.skupper(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["client"], env!("CARGO_PKG_VERSION"));
    let o = h.skupper(&["version", "-o", "xml"]);
    fails(&o, 2, &["xml"]);
}

#[test]
fn init_refuses_an_existing_site() {
    let h = Home::new("exists");
    let dir = h.path().join("namespaces/west");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("site.yaml"), "name: west\n").unwrap();
    let o = h.skupper(&["-n", "west", "init"]);
    fails(
        &o,
        1,
        &["Skupper is already installed in namespace \"west\""],
    );
    one_line(&o);
    assert!(dir.join("site.yaml").exists());
}

/// Writes a valid site directory without starting anything.
fn write_site(home: &Path, ns: &str) -> van_controller::local::SiteDir {
    use van_controller::site::{RouterMode, SiteConfig, random_hex};
    let dir = van_controller::local::SiteDir::of(home, ns);
    dir.create(&SiteConfig {
        id: random_hex(16),
        name: ns.into(),
        mode: RouterMode::Interior,
        ingress_host: "127.0.0.1".into(),
        ingress_bind: "127.0.0.1".into(),
        listener_host: "127.0.0.1".into(),
        inter_router_port: 1,
        edge_port: 2,
        claims_port: 3,
        advertised_ports: None,
        advertised_hosts: None,
        console: None,
    })
    .unwrap();
    dir
}

#[test]
fn a_site_whose_processes_are_gone() {
    let h = Home::new("stopped");
    let dir = write_site(h.path(), "west");
    let o = h.skupper(&["-n", "west", "status"]);
    fails(
        &o,
        1,
        &[
            "Skupper is installed in namespace \"west\" but its controller is not answering",
            "the supervisor is not running",
            &dir.logs_dir().display().to_string(),
        ],
    );
    one_line(&o);
    let o = h.skupper(&["-n", "west", "link", "status"]);
    fails(&o, 1, &["not answering", "logs"]);
    // Nothing to stop; the directory still goes.
    let o = h.skupper(&["-n", "west", "delete"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dir.root.exists());
}

fn ctx(home: &Path, ns: &str, exe: PathBuf) -> skupper::Ctx {
    skupper::Ctx {
        home: home.to_path_buf(),
        namespace: ns.into(),
        exe,
    }
}

fn init_args(timeout: &str) -> skupper::args::InitArgs {
    skupper::args::InitArgs {
        ingress_host: Some("127.0.0.1".into()),
        ingress_bind: Some("127.0.0.1".into()),
        timeout: Some(timeout.into()),
        ..Default::default()
    }
}

/// A supervisor that dies at once: init reports it and removes the half-made site.
#[tokio::test]
async fn init_cleans_up_when_the_supervisor_dies() {
    let h = Home::new("diesup");
    let c = ctx(h.path(), "west", PathBuf::from("/bin/false"));
    let mut out = Vec::new();
    let e = skupper::site::init(&c, &init_args("30s"), &mut out)
        .await
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("Skupper could not be started in namespace \"west\": its supervisor exited"),
        "{msg}"
    );
    assert!(msg.contains("the site was removed"), "{msg}");
    assert!(!c.site_dir().root.exists());
    assert!(out.is_empty());
}

/// A supervisor that never starts the controller: init gives up after --timeout.
#[tokio::test]
async fn init_cleans_up_when_the_controller_never_answers() {
    use std::os::unix::fs::PermissionsExt;
    let h = Home::new("silent");
    let script = h.path().join("silent-supervisor");
    std::fs::write(
        &script,
        "#!/bin/sh\necho pretending to supervise\nexec sleep 30\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = ctx(h.path(), "west", script);
    let t = std::time::Instant::now();
    let e = skupper::site::init(&c, &init_args("1s"), &mut Vec::new())
        .await
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("its controller did not answer within 1s"),
        "{msg}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert!(!c.site_dir().root.exists());
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let home = Home::new("epipe");
    // The reader closes its end before the CLI writes (as `| grep -q` does after a match).
    let mut child = Command::new(env!("CARGO_BIN_EXE_skupper"))
        .args(["version", "-o", "json"])
        .env("SKUPPER_HOME", home.path())
        .env("SKUPPER_PLATFORM", "local")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(out.status.success(), "{:?} {stderr}", out.status);
}
