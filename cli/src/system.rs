//! `skupper system`: a local site's life after `init`. `start`, `stop`, `repair` and
//! `unit` for people; hidden plumbing `supervise` (the detached supervisor of a site) and
//! `run router|controller|config-sync|console` (one process of a site).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use van_controller::local::{LocalStore, Repaired, SiteDir};

use crate::args::{Component, SystemCommand};
use crate::{Ctx, client, supervisor, usage};

/// The verbs people use, on the site of the namespace.
pub async fn manage(
    ctx: &Ctx,
    cmd: &SystemCommand,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let dir = ctx.site_dir();
    if !dir.exists() {
        return Err(client::not_enabled(ctx));
    }
    let ns = &ctx.namespace;
    match cmd {
        SystemCommand::Start(a) => {
            let timeout = match a.timeout.as_deref() {
                None => Duration::from_secs(60),
                Some(t) => crate::duration::parse_duration(t)
                    .map_err(|e| usage(format!("--timeout: {e}")))?,
            };
            if supervisor::status(&dir).await.is_ok() {
                writeln!(out, "Skupper is already running in namespace {ns:?}.")?;
                return Ok(());
            }
            // A damaged state is reported now, with the way out, not after the wait.
            LocalStore::new(&dir).load_now()?;
            crate::site::start(ctx, &dir, timeout).await.map_err(|e| {
                anyhow::anyhow!("Skupper could not be started in namespace {ns:?}: {e}")
            })?;
            writeln!(out, "Skupper is now running in namespace {ns:?}.")?;
        }
        SystemCommand::Stop => {
            if supervisor::stop(&dir).await? {
                writeln!(
                    out,
                    "Skupper is now stopped in namespace {ns:?}. Use 'skupper system start' to start it again."
                )?;
            } else {
                writeln!(out, "Skupper is not running in namespace {ns:?}.")?;
            }
        }
        SystemCommand::Repair => match van_controller::local::repair(&dir)? {
            Repaired::Sound => writeln!(
                out,
                "The state of the site in namespace {ns:?} is sound; nothing was changed."
            )?,
            Repaired::Restored { kept } => {
                writeln!(
                    out,
                    "Restored the site's state from {} (the last change before the damage may be missing).",
                    dir.state_backup().display()
                )?;
                if let Some(k) = kept {
                    writeln!(out, "The damaged file was kept as {}.", k.display())?;
                }
                if supervisor::status(&dir).await.is_ok() {
                    writeln!(
                        out,
                        "The controller picks it up at its next restart (within seconds)."
                    )?;
                } else {
                    writeln!(out, "Use 'skupper system start' to start the site.")?;
                }
            }
        },
        SystemCommand::Unit => out.write_all(unit(ctx, &dir).as_bytes())?,
        SystemCommand::Supervise(_) | SystemCommand::Run(_) => {
            unreachable!("plumbing is dispatched before the namespace is checked")
        }
    }
    Ok(())
}

/// A systemd user unit running the site's supervisor, as Skupper's podman sites install.
/// systemd's SIGTERM stops the supervisor, which stops the site's processes. No ordering
/// after network-online.target: a user manager cannot see the system's, and links redial
/// until the network is there anyway.
pub fn unit(ctx: &Ctx, dir: &SiteDir) -> String {
    let q = |p: &Path| systemd_quote(&p.display().to_string());
    format!(
        "# Save as ~/.config/systemd/user/skupper-{ns}.service, then:\n\
         #   skupper -n {ns} system stop\n\
         #   systemctl --user daemon-reload && systemctl --user enable --now skupper-{ns}\n\
         #   loginctl enable-linger \"$USER\"   # to run without a login session\n\
         [Unit]\n\
         Description=Skupper site in namespace {ns}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} system supervise --site-dir {dir}\n\
         Restart=on-failure\n\
         RestartSec=2s\n\
         TimeoutStopSec=30s\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        ns = ctx.namespace,
        exe = q(&ctx.exe),
        dir = q(&dir.root),
    )
}

/// A path as one word of a systemd command line.
fn systemd_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        s.to_string()
    } else {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('%', "%%")
        )
    }
}

/// Plumbing, given its site directory.
pub async fn run(cmd: &SystemCommand) -> anyhow::Result<()> {
    match cmd {
        SystemCommand::Supervise(a) => {
            let dir = site_dir(&a.site_dir)?;
            let exe = crate::current_exe()?;
            supervisor::run(supervisor::Options::for_site(&dir, &exe), signal()).await
        }
        SystemCommand::Run(a) => {
            let dir = site_dir(&a.site_dir)?;
            run_component(a.component, dir).await
        }
        _ => unreachable!("the people's verbs go through manage"),
    }
}

fn site_dir(path: &Path) -> anyhow::Result<SiteDir> {
    let root = std::path::absolute(path)
        .map_err(|e| anyhow::anyhow!("site directory {}: {e}", path.display()))?;
    let dir = SiteDir::new(root);
    if !dir.exists() {
        anyhow::bail!(
            "{} is not a site directory (no site.yaml)",
            dir.root.display()
        );
    }
    Ok(dir)
}

/// Runs one process of the site until its standard input closes (the supervisor went
/// away or asked it to stop), SIGTERM or Ctrl-C.
pub async fn run_component(c: Component, dir: SiteDir) -> anyhow::Result<()> {
    let shutdown = stdin_closed_or_signal();
    match c {
        Component::Router => {
            let cfg = van_router::Config::load(&dir.router_config())?;
            let telemetry =
                van_telemetry::init(&cfg.log, cfg.otlp_endpoint.as_deref(), &cfg.router_id)?;
            let listeners = van_router::Listeners::bind(&cfg).await?;
            let r = van_router::run(cfg, listeners, shutdown).await;
            tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
            r?;
        }
        Component::Controller => {
            init_logs("controller");
            van_controller::local::run(dir, shutdown).await?;
        }
        Component::ConfigSync => {
            init_logs("config-sync");
            let opts = van_config_sync::Options {
                controller: dir.controller_target(),
                router: dir.router_target(),
                controller_token: None,
                secrets: None,
                peers: None,
            };
            van_config_sync::run(opts, shutdown).await?;
        }
        Component::Console => {
            init_logs("console");
            run_console(dir, shutdown).await?;
        }
    }
    Ok(())
}

/// The site's console: the network through this site's router, served over TLS with the
/// site's server certificate (issued by the site CA for the site's host names).
async fn run_console(
    dir: SiteDir,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use van_controller::site::SiteStore;
    let site = dir.read_config()?;
    let Some(c) = site.console else {
        anyhow::bail!("the site does not enable the console (skupper init --enable-console)");
    };
    let auth = match c.auth.as_str() {
        "unsecured" => van_console::AuthMode::Unsecured,
        _ => van_console::AuthMode::Internal(
            van_console::Users::from_dir(&dir.console_users_dir())
                .map_err(|e| anyhow::anyhow!("console users: {e}"))?,
        ),
    };
    // The controller makes the site's certificates when it first starts.
    let store = van_controller::local::LocalStore::new(&dir);
    let certs = loop {
        if let Some(certs) = store.load().await?.certs {
            break certs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let tls = van_console::tls_from_pem(certs.server_cert.as_bytes(), certs.server_key.as_bytes())
        .map_err(|e| anyhow::anyhow!("console TLS: {e}"))?;
    let listen = (c.host.as_str(), c.port);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("console: cannot listen on {}:{}: {e}", c.host, c.port))?;
    let config = van_console::Config {
        router: dir.router_target(),
        router_token: None,
        listen: listener.local_addr()?,
        auth,
        tls: Some(tls),
        tls_pending: None,
        limits: van_console::Limits::default(),
        log: "info".into(),
    };
    van_console::run(config, listener, shutdown).await?;
    Ok(())
}

/// Plain logs on standard error (the supervisor appends them to `logs/<name>.log`), level
/// from `VAN_LOG`, default info.
fn init_logs(name: &str) {
    let log = van_telemetry::LogSection::default();
    // Err only if a subscriber is installed already, which then logs for us. Without an
    // OTLP exporter there is nothing to flush, so the handle is not kept.
    let _ = van_telemetry::init(&log, None, name);
}

/// Completes when standard input reaches EOF (or fails), on SIGTERM or on Ctrl-C.
async fn stdin_closed_or_signal() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // A plain thread, not a runtime blocking task: it may stay blocked in read when a
    // signal ends the process, and the runtime must not wait for it.
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = tx.send(());
    });
    tokio::select! {
        _ = rx => {}
        () = signal() => {}
    }
}

/// SIGTERM or Ctrl-C.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
