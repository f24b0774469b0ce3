//! The site controller's gRPC client over its Unix socket, and the mapping of its errors
//! to messages.

use std::time::Duration;

use tonic::transport::Channel;
use van_controller::local::SiteDir;
use van_proto::controller::site_controller_client::SiteControllerClient;
use van_telemetry::report::innermost;

use crate::Ctx;

pub type Client = SiteControllerClient<Channel>;

/// Longest a single call may take: link creation redeems a claim at another site.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Connects to a gRPC target: `unix:/path` or `host:port`.
pub async fn connect(target: &str) -> anyhow::Result<Client> {
    let channel = van_proto::grpc::channel(target, Some(CALL_TIMEOUT))
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {target}: {}", innermost(&e.source)))?;
    Ok(SiteControllerClient::new(channel))
}

/// The error for a namespace without a site.
pub fn not_enabled(ctx: &Ctx) -> anyhow::Error {
    anyhow::anyhow!("Skupper is not enabled in namespace {:?}", ctx.namespace)
}

/// Checks that the namespace has a site and connects to its controller.
pub async fn site_client(ctx: &Ctx) -> anyhow::Result<Client> {
    let dir = ctx.site_dir();
    if !dir.exists() {
        return Err(not_enabled(ctx));
    }
    connect(&dir.controller_target())
        .await
        .map_err(|e| not_answering(ctx, &dir, &e.to_string()))
}

/// The error for a site whose controller does not answer.
pub fn not_answering(ctx: &Ctx, dir: &SiteDir, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the site controller in namespace {:?} is not answering ({why}); its logs are in {}",
        ctx.namespace,
        dir.logs_dir().display()
    )
}

/// Turns a failed call into a message; the caller's mistakes become usage errors.
pub fn rpc_error(what: &str, s: tonic::Status) -> anyhow::Error {
    let msg = if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        s.message().to_string()
    };
    match s.code() {
        tonic::Code::InvalidArgument => crate::usage(format!("{what}: {msg}")),
        tonic::Code::Unavailable => {
            anyhow::anyhow!("{what}: the site is not ready or not answering: {msg}")
        }
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            anyhow::anyhow!("{what}: the site controller did not answer in time: {msg}")
        }
        _ => anyhow::anyhow!("{what}: {msg}"),
    }
}
