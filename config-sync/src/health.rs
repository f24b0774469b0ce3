//! Readiness for kubelet's `grpc:` probe: the standard gRPC health service, whose overall
//! status ("") is SERVING while the router holds the controller's desired configuration.
//!
//! What "ready" means is decided in [`crate::run_reporting`]: the latest comparison of the
//! router's configuration with the desired one found nothing left to apply and nothing
//! refused. It turns false when the router goes away (or restarts) until it is brought back
//! in step, and while an entity is refused or waits for its TLS material. Losing the
//! controller does not change it: the router keeps forwarding with the configuration it has,
//! and an unready router pod would turn a control-plane outage into a data-plane one.

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Serves the health service on `listener` until `shutdown`, following `ready`. Once the
/// sender of `ready` is gone (config-sync stopped), it reports NOT_SERVING. With `records`,
/// the router's flow records are served beside it (to callers with the API token).
pub async fn serve(
    listener: TcpListener,
    ready: watch::Receiver<bool>,
    records: Option<crate::records::RecordsProxyService>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (reporter, service) = tonic_health::server::health_reporter();
    // The reporter starts the overall status as SERVING; nobody can ask before this.
    let now = *ready.borrow();
    report(&reporter, now).await;
    let follow = tokio::spawn(follow(reporter, ready));
    let r = tonic::transport::Server::builder()
        .add_service(service)
        .add_optional_service(records)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    follow.abort();
    r
}

async fn follow(reporter: HealthReporter, mut ready: watch::Receiver<bool>) {
    while ready.changed().await.is_ok() {
        let now = *ready.borrow_and_update();
        report(&reporter, now).await;
    }
    report(&reporter, false).await;
}

async fn report(reporter: &HealthReporter, ready: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
}
