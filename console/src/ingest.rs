//! Reading the network through one router: its records stream (every router's batches) and
//! its `van.site.v1` topic (every site's record). Each runs until the console stops, and
//! calls again with backoff when the router goes away.

use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Channel;
use van_proto::admin::SubscribeRequest;
use van_proto::admin::router_admin_client::RouterAdminClient;
use van_proto::records::WatchRecordsRequest;
use van_proto::records::records_client::RecordsClient;

use crate::Console;

/// First wait after a failure; it doubles up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Long enough not to hammer a router that is down, short enough to notice its return soon.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Room for the message around the largest batch a router sends.
const MAX_MESSAGE: usize = van_proto::records::MAX_BATCH + 64 * 1024;

/// Adds the bearer token, when there is one, to every call.
#[derive(Clone)]
pub(crate) struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    /// `token` is checked to be printable ASCII when the config is made.
    pub(crate) fn new(token: Option<&str>) -> Bearer {
        Bearer(token.and_then(|t| MetadataValue::try_from(format!("Bearer {t}")).ok()))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

struct Backoff {
    next: Duration,
    /// Failures since the last success: the first is a warning, the rest are repeats.
    failures: u32,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: MIN_BACKOFF,
            failures: 0,
        }
    }

    fn reset(&mut self) {
        self.next = MIN_BACKOFF;
        self.failures = 0;
    }

    async fn wait(&mut self, what: &str, why: &str) {
        if self.failures == 0 {
            tracing::warn!(error = %why, retry_in = ?self.next, "Lost the router's {what}");
        } else {
            tracing::debug!(error = %why, retry_in = ?self.next, "Still no {what}");
        }
        self.failures += 1;
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(MAX_BACKOFF);
    }
}

/// Feeds every router's record batches into the store.
pub(crate) async fn records(channel: Channel, bearer: Bearer, console: Console) {
    let mut backoff = Backoff::new();
    loop {
        let mut client = RecordsClient::with_interceptor(channel.clone(), bearer.clone())
            .max_decoding_message_size(MAX_MESSAGE);
        let why: String = match client.watch(WatchRecordsRequest {}).await {
            Ok(resp) => {
                tracing::info!("Watching the network's records");
                let mut stream = resp.into_inner();
                let why = loop {
                    match stream.message().await {
                        Ok(Some(batch)) => {
                            backoff.reset();
                            console.apply(batch);
                        }
                        Ok(None) => break "the stream ended".to_string(),
                        Err(status) => break status.to_string(),
                    }
                };
                // Nothing known is current any more; routers come back with their state.
                console.write().stream_lost(crate::now_us());
                why
            }
            Err(status) => status.to_string(),
        };
        backoff.wait("records", &why).await;
    }
}

/// Keeps the sites' records current from the topic, where the router serves it. Full router
/// states carry the same records, so a router (or a proxy of its records, as config-sync on
/// Kubernetes) that does not serve subscriptions is no loss.
pub(crate) async fn sites(channel: Channel, bearer: Bearer, console: Console) {
    let mut backoff = Backoff::new();
    loop {
        let mut client = RouterAdminClient::with_interceptor(channel.clone(), bearer.clone())
            .max_decoding_message_size(MAX_MESSAGE);
        let request = SubscribeRequest {
            topic: van_proto::controller::TOPIC_SITES.to_string(),
        };
        let why: String = match client.subscribe(request).await {
            Ok(resp) => {
                tracing::info!("Watching the sites' records");
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(snapshot)) => {
                            backoff.reset();
                            let bad = console.write().apply_sites(snapshot);
                            for problem in bad {
                                tracing::warn!(%problem, "Skipped a site record");
                            }
                        }
                        Ok(None) => break "the stream ended".to_string(),
                        Err(status) => break status.to_string(),
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    "The router serves no topic subscriptions; site records come with its states"
                );
                return;
            }
            Err(status) => status.to_string(),
        };
        backoff.wait("site records", &why).await;
    }
}
