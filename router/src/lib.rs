//! The VAN router: carries TCP flows between sites over mutually authenticated links, with
//! link-state routing and a gRPC admin API.
//!
//! The data path reads top to bottom: `tcp` accepts a client, `dispatch` picks a destination,
//! `mux` carries the flow over a `link`, and `flow` relays bytes with per-flow windows.
//! `router` owns the parts; `apply` changes their configuration; `advertise` tells the
//! network what this router serves.

pub mod admin;
mod advertise;
mod apply;
pub mod config;
mod control;
mod dispatch;
pub mod edge;
pub mod error;
pub mod flow;
pub mod link;
pub mod metrics;
pub mod mux;
mod neighbours;
mod records;
pub mod router;
pub mod routing;
mod shared;
pub mod tcp;
pub mod tls;
mod web;
pub mod wire;

use std::future::Future;
use std::sync::Arc;

use tracing::info;

pub use config::Config;
pub use error::StartError;
pub use router::Router;

/// Sockets bound before the router starts, so tests can pass port-0 listeners.
#[derive(Debug)]
pub struct Listeners {
    pub admin: admin::AdminBind,
    pub metrics: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds what the configuration names.
    pub async fn bind(cfg: &Config) -> Result<Listeners, StartError> {
        let admin = match &cfg.admin {
            config::AdminListen::Tcp(a) => {
                admin::AdminBind::Tcp(tokio::net::TcpListener::bind(a).await.map_err(|source| {
                    StartError::Bind {
                        what: "admin.listen".into(),
                        addr: a.to_string(),
                        source,
                    }
                })?)
            }
            config::AdminListen::Unix(p) => {
                // A stale socket from a previous run would make bind fail.
                let _ = std::fs::remove_file(p);
                admin::AdminBind::Unix(tokio::net::UnixListener::bind(p).map_err(|source| {
                    StartError::Bind {
                        what: "admin.listen".into(),
                        addr: p.display().to_string(),
                        source,
                    }
                })?)
            }
        };
        let metrics =
            match cfg.metrics {
                Some(a) => Some(tokio::net::TcpListener::bind(a).await.map_err(|source| {
                    StartError::Bind {
                        what: "metrics.listen".into(),
                        addr: a.to_string(),
                        source,
                    }
                })?),
                None => None,
            };
        Ok(Listeners { admin, metrics })
    }
}

/// A started router.
#[derive(Debug)]
pub struct Running {
    pub router: Arc<Router>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// Stops serving the admin API and closes every link and listener.
    pub async fn shutdown(self) {
        self.router.begin_stop();
        let _ = self.stop.send(true);
        let _ = self
            .router
            .apply_ops(
                {
                    let e = self.router.entities().await;
                    let mut ops = Vec::new();
                    use config::{EntityKind as K, EntityOp::Delete};
                    ops.extend(
                        e.tcp_listeners
                            .into_keys()
                            .map(|n| Delete(K::TcpListener, n)),
                    );
                    ops.extend(
                        e.tcp_connectors
                            .into_keys()
                            .map(|n| Delete(K::TcpConnector, n)),
                    );
                    ops.extend(e.links.into_keys().map(|n| Delete(K::Link, n)));
                    ops.extend(
                        e.link_listeners
                            .into_keys()
                            .map(|n| Delete(K::LinkListener, n)),
                    );
                    ops.extend(e.tls_profiles.into_keys().map(|n| Delete(K::TlsProfile, n)));
                    ops
                },
                false,
                true,
            )
            .await;
    }
}

/// Starts a router on already-bound listeners and returns at once.
pub async fn start(cfg: Config, listeners: Listeners) -> Result<Running, StartError> {
    let router = Router::new(&cfg);
    router.apply_initial(cfg.entities.clone()).await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let r = router.clone();
    let admin_stop = wait(stop_rx.clone());
    tokio::spawn(async move {
        if let Err(e) = admin::serve(r, listeners.admin, admin_stop).await {
            tracing::error!(error = %e, "Admin API failed");
        }
    });
    if let Some(m) = listeners.metrics {
        let r = router.clone();
        let app = metrics::app(move || r.render_metrics());
        let metrics_stop = wait(stop_rx.clone());
        tokio::spawn(async move {
            let _ = axum::serve(m, app)
                .with_graceful_shutdown(metrics_stop)
                .await;
        });
    }
    info!(id = %router.id(), mode = router.mode().as_str(), "Router started");
    Ok(Running { router, stop })
}

/// Runs a router until `shutdown` completes.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let running = start(cfg, listeners).await?;
    shutdown.await;
    info!("Shutting down");
    running.shutdown().await;
    Ok(())
}
