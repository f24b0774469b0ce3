//! config-sync daemon: `van-config-sync --controller TARGET --router TARGET`, and
//! `--health-listen ADDR` for kubelet's readiness probe.

use std::process::ExitCode;

use clap::Parser;
use van_telemetry::report::Report;

#[derive(Parser)]
#[command(version, about = "Keeps a VAN router in step with its site controller")]
struct Args {
    /// Controller API: `host:port` or `unix:/path`.
    #[arg(long, env = "VAN_CONTROLLER")]
    controller: String,
    /// File holding the controller API's bearer token (Secret skupper-api-token on Kubernetes).
    #[arg(long, env = "VAN_CONTROLLER_TOKEN_FILE")]
    controller_token_file: Option<std::path::PathBuf>,
    /// Read TLS material from Secrets of this namespace through the Kubernetes API, with the
    /// pod's service account (in a pod: POD_NAMESPACE from the downward API).
    #[arg(long, env = "VAN_SECRETS_NAMESPACE")]
    secrets_namespace: Option<String>,
    /// The site's other routers, `NAME:PORT` (a headless Service's DNS name): this router
    /// links to each of them (Kubernetes, several router pods). Needs --pod-ip.
    #[arg(long, env = "VAN_ROUTER_PEERS", requires = "pod_ip")]
    peers: Option<String>,
    /// This pod's address (POD_IP from the downward API).
    #[arg(long, env = "POD_IP")]
    pod_ip: Option<std::net::IpAddr>,
    /// Router admin API: `host:port` or `unix:/path`.
    #[arg(long, env = "VAN_ROUTER_ADMIN")]
    router: String,
    /// Pass TCP connections through, `LISTEN=TARGET` (e.g. the claims endpoint:
    /// `0.0.0.0:8081=skupper:8081`). May be repeated.
    #[arg(long, value_parser = van_config_sync::forward::parse)]
    claims_forward: Vec<(String, String)>,
    /// Serve the gRPC health service here (`host:port`), SERVING once the router holds the
    /// controller's desired configuration: kubelet's readiness probe.
    #[arg(long, env = "VAN_HEALTH_LISTEN")]
    health_listen: Option<String>,
    /// Also serve the router's flow records (`van.records.v1.Records`) on the health port,
    /// to callers sending the controller API token: the console in the controller pod.
    #[arg(
        long,
        env = "VAN_SERVE_RECORDS",
        requires = "health_listen",
        requires = "controller_token_file"
    )]
    serve_records: bool,
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
        let controller_token = match &args.controller_token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("--controller-token-file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let secrets: Option<std::sync::Arc<dyn van_config_sync::tls::SecretSource>> =
            match &args.secrets_namespace {
                Some(ns) => {
                    let client = kube::Client::try_default().await.map_err(|e| {
                        anyhow::anyhow!("--secrets-namespace: no Kubernetes API client: {e}")
                    })?;
                    Some(std::sync::Arc::new(van_config_sync::k8s::KubeSecrets::new(
                        client, ns,
                    )))
                }
                None => None,
            };
        let peers = match (&args.peers, args.pod_ip) {
            (Some(spec), Some(own)) => {
                let (name, port) = spec
                    .rsplit_once(':')
                    .and_then(|(n, p)| Some((n.to_string(), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| anyhow::anyhow!("--peers {spec:?}: expected NAME:PORT"))?;
                Some(van_config_sync::peers::Peers::resolve(name, port, own))
            }
            _ => None,
        };
        let log = van_telemetry::LogSection::default();
        let _telemetry = van_telemetry::init(&log, None, "config-sync")?;
        for (listen, target) in args.claims_forward {
            let l = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|e| anyhow::anyhow!("--claims-forward: cannot listen on {listen}: {e}"))?;
            tokio::spawn(van_config_sync::forward::run(
                l,
                target,
                std::future::pending(),
            ));
        }
        let (ready, ready_rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = &args.health_listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--health-listen: cannot listen on {addr}: {e}"))?;
            let records = match (&controller_token, args.serve_records) {
                (Some(token), true) => Some(van_config_sync::records::RecordsProxy::service(
                    args.router.clone(),
                    token,
                )),
                _ => None,
            };
            tokio::spawn(async move {
                if let Err(e) =
                    van_config_sync::health::serve(l, ready_rx, records, std::future::pending())
                        .await
                {
                    tracing::error!(error = %Report(&e), "Health service failed");
                }
            });
        }
        van_config_sync::run_reporting(
            van_config_sync::Options {
                controller: args.controller,
                router: args.router,
                controller_token,
                secrets,
                peers,
            },
            ready,
            shutdown_signal(),
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("van-config-sync: {}", Report(e.as_ref()));
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
