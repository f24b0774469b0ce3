//! The supervisor: restarts crashed children with backoff, stops them through its socket,
//! and its children end when it dies (their standard input closes).

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use skupper::supervisor::{self, Backoff, ChildSpec, LogLimit, Options};
use van_testkit::site::{alive, kill9};
use van_testkit::{eventually, reserved_ports, temp_dir};

fn child(dir: &Path, name: &str, program: &str, args: &[&str]) -> ChildSpec {
    ChildSpec {
        name: name.into(),
        program: program.into(),
        args: args.iter().map(OsString::from).collect(),
        env: Vec::new(),
        log: dir.join(format!("{name}.log")),
    }
}

fn options(dir: &Path, children: Vec<ChildSpec>, grace: Duration) -> Options {
    Options {
        socket: dir.join("supervisor.sock"),
        pid_file: Some(dir.join("supervisor.pid")),
        children,
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            reset_after: Duration::from_secs(30),
        },
        stop_grace: grace,
        log_limit: LogLimit::default(),
        own_log: None,
    }
}

/// `name running pid=N restarts=R` → (running, pid, restarts).
fn parse(status: &str, name: &str) -> Option<(bool, Option<u32>, u32)> {
    let line = status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse::<u32>().ok())
    };
    Some((
        line.contains(" running "),
        field("pid="),
        field("restarts=").unwrap_or(0),
    ))
}

/// Polls `status` until `cond` holds.
async fn wait_status(socket: &Path, what: &str, cond: impl Fn(&str) -> bool) -> String {
    eventually(what, async || {
        let s = supervisor::request(socket, "status", Duration::from_secs(5)).await;
        s.ok().filter(|s| cond(s))
    })
    .await
}

async fn wait_gone(pid: u32) {
    eventually(&format!("pid {pid} gone"), async || {
        (!alive(pid)).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_crashed_children_and_stops_them() {
    let dir = temp_dir("skupper-sup-restart");
    let opts = options(
        dir.path(),
        vec![
            child(dir.path(), "cat", "cat", &[]),
            child(dir.path(), "crasher", "sh", &["-c", "echo boom; exit 3"]),
        ],
        Duration::from_secs(5),
    );
    let socket = opts.socket.clone();
    let pid_file = opts.pid_file.clone().unwrap();
    let sup = tokio::spawn(supervisor::run(opts, std::future::pending()));

    // A child that keeps crashing is restarted again and again (with backoff).
    let s = wait_status(&socket, "crasher restarts", |s| {
        parse(s, "crasher").is_some_and(|(_, _, r)| r >= 3)
    })
    .await;
    let (running, cat_pid, cat_restarts) = parse(&s, "cat").unwrap();
    assert!(running, "{s}");
    assert_eq!(cat_restarts, 0, "{s}");
    let cat_pid = cat_pid.unwrap();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        std::process::id().to_string()
    );
    let log = std::fs::read_to_string(dir.path().join("crasher.log")).unwrap();
    assert!(log.matches("boom").count() >= 3, "{log}");

    // A killed child comes back with a new pid.
    kill9(cat_pid);
    let s = wait_status(&socket, "cat restarted", |s| {
        parse(s, "cat").is_some_and(|(run, pid, r)| run && r == 1 && pid != Some(cat_pid))
    })
    .await;
    let new_cat = parse(&s, "cat").unwrap().1.unwrap();
    assert!(alive(new_cat));

    // Unknown commands are refused, the connection answered.
    let a = supervisor::request(&socket, "frob", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(a.starts_with("error: unknown command"), "{a}");

    // stop: cat ends at EOF on its standard input; everything is cleaned up.
    let t = Instant::now();
    let a = supervisor::request(&socket, "stop", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(a, "stopped\n");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "cat should stop at EOF, not be killed"
    );
    tokio::time::timeout(Duration::from_secs(5), sup)
        .await
        .expect("supervisor exits after stop")
        .unwrap()
        .unwrap();
    wait_gone(new_cat).await;
    assert!(!socket.exists());
    assert!(!pid_file.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_child_that_ignores_its_stdin() {
    let dir = temp_dir("skupper-sup-kill");
    let opts = options(
        dir.path(),
        vec![child(dir.path(), "sleeper", "sleep", &["60"])],
        Duration::from_millis(300),
    );
    let socket = opts.socket.clone();
    let sup = tokio::spawn(supervisor::run(opts, std::future::pending()));
    let s = wait_status(&socket, "sleeper running", |s| {
        parse(s, "sleeper").is_some_and(|(run, _, _)| run)
    })
    .await;
    let pid = parse(&s, "sleeper").unwrap().1.unwrap();
    let a = supervisor::request(&socket, "stop", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(a, "stopped\n");
    sup.await.unwrap().unwrap();
    wait_gone(pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_supervisor_for_the_same_socket_is_refused() {
    let dir = temp_dir("skupper-sup-twice");
    let opts = options(
        dir.path(),
        vec![child(dir.path(), "cat", "cat", &[])],
        Duration::from_secs(5),
    );
    let socket = opts.socket.clone();
    let first = tokio::spawn(supervisor::run(opts.clone(), std::future::pending()));
    wait_status(&socket, "first running", |s| s.contains("running")).await;
    let e = supervisor::run(opts, std::future::ready(()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already running"), "{e}");
    supervisor::request(&socket, "stop", Duration::from_secs(10))
        .await
        .unwrap();
    first.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_future_stops_like_stop() {
    let dir = temp_dir("skupper-sup-shutdown");
    let opts = options(
        dir.path(),
        vec![child(dir.path(), "cat", "cat", &[])],
        Duration::from_secs(5),
    );
    let socket = opts.socket.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let sup = tokio::spawn(supervisor::run(opts, async {
        let _ = rx.await;
    }));
    let s = wait_status(&socket, "cat running", |s| s.contains("running")).await;
    let pid = parse(&s, "cat").unwrap().1.unwrap();
    tx.send(()).unwrap();
    sup.await.unwrap().unwrap();
    wait_gone(pid).await;
    assert!(!socket.exists());
}

/// The real thing: `skupper system supervise` of a site; when it is killed (no chance to
/// clean up), router, controller and config-sync see their standard input close and exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_processes_follow_a_killed_supervisor() {
    use van_controller::local::SiteDir;
    use van_controller::site::{RouterMode, SiteConfig, random_hex};

    let home = temp_dir("skupper-sup-site");
    let dir = SiteDir::new(home.path().join("namespaces/s1"));
    let ports = reserved_ports(3);
    let (a, b, c) = (ports[0].port(), ports[1].port(), ports[2].port());
    dir.create(&SiteConfig {
        id: random_hex(16),
        name: "s1".into(),
        mode: RouterMode::Interior,
        ingress_host: "127.0.0.1".into(),
        ingress_bind: "127.0.0.1".into(),
        listener_host: "127.0.0.1".into(),
        inter_router_port: a,
        edge_port: b,
        claims_port: c,
        advertised_ports: None,
        advertised_hosts: None,
        console: None,
    })
    .unwrap();
    let log = std::fs::File::create(dir.logs_dir().join("supervisor.log")).unwrap();
    let mut sup = std::process::Command::new(env!("CARGO_BIN_EXE_skupper"))
        .args(["system", "supervise", "--site-dir"])
        .arg(&dir.root)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let socket = dir.supervisor_socket();
    let s = wait_status(&socket, "three children running", |s| {
        ["router", "controller", "config-sync"]
            .iter()
            .all(|n| parse(s, n).is_some_and(|(run, _, _)| run))
    })
    .await;
    let pids: Vec<u32> = ["router", "controller", "config-sync"]
        .iter()
        .map(|n| parse(&s, n).unwrap().1.unwrap())
        .collect();
    kill9(sup.id());
    let _ = sup.wait();
    for pid in pids {
        wait_gone(pid).await;
    }
    assert!(status_fails(&socket).await);
}

async fn status_fails(socket: &Path) -> bool {
    supervisor::request(socket, "status", Duration::from_secs(2))
        .await
        .is_err()
}

/// A supervisor whose socket is gone (removed by hand) is found by its pid file and stopped
/// with SIGTERM.
#[tokio::test]
async fn a_supervisor_without_its_socket_is_stopped_by_signal() {
    let t = temp_dir("skupper-sup-nosock");
    let dir = van_controller::local::SiteDir::new(t.path().to_path_buf());
    std::fs::create_dir_all(dir.pid_file().parent().unwrap()).unwrap();
    // Named like a supervisor (its argv[0]); a loop, so the shell is not replaced by sleep.
    let mut fake = std::process::Command::new("sh")
        .args([
            "-c",
            "while :; do sleep 0.1; done",
            "skupper-system-supervise",
        ])
        .spawn()
        .unwrap();
    // Until its exec completes, /proc shows the test binary (or nothing) as its command line.
    let cmdline = format!("/proc/{}/cmdline", fake.id());
    eventually("the fake supervisor's command line", async || {
        let c = std::fs::read_to_string(&cmdline).ok()?;
        c.contains("skupper-system-supervise").then_some(())
    })
    .await;
    std::fs::write(dir.pid_file(), fake.id().to_string()).unwrap();
    assert!(supervisor::stop(&dir).await.unwrap());
    let exit = fake.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(exit.signal(), Some(15), "not ended by SIGTERM: {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_child_fills_at_most_its_rotated_logs() {
    let dir = temp_dir("skupper-sup-rotate");
    // 20,000 lines of 50 bytes: 1 MB through a 100 KB limit with two old files kept.
    let script = "i=0; while [ $i -lt 20000 ]; do \
                  echo \"line $i ......................................\"; i=$((i+1)); done; \
                  echo done >&2; exec cat";
    let mut opts = options(
        dir.path(),
        vec![child(dir.path(), "chatty", "sh", &["-c", script])],
        Duration::from_secs(5),
    );
    opts.log_limit = LogLimit {
        max_bytes: 100_000,
        keep: 2,
    };
    let socket = opts.socket.clone();
    let sup = tokio::spawn(supervisor::run(opts, std::future::pending()));
    let log = dir.path().join("chatty.log");
    let last = eventually("the last line written", async || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("done\n").then_some(text)
    })
    .await;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let older = dir.path().join("chatty.log.1");
    let oldest = dir.path().join("chatty.log.2");
    assert!(size(&log).unwrap() <= 100_000, "{:?}", size(&log));
    assert!(size(&older).is_some_and(|s| s <= 100_000 && s > 90_000));
    assert!(size(&oldest).is_some_and(|s| s <= 100_000 && s > 90_000));
    assert!(
        size(&dir.path().join("chatty.log.3")).is_none(),
        "only two old files"
    );
    // Whole lines: every file starts where a line starts.
    for p in [&older, &oldest] {
        let t = std::fs::read_to_string(p).unwrap();
        assert!(t.starts_with("line "), "{}", &t[..20]);
    }
    assert!(
        last.ends_with("done\n") || last.contains("line 19999"),
        "{last}"
    );
    assert_eq!(
        supervisor::request(&socket, "stop", Duration::from_secs(20))
            .await
            .unwrap()
            .trim(),
        "stopped"
    );
    sup.await.unwrap().unwrap();
}
