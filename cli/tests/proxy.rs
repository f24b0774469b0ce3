//! A site whose only way out is a corporate HTTP proxy links through it.
//!
//! Two network namespaces made (and removed) by the test: `pub` (10.78.0.1) runs the public
//! site and Debian's tinyproxy (with Basic authentication); `corp` (10.78.0.2) runs the
//! private site, and its firewall lets nothing out but connections to the proxy. The claim is
//! redeemed and the link made through `CONNECT`; a service of the public site is then called
//! from inside `corp`. Needs root and python3; `ip`, `iptables` and `tinyproxy` are installed
//! with apt-get when missing.

use std::process::{Command, Stdio};

use van_testkit::eventually_ok;
use van_testkit::netns::{self, run};
use van_testkit::site::LocalSites;

const PUB_IP: &str = "10.78.0.1";
const CORP_IP: &str = "10.78.0.2";
const PROXY_PORT: &str = "18888";

fn ensure_tools() {
    netns::ensure_tools(&[
        ("ip", "-V", "iproute2"),
        ("iptables", "-V", "iptables"),
        ("tinyproxy", "-v", "tinyproxy"),
    ]);
    // Debian starts the packaged service; this test runs its own.
    let _ = Command::new("sh")
        .args(["-c", "service tinyproxy stop || pkill -x tinyproxy"])
        .output();
}

/// The namespaces, the proxy and the firewall; removed on drop.
struct Net {
    pub_ns: String,
    corp_ns: String,
    proxy: Option<std::process::Child>,
    conf: std::path::PathBuf,
}

impl Net {
    fn new() -> Net {
        ensure_tools();
        let tag = format!("{:x}", std::process::id() & 0xffff);
        let mut net = Net {
            pub_ns: format!("vanpx{tag}"),
            corp_ns: format!("vancorp{tag}"),
            proxy: None,
            conf: std::env::temp_dir().join(format!("van-tinyproxy-{tag}.conf")),
        };
        let (p, c) = (net.pub_ns.clone(), net.corp_ns.clone());
        for ns in [&p, &c] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (pa, ca) = (format!("vx{tag}p"), format!("vx{tag}c"));
        run(&[
            "ip", "-n", &p, "link", "add", &pa, "type", "veth", "peer", "name", &ca, "netns", &c,
        ]);
        run(&[
            "ip",
            "-n",
            &p,
            "addr",
            "add",
            &format!("{PUB_IP}/24"),
            "dev",
            &pa,
        ]);
        run(&[
            "ip",
            "-n",
            &c,
            "addr",
            "add",
            &format!("{CORP_IP}/24"),
            "dev",
            &ca,
        ]);
        run(&["ip", "-n", &p, "link", "set", &pa, "up"]);
        run(&["ip", "-n", &c, "link", "set", &ca, "up"]);
        // corp's only way out: the proxy.
        let ipt = |rule: &[&str]| {
            let mut a = vec!["ip", "netns", "exec", c.as_str(), "iptables"];
            a.extend_from_slice(rule);
            run(&a);
        };
        ipt(&["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"]);
        ipt(&[
            "-A", "OUTPUT", "-p", "tcp", "-d", PUB_IP, "--dport", PROXY_PORT, "-j", "ACCEPT",
        ]);
        ipt(&[
            "-A",
            "OUTPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
        ipt(&["-A", "OUTPUT", "-j", "DROP"]);
        // CONNECT to any port (no ConnectPort lines), with Basic authentication.
        std::fs::write(
            &net.conf,
            format!(
                "User nobody\nGroup nogroup\nPort {PROXY_PORT}\nListen {PUB_IP}\nTimeout 60\n\
                 MaxClients 50\nAllow 10.78.0.0/24\nBasicAuth corp s3cret\nLogLevel Info\n"
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &p, "tinyproxy", "-d", "-c"])
            .arg(&net.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        net.proxy = Some(child);
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = std::fs::remove_file(&self.conf);
        for ns in [&self.pub_ns, &self.corp_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// `skupper -n east link create FILE ...` with `env` set (the CLI reads HTTPS_PROXY).
async fn link_create(
    sites: &LocalSites,
    env: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_skupper"))
        .args(["--platform", "local", "-n", "east", "link", "create"])
        .args(args)
        .env("SKUPPER_HOME", sites.home())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_behind_a_corporate_proxy_links_through_it() {
    let net = Net::new();
    let exe = env!("CARGO_BIN_EXE_skupper");
    let mut sites = LocalSites::new(exe);
    let home = sites.home().display().to_string();
    for (ns, site, ip) in [
        (&net.pub_ns, "west", PUB_IP),
        (&net.corp_ns, "east", CORP_IP),
    ] {
        sites.names.push(site);
        netns::init_site(ns, exe, sites.home(), site, ip);
    }
    // corp cannot reach west's ports directly.
    let claims_port = {
        let y = std::fs::read_to_string(sites.site_dir("west").join("site.yaml")).unwrap();
        y.lines()
            .find_map(|l| l.strip_prefix("claims-port: "))
            .unwrap()
            .to_string()
    };
    let direct = netns::fetch(&net.corp_ns, &format!("http://{PUB_IP}:{claims_port}/"));
    assert!(direct.is_err(), "corp reached west directly: {direct:?}");

    let token = sites.home().join("west.yaml");
    let token = token.display().to_string();
    sites
        .ok("west", &["token", "create", &token, "--uses", "2"])
        .await;

    // HTTPS_PROXY without credentials: the proxy wants them, and says so.
    let proxy = format!("http://{PUB_IP}:{PROXY_PORT}");
    let o = link_create(&sites, &[("HTTPS_PROXY", &proxy)], &[&token]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("asks for credentials (407)"), "{err}");

    // With them, the claim is redeemed and the link comes up through the proxy.
    let with_auth = format!("http://corp:s3cret@{PUB_IP}:{PROXY_PORT}");
    let o = link_create(
        &sites,
        &[],
        &[&token, "--proxy", &with_auth, "--name", "to-west"],
    )
    .await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(&format!(
            "It goes through proxy http://corp:***@{PUB_IP}:{PROXY_PORT}."
        )),
        "{out}"
    );
    sites
        .ok("east", &["link", "status", "to-west", "--wait", "30s"])
        .await;
    // As the router dials: from inside corp (elsewhere the proxy's address means nothing).
    let o = netns::exec(
        &net.corp_ns,
        &[
            exe,
            "--platform",
            "local",
            "--home",
            &home,
            "-n",
            "east",
            "debug",
            "link",
            "to-west",
        ],
    )
    .output()
    .unwrap();
    let debug = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{debug}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(debug.contains("  ok   proxy"), "{debug}");
    assert!(debug.contains("Every step works."), "{debug}");
    let state = std::fs::read_to_string(sites.site_dir("east").join("state.yaml")).unwrap();
    assert!(state.contains(&with_auth), "the link keeps its proxy");

    // A service of west, called from inside corp.
    let dir = sites.home().join("www");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "hello through the proxy").unwrap();
    let _backend = netns::web_server(&net.pub_ns, 19001, &dir);
    sites
        .ok(
            "west",
            &[
                "expose",
                "host",
                "127.0.0.1",
                "--port",
                "19002",
                "--target-port",
                "19001",
                "--address",
                "www",
            ],
        )
        .await;
    let body = eventually_ok("www through the proxy", async || {
        netns::fetch(&net.corp_ns, "http://127.0.0.1:19002/")
    })
    .await;
    assert_eq!(body, "hello through the proxy");
}
