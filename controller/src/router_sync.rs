//! Keeps the router told about this site and this site told about the network: publishes
//! the site's record on the network-wide topic and follows every other site's record.
//! Reconnects (and republishes) whenever the router restarts.

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use tracing::{debug, info, warn};
use van_proto::admin as rpb;

use crate::controller::Controller;
use crate::network::{self, TOPIC};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
// Both ends are on this host (or pod): retrying often is cheap and brings a restarted
// router back into service sooner.
const BACKOFF_MAX: Duration = Duration::from_millis(500);

pub(crate) async fn run(
    c: Arc<Controller>,
    target: String,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut delay = BACKOFF_MIN;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            r = session(&c, &target) => {
                match r {
                    Ok(()) => delay = BACKOFF_MIN,
                    Err(e) => debug!(error = %e, "Router not reachable"),
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// One connection to the router; returns when it breaks.
async fn session(c: &Controller, target: &str) -> Result<(), String> {
    let mut client = van_router::admin::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    let mut record = c.record();
    let publish = |r: &network::SiteRecord| rpb::PublishRequest {
        topic: TOPIC.into(),
        payload: serde_json::to_vec(r).expect("a record serialises"),
    };
    let first = publish(&record.borrow_and_update());
    client.publish(first).await.map_err(|e| e.to_string())?;
    let mut sub = client
        .subscribe(rpb::SubscribeRequest {
            topic: TOPIC.into(),
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    info!(router = %target, "Connected to the router; following the network");
    let me = c.cfg.router_id();
    loop {
        tokio::select! {
            r = record.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                let req = publish(&record.borrow_and_update());
                client.publish(req).await.map_err(|e| e.to_string())?;
            }
            snap = sub.next() => {
                let Some(snap) = snap else {
                    return Err("subscription ended".into());
                };
                let snap = snap.map_err(|e| e.to_string())?;
                let (remote, bad) = network::decode(
                    snap.values.into_iter().map(|v| (v.origin, v.payload)).collect(),
                    &me,
                );
                for b in &bad {
                    warn!(problem = %b, "Ignoring a site record");
                }
                c.set_remote(remote);
            }
        }
    }
}
