//! The site controller daemon: `van-controller --site-dir DIR` (local platform).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "VAN site controller")]
struct Args {
    /// Site directory (local platform), e.g. ~/.local/share/skupper/namespaces/west.
    #[arg(long, env = "SKUPPER_SITE_DIR")]
    site_dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = tracing_subscriber_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("van-controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = van_controller::local::SiteDir::new(args.site_dir);
    match rt.block_on(van_controller::local::run(dir, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("van-controller: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tracing_subscriber_init() -> anyhow::Result<()> {
    let log = van_router::config::LogSection::default();
    // The router's telemetry set-up also serves the controller (plain logs, VAN_LOG).
    let guard = van_router::telemetry::init(&log, None, "controller")?;
    std::mem::forget(guard);
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
