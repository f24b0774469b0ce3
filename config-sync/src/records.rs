//! The router's flow records, served to the site's console on Kubernetes: the router's
//! admin API is a unix socket inside the router pod, and the console runs in the
//! controller pod, so config-sync passes `van.records.v1.Records/Watch` on, for callers
//! holding the site's API token.

use tonic::{Request, Response, Status};
use van_proto::records::records_client::RecordsClient;
use van_proto::records::records_server::{Records, RecordsServer};
use van_proto::records::{RecordBatch, WatchRecordsRequest};

/// Passes `Watch` on to the router at `router` (its admin API target).
#[derive(Debug, Clone)]
pub struct RecordsProxy {
    router: String,
}

/// Accepts calls whose `authorization` header is `Bearer <token>`.
#[derive(Clone)]
pub struct RequireToken(Vec<u8>);

impl std::fmt::Debug for RequireToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequireToken(..)")
    }
}

impl RequireToken {
    pub fn new(token: &str) -> RequireToken {
        RequireToken(token.trim().as_bytes().to_vec())
    }
}

impl tonic::service::Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes)
            .unwrap_or_default();
        // Compared without an early exit, so timing does not tell how much matched.
        let same = given.len() == self.0.len()
            && given.iter().zip(&self.0).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
        if same {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "records need the site's API token (Secret skupper-api-token) as a bearer token",
            ))
        }
    }
}

/// The records service as served: the proxy behind the token check.
pub type RecordsProxyService =
    tonic::service::interceptor::InterceptedService<RecordsServer<RecordsProxy>, RequireToken>;

impl RecordsProxy {
    /// The service, answering only callers that send `token`.
    pub fn service(router: String, token: &str) -> RecordsProxyService {
        RecordsServer::with_interceptor(RecordsProxy { router }, RequireToken::new(token))
    }
}

#[tonic::async_trait]
impl Records for RecordsProxy {
    type WatchStream = tonic::codec::Streaming<RecordBatch>;

    async fn watch(
        &self,
        req: Request<WatchRecordsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let ch = van_proto::grpc::channel(&self.router, None)
            .await
            .map_err(|e| Status::unavailable(format!("router admin API: {e}")))?;
        let stream = RecordsClient::new(ch).watch(req.into_inner()).await?;
        Ok(Response::new(stream.into_inner()))
    }
}
