//! The VAN site controller: a site's identity and certificates, tokens and links, services,
//! and the network-wide view of sites and services learnt over the router network.
//!
//! - [`site`], [`token`], [`certs`], [`network`], [`controller`], [`desired`]: the site core,
//!   shared by every platform.
//! - [`local`]: the local platform (a site is a directory on a host).
//! - [`api`] serves the gRPC API; [`claims`] the HTTPS claims endpoint.

pub mod api;
pub mod certs;
pub mod claims;
pub mod clock;
pub mod controller;
pub mod desired;
pub mod error;
pub mod k8s;
pub mod local;
pub mod network;
pub mod site;
pub mod token;

use std::future::Future;
use std::sync::Arc;

use tracing::{info, warn};

pub use controller::Controller;
pub use error::ControllerError;
use site::{SiteConfig, SiteStore};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the controller could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] error::StoreError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("cannot bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("API server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// Where the API is served.
pub use van_proto::grpc::Bind as ApiBind;

/// Sockets bound before the controller starts (tests pass port-0 listeners).
#[derive(Debug)]
pub struct Sockets {
    pub api: ApiBind,
    /// The claims endpoint; interior sites only.
    pub claims: Option<tokio::net::TcpListener>,
    /// When set, every API call but the health service's must carry this bearer token.
    pub api_token: Option<api::ApiToken>,
}

#[derive(Debug)]
pub struct Options {
    pub site: SiteConfig,
    pub store: Arc<dyn SiteStore>,
    /// What dates tokens: the system's clock, or one a test moves.
    pub clock: Arc<dyn clock::Clock>,
}

// The claims endpoint redeems through the controller; the impl lives here so that neither
// module needs the other.
impl claims::server::Issuer for Controller {
    fn redeem(
        &self,
        claim: &str,
        secret: &str,
        requester: &str,
    ) -> impl Future<Output = Result<token::CertToken, error::ClaimError>> + Send {
        Controller::redeem(self, claim, secret, requester)
    }
}

/// How often claims whose issuer could not be reached are tried again.
const CLAIM_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

async fn retry_claims(c: Arc<Controller>, shutdown: impl Future<Output = ()>) {
    let retry = async {
        loop {
            tokio::time::sleep(CLAIM_RETRY).await;
            c.retry_claims().await;
        }
    };
    // A retry under way is dropped at shutdown, as the process exit dropped it before `serve`
    // waited for this task (a save already begun finishes on its own, see `Controller::change`):
    // stopping takes no longer than it did.
    tokio::select! {
        _ = shutdown => {}
        _ = retry => {}
    }
}

/// Runs the site controller until `shutdown` completes.
pub async fn run(
    opts: Options,
    sockets: Sockets,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let c = Controller::open_with_clock(opts.site, opts.store, opts.clock).await?;
    serve(c, sockets, shutdown).await
}

/// Serves an opened controller (API, claims endpoint, claim retries) until `shutdown`.
pub async fn serve(
    c: Arc<Controller>,
    sockets: Sockets,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Joined before returning: once `serve` returns, the claims port is free again and no
    // task of this server touches the controller's state any more.
    let mut tasks = Vec::new();
    if let Some(l) = sockets.claims {
        let state = c.state();
        let certs = state.certs.as_ref().expect("opened with certificates");
        match claims::server::server_tls(&certs.server_cert, &certs.server_key) {
            Ok(tls) => {
                tasks.push(tokio::spawn(claims::server::serve(
                    c.clone(),
                    tls,
                    l,
                    stopped(stop_rx.clone()),
                )));
            }
            Err(e) => warn!(error = %e, "Claims endpoint disabled: bad server certificate"),
        }
    }
    tasks.push(tokio::spawn(retry_claims(
        c.clone(),
        stopped(stop_rx.clone()),
    )));
    use van_proto::controller::site_controller_server::SiteControllerServer;
    let health = van_proto::grpc::health_for::<SiteControllerServer<api::Api>>().await;
    let token = sockets.api_token;
    // Health stays open for kubelet's probes; reflection describes public schemas only.
    let routes = tonic::service::Routes::new(health).add_service(
        tonic::service::interceptor::InterceptedService::new(
            SiteControllerServer::new(api::Api::new(c.clone()))
                .max_decoding_message_size(api::MAX_MESSAGE),
            move |req| match &token {
                Some(t) => t.check(req),
                None => Ok(req),
            },
        ),
    );
    info!(site = %c.cfg.name, id = %c.cfg.id, mode = c.cfg.mode.as_str(), "Controller started");
    let stopping = {
        let (c, stop_tx) = (c.clone(), stop_tx.clone());
        async move {
            shutdown.await;
            c.begin_stop();
            let _ = stop_tx.send(true);
        }
    };
    // Served within the default limits (connections, preface, streams, call deadline): the
    // API port is reachable by any pod on Kubernetes.
    let result = van_proto::grpc::serve(
        van_proto::grpc::with_reflection(
            routes,
            &[<SiteControllerServer<api::Api> as tonic::server::NamedService>::NAME],
        ),
        sockets.api,
        stopping,
    )
    .await;
    let _ = stop_tx.send(true);
    for t in tasks {
        // Both end on the stop signal; a panic in one was reported where it happened.
        let _ = t.await;
    }
    info!("Controller stopped");
    Ok(result?)
}
