//! A local site after `init`, as a careless or hostile user treats it: its supervisor killed,
//! its state emptied, files that are not tokens, a port taken twice. Each ends with a clear
//! message and a way back, never with a new identity behind the user's back.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use van_testkit::eventually;
use van_testkit::site::{LocalSites, alive, kill9};

fn ca_of(site_dir: &Path) -> String {
    let text = std::fs::read_to_string(site_dir.join("state.yaml")).unwrap();
    let state: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    state["certs"]["ca-cert"].as_str().unwrap().to_string()
}

fn supervisor_pid(site_dir: &Path) -> u32 {
    std::fs::read_to_string(site_dir.join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_site_is_started_again_with_its_identity() {
    let mut sites = LocalSites::new(env!("CARGO_BIN_EXE_skupper"));
    sites.names = vec!["west"];
    sites.init("west", "127.0.0.2", "interior").await;
    let dir = sites.site_dir("west");
    let ca = ca_of(&dir);

    // Private to its owner: folders 0700, files 0600, logs included.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for d in [
        sites.home().join("namespaces"),
        dir.clone(),
        dir.join("logs"),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    for f in ["site.yaml", "router.yaml", "state.yaml", "logs/router.log"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }

    let sup = supervisor_pid(&dir);
    kill9(sup);
    eventually("the supervisor gone", async || (!alive(sup)).then_some(())).await;
    let o = sites.sk("west", &["status"]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("'skupper system start'"),
        "{}",
        stderr(&o)
    );
    let o = sites.sk("west", &["init"]).await;
    assert!(
        stderr(&o).contains("already installed in namespace \"west\"; it is not running: 'skupper system start' starts it"),
        "{}",
        stderr(&o)
    );

    let out = sites.ok("west", &["system", "start"]).await;
    assert_eq!(out, "Skupper is now running in namespace \"west\".\n");
    assert!(
        sites
            .ok("west", &["status"])
            .await
            .contains("site name \"west\"")
    );
    assert_eq!(ca_of(&dir), ca, "the same site, not a new one");
    let out = sites.ok("west", &["system", "start"]).await;
    assert_eq!(out, "Skupper is already running in namespace \"west\".\n");

    let out = sites.ok("west", &["system", "stop"]).await;
    assert!(
        out.starts_with("Skupper is now stopped in namespace \"west\"."),
        "{out}"
    );
    assert!(!dir.join("run/supervisor.sock").exists());
    let out = sites.ok("west", &["system", "stop"]).await;
    assert_eq!(out, "Skupper is not running in namespace \"west\".\n");

    let unit = sites.ok("west", &["system", "unit"]).await;
    assert!(
        unit.contains(&format!(
            "ExecStart={} system supervise --site-dir {}\n",
            env!("CARGO_BIN_EXE_skupper"),
            dir.display()
        )),
        "{unit}"
    );
    assert!(
        unit.contains("[Install]\nWantedBy=default.target\n"),
        "{unit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_state_is_refused_and_repaired_from_its_backup() {
    let mut sites = LocalSites::new(env!("CARGO_BIN_EXE_skupper"));
    sites.names = vec!["west"];
    sites.init("west", "127.0.0.2", "interior").await;
    let dir = sites.site_dir("west");
    let ca = ca_of(&dir);
    let token = sites.home().join("t.yaml");
    sites
        .ok("west", &["token", "create", token.to_str().unwrap()])
        .await;
    sites.ok("west", &["system", "stop"]).await;

    // As a full disk or a careless editor leaves it.
    std::fs::write(dir.join("state.yaml"), "").unwrap();
    let o = sites.sk("west", &["system", "start"]).await;
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("state.yaml: it is empty"), "{e}");
    assert!(e.contains("`skupper system repair` puts it back"), "{e}");
    assert_eq!(e.matches("it is empty").count(), 1, "said once: {e}");
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert_eq!(
        std::fs::read(dir.join("state.yaml")).unwrap(),
        b"",
        "no new CA written"
    );

    let out = sites.ok("west", &["system", "repair"]).await;
    assert!(out.starts_with("Restored the site's state from"), "{out}");
    assert!(out.contains("state.yaml.broken-"), "{out}");
    sites.ok("west", &["system", "start"]).await;
    assert_eq!(ca_of(&dir), ca, "the site keeps its CA");
    let out = sites.ok("west", &["system", "repair"]).await;
    assert!(out.contains("is sound; nothing was changed"), "{out}");

    // A controller killed while its state is emptied does not come back as a new site: its
    // restarts fail and say why, and the running router keeps serving.
    std::fs::write(dir.join("state.yaml"), "\n").unwrap();
    let sock = dir.join("run/supervisor.sock");
    let pid = skupper::supervisor::child_pid(&sock, "controller")
        .await
        .unwrap();
    kill9(pid);
    let log = dir.join("logs/controller.log");
    eventually("the controller's refusal in its log", async || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("it is empty; the controller will not start from it")
            .then_some(())
    })
    .await;
    assert_eq!(std::fs::read(dir.join("state.yaml")).unwrap(), b"\n");
    sites.ok("west", &["system", "repair"]).await;
    eventually("the controller back", async || {
        let o = sites.sk("west", &["status"]).await;
        o.status.success().then_some(())
    })
    .await;
    assert_eq!(ca_of(&dir), ca);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_are_not_tokens_and_taken_ports_are_refused_at_once() {
    let mut sites = LocalSites::new(env!("CARGO_BIN_EXE_skupper"));
    sites.names = vec!["west"];
    sites.init("west", "127.0.0.2", "interior").await;

    // An endless file: refused after 1 MiB, as a usage error.
    let o = sites.sk("west", &["link", "create", "/dev/zero"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("token file /dev/zero is larger than 1 MiB: not a token"),
        "{}",
        stderr(&o)
    );
    let big = sites.home().join("big.yaml");
    std::fs::write(&big, vec![b'a'; 20 << 20]).unwrap();
    let o = sites
        .sk("west", &["link", "create", big.to_str().unwrap()])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // A second service on a port the first has.
    let expose = async |address: &str| {
        let args = [
            "expose",
            "host",
            "127.0.0.1",
            "--port",
            "15432",
            "--address",
            address,
        ];
        sites.sk("west", &args).await
    };
    assert!(expose("db").await.status.success());
    let o = expose("cache").await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("port 15432 is already used by service \"db\" (defined at this site)"),
        "{}",
        stderr(&o)
    );
    let status = sites.ok("west", &["service", "status"]).await;
    assert!(!status.contains("cache"), "{status}");
}
