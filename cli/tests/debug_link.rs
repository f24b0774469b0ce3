//! `skupper debug link` against real sites: a healthy link passes every step; a stopped peer
//! fails at the TCP connection, a re-created peer at TLS (another CA), and a port where
//! something else answers at TLS (not TLS at all). Each failure says what to do.

use tokio::io::AsyncWriteExt;
use van_testkit::eventually;
use van_testkit::site::LocalSites;

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failing_step_is_named_with_what_to_do() {
    let mut sites = LocalSites::new(env!("CARGO_BIN_EXE_skupper"));
    sites.names = vec!["west", "east"];
    sites.init("west", "127.0.0.2", "interior").await;
    sites.init("east", "127.0.0.3", "interior").await;
    let token = sites.home().join("west.yaml");
    let token = token.to_str().unwrap();
    sites
        .ok("west", &["token", "create", token, "--token-type", "cert"])
        .await;
    sites
        .ok("east", &["link", "create", token, "--name", "to-west"])
        .await;
    sites
        .ok("east", &["link", "status", "to-west", "--wait", "30s"])
        .await;

    let out = sites.ok("east", &["debug", "link", "to-west"]).await;
    for step in ["token", "resolve", "connect", "tls", "router"] {
        assert!(out.contains(&format!("  ok   {step:<8}")), "{step}: {out}");
    }
    assert!(out.contains("from the token's CA"), "{out}");
    assert!(out.contains("protocol version 1, as this site's"), "{out}");
    assert!(out.ends_with("Every step works.\n"), "{out}");

    // A port where something else answers: an HTTP server, say.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = other.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = other.accept().await {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let yaml = std::fs::read_to_string(token).unwrap();
    let port_line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("inter-router-port:"))
        .unwrap();
    let by_line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("skupper.io/generated-by:"))
        .unwrap();
    // As if from another site: one link per site.
    let elsewhere = sites.home().join("elsewhere.yaml");
    let edited = yaml
        .replace(
            port_line,
            &format!("    inter-router-port: \"{other_port}\""),
        )
        .replace(
            by_line,
            "    skupper.io/generated-by: 0123456789abcdef0123456789abcdef",
        );
    std::fs::write(&elsewhere, edited).unwrap();
    sites
        .ok(
            "east",
            &[
                "link",
                "create",
                elsewhere.to_str().unwrap(),
                "--name",
                "elsewhere",
            ],
        )
        .await;
    let o = sites.sk("east", &["debug", "link", "elsewhere"]).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("  FAIL tls"), "{out}");
    assert!(out.contains("does not speak TLS"), "{out}");
    assert!(err.contains("failed steps: elsewhere: tls"), "{err}");
    sites.ok("east", &["link", "delete", "elsewhere"]).await;

    // The peer stopped: refused at the TCP connection.
    sites.ok("west", &["system", "stop"]).await;
    let o = sites.sk("east", &["debug", "link"]).await;
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("  FAIL connect"), "{out}");
    assert!(out.contains("nothing listens on that port"), "{out}");
    assert!(
        out.contains("what to do: check that the other site is running"),
        "{out}"
    );
    assert!(
        !out.contains("  ok   tls"),
        "no step after the failed one: {out}"
    );

    // The peer deleted and created again on the same ports: a new CA.
    let site_yaml = std::fs::read_to_string(sites.site_dir("west").join("site.yaml")).unwrap();
    let port = |key: &str| -> String {
        site_yaml
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap()
            .to_string()
    };
    let (ir, edge, claims) = (
        port("inter-router-port"),
        port("edge-port"),
        port("claims-port"),
    );
    sites.ok("west", &["delete"]).await;
    sites
        .ok(
            "west",
            &[
                "init",
                "--ingress-host",
                "127.0.0.1",
                "--ingress-bind",
                "127.0.0.1",
                "--listener-host",
                "127.0.0.2",
                "--inter-router-port",
                &ir,
                "--edge-port",
                &edge,
                "--claims-port",
                &claims,
            ],
        )
        .await;
    // init returns once the controller answers; the router's link port follows.
    let link_port = format!("127.0.0.1:{ir}");
    eventually("the new west's link port", async || {
        tokio::net::TcpStream::connect(&link_port)
            .await
            .ok()
            .map(drop)
    })
    .await;
    let o = sites.sk("east", &["debug", "link", "to-west"]).await;
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("  FAIL tls"), "{out}");
    assert!(
        out.contains("the site there is not the one that issued the token"),
        "{out}"
    );
    assert!(out.contains("get a new token from it"), "{out}");

    let o = sites.sk("east", &["debug", "link", "nope"]).await;
    assert!(
        text(&o)
            .1
            .contains("this site has no link named \"nope\" (its links: to-west)"),
        "{}",
        text(&o).1
    );
}
