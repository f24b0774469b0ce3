//! Checks any of our gRPC servers answers: what reflection lists, and health.

use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

pub use tonic_health::pb::health_check_response::ServingStatus;

pub const HEALTH: &str = "grpc.health.v1.Health";
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The services a server lists through reflection, sorted, in each version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub v1: Vec<String>,
    /// What grpcurl 1.8 and Postman ask for.
    pub v1alpha: Vec<String>,
}

// The two versions are the same protocol in two generated modules.
macro_rules! list_with {
    ($version:ident, $ch:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let what = stringify!($version);
        let mut resp = ServerReflectionClient::new($ch)
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .unwrap_or_else(|e| panic!("reflection {what} does not answer: {e}"))
            .into_inner();
        let first = resp.message().await;
        match first.map(|m| m.and_then(|m| m.message_response)) {
            Ok(Some(MessageResponse::ListServicesResponse(l))) => {
                let mut names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
                names.sort();
                names
            }
            other => panic!("reflection {what}: not a list of services: {other:?}"),
        }
    }};
}

/// Lists the services of the server at `ch` with reflection v1 and v1alpha.
pub async fn list_services(ch: Channel) -> Listed {
    Listed {
        v1: list_with!(v1, ch.clone()),
        v1alpha: list_with!(v1alpha, ch),
    }
}

/// Asserts that reflection v1 and v1alpha both list exactly health, themselves and `apis`:
/// no API the server does not serve, none it serves left out.
pub async fn assert_lists_exactly(ch: Channel, apis: &[&str]) {
    let mut want: Vec<String> = [HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA]
        .iter()
        .chain(apis)
        .map(|s| s.to_string())
        .collect();
    want.sort();
    let listed = list_services(ch).await;
    assert_eq!(listed.v1, want, "reflection v1");
    assert_eq!(listed.v1alpha, want, "reflection v1alpha");
}

/// What the health service says of `service` ("" for the server as a whole).
pub async fn health(ch: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let status = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?
        .into_inner()
        .status;
    ServingStatus::try_from(status)
        .map_err(|_| tonic::Status::internal(format!("unknown serving status {status}")))
}
