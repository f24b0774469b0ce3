//! `skupper demo`: the two-site walkthrough on this machine, through the same functions the
//! subcommands use, with temporary sites that are deleted at the end (unless `--keep`).
//!
//! west (services on 127.0.0.2) and east (services on 127.0.0.3) both listen for links on
//! 127.0.0.1 with ports the OS chooses; an HTTP server in this process stands for east's
//! backend; a request to backend:8080 at west reaches it through the link.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::args::{
    DemoArgs, ExposeArgs, InitArgs, LinkCreateArgs, LinkStatusArgs, OutputArgs, TokenCreateArgs,
    TokenType,
};
use crate::output::Format;
use crate::{Ctx, link, network, service, site, token};

const SERVICE_PORT: u16 = 8080;

pub async fn run(ctx: &Ctx, a: &DemoArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let home = std::env::temp_dir().join(format!(
        "skupper-demo-{}-{}",
        std::process::id(),
        van_controller::site::random_hex(3)
    ));
    std::fs::create_dir_all(&home)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", home.display()))?;
    let site = |ns: &str| Ctx {
        home: home.clone(),
        namespace: ns.into(),
        exe: ctx.exe.clone(),
    };
    let (west, east, south) = (site("west"), site("east"), site("south"));
    writeln!(out, "Demo sites live in SKUPPER_HOME={}", home.display())?;

    let backend = TcpListener::bind("127.0.0.1:0").await?;
    let backend_port = backend.local_addr()?.port();
    let server = tokio::spawn(serve_backend(backend, "east"));
    let started = Instant::now();
    let (result, sites) = if a.http {
        let r = crate::bookinfo::walkthrough(&west, &east, &south, &home, out).await;
        (r, vec![&south, &east, &west])
    } else {
        writeln!(
            out,
            "east's backend: an HTTP server on 127.0.0.1:{backend_port}\n"
        )?;
        let r = walkthrough(&west, &east, &home, backend_port, out).await;
        (r, vec![&east, &west])
    };
    if let Err(e) = &result {
        writeln!(out, "\nThe demo failed: {}", crate::report(e))?;
    }
    let names: Vec<&str> = sites.iter().map(|s| s.namespace.as_str()).collect();
    if a.keep {
        writeln!(
            out,
            "\nThe sites keep running. Look at them with\n  SKUPPER_HOME={} skupper -n west status\n\
             and remove them with\n  {}\n(the demo's servers stopped with this process).",
            home.display(),
            names
                .iter()
                .map(|n| format!("SKUPPER_HOME={} skupper -n {n} delete", home.display()))
                .collect::<Vec<_>>()
                .join("; ")
        )?;
    } else {
        for s in sites {
            if s.site_dir().root.exists() {
                let t = announce(out, &format!("-n {} delete", s.namespace))?;
                match site::delete(s, out).await {
                    Ok(()) => took(out, t)?,
                    Err(e) => writeln!(out, "Error: {}", crate::report(&e))?,
                }
            }
        }
        let _ = std::fs::remove_dir_all(&home);
    }
    server.abort();
    if result.is_ok() {
        writeln!(
            out,
            "Demo finished in {:.1}s.",
            started.elapsed().as_secs_f64()
        )?;
    }
    result
}

/// Prints the command line of a step and returns when it started.
pub(crate) fn announce(out: &mut (dyn Write + Send), args: &str) -> anyhow::Result<Instant> {
    writeln!(out, "$ skupper {args}")?;
    Ok(Instant::now())
}

pub(crate) fn took(out: &mut (dyn Write + Send), since: Instant) -> anyhow::Result<()> {
    writeln!(out, "  ({:.2}s)\n", since.elapsed().as_secs_f64())?;
    Ok(())
}

/// Three free ports per site, all held until every one is chosen so none repeats.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

async fn walkthrough(
    west: &Ctx,
    east: &Ctx,
    home: &Path,
    backend_port: u16,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    init_sites(&[(west, "127.0.0.2"), (east, "127.0.0.3")], out).await?;
    link_sites(west, east, home, out).await?;

    let t = announce(
        out,
        &format!(
            "-n east expose host 127.0.0.1 --port {SERVICE_PORT} --target-port {backend_port} --address backend"
        ),
    )?;
    service::expose(
        east,
        &ExposeArgs {
            resource: "host".into(),
            name: Some("127.0.0.1".into()),
            port: vec![SERVICE_PORT],
            address: Some("backend".into()),
            target_port: vec![backend_port],
            protocol: "tcp".into(),
        },
        out,
    )
    .await?;
    took(out, t)?;

    // The service reaches west through service sync; wait for west to listen for it.
    let t = announce(out, "-n west service status")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = service::list(west).await?;
        let ready = list
            .services
            .iter()
            .any(|s| s.address == "backend" && !s.listeners.is_empty());
        if ready {
            write!(out, "{}", service::status_text(&list))?;
            break;
        }
        if Instant::now() >= deadline {
            write!(out, "{}", service::status_text(&list))?;
            anyhow::bail!("west did not list a listener for backend within 60s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    took(out, t)?;

    let url_host = "127.0.0.2";
    writeln!(out, "$ curl http://{url_host}:{SERVICE_PORT}/")?;
    let t = Instant::now();
    let body = http_get_retrying(
        &format!("{url_host}:{SERVICE_PORT}"),
        "/",
        Duration::from_secs(15),
    )
    .await?;
    writeln!(out, "{body}")?;
    took(out, t)?;

    let t = announce(out, "-n west network status")?;
    network::status(west, Format::Text, out).await?;
    took(out, t)?;
    Ok(())
}

/// `init`s each site with its own listener host; all accept links on 127.0.0.1, on ports
/// chosen here.
pub(crate) async fn init_sites(
    sites: &[(&Ctx, &str)],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let ports = free_ports(3 * sites.len())?;
    for (i, (s, listener_host)) in sites.iter().enumerate() {
        let p = &ports[i * 3..i * 3 + 3];
        let args = InitArgs {
            ingress_host: Some("127.0.0.1".into()),
            ingress_bind: Some("127.0.0.1".into()),
            listener_host: Some((*listener_host).into()),
            inter_router_port: Some(p[0].to_string()),
            edge_port: Some(p[1].to_string()),
            claims_port: Some(p[2].to_string()),
            ..InitArgs::default()
        };
        let t = announce(
            out,
            &format!(
                "-n {} init --ingress-host 127.0.0.1 --ingress-bind 127.0.0.1 --listener-host {listener_host} \
                 --inter-router-port {} --edge-port {} --claims-port {}",
                s.namespace, p[0], p[1], p[2]
            ),
        )?;
        site::init(s, &args, out).await?;
        took(out, t)?;
    }
    Ok(())
}

/// `from` issues a claim token; `to` redeems it and waits until the link is up.
pub(crate) async fn link_sites(
    from: &Ctx,
    to: &Ctx,
    home: &Path,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let token_file: PathBuf = home.join(format!("{}-token-{}.yaml", from.namespace, to.namespace));
    let t = announce(
        out,
        &format!(
            "-n {} token create {}",
            from.namespace,
            token_file.display()
        ),
    )?;
    token::create(
        from,
        &TokenCreateArgs {
            file: token_file.clone(),
            expiry: None,
            uses: None,
            token_type: TokenType::Claim,
            name: None,
            cost: None,
        },
        out,
    )
    .await?;
    took(out, t)?;

    let t = announce(
        out,
        &format!("-n {} link create {}", to.namespace, token_file.display()),
    )?;
    link::create(
        to,
        &LinkCreateArgs {
            file: token_file,
            name: None,
            cost: None,
            proxy: None,
            // The demo's sites are on this host.
            no_proxy: true,
        },
        out,
    )
    .await?;
    took(out, t)?;

    let t = announce(out, &format!("-n {} link status --wait 60s", to.namespace))?;
    link::status(
        to,
        &LinkStatusArgs {
            name: None,
            wait: Some(Duration::from_secs(60)),
            output: OutputArgs {
                output: Format::Text,
            },
        },
        out,
    )
    .await?;
    took(out, t)?;

    Ok(())
}

/// A tiny HTTP/1.1 server: every request gets `Hello from <site> (<path>)`.
pub async fn serve_backend(listener: TcpListener, site: &'static str) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, site)).await;
        });
    }
}

async fn answer(mut s: TcpStream, site: &str) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 || req.len() > 16 * 1024 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let path = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/");
    let body = format!("Hello from {site} ({path})");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

/// GETs `path` from `addr` with a plain HTTP/1.1 request; returns the body of a 200.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        Ok::<_, std::io::Error>(resp)
    };
    let resp = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {addr} within 5s"))??;
    let text = String::from_utf8_lossy(&resp);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        anyhow::bail!(
            "{addr} sent no complete HTTP response ({} bytes)",
            resp.len()
        );
    };
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        anyhow::bail!("{addr} answered {status:?}");
    }
    Ok(body.to_string())
}

/// [`http_get`], retried while the service propagates.
pub async fn http_get_retrying(addr: &str, path: &str, within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        match http_get(addr, path).await {
            Ok(b) => return Ok(b),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "GET http://{addr}{path} failed for {}s",
                    within.as_secs()
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
