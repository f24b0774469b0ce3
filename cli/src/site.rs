//! `init`, `status`, `delete`, `version`: the life of a site.

use std::io::Write;
use std::net::{TcpListener, ToSocketAddrs};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use van_controller::local::SiteDir;
use van_controller::site::{self as vsite, RouterMode, SiteConfig};
use van_proto::controller as pb;

use crate::args::InitArgs;
use crate::client::{self, rpc_error};
use crate::output::{self, Format};
use crate::{Ctx, supervisor, usage};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A site configuration checked and with its ports chosen, ready to create.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config: SiteConfig,
    pub timeout: Duration,
}

/// Checks every `init` flag and reports all problems at once; then chooses the ports not
/// given (the default if it can be bound on the ingress bind address now, else one the OS
/// picks).
pub fn plan(ctx: &Ctx, a: &InitArgs) -> anyhow::Result<Plan> {
    let mut problems: Vec<String> = Vec::new();
    for (flag, given) in [
        ("ingress", a.ingress.is_some()),
        ("image-registry", a.image_registry.is_some()),
        ("image-tag", a.image_tag.is_some()),
        ("no-wait", a.no_wait),
    ] {
        if given {
            problems.push(format!("--{flag} is for the kubernetes platform"));
        }
    }
    let name = a.site_name.clone().unwrap_or_else(|| ctx.namespace.clone());
    let mode = match a.router_mode.as_deref() {
        None => RouterMode::Interior,
        Some(m) => RouterMode::parse(m).unwrap_or_else(|| {
            problems.push(format!(
                "--router-mode: {m:?} is not a router mode (interior or edge)"
            ));
            RouterMode::Interior
        }),
    };
    let timeout = match a.timeout.as_deref() {
        None => DEFAULT_TIMEOUT,
        Some(t) => crate::duration::parse_duration(t).unwrap_or_else(|e| {
            problems.push(format!("--timeout: {e}"));
            DEFAULT_TIMEOUT
        }),
    };
    let mut port = |flag: &str, v: &Option<String>| -> Option<u16> {
        let v = v.as_deref()?;
        match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                problems.push(format!("--{flag}: {v:?} is not a port number (1-65535)"));
                None
            }
        }
    };
    let given = [
        (
            "inter-router-port",
            port("inter-router-port", &a.inter_router_port),
            vsite::DEFAULT_INTER_ROUTER_PORT,
        ),
        (
            "edge-port",
            port("edge-port", &a.edge_port),
            vsite::DEFAULT_EDGE_PORT,
        ),
        (
            "claims-port",
            port("claims-port", &a.claims_port),
            vsite::DEFAULT_CLAIMS_PORT,
        ),
    ];
    let console_port = port("console-port", &a.console_port);
    let console_port_bad = a.console_port.is_some() && console_port.is_none();
    let ingress_bind = a.ingress_bind.clone().unwrap_or_else(|| "0.0.0.0".into());
    let listener_host = a
        .listener_host
        .clone()
        .unwrap_or_else(|| "127.0.0.1".into());
    let ingress_host = a.ingress_host.clone().unwrap_or_else(default_ingress_host);
    let mut config = SiteConfig {
        id: vsite::random_hex(16),
        name,
        mode,
        ingress_host,
        ingress_bind,
        listener_host,
        inter_router_port: given[0].1.unwrap_or(given[0].2),
        edge_port: given[1].1.unwrap_or(given[1].2),
        claims_port: given[2].1.unwrap_or(given[2].2),
        advertised_ports: None,
        advertised_hosts: None,
        console: None,
    };
    if a.enable_console {
        let auth = a.console_auth.clone().unwrap_or_else(|| "internal".into());
        // Without a login the console stays on this host; with one it listens where the
        // site's other endpoints do.
        let host = if auth == "unsecured" {
            "127.0.0.1".to_string()
        } else {
            config.ingress_bind.clone()
        };
        config.console = Some(vsite::ConsoleSettings {
            auth,
            host,
            port: console_port.unwrap_or(vsite::DEFAULT_CONSOLE_PORT),
        });
    } else {
        for (flag, given) in [
            ("console-auth", a.console_auth.is_some()),
            ("console-port", a.console_port.is_some()),
        ] {
            if given {
                problems.push(format!("--{flag} needs --enable-console"));
            }
        }
    }
    if let Err(invalid) = config.validate() {
        for (field, m) in invalid.errors {
            let flag = match field.as_str() {
                "name" => "site-name",
                "console.auth" => "console-auth",
                "console.port" => "console-port",
                f => f,
            };
            problems.push(format!("--{flag}: {m}"));
        }
    }
    for i in 0..given.len() {
        for j in i + 1..given.len() {
            if let (Some(p), Some(q)) = (given[i].1, given[j].1)
                && p == q
            {
                problems.push(format!(
                    "--{} and --{} are both {p}; each needs its own port",
                    given[i].0, given[j].0
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(usage(format!("skupper init: {}", problems.join("; "))));
    }

    // The addresses are valid; can this host listen on them?
    let mut held = Vec::new();
    if let Err(e) = TcpListener::bind((config.listener_host.as_str(), 0)) {
        problems.push(format!(
            "--listener-host: cannot listen on {}: {e}",
            config.listener_host
        ));
    }
    let bind = config.ingress_bind.clone();
    let mut chosen = [0u16; 3];
    for (i, (flag, want, default)) in given.iter().enumerate() {
        match choose_port(&bind, *want, *default, flag) {
            Ok((p, l)) => {
                held.push(l);
                chosen[i] = p;
            }
            Err(e) => problems.push(e),
        }
    }
    if let Some(c) = &mut config.console
        && !console_port_bad
    {
        let given = console_port.map(|_| c.port);
        match choose_port(&c.host, given, c.port, "console-port") {
            Ok((p, l)) => {
                held.push(l);
                c.port = p;
            }
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(usage(format!("skupper init: {}", problems.join("; "))));
    }
    drop(held);
    config.inter_router_port = chosen[0];
    config.edge_port = chosen[1];
    config.claims_port = chosen[2];
    Ok(Plan { config, timeout })
}

/// The port `want` if given and free on `bind`, else `default` or the next free port above
/// it (as Skupper's system sites allocate, so several sites on a host get predictable
/// ports), else one the OS picks; held open until the plan is made.
fn choose_port(
    bind: &str,
    want: Option<u16>,
    default: u16,
    flag: &str,
) -> Result<(u16, TcpListener), String> {
    match want {
        Some(p) => TcpListener::bind((bind, p))
            .map(|l| (p, l))
            .map_err(|e| format!("--{flag}: cannot listen on {bind}:{p}: {e}")),
        None => (0..200u16)
            .filter_map(|i| default.checked_add(i))
            .find_map(|p| TcpListener::bind((bind, p)).ok())
            .map_or_else(|| TcpListener::bind((bind, 0)), Ok)
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| format!("cannot listen on {bind} for the {flag}: {e}")),
    }
}

/// This machine's host name if it resolves, else 127.0.0.1.
fn default_ingress_host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name = name.trim();
    let resolves = !name.is_empty()
        && vsite::host_problem(name).is_none()
        && (name, 0)
            .to_socket_addrs()
            .map(|mut a| a.next().is_some())
            .unwrap_or(false);
    if resolves {
        name.to_string()
    } else {
        "127.0.0.1".to_string()
    }
}

/// `skupper init`.
pub async fn init(ctx: &Ctx, a: &InitArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let dir = ctx.site_dir();
    if dir.exists() {
        let stopped = supervisor::status(&dir).await.is_err();
        anyhow::bail!(
            "Skupper is already installed in namespace {:?}{}",
            ctx.namespace,
            if stopped {
                "; it is not running: 'skupper system start' starts it"
            } else {
                ""
            }
        );
    }
    let plan = plan(ctx, a)?;
    create(ctx, &dir, &plan).await?;
    writeln!(
        out,
        "Skupper is now installed in namespace {:?}.  Use 'skupper status' to get more information.",
        ctx.namespace
    )?;
    Ok(())
}

/// Writes the site, starts its supervisor and waits for the controller; on failure shows
/// the logs and removes what it made.
pub async fn create(ctx: &Ctx, dir: &SiteDir, plan: &Plan) -> anyhow::Result<()> {
    if let Err(e) = dir
        .create(&plan.config)
        .and_then(|()| console_users(dir, &plan.config))
    {
        let _ = std::fs::remove_dir_all(&dir.root);
        anyhow::bail!("cannot create the site in {}: {e}", dir.root.display());
    }
    if let Err(failure) = start(ctx, dir, plan.timeout).await {
        let _ = std::fs::remove_dir_all(&dir.root);
        anyhow::bail!(
            "Skupper could not be started in namespace {:?}: {failure}; the site was removed",
            ctx.namespace
        );
    }
    Ok(())
}

/// Starts the site's supervisor and waits until its controller answers. On failure it shows
/// the logs, stops what it started and says what went wrong.
pub async fn start(ctx: &Ctx, dir: &SiteDir, timeout: Duration) -> Result<(), String> {
    let mut child = start_supervisor(ctx, dir).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let failure = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break format!("its supervisor exited ({status})");
        }
        if let Ok(mut c) = client::connect(&dir.controller_target()).await
            && c.get_site(pb::GetSiteRequest {}).await.is_ok()
        {
            // The child is reaped by a thread so a long-lived caller (demo) keeps no zombie.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        // A controller that cannot start exits at once, again and again: no use waiting.
        if let Some(exits) = supervisor::status(dir)
            .await
            .ok()
            .and_then(|s| keeps_exiting(&s, "controller"))
        {
            break format!("its controller keeps exiting ({exits})");
        }
        if Instant::now() >= deadline {
            break format!(
                "its controller did not answer within {}",
                crate::duration::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("{}", log_tails(dir, 20));
    if supervisor::stop(dir).await.is_err() || child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    Err(failure)
}

/// From a supervisor status, whether child `name` has been restarted at least twice and is
/// down now, with its last exit.
fn keeps_exiting(status: &str, name: &str) -> Option<String> {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{name} restarting")))?;
    let restarts: u32 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("restarts="))?
        .parse()
        .ok()?;
    let last = line
        .split_once("last-exit=")
        .map_or("", |(_, e)| e)
        .trim_matches('"');
    (restarts >= 2).then(|| format!("{restarts} restarts, last: {last}"))
}

/// The console's user `admin` with a generated password, readable by this user only (as
/// Skupper kept it in Secret skupper-console-users).
fn console_users(dir: &SiteDir, cfg: &SiteConfig) -> std::io::Result<()> {
    if cfg.console.as_ref().is_none_or(|c| c.auth != "internal") {
        return Ok(());
    }
    let users = dir.console_users_dir();
    std::fs::create_dir_all(&users)?;
    std::fs::set_permissions(&users, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    van_controller::local::write_atomic(
        &users.join("admin"),
        vsite::random_hex(12).as_bytes(),
        0o600,
    )
}

/// Starts `skupper system supervise` detached: its own process group (so a terminal's
/// Ctrl-C does not reach it), no standard input, output to `logs/supervisor.log`.
fn start_supervisor(ctx: &Ctx, dir: &SiteDir) -> anyhow::Result<std::process::Child> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    let log_path = dir.logs_dir().join("supervisor.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", log_path.display()))?;
    let err = log.try_clone()?;
    std::process::Command::new(&ctx.exe)
        .arg("system")
        .arg("supervise")
        .arg("--site-dir")
        .arg(&dir.root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", ctx.exe.display()))
}

/// The last `lines` lines of each log of the site, for a failure report.
pub fn log_tails(dir: &SiteDir, lines: usize) -> String {
    let mut out = String::new();
    for name in ["supervisor", "controller", "router", "config-sync"] {
        let path = dir.logs_dir().join(format!("{name}.log"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        out.push_str(&format!(
            "--- {} (last {} lines)\n",
            path.display(),
            tail.len()
        ));
        for l in tail {
            out.push_str(l);
            out.push('\n');
        }
    }
    if out.is_empty() {
        out.push_str("(no logs were written)");
    }
    out
}

/// `skupper status`.
pub async fn status(ctx: &Ctx, format: Format, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let dir = ctx.site_dir();
    if !dir.exists() {
        return Err(client::not_enabled(ctx));
    }
    let answer = match client::connect(&dir.controller_target()).await {
        Ok(mut c) => c
            .get_site(pb::GetSiteRequest {})
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let site = match answer {
        Ok(r) => r.into_inner(),
        Err(why) => {
            let sup = match supervisor::status(&dir).await {
                Ok(s) => s.lines().collect::<Vec<_>>().join(", "),
                Err(e) => format!("{e} ('skupper system start' starts the site)"),
            };
            return Err(anyhow::anyhow!(
                "Skupper is installed in namespace {:?} but its controller is not answering ({why}); supervisor: {sup}; logs: {}",
                ctx.namespace,
                dir.logs_dir().display()
            ));
        }
    };
    if output::structured(format, &site, out)? {
        return Ok(());
    }
    writeln!(out, "{}", status_sentence(&ctx.namespace, &site))?;
    if !site.router_ready {
        writeln!(
            out,
            "Its router is not ready yet (config-sync has not reported); logs: {}",
            dir.logs_dir().display()
        )?;
    }
    if let Ok(cfg) = dir.read_config() {
        console_lines(&dir, &cfg, out)?;
    }
    Ok(())
}

/// The console's address, as a browser on this host or another reaches it.
pub fn console_url(cfg: &SiteConfig) -> Option<String> {
    let c = cfg.console.as_ref()?;
    let host = match c.host.as_str() {
        "0.0.0.0" | "::" => cfg.ingress_host.as_str(),
        h => h,
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Some(format!("https://{host}:{}/", c.port))
}

/// Skupper's closing lines of `status` about the console, when the site has one.
fn console_lines(
    dir: &SiteDir,
    cfg: &SiteConfig,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (Some(url), Some(c)) = (console_url(cfg), &cfg.console) else {
        return Ok(());
    };
    writeln!(out, "The site console url is: {url}")?;
    if c.auth == "internal" {
        writeln!(
            out,
            "The credentials for internal console-auth mode are held in file: '{}' (user admin)",
            dir.console_users_dir().join("admin").display()
        )?;
    }
    Ok(())
}

/// `skupper console`: where the console is and how to log in; `open` starts a browser.
pub fn console(ctx: &Ctx, open: bool, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let dir = ctx.site_dir();
    if !dir.exists() {
        return Err(client::not_enabled(ctx));
    }
    let cfg = dir.read_config()?;
    let Some(url) = console_url(&cfg) else {
        anyhow::bail!(
            "the site in namespace {:?} has no console; create the site with \
             `skupper init --enable-console`",
            ctx.namespace
        );
    };
    console_lines(&dir, &cfg, out)?;
    if open {
        std::process::Command::new("xdg-open")
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot open a browser (xdg-open): {e}; open {url}"))?;
    }
    Ok(())
}

/// Skupper's one-paragraph status.
pub fn status_sentence(namespace: &str, s: &pb::SiteStatus) -> String {
    let links = match s.connected_sites {
        0 => "It is not connected to any other sites.".to_string(),
        1 => "It is connected to 1 other site.".to_string(),
        n => format!("It is connected to {n} other sites."),
    };
    let services = match s.exposed_services {
        0 => "It has no exposed services.".to_string(),
        1 => "It has 1 exposed service.".to_string(),
        n => format!("It has {n} exposed services."),
    };
    format!(
        "Skupper is enabled for namespace {namespace:?} with site name {:?} in {} mode. {links} {services}",
        s.site_name, s.mode
    )
}

/// `skupper delete`.
pub async fn delete(ctx: &Ctx, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let dir = ctx.site_dir();
    if !dir.root.exists() {
        return Err(client::not_enabled(ctx));
    }
    supervisor::stop(&dir).await?;
    remove_site_dir(&dir.root)?;
    writeln!(
        out,
        "Skupper is now removed from namespace {:?}.",
        ctx.namespace
    )?;
    Ok(())
}

fn remove_site_dir(root: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot remove {}: {e}", root.display())),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    controller: Option<String>,
}

/// `skupper version`.
pub async fn version(
    ctx: &Ctx,
    format: Format,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let dir = ctx.site_dir();
    let controller = if dir.exists() {
        match client::connect(&dir.controller_target()).await {
            Ok(mut c) => match c.get_site(pb::GetSiteRequest {}).await {
                Ok(s) => Some(s.into_inner().version),
                Err(e) => Some(format!("(not answering: {})", e.message())),
            },
            Err(_) => Some("(not running)".into()),
        }
    } else {
        None
    };
    print_versions(controller, format, out)
}

/// The client's version and, when known, the controller's.
pub fn print_versions(
    controller: Option<String>,
    format: Format,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let v = Versions {
        client: env!("CARGO_PKG_VERSION").into(),
        controller,
    };
    if output::structured(format, &v, out)? {
        return Ok(());
    }
    writeln!(out, "client version                 {}", v.client)?;
    if let Some(c) = &v.controller {
        writeln!(out, "controller version             {c}")?;
    }
    Ok(())
}

/// Fetches the site's status (used by `demo` and `debug dump`).
pub async fn get_site(ctx: &Ctx) -> anyhow::Result<pb::SiteStatus> {
    let mut c = client::site_client(ctx).await?;
    Ok(c.get_site(pb::GetSiteRequest {})
        .await
        .map_err(|e| rpc_error("get site", e))?
        .into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(connected: u32, exposed: u32) -> pb::SiteStatus {
        pb::SiteStatus {
            site_name: "west".into(),
            mode: "interior".into(),
            connected_sites: connected,
            exposed_services: exposed,
            ..Default::default()
        }
    }

    #[test]
    fn status_sentence_counts() {
        assert_eq!(
            status_sentence("west", &status(1, 2)),
            "Skupper is enabled for namespace \"west\" with site name \"west\" in interior mode. \
             It is connected to 1 other site. It has 2 exposed services."
        );
        let s = status_sentence("west", &status(0, 1));
        assert!(s.contains("It is not connected to any other sites."), "{s}");
        assert!(s.contains("It has 1 exposed service."), "{s}");
        let s = status_sentence("west", &status(3, 0));
        assert!(s.contains("It is connected to 3 other sites."), "{s}");
        assert!(s.contains("It has no exposed services."), "{s}");
    }
}
