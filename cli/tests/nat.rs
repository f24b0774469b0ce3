//! A private site behind NAT links to a public site and serves it a service.
//!
//! Three network namespaces made (and removed) by the test: `pub` (10.77.1.1), `priv`
//! (10.77.2.1) and between them `gw`, which forwards private → public with masquerading and
//! drops every connection the public side starts. Nothing in `pub` can reach `priv`; the
//! private site dials out, and its service is then called from `pub` over that link.
//! Needs root and python3 (for the backend); `ip` and `iptables` are installed with apt-get
//! when missing, so a fresh machine runs it with nothing installed by hand.

use std::process::Command;

use van_testkit::eventually_ok;
use van_testkit::netns::{self, run};
use van_testkit::site::LocalSites;

/// The namespaces and links of the test network; removed on drop.
struct Net {
    pub_ns: String,
    gw_ns: String,
    priv_ns: String,
}

impl Net {
    fn new() -> Net {
        netns::ensure_tools(&[("ip", "-V", "iproute2"), ("iptables", "-V", "iptables")]);
        let tag = format!("{:x}", std::process::id() & 0xffff);
        let net = Net {
            pub_ns: format!("vanpub{tag}"),
            gw_ns: format!("vangw{tag}"),
            priv_ns: format!("vanpriv{tag}"),
        };
        let (p, g, q) = (&net.pub_ns, &net.gw_ns, &net.priv_ns);
        for ns in [p, g, q] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // pub <-> gw and gw <-> priv; interface names are created inside their namespaces.
        let (pa, pb, qa, qb) = (
            format!("vp{tag}a"),
            format!("vp{tag}b"),
            format!("vq{tag}a"),
            format!("vq{tag}b"),
        );
        run(&[
            "ip", "-n", p, "link", "add", &pa, "type", "veth", "peer", "name", &pb, "netns", g,
        ]);
        run(&[
            "ip", "-n", q, "link", "add", &qa, "type", "veth", "peer", "name", &qb, "netns", g,
        ]);
        run(&["ip", "-n", p, "addr", "add", "10.77.1.1/24", "dev", &pa]);
        run(&["ip", "-n", g, "addr", "add", "10.77.1.254/24", "dev", &pb]);
        run(&["ip", "-n", g, "addr", "add", "10.77.2.254/24", "dev", &qb]);
        run(&["ip", "-n", q, "addr", "add", "10.77.2.1/24", "dev", &qa]);
        for (ns, dev) in [(p, &pa), (g, &pb), (g, &qb), (q, &qa)] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&[
            "ip",
            "-n",
            q,
            "route",
            "add",
            "default",
            "via",
            "10.77.2.254",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            g,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        let ipt = |rule: &[&str]| {
            let mut a = vec!["ip", "netns", "exec", g, "iptables"];
            a.extend_from_slice(rule);
            run(&a);
        };
        ipt(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            &pb,
            "-j",
            "MASQUERADE",
        ]);
        ipt(&[
            "-A",
            "FORWARD",
            "-i",
            &pb,
            "-o",
            &qb,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
        ipt(&["-A", "FORWARD", "-i", &pb, "-o", &qb, "-j", "DROP"]);
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.pub_ns, &self.gw_ns, &self.priv_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_behind_nat_serves_a_public_site() {
    // Sites are declared after the network so they are deleted first.
    let net = Net::new();
    let exe = env!("CARGO_BIN_EXE_skupper");
    let mut sites = LocalSites::new(exe);
    for (ns, site, ip) in [
        (&net.pub_ns, "public", "10.77.1.1"),
        (&net.priv_ns, "private", "10.77.2.1"),
    ] {
        // init runs inside the namespace, so the site's processes live there.
        sites.names.push(site);
        netns::init_site(ns, exe, sites.home(), site, ip);
    }
    // The public side cannot reach the private one at all.
    let direct = netns::fetch(&net.pub_ns, "http://10.77.2.1:55671/");
    assert!(
        direct.is_err(),
        "public reached private directly: {direct:?}"
    );

    let token = sites.home().join("public.yaml");
    let token = token.display().to_string();
    sites.ok("public", &["token", "create", &token]).await;
    let out = sites.ok("private", &["link", "create", &token]).await;
    assert!(out.contains("public"), "{out}");
    sites
        .ok("private", &["link", "status", "--wait", "30s"])
        .await;
    let incoming = sites.ok("public", &["link", "status"]).await;
    assert!(incoming.contains("private"), "{incoming}");

    // A backend inside the private namespace, exposed there.
    let dir = sites.home().join("www");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "hello from behind NAT").unwrap();
    let _backend = netns::web_server(&net.priv_ns, 19000, &dir);
    sites
        .ok(
            "private",
            &[
                "expose",
                "host",
                "127.0.0.1",
                "--port",
                "18080",
                "--target-port",
                "19000",
                "--address",
                "backend",
            ],
        )
        .await;
    // Called from the public namespace at the public site's listener.
    let body = eventually_ok("the backend answering in pub", async || {
        netns::fetch(&net.pub_ns, "http://127.0.0.1:18080/")
    })
    .await;
    assert_eq!(body, "hello from behind NAT");
    let net_status = sites.ok("public", &["network", "status"]).await;
    assert!(
        net_status.contains("private") && net_status.contains("backend"),
        "{net_status}"
    );
    drop(sites);
}
