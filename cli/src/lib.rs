//! The `skupper` CLI on the local platform: a site is a directory under
//! `$SKUPPER_HOME/namespaces/<namespace>` and three processes on this host (router,
//! controller, config-sync) kept running by a detached supervisor.
//!
//! `main.rs` only parses the arguments; everything else lives here so tests and `demo`
//! call the same functions the subcommands do.

pub mod args;
pub mod bookinfo;
pub mod client;
pub mod debug;
pub mod debug_link;
pub mod demo;
pub mod duration;
pub mod k8s;
pub mod link;
pub mod network;
pub mod output;
pub mod service;
pub mod site;
pub mod supervisor;
pub mod system;
pub mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use args::{Cli, Command, Platform};
use van_controller::local::SiteDir;

/// What every command needs: where sites live, which one, and the binary that runs them.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Absolute `$SKUPPER_HOME`.
    pub home: PathBuf,
    pub namespace: String,
    /// The `skupper` executable the supervisor is started from.
    pub exe: PathBuf,
}

impl Ctx {
    pub fn site_dir(&self) -> SiteDir {
        SiteDir::of(&self.home, &self.namespace)
    }
}

/// A mistake in what the user typed (exit code 2), as opposed to a failure (exit code 1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for returning a [`UsageError`].
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// The running binary. After a rebuild replaced it, Linux reports "<path> (deleted)"; the
/// path itself then holds the new build, which is what restarts should run.
pub fn current_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the skupper executable: {e}"))?;
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

/// Builds the local platform's context from the global flags, checking the namespace.
pub fn context(cli: &Cli) -> anyhow::Result<Ctx> {
    let ns = cli.global.namespace.as_deref().unwrap_or("default");
    check_namespace(ns)?;
    let home = cli
        .global
        .home
        .clone()
        .filter(|h| !h.as_os_str().is_empty())
        .unwrap_or_else(van_controller::local::skupper_home);
    let home = std::path::absolute(&home)
        .map_err(|e| anyhow::anyhow!("home directory {}: {e}", home.display()))?;
    Ok(Ctx {
        home,
        namespace: ns.to_string(),
        exe: current_exe()?,
    })
}

/// Runs a parsed command line; the exit code is 2 for usage errors, 1 for failures.
pub fn main(cli: Cli) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // `system run` children may leave a thread blocked on stdin; do not wait for it.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`skupper service status | grep -q x`): as other Unix tools,
        // stop quietly.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", report(&e));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// An error and its causes on one line, each cause once (see [`van_telemetry::report`]).
pub fn report(e: &anyhow::Error) -> String {
    van_telemetry::report::Report(e.as_ref()).to_string()
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn check_namespace(ns: &str) -> anyhow::Result<()> {
    match van_controller::site::dns_label_problem(ns, 63) {
        Some(p) => Err(usage(format!("namespace: {p}"))),
        None => Ok(()),
    }
}

/// The platform of this command line: `demo` always runs locally.
pub fn platform(cli: &Cli) -> Platform {
    if matches!(cli.command, Command::Demo(_)) {
        return Platform::Local;
    }
    let g = &cli.global;
    let found = g.platform.is_none()
        && k8s::kubeconfig_with_context(
            std::env::var_os("KUBECONFIG").as_deref(),
            std::env::var_os("HOME").map(PathBuf::from).as_deref(),
        );
    k8s::choose_platform(
        g.platform,
        g.kubeconfig.is_some(),
        g.context.is_some(),
        found,
    )
}

/// Dispatches one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Hidden plumbing runs without the namespace/platform checks: it gets its site directory.
    if let Command::System(
        cmd @ (args::SystemCommand::Supervise(_) | args::SystemCommand::Run(_)),
    ) = &cli.command
    {
        return system::run(cmd).await;
    }
    match platform(&cli) {
        Platform::Local => {
            if (cli.global.kubeconfig.is_some() || cli.global.context.is_some())
                && !matches!(cli.command, Command::Demo(_))
            {
                return Err(usage(
                    "--kubeconfig and --context are for the kubernetes platform, not --platform local",
                ));
            }
            run_local(cli).await
        }
        Platform::Kubernetes => run_kubernetes(cli).await,
    }
}

/// Dispatches one command on the kubernetes platform.
async fn run_kubernetes(cli: Cli) -> anyhow::Result<()> {
    let conn = k8s::connect(
        cli.global.kubeconfig.as_deref(),
        cli.global.context.as_deref(),
    )
    .await?;
    let ns = cli
        .global
        .namespace
        .clone()
        .unwrap_or_else(|| conn.default_namespace.clone());
    check_namespace(&ns)?;
    let mut stdout = std::io::stdout();
    let out: &mut (dyn std::io::Write + Send) = &mut stdout;
    k8s::run(&conn.client, &ns, cli.command, k8s::POLL_INTERVAL, out)
        .await
        .map_err(|e| match e.downcast_ref::<k8s::Unreachable>() {
            Some(u) => anyhow::anyhow!(
                "cannot reach the Kubernetes API server at {} ({}); check the kubeconfig context \
                 (kubectl config current-context)",
                conn.server,
                u.0
            ),
            None => e,
        })
}

/// Dispatches one command on the local platform.
async fn run_local(cli: Cli) -> anyhow::Result<()> {
    let ctx = context(&cli)?;
    let mut stdout = std::io::stdout();
    let out: &mut (dyn std::io::Write + Send) = &mut stdout;
    match cli.command {
        Command::Init(a) => site::init(&ctx, &a, out).await,
        Command::Status(a) => site::status(&ctx, a.output, out).await,
        Command::Delete => site::delete(&ctx, out).await,
        Command::Version(a) => site::version(&ctx, a.output, out).await,
        Command::Token(args::TokenCommand::Create(a)) => token::create(&ctx, &a, out).await,
        Command::Link(args::LinkCommand::Create(a)) => link::create(&ctx, &a, out).await.map(drop),
        Command::Link(args::LinkCommand::Status(a)) => link::status(&ctx, &a, out).await,
        Command::Link(args::LinkCommand::Delete(a)) => link::delete(&ctx, &a.name, out).await,
        Command::Expose(a) => service::expose(&ctx, &a, out).await.map(drop),
        Command::Unexpose(a) => service::unexpose(&ctx, &a, out).await,
        Command::Service(c) => service::run(&ctx, &c, out).await,
        Command::Network(args::NetworkCommand::Status(a)) => {
            network::status(&ctx, a.output, out).await
        }
        Command::Debug(args::DebugCommand::Dump(a)) => debug::dump(&ctx, &a.file, out).await,
        Command::Debug(args::DebugCommand::Link(a)) => {
            debug_link::run(&ctx, a.name.as_deref(), out).await
        }
        Command::Console(a) => site::console(&ctx, a.open, out),
        Command::Demo(a) => demo::run(&ctx, &a, out).await,
        Command::System(c) => system::manage(&ctx, &c, out).await,
    }
}
