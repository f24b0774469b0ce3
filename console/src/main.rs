//! `van-console --router HOST:PORT --users-file users`: the network console.
//! `van-console hash-password < password`: a line for the users file's hash.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "VAN console: the whole network's sites, services and traffic, through one router",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Option<van_console::Options>,
}

#[derive(Subcommand)]
enum Command {
    /// Reads a password on standard input and prints its argon2id hash (PHC string).
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = match (cli.command, cli.options) {
        (Some(Command::HashPassword), _) => return report(hash_password()),
        (None, Some(o)) => o,
        (None, None) => {
            eprintln!("van-console: --router is required (see --help)");
            return ExitCode::from(64);
        }
    };
    let config = match van_console::Config::from_options(options) {
        Ok(c) => c,
        Err(e) => {
            for p in &e.problems {
                eprintln!("van-console: {p}");
            }
            return ExitCode::from(64);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .with_writer(std::io::stderr)
        .init();
    report(serve(config))
}

fn serve(config: van_console::Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        van_console::run(config, listener, shutdown_signal()).await?;
        Ok(())
    })
}

fn hash_password() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .take(64 << 10)
        .read_to_string(&mut input)
        .context("cannot read the password from standard input")?;
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    println!("{}", van_console::hash_password(password));
    Ok(())
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("van-console: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
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
