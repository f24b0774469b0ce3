//! The router daemon: `van-router --config router.yaml`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "VAN router: carries TCP and HTTP services between sites over mutual TLS"
)]
struct Args {
    /// Configuration file (YAML).
    #[arg(short, long, env = "VAN_ROUTER_CONFIG")]
    config: PathBuf,
    /// Router id, overriding `router.id` (on Kubernetes: the pod name).
    #[arg(long, env = "VAN_ROUTER_ID")]
    router_id: Option<String>,
    /// Site id, overriding `router.site`.
    #[arg(long, env = "VAN_SITE_ID")]
    site_id: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (id, site) = (args.router_id.clone(), args.site_id.clone());
    let cfg = match van_router::Config::load_with(&args.config, |f| {
        if let Some(id) = id {
            f.router.id = id;
        }
        if let Some(site) = site {
            f.router.site = site;
        }
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("van-router: {e}");
            return ExitCode::from(64);
        }
    };
    if args.check {
        println!("{}: configuration is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cfg.worker_threads {
        rt.worker_threads(n);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("van-router: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let telemetry =
            van_telemetry::init(&cfg.log, cfg.otlp_endpoint.as_deref(), &cfg.router_id)?;
        let listeners = van_router::Listeners::bind(&cfg).await?;
        let r = van_router::run(cfg, listeners, shutdown_signal()).await;
        // Flush the spans of flows that just ended.
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
        Ok::<_, anyhow::Error>(r?)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("van-router: {e:#}");
            let bad_config = e
                .downcast_ref::<van_router::StartError>()
                .is_some_and(|e| matches!(e, van_router::StartError::Config(_)));
            ExitCode::from(if bad_config { 64 } else { 1 })
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
