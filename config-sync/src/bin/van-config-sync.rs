//! config-sync daemon: `van-config-sync --controller TARGET --router TARGET`.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Keeps a VAN router in step with its site controller")]
struct Args {
    /// Controller API: `host:port` or `unix:/path`.
    #[arg(long, env = "VAN_CONTROLLER")]
    controller: String,
    /// Router admin API: `host:port` or `unix:/path`.
    #[arg(long, env = "VAN_ROUTER_ADMIN")]
    router: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("van-config-sync: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let log = van_router::config::LogSection::default();
        let _telemetry = van_router::telemetry::init(&log, None, "config-sync")?;
        van_config_sync::run(
            van_config_sync::Options {
                controller: args.controller,
                router: args.router,
            },
            shutdown_signal(),
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("van-config-sync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
