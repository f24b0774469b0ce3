//! The site controller daemon: `van-controller --site-dir DIR` (local platform) or
//! `van-controller --platform kubernetes --api-token-file FILE` (in a pod).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "VAN site controller")]
struct Args {
    /// Where the site lives: `local` (a directory) or `kubernetes` (a namespace).
    #[arg(long, env = "SKUPPER_PLATFORM", default_value = "local", value_parser = ["local", "kubernetes"])]
    platform: String,
    /// Site directory (local platform), e.g. ~/.local/share/skupper/namespaces/west.
    #[arg(long, env = "SKUPPER_SITE_DIR", required_if_eq("platform", "local"))]
    site_dir: Option<PathBuf>,
    /// Namespace of the site (kubernetes platform); defaults to the pod's or the kubeconfig's.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// File holding the bearer token API clients must send (required on kubernetes, where
    /// the API listens on TCP; the chart mounts it from Secret skupper-api-token).
    #[arg(
        long,
        env = "VAN_API_TOKEN_FILE",
        required_if_eq("platform", "kubernetes")
    )]
    api_token_file: Option<PathBuf>,
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
    let result = rt.block_on(async {
        match (args.platform.as_str(), args.site_dir) {
            ("local", Some(dir)) => {
                let dir = van_controller::local::SiteDir::new(dir);
                van_controller::local::run(dir, shutdown_signal()).await?;
            }
            _ => {
                // Checked before anything else starts: a bad token file is a config error.
                let path = args.api_token_file.unwrap_or_default();
                let text = van_controller::local::read_text(&path, 64 << 10)
                    .map_err(|e| anyhow::anyhow!("--api-token-file {}: {e}", path.display()))?;
                let token = van_controller::api::ApiToken::new(&text)
                    .map_err(|e| anyhow::anyhow!("--api-token-file {}: {e}", path.display()))?;
                let client = kube::Client::try_default().await?;
                let ns = args
                    .namespace
                    .unwrap_or_else(|| client.default_namespace().to_string());
                van_controller::k8s::platform::run(client, ns, token, shutdown_signal()).await?;
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("van-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tracing_subscriber_init() -> anyhow::Result<()> {
    let log = van_telemetry::LogSection::default();
    // The router's telemetry set-up also serves the controller (plain logs, VAN_LOG).
    let guard = van_telemetry::init(&log, None, "controller")?;
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
