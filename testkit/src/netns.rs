//! Hosts for tests that need more than one network: Linux network namespaces made with
//! `ip netns`, the tools installed when missing, commands run inside, a web server inside.
//! Needs root.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Runs a command that must succeed; panics with its standard error.
pub fn run(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Installs the Debian packages of the commands that are missing (`(command, a flag it
/// answers, package)`), as root with apt-get, so a fresh machine runs the test as it is.
pub fn ensure_tools(tools: &[(&str, &str, &str)]) {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(cmd, flag, _)| Command::new(cmd).arg(flag).output().is_err())
        .map(|(_, _, package)| *package)
        .collect();
    if missing.is_empty() {
        return;
    }
    let o = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && apt-get install -y -qq --no-install-recommends \"$@\"",
            "sh",
        ])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    assert!(
        o.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs {} (as root: apt-get install {0}): {:?}",
        missing.join(" "),
        o.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
    );
}

/// `ip netns exec NS args...`, to add to and run.
pub fn exec(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// GETs `url` from inside `ns` (python3, no proxy); the body, or the error text.
pub fn fetch(ns: &str, url: &str) -> Result<String, String> {
    let code = format!(
        "import urllib.request as u; o = u.build_opener(u.ProxyHandler({{}})); \
         print(o.open('{url}', timeout=3).read().decode(), end='')"
    );
    let o = exec(ns, &["python3", "-c", &code]).output().unwrap();
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// A process killed on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves the files of `dir` on 127.0.0.1:`port` inside `ns` (python3's http.server).
pub fn web_server(ns: &str, port: u16, dir: &Path) -> Killed {
    let port = port.to_string();
    Killed(
        exec(
            ns,
            &[
                "python3",
                "-m",
                "http.server",
                &port,
                "--bind",
                "127.0.0.1",
                "--directory",
            ],
        )
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    )
}

/// `skupper init` of site `name` run inside `ns` (so its processes live there), with its
/// link and claims endpoints on `ip` and its services on 127.0.0.1.
pub fn init_site(ns: &str, exe: &str, home: &Path, name: &str, ip: &str) {
    let home = home.display().to_string();
    let o = exec(
        ns,
        &[
            exe,
            "--platform",
            "local",
            "--home",
            &home,
            "-n",
            name,
            "init",
            "--ingress-host",
            ip,
            "--ingress-bind",
            ip,
            "--listener-host",
            "127.0.0.1",
        ],
    )
    .output()
    .unwrap();
    assert!(
        o.status.success(),
        "init {name}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
