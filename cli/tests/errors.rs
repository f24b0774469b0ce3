//! Every error the CLI prints names its cause once: the errors that reach its printer (its
//! own, and the router's, controller's and config-sync's it passes on) are built around a
//! real OS error and rendered as `skupper` renders them.

use std::process::Command;

/// A real "address in use" from the OS, and the port that is taken (kept so by the listener).
fn address_in_use() -> (std::io::Error, std::net::TcpListener) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = std::net::TcpListener::bind(held.local_addr().unwrap()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    (e, held)
}

#[track_caller]
fn once(line: &str, os: &str) {
    assert_eq!(
        line.matches(os).count(),
        1,
        "{os:?} not exactly once in: {line}"
    );
    assert!(!line.contains("  "), "a run of spaces in: {line}");
    assert!(!line.contains('\n'), "not one line: {line}");
}

#[test]
fn each_error_the_cli_prints_names_its_os_error_once() {
    let os = address_in_use().0.to_string();
    let io = || address_in_use().0;
    let errors: Vec<(&str, anyhow::Error)> = vec![
        (
            "router StartError::Bind",
            van_router::StartError::Bind {
                what: "metrics".into(),
                addr: "127.0.0.1:9090".into(),
                source: io(),
            }
            .into(),
        ),
        (
            "controller RunError::Bind",
            van_controller::RunError::Bind {
                what: "claims",
                addr: "127.0.0.1:8081".into(),
                source: io(),
            }
            .into(),
        ),
        (
            "router TlsError::Read",
            van_router::tls::TlsError::Read {
                what: "certificate",
                path: "/etc/van/tls.crt".into(),
                source: io(),
            }
            .into(),
        ),
        (
            "router LinkError::Resolve",
            van_router::error::LinkError::Resolve {
                host: "west".into(),
                source: io(),
            }
            .into(),
        ),
        (
            "router LinkError::Connect",
            van_router::error::LinkError::Connect {
                addr: "west:55671".into(),
                source: io(),
            }
            .into(),
        ),
        (
            "router LinkError::Io",
            van_router::error::LinkError::Io {
                peer: "west".into(),
                source: io(),
            }
            .into(),
        ),
        // The CLI's own wrapping: the cause in the message, no source.
        (
            "anyhow with the cause in its message",
            anyhow::anyhow!("cannot write /tmp/x: {}", io()),
        ),
        ("io::Error through `?`", io().into()),
    ];
    for (what, e) in errors {
        once(&skupper::report(&e), &os);
        // With context on top, as `.context(..)` and the CLI's callers add.
        let e = e.context("skupper system run router");
        let line = skupper::report(&e);
        once(&line, &os);
        assert!(
            line.starts_with("skupper system run router: "),
            "{what}: {line}"
        );
    }
}

#[test]
fn the_cli_s_own_errors_are_one_line_without_runs_of_spaces() {
    let own: Vec<anyhow::Error> = vec![
        skupper::usage("--expiry: \"0\": a duration must be longer than zero"),
        skupper::k8s::Unreachable("get configmaps \"skupper-site\": Connection refused".into())
            .into(),
        skupper::k8s::not_enabled("west"),
    ];
    for e in own {
        let line = skupper::report(&e);
        assert!(!line.contains("  ") && !line.contains('\n'), "{line}");
    }
}

/// The symptom itself: a router whose port is taken, run as the supervisor runs it.
#[test]
fn a_router_whose_port_is_taken_says_so_once() {
    let (e, held) = address_in_use();
    let port = held.local_addr().unwrap().port();
    let tmp = van_testkit::temp_dir("skupper-errors");
    let dir = tmp.path();
    let site = van_controller::local::SiteDir::new(dir.to_path_buf());
    std::fs::write(site.site_file(), "").unwrap();
    std::fs::write(
        site.router_config(),
        format!(
            "router: {{id: r1, site: s1, mode: interior}}\n\
             admin: {{listen: 'unix:{}'}}\n\
             metrics: {{listen: '127.0.0.1:{port}'}}\n",
            dir.join("router.sock").display()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_skupper"))
        .args(["system", "run", "router", "--site-dir"])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    // Nothing but the error, on one line.
    let line = stderr.trim_end();
    let head = format!("Error: cannot bind metrics.listen on 127.0.0.1:{port}: ");
    assert!(line.starts_with(&head), "{line}");
    once(line, &e.to_string());
}
