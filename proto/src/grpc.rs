//! Serving and dialling the project's gRPC APIs, the same way for every binary: a TCP or
//! unix listener, gRPC health, server reflection in both versions tools ask for (grpcurl
//! 1.8 and Postman speak v1alpha, newer tools v1), limits on what clients may hold (connections,
//! the HTTP/2 preface, streams, headers, call deadlines, dead-peer pings), and a bounded drain
//! at shutdown.

use std::future::Future;
use std::time::Duration;

use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint};

mod capped;
pub use capped::Prompt;

/// How long calls in flight may run on after shutdown begins. Watch streams never end on
/// their own and would hold a graceful shutdown forever.
const DRAIN: Duration = Duration::from_secs(1);

/// Where an API is served.
#[derive(Debug)]
pub enum Bind {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// gRPC health, reporting `SERVING` for the API `S` (and the server as a whole).
pub async fn health_for<S: tonic::server::NamedService>()
-> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    service
}

/// Adds server reflection, v1 and v1alpha, listing the APIs named in `apis` (full names, as
/// `van.admin.v1.RouterAdmin`), gRPC health and reflection itself: the services this server
/// answers, not every API the project defines.
pub fn with_reflection(routes: Routes, apis: &[&str]) -> Routes {
    use tonic_reflection::pb::{v1, v1alpha};
    let builder = |other_version: &'static [u8]| {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(other_version)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for api in apis {
            b = b.with_service_name(*api);
        }
        b
    };
    let v1 = builder(v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let v1alpha = builder(v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");
    routes.add_service(v1).add_service(v1alpha)
}

/// How a gRPC server bounds its clients. The APIs carry long-lived watch streams, so there
/// is no deadline on a connection as such: instead a new connection must send its HTTP/2
/// preface promptly, a connection that stops answering pings is closed, calls (until their
/// response starts) have a deadline, and connections, streams and header sizes are capped.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time for a new connection to send the 24-byte HTTP/2 preface.
    pub preface: std::time::Duration,
    /// Streams (calls) open at once on one connection.
    pub max_streams: u32,
    /// Calls being answered at once on one connection.
    pub concurrency_per_connection: usize,
    /// Largest header block of a call, in bytes.
    pub max_header_list: u32,
    /// A ping every `keepalive_interval`; no answer within `keepalive_timeout` closes.
    pub keepalive_interval: std::time::Duration,
    pub keepalive_timeout: std::time::Duration,
    /// Time a call has to produce its response (a stream's items may follow for as long as
    /// the stream lasts).
    pub call_timeout: std::time::Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        use std::time::Duration;
        ServerLimits {
            max_connections: 256,
            preface: Duration::from_secs(10),
            max_streams: 128,
            concurrency_per_connection: 64,
            max_header_list: 16 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            call_timeout: Duration::from_secs(120),
        }
    }
}

/// Serves `routes` on `bind` within the default [`ServerLimits`] until `shutdown` completes.
pub async fn serve(
    routes: Routes,
    bind: Bind,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    serve_with(routes, bind, ServerLimits::default(), shutdown).await
}

/// Serves `routes` on `bind` within `limits` until `shutdown` completes, then stops
/// accepting, lets calls in flight finish for a moment and drops what is left.
pub async fn serve_with(
    routes: Routes,
    bind: Bind,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let server = tonic::transport::Server::builder()
        .timeout(limits.call_timeout)
        .concurrency_limit_per_connection(limits.concurrency_per_connection)
        .max_concurrent_streams(limits.max_streams)
        .http2_max_header_list_size(limits.max_header_list)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_routes(routes);
    let (drain_tx, mut drain_rx) = tokio::sync::watch::channel(false);
    let drained = async move {
        let _ = drain_rx.wait_for(|d| *d).await;
    };
    let serve = async move {
        match bind {
            Bind::Tcp(l) => {
                server
                    .serve_with_incoming_shutdown(capped::incoming(l, limits), drained)
                    .await
            }
            Bind::Unix(l) => {
                server
                    .serve_with_incoming_shutdown(capped::incoming(l, limits), drained)
                    .await
            }
        }
    };
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => r,
        _ = shutdown => {
            let _ = drain_tx.send(true);
            tokio::time::timeout(DRAIN, serve).await.unwrap_or(Ok(()))
        }
    }
}

/// Why a gRPC API could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the gRPC API at {target}")]
pub struct ConnectError {
    pub target: String,
    #[source]
    pub source: tonic::transport::Error,
}

/// Where a target is: `host:port`, `http://host:port` or `unix:/path`.
enum Target {
    Tcp(Endpoint),
    Unix(Endpoint, String),
}

fn target(target: &str, call_timeout: Option<Duration>) -> Result<Target, ConnectError> {
    let with_timeout = |e: Endpoint| match call_timeout {
        Some(t) => e.timeout(t),
        None => e,
    };
    if let Some(path) = target.strip_prefix("unix:") {
        // The authority is not used to route on a unix socket; any valid one will do.
        let endpoint = with_timeout(Endpoint::from_static("http://localhost"));
        return Ok(Target::Unix(endpoint, path.to_string()));
    }
    let uri = if target.starts_with("http://") {
        target.to_string()
    } else {
        format!("http://{target}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|source| ConnectError {
        target: target.to_string(),
        source,
    })?;
    Ok(Target::Tcp(
        with_timeout(endpoint).connect_timeout(Duration::from_secs(5)),
    ))
}

fn unix_connector(
    path: String,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<hyper_util::rt::TokioIo<tokio::net::UnixStream>>>
             + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            let s = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
        }
    })
}

/// A channel to `host:port`, `http://host:port` or `unix:/path`, connected now, with an
/// optional per-call timeout.
pub async fn channel(to: &str, call_timeout: Option<Duration>) -> Result<Channel, ConnectError> {
    let err = |source| ConnectError {
        target: to.to_string(),
        source,
    };
    match target(to, call_timeout)? {
        Target::Tcp(e) => e.connect().await.map_err(err),
        Target::Unix(e, path) => e
            .connect_with_connector(unix_connector(path))
            .await
            .map_err(err),
    }
}

/// A channel that connects at its first call and again after the connection is lost, for
/// long-lived clients.
pub fn lazy_channel(to: &str) -> Result<Channel, ConnectError> {
    Ok(match target(to, None)? {
        Target::Tcp(e) => e.connect_lazy(),
        Target::Unix(e, path) => e.connect_with_connector_lazy(unix_connector(path)),
    })
}
